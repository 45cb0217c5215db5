"""gzip scoring cost per document: ours vs a bare ``zlib.compress`` / ``gzip.compress`` call
on the same bytes, one core. Goal: within 1.15x of the bare call.

    python bench/gzip_scoring.py [--quick]      # writes bench/results/gzip_scoring.json
"""

from __future__ import annotations

import argparse
import gzip
import time
import zlib

from common import pin_one_core, write_results  # noqa: E402

CORE = pin_one_core()

import numpy as np  # noqa: E402

from gzipscale.grammars.dataset import DatasetSpec, make_block  # noqa: E402
from gzipscale.grammars.gzip_metric import gzip_ratios  # noqa: E402
from gzipscale.grammars.spec import GrammarSpec  # noqa: E402


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeats = 3 if args.quick else 7
    rows = []
    print(f"one core (cpu {CORE}); best of {repeats}")
    print(
        f"{'documents':>24} {'ours us/doc':>12} {'zlib us/doc':>12} {'gzip.compress':>14} {'ratio':>7}"
    )
    for shape in ((3, 300, 2, 2), (20, 300, 5, 10), (50, 300, 10, 20)):
        spec = DatasetSpec(GrammarSpec(*shape, seed=0), tokens=1024 * 256)
        docs, _ = make_block(spec, "train", 0)
        n = len(docs)
        # the bare calls get their bytes ready-made; ours includes the int -> bytes encoding
        raw = [d.astype(">i4").tobytes() for d in docs]
        ours = best_of(lambda docs=docs: gzip_ratios(docs), repeats) / n
        bare = (
            best_of(lambda raw=raw: [len(zlib.compress(r, 9, wbits=31)) for r in raw], repeats) / n
        )
        bare_gzip = best_of(lambda raw=raw: [len(gzip.compress(r, 9)) for r in raw], repeats) / n
        assert np.array_equal(
            gzip_ratios(docs), np.array([len(gzip.compress(r, 9)) / 1024 for r in raw])
        )
        rows.append(
            {
                "grammar": list(shape),
                "documents": n,
                "ours_us_per_doc": ours * 1e6,
                "bare_zlib_us_per_doc": bare * 1e6,
                "bare_gzip_compress_us_per_doc": bare_gzip * 1e6,
                "ratio_vs_zlib": ours / bare,
                "ratio_vs_gzip_compress": ours / bare_gzip,
                "goal_ratio": 1.15,
                "meets_goal": ours / bare <= 1.15,
            }
        )
        print(
            f"{str(shape):>24} {ours * 1e6:>12.1f} {bare * 1e6:>12.1f} {bare_gzip * 1e6:>14.1f} {ours / bare:>6.3f}x"
        )
    path = write_results("gzip_scoring", {"core": CORE, "repeats": repeats, "rows": rows})
    print(f"results in {path}")


if __name__ == "__main__":
    main()
