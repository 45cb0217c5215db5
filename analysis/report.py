"""``gzipscale report``: a sweep's fits as a folder of tables, figures and a Markdown summary.

:func:`build_report` loads a run directory (or a results table, see
:func:`analysis.table.load_points`), fits every dataset with
:func:`analysis.fitreport.fit_datasets` -- the same fits, with the same bootstrap policy,
that ``gzipscale fit`` prints -- and writes, into one folder:

- ``report.md``: the tables, the figures embedded by relative path, how it was made;
- ``table1_datasets.csv``, ``table2_fits.csv``, ``table3_regression.csv`` (the paper's
  Tables 1-3; the third only with at least 3 fitted datasets that have gzip H);
- ``loss_vs_tokens.png``, ``loss_surface.png``, ``frontiers.png`` and
  ``parameters_vs_gzip.png`` (the last, like table 3, only with a regression), and
  ``excess_loss.png`` where a dataset has a floor.

The folder is built in a temporary sibling and swapped in at the end, so a failed or
interrupted run leaves the previous report intact.
"""

from __future__ import annotations

from pathlib import Path

from gzipscale.analysis import figures
from gzipscale.analysis.bootstrap import BootstrapPolicy
from gzipscale.analysis.fitreport import FitReport, fit_datasets
from gzipscale.analysis.markdown import (
    fit_notes,
    fits_columns,
    floor_regression_section,
    fmt,
    identification_section,
    intervals_label,
    markdown_table,
    regression_section,
)
from gzipscale.analysis.positions import position_figures_inputs
from gzipscale.analysis.table import Points, load_points
from gzipscale.analysis.tables import datasets_table, fits_table, regression_table
from gzipscale.helpers import InputError, atomic_directory
from gzipscale.vocabulary import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    DEFAULT_LAW_CHOICE,
    FLOOR_FIT,
    REFERENCE_BUDGET,
    REPORT_DIR,
)

REPORT_MD = "report.md"
TABLE_DATASETS = "table1_datasets.csv"
TABLE_FITS = "table2_fits.csv"
TABLE_REGRESSION = "table3_regression.csv"
TABLE_FLOOR_REGRESSION = "table4_floor_regression.csv"
FIG_LOSS = "loss_vs_tokens.png"
FIG_SURFACE = "loss_surface.png"
FIG_FRONTIERS = "frontiers.png"
FIG_PARAMETERS = "parameters_vs_gzip.png"
FIG_EXCESS = "excess_loss.png"


# -- entry point -----------------------------------------------------------------------


def default_out(source: str | Path) -> Path:
    """Where the report goes without ``--out``: ``RUN_DIR/report``, or ``<stem>_report``
    beside a table file (so two tables in one folder do not overwrite each other)."""
    source = Path(source)
    if source.is_dir():
        return source / REPORT_DIR
    return source.with_name(f"{source.stem}_{REPORT_DIR}")


def build_report(
    source: str | Path,
    out: str | Path | None = None,
    *,
    bootstrap: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    budget: float = REFERENCE_BUDGET,
    law_choice: str = DEFAULT_LAW_CHOICE,
) -> dict:
    """Fit every dataset of ``source`` and write the report folder.

    Parameters
    ----------
    source : str or Path
        A run directory holding ``results.csv``, or a ``.csv``/``.parquet`` table.
    out : str or Path, optional
        The report folder (default :func:`default_out`).  An existing folder is
        replaced only if it is empty or holds a ``report.md`` (a previous report).
    bootstrap, seed : int
        The bootstrap policy: resamples for the intervals (0: none) and their seed.
    budget : float
        Reference compute budget (FLOPs) for tokens per parameter in table 2.
    law_choice : {"floor", "free"}
        Which fit drives frontiers and the regression where a dataset has a floor.

    Returns
    -------
    dict
        ``{"out": folder, "files": [names written], "datasets": [fitted],
        "skipped": {name: reason}, "regression": bool}``.

    Raises
    ------
    PathNotFound
        ``source`` does not exist (or a directory has no results.csv).
    InputError
        Bad rows (see load_points), no dataset could be fitted, or ``out`` is
        not a folder this function may replace.
    """
    source = Path(source)
    out = Path(out) if out is not None else default_out(source)
    check_out(out, source)
    points = load_points(source)
    report = fit_datasets(
        points, policy=BootstrapPolicy(bootstrap, seed), budget=budget, law_choice=law_choice
    )
    if not report.datasets:
        reasons = "; ".join(f"{n}: {r}" for n, r in report.skipped.items()) or "no rows"
        raise InputError(f"{source}: no dataset could be fitted, nothing to report ({reasons})")
    with atomic_directory(out) as folder:
        files = _write_contents(folder, source, points, report)
    return {
        "out": str(out),
        "files": files,
        "datasets": list(report.datasets),
        "skipped": dict(report.skipped),
        "regression": report.regression is not None,
    }


