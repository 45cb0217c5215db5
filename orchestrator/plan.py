"""A sweep's plan: every (grammar, shape, data size) run, its cost and its resources.

Pure functions of the spec (and of whether GPUs are used), so ``--dry-run`` prints what
a real sweep will run, in the order it will run it: cheapest first, so that a partial
sweep already has small runs of every grammar to fit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from gzipscale.helpers import format_size
from gzipscale.trainers.shapes import get_shape
from gzipscale.vocabulary import FLOPS_PER_PARAM_TOKEN

from .spec import SweepSpec

# For the GPU-hours estimate only: an H100's dense bf16 peak and the MFU a well-run
# 100M-1B model reaches. Small models reach far less, so the estimate is a lower bound.
H100_BF16_FLOPS = 989e12
ASSUMED_MFU = 0.40


@dataclass(frozen=True)
class PlannedRun:
    run_id: str  # stable across restarts: dataset/shape/tokens
    dataset: str  # dataset name (grammar spec, seed, sampler)
    grammar: str
    seed: int
    sampler: str
    shape: str
    params: int  # total N at the run's vocabulary
    non_embedding_params: int
    vocab_size: int
    tokens: int  # D, whole documents
    flops: float  # 6 N D
    cpus: float
    gpus: float  # per worker
    workers: int  # > 1: a Ray Train TorchTrainer with this many GPU workers

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def resources(self) -> str:
        if self.workers > 1:
            return f"{self.workers} x (1 GPU, {self.cpus:g} CPU)"
        if self.gpus:
            return f"{self.gpus:g} GPU, {self.cpus:g} CPU"
        return f"{self.cpus:g} CPU"


def plan_runs(spec: SweepSpec, use_gpu: bool) -> list[PlannedRun]:
    runs = []
    res = spec.resources
    for entry in spec.grammars:
        grammar = entry.spec
        vocab = spec.train.vocab_size or grammar.terminals + 1
        for shape_name in spec.shapes:
            shape = get_shape(shape_name)
            params = shape.params(vocab)
            workers, gpus = 1, 0.0
            if use_gpu:
                if res.multi_gpu_params and params >= res.multi_gpu_params:
                    workers, gpus = res.gpus_per_multi, 1.0
                elif params >= res.whole_gpu_params:
                    gpus = 1.0
                else:
                    gpus = res.gpu_fraction
            for size in spec.data_sizes:
                tokens = math.ceil(size / spec.context_length) * spec.context_length
                runs.append(
                    PlannedRun(
                        run_id=f"{entry.dataset}/{shape_name}/{format_size(size)}",
                        dataset=entry.dataset,
                        grammar=grammar.short,
                        seed=grammar.seed,
                        sampler=entry.sampler,
                        shape=shape_name,
                        params=params,
                        non_embedding_params=shape.non_embedding_params(),
                        vocab_size=vocab,
                        tokens=tokens,
                        flops=FLOPS_PER_PARAM_TOKEN * params * tokens,
                        cpus=res.cpus_per_trial,
                        gpus=gpus,
                        workers=workers,
                    )
                )
    # Cheapest first; ties by grammar order so every grammar gets its small runs early.
    order = {e.dataset: i for i, e in enumerate(spec.grammars)}
    return sorted(runs, key=lambda r: (r.flops, order[r.dataset], r.run_id))


def gpu_hours(flops: float) -> float:
    return flops / (H100_BF16_FLOPS * ASSUMED_MFU) / 3600


def plan_summary(spec: SweepSpec, runs: list[PlannedRun], use_gpu: bool) -> dict:
    total = sum(r.flops for r in runs)
    return {
        "name": spec.name,
        "runs": len(runs),
        "grammars": len(spec.grammars),
        "shapes": list(spec.shapes),
        "data_sizes": list(spec.data_sizes),
        "total_flops": total,
        "largest_run_flops": max(r.flops for r in runs),
        "use_gpu": use_gpu,
        "gpu_hours_estimate": gpu_hours(total),
        "gpu_hours_assumption": (
            f"6·N·D FLOPs at {ASSUMED_MFU:.0%} MFU of an H100 "
            f"({H100_BF16_FLOPS / 1e12:.0f} TFLOP/s bf16); small models reach less"
        ),
        "plan": [r.to_dict() | {"resources": r.resources} for r in runs],
    }
