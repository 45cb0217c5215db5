"""The honest test of a law: predict runs it was not fitted on.

:func:`extrapolation_test` holds out a dataset's runs of the largest compute (C = 6·N·D),
fits the law to the rest (floor-anchored where the floor is known, as the reports do),
and predicts each held-out loss with a prediction interval.  The interval comes from the
bootstrap of the fit on the kept runs: each resample's law predicts the held-out point,
times one of that fit's own log residuals drawn at random, so it carries both the law's
uncertainty and the scatter of single runs about it.  A law that extrapolates well has
small errors and held-out losses inside their intervals.

Pure functions of the points and the floor: no cluster, no files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gzipscale.analysis.bootstrap import DEFAULT_POLICY, BootstrapPolicy, bootstrap_fit
from gzipscale.analysis.fit import UnderdeterminedFit, fit_scaling_law
from gzipscale.analysis.identification import at_floor_mask
from gzipscale.vocabulary import FLOPS_PER_PARAM_TOKEN

# The share of a dataset's runs held out, by compute, and the fewest held out.
HOLDOUT_FRACTION = 0.2
MIN_HELD_OUT = 3


@dataclass(frozen=True)
class HeldOutPrediction:
    """One held-out run: what the law fitted without it predicted, and what it measured."""

    params: float
    tokens: float
    observed: float
    predicted: float
    low: float  # the prediction interval at the test's level
    high: float

    @property
    def compute(self) -> float:
        return FLOPS_PER_PARAM_TOKEN * self.params * self.tokens

    @property
    def error(self) -> float:
        """Observed minus predicted loss (nats per token)."""
        return self.observed - self.predicted

    @property
    def inside(self) -> bool:
        return self.low <= self.observed <= self.high

    def to_dict(self) -> dict:
        return {
            "params": float(self.params),
            "tokens": float(self.tokens),
            "compute": float(self.compute),
            "observed": float(self.observed),
            "predicted": float(self.predicted),
            "interval": [float(self.low), float(self.high)],
            "error": float(self.error),
            "inside": bool(self.inside),
        }


@dataclass
class ExtrapolationTest:
    """A dataset's extrapolation test, or why it could not be made (``reason``)."""

    dataset: str
    kind: str  # "floor" (E held at the floor) or "free"
    n_fitted: int
    compute_threshold: float  # runs with C at or above it were held out
    predictions: list[HeldOutPrediction] = field(default_factory=list)
    level: float = 0.95
    reason: str | None = None

    @property
    def made(self) -> bool:
        return self.reason is None and bool(self.predictions)

    @property
    def max_abs_error(self) -> float:
        return max((abs(p.error) for p in self.predictions), default=math.nan)

    @property
    def mean_abs_error(self) -> float:
        if not self.predictions:
            return math.nan
        return float(np.mean([abs(p.error) for p in self.predictions]))

    @property
    def n_inside(self) -> int:
        return sum(p.inside for p in self.predictions)

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "kind": self.kind,
            "n_fitted": int(self.n_fitted),
            "n_held_out": len(self.predictions),
            "compute_threshold": float(self.compute_threshold),
            "level": float(self.level),
            "mean_abs_error": None if not self.made else self.mean_abs_error,
            "max_abs_error": None if not self.made else self.max_abs_error,
            "n_inside": int(self.n_inside),
            "predictions": [p.to_dict() for p in self.predictions],
            "reason": self.reason,
        }


def held_out_mask(N, D, fraction: float = HOLDOUT_FRACTION, minimum: int = MIN_HELD_OUT):
    """Which runs to hold out: the ``fraction`` of largest compute (at least ``minimum``),
    ties at the threshold included.  Returns (mask, threshold compute)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    C = FLOPS_PER_PARAM_TOKEN * np.asarray(N, dtype=float) * np.asarray(D, dtype=float)
    k = max(minimum, int(round(fraction * C.size)))
    if k >= C.size:
        raise UnderdeterminedFit(
            f"holding out {k} of {C.size} runs leaves none to fit: the test needs more runs"
        )
    threshold = float(np.sort(C)[-k])
    return C >= threshold, threshold


def extrapolation_test(
    name: str,
    N,
    D,
    L,
    *,
    floor: float | None = None,
    policy: BootstrapPolicy = DEFAULT_POLICY,
    fraction: float = HOLDOUT_FRACTION,
) -> ExtrapolationTest:
    """Fit ``name``'s runs below the largest compute and predict the rest (module doc).

    With ``floor``, E is held at it and runs at the floor are left out of the fit (as the
    floor-anchored fit does), but still predicted when held out.  Never raises for a
    dataset the test cannot be made on: the result's ``reason`` says why.
    """
    N, D, L = (np.asarray(x, dtype=float) for x in (N, D, L))
    kind = "free" if floor is None else "floor"
    try:
        held, threshold = held_out_mask(N, D, fraction)
    except UnderdeterminedFit as exc:
        return ExtrapolationTest(name, kind, 0, math.nan, level=policy.level, reason=str(exc))
    fitted = ~held
    if floor is not None:
        fitted &= ~at_floor_mask(L, floor)
    try:
        fit = fit_scaling_law(N[fitted], D[fitted], L[fitted], emit_warnings=False, floor=floor)
        boot = bootstrap_fit(
            N[fitted],
            D[fitted],
            L[fitted],
            n_resamples=policy.resamples,
            seed=policy.seed,
            level=policy.level,
            point_fit=fit,
            floor=floor,
        )
    except (UnderdeterminedFit, RuntimeError) as exc:
        return ExtrapolationTest(
            name, kind, int(fitted.sum()), threshold, level=policy.level, reason=str(exc)
        )
    predictions = _predict(fit, boot, N[held], D[held], L[held], floor, policy)
    return ExtrapolationTest(
        name, kind, int(fitted.sum()), threshold, predictions, level=policy.level
    )


def _predict(fit, boot, N, D, L, floor, policy) -> list[HeldOutPrediction]:
    base = 0.0 if floor is None else floor
    s = boot.samples
    rng = np.random.default_rng(policy.seed)
    residuals = np.asarray(fit.residuals_log, dtype=float)
    # A weakly identified resample can carry an infinite A or B: its prediction is then
    # inf (or nan), which the quantiles report as an unbounded interval.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # (resamples, held-out points): each resample's law at each held-out point.
        part = s["A"][:, None] / N[None, :] ** s["alpha"][:, None] + s["B"][:, None] / (
            D[None, :] ** s["beta"][:, None]
        )
        if floor is None:
            part = part + s["E"][:, None]
        noise = rng.choice(residuals, size=part.shape, replace=True)
        draws = base + part * np.exp(noise)
    tail = (1.0 - policy.level) / 2.0
    low, high = np.nanquantile(draws, [tail, 1.0 - tail], axis=0)
    predicted = fit.law.loss(N, D)
    return [
        HeldOutPrediction(float(n), float(d), float(obs), float(p), float(lo), float(hi))
        for n, d, obs, p, lo, hi in zip(N, D, L, predicted, low, high, strict=True)
    ]
