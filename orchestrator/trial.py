"""The Ray Tune trainable: one planned run, through the trainers' single training function.

Tune calls :func:`train_trial` with ``config = {"run": PlannedTrial dict plus the dataset's
location and H, "train": TrainConfig dict, "train_storage": where Ray Train keeps runs}``.
A nested-data trial (``run["eval_at"]`` not empty) trains to ``run["tokens"]`` and reports
the row of each smaller size on the way (:mod:`trainers.train`); the callbacks record each
row as it arrives.
The run trains in the trial process (one device, :class:`trainers.session.TuneSession`), or, for ``workers > 1``, in a Ray Train ``TorchTrainer`` that the
trial launches and waits for (DDP over GPUs); both call :func:`trainers.train.train_run`.

A run that diverges or cannot fit in memory ends its trial normally with
``status="failed"`` and a reason: retrying a deterministic failure would only burn the
retry budget. Crashes (a lost node, a killed process) raise, and Tune retries them from
the last checkpoint (``FailureConfig``).
"""

from __future__ import annotations

import math

from ray import tune

from gzipscale.trainers.config import TrainConfig
from gzipscale.trainers.memory import MemoryTooSmall
from gzipscale.trainers.session import TuneSession
from gzipscale.trainers.train import RunSpec, train_run
from gzipscale.vocabulary import FAILED

from .storage import local_dataset


def run_spec(config: dict) -> RunSpec:
    run = config["run"]
    data = local_dataset(run["data"])
    # The device is an operational setting (not part of the run's identity): a run
    # checkpointed on one node may resume on another.
    train = TrainConfig.from_dict(config["train"]).with_overrides(
        device="cuda" if run["gpus"] > 0 or run["workers"] > 1 else "cpu"
    )
    # A nested-data trial (spec.nested) also reports the row of every smaller size.
    eval_at = tuple(int(d) for d in run.get("eval_at") or ())
    return RunSpec(str(data), run["shape"], run["tokens"], train, eval_at)


def train_trial(config: dict) -> None:
    run = config["run"]
    if run["workers"] > 1:
        _train_distributed(config)
        return
    session = TuneSession()
    try:
        spec = run_spec(config)
        result = train_run(spec, session=session, on_step=session.progress)
    except MemoryTooSmall as exc:
        session.report({"status": FAILED, "reason": str(exc), "val_loss": math.nan, "step": 0})
        return
    if result.status == FAILED:
        return  # train_run reported the failure with its reason
    if result.tokens != run["tokens"]:
        raise RuntimeError(f"trained {result.tokens} tokens, planned {run['tokens']}")


# -- several GPUs: Ray Train, launched from the trial ----------------------------------------


def _train_worker(config: dict) -> None:
    """Runs on every TorchTrainer worker; the process group is set up by Ray Train."""
    from gzipscale.trainers.session import RayTrainSession

    train_run(run_spec(config), session=RayTrainSession())


def _train_distributed(config: dict) -> None:
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    run = config["run"]
    context = tune.get_context()
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=run["workers"],
            use_gpu=True,
            resources_per_worker={"CPU": run["cpus"], "GPU": 1},
        ),
        run_config=ray.train.RunConfig(
            # Deterministic name: a retried trial finds the Train run and its checkpoints.
            name=f"train-{context.get_trial_id()}",
            storage_path=config["train_storage"],
            failure_config=ray.train.FailureConfig(max_failures=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()
