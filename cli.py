"""The ``gzipscale`` command line: every subcommand and every flag is declared here, and only
here; each command's work is a ``cmd_*`` function in its stage's package, imported only when
that command runs (so ``--help`` loads neither torch nor Ray).

Top layer: nothing in the project imports this module. A refusal meant for the user is a
:class:`~gzipscale.helpers.UserError`: it prints one line and exits with status 2. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Short runs checkpoint every few seconds by design (a lost node costs little); Tune's
# warning about frequent experiment snapshots is noise for these sweeps.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Before numpy loads: the fits call BLAS on 5-parameter problems thousands of times, and
# OpenBLAS's worker threads then spin for the CPU (a fit ran 8x slower on a busy 2-core
# machine). Nothing in this program gains from threaded BLAS.
# (Only OpenBLAS, numpy's and scipy's BLAS: torch's own thread pool is left alone.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from gzipscale.helpers import UserError  # noqa: E402
from gzipscale.trainers.shapes import PAPER_VOCAB  # noqa: E402
from gzipscale.vocabulary import (  # noqa: E402
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    DATASET_EVAL_TOKENS,
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_LAW_CHOICE,
    DEFAULT_STORAGE,
    FLOOR_FIT,
    FREE_FIT,
    LAW_CHOICES,
    REFERENCE_BUDGET,
    SAMPLER_MODES,
)

# -- argument types -------------------------------------------------------------------


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be finite and > 0, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# -- flags shared by several commands, declared once ---------------------------------------

SHARED_FLAGS: dict[str, dict] = {
    "--address": dict(
        help="Ray cluster address (default: RAY_ADDRESS, else an embedded cluster)",
    ),
    "--json": dict(action="store_true", help="print the result as JSON"),
    "--context-length": dict(
        type=int,
        default=DEFAULT_CONTEXT_LENGTH,
        help=f"tokens per document (default {DEFAULT_CONTEXT_LENGTH})",
    ),
    "--sampler": dict(
        choices=SAMPLER_MODES,
        default="prefix",
        help="'prefix' (default): the grammar as written, documents are prefixes of possibly "
        "infinite sentences; 'finite': conditioned on finite sentences",
    ),
    "--workers": dict(type=int, help="most tasks at once (default: every CPU of the cluster)"),
    "--bootstrap": dict(
        type=non_negative_int,
        default=BOOTSTRAP_RESAMPLES,
        metavar="K",
        help=f"bootstrap resamples for the intervals (default {BOOTSTRAP_RESAMPLES}; 0: none)",
    ),
    "--law": dict(
        choices=LAW_CHOICES,
        default=DEFAULT_LAW_CHOICE,
        help=f"which fit drives frontiers and regressions where a dataset has a floor: "
        f"'{FLOOR_FIT}' (default: E held at the exact floor, a 4-parameter fit of L - floor) "
        f"or '{FREE_FIT}' (the paper's 5-parameter fit); both are shown",
    ),
}


def shared(parser: argparse.ArgumentParser, *flags: str, **overrides) -> None:
    """Add shared flags; ``overrides`` (keyed by dest) replace a flag's help text."""
    for flag in flags:
        options = dict(SHARED_FLAGS[flag])
        dest = flag.lstrip("-").replace("-", "_")
        if dest in overrides:
            options["help"] = overrides[dest]
        parser.add_argument(flag, **options)


def fit_options(parser: argparse.ArgumentParser, budget_help: str) -> None:
    """--bootstrap, --seed, --budget and --law, for the commands that fit (fit, report)."""
    shared(parser, "--bootstrap", "--law")
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=BOOTSTRAP_SEED,
        help=f"bootstrap seed (default {BOOTSTRAP_SEED})",
    )
    parser.add_argument(
        "--budget",
        type=positive_float,
        default=REFERENCE_BUDGET,
        metavar="FLOPS",
        help=f"{budget_help} (default {REFERENCE_BUDGET:g})",
    )


# -- the commands -----------------------------------------------------------------------
# Each adder declares one command's arguments; COMMANDS lists them with their implementation.


