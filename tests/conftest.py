"""Shared fixtures: tiny random models built once per test session, offline.

Tests never download anything: the hub is forced offline before transformers is imported.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.tiny_models import build_tiny_lm, build_tiny_reward_model  # noqa: E402

# Two cores are shared by everyone; one thread keeps tiny-model tests from fighting.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LlamaForCausalLM with a chat-templated BPE tokenizer."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_reward_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LlamaForSequenceClassification (one score) with the same tokenizer."""
    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-reward-model"))


@pytest.fixture()
def model_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty minmax-engine model cache, so no test touches the user's real one."""
    cache = tmp_path / "model-cache"
    monkeypatch.setenv("MINMAX_ENGINE_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def ray_cluster() -> object:
    """One local Ray cluster for the whole session (2 CPUs, no dashboard); skipped only when
    Ray is not installed (`pip install -e '.[ray]'`; `make test` installs it)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (make test installs it)")
    # Ray's workers inherit the environment of its start: this checkout's packages first.
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), *filter(None, [before])])
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    yield ray
    ray.shutdown()


@pytest.fixture()
def one_thread_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs that `play`, `sweep` or `compare` start here use one thread (and a Ray task asks
    for one CPU), on any machine: the test cluster has two."""
    monkeypatch.setenv("MINMAX_ENGINE_THREADS", "1")
