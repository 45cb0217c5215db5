"""The whole ``gzipscale data`` pipeline (sampling, gzip scoring, Parquet writing) through
Ray Data, on 1 and on 2 workers, beside the reference sampler followed by scoring.

Goals: 1 worker >= 5x the reference + scoring (tokens/s, same grammar); 2 workers >=
1.6x the throughput of 1 worker on a 2-core machine. Ray starts once, before timing.

    python bench/data_pipeline.py            # 20M tokens per run; bench/results/data_pipeline.json
    python bench/data_pipeline.py --quick    # 5M tokens per run
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from common import write_results  # noqa: E402

from gzipscale.grammars.dataset import DatasetSpec  # noqa: E402
from gzipscale.grammars.gzip_metric import gzip_ratios  # noqa: E402
from gzipscale.grammars.pipeline import generate_dataset  # noqa: E402
from gzipscale.grammars.random_pcfg import grammar_text  # noqa: E402
from gzipscale.grammars.reference import reference_sentences  # noqa: E402
from gzipscale.grammars.sampler import assemble_documents  # noqa: E402
from gzipscale.grammars.spec import GrammarSpec  # noqa: E402
from gzipscale.helpers import ensure_ray

GRAMMARS = [(20, 300, 5, 10), (50, 300, 10, 20)]


def reference_with_scoring(text: str, seconds: float) -> float:
    """Tokens/s of the reference sampler followed by gzip scoring, in 64-document batches."""
    sentences = reference_sentences(text, seed=0, deadline=time.perf_counter() + seconds)
    tokens, start = 0, time.perf_counter()
    try:
        while True:
            docs = assemble_documents(sentences, 64)
            gzip_ratios(docs)
            tokens += docs.size
    except StopIteration:
        pass
    return tokens / (time.perf_counter() - start)


def pipeline_rate(spec: DatasetSpec, workers: int, root: Path) -> tuple[float, float]:
    out = root / f"w{workers}"
    start = time.perf_counter()
    m = generate_dataset(spec, out, workers=workers)
    wall = time.perf_counter() - start
    shutil.rmtree(out)
    return (m["tokens"] + m["eval"]["tokens"]) / wall, wall


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tokens", type=int, default=None)
    args = ap.parse_args()
    tokens = args.tokens or (5_000_000 if args.quick else 20_000_000)
    ensure_ray(num_cpus=2)
    import ray

    cpus = int(ray.cluster_resources()["CPU"])
    rows = []
    root = Path(tempfile.mkdtemp(prefix="gzipscale-bench-"))
    try:
        # warm-up: worker processes import the package once
        generate_dataset(
            DatasetSpec(GrammarSpec(3, 300, 2, 2), tokens=100_000, eval_tokens=10_000),
            root / "warm",
            workers=2,
        )
        print(f"{tokens:,} train tokens per run; cluster CPUs: {cpus}")
        print(
            f"{'grammar':>18} {'reference+gzip':>15} {'1 worker':>12} {'2 workers':>12} {'1w/ref':>7} {'2w/1w':>6}"
        )
        for shape in GRAMMARS:
            spec = DatasetSpec(GrammarSpec(*shape, seed=0), tokens=tokens, eval_tokens=512_000)
            # Interleaved, best of two each: this machine's speed drifts between runs.
            box = 5.0 if args.quick else 10.0
            refs, ones, twos = [], [], []
            for _ in range(2):
                refs.append(reference_with_scoring(grammar_text(spec.grammar), box))
                ones.append(pipeline_rate(spec, 1, root))
                twos.append(pipeline_rate(spec, 2, root))
            ref = max(refs)
            one, one_wall = max(ones)
            two, two_wall = max(twos)
            rows.append(
                {
                    "grammar": list(shape),
                    "tokens": tokens,
                    "reference_plus_gzip_tok_s": ref,
                    "one_worker_tok_s": one,
                    "one_worker_wall_s": one_wall,
                    "two_workers_tok_s": two,
                    "two_workers_wall_s": two_wall,
                    "ratio_one_worker_vs_reference": one / ref,
                    "goal_vs_reference": 5,
                    "scaling_two_vs_one": two / one,
                    "goal_scaling": 1.6,
                }
            )
            print(
                f"{str(shape):>18} {ref:>15,.0f} {one:>12,.0f} {two:>12,.0f} {one / ref:>6.1f}x {two / one:>5.2f}x"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    path = write_results("data_pipeline", {"cluster_cpus": cpus, "rows": rows})
    print(f"results in {path}")


if __name__ == "__main__":
    main()
