"""Where a training run reports to and keeps its checkpoints.

The training loop (:func:`trainers.train.train_run`) talks to one :class:`Session`; the
caller picks which:

* :class:`LocalSession`: ``gzipscale train``; checkpoints are files in
  ``RUN_DIR/checkpoints/step-NNNNNNNN.pt``, written atomically, the newest ``keep`` kept.
* :class:`TuneSession`: inside a Ray Tune trial, checkpoints go through
  ``tune.report(..., checkpoint=...)`` and come back through ``tune.get_checkpoint()``.
* :class:`RayTrainSession`: inside a Ray Train ``TorchTrainer`` worker (DDP); every
  rank reports, rank 0 alone attaches the checkpoint.

Every session must accept ``save`` and ``report`` on every rank.

A nested-data run reports each smaller size's row through ``save``: the report and the
checkpoint that records the row as reported go together (one ``tune.report`` call), so a
run resumed from any checkpoint neither repeats a row nor misses one. Checkpoints are
named by ``state["step"]``, which counts every optimizer step of the run, trunk and
branches together, so the newest checkpoint is always the last by name.
"""

from __future__ import annotations

import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from gzipscale.helpers import atomic_torch_save

CHECKPOINT_FILE = "state.pt"
_STEP_FILE = re.compile(r"^step-(\d{8})\.pt$")


def _checkpoint_globals() -> list:
    """The few non-tensor types a checkpoint holds: numpy's legacy RNG state (a uint32
    array) is the only one; everything else is tensors, dicts, lists and numbers."""
    import numpy as np

    return [np.ndarray, np.dtype, np._core.multiarray._reconstruct, type(np.dtype(np.uint32))]


def load_state(path: Path) -> dict:
    """A checkpoint, unpickled weights-only: a file that smuggles any other object (which
    an unrestricted unpickler would run) is refused, as is a truncated or corrupt one."""
    import pickle
    import zipfile

    from .train import TrainError

    try:
        with torch.serialization.safe_globals(_checkpoint_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False, exactly what must not be done here;
        # keep only the line naming the type it refused.
        lines = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "global" in ln]
        what = re.sub(r"\s+", " ", lines[0])[:160] if lines else type(exc).__name__
        raise TrainError(
            f"checkpoint {path} holds something other than a gzipscale training state "
            f"({what}); refusing to load it. Delete it to resume from the one before."
        ) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as exc:
        if isinstance(exc, OSError) and not Path(path).is_file():
            raise
        raise TrainError(
            f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}); delete it to "
            "resume from the one before, or use a new run directory"
        ) from None


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
        # The checkpoint first, then the report: a run killed between the two has the row
        # in its checkpoint (and in its RunResult.rows) but never reports it here.
        atomic_torch_save(state, self.dir / f"step-{state['step']:08d}.pt")
        for old in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)
        self.report(metrics)

    def report(self, metrics: dict) -> None:
        if self.on_report is not None:
            self.on_report(metrics)


def _load_checkpoint(checkpoint) -> dict | None:
    """The state in a Ray ``Checkpoint`` (Tune's or Train's), or None."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return load_state(Path(d) / CHECKPOINT_FILE)


@contextmanager
def _checkpoint_dir(state: dict | None):
    """A temporary directory holding ``state`` (empty for None), to hand to Ray."""
    with tempfile.TemporaryDirectory() as d:
        if state is not None:
            torch.save(state, Path(d) / CHECKPOINT_FILE)
        yield d


class TuneSession(Session):
    """Inside a Ray Tune trial: checkpoints go through ``tune.report(..., checkpoint=...)``
    and come back through ``tune.get_checkpoint()`` when Tune retries or restores."""

    PROGRESS_EVERY_S = 5.0  # plain (checkpoint-free) progress reports, for the live display

    def __init__(self):
        self._last_progress = 0.0

    def latest_checkpoint(self) -> dict | None:
        from ray import tune

        return _load_checkpoint(tune.get_checkpoint())

    def save(self, state: dict, metrics: dict) -> None:
        from ray import tune

        with _checkpoint_dir(state) as d:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        self._last_progress = time.monotonic()

    def report(self, metrics: dict) -> None:
        from ray import tune

        tune.report(metrics)

    def progress(self, metrics: dict) -> None:
        """``train_run``'s on_step: a report now and then, never one per step (each report
        is a row Tune stores)."""
        now = time.monotonic()
        if now - self._last_progress >= self.PROGRESS_EVERY_S:
            self._last_progress = now
            self.report({**metrics, "status": "running"})


class RayTrainSession(Session):
    """Inside a Ray Train worker: ``ray.train.report`` on every rank (it is collective)."""

    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()

    def latest_checkpoint(self) -> dict | None:
        import ray.train

        return _load_checkpoint(ray.train.get_checkpoint())

    def save(self, state: dict, metrics: dict) -> None:
        import ray.train

        # Every rank reports; rank 0 alone attaches the checkpoint.
        with _checkpoint_dir(state if self.rank == 0 else None) as d:
            checkpoint = ray.train.Checkpoint.from_directory(d) if self.rank == 0 else None
            ray.train.report(metrics, checkpoint=checkpoint)

    def report(self, metrics: dict) -> None:
        import ray.train

        ray.train.report(metrics)
