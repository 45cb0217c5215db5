"""Does the law's compute-optimal model win?  The check of a frontier against new runs.

For a compute budget C the grid does not contain, a fitted law names its optimal model
size N_opt(C).  :func:`plan_optimum_check` picks the model shape nearest N_opt and its
neighbours on each side in the shape family, each trained on D = C / (6·N) tokens so that
all three cost the same, and predicts each one's loss; after they are trained,
:func:`judge_optimum` says whether the model the law calls optimal has the lowest measured
loss of the three.

Pure functions of the law, the shapes and the measured losses.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gzipscale.analysis.frontier import optimal_allocation
from gzipscale.analysis.law import ScalingLaw
from gzipscale.helpers import InputError
from gzipscale.vocabulary import FLOPS_PER_PARAM_TOKEN

OPTIMUM_FILE = "optimum.json"  # in a run directory: written by gzipscale optimum


@dataclass(frozen=True)
class Candidate:
    """One model of the check: its shape, size, data size at the budget, and losses."""

    shape: str
    params: int
    tokens: int
    predicted: float
    observed: float = math.nan

    def to_dict(self) -> dict:
        return {
            "shape": self.shape,
            "params": int(self.params),
            "tokens": int(self.tokens),
            "predicted": float(self.predicted),
            "observed": None if math.isnan(self.observed) else float(self.observed),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        observed = d.get("observed")
        return cls(
            d["shape"],
            int(d["params"]),
            int(d["tokens"]),
            float(d["predicted"]),
            math.nan if observed is None else float(observed),
        )


@dataclass
class OptimumCheck:
    """The plan of a check (candidates without ``observed``) or its outcome."""

    dataset: str
    budget: float
    n_opt: float  # the law's optimal N at ``budget``
    d_opt: float
    candidates: list[Candidate] = field(default_factory=list)  # smallest N first

    @property
    def predicted_best(self) -> Candidate:
        return min(self.candidates, key=lambda c: c.predicted)

    @property
    def observed_best(self) -> Candidate | None:
        measured = [c for c in self.candidates if not math.isnan(c.observed)]
        if len(measured) < len(self.candidates):
            return None
        return min(measured, key=lambda c: c.observed)

    @property
    def holds(self) -> bool | None:
        """Whether the law's optimum measured best (None until all three are trained)."""
        best = self.observed_best
        return None if best is None else best.shape == self.predicted_best.shape

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "budget": float(self.budget),
            "n_opt": float(self.n_opt),
            "d_opt": float(self.d_opt),
            "candidates": [c.to_dict() for c in self.candidates],
            "predicted_best": self.predicted_best.shape,
            "holds": self.holds,
        }

    @classmethod
    def from_dict(cls, d: dict) -> OptimumCheck:
        return cls(
            d["dataset"],
            float(d["budget"]),
            float(d["n_opt"]),
            float(d["d_opt"]),
            [Candidate.from_dict(c) for c in d["candidates"]],
        )


def plan_optimum_check(
    dataset: str,
    law: ScalingLaw,
    budget: float,
    shapes: dict[str, int],
    *,
    context_length: int = 256,
) -> OptimumCheck:
    """The three runs of the check at ``budget`` (FLOPs): the shape nearest the law's N_opt
    (in log N) and one on each side, from ``shapes`` (name -> N).

    Raises ValueError when the law has no frontier, or when N_opt is not inside the
    shape family (no model on one side of it: choose another budget).
    """
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be a positive number of FLOPs, got {budget}")
    n_opt, d_opt = (float(x) for x in optimal_allocation(law, budget))
    family = sorted(shapes.items(), key=lambda item: item[1])
    if len(family) < 3:
        raise ValueError(f"the check needs at least 3 shapes, got {len(family)}")
    logs = np.log([n for _, n in family])
    nearest = int(np.argmin(np.abs(logs - math.log(n_opt))))
    if nearest in (0, len(family) - 1):
        raise ValueError(
            f"the law's optimal N at {budget:.3g} FLOPs is {n_opt:.3g}, at the edge of the "
            f"shapes ({family[0][1]:,} to {family[-1][1]:,} parameters): no model on one side"
        )
    candidates = []
    for name, params in family[nearest - 1 : nearest + 2]:
        tokens = budget / (FLOPS_PER_PARAM_TOKEN * params)
        # Whole documents, as the trainer rounds.
        tokens = int(math.ceil(tokens / context_length) * context_length)
        candidates.append(Candidate(name, params, tokens, float(law.loss(params, tokens))))
    return OptimumCheck(dataset, float(budget), n_opt, d_opt, candidates)


def budget_at(law: ScalingLaw, params: float) -> float:
    """The compute budget at which the law's optimal model has ``params`` parameters
    (the inverse of N_opt(C) = G·(C/6)^a)."""
    from gzipscale.analysis.frontier import frontier_coefficient, frontier_exponents

    a, _ = frontier_exponents(law)
    G = frontier_coefficient(law)
    return FLOPS_PER_PARAM_TOKEN * (params / G) ** (1.0 / a)


def judge_optimum(check: OptimumCheck, observed: dict[str, float]) -> OptimumCheck:
    """The check with each candidate's measured loss (``observed``: shape -> loss)."""
    return OptimumCheck(
        check.dataset,
        check.budget,
        check.n_opt,
        check.d_opt,
        [
            Candidate(c.shape, c.params, c.tokens, c.predicted, float(observed[c.shape]))
            for c in check.candidates
        ],
    )


@dataclass
class OptimumOutcome:
    """Every dataset's check (``checks``) and why the others have none (``skipped``)."""

    checks: list[OptimumCheck] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"checks": [c.to_dict() for c in self.checks], "skipped": dict(self.skipped)}

    @classmethod
    def from_dict(cls, d: dict) -> OptimumOutcome:
        return cls(
            [OptimumCheck.from_dict(c) for c in d.get("checks", [])], dict(d.get("skipped", {}))
        )


def read_outcome(run_dir: str | Path) -> OptimumOutcome | None:
    """The run directory's optimum check (None when ``gzipscale optimum`` has not run)."""
    path = Path(run_dir) / OPTIMUM_FILE
    if not path.is_file():
        return None
    try:
        return OptimumOutcome.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not an optimum-check file ({exc})") from None
