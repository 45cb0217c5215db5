"""The data-dependent law: fitted parameters regressed on gzip compressibility H.

Pandey (2024) fits ``L = E + A/N**alpha + B/D**beta`` (Eq. 1) on several datasets,
regresses each parameter linearly on the dataset's gzip compressibility H
(Eq. 4, Table 3) and assembles

    L(N, D, H) = E(H) + A(H) / N**alpha(H) + B(H) / D**beta(H)          (Eq. 5)

and an adjustment of Chinchilla's law that moves each constant x' a fraction
epsilon of the way to the H-dependent value:

    x_eps(H) = (1 - epsilon) x' + epsilon x(H)   for x in E, A, B, alpha, beta   (Eq. 6)

The paper regresses the raw parameters, so that is the default here;
``log_amplitudes=True`` regresses log A and log B instead (A and B span
orders of magnitude across datasets and must stay positive, which a line in
H does not guarantee).

Uncertainty: each parameter's (intercept, slope) is drawn from the bivariate
normal that ordinary least squares estimates for it (``scipy.stats.linregress``
standard errors, with their covariance ``-mean(H) * stderr_slope**2``); the
five regressions are sampled independently, as they were fitted.  With three
datasets there is one residual degree of freedom, so these intervals are
rough; the normal (not Student t) draw understates them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import linregress

from gzipscale.analysis.fit import UnderdeterminedFit
from gzipscale.analysis.frontier import CHINCHILLA, compute_optimal
from gzipscale.analysis.law import LAW_NAMES, ScalingLaw
from gzipscale.vocabulary import FLOPS_PER_PARAM_TOKEN

MIN_DATASETS = 3
FRONTIER_FIELDS = ("N_opt", "D_opt", "tokens_per_parameter", "loss")


def _as_law(law: ScalingLaw | Mapping) -> ScalingLaw:
    return ScalingLaw.from_dict(law) if isinstance(law, Mapping) else law


def _law_values(law: ScalingLaw | Mapping) -> dict[str, float]:
    law = _as_law(law)
    return {k: float(getattr(law, k)) for k in LAW_NAMES}


@dataclass
class LinearTerm:
    """One parameter regressed on H: ``value(H) = intercept + slope * H``.

    With ``log_scale`` the line is for log(value).  ``mean_h`` is the mean of
    the regressors, needed for the slope/intercept covariance.
    """

    name: str
    slope: float
    intercept: float
    slope_stderr: float
    intercept_stderr: float
    pvalue: float
    rvalue: float
    r_squared: float
    n: int
    mean_h: float
    log_scale: bool = False

    def at(self, H):
        """The regressed parameter at compressibility H (scalar or array)."""
        line = self.intercept + self.slope * np.asarray(H, dtype=float)
        return np.exp(line) if self.log_scale else line

    def sample_coefficients(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draws of (intercept, slope), shape (size, 2), from their OLS normal."""
        cov_is = -self.mean_h * self.slope_stderr**2
        cov = np.array(
            [[self.intercept_stderr**2, cov_is], [cov_is, self.slope_stderr**2]], dtype=float
        )
        mean = np.array([self.intercept, self.slope])
        return rng.multivariate_normal(mean, cov, size=size, method="eigh")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "slope": float(self.slope),
            "intercept": float(self.intercept),
            "slope_stderr": float(self.slope_stderr),
            "intercept_stderr": float(self.intercept_stderr),
            "pvalue": float(self.pvalue),
            "rvalue": float(self.rvalue),
            "r_squared": float(self.r_squared),
            "n": int(self.n),
            "mean_h": float(self.mean_h),
            "log_scale": bool(self.log_scale),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> LinearTerm:
        """A term from :meth:`to_dict` (None, as JSON writes NaN, reads back as NaN)."""
        numbers = {
            k: math.nan if data[k] is None else float(data[k])
            for k in (
                "slope",
                "intercept",
                "slope_stderr",
                "intercept_stderr",
                "pvalue",
                "rvalue",
                "r_squared",
                "mean_h",
            )
        }
        return cls(
            name=str(data["name"]), n=int(data["n"]), log_scale=bool(data["log_scale"]), **numbers
        )


