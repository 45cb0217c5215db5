"""``gzipscale predict``: a corpus's scaling law predicted from its gzip compressibility H.

The arguments are declared in ``gzipscale/cli.py``; this module does the work.  It scores the
corpus's H, fits every dataset of the ``--from`` table (as ``gzipscale fit`` does), regresses
each law parameter on H across them (:mod:`gzipscale.analysis.regression`) and reads the law
off the regression lines at the corpus's H.  :func:`predict_report` builds one dict; ``--json``
prints it and the rich tables render the same dict, so the two cannot disagree.

What it refuses, and what it will not present as a finding:

- **Outside the fitted range.**  The lines were fitted on the datasets' H; beyond their range
  they are an extrapolation of a straight line through (usually) three points.  An H outside
  ``[min H, max H]`` is refused (:class:`OutsideFittedRange`, exit status 2) naming the H, the
  range and ``--extrapolate``.  With ``--extrapolate`` it predicts, and ``extrapolation`` says
  by how far outside it is, absolutely and as a fraction of the range's width.
- **Impossible laws.**  A law needs E >= 0, A, B > 0 and alpha, beta > 0 (so frontier exponents
  in (0, 1)); lines in H can cross zero.  An impossible point law is reported as "no valid law
  at H = ..." with what it breaks, never as ``L(N, D) = ...``: the JSON's ``law`` is null and
  the regressed values stay under ``point`` beside their ``problems``.
- **Draws.**  Intervals come from the regression draws that give a possible law only, and say
  how many those were (``draws``).  When the point law is impossible, or fewer than half the
  draws are possible, the report is still printed (so ``--json`` carries ``valid: false`` and
  its ``reason``) and the command then exits with status 2 (:class:`NoValidLaw`, whose
  message is the reason).

Point estimate against interval (``outside_interval``).  The point is the plug-in estimate,
the regression lines at H (the paper's Eq. 5), with every derived quantity (frontier
exponents, N_opt, D_opt, tokens per parameter, loss) computed from that one law, so the row
of numbers is one coherent law.  The intervals are percentiles of the same quantities over
the draws of the regression coefficients.  For a raw parameter every draw is normal about the
point, so the point is the draws' median and lies inside any central interval -- unless
draws were dropped for giving an impossible law, which truncates the distribution on one
side and can push the interval past the point.  A derived quantity is a nonlinear function
of several parameters, whose value at the point is not the median of its values over the
draws; with wide draws it too can fall outside.  Neither the median of the draws (not one
law: each quantity's median comes from different draws) nor an interval recentred on the
point (not what the draws say) would be honest, so the point stays the plug-in law and any
quantity that falls outside its own interval is named in ``outside_interval``, marked
"outside interval" in the table and explained in a warning: there the draws are far from
the normal the intervals assume, and neither number is a finding.
"""

from __future__ import annotations

import argparse
import json

from gzipscale.analysis.bootstrap import DEFAULT_POLICY, BootstrapPolicy
from gzipscale.analysis.commands import LABELS, _interval, _num
from gzipscale.analysis.fitreport import fit_datasets
from gzipscale.analysis.law import EXPONENT_NAMES, LAW_NAMES
from gzipscale.analysis.regression import (
    FRONTIER_FIELDS,
    GzipPrediction,
    ParameterRegression,
    predict_at_gzip,
)
from gzipscale.analysis.table import load_points
from gzipscale.helpers import InputError, UserError, console, json_safe
from gzipscale.vocabulary import DEFAULT_CONTEXT_LENGTH

TOKEN_KINDS = ("pcfg", "tokens")
N_DRAWS = 2000
# Below this fraction of possible draws the regression does not determine the law at H.
MIN_VALID_FRACTION = 0.5


class OutsideFittedRange(UserError):
    """The corpus's H lies outside the H the regression was fitted on (and no
    ``--extrapolate``)."""


class NoValidLaw(UserError):
    """The prediction is no law: the point law is impossible, or too few draws are possible."""


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


def extrapolation(H: float, fitted_range: tuple[float, float]) -> dict:
    """Where H lies against the fitted range: ``{"range", "outside", "side", "distance",
    "fraction_of_range"}`` (side "below" or "above", or None inside; distance 0 inside)."""
    lo, hi = fitted_range
    side = "below" if H < lo else "above" if H > hi else None
    distance = lo - H if side == "below" else H - hi if side == "above" else 0.0
    return {
        "range": [lo, hi],
        "outside": side is not None,
        "side": side,
        "distance": float(distance),
        "fraction_of_range": float(distance / (hi - lo)),
    }


