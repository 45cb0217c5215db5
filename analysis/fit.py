"""Fit one scaling law ``L(N, D) = E + A/N**alpha + B/D**beta`` to one dataset.

Two fits share this module: the paper's *free* fit of all five parameters, and the
*floor-anchored* fit (``floor=``), which holds E at the dataset's known floor (its exact
Bayes-optimal loss, :mod:`gzipscale.grammars.floor`) and fits the excess loss
``L - floor = A/N**alpha + B/D**beta`` in log space, with the same Huber loss, the same
start grid (its ``e`` axis collapsed onto ``log floor``) and the same optimiser.  A free fit
can trade E against a slowly falling ``A/N**alpha`` (alpha -> 0, E -> 0) when the runs
plateau at the floor; the anchored fit cannot, because E is no longer free.

The method is Chinchilla's "Approach 3" (Hoffmann et al. 2022) as used by Pandey (2024), "gzip Predicts
Data-dependent Scaling Laws": minimise, in log space,

    sum_i Huber_delta( LSE(a - alpha*log N_i, b - beta*log D_i, e) - log L_i )

with ``A = exp(a)``, ``B = exp(b)``, ``E = exp(e)`` and ``delta = 1e-3``, by
L-BFGS started from every point of a grid, keeping the best.  The Huber terms
are *summed* over points: averaging divides the gradient by n, so L-BFGS's
absolute tolerances stop it early (the flaw in Chinchilla's own fit found by
the Epoch AI replication, Besiroglu et al. 2024).

How the 4500-start grid is searched quickly
-------------------------------------------
A naive fit runs scipy's L-BFGS-B from each start to convergence and keeps the
best.  :func:`fit_scaling_law` reaches the same answer in three stages:

1. *Batched pass (a screen).*  Every start runs its own, independent L-BFGS
   (own curvature history, own Armijo backtracking, own stopping test) for at
   most ``batch_max_iter`` (100) iterations; only the arithmetic is shared, as
   one numpy evaluation of all starts' objectives and gradients.  Nothing
   couples the starts -- unlike scipy on one stacked vector, where a shared
   line search and shared inner products would let one start's curvature
   steer another's steps.  A start leaves the batch when it converges.
2. *Shortlist.*  Starts are ranked by objective and collapsed into distinct
   basins (points closer than ``basin_tol`` in parameter space count as one);
   the best ``n_polish`` (50) basins are kept.
3. *Polish.*  Each shortlisted point is refined by scipy's L-BFGS-B with tight
   tolerances -- the same routine and settings the naive loop runs from each
   grid point -- and the best result is returned.

Why this finds the naive loop's optimum: both end in the same scipy polish,
so they agree whenever the naive winner's basin makes the shortlist.  The
screen runs the same kind of descent from the same starts, and descent
reaches the neighbourhood of its optimum in far fewer iterations than it
needs to converge tightly there (on the test problems the winning basin
leads the ranking within 60 iterations; most of the starts still running at
the cap crawl along plateaus at several times the best objective).  Keeping
50 *distinct* basins means a crowd of starts in one basin cannot push the
winner's out.  This is a heuristic, not a proof: a start that is still far
from its optimum at the cap and would end below every shortlisted basin
would be missed.  ``n_batch_unconverged`` reports how many starts were cut
off, and the tests and ``bench/fit_speed.py`` check the result against the
naive loop (on the default grid the objectives agree to ~1e-15 relative).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from gzipscale.analysis.law import PARAM_NAMES, ScalingLaw
from gzipscale.analysis.lbfgs import batched_lbfgs, distinct_basins, polish_ok, scipy_polish
from gzipscale.analysis.objective import HUBER_DELTA, anchored_objective, huber_objective
from gzipscale.helpers import InputError
from gzipscale.vocabulary import FLOOR_FIT, FREE_FIT

MIN_POINTS = 6  # five parameters need six points
MIN_POINTS_ANCHORED = 5  # four, with E held at the floor
MIN_DISTINCT = 2
FREE, ANCHORED = FREE_FIT, FLOOR_FIT  # the two kinds of fit, as every record names them


class UnderdeterminedFit(InputError):
    """The data cannot identify the five parameters of the law."""


class FitWarning(UserWarning):
    """A fit returned numbers that deserve suspicion (see the message)."""


@dataclass(frozen=True)
class StartGrid:
    """Starting points for L-BFGS: the Cartesian product of the five axes.

    Defaults are Chinchilla's / Pandey's grid: alpha, beta in {0, 0.5, ..., 2},
    e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25} (4500 starts).
    """

    a: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
    b: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
    e: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
    alpha: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    beta: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)

    def axes(self) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(getattr(self, name)) for name in PARAM_NAMES)

    def points(self) -> np.ndarray:
        """All starts, shape ``(len(self), 5)``, columns in ``PARAM_NAMES`` order."""
        return np.array(list(itertools.product(*self.axes())), dtype=float)

    def __len__(self) -> int:
        return math.prod(len(axis) for axis in self.axes())

    def to_dict(self) -> dict:
        return {name: [float(v) for v in getattr(self, name)] for name in PARAM_NAMES}


DEFAULT_GRID = StartGrid()


@dataclass
class ScalingFit:
    """Result of fitting one dataset.

    Attributes
    ----------
    law : ScalingLaw
        The fitted law (with its frontier exponents).
    objective : float
        Summed Huber objective at the optimum (log space).
    n_points : int
        Number of (N, D, L) points fitted.
    residuals_log, residuals_loss : list of float
        Per point, in input order: the residual of what was fitted in log space
        (``log L - log L_hat`` for a free fit, ``log(L - floor) - log(L_hat - floor)`` for
        a floor-anchored one) and ``L - L_hat``.
    start : dict
        The grid start whose basin won, by name (a, b, e, alpha, beta).
    start_index : int
        Its row in the starts searched: ``StartGrid.points()`` for a free fit; for a
        floor-anchored one, those points with ``e`` held at ``log floor`` and duplicates
        dropped (:meth:`FitTarget.starts`).
    grid_edge : list of str
        Coordinates in which the winning start sits on the grid's boundary.
        Informational: a start on the edge is common and harmless when the
        optimum lies inside the grid; an optimum *beyond* the grid is what
        raises a warning.
    n_starts : int
        Number of grid starts searched.
    n_batch_unconverged : int
        Starts that hit ``batch_max_iter`` in the batched pass (0 for the
        naive loop); see the module docstring.
    converged : bool
        Whether scipy's polish of the winner reported success.
    warnings : list of str
        Reasons to distrust the numbers (also emitted as :class:`FitWarning`).
    local_minima : list of dict
        The best distinct polished optima (law parameters and objective), best
        first; more than one with similar objectives means a multimodal fit.
    floor : float or None
        The floor E was held at (floor-anchored fit), or None (free fit).
    """

    law: ScalingLaw
    objective: float
    n_points: int
    residuals_log: list[float]
    residuals_loss: list[float]
    start: dict[str, float]
    start_index: int
    grid_edge: list[str]
    n_starts: int
    n_batch_unconverged: int
    converged: bool
    delta: float = HUBER_DELTA
    warnings: list[str] = field(default_factory=list)
    local_minima: list[dict] = field(default_factory=list)
    floor: float | None = None  # E held here (a floor-anchored fit), else None

    @property
    def kind(self) -> str:
        """``"floor"`` for a floor-anchored fit, ``"free"`` for the paper's 5-parameter fit."""
        return FREE if self.floor is None else ANCHORED

    @property
    def theta(self) -> np.ndarray:
        return self.law.to_theta()

    def loss(self, N, D):
        return self.law.loss(N, D)

    def to_dict(self) -> dict:
        return {
            "law": self.law.to_dict(),
            "objective": float(self.objective),
            "n_points": int(self.n_points),
            "residuals_log": [float(v) for v in self.residuals_log],
            "residuals_loss": [float(v) for v in self.residuals_loss],
            "start": {k: float(v) for k, v in self.start.items()},
            "start_index": int(self.start_index),
            "grid_edge": list(self.grid_edge),
            "n_starts": int(self.n_starts),
            "n_batch_unconverged": int(self.n_batch_unconverged),
            "converged": bool(self.converged),
            "delta": float(self.delta),
            "warnings": list(self.warnings),
            "local_minima": [
                {k: float(v) for k, v in minimum.items()} for minimum in self.local_minima
            ],
            "kind": self.kind,
            "floor": None if self.floor is None else float(self.floor),
        }


