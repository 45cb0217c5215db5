"""The fits of a results table as one record: :class:`FitReport`, one :class:`DatasetFit` per
fitted dataset.

:func:`fit_datasets` makes it; everything that shows a fit reads it: ``gzipscale fit``
(its ``--json`` is :meth:`FitReport.to_dict`), the live analysis actor's snapshot, the live
display and ``watch``, ``gzipscale report`` and the reproduction report.  Each concept has
one key: the law's five parameters and its two frontier exponents
(:data:`~gzipscale.analysis.law.EXPONENT_NAMES`) under the same names in ``law`` and in
``intervals``; the compute-optimal split at the report's ``budget`` in ``frontier``; the
bootstrap policy (resamples, seed, level) in ``bootstrap``, beside the intervals it made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from gzipscale.analysis.bootstrap import DEFAULT_POLICY, BootstrapPolicy, bootstrap_fit
from gzipscale.analysis.fit import UnderdeterminedFit, fit_scaling_law
from gzipscale.analysis.frontier import FrontierPoint, compute_optimal, crossing_budget
from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.regression import MIN_DATASETS, GzipRegression, fit_gzip_regression
from gzipscale.analysis.table import Points
from gzipscale.vocabulary import REFERENCE_BUDGET


@dataclass(frozen=True)
class BootstrapSummary:
    """How a dataset's intervals were made: the policy, and what went wrong in it."""

    policy: BootstrapPolicy
    n_redrawn: int = 0  # degenerate resamples drawn again
    n_unconverged: int = 0  # resample fits whose polish did not report convergence (kept)

    def to_dict(self) -> dict:
        return {
            **self.policy.to_dict(),
            "n_redrawn": int(self.n_redrawn),
            "n_unconverged": int(self.n_unconverged),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> BootstrapSummary:
        return cls(
            BootstrapPolicy.from_dict(data), int(data["n_redrawn"]), int(data["n_unconverged"])
        )


@dataclass
class DatasetFit:
    """One dataset's fit: the law, its intervals and frontier, and what to distrust.

    ``intervals`` maps each name of ``law.to_dict()`` to its (low, high) percentile
    interval, or is None without a bootstrap; ``bootstrap`` says how they were made.
    ``frontier`` is the compute-optimal split at the report's budget (None when the law has
    a non-positive parameter; ``warnings`` then says so).

    The points (``N``, ``D``, ``L``), the log residuals and the bootstrap ``samples`` are
    kept for the reports' figures and the claims; :meth:`to_dict` leaves them out (they are
    the inputs and raw draws, not the result), so :meth:`from_dict` gives them back as None.
    """

    name: str
    law: ScalingLaw
    gzip: float | None  # the dataset's compressibility H
    n_points: int
    objective: float
    converged: bool
    frontier: FrontierPoint | None
    chinchilla_crossing: float | None  # budget (FLOPs) where the frontier meets Chinchilla's
    intervals: dict[str, tuple[float, float]] | None
    bootstrap: BootstrapSummary | None
    warnings: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)  # rows left out, by status
    N: np.ndarray | None = None
    D: np.ndarray | None = None
    L: np.ndarray | None = None
    residuals_log: list[float] | None = None
    samples: dict[str, np.ndarray] | None = None

    def interval(self, key: str) -> tuple[float, float] | None:
        """The (low, high) interval of ``key``, or None (no bootstrap, or a NaN bound)."""
        if self.intervals is None or key not in self.intervals:
            return None
        lo, hi = self.intervals[key]
        if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
            return None
        return float(lo), float(hi)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "law": self.law.to_dict(),
            "intervals": None
            if self.intervals is None
            else {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()},
            "bootstrap": None if self.bootstrap is None else self.bootstrap.to_dict(),
            "gzip": self.gzip,
            "n_points": int(self.n_points),
            "frontier": None if self.frontier is None else self.frontier.to_dict(),
            "chinchilla_crossing": self.chinchilla_crossing,
            "objective": float(self.objective),
            "converged": bool(self.converged),
            "warnings": list(self.warnings),
            "excluded": dict(self.excluded),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> DatasetFit:
        """A fit from :meth:`to_dict` (after JSON: None where it wrote NaN)."""
        intervals = data.get("intervals")
        if intervals is not None:
            intervals = {
                k: tuple(math.nan if v is None else float(v) for v in bounds)
                for k, bounds in intervals.items()
            }
        boot, frontier = data.get("bootstrap"), data.get("frontier")
        return cls(
            name=str(data["name"]),
            law=ScalingLaw.from_dict(data["law"]),
            gzip=data.get("gzip"),
            n_points=int(data["n_points"]),
            objective=math.nan if data.get("objective") is None else float(data["objective"]),
            converged=bool(data.get("converged")),
            frontier=None if frontier is None else FrontierPoint.from_dict(frontier),
            chinchilla_crossing=data.get("chinchilla_crossing"),
            intervals=intervals,
            bootstrap=None if boot is None else BootstrapSummary.from_dict(boot),
            warnings=list(data.get("warnings") or []),
            excluded=dict(data.get("excluded") or {}),
        )