def _where(H: float, e: dict, symbol: str = "H") -> str:
    lo, hi = e["range"]
    return (
        f"{symbol} = {H:.4f} is {e['distance']:.4g} {e['side']} the range of {symbol} the "
        f"regression was fitted on, [{lo:.4f}, {hi:.4f}] ({e['fraction_of_range']:.0%} of its "
        "width)"
    )


def _draws(prediction: GzipPrediction) -> str:
    return (
        f"{100 * prediction.level:.0f}% interval, {prediction.n_valid} of "
        f"{prediction.n_samples} regression draws valid, seed {prediction.seed}"
    )


def verdict(prediction: GzipPrediction, symbol: str = "H") -> str | None:
    """Why the prediction is no law, in one sentence (None when it is one)."""
    H = prediction.H
    few = prediction.n_valid < MIN_VALID_FRACTION * prediction.n_samples
    draws = (
        f"only {prediction.n_valid} of {prediction.n_samples} draws of the regression "
        "coefficients give a valid law there"
    )
    if prediction.problems:
        reason = f"no valid law at {symbol} = {H:.4f}: " + ", ".join(prediction.problems.values())
        return reason + (f" (and {draws})" if few else "")
    if few:
        return (
            f"no reliable law at {symbol} = {H:.4f}: {draws}, so the regression does not "
            "determine the law at this H"
        )
    return None


def predict_from_regression(
    regression: ParameterRegression,
    H: float,
    *,
    budget: float,
    seed: int = DEFAULT_POLICY.seed,
    extrapolate: bool = False,
    n_samples: int = N_DRAWS,
) -> dict:
    """The prediction part of :func:`predict_report`: the law at H with its verdicts.

    Raises
    ------
    OutsideFittedRange
        H outside the regression's fitted range, without ``extrapolate``.
    """
    symbol = regression.symbol
    where = extrapolation(H, regression.fitted_range)
    if where["outside"] and not extrapolate:
        raise OutsideFittedRange(
            f"{_where(H, where, symbol)}; pass --extrapolate to predict there anyway"
        )
    prediction = predict_at_gzip(regression, H, C=[budget], n_samples=n_samples, seed=seed)
    reason = verdict(prediction, symbol)
    warnings = []
    if where["outside"]:
        warnings.append(
            f"{_where(H, where, symbol)}: predicted with --extrapolate, along straight lines "
            "fitted elsewhere"
        )
    for key, flag in regression.flags.items():
        warnings.append(
            f"the regression line of {key} is impossible within the fitted range: {flag}"
        )
    if prediction.n_invalid:
        warnings.append(
            f"{prediction.n_invalid} of {prediction.n_samples} regression draws gave no valid "
            "law (E < 0, or A, B, alpha or beta <= 0) and were left out of the intervals"
        )
    if prediction.outside_interval:
        names = ", ".join(prediction.outside_interval)
        warnings.append(
            f"the point estimate of {names} lies outside its own interval: the draws are "
            "truncated (invalid ones dropped) or bent by a nonlinear transform, far from the "
            "normal the intervals assume, so neither is a finding"
        )
    frontier = None
    if prediction.frontier is not None:
        f = prediction.frontier
        frontier = {
            "C": budget,
            **{k: float(getattr(f, k)[0]) for k in FRONTIER_FIELDS},
            "intervals": {k: list(v[0]) for k, v in prediction.frontier_intervals.items()},
        }
    point = prediction.law.to_dict()
    return {
        "valid": reason is None,
        "reason": reason,
        "extrapolation": where,
        "law": None if prediction.problems else point,
        "point": point,
        "problems": prediction.problems,
        "intervals": {k: list(v) for k, v in prediction.intervals.items()},
        "outside_interval": prediction.outside_interval,
        "draws": {
            "n": prediction.n_samples,
            "valid": prediction.n_valid,
            "level": prediction.level,
            "seed": prediction.seed,
        },
        "interval": _draws(prediction),
        "frontier": frontier,
        "warnings": warnings,
    }


