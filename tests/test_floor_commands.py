"""The floor where a user meets it: `gzipscale grammar --floor`, the `floor` block that
`gzipscale data` writes into manifest.json, and the recorded runs, none of which may beat it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gzipscale.cli import main
from gzipscale.grammars.dataset import DatasetSpec
from gzipscale.grammars.floor import dataset_floor
from gzipscale.grammars.pipeline import generate_dataset
from gzipscale.grammars.spec import GrammarSpec

ROOT = Path(__file__).resolve().parents[1]
FLOOR_KEYS = {"nats_per_token", "stderr", "documents", "derivation_bound", "ambiguity"}


def test_grammar_floor_json_is_the_library_floor(capsys):
    assert main(["grammar", "10,300,3,5", "--floor", "--documents", "300", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["grammars"][0]
    expected = dataset_floor(
        DatasetSpec(grammar=GrammarSpec.parse("10,300,3,5"), tokens=256), documents=300
    ).to_dict()
    assert FLOOR_KEYS <= set(row["floor"])
    for key in FLOOR_KEYS:
        assert row["floor"][key] == expected[key], key
    assert row["floor"]["documents"] == 300 and row["floor"]["stderr"] > 0


def test_grammar_floor_table_and_bad_documents(capsys):
    assert main(["grammar", "3,300,2,2", "--floor", "--documents", "200"]) == 0
    out = capsys.readouterr().out
    assert "floor ± SE" in out and "0.72" in out
    assert main(["grammar", "3,300,2,2", "--floor", "--documents", "1"]) == 2
    assert "'documents' must be an integer in 2..1000000" in capsys.readouterr().err


def test_data_writes_the_floor_into_the_manifest(ray_cluster, tmp_path):
    spec = DatasetSpec(grammar=GrammarSpec.parse("3,300,2,2"), tokens=4096, eval_tokens=8192)
    manifest = generate_dataset(spec, tmp_path / "d", workers=1)
    written = json.loads((tmp_path / "d" / "manifest.json").read_text())["floor"]
    expected = dataset_floor(spec).to_dict()
    assert written == manifest["floor"]
    assert written["nats_per_token"] == expected["nats_per_token"]
    assert written["per_position"] == expected["per_position"]
    assert len(written["per_position"]) == spec.context_length - 1
    assert np.isclose(np.mean(written["per_position"]), written["nats_per_token"], rtol=1e-12)


@pytest.mark.slow
def test_no_recorded_run_beats_its_floor():
    """Every run of the committed reproduction sweep sits at or above its dataset's floor
    (minus three standard errors of the floor and of the run's own held-out loss)."""
    results = pd.read_csv(ROOT / "docs" / "reproduction" / "results.csv")
    results = results[results["status"] == "finished"]
    for dataset, runs in results.groupby("dataset"):
        first = runs.iloc[0]
        spec = DatasetSpec(
            grammar=GrammarSpec.parse(first["grammar"], seed=int(first["seed"])), tokens=256
        )
        floor = dataset_floor(spec)
        margin = 3 * floor.stderr + 3 * 0.004  # 0.004: the largest held-out SE of these runs
        assert runs["val_loss"].min() >= floor.nats_per_token - margin, dataset
