"""Bootstrap intervals for a fit, and the one bootstrap policy every interval comes from.

:data:`DEFAULT_POLICY` -- :data:`~gzipscale.vocabulary.BOOTSTRAP_RESAMPLES` resamples of the
runs drawn from :data:`~gzipscale.vocabulary.BOOTSTRAP_SEED`, 95% percentile intervals -- is
what ``gzipscale fit``, the live analysis actor, the live display and both reports use, and
each of them prints :meth:`BootstrapPolicy.describe` beside its intervals, so the same runs
give the same intervals everywhere and every interval says how it was made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gzipscale.analysis.fit import (
    MIN_DISTINCT,
    FitTarget,
    ScalingFit,
    StartGrid,
    UnderdeterminedFit,
    fit_scaling_law,
    validate_points,
)
from gzipscale.analysis.law import EXPONENT_NAMES, LAW_NAMES, LOG_COEFFICIENT_LIMIT, ScalingLaw
from gzipscale.analysis.lbfgs import batched_lbfgs, polish_ok, scipy_polish
from gzipscale.analysis.objective import HUBER_DELTA
from gzipscale.vocabulary import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

INTERVAL_LEVEL = 0.95
# What a bootstrap estimates: the law's parameters and its frontier exponents.
BOOTSTRAP_NAMES = LAW_NAMES + EXPONENT_NAMES
# Coarse start grid added to every bootstrap fit (32 starts spanning the main grid).
BOOTSTRAP_GRID = StartGrid(
    a=(5.0, 20.0), b=(5.0, 20.0), e=(-0.5, 0.5), alpha=(0.5, 1.5), beta=(0.5, 1.5)
)


@dataclass(frozen=True)
class BootstrapPolicy:
    """How intervals are made: ``resamples`` bootstrap fits (0: no intervals) drawn from
    ``seed``, percentile intervals of coverage ``level``."""

    resamples: int = BOOTSTRAP_RESAMPLES
    seed: int = BOOTSTRAP_SEED
    level: float = INTERVAL_LEVEL

    def __post_init__(self) -> None:
        if self.resamples < 0:
            raise ValueError(f"bootstrap resamples must be >= 0, got {self.resamples}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")

    def describe(self) -> str:
        """What to print beside an interval: "95% interval, 200 bootstrap resamples, seed 0"."""
        if not self.resamples:
            return "no intervals (0 bootstrap resamples)"
        return (
            f"{100 * self.level:.0f}% interval, {self.resamples} bootstrap resamples, "
            f"seed {self.seed}"
        )

    def quote(self, lo: float, hi: float, spec: str = ".3g") -> str:
        """An interval in running text: "95% interval [0.2, 0.4] (200 bootstrap resamples,
        seed 0)"."""
        return (
            f"{100 * self.level:.0f}% interval [{lo:{spec}}, {hi:{spec}}] "
            f"({self.resamples} bootstrap resamples, seed {self.seed})"
        )

    def to_dict(self) -> dict:
        return {"resamples": int(self.resamples), "seed": int(self.seed), "level": self.level}

    @classmethod
    def from_dict(cls, data: Mapping) -> BootstrapPolicy:
        return cls(int(data["resamples"]), int(data["seed"]), float(data["level"]))


DEFAULT_POLICY = BootstrapPolicy()


@dataclass
class BootstrapResult:
    """Percentile bootstrap intervals for a :class:`ScalingFit`.

    Attributes
    ----------
    point : dict
        Point estimates for E, A, B, alpha, beta, n_opt_exponent
        (= beta/(alpha+beta)) and d_opt_exponent (= alpha/(alpha+beta)).
    intervals : dict
        name -> (low, high) percentile interval at ``level``.
    samples : dict
        name -> array of the bootstrap estimates (``n_resamples`` each).
    n_resamples, level, seed : as requested.
    resample_unit : str
        "point" or "group".
    n_redrawn : int
        Degenerate resamples (fewer than 2 distinct N or D) redrawn.
    n_unconverged : int
        Resample fits whose polish did not report convergence (kept).
    resample_counts : array, shape (n_resamples, n_points)
        How many times each point appears in each resample.
    """

    point: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    samples: dict[str, np.ndarray]
    n_resamples: int
    level: float
    seed: int | None
    resample_unit: str
    n_redrawn: int
    n_unconverged: int
    resample_counts: np.ndarray

    def to_dict(self, include_samples: bool = False) -> dict:
        out = {
            "point": {k: float(v) for k, v in self.point.items()},
            "intervals": {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()},
            "n_resamples": int(self.n_resamples),
            "level": float(self.level),
            "seed": self.seed,
            "resample_unit": self.resample_unit,
            "n_redrawn": int(self.n_redrawn),
            "n_unconverged": int(self.n_unconverged),
        }
        if include_samples:
            out["samples"] = {k: [float(v) for v in arr] for k, arr in self.samples.items()}
        return out

    @property
    def policy(self) -> BootstrapPolicy:
        return BootstrapPolicy(self.n_resamples, self.seed, self.level)