def _write_contents(folder: Path, source: Path, points: Points, report: FitReport) -> list:
    tables = {
        TABLE_DATASETS: datasets_table(points, report),
        TABLE_FITS: fits_table(report),
    }
    if report.regression is not None:
        tables[TABLE_REGRESSION] = regression_table(report.regression)
    if report.floor_regression is not None:
        tables[TABLE_FLOOR_REGRESSION] = regression_table(report.floor_regression)
    for name, frame in tables.items():
        frame.to_csv(folder / name, index=False)

    fitted = sorted(report.datasets.values(), key=by_h_then_name)
    figures.plot_loss_vs_tokens(fitted, folder / FIG_LOSS)
    figures.plot_loss_surface(fitted, folder / FIG_SURFACE)
    figures.plot_frontiers(fitted, folder / FIG_FRONTIERS, report.budget)
    made = [FIG_LOSS, FIG_SURFACE, FIG_FRONTIERS]
    anchored = [report.fits_of(n).get(FLOOR_FIT) for n in report.datasets]
    anchored = [a for a in anchored if a is not None]
    if anchored:
        figures.plot_excess_loss(anchored, folder / FIG_EXCESS)
        made.append(FIG_EXCESS)
    if source.is_dir():
        for curves in position_figures_inputs(source):
            name = f"positions_{curves.dataset}.png"
            figures.plot_position_loss(
                curves.floor,
                curves.floor_stderr,
                curves.curves,
                folder / name,
                f"{curves.dataset}: held-out loss per position against the floor "
                "(each model size on its largest data size)",
            )
            made.append(name)
    if report.regression is not None:
        with_h = [f for f in fitted if f.name in report.regression.names]
        figures.plot_parameters_vs_gzip(with_h, report.regression, folder / FIG_PARAMETERS)
        made.append(FIG_PARAMETERS)

    text = render_markdown(tables, made, report, source)
    (folder / REPORT_MD).write_text(text, encoding="utf-8")
    return sorted([REPORT_MD, *tables, *made])


# -- the output folder -----------------------------------------------------------------


def check_out(out: Path, source: Path, marker: str = REPORT_MD, flag: str = "--out") -> None:
    """Refuse an output folder that might hold other work: it is deleted and replaced
    (a typo such as ``--out .`` or ``--out RUN_DIR`` must not wipe a sweep)."""
    out_abs, source_abs = out.resolve(), source.resolve()
    if out_abs == source_abs or out_abs in source_abs.parents:
        raise InputError(f"{flag} {out} contains the input {source}; choose another folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag} {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise InputError(
            f"{flag} {out} is a non-empty folder without {marker}; it does not look like "
            "a previous report, so it is not replaced (remove it or choose another folder)"
        )


# -- Markdown --------------------------------------------------------------------------

FIGURE_CAPTIONS = {
    FIG_LOSS: "Observed validation loss against training tokens (points, one colour per "
    "model size N) and the fitted law L(N, D) (lines).",
    FIG_SURFACE: "Fitted loss over model size and tokens (filled contours), iso-FLOP lines "
    "C = 6ND (dashed), the compute-optimal frontier (thick line) and the runs (points).",
    FIG_FRONTIERS: "Compute-optimal tokens per parameter against compute for every dataset, "
    "coloured by gzip H, beside Chinchilla's (black dashed).",
    FIG_EXCESS: "Excess loss over the floor, L - floor, on log axes: against D for each N "
    "(top) and against N for each D (bottom), with the floor-anchored law (dashed); runs at "
    "the floor (under 1% of it) are open triangles on the 1% line.",
    FIG_PARAMETERS: "Fitted parameters against gzip H, with bootstrap intervals and the "
    "least-squares line (p-value in the legend).",
}
DATASETS_COLUMNS = [
    ("dataset", "dataset", str),
    ("grammar", "grammar", lambda s: f"`{s}`" if s else "-"),
    ("gzip H", "gzip_H", lambda v: fmt(v, ".4f")),
    ("floor (nats/token)", "floor", lambda v: fmt(v, ".4f")),
    ("± stderr", "floor_se", lambda v: fmt(v, ".4f")),
    ("finished runs", "finished_runs", str),
    ("failed runs", "failed_runs", str),
    ("fitted", "fitted", lambda v: "yes" if v else "no (see below)"),
]


