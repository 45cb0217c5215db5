"""The figure of a pilot the design rules read: each grammar's excess loss L - floor
against D, one line per model size, with what the rules mark (too few steps, at the
floor, the chosen window), in the reports' one style (:mod:`analysis.figures`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gzipscale.analysis.figures import _panel_grid, save
from gzipscale.analysis.identification import AT_FLOOR_FRACTION


def plot_pilot(
    rows, path: Path, *, min_size: int, plateau_fraction: float, window=None, chosen=()
) -> None:
    """``rows``: the pilot's finished ResultRows; ``min_size``: rule 1's smallest data
    size; ``window``: the chosen Window (its cells are ringed on the chosen grammars)."""
    by_dataset: dict[str, list] = {}
    for r in rows:
        if r.status == "finished":
            by_dataset.setdefault(r.dataset, []).append(r)
    names = sorted(by_dataset, key=lambda n: (by_dataset[n][0].gzip, n))
    fig, axes = _panel_grid(len(names), (4.2, 3.4))
    for ax, name in zip(axes, names, strict=True):
        mine = by_dataset[name]
        floor = mine[0].floor
        params = {r.shape: r.params for r in mine}
        shapes = sorted(params, key=params.get)
        colours = {s: c for s, c in zip(shapes, _colours(len(shapes)), strict=True)}
        for s in shapes:
            pts = sorted((r.tokens, r.val_loss - floor) for r in mine if r.shape == s)
            D = np.array([p[0] for p in pts], dtype=float)
            X = np.array([p[1] for p in pts], dtype=float)
            shown = np.maximum(X, AT_FLOOR_FRACTION * floor)  # at the floor: on its line
            ax.plot(D, shown, "o-", ms=3.5, lw=1.2, color=colours[s], label=f"{s} ({params[s]:,})")
            if window is not None and name in chosen and s in window.shapes:
                inside = np.isin(D, window.sizes)
                ax.plot(D[inside], shown[inside], "o", ms=8, mfc="none", mec="black", mew=0.8)
        ax.axhline(AT_FLOOR_FRACTION * floor, color="grey", ls=":", lw=1)
        plateau = max(r.val_loss for r in mine) - floor
        ax.axhline(plateau_fraction * plateau, color="tab:red", ls="--", lw=0.8)
        ax.axvspan(min(r.tokens for r in mine) / 1.2, min_size / 1.05, color="grey", alpha=0.12)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training tokens D")
        ax.set_ylabel("excess loss L − floor (nats/token)")
        state = "chosen" if name in chosen else "dropped"
        ax.set_title(f"{name} (H = {mine[0].gzip:.3f}): {state}", fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
    if axes:
        axes[0].legend(fontsize=7, loc="lower left")
        fig.suptitle(
            "shaded: runs with fewer than the minimum steps; dashed red: the end of the early "
            "plateau; dotted: 1% of the floor (runs at the floor are drawn on it); rings: the "
            "chosen window",
            fontsize=8,
        )
    save(fig, path)


def _colours(n: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.0, 0.9, n)]