def _named_estimates(theta: np.ndarray) -> dict[str, np.ndarray]:
    theta = np.atleast_2d(theta)
    alpha, beta = theta[:, 3], theta[:, 4]
    # A resample of a weakly identified fit can send log A past 709: its A is then inf,
    # which the percentile interval reports as such; the overflow is not worth a warning
    # on a user's terminal.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return {
            "E": np.exp(theta[:, 2]),
            "A": np.exp(theta[:, 0]),
            "B": np.exp(theta[:, 1]),
            "alpha": alpha,
            "beta": beta,
            "n_opt_exponent": beta / (alpha + beta),
            "d_opt_exponent": alpha / (alpha + beta),
        }


def _draw_counts(rng, n_points, group_codes, n_groups, N, D, n_resamples, max_redraws):
    """Multiplicity of each point in each resample, shape (n_resamples, n_points)."""
    counts = np.zeros((n_resamples, n_points))
    redrawn = 0
    for r in range(n_resamples):
        while True:
            if group_codes is None:
                c = np.bincount(rng.integers(0, n_points, n_points), minlength=n_points)
            else:
                picked = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
                c = picked[group_codes]
            present = c > 0
            if (
                len(np.unique(N[present])) >= MIN_DISTINCT
                and len(np.unique(D[present])) >= MIN_DISTINCT
            ):
                break
            redrawn += 1
            if redrawn > max_redraws:
                raise UnderdeterminedFit(
                    f"{redrawn} bootstrap resamples in a row had fewer than 2 distinct N or D; "
                    "the data has too few model sizes or token counts (or groups) to bootstrap"
                )
        counts[r] = c
    return counts, redrawn


