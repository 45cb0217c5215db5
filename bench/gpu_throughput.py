"""Benchmark: training throughput and MFU of the paper's shapes on a GPU, bf16, with and
without ``torch.compile``, side by side in one run (part of ``bench/gpu_check.sh``).

Usage::

    python -m bench.gpu_throughput [--shapes paper-4m,paper-20m,paper-275m] [--steps 20]
    python -m bench.gpu_throughput --cpu-dry-run   # tiny sizes on CPU: checks it runs

FLOPs per trained token: 6·N (N = all parameters, as the sweeps count compute) plus the
attention's 12·layers·context·hidden (forward and backward of QK^T and AV, causal mask
not discounted), as in Chinchilla's appendix.  MFU = achieved FLOP/s over the card's
dense bf16 peak (a small table by device name; unknown cards fall back to the H100's
989 TFLOP/s and say so).  Writes ``bench/results/gpu_throughput.json``.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from bench.common import write_results
from gzipscale.trainers.config import preset
from gzipscale.trainers.model import Llama
from gzipscale.trainers.shapes import PAPER_VOCAB, get_shape
from gzipscale.trainers.train import make_optimizer

CONTEXT = 256
BATCH = 32  # the paper's batch: 32 documents of 256 tokens
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
FALLBACK = ("H100", 989e12)


def peak_flops(device: torch.device) -> tuple[str, float, bool]:
    """(card name, dense bf16 peak, whether the peak is the fallback's)."""
    if device.type != "cuda":
        return "cpu", float("nan"), True
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():
        if key in name:
            return name, peak, False
    return name, FALLBACK[1], True


def flops_per_token(shape, vocab: int) -> float:
    return 6.0 * shape.params(vocab) + 12.0 * shape.layers * CONTEXT * shape.hidden


def time_shape(name: str, device, compiled: bool, steps: int, batch: int, vocab: int) -> dict:
    shape = get_shape(name)
    torch.manual_seed(0)
    model = Llama(shape, vocab, CONTEXT).to(device)
    cfg = preset("paper")
    optimizer = make_optimizer(model, cfg, device)
    step_model = torch.compile(model) if compiled else model
    x = torch.randint(1, vocab, (batch, CONTEXT + 1), device=device)
    inputs, targets = x[:, :-1], x[:, 1:]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            _, loss = step_model(inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    start = time.perf_counter()
    for _ in range(3):  # warm-up (and compilation)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens_per_s = steps * batch * CONTEXT / seconds
    card, peak, _ = peak_flops(device)
    achieved = tokens_per_s * flops_per_token(shape, vocab)
    return {
        "shape": name,
        "params": shape.params(vocab),
        "compile": compiled,
        "dtype": str(dtype),
        "warmup_s": warm_s,
        "tokens_per_s": tokens_per_s,
        "achieved_flops": achieved,
        "mfu": achieved / peak,
        "loss": float(loss.detach()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="paper-4m,paper-20m,paper-275m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU")
    args = parser.parse_args()
    if args.cpu_dry_run:
        device, shapes, steps, batch, vocab = torch.device("cpu"), ["tiny-1"], 2, 2, 301
    else:
        if not torch.cuda.is_available():
            print("gpu_throughput: no CUDA device (use --cpu-dry-run)", file=sys.stderr)
            return 2
        device, shapes, steps, batch = (
            torch.device("cuda"),
            args.shapes.split(","),
            args.steps,
            BATCH,
        )
        vocab = PAPER_VOCAB
    card, peak, fallback = peak_flops(device)
    rows = []
    for name in shapes:
        for compiled in (False, True):
            row = time_shape(name, device, compiled, steps, batch, vocab)
            rows.append(row)
            print(
                f"{name:>11} compile={'on ' if compiled else 'off'} "
                f"{row['tokens_per_s']:>12,.0f} tok/s  MFU {row['mfu']:.1%}  "
                f"(warm-up {row['warmup_s']:.1f} s)",
                flush=True,
            )
    speedups = {
        name: next(r for r in rows if r["shape"] == name and r["compile"])["tokens_per_s"]
        / next(r for r in rows if r["shape"] == name and not r["compile"])["tokens_per_s"]
        for name in shapes
    }
    for name, ratio in speedups.items():
        print(f"{name}: torch.compile {ratio:.2f}x eager")
    payload = {
        "device": card,
        "peak_bf16_flops": peak,
        "peak_is_fallback": fallback,
        "dry_run": args.cpu_dry_run,
        "batch": batch,
        "context": CONTEXT,
        "vocab": vocab,
        "rows": rows,
        "compile_speedup": speedups,
    }
    if args.cpu_dry_run:  # timings of 2 CPU steps measure nothing worth keeping
        print("dry run: nothing written")
    else:
        print(f"wrote {write_results('gpu_throughput', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
