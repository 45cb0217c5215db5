"""``gzipscale data``, ``gzipscale gzip`` and ``gzipscale grammar``: make a dataset, score
corpora's gzip compressibility, describe a random grammar.

Each command is a thin layer over the library; bad input raises a UserError that the command
line prints as one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from gzipscale.helpers import (
    Progress,
    UserError,
    check_int_field,
    console,
    writable_destination,
)

# -- gzipscale data ---------------------------------------------------------------------


def cmd_data(args: argparse.Namespace) -> int:
    from gzipscale.grammars.dataset import DatasetSpec
    from gzipscale.grammars.pipeline import generate_dataset
    from gzipscale.grammars.spec import GrammarSpec
    from gzipscale.helpers import ensure_ray, format_size, parse_size

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
    writable_destination(out, "--out")  # before Ray starts and any block is sampled
    out_console = console()
    if args.address:
        ensure_ray(address=args.address)

    start = time.perf_counter()
    label = f"data {grammar.short} seed {grammar.seed}"
    with Progress(label, out_console, unit="blocks") as progress:
        manifest = generate_dataset(
            spec, out, workers=args.workers, on_progress=progress.update, repair=args.repair
        )
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
        "repaired": manifest["repaired"],
        "wall_s": wall,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        g = manifest["gzip"]
        verb = "reused" if manifest["reused"] else "wrote"
        if manifest["repaired"]:
            out_console.print(
                f"repaired {len(manifest['repaired'])} shards, each byte-identical to the "
                f"original: {', '.join(manifest['repaired'])}"
            )
        elif args.repair and manifest["reused"]:
            out_console.print("nothing to repair: every shard matches its checksum")
        out_console.print(
            f"{verb} {manifest['tokens']:,} tokens ({manifest['documents']:,} documents, "
            f"{len(manifest['shards'])} shards) + {manifest['eval']['tokens']:,} eval tokens "
            f"to {summary['out']} in {wall:.1f} s"
        )
        out_console.print(
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
        raise UserError("give at least one PATH to score, or --real for the real-data references")
    check_int_field("context-length", args.context_length, 1, 1 << 20)
    if args.plot:
        writable_destination(args.plot, "--plot", kind="file")  # before the scoring
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
        console(stderr=False).print(
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
    from gzipscale.helpers import check_int_field, parse_seeds, parse_size

    seeds = parse_seeds(args.seeds) if args.seeds else [args.seed]
    if args.text:
        sys.stdout.write(grammar_text(GrammarSpec.parse(args.grammar, seed=seeds[0])))
        return 0
    score_tokens = parse_size(args.score, "score") if args.score else 0
    documents = check_int_field("documents", args.documents, 2, 1_000_000)
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
        if args.floor:
            row["floor"] = _floor(spec, args, documents)
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
    columns = ["seed", "productions", "growth ρ", "P(finite)", "H (median)", "H mean ± sd"]
    if args.floor:
        columns += ["floor ± SE (nats/token)", "derivation bound", "ambiguity"]
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        gz = r.get("gzip")
        cells = [
            str(r["grammar"]["seed"]),
            str(r["productions"]),
            f"{r['spectral_radius']:.3f}",
            f"{r['p_sentence_finite']:.3f}",
            f"{gz['median']:.4f}" if gz else "-",
            f"{gz['mean']:.4f} ± {gz['std']:.4f}" if gz else "-",
        ]
        if args.floor:
            cells += _floor_cells(r["floor"])
        table.add_row(*cells)
    printer = console(stderr=False)
    printer.print(table)
    if len(medians) > 1:
        m = summary["median_H_over_seeds"]
        printer.print(f"median H over {m['n_seeds']} seeds: {m['mean']:.4f} ± {m['sd']:.4f}")
    return 0


def _floor(spec, args: argparse.Namespace, documents: int) -> dict:
    """The floor block of one grammar and seed, as `gzipscale data` records it (without the
    per-position curve), or the reason it cannot be computed."""
    from gzipscale.grammars.dataset import DatasetSpec
    from gzipscale.grammars.floor import FloorError, dataset_floor

    dataset = DatasetSpec(
        grammar=spec,
        tokens=args.context_length,
        context_length=args.context_length,
        sampler=args.sampler,
    )
    try:
        floor = dataset_floor(dataset, documents=documents).to_dict()
    except FloorError as exc:
        return {"error": str(exc)}
    floor.pop("per_position")
    floor.pop("per_position_stderr")
    return floor


def _floor_cells(floor: dict) -> list[str]:
    if "error" in floor:
        return ["undefined", "-", "-"]
    bound, ambiguity = floor["derivation_bound"], floor["ambiguity"]
    return [
        f"{floor['nats_per_token']:.4f} ± {floor['stderr']:.4f}",
        "-" if bound is None else f"{bound:.4f}",
        "-" if ambiguity is None else f"{ambiguity:.4f}",
    ]
