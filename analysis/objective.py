"""The objective of the fit: the summed Huber loss of log-space residuals, with its gradient.

For a law with ``theta = (log A, log B, log E, alpha, beta)`` the prediction in log space is
``LSE(a - alpha*log N, b - beta*log D, e)`` (log-sum-exp), and the objective is

    sum_i Huber_delta( LSE(a - alpha*log N_i, b - beta*log D_i, e) - log L_i )

with ``delta = 1e-3`` (Hoffmann et al. 2022, Approach 3, as used by Pandey 2024).  It is
evaluated for a whole batch of parameter vectors at once, which is what makes the
4500-start grid search of :mod:`analysis.fit` fast.
"""

from __future__ import annotations

import numpy as np

HUBER_DELTA = 1e-3


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


def anchored_objective(
    theta,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_excess: np.ndarray,
    delta: float = HUBER_DELTA,
    weights: np.ndarray | None = None,
    reduction: str = "sum",
) -> tuple[np.ndarray, np.ndarray]:
    """The floor-anchored objective: ``sum_i Huber(LSE(a - alpha*log N_i, b - beta*log D_i)
    - log(L_i - floor))``, the excess loss fitted in log space with E held at the floor.

    ``theta`` keeps the five columns of :func:`huber_objective` so both fits share one
    optimiser; its ``e`` column is ignored here and its gradient is zero, so L-BFGS never
    moves it (the fit stores ``log floor`` there, which makes the law's E the floor).
    """
    theta = np.array(np.atleast_2d(theta), dtype=float)
    # exp(-inf - top) = 0: the E term drops out of the log-sum-exp exactly.
    theta[:, 2] = -np.inf
    f, grad = huber_objective(theta, log_n, log_d, log_excess, delta, weights, reduction)
    grad[:, 2] = 0.0
    return f, grad


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
