"""``gzipscale fit``: fits of a results table, from the command line.

The arguments are declared in ``gzipscale/cli.py``; this module does the work.  The
command builds one record -- a :class:`~gzipscale.analysis.fitreport.FitReport` -- prints
it as JSON with ``--json`` and renders the same record as rich tables otherwise, so the two
outputs cannot disagree.  Bad input raises a :class:`~gzipscale.helpers.UserError` with a
message meant for the user.  ``gzipscale predict`` is in
:mod:`gzipscale.analysis.predict_command`, which shares ``LABELS`` and the number formats.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gzipscale.analysis.bootstrap import DEFAULT_POLICY, BootstrapPolicy
from gzipscale.analysis.fitreport import FitReport, fit_datasets
from gzipscale.analysis.law import EXPONENT_NAMES, LAW_NAMES
from gzipscale.analysis.table import load_points
from gzipscale.helpers import InputError, Progress, console, json_safe
from gzipscale.vocabulary import DEFAULT_LAW_CHOICE, FLOOR_FIT, FREE_FIT, REFERENCE_BUDGET

# How the rendered tables label each key of a law.
LABELS = {
    "E": "E",
    "A": "A",
    "B": "B",
    "alpha": "α",
    "beta": "β",
    "n_opt_exponent": "a = β/(α+β) (N_opt ∝ C^a)",
    "d_opt_exponent": "b = α/(α+β) (D_opt ∝ C^b)",
}


def _num(value, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def _interval(lo_hi) -> str:
    if lo_hi is None:
        return "-"
    return f"[{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]"


# -- gzipscale fit ---------------------------------------------------------------------


def fit_report(
    path: str | Path,
    *,
    policy: BootstrapPolicy = DEFAULT_POLICY,
    budget: float = REFERENCE_BUDGET,
    progress=None,
    law_choice: str = DEFAULT_LAW_CHOICE,
) -> FitReport:
    """Every dataset of the table at ``path`` fitted: what ``gzipscale fit`` prints."""
    return fit_datasets(
        load_points(path), policy=policy, budget=budget, progress=progress, law_choice=law_choice
    )


KIND_TITLES = {FLOOR_FIT: "E at the floor", FREE_FIT: "free (paper)"}


def render_fit(report: FitReport, out) -> None:
    """Print a fit report as rich tables: per dataset its law(s) with intervals (the
    bootstrap policy in the title), the floor-anchored fit beside the free one where the
    dataset has a floor, the frontier of the fit that drives it, and every identification
    flag as a sentence; then skipped datasets and the regression."""
    from rich.table import Table

    for name, d in report.datasets.items():
        fits = report.fits_of(name)
        kinds = [d.kind, *(k for k in fits if k != d.kind)]
        facts = [f"{d.n_points} points fitted"]
        if d.gzip is not None:
            facts.append(f"H = {d.gzip:.4f}")
        if d.floor is not None:
            facts.append(f"floor = {d.floor.nats_per_token:.4f} ± {d.floor.stderr:.4f}")
        policy = d.bootstrap.policy if d.bootstrap else BootstrapPolicy(resamples=0)
        table = Table(
            title=f"{name}: L = E + A/N^α + B/D^β ({', '.join(facts)})",
            caption=f"intervals: {policy.describe()}",
        )
        table.add_column("quantity")
        for kind in kinds:
            drives = " (drives)" if kind == d.kind and len(kinds) > 1 else ""
            table.add_column(f"{KIND_TITLES[kind]}{drives}", justify="right")
            table.add_column("interval", justify="right")
        for key in LAW_NAMES + EXPONENT_NAMES:
            cells = []
            for kind in kinds:
                fit = fits[kind]
                if key == "E" and kind == FLOOR_FIT:
                    cells += [_num(fit.law.E), "(the floor)"]
                else:
                    cells += [_num(fit.law.to_dict()[key]), _interval(fit.interval(key))]
            table.add_row(LABELS[key], *cells)
        table.add_row(
            "RMS log residual",
            *[c for k in kinds for c in (_num(fits[k].rms_log_residual, ".3f"), "")],
        )
        f = d.frontier
        pad = [""] * (2 * len(kinds) - 1)
        if f is not None and not d.identified:
            # A frontier is a function of alpha and beta; from an unidentified law it is
            # not a finding, so it is not shown as one (--json still carries it).
            table.add_row("compute-optimal frontier", "not shown: law not identified", *pad)
        elif f is not None:
            budget = f"{float(f.C):.3g}"
            table.add_row(f"N_opt at C={budget}", _num(float(f.N_opt), ".3e"), *pad)
            table.add_row(f"D_opt at C={budget}", _num(float(f.D_opt), ".3e"), *pad)
            table.add_row("tokens per parameter", _num(float(f.tokens_per_parameter), ".3g"), *pad)
            table.add_row("crosses Chinchilla at C", _num(d.chinchilla_crossing, ".3e"), *pad)
        out.print(table)
        for kind in kinds:
            fit = fits[kind]
            if fit.identified:
                out.print(f"  [green]{KIND_TITLES[kind]}: identified[/] (no flag raised)")
            for flag in fit.flags:
                out.print(f"  [red]{KIND_TITLES[kind]}: not identified:[/] {flag.sentence}")
        if name in report.comparison_skipped:
            out.print(f"  [yellow]no comparison fit:[/] {report.comparison_skipped[name]}")
        for note in d.warnings:
            out.print(f"  [yellow]warning:[/] {note}")
    for name, reason in report.skipped.items():
        out.print(f"[bold]skipped[/] {name}: {reason}")
        other = report.comparison.get(name)
        if other is not None:  # the kind that drives could not be made; the other was
            law = ", ".join(
                f"{LABELS[k]}={_num(v)}" for k, v in other.law.to_dict().items() if k in LAW_NAMES
            )
            out.print(f"  {KIND_TITLES[other.kind]} fit instead (does not drive): {law}")
            out.print(f"  {KIND_TITLES[other.kind]}: {other.verdict}")
    for reg, note, label in (
        (report.regression, report.regression_note, "gzip H"),
        (report.floor_regression, report.floor_regression_note, "the floor"),
    ):
        if reg is None:
            if note:
                out.print(note)
            continue
        table = Table(
            title=f"parameters regressed on {label} ({len(reg.H)} datasets, "
            f"{KIND_TITLES[report.law_choice]} fits where a floor is known)"
        )
        for col in ("parameter", "slope", "± stderr", "intercept", "± stderr", "p-value", "R²"):
            table.add_column(col, justify="left" if col == "parameter" else "right")
        for key, t in reg.terms.items():
            table.add_row(
                f"log {key}" if t.log_scale else key,
                _num(t.slope),
                _num(t.slope_stderr, ".2g"),
                _num(t.intercept),
                _num(t.intercept_stderr, ".2g"),
                _num(t.pvalue, ".2g"),
                _num(t.r_squared, ".3f"),
            )
        out.print(table)
        for where in reg.flags.values():
            out.print(f"  [red]impossible:[/] {where}")
        unidentified = [n for n in reg.names if n in report.datasets and report.datasets[n].flags]
        if unidentified:
            out.print(
                f"  [red]not a finding:[/] {len(unidentified)} of {len(reg.names)} fits behind "
                f"this regression are not identified ({', '.join(unidentified)}); its "
                "coefficients inherit that."
            )


def cmd_fit(args: argparse.Namespace) -> int:
    policy = BootstrapPolicy(resamples=args.bootstrap, seed=args.seed)
    with Progress("fitting", unit="datasets") as progress:
        report = fit_report(
            args.path,
            policy=policy,
            budget=args.budget,
            progress=progress,
            law_choice=args.law,
        )
    if not report.datasets and not report.skipped:
        raise InputError(f"{args.path}: no rows to fit")
    if args.json:
        print(json.dumps(json_safe(report.to_dict()), indent=2, allow_nan=False))
    else:
        render_fit(report, console(stderr=False))
    # Nothing fitted is a failure; some datasets skipped is a report.
    return 0 if report.datasets else 1
