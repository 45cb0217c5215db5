"""A training run's directory: its spec, checkpoints, result and loss-curve figure.

RUN_DIR/run.json           the RunSpec, written first; a different spec is refused
RUN_DIR/checkpoints/       step-NNNNNNNN.pt, newest two kept (trainers.session)
RUN_DIR/result.json        written last, atomically: its presence means "done"
RUN_DIR/loss.png           training-loss curve with the held-out loss (of every reported size)
"""

from __future__ import annotations

import json
from pathlib import Path

from gzipscale.helpers import atomic_write_json, spec_differences
from gzipscale.vocabulary import RUN_RESULT_FILE, RUN_SPEC_FILE

from .train import RunResult, RunSpec, TrainError

FIGURE_FILE = "loss.png"


def prepare_run_dir(run_dir: Path, spec: RunSpec) -> dict | None:
    """Create ``run_dir`` for ``spec``, or accept it if it holds the same spec.

    Returns the finished result if the run is already done. Raises TrainError, naming
    what differs, if the directory holds another run: nothing there is touched.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path = run_dir / RUN_SPEC_FILE
    want = spec.to_dict()
    if spec_path.exists():
        have = _saved_spec(spec_path)
        diff = spec_differences(have.identity(), spec.identity())
        if diff:
            raise TrainError(
                f"{run_dir} holds a different run ({'; '.join(diff[:4])}); "
                "choose a new --out directory, or delete this one to start over"
            )
        result_path = run_dir / RUN_RESULT_FILE
        if result_path.exists():
            return json.loads(result_path.read_text())
        return None
    if any(run_dir.iterdir()):
        raise TrainError(f"{run_dir} is not empty and is not a training run directory")
    atomic_write_json(spec_path, want)
    return None


def _saved_spec(spec_path: Path) -> RunSpec:
    """The spec a run directory was made for; a file that is not one (a JSON list, a
    truncated file, a missing field) is refused by name rather than crashing the resume."""
    try:
        saved = json.loads(spec_path.read_text())
        if not isinstance(saved, dict):
            raise TypeError(f"a JSON {type(saved).__name__}, not an object")
        return RunSpec.from_dict(saved)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError) as exc:
        reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise TrainError(
            f"{spec_path} is not a training run's spec ({reason}); choose a new --out "
            "directory, or delete this one to start over"
        ) from None


def write_result(run_dir: Path, result: RunResult) -> None:
    atomic_write_json(run_dir / RUN_RESULT_FILE, result.to_dict())


def plot_curve(run_dir: Path, result: dict) -> Path | None:
    """Training loss against tokens (log x), the held-out loss as a marker at the end, and
    at each smaller size a nested-data run reported."""
    curve = result.get("curve") or []
    if not curve:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot([p["tokens"] for p in curve], [p["train_loss"] for p in curve], label="training loss")
    smaller = (result.get("rows") or [])[:-1] if result.get("status") == "finished" else []
    if smaller:
        ax.scatter(
            [row["tokens"] for row in smaller],
            [row["val_loss"] for row in smaller],
            color="C1",
            zorder=3,
            label="held-out loss at smaller sizes",
        )
    if result.get("status") == "finished":
        ax.scatter(
            [result["tokens"]],
            [result["val_loss"]],
            color="C3",
            zorder=3,
            label=f"held-out loss {result['val_loss']:.4f}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(f"{result['model']} on {result['dataset']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = run_dir / FIGURE_FILE
    fig.savefig(path)
    plt.close(fig)
    return path
