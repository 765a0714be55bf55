"""What bounds a decode step: the weight products alone, against the memory's bandwidth.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_decode_bound.py [--threads 1] [--rows 8]

A decode step of the embedded SmolLM2 at batch 8 multiplies 8 rows by every weight of the
model once (7 projections in each of 30 layers, then the 49k-token vocabulary projection).
This script times exactly those products on the real weights, nothing else (no attention,
norms, sampling or Python around them), so tokens/s = rows / (their time) is the most a decode
loop built on them can reach. Beside it, the rate at which this machine streams memory (a
plain sum over as many bytes as the weights) says whether the products are memory-bound.

Printed for each way the decoder can run them: x @ Wᵀ by `F.linear` (torch's BLAS, MKL), the
same with the vocabulary projection as W @ xᵀ (the decoder's choice on more than one thread
when the model is not routed), and oneDNN from the plain and from the packed weights
(players/cpu_linear.py; packed is the decoder's choice by default).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.nn import functional  # noqa: E402

from players import ModelPool  # noqa: E402
from players.cpu_linear import cpu_linear_choice, onednn_available, onednn_product  # noqa: E402


def best_of(repeats: int, run) -> float:  # type: ignore[no-untyped-def]
    run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=8, help="decode batch")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with os.popen("uptime") as uptime:
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
              f"{args.threads} thread(s), uptime: {uptime.read().strip()}")

    model = ModelPool().causal_lm(args.model, "cpu", torch.float32).model
    decoder, lm_head = model.get_decoder(), model.get_output_embeddings()
    projections = []
    for layer in decoder.layers:
        attention, mlp = layer.self_attn, layer.mlp
        for module in (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj,
                       mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            projections.append(module.weight.detach())
    head = lm_head.weight.detach()
    inputs = {width: torch.randn(args.rows, width) for width in {w.shape[1] for w in projections} | {head.shape[1]}}
    weight_bytes = sum(w.numel() for w in projections) * 4 + head.numel() * 4

    packed = {id(w): torch.ops.mkldnn._reorder_linear_weight(w, None) for w in [*projections, head]} if onednn_available() else {}

    def products(kernel: str, head_weight_major: bool = False):  # type: ignore[no-untyped-def]
        def product(x: torch.Tensor, weight: torch.Tensor) -> None:
            if kernel == "blas":
                functional.linear(x, weight)
            elif kernel == "blas-weight-major":
                torch.mm(weight, x.t())
            elif kernel == "onednn":
                onednn_product(x, weight, None)
            else:  # oneDNN from its packed copy of the weight
                onednn_product(x, packed[id(weight)], None)

        def run() -> None:
            with torch.inference_mode():
                for weight in projections:
                    product(inputs[weight.shape[1]], weight)
                if head_weight_major:
                    torch.mm(head, inputs[head.shape[1]].t())
                else:
                    product(inputs[head.shape[1]], head)
        return run

    streamed = torch.empty(weight_bytes // 4)
    streamed.uniform_()
    sum_seconds = best_of(args.repeats, lambda: streamed.sum())
    print(f"weights per step: {weight_bytes / 1e6:.0f} MB; a plain sum over as many bytes streams "
          f"{weight_bytes / sum_seconds / 1e9:.1f} GB/s ({sum_seconds * 1e3:.1f} ms)")
    # What players/sampler.py runs: oneDNN from packed weights where the base was routed
    # (players/cpu_linear.py, the default), else F.linear with the head weight-major on >1 thread.
    choice = ("onednn-packed", False) if packed and cpu_linear_choice() == "onednn" else ("blas", args.threads > 1)
    cases = [
        ("x @ W^T everywhere (F.linear: BLAS)", "blas", False),
        ("F.linear, W @ x^T for the vocabulary", "blas", True),
    ]
    if packed:
        cases += [("oneDNN, plain weights", "onednn", False), ("oneDNN, packed weights", "onednn-packed", False)]
    for label, kernel, head_wm in cases:
        seconds = best_of(args.repeats, products(kernel, head_wm))
        chosen = "  <- the decoder's choice" if (kernel, head_wm) == choice else ""
        print(f"  {label:<40} {seconds * 1e3:6.1f} ms per step = {weight_bytes / seconds / 1e9:5.1f} GB/s of weights, "
              f"at most {args.rows / seconds:6.1f} tokens/s{chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
