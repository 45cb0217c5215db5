"""Ray Data glue: generate, score and write a dataset's shards in parallel.

Each missing block is one row of a Ray Dataset; a ``map_batches`` task samples it, scores
every document with gzip and encodes the Parquet shard in memory. The driver receives
the shards as they finish and writes each one atomically (temporary name, then rename),
so workers need no shared file system and a killed run never leaves a half-written
shard under a final name. The manifest is written last.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from gzipscale.helpers import atomic_write_bytes, ensure_ray

from .dataset import (
    DatasetError,
    DatasetSpec,
    ShardProblem,
    bad_shards_error,
    build_shard,
    check_manifest,
    finalize,
    missing_blocks,
    prepare_output,
    shard_problems,
    verify_dataset,
)
from .floor import (
    DEFAULT_FLOOR_DOCUMENTS,
    FloorError,
    combine_blocks,
    floor_blocks,
    score_block,
)


def _configure_ray_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    # The pipeline has one map operator; Ray Data's per-operator reservation otherwise
    # holds back half of a small cluster (measured: 2 workers on 2 CPUs ran ~1.2x one
    # worker with it, ~1.9x without).
    ctx.op_resource_reservation_enabled = False
    ctx.enable_progress_bars = False  # our own rich bar is shown instead
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    # Ray Data warns that progress bars are off; that is on purpose here.
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def _parallelism(workers: int | None) -> dict:
    """map_batches arguments that run at most ``workers`` blocks at once.

    Capping with ``TaskPoolStrategy(size=K)`` makes Ray Data launch a task only after
    one finishes, which left each worker idle 60-200 ms between 130 ms blocks (2 workers
    ran 1.3x one). Asking more CPU per task lets Ray Data queue tasks and Ray start the
    next one at once, so the cap is expressed in resources where that is exact: on one
    node, ``CPUs / workers`` per task.
    """
    import ray
    import ray.data

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = float(ray.cluster_resources().get("CPU", 1))
    if workers is None or workers >= cpus:
        return {"num_cpus": 1}
    if len(nodes) == 1:
        # Ray counts resources in units of 1e-4: round down so that `workers` tasks fit.
        return {"num_cpus": math.floor(cpus / workers * 1e4) / 1e4}
    return {"num_cpus": 1, "compute": ray.data.TaskPoolStrategy(size=workers)}


def compute_floor(spec: DatasetSpec, documents: int = DEFAULT_FLOOR_DOCUMENTS) -> dict:
    """The dataset's floor, as its manifest records it: one Ray task per eval block of the
    floor's documents, joined in block order (the same numbers on any number of workers).
    A grammar whose floor is undefined or out of reach records the reason instead."""
    ensure_ray()
    import ray

    score = ray.remote(num_cpus=1)(score_block)
    try:
        blocks = [score.remote(spec, b, documents) for b in floor_blocks(spec, documents)]
        return combine_blocks(spec, ray.get(blocks)).to_dict()
    except FloorError as exc:  # Ray's task error is an instance of the task's own error
        return {"error": str(exc).strip().splitlines()[-1]}


def _build_shards(batch: dict, spec_dict: dict) -> dict:
    spec = DatasetSpec.from_dict(spec_dict)
    records = [
        build_shard(spec, s, int(b)) for s, b in zip(batch["split"], batch["block"], strict=True)
    ]
    return {key: [r[key] for r in records] for key in records[0]}


def _built_shards(spec: DatasetSpec, todo: list[tuple[str, int]], workers: int | None):
    """The shard records of blocks ``todo``, made by Ray Data tasks, as they finish."""
    ensure_ray()
    import ray.data

    _configure_ray_data()
    ds = ray.data.from_items(
        [{"split": s, "block": b} for s, b in todo], override_num_blocks=len(todo)
    ).map_batches(
        _build_shards,
        batch_size=1,
        fn_kwargs={"spec_dict": spec.to_dict()},
        **_parallelism(workers),
    )
    yield from ds.iter_rows()


def repair_dataset(
    spec: DatasetSpec,
    out: Path,
    manifest: dict,
    problems: list[ShardProblem],
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Regenerate exactly the missing or altered shards of the complete dataset ``out``.

    A shard is a pure function of the spec and its block, so the new bytes must hash to the
    checksum the manifest recorded; one that does not (another pyarrow or numpy version,
    an edited manifest) is refused and not written. Returns the repaired shard paths.
    """
    if on_progress:
        on_progress(0, len(problems))
    records = {
        p.path: (manifest if p.split == "train" else manifest["eval"])["shards"][p.block]
        for p in problems
    }
    repaired = []
    if problems:
        todo = [(p.split, p.block) for p in problems]
        for row in _built_shards(spec, todo, workers):
            want = records[row["path"]]["sha256"]
            if row["sha256"] != want:
                raise DatasetError(
                    f"dataset {out}: regenerated shard {row['path']} hashes to "
                    f"{row['sha256'][:12]}…, not the recorded {want[:12]}…, so it was not "
                    "written (the dataset was made by other library versions, or its manifest "
                    "was edited); delete the directory and generate it again"
                )
            atomic_write_bytes(out / row["path"], row["data"])
            repaired.append(row["path"])
            if on_progress:
                on_progress(len(repaired), len(problems))
        verify_dataset(out)  # the repaired dataset passes what any reader will check
    return sorted(repaired)


def generate_dataset(
    spec: DatasetSpec,
    out: str | Path,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    repair: bool = False,
) -> dict:
    """Make the dataset ``spec`` in ``out`` (or reuse it if complete); return its manifest.

    A complete dataset is reused only once every shard matches its checksum; otherwise it
    is refused, naming the bad shards, unless ``repair`` regenerates them.

    Args:
        workers: most blocks generated at once (default: every CPU of the cluster).
        on_progress: called as ``on_progress(done_blocks, total_blocks)``.
        repair: regenerate the missing or altered shards of a complete dataset.
    """
    out = Path(out).resolve()
    start = time.perf_counter()
    existing = prepare_output(out, spec)
    if existing is not None:
        # Reuse is where a flipped byte used to pass unseen: every shard is hashed here.
        check_manifest(out, existing)
        problems = shard_problems(out, existing)
        if problems and not repair:
            raise bad_shards_error(out, existing, problems)
        existing["repaired"] = repair_dataset(spec, out, existing, problems, workers, on_progress)
        existing["reused"] = True
        return existing
    todo = missing_blocks(out, spec)
    total = sum(spec.blocks(s) for s in ("train", "eval"))
    done = total - len(todo)
    if on_progress:
        on_progress(done, total)
    known: dict[str, dict] = {}
    if todo:
        for row in _built_shards(spec, todo, workers):
            atomic_write_bytes(out / row["path"], row["data"])
            known[row["path"]] = {k: row[k] for k in ("sha256", "bytes", "documents")}
            done += 1
            if on_progress:
                on_progress(done, total)
    if len(missing_blocks(out, spec)) != 0:
        raise DatasetError(f"{out}: some shards were not written; run the command again")
    floor = compute_floor(spec)
    manifest = finalize(out, spec, known, wall_s=time.perf_counter() - start, floor=floor)
    manifest["reused"] = False
    manifest["repaired"] = []
    return manifest
