"""Frozen fp32 linears through oneDNN (players/cpu_linear.py): the same products as F.linear up to
float rounding, forward and backward, only where the weight is frozen, and chosen at load time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.nn import functional

from players import ModelPool
from players import cpu_linear
from players.cpu_linear import (
    CPU_LINEAR_ENVIRONMENT_VARIABLE,
    OneDnnLinear,
    cpu_linear_choice,
    decode_linear,
    frozen_linear,
    onednn_available,
    route_frozen_linears,
)
from storage.errors import UserError

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN linear")


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    # fp32 products of a few hundred terms in another order: a few ulps of the largest value.
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-5 * float(b.detach().abs().max()))


def test_forward_and_input_gradient_match_f_linear() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 40, generator=generator)
    bias = torch.randn(48, generator=generator)
    x = torch.randn(3, 7, 40, generator=generator, requires_grad=True)
    reference_x = x.detach().clone().requires_grad_(True)
    upstream = torch.randn(3, 7, 48, generator=generator)

    routed = frozen_linear(x, weight, bias)
    reference = functional.linear(reference_x, weight, bias)
    _close(routed, reference)
    assert routed.grad_fn is not None and "FrozenWeightLinear" in type(routed.grad_fn).__name__  # oneDNN's path ran
    (routed * upstream).sum().backward()
    (reference * upstream).sum().backward()
    assert x.grad is not None and reference_x.grad is not None
    _close(x.grad, reference_x.grad)


def test_trainable_weight_keeps_f_linear_and_gets_its_gradient() -> None:
    weight = torch.randn(8, 6, requires_grad=True)
    x = torch.randn(5, 6)
    frozen_linear(x, weight, None).sum().backward()
    assert weight.grad is not None
    torch.testing.assert_close(weight.grad, x.sum(0).expand(8, 6))


def test_route_swaps_plain_frozen_linears_only_and_keeps_the_state_dict(tiny_lm_dir: Path) -> None:
    routed = ModelPool(cache_dir=tiny_lm_dir.parent / "cache-onednn", cpu_linear="onednn").causal_lm(str(tiny_lm_dir), "cpu", torch.float32).model
    plain = ModelPool(cache_dir=tiny_lm_dir.parent / "cache-blas", cpu_linear="blas").causal_lm(str(tiny_lm_dir), "cpu", torch.float32).model
    linears = [m for m in routed.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is OneDnnLinear for m in linears)
    assert not any(isinstance(m, OneDnnLinear) for m in plain.modules())
    assert routed.state_dict().keys() == plain.state_dict().keys()
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    with torch.inference_mode():
        _close(routed(input_ids=ids).logits, plain(input_ids=ids).logits)

    # LoRA on top of a routed base: peft wraps the OneDnnLinear as its base layer, its own A/B
    # layers are plain trainable linears, and the adapter's gradients match the BLAS model's.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False)
    grads = []
    for model in (routed, plain):
        torch.manual_seed(3)
        peft_model = get_peft_model(model, config)
        assert sum(type(m) is OneDnnLinear for m in peft_model.modules()) == (len(linears) if model is routed else 0)
        logits = peft_model(input_ids=ids).logits
        torch.log_softmax(logits, -1)[0, :-1].gather(1, ids[0, 1:, None]).sum().backward()
        grads.append({n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        _close(grads[0][name], grads[1][name])


def test_blas_choice_routes_nothing() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert route_frozen_linears(model, "blas") == 0
    assert route_frozen_linears(model, "onednn") == 2
    assert all(type(m) is OneDnnLinear for m in model if isinstance(m, nn.Linear))


def test_environment_choice_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_LINEAR_ENVIRONMENT_VARIABLE, "BLAS")
    assert cpu_linear_choice() == "blas"
    monkeypatch.delenv(CPU_LINEAR_ENVIRONMENT_VARIABLE)
    assert cpu_linear_choice() == "onednn"
    monkeypatch.setenv(CPU_LINEAR_ENVIRONMENT_VARIABLE, "mkl")
    with pytest.raises(UserError, match="MINMAX_ENGINE_CPU_LINEAR='mkl': give one of onednn, blas"):
        cpu_linear_choice()


def test_decode_linear_packs_once_and_repacks_a_changed_weight() -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(64, 32, generator=generator)
    x = torch.randn(8, 32, generator=generator)
    with torch.inference_mode():
        _close(decode_linear(x, weight, None), functional.linear(x, weight))
        packed = cpu_linear._packed[id(weight)][2]
        decode_linear(x[:3], weight, None)  # fewer rows (finished sequences dropped): same copy
        assert cpu_linear._packed[id(weight)][2] is packed
    weight.mul_(2.0)  # an in-place write (e.g. merging an adapter into the base)
    with torch.inference_mode():
        _close(decode_linear(x, weight, None), functional.linear(x, weight))
    assert cpu_linear._packed[id(weight)][2] is not packed
    key = id(weight)
    del weight, packed
    assert key not in cpu_linear._packed  # freed with the weight


def test_a_resume_takes_the_kernel_the_run_recorded(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from engine.game import _recorded_cpu_linear
    from storage.events import RunStarted

    def started(cpu_linear: str | None) -> RunStarted:
        return RunStarted(mode="rlhf", config={}, seeds={}, package_versions={}, data_fingerprint="", dataset_name="d",
                          n_train_states=1, n_eval_states=1, num_threads=1, cpu_linear=cpu_linear)

    monkeypatch.delenv(CPU_LINEAR_ENVIRONMENT_VARIABLE, raising=False)
    assert _recorded_cpu_linear(started("onednn"), tmp_path) == "onednn"
    assert _recorded_cpu_linear(started("blas"), tmp_path) == "blas"
    assert _recorded_cpu_linear(started(None), tmp_path) == "blas"  # logs older than the record: all BLAS
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(CPU_LINEAR_ENVIRONMENT_VARIABLE, "onednn")
    assert _recorded_cpu_linear(started("blas"), tmp_path) == "onednn"  # asked for: it wins, with a warning
    assert "was played with the 'blas' CPU linear kernel; resuming with 'onednn'" in capsys.readouterr().err