def add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--grammar",
        required=True,
        metavar="NT,T,LEN,OPTS",
        help="nonterminals, terminals, max right-hand-side length, max options, e.g. 20,300,5,10",
    )
    p.add_argument("--seed", type=int, default=0, help="grammar and sampling seed (default 0)")
    p.add_argument("--tokens", required=True, help="training tokens, e.g. 100K, 10M")
    p.add_argument(
        "--eval-tokens",
        default=f"{DATASET_EVAL_TOKENS // 1000}K",
        help=f"held-out tokens (default {DATASET_EVAL_TOKENS // 1000}K)",
    )
    p.add_argument("--out", help="dataset directory (default data/<grammar>-<tokens>)")
    p.add_argument(
        "--repair",
        action="store_true",
        help="regenerate exactly the missing or altered shards of a complete dataset "
        "(byte-identical: each shard is a pure function of the spec)",
    )
    shared(p, "--context-length", "--sampler", "--workers", "--address", "--json")


def add_gzip(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="dataset directory, Parquet file (list-of-ints column), .npy file, or text files",
    )
    p.add_argument("--text", action="store_true", help="treat every PATH as text (score its bytes)")
    p.add_argument(
        "--real",
        action="store_true",
        help="also score real code and prose that ship with Python, as text and as byte tokens",
    )
    p.add_argument(
        "--plot", metavar="FILE.png", help="also draw every corpus's per-document H as a box plot"
    )
    shared(p, "--context-length", "--json")


def add_grammar(p: argparse.ArgumentParser) -> None:
    p.add_argument("grammar", metavar="NT,T,LEN,OPTS", help="e.g. 20,300,5,10")
    p.add_argument("--seed", type=int, default=0, help="grammar seed (default 0)")
    p.add_argument("--seeds", help="several seeds: 0-4 or 1,5,9 (overrides --seed)")
    p.add_argument(
        "--text", action="store_true", help="print the grammar's text form (NLTK-loadable) and exit"
    )
    p.add_argument(
        "--score",
        metavar="TOKENS",
        help="sample this many tokens per seed (one process) and report H",
    )
    p.add_argument(
        "--floor",
        action="store_true",
        help="compute each seed's floor: the exact Bayes-optimal loss per predicted token on "
        "the documents `gzipscale data` writes (held-out stream), with its standard error, the "
        "derivation-entropy bound and the grammar's ambiguity",
    )
    p.add_argument(
        "--documents",
        type=int,
        default=2000,
        help="held-out documents the floor averages over (default 2000)",
    )
    shared(p, "--sampler", "--context-length", "--json")


def add_series(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--series", help="comma-separated series (default all): same-vocabulary, main, same-H"
    )
    p.add_argument("--seeds", default="0-4", help="grammar seeds: 0-4 or 1,5,9 (default 0-4)")
    p.add_argument(
        "--tokens", default="1M", help="tokens sampled per grammar and seed (default 1M)"
    )
    p.add_argument("--no-real", action="store_true", help="skip the real-data references")
    p.add_argument(
        "--floor-documents",
        type=int,
        default=2000,
        metavar="N",
        help="held-out documents each dataset's floor averages over (default 2000)",
    )
    p.add_argument(
        "--no-floor", action="store_true", help="skip the floors (gzip, lzma and bz2 H only)"
    )
    p.add_argument("--out", metavar="FILE.json", help="also write the table as JSON (atomically)")
    shared(
        p,
        "--context-length",
        "--workers",
        "--address",
        "--json",
        workers="most tasks (scores, floor blocks) run at once (default: every CPU)",
        json="print the table as JSON",
    )


# `gzipscale train` flags that override the preset's TrainConfig field of the same dest.
TRAIN_OVERRIDES = (
    ("--lr", float, "peak learning rate (with --lr-scaling width: at hidden 64)"),
    ("--lr-scaling", str, "width (lr x 64/hidden) or none"),
    ("--schedule", str, "constant, cosine or wsd (warmup-stable-decay, 1-sqrt cooldown)"),
    ("--cooldown-fraction", float, "wsd: the fraction of a run that cools down (default 0.2)"),
    ("--warmup-steps", int, "linear warmup steps (at most a tenth of the run)"),
    ("--batch-size", int, "documents per optimizer step"),
    ("--grad-clip", float, "gradient-norm clip (0 = off)"),
    ("--weight-decay", float, "AdamW weight decay on matrices"),
    ("--eval-tokens", int, "held-out tokens scored at the end"),
    ("--checkpoint-every", int, "steps between checkpoints (0 = end only)"),
    ("--seed", int, "model initialisation seed"),
    ("--vocab", int, "vocabulary size (default: the dataset's; 32001 = the paper's)"),
    ("--param-count", str, "the N reported as params_counted: total or non_embedding"),
    ("--device", str, "auto, cpu or cuda"),
    ("--compile", str, "torch.compile: auto (CUDA only), on or off"),
)
# The TrainConfig field each override sets, where it is not the flag's own name.
TRAIN_OVERRIDE_FIELDS = {"--vocab": "vocab_size"}


