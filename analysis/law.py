"""The scaling law ``L(N, D) = E + A/N**alpha + B/D**beta`` (Pandey 2024, Eq. 1).

One type, :class:`ScalingLaw`, is the law wherever the project holds one: a fit's result, a
bootstrap resample, a law predicted from gzip H, Chinchilla's published law.  It carries its
own compute-optimal frontier exponents: with ``C = 6 N D``, ``N_opt ∝ C**n_opt_exponent``
and ``D_opt ∝ C**d_opt_exponent`` (Hoffmann et al. 2022, Approach 3), where

    n_opt_exponent = beta / (alpha + beta)        d_opt_exponent = alpha / (alpha + beta)

(the paper writes the first as ``a``).  The optimiser works on the vector ``theta = (log A,
log B, log E, alpha, beta)``; :meth:`ScalingLaw.to_theta` and :meth:`ScalingLaw.from_theta`
convert.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# The law's five parameters, in the order every table and dict lists them.
LAW_NAMES = ("E", "A", "B", "alpha", "beta")
# The frontier exponents, under the one name each has everywhere (intervals, JSON, tables).
EXPONENT_NAMES = ("n_opt_exponent", "d_opt_exponent")
# Order of the optimised vector theta: log A, log B, log E, alpha, beta.
PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
# exp(±700) is still a finite double; used to keep starts finite.
LOG_COEFFICIENT_LIMIT = 700.0


def _number(value) -> float:
    return math.nan if value is None else float(value)


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
        # An unidentified law's exponent can be in the hundreds: N**alpha is then inf and
        # its term 0, which is what the law says; not worth a warning.
        with np.errstate(over="ignore"):
            return self.E + self.A / N**self.alpha + self.B / D**self.beta

    @property
    def n_opt_exponent(self) -> float:
        """``beta / (alpha + beta)``: N_opt ∝ C**n_opt_exponent (NaN unless alpha + beta > 0)."""
        total = self.alpha + self.beta
        return self.beta / total if total > 0 else math.nan

    @property
    def d_opt_exponent(self) -> float:
        """``alpha / (alpha + beta)``: D_opt ∝ C**d_opt_exponent (NaN unless alpha + beta > 0)."""
        total = self.alpha + self.beta
        return self.alpha / total if total > 0 else math.nan

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

    @classmethod
    def from_dict(cls, data: Mapping) -> ScalingLaw:
        """The law of a mapping with keys E, A, B, alpha, beta (other keys are ignored);
        None, as JSON writes NaN, reads back as NaN."""
        return cls(**{name: _number(data[name]) for name in LAW_NAMES})

    def to_dict(self) -> dict:
        """The five parameters and the two frontier exponents, as floats."""
        out = {name: float(getattr(self, name)) for name in LAW_NAMES}
        out.update({name: float(getattr(self, name)) for name in EXPONENT_NAMES})
        return out
