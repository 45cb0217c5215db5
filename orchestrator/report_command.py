"""``gzipscale report``: the report folder of a sweep, from the command line.

:func:`register` adds the subcommand to the CLI's subparsers; the work is done by
:func:`analysis.report.build_report`.  Bad input raises ValueError or
FileNotFoundError with a message meant for the user; the CLI prints it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gzipscale.helpers import InputError, PathNotFound, json_safe


def _sweep_command(run_dir: Path) -> str:
    """The command that makes this run directory: the preset's, when it is one."""
    from gzipscale.orchestrator.presets import PRESETS
    from gzipscale.orchestrator.spec import SweepSpec

    recorded = json.loads((run_dir / "sweep.json").read_text(encoding="utf-8"))
    name = recorded.get("name")
    if name in PRESETS and SweepSpec.from_dict(PRESETS[name]).to_dict() == recorded:
        return f"gzipscale sweep --preset {name}"
    return f"gzipscale sweep --spec {run_dir / 'sweep.json'}"


def _paper_plan() -> dict:
    from gzipscale.orchestrator.presets import preset_spec
    from gzipscale.orchestrator.sweep import dry_run

    return dry_run(preset_spec("paper"))


def _report_command(args: argparse.Namespace) -> str:
    """This command, spelled canonically: what the report says made it."""
    from gzipscale.vocabulary import BOOTSTRAP_RESAMPLES as DEFAULT_BOOTSTRAP
    from gzipscale.vocabulary import BOOTSTRAP_SEED as DEFAULT_SEED
    from gzipscale.vocabulary import DEFAULT_LAW_CHOICE
    from gzipscale.vocabulary import REFERENCE_BUDGET as DEFAULT_BUDGET

    words = ["gzipscale", "report", str(args.run_dir), "--reproduction", str(args.reproduction)]
    if args.series is not None:
        words += ["--series", str(args.series)]
    if args.bootstrap != DEFAULT_BOOTSTRAP:
        words += ["--bootstrap", str(args.bootstrap)]
    if args.seed != DEFAULT_SEED:
        words += ["--seed", str(args.seed)]
    if args.budget != DEFAULT_BUDGET:
        words += ["--budget", f"{args.budget:g}"]
    if args.law != DEFAULT_LAW_CHOICE:
        words += ["--law", args.law]
    return " ".join(words)


def cmd_reproduction(args: argparse.Namespace) -> int:
    from gzipscale.analysis.reproduction import build_reproduction

    if not (args.run_dir / "sweep.json").is_file():
        raise PathNotFound(
            f"{args.run_dir} has no sweep.json; --reproduction needs a sweep's run directory"
        )
    result = build_reproduction(
        args.run_dir,
        args.reproduction,
        series_path=args.series,
        plan=_paper_plan(),
        sweep_command=_sweep_command(args.run_dir),
        bootstrap=args.bootstrap,
        seed=args.seed,
        budget=args.budget,
        report_command=_report_command(args),
        law_choice=args.law,
    )
    if args.json:
        print(json.dumps(json_safe(result), indent=2, allow_nan=False))
        return 0
    print(f"reproduction report written to {result['markdown']} (assets in {result['assets']}/)")
    for v in result["claims"]:
        print(f"  claim {v['claim']}: {v['verdict']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from gzipscale.analysis.report import build_report
    from gzipscale.helpers import writable_destination

    # Before the fits: a destination that cannot be written is known now, not minutes later.
    if args.out is not None:
        writable_destination(args.out, "--out")
    if args.reproduction is not None:
        writable_destination(args.reproduction, "--reproduction", kind="file")
    if args.reproduction is not None:
        if args.out is not None:
            raise InputError(
                "--out and --reproduction exclude each other: --reproduction FILE.md writes "
                "FILE.md and its folder FILE/ beside it"
            )
        return cmd_reproduction(args)
    if args.series is not None:
        raise InputError("--series goes with --reproduction FILE.md")
    result = build_report(
        args.run_dir,
        args.out,
        bootstrap=args.bootstrap,
        seed=args.seed,
        budget=args.budget,
        law_choice=args.law,
    )
    if args.json:
        print(json.dumps(json_safe(result), indent=2, allow_nan=False))
        return 0
    print(f"report written to {result['out']}/ ({len(result['files'])} files)")
    for name in result["files"]:
        print(f"  {name}")
    for name, reason in result["skipped"].items():
        print(f"skipped {name}: {reason}")
    return 0