def predict_report(
    corpus,
    source,
    *,
    budget: float,
    text: bool = False,
    seed: int = DEFAULT_POLICY.seed,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    extrapolate: bool = False,
) -> dict:
    """What ``gzipscale predict --json`` prints, as a dict.

    Raises
    ------
    InputError
        The table gives no regression (fewer than 3 fitted datasets with a gzip H).
    OutsideFittedRange
        The corpus's H is outside the fitted range, without ``extrapolate``.
    """
    score = score_corpus(corpus, text=text, context_length=context_length)
    H = float(score.stats.median)
    # The prediction's intervals come from the regression, not from each fit's bootstrap.
    report = fit_datasets(
        load_points(source), policy=BootstrapPolicy(resamples=0, seed=seed), budget=budget
    )
    regression = report.regression
    if regression is None:
        skipped = "; ".join(f"{n}: {r}" for n, r in report.skipped.items())
        raise InputError(
            f"{source}: cannot predict: {report.regression_note}"
            + (f"; skipped: {skipped}" if skipped else "")
        )
    prediction = predict_from_regression(
        regression, H, budget=budget, seed=seed, extrapolate=extrapolate
    )
    return {
        "corpus": {
            "path": str(corpus),
            "name": score.name,
            "kind": score.kind,
            "H": H,
            "documents": score.stats.n,
        },
        "budget": budget,
        **prediction,
        "regression": regression.to_dict(),
        "datasets": {
            n: {"law": d.law.to_dict(), "gzip": d.gzip, "n_points": d.n_points}
            for n, d in report.datasets.items()
        },
        "skipped": report.skipped,
    }


def _estimate(report: dict, key: str, value, spec: str = ".4g") -> str:
    text = _num(value, spec)
    if key in report["problems"]:
        return f"{text} (impossible)"
    if key in report["outside_interval"]:
        return f"{text} (outside interval)"
    return text


def render_prediction(report: dict, out) -> None:
    """Print a prediction report: the corpus, where its H lies, the law (or why there is
    none), a table of estimates and intervals, skipped datasets and warnings."""
    from rich.markup import escape
    from rich.table import Table

    c = report["corpus"]
    H = c["H"]
    out.print(
        f"[bold]{escape(str(c['name']))}[/] ({c['kind']}, {c['documents']:,} documents): "
        f"H = {H:.4f}"
    )
    e = report["extrapolation"]
    if e["outside"]:
        out.print(
            f"[yellow]extrapolated:[/] H is {e['distance']:.4g} {e['side']} the fitted range "
            f"[{e['range'][0]:.4f}, {e['range'][1]:.4f}] ({e['fraction_of_range']:.0%} of its "
            "width)"
        )
    law = report["law"]
    if report["valid"]:
        line = (
            f"L(N, D) = {law['E']:.4g} + {law['A']:.4g}/N^{law['alpha']:.4g} "
            f"+ {law['B']:.4g}/D^{law['beta']:.4g}"
        )
        outside = [k for k in LAW_NAMES if k in report["outside_interval"]]
        if outside:
            line = (
                f"point law, not a finding ({', '.join(outside)} outside their intervals): " + line
            )
        out.print(line)
    else:
        out.print(f"[bold red]{escape(report['reason'])}[/]")
    table = Table(title=f"law predicted at H = {H:.4f} from {len(report['datasets'])} datasets")
    table.add_column("quantity")
    table.add_column("estimate", justify="right")
    table.add_column(report["interval"], justify="right")
    point = report["point"]
    for key in LAW_NAMES + EXPONENT_NAMES:
        table.add_row(
            LABELS[key], _estimate(report, key, point[key]), _interval(report["intervals"].get(key))
        )
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
            table.add_row(
                label, _estimate(report, key, f[key], spec), _interval(intervals.get(key))
            )
    out.print(table)
    for name, reason in report["skipped"].items():
        out.print(f"[bold]skipped[/] {escape(str(name))}: {escape(str(reason))}")
    for note in report["warnings"]:
        out.print(f"[yellow]warning:[/] {escape(note)}")


def cmd_predict(args: argparse.Namespace) -> int:
    report = predict_report(
        args.corpus,
        args.source,
        budget=args.budget,
        text=args.text,
        seed=args.seed,
        context_length=args.context_length,
        extrapolate=args.extrapolate,
    )
    if args.json:
        print(json.dumps(json_safe(report), indent=2, allow_nan=False))
    else:
        render_prediction(report, console(stderr=False))
    if not report["valid"]:
        raise NoValidLaw(report["reason"])
    return 0