@dataclass
class FitReport:
    """Every dataset of a results table: fitted (``datasets``) or ``skipped`` with the
    reason, and each law parameter regressed on gzip H across the fitted ones (or
    ``regression_note`` saying why not)."""

    datasets: dict[str, DatasetFit]
    skipped: dict[str, str]
    regression: GzipRegression | None
    regression_note: str | None
    policy: BootstrapPolicy = DEFAULT_POLICY  # what was asked; each fit says what it got
    budget: float = REFERENCE_BUDGET  # FLOPs of every dataset's ``frontier``
    source: str = ""

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "bootstrap": self.policy.to_dict(),
            "budget": float(self.budget),
            "datasets": {name: d.to_dict() for name, d in self.datasets.items()},
            "skipped": dict(self.skipped),
            "regression": None if self.regression is None else self.regression.to_dict(),
            "regression_note": self.regression_note,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> FitReport:
        regression = data.get("regression")
        return cls(
            datasets={n: DatasetFit.from_dict(d) for n, d in data["datasets"].items()},
            skipped=dict(data.get("skipped") or {}),
            regression=None if regression is None else GzipRegression.from_dict(regression),
            regression_note=data.get("regression_note"),
            policy=BootstrapPolicy.from_dict(data["bootstrap"]),
            budget=float(data["budget"]),
            source=str(data.get("source") or ""),
        )


# -- fitting every dataset -------------------------------------------------------------


def _excluded_note(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def fit_dataset(
    name: str,
    points: Points,
    *,
    policy: BootstrapPolicy = DEFAULT_POLICY,
    budget: float = REFERENCE_BUDGET,
) -> DatasetFit:
    """Fit one dataset of ``points``, with its intervals (per ``policy``) and its frontier.

    Raises
    ------
    UnderdeterminedFit
        Too few points, or too few distinct N or D (the message says which).
    RuntimeError
        Every start of the fit diverged.
    """
    N, D, L = points.arrays(name)
    fit = fit_scaling_law(N, D, L, emit_warnings=False)
    notes = list(fit.warnings)
    H, gzip_note = points.gzip(name)
    if gzip_note:
        notes.append(gzip_note)
    excluded = points.excluded.get(name, {})
    if excluded:
        notes.append(f"left out {_excluded_note(excluded)} row(s)")

    boot = None
    if policy.resamples:
        try:
            # The same seed for every dataset: a dataset's intervals then do not depend
            # on which other datasets share the table.
            boot = bootstrap_fit(
                N,
                D,
                L,
                n_resamples=policy.resamples,
                seed=policy.seed,
                level=policy.level,
                point_fit=fit,
            )
        except UnderdeterminedFit as exc:
            notes.append(f"no bootstrap intervals: {exc}")
    if boot is not None and boot.n_unconverged:
        notes.append(
            f"{boot.n_unconverged} of {policy.resamples} bootstrap fits did not report "
            "convergence (kept)"
        )
    frontier, crossing = None, None
    try:
        frontier = compute_optimal(fit.law, budget)
        crossing = crossing_budget(fit.law)
    except ValueError as exc:
        notes.append(f"no compute-optimal frontier: {exc}")

    return DatasetFit(
        name=name,
        law=fit.law,
        gzip=H,
        n_points=fit.n_points,
        objective=fit.objective,
        converged=fit.converged,
        frontier=frontier,
        chinchilla_crossing=crossing,
        intervals=None if boot is None else dict(boot.intervals),
        bootstrap=None
        if boot is None
        else BootstrapSummary(boot.policy, boot.n_redrawn, boot.n_unconverged),
        warnings=notes,
        excluded=dict(excluded),
        N=N,
        D=D,
        L=L,
        residuals_log=list(fit.residuals_log),
        samples=None if boot is None else boot.samples,
    )


def regress_on_gzip(
    fits: Mapping[str, DatasetFit],
) -> tuple[GzipRegression | None, str | None]:
    """Each law parameter regressed on H across the fits that have one (in their order),
    or None and why not."""
    with_h = [n for n, d in fits.items() if d.gzip is not None]
    if len(with_h) < MIN_DATASETS:
        return None, (
            f"the regression on gzip H needs at least {MIN_DATASETS} fitted datasets with a "
            f"gzip value, got {len(with_h)} ({', '.join(with_h) or 'none'})"
        )
    try:
        regression = fit_gzip_regression(
            [fits[n].law for n in with_h], [fits[n].gzip for n in with_h], names=with_h
        )
    except (UnderdeterminedFit, ValueError) as exc:
        return None, f"no regression on H: {exc}"
    return regression, None


def fit_datasets(
    points: Points,
    *,
    policy: BootstrapPolicy = DEFAULT_POLICY,
    budget: float = REFERENCE_BUDGET,
    progress=None,
) -> FitReport:
    """Fit every dataset of ``points`` (see :func:`fit_dataset`) and regress on H.

    ``progress`` is a :class:`~gzipscale.helpers.Progress` (or None) told of each dataset.
    """
    datasets: dict[str, DatasetFit] = {}
    skipped: dict[str, str] = {}
    names = points.names
    for name, counts in points.excluded.items():
        if name not in names:
            skipped[name] = f"no finished rows ({_excluded_note(counts)})"
    for done, name in enumerate(names):
        if progress is not None:
            progress.update(done, len(names), name)
        try:
            datasets[name] = fit_dataset(name, points, policy=policy, budget=budget)
        except (UnderdeterminedFit, RuntimeError) as exc:
            skipped[name] = str(exc)
    if progress is not None:
        progress.update(len(names), len(names), "")
    regression, note = regress_on_gzip(datasets)
    return FitReport(
        datasets=datasets,
        skipped=skipped,
        regression=regression,
        regression_note=note,
        policy=policy,
        budget=budget,
        source=points.source,
    )
