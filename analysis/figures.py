"""Every figure of the reports, in one style: matplotlib's object API (``Figure``, not
``pyplot``, so no global backend or figure state is touched, which matters when a caller
such as a notebook or a test run has its own), constrained layout, the same font sizes and
grid, and one resolution (:data:`DPI`); :func:`save` writes each with a 256-colour palette
(flat colours and lines lose nothing visible, and committed figures stay small).

The fit figures take :class:`~gzipscale.analysis.fitreport.DatasetFit` records; the claims'
figures take :class:`~gzipscale.analysis.claims.Dataset`; an interval in a legend names
the bootstrap policy that made it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gzipscale.analysis.bootstrap import BootstrapPolicy
from gzipscale.analysis.claims import PAPER_A_CROSSING, A, Dataset, trend
from gzipscale.analysis.fitreport import DatasetFit
from gzipscale.analysis.frontier import (
    CHINCHILLA,
    crossing_budget,
    optimal_allocation,
    tokens_per_parameter,
)
from gzipscale.analysis.identification import AT_FLOOR_FRACTION
from gzipscale.analysis.law import LAW_NAMES
from gzipscale.analysis.tables import compressibility_frame
from gzipscale.vocabulary import FLOPS_PER_PARAM_TOKEN

DPI = 100
PANEL_COLUMNS = 3
TITLE_SIZE = 10
SUPTITLE_SIZE = 11
LEGEND_SIZE = 8
SMALL_SIZE = 7
GRID = {"alpha": 0.3, "lw": 0.4}
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


# -- the style -------------------------------------------------------------------------


def new_figure(width: float, height: float):
    """A figure of ``width`` x ``height`` inches with constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save(fig, path: Path) -> None:
    """Write ``fig`` at :data:`DPI`, then re-save it with a 256-colour palette."""
    from PIL import Image

    fig.savefig(path, dpi=DPI)
    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    palette.save(path, optimize=True)


def _panel_grid(n: int, size: tuple[float, float]):
    """A figure with n panels in rows of up to PANEL_COLUMNS."""
    cols = min(PANEL_COLUMNS, n)
    rows = math.ceil(n / cols)
    fig = new_figure(cols * size[0], rows * size[1])
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _title(f: DatasetFit) -> str:
    return f.name if f.gzip is None else f"{f.name} (H = {f.gzip:.3f})"


def _policies(fitted: list[DatasetFit]) -> list[BootstrapPolicy | None]:
    return [f.bootstrap.policy if f.bootstrap else None for f in fitted]


def _policy_label(policies) -> str:
    """The bootstrap policy behind a figure's intervals, for its legend."""
    policies = [p for p in policies if p is not None]
    if not policies:
        return "95% bootstrap interval"
    return policies[0].describe()


def plot_loss_vs_tokens(fitted: list[DatasetFit], path: Path) -> None:
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
        ax.set_ylabel(LOSS_LABEL, fontsize=LEGEND_SIZE)
        ax.set_title(_title(f), fontsize=TITLE_SIZE)
        ax.grid(which="both", **GRID)
    handles = [
        Line2D([], [], ls="", marker="o", color="grey", markeredgecolor="black", label="observed"),
        Line2D([], [], color="grey", lw=1.3, label="fitted L(N, D)"),
    ]
    axes[0].legend(handles=handles, fontsize=LEGEND_SIZE, loc="upper right")
    if norm is not None:
        fig.colorbar(ScalarMappable(norm, cmap), ax=axes, label="model size N (parameters)")
    fig.suptitle("Validation loss against training tokens, per model size", fontsize=SUPTITLE_SIZE)
    save(fig, path)


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


