"""Fit one scaling law ``L(N, D) = E + A/N**alpha + B/D**beta`` to one dataset.

The method is Chinchilla's "Approach 3" as used by Pandey (2024), "gzip Predicts
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
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

HUBER_DELTA = 1e-3
# Order of the optimised vector theta: log A, log B, log E, alpha, beta.
PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
LAW_NAMES = ("E", "A", "B", "alpha", "beta")
# exp(±700) is still a finite double; used to keep starts finite.
LOG_COEFFICIENT_LIMIT = 700.0
# Frontier exponents: N_opt ∝ C**n_opt_exponent, D_opt ∝ C**d_opt_exponent.
BOOTSTRAP_NAMES = LAW_NAMES + ("n_opt_exponent", "d_opt_exponent")

MIN_POINTS = 6
MIN_DISTINCT = 2

# Tight settings for the scipy polish (and the naive loop).  The objective is
# ~1e-4 in magnitude and scipy's ftol is relative to max(|f|, 1), so ftol must
# be far below the objective for the gradient test to decide.
POLISH_OPTIONS = {"maxiter": 5000, "maxcor": 20, "ftol": 1e-15, "gtol": 1e-10}


class UnderdeterminedFit(ValueError):
    """The data cannot identify the five parameters of the law."""


class FitWarning(UserWarning):
    """A fit returned numbers that deserve suspicion (see the message)."""


def _as_float(x) -> float:
    return float(x)


@dataclass(frozen=True)
class ScalingLaw:
    """The law ``L(N, D) = E + A / N**alpha + B / D**beta``."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, N, D):
        """Predicted loss at model size(s) N and token count(s) D (broadcasts)."""
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    def to_theta(self) -> np.ndarray:
        """The optimiser's vector ``(log A, log B, log E, alpha, beta)``."""
        # A coefficient that underflowed to 0 in from_theta maps back to -inf, not an error.
        with np.errstate(divide="ignore"):
            logs = np.log(np.array([self.A, self.B, self.E], dtype=float))
        return np.array([*logs, self.alpha, self.beta])

    @classmethod
    def from_theta(cls, theta) -> ScalingLaw:
        a, b, e, alpha, beta = (float(v) for v in theta)
        with np.errstate(over="ignore"):  # an absurd fit becomes inf, not an exception
            E, A, B = (float(np.exp(v)) for v in (e, a, b))
        return cls(E=E, A=A, B=B, alpha=alpha, beta=beta)

    def to_dict(self) -> dict:
        return {name: _as_float(getattr(self, name)) for name in LAW_NAMES}


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
    E, A, B, alpha, beta : float
        The fitted law.
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

    E: float
    A: float
    B: float
    alpha: float
    beta: float
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
    def law(self) -> ScalingLaw:
        return ScalingLaw(E=self.E, A=self.A, B=self.B, alpha=self.alpha, beta=self.beta)

    @property
    def theta(self) -> np.ndarray:
        return self.law.to_theta()

    def loss(self, N, D):
        return self.law.loss(N, D)

    def to_dict(self) -> dict:
        return {
            **self.law.to_dict(),
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


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------


def validate_points(N, D, L) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return N, D, L as 1-d float arrays, or raise naming what is wrong.

    Raises
    ------
    ValueError
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
            raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
        bad = ~np.isfinite(arr) | (arr <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name} must be finite and > 0; got {arr[i]!r} at index {i} "
                f"({int(bad.sum())} bad value(s))"
            )
        arrays[name] = arr
    N, D, L = arrays.values()
    if not (len(N) == len(D) == len(L)):
        raise ValueError(f"N, D, L must have equal lengths, got {len(N)}, {len(D)}, {len(L)}")
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


# --------------------------------------------------------------------------
# Objective
# --------------------------------------------------------------------------


