"""The floor's cost: documents per second per grammar, one core, and the big grammar on two
worker processes (blocks as tasks, as Ray would run them; the result must be identical).

Goals: the floor of (20,300,5,10) from 2000 documents in under 60 s on one core; that of
(50,300,10,20) in under 10 minutes on 2 cores at a standard error of at most 0.01.

    python bench/floor_speed.py [--quick]      # writes bench/results/floor_speed.json
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

ALL_CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None

from common import pin_one_core, write_results  # noqa: E402

CORE = pin_one_core()

from gzipscale.grammars.dataset import DatasetSpec  # noqa: E402
from gzipscale.grammars.floor import (  # noqa: E402
    combine_blocks,
    eval_documents,
    floor_blocks,
    score_block,
)
from gzipscale.grammars.spec import GrammarSpec  # noqa: E402

SHAPES = ("3,300,2,2", "10,300,3,5", "20,300,5,10", "50,300,10,20")
GOALS_S = {"20,300,5,10": 60.0}  # one core
TWO_CORE_GOAL = ("50,300,10,20", 600.0, 0.01)  # wall seconds on 2 cores, stderr


def _spec(shape: str) -> DatasetSpec:
    return DatasetSpec(GrammarSpec.parse(shape, seed=0), tokens=256 * 1024)


def _all_cores() -> None:
    if ALL_CORES is not None:
        os.sched_setaffinity(0, ALL_CORES)


def _score(args):
    shape, block, documents = args
    return score_block(_spec(shape), block, documents)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="500 documents instead of 2000")
    args = ap.parse_args()
    documents = 500 if args.quick else 2000
    rows = []
    print(f"one core (cpu {CORE}); {documents} eval documents per grammar, L = 256")
    print(
        f"{'grammar':>14} {'sample s':>9} {'floor s':>8} {'docs/s':>8} {'floor':>8} "
        f"{'stderr':>7} {'bound':>7} {'ambig':>8}"
    )
    floors = {}
    for shape in SHAPES:
        spec = _spec(shape)
        blocks = floor_blocks(spec, documents)
        start = time.perf_counter()
        for b in blocks:  # the sampling alone, for reference
            eval_documents(spec, b, documents)
        sample_s = time.perf_counter() - start
        start = time.perf_counter()
        floor = combine_blocks(spec, [score_block(spec, b, documents) for b in blocks])
        wall = time.perf_counter() - start  # sampling included, as dataset_floor does
        floors[shape] = floor
        bound = floor.derivation_bound
        print(
            f"{shape:>14} {sample_s:9.2f} {wall:8.2f} {documents / wall:8.0f} "
            f"{floor.nats_per_token:8.4f} {floor.stderr:7.4f} "
            f"{bound if bound is None else round(bound, 4)!s:>7} {floor.ambiguity:8.5f}"
        )
        row = {
            "grammar": shape,
            "documents": documents,
            "cores": 1,
            "sample_s": sample_s,
            "wall_s": wall,
            "documents_per_s": documents / wall,
            "floor": floor.to_dict() | {"per_position": None, "per_position_stderr": None},
        }
        if shape in GOALS_S:
            row["goal_s"] = GOALS_S[shape]
            row["meets_goal"] = wall < GOALS_S[shape]
        rows.append(row)

    shape, goal_s, goal_se = TWO_CORE_GOAL
    spec = _spec(shape)
    blocks = floor_blocks(spec, documents)
    start = time.perf_counter()
    with ProcessPoolExecutor(2, initializer=_all_cores) as pool:
        scores = list(pool.map(_score, [(shape, b, documents) for b in blocks]))
    floor = combine_blocks(spec, scores)
    wall = time.perf_counter() - start  # worker start-up included
    identical = floor.to_dict() == floors[shape].to_dict()
    print(
        f"{shape:>14} on 2 worker processes: {wall:.2f} s, {documents / wall:.0f} docs/s, "
        f"stderr {floor.stderr:.4f}; identical to the one-core result: {identical}"
    )
    rows.append(
        {
            "grammar": shape,
            "documents": documents,
            "cores": 2,
            "wall_s": wall,
            "documents_per_s": documents / wall,
            "identical_to_one_core": identical,
            "goal_s": goal_s,
            "goal_stderr": goal_se,
            "meets_goal": wall < goal_s and floor.stderr <= goal_se,
        }
    )
    path = write_results("floor_speed", {"core": CORE, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
