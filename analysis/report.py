"""``gzipscale report``: a sweep's fits as a folder of tables, figures and a Markdown summary.

:func:`build_report` loads a run directory (or a results table, see
:func:`analysis.table.load_points`), fits every dataset with
:func:`analysis.commands.fit_datasets` -- the same fits ``gzipscale fit`` prints -- and
writes, into one folder:

- ``report.md``: the tables, the figures embedded by relative path, how it was made;
- ``table1_datasets.csv``, ``table2_fits.csv``, ``table3_regression.csv`` (the paper's
  Tables 1-3; the third only with at least 3 fitted datasets that have gzip H);
- ``loss_vs_tokens.png``, ``loss_surface.png``, ``frontiers.png`` and
  ``parameters_vs_gzip.png`` (the last, like table 3, only with a regression).

The folder is built in a temporary sibling and swapped in at the end, so a failed or
interrupted run leaves the previous report intact.  Figures use matplotlib's object
API (``Figure``, not ``pyplot``): no global backend or figure state is touched, which
matters when a caller (a notebook, a test run) has its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gzipscale.analysis.commands import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_BUDGET,
    DEFAULT_SEED,
    LAW_KEYS,
    fit_datasets,
)
from gzipscale.analysis.fit import ScalingLaw
from gzipscale.analysis.regression import MIN_DATASETS
from gzipscale.analysis.table import DEFAULT_DATASET, load_points, read_frame
from gzipscale.helpers import atomic_directory

REPORT_DIR = "report"
REPORT_MD = "report.md"
TABLE_DATASETS = "table1_datasets.csv"
TABLE_FITS = "table2_fits.csv"
TABLE_REGRESSION = "table3_regression.csv"
FIG_LOSS = "loss_vs_tokens.png"
FIG_SURFACE = "loss_surface.png"
FIG_FRONTIERS = "frontiers.png"
FIG_PARAMETERS = "parameters_vs_gzip.png"

DPI = 110
PANEL_COLUMNS = 3
LOSS_LABEL = "validation loss (cross-entropy per token)"
PARAMETER_LABELS = {
    "E": "E (irreducible loss)",
    "A": "A (model-size coefficient)",
    "B": "B (data coefficient)",
    "alpha": "α (model-size exponent)",
    "beta": "β (data exponent)",
}
# Axis margins around the observed runs, as factors: the fitted curves are drawn a
# little beyond the data so one can see where they go, not far enough to mislead.
CURVE_MARGIN = 1.5
SURFACE_MARGIN = 3.0


@dataclass(frozen=True)
class FittedDataset:
    """What the figures need of one fitted dataset."""

    name: str
    H: float | None
    law: ScalingLaw
    N: np.ndarray
    D: np.ndarray
    L: np.ndarray
    ci: dict | None  # name -> [lo, hi], or None without bootstrap


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
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    budget: float = DEFAULT_BUDGET,
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
        Bootstrap resamples for the intervals (0: none) and their seed.
    budget : float
        Reference compute budget (FLOPs) for tokens per parameter in table 2.

    Returns
    -------
    dict
        ``{"out": folder, "files": [names written], "datasets": [fitted],
        "skipped": {name: reason}, "regression": bool}``.

    Raises
    ------
    FileNotFoundError
        ``source`` does not exist (or a directory has no results.csv).
    ValueError
        Bad rows (see load_points), no dataset could be fitted, or ``out`` is
        not a folder this function may replace.
    """
    source = Path(source)
    out = Path(out) if out is not None else default_out(source)
    _check_out(out, source)
    points = load_points(source)
    result = fit_datasets(points, bootstrap=bootstrap, seed=seed, budget=budget)
    if not result["datasets"]:
        reasons = "; ".join(f"{n}: {r}" for n, r in result["skipped"].items()) or "no rows"
        raise ValueError(f"{source}: no dataset could be fitted, nothing to report ({reasons})")
    settings = {"source": str(source), "bootstrap": bootstrap, "seed": seed, "budget": budget}
    with atomic_directory(out) as folder:
        files = _write_contents(folder, source, points, result, settings)
    return {
        "out": str(out),
        "files": files,
        "datasets": list(result["datasets"]),
        "skipped": dict(result["skipped"]),
        "regression": result["regression"] is not None,
    }


