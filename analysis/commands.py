"""``gzipscale fit`` and ``gzipscale predict``: fits of a results table, from the command line.

:func:`register` adds both subcommands to the CLI's subparsers.  Each command builds
one plain dict (what ``--json`` prints) and renders the same dict as rich tables
otherwise, so the two outputs cannot disagree.  Bad input raises ValueError or
FileNotFoundError with a message meant for the user; the CLI prints it.
"""

from __future__ import annotations

import argparse
import json
import sys

from gzipscale.helpers import json_safe

DEFAULT_BOOTSTRAP = 200
DEFAULT_BUDGET = 1e18
DEFAULT_SEED = 0
LAW_KEYS = ("E", "A", "B", "alpha", "beta")
# bootstrap_fit's names for the frontier exponents -> this output's names.
EXPONENT_KEYS = {"n_opt_exponent": "a", "d_opt_exponent": "b"}
TOKEN_KINDS = ("pcfg", "tokens")


# -- small helpers ---------------------------------------------------------------------


def _console():
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # logs and pipes: don't squeeze tables
    return console


def _num(value, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


class _Progress:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int):
        self._bar = None
        if total and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._bar.add_task("fitting", total=total)

    def __enter__(self):
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)


# -- fitting every dataset -------------------------------------------------------------


def _frontier(fit, budget: float) -> dict:
    from gzipscale.analysis.frontier import compute_optimal, crossing_budget

    point = compute_optimal(fit, budget)
    return {
        "budget": budget,
        "N_opt": float(point.N_opt),
        "D_opt": float(point.D_opt),
        "tokens_per_parameter": float(point.tokens_per_parameter),
        "loss": float(point.loss),
        "a": point.n_opt_exponent,
        "b": point.d_opt_exponent,
        "chinchilla_crossing": crossing_budget(fit),
    }


