"""The optimisers of the fit: a batched L-BFGS for many independent starts, and scipy's
L-BFGS-B to polish the best of them.

:func:`batched_lbfgs` runs S independent L-BFGS problems (own curvature history, own Armijo
backtracking, own stopping test) with one numpy evaluation of all their objectives and
gradients per step; nothing couples the problems.  :func:`scipy_polish` refines one point
with tight tolerances; :func:`distinct_basins` collapses nearby optima into one.  How the
fit uses them, and why the result matches a start-by-start scipy loop, is explained in
:mod:`analysis.fit`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from gzipscale.analysis.objective import huber_objective

# Tight settings for the scipy polish (and the naive loop).  The objective is
# ~1e-4 in magnitude and scipy's ftol is relative to max(|f|, 1), so ftol must
# be far below the objective for the gradient test to decide.
POLISH_OPTIONS = {"maxiter": 5000, "maxcor": 20, "ftol": 1e-15, "gtol": 1e-10}


@dataclass
class BatchResult:
    x: np.ndarray
    f: np.ndarray
    converged: np.ndarray  # met gtol/ftol (False: hit max_iter or stalled line search)
    stalled: np.ndarray  # line search could not decrease f
    n_iter: np.ndarray


def _rowdot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", u, v)


def batched_lbfgs(
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
) -> BatchResult:
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
    # A start far out on a degenerate surface (an unidentified law's alpha in the
    # hundreds) can overflow a curvature pair; its row then stalls and leaves the batch,
    # which is the screen working, not something to warn a user about.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
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
    return BatchResult(x=x_out, f=f_out, converged=converged, stalled=stalled, n_iter=n_iter)


def distinct_basins(theta: np.ndarray, order: np.ndarray, tol: float, limit: int) -> list[int]:
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


def scipy_polish(
    x0,
    log_n,
    log_d,
    log_l,
    delta,
    weights=None,
    reduction="sum",
    options=None,
    objective=huber_objective,
):
    def fun(theta):
        f, g = objective(theta, log_n, log_d, log_l, delta, weights, reduction)
        return float(f[0]), g[0]

    opts = POLISH_OPTIONS if options is None else options
    return minimize(fun, np.asarray(x0, dtype=float), jac=True, method="L-BFGS-B", options=opts)


def polish_ok(result) -> bool:
    # L-BFGS-B's line search often "fails" at the Huber kinks once it has
    # reached machine precision; that is convergence, not failure.
    return bool(result.success) or (
        result.status == 2 and np.max(np.abs(result.jac)) < 1e-6 and np.isfinite(result.fun)
    )