def huber_objective(
    theta,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_l: np.ndarray,
    delta: float = HUBER_DELTA,
    weights: np.ndarray | None = None,
    reduction: str = "sum",
) -> tuple[np.ndarray, np.ndarray]:
    """Huber objective and its gradient for a batch of parameter vectors.

    Parameters
    ----------
    theta : array, shape (S, 5) or (5,)
        Rows ``(log A, log B, log E, alpha, beta)``.
    log_n, log_d, log_l : array, shape (n,)
        Logs of the data.
    delta : float
        Huber threshold on the log-loss residual.
    weights : array, shape (n,) or (S, n), optional
        Per-point multiplicities (bootstrap counts); a point with weight k
        counts as k copies.
    reduction : {"sum", "mean"}
        "sum" is the method; "mean" divides by the (weighted) point count and
        exists only to demonstrate why it should not be used.

    Returns
    -------
    f : array, shape (S,)
    grad : array, shape (S, 5)
    """
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    # Blocks of ~16k (start, point) pairs keep the temporaries in cache; one
    # (4500 x 300) pass is memory-bound and about twice as slow.
    rows = max(1, _BLOCK_ELEMENTS // max(len(log_l), 1))
    if theta.shape[0] <= rows:
        return _huber_block(theta, log_n, log_d, log_l, delta, weights, reduction)
    f = np.empty(theta.shape[0])
    grad = np.empty_like(theta)
    per_row_weights = weights is not None and np.ndim(weights) == 2
    for lo in range(0, theta.shape[0], rows):
        block = slice(lo, lo + rows)
        w = weights[block] if per_row_weights else weights
        f[block], grad[block] = _huber_block(theta[block], log_n, log_d, log_l, delta, w, reduction)
    return f, grad


_BLOCK_ELEMENTS = 16384


def _huber_block(theta, log_n, log_d, log_l, delta, weights, reduction):
    a, b, e, alpha, beta = (theta[:, k : k + 1] for k in range(5))
    # In-place arithmetic throughout: this runs on (starts x points) arrays
    # hundreds of times per fit, and allocation dominates otherwise.
    w_n = np.multiply(alpha, -log_n)
    w_n += a
    w_d = np.multiply(beta, -log_d)
    w_d += b
    top = np.maximum(w_n, w_d)
    np.maximum(top, e, out=top)
    w_n -= top
    np.exp(w_n, out=w_n)
    w_d -= top
    np.exp(w_d, out=w_d)
    total = np.subtract(e, top)
    np.exp(total, out=total)
    total += w_n
    total += w_d
    resid = np.log(total)
    resid += top
    resid -= log_l
    del top
    # Huber(r) = c * (r - c/2) with c = clip(r, -delta, delta); c is also Huber'(r).
    clipped = np.clip(resid, -delta, delta)
    per_point = np.multiply(clipped, -0.5)
    per_point += resid
    per_point *= clipped
    del resid
    if weights is not None:
        per_point *= weights
        clipped *= weights
    if reduction == "mean":
        count = np.sum(weights, axis=-1, keepdims=True) if weights is not None else len(log_l)
        per_point /= count
        clipped /= count
    f = per_point.sum(axis=1)
    del per_point
    # d LSE / d r_k is the softmax weight w_k / total; the three weights sum
    # to one, so the e-gradient is what the other two leave of sum(Huber').
    clipped_sum = clipped.sum(axis=1)
    clipped /= total
    w_n *= clipped
    w_d *= clipped
    grad = np.empty_like(theta)
    grad[:, 0] = w_n.sum(axis=1)
    grad[:, 1] = w_d.sum(axis=1)
    grad[:, 2] = clipped_sum - grad[:, 0] - grad[:, 1]
    grad[:, 3] = -(w_n @ log_n)
    grad[:, 4] = -(w_d @ log_d)
    return f, grad


# --------------------------------------------------------------------------
# Batched L-BFGS: many independent problems, one numpy evaluation
# --------------------------------------------------------------------------


@dataclass
class _BatchResult:
    x: np.ndarray
    f: np.ndarray
    converged: np.ndarray  # met gtol/ftol (False: hit max_iter or stalled line search)
    stalled: np.ndarray  # line search could not decrease f
    n_iter: np.ndarray


def _rowdot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", u, v)


def _batched_lbfgs(
    fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    *,
    max_iter: int,
    memory: int = 10,
    gtol: float = 1e-9,
    ftol: float = 1e-9,
    c1: float = 1e-4,
    ladder: int = 6,
    max_ladders: int = 6,
) -> _BatchResult:
    """Minimise S independent functions with S independent L-BFGS runs.

    ``fun(x, rows)`` returns objective (k,) and gradient (k, P) of problems
    ``rows`` (indices into the batch) at ``x`` (k, P).  Each problem keeps its
    own curvature pairs, initial scaling and Armijo backtracking step.  A
    problem stops when its max |gradient| <= gtol or one step lowers its
    objective by <= ftol relatively, and is then dropped from the batch.
    """
    x_out = np.array(x0, dtype=float)
    S, P = x_out.shape
    f_out = np.full(S, np.nan)
    converged = np.zeros(S, dtype=bool)
    stalled = np.zeros(S, dtype=bool)
    n_iter = np.zeros(S, dtype=int)

    rows = np.arange(S)
    x = x_out.copy()
    f, g = fun(x, rows)
    f_out[:] = f
    finite = np.isfinite(f) & np.all(np.isfinite(g), axis=1)
    stalled[~finite] = True
    rows, x, f, g = rows[finite], x[finite], f[finite], g[finite]
    s_hist = np.zeros((rows.size, memory, P))
    y_hist = np.zeros((rows.size, memory, P))
    rho = np.zeros((rows.size, memory))
    gamma = np.full(rows.size, np.nan)
    shrink = 0.5 ** np.arange(1, ladder + 1)
    n_pairs = 0
    for it in range(max_iter):
        if rows.size == 0:
            break
        # Two-loop recursion, each row with its own history.
        q = g.copy()
        slots = [(n_pairs - 1 - j) % memory for j in range(min(n_pairs, memory))]
        coef = np.zeros((rows.size, memory))
        for slot in slots:
            coef[:, slot] = rho[:, slot] * _rowdot(s_hist[:, slot], q)
            q -= coef[:, slot, None] * y_hist[:, slot]
        scale = gamma.copy()
        first = ~np.isfinite(scale)
        # No curvature yet: a first step of unit length, like scipy's.
        scale[first] = 1.0 / np.maximum(np.linalg.norm(g[first], axis=1), 1e-300)
        r = scale[:, None] * q
        for slot in reversed(slots):
            back = rho[:, slot] * _rowdot(y_hist[:, slot], r)
            r += s_hist[:, slot] * (coef[:, slot] - back)[:, None]
        direction = -r
        slope = _rowdot(g, direction)
        uphill = ~(slope < 0)
        if uphill.any():
            norm = np.maximum(np.linalg.norm(g[uphill], axis=1), 1e-300)
            direction[uphill] = -g[uphill] / norm[:, None]
            slope[uphill] = -norm

        # Armijo backtracking per row.  Rows whose unit step fails try a
        # ladder of halved steps in one evaluation (fewer numpy round trips).
        step = np.ones(rows.size)
        new_f, new_g = fun(x + direction, rows)
        ok = np.isfinite(new_f) & (new_f <= f + c1 * slope)
        new_f[~ok] = np.nan
        pending = np.flatnonzero(~ok)
        base = 1.0
        for _ in range(max_ladders):
            if pending.size == 0:
                break
            steps = base * shrink
            trial = x[pending, None, :] + steps[None, :, None] * direction[pending, None, :]
            f_try, g_try = fun(trial.reshape(-1, P), np.repeat(rows[pending], ladder))
            f_try = f_try.reshape(pending.size, ladder)
            armijo = np.isfinite(f_try) & (
                f_try <= f[pending, None] + c1 * steps[None, :] * slope[pending, None]
            )
            hit = armijo.any(axis=1)
            choice = np.argmax(armijo, axis=1)
            won = pending[hit]
            new_f[won] = f_try[hit, choice[hit]]
            new_g[won] = g_try.reshape(pending.size, ladder, P)[hit, choice[hit]]
            step[won] = steps[choice[hit]]
            pending = pending[~hit]
            base = steps[-1]
        moved = np.isfinite(new_f)

        s_vec = step[:, None] * direction
        y_vec = new_g - g
        sy = _rowdot(s_vec, y_vec)
        yy = _rowdot(y_vec, y_vec)
        # Keep only pairs with positive curvature (no Wolfe condition is enforced).
        good = moved & (yy > 0) & (sy > 1e-12 * np.sqrt(yy * _rowdot(s_vec, s_vec)))
        slot = n_pairs % memory
        n_pairs += 1
        s_hist[:, slot] = np.where(good[:, None], s_vec, 0.0)
        y_hist[:, slot] = np.where(good[:, None], y_vec, 0.0)
        rho[:, slot] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        gamma = np.where(good, sy / np.where(good, yy, 1.0), gamma)

        f_prev = f
        x = np.where(moved[:, None], x + s_vec, x)
        f = np.where(moved, new_f, f)
        g = np.where(moved[:, None], new_g, g)
        n_iter[rows] = it + 1

        small_grad = np.max(np.abs(g), axis=1) <= gtol
        small_change = (f_prev - f) <= ftol * np.maximum(np.abs(f_prev), 1e-300)
        done = moved & (small_grad | small_change)
        converged[rows[done]] = True
        stalled[rows[~moved]] = True
        leaving = done | ~moved
        x_out[rows] = x
        f_out[rows] = f
        if leaving.any():
            stay = ~leaving
            rows, x, f, g = rows[stay], x[stay], f[stay], g[stay]
            s_hist, y_hist, rho, gamma = s_hist[stay], y_hist[stay], rho[stay], gamma[stay]
    return _BatchResult(x=x_out, f=f_out, converged=converged, stalled=stalled, n_iter=n_iter)


def _distinct_basins(theta: np.ndarray, order: np.ndarray, tol: float, limit: int) -> list[int]:
    """Indices (from ``order``, best first) of up to ``limit`` mutually distant points."""
    kept: list[int] = []
    for i in order:
        if not np.all(np.isfinite(theta[i])):
            continue
        if kept and np.min(np.max(np.abs(theta[kept] - theta[i]), axis=1)) < tol:
            continue
        kept.append(int(i))
        if len(kept) >= limit:
            break
    return kept


def _scipy_polish(x0, log_n, log_d, log_l, delta, weights=None, reduction="sum", options=None):
    def fun(theta):
        f, g = huber_objective(theta, log_n, log_d, log_l, delta, weights, reduction)
        return float(f[0]), g[0]

    opts = POLISH_OPTIONS if options is None else options
    return minimize(fun, np.asarray(x0, dtype=float), jac=True, method="L-BFGS-B", options=opts)


def _polish_ok(result) -> bool:
    # L-BFGS-B's line search often "fails" at the Huber kinks once it has
    # reached machine precision; that is convergence, not failure.
    return bool(result.success) or (
        result.status == 2 and np.max(np.abs(result.jac)) < 1e-6 and np.isfinite(result.fun)
    )


# --------------------------------------------------------------------------
# Public fitting functions
# --------------------------------------------------------------------------


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

    batch = _batched_lbfgs(batch_fun, starts, max_iter=batch_max_iter)
    order = np.argsort(np.where(np.isfinite(batch.f), batch.f, np.inf), kind="stable")
    shortlist = _distinct_basins(batch.x, order, basin_tol, n_polish)
    polished = []
    for i in shortlist:
        res = _scipy_polish(batch.x[i], log_n, log_d, log_l, delta)
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
        res = _scipy_polish(starts[i], log_n, log_d, log_l, delta, None, reduction, options)
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
    for i in _distinct_basins(thetas, np.arange(len(polished)), basin_tol, 5):
        minimum = ScalingLaw.from_theta(thetas[i]).to_dict()
        minimum["objective"] = polished[i][0]
        minima.append(minimum)

    notes = _fit_warnings(best.x, start, grid, N, D, converged=_polish_ok(best))
    if emit_warnings:
        for note in notes:
            warnings.warn(note, FitWarning, stacklevel=3)
    return ScalingFit(
        E=law.E,
        A=law.A,
        B=law.B,
        alpha=law.alpha,
        beta=law.beta,
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
        converged=_polish_ok(best),
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


# --------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------

# Coarse start grid added to every bootstrap fit (32 starts spanning the main grid).
BOOTSTRAP_GRID = StartGrid(
    a=(5.0, 20.0), b=(5.0, 20.0), e=(-0.5, 0.5), alpha=(0.5, 1.5), beta=(0.5, 1.5)
)


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
    n_resamples: int = 200,
    level: float = 0.95,
    seed: int | None = 0,
    groups=None,
    point_fit: ScalingFit | None = None,
    delta: float = HUBER_DELTA,
    extra_grid: StartGrid = BOOTSTRAP_GRID,
    batch_max_iter: int = 100,
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
    N, D, L = validate_points(N, D, L)
    if point_fit is None:
        point_fit = fit_scaling_law(N, D, L, delta=delta, emit_warnings=False)
    elif point_fit.n_points != len(N):
        raise ValueError(
            f"point_fit was fitted to {point_fit.n_points} points, but {len(N)} were given"
        )
    log_n, log_d, log_l = np.log(N), np.log(D), np.log(L)

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
    laws = [point_fit.law] + [
        ScalingLaw(**{k: m[k] for k in LAW_NAMES}) for m in point_fit.local_minima[1:]
    ]
    warm = np.clip(
        np.array([law.to_theta() for law in laws]), -LOG_COEFFICIENT_LIMIT, LOG_COEFFICIENT_LIMIT
    )
    starts = np.vstack([warm, extra_grid.points()])
    n_starts = len(starts)
    rows_theta = np.tile(starts, (n_resamples, 1))
    rows_weights = np.repeat(counts, n_starts, axis=0)

    def batch_fun(x, rows):
        return huber_objective(x, log_n, log_d, log_l, delta, rows_weights[rows])

    batch = _batched_lbfgs(batch_fun, rows_theta, max_iter=batch_max_iter)
    f_by_resample = np.where(np.isfinite(batch.f), batch.f, np.inf).reshape(n_resamples, n_starts)
    best_rows = np.arange(n_resamples) * n_starts + np.argmin(f_by_resample, axis=1)

    thetas = np.empty((n_resamples, 5))
    unconverged = 0
    for r, row in enumerate(best_rows):
        res = _scipy_polish(batch.x[row], log_n, log_d, log_l, delta, counts[r])
        keep = res.x if res.fun <= batch.f[row] else batch.x[row]
        thetas[r] = keep
        unconverged += not _polish_ok(res)

    samples = _named_estimates(thetas)
    point = {k: float(v[0]) for k, v in _named_estimates(point_fit.theta).items()}
    tail = 100 * (1 - level) / 2
    intervals = {
        k: tuple(float(q) for q in np.percentile(v, [tail, 100 - tail])) for k, v in samples.items()
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
