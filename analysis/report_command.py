"""``gzipscale report``: the report folder of a sweep, from the command line.

:func:`register` adds the subcommand to the CLI's subparsers; the work is done by
:func:`analysis.report.build_report`.  Bad input raises ValueError or
FileNotFoundError with a message meant for the user; the CLI prints it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from analysis.commands import (
    add_fit_options,
    json_safe,
)


def cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import build_report

    result = build_report(
        args.run_dir, args.out, bootstrap=args.bootstrap, seed=args.seed, budget=args.budget
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


def register(subparsers) -> None:
    """Add ``report`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "report",
        help="write a report folder: tables, figures and report.md for a sweep",
        description="Fit every dataset of a run directory (or a results table) and write a "
        "report folder: report.md with the paper's Tables 1-3 and the figures (loss against "
        "tokens, loss surface with the compute-optimal frontier, frontiers against "
        "Chinchilla's, parameters against gzip H), the tables as CSV and the figures as PNG. "
        "The folder is built beside the target and swapped in when complete.",
    )
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        type=Path,
        help="run directory holding results.csv, or a .csv/.parquet results table",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="report folder (default RUN_DIR/report, or <table>_report beside a table file); "
        "an existing folder is replaced only if it holds a previous report.md",
    )
    add_fit_options(p, budget_help="reference budget for tokens per parameter")
    p.add_argument(
        "--json", action="store_true", help="print {out, files, datasets, skipped, ...} as JSON"
    )
    p.set_defaults(func=cmd_report)
