"""Where a training run reports to and keeps its checkpoints.

The training loop (:func:`trainers.train.train_run`) talks to one :class:`Session`; the
caller picks which:

* :class:`LocalSession`: ``gzipscale train``; checkpoints are files in
  ``RUN_DIR/checkpoints/step-NNNNNNNN.pt``, written atomically, the newest ``keep`` kept.
* ``orchestrator.trial.TuneSession``: inside a Ray Tune trial, checkpoints go through
  ``tune.report(..., checkpoint=...)`` and come back through ``tune.get_checkpoint()``.
* :class:`RayTrainSession`: inside a Ray Train ``TorchTrainer`` worker (DDP); every
  rank reports, rank 0 alone attaches the checkpoint.

Every session must accept ``save`` and ``report`` on every rank.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch

CHECKPOINT_FILE = "state.pt"
_STEP_FILE = re.compile(r"^step-(\d{8})\.pt$")


def atomic_torch_save(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` so that a reader sees the old file or the new one, never
    half of one (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path) -> dict:
    # Our own files, with numpy/python RNG states inside: not weights-only.
    return torch.load(path, map_location="cpu", weights_only=False)


class Session:
    """No checkpoints, no reports: a run that just trains (tests, benchmarks)."""

    rank = 0
    world_size = 1

    def latest_checkpoint(self) -> dict | None:
        return None

    def save(self, state: dict, metrics: dict) -> None:
        pass

    def report(self, metrics: dict) -> None:
        pass


class LocalSession(Session):
    def __init__(self, run_dir: str | Path, keep: int = 2, on_report=None):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep
        self.on_report = on_report

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (temp files of an interrupted write excluded)."""
        if not self.dir.is_dir():
            return []
        found = [p for p in self.dir.iterdir() if _STEP_FILE.match(p.name)]
        return sorted(found, key=lambda p: p.name)

    def latest_checkpoint(self) -> dict | None:
        found = self.checkpoints()
        return load_state(found[-1]) if found else None

    def save(self, state: dict, metrics: dict) -> None:
        atomic_torch_save(state, self.dir / f"step-{state['step']:08d}.pt")
        for old in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)
        self.report(metrics)

    def report(self, metrics: dict) -> None:
        if self.on_report is not None:
            self.on_report(metrics)


class RayTrainSession(Session):
    """Inside a Ray Train worker: ``ray.train.report`` on every rank (it is collective)."""

    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()

    def latest_checkpoint(self) -> dict | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return load_state(Path(d) / CHECKPOINT_FILE)

    def save(self, state: dict, metrics: dict) -> None:
        import ray.train

        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if self.rank == 0:
                torch.save(state, Path(d) / CHECKPOINT_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=checkpoint)

    def report(self, metrics: dict) -> None:
        import ray.train

        ray.train.report(metrics)
