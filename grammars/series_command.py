"""``gzipscale series``: the compressibility table of the paper's grammar series.

Every (grammar, seed) is one Ray task (:func:`grammars.series.score_grammar`: gzip H and
the same ratio with lzma and bz2), and so is every eval block of its floor
(:func:`grammars.floor.score_block`, as the manifest's floor is computed), so the table is
built on every CPU of the cluster; the result does not depend on how many workers ran it.
The JSON written with ``--out`` is what ``gzipscale report --reproduction`` reads for its
compressibility section, and what :mod:`analysis.compressor_floor` regresses the floor on.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from gzipscale import helpers
from gzipscale.helpers import InputError

from .floor import DEFAULT_FLOOR_DOCUMENTS


def _floor_cause(exc: BaseException):
    """The FloorError behind an exception from ``ray.get`` (Ray's task error is usually an
    instance of the task's own error class, else it carries it as ``cause``), or None."""
    from .floor import FloorError

    cause = getattr(exc, "cause", None)
    if isinstance(cause, FloorError):
        return cause
    return exc if isinstance(exc, FloorError) else None


def timed_score_block(spec, block: int, documents: int, max_items: int):
    """:func:`grammars.floor.score_block` and the seconds it took (a Ray task)."""
    from .floor import score_block

    start = time.perf_counter()
    return score_block(spec, block, documents, max_items), time.perf_counter() - start


def _floor_cost(grammar: str) -> int:
    """A rough order of a floor's cost (bigger grammars parse longer sentences): the
    longest floors start first, so none is left running alone at the end. Only the wall
    time depends on it."""
    from .spec import GrammarSpec

    spec = GrammarSpec.parse(grammar)
    return spec.nonterminals * spec.max_rhs_len


def score_series(
    grammars: list[str],
    seeds: list[int],
    tokens: int,
    *,
    context_length: int = 256,
    sampler: str = "prefix",
    floor_documents: int | None = None,
    max_items: int | None = None,
    workers: int | None = None,
    on_progress=None,
) -> list:
    """Score every grammar with every seed, in parallel Ray tasks; with ``floor_documents``,
    also each dataset's floor from that many eval documents.

    Each (grammar, seed) is one task (:func:`grammars.series.score_grammar`: gzip, lzma and
    bz2 of the same documents), and each floor is one task per eval block
    (:func:`grammars.floor.score_block`), joined in block order by
    :func:`grammars.floor.combine_blocks`: the decomposition of
    :func:`grammars.pipeline.compute_floor`, the manifest's floor, so the numbers are the
    manifest's and those of ``gzipscale grammar --floor`` on any number of workers. All of
    them share one queue of at most ``workers`` tasks in flight. A floor refused with a
    FloorError (a chart past ``max_items`` items, numbers out of float64 range) records
    the reason (:func:`grammars.series.floor_refusal`); its other blocks are dropped and
    the series goes on. Returns the :class:`~grammars.series.SeedScore` records in
    (grammar, seed) order, each with its ``floor`` (None without ``floor_documents``) and
    ``floor_s``, the seconds its floor's block tasks ran (summed).
    """
    import dataclasses
    from collections import deque

    import ray

    from .floor import combine_blocks, floor_blocks
    from .prefix_probability import DEFAULT_MAX_ITEMS
    from .series import floor_dataset, floor_record, floor_refusal, score_grammar

    items = DEFAULT_MAX_ITEMS if max_items is None else max_items
    score_task = ray.remote(num_cpus=1, max_retries=3)(score_grammar)
    block_task = ray.remote(num_cpus=1, max_retries=3)(timed_score_block)
    specs = {}
    floor_jobs = []
    if floor_documents is not None:
        for g in sorted(grammars, key=_floor_cost, reverse=True):
            for s in seeds:
                spec = specs[g, s] = floor_dataset(
                    g, s, context_length=context_length, sampler=sampler
                )
                floor_jobs += [("floor", g, s, b) for b in floor_blocks(spec, floor_documents)]
    n_blocks = {key: sum(1 for j in floor_jobs if j[1:3] == key) for key in specs}
    queue = deque(floor_jobs + [("score", g, s, None) for g in grammars for s in seeds])
    total = len(grammars) * len(seeds) + len(specs)
    pending: dict = {}
    scores: dict = {}
    floors: dict = {}
    blocks: dict = {key: [] for key in specs}
    floor_s: dict = dict.fromkeys(specs, 0.0)
    limit = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def progress(what: str) -> None:
        if on_progress is not None:
            on_progress(len(scores) + len(floors), total, what)

    while queue or pending:
        # At most ``limit`` tasks in flight, so progress means something and a small
        # --workers really caps the load.
        while queue and len(pending) < limit:
            kind, g, s, b = job = queue.popleft()
            if kind == "floor":
                if (g, s) in floors:  # refused by another block: skip the rest
                    continue
                ref = block_task.remote(specs[g, s], b, floor_documents, items)
            else:
                ref = score_task.remote(
                    g, s, tokens, context_length=context_length, sampler=sampler
                )
            pending[ref] = job
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            kind, g, s, _ = pending.pop(ref)
            key = (g, s)
            if kind == "score":
                score = scores[key] = ray.get(ref)
                progress(
                    f"{g} seed {s}: H {score.median:.4f}, lzma {score.lzma_median:.4f}, "
                    f"bz2 {score.bz2_median:.4f}, {score.wall_s:.1f} s"
                )
                continue
            if key in floors:
                continue  # a block of a floor already refused
            try:
                block, seconds = ray.get(ref)
                blocks[key].append(block)
                floor_s[key] += seconds
                if len(blocks[key]) < n_blocks[key]:
                    continue
                floor = floors[key] = floor_record(combine_blocks(specs[key], blocks.pop(key)))
                progress(f"{g} seed {s}: floor {floor['nats_per_token']:.4f} nats/token")
            except Exception as exc:
                cause = _floor_cause(exc)
                if cause is None:
                    raise
                blocks.pop(key, None)
                floors[key] = floor_refusal(cause)
                progress(f"{g} seed {s}: floor refused ({floors[key]['error']})")
    order = {g: i for i, g in enumerate(grammars)}
    return [
        dataclasses.replace(scores[key], floor=floors.get(key), floor_s=floor_s.get(key))
        for key in sorted(scores, key=lambda k: (order[k[0]], k[1]))
    ]


def compressibility_table(
    series: list[str],
    seeds: list[int],
    tokens: int,
    *,
    context_length: int = 256,
    workers: int | None = None,
    real: bool = True,
    floor_documents: int | None = None,
    on_progress=None,
) -> dict:
    """Score every grammar of ``series`` with every seed, in parallel Ray tasks
    (:func:`score_series`; with ``floor_documents``, each dataset's floor too).

    Returns the JSON-ready table: settings, per-seed scores, one row per grammar
    (:func:`grammars.series.summarise`) and, with ``real``, the real-data references
    (:func:`grammars.corpora.real_data_scores`).
    """
    from .corpora import real_data_scores
    from .gzip_metric import COMPRESSORS
    from .series import SERIES_FORMAT, series_grammars, summarise

    grammars = series_grammars(series)
    start = time.perf_counter()
    scores = score_series(
        grammars,
        seeds,
        tokens,
        context_length=context_length,
        floor_documents=floor_documents,
        workers=workers,
        on_progress=on_progress,
    )
    rows = summarise(scores, series)
    table = {
        "format": SERIES_FORMAT,
        "series": list(series),
        "seeds": list(seeds),
        "tokens": tokens,
        "context_length": context_length,
        "sampler": "prefix",
        "compressors": dict(COMPRESSORS),
        "floor_documents": floor_documents,
        "rows": [r.to_dict() for r in rows],
        "scores": [s.to_dict() for s in scores],
        "real": [c.to_dict() for c in real_data_scores(context_length)] if real else [],
    }
    table["wall_s"] = time.perf_counter() - start
    return table


def _command_line(args: argparse.Namespace) -> str:
    """The command that makes this table, spelled canonically (recorded in the JSON)."""
    words = ["gzipscale", "series"]
    if args.series:
        words += ["--series", args.series]
    words += ["--seeds", args.seeds, "--tokens", args.tokens]
    if args.context_length != 256:
        words += ["--context-length", str(args.context_length)]
    if args.no_floor:
        words.append("--no-floor")
    elif args.floor_documents != DEFAULT_FLOOR_DOCUMENTS:
        words += ["--floor-documents", str(args.floor_documents)]
    if args.no_real:
        words.append("--no-real")
    if args.out:
        words += ["--out", str(args.out)]
    return " ".join(words)


def cmd_series(args: argparse.Namespace) -> int:

    from gzipscale.helpers import (
        atomic_write_json,
        check_int_field,
        ensure_ray,
        parse_seeds,
        parse_size,
    )

    from .series import PAPER_SERIES, series_grammars

    series = [s.strip() for s in args.series.split(",")] if args.series else list(PAPER_SERIES)
    series_grammars(series)  # refuses an unknown series before Ray starts
    seeds = parse_seeds(args.seeds)
    for s in seeds:
        check_int_field("seeds", s, 0, 2**63 - 1)
    tokens = parse_size(args.tokens, "tokens")
    if args.workers is not None:
        check_int_field("workers", args.workers, 1, 1 << 16)
    floor_documents = None
    if not args.no_floor:
        floor_documents = check_int_field("floor_documents", args.floor_documents, 2, 1_000_000)
    if args.out and Path(args.out).is_dir():
        raise InputError(f"--out {args.out} is a folder; give a file name such as series.json")
    if args.out:
        helpers.writable_destination(args.out, "--out", kind="file")  # before Ray starts
    console = helpers.console()
    ensure_ray(address=args.address)
    last = [0.0]

    def on_progress(done: int, total: int, what: str) -> None:
        now = time.perf_counter()
        if done == total or now - last[0] > 5 or console.is_terminal:
            last[0] = now
            console.print(f"series: {done}/{total} done ({what})")

    table = compressibility_table(
        series,
        seeds,
        tokens,
        context_length=args.context_length,
        workers=args.workers,
        real=not args.no_real,
        floor_documents=floor_documents,
        on_progress=on_progress,
    )
    table["command"] = _command_line(args)
    if args.out:
        atomic_write_json(Path(args.out), table)
        console.print(f"table written to {os.path.abspath(args.out)} in {table['wall_s']:.0f} s")
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    from rich.table import Table

    title = f"gzip H per grammar: median over documents, mean ± sd over seeds {args.seeds}"
    title += "; lzma and bz2 H: means over seeds"
    if floor_documents is not None:
        title += f"; floor: nats/token from {floor_documents} eval documents, mean ± sd"
    out = Table(title=title)
    columns = ("series", "grammar", "paper H", "H mean ± sd", "min–max", "lzma", "bz2")
    columns += ("floor", "P(finite)")
    for col in columns:
        out.add_column(col, justify="left" if col in ("series", "grammar") else "right")
    for r in table["rows"]:
        paper = [v for v in r["paper_H"].values() if v is not None]
        out.add_row(
            ", ".join(r["series"]),
            r["grammar"],
            f"{paper[0]:.2f}" if paper else "-",
            f"{r['H_mean']:.4f} ± {r['H_sd']:.4f}",
            f"{r['H_min']:.3f}–{r['H_max']:.3f}",
            f"{r['lzma_mean']:.4f}",
            f"{r['bz2_mean']:.4f}",
            _floor_cell(r, floor_documents is not None),
            f"{r['p_finite_min']:.3f}",
        )
    for c in table["real"]:
        out.add_row(
            "real data", f"{c['name']} ({c['kind']})", "-", f"{c['median']:.4f}", "", "", "", "", ""
        )
    printer = helpers.console(stderr=False)
    printer.print(out)
    for r in table["rows"]:
        for refused in r["floor_refused"]:
            printer.print(
                f"floor refused: {r['grammar']} seed {refused['seed']}: {refused['reason']}"
            )
    return 0


def _floor_cell(row: dict, computed: bool) -> str:
    """A row's floor: mean ± sd over the seeds that have one, and how many were refused."""
    if not computed:
        return "-"
    refused = len(row["floor_refused"])
    if row["floor_mean"] is None:
        return f"refused ({refused}/{refused})"
    cell = f"{row['floor_mean']:.4f} ± {row['floor_sd']:.4f}"
    if refused:
        cell += f" ({refused} refused)"
    return cell
