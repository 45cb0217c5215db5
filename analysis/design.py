"""Design rules: from a pilot sweep to a grid whose law the runs can identify.

A pilot is an ordinary sweep over a generous grid (``docs/design.md`` says which).  These
pure functions read its rows and choose, per grammar, the model sizes and data sizes a
production sweep should train, by the rules a careful experimenter applies by eye:

1. **Long enough to measure data** (:func:`min_tokens`): a run of fewer than
   ``min_steps`` optimizer steps measures its warmup and schedule, not the data, so no
   data size below ``min_steps`` batches is used.
2. **In the power-law regime**: a run within :data:`~.identification.AT_FLOOR_FRACTION`
   of the grammar's floor says nothing about N or D (the floor-anchored fit leaves it
   out), and a run whose excess is above ``plateau_fraction`` of the grammar's plateau
   (its smallest model's shortest run) has not left the early plateau where every model
   size has the same loss; a window where more than ``max_at_floor`` of the runs are at
   either end is not chosen.
3. **Identified**: among contiguous windows of the pilot's shapes and data sizes (at
   least ``min_shapes`` x ``min_sizes``), keep those whose floor-anchored fit raises no
   identification flag, whose α and β intervals exclude 0 and span less than
   ``max_span`` (hi / lo), and whose RMS log residual of the excess loss is at most
   ``max_rms`` (:func:`judge_fit`).
4. **Within budget** (:func:`choose_design`): one window serves every grammar of a sweep
   (a spec has one grid); for each window, the grammars it identifies are taken widest
   H range first (:func:`spread_order`) while the estimated wall time (the pilot's
   measured trial times, :func:`trial_seconds`, packed longest first on the cluster's
   CPUs, :func:`makespan`) fits the budget; the window training the most grammars wins
   (ties: the wider H range, then more runs, then the cheaper).  A grammar no window
   identifies is dropped, with the reason.

Everything here is a function of the pilot's rows; :mod:`gzipscale.analysis.design_command`
reads a run directory and writes the spec.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gzipscale.analysis.bootstrap import BootstrapPolicy
from gzipscale.analysis.fit import UnderdeterminedFit
from gzipscale.analysis.fitreport import DatasetFit, fit_dataset
from gzipscale.analysis.identification import (
    MAX_RMS_LOG_RESIDUAL,
    at_floor_mask,
    tokens_text,
)
from gzipscale.analysis.results import ResultRow
from gzipscale.analysis.table import Points
from gzipscale.vocabulary import FLOOR_FIT


@dataclass(frozen=True)
class DesignRules:
    """The thresholds of the rules (module doc); the defaults are what ``docs/design.md``
    justifies from the pilot."""

    min_steps: int = 128
    max_span: float = 2.0  # an exponent's interval: hi / lo below this
    max_rms: float = MAX_RMS_LOG_RESIDUAL
    max_at_floor: float = 0.25  # fraction of a window's runs
    # Rule 2b: the power-law regime. A run whose excess is above this fraction of the
    # grammar's plateau (the pilot's largest excess: its smallest model's shortest run)
    # is still on the early plateau, where every model size looks alike; a window with
    # more than max_at_floor of its runs there is not chosen.
    plateau_fraction: float = 0.5
    min_shapes: int = 3
    min_sizes: int = 3
    resamples: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.min_steps, int) and self.min_steps >= 1):
            raise ValueError(f"min_steps must be a positive integer, got {self.min_steps!r}")
        if not self.max_span > 1.0:
            raise ValueError(f"max_span must exceed 1, got {self.max_span!r}")
        if not self.max_rms > 0.0:
            raise ValueError(f"max_rms must be positive, got {self.max_rms!r}")
        if not 0.0 < self.plateau_fraction <= 1.0:
            raise ValueError(f"plateau_fraction must lie in (0, 1], got {self.plateau_fraction!r}")
        if not 0.0 <= self.max_at_floor < 1.0:
            raise ValueError(f"max_at_floor must lie in [0, 1), got {self.max_at_floor!r}")
        if self.min_shapes < 2 or self.min_sizes < 2:
            raise ValueError("min_shapes and min_sizes must be at least 2")


def min_tokens(min_steps: int, batch_size: int, context_length: int) -> int:
    """The smallest data size of a run with at least ``min_steps`` optimizer steps."""
    if min(min_steps, batch_size, context_length) < 1:
        raise ValueError("min_steps, batch_size and context_length must be positive")
    return min_steps * batch_size * context_length


@dataclass(frozen=True)
class FitCheck:
    """A floor-anchored fit judged by the rules: its intervals, RMS and what fails."""

    alpha: tuple[float, float, float]  # estimate, low, high
    beta: tuple[float, float, float]
    E: float
    rms: float
    n_points: int
    left_at_floor: int
    failures: tuple[str, ...]

    @property
    def passes(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {
            "alpha": list(self.alpha),
            "beta": list(self.beta),
            "E": self.E,
            "rms_log_residual": self.rms,
            "n_points": self.n_points,
            "left_at_floor": self.left_at_floor,
            "failures": list(self.failures),
        }


def judge_fit(fit: DatasetFit, rules: DesignRules) -> FitCheck:
    """Rule 3 on one floor-anchored fit: every reason it is not a design's fit."""
    failures = [f"flag {flag.code}: {flag.sentence}" for flag in fit.flags]
    params = {}
    for key, symbol in (("alpha", "α"), ("beta", "β")):
        estimate = float(getattr(fit.law, key))
        low, high = fit.interval(key) or (math.nan, math.nan)
        params[key] = (estimate, float(low), float(high))
        if not (math.isfinite(low) and math.isfinite(high)):
            failures.append(f"{symbol} has no interval")
        elif low <= 0.0:
            failures.append(f"{symbol}'s interval [{low:.3g}, {high:.3g}] includes 0")
        elif high / low >= rules.max_span:
            failures.append(
                f"{symbol}'s interval [{low:.3g}, {high:.3g}] spans {high / low:.2f}x "
                f"(at most {rules.max_span:g}x)"
            )
    if not fit.rms_log_residual <= rules.max_rms:
        failures.append(f"RMS log residual {fit.rms_log_residual:.3f} above {rules.max_rms:g}")
    return FitCheck(
        params["alpha"],
        params["beta"],
        float(fit.law.E),
        float(fit.rms_log_residual),
        int(fit.n_points),
        int(fit.left_at_floor),
        tuple(dict.fromkeys(failures)),
    )