@dataclass
class GzipRegression:
    """Regressions of E, A, B, alpha, beta on H (Eq. 4; the paper's Table 3)."""

    terms: dict[str, LinearTerm]
    H: list[float]
    names: list[str]
    laws: list[ScalingLaw]
    log_amplitudes: bool

    def law_at(self, H: float) -> ScalingLaw:
        """Eq. 5 at one compressibility H."""
        return ScalingLaw(**{k: float(self.terms[k].at(H)) for k in LAW_NAMES})

    def to_dict(self) -> dict:
        return {
            "terms": {k: t.to_dict() for k, t in self.terms.items()},
            "H": [float(h) for h in self.H],
            "names": list(self.names),
            "laws": [law.to_dict() for law in self.laws],
            "log_amplitudes": bool(self.log_amplitudes),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> GzipRegression:
        return cls(
            terms={k: LinearTerm.from_dict(t) for k, t in data["terms"].items()},
            H=[float(h) for h in data["H"]],
            names=list(data["names"]),
            laws=[ScalingLaw.from_dict(law) for law in data["laws"]],
            log_amplitudes=bool(data["log_amplitudes"]),
        )


def fit_gzip_regression(
    laws: Sequence,
    H: Sequence[float],
    names: Sequence[str] | None = None,
    *,
    log_amplitudes: bool = False,
) -> GzipRegression:
    """Regress each fitted parameter linearly on gzip compressibility H.

    Parameters
    ----------
    laws : sequence
        One fitted law per dataset: a :class:`~gzipscale.analysis.law.ScalingLaw`
        (a fit's is ``fit.law``) or a mapping with keys E, A, B, alpha, beta.
    H : sequence of float
        gzip compressibility of each dataset.
    names : sequence of str, optional
        Dataset labels (kept for reporting).
    log_amplitudes : bool
        Regress log A and log B instead of A and B (default: raw, as the paper).

    Returns
    -------
    GzipRegression

    Raises
    ------
    UnderdeterminedFit
        Fewer than 3 datasets, or fewer than 2 distinct H.
    ValueError
        Lengths differ, or an H or parameter is not finite (or A, B <= 0 with
        ``log_amplitudes``).
    """
    laws = [_as_law(law) for law in laws]
    values = [_law_values(law) for law in laws]
    H_arr = np.asarray(H, dtype=float)
    if H_arr.ndim != 1 or len(H_arr) != len(values):
        raise ValueError(f"need one H per law: got {len(values)} laws and H of shape {H_arr.shape}")
    if len(values) < MIN_DATASETS:
        raise UnderdeterminedFit(
            f"need at least {MIN_DATASETS} datasets to regress parameters on H, got {len(values)}"
        )
    if not np.all(np.isfinite(H_arr)):
        raise ValueError(f"H (gzip compressibility) must be finite, got {H_arr.tolist()}")
    if len(np.unique(H_arr)) < 2:
        raise UnderdeterminedFit(
            f"need at least 2 distinct H values to regress on H, got H={H_arr.tolist()}"
        )
    labels = list(names) if names is not None else [f"dataset_{i}" for i in range(len(values))]
    if len(labels) != len(values):
        raise ValueError(f"need one name per law: got {len(labels)} names, {len(values)} laws")

    terms = {}
    for key in LAW_NAMES:
        y = np.array([v[key] for v in values])
        log_scale = log_amplitudes and key in ("A", "B")
        if log_scale:
            if np.any(y <= 0):
                raise ValueError(f"log_amplitudes needs {key} > 0 for every dataset, got {y}")
            y = np.log(y)
        if not np.all(np.isfinite(y)):
            raise ValueError(f"parameter {key} must be finite for every dataset, got {y}")
        fit = linregress(H_arr, y)
        terms[key] = LinearTerm(
            name=key,
            slope=float(fit.slope),
            intercept=float(fit.intercept),
            slope_stderr=float(fit.stderr),
            intercept_stderr=float(fit.intercept_stderr),
            pvalue=float(fit.pvalue),
            rvalue=float(fit.rvalue),
            r_squared=float(fit.rvalue**2),
            n=len(H_arr),
            mean_h=float(H_arr.mean()),
            log_scale=log_scale,
        )
    return GzipRegression(
        terms=terms,
        H=H_arr.tolist(),
        names=labels,
        laws=laws,
        log_amplitudes=log_amplitudes,
    )


def epsilon_adjusted_law(
    regression: GzipRegression, H: float, epsilon: float, base=CHINCHILLA
) -> ScalingLaw:
    """Eq. 6: each constant of ``base`` moved a fraction epsilon towards its value at H.

    The mixing is on the raw constants (also for a regression with
    ``log_amplitudes``, whose A(H), B(H) are first exponentiated).
    """
    if not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    base_values = _law_values(base)
    at_h = _law_values(regression.law_at(H))
    return ScalingLaw(**{k: (1 - epsilon) * base_values[k] + epsilon * at_h[k] for k in LAW_NAMES})


@dataclass
class EpsilonFit:
    """Least-squares epsilon of Eq. 6 on observed (N, D, H, loss) rows."""

    epsilon: float
    sse: float
    rmse: float
    n_points: int
    at_bound: bool

    def to_dict(self) -> dict:
        return {
            "epsilon": float(self.epsilon),
            "sse": float(self.sse),
            "rmse": float(self.rmse),
            "n_points": int(self.n_points),
            "at_bound": bool(self.at_bound),
        }


def _adjusted_loss(regression, base, epsilon, N, D, H) -> np.ndarray:
    base_values = _law_values(base)
    params = {
        k: (1 - epsilon) * base_values[k] + epsilon * regression.terms[k].at(H) for k in LAW_NAMES
    }
    return params["E"] + params["A"] / N ** params["alpha"] + params["B"] / D ** params["beta"]


def fit_epsilon(regression: GzipRegression, N, D, H, L, base=CHINCHILLA) -> EpsilonFit:
    """Fit Eq. 6's epsilon in [0, 1] by least squares on the loss.

    Minimises ``sum_i (L_i - L_eps(N_i, D_i, H_i))**2`` with bounded scalar
    minimisation (``scipy.optimize.minimize_scalar``, method "bounded").
    ``at_bound`` flags an optimum within 1e-4 of 0 or 1, where the true
    minimiser may lie outside [0, 1].
    """
    arrays = {}
    for name, values in (("N", N), ("D", D), ("H", H), ("L (loss)", L)):
        arr = np.asarray(values, dtype=float)
        if arr.ndim != 1 or not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be a 1-d array of finite values")
        if name != "H" and np.any(arr <= 0):
            raise ValueError(f"{name} must be > 0")
        arrays[name] = arr
    N, D, H, L = arrays.values()
    if not (len(N) == len(D) == len(H) == len(L)) or len(N) == 0:
        raise ValueError("N, D, H, L must be non-empty and of equal length")

    def sse(eps: float) -> float:
        resid = L - _adjusted_loss(regression, base, eps, N, D, H)
        value = float(resid @ resid)
        return value if math.isfinite(value) else math.inf

    best = minimize_scalar(sse, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-10})
    eps = float(best.x)
    # The bounded method never evaluates the end points; check them.
    for end in (0.0, 1.0):
        if sse(end) < sse(eps):
            eps = end
    value = sse(eps)
    return EpsilonFit(
        epsilon=eps,
        sse=value,
        rmse=math.sqrt(value / len(L)),
        n_points=len(L),
        at_bound=eps < 1e-4 or eps > 1 - 1e-4,
    )


