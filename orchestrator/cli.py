"""The ``gzipscale`` command line.

Each subcommand is a thin layer over a library function; errors that come from bad
input (a spec, a path, a dataset that is not the one asked for) print one clear line
and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Short runs checkpoint every few seconds by design (a lost node costs little); Tune's
# warning about frequent experiment snapshots is noise for these sweeps.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Before numpy loads: the fits call BLAS on 5-parameter problems thousands of times, and
# OpenBLAS's worker threads then spin for the CPU (a fit ran 8x slower on a busy 2-core
# machine). Nothing in this program gains from threaded BLAS.
# (Only OpenBLAS, numpy's and scipy's BLAS: torch's own thread pool is left alone.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _console(stderr: bool = True):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # logs and pipes: don't squeeze tables to 80
    return console


# -- gzipscale data ---------------------------------------------------------------------


def cmd_data(args: argparse.Namespace) -> int:
    from gzipscale.grammars.dataset import DatasetSpec
    from gzipscale.grammars.pipeline import generate_dataset
    from gzipscale.grammars.spec import GrammarSpec
    from gzipscale.helpers import check_int_field, ensure_ray, format_size, parse_size

    grammar = GrammarSpec.parse(args.grammar, seed=check_int_field("seed", args.seed, 0, 2**63 - 1))
    spec = DatasetSpec(
        grammar=grammar,
        tokens=parse_size(args.tokens, "tokens"),
        eval_tokens=parse_size(args.eval_tokens, "eval-tokens"),
        context_length=check_int_field("context-length", args.context_length, 1, 1 << 20),
        sampler=args.sampler,
    )
    if args.workers is not None:
        check_int_field("workers", args.workers, 1, 1 << 16)
    out = args.out or os.path.join("data", f"{grammar.name}-{format_size(spec.tokens)}")
    console = _console()
    if args.address:
        ensure_ray(address=args.address)

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    start = time.perf_counter()
    progress = Progress(
        TextColumn(f"[bold]{grammar.short}[/] seed {grammar.seed}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("blocks"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )
    last_line = [0.0]

    def on_progress(done: int, total: int) -> None:
        if progress.disable:
            # Not a terminal (CI, a pipe): a plain line now and then, no control codes.
            now = time.perf_counter()
            if done == total or now - last_line[0] > 5:
                last_line[0] = now
                console.print(f"data {grammar.short} seed {grammar.seed}: {done}/{total} blocks")
            return
        if not progress.tasks:
            progress.add_task("blocks", total=total)
        progress.update(progress.tasks[0].id, completed=done, total=total)

    with progress:
        manifest = generate_dataset(spec, out, workers=args.workers, on_progress=on_progress)
    wall = time.perf_counter() - start
    summary = {
        "out": os.path.abspath(out),
        "name": manifest["name"],
        "reused": manifest["reused"],
        "tokens": manifest["tokens"],
        "documents": manifest["documents"],
        "context_length": manifest["context_length"],
        "grammar": manifest["grammar"],
        "gzip": manifest["gzip"],
        "eval": {k: manifest["eval"][k] for k in ("tokens", "documents", "gzip")},
        "shards": len(manifest["shards"]),
        "wall_s": wall,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        g = manifest["gzip"]
        verb = "reused" if manifest["reused"] else "wrote"
        console.print(
            f"{verb} {manifest['tokens']:,} tokens ({manifest['documents']:,} documents, "
            f"{len(manifest['shards'])} shards) + {manifest['eval']['tokens']:,} eval tokens "
            f"to {summary['out']} in {wall:.1f} s"
        )
        console.print(
            f"gzip H = {g['median']:.4f} (median of {g['n']:,} documents; mean {g['mean']:.4f} "
            f"± {g['std']:.4f}, IQR {g['iqr']:.4f})"
        )
    return 0


# -- gzipscale gzip ---------------------------------------------------------------------


def _scores_table(scores, title: str):
    from rich.table import Table

    table = Table(title=title)
    for col in ("corpus", "kind", "H (median)", "mean", "sd", "IQR", "documents"):
        table.add_column(col, justify="left" if col in ("corpus", "kind") else "right")
    for s in scores:
        st = s.stats
        table.add_row(
            s.name,
            s.kind,
            f"{st.median:.4f}",
            f"{st.mean:.4f}",
            f"{st.std:.4f}",
            f"{st.iqr:.4f}",
            f"{st.n:,}",
        )
    return table


def cmd_gzip(args: argparse.Namespace) -> int:
    from gzipscale.grammars.corpora import real_data_scores, score_path

    if not args.paths and not args.real:
        raise ValueError("give at least one PATH to score, or --real for the real-data references")
    scores = []
    for path in args.paths:
        scores += score_path(path, text=args.text, context_length=args.context_length)
    if args.real:
        scores += real_data_scores(args.context_length)
    if args.plot:
        from gzipscale.grammars.corpora import plot_scores

        print(f"figure written to {plot_scores(scores, args.plot)}", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {"context_length": args.context_length, "corpora": [s.to_dict() for s in scores]},
                indent=2,
            )
        )
    else:
        _console(stderr=False).print(
            _scores_table(scores, "gzip compressibility H (compressed/raw, gzip -9)")
        )
    return 0


# -- gzipscale grammar ------------------------------------------------------------------


def cmd_grammar(args: argparse.Namespace) -> int:
    import numpy as np

    from gzipscale.grammars.compiled import compile_grammar
    from gzipscale.grammars.gzip_metric import GzipStats
    from gzipscale.grammars.random_pcfg import grammar_text
    from gzipscale.grammars.series import training_split_ratios
    from gzipscale.grammars.spec import GrammarSpec
    from gzipscale.helpers import parse_seeds, parse_size

    seeds = parse_seeds(args.seeds) if args.seeds else [args.seed]
    if args.text:
        sys.stdout.write(grammar_text(GrammarSpec.parse(args.grammar, seed=seeds[0])))
        return 0
    score_tokens = parse_size(args.score, "score") if args.score else 0
    rows = []
    for seed in seeds:
        spec = GrammarSpec.parse(args.grammar, seed=seed)
        text = grammar_text(spec)
        g = compile_grammar(text, spec.name)
        row = {
            "grammar": spec.to_dict(),
            "productions": int(len(g.prod_lhs)),
            "spectral_radius": g.spectral_radius(),
            "p_sentence_finite": float(g.finite_probabilities()[g.start]),
        }
        if score_tokens:
            ratios = training_split_ratios(
                spec, score_tokens, context_length=args.context_length, sampler=args.sampler
            )
            row["gzip"] = GzipStats.of(ratios).to_dict()
        rows.append(row)
    medians = [r["gzip"]["median"] for r in rows if "gzip" in r]
    summary = {"grammars": rows}
    if medians:
        summary["median_H_over_seeds"] = {
            "mean": float(np.mean(medians)),
            "sd": float(np.std(medians, ddof=1)) if len(medians) > 1 else 0.0,
            "n_seeds": len(medians),
        }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"grammar ({args.grammar})")
    for col in ("seed", "productions", "growth ρ", "P(finite)", "H (median)", "H mean ± sd"):
        table.add_column(col, justify="right")
    for r in rows:
        gz = r.get("gzip")
        table.add_row(
            str(r["grammar"]["seed"]),
            str(r["productions"]),
            f"{r['spectral_radius']:.3f}",
            f"{r['p_sentence_finite']:.3f}",
            f"{gz['median']:.4f}" if gz else "-",
            f"{gz['mean']:.4f} ± {gz['std']:.4f}" if gz else "-",
        )
    console = _console(stderr=False)
    console.print(table)
    if len(medians) > 1:
        m = summary["median_H_over_seeds"]
        console.print(f"median H over {m['n_seeds']} seeds: {m['mean']:.4f} ± {m['sd']:.4f}")
    return 0


# -- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gzipscale",
        description="Data-dependent scaling laws: PCFG datasets, gzip compressibility, sweeps and fits.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "data", help="generate a PCFG dataset with Ray Data (Parquet shards + manifest)"
    )
    p.add_argument(
        "--grammar",
        required=True,
        metavar="NT,T,LEN,OPTS",
        help="nonterminals, terminals, max right-hand-side length, max options, e.g. 20,300,5,10",
    )
    p.add_argument("--seed", type=int, default=0, help="grammar and sampling seed (default 0)")
    p.add_argument("--tokens", required=True, help="training tokens, e.g. 100K, 10M")
    p.add_argument("--eval-tokens", default="512K", help="held-out tokens (default 512K)")
    p.add_argument("--out", help="dataset directory (default data/<grammar>-<tokens>)")
    p.add_argument(
        "--context-length", type=int, default=256, help="tokens per document (default 256)"
    )
    p.add_argument(
        "--sampler",
        choices=("prefix", "finite"),
        default="prefix",
        help="'prefix' (default): the grammar as written, documents are prefixes of "
        "possibly infinite sentences; 'finite': conditioned on finite sentences",
    )
    p.add_argument("--workers", type=int, help="most blocks generated at once (default: every CPU)")
    p.add_argument(
        "--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded cluster)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("gzip", help="score corpora's gzip compressibility H")
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
        "--context-length", type=int, default=256, help="tokens per document (default 256)"
    )
    p.add_argument(
        "--plot", metavar="FILE.png", help="also draw every corpus's per-document H as a box plot"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_gzip)

    p = sub.add_parser(
        "grammar", help="describe a random grammar; print its text; score it over seeds"
    )
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
    p.add_argument("--sampler", choices=("prefix", "finite"), default="prefix")
    p.add_argument("--context-length", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_grammar)

    from gzipscale.analysis.commands import register as register_analysis
    from gzipscale.analysis.report_command import register as register_report

    register_analysis(sub)  # gzipscale fit, gzipscale predict
    register_report(sub)  # gzipscale report

    from gzipscale.trainers.commands import register as register_trainers

    register_trainers(sub)  # gzipscale models, gzipscale train

    from gzipscale.orchestrator.sweep_command import register as register_sweep

    register_sweep(sub)  # gzipscale sweep

    from gzipscale.orchestrator.watch import register as register_watch

    register_watch(sub)  # gzipscale watch

    from gzipscale.grammars.series_command import register as register_series

    register_series(sub)  # gzipscale series
    return parser


def main(argv: list[str] | None = None) -> int:
    from gzipscale.grammars.compiled import GrammarError
    from gzipscale.grammars.dataset import DatasetError
    from gzipscale.helpers import SpecError
    from gzipscale.trainers.memory import MemoryTooSmall

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (
        SpecError,
        DatasetError,
        GrammarError,
        MemoryTooSmall,
        FileNotFoundError,
        ValueError,
    ) as exc:
        print(f"gzipscale {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(
            f"gzipscale {args.command}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