def _caption(figure: str) -> str:
    if figure.startswith("positions_"):
        return (
            "Held-out loss at each position of the context (left) and its excess over the "
            "dataset's per-position floor (right, log axis), for each model size on its "
            "largest data size: where in its context a model falls short."
        )
    return FIGURE_CAPTIONS[figure]


def render_markdown(tables: dict, made: list[str], report: FitReport, source: Path) -> str:
    """The report's Markdown: how it was made, tables 1-3, skipped datasets, figures."""
    parts = [
        f"# gzipscale report: {source}",
        _how_made(report, source),
        "## Table 1: datasets",
        markdown_table(tables[TABLE_DATASETS], DATASETS_COLUMNS),
        "## Table 2: fitted laws, L(N, D) = E + A/N^α + B/D^β",
        _fits_intro(report),
        markdown_table(tables[TABLE_FITS], fits_columns(report.budget)),
        "### Identification",
        identification_section(report),
        fit_notes(report, "Notes from the fits:", skipped=False),  # they have a section
        _skipped_section(report.skipped),
        "## Table 3: parameters regressed on gzip H",
        regression_section(
            tables.get(TABLE_REGRESSION),
            report,
            absent="; so there is no table 3 and no parameters-vs-H figure",
        ),
        "## Table 4: parameters regressed on the floor",
        floor_regression_section(tables.get(TABLE_FLOOR_REGRESSION), report),
        "## Figures",
        *(f"![{_caption(f)}]({f})\n\n*{_caption(f)}*" for f in made),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _how_made(report: FitReport, source: Path) -> str:
    policy = report.policy
    command = (
        f"gzipscale report {source} --bootstrap {policy.resamples} "
        f"--seed {policy.seed} --budget {report.budget:g} --law {report.law_choice}"
    )
    boot = (
        f"{policy.describe()} (percentile intervals over resamples of the runs)"
        if policy.resamples
        else "no bootstrap intervals (--bootstrap 0)"
    )
    return (
        f"Made by `{command}`: Chinchilla Approach-3 fits (Hoffmann et al. 2022; Huber loss "
        f"in log space, 4500-start L-BFGS grid) of every dataset, {boot}; reference budget "
        f"{report.budget:.3g} FLOPs (C = 6ND).  Where a dataset has a floor (its exact "
        "Bayes-optimal loss) two fits are made: E held at the floor (L - floor = A/N^α + "
        "B/D^β fitted in log space; runs within 1% of the floor left out) and the paper's "
        f"free fit; the {'floor-anchored' if report.law_choice == 'floor' else 'free'} one "
        "drives the frontiers and the regression."
    )


def _fits_intro(report: FitReport) -> str:
    label = intervals_label(report)
    return (
        f"{label[0].upper()}{label[1:]}; a = β/(α+β) is the exponent of N_opt ∝ C^a; tokens "
        f"per parameter are D_opt/N_opt at C = {report.budget:.3g} FLOPs; the last column "
        "is the budget at which the dataset's frontier prescribes as many tokens per "
        "parameter as Chinchilla's."
    )


def _skipped_section(skipped: dict) -> str:
    if not skipped:
        return "## Skipped datasets\n\nNone: every dataset was fitted."
    lines = [f"- **{name}**: {reason}" for name, reason in skipped.items()]
    return "## Skipped datasets\n\nNot fitted (too few points or no finished runs):\n\n" + (
        "\n".join(lines)
    )


def by_h_then_name(fit) -> tuple:
    """Figures and tables list grammars by H (unknown H last), then by name."""
    return (fit.gzip is None, fit.gzip if fit.gzip is not None else 0.0, fit.name)
