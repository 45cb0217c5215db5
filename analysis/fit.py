"""Fit one scaling law ``L(N, D) = E + A/N**alpha + B/D**beta`` to one dataset.

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
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gzipscale.analysis.law import PARAM_NAMES, ScalingLaw
from gzipscale.analysis.lbfgs import batched_lbfgs, distinct_basins, polish_ok, scipy_polish
from gzipscale.analysis.objective import HUBER_DELTA, huber_objective
from gzipscale.helpers import InputError

MIN_POINTS = 6
MIN_DISTINCT = 2


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
        ``log L - log L_hat`` and ``L - L_hat`` per point, in input order.
    start : dict
        The grid start whose basin won, by name (a, b, e, alpha, beta).
    start_index : int
        Its row in ``StartGrid.points()``.
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
        }


# -- input checks ------------------------------------------------------------------------


def validate_points(N, D, L) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return N, D, L as 1-d float arrays, or raise naming what is wrong.

    Raises
    ------
    InputError (a ValueError)
        Shapes differ, or a value is non-finite or non-positive (the message
        names the field and the first offending index).
    UnderdeterminedFit
        Fewer than 6 points, or fewer than 2 distinct N or D.
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
    _check_identifiable(N, D)
    return N, D, L


def _check_identifiable(N: np.ndarray, D: np.ndarray) -> None:
    problems = []
    if len(N) < MIN_POINTS:
        problems.append(f"need at least {MIN_POINTS} points for 5 parameters, got {len(N)}")
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
) -> ScalingFit:
    """Fit ``L = E + A/N**alpha + B/D**beta`` by Huber loss in log space.

    Parameters
    ----------
    N, D, L : array_like, shape (n,)
        Model sizes (parameters), training tokens and final losses; all
        finite and > 0.
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

    Returns
    -------
    ScalingFit

    Raises
    ------
    ValueError
        Non-finite or non-positive inputs (message names the field).
    UnderdeterminedFit
        Fewer than 6 points or fewer than 2 distinct N or D.
    """
    N, D, L = validate_points(N, D, L)
    if n_polish < 1:
        raise ValueError(f"n_polish must be >= 1, got {n_polish}")
    if len(grid) == 0:
        raise ValueError("the start grid is empty")
    log_n, log_d, log_l = np.log(N), np.log(D), np.log(L)
    starts = grid.points()

    def batch_fun(x, rows):
        return huber_objective(x, log_n, log_d, log_l, delta)

    batch = batched_lbfgs(batch_fun, starts, max_iter=batch_max_iter)
    order = np.argsort(np.where(np.isfinite(batch.f), batch.f, np.inf), kind="stable")
    shortlist = distinct_basins(batch.x, order, basin_tol, n_polish)
    polished = []
    for i in shortlist:
        res = scipy_polish(batch.x[i], log_n, log_d, log_l, delta)
        polished.append((float(res.fun), i, res))
    return _assemble_fit(
        polished,
        starts,
        grid,
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
) -> ScalingFit:
    """Reference fit: scipy L-BFGS-B from each start in turn, keep the best.

    Slow (milliseconds per start); used to check :func:`fit_scaling_law` and
    in the benchmark.  ``start_indices`` restricts the loop to those rows of
    ``grid.points()``; ``reduction="mean"`` with ``options={}`` (scipy's
    defaults) reproduces the averaged-objective mistake.
    The reported ``objective`` is always the summed objective.
    """
    N, D, L = validate_points(N, D, L)
    log_n, log_d, log_l = np.log(N), np.log(D), np.log(L)
    starts = grid.points()
    indices = range(len(starts)) if start_indices is None else start_indices
    polished = []
    for i in indices:
        res = scipy_polish(starts[i], log_n, log_d, log_l, delta, None, reduction, options)
        summed = float(huber_objective(res.x, log_n, log_d, log_l, delta)[0][0])
        polished.append((summed, int(i), res))
    return _assemble_fit(
        polished,
        starts,
        grid,
        N,
        D,
        L,
        delta,
        n_batch_unconverged=0,
        basin_tol=basin_tol,
        emit_warnings=emit_warnings,
    )


def _assemble_fit(
    polished, starts, grid, N, D, L, delta, *, n_batch_unconverged, basin_tol, emit_warnings
) -> ScalingFit:
    polished = [p for p in polished if np.isfinite(p[0]) and np.all(np.isfinite(p[2].x))]
    if not polished:
        raise RuntimeError("every start diverged; the data may not follow this law")
    polished.sort(key=lambda p: p[0])
    objective, start_index, best = polished[0]
    law = ScalingLaw.from_theta(best.x)
    predicted = law.loss(N, D)
    start = dict(zip(PARAM_NAMES, (float(v) for v in starts[start_index]), strict=True))

    thetas = np.array([p[2].x for p in polished])
    minima = []
    for i in distinct_basins(thetas, np.arange(len(polished)), basin_tol, 5):
        minimum = ScalingLaw.from_theta(thetas[i]).to_dict()
        minimum["objective"] = polished[i][0]
        minima.append(minimum)

    notes = _fit_warnings(best.x, start, grid, N, D, converged=polish_ok(best))
    if emit_warnings:
        for note in notes:
            warnings.warn(note, FitWarning, stacklevel=3)
    return ScalingFit(
        law=law,
        objective=float(objective),
        n_points=len(N),
        residuals_log=(np.log(L) - np.log(predicted)).tolist(),
        residuals_loss=(L - predicted).tolist(),
        start=start,
        start_index=int(start_index),
        grid_edge=[
            name
            for name, axis in zip(PARAM_NAMES, grid.axes(), strict=True)
            if start[name] in (min(axis), max(axis))
        ],
        n_starts=len(starts),
        n_batch_unconverged=n_batch_unconverged,
        converged=polish_ok(best),
        delta=delta,
        warnings=notes,
        local_minima=minima,
    )


def _fit_warnings(theta, start, grid, N, D, *, converged) -> list[str]:
    notes = []
    # The grid brackets the search; an optimum beyond it, reached from a start
    # on the grid's edge, means basins further out were never explored.
    for name, value, axis in zip(PARAM_NAMES, theta, grid.axes(), strict=True):
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
        if distinct == 2:
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