@dataclass
class GzipPrediction:
    """The law (and optionally the frontier) predicted at one H, with intervals.

    ``intervals`` holds (low, high) for E, A, B, alpha, beta and the frontier
    exponents; ``frontier_intervals`` holds, per field, a list of (low, high)
    per budget in ``frontier.C``.  ``n_invalid`` draws gave A, B, alpha or
    beta <= 0 (no frontier) and were left out of every interval.
    """

    H: float
    epsilon: float | None
    law: ScalingLaw
    intervals: dict[str, tuple[float, float]]
    frontier: object | None
    frontier_intervals: dict[str, list[tuple[float, float]]]
    n_samples: int
    n_invalid: int
    level: float
    seed: int | None

    def to_dict(self) -> dict:
        return {
            "H": float(self.H),
            "epsilon": None if self.epsilon is None else float(self.epsilon),
            "law": self.law.to_dict(),
            "intervals": {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()},
            "frontier": None if self.frontier is None else self.frontier.to_dict(),
            "frontier_intervals": {
                k: [[float(lo), float(hi)] for lo, hi in v]
                for k, v in self.frontier_intervals.items()
            },
            "n_samples": int(self.n_samples),
            "n_invalid": int(self.n_invalid),
            "level": float(self.level),
            "seed": self.seed,
        }


