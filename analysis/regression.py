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

Covariates: the regression is the same for any per-dataset number, not only H.
:func:`fit_regression` takes the covariate's name (``"gzip"``, the default, or e.g.
``"floor"``, the dataset's Bayes-optimal loss) and records it in the result;
:func:`fit_gzip_regression` is the gzip case.  The per-dataset values keep the field and
key name ``H`` for every covariate (old callers and old dicts read them there).

Impossible laws: a line in H can cross zero, and a law needs ``E >= 0``, ``A, B > 0``,
``alpha, beta > 0`` (hence frontier exponents ``beta/(alpha+beta)`` and
``alpha/(alpha+beta)`` in (0, 1)).  :func:`law_problems` names what a law breaks;
:meth:`ParameterRegression.problems_at` does so for the regressed law at one value of the
covariate, and :attr:`ParameterRegression.flags` for every parameter whose line is impossible
somewhere in the fitted range (checking the range's ends suffices: each raw line is monotone,
a log-scale one always positive).  :func:`predict_at_gzip` flags an impossible point law
(``problems``, ``valid``) and keeps only possible draws in its intervals (``n_valid``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import linregress

from gzipscale.analysis.fit import UnderdeterminedFit
from gzipscale.analysis.frontier import CHINCHILLA, compute_optimal
from gzipscale.analysis.law import EXPONENT_NAMES, LAW_NAMES, ScalingLaw
from gzipscale.vocabulary import FLOPS_PER_PARAM_TOKEN

MIN_DATASETS = 3
FRONTIER_FIELDS = ("N_opt", "D_opt", "tokens_per_parameter", "loss")
DEFAULT_COVARIATE = "gzip"
# The printed symbol of each covariate that has one (others print as their name).
COVARIATE_SYMBOLS = {"gzip": "H"}
# What a law needs of each parameter, as (test, the condition it breaks, in words).
_NEEDS = {
    "E": (lambda v: v >= 0, "< 0"),
    "A": (lambda v: v > 0, "<= 0"),
    "B": (lambda v: v > 0, "<= 0"),
    "alpha": (lambda v: v > 0, "<= 0"),
    "beta": (lambda v: v > 0, "<= 0"),
    "n_opt_exponent": (lambda v: 0 < v < 1, "outside (0, 1)"),
    "d_opt_exponent": (lambda v: 0 < v < 1, "outside (0, 1)"),
}


def _as_law(law: ScalingLaw | Mapping) -> ScalingLaw:
    return ScalingLaw.from_dict(law) if isinstance(law, Mapping) else law


def _law_values(law: ScalingLaw | Mapping) -> dict[str, float]:
    law = _as_law(law)
    return {k: float(getattr(law, k)) for k in LAW_NAMES}


def covariate_symbol(covariate: str) -> str:
    """How a covariate is written in messages: ``H`` for gzip, else its name."""
    return COVARIATE_SYMBOLS.get(covariate, covariate)


def law_problems(law: ScalingLaw | Mapping) -> dict[str, str]:
    """What makes ``law`` impossible, by parameter: ``{"B": "B = -3.1e+06 < 0", ...}``.

    A law needs E >= 0, A, B > 0 and alpha, beta > 0, so that its frontier exponents
    beta/(alpha+beta) and alpha/(alpha+beta) lie in (0, 1) (both exponents are flagged
    only when alpha and beta themselves pass, since otherwise they repeat that fault);
    every value must be finite.  Empty for a possible law.
    """
    law = _as_law(law)
    values = {k: float(getattr(law, k)) for k in LAW_NAMES}
    total = values["alpha"] + values["beta"]
    values["n_opt_exponent"] = values["beta"] / total if total != 0 else math.nan
    values["d_opt_exponent"] = values["alpha"] / total if total != 0 else math.nan
    problems = {}
    for key, (ok, broken) in _NEEDS.items():
        if key in EXPONENT_NAMES and {"alpha", "beta"} & set(problems):
            continue
        value = values[key]
        if not math.isfinite(value):
            problems[key] = f"{key} = {value} is not finite"
        elif not ok(value):
            problems[key] = f"{key} = {value:.4g} {broken}"
    return problems


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

    def root(self) -> float | None:
        """Where the line crosses zero (None for a log-scale term, which never does, or a
        flat or undefined line)."""
        if self.log_scale or not (math.isfinite(self.slope) and self.slope != 0):
            return None
        return -self.intercept / self.slope

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
class ParameterRegression:
    """Regressions of E, A, B, alpha, beta on one per-dataset covariate (Eq. 4; the paper's
    Table 3, whose covariate is gzip H).

    ``H`` holds the covariate's value per dataset, whatever the covariate (the name is kept
    for old callers and old dicts); ``covariate`` names it.
    """

    terms: dict[str, LinearTerm]
    H: list[float]
    names: list[str]
    laws: list[ScalingLaw]
    log_amplitudes: bool
    covariate: str = DEFAULT_COVARIATE

    @property
    def symbol(self) -> str:
        """The covariate as messages write it (``H`` for gzip)."""
        return covariate_symbol(self.covariate)

    @property
    def fitted_range(self) -> tuple[float, float]:
        """The lowest and highest covariate value the regression was fitted on."""
        return float(min(self.H)), float(max(self.H))

    def law_at(self, H: float) -> ScalingLaw:
        """Eq. 5 at one value H of the covariate (possibly an impossible law: see
        :meth:`problems_at`)."""
        return ScalingLaw(**{k: float(self.terms[k].at(H)) for k in LAW_NAMES})

    def problems_at(self, H: float) -> dict[str, str]:
        """What makes the regressed law at H impossible, by parameter (empty if none)."""
        return law_problems(self.law_at(H))

    def valid_at(self, H: float) -> bool:
        return not self.problems_at(H)

    @property
    def flags(self) -> dict[str, str]:
        """Every parameter (or frontier exponent) whose regressed value is impossible
        somewhere in the fitted range, with where: ``{"beta": "beta = -0.02 <= 0 at H =
        0.7 (its line crosses 0 at H = 0.65, inside the fitted range [0.3, 0.7])"}``."""
        lo, hi = self.fitted_range
        flags: dict[str, str] = {}
        for end in (lo, hi):
            for key, problem in self.problems_at(end).items():
                if key in flags:
                    continue
                where = f"{problem} at {self.symbol} = {end:.4g}"
                root = self.terms[key].root() if key in self.terms else None
                if root is not None and lo <= root <= hi:
                    where += (
                        f" (its line crosses 0 at {self.symbol} = {root:.4g}, inside the "
                        f"fitted range [{lo:.4g}, {hi:.4g}])"
                    )
                flags[key] = where
        return flags

    def to_dict(self) -> dict:
        """The regression as JSON-able values; ``flags`` is derived (from_dict recomputes
        it), written for readers of the JSON."""
        return {
            "covariate": self.covariate,
            "terms": {k: t.to_dict() for k, t in self.terms.items()},
            "H": [float(h) for h in self.H],
            "names": list(self.names),
            "laws": [law.to_dict() for law in self.laws],
            "log_amplitudes": bool(self.log_amplitudes),
            "flags": self.flags,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> ParameterRegression:
        """A regression from :meth:`to_dict`; a dict without ``covariate`` (written before
        there was a choice) is a regression on gzip H."""
        return cls(
            terms={k: LinearTerm.from_dict(t) for k, t in data["terms"].items()},
            H=[float(h) for h in data["H"]],
            names=list(data["names"]),
            laws=[ScalingLaw.from_dict(law) for law in data["laws"]],
            log_amplitudes=bool(data["log_amplitudes"]),
            covariate=str(data.get("covariate") or DEFAULT_COVARIATE),
        )


# The regression on gzip H is the case the paper makes; the name stays for its callers.
GzipRegression = ParameterRegression


def fit_regression(
    laws: Sequence,
    values: Sequence[float],
    names: Sequence[str] | None = None,
    *,
    covariate: str = DEFAULT_COVARIATE,
    log_amplitudes: bool = False,
) -> ParameterRegression:
    """Regress each fitted parameter linearly on a per-dataset covariate.

    Parameters
    ----------
    laws : sequence
        One fitted law per dataset: a :class:`~gzipscale.analysis.law.ScalingLaw`
        (a fit's is ``fit.law``) or a mapping with keys E, A, B, alpha, beta.
    values : sequence of float
        The covariate's value for each dataset (its gzip compressibility H, its floor, ...).
    names : sequence of str, optional
        Dataset labels (kept for reporting).
    covariate : str
        The covariate's name, recorded in the result (default ``"gzip"``).
    log_amplitudes : bool
        Regress log A and log B instead of A and B (default: raw, as the paper).

    Returns
    -------
    ParameterRegression
        Its :attr:`~ParameterRegression.flags` name every parameter whose line is impossible
        within the fitted range.

    Raises
    ------
    UnderdeterminedFit
        Fewer than 3 datasets, or fewer than 2 distinct values.
    ValueError
        Lengths differ, the covariate has no name, or a value or parameter is not finite
        (or A, B <= 0 with ``log_amplitudes``).
    """
    if not isinstance(covariate, str) or not covariate.strip():
        raise ValueError(f"the covariate needs a name such as 'gzip' or 'floor', got {covariate!r}")
    symbol = covariate_symbol(covariate)
    what = "gzip compressibility" if covariate == DEFAULT_COVARIATE else f"covariate {covariate}"
    laws = [_as_law(law) for law in laws]
    params = [_law_values(law) for law in laws]
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) != len(params):
        raise ValueError(
            f"need one {symbol} per law: got {len(params)} laws and {symbol} of shape {x.shape}"
        )
    if len(params) < MIN_DATASETS:
        raise UnderdeterminedFit(
            f"need at least {MIN_DATASETS} datasets to regress parameters on {symbol}, "
            f"got {len(params)}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{symbol} ({what}) must be finite, got {x.tolist()}")
    if len(np.unique(x)) < 2:
        raise UnderdeterminedFit(
            f"need at least 2 distinct {symbol} values to regress on {symbol}, "
            f"got {symbol}={x.tolist()}"
        )
    labels = list(names) if names is not None else [f"dataset_{i}" for i in range(len(params))]
    if len(labels) != len(params):
        raise ValueError(f"need one name per law: got {len(labels)} names, {len(params)} laws")

    terms = {}
    for key in LAW_NAMES:
        y = np.array([v[key] for v in params])
        log_scale = log_amplitudes and key in ("A", "B")
        if log_scale:
            if np.any(y <= 0):
                raise ValueError(f"log_amplitudes needs {key} > 0 for every dataset, got {y}")
            y = np.log(y)
        if not np.all(np.isfinite(y)):
            raise ValueError(f"parameter {key} must be finite for every dataset, got {y}")
        fit = linregress(x, y)
        terms[key] = LinearTerm(
            name=key,
            slope=float(fit.slope),
            intercept=float(fit.intercept),
            slope_stderr=float(fit.stderr),
            intercept_stderr=float(fit.intercept_stderr),
            pvalue=float(fit.pvalue),
            rvalue=float(fit.rvalue),
            r_squared=float(fit.rvalue**2),
            n=len(x),
            mean_h=float(x.mean()),
            log_scale=log_scale,
        )
    return ParameterRegression(
        terms=terms,
        H=x.tolist(),
        names=labels,
        laws=laws,
        log_amplitudes=log_amplitudes,
        covariate=covariate,
    )


def fit_gzip_regression(
    laws: Sequence,
    H: Sequence[float],
    names: Sequence[str] | None = None,
    *,
    log_amplitudes: bool = False,
) -> ParameterRegression:
    """Regress each fitted parameter linearly on gzip compressibility H: :func:`fit_regression`
    with ``covariate="gzip"`` (same parameters, result and errors)."""
    return fit_regression(
        laws, H, names, covariate=DEFAULT_COVARIATE, log_amplitudes=log_amplitudes
    )


def epsilon_adjusted_law(
    regression: ParameterRegression, H: float, epsilon: float, base=CHINCHILLA
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


def fit_epsilon(regression: ParameterRegression, N, D, H, L, base=CHINCHILLA) -> EpsilonFit:
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

    ``law`` is the point estimate: the regression lines at H (Eq. 5, or Eq. 6 with
    epsilon).  ``problems`` names what makes it impossible (empty for a possible law; see
    :func:`law_problems`); ``frontier`` is None for an impossible one.

    ``intervals`` holds (low, high) for E, A, B, alpha, beta and the frontier exponents;
    ``frontier_intervals`` holds, per field, a list of (low, high) per budget in ``C``.
    Both are percentile intervals over the ``n_valid`` possible draws only (the
    ``n_invalid`` others broke a need of :func:`law_problems`); with no possible draw they
    are empty.  ``outside_interval`` lists every quantity of a possible point law that lies
    outside its own interval (a frontier field when it does at any budget).
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
    problems: dict[str, str] = field(default_factory=dict)
    outside_interval: list[str] = field(default_factory=list)
    covariate: str = DEFAULT_COVARIATE

    @property
    def valid(self) -> bool:
        """Whether the point law is a possible law."""
        return not self.problems

    @property
    def n_valid(self) -> int:
        return self.n_samples - self.n_invalid

    def to_dict(self) -> dict:
        return {
            "covariate": self.covariate,
            "H": float(self.H),
            "epsilon": None if self.epsilon is None else float(self.epsilon),
            "law": self.law.to_dict(),
            "valid": self.valid,
            "problems": dict(self.problems),
            "intervals": {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()},
            "outside_interval": list(self.outside_interval),
            "frontier": None if self.frontier is None else self.frontier.to_dict(),
            "frontier_intervals": {
                k: [[float(lo), float(hi)] for lo, hi in v]
                for k, v in self.frontier_intervals.items()
            },
            "n_samples": int(self.n_samples),
            "n_valid": int(self.n_valid),
            "n_invalid": int(self.n_invalid),
            "level": float(self.level),
            "seed": self.seed,
        }


def _inside(value: float, lo_hi: tuple[float, float]) -> bool:
    """``value`` within ``[lo, hi]``, up to rounding (an exact regression's draws all equal
    the point, but through a different sum)."""
    lo, hi = lo_hi
    slack = 1e-9 * max(abs(lo), abs(hi), abs(value))
    return lo - slack <= value <= hi + slack


def predict_at_gzip(
    regression: ParameterRegression,
    H: float,
    *,
    C=None,
    epsilon: float | None = None,
    base=CHINCHILLA,
    n_samples: int = 2000,
    level: float = 0.95,
    seed: int | None = 0,
) -> GzipPrediction:
    """Predict the law at covariate value H (Eq. 5, or Eq. 6 with epsilon).

    Parameters
    ----------
    regression : ParameterRegression
    H : float
        The covariate's value for the target data (for gzip: its compressibility).
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
        Never raises for an impossible law: it says so (``problems``, ``n_invalid``,
        ``outside_interval``), and the caller decides what to show.
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
    problems = law_problems(law)
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
    with np.errstate(invalid="ignore"):  # NaN draws are invalid, not warnings
        valid = (
            (draws["E"] >= 0)
            & (draws["A"] > 0)
            & (draws["B"] > 0)
            & (draws["alpha"] > 0)
            & (draws["beta"] > 0)
            & np.all(np.isfinite(np.stack(list(draws.values()))), axis=0)
        )
    kept = {k: v[valid] for k, v in draws.items()}
    kept["n_opt_exponent"] = kept["beta"] / (kept["alpha"] + kept["beta"])
    kept["d_opt_exponent"] = kept["alpha"] / (kept["alpha"] + kept["beta"])
    tail = 100 * (1 - level) / 2
    intervals = {}
    if valid.any():
        intervals = {
            k: tuple(float(q) for q in np.percentile(v, [tail, 100 - tail]))
            for k, v in kept.items()
        }
    point = law.to_dict()
    outside = (
        [k for k, lo_hi in intervals.items() if not _inside(point[k], lo_hi)]
        if not problems
        else []
    )

    frontier = None
    frontier_intervals: dict[str, list[tuple[float, float]]] = {}
    if C is not None:
        C = np.atleast_1d(np.asarray(C, dtype=float))
        if not problems:
            frontier = compute_optimal(law, C)
        if valid.any():
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
                if frontier is not None and not all(
                    _inside(float(v), lo_hi)
                    for v, lo_hi in zip(
                        np.atleast_1d(getattr(frontier, k)), frontier_intervals[k], strict=True
                    )
                ):
                    outside.append(k)
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
        problems=problems,
        outside_interval=outside,
        covariate=regression.covariate,
    )
