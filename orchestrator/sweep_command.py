"""``gzipscale sweep``: plan (``--dry-run``) or run a sweep from a preset or a spec file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def load_spec(args: argparse.Namespace):
    from gzipscale.helpers import SpecError

    from .presets import preset_spec
    from .spec import SweepSpec

    if bool(args.preset) == bool(args.spec):
        raise SpecError("give exactly one of --preset NAME or --spec FILE")
    spec = preset_spec(args.preset) if args.preset else SweepSpec.load(args.spec)
    changes: dict = {}
    if getattr(args, "nested", None) is not None:
        changes["nested"] = args.nested
    if getattr(args, "order", None):
        changes["order"] = args.order
    train = {}
    if getattr(args, "schedule", None):
        train["schedule"] = args.schedule
    if getattr(args, "cooldown_fraction", None) is not None:
        train["cooldown_fraction"] = args.cooldown_fraction
    if changes or train:
        spec = spec.with_changes(train=train, **changes)
    if args.name:
        spec = spec.renamed(args.name)
    return spec


def _fmt_flops(x: float) -> str:
    return f"{x:.2e}"


def print_plan(summary: dict, as_json: bool) -> None:
    from gzipscale.helpers import console as make_console
    from gzipscale.helpers import json_safe

    if as_json:
        print(json.dumps(json_safe(summary), indent=2))
        return
    from rich.table import Table

    console = make_console(stderr=False)
    nested = summary["nested"]
    what = (
        f"{summary['runs']} runs in {summary['trials']} nested-data trials "
        f"(schedule {summary['schedule']})"
        if nested
        else f"{summary['runs']} runs"
    )
    table = Table(
        title=f"sweep {summary['name']}: {what}, {summary['order'].replace('-', ' ')}",
        title_justify="left",
    )
    size_col = "sizes" if nested else "tokens"
    columns = ["#", "dataset", "shape", "params", size_col, "trained tokens", "FLOPs", "resources"]
    for col in columns:
        table.add_column(
            col,
            justify="right"
            if col in ("#", "params", "tokens", "trained tokens", "FLOPs")
            else "left",
        )
    for i, t in enumerate(summary["trial_plan"], 1):
        sizes = [*t["eval_at"], t["tokens"]]
        table.add_row(
            str(i),
            t["dataset"],
            t["shape"],
            f"{t['params']:,}",
            f"{len(sizes)}: {format_size_short(sizes[0])}–{format_size_short(sizes[-1])}"
            if nested
            else f"{t['tokens']:,}",
            f"{t['trained_tokens']:,}",
            _fmt_flops(t["flops"]),
            t["resources"],
        )
    console.print(table)
    console.print(
        f"total compute {_fmt_flops(summary['total_flops'])} FLOPs (6·N·D) on "
        f"{summary['total_tokens']:,} training tokens; largest trial "
        f"{_fmt_flops(summary['largest_run_flops'])}; "
        f"GPUs: {'yes' if summary['use_gpu'] else 'no'}\n"
        f"estimated GPU-hours: {summary['gpu_hours_estimate']:.1f} "
        f"({summary['gpu_hours_assumption']})"
    )
    modes = summary["modes"]
    ind, nes = modes["independent"], modes["nested"]
    console.print(
        "the same grid both ways:\n"
        f"  independent runs ({ind['schedule']}): {ind['trials']} trials, {ind['tokens']:,} "
        f"tokens, {_fmt_flops(ind['flops'])} FLOPs, {ind['gpu_hours_estimate']:.1f} GPU-hours\n"
        f"  nested data ({nes['schedule']}"
        + (f", cooldown {nes['cooldown_fraction']:g}" if nes["schedule"] == "wsd" else "")
        + f"): {nes['trials']} trials, {nes['tokens']:,} tokens, {_fmt_flops(nes['flops'])} "
        f"FLOPs, {nes['gpu_hours_estimate']:.1f} GPU-hours\n"
        f"  nested trains {modes['saving']:.2f}x fewer tokens"
    )
    if "nested_wsd" in modes:
        w = modes["nested_wsd"]
        console.print(
            f"  nested data (wsd, cooldown {w['cooldown_fraction']:g}): {w['trials']} trials, "
            f"{w['tokens']:,} tokens, {_fmt_flops(w['flops'])} FLOPs, "
            f"{w['gpu_hours_estimate']:.1f} GPU-hours ({modes['saving_wsd']:.2f}x fewer tokens)"
        )


def format_size_short(n: int) -> str:
    """A token count for a narrow column: 16384 -> 16.4K, 100000000 -> 100M."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def _quiet_tune() -> None:
    """Our display replaces Tune's console output (its experiment box, TensorBoard hint)."""
    import logging

    # Tune's newer console output prints an experiment box and a TensorBoard hint even at
    # verbose=0; the classic reporter at verbose=0 prints nothing.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import dry_run, run_sweep

    spec = load_spec(args)
    if args.dry_run:
        print_plan(dry_run(spec), args.json)
        return 0
    say = print if not args.json else (lambda text: print(text, file=sys.stderr))
    last = {}

    def on_data(name: str, done: int, total: int) -> None:
        if done == total or done - last.get(name, 0) >= max(1, total // 10):
            last[name] = done
            say(f"data {name}: {done}/{total} blocks")

    from .storage import is_uri, join, resolve_storage
    from .watch import LiveDisplay

    storage = resolve_storage(args.storage)
    if not is_uri(storage):  # before Ray starts; a URI's store is checked when it is opened
        from gzipscale.helpers import writable_destination

        writable_destination(join(storage, spec.name), "--storage")
    _quiet_tune()
    display = None
    if not args.json and not is_uri(storage):
        # The live display (terminal) or plain event lines and summaries (logs, pipes),
        # read from the run directory like `gzipscale watch`.
        display = LiveDisplay(Path(join(storage, spec.name)), spec.name, offline_fits=False)
    try:
        if display is not None:
            display.start()
        outcome = run_sweep(spec, storage, address=args.address, on_data_progress=on_data, say=say)
    finally:
        if display is not None:
            display.stop()
    payload = outcome.to_dict()
    if args.json:
        from gzipscale.helpers import json_safe

        print(json.dumps(json_safe(payload), indent=2))
    else:
        print(
            f"sweep {spec.name}: {outcome.finished} finished, {len(outcome.failed)} failed, "
            f"{outcome.missing} not run, of {outcome.runs}"
            + (f" ({outcome.trials} nested-data trials)" if spec.nested else "")
            + f", in {outcome.wall_s:.0f} s\n"
            f"results: {os.path.join(outcome.run_dir, 'results.csv')}"
        )
        for row in outcome.failed:
            print(f"  failed: {row['dataset']} {row['shape']} D={row['tokens']}: {row['reason']}")
        if outcome.report:
            print(f"report: {outcome.report}/report.md")
        elif outcome.report_note:
            print(f"no report: {outcome.report_note}")
    if outcome.missing:
        print(
            f"gzipscale sweep: {outcome.missing} runs did not finish; run the same command "
            "again to resume",
            file=sys.stderr,
        )
        return 1
    if outcome.failed:
        # A sweep with failed runs is not a success, even when nothing is left to resume.
        print(
            f"gzipscale sweep: {len(outcome.failed)} of {outcome.runs} runs failed; the reasons "
            f"are in {os.path.join(outcome.run_dir, 'results.csv')} (column reason)",
            file=sys.stderr,
        )
        return 1
    return 0