def add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vocab",
        type=int,
        default=PAPER_VOCAB,
        help=f"vocabulary size for the counts (default {PAPER_VOCAB}, the paper's)",
    )
    shared(p, "--json", json="print the shapes as JSON")


def add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, metavar="DATASET_DIR", help="a `gzipscale data` directory"
    )
    p.add_argument("--model", required=True, help="shape name (see `gzipscale models`)")
    p.add_argument("--tokens", required=True, help="training tokens D, e.g. 100K, 1M")
    p.add_argument(
        "--eval-at",
        metavar="D,D,...",
        help="also report the held-out loss of these smaller data sizes, each as a run of "
        "that size would (one nested run; schedule constant or wsd), e.g. 16K,64K,256K",
    )
    p.add_argument(
        "--out", required=True, metavar="RUN_DIR", help="run directory (resumes if it exists)"
    )
    p.add_argument(
        "--preset",
        choices=("cpu", "paper"),
        default="cpu",
        help="training defaults: cpu (tiny models on a laptop, default) or paper (lr 5e-5 "
        "constant, batch 32 x 256, no clipping)",
    )
    overrides = {}
    for flag, kind, text in TRAIN_OVERRIDES:
        field = TRAIN_OVERRIDE_FIELDS.get(flag, flag.lstrip("-").replace("-", "_"))
        p.add_argument(flag, dest=field, type=kind, default=None, help=text)
        overrides[field] = None
    p.set_defaults(train_overrides=tuple(overrides))
    shared(p, "--json")


def add_fit(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "path", metavar="PATH", type=_path, help="table (.csv/.parquet) or run directory"
    )
    shared(p, "--json")
    fit_options(p, budget_help="compute budget for the frontier summary")


def add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "corpus",
        metavar="CORPUS",
        type=_path,
        help="dataset directory, .parquet or .npy token file, or text file/directory",
    )
    p.add_argument(
        "--budget", type=positive_float, required=True, metavar="FLOPS", help="e.g. 1e21"
    )
    p.add_argument(
        "--from",
        dest="source",
        type=_path,
        required=True,
        metavar="PATH",
        help="results table (.csv/.parquet) or run directory with 3+ datasets that have gzip",
    )
    p.add_argument("--text", action="store_true", help="score CORPUS as text (its bytes)")
    p.add_argument(
        "--extrapolate",
        action="store_true",
        help="predict even when CORPUS's H lies outside the range of H the regression was "
        "fitted on (refused otherwise); the output says how far outside",
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=BOOTSTRAP_SEED,
        help=f"seed of the interval draws (default {BOOTSTRAP_SEED})",
    )
    shared(
        p,
        "--context-length",
        "--json",
        context_length=f"document length in tokens for scoring (default {DEFAULT_CONTEXT_LENGTH})",
    )


def add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        type=_path,
        help="run directory holding results.csv, or a .csv/.parquet results table",
    )
    p.add_argument(
        "--out",
        type=_path,
        default=None,
        metavar="DIR",
        help="report folder (default RUN_DIR/report, or <table>_report beside a table file); "
        "an existing folder is replaced only if it holds a previous report.md",
    )
    p.add_argument(
        "--reproduction",
        type=_path,
        metavar="FILE.md",
        help="write the reproduction report instead (e.g. docs/reproduction.md): the paper's "
        "claims checked against this sweep, with figures and inputs in FILE/ beside it",
    )
    p.add_argument(
        "--series",
        type=_path,
        metavar="SERIES.json",
        help="with --reproduction: the compressibility table from `gzipscale series --out`",
    )
    fit_options(p, budget_help="reference budget for tokens per parameter")
    shared(p, "--json", json="print {out, files, datasets, skipped, ...} as JSON")