def _write_contents(folder: Path, source: Path, points, result: dict, settings: dict) -> list:
    fitted = fitted_datasets(points, result)
    tables = {
        TABLE_DATASETS: datasets_table(source, points, result),
        TABLE_FITS: fits_table(result, settings["budget"]),
    }
    regression = result["regression"]
    if regression is not None:
        tables[TABLE_REGRESSION] = regression_table(regression)
    for name, frame in tables.items():
        frame.to_csv(folder / name, index=False)

    plot_loss_vs_tokens(fitted, folder / FIG_LOSS)
    plot_loss_surface(fitted, folder / FIG_SURFACE)
    plot_frontiers(fitted, folder / FIG_FRONTIERS, settings["budget"])
    figures = [FIG_LOSS, FIG_SURFACE, FIG_FRONTIERS]
    if regression is not None:
        with_h = [f for f in fitted if f.name in regression.names]
        plot_parameters_vs_gzip(with_h, regression, folder / FIG_PARAMETERS)
        figures.append(FIG_PARAMETERS)

    text = render_markdown(tables, figures, result, settings)
    (folder / REPORT_MD).write_text(text, encoding="utf-8")
    return sorted([REPORT_MD, *tables, *figures])


# -- the output folder -----------------------------------------------------------------


def _check_out(out: Path, source: Path, marker: str = REPORT_MD, flag: str = "--out") -> None:
    # The folder is deleted and replaced: refuse anything that might hold other work
    # (a typo such as --out . or --out RUN_DIR must not wipe a sweep).
    out_abs, source_abs = out.resolve(), source.resolve()
    if out_abs == source_abs or out_abs in source_abs.parents:
        raise ValueError(f"{flag} {out} contains the input {source}; choose another folder")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise ValueError(
            f"{flag} {out} is a non-empty folder without {marker}; it does not look like "
            "a previous report, so it is not replaced (remove it or choose another folder)"
        )


# -- tables ----------------------------------------------------------------------------


def fitted_datasets(points: pd.DataFrame, result: dict) -> list[FittedDataset]:
    """The fitted datasets of a :func:`fit_datasets` result, with their points."""
    fitted = []
    for name, d in result["datasets"].items():
        rows = points[points["dataset"] == name]
        fitted.append(
            FittedDataset(
                name=name,
                H=d["gzip"],
                law=result["fits"][name].law,
                N=rows["params"].to_numpy(dtype=float),
                D=rows["tokens"].to_numpy(dtype=float),
                L=rows["loss"].to_numpy(dtype=float),
                ci=d["ci"],
            )
        )
    return fitted


def datasets_table(source: Path, points: pd.DataFrame, result: dict) -> pd.DataFrame:
    """Table 1: per dataset its grammar, gzip H, finished and failed runs."""
    from gzipscale.analysis.table import dataset_gzip

    excluded = points.attrs.get("excluded", {})
    names = list(dict.fromkeys([*points["dataset"], *excluded]))
    grammars, raw_h = _raw_columns(source)
    rows = []
    for name in names:
        H, _ = dataset_gzip(points, name)
        rows.append(
            {
                "dataset": name,
                "grammar": grammars.get(name, ""),
                "gzip_H": H if H is not None else raw_h.get(name, math.nan),
                "finished_runs": int((points["dataset"] == name).sum()),
                "failed_runs": int(sum(excluded.get(name, {}).values())),
                "fitted": name in result["datasets"],
            }
        )
    return pd.DataFrame(rows)


def _raw_columns(source: Path) -> tuple[dict[str, str], dict[str, float]]:
    """Per dataset: its grammar spec(s) and H over all rows, finished or not.

    load_points keeps only what the fit needs; the grammar, and H of a dataset whose
    every run failed, are read from the table itself.
    """
    frame, _ = read_frame(source)
    if frame.empty:
        return {}, {}
    if "dataset" in frame.columns:
        names = frame["dataset"].astype(str).str.strip()
    else:
        names = pd.Series(DEFAULT_DATASET, index=frame.index)
    grammars: dict[str, str] = {}
    if "grammar" in frame.columns:
        specs = frame["grammar"].fillna("").astype(str).str.strip()
        for name, group in specs.groupby(names, sort=False):
            # A dataset built from several grammars lists them all rather than hiding one.
            grammars[name] = "; ".join(dict.fromkeys(s for s in group if s))
    raw_h: dict[str, float] = {}
    if "gzip" in frame.columns:
        gzip = pd.to_numeric(frame["gzip"], errors="coerce")
        raw_h = {k: float(v) for k, v in gzip.groupby(names).median().items() if np.isfinite(v)}
    return grammars, raw_h


