"""How well does a compressor predict a dataset's floor?

A ``gzipscale series`` table (format ``gzipscale-series/2``) records, per grammar and
seed, the dataset's H with three compressors (gzip, the paper's metric; lzma; bz2: the same
documents, bytes, normalisation and median, :func:`grammars.gzip_metric.compression_ratios`)
and its floor, the Bayes-optimal loss per predicted token (:mod:`grammars.floor`). If H
measures how hard the data is to predict, the floor should be close to a line in H.

For each compressor this module regresses the floor on H over every grammar x seed point
that has a floor (ordinary least squares) and reports:

* ``slope`` and ``intercept`` of the line (nats per token per unit H, nats per token);
* ``r_squared``: the fraction of the floor's variance across points the line explains;
* ``spearman``: the rank correlation of H and floor (does a higher H mean a higher floor,
  line or not);
* ``rms_error``: the root-mean-square error of predicting the floor from H with the line
  (in sample, nats per token), and ``loo_rms_error``, the same when each grammar's points
  are predicted by the line fitted without that grammar (leave one grammar out: the
  error on a grammar the line has not seen).

Intervals: the seeds of one grammar are not independent draws of the relation (they
share the grammar's shape), so the bootstrap resamples whole grammars with replacement,
each drawn grammar bringing all its seeds; the project's bootstrap policy
(:data:`~gzipscale.analysis.bootstrap.DEFAULT_POLICY`: resamples, seed, level) sets the
number of resamples, the random stream and the percentile intervals. The same draws serve
every compressor, so the differences to gzip (``differences``: R², Spearman and RMS error
of each other compressor minus gzip's) have paired intervals. A resample with fewer than
two distinct grammars cannot fit a line and is drawn again (``n_redrawn``).

Points whose floor was refused (a FloorError: the reason is recorded) are left out of the
regressions and listed in ``refused``; points without a floor (``--no-floor``) are left
out silently. Everything here is pure: no I/O, no Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from gzipscale.analysis.bootstrap import DEFAULT_POLICY, BootstrapPolicy
from gzipscale.helpers import InputError

FORMAT = "gzipscale-compressor-floor/1"
COMPRESSOR_NAMES = ("gzip", "lzma", "bz2")
STATISTICS = ("slope", "intercept", "r_squared", "spearman", "rms_error")
DIFFERENCES = ("r_squared", "spearman", "rms_error")  # other compressor minus gzip
MIN_GRAMMARS = 3


@dataclass(frozen=True)
class FloorPoint:
    """One grammar and seed: its floor and its H with each compressor."""

    grammar: str
    seed: int
    series: tuple[str, ...]  # the paper's series it belongs to (possibly several, or none)
    floor: float  # nats per predicted token
    floor_stderr: float
    H: dict[str, float]  # compressor -> median compression ratio over documents

    def to_dict(self) -> dict:
        return {
            "grammar": self.grammar,
            "seed": int(self.seed),
            "series": list(self.series),
            "floor": float(self.floor),
            "floor_stderr": float(self.floor_stderr),
            "H": {k: float(v) for k, v in self.H.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> FloorPoint:
        return cls(
            grammar=str(d["grammar"]),
            seed=int(d["seed"]),
            series=tuple(d["series"]),
            floor=float(d["floor"]),
            floor_stderr=float(d["floor_stderr"]),
            H={k: float(v) for k, v in d["H"].items()},
        )


@dataclass(frozen=True)
class RefusedPoint:
    """A grammar and seed whose floor was refused, with the reason."""

    grammar: str
    seed: int
    reason: str

    def to_dict(self) -> dict:
        return {"grammar": self.grammar, "seed": int(self.seed), "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping) -> RefusedPoint:
        return cls(str(d["grammar"]), int(d["seed"]), str(d["reason"]))


@dataclass(frozen=True)
class CompressorFit:
    """The floor regressed on one compressor's H (see the module docstring)."""

    compressor: str
    n_points: int
    n_grammars: int
    slope: float
    intercept: float
    r_squared: float
    spearman: float
    rms_error: float
    loo_rms_error: float
    intervals: dict[str, tuple[float, float]]  # STATISTICS -> percentile interval
    samples: np.ndarray = field(repr=False)  # (resamples, 2): bootstrap (slope, intercept)
    H_range: tuple[float, float] = (math.nan, math.nan)

    def value(self, name: str) -> float:
        return float(getattr(self, name))

    def interval(self, name: str) -> tuple[float, float] | None:
        return self.intervals.get(name)

    def predict(self, H) -> np.ndarray:
        """The line's floor at ``H``."""
        return self.intercept + self.slope * np.asarray(H, dtype=float)

    def band(self, H, level: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise percentile band of the bootstrap lines at ``H`` (None: no resamples)."""
        if not len(self.samples):
            return None
        h = np.asarray(H, dtype=float)
        lines = self.samples[:, 1:2] + self.samples[:, 0:1] * h[None, :]
        tail = 100 * (1 - level) / 2
        lo, hi = np.percentile(lines, [tail, 100 - tail], axis=0)
        return lo, hi

    def to_dict(self) -> dict:
        return {
            "compressor": self.compressor,
            "n_points": int(self.n_points),
            "n_grammars": int(self.n_grammars),
            **{k: float(getattr(self, k)) for k in STATISTICS},
            "loo_rms_error": float(self.loo_rms_error),
            "intervals": {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()},
            "H_range": [float(x) for x in self.H_range],
            "samples": [[float(a), float(b)] for a, b in self.samples],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> CompressorFit:
        return cls(
            compressor=str(d["compressor"]),
            n_points=int(d["n_points"]),
            n_grammars=int(d["n_grammars"]),
            **{k: float(d[k]) for k in STATISTICS},
            loo_rms_error=float(d["loo_rms_error"]),
            intervals={k: (float(lo), float(hi)) for k, (lo, hi) in d["intervals"].items()},
            samples=np.asarray(d["samples"], dtype=float).reshape(-1, 2),
            H_range=tuple(float(x) for x in d["H_range"]),
        )


@dataclass(frozen=True)
class CompressorFloorAnalysis:
    """Every compressor's fit, the points they were fitted on and the refused points."""

    fits: dict[str, CompressorFit]
    points: tuple[FloorPoint, ...]
    refused: tuple[RefusedPoint, ...]
    policy: BootstrapPolicy
    n_redrawn: int = 0
    # compressor (not gzip) -> statistic -> {"value": c minus gzip, "interval": [lo, hi]}
    differences: dict[str, dict[str, dict]] = field(default_factory=dict)

    @property
    def compressors(self) -> tuple[str, ...]:
        return tuple(self.fits)

    @property
    def grammars(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.grammar for p in self.points))

    def refused_grammars(self) -> dict[str, list[RefusedPoint]]:
        """Refused points by grammar, in the order they came."""
        out: dict[str, list[RefusedPoint]] = {}
        for r in self.refused:
            out.setdefault(r.grammar, []).append(r)
        return out

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "policy": self.policy.to_dict(),
            "n_redrawn": int(self.n_redrawn),
            "fits": {k: f.to_dict() for k, f in self.fits.items()},
            "differences": {
                c: {k: _difference_dict(v) for k, v in stats.items()}
                for c, stats in self.differences.items()
            },
            "points": [p.to_dict() for p in self.points],
            "refused": [r.to_dict() for r in self.refused],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> CompressorFloorAnalysis:
        if d.get("format") != FORMAT:
            raise InputError(f"not a compressor-floor analysis (field 'format' must be {FORMAT!r})")
        return cls(
            fits={k: CompressorFit.from_dict(f) for k, f in d["fits"].items()},
            points=tuple(FloorPoint.from_dict(p) for p in d["points"]),
            refused=tuple(RefusedPoint.from_dict(r) for r in d["refused"]),
            policy=BootstrapPolicy.from_dict(d["policy"]),
            n_redrawn=int(d["n_redrawn"]),
            differences={
                c: {k: _difference_dict(v, tuple) for k, v in stats.items()}
                for c, stats in d["differences"].items()
            },
        )


