"""The ``gzipscale models`` and ``gzipscale train`` command lines (gzipscale/cli.py and
trainers/commands.py): exact counts, a run's files, a stored result printed again, and refusals.

The dataset is made once per session by the real pipeline (shared Ray cluster).
"""

from __future__ import annotations

import json

import pytest
from trainer_fixtures import PAPER_COUNTS, session_dataset

from gzipscale.cli import main
from gzipscale.trainers.shapes import PAPER_SHAPES, SHAPES


@pytest.fixture(scope="session")
def dataset(ray_cluster, tmp_path_factory):
    return session_dataset(tmp_path_factory)


def test_models_command_lists_every_shape_with_exact_counts(capsys):
    assert main(["models", "--vocab", "32001", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(SHAPES)
    assert [by_name[s.name]["params"] for s in PAPER_SHAPES] == PAPER_COUNTS
    for r in rows:
        assert set(r) >= {
            "name",
            "hidden",
            "intermediate",
            "layers",
            "heads",
            "params",
            "non_embedding_params",
        }
        assert r["intermediate"] == 2 * r["hidden"]


def test_train_command_writes_result_curve_and_figure(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--data",
        str(dataset),
        "--model",
        "tiny-1",
        "--tokens",
        "20K",
        "--out",
        str(out),
        "--eval-tokens",
        "8192",
        "--batch-size",
        "8",
        "--json",
    ]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    for key in (
        "val_loss",
        "curve",
        "params",
        "non_embedding_params",
        "vocab_size",
        "tokens",
        "steps",
        "batch_size",
        "context_length",
        "tokens_per_s",
        "wall_s",
    ):
        assert key in printed
    assert printed == json.loads((out / "result.json").read_text())
    assert (out / "loss.png").stat().st_size > 1000
    assert (out / "run.json").exists()
    # The same command again does not train again: it prints the stored result.
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["wall_s"] == printed["wall_s"]


def test_train_command_refuses_another_run_in_the_same_directory(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    base = [
        "train",
        "--data",
        str(dataset),
        "--model",
        "tiny-1",
        "--out",
        str(out),
        "--eval-tokens",
        "8192",
        "--batch-size",
        "8",
    ]
    assert main([*base, "--tokens", "10K"]) == 0
    before = (out / "result.json").read_bytes()
    capsys.readouterr()
    assert main([*base, "--tokens", "20K"]) == 2
    err = capsys.readouterr().err
    assert "different run" in err and "tokens: 10000 there, 20000 requested" in err
    assert (out / "result.json").read_bytes() == before


def test_train_command_bad_input_leaves_no_run_directory(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(dataset),
                "--model",
                "tiny-1",
                "--tokens",
                "10G",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "field 'tokens'" in capsys.readouterr().err
    assert not out.exists()
    assert (
        main(
            [
                "train",
                "--data",
                str(dataset),
                "--model",
                "huge",
                "--tokens",
                "10K",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "field 'model' must be one of" in capsys.readouterr().err
