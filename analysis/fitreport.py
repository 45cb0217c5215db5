"""The fits of a results table as one record: :class:`FitReport`, one :class:`DatasetFit` per
fitted dataset.

:func:`fit_datasets` makes it; everything that shows a fit reads it: ``gzipscale fit``
(its ``--json`` is :meth:`FitReport.to_dict`), the live analysis actor's snapshot, the live
display and ``watch``, ``gzipscale report`` and the reproduction report.  Each concept has
one key: the law's five parameters and its two frontier exponents
(:data:`~gzipscale.analysis.law.EXPONENT_NAMES`) under the same names in ``law`` and in
``intervals``; the compute-optimal split at the report's ``budget`` in ``frontier``; the
bootstrap policy (resamples, seed, level) in ``bootstrap``, beside the intervals it made.

Two kinds of fit (:data:`~gzipscale.analysis.fit.FREE`, the paper's five parameters, and
:data:`~gzipscale.analysis.fit.ANCHORED`, E held at the dataset's known floor): where a
dataset has a floor both are made, the report's ``law_choice`` picks the one that drives
``datasets`` (frontiers, regressions, claims) and the other is kept in ``comparison``;
a dataset without a floor (a real corpus) has the free fit only.  Every fit carries its
identification ``flags`` (:mod:`gzipscale.analysis.identification`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from gzipscale.analysis.bootstrap import DEFAULT_POLICY, BootstrapPolicy, bootstrap_fit
from gzipscale.analysis.fit import ANCHORED, FREE, UnderdeterminedFit, fit_scaling_law
from gzipscale.analysis.frontier import FrontierPoint, compute_optimal, crossing_budget
from gzipscale.analysis.identification import (
    IdentificationFlag,
    at_floor_flag,
    at_floor_mask,
    below_floor_flag,
    exponent_flags,
    residual_flag,
    rms_log_residual,
)
from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.regression import (
    MIN_DATASETS,
    GzipRegression,
    ParameterRegression,
    fit_gzip_regression,
    fit_regression,
)
from gzipscale.analysis.table import KnownFloor, Points
from gzipscale.vocabulary import DEFAULT_LAW_CHOICE, LAW_CHOICES, REFERENCE_BUDGET


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

    ``kind`` is ``"floor"`` (E held at ``floor``; runs at the floor left out, counted in
    ``left_at_floor``) or ``"free"``; ``flags`` say in plain sentences what the runs do not
    identify (an empty list: identified).

    The points (``N``, ``D``, ``L``: every finished run, with ``at_floor`` marking those
    left out), the log residuals (of the fitted runs) and the bootstrap ``samples`` are
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
    kind: str = FREE
    floor: KnownFloor | None = None
    flags: list[IdentificationFlag] = field(default_factory=list)
    left_at_floor: int = 0
    rms_log_residual: float = math.nan
    N: np.ndarray | None = None
    D: np.ndarray | None = None
    L: np.ndarray | None = None
    residuals_log: list[float] | None = None
    samples: dict[str, np.ndarray] | None = None
    at_floor: np.ndarray | None = None

    @property
    def identified(self) -> bool:
        """True when no identification flag is raised."""
        return not self.flags

    @property
    def verdict(self) -> str:
        """One line: "identified", or the first flag's sentence (and how many more)."""
        if not self.flags:
            return "identified"
        more = len(self.flags) - 1
        return self.flags[0].sentence + (f" (+{more} more flag{'s' * (more > 1)})" if more else "")

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
            "kind": self.kind,
            "floor": None if self.floor is None else self.floor.to_dict(),
            "identified": self.identified,
            "flags": [f.to_dict() for f in self.flags],
            "left_at_floor": int(self.left_at_floor),
            "rms_log_residual": float(self.rms_log_residual),
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
        floor = data.get("floor")
        rms = data.get("rms_log_residual")
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
            kind=str(data.get("kind") or FREE),
            floor=None
            if floor is None
            else KnownFloor(float(floor["nats_per_token"]), float(floor["stderr"])),
            flags=[IdentificationFlag.from_dict(f) for f in data.get("flags") or []],
            left_at_floor=int(data.get("left_at_floor") or 0),
            rms_log_residual=math.nan if rms is None else float(rms),
        )