def _difference_dict(v: Mapping, kind=list) -> dict:
    ci = v["interval"]
    return {
        "value": float(v["value"]),
        "interval": None if ci is None else kind(float(x) for x in ci),
    }


# -- points -------------------------------------------------------------------------------


def series_of_grammar(series: Sequence[str] | None = None) -> dict[str, tuple[str, ...]]:
    """Each grammar of the paper's series -> the series (among ``series``) it belongs to."""
    from gzipscale.grammars.series import PAPER_SERIES

    names = list(PAPER_SERIES) if series is None else list(series)
    out: dict[str, tuple[str, ...]] = {}
    for name in names:
        for member in PAPER_SERIES.get(name, ()):
            out[member.grammar] = out.get(member.grammar, ()) + (name,)
    return out


def floor_points(
    scores: Sequence[Mapping],
    compressors: Sequence[str] = COMPRESSOR_NAMES,
    series_of: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[tuple[FloorPoint, ...], tuple[RefusedPoint, ...]]:
    """The regression's points from a table's per-(grammar, seed) scores (dicts in the
    ``gzipscale-series/2`` layout), and the refused ones.

    Raises InputError when a score with a floor lacks a compressor's H (a
    ``gzipscale-series/1`` table has neither floors nor lzma/bz2).
    """
    from gzipscale.grammars.series import floor_nats, score_H

    series_of = series_of_grammar() if series_of is None else series_of
    points, refused = [], []
    for s in scores:
        floor = s.get("floor")
        if not floor:
            continue
        if "error" in floor:
            refused.append(RefusedPoint(s["grammar"], int(s["seed"]), str(floor["error"])))
            continue
        H = {}
        for c in compressors:
            h = score_H(s, c)
            if h is None:
                raise InputError(
                    f"score {s['grammar']} seed {s['seed']} has no {c} H; score the series "
                    "again with `gzipscale series` (format gzipscale-series/2)"
                )
            H[c] = float(h)
        points.append(
            FloorPoint(
                grammar=s["grammar"],
                seed=int(s["seed"]),
                series=tuple(series_of.get(s["grammar"], ())),
                floor=floor_nats(floor),
                floor_stderr=float(floor.get("stderr", math.nan)),
                H=H,
            )
        )
    return tuple(points), tuple(refused)


# -- the regression -----------------------------------------------------------------------


def line_statistics(h: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """OLS of y on h: slope, intercept, R², Spearman rank correlation and RMS residual."""
    h, y = np.asarray(h, dtype=float), np.asarray(y, dtype=float)
    hc, yc = h - h.mean(), y - y.mean()
    sxx = float(hc @ hc)
    if not sxx > 0:
        raise InputError("H takes one value only: no line can be fitted")
    slope = float(hc @ yc) / sxx
    intercept = float(y.mean() - slope * h.mean())
    resid = y - (intercept + slope * h)
    ss_res, ss_tot = float(resid @ resid), float(yc @ yc)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = spearmanr(h, y).statistic if ss_tot > 0 else math.nan
    return {
        "slope": slope,
        "intercept": intercept,
        "r_squared": 1 - ss_res / ss_tot if ss_tot > 0 else math.nan,
        "spearman": float(rho),
        "rms_error": math.sqrt(ss_res / len(y)),
    }


def _loo_rms(h: np.ndarray, y: np.ndarray, codes: np.ndarray, n_groups: int) -> float:
    """RMS error of predicting each grammar's points from the line fitted without it."""
    errors = np.empty_like(y)
    for g in range(n_groups):
        out = codes == g
        fit = line_statistics(h[~out], y[~out])
        errors[out] = y[out] - (fit["intercept"] + fit["slope"] * h[out])
    return float(np.sqrt(np.mean(errors**2)))


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def _draws(
    h_all: dict[str, np.ndarray], groups: list[np.ndarray], policy: BootstrapPolicy
) -> tuple[list[np.ndarray], int]:
    """``policy.resamples`` resamples of whole grammars (point indices), the same for every
    compressor; a draw whose H is constant for some compressor is drawn again."""
    rng = np.random.default_rng(policy.seed)
    n = len(groups)
    draws, redrawn = [], 0
    while len(draws) < policy.resamples:
        picked = rng.integers(0, n, n)
        idx = np.concatenate([groups[g] for g in picked])
        if len(set(picked.tolist())) < 2 or any(np.ptp(h[idx]) == 0 for h in h_all.values()):
            redrawn += 1
            if redrawn > 100 * max(policy.resamples, 1):
                raise InputError("too few distinct grammars to bootstrap the regression")
            continue
        draws.append(idx)
    return draws, redrawn


def analyse_compressors(
    scores: Sequence[Mapping],
    *,
    compressors: Sequence[str] = COMPRESSOR_NAMES,
    policy: BootstrapPolicy = DEFAULT_POLICY,
    series_of: Mapping[str, tuple[str, ...]] | None = None,
) -> CompressorFloorAnalysis:
    """Regress the floor on each compressor's H over every grammar x seed with a floor.

    ``scores``: the per-(grammar, seed) score dicts of a ``gzipscale-series/2`` table (its
    ``scores``), or anything with the same keys (``grammar``, ``seed``, ``median`` and
    ``<compressor>_median``, ``floor``). Raises InputError with fewer than
    :data:`MIN_GRAMMARS` grammars that have a floor.
    """
    compressors = tuple(compressors)
    if not compressors:
        raise InputError("name at least one compressor")
    points, refused = floor_points(scores, compressors, series_of)
    names = list(dict.fromkeys(p.grammar for p in points))
    if len(names) < MIN_GRAMMARS:
        detail = f" ({len(refused)} refused)" if refused else ""
        raise InputError(
            f"need floors of at least {MIN_GRAMMARS} grammars to regress the floor on H, got "
            f"{len(names)}{detail}; run `gzipscale series` without --no-floor"
        )
    codes = np.array([names.index(p.grammar) for p in points])
    groups = [np.flatnonzero(codes == g) for g in range(len(names))]
    y = np.array([p.floor for p in points])
    h_all = {c: np.array([p.H[c] for p in points]) for c in compressors}
    draws, redrawn = _draws(h_all, groups, policy)

    fits: dict[str, CompressorFit] = {}
    boot: dict[str, dict[str, np.ndarray]] = {}
    for c in compressors:
        h = h_all[c]
        point = line_statistics(h, y)
        stats = [line_statistics(h[idx], y[idx]) for idx in draws]
        boot[c] = {k: np.array([s[k] for s in stats]) for k in STATISTICS}
        intervals = {k: _percentile(boot[c][k], policy.level) for k in STATISTICS} if draws else {}
        samples = (
            np.column_stack([boot[c]["slope"], boot[c]["intercept"]]) if draws else np.zeros((0, 2))
        )
        fits[c] = CompressorFit(
            compressor=c,
            n_points=len(points),
            n_grammars=len(names),
            **point,
            loo_rms_error=_loo_rms(h, y, codes, len(names)),
            intervals=intervals,
            samples=samples,
            H_range=(float(h.min()), float(h.max())),
        )
    differences: dict[str, dict[str, dict]] = {}
    if "gzip" in fits:
        for c in compressors:
            if c == "gzip":
                continue
            differences[c] = {
                k: {
                    "value": fits[c].value(k) - fits["gzip"].value(k),
                    "interval": _percentile(boot[c][k] - boot["gzip"][k], policy.level)
                    if draws
                    else None,
                }
                for k in DIFFERENCES
            }
    return CompressorFloorAnalysis(
        fits=fits,
        points=points,
        refused=refused,
        policy=policy,
        n_redrawn=redrawn,
        differences=differences,
    )


def analyse_table(
    table: Mapping,
    *,
    compressors: Sequence[str] = COMPRESSOR_NAMES,
    policy: BootstrapPolicy = DEFAULT_POLICY,
) -> CompressorFloorAnalysis:
    """:func:`analyse_compressors` of a ``gzipscale series --out`` table (as
    :func:`grammars.series.read_table` returns it); a ``/1`` table has no floors and is
    refused with a message saying so."""
    if table.get("format") == "gzipscale-series/1":
        raise InputError(
            "a gzipscale-series/1 table has no floors and no lzma/bz2 H; write a /2 table with "
            "`gzipscale series --out FILE`"
        )
    return analyse_compressors(
        table["scores"],
        compressors=compressors,
        policy=policy,
        series_of=series_of_grammar(table.get("series")),
    )


def summary_lines(analysis: CompressorFloorAnalysis) -> list[str]:
    """One line per compressor: each statistic with its interval; then the differences."""
    lines = [
        f"floor regressed on H over {len(analysis.points)} points; {analysis.policy.describe()}"
    ]
    for c, f in analysis.fits.items():
        parts = []
        for k in STATISTICS:
            ci = f.interval(k)
            parts.append(f"{k} {f.value(k):.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""))
        lines.append(f"{c}: " + ", ".join(parts) + f", loo_rms_error {f.loo_rms_error:.4g}")
    for c, stats in analysis.differences.items():
        parts = [
            f"{k} {v['value']:+.4g}"
            + (f" [{v['interval'][0]:+.4g}, {v['interval'][1]:+.4g}]" if v["interval"] else "")
            for k, v in stats.items()
        ]
        lines.append(f"{c} minus gzip: " + ", ".join(parts))
    return lines