def trial_seconds(rows: Iterable[ResultRow]) -> dict[str, float]:
    """Measured seconds of training per token, by shape: the pilot's nested trials,
    each timed by its largest row (a trial's rows carry its elapsed training time)."""
    by_trial: dict[str, ResultRow] = {}
    for r in rows:
        if r.status == "finished" and r.wall_s > 0:
            best = by_trial.get(r.trial_id)
            if best is None or r.tokens > best.tokens:
                by_trial[r.trial_id] = r
    rates: dict[str, list[float]] = {}
    for r in by_trial.values():
        rates.setdefault(r.shape, []).append(r.wall_s / r.tokens)
    return {shape: float(np.median(v)) for shape, v in rates.items()}


@dataclass(frozen=True)
class Window:
    """A contiguous block of the pilot's shapes (by N) and data sizes."""

    shapes: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def runs(self) -> int:
        return len(self.shapes) * len(self.sizes)

    def label(self) -> str:
        return (
            f"{self.shapes[0]}..{self.shapes[-1]} x "
            f"{tokens_text(self.sizes[0])}..{tokens_text(self.sizes[-1])}"
        )


@dataclass(frozen=True)
class GrammarWindow:
    """One grammar's pilot runs in one window: the judged fit (None: no fit could be
    made, ``reason`` says why) and the estimated seconds of each nested trial."""

    dataset: str
    gzip: float
    check: FitCheck | None
    trial_s: tuple[float, ...]
    reason: str = ""

    @property
    def passes(self) -> bool:
        return self.check is not None and self.check.passes

    def failures(self) -> tuple[str, ...]:
        return self.check.failures if self.check is not None else (self.reason,)


def _windows(values: Sequence, minimum: int) -> list[tuple]:
    return [
        tuple(values[i:j]) for i in range(len(values)) for j in range(i + minimum, len(values) + 1)
    ]


def nested_tokens(sizes: Sequence[int], cooldown_fraction: float = 0.2) -> float:
    """Tokens a nested WSD trial trains: the trunk to the largest size plus each smaller
    size's cooldown branch (what ``trainers.config.nested_compute`` plans; analysis may not
    import the trainers, and the estimate needs no rounding to whole steps)."""
    *smaller, largest = sorted(set(int(d) for d in sizes))
    return float(largest) + cooldown_fraction * float(sum(smaller))