@dataclass
class FitReport:
    """Every dataset of a results table: fitted (``datasets``, by the kind ``law_choice``
    names where the dataset has a floor, else free) or ``skipped`` with the reason; the
    other kind of fit of each dataset that has both in ``comparison`` (or why it could not
    be made in ``comparison_skipped``); and each law parameter regressed on gzip H across
    the fits of ``datasets`` (or ``regression_note`` saying why not)."""

    datasets: dict[str, DatasetFit]
    skipped: dict[str, str]
    regression: GzipRegression | None
    regression_note: str | None
    policy: BootstrapPolicy = DEFAULT_POLICY  # what was asked; each fit says what it got
    budget: float = REFERENCE_BUDGET  # FLOPs of every dataset's ``frontier``
    source: str = ""
    law_choice: str = DEFAULT_LAW_CHOICE
    comparison: dict[str, DatasetFit] = field(default_factory=dict)
    comparison_skipped: dict[str, str] = field(default_factory=dict)
    # The same parameters regressed on the floor instead of H (datasets with a floor).
    floor_regression: ParameterRegression | None = None
    floor_regression_note: str | None = None

    def fits_of(self, name: str) -> dict[str, DatasetFit]:
        """A dataset's fits by kind (the driving one and, where made, the other)."""
        out = {}
        for fits in (self.datasets, self.comparison):
            if name in fits:
                out[fits[name].kind] = fits[name]
        return out

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "bootstrap": self.policy.to_dict(),
            "budget": float(self.budget),
            "law_choice": self.law_choice,
            "datasets": {name: d.to_dict() for name, d in self.datasets.items()},
            "skipped": dict(self.skipped),
            "comparison": {name: d.to_dict() for name, d in self.comparison.items()},
            "comparison_skipped": dict(self.comparison_skipped),
            "regression": None if self.regression is None else self.regression.to_dict(),
            "regression_note": self.regression_note,
            "floor_regression": None
            if self.floor_regression is None
            else self.floor_regression.to_dict(),
            "floor_regression_note": self.floor_regression_note,
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
            law_choice=str(data.get("law_choice") or FREE),
            comparison={
                n: DatasetFit.from_dict(d) for n, d in (data.get("comparison") or {}).items()
            },
            comparison_skipped=dict(data.get("comparison_skipped") or {}),
            floor_regression=None
            if data.get("floor_regression") is None
            else ParameterRegression.from_dict(data["floor_regression"]),
            floor_regression_note=data.get("floor_regression_note"),
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
    kind: str = FREE,
) -> DatasetFit:
    """Fit one dataset of ``points``, with its intervals (per ``policy``), its frontier
    and its identification flags.

    ``kind="floor"`` holds E at the dataset's floor and leaves out the runs at it;
    ``kind="free"`` is the paper's five-parameter fit of every finished run.

    Raises
    ------
    UnderdeterminedFit
        Too few points, or too few distinct N or D (the message says which; for a
        floor-anchored fit it starts with why runs were left out).
    InputError
        ``kind="floor"`` for a dataset without a floor.
    RuntimeError
        Every start of the fit diverged.
    """
    if kind not in LAW_CHOICES:
        raise ValueError(f"kind must be one of {', '.join(LAW_CHOICES)}, got {kind!r}")
    N, D, L = points.arrays(name)
    known, floor_note = points.floor(name)
    notes, flags = [], []
    at_floor = np.zeros(len(L), dtype=bool)
    floor = None
    if kind == ANCHORED:
        if known is None:
            raise UnderdeterminedFit(f"{name} has no floor: only the free fit applies")
        floor = known.nats_per_token
        at_floor = at_floor_mask(L, floor)
        flag = at_floor_flag(N, D, L, floor)
        if flag is not None:
            flags.append(flag)
    fitted = ~at_floor
    try:
        fit = fit_scaling_law(N[fitted], D[fitted], L[fitted], emit_warnings=False, floor=floor)
    except UnderdeterminedFit as exc:
        if flags:
            raise UnderdeterminedFit(f"{flags[0].sentence} Left: {exc}") from exc
        raise
    notes.extend(fit.warnings)
    H, gzip_note = points.gzip(name)
    for note in (gzip_note, floor_note):
        if note:
            notes.append(note)
    excluded = points.excluded.get(name, {})
    if excluded:
        notes.append(f"left out {_excluded_note(excluded)} row(s)")

    boot = None
    if policy.resamples:
        try:
            # The same seed for every dataset: a dataset's intervals then do not depend
            # on which other datasets share the table.
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
        except UnderdeterminedFit as exc:
            notes.append(f"no bootstrap intervals: {exc}")
    if boot is not None and boot.n_unconverged:
        notes.append(
            f"{boot.n_unconverged} of {policy.resamples} bootstrap fits did not report "
            "convergence (kept)"
        )
    intervals = None if boot is None else dict(boot.intervals)
    flags.extend(exponent_flags(intervals, policy.level))
    flag = residual_flag(fit.residuals_log, anchored=floor is not None)
    if flag is not None:
        flags.append(flag)
    if kind == FREE and known is not None:
        flag = below_floor_flag(fit.law.E, known.nats_per_token, known.stderr)
        if flag is not None:
            flags.append(flag)

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
        intervals=intervals,
        bootstrap=None
        if boot is None
        else BootstrapSummary(boot.policy, boot.n_redrawn, boot.n_unconverged),
        warnings=notes,
        excluded=dict(excluded),
        kind=kind,
        floor=known,
        flags=flags,
        left_at_floor=int(at_floor.sum()),
        rms_log_residual=rms_log_residual(fit.residuals_log),
        N=N,
        D=D,
        L=L,
        residuals_log=list(fit.residuals_log),
        samples=None if boot is None else boot.samples,
        at_floor=at_floor,
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


