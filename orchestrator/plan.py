"""A sweep's plan: its trials, the results rows each produces, their cost and resources.

Pure functions of the spec (and of whether GPUs are used), so ``--dry-run`` prints what
a real sweep will run, in the order it will start it.

- **Trials** (:class:`PlannedTrial`, one Ray Tune trial each). Independent runs: one per
  (grammar, shape, data size). Nested data (``spec.nested``): one per (grammar, shape),
  trained to the largest size, reporting every smaller size's row on the way
  (:mod:`trainers.nested` plans its trunk and its branches; the tokens counted here are
  the ones the trainer will train).
- **Runs** (:class:`PlannedRun`): one per (grammar, shape, data size), the rows of
  results.csv, whichever trial makes them.
- **Order**: the longest trials first (largest trained N·D), so that the sweep's last
  minutes are not one long trial running alone; ``order = "cheapest-first"`` starts the
  cheapest first, so that a sweep stopped early already has small runs of every grammar.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from gzipscale.helpers import format_size
from gzipscale.trainers.nested import plan_sizes, trained_tokens
from gzipscale.trainers.shapes import get_shape
from gzipscale.vocabulary import FLOPS_PER_PARAM_TOKEN

from .spec import NESTABLE_SCHEDULES, SweepSpec

# For the GPU-hours estimate only: an H100's dense bf16 peak and the MFU a well-run
# 100M-1B model reaches. Small models reach far less, so the estimate is a lower bound.
H100_BF16_FLOPS = 989e12
ASSUMED_MFU = 0.40


@dataclass(frozen=True)
class PlannedTrial:
    """One Ray Tune trial: a model trained on one dataset up to ``tokens``."""

    run_id: str  # stable across restarts: dataset/shape/tokens, or dataset/shape/nested
    dataset: str  # dataset name (grammar spec, seed, sampler)
    grammar: str
    seed: int
    sampler: str
    shape: str
    params: int  # total N at the run's vocabulary
    non_embedding_params: int
    vocab_size: int
    tokens: int  # the data size it trains to (whole documents): its last row
    flops: float  # 6 N x the tokens it trains on (trunk and cooldown branches)
    cpus: float
    gpus: float  # per worker
    workers: int  # > 1: a Ray Train TorchTrainer with this many GPU workers
    eval_at: tuple[int, ...] = ()  # nested: the smaller sizes it reports on the way
    trained_tokens: int = 0  # every token it trains on
    schedule: str = ""

    @property
    def sizes(self) -> tuple[int, ...]:
        """The data sizes whose rows it produces, smallest first."""
        return (*self.eval_at, self.tokens)

    @property
    def nested(self) -> bool:
        return bool(self.eval_at)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["eval_at"] = list(self.eval_at)
        return d

    @property
    def resources(self) -> str:
        return _resources(self.workers, self.gpus, self.cpus)


@dataclass(frozen=True)
class PlannedRun:
    """One results row: a (dataset, shape, data size) and the trial that produces it."""

    run_id: str  # stable across restarts: dataset/shape/tokens
    dataset: str
    grammar: str
    seed: int
    sampler: str
    shape: str
    params: int
    non_embedding_params: int
    vocab_size: int
    tokens: int  # D, whole documents
    # The training FLOPs spent on it: 6 N D for a run of its own; in a nested trial, its
    # share (the trunk from the previous size to this one, plus its own cooldown), so
    # that a sweep's runs add up to what it trains.
    flops: float
    cpus: float
    gpus: float
    workers: int
    trial: str = ""  # the run_id of the trial that produces it
    schedule: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def resources(self) -> str:
        return _resources(self.workers, self.gpus, self.cpus)


def _resources(workers: int, gpus: float, cpus: float) -> str:
    if workers > 1:
        return f"{workers} x (1 GPU, {cpus:g} CPU)"
    if gpus:
        return f"{gpus:g} GPU, {cpus:g} CPU"
    return f"{cpus:g} CPU"


def whole_documents(size: int, context_length: int) -> int:
    """A data size as the trainer reads it: rounded up to whole documents, in tokens."""
    return math.ceil(size / context_length) * context_length


def plan_trials(spec: SweepSpec, use_gpu: bool) -> list[PlannedTrial]:
    """The sweep's trials in the order they start (see the module doc)."""
    trials = []
    res = spec.resources
    cfg = spec.train
    ctx = spec.context_length
    sizes = sorted({whole_documents(d, ctx) for d in spec.data_sizes})
    for entry in spec.grammars:
        grammar = entry.spec
        vocab = cfg.vocab_size or grammar.terminals + 1
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
            common = dict(
                dataset=entry.dataset,
                grammar=grammar.short,
                seed=grammar.seed,
                sampler=entry.sampler,
                shape=shape_name,
                params=params,
                non_embedding_params=shape.non_embedding_params(),
                vocab_size=vocab,
                cpus=res.cpus_per_trial,
                gpus=gpus,
                workers=workers,
                schedule=cfg.schedule,
            )
            groups = [sizes] if spec.nested else [[d] for d in sizes]
            for group in groups:
                *smaller, largest = group
                rows = plan_sizes(cfg, largest, smaller, largest // ctx, ctx)
                trained = trained_tokens(rows, cfg.batch_size, ctx)
                size = _asked(spec, largest)
                trials.append(
                    PlannedTrial(
                        run_id=f"{entry.dataset}/{shape_name}/"
                        + ("nested" if smaller else format_size(size)),
                        tokens=largest,
                        flops=FLOPS_PER_PARAM_TOKEN * params * trained,
                        eval_at=tuple(smaller),
                        trained_tokens=trained,
                        **common,
                    )
                )
    order = {e.dataset: i for i, e in enumerate(spec.grammars)}
    sign = -1 if spec.order == "longest-first" else 1
    # Ties by grammar order, so that every grammar gets its trials early.
    return sorted(trials, key=lambda t: (sign * t.flops, order[t.dataset], t.run_id))


def _asked(spec: SweepSpec, tokens: int) -> int:
    """The data size as the spec wrote it (run ids name it so), for whole-document tokens."""
    for size in spec.data_sizes:
        if whole_documents(size, spec.context_length) == tokens:
            return size
    return tokens


def runs_of(trial: PlannedTrial, spec: SweepSpec) -> list[PlannedRun]:
    """The results rows ``trial`` produces, smallest first, each with its share of FLOPs."""
    cfg, ctx = spec.train, spec.context_length
    rows = plan_sizes(cfg, trial.tokens, trial.eval_at, trial.tokens // ctx, ctx)
    out, previous = [], 0
    for row in rows:
        branch = (row.docs - min(row.branch_at * cfg.batch_size, row.docs)) * ctx
        share = (row.docs - previous) * ctx + (branch if row is not rows[-1] else 0)
        previous = row.docs
        out.append(
            PlannedRun(
                run_id=f"{trial.dataset}/{trial.shape}/{format_size(_asked(spec, row.tokens))}",
                dataset=trial.dataset,
                grammar=trial.grammar,
                seed=trial.seed,
                sampler=trial.sampler,
                shape=trial.shape,
                params=trial.params,
                non_embedding_params=trial.non_embedding_params,
                vocab_size=trial.vocab_size,
                tokens=row.tokens,
                flops=FLOPS_PER_PARAM_TOKEN * trial.params * share,
                cpus=trial.cpus,
                gpus=trial.gpus,
                workers=trial.workers,
                trial=trial.run_id,
                schedule=trial.schedule,
            )
        )
    return out


def plan_runs(spec: SweepSpec, use_gpu: bool) -> list[PlannedRun]:
    """Every results row of the sweep, in the order of the trials that produce them."""
    return [run for trial in plan_trials(spec, use_gpu) for run in runs_of(trial, spec)]


def gpu_hours(flops: float) -> float:
    return flops / (H100_BF16_FLOPS * ASSUMED_MFU) / 3600


def _mode(trials: list[PlannedTrial]) -> dict:
    flops = sum(t.flops for t in trials)
    return {
        "trials": len(trials),
        "tokens": sum(t.trained_tokens for t in trials),
        "flops": flops,
        "gpu_hours_estimate": gpu_hours(flops),
    }


def compare_modes(spec: SweepSpec, use_gpu: bool) -> dict:
    """The same grid as independent runs and as nested trials: trials, training tokens,
    FLOPs and GPU-hours of each, and how many times fewer tokens nested trains. Nested
    needs a schedule that can be nested: a cosine spec is compared at ``wsd``; a constant
    one also at ``wsd`` (``nested_wsd``), what decaying at every size would cost."""
    independent = spec.with_changes(nested=False)
    train = {} if spec.train.schedule in NESTABLE_SCHEDULES else {"schedule": "wsd"}
    nested = spec.with_changes(nested=True, train=train)
    modes = {
        "independent": _mode(plan_trials(independent, use_gpu))
        | {"schedule": independent.train.schedule},
        "nested": _mode(plan_trials(nested, use_gpu))
        | {
            "schedule": nested.train.schedule,
            "cooldown_fraction": nested.train.cooldown_fraction,
        },
    }
    modes["saving"] = modes["independent"]["tokens"] / modes["nested"]["tokens"]
    if nested.train.schedule != "wsd":  # what a wsd cooldown at each size would cost
        wsd = spec.with_changes(nested=True, train={"schedule": "wsd"})
        modes["nested_wsd"] = _mode(plan_trials(wsd, use_gpu)) | {
            "schedule": "wsd",
            "cooldown_fraction": wsd.train.cooldown_fraction,
        }
        modes["saving_wsd"] = modes["independent"]["tokens"] / modes["nested_wsd"]["tokens"]
    return modes


def plan_summary(spec: SweepSpec, use_gpu: bool) -> dict:
    trials = plan_trials(spec, use_gpu)
    runs = [run for trial in trials for run in runs_of(trial, spec)]
    total = sum(t.flops for t in trials)
    return {
        "name": spec.name,
        "runs": len(runs),
        "trials": len(trials),
        "nested": spec.nested,
        "order": spec.order,
        "schedule": spec.train.schedule,
        "grammars": len(spec.grammars),
        "shapes": list(spec.shapes),
        "data_sizes": list(spec.data_sizes),
        "total_flops": total,
        "total_tokens": sum(t.trained_tokens for t in trials),
        "largest_run_flops": max(t.flops for t in trials),
        "use_gpu": use_gpu,
        "gpu_hours_estimate": gpu_hours(total),
        "gpu_hours_assumption": (
            f"6·N·D FLOPs at {ASSUMED_MFU:.0%} MFU of an H100 "
            f"({H100_BF16_FLOPS / 1e12:.0f} TFLOP/s bf16); small models reach less"
        ),
        "modes": compare_modes(spec, use_gpu),
        "plan": [r.to_dict() | {"resources": r.resources} for r in runs],
        "trial_plan": [t.to_dict() | {"resources": t.resources} for t in trials],
    }