def fits_table(result: dict, budget: float) -> pd.DataFrame:
    """Table 2: per fitted dataset the law with intervals, a, and the frontier at ``budget``."""
    rows = []
    for name, d in result["datasets"].items():
        ci = d["ci"] or {}
        frontier = d["frontier"] or {}
        alpha, beta = d["alpha"], d["beta"]
        row = {"dataset": name, "gzip_H": _nan(d["gzip"]), "n_points": d["n_points"]}
        for key in LAW_KEYS:
            row.update(_with_interval(key, d[key], ci.get(key)))
        a = beta / (alpha + beta) if alpha + beta > 0 else math.nan
        row.update(_with_interval("a", a, ci.get("a")))
        row["budget_flops"] = budget
        row["N_opt"] = _nan(frontier.get("N_opt"))
        row["D_opt"] = _nan(frontier.get("D_opt"))
        row["tokens_per_parameter"] = _nan(frontier.get("tokens_per_parameter"))
        row["chinchilla_crossing_flops"] = _nan(frontier.get("chinchilla_crossing"))
        rows.append(row)
    return pd.DataFrame(rows)


def _with_interval(key: str, value: float, lo_hi) -> dict:
    lo, hi = lo_hi if lo_hi is not None else (None, None)
    return {key: value, f"{key}_lo": _nan(lo), f"{key}_hi": _nan(hi)}


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


# -- Markdown --------------------------------------------------------------------------

FIGURE_CAPTIONS = {
    FIG_LOSS: "Observed validation loss against training tokens (points, one colour per "
    "model size N) and the fitted law L(N, D) (lines).",
    FIG_SURFACE: "Fitted loss over model size and tokens (filled contours), iso-FLOP lines "
    "C = 6ND (dashed), the compute-optimal frontier (thick line) and the runs (points).",
    FIG_FRONTIERS: "Compute-optimal tokens per parameter against compute for every dataset, "
    "coloured by gzip H, beside Chinchilla's (black dashed).",
    FIG_PARAMETERS: "Fitted parameters against gzip H, with bootstrap intervals and the "
    "least-squares line (p-value in the legend).",
}


