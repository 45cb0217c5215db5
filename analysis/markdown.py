"""Markdown shared by ``gzipscale report`` and the reproduction report: pipe tables of the
:mod:`analysis.tables` frames, the fit table's columns, and the sections both reports
have (notes from the fits, the regression on H).
"""

from __future__ import annotations

import math

import pandas as pd

from gzipscale.analysis.fitreport import FitReport
from gzipscale.analysis.law import LAW_NAMES
from gzipscale.analysis.regression import MIN_DATASETS
from gzipscale.vocabulary import FLOOR_FIT, FREE_FIT

SYMBOLS = {"alpha": "α", "beta": "β", "n_opt_exponent": "a"}


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def markdown_table(frame: pd.DataFrame, columns: list) -> str:
    """A pipe table of ``(header, column, format)``; a format of None means
    'value [lo, hi]' from the column's ``_lo``/``_hi`` columns."""
    head = "| " + " | ".join(c[0] for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, rule]
    for _, row in frame.iterrows():
        cells = []
        for _, key, spec in columns:
            if spec is None:
                cells.append(_estimate_cell(row, key))
            else:
                cells.append(spec(row[key]).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _estimate_cell(row, key: str) -> str:
    value, lo, hi = row[key], row[f"{key}_lo"], row[f"{key}_hi"]
    if math.isnan(lo):
        return fmt(value, ".4g")
    return f"{value:.4g} [{lo:.4g}, {hi:.4g}]"


def _crossing(value: float) -> str:
    return "never (parallel)" if math.isnan(value) else f"{value:.3g}"


def fits_columns(budget: float) -> list:
    """The columns of the fit table (:func:`analysis.tables.fits_table`) in Markdown."""
    columns = [
        ("dataset", "dataset", str),
        ("fit", "fit", lambda v: FIT_LABELS.get(v, v)),
        ("H", "gzip_H", lambda v: fmt(v, ".4f")),
        ("points", "n_points", str),
    ]
    for key in (*LAW_NAMES, "n_opt_exponent"):
        columns.append((SYMBOLS.get(key, key), key, None))
    columns += [
        (f"tokens/param at {budget:.0e}", "tokens_per_parameter", lambda v: fmt(v, ".3g")),
        ("crosses Chinchilla at C", "chinchilla_crossing_flops", _crossing),
        ("RMS log resid.", "rms_log_residual", lambda v: fmt(v, ".3f")),
        ("identified", "identified", lambda v: "yes" if v else "**no** (see the flags)"),
    ]
    return columns


FIT_LABELS = {FLOOR_FIT: "E = floor", FREE_FIT: "free"}


def intervals_label(report: FitReport) -> str:
    """What the fit table's brackets are: the bootstrap policy that made them."""
    if not report.policy.resamples:
        return "point estimates (no intervals: --bootstrap 0)"
    missing = [n for n, d in report.datasets.items() if d.intervals is None]
    label = f"estimates [{report.policy.describe()}]"
    if missing:
        label += f" (no intervals for {', '.join(missing)}: see the notes)"
    return label


def identification_section(report: FitReport) -> str:
    """Every fit's identification flags as bullets, the driving fit's first (empty if no
    fit raises one)."""
    lines = []
    for name in report.datasets:
        for d in report.fits_of(name).values():
            for flag in d.flags:
                lines.append(f"- **{name}** ({FIT_LABELS[d.kind]} fit): {flag.sentence}")
        if name in report.comparison_skipped:
            lines.append(f"- **{name}**: no comparison fit: {report.comparison_skipped[name]}")
    if not lines:
        return "Every fit is identified: no flag is raised."
    return (
        "A fit is a finding only when its runs identify it.  Flags (runs at the floor; an "
        "exponent whose interval includes 0 or spans more than a factor of 3; RMS log "
        "residual above 0.05; a free E below the floor):\n\n" + "\n".join(lines)
    )


def fit_notes(report: FitReport, intro: str, skipped: bool = True) -> str:
    """The fits' warnings, and unless ``skipped`` is False the skipped datasets, one bullet
    each (empty if none)."""
    notes = [f"- {n}: {w}" for n, d in report.datasets.items() for w in d.warnings]
    skipped = [f"- {n}: not fitted: {r}" for n, r in report.skipped.items()] if skipped else []
    if not notes and not skipped:
        return ""
    return intro + "\n\n" + "\n".join(notes + skipped)


def regression_section(frame: pd.DataFrame | None, report: FitReport, absent: str = "") -> str:
    """Table 3 in Markdown, or why there is none (``absent`` adds what is missing then)."""
    if frame is None:
        return f"Not made: {report.regression_note}{absent}."
    columns = [
        ("parameter", "parameter", str),
        ("slope", "slope", lambda v: f"{v:.4g}"),
        ("± stderr", "slope_stderr", lambda v: f"{v:.2g}"),
        ("intercept", "intercept", lambda v: f"{v:.4g}"),
        ("± stderr", "intercept_stderr", lambda v: f"{v:.2g}"),
        ("p-value", "pvalue", lambda v: f"{v:.2g}"),
        ("R²", "r_squared", lambda v: f"{v:.3f}"),
    ]
    n = int(frame["n_datasets"].iloc[0])
    caution = (
        " With 3 datasets each line has one residual degree of freedom: read the p-values as rough."
        if n == MIN_DATASETS
        else ""
    )
    notes = regression_notes(report.regression, report) if report.regression else []
    return (
        f"Ordinary least squares of each parameter on H over {n} datasets.{caution}\n\n"
        + markdown_table(frame, columns)
        + ("\n\n" + "\n".join(notes) if notes else "")
    )


def regression_notes(reg, report: FitReport) -> list[str]:
    """Bullets for a regression: lines impossible within the fitted range, and the fits
    behind it that are not identified."""
    notes = [f"- impossible: {where}" for where in reg.flags.values()]
    unidentified = [n for n in reg.names if n in report.datasets and report.datasets[n].flags]
    if unidentified:
        notes.append(
            f"- not a finding: {len(unidentified)} of {len(reg.names)} fits behind it are not "
            f"identified ({', '.join(unidentified)}); its coefficients inherit that."
        )
    return notes


def floor_regression_section(frame: pd.DataFrame | None, report: FitReport) -> str:
    """The parameters regressed on the floor in Markdown, or why there is none."""
    if frame is None:
        return f"Not made: {report.floor_regression_note}."
    without_gzip_notes = FitReport(
        report.datasets, report.skipped, None, None, report.policy, report.budget
    )
    text = regression_section(frame, without_gzip_notes).replace(
        " on H over ", " on the floor over "
    )
    notes = regression_notes(report.floor_regression, report)
    if report.law_choice == FLOOR_FIT:
        notes.append("- E is the floor in a floor-anchored fit, so E's line is the identity.")
    return text + ("\n\n" + "\n".join(notes) if notes else "")
