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

from gzipscale.helpers import Progress, console

from .shapes import SHAPES


def cmd_models(args: argparse.Namespace) -> int:
    from gzipscale.helpers import check_int_field

    vocab = check_int_field("vocab", args.vocab, 0, 1 << 24)
    rows = [shape.to_dict(vocab) for shape in SHAPES.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
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
    console(stderr=False).print(table)
    return 0


def build_spec(args: argparse.Namespace):
    from gzipscale.helpers import parse_size

    from .config import preset
    from .shapes import get_shape
    from .train import RunSpec

    get_shape(args.model)  # unknown shape: fail before anything else
    overrides = {field: getattr(args, field) for field in args.train_overrides}
    config = preset(args.preset).with_overrides(**overrides)
    sizes = args.eval_at.split(",") if args.eval_at else []
    return RunSpec(
        data=os.path.abspath(args.data),
        model=args.model,
        tokens=parse_size(args.tokens, "tokens"),
        config=config,
        eval_at=tuple(parse_size(size, "eval_at") for size in sizes),
    )


def cmd_train(args: argparse.Namespace) -> int:
    from gzipscale.helpers import writable_destination

    from .data import load_run_data
    from .run_dir import plot_curve, prepare_run_dir, write_result
    from .session import LocalSession
    from .train import run_vocab, train_run

    spec = build_spec(args)
    run_dir = writable_destination(args.out, "--out")
    # Read and check the data before the run directory is created: a run that cannot
    # start must not leave a directory that later refuses the corrected command.
    data = load_run_data(spec.data, spec.tokens, spec.config.eval_tokens)
    run_vocab(spec.config, data)
    done = prepare_run_dir(run_dir, spec)
    out = console()
    if done is not None:
        out.print(f"{run_dir}: this run already finished; its result:")
        _print_result(done, args.json)
        return 0 if done["status"] == "finished" else 1

    session = LocalSession(run_dir, keep=spec.config.keep_checkpoints)
    with Progress(f"train {spec.model}", out, unit="steps", every_s=10) as progress:

        def on_step(m: dict) -> None:
            text = f"loss {m['train_loss']:.4f}  {m['tokens_per_s']:,.0f} tok/s"
            progress.update(m["step"], m["steps"], text)

        result = train_run(spec, session=session, data=data, on_step=on_step)
    write_result(run_dir, result)
    payload = result.to_dict()
    plot_curve(run_dir, payload)
    _print_result(payload, args.json)
    if not result.ok:
        print(f"gzipscale train: run failed: {result.reason}", file=sys.stderr)
        return 1
    return 0


def _print_result(result: dict, as_json: bool) -> None:
    if as_json:
        from gzipscale.helpers import json_safe

        print(json.dumps(json_safe(result), indent=2))
        return
    val = result["val_loss"]
    loss = f"{val:.4f} ± {result['val_loss_se']:.4f}" if math.isfinite(val or math.nan) else "—"
    console(stderr=False).print(
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
    rows = result.get("rows") or []
    if len(rows) > 1:  # a nested run: one line per data size it reports
        _print_rows(rows, result["trained_tokens"])


def _print_rows(rows: list[dict], trained_tokens: int) -> None:
    from rich.table import Table

    independent = sum(row["tokens"] for row in rows)
    table = Table(
        title=f"{len(rows)} data sizes in one run: {trained_tokens:,} tokens trained "
        f"({independent:,} as separate runs)",
        title_justify="left",
    )
    for col in ("D", "steps", "held-out loss", "± se", "trained so far", "wall s"):
        table.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            f"{row['row_tokens']:,}",
            str(row["step"]),
            f"{row['val_loss']:.4f}",
            f"{row['val_loss_se']:.4f}",
            f"{row['trained_tokens']:,}",
            f"{row['wall_s']:.1f}",
        )
    console(stderr=False).print(table)
