"""``gzipscale models`` and ``gzipscale train``.

:func:`register` adds both subcommands to the CLI's subparsers. Bad input raises
ValueError (or a subclass) with a message for the user; the CLI prints it and exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from .shapes import PAPER_VOCAB, SHAPES

TRAIN_OVERRIDES = (
    # (flag, TrainConfig field, type, help)
    ("--lr", "lr", float, "peak learning rate (with --lr-scaling width: at hidden 64)"),
    ("--lr-scaling", "lr_scaling", str, "width (lr x 64/hidden) or none"),
    ("--schedule", "schedule", str, "constant or cosine"),
    ("--warmup-steps", "warmup_steps", int, "linear warmup steps (at most a tenth of the run)"),
    ("--batch-size", "batch_size", int, "documents per optimizer step"),
    ("--grad-clip", "grad_clip", float, "gradient-norm clip (0 = off)"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay on matrices"),
    ("--eval-tokens", "eval_tokens", int, "held-out tokens scored at the end"),
    ("--checkpoint-every", "checkpoint_every", int, "steps between checkpoints (0 = end only)"),
    ("--seed", "seed", int, "model initialisation seed"),
    ("--vocab", "vocab_size", int, "vocabulary size (default: the dataset's; 32001 = the paper's)"),
    (
        "--param-count",
        "param_count",
        str,
        "the N reported as params_counted: total or non_embedding",
    ),
    ("--device", "device", str, "auto, cpu or cuda"),
    ("--compile", "compile", str, "torch.compile: auto (CUDA only), on or off"),
)


def cmd_models(args: argparse.Namespace) -> int:
    from gzipscale.helpers import check_int_field

    vocab = check_int_field("vocab", args.vocab, 0, 1 << 24)
    rows = [shape.to_dict(vocab) for shape in SHAPES.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"model shapes at vocabulary {vocab}", title_justify="left")
    for col in ("name", "hidden", "inter", "L", "heads", "params", "non-emb"):
        table.add_column(col, justify="left" if col == "name" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["name"],
            str(r["hidden"]),
            str(r["intermediate"]),
            str(r["layers"]),
            str(r["heads"]),
            f"{r['params']:,}",
            f"{r['non_embedding_params']:,}",
        )
    Console().print(table)
    return 0


def build_spec(args: argparse.Namespace):
    from gzipscale.helpers import parse_size

    from .config import preset
    from .shapes import get_shape
    from .train import RunSpec

    get_shape(args.model)  # unknown shape: fail before anything else
    overrides = {field: getattr(args, field) for _, field, _, _ in TRAIN_OVERRIDES}
    config = preset(args.preset).with_overrides(**overrides)
    return RunSpec(
        data=os.path.abspath(args.data),
        model=args.model,
        tokens=parse_size(args.tokens, "tokens"),
        config=config,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .data import load_run_data
    from .run_dir import plot_curve, prepare_run_dir, write_result
    from .session import LocalSession
    from .train import train_run

    spec = build_spec(args)
    run_dir = Path(args.out)
    # Read and check the data before the run directory is created: a run that cannot
    # start must not leave a directory that later refuses the corrected command.
    data = load_run_data(spec.data, spec.tokens, spec.config.eval_tokens)
    done = prepare_run_dir(run_dir, spec)
    console = Console(stderr=True, highlight=False)
    if done is not None:
        console.print(f"{run_dir}: this run already finished; its result:")
        _print_result(done, args.json)
        return 0 if done["status"] == "finished" else 1

    last_line = [0.0]
    progress = _progress(console)

    def on_step(m: dict) -> None:
        text = (
            f"step {m['step']}/{m['steps']}  loss {m['train_loss']:.4f}  "
            f"{m['tokens_per_s']:,.0f} tok/s"
        )
        if progress is None:
            now = time.perf_counter()
            if m["step"] == m["steps"] or now - last_line[0] > 10:
                last_line[0] = now
                console.print(f"train {spec.model}: {text}")
            return
        if not progress.tasks:
            progress.add_task("train", total=m["steps"], info="")
        progress.update(progress.tasks[0].id, completed=m["step"], info=text)

    session = LocalSession(run_dir, keep=spec.config.keep_checkpoints)
    if progress is not None:
        with progress:
            result = train_run(spec, session=session, data=data, on_step=on_step)
    else:
        result = train_run(spec, session=session, data=data, on_step=on_step)
    write_result(run_dir, result)
    payload = result.to_dict()
    plot_curve(run_dir, payload)
    _print_result(payload, args.json)
    if not result.ok:
        print(f"gzipscale train: run failed: {result.reason}", file=sys.stderr)
        return 1
    return 0


def _progress(console):
    if not console.is_terminal:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]train[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _print_result(result: dict, as_json: bool) -> None:
    if as_json:
        from gzipscale.helpers import json_safe

        print(json.dumps(json_safe(result), indent=2))
        return
    from rich.console import Console

    val = result["val_loss"]
    loss = f"{val:.4f} ± {result['val_loss_se']:.4f}" if math.isfinite(val or math.nan) else "—"
    Console(highlight=False).print(
        f"[bold]{result['model']}[/] on {result['dataset']}: {result['status']}"
        f"{' (' + result['reason'] + ')' if result['reason'] else ''}\n"
        f"  held-out loss {loss} nats/token ({result['eval_tokens']:,} tokens)\n"
        f"  N = {result['params']:,} (non-embedding {result['non_embedding_params']:,}), "
        f"vocab {result['vocab_size']}\n"
        f"  D = {result['tokens']:,} tokens: {result['steps']} steps "
        f"of {result['batch_size']} x {result['context_length']}\n"
        f"  {result['tokens_per_s']:,.0f} tokens/s, {result['wall_s']:.1f} s wall, "
        f"{result['device']} {result['dtype']}"
    )


def register(sub) -> None:
    p = sub.add_parser("models", help="list the named model shapes with their parameter counts")
    p.add_argument(
        "--vocab",
        type=int,
        default=PAPER_VOCAB,
        help=f"vocabulary size for the counts (default {PAPER_VOCAB}, the paper's)",
    )
    p.add_argument("--json", action="store_true", help="print the shapes as JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "train", help="train one model on the first D tokens of a dataset; resumable"
    )
    p.add_argument(
        "--data", required=True, metavar="DATASET_DIR", help="a `gzipscale data` directory"
    )
    p.add_argument("--model", required=True, help="shape name (see `gzipscale models`)")
    p.add_argument("--tokens", required=True, help="training tokens D, e.g. 100K, 1M")
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
    for flag, field, kind, text in TRAIN_OVERRIDES:
        p.add_argument(flag, dest=field, type=kind, default=None, help=text)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_train)
