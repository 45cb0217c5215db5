"""Per-position held-out losses of a sweep's runs, read back for the report's figure.

A run that reports its loss at each position of the context (``position_loss``: mean and
standard error per position, from ``trainers.train.evaluate``) has it written by the
sweep to ``RUN_DIR/positions/<dataset>__<shape>__<tokens>.json``; the dataset's floor per
position is in its manifest (``RUN_DIR/data/<dataset>/manifest.json``, block ``floor``).
:func:`position_figures_inputs` pairs them: per dataset, the floor's curve and, for each
model size, the curve of its largest-data run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gzipscale.vocabulary import DATA_DIR, MANIFEST_FILE, POSITIONS_DIR


@dataclass(frozen=True)
class PositionCurves:
    """One dataset's floor per position and its runs' curves (label -> (mean, stderr))."""

    dataset: str
    floor: list[float]
    floor_stderr: list[float]
    curves: dict[str, tuple[list[float], list[float]]]


def positions_name(dataset: str, shape: str, tokens: int) -> str:
    """A run's per-position losses, relative to its sweep's directory."""
    return f"{POSITIONS_DIR}/{dataset}__{shape}__{tokens}.json"


def positions_file(run_dir: Path, dataset: str, shape: str, tokens: int) -> Path:
    """Where a run's per-position losses are kept in its sweep's directory."""
    return Path(run_dir) / positions_name(dataset, shape, tokens)


def positions_record(row, curve: dict) -> str:
    """The JSON of a run's per-position losses: its row's identity and the curve."""
    record = {
        "dataset": row.dataset,
        "shape": row.shape,
        "params": row.params,
        "tokens": row.tokens,
        "val_loss": row.val_loss,
        "mean": list(curve["mean"]),
        "stderr": list(curve["stderr"]),
    }
    return json.dumps(record) + "\n"


def _label(record: dict) -> str:
    from gzipscale.analysis.identification import tokens_text

    return f"N={tokens_text(record['params'])}, D={tokens_text(record['tokens'])}"


def position_figures_inputs(run_dir: Path) -> list[PositionCurves]:
    """Every dataset of ``run_dir`` that has both a per-position floor and runs with
    per-position losses (empty when either is missing, e.g. a table file or old runs)."""
    folder = Path(run_dir) / POSITIONS_DIR
    if not folder.is_dir():
        return []
    runs: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        runs.setdefault(record["dataset"], []).append(record)
    out = []
    for dataset, records in sorted(runs.items()):
        manifest = Path(run_dir) / DATA_DIR / dataset / MANIFEST_FILE
        if not manifest.is_file():
            continue
        floor = json.loads(manifest.read_text(encoding="utf-8")).get("floor") or {}
        if "per_position" not in floor:
            continue
        largest: dict[int, dict] = {}
        for r in records:  # per model size, its run on the most data
            if r["params"] not in largest or r["tokens"] > largest[r["params"]]["tokens"]:
                largest[r["params"]] = r
        curves = {
            _label(r): (list(r["mean"]), list(r["stderr"]))
            for _, r in sorted(largest.items())
            if len(r["mean"]) == len(floor["per_position"])
        }
        if curves:
            out.append(
                PositionCurves(dataset, floor["per_position"], floor["per_position_stderr"], curves)
            )
    return out