def _excluded_note(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def fit_datasets(points, *, bootstrap: int, seed: int, budget: float) -> dict:
    """Fit every dataset of a :func:`analysis.table.load_points` frame.

    Returns ``{"datasets", "skipped", "regression", "fits", "bootstraps"}``; ``fits``
    and ``bootstraps`` hold the :class:`~analysis.fit.ScalingFit` and
    :class:`~analysis.fit.BootstrapResult` objects (not JSON) for callers that go on.
    """
    from gzipscale.analysis.fit import UnderdeterminedFit, bootstrap_fit, fit_scaling_law
    from gzipscale.analysis.table import dataset_gzip

    excluded = points.attrs.get("excluded", {})
    names = list(dict.fromkeys(points["dataset"]))  # first-appearance order
    datasets, skipped, fits, bootstraps = {}, {}, {}, {}
    for name, counts in excluded.items():
        if name not in names:
            skipped[name] = f"no finished rows ({_excluded_note(counts)})"

    steps = len(names) * (2 if bootstrap else 1)
    with _Progress(steps) as progress:
        for name in names:
            rows = points[points["dataset"] == name]
            N, D, L = (rows[c].to_numpy(dtype=float) for c in ("params", "tokens", "loss"))
            progress.describe(f"{name}: fit")
            try:
                fit = fit_scaling_law(N, D, L, emit_warnings=False)
            except (UnderdeterminedFit, RuntimeError) as exc:
                skipped[name] = str(exc)
                progress.advance()
                if bootstrap:
                    progress.advance()
                continue
            progress.advance()
            notes = list(fit.warnings)
            H, gzip_note = dataset_gzip(points, name)
            if gzip_note:
                notes.append(gzip_note)
            if name in excluded:
                notes.append(f"left out {_excluded_note(excluded[name])} row(s)")

            ci, boot = None, None
            if bootstrap:
                progress.describe(f"{name}: bootstrap ({bootstrap} resamples)")
                try:
                    # The same seed for every dataset: a dataset's intervals then do not
                    # depend on which other datasets share the table.
                    boot = bootstrap_fit(N, D, L, n_resamples=bootstrap, seed=seed, point_fit=fit)
                except UnderdeterminedFit as exc:
                    notes.append(f"no bootstrap intervals: {exc}")
                progress.advance()
            if boot is not None:
                ci = {EXPONENT_KEYS.get(k, k): list(v) for k, v in boot.intervals.items()}
                if boot.n_unconverged:
                    notes.append(
                        f"{boot.n_unconverged} of {bootstrap} bootstrap fits did not report "
                        "convergence (kept)"
                    )
            try:
                frontier = _frontier(fit, budget)
            except ValueError as exc:
                frontier = None
                notes.append(f"no compute-optimal frontier: {exc}")

            datasets[name] = {
                **fit.law.to_dict(),
                "ci": ci,
                "n_points": fit.n_points,
                "frontier": frontier,
                "gzip": H,
                "warnings": notes,
                "objective": fit.objective,
                "converged": fit.converged,
                "excluded": dict(excluded.get(name, {})),
                "bootstrap": None
                if boot is None
                else {
                    "n_resamples": boot.n_resamples,
                    "level": boot.level,
                    "seed": boot.seed,
                    "n_redrawn": boot.n_redrawn,
                    "n_unconverged": boot.n_unconverged,
                },
            }
            fits[name] = fit
            if boot is not None:
                bootstraps[name] = boot

    regression, regression_note = None, None
    with_h = [n for n in datasets if datasets[n]["gzip"] is not None]
    if len(with_h) >= 3:
        from gzipscale.analysis.regression import fit_gzip_regression

        try:
            regression = fit_gzip_regression(
                [fits[n] for n in with_h], [datasets[n]["gzip"] for n in with_h], names=with_h
            )
        except (UnderdeterminedFit, ValueError) as exc:
            regression_note = f"no regression on H: {exc}"
    return {
        "datasets": datasets,
        "skipped": skipped,
        "regression": regression,
        "regression_note": regression_note,
        "fits": fits,
        "bootstraps": bootstraps,
    }


# -- gzipscale fit ---------------------------------------------------------------------


def fit_report(path, *, bootstrap: int, seed: int, budget: float) -> dict:
    """What ``gzipscale fit --json`` prints, as a dict (plus ``regression_note``)."""
    from gzipscale.analysis.table import load_points

    result = fit_datasets(load_points(path), bootstrap=bootstrap, seed=seed, budget=budget)
    reg = result["regression"]
    return {
        "datasets": result["datasets"],
        "skipped": result["skipped"],
        "regression": None if reg is None else reg.to_dict(),
        "regression_note": result["regression_note"],
    }


def render_fit(report: dict, console) -> None:
    """Print a fit report (the ``--json`` dict) as rich tables."""
    from rich.table import Table

    for name, d in report["datasets"].items():
        gzip = "" if d["gzip"] is None else f", H = {d['gzip']:.4f}"
        table = Table(title=f"{name}: L = E + A/N^α + B/D^β ({d['n_points']} points{gzip})")
        table.add_column("quantity")
        table.add_column("estimate", justify="right")
        table.add_column("95% interval" if d["ci"] else "interval", justify="right")
        ci = d["ci"] or {}
        for key in LAW_KEYS:
            lo_hi = ci.get(key)
            table.add_row(key, _num(d[key]), _interval(lo_hi))
        f = d["frontier"]
        if f is not None:
            table.add_row("a (N_opt ∝ C^a)", _num(f["a"]), _interval(ci.get("a")))
            table.add_row("b (D_opt ∝ C^b)", _num(f["b"]), _interval(ci.get("b")))
            budget = f"{f['budget']:.3g}"
            table.add_row(f"N_opt at C={budget}", _num(f["N_opt"], ".3e"), "")
            table.add_row(f"D_opt at C={budget}", _num(f["D_opt"], ".3e"), "")
            table.add_row("tokens per parameter", _num(f["tokens_per_parameter"], ".3g"), "")
            table.add_row("crosses Chinchilla at C", _num(f["chinchilla_crossing"], ".3e"), "")
        console.print(table)
        for note in d["warnings"]:
            console.print(f"  [yellow]warning:[/] {note}")
    for name, reason in report["skipped"].items():
        console.print(f"[bold]skipped[/] {name}: {reason}")
    reg = report["regression"]
    if reg is not None:
        table = Table(title=f"parameters regressed on gzip H ({len(reg['H'])} datasets)")
        for col in ("parameter", "slope", "± stderr", "intercept", "± stderr", "p-value", "R²"):
            table.add_column(col, justify="left" if col == "parameter" else "right")
        for key, t in reg["terms"].items():
            table.add_row(
                f"log {key}" if t["log_scale"] else key,
                _num(t["slope"]),
                _num(t["slope_stderr"], ".2g"),
                _num(t["intercept"]),
                _num(t["intercept_stderr"], ".2g"),
                _num(t["pvalue"], ".2g"),
                _num(t["r_squared"], ".3f"),
            )
        console.print(table)
    elif report.get("regression_note"):
        console.print(report["regression_note"])


def _interval(lo_hi) -> str:
    if lo_hi is None or lo_hi[0] is None:
        return "-"
    return f"[{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]"


def cmd_fit(args: argparse.Namespace) -> int:
    report = fit_report(args.path, bootstrap=args.bootstrap, seed=args.seed, budget=args.budget)
    if not report["datasets"] and not report["skipped"]:
        raise ValueError(f"{args.path}: no rows to fit")
    if args.json:
        note = report.pop("regression_note")
        if note:
            print(f"gzipscale fit: {note}", file=sys.stderr)
        print(json.dumps(json_safe(report), indent=2, allow_nan=False))
    else:
        render_fit(report, _console())
    # Nothing fitted is a failure; some datasets skipped is a report.
    return 0 if report["datasets"] else 1


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
    raise ValueError(f"{path}: scored as {kinds}, none of kind {' or '.join(wanted)}{hint}")


def predict_report(
    corpus, source, *, budget: float, text: bool = False, seed: int = 0, context_length: int = 256
) -> dict:
    """What ``gzipscale predict --json`` prints, as a dict."""
    from gzipscale.analysis.regression import MIN_DATASETS, predict_at_gzip
    from gzipscale.analysis.table import load_points

    score = score_corpus(corpus, text=text, context_length=context_length)
    H = float(score.stats.median)
    result = fit_datasets(load_points(source), bootstrap=0, seed=seed, budget=budget)
    regression = result["regression"]
    if regression is None:
        with_h = [n for n, d in result["datasets"].items() if d["gzip"] is not None]
        skipped = "; ".join(f"{n}: {r}" for n, r in result["skipped"].items())
        raise ValueError(
            f"{source}: predicting needs at least {MIN_DATASETS} fitted datasets with a gzip "
            f"value, got {len(with_h)} ({', '.join(with_h) or 'none'})"
            + (f"; {result['regression_note']}" if result["regression_note"] else "")
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
            "budget": budget,
            "N_opt": float(f.N_opt[0]),
            "D_opt": float(f.D_opt[0]),
            "tokens_per_parameter": float(f.tokens_per_parameter[0]),
            "loss": float(f.loss[0]),
            "a": f.n_opt_exponent,
            "b": f.d_opt_exponent,
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
        "intervals": {EXPONENT_KEYS.get(k, k): list(v) for k, v in prediction.intervals.items()},
        "level": prediction.level,
        "frontier": frontier,
        "regression": regression.to_dict(),
        "datasets": {
            n: {**{k: d[k] for k in LAW_KEYS}, "gzip": d["gzip"], "n_points": d["n_points"]}
            for n, d in result["datasets"].items()
        },
        "skipped": result["skipped"],
        "warnings": warnings,
    }


def render_prediction(report: dict, console) -> None:
    from rich.table import Table

    c = report["corpus"]
    law = report["law"]
    console.print(
        f"[bold]{c['name']}[/] ({c['kind']}, {c['documents']:,} documents): H = {c['H']:.4f}"
    )
    console.print(
        f"L(N, D) = {law['E']:.4g} + {law['A']:.4g}/N^{law['alpha']:.4g} "
        f"+ {law['B']:.4g}/D^{law['beta']:.4g}"
    )
    level = f"{100 * report['level']:.0f}% interval"
    table = Table(
        title=f"law predicted at H = {c['H']:.4f} from {len(report['datasets'])} datasets"
    )
    table.add_column("quantity")
    table.add_column("estimate", justify="right")
    table.add_column(level, justify="right")
    for key in LAW_KEYS:
        table.add_row(key, _num(law[key]), _interval(report["intervals"].get(key)))
    f = report["frontier"]
    if f is not None:
        table.add_row("a (N_opt ∝ C^a)", _num(f["a"]), _interval(report["intervals"].get("a")))
        table.add_row("b (D_opt ∝ C^b)", _num(f["b"]), _interval(report["intervals"].get("b")))
        table.add_row(
            f"N_opt at C={f['budget']:.3g}",
            _num(f["N_opt"], ".3e"),
            _interval(f["intervals"].get("N_opt")),
        )
        table.add_row(
            f"D_opt at C={f['budget']:.3g}",
            _num(f["D_opt"], ".3e"),
            _interval(f["intervals"].get("D_opt")),
        )
        table.add_row(
            "tokens per parameter",
            _num(f["tokens_per_parameter"], ".3g"),
            _interval(f["intervals"].get("tokens_per_parameter")),
        )
        table.add_row("loss at optimum", _num(f["loss"]), _interval(f["intervals"].get("loss")))
    console.print(table)
    for name, reason in report["skipped"].items():
        console.print(f"[bold]skipped[/] {name}: {reason}")
    for note in report["warnings"]:
        console.print(f"[yellow]warning:[/] {note}")


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
        render_prediction(report, _console())
    return 0


# -- parser ----------------------------------------------------------------------------
