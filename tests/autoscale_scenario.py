"""Scenario run by tests/test_cluster.py in a subprocess: GPU nodes autoscale from 0 for Tune.

Starts a fake autoscaling cluster (a CPU-only head plus a ``gpu_worker`` node type with
min_workers 0), runs a 3-trial Tune experiment at 0.5 GPU per trial and prints one JSON line,
prefixed with ``RESULT``, describing the nodes before and after and where each trial ran.

The launching test sets the environment (token auth, the process tag) and owns the cleanup;
this script never runs ``ray stop``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from cluster_helpers import SCENARIO_ENV, make_autoscaling_cluster

OBJECT_STORE = 100 * 1024**2  # per node; Ray's default (30% of RAM) per fake node adds up
HEAD_RESOURCES = {"CPU": 0, "head": 1, "object_store_memory": OBJECT_STORE}  # no trials here
WORKER_NODE_TYPES = {
    "gpu_worker": {
        "resources": {"CPU": 1, "GPU": 1, "object_store_memory": OBJECT_STORE},
        "node_config": {},
        "min_workers": 0,
        "max_workers": 2,
    }
}
TRIAL_RESOURCES = {"cpu": 1, "gpu": 0.5}
N_TRIALS = 3


def probe(config):
    import ray
    from ray import tune

    time.sleep(config["hold_s"])  # overlap the trials so more than one node is needed
    tune.report(
        {
            "i": config["i"],
            "node_id": ray.get_runtime_context().get_node_id(),
            "gpu_ids": json.dumps([str(g) for g in ray.get_gpu_ids()]),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
    )


def alive_nodes(ray) -> list[dict]:
    return [
        {"node_id": n["NodeID"], "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]
    ]


def main() -> None:
    params = json.loads(os.environ[SCENARIO_ENV])
    t0 = time.monotonic()
    cluster = make_autoscaling_cluster(
        dict(HEAD_RESOURCES),
        WORKER_NODE_TYPES,
        gcs_port=params["gcs_port"],
        temp_dir=params["temp_dir"],
        idle_timeout_minutes=5,  # keep the nodes up until the script has looked at them
    )
    cluster.start()
    t_started = time.monotonic()

    import ray
    import ray._private.services as services
    from ray import tune
    from ray._common.network_utils import build_address

    address = build_address(services.get_node_ip_address(), params["gcs_port"])
    ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    head_node_id = ray.get_runtime_context().get_node_id()
    nodes_before = alive_nodes(ray)

    tuner = tune.Tuner(
        tune.with_resources(probe, TRIAL_RESOURCES),
        param_space={"i": tune.grid_search(list(range(N_TRIALS))), "hold_s": 2.0},
        run_config=tune.RunConfig(
            name="fake-autoscale",
            storage_path=params["storage"],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    t_fit = time.monotonic()

    trials = []
    for r in grid:
        m = r.metrics or {}
        trials.append(
            {
                "i": m.get("i"),
                "node_id": m.get("node_id"),
                "gpu_ids": json.loads(m["gpu_ids"]) if "gpu_ids" in m else None,
                "cuda_visible_devices": m.get("cuda_visible_devices"),
                "error": repr(r.error) if r.error else None,
            }
        )
    result = {
        "head_node_id": head_node_id,
        "nodes_before": nodes_before,
        "nodes_after": alive_nodes(ray),
        "trials": trials,
        "num_errors": grid.num_errors,
        "timing_s": {"start": t_started - t0, "fit": t_fit - t_started},
    }
    ray.shutdown()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