# -- input checks ------------------------------------------------------------------------


def validate_points(
    N, D, L, floor: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return N, D, L as 1-d float arrays, or raise naming what is wrong.

    With a ``floor`` (a floor-anchored fit) every loss must exceed it: a run at or below
    the floor has no excess loss to fit (the caller leaves such runs out and says so).

    Raises
    ------
    InputError (a ValueError)
        Shapes differ, or a value is non-finite or non-positive (the message
        names the field and the first offending index).
    UnderdeterminedFit
        Fewer than 6 points (5 with a floor), or fewer than 2 distinct N or D.
    """
    fields = {"N (model size)": N, "D (tokens)": D, "L (loss)": L}
    arrays = {}
    for name, values in fields.items():
        arr = np.asarray(values, dtype=float)
        if arr.ndim != 1:
            raise InputError(f"{name} must be 1-dimensional, got shape {arr.shape}")
        bad = ~np.isfinite(arr) | (arr <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{name} must be finite and > 0; got {arr[i]!r} at index {i} "
                f"({int(bad.sum())} bad value(s))"
            )
        arrays[name] = arr
    N, D, L = arrays.values()
    if not (len(N) == len(D) == len(L)):
        raise InputError(f"N, D, L must have equal lengths, got {len(N)}, {len(D)}, {len(L)}")
    if floor is not None:
        if not (isinstance(floor, (int, float)) and math.isfinite(floor) and floor > 0):
            raise InputError(f"floor must be a finite number > 0, got {floor!r}")
        at_floor = L <= floor
        if at_floor.any():
            i = int(np.flatnonzero(at_floor)[0])
            raise InputError(
                f"L (loss) must exceed the floor {floor:.6g} in a floor-anchored fit; got "
                f"{L[i]!r} at index {i} ({int(at_floor.sum())} such point(s)): leave runs at "
                "the floor out"
            )
    _check_identifiable(N, D, anchored=floor is not None)
    return N, D, L


def _check_identifiable(N: np.ndarray, D: np.ndarray, anchored: bool = False) -> None:
    problems = []
    needed, params = (MIN_POINTS_ANCHORED, 4) if anchored else (MIN_POINTS, 5)
    if len(N) < needed:
        problems.append(f"need at least {needed} points for {params} parameters, got {len(N)}")
    for label, values in (("model sizes N", N), ("token counts D", D)):
        distinct = np.unique(values)
        if len(distinct) < MIN_DISTINCT:
            shown = ", ".join(f"{v:.4g}" for v in distinct)
            problems.append(
                f"need at least {MIN_DISTINCT} distinct {label}, got {len(distinct)} "
                f"({label.split()[-1]}={shown})"
            )
    if problems:
        raise UnderdeterminedFit("cannot fit L(N, D): " + "; ".join(problems))


# -- fitting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitTarget:
    """What one fit minimises: the log-space values it fits and the objective over them.

    A free fit fits ``log L`` with :func:`huber_objective`; a floor-anchored one fits
    ``log(L - floor)`` with :func:`anchored_objective` and keeps ``e = log floor`` fixed
    in every start (the objective ignores it and its gradient is zero, so it never moves).
    """

    log_n: np.ndarray
    log_d: np.ndarray
    log_y: np.ndarray
    objective: Callable
    floor: float | None

    @classmethod
    def of(cls, N, D, L, floor: float | None) -> FitTarget:
        if floor is None:
            return cls(np.log(N), np.log(D), np.log(L), huber_objective, None)
        return cls(np.log(N), np.log(D), np.log(L - floor), anchored_objective, float(floor))

    def starts(self, points: np.ndarray) -> np.ndarray:
        """``points`` with the e column held at ``log floor`` (duplicates dropped, order
        kept) for an anchored fit; unchanged for a free one."""
        if self.floor is None:
            return points
        held = np.array(points, dtype=float)
        held[:, 2] = math.log(self.floor)
        _, first = np.unique(held, axis=0, return_index=True)
        return held[np.sort(first)]

    def law(self, theta) -> ScalingLaw:
        law = ScalingLaw.from_theta(theta)
        # exp(log floor) can differ from the floor in the last bit; E *is* the floor.
        return law if self.floor is None else replace(law, E=self.floor)

    def residuals_log(self, L: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        if self.floor is None:
            return np.log(L) - np.log(predicted)
        return np.log(L - self.floor) - np.log(predicted - self.floor)

    def value(self, theta, delta: float = HUBER_DELTA) -> float:
        """The summed objective at ``theta``."""
        return float(self.objective(theta, self.log_n, self.log_d, self.log_y, delta)[0][0])


def fit_scaling_law(
    N,
    D,
    L,
    *,
    grid: StartGrid = DEFAULT_GRID,
    delta: float = HUBER_DELTA,
    n_polish: int = 50,
    batch_max_iter: int = 100,
    basin_tol: float = 1e-3,
    emit_warnings: bool = True,
    floor: float | None = None,
) -> ScalingFit:
    """Fit ``L = E + A/N**alpha + B/D**beta`` by Huber loss in log space.

    Parameters
    ----------
    N, D, L : array_like, shape (n,)
        Model sizes (parameters), training tokens and final losses; all
        finite and > 0 (and above ``floor`` when one is given).
    grid : StartGrid
        L-BFGS starting points (default: the 4500-point Chinchilla grid).
    delta : float
        Huber threshold (1e-3 as in Chinchilla and Pandey 2024).
    n_polish : int
        Distinct basins from the batched pass refined with scipy L-BFGS-B.
    batch_max_iter : int
        Iteration cap of the batched pass.
    basin_tol : float
        Max-abs distance in (a, b, e, alpha, beta) below which two optima are
        one basin.
    emit_warnings : bool
        Also emit the result's warnings as :class:`FitWarning`.
    floor : float, optional
        The dataset's floor: hold E there and fit the excess ``L - floor`` (four
        parameters).  None (the default) is the paper's free five-parameter fit.

    Returns
    -------
    ScalingFit

    Raises
    ------
    ValueError
        Non-finite or non-positive inputs, or a loss at or below ``floor`` (message names
        the field).
    UnderdeterminedFit
        Fewer than 6 points (5 with a floor) or fewer than 2 distinct N or D.
    """
    N, D, L = validate_points(N, D, L, floor)
    if n_polish < 1:
        raise ValueError(f"n_polish must be >= 1, got {n_polish}")
    if len(grid) == 0:
        raise ValueError("the start grid is empty")
    target = FitTarget.of(N, D, L, floor)
    starts = target.starts(grid.points())

    def batch_fun(x, rows):
        return target.objective(x, target.log_n, target.log_d, target.log_y, delta)

    batch = batched_lbfgs(batch_fun, starts, max_iter=batch_max_iter)
    order = np.argsort(np.where(np.isfinite(batch.f), batch.f, np.inf), kind="stable")
    shortlist = distinct_basins(batch.x, order, basin_tol, n_polish)
    polished = []
    for i in shortlist:
        res = scipy_polish(
            batch.x[i], target.log_n, target.log_d, target.log_y, delta, objective=target.objective
        )
        polished.append((float(res.fun), i, res))
    return _assemble_fit(
        polished,
        starts,
        grid,
        target,
        N,
        D,
        L,
        delta,
        n_batch_unconverged=int(np.sum(~batch.converged & ~batch.stalled)),
        basin_tol=basin_tol,
        emit_warnings=emit_warnings,
    )


def fit_scaling_law_naive(
    N,
    D,
    L,
    *,
    grid: StartGrid = DEFAULT_GRID,
    start_indices: Sequence[int] | None = None,
    delta: float = HUBER_DELTA,
    reduction: str = "sum",
    options: dict | None = None,
    basin_tol: float = 1e-3,
    emit_warnings: bool = True,
    floor: float | None = None,
) -> ScalingFit:
    """Reference fit: scipy L-BFGS-B from each start in turn, keep the best.

    Slow (milliseconds per start); used to check :func:`fit_scaling_law` and
    in the benchmark.  ``start_indices`` restricts the loop to those rows of
    ``grid.points()`` (with a ``floor``: of the reduced starts, see ``start_index`` of
    :class:`ScalingFit`); ``reduction="mean"`` with ``options={}`` (scipy's
    defaults) reproduces the averaged-objective mistake.
    The reported ``objective`` is always the summed objective.
    """
    N, D, L = validate_points(N, D, L, floor)
    target = FitTarget.of(N, D, L, floor)
    starts = target.starts(grid.points())
    indices = range(len(starts)) if start_indices is None else start_indices
    polished = []
    for i in indices:
        res = scipy_polish(
            starts[i],
            target.log_n,
            target.log_d,
            target.log_y,
            delta,
            None,
            reduction,
            options,
            target.objective,
        )
        polished.append((target.value(res.x, delta), int(i), res))
    return _assemble_fit(
        polished,
        starts,
        grid,
        target,
        N,
        D,
        L,
        delta,
        n_batch_unconverged=0,
        basin_tol=basin_tol,
        emit_warnings=emit_warnings,
    )


def _assemble_fit(
    polished, starts, grid, target, N, D, L, delta, *, n_batch_unconverged, basin_tol, emit_warnings
) -> ScalingFit:
    polished = [p for p in polished if np.isfinite(p[0]) and np.all(np.isfinite(p[2].x))]
    if not polished:
        raise RuntimeError("every start diverged; the data may not follow this law")
    polished.sort(key=lambda p: p[0])
    objective, start_index, best = polished[0]
    law = target.law(best.x)
    predicted = law.loss(N, D)
    start = dict(zip(PARAM_NAMES, (float(v) for v in starts[start_index]), strict=True))

    thetas = np.array([p[2].x for p in polished])
    minima = []
    for i in distinct_basins(thetas, np.arange(len(polished)), basin_tol, 5):
        minimum = target.law(thetas[i]).to_dict()
        minimum["objective"] = polished[i][0]
        minima.append(minimum)

    notes = _fit_warnings(
        best.x, start, grid, N, D, converged=polish_ok(best), anchored=target.floor is not None
    )
    if emit_warnings:
        for note in notes:
            warnings.warn(note, FitWarning, stacklevel=3)
    return ScalingFit(
        law=law,
        objective=float(objective),
        n_points=len(N),
        residuals_log=target.residuals_log(L, predicted).tolist(),
        residuals_loss=(L - predicted).tolist(),
        start=start,
        start_index=int(start_index),
        grid_edge=[
            name
            for name, axis in zip(PARAM_NAMES, grid.axes(), strict=True)
            if start[name] in (min(axis), max(axis)) and not (name == "e" and target.floor)
        ],
        n_starts=len(starts),
        n_batch_unconverged=n_batch_unconverged,
        converged=polish_ok(best),
        delta=delta,
        warnings=notes,
        local_minima=minima,
        floor=target.floor,
    )


def _fit_warnings(theta, start, grid, N, D, *, converged, anchored=False) -> list[str]:
    notes = []
    # The grid brackets the search; an optimum beyond it, reached from a start
    # on the grid's edge, means basins further out were never explored.  An anchored
    # fit's e is the floor, not a searched coordinate.
    for name, value, axis in zip(PARAM_NAMES, theta, grid.axes(), strict=True):
        if anchored and name == "e":
            continue
        lo, hi = min(axis), max(axis)
        if value < lo or value > hi:
            edge, bound = ("lower", lo) if value < lo else ("upper", hi)
            notes.append(
                f"best fit has {name}={value:.4g}, beyond the start grid's {edge} edge "
                f"{name}={bound:g} (winning start {name}={start[name]:g}); widen the grid "
                "to check for a better optimum out there"
            )
    for label, values in (("model sizes N", N), ("token counts D", D)):
        distinct = len(np.unique(values))
        if distinct == 2 and not anchored:
            notes.append(
                f"only 2 distinct {label}: E and that term's coefficient and exponent are "
                "not separately identified (a one-parameter family fits equally well)"
            )
    alpha, beta = theta[3], theta[4]
    if alpha <= 0 or beta <= 0:
        notes.append(
            f"non-positive exponent (alpha={alpha:.4g}, beta={beta:.4g}): loss does not "
            "fall with that axis; the compute-optimal frontier is undefined"
        )
    if not converged:
        notes.append("scipy's L-BFGS-B polish of the best start did not report convergence")
    return notes
