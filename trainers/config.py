"""Training configuration: one dataclass, saved with every run, and its two presets.

``paper`` reproduces the paper's training setup (Pandey 2024, and its public code): AdamW lr 5e-5,
betas (0.9, 0.999), eps 1e-6, no weight decay, no warmup, a constant learning rate (what
the paper's code did; ``schedule="cosine"`` gives the cosine-to-0 the paper describes),
batch 32 documents of 256 tokens, no gradient clipping (the paper mentions none).

``cpu`` is for tiny models on a laptop, where the paper's lr of 5e-5 would barely move a
10K-parameter model in a few hundred steps: a learning rate that scales as 1/width from
3e-3 at hidden 64 (muP's rule for Adam on hidden matrices), a short linear warmup, cosine
decay to 10% of the peak, gradient clipping at 1.0, and a smaller batch of 16 documents so
that small data sizes still take enough optimizer steps.

``wsd`` (warmup-stable-decay) holds the peak rate and cools down over the last
``cooldown_fraction`` of the run in the 1-sqrt shape of Hägele et al. (2024), who found
that a constant rate with a 20% cooldown matches a cosine schedule. Its stable part does
not depend on the run's length, which is what lets one nested-data run (a RunSpec with
``eval_at``) branch a cooldown off at each smaller size; :func:`nested_compute` tells what
that saves.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace

from gzipscale import helpers
from gzipscale.helpers import SpecError
from gzipscale.vocabulary import EVAL_TOKENS, FLOPS_PER_PARAM_TOKEN

from .shapes import PARAM_COUNTS

SCHEDULES = ("constant", "cosine", "wsd")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("auto", "on", "off")
PRESETS = ("cpu", "paper")
# 512 held-out documents of 256 tokens. Measured on the tiny models: the standard error of
# the held-out loss (over documents) was 0.002-0.004 nats, under the 0.005 the sweep needs.


class ConfigError(SpecError):
    """A training setting out of range (names the field and the allowed values)."""


# The checks every spec uses, refusing with ConfigError.
check_choice = functools.partial(helpers.check_choice, error=ConfigError)
check_int = functools.partial(helpers.check_int, error=ConfigError)
check_number = functools.partial(helpers.check_number, error=ConfigError)


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 3e-3
    lr_scaling: str = "width"  # "width": lr * lr_reference_width / hidden; "none": lr as is
    lr_reference_width: int = 64
    schedule: str = "cosine"
    warmup_steps: int = 20  # at most a tenth of the run (so a 12-step run still trains)
    min_lr_ratio: float = 0.1  # cosine and wsd end at this fraction of the peak
    cooldown_fraction: float = 0.2  # wsd: the last fifth of the run decays (Hägele et al.)
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 = off
    batch_size: int = 16
    eval_tokens: int = EVAL_TOKENS
    eval_batch_size: int = 64
    checkpoint_every: int = 200  # steps; 0 = only at the end
    keep_checkpoints: int = 2
    seed: int = 0
    vocab_size: int = 0  # 0 = the dataset's own vocabulary
    param_count: str = "total"  # which N the run reports as ``params_counted``
    device: str = "auto"
    compile: str = (
        "auto"  # "auto": on CUDA; on CPU for long small-vocabulary runs (train.wants_compile)
    )
    log_points: int = 200  # about this many points on the training-loss curve

    def __post_init__(self) -> None:
        check_number("lr", self.lr, 0.0, 10.0, low_open=True)
        check_choice("lr_scaling", self.lr_scaling, ("width", "none"))
        check_int("lr_reference_width", self.lr_reference_width, 1)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_int("warmup_steps", self.warmup_steps, 0)
        check_number("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_number("cooldown_fraction", self.cooldown_fraction, 0.0, 1.0, low_open=True)
        check_number("beta1", self.beta1, 0.0, 1.0, high_open=True)
        check_number("beta2", self.beta2, 0.0, 1.0, high_open=True)
        check_number("eps", self.eps, 0.0, 1.0, low_open=True)
        check_number("weight_decay", self.weight_decay, 0.0, 10.0)
        check_number("grad_clip", self.grad_clip, 0.0, 1e6)
        check_int("batch_size", self.batch_size, 1)
        check_int("eval_tokens", self.eval_tokens, 1)
        check_int("eval_batch_size", self.eval_batch_size, 1)
        check_int("checkpoint_every", self.checkpoint_every, 0)
        check_int("keep_checkpoints", self.keep_checkpoints, 1)
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_int("vocab_size", self.vocab_size, 0, 1 << 24)
        check_choice("param_count", self.param_count, PARAM_COUNTS)
        check_choice("device", self.device, DEVICES)
        check_choice("compile", self.compile, COMPILE_MODES)
        check_int("log_points", self.log_points, 1)

    def peak_lr(self, hidden: int) -> float:
        if self.lr_scaling == "width":
            return self.lr * self.lr_reference_width / hidden
        return self.lr

    def warmup_for(self, total_steps: int) -> int:
        return min(self.warmup_steps, total_steps // 10)

    def cooldown_for(self, total_steps: int) -> int:
        """wsd: how many of a run's last steps cool down (at least one, at most all)."""
        return min(total_steps, max(1, math.floor(self.cooldown_fraction * total_steps + 0.5)))

    def lr_at(self, step: int, total_steps: int, hidden: int, warmup: int | None = None) -> float:
        """Learning rate for optimizer step ``step`` (0-based) of a run of ``total_steps``.

        A pure function of the step, so a resumed run needs no scheduler state: the step
        saved in the checkpoint determines it. ``warmup`` overrides ``warmup_for``: a
        nested-data run warms up as its smallest size does, for every size.

        wsd: the peak (after the warmup) until the last C = ``cooldown_for`` steps, then
        floor + (peak - floor)(1 - sqrt(k/C)) at the k-th of them (k = 1..C), so the run's
        last step is at the floor, ``min_lr_ratio`` x peak (as cosine's; Hägele et al.
        decay to 0, which ``min_lr_ratio=0`` gives). In a run too short for both, the
        cooldown wins over the warmup.
        """
        peak = self.peak_lr(hidden)
        floor = peak * self.min_lr_ratio
        if warmup is None:
            warmup = self.warmup_for(total_steps)
        if self.schedule == "wsd":
            cooldown = self.cooldown_for(total_steps)
            into = step - (total_steps - cooldown)
            if into >= 0:  # 1-sqrt, reaching the floor at the run's last step
                return floor + (peak - floor) * (1.0 - math.sqrt((into + 1) / cooldown))
        if step < warmup:
            return peak * (step + 1) / warmup
        if self.schedule in ("constant", "wsd"):
            return peak
        span = max(1, total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown training setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
            )
        return cls(**d)

    def with_overrides(self, **overrides) -> TrainConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def preset(name: str) -> TrainConfig:
    if name == "cpu":
        return TrainConfig()
    if name == "paper":
        return TrainConfig(
            lr=5e-5,
            lr_scaling="none",
            schedule="constant",
            warmup_steps=0,
            min_lr_ratio=0.0,
            eps=1e-6,
            weight_decay=0.0,
            grad_clip=0.0,
            batch_size=32,
        )
    raise ConfigError(f"field 'preset' must be one of {', '.join(PRESETS)}, got {name!r}")