def add_sweep(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="smoke, tiny or paper")
    src.add_argument("--spec", metavar="FILE", help="a sweep spec (TOML, or a saved sweep.json)")
    p.add_argument("--name", help="sweep name (default: the spec's); the run directory's name")
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        metavar="DIR_OR_URI",
        help=f"where run directories go: a path (default ./{DEFAULT_STORAGE}) or a URI such as "
        "s3://bucket/sweeps (needed for multi-node clusters)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan and its cost; run nothing"
    )
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--nested",
        dest="nested",
        action="store_true",
        default=None,
        help="nested data: one trial per grammar and shape, trained to the largest size, "
        "reports every size's row on the way (schedule constant or wsd)",
    )
    data.add_argument(
        "--independent",
        dest="nested",
        action="store_false",
        help="one trial per grammar, shape and data size, each from scratch",
    )
    p.add_argument(
        "--schedule",
        choices=("constant", "cosine", "wsd"),
        help="override the spec's learning-rate schedule (wsd: warmup-stable-decay)",
    )
    p.add_argument(
        "--cooldown-fraction",
        type=float,
        metavar="F",
        help="wsd: the fraction of each size's run that cools down (default 0.2)",
    )
    p.add_argument(
        "--order",
        choices=("longest-first", "cheapest-first"),
        help="which trials start first (default: the spec's, longest-first)",
    )
    shared(p, "--address", "--json", json="print the plan or the outcome as JSON")