def plot_loss_surface(fitted: list[DatasetFit], path: Path) -> None:
    """Figure 2: fitted loss over (N, D) with iso-FLOP lines, frontier and runs."""
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D
    from matplotlib.patheffects import Normal, Stroke
    from matplotlib.ticker import LogFormatterSciNotation

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
        bar.ax.tick_params(labelsize=SMALL_SIZE)

        log_c = np.log10(FLOPS_PER_PARAM_TOKEN * grid_n * grid_d)
        iso = ax.contour(
            grid_n,
            grid_d,
            log_c,
            levels=_iso_flop_levels(
                FLOPS_PER_PARAM_TOKEN * n_lo * d_lo, FLOPS_PER_PARAM_TOKEN * n_hi * d_hi
            ),
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
            fontsize=SMALL_SIZE,
            inline_spacing=2,
            manual=_iso_label_positions(iso.levels, (n_lo, n_hi), (d_lo, d_hi)),
        )
        for label in labels:
            label.set_color("black")
            label.set_bbox(
                {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75}
            )

        budgets = np.geomspace(
            FLOPS_PER_PARAM_TOKEN * n_lo * d_lo, FLOPS_PER_PARAM_TOKEN * n_hi * d_hi, 200
        )
        why_not = _no_frontier_reason(f)
        if why_not is None:
            try:
                n_opt, d_opt = optimal_allocation(f.law, budgets)
                ax.plot(n_opt, d_opt, color="tab:red", lw=3, solid_capstyle="round")
            except ValueError:
                why_not = "no frontier: a parameter of the law is ≤ 0"
        if why_not is not None:
            ax.text(
                0.03,
                0.03,
                why_not,
                transform=ax.transAxes,
                fontsize=SMALL_SIZE,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
            )
        ax.scatter(f.N, f.D, s=16, color="white", edgecolor="black", lw=0.6, zorder=3)

        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(n_lo, n_hi)
        ax.set_ylim(d_lo, d_hi)
        ax.xaxis.set_major_formatter(LogFormatterSciNotation())
        ax.set_xlabel("model size N (parameters)")
        ax.set_ylabel("training tokens D")
        ax.set_title(_title(f), fontsize=TITLE_SIZE)
    handles = [
        Line2D([], [], color="grey", ls="--", lw=0.8, label="iso-FLOP C = 6ND (label: FLOPs)"),
        Line2D([], [], color="tab:red", lw=3, label="compute-optimal (N_opt, D_opt)"),
        Line2D(
            [], [], ls="", marker="o", color="white", markeredgecolor="black", label="observed run"
        ),
    ]
    # One panel is too narrow for the three entries side by side.
    columns = 3 if len(fitted) > 1 else 1
    fig.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize=LEGEND_SIZE)
    fig.suptitle("Fitted loss surface and compute-optimal frontier", fontsize=SUPTITLE_SIZE)
    save(fig, path)


def _no_frontier_reason(f: DatasetFit) -> str | None:
    """Why a fit's frontier is not drawn as a finding (None: it is)."""
    if f.flags:
        return f"no frontier shown: the law is not identified ({f.flags[0].code})"
    return None


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
        c = level - math.log10(FLOPS_PER_PARAM_TOKEN)  # log N + log D on this line
        start, stop = max(x0, c - y1), min(x1, c - y0)
        x = start + 0.8 * (stop - start)
        positions.append((10.0**x, 10.0 ** (c - x)))
    return positions


def _compute_range(fitted: list[DatasetFit], budget: float) -> np.ndarray:
    """Budgets from the smallest run's compute to well past the reference budget."""
    observed = np.concatenate([FLOPS_PER_PARAM_TOKEN * f.N * f.D for f in fitted])
    lo = 10.0 ** math.floor(math.log10(observed.min()))
    hi = 10.0 ** math.ceil(math.log10(max(observed.max(), budget)) + 3)
    return np.geomspace(lo, hi, 200)


def plot_frontiers(fitted: list[DatasetFit], path: Path, budget: float) -> None:
    """Figure 3: each dataset's compute-optimal tokens per parameter vs C, and Chinchilla's."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig = new_figure(7.8, 5.0)
    ax = fig.subplots()
    budgets = _compute_range(fitted, budget)
    h_values = [f.gzip for f in fitted if f.gzip is not None]
    cmap = colormaps["plasma"]
    # Stop short of plasma's pale yellow end, which is hard to see on white.
    norm = Normalize(min(h_values), max(h_values)) if h_values else None
    left_out = []
    for f in fitted:
        colour = "tab:gray" if f.gzip is None else cmap(0.85 * _unit(norm, f.gzip))
        if _no_frontier_reason(f) is not None:
            left_out.append(f.name)
            continue
        try:
            ratio = tokens_per_parameter(f.law, budgets)
        except ValueError:
            left_out.append(f.name)
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
    ax.grid(which="both", **GRID)
    title = (
        "not shown (law not identified or impossible):\n" + "\n".join(left_out)
        if left_out
        else None
    )
    ax.legend(fontsize=LEGEND_SIZE, loc="best", title=title, title_fontsize=SMALL_SIZE)
    if norm is not None and norm.vmin < norm.vmax:
        shown = Normalize(norm.vmin, norm.vmin + (norm.vmax - norm.vmin) / 0.85)
        bar = fig.colorbar(ScalarMappable(shown, cmap), ax=ax, label="gzip compressibility H")
        bar.ax.set_ylim(norm.vmin, norm.vmax)
    save(fig, path)


def _unit(norm, value: float) -> float:
    """Position of value in norm's range, 0.5 when the range is a single point."""
    if norm is None or norm.vmin == norm.vmax:
        return 0.5
    return float(norm(value))


