"""Builders shared by the analysis tests: laws whose parameters are lines in H, the losses a
law gives on an N x D grid, result rows, and run directories of them.

Imported by the tests as ``from builders import ...`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.results import ResultRow, write_results_csv

# Each parameter an exact line in H, ``(intercept, slope)``, so a regression on H has
# something to recover.  LINES is the default; REPORT_LINES moves every parameter.
LINES = {
    "E": (0.5, 1.0),
    "A": (40.0, 40.0),
    "B": (150.0, 0.0),
    "alpha": (0.25, 0.2),
    "beta": (0.4, -0.1),
}
REPORT_LINES = {
    "E": (0.4, 2.0),
    "A": (40.0, 100.0),
    "B": (300.0, 400.0),
    "alpha": (0.22, 0.3),
    "beta": (0.4, -0.2),
}


def law_at(h: float, lines: dict = LINES) -> ScalingLaw:
    """The law whose parameters are ``intercept + slope * h`` for each line."""
    return ScalingLaw(**{k: c + s * h for k, (c, s) in lines.items()})


def grid_points(law: ScalingLaw, n_grid, d_grid, noise: float = 0.0, seed: int = 0):
    """``(N, D, L)``: the law's losses on the N x D grid (raveled, D varying slowest) with
    log-normal noise of sd ``noise``."""
    N, D = (g.ravel() for g in np.meshgrid(n_grid, d_grid))
    rng = np.random.default_rng(seed)
    return N, D, law.loss(N, D) * np.exp(rng.normal(0.0, noise, N.size))


ROW_DEFAULTS = {
    "dataset": "20,300,5,10-s0",
    "grammar": "20,300,5,10",
    "seed": 0,
    "gzip": 0.41,
    "shape": "tiny",
    "params": 1_200_000,
    "non_embedding_params": 1_000_000,
    "tokens": 50_000_000,
    "val_loss": 2.5,
    "status": "finished",
    "wall_s": 12.5,
    "tokens_per_s": 4e6,
    "trial_id": "t-001",
    "step": 190,
}


def result_row(**fields) -> ResultRow:
    """A valid finished row; ``fields`` replace its values (a failed row needs a reason)."""
    return ResultRow(**{**ROW_DEFAULTS, **fields})


def failed_row(reason: str = "CUDA out of memory", **fields) -> ResultRow:
    return result_row(**{"status": "failed", "reason": reason, "val_loss": math.nan, **fields})


def run_row(dataset: str, h: float, n: float, d: float, loss: float, **fields) -> ResultRow:
    """The row of one run: a model of ``n`` parameters trained on ``d`` tokens of a
    dataset of compressibility ``h``, reaching ``loss``."""
    return result_row(
        **{
            "dataset": dataset,
            "grammar": f"20,{int(1000 * h)},5,10",
            "gzip": h,
            "shape": f"m{int(n)}",
            "params": int(n),
            "non_embedding_params": int(n) // 2,
            "tokens": int(d),
            "val_loss": loss,
            "wall_s": 0.0,
            "tokens_per_s": 0.0,
            "trial_id": "",
            "step": 0,
            **fields,
        }
    )


def dataset_rows(
    dataset: str, h: float, law: ScalingLaw, n_grid, d_grid, noise: float = 0.01, seed: int = 0
) -> list[ResultRow]:
    """One finished row per (N, D) of the grid, the losses of ``law`` with noise."""
    N, D, L = grid_points(law, n_grid, d_grid, noise, seed)
    return [run_row(dataset, h, n, d, float(x)) for n, d, x in zip(N, D, L, strict=True)]


def write_run_dir(path: Path, rows: list[ResultRow]) -> Path:
    """A run directory holding only ``results.csv`` with ``rows``."""
    path.mkdir(parents=True, exist_ok=True)
    write_results_csv(rows, path / "results.csv")
    return path