def candidate_windows(
    shapes_by_n: Sequence[str], sizes: Sequence[int], rules: DesignRules, min_size: int
) -> list[Window]:
    """Rule 1 and the window sizes of rule 3: every block of at least ``min_shapes``
    consecutive shapes and ``min_sizes`` consecutive data sizes of ``min_size`` or more."""
    usable = sorted(d for d in sizes if d >= min_size)
    return [
        Window(s, d)
        for s in _windows(list(shapes_by_n), rules.min_shapes)
        for d in _windows(usable, rules.min_sizes)
    ]


def evaluate_window(
    rows: Sequence[ResultRow],
    window: Window,
    rules: DesignRules,
    *,
    cooldown_fraction: float = 0.2,
    startup_s: float = 0.0,
) -> GrammarWindow:
    """Rules 2 and 3 for one grammar's pilot rows (one dataset, with a floor) in one
    window, and the window's estimated trial times from the pilot's measured rates."""
    finished = [r for r in rows if r.status == "finished"]
    first = finished[0]
    rate = trial_seconds(finished)
    tokens = nested_tokens(window.sizes, cooldown_fraction)
    trial_s = tuple(startup_s + rate.get(s, math.nan) * tokens for s in window.shapes)
    out = {"dataset": first.dataset, "gzip": float(first.gzip), "trial_s": trial_s}
    if not math.isfinite(first.floor):
        return GrammarWindow(**out, check=None, reason="its rows carry no floor")
    cell = {(r.shape, r.tokens): r for r in finished}
    chosen = [cell.get((s, d)) for s in window.shapes for d in window.sizes]
    if any(c is None for c in chosen):
        return GrammarWindow(**out, check=None, reason="the pilot lacks some of its runs")
    share = float(at_floor_mask([c.val_loss for c in chosen], first.floor).mean())
    if share > rules.max_at_floor:
        return GrammarWindow(
            **out,
            check=None,
            reason=f"{share:.0%} of its runs are at the floor (at most {rules.max_at_floor:.0%})",
        )
    plateau = max(r.val_loss for r in finished) - first.floor
    excess = np.array([c.val_loss for c in chosen]) - first.floor
    high = float((excess > rules.plateau_fraction * plateau).mean())
    if high > rules.max_at_floor:
        return GrammarWindow(
            **out,
            check=None,
            reason=f"{high:.0%} of its runs are still on the early plateau (excess above "
            f"{rules.plateau_fraction:g} x {plateau:.3g}; at most {rules.max_at_floor:.0%})",
        )
    policy = BootstrapPolicy(rules.resamples, rules.seed)
    try:
        fit = fit_dataset(first.dataset, Points.from_rows(chosen), policy=policy, kind=FLOOR_FIT)
    except (UnderdeterminedFit, RuntimeError) as exc:
        return GrammarWindow(**out, check=None, reason=f"no fit: {exc}")
    return GrammarWindow(**out, check=judge_fit(fit, rules))


def makespan(durations: Iterable[float], slots: int) -> float:
    """Wall time of trials run longest first on ``slots`` parallel slots (list scheduling,
    as a sweep orders its nested trials)."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    loads = [0.0] * slots
    for d in sorted(durations, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + float(d))
    return max(loads)


@dataclass
class Design:
    """The chosen window, the grammars it trains (by H), the rest with their reasons, and
    the estimated wall time; ``table`` holds every window's judgement of every grammar."""

    window: Window | None
    chosen: list[GrammarWindow] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # dataset -> reason
    over_budget: list[str] = field(default_factory=list)
    estimated_s: float = 0.0
    budget_s: float = math.inf
    slots: int = 1
    table: list[tuple[Window, list[GrammarWindow]]] = field(default_factory=list)
    min_size: int = 0  # rule 1's smallest data size
    rows: list = field(default_factory=list)  # the pilot's rows (for its figure)

    def to_dict(self) -> dict:
        def entry(g: GrammarWindow) -> dict:
            return {
                "dataset": g.dataset,
                "gzip": g.gzip,
                "passes": g.passes,
                "fit": None if g.check is None else g.check.to_dict(),
                "reason": g.reason,
                "trial_s": list(g.trial_s),
            }

        return {
            "window": None
            if self.window is None
            else {"shapes": list(self.window.shapes), "data_sizes": list(self.window.sizes)},
            "chosen": [entry(g) for g in self.chosen],
            "dropped": dict(self.dropped),
            "over_budget": list(self.over_budget),
            "estimated_s": self.estimated_s,
            "budget_s": self.budget_s,
            "slots": self.slots,
            "windows": [
                {"window": w.label(), "grammars": [entry(g) for g in gs]} for w, gs in self.table
            ],
        }


