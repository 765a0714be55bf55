"""Frozen fp32 linear layers on the CPU through oneDNN rather than the BLAS torch calls by default.

    route_frozen_linears(model)   # after loading a base on the CPU in float32 (ModelPool does it)

On the x86 CPUs this project is measured on (AMD EPYC, AVX-512), torch's fp32 `F.linear` goes
to MKL's sgemm, which takes an AVX2 code path on AMD processors. oneDNN's matmul (the library
torch already ships for its mkldnn ops) uses AVX-512 there. The same products, measured
2026-12-03 on the 2-vCPU development machine, 1 thread (benchmarks/bench_cpu_linear.py): the
210 projections of a SmolLM2 decode step at 8 rows take 43 ms through MKL, 35 ms through
oneDNN, 22 ms through oneDNN from its packed weights; 28 of them at a learner's 2,680 rows
770 ms against 355 ms (98 against 214 GFLOP/s), forward and backward alike. Both are IEEE fp32 with fp32 accumulation (no reduced-precision "fpmath"
mode); they differ only in summation order, as two thread counts do.

Only frozen weights are routed: every base weight is frozen (players train LoRA adapters), so
the backward pass needs only the input's gradient, grad_x = grad_y @ W, which is one more
oneDNN product with W's transpose (a view, no copy). A weight that requires a gradient (a
value head, full fine-tuning) keeps `F.linear`, as does any input that is not fp32 on the CPU,
so a routed model moved to a GPU runs exactly as before.

MINMAX_ENGINE_CPU_LINEAR=blas keeps torch's default everywhere (for comparison, or for a CPU
where MKL is the faster library); "onednn", the default, routes where oneDNN is available.
The choice is made when a base is loaded, and fixes the last bits of every log-prob, so a
run records it (RunStarted.cpu_linear) and a resume uses it (engine/game.py).
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from storage.errors import UserError

CPU_LINEAR_ENVIRONMENT_VARIABLE = "MINMAX_ENGINE_CPU_LINEAR"
CPU_LINEAR_CHOICES = ("onednn", "blas")


def cpu_linear_choice() -> str:
    """The kernel MINMAX_ENGINE_CPU_LINEAR names ("onednn" when unset)."""
    configured = os.environ.get(CPU_LINEAR_ENVIRONMENT_VARIABLE, "").strip().lower() or "onednn"
    if configured not in CPU_LINEAR_CHOICES:
        raise UserError(
            f"{CPU_LINEAR_ENVIRONMENT_VARIABLE}={configured!r}: give one of {', '.join(CPU_LINEAR_CHOICES)}"
        )
    return configured


def onednn_available() -> bool:
    """Whether this torch build can run oneDNN's fp32 linear (x86 builds with mkldnn)."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T (+ bias) by oneDNN; x may have any leading dimensions, weight may be a view
    or a packed copy (torch.ops.mkldnn._reorder_linear_weight)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [None], "")


class _FrozenWeightLinear(torch.autograd.Function):
    """y = x Wᵀ + b with W and b constants: the backward returns the input's gradient only."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return onednn_product(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (weight,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        # grad_x = grad_y @ W: a linear whose weight is Wᵀ (a transposed view oneDNN reads as is).
        return onednn_product(grad_output.contiguous(), weight.t(), None), None, None


def frozen_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, by oneDNN when the weight is frozen fp32 on the CPU."""
    if (
        x.dtype != torch.float32
        or x.device.type != "cpu"
        or weight.dtype != torch.float32
        or weight.requires_grad
        or (bias is not None and bias.requires_grad)
    ):
        return functional.linear(x, weight, bias)
    if torch.is_grad_enabled() and x.requires_grad:
        return _FrozenWeightLinear.apply(x, weight, bias)
    return onednn_product(x, weight, bias)


class OneDnnLinear(nn.Linear):
    """An nn.Linear (isinstance and state dict unchanged) whose product goes through
    `frozen_linear`; modules become one by `route_frozen_linears`, never by construction."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (nn.Linear's name)
        return frozen_linear(input, self.weight, self.bias)


def route_frozen_linears(model: nn.Module, choice: str | None = None) -> int:
    """Make every plain nn.Linear of `model` an OneDnnLinear when `choice` (default: the
    environment's) is "onednn" and this build has oneDNN; the number of layers routed."""
    if (choice or cpu_linear_choice()) != "onednn" or not onednn_available():
        return 0
    routed = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = OneDnnLinear
            routed += 1
    return routed


# A decode step multiplies a handful of rows by every weight, and there oneDNN's own blocked
# weight layout pays: the 210 projections of a SmolLM2 step at 8 rows take 22 ms packed against
# 35 ms from the plain weight on 1 thread. The packed copy doubles the weights' memory, which
# is cheap for the small models a CPU runs and is not for a 7B checkpoint, hence the cap.
PACKED_WEIGHTS_BUDGET_BYTES = 2 << 30
# id(weight) -> (a weak reference to it, its version when packed, the packed copy).
_packed: dict[int, tuple[weakref.ref[torch.Tensor], int, torch.Tensor]] = {}
_packed_bytes = 0


def _forget_packed(key: int, size: int) -> None:
    global _packed_bytes
    if _packed.pop(key, None) is not None:
        _packed_bytes -= size


def decode_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`frozen_linear` for a decode step's few rows: from a packed copy of the weight, made on
    first use and kept while the weight lives and is unchanged (in-place writes, such as
    merging an adapter into it, bump its version and repack it), within the memory budget.
    A write through `weight.data` bumps no version and would go unseen; nothing in the engine
    writes a base weight after loading (peft's merge, which does, turns the decoder off)."""
    global _packed_bytes
    if torch.is_grad_enabled() or x.device.type != "cpu" or weight.requires_grad:
        return frozen_linear(x, weight, bias)
    key = id(weight)
    entry = _packed.get(key)
    if entry is None or entry[0]() is not weight or entry[1] != weight._version:
        size = weight.numel() * weight.element_size()
        if entry is not None:
            _forget_packed(key, size)
        if _packed_bytes + size > PACKED_WEIGHTS_BUDGET_BYTES:
            return frozen_linear(x, weight, bias)
        entry = (weakref.ref(weight), weight._version, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None))
        _packed[key] = entry
        _packed_bytes += size
        weakref.finalize(weight, _forget_packed, key, size)
    return onednn_product(x, entry[2], bias)


def routes_to_onednn(module: nn.Module) -> bool:
    """Whether `module` is a linear layer that `route_frozen_linears` routed."""
    return isinstance(module, OneDnnLinear)
