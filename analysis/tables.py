"""The reports' tables, as DataFrames (written as CSV, rendered as Markdown by
:mod:`analysis.markdown`): the datasets (the paper's Table 1), the fitted laws (Table 2),
the regressions on H (Table 3, Eq. 4) and the compressibility of the grammar series.

Columns use the keys of :class:`~gzipscale.analysis.fitreport.DatasetFit`: a law
parameter ``k`` is ``k`` with its interval in ``k_lo``/``k_hi``; the bootstrap policy that
made the intervals is in ``bootstrap_resamples``, ``bootstrap_seed`` and ``interval_level``.
"""

from __future__ import annotations

import math

import pandas as pd

from gzipscale.analysis.fitreport import FitReport
from gzipscale.analysis.law import EXPONENT_NAMES, LAW_NAMES
from gzipscale.analysis.table import Points


def datasets_table(points: Points, report: FitReport) -> pd.DataFrame:
    """Table 1: per dataset its grammar, gzip H, finished and failed runs."""
    rows = []
    for name in points.all_names:
        H, _ = points.gzip(name)
        known, _ = points.floor(name)
        rows.append(
            {
                "dataset": name,
                "grammar": points.grammars.get(name, ""),
                "gzip_H": H if H is not None else points.all_gzip.get(name, math.nan),
                "floor": math.nan if known is None else known.nats_per_token,
                "floor_se": math.nan if known is None else known.stderr,
                "finished_runs": int((points.frame["dataset"] == name).sum()),
                "failed_runs": int(sum(points.excluded.get(name, {}).values())),
                "fitted": name in report.datasets,
            }
        )
    return pd.DataFrame(rows)


def fits_table(report: FitReport) -> pd.DataFrame:
    """Table 2: per fitted dataset and kind of fit (the one that drives first, then the
    comparison fit) the law and its frontier exponents with intervals, the bootstrap
    policy, the frontier at the report's budget, and whether the fit is identified (with
    the flags' sentences)."""
    rows = []
    for name in report.datasets:
        for d in report.fits_of(name).values():
            rows.append(_fit_row(report, name, d))
    return pd.DataFrame(rows)


def _fit_row(report: FitReport, name: str, d) -> dict:
    row = {
        "dataset": name,
        "fit": d.kind,
        "drives": d is report.datasets[name],
        "gzip_H": _nan(d.gzip),
        "floor": math.nan if d.floor is None else d.floor.nats_per_token,
        "floor_se": math.nan if d.floor is None else d.floor.stderr,
        "n_points": d.n_points,
        "left_at_floor": d.left_at_floor,
    }
    law = d.law.to_dict()
    for key in LAW_NAMES + EXPONENT_NAMES:
        lo, hi = d.interval(key) or (math.nan, math.nan)
        row.update({key: law[key], f"{key}_lo": lo, f"{key}_hi": hi})
    policy = d.bootstrap.policy if d.bootstrap else None
    row["bootstrap_resamples"] = policy.resamples if policy else 0
    row["bootstrap_seed"] = policy.seed if policy else math.nan
    row["interval_level"] = policy.level if policy else math.nan
    f = d.frontier
    row["budget_flops"] = report.budget
    row["N_opt"] = math.nan if f is None else float(f.N_opt)
    row["D_opt"] = math.nan if f is None else float(f.D_opt)
    row["tokens_per_parameter"] = math.nan if f is None else float(f.tokens_per_parameter)
    row["chinchilla_crossing_flops"] = _nan(d.chinchilla_crossing)
    row["rms_log_residual"] = d.rms_log_residual
    row["identified"] = d.identified
    row["flags"] = " | ".join(f.sentence for f in d.flags)
    return row


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def regression_table(regression) -> pd.DataFrame:
    """Table 3: each law parameter regressed on H (slope, intercept, errors, p, R²)."""
    rows = []
    for key, term in regression.terms.items():
        rows.append(
            {
                "parameter": f"log {key}" if term.log_scale else key,
                "slope": term.slope,
                "slope_stderr": term.slope_stderr,
                "intercept": term.intercept,
                "intercept_stderr": term.intercept_stderr,
                "pvalue": term.pvalue,
                "r_squared": term.r_squared,
                "n_datasets": term.n,
            }
        )
    return pd.DataFrame(rows)


def compressibility_frame(series: dict) -> pd.DataFrame:
    """The paper's Table 1 of H per grammar, from a ``gzipscale series --out`` table:
    series by series, each in the paper's order (a grammar in two series appears twice),
    with the floor (mean and sd over the seeds that have one) and lzma/bz2 H where the
    table records them (NaN otherwise)."""
    from gzipscale.grammars.series import PAPER_SERIES

    by_grammar = {r["grammar"]: r for r in series["rows"]}
    rows = []
    for name in series["series"]:
        for member in PAPER_SERIES[name]:
            r = by_grammar[member.grammar]
            rows.append(
                {
                    "series": name,
                    "grammar": r["grammar"],
                    "paper_H": r["paper_H"][name],
                    "H_mean": r["H_mean"],
                    "H_sd": r["H_sd"],
                    "H_min": r["H_min"],
                    "H_max": r["H_max"],
                    "seeds": len(r["seeds"]),
                    "p_finite_min": r["p_finite_min"],
                    "growth_rate_max": r["growth_rate_max"],
                    # A gzipscale-series/2 table adds the floor and two more compressors.
                    "floor_mean": _nan(r.get("floor_mean")),
                    "floor_sd": _nan(r.get("floor_sd")),
                    "floor_seeds": len(r.get("floor_seeds") or ()),
                    "lzma_mean": _nan(r.get("lzma_mean")),
                    "bz2_mean": _nan(r.get("bz2_mean")),
                }
            )
    return pd.DataFrame(rows)