# -- what a nested-data run saves ----------------------------------------------------------


@dataclass(frozen=True)
class NestedCompute:
    """Training tokens of one nested-data run against one run per data size."""

    nested_tokens: int  # the trunk to the largest size, plus each smaller size's cooldown
    independent_tokens: int  # one run from scratch per size: the sum of the sizes

    @property
    def saving(self) -> float:
        """How many times less the nested run trains."""
        return self.independent_tokens / self.nested_tokens

    def flops(self, params: int) -> tuple[float, float]:
        """(nested, independent) training FLOPs at N = ``params``, C = 6·N·D."""
        return (
            FLOPS_PER_PARAM_TOKEN * params * self.nested_tokens,
            FLOPS_PER_PARAM_TOKEN * params * self.independent_tokens,
        )


def nested_compute(
    sizes: Iterable[int], schedule: str = "constant", cooldown_fraction: float = 0.2
) -> NestedCompute:
    """The planned training tokens of one nested run over ``sizes`` (data sizes D) and of
    independent runs of each: D_max for ``constant`` (every smaller size is a point on the
    way), D_max + f·ΣD over the smaller sizes for ``wsd`` (each branches off the trunk for
    its last f·D), against ΣD. In tokens as asked; the trainer rounds each size up to whole
    documents and each cooldown to whole steps, so its count differs by at most a batch
    per size. ``cosine`` decays over a run's whole length: it cannot be nested.
    """
    sizes = sorted(set(int(d) for d in sizes))
    check_choice("schedule", schedule, ("constant", "wsd"))
    check_number("cooldown_fraction", cooldown_fraction, 0.0, 1.0, low_open=True)
    if not sizes or sizes[0] < 1:
        raise ConfigError(f"field 'sizes' must be positive token counts, got {sizes}")
    *smaller, largest = sizes
    cooldowns = cooldown_fraction * sum(smaller) if schedule == "wsd" else 0.0
    return NestedCompute(largest + round(cooldowns), sum(sizes))
