"""Fault injection for sweep tests, importable so that Tune pickles it by reference.

A test writes ``STORAGE/faults.json``::

    {"crash_after_checkpoint": ["<run_id>", ...],   # the first attempt dies (os._exit)
     "diverge": ["<run_id>", ...]}                  # trains with a learning rate that blows up

and passes :func:`faulty_trial` as the sweep's trainable. Control goes through a file,
not environment variables, because the shared test cluster's workers were started
before the test ran.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ray import tune

from gzipscale.orchestrator import trial


def _storage(config: dict) -> Path:
    # train_storage = STORAGE/NAME/train
    return Path(config["train_storage"]).parent.parent


def _faults(config: dict) -> dict:
    path = _storage(config) / "faults.json"
    return json.loads(path.read_text()) if path.exists() else {}


def faulty_trial(config: dict) -> None:
    faults = _faults(config)
    run_id = config["run"]["run_id"]
    if run_id in faults.get("diverge", []):
        config = {
            **config,
            "train": {
                **config["train"],
                "lr": 10.0,
                "lr_scaling": "none",
                "grad_clip": 0.0,
                "warmup_steps": 0,
            },
        }
    marker = _storage(config) / f"crashed-{run_id.replace('/', '_')}"
    if run_id in faults.get("crash_after_checkpoint", []) and not marker.exists():
        original = trial.TuneSession.save

        def save_then_crash(self, state, metrics):
            original(self, state, metrics)
            marker.write_text(str(state["step"]))
            os._exit(1)  # the process dies as on a lost node: no exception, no cleanup

        trial.TuneSession.save = save_then_crash
        try:
            trial.train_trial(config)
        finally:
            trial.TuneSession.save = original
        return
    trial.train_trial(config)


# -- losing a node (ray.cluster_utils.Cluster), driven from the Tune driver ----------------

CLUSTER = None  # set by tests/node_loss_scenario.py; looked up at call time, never pickled


class NodeKiller(tune.Callback):
    """After the first checkpoint of ``run_id``, remove the worker node (a spot node taken
    away mid-run) and add a fresh one. Tune calls callbacks in the driver's main thread,
    which is where ``Cluster.add_node`` must be called."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.done = False

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self.done or trial.config["run"]["run_id"] != self.run_id:
            return
        self.done = True
        for node in list(CLUSTER.worker_nodes):
            CLUSTER.remove_node(node, allow_graceful=False)
        CLUSTER.add_node(num_cpus=2)