def render_markdown(tables: dict, figures: list[str], result: dict, settings: dict) -> str:
    """The report's Markdown: how it was made, tables 1-3, skipped datasets, figures."""
    parts = [
        f"# gzipscale report: {settings['source']}",
        _how_made(settings),
        "## Table 1: datasets",
        _markdown_table(tables[TABLE_DATASETS], _datasets_columns()),
        "## Table 2: fitted laws, L(N, D) = E + A/N^α + B/D^β",
        _fits_intro(settings),
        _markdown_table(tables[TABLE_FITS], _fits_columns(settings["budget"])),
        _warnings_section(result),
        _skipped_section(result["skipped"]),
        "## Table 3: parameters regressed on gzip H",
        _regression_section(tables.get(TABLE_REGRESSION), result),
        "## Figures",
        *(f"![{FIGURE_CAPTIONS[f]}]({f})\n\n*{FIGURE_CAPTIONS[f]}*" for f in figures),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _how_made(settings: dict) -> str:
    command = (
        f"gzipscale report {settings['source']} --bootstrap {settings['bootstrap']} "
        f"--seed {settings['seed']} --budget {settings['budget']:g}"
    )
    boot = (
        f"{settings['bootstrap']} bootstrap resamples (seed {settings['seed']}), "
        "95% percentile intervals"
        if settings["bootstrap"]
        else "no bootstrap intervals (--bootstrap 0)"
    )
    return (
        f"Made by `{command}`: Chinchilla Approach-3 fits (Huber loss in log space, "
        f"4500-start L-BFGS grid) of every dataset, {boot}; reference budget "
        f"{settings['budget']:.3g} FLOPs (C = 6ND)."
    )


def _fits_intro(settings: dict) -> str:
    interval = (
        "Estimates [95% interval]"
        if settings["bootstrap"]
        else "Point estimates (no intervals: --bootstrap 0)"
    )
    return (
        f"{interval}; a = β/(α+β) is the exponent of N_opt ∝ C^a; tokens per "
        f"parameter are D_opt/N_opt at C = {settings['budget']:.3g} FLOPs; the last column "
        "is the budget at which the dataset's frontier prescribes as many tokens per "
        "parameter as Chinchilla's."
    )


def _datasets_columns() -> list:
    return [
        ("dataset", "dataset", str),
        ("grammar", "grammar", lambda s: f"`{s}`" if s else "-"),
        ("gzip H", "gzip_H", lambda v: _fmt(v, ".4f")),
        ("finished runs", "finished_runs", str),
        ("failed runs", "failed_runs", str),
        ("fitted", "fitted", lambda v: "yes" if v else "no (see below)"),
    ]


def _fits_columns(budget: float) -> list:
    columns = [
        ("dataset", "dataset", str),
        ("H", "gzip_H", lambda v: _fmt(v, ".4f")),
        ("points", "n_points", str),
    ]
    symbols = {"alpha": "α", "beta": "β"}
    for key in (*LAW_KEYS, "a"):
        columns.append((symbols.get(key, key), key, None))
    columns += [
        (f"tokens/param at {budget:.0e}", "tokens_per_parameter", lambda v: _fmt(v, ".3g")),
        ("crosses Chinchilla at C", "chinchilla_crossing_flops", _crossing),
    ]
    return columns


def _crossing(value: float) -> str:
    return "never (parallel)" if math.isnan(value) else f"{value:.3g}"


def _markdown_table(frame: pd.DataFrame, columns: list) -> str:
    """A pipe table; a format of None means 'value [lo, hi]' from the _lo/_hi columns."""
    head = "| " + " | ".join(c[0] for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, rule]
    for _, row in frame.iterrows():
        cells = []
        for _, key, fmt in columns:
            if fmt is None:
                cells.append(_estimate_cell(row, key))
            else:
                cells.append(fmt(row[key]).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _estimate_cell(row, key: str) -> str:
    value, lo, hi = row[key], row[f"{key}_lo"], row[f"{key}_hi"]
    if math.isnan(lo):
        return _fmt(value, ".4g")
    return f"{value:.4g} [{lo:.4g}, {hi:.4g}]"


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _warnings_section(result: dict) -> str:
    notes = [
        f"- {name}: {note}" for name, d in result["datasets"].items() for note in d["warnings"]
    ]
    return "Notes from the fits:\n\n" + "\n".join(notes) if notes else ""


def _skipped_section(skipped: dict) -> str:
    if not skipped:
        return "## Skipped datasets\n\nNone: every dataset was fitted."
    lines = [f"- **{name}**: {reason}" for name, reason in skipped.items()]
    return "## Skipped datasets\n\nNot fitted (too few points or no finished runs):\n\n" + (
        "\n".join(lines)
    )


def _regression_section(frame: pd.DataFrame | None, result: dict) -> str:
    if frame is None:
        return "Not made: " + _no_regression_reason(result) + "."
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
    return (
        f"Ordinary least squares of each parameter on H over {n} datasets.{caution}\n\n"
        + _markdown_table(frame, columns)
    )


def _no_regression_reason(result: dict) -> str:
    if result.get("regression_note"):
        return result["regression_note"]
    with_h = [n for n, d in result["datasets"].items() if d["gzip"] is not None]
    return (
        f"regressing the parameters on gzip H needs at least {MIN_DATASETS} fitted datasets "
        f"with a gzip value, got {len(with_h)} ({', '.join(with_h) or 'none'}); "
        "so there is no table 3 and no parameters-vs-H figure"
    )


# -- figures ---------------------------------------------------------------------------


def _panel_grid(n: int, size: tuple[float, float]):
    """A constrained-layout figure with n panels in rows of up to PANEL_COLUMNS."""
    from matplotlib.figure import Figure

    cols = min(PANEL_COLUMNS, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * size[0], rows * size[1]), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _title(f: FittedDataset) -> str:
    return f.name if f.H is None else f"{f.name} (H = {f.H:.3f})"


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI)


def plot_loss_vs_tokens(fitted: list[FittedDataset], path: Path) -> None:
    """Figure 1: observed loss against D per model size, with the fitted curves."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D

    fig, axes = _panel_grid(len(fitted), (4.3, 3.5))
    all_n = np.concatenate([f.N for f in fitted])
    # One colour scale for every panel, so a colour means the same N everywhere.
    norm = LogNorm(all_n.min(), all_n.max()) if all_n.min() < all_n.max() else None
    cmap = colormaps["viridis"]
    for ax, f in zip(axes, fitted, strict=True):
        d_line = np.geomspace(f.D.min() / CURVE_MARGIN, f.D.max() * CURVE_MARGIN, 200)
        for n in np.unique(f.N):
            colour = cmap(norm(n) if norm else 0.5)
            sel = f.N == n
            ax.plot(d_line, f.law.loss(n, d_line), color=colour, lw=1.3)
            ax.scatter(f.D[sel], f.L[sel], color=colour, s=20, edgecolor="black", lw=0.4, zorder=3)
        ax.set_xscale("log")
        # Loss falls as a power law towards E; a log axis keeps the tail visible when
        # the range is wide, a linear one avoids a two-tick axis when it is not.
        if f.L.max() / f.L.min() > 3:
            ax.set_yscale("log")
            _plain_log_ticks(ax.yaxis)
        ax.set_xlabel("training tokens D")
        ax.set_ylabel(LOSS_LABEL, fontsize=8)
        ax.set_title(_title(f), fontsize=10)
        ax.grid(alpha=0.3, which="both", lw=0.4)
    handles = [
        Line2D([], [], ls="", marker="o", color="grey", markeredgecolor="black", label="observed"),
        Line2D([], [], color="grey", lw=1.3, label="fitted L(N, D)"),
    ]
    axes[0].legend(handles=handles, fontsize=8, loc="upper right")
    if norm is not None:
        fig.colorbar(ScalarMappable(norm, cmap), ax=axes, label="model size N (parameters)")
    fig.suptitle("Validation loss against training tokens, per model size", fontsize=11)
    _save(fig, path)


def _plain_log_ticks(axis) -> None:
    """Ticks at 1, 2, 3, 5 x 10^k labelled as plain numbers ("6", not "6 x 10^0").

    A loss axis usually spans less than two decades, where matplotlib's default log
    ticks are either too few or labelled in scientific notation.
    """
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def _iso_flop_levels(lo: float, hi: float) -> np.ndarray:
    """Whole decades of C inside [lo, hi], thinned so that at most ~8 lines are drawn.

    Half a decade is kept clear at each end: a line that close to a corner of the
    panel is a stub with no room for its label.
    """
    decades = np.arange(math.ceil(math.log10(lo) + 0.5), math.floor(math.log10(hi) - 0.5) + 1)
    step = max(1, math.ceil(len(decades) / 8))
    return decades[::step]


def plot_loss_surface(fitted: list[FittedDataset], path: Path) -> None:
    """Figure 2: fitted loss over (N, D) with iso-FLOP lines, frontier and runs."""
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D
    from matplotlib.patheffects import Normal, Stroke
    from matplotlib.ticker import LogFormatterSciNotation

    from gzipscale.analysis.frontier import optimal_allocation

    fig, axes = _panel_grid(len(fitted), (4.8, 3.9))
    for ax, f in zip(axes, fitted, strict=True):
        n_lo, n_hi = f.N.min() / SURFACE_MARGIN, f.N.max() * SURFACE_MARGIN
        d_lo, d_hi = f.D.min() / SURFACE_MARGIN, f.D.max() * SURFACE_MARGIN
        grid_n, grid_d = np.meshgrid(np.geomspace(n_lo, n_hi, 150), np.geomspace(d_lo, d_hi, 150))
        loss = f.law.loss(grid_n, grid_d)
        levels = np.geomspace(loss.min(), loss.max(), 15)
        filled = ax.contourf(
            grid_n, grid_d, loss, levels=levels, norm=LogNorm(levels[0], levels[-1]), cmap="cividis"
        )
        bar = fig.colorbar(filled, ax=ax, label="fitted loss")
        _plain_log_ticks(bar.ax.yaxis)
        bar.ax.tick_params(labelsize=7)

        log_c = np.log10(6.0 * grid_n * grid_d)
        iso = ax.contour(
            grid_n,
            grid_d,
            log_c,
            levels=_iso_flop_levels(6 * n_lo * d_lo, 6 * n_hi * d_hi),
            colors="white",
            linestyles="--",
            linewidths=0.8,
        )
        # White lines with a dark edge, labels on a pale box: readable on both ends
        # of the colour map.
        iso.set(path_effects=[Stroke(linewidth=1.8, foreground="0.2", alpha=0.5), Normal()])
        labels = ax.clabel(
            iso,
            fmt=lambda v: f"1e{v:.0f}",
            fontsize=7,
            inline_spacing=2,
            manual=_iso_label_positions(iso.levels, (n_lo, n_hi), (d_lo, d_hi)),
        )
        for label in labels:
            label.set_color("black")
            label.set_bbox(
                {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75}
            )

        budgets = np.geomspace(6 * n_lo * d_lo, 6 * n_hi * d_hi, 200)
        try:
            n_opt, d_opt = optimal_allocation(f.law, budgets)
            ax.plot(n_opt, d_opt, color="tab:red", lw=3, solid_capstyle="round")
        except ValueError:
            ax.text(0.03, 0.03, "no frontier (a parameter ≤ 0)", transform=ax.transAxes)
        ax.scatter(f.N, f.D, s=16, color="white", edgecolor="black", lw=0.6, zorder=3)

        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(n_lo, n_hi)
        ax.set_ylim(d_lo, d_hi)
        ax.xaxis.set_major_formatter(LogFormatterSciNotation())
        ax.set_xlabel("model size N (parameters)")
        ax.set_ylabel("training tokens D")
        ax.set_title(_title(f), fontsize=10)
    handles = [
        Line2D([], [], color="grey", ls="--", lw=0.8, label="iso-FLOP C = 6ND (label: FLOPs)"),
        Line2D([], [], color="tab:red", lw=3, label="compute-optimal (N_opt, D_opt)"),
        Line2D(
            [], [], ls="", marker="o", color="white", markeredgecolor="black", label="observed run"
        ),
    ]
    # One panel is too narrow for the three entries side by side.
    columns = 3 if len(fitted) > 1 else 1
    fig.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize=8)
    fig.suptitle("Fitted loss surface and compute-optimal frontier", fontsize=11)
    _save(fig, path)


def _iso_label_positions(levels, n_range, d_range) -> list[tuple[float, float]]:
    """Where to label each iso-FLOP line: 80% of the way along its visible part.

    matplotlib's automatic placement puts labels where lines leave the axes, half cut
    off; down-right along the line keeps them inside and off the frontier, which runs
    up-right through the middle.
    """
    x0, x1 = np.log10(n_range)
    y0, y1 = np.log10(d_range)
    positions = []
    for level in levels:
        c = level - math.log10(6.0)  # log N + log D on this line
        start, stop = max(x0, c - y1), min(x1, c - y0)
        x = start + 0.8 * (stop - start)
        positions.append((10.0**x, 10.0 ** (c - x)))
    return positions


def _compute_range(fitted: list[FittedDataset], budget: float) -> np.ndarray:
    """Budgets from the smallest run's compute to well past the reference budget."""
    observed = np.concatenate([6.0 * f.N * f.D for f in fitted])
    lo = 10.0 ** math.floor(math.log10(observed.min()))
    hi = 10.0 ** math.ceil(math.log10(max(observed.max(), budget)) + 3)
    return np.geomspace(lo, hi, 200)


def plot_frontiers(fitted: list[FittedDataset], path: Path, budget: float) -> None:
    """Figure 3: each dataset's compute-optimal tokens per parameter vs C, and Chinchilla's."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from gzipscale.analysis.frontier import CHINCHILLA, crossing_budget, tokens_per_parameter

    fig = Figure(figsize=(7.8, 5.0), layout="constrained")
    ax = fig.subplots()
    budgets = _compute_range(fitted, budget)
    h_values = [f.H for f in fitted if f.H is not None]
    cmap = colormaps["plasma"]
    # Stop short of plasma's pale yellow end, which is hard to see on white.
    norm = Normalize(min(h_values), max(h_values)) if h_values else None
    for f in fitted:
        colour = "tab:gray" if f.H is None else cmap(0.85 * _unit(norm, f.H))
        try:
            ratio = tokens_per_parameter(f.law, budgets)
        except ValueError:
            continue  # no frontier; table 2 says why
        ax.plot(budgets, ratio, color=colour, lw=2, label=_title(f))
        cross = crossing_budget(f.law)
        if cross is not None and budgets[0] <= cross <= budgets[-1]:
            ax.plot(cross, tokens_per_parameter(CHINCHILLA, cross), "o", color=colour, ms=6)
    ax.plot(
        budgets,
        tokens_per_parameter(CHINCHILLA, budgets),
        color="black",
        ls="--",
        lw=1.5,
        label="Chinchilla (Hoffmann et al. 2022)",
    )
    ax.axvline(budget, color="grey", ls=":", lw=1, label=f"reference budget {budget:.0e} FLOPs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs, C = 6ND)")
    ax.set_ylabel("compute-optimal tokens per parameter D_opt / N_opt")
    ax.set_title("Compute-optimal frontiers (dots: where a frontier crosses Chinchilla's)")
    ax.grid(alpha=0.3, which="both", lw=0.4)
    ax.legend(fontsize=8, loc="best")
    if norm is not None and norm.vmin < norm.vmax:
        shown = Normalize(norm.vmin, norm.vmin + (norm.vmax - norm.vmin) / 0.85)
        bar = fig.colorbar(ScalarMappable(shown, cmap), ax=ax, label="gzip compressibility H")
        bar.ax.set_ylim(norm.vmin, norm.vmax)
    _save(fig, path)


def _unit(norm, value: float) -> float:
    """Position of value in norm's range, 0.5 when the range is a single point."""
    if norm is None or norm.vmin == norm.vmax:
        return 0.5
    return float(norm(value))


def plot_parameters_vs_gzip(fitted: list[FittedDataset], regression, path: Path) -> None:
    """Figure 4: E, A, B, α, β against H with bootstrap error bars and the OLS line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.5, 7.0), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    H = np.array([f.H for f in fitted], dtype=float)
    span = H.max() - H.min()
    h_line = np.linspace(H.min() - 0.1 * span, H.max() + 0.1 * span, 50)
    for ax, key in zip(axes, LAW_KEYS, strict=False):
        values = np.array([getattr(f.law, key) for f in fitted])
        yerr = _error_bars(fitted, key, values)
        ax.errorbar(
            H,
            values,
            yerr=yerr,
            fmt="o",
            color="tab:blue",
            capsize=4,
            label="fit" + (" (95% bootstrap interval)" if yerr is not None else ""),
        )
        term = regression.terms[key]
        ax.plot(
            h_line,
            term.at(h_line),
            color="tab:orange",
            label=f"OLS: slope {term.slope:.3g} ± {term.slope_stderr:.2g}, p = {term.pvalue:.2g}",
        )
        ax.set_xlabel("gzip compressibility H")
        ax.set_ylabel(PARAMETER_LABELS[key])
        ax.set_title(PARAMETER_LABELS[key], fontsize=10)
        ax.grid(alpha=0.3, lw=0.4)
        ax.legend(fontsize=7, loc="best")
    _dataset_key(axes[-1], fitted)
    fig.suptitle("Fitted law parameters against gzip compressibility H", fontsize=11)
    _save(fig, path)


def _error_bars(fitted: list[FittedDataset], key: str, values: np.ndarray):
    """Asymmetric error bars from the intervals, or None when any dataset has none."""
    if any(f.ci is None or key not in f.ci for f in fitted):
        return None
    lo = np.array([f.ci[key][0] for f in fitted])
    hi = np.array([f.ci[key][1] for f in fitted])
    # A percentile interval need not contain the point estimate; matplotlib refuses
    # negative bar lengths, so such a side is drawn as zero.
    return np.vstack([np.clip(values - lo, 0, None), np.clip(hi - values, 0, None)])


def _dataset_key(ax, fitted: list[FittedDataset]) -> None:
    """The spare sixth panel: which dataset sits at which H."""
    ax.axis("off")
    lines = ["datasets (H):"] + [f"  {f.name}: {f.H:.4f}" for f in sorted(fitted, key=_by_h)]
    ax.text(0.05, 0.95, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=9)


def _by_h(f: FittedDataset) -> float:
    return f.H