def regress_on_floor(
    fits: Mapping[str, DatasetFit],
) -> tuple[ParameterRegression | None, str | None]:
    """Each law parameter regressed on the dataset's floor across the fits that have one,
    or None and why not.  (For floor-anchored fits E is the floor, so E's line is the
    identity: shown, not a finding.)"""
    with_floor = [n for n, d in fits.items() if d.floor is not None]
    if len(with_floor) < MIN_DATASETS:
        return None, (
            f"the regression on the floor needs at least {MIN_DATASETS} fitted datasets with "
            f"a floor, got {len(with_floor)} ({', '.join(with_floor) or 'none'})"
        )
    try:
        regression = fit_regression(
            [fits[n].law for n in with_floor],
            [fits[n].floor.nats_per_token for n in with_floor],
            names=with_floor,
            covariate="floor",
        )
    except (UnderdeterminedFit, ValueError) as exc:
        return None, f"no regression on the floor: {exc}"
    return regression, None


def fit_datasets(
    points: Points,
    *,
    policy: BootstrapPolicy = DEFAULT_POLICY,
    budget: float = REFERENCE_BUDGET,
    progress=None,
    law_choice: str = DEFAULT_LAW_CHOICE,
) -> FitReport:
    """Fit every dataset of ``points`` (see :func:`fit_dataset`) and regress on H.

    Where a dataset has a floor, both kinds of fit are made: ``law_choice`` ("floor" or
    "free") drives ``datasets``, the other goes to ``comparison``.  ``progress`` is a
    :class:`~gzipscale.helpers.Progress` (or None) told of each dataset.
    """
    if law_choice not in LAW_CHOICES:
        raise ValueError(f"law_choice must be one of {', '.join(LAW_CHOICES)}, got {law_choice!r}")
    datasets: dict[str, DatasetFit] = {}
    skipped: dict[str, str] = {}
    comparison: dict[str, DatasetFit] = {}
    comparison_skipped: dict[str, str] = {}
    names = points.names
    for name, counts in points.excluded.items():
        if name not in names:
            skipped[name] = f"no finished rows ({_excluded_note(counts)})"
    for done, name in enumerate(names):
        if progress is not None:
            progress.update(done, len(names), name)
        has_floor = points.floor(name)[0] is not None
        kinds = [law_choice, *(k for k in LAW_CHOICES if k != law_choice)] if has_floor else [FREE]
        for i, kind in enumerate(kinds):
            into, why = (datasets, skipped) if i == 0 else (comparison, comparison_skipped)
            try:
                into[name] = fit_dataset(name, points, policy=policy, budget=budget, kind=kind)
            except (UnderdeterminedFit, RuntimeError) as exc:
                why[name] = f"{kind} fit: {exc}" if has_floor else str(exc)
    if progress is not None:
        progress.update(len(names), len(names), "")
    regression, note = regress_on_gzip(datasets)
    floor_regression, floor_note = regress_on_floor(datasets)
    return FitReport(
        datasets=datasets,
        skipped=skipped,
        regression=regression,
        regression_note=note,
        policy=policy,
        budget=budget,
        source=points.source,
        law_choice=law_choice,
        comparison=comparison,
        comparison_skipped=comparison_skipped,
        floor_regression=floor_regression,
        floor_regression_note=floor_note,
    )
