"""Compute-optimal frontier of a law ``L(N, D) = E + A/N**alpha + B/D**beta``.

With training compute ``C = 6 N D`` (Kaplan et al. 2020; Hoffmann et al. 2022),
minimising L at fixed C gives (Hoffmann et al. 2022, Appendix D.2)

    G     = (alpha A / (beta B)) ** (1 / (alpha + beta))
    N_opt = G * (C/6) ** a,      a = beta / (alpha + beta)
    D_opt = (C/6) ** b / G,      b = alpha / (alpha + beta)

so ``a + b = 1`` and ``6 N_opt D_opt = C``.  Tokens per parameter,
``D_opt / N_opt = G**-2 (C/6)**(b - a)``, is a power law in C; two laws'
ratios meet where two power laws meet, which has a closed form.

Every function takes a :class:`~gzipscale.analysis.law.ScalingLaw` (a fit's is
``fit.law``), needs A, B, alpha, beta > 0, and is vectorised over arrays of C.  The
exponents a and b are the law's own ``n_opt_exponent`` and ``d_opt_exponent``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gzipscale.analysis.law import ScalingLaw
from gzipscale.vocabulary import FLOPS_PER_PARAM_TOKEN

# Chinchilla's Approach 3 fit (Hoffmann et al. 2022, Eq. 10).
CHINCHILLA = ScalingLaw(E=1.6934, A=406.40, B=410.72, alpha=0.33917, beta=0.28491)
# Epoch AI's refit of Chinchilla's data (Besiroglu et al. 2024, Eq. 5).
EPOCH_CHINCHILLA = ScalingLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)

FRONTIER_FIELDS = ("C", "N_opt", "D_opt", "tokens_per_parameter", "loss")
# Exponent differences below this count as parallel tokens-per-parameter laws.
PARALLEL_TOL = 1e-12


def _checked(law: ScalingLaw) -> tuple[float, float, float, float, float]:
    E, A, B, alpha, beta = (float(getattr(law, k)) for k in ("E", "A", "B", "alpha", "beta"))
    if not (A > 0 and B > 0 and alpha > 0 and beta > 0):
        raise ValueError(
            "the compute-optimal frontier needs A, B, alpha, beta > 0; got "
            f"A={A:.4g}, B={B:.4g}, alpha={alpha:.4g}, beta={beta:.4g}"
        )
    return E, A, B, alpha, beta


def _budget(C) -> np.ndarray:
    C = np.asarray(C, dtype=float)
    if np.any(~np.isfinite(C) | (C <= 0)):
        raise ValueError("C (compute budget, FLOPs) must be finite and > 0")
    return C


def frontier_exponents(law: ScalingLaw) -> tuple[float, float]:
    """``(a, b) = (beta/(alpha+beta), alpha/(alpha+beta))``: N_opt ∝ C**a, D_opt ∝ C**b.

    The law's own ``n_opt_exponent`` and ``d_opt_exponent``, once its parameters are
    checked (a frontier needs A, B, alpha, beta > 0)."""
    _checked(law)
    return law.n_opt_exponent, law.d_opt_exponent


def frontier_coefficient(law: ScalingLaw) -> float:
    """``G = (alpha A / (beta B)) ** (1 / (alpha + beta))``."""
    _, A, B, alpha, beta = _checked(law)
    return math.exp((math.log(alpha * A) - math.log(beta * B)) / (alpha + beta))


def optimal_allocation(law: ScalingLaw, C) -> tuple[np.ndarray, np.ndarray]:
    """Compute-optimal ``(N_opt, D_opt)`` for budget(s) C in FLOPs (``C = 6 N D``)."""
    C = _budget(C)
    a, b = frontier_exponents(law)
    log_g = math.log(frontier_coefficient(law))
    log_c6 = np.log(C / FLOPS_PER_PARAM_TOKEN)
    return np.exp(log_g + a * log_c6), np.exp(b * log_c6 - log_g)


def tokens_per_parameter(law: ScalingLaw, C) -> np.ndarray:
    """``D_opt / N_opt`` at budget(s) C: ``G**-2 (C/6)**(b - a)``."""
    C = _budget(C)
    a, b = frontier_exponents(law)
    log_g = math.log(frontier_coefficient(law))
    return np.exp((b - a) * np.log(C / FLOPS_PER_PARAM_TOKEN) - 2 * log_g)


def loss_at_optimum(law: ScalingLaw, C) -> np.ndarray:
    """The law's loss at its compute-optimal (N_opt, D_opt) for budget(s) C."""
    E, A, B, alpha, beta = _checked(law)
    n_opt, d_opt = optimal_allocation(law, C)
    return E + A / n_opt**alpha + B / d_opt**beta


def crossing_budget(law: ScalingLaw, other: ScalingLaw = CHINCHILLA) -> float | None:
    """Budget C at which two laws prescribe the same tokens per parameter.

    Both ratios are power laws ``r_i(C) = G_i**-2 (C/6)**p_i`` with
    ``p_i = (alpha_i - beta_i) / (alpha_i + beta_i)``, so they meet once, at
    ``log(C/6) = 2 (log G_1 - log G_2) / (p_1 - p_2)``; at that budget the
    two laws also agree on N_opt and D_opt (``N_opt = sqrt(C / (6 r))``).

    Returns
    -------
    float or None
        The crossing budget in FLOPs (``inf``/``0.0`` if it overflows the
        float range), or None when the exponents are equal (parallel ratios:
        never crossing, or identical everywhere).
    """
    a1, b1 = frontier_exponents(law)
    a2, b2 = frontier_exponents(other)
    p1, p2 = b1 - a1, b2 - a2
    if abs(p1 - p2) <= PARALLEL_TOL:
        return None
    log_g1 = math.log(frontier_coefficient(law))
    log_g2 = math.log(frontier_coefficient(other))
    log_c6 = 2 * (log_g1 - log_g2) / (p1 - p2)
    with np.errstate(over="ignore"):
        return float(FLOPS_PER_PARAM_TOKEN * np.exp(log_c6))


@dataclass
class FrontierPoint:
    """The compute-optimal allocation at each budget C (arrays shaped like C; floats for
    one budget).  The frontier's exponents are the law's (``law.n_opt_exponent``)."""

    C: np.ndarray
    N_opt: np.ndarray
    D_opt: np.ndarray
    tokens_per_parameter: np.ndarray
    loss: np.ndarray

    def to_dict(self) -> dict:
        def plain(v):
            arr = np.asarray(v, dtype=float)
            return arr.tolist() if arr.ndim else float(arr)

        return {
            "C": plain(self.C),
            "N_opt": plain(self.N_opt),
            "D_opt": plain(self.D_opt),
            "tokens_per_parameter": plain(self.tokens_per_parameter),
            "loss": plain(self.loss),
        }

    @classmethod
    def from_dict(cls, data: dict) -> FrontierPoint:
        def array(v):
            return np.asarray(math.nan if v is None else v, dtype=float)

        return cls(**{k: array(data[k]) for k in FRONTIER_FIELDS})


def compute_optimal(law: ScalingLaw, C) -> FrontierPoint:
    """Everything about the frontier at budget(s) C, in one record."""
    C = _budget(C)
    n_opt, d_opt = optimal_allocation(law, C)
    return FrontierPoint(
        C=C,
        N_opt=n_opt,
        D_opt=d_opt,
        tokens_per_parameter=d_opt / n_opt,
        loss=loss_at_optimum(law, C),
    )
