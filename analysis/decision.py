"""Decision accuracy (as DataDecide, Magnusson et al. 2025, measures it): do small runs rank
datasets the way the largest runs do?

A "scale" is one (model size N, data size D) cell that every dataset has a finished run
at.  The target ranking is the one at the largest compute cell they share; at each scale,
the accuracy is the fraction of dataset pairs that cell orders the same way.  Two orderings
are scored: by loss (what a practitioner choosing data would compare) and by excess loss
L − floor where every dataset has a floor (how far each is from what it could reach).

A pure function of the points: no cluster, no files.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from gzipscale.vocabulary import FLOPS_PER_PARAM_TOKEN

LOSS = "loss"
EXCESS = "excess"


@dataclass(frozen=True)
class ScaleAccuracy:
    """The ranking at one (N, D) cell against the target's."""

    params: float
    tokens: float
    accuracy: float  # fraction of dataset pairs ordered as at the target
    pairs: int
    by: str  # LOSS or EXCESS

    @property
    def compute(self) -> float:
        return FLOPS_PER_PARAM_TOKEN * self.params * self.tokens

    def to_dict(self) -> dict:
        return {
            "params": float(self.params),
            "tokens": float(self.tokens),
            "compute": float(self.compute),
            "accuracy": float(self.accuracy),
            "pairs": int(self.pairs),
            "by": self.by,
        }


@dataclass
class DecisionAccuracy:
    """Every shared cell's accuracy, smallest compute first, or why there is none."""

    datasets: list[str]
    target_params: float = math.nan
    target_tokens: float = math.nan
    target_order: dict[str, list[str]] = field(default_factory=dict)  # by -> best first
    scales: list[ScaleAccuracy] = field(default_factory=list)
    reason: str | None = None

    def of(self, by: str) -> list[ScaleAccuracy]:
        return [s for s in self.scales if s.by == by]

    def to_dict(self) -> dict:
        return {
            "datasets": list(self.datasets),
            "target": {"params": self.target_params, "tokens": self.target_tokens},
            "target_order": {k: list(v) for k, v in self.target_order.items()},
            "scales": [s.to_dict() for s in self.scales],
            "reason": self.reason,
        }


def _pair_accuracy(values: np.ndarray, target: np.ndarray) -> tuple[float, int]:
    pairs = list(itertools.combinations(range(len(values)), 2))
    agree = sum(np.sign(values[i] - values[j]) == np.sign(target[i] - target[j]) for i, j in pairs)
    return agree / len(pairs), len(pairs)


def decision_accuracy(
    cells: dict[str, dict[tuple[float, float], float]],
    floors: dict[str, float] | None = None,
) -> DecisionAccuracy:
    """Decision accuracy over ``cells``: per dataset, ``{(N, D): loss}``.

    ``floors`` (per dataset) adds the ranking by excess loss when every dataset has one.
    """
    names = sorted(cells)
    if len(names) < 2:
        return DecisionAccuracy(names, reason="ranking needs at least 2 datasets")
    shared = set.intersection(*(set(cells[n]) for n in names))
    if not shared:
        return DecisionAccuracy(names, reason="the datasets share no (N, D) cell")
    target = max(shared, key=lambda c: (c[0] * c[1], c[0]))
    orderings = [LOSS]
    if floors is not None and all(n in floors and math.isfinite(floors[n]) for n in names):
        orderings.append(EXCESS)

    def values(cell, by):
        loss = np.array([cells[n][cell] for n in names])
        return loss - np.array([floors[n] for n in names]) if by == EXCESS else loss

    result = DecisionAccuracy(names, target_params=target[0], target_tokens=target[1])
    for by in orderings:
        at_target = values(target, by)
        result.target_order[by] = [names[i] for i in np.argsort(at_target, kind="stable")]
        for cell in sorted(shared, key=lambda c: (c[0] * c[1], c[0])):
            accuracy, pairs = _pair_accuracy(values(cell, by), at_target)
            result.scales.append(ScaleAccuracy(cell[0], cell[1], accuracy, pairs, by))
    return result
