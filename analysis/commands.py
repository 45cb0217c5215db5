"""``gzipscale fit`` and ``gzipscale predict``: fits of a results table, from the command line.

The arguments are declared in ``gzipscale/cli.py``; this module does the work.  Each
command builds one record -- a :class:`~gzipscale.analysis.fitreport.FitReport`, or the
prediction's dict -- prints it as JSON with ``--json`` and renders the same record as rich
tables otherwise, so the two outputs cannot disagree.  Bad input raises a
:class:`~gzipscale.helpers.UserError` with a message meant for the user.
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
from gzipscale.vocabulary import DEFAULT_CONTEXT_LENGTH, REFERENCE_BUDGET

TOKEN_KINDS = ("pcfg", "tokens")
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
) -> FitReport:
    """Every dataset of the table at ``path`` fitted: what ``gzipscale fit`` prints."""
    return fit_datasets(load_points(path), policy=policy, budget=budget, progress=progress)


def render_fit(report: FitReport, out) -> None:
    """Print a fit report as rich tables: per dataset its law with intervals (the bootstrap
    policy in the column's title) and frontier; then skipped datasets and the regression."""
    from rich.table import Table

    for name, d in report.datasets.items():
        gzip = "" if d.gzip is None else f", H = {d.gzip:.4f}"
        table = Table(title=f"{name}: L = E + A/N^α + B/D^β ({d.n_points} points{gzip})")
        table.add_column("quantity")
        table.add_column("estimate", justify="right")
        policy = d.bootstrap.policy if d.bootstrap else BootstrapPolicy(resamples=0)
        table.add_column(policy.describe(), justify="right")
        law = d.law.to_dict()
        for key in LAW_NAMES + EXPONENT_NAMES:
            table.add_row(LABELS[key], _num(law[key]), _interval(d.interval(key)))
        f = d.frontier
        if f is not None:
            budget = f"{float(f.C):.3g}"
            table.add_row(f"N_opt at C={budget}", _num(float(f.N_opt), ".3e"), "")
            table.add_row(f"D_opt at C={budget}", _num(float(f.D_opt), ".3e"), "")
            table.add_row("tokens per parameter", _num(float(f.tokens_per_parameter), ".3g"), "")
            table.add_row("crosses Chinchilla at C", _num(d.chinchilla_crossing, ".3e"), "")
        out.print(table)
        for note in d.warnings:
            out.print(f"  [yellow]warning:[/] {note}")
    for name, reason in report.skipped.items():
        out.print(f"[bold]skipped[/] {name}: {reason}")
    reg = report.regression
    if reg is not None:
        table = Table(title=f"parameters regressed on gzip H ({len(reg.H)} datasets)")
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
    elif report.regression_note:
        out.print(report.regression_note)


def cmd_fit(args: argparse.Namespace) -> int:
    policy = BootstrapPolicy(resamples=args.bootstrap, seed=args.seed)
    with Progress("fitting", unit="datasets") as progress:
        report = fit_report(args.path, policy=policy, budget=args.budget, progress=progress)
    if not report.datasets and not report.skipped:
        raise InputError(f"{args.path}: no rows to fit")
    if args.json:
        print(json.dumps(json_safe(report.to_dict()), indent=2, allow_nan=False))
    else:
        render_fit(report, console(stderr=False))
    # Nothing fitted is a failure; some datasets skipped is a report.
    return 0 if report.datasets else 1


# -- gzipscale predict -----------------------------------------------------------------


def score_corpus(path, *, text: bool, context_length: int):
    """The corpus's gzip score to predict from: token-level unless ``text``."""
    from gzipscale.grammars.corpora import score_path

    scores = score_path(path, text=text, context_length=context_length)
    wanted = ("text",) if text else TOKEN_KINDS
    for score in scores:
        if score.kind in wanted:
            return score
    kinds = ", ".join(s.kind for s in scores)
    hint = "" if text else "; pass --text to predict from its text score"
    raise InputError(f"{path}: scored as {kinds}, none of kind {' or '.join(wanted)}{hint}")


def _draws(prediction) -> str:
    return (
        f"{100 * prediction.level:.0f}% interval, {prediction.n_samples} draws of the "
        f"regression coefficients, seed {prediction.seed}"
    )


def predict_report(
    corpus,
    source,
    *,
    budget: float,
    text: bool = False,
    seed: int = DEFAULT_POLICY.seed,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
) -> dict:
    """What ``gzipscale predict --json`` prints, as a dict."""
    from gzipscale.analysis.regression import predict_at_gzip

    score = score_corpus(corpus, text=text, context_length=context_length)
    H = float(score.stats.median)
    # The prediction's intervals come from the regression, not from each fit's bootstrap.
    report = fit_report(source, policy=BootstrapPolicy(resamples=0, seed=seed), budget=budget)
    regression = report.regression
    if regression is None:
        skipped = "; ".join(f"{n}: {r}" for n, r in report.skipped.items())
        raise InputError(
            f"{source}: cannot predict: {report.regression_note}"
            + (f"; skipped: {skipped}" if skipped else "")
        )
    prediction = predict_at_gzip(regression, H, C=[budget], seed=seed)
    warnings = []
    lo, hi = min(regression.H), max(regression.H)
    if not lo <= H <= hi:
        warnings.append(
            f"H = {H:.4f} is outside the fitted datasets' range [{lo:.4f}, {hi:.4f}]; "
            "the prediction extrapolates the linear regression"
        )
    if prediction.n_invalid:
        warnings.append(
            f"{prediction.n_invalid} of {prediction.n_samples} regression draws gave no "
            "valid law (A, B, alpha or beta <= 0) and were left out of the intervals"
        )
    frontier = None
    if prediction.frontier is not None:
        f = prediction.frontier
        frontier = {
            "C": budget,
            "N_opt": float(f.N_opt[0]),
            "D_opt": float(f.D_opt[0]),
            "tokens_per_parameter": float(f.tokens_per_parameter[0]),
            "loss": float(f.loss[0]),
            "intervals": {k: list(v[0]) for k, v in prediction.frontier_intervals.items()},
        }
    else:
        warnings.append("the predicted law has a non-positive parameter: no frontier")
    return {
        "corpus": {
            "path": str(corpus),
            "name": score.name,
            "kind": score.kind,
            "H": H,
            "documents": score.stats.n,
        },
        "budget": budget,
        "law": prediction.law.to_dict(),
        "intervals": {k: list(v) for k, v in prediction.intervals.items()},
        "interval": _draws(prediction),
        "frontier": frontier,
        "regression": regression.to_dict(),
        "datasets": {
            n: {"law": d.law.to_dict(), "gzip": d.gzip, "n_points": d.n_points}
            for n, d in report.datasets.items()
        },
        "skipped": report.skipped,
        "warnings": warnings,
    }


def render_prediction(report: dict, out) -> None:
    from rich.table import Table

    c = report["corpus"]
    law = report["law"]
    out.print(f"[bold]{c['name']}[/] ({c['kind']}, {c['documents']:,} documents): H = {c['H']:.4f}")
    out.print(
        f"L(N, D) = {law['E']:.4g} + {law['A']:.4g}/N^{law['alpha']:.4g} "
        f"+ {law['B']:.4g}/D^{law['beta']:.4g}"
    )
    table = Table(
        title=f"law predicted at H = {c['H']:.4f} from {len(report['datasets'])} datasets"
    )
    table.add_column("quantity")
    table.add_column("estimate", justify="right")
    table.add_column(report["interval"], justify="right")
    for key in LAW_NAMES + EXPONENT_NAMES:
        table.add_row(LABELS[key], _num(law[key]), _interval(report["intervals"].get(key)))
    f = report["frontier"]
    if f is not None:
        budget = f"{report['budget']:.3g}"
        intervals = f["intervals"]
        for key, label, spec in (
            ("N_opt", f"N_opt at C={budget}", ".3e"),
            ("D_opt", f"D_opt at C={budget}", ".3e"),
            ("tokens_per_parameter", "tokens per parameter", ".3g"),
            ("loss", "loss at optimum", ".4g"),
        ):
            table.add_row(label, _num(f[key], spec), _interval(intervals.get(key)))
    out.print(table)
    for name, reason in report["skipped"].items():
        out.print(f"[bold]skipped[/] {name}: {reason}")
    for note in report["warnings"]:
        out.print(f"[yellow]warning:[/] {note}")


def cmd_predict(args: argparse.Namespace) -> int:
    report = predict_report(
        args.corpus,
        args.source,
        budget=args.budget,
        text=args.text,
        seed=args.seed,
        context_length=args.context_length,
    )
    if args.json:
        print(json.dumps(json_safe(report), indent=2, allow_nan=False))
    else:
        render_prediction(report, console(stderr=False))
    return 0
