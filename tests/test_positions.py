"""Per-position held-out loss: the model's curve (trainers.train.evaluate(positions=)), read back from a
sweep directory beside its dataset's per-position floor (analysis/positions.py) and drawn
in the report (one figure per dataset)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from trainer_fixtures import session_dataset

from gzipscale.analysis.positions import position_figures_inputs, positions_file
from gzipscale.analysis.report import build_report
from gzipscale.analysis.results import ResultRow, write_results_csv
from gzipscale.trainers.data import load_run_data
from gzipscale.trainers.model import Llama
from gzipscale.trainers.shapes import get_shape
from gzipscale.trainers.train import evaluate
from gzipscale.vocabulary import DATA_DIR, MANIFEST_FILE


@pytest.fixture(scope="module")
def dataset(ray_cluster, tmp_path_factory):
    return session_dataset(tmp_path_factory)


def test_position_losses_average_to_the_run_loss(dataset):
    data = load_run_data(dataset, 8192, 8192)
    torch.manual_seed(0)
    model = Llama(get_shape("tiny-1"), data.vocab_size, data.context_length)
    cpu, off = torch.device("cpu"), torch.autocast("cpu", enabled=False)
    curve: dict = {}
    loss, _ = evaluate(model, data.eval, 16, cpu, off, positions=curve)
    mean, stderr = curve["mean"], curve["stderr"]
    assert len(mean) == len(stderr) == data.context_length - 1
    # Every document scores every position once: the mean of the curve is the run's loss.
    assert np.mean(mean) == pytest.approx(loss, rel=1e-9)
    assert all(s > 0 for s in stderr)
    # An untrained model knows nothing at any position: about log(vocab) everywhere.
    assert np.allclose(mean, np.log(data.vocab_size), atol=1.0)


def _sweep_dir(tmp_path, floor_curve, runs):
    run_dir = tmp_path / "sweep"
    manifest = run_dir / DATA_DIR / "ds" / MANIFEST_FILE
    manifest.parent.mkdir(parents=True)
    floor = {
        "nats_per_token": float(np.mean(floor_curve)),
        "stderr": 0.001,
        "per_position": list(floor_curve),
        "per_position_stderr": [0.002] * len(floor_curve),
    }
    manifest.write_text(json.dumps({"floor": floor}))
    rows = []
    for i, (params, tokens, curve) in enumerate(runs):
        path = positions_file(run_dir, "ds", f"s{params}", tokens)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"dataset": "ds", "params": params, "tokens": tokens, "mean": list(curve)}
        record["stderr"] = [0.01] * len(curve)
        path.write_text(json.dumps(record))
        rows.append(
            ResultRow(
                dataset="ds",
                grammar="3,300,2,2",
                seed=0,
                gzip=0.2,
                shape=f"s{params}",
                params=params,
                non_embedding_params=params // 2,
                tokens=tokens,
                val_loss=float(np.mean(curve)),
                status="finished",
                trial_id=f"t{i}",
                floor=floor["nats_per_token"],
                floor_se=0.001,
            )
        )
    write_results_csv(rows, run_dir / "results.csv")
    return run_dir


def test_each_model_size_is_drawn_on_its_largest_data_size(tmp_path):
    positions = np.arange(1, 256)
    floor = 0.7 + 0.5 / positions
    law = lambda n, d: floor + 30 / n**0.4 + 200 / d**0.4  # noqa: E731
    runs = [(n, d, law(n, d)) for n in (1e4, 4e4, 1.6e5) for d in (2e4, 8e4, 3.2e5)]
    runs = [(int(n), int(d), c) for n, d, c in runs]
    run_dir = _sweep_dir(tmp_path, floor, runs)
    (curves,) = position_figures_inputs(run_dir)
    assert curves.dataset == "ds" and curves.floor == pytest.approx(list(floor))
    assert sorted(curves.curves) == ["N=10K, D=320K", "N=160K, D=320K", "N=40K, D=320K"]
    # The report draws it, one figure for the dataset, linked from report.md.
    info = build_report(run_dir, tmp_path / "out", bootstrap=0)
    assert "positions_ds.png" in info["files"]
    png = tmp_path / "out" / "positions_ds.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(positions_ds.png)" in (tmp_path / "out" / "report.md").read_text()


def test_no_figure_without_a_per_position_floor(tmp_path):
    curve = np.full(255, 1.0)
    run_dir = _sweep_dir(tmp_path, curve, [(10_000, 20_000, curve + 0.1)])
    manifest = run_dir / DATA_DIR / "ds" / MANIFEST_FILE
    manifest.write_text(json.dumps({"floor": {"error": "refused: supercritical"}}))
    assert position_figures_inputs(run_dir) == []