def plot_parameters_vs_gzip(fitted: list[DatasetFit], regression, path: Path) -> None:
    """Figure 4: E, A, B, α, β against H with bootstrap error bars and the OLS line."""
    fig = new_figure(12.5, 7.0)
    axes = fig.subplots(2, 3).ravel()
    H = np.array([f.gzip for f in fitted], dtype=float)
    span = H.max() - H.min()
    h_line = np.linspace(H.min() - 0.1 * span, H.max() + 0.1 * span, 50)
    flagged = np.array([bool(f.flags) for f in fitted])
    for ax, key in zip(axes, LAW_NAMES, strict=False):
        values = np.array([getattr(f.law, key) for f in fitted])
        yerr = _error_bars(fitted, key, values)
        wide = bool(np.all(values > 0) and values.max() / values.min() > 100)
        if wide:
            # A and B span orders of magnitude across grammars: a linear axis shows all
            # but the largest at 0. Intervals are clipped at a decade beyond the points.
            ax.set_yscale("log")
            lo_lim, hi_lim = values.min() / 10, values.max() * 10
            if yerr is not None:
                yerr = np.vstack(
                    [
                        np.minimum(yerr[0], values - lo_lim),
                        np.minimum(yerr[1], hi_lim - values),
                    ]
                )
            ax.set_ylim(lo_lim, hi_lim)
        for mask, style in ((~flagged, {}), (flagged, {"mfc": "white"})):
            if not mask.any():
                continue
            ax.errorbar(
                H[mask],
                values[mask],
                yerr=None if yerr is None else yerr[:, mask],
                fmt="o",
                color="tab:blue",
                capsize=4,
                label=("fit" if not style else "fit, not identified (hollow)")
                + (
                    f" ({_policy_label(_policies(fitted))})"
                    if yerr is not None and not style
                    else ""
                ),
                **style,
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
        ax.set_title(
            PARAMETER_LABELS[key] + (" — log axis, intervals clipped at a decade" if wide else ""),
            fontsize=TITLE_SIZE,
        )
        ax.grid(**GRID)
        ax.legend(fontsize=SMALL_SIZE, loc="best")
    _dataset_key(axes[-1], fitted)
    fig.suptitle("Fitted law parameters against gzip compressibility H", fontsize=SUPTITLE_SIZE)
    save(fig, path)


def _error_bars(fitted: list[DatasetFit], key: str, values: np.ndarray):
    """Asymmetric error bars from the intervals, or None when any dataset has none."""
    bounds = [f.interval(key) for f in fitted]
    if any(b is None for b in bounds):
        return None
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    # A percentile interval need not contain the point estimate; matplotlib refuses
    # negative bar lengths, so such a side is drawn as zero.
    return np.vstack([np.clip(values - lo, 0, None), np.clip(hi - values, 0, None)])


def _dataset_key(ax, fitted: list[DatasetFit]) -> None:
    """The spare sixth panel: which dataset sits at which H."""
    ax.axis("off")
    lines = ["datasets (H):"] + [f"  {f.name}: {f.gzip:.4f}" for f in sorted(fitted, key=_by_h)]
    ax.text(
        0.05,
        0.95,
        "\n".join(lines),
        va="top",
        ha="left",
        family="monospace",
        fontsize=LEGEND_SIZE + 1,
    )


def _by_h(f: DatasetFit) -> float:
    return f.gzip


# -- the compressibility of the grammar series and the claims ------------------------


def plot_compressibility(series: dict, path: Path) -> None:
    """The paper's Figure 1: H per grammar, grouped by series, beside real data."""
    frame = compressibility_frame(series)
    fig = new_figure(12.0, 4.6)
    ax = fig.subplots()
    x, ticks, labels = 0, [], []
    colours = {"same-vocabulary": "tab:blue", "main": "tab:green", "same-H": "tab:purple"}
    for name, group in frame.groupby("series", sort=False):
        xs = np.arange(x, x + len(group))
        colour = colours.get(name, "tab:gray")
        ax.errorbar(
            xs,
            group["H_mean"],
            yerr=group["H_sd"],
            fmt="o",
            color=colour,
            capsize=3,
            label=f"{name}: mean ± sd over {int(group['seeds'].iloc[0])} seeds",
        )
        paper = group["paper_H"].to_numpy(dtype=float)
        ax.scatter(xs, paper, marker="D", facecolor="none", edgecolor=colour, s=40, zorder=3)
        ticks += list(xs)
        labels += list(group["grammar"])
        x += len(group) + 1
    ax.scatter([], [], marker="D", facecolor="none", edgecolor="black", label="paper's value")
    styles = {"text": ":", "byte-tokens": "--"}
    for c in series.get("real", []):
        ax.axhline(
            c["median"],
            color="0.4",
            ls=styles.get(c["kind"], "-."),
            lw=1,
            label=f"{c['name']} ({c['kind']}): {c['median']:.3f}",
        )
    ax.set_xticks(ticks, labels, rotation=40, ha="right", fontsize=LEGEND_SIZE)
    ax.set_ylabel("gzip compressibility H (median over documents)")
    ax.set_title(
        f"gzip H of the paper's grammar series ({series['tokens']:,} tokens per grammar and seed)",
        fontsize=TITLE_SIZE,
    )
    ax.grid(**GRID)
    fig.legend(fontsize=SMALL_SIZE, loc="outside right upper")
    save(fig, path)


def plot_frontier_exponent(datasets: list[Dataset], same_h: set[str], path: Path) -> None:
    """a = β/(α+β) against H with bootstrap intervals, the 1:1 line and the paper's range."""
    fig = new_figure(7.0, 4.4)
    ax = fig.subplots()
    ax.axvspan(*PAPER_A_CROSSING, color="0.9", label="paper: crosses 0.5 in this H range")
    ax.axhline(0.5, color="black", ls="--", lw=1, label="a = 0.5 (Chinchilla's 1:1)")
    placed: list[float] = []
    for d in sorted(datasets, key=lambda d: d.H):
        marker, colour = ("s", "tab:purple") if d.grammar in same_h else ("o", "tab:blue")
        ci = d.interval(A)
        yerr = None
        if ci is not None:
            yerr = [[max(d.a - ci[0], 0)], [max(ci[1] - d.a, 0)]]
        ax.errorbar([d.H], [d.a], yerr=yerr, fmt=marker, color=colour, capsize=3)
        # Grammars of about the same H would print their labels on top of each other.
        stack = sum(abs(d.H - h) < 0.02 for h in placed)
        placed.append(d.H)
        ax.annotate(
            d.grammar,
            (d.H, d.a),
            textcoords="offset points",
            xytext=(6, 4 + 11 * stack),
            fontsize=SMALL_SIZE,
        )
    t = trend(datasets, A)
    if t is not None:
        h = np.linspace(min(d.H for d in datasets) - 0.03, max(d.H for d in datasets) + 0.03, 20)
        ax.plot(h, t.intercept + t.slope * h, color="tab:orange", label=f"OLS: p = {t.pvalue:.2g}")
    policy = _policy_label(d.policy for d in datasets)
    ax.errorbar([], [], fmt="o", color="tab:blue", label=f"fitted a ({policy})")
    if any(d.grammar in same_h for d in datasets):
        ax.errorbar([], [], fmt="s", color="tab:purple", label="paper's same-H grammars")
    finite = [v for d in datasets for v in (d.interval(A) or (d.a, d.a)) if math.isfinite(v)]
    lo, hi = min([*finite, 0.0]), max([*finite, 1.0])
    ax.set_ylim(max(lo, -0.5) - 0.05, min(hi, 1.5) + 0.05)
    ax.set_xlabel("gzip compressibility H")
    ax.set_ylabel("a = β/(α+β)   (N_opt ∝ C^a)")
    ax.set_title(
        "Frontier exponent against H (lower a: more of the compute to data)", fontsize=TITLE_SIZE
    )
    ax.grid(**GRID)
    ax.legend(fontsize=SMALL_SIZE, loc="best")
    save(fig, path)


def plot_compute_to_loss(datasets: list[Dataset], path: Path) -> None:
    """Per grammar, the lowest loss any run reached within each compute budget."""
    from matplotlib import colormaps

    fig = new_figure(7.0, 4.4)
    ax = fig.subplots()
    cmap = colormaps["plasma"]
    hs = [d.H for d in datasets]
    lo, hi = min(hs), max(hs)
    styles = ("-", "--", ":", "-.")
    for i, d in enumerate(sorted(datasets, key=lambda d: d.H)):
        C = FLOPS_PER_PARAM_TOKEN * d.N * d.D
        order = np.argsort(C, kind="stable")
        best = np.minimum.accumulate(d.L[order])
        colour = cmap(0.85 * ((d.H - lo) / (hi - lo) if hi > lo else 0.5))
        # Neighbours in H get neighbouring colours; the line style tells them apart.
        ax.step(
            C[order],
            best,
            where="post",
            color=colour,
            ls=styles[i % len(styles)],
            lw=1.8,
            label=f"{d.grammar} (H {d.H:.3f})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("training compute C = 6ND (FLOPs)")
    ax.set_ylabel("lowest validation loss reached")
    ax.set_title(
        "Loss reachable within a compute budget, per grammar (observed runs)", fontsize=TITLE_SIZE
    )
    ax.grid(which="both", **GRID)
    ax.legend(fontsize=SMALL_SIZE)
    save(fig, path)


# -- the excess loss over the floor ------------------------------------------------------


def plot_excess_loss(anchored: list[DatasetFit], path: Path) -> None:
    """The excess loss ``L - floor`` on log axes: top row against D, one line per N;
    bottom row against N, one line per D; one column per dataset with a floor.

    A power law is a straight line here, so a reader sees at once where the runs follow
    one and where they do not.  Runs at the floor (excess under 1% of it, or below it
    within its noise) have no excess to show on a log axis: they are drawn as open
    triangles on the 1% line.  The fitted excess ``A/N^α + B/D^β`` of the floor-anchored
    law is drawn for each N (top) and D (bottom); its title says whether it is identified.
    """
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    fits = sorted(anchored, key=_by_h)
    cols = min(PANEL_COLUMNS, len(fits))
    blocks = math.ceil(len(fits) / cols)  # each block: a row against D, a row against N
    fig = new_figure(4.2 * cols, 6.6 * blocks)
    grid = fig.subplots(2 * blocks, cols, squeeze=False)
    for i in range(len(fits), blocks * cols):
        for row in (0, 1):
            grid[2 * (i // cols) + row][i % cols].set_visible(False)
    cmap = colormaps["viridis"]
    for i, f in enumerate(fits):
        block, col = divmod(i, cols)
        axes = {0: {col: grid[2 * block][col]}, 1: {col: grid[2 * block + 1][col]}}
        floor = f.floor.nats_per_token
        excess = f.L - floor
        at_floor = f.at_floor if f.at_floor is not None else excess < AT_FLOOR_SHOWN * floor
        shown = np.where(at_floor, AT_FLOOR_SHOWN * floor, excess)
        for row, (x, group, label) in enumerate(
            ((f.D, f.N, "model size N"), (f.N, f.D, "training tokens D"))
        ):
            ax = axes[row][col]
            values = np.unique(group)
            norm = LogNorm(values.min(), values.max()) if len(values) > 1 else None
            line = np.geomspace(x.min() / CURVE_MARGIN, x.max() * CURVE_MARGIN, 200)
            for g in values:
                colour = cmap(norm(g) if norm else 0.5)
                sel = group == g
                order = np.argsort(x[sel])
                ok = ~at_floor[sel][order]
                xs, ys = x[sel][order], shown[sel][order]
                ax.plot(xs[ok], ys[ok], "o-", color=colour, ms=4, lw=0.8, mec="black", mew=0.3)
                ax.plot(xs[~ok], ys[~ok], "^", color="none", mec=colour, ms=5, mew=1.0)
                n_arg, d_arg = (g, line) if row == 0 else (line, g)
                curve = f.law.loss(n_arg, d_arg) - floor
                ax.plot(line, curve, color=colour, lw=1.0, ls="--", alpha=0.8)
            ax.axhline(AT_FLOOR_SHOWN * floor, color="grey", lw=0.8, ls=":")
            ax.set_xscale("log")
            ax.set_yscale("log")
            # A grid spanning under a decade gets labelled minor ticks that overlap.
            from matplotlib.ticker import NullFormatter

            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylim(
                AT_FLOOR_SHOWN * floor / 2, max(shown.max(), 2 * AT_FLOOR_SHOWN * floor) * 2
            )
            ax.set_xlabel("training tokens D" if row == 0 else "model size N (parameters)")
            ax.set_ylabel("excess loss L - floor (nats)", fontsize=LEGEND_SIZE)
            ax.grid(which="both", **GRID)
            if norm is not None:
                fig.colorbar(
                    ScalarMappableFor(norm, cmap), ax=ax, label=label, fraction=0.05, pad=0.02
                )
        verdict = "identified" if f.identified else "not identified"
        axes[0][col].set_title(
            f"{_title(f)}\nfloor {floor:.4f} ± {f.floor.stderr:.4f}; fit {verdict}",
            fontsize=TITLE_SIZE,
        )
    handles = _excess_handles()
    grid[0][0].legend(handles=handles, fontsize=SMALL_SIZE, loc="lower left")
    fig.suptitle(
        "Excess loss over the floor (log-log: a power law is a straight line)",
        fontsize=SUPTITLE_SIZE,
    )
    save(fig, path)


# Where runs at the floor are drawn: on the line at 1% of the floor (the identification
# threshold, analysis/identification.py AT_FLOOR_FRACTION).
AT_FLOOR_SHOWN = AT_FLOOR_FRACTION


def ScalarMappableFor(norm, cmap):  # noqa: N802 - mirrors matplotlib's class name
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm, cmap)


def _excess_handles():
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], ls="-", marker="o", color="grey", mec="black", label="runs"),
        Line2D([], [], ls="", marker="^", color="none", mec="grey", label="at the floor (<1%)"),
        Line2D([], [], ls="--", color="grey", label="floor-anchored law"),
        Line2D([], [], ls=":", color="grey", label="1% of the floor"),
    ]


