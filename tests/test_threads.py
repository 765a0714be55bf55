"""The engine's choice of torch intra-op threads (engine/devices.py)."""

from __future__ import annotations

import pytest

from engine.devices import intra_op_threads
from storage.errors import UserError


def test_every_core_but_one_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINMAX_ENGINE_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert intra_op_threads(cpu_count=2) == 1
    assert intra_op_threads(cpu_count=1) == 1
    assert intra_op_threads(cpu_count=16) == 15


def test_environment_wins_engine_variable_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MINMAX_ENGINE_THREADS", raising=False)
    assert intra_op_threads(cpu_count=2) == 3
    monkeypatch.setenv("MINMAX_ENGINE_THREADS", "2")
    assert intra_op_threads(cpu_count=2) == 2


@pytest.mark.parametrize("value", ["two", "0"])
def test_a_bad_thread_count_is_a_user_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MINMAX_ENGINE_THREADS", value)
    with pytest.raises(UserError, match="MINMAX_ENGINE_THREADS"):
        intra_op_threads(cpu_count=2)
