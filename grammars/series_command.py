"""``gzipscale series``: the compressibility table of the paper's grammar series.

Every (grammar, seed) is one Ray task (:func:`grammars.series.score_grammar`), so the
table is built on every CPU of the cluster; the result does not depend on how many
workers ran it.  The JSON written with ``--out`` is what ``gzipscale report
--reproduction`` reads for its compressibility section.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from gzipscale import helpers
from gzipscale.helpers import InputError


def compressibility_table(
    series: list[str],
    seeds: list[int],
    tokens: int,
    *,
    context_length: int = 256,
    workers: int | None = None,
    real: bool = True,
    on_progress=None,
) -> dict:
    """Score every grammar of ``series`` with every seed, in parallel Ray tasks.

    Returns the JSON-ready table: settings, per-seed scores, one row per grammar
    (:func:`grammars.series.summarise`) and, with ``real``, the real-data references
    (:func:`grammars.corpora.real_data_scores`).
    """
    import ray

    from .corpora import real_data_scores
    from .series import SERIES_FORMAT, SeedScore, score_grammar, series_grammars, summarise

    grammars = series_grammars(series)
    jobs = [(g, s) for g in grammars for s in seeds]
    remote = ray.remote(num_cpus=1, max_retries=3)(score_grammar)
    start = time.perf_counter()
    pending: list = []
    scores: list[SeedScore] = []
    queue = list(jobs)
    limit = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    while queue or pending:
        # At most ``limit`` tasks in flight, so progress means something and a small
        # --workers really caps the load.
        while queue and len(pending) < limit:
            g, s = queue.pop(0)
            pending.append(remote.remote(g, s, tokens, context_length=context_length))
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            scores.append(ray.get(ref))
            if on_progress is not None:
                on_progress(len(scores), len(jobs), scores[-1])
    scores.sort(key=lambda s: (grammars.index(s.grammar), s.seed))
    rows = summarise(scores, series)
    table = {
        "format": SERIES_FORMAT,
        "series": list(series),
        "seeds": list(seeds),
        "tokens": tokens,
        "context_length": context_length,
        "sampler": "prefix",
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
    if args.out and Path(args.out).is_dir():
        raise InputError(f"--out {args.out} is a folder; give a file name such as series.json")
    console = helpers.console()
    ensure_ray(address=args.address)
    last = [0.0]

    def on_progress(done: int, total: int, score) -> None:
        now = time.perf_counter()
        if done == total or now - last[0] > 5 or console.is_terminal:
            last[0] = now
            console.print(
                f"series: {done}/{total} scored ({score.grammar} seed {score.seed}: "
                f"H {score.median:.4f}, {score.wall_s:.1f} s)"
            )

    table = compressibility_table(
        series,
        seeds,
        tokens,
        context_length=args.context_length,
        workers=args.workers,
        real=not args.no_real,
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

    out = Table(
        title=f"gzip H per grammar: median over documents, mean ± sd over seeds {args.seeds}"
    )
    for col in ("series", "grammar", "paper H", "H mean ± sd", "min–max", "P(finite)"):
        out.add_column(col, justify="left" if col in ("series", "grammar") else "right")
    for r in table["rows"]:
        paper = [v for v in r["paper_H"].values() if v is not None]
        out.add_row(
            ", ".join(r["series"]),
            r["grammar"],
            f"{paper[0]:.2f}" if paper else "-",
            f"{r['H_mean']:.4f} ± {r['H_sd']:.4f}",
            f"{r['H_min']:.3f}–{r['H_max']:.3f}",
            f"{r['p_finite_min']:.3f}",
        )
    for c in table["real"]:
        out.add_row("real data", f"{c['name']} ({c['kind']})", "-", f"{c['median']:.4f}", "", "")
    helpers.console(stderr=False).print(out)
    return 0