# -- where in its context a model falls short ---------------------------------------------


def plot_position_loss(
    floor: list[float],
    floor_stderr: list[float],
    curves: dict[str, tuple[list[float], list[float]]],
    path: Path,
    title: str,
) -> None:
    """Held-out loss at each position of the context against the dataset's per-position
    floor: left, the losses (the floor with its ±2 SE band); right, each model's excess
    over the floor on a log axis (positions where a model is within noise of the floor
    are drawn at the axis' bottom edge, marked).

    ``curves`` maps a label (e.g. "N=12.2K, D=524K") to (mean, stderr) per position.
    """
    from matplotlib import colormaps

    positions = np.arange(1, len(floor) + 1)
    floor = np.asarray(floor, dtype=float)
    band = 2 * np.asarray(floor_stderr, dtype=float)
    fig = new_figure(10.0, 3.8)
    left, right = fig.subplots(1, 2)
    left.fill_between(positions, floor - band, floor + band, color="grey", alpha=0.3, lw=0)
    left.plot(positions, floor, color="black", lw=1.4, label="floor (±2 SE)")
    cmap = colormaps["viridis"]
    excess_all = []
    for i, (label, (mean, _)) in enumerate(curves.items()):
        colour = cmap(i / max(1, len(curves) - 1))
        mean = np.asarray(mean, dtype=float)
        left.plot(positions, mean, color=colour, lw=1.0, label=label)
        excess_all.append((label, colour, mean - floor))
    floor_noise = max(float(np.median(band)), 1e-4)
    for label, colour, excess in excess_all:
        shown = np.maximum(excess, floor_noise)
        right.plot(positions, shown, color=colour, lw=1.0, label=label)
    right.axhline(floor_noise, color="grey", ls=":", lw=0.8, label="floor noise (2 SE)")
    right.set_yscale("log")
    for ax, ylabel in (
        (left, "held-out loss at position (nats)"),
        (right, "excess over the floor (nats)"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel("position in the context (tokens of context before the prediction)")
        ax.set_ylabel(ylabel, fontsize=LEGEND_SIZE)
        ax.grid(which="both", **GRID)
    left.legend(fontsize=SMALL_SIZE, loc="upper right")
    right.legend(fontsize=SMALL_SIZE, loc="upper right")
    fig.suptitle(title, fontsize=SUPTITLE_SIZE)
    save(fig, path)
