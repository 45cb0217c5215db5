"""``gzipscale design PILOT_RUN_DIR``: apply the design rules (:mod:`analysis.design`) to a
finished pilot sweep and write the sweep spec they choose for a wall-time budget.

The pilot is any sweep (``docs/design.md`` gives one); this command fits every window of
its grid for every grammar, prints which windows and grammars pass and why the others do
not, and writes the chosen spec (the pilot's settings with the chosen grammars, shapes
and data sizes) as JSON, ready for ``gzipscale sweep --spec``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gzipscale.analysis.design import (
    Design,
    DesignRules,
    candidate_windows,
    choose_design,
    evaluate_window,
    min_tokens,
)
from gzipscale.analysis.design_figures import plot_pilot
from gzipscale.analysis.results import read_results_csv
from gzipscale.helpers import (
    InputError,
    PathNotFound,
    atomic_write_bytes,
    json_safe,
    writable_destination,
)
from gzipscale.vocabulary import RESULTS_FILE, SWEEP_SPEC_FILE


def design_from_run_dir(
    run_dir: str | Path,
    *,
    rules: DesignRules,
    budget_s: float,
    slots: int,
    overhead_s: float,
    startup_s: float,
    progress=None,
) -> tuple[Design, dict]:
    """The design for a pilot run directory and the pilot's saved spec dict."""
    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).is_file() or not (run_dir / SWEEP_SPEC_FILE).is_file():
        raise PathNotFound(f"{run_dir} is not a sweep's run directory (no results.csv/sweep.json)")
    pilot = json.loads((run_dir / SWEEP_SPEC_FILE).read_text("utf-8"))
    rows = [r for r in read_results_csv(run_dir / RESULTS_FILE) if r.status == "finished"]
    if not rows:
        raise InputError(f"{run_dir}: no finished runs to design from")
    batch = int(pilot.get("train", {}).get("batch_size", 0)) or 1
    context = int(pilot.get("context_length", 256))
    floor_size = min_tokens(rules.min_steps, batch, context)
    by_dataset: dict[str, list] = {}
    for r in rows:
        by_dataset.setdefault(r.dataset, []).append(r)
    params = {r.shape: r.params for r in rows}
    shapes = sorted(params, key=params.get)
    sizes = sorted({r.tokens for r in rows})
    windows = candidate_windows(shapes, sizes, rules, floor_size)
    if not windows:
        raise InputError(
            f"{run_dir}: the pilot has no window of {rules.min_shapes} shapes x "
            f"{rules.min_sizes} data sizes of at least {floor_size:,} tokens "
            f"({rules.min_steps} steps of {batch} x {context})"
        )
    cooldown = float(pilot.get("train", {}).get("cooldown_fraction", 0.2))
    table = []
    for i, window in enumerate(windows):
        judged = [
            evaluate_window(
                by_dataset[name], window, rules, cooldown_fraction=cooldown, startup_s=startup_s
            )
            for name in sorted(by_dataset)
        ]
        table.append((window, judged))
        if progress is not None:
            progress.update(i + 1, len(windows), window.label())
    design = choose_design(table, budget_s=budget_s, slots=slots, overhead_s=overhead_s)
    design.min_size = floor_size
    design.rows = rows
    return design, pilot


def design_spec(design: Design, pilot: dict, name: str) -> dict:
    """The pilot's spec with the design's grammars, shapes and data sizes."""
    if design.window is None:
        raise InputError("no window passes the rules for two or more grammars: nothing to write")
    chosen = {g.dataset for g in design.chosen}
    grammars = [g for g in pilot["grammars"] if _dataset_of(g) in chosen]
    return {
        **pilot,
        "name": name,
        "grammars": grammars,
        "shapes": list(design.window.shapes),
        "data_sizes": list(design.window.sizes),
    }


def _dataset_of(entry: dict) -> str:
    """A spec's grammar entry's dataset name, as the sweep names it (the grammar's name,
    plus the sampler unless it is the default)."""
    from gzipscale.grammars.spec import GrammarSpec

    name = GrammarSpec.parse(entry["grammar"], seed=int(entry.get("seed", 0))).name
    sampler = entry.get("sampler", "prefix")
    return name if sampler == "prefix" else f"{name}-{sampler}"


def render_design(design: Design, out) -> None:
    """What the rules found, one line per grammar and window that matters."""
    if design.window is None:
        out.print("no window of the pilot identifies the laws of two or more grammars")
    else:
        w = design.window
        out.print(
            f"chosen window: {', '.join(w.shapes)} x "
            f"{', '.join(f'{d:,}' for d in w.sizes)} tokens; estimated "
            f"{design.estimated_s / 60:.1f} min on {design.slots} CPU slots "
            f"(budget {design.budget_s / 60:.1f} min)"
        )
        for g in design.chosen:
            c = g.check
            out.print(
                f"  {g.dataset} H={g.gzip:.3f}: α {c.alpha[0]:.3g} [{c.alpha[1]:.3g}, "
                f"{c.alpha[2]:.3g}], β {c.beta[0]:.3g} [{c.beta[1]:.3g}, {c.beta[2]:.3g}], "
                f"RMS {c.rms:.3f}, {c.n_points} runs"
            )
    for name in design.over_budget:
        out.print(f"  {name}: passes, but the budget has no room for it")
    for name, reason in design.dropped.items():
        out.print(f"  {name}: dropped: {reason}")


def cmd_design(args: argparse.Namespace) -> int:
    from gzipscale.helpers import Progress, console

    rules = DesignRules(
        min_steps=args.min_steps,
        max_span=args.max_span,
        resamples=args.bootstrap,
        seed=args.seed,
    )
    out_path = writable_destination(args.out, "--out") if args.out else None
    with Progress("design", unit="windows") as progress:
        design, pilot = design_from_run_dir(
            args.path,
            rules=rules,
            budget_s=args.budget_minutes * 60.0,
            slots=args.slots,
            overhead_s=args.overhead_s,
            startup_s=args.startup_s,
            progress=progress,
        )
    out = console(stderr=False)
    render_design(design, out)
    spec = design_spec(design, pilot, args.name) if design.window is not None else None
    text = json.dumps(spec, indent=2) + "\n"
    if out_path is not None:
        if spec is not None:
            atomic_write_bytes(Path(out_path), text.encode("utf-8"))
            out.print(f"wrote {out_path}: gzipscale sweep --spec {out_path}")
        report = Path(out_path).with_suffix(".design.json")
        payload = json.dumps(json_safe(design.to_dict()), indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(report, payload.encode("utf-8"))
        figure = Path(out_path).with_suffix(".design.png")
        plot_pilot(
            design.rows,
            figure,
            min_size=design.min_size,
            plateau_fraction=rules.plateau_fraction,
            window=design.window,
            chosen={g.dataset for g in design.chosen},
        )
        out.print(f"wrote {report} (every window's fits) and {figure} (the pilot)")
    elif spec is not None:
        print(text, end="")
    return 0 if spec is not None else 1
