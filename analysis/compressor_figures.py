"""The figure of :mod:`analysis.compressor_floor`: each dataset's floor against its H, one
panel per compressor, in the reports' style (:mod:`analysis.figures`: the same figure
factory, sizes, grid, resolution and 256-colour save)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np

from gzipscale.analysis.compressor_floor import CompressorFloorAnalysis
from gzipscale.analysis.figures import (
    GRID,
    LEGEND_SIZE,
    SMALL_SIZE,
    SUPTITLE_SIZE,
    TITLE_SIZE,
    new_figure,
    save,
)

# The series' colours of the compressibility figure (analysis.figures.plot_compressibility).
SERIES_COLOURS = {"same-vocabulary": "tab:blue", "main": "tab:green", "same-H": "tab:purple"}
OTHER_COLOUR = "tab:gray"
FLOOR_LABEL = "floor (Bayes-optimal loss, nats per predicted token)"
NOTE_WIDTH = 150  # characters per line of the refused-grammars note


def _colours(series: tuple[str, ...]) -> tuple[str, str]:
    """A point's face colours: its series', split in two for a grammar of two series."""
    first = SERIES_COLOURS.get(series[0], OTHER_COLOUR) if series else OTHER_COLOUR
    second = SERIES_COLOURS.get(series[1], OTHER_COLOUR) if len(series) > 1 else first
    return first, second


def _short_reason(reason: str) -> str:
    """A FloorError message without its "grammar NAME: " prefix."""
    return re.sub(r"^grammar \S+: ", "", reason)


def refused_note(analysis: CompressorFloorAnalysis) -> str | None:
    """The figure's note on the grammars and seeds whose floor was refused (None: none)."""
    by_grammar = analysis.refused_grammars()
    if not by_grammar:
        return None
    parts = []
    for grammar, points in by_grammar.items():
        reasons = list(dict.fromkeys(_short_reason(p.reason) for p in points))
        seeds = ", ".join(str(p.seed) for p in points)
        parts.append(
            f"{grammar} (seed{'s' if len(points) > 1 else ''} {seeds}): {'; '.join(reasons)}"
        )
    text = "Floor refused, not plotted: " + " | ".join(parts)
    return "\n".join(textwrap.wrap(text, NOTE_WIDTH))


def _stat(fit, name: str, label: str, spec: str = ".3f") -> str:
    ci = fit.interval(name)
    value = f"{label} = {fit.value(name):{spec}}"
    return value + (f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else "")


def plot_floor_vs_compressors(
    analysis: CompressorFloorAnalysis, path: Path, *, title: str | None = None
) -> None:
    """The floor against H, one panel per compressor: a point per grammar and seed
    coloured by series (half and half for a grammar of two series), the fitted line with
    its pointwise bootstrap band, the fit's statistics with their intervals, and the
    refused grammars in a note below."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    compressors = analysis.compressors
    note = refused_note(analysis)
    lines = 0 if note is None else note.count("\n") + 1
    n = len(compressors)
    fig = new_figure(4.4 * n, 4.6 + 0.13 * lines)
    if note is None:
        axes = list(np.atleast_1d(fig.subplots(1, n, sharey=True)))
    else:
        # The note gets a row of its own under the panels (an axes the layout makes room for).
        grid = fig.add_gridspec(2, n, height_ratios=[4.0, 0.13 * lines + 0.05])
        axes = [fig.add_subplot(grid[0, 0])]
        axes += [fig.add_subplot(grid[0, i], sharey=axes[0]) for i in range(1, n)]
        for ax in axes[1:]:
            ax.tick_params(labelleft=False)
        note_ax = fig.add_subplot(grid[1, :])
        note_ax.axis("off")
        note_ax.text(0, 1, note, va="top", ha="left", fontsize=SMALL_SIZE, color="0.25")
    policy = analysis.policy
    for ax, c in zip(axes, compressors, strict=True):
        fit = analysis.fits[c]
        for p in analysis.points:
            first, second = _colours(p.series)
            ax.plot(
                [p.H[c]],
                [p.floor],
                ls="none",
                marker="o",
                ms=5.5,
                fillstyle="left" if len(p.series) > 1 else "full",
                markerfacecolor=first,
                markerfacecoloralt=second,
                markeredgecolor="black",
                markeredgewidth=0.4,
                zorder=3,
            )
        lo, hi = fit.H_range
        pad = 0.05 * (hi - lo)
        grid = np.linspace(lo - pad, hi + pad, 200)
        ax.plot(grid, fit.predict(grid), color="black", lw=1.2, zorder=2)
        band = fit.band(grid, policy.level)
        if band is not None:
            ax.fill_between(grid, *band, color="0.6", alpha=0.35, lw=0, zorder=1)
        stats = [
            _stat(fit, "slope", "slope", ".2f"),
            _stat(fit, "intercept", "intercept", ".2f"),
            _stat(fit, "r_squared", "R²"),
            _stat(fit, "spearman", "Spearman ρ"),
            _stat(fit, "rms_error", "RMS error"),
            f"RMS error, leave one grammar out = {fit.loo_rms_error:.3f}",
        ]
        # A legend of text only, so that matplotlib places it where it hides fewest points.
        box = ax.legend(
            handles=[Line2D([], [], ls="none") for _ in stats],
            labels=stats,
            loc="best",
            handlelength=0,
            handletextpad=0,
            fontsize=SMALL_SIZE,
            framealpha=0.85,
        )
        box.set_zorder(4)
        ax.set_xlabel(f"{c} H (compressed / raw size, median over documents)")
        ax.set_title(f"{c}: {fit.n_points} points, {fit.n_grammars} grammars", fontsize=TITLE_SIZE)
        ax.grid(**GRID)
    axes[0].set_ylabel(FLOOR_LABEL)
    series = list(dict.fromkeys(s for p in analysis.points for s in p.series))
    handles = [Patch(facecolor=SERIES_COLOURS.get(s, OTHER_COLOUR), label=s) for s in series]
    if any(len(p.series) > 1 for p in analysis.points):
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="o",
                fillstyle="left",
                markerfacecolor="white",
                markerfacecoloralt="0.5",
                markeredgecolor="black",
                label="in two series (half each)",
            )
        )
    handles += [
        Line2D([], [], color="black", lw=1.2, label="least-squares line"),
        Patch(
            facecolor="0.6",
            alpha=0.35,
            label=f"line's band: {policy.describe()} (whole grammars resampled)",
        ),
    ]
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), fontsize=LEGEND_SIZE
    )
    fig.suptitle(
        title or "Floor against compressibility: one point per grammar and seed",
        fontsize=SUPTITLE_SIZE,
    )
    save(fig, path)
