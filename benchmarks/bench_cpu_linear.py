"""torch's BLAS against oneDNN for the fp32 products of the embedded model, in one run.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_cpu_linear.py [--threads 1]

players/cpu_linear.py routes every frozen fp32 linear layer on the CPU through oneDNN. This
script is the measurement behind that choice, on the real SmolLM2 weights of its layers' seven
projections, at the row counts the engine uses:

- 8 rows: a decode step, all 30 layers' projections (the sampler uses oneDNN's packed copy of
  each weight);
- 335 rows: a prompt's prefill (4 layers' projections, as below);
- 2,680 rows: a learner's forward over 8 rollouts of 335 tokens, and its backward product
  grad_x = grad_y @ W (the base is frozen, so this is the only product a backward needs).

Each line gives both libraries' best time over the repeats, their ratio, the achieved
GFLOP/s, and each result's largest error against a float64 product of the same inputs (both
are IEEE fp32; the errors show that neither trades accuracy for speed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.nn import functional  # noqa: E402

from bench_decode_bound import best_of  # noqa: E402
from players import ModelPool  # noqa: E402
from players.cpu_linear import onednn_available, onednn_product  # noqa: E402


def onednn(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return onednn_product(x, weight, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    args = parser.parse_args()
    if not onednn_available():
        print("this torch build has no oneDNN linear; nothing to compare")
        return 1
    torch.set_num_threads(args.threads)
    with os.popen("uptime") as uptime:
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
              f"{args.threads} thread(s), torch {torch.__version__}, uptime: {uptime.read().strip()}")

    model = ModelPool(cpu_linear="blas").causal_lm(args.model, "cpu", torch.float32).model
    every_weight = [
        module.weight.detach()
        for layer in model.get_decoder().layers
        for module in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
                       layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)
    ]
    generator = torch.Generator().manual_seed(0)
    # A decode step reads all 30 layers' weights (too many bytes for the caches, as in a real
    # step); the longer products are compute-bound, and 4 layers' weights time them well.
    for rows, label, weights in ((8, "decode step", every_weight), (335, "prefill", every_weight[:28]),
                                 (2680, "learner", every_weight[:28])):
        packed = [torch.ops.mkldnn._reorder_linear_weight(weight, None) for weight in weights] if rows == 8 else []
        inputs = {w.shape[1]: torch.randn(rows, w.shape[1], generator=generator) for w in weights}
        grads = {w.shape[0]: torch.randn(rows, w.shape[0], generator=generator) for w in weights}
        flops = 2 * rows * sum(w.numel() for w in weights)
        cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            ("forward x @ W^T", lambda: [functional.linear(inputs[w.shape[1]], w) for w in weights],
             lambda: [onednn(inputs[w.shape[1]], w) for w in weights]),
            ("backward grad_y @ W", lambda: [grads[w.shape[0]] @ w for w in weights],
             lambda: [onednn(grads[w.shape[0]], w.t()) for w in weights]),
        ]
        if rows == 8:
            cases.append(("forward, oneDNN packed", lambda: [functional.linear(inputs[w.shape[1]], w) for w in weights],
                          lambda: [onednn(inputs[w.shape[1]], p) for w, p in zip(weights, packed)]))
        for name, blas_run, onednn_run in cases:
            with torch.inference_mode():
                blas_seconds = best_of(args.repeats, blas_run)
                onednn_seconds = best_of(args.repeats, onednn_run)
                blas_error = max_error(blas_run(), weights, inputs, grads, backward=name.startswith("backward"))
                onednn_error = max_error(onednn_run(), weights, inputs, grads, backward=name.startswith("backward"))
            print(f"{label:>11} ({rows:>4} rows) {name:<24} BLAS {blas_seconds * 1e3:7.2f} ms ({flops / blas_seconds / 1e9:5.1f} GFLOP/s), "
                  f"oneDNN {onednn_seconds * 1e3:7.2f} ms ({flops / onednn_seconds / 1e9:5.1f} GFLOP/s): "
                  f"{blas_seconds / onednn_seconds:.2f}x; max error vs float64 {blas_error:.1e} / {onednn_error:.1e}")
    return 0


def max_error(results: list[torch.Tensor], weights: list[torch.Tensor], inputs: dict[int, torch.Tensor],
              grads: dict[int, torch.Tensor], backward: bool) -> float:
    """The largest absolute error of any product against float64 (outputs here are O(1-10))."""
    worst = 0.0
    for result, weight in zip(results, weights):
        if backward:
            exact = grads[weight.shape[0]].double() @ weight.double()
        else:
            exact = inputs[weight.shape[1]].double() @ weight.double().t()
        worst = max(worst, (result.double() - exact).abs().max().item())
    return worst


if __name__ == "__main__":
    sys.exit(main())