def bootstrap_fit(
    N,
    D,
    L,
    *,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = INTERVAL_LEVEL,
    seed: int | None = BOOTSTRAP_SEED,
    groups=None,
    point_fit: ScalingFit | None = None,
    delta: float = HUBER_DELTA,
    extra_grid: StartGrid = BOOTSTRAP_GRID,
    batch_max_iter: int = 100,
    floor: float | None = None,
) -> BootstrapResult:
    """Percentile bootstrap confidence intervals for the law and frontier exponents.

    Each resample draws points (or whole groups, e.g. runs) with replacement,
    represented as per-point multiplicities, which is the same objective as
    fitting the concatenated resample.

    Warm start (instead of the 4500-point grid per resample): each resample
    is started from the point estimate, the point fit's other distinct local
    minima, and the 32-start ``extra_grid``.  A resample perturbs the data
    mildly, so its optimum lies near one of the original optima; the coarse
    grid guards against a resample moving into a basin the point fit did not
    rank.  All resamples x starts run as one batched L-BFGS, then each
    resample's best start is polished by scipy L-BFGS-B.  (tests/test_fit.py
    checks resample fits against full 4500-start fits of the same resample.)

    Parameters
    ----------
    N, D, L : array_like
        As for :func:`fit_scaling_law`.
    n_resamples : int
        Number of bootstrap fits.
    level : float
        Coverage of the percentile intervals, in (0, 1).
    seed : int or None
        Seed for the resampling; the same seed gives the same intervals.
    groups : array_like, optional
        A label per point; when given, whole groups are resampled.
    point_fit : ScalingFit, optional
        The fit of the full data (computed if absent).
    delta : float
        Huber threshold.
    extra_grid : StartGrid
        Coarse grid of extra starts per resample.
    batch_max_iter : int
        Iteration cap of the batched pass (then scipy polishes each resample).
    floor : float, optional
        Hold E at this floor in every resample (the floor-anchored fit; ``point_fit``
        must be anchored at the same floor).  E's interval is then the floor itself.

    Returns
    -------
    BootstrapResult

    Raises
    ------
    ValueError, UnderdeterminedFit
        As :func:`fit_scaling_law`; also if resamples keep degenerating.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    N, D, L = validate_points(N, D, L, floor)
    if point_fit is None:
        point_fit = fit_scaling_law(N, D, L, delta=delta, emit_warnings=False, floor=floor)
    elif point_fit.n_points != len(N):
        raise ValueError(
            f"point_fit was fitted to {point_fit.n_points} points, but {len(N)} were given"
        )
    elif point_fit.floor != floor:
        raise ValueError(f"point_fit was fitted with floor {point_fit.floor}, not {floor}")
    target = FitTarget.of(N, D, L, floor)
    log_n, log_d, log_l = target.log_n, target.log_d, target.log_y

    group_codes, n_groups = None, 0
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != N.shape:
            raise ValueError(f"groups must have one label per point, got shape {groups.shape}")
        _, group_codes = np.unique(groups, return_inverse=True)
        n_groups = int(group_codes.max()) + 1
        if n_groups < 2:
            raise UnderdeterminedFit("need at least 2 groups to resample groups, got 1")

    rng = np.random.default_rng(seed)
    counts, redrawn = _draw_counts(
        rng, len(N), group_codes, n_groups, N, D, n_resamples, max_redraws=100 * n_resamples
    )

    # Warm starts: the point fit, then its other local minima.  A coefficient that
    # underflowed to 0 has log -inf; clipped, it is the same law to double precision.
    laws = [point_fit.law] + [ScalingLaw.from_dict(m) for m in point_fit.local_minima[1:]]
    warm = np.clip(
        np.array([law.to_theta() for law in laws]), -LOG_COEFFICIENT_LIMIT, LOG_COEFFICIENT_LIMIT
    )
    starts = target.starts(np.vstack([warm, extra_grid.points()]))
    n_starts = len(starts)
    rows_theta = np.tile(starts, (n_resamples, 1))
    rows_weights = np.repeat(counts, n_starts, axis=0)

    def batch_fun(x, rows):
        return target.objective(x, log_n, log_d, log_l, delta, rows_weights[rows])

    batch = batched_lbfgs(batch_fun, rows_theta, max_iter=batch_max_iter)
    f_by_resample = np.where(np.isfinite(batch.f), batch.f, np.inf).reshape(n_resamples, n_starts)
    best_rows = np.arange(n_resamples) * n_starts + np.argmin(f_by_resample, axis=1)

    thetas = np.empty((n_resamples, 5))
    unconverged = 0
    for r, row in enumerate(best_rows):
        res = scipy_polish(
            batch.x[row], log_n, log_d, log_l, delta, counts[r], objective=target.objective
        )
        keep = res.x if res.fun <= batch.f[row] else batch.x[row]
        thetas[r] = keep
        unconverged += not polish_ok(res)

    samples = _named_estimates(thetas)
    point = {k: float(v[0]) for k, v in _named_estimates(point_fit.theta).items()}
    if floor is not None:  # E is the floor in every resample, exactly
        samples["E"] = np.full(n_resamples, float(floor))
        point["E"] = float(floor)
    tail = 100 * (1 - level) / 2
    with np.errstate(invalid="ignore"):  # inf draws (A past exp(709)) give inf bounds
        intervals = {
            k: tuple(float(q) for q in np.percentile(v, [tail, 100 - tail]))
            for k, v in samples.items()
        }
    return BootstrapResult(
        point=point,
        intervals=intervals,
        samples=samples,
        n_resamples=n_resamples,
        level=level,
        seed=seed,
        resample_unit="point" if groups is None else "group",
        n_redrawn=redrawn,
        n_unconverged=unconverged,
        resample_counts=counts.astype(int),
    )
