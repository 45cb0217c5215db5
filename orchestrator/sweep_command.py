"""``gzipscale sweep``: plan (``--dry-run``) or run a sweep from a preset or a spec file.

A finished sweep is recognised before Ray starts (:func:`finished_runs`): when every
planned run of the spec has a finished row in the run directory's results.csv, there is
nothing to train, and the command only checks its report. The report is up to date when
the stamp beside it (``report/.inputs.json``, :func:`report_stamp`) records the SHA-256 of
every file the report was built from (results.csv, sweep.json, the per-position losses,
the datasets' manifests), the options it was built with, and the SHA-256 of every file of
the report itself, and all of them match the files now. Then nothing is written at all.
Otherwise (no stamp, an input or a report file changed, a report file missing) only the
report is rebuilt, under the driver lock, without Ray. Content hashes rather than mtimes:
a copied or restored run directory, or a coarse-mtime file system, cannot make a stale
report look fresh; a missing stamp (a report written by ``gzipscale report``, or before
stamps) only costs one rebuild. A sweep with a failed run is not finished: it goes to
Ray Tune as before, which retries it. URI storage always goes to the driver.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gzipscale.helpers import file_sha256


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


# -- a finished sweep: nothing to run, the report checked against its inputs ------------------

REPORT_STAMP = ".inputs.json"  # in the report folder: what the report was built from


def _report_options() -> dict:
    """The options the sweep builds its report with (build_report's defaults)."""
    from gzipscale.vocabulary import (
        BOOTSTRAP_RESAMPLES,
        BOOTSTRAP_SEED,
        DEFAULT_LAW_CHOICE,
        REFERENCE_BUDGET,
    )

    return {
        "bootstrap": BOOTSTRAP_RESAMPLES,
        "seed": BOOTSTRAP_SEED,
        "budget": REFERENCE_BUDGET,
        "law": DEFAULT_LAW_CHOICE,
    }


def report_inputs(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every file a sweep's report is built from, by path in ``run_dir``."""
    from gzipscale.vocabulary import (
        DATA_DIR,
        MANIFEST_FILE,
        POSITIONS_DIR,
        RESULTS_FILE,
        SWEEP_SPEC_FILE,
    )

    paths = [run_dir / RESULTS_FILE, run_dir / SWEEP_SPEC_FILE]
    paths += sorted((run_dir / POSITIONS_DIR).glob("*.json"))
    paths += sorted((run_dir / DATA_DIR).glob(f"*/{MANIFEST_FILE}"))
    return {str(p.relative_to(run_dir)): file_sha256(p) for p in paths if p.is_file()}


def report_stamp(run_dir: Path) -> dict:
    """What the report of ``run_dir`` is now made from and made of: the stamp a report
    that is up to date carries (``report/.inputs.json``)."""
    from gzipscale.vocabulary import REPORT_DIR

    report = run_dir / REPORT_DIR
    outputs = {}
    if report.is_dir():
        outputs = {
            str(p.relative_to(report)): file_sha256(p)
            for p in sorted(report.rglob("*"))
            if p.is_file() and p.name != REPORT_STAMP
        }
    return {
        "options": _report_options(),
        "inputs": report_inputs(run_dir),
        "outputs": outputs,
    }


def report_up_to_date(run_dir: Path) -> bool:
    """Whether ``run_dir``'s report exists and its stamp matches its inputs and files."""
    from gzipscale.vocabulary import REPORT_DIR

    report = run_dir / REPORT_DIR
    try:
        recorded = json.loads((report / REPORT_STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (report / "report.md").is_file() and recorded == report_stamp(run_dir)


def write_report_stamp(run_dir: Path) -> None:
    from gzipscale.helpers import atomic_write_bytes
    from gzipscale.vocabulary import REPORT_DIR

    stamp = json.dumps(report_stamp(run_dir), indent=1, sort_keys=True) + "\n"
    atomic_write_bytes(run_dir / REPORT_DIR / REPORT_STAMP, stamp.encode())


def _driver_busy(run_dir: Path) -> bool:
    """Whether a driver holds the run directory's lock now (read-only: writes nothing)."""
    import fcntl

    from .lock import LOCK_FILE

    try:
        handle = open(run_dir / LOCK_FILE, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def finished_runs(spec, run_dir: Path, check_lock: bool = True) -> tuple[int, int] | None:
    """(runs, trials) when every planned run of ``spec`` has a finished row in
    ``run_dir``'s results.csv and the directory holds this spec; else None (the sweep
    goes to the driver: something to run or retry, another spec to refuse, a driver
    that holds it, a table it must judge). Reads only."""
    from gzipscale.analysis.results import read_results_csv
    from gzipscale.vocabulary import FINISHED, RESULTS_FILE, SWEEP_SPEC_FILE, RunKey

    from .plan import plan_trials, runs_of

    spec_path, results = run_dir / SWEEP_SPEC_FILE, run_dir / RESULTS_FILE
    if not (spec_path.is_file() and results.is_file()):
        return None
    try:
        if spec.differences(json.loads(spec_path.read_text(encoding="utf-8"))):
            return None
        rows = {row.key: row for row in read_results_csv(results)}
    except (OSError, ValueError):
        return None  # the driver says what is wrong, as it always has
    trials = plan_trials(spec, use_gpu=False)  # GPUs change resources, not runs
    planned = {RunKey.of(run) for trial in trials for run in runs_of(trial, spec)}
    if any(key not in rows or rows[key].status != FINISHED for key in planned):
        return None
    if check_lock and _driver_busy(run_dir):
        return None
    return len(planned), len(trials)


def finish_without_running(spec, run_dir: Path, runs: int, trials: int, args) -> int | None:
    """A finished sweep's rerun: no Ray, no Tune; the report rebuilt only if stale.
    None if the sweep changed before the lock was taken (the driver then decides)."""
    import time

    from gzipscale.vocabulary import REPORT_DIR

    start = time.perf_counter()
    report_dir = run_dir / REPORT_DIR
    regenerated, note = False, ""
    if not report_up_to_date(run_dir):
        from .lock import driver_lock

        with driver_lock(str(run_dir)):
            if finished_runs(spec, run_dir, check_lock=False) is None:
                return None  # changed while the lock was taken: the driver decides
            regenerated, note = True, _rebuild_report(run_dir)
    if not regenerated:
        state = f"report up to date: {report_dir}"
    elif not note:
        state = f"report regenerated: {report_dir}"
    else:
        state = f"no report: {note}"
    if args.json:
        payload = {
            "run_dir": str(run_dir),
            "runs": runs,
            "finished": runs,
            "failed": [],
            "missing": 0,
            "report": None if note else str(report_dir),
            "report_note": note,
            "wall_s": time.perf_counter() - start,
            "trials": trials,
            "nothing_to_run": True,
            "report_regenerated": regenerated,
        }
        print(json.dumps(payload, indent=2))
    else:
        print(f"sweep {spec.name!r}: all {runs} runs finished; nothing to run ({state})")
    return 0


def _rebuild_report(run_dir: Path) -> str:
    """Build the report as the sweep does at its end, and stamp it; '' or why not."""
    from gzipscale.analysis.report import build_report

    options = _report_options()
    try:
        build_report(
            run_dir,
            bootstrap=options["bootstrap"],
            seed=options["seed"],
            budget=options["budget"],
            law_choice=options["law"],
        )
    except (ValueError, FileNotFoundError) as exc:
        return str(exc)
    write_report_stamp(run_dir)
    return ""


def cmd_sweep(args: argparse.Namespace) -> int:
    from .storage import is_uri, join, resolve_storage

    spec = load_spec(args)
    if args.dry_run:
        from .sweep import dry_run

        print_plan(dry_run(spec), args.json)
        return 0
    storage = resolve_storage(args.storage)
    if not is_uri(storage):
        run_dir = Path(join(storage, spec.name))
        finished = finished_runs(spec, run_dir)
        if finished is not None:
            code = finish_without_running(spec, run_dir, *finished, args)
            if code is not None:
                return code
    from .sweep import run_sweep

    say = print if not args.json else (lambda text: print(text, file=sys.stderr))
    last = {}

    def on_data(name: str, done: int, total: int) -> None:
        if done == total or done - last.get(name, 0) >= max(1, total // 10):
            last[name] = done
            say(f"data {name}: {done}/{total} blocks")

    from .watch import LiveDisplay

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
    if outcome.report and not outcome.missing and not is_uri(storage):
        # The report was built from the run directory as it is now (the sweep has ended):
        # its stamp lets the next run of this command leave everything as it is.
        write_report_stamp(Path(outcome.run_dir))
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