def predict_at_gzip(
    regression: GzipRegression,
    H: float,
    *,
    C=None,
    epsilon: float | None = None,
    base=CHINCHILLA,
    n_samples: int = 2000,
    level: float = 0.95,
    seed: int | None = 0,
) -> GzipPrediction:
    """Predict the law at compressibility H (Eq. 5, or Eq. 6 with epsilon).

    Parameters
    ----------
    regression : GzipRegression
    H : float
        gzip compressibility of the target data.
    C : array_like, optional
        Compute budgets (FLOPs) at which to report the compute-optimal frontier.
    epsilon : float, optional
        If given, predict Chinchilla's law adjusted by Eq. 6 instead of Eq. 5.
    base : law-like
        The law Eq. 6 adjusts (default: Chinchilla's Approach 3 fit).
    n_samples, level, seed
        Regression-coefficient draws, interval coverage, and their seed.

    Returns
    -------
    GzipPrediction
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not math.isfinite(H):
        raise ValueError(f"H must be finite, got {H}")
    law = (
        regression.law_at(H)
        if epsilon is None
        else epsilon_adjusted_law(regression, H, epsilon, base)
    )
    rng = np.random.default_rng(seed)
    draws = {}
    for k in LAW_NAMES:
        term = regression.terms[k]
        coef = term.sample_coefficients(rng, n_samples)
        line = coef[:, 0] + coef[:, 1] * H
        draws[k] = np.exp(line) if term.log_scale else line
    if epsilon is not None:
        base_values = _law_values(base)
        draws = {k: (1 - epsilon) * base_values[k] + epsilon * v for k, v in draws.items()}
    valid = (draws["A"] > 0) & (draws["B"] > 0) & (draws["alpha"] > 0) & (draws["beta"] > 0)
    kept = {k: v[valid] for k, v in draws.items()}
    kept["n_opt_exponent"] = kept["beta"] / (kept["alpha"] + kept["beta"])
    kept["d_opt_exponent"] = kept["alpha"] / (kept["alpha"] + kept["beta"])
    tail = 100 * (1 - level) / 2
    if valid.sum() == 0:
        raise ValueError(
            "every draw of the regression gives a law with A, B, alpha or beta <= 0 at "
            f"H={H}; the regression cannot predict a usable law there"
        )
    intervals = {
        k: tuple(float(q) for q in np.percentile(v, [tail, 100 - tail])) for k, v in kept.items()
    }

    frontier = None
    frontier_intervals: dict[str, list[tuple[float, float]]] = {}
    if C is not None:
        C = np.atleast_1d(np.asarray(C, dtype=float))
        try:
            frontier = compute_optimal(law, C)
        except ValueError:
            frontier = None  # the point estimate itself has no frontier
        # Per-draw frontier, vectorised over draws x budgets.
        alpha, beta = kept["alpha"][:, None], kept["beta"][:, None]
        A, B, E = kept["A"][:, None], kept["B"][:, None], kept["E"][:, None]
        log_g = (np.log(alpha * A) - np.log(beta * B)) / (alpha + beta)
        log_c6 = np.log(C / FLOPS_PER_PARAM_TOKEN)[None, :]
        n_opt = np.exp(log_g + beta / (alpha + beta) * log_c6)
        d_opt = np.exp(alpha / (alpha + beta) * log_c6 - log_g)
        per_draw = {
            "N_opt": n_opt,
            "D_opt": d_opt,
            "tokens_per_parameter": d_opt / n_opt,
            "loss": E + A / n_opt**alpha + B / d_opt**beta,
        }
        for k in FRONTIER_FIELDS:
            lo, hi = np.percentile(per_draw[k], [tail, 100 - tail], axis=0)
            frontier_intervals[k] = [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]
    return GzipPrediction(
        H=float(H),
        epsilon=epsilon,
        law=law,
        intervals=intervals,
        frontier=frontier,
        frontier_intervals=frontier_intervals,
        n_samples=n_samples,
        n_invalid=int((~valid).sum()),
        level=level,
        seed=seed,
    )
