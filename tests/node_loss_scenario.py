"""Run a small sweep on a 2-node ray.cluster_utils.Cluster and lose the worker node
mid-trial; print the outcome as JSON. Run by tests/test_sweep_recovery.py in a subprocess
(it starts its own cluster, apart from the test session's)."""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import faults  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from gzipscale.orchestrator.spec import SweepSpec  # noqa: E402
from gzipscale.orchestrator.sweep import run_sweep  # noqa: E402

TARGET = "pcfg-3-300-2-2-s0/tiny-2/96K"


def main(storage: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=2)
    faults.CLUSTER = cluster
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    spec = SweepSpec.from_dict(
        {
            "name": "node-loss",
            "grammars": [{"grammar": "3,300,2,2", "seed": 0}],
            "shapes": ["tiny-1", "tiny-2"],
            "data_sizes": ["16K", "96K"],
            "eval_tokens": "8K",
            "train": {"preset": "cpu", "batch_size": 8, "checkpoint_every": 10},
            "max_failures": 3,
        }
    )
    try:
        outcome = run_sweep(spec, storage, callbacks=[faults.NodeKiller(TARGET)], say=print)
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(
        "OUTCOME "
        + json.dumps(
            {
                "finished": outcome.finished,
                "failed": len(outcome.failed),
                "missing": outcome.missing,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