def spread_order(items: Sequence[GrammarWindow]) -> list[GrammarWindow]:
    """The grammars in the order a budget should take them: the lowest and highest H
    first, then each next the farthest in H from those taken (a regression on H learns
    most from its range)."""
    left = sorted(items, key=lambda g: g.gzip)
    if len(left) <= 2:
        return left
    order = [left.pop(0), left.pop(-1)]
    while left:
        far = max(left, key=lambda g: min(abs(g.gzip - o.gzip) for o in order))
        left.remove(far)
        order.append(far)
    return order


def fit_budget(
    passing: Sequence[GrammarWindow], *, budget_s: float, slots: int, overhead_s: float
) -> tuple[list[GrammarWindow], list[GrammarWindow], float]:
    """Rule 5 for one window: take passing grammars in :func:`spread_order` while the
    estimated wall time fits.  Returns (taken, left over, estimated seconds)."""
    taken, left, durations, estimate = [], [], [], 0.0
    for g in spread_order(passing):
        trial = [t for t in g.trial_s if math.isfinite(t)]
        total = overhead_s + makespan(durations + trial, slots)
        if total > budget_s:
            left.append(g)
            continue
        taken.append(g)
        durations += trial
        estimate = total
    return sorted(taken, key=lambda g: g.gzip), left, estimate


def choose_design(
    table: Sequence[tuple[Window, Sequence[GrammarWindow]]],
    *,
    budget_s: float,
    slots: int,
    overhead_s: float = 0.0,
    min_grammars: int = 2,
) -> Design:
    """Rules 4 and 5: the window that trains the most grammars whose fit passes within the
    budget (ties: the widest H range, then the most runs, then the cheapest)."""
    best, best_key = None, None
    for window, grammars in table:
        passing = [g for g in grammars if g.passes]
        taken, left, estimate = fit_budget(
            passing, budget_s=budget_s, slots=slots, overhead_s=overhead_s
        )
        if len(taken) < min_grammars:
            continue
        spread = taken[-1].gzip - taken[0].gzip
        key = (len(taken), round(spread, 3), window.runs, -estimate)
        if best_key is None or key > best_key:
            best, best_key = (window, grammars, taken, left, estimate), key
    out = Design(window=None, budget_s=float(budget_s), slots=int(slots), table=list(table))
    names: set[str] = set()
    if best is not None:
        window, grammars, taken, left, estimate = best
        out.window, out.chosen, out.estimated_s = window, taken, estimate
        out.over_budget = [g.dataset for g in left]
        names = {g.dataset for g in taken} | set(out.over_budget)
    for dataset in dict.fromkeys(g.dataset for _, gs in table for g in gs):
        if dataset not in names:
            out.dropped[dataset] = closest_reason(table, dataset, out.window)
    return out


def advice(check: FitCheck) -> str:
    """What would change a failing window's verdict: nothing, for a law that misses its
    runs (more runs of the same shape do not make them one power law); more runs inside
    the regime, for intervals that are only too wide."""
    if any("RMS" in f for f in check.failures):
        return (
            "Its runs bend away from one power law: more runs will not fix a misfit, so "
            "drop the grammar (or model its curvature)"
        )
    return (
        "Only its intervals are too wide: add runs inside the window (a larger shape and "
        "data sizes between the pilot's), whose intervals narrow about as 1/sqrt(runs)"
    )


def closest_reason(table, dataset: str, chosen: Window | None) -> str:
    """Why a grammar is not in the design: what fails in the chosen window, and the window
    of the pilot that comes closest to passing for it (fewest failures, then lowest RMS)."""
    passing = [w for w, gs in table for g in gs if g.dataset == dataset and g.passes]
    judged = [(w, g) for w, gs in table for g in gs if g.dataset == dataset]
    parts = []
    if chosen is not None:
        mine = next((g for w, g in judged if w == chosen), None)
        if mine is not None and not mine.passes:
            parts.append(f"in the chosen window: {'; '.join(mine.failures())}")
    if passing:
        parts.append(
            f"{len(passing)} window(s) identify it alone (e.g. {passing[0].label()}), none "
            "together with the chosen grammars"
        )
    else:
        fitted = [(w, g) for w, g in judged if g.check is not None]
        if fitted:
            w, g = min(fitted, key=lambda wg: (len(wg[1].check.failures), wg[1].check.rms))
            parts.append(
                f"no window identifies it; the closest ({w.label()}) fails on: "
                + "; ".join(g.check.failures)
                + f". {advice(g.check)}"
            )
        else:
            reasons = sorted({g.reason for _, g in judged})
            parts.append("no window could be fitted: " + "; ".join(reasons))
    return ". ".join(parts)