def add_watch(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory (STORAGE/NAME) or a name under runs/")
    shared(
        p,
        "--address",
        address="Ray cluster to attach to for live fits (default: RAY_ADDRESS; 'auto' finds a "
        "local one); without one, everything is read from the run directory",
    )
    p.add_argument("--once", action="store_true", help="print the current state once and exit")
    p.add_argument("--plain", action="store_true", help="plain lines even on a terminal")
    p.add_argument("--follow", action="store_true", help="keep watching after every run has ended")


def add_design(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PILOT_RUN_DIR", help="a finished pilot sweep's run directory")
    p.add_argument(
        "--budget-minutes",
        type=positive_float,
        default=12.0,
        help="wall-time budget of the designed sweep, data and report included (default 12)",
    )
    p.add_argument(
        "--slots",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="trials that run at once (default: this machine's CPUs)",
    )
    p.add_argument(
        "--overhead-s",
        type=positive_float,
        default=150.0,
        help="seconds outside the trials: Ray start, data, report (default 150)",
    )
    p.add_argument(
        "--startup-s",
        type=positive_float,
        default=3.0,
        help="fixed seconds per trial on top of its measured training time (default 3)",
    )
    p.add_argument(
        "--min-steps",
        type=positive_int,
        default=128,
        help="no data size below this many optimizer steps (default 128; docs/design.md)",
    )
    p.add_argument(
        "--max-span",
        type=positive_float,
        default=2.0,
        help="largest hi/lo ratio of an exponent's interval a chosen fit may have (default 2)",
    )
    p.add_argument("--name", default="designed", help="the written sweep's name")
    p.add_argument(
        "--out",
        type=_path,
        default=None,
        metavar="SPEC.json",
        help="write the sweep spec here (and the rules' findings to SPEC.design.json); "
        "default: print it",
    )
    p.add_argument("--bootstrap", type=positive_int, default=100, help="resamples per fit")
    p.add_argument("--seed", type=non_negative_int, default=0, help="bootstrap seed")


def add_optimum(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run_dir", metavar="RUN_DIR", type=_path, help="a finished sweep's run directory"
    )
    p.add_argument(
        "--dataset",
        action="append",
        default=None,
        metavar="NAME",
        help="check only this dataset (repeatable; default: every identified one)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="runs trained at once (default: this machine's CPUs)",
    )
    p.add_argument(
        "--min-steps",
        type=positive_int,
        default=128,
        help="no run of the check shorter than this many optimizer steps (default 128)",
    )
    p.add_argument("--bootstrap", type=positive_int, default=BOOTSTRAP_RESAMPLES)
    p.add_argument("--seed", type=non_negative_int, default=BOOTSTRAP_SEED)


def _path(text: str):
    from pathlib import Path

    return Path(text)


# name: (declare arguments, implementation, one-line help, longer description or None)
COMMANDS = {
    "data": (
        add_data,
        "gzipscale.grammars.commands:cmd_data",
        "generate a PCFG dataset with Ray Data (Parquet shards + manifest)",
        None,
    ),
    "gzip": (
        add_gzip,
        "gzipscale.grammars.commands:cmd_gzip",
        "score corpora's gzip compressibility H",
        None,
    ),
    "grammar": (
        add_grammar,
        "gzipscale.grammars.commands:cmd_grammar",
        "describe a random grammar; print its text; score it over seeds",
        None,
    ),
    "series": (
        add_series,
        "gzipscale.grammars.series_command:cmd_series",
        "gzip H of the paper's grammar series over several seeds (its Table 1), with floors",
        "Score every grammar of the paper's three series (same vocabulary, main, same H) with "
        "several seeds, in parallel on Ray: each grammar's H is the median gzip ratio of the "
        "documents `gzipscale data` would write, reported as mean ± sd over seeds, beside the "
        "paper's values and real code and prose; the same ratio with lzma and bz2; and each "
        "dataset's floor (the Bayes-optimal loss per token, as its manifest records it), or "
        "the reason it was refused.",
    ),
    "models": (
        add_models,
        "gzipscale.trainers.commands:cmd_models",
        "list the named model shapes with their parameter counts",
        None,
    ),
    "train": (
        add_train,
        "gzipscale.trainers.commands:cmd_train",
        "train one model on the first D tokens of a dataset; resumable",
        None,
    ),
    "fit": (
        add_fit,
        "gzipscale.analysis.commands:cmd_fit",
        "fit L(N, D) = E + A/N^α + B/D^β per dataset of a results table",
        "Fit the Chinchilla law to every dataset of a results table (CSV, Parquet or a run "
        "directory with results.csv), with bootstrap intervals, the compute-optimal frontier "
        "and, given 3+ datasets with gzip H, the regression of each parameter on H.",
    ),
    "predict": (
        add_predict,
        "gzipscale.analysis.predict_command:cmd_predict",
        "predict a corpus's law and compute-optimal N, D from its gzip H",
        "Score CORPUS's gzip compressibility H, fit every dataset of the table given by --from, "
        "regress the law's parameters on H and predict the law at the corpus's H, with the "
        "compute-optimal model size and tokens for --budget. An H outside the fitted datasets' "
        "range is refused without --extrapolate; a law the regression makes impossible "
        "(negative coefficient, exponent <= 0) is reported as no law, with exit status 2.",
    ),
    "report": (
        add_report,
        "gzipscale.orchestrator.report_command:cmd_report",
        "write a report folder: tables, figures and report.md for a sweep",
        "Fit every dataset of a run directory (or a results table) and write a report folder: "
        "report.md with the paper's Tables 1-3 and the figures (loss against tokens, loss "
        "surface with the compute-optimal frontier, frontiers against Chinchilla's, parameters "
        "against gzip H), the tables as CSV and the figures as PNG. The folder is built beside "
        "the target and swapped in when complete.",
    ),
    "design": (
        add_design,
        "gzipscale.analysis.design_command:cmd_design",
        "choose a sweep's grammars, shapes and data sizes from a pilot sweep, for a budget",
        "Apply the design rules of docs/design.md to a finished pilot sweep: fit every window "
        "of its shapes and data sizes for every grammar (floor-anchored), keep the windows "
        "whose laws are identified (no flag, exponent intervals excluding 0 and narrower than "
        "--max-span, RMS log residual at most 0.05), and write the spec that trains the most "
        "grammars within --budget-minutes.",
    ),
    "optimum": (
        add_optimum,
        "gzipscale.orchestrator.optimum_check:cmd_optimum",
        "train the law's compute-optimal model and its neighbours at a new budget",
        "For each identified grammar of a finished sweep, pick a compute budget the grid does "
        "not contain, train the shape its floor-anchored law calls compute-optimal there and "
        "one on each side (same compute each), and record whether the law's choice measured "
        "best, in RUN_DIR/optimum.json (read by gzipscale report --reproduction).",
    ),
    "sweep": (
        add_sweep,
        "gzipscale.orchestrator.sweep_command:cmd_sweep",
        "run a scaling-law sweep (grammars x shapes x data sizes) on Ray Tune; resumable",
        None,
    ),
    "watch": (
        add_watch,
        "gzipscale.orchestrator.watch:cmd_watch",
        "live view of a sweep (its grid, fits and events); Ctrl-C only detaches",
        None,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gzipscale",
        description="Data-dependent scaling laws: PCFG datasets, gzip compressibility, sweeps "
        "and fits.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (declare, implementation, summary, description) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=description or summary)
        declare(p)
        p.set_defaults(implementation=implementation)
    return parser


def _implementation(spec: str):
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _implementation(args.implementation)(args)
    except UserError as exc:
        print(f"gzipscale {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except OSError as exc:
        # A path the system refused (permission, not a folder, read-only, full) where no
        # check ahead caught it: the user's to fix, so one line, not a traceback.
        from gzipscale.helpers import path_error_message

        message = path_error_message(exc)
        if message is None:
            raise
        print(f"gzipscale {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"gzipscale {args.command}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
