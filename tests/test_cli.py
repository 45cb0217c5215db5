"""The gzipscale command line: data, gzip and grammar, in-process and as a real console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gzipscale.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_data_command_json_and_reuse(ray_cluster, tmp_path, capsys):
    out_dir = tmp_path / "g"
    argv = [
        "data",
        "--grammar",
        "3,300,2,2",
        "--seed",
        "1",
        "--tokens",
        "50K",
        "--eval-tokens",
        "10K",
        "--out",
        str(out_dir),
        "--json",
    ]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    result = json.loads(out)
    assert result["tokens"] == 196 * 256 and result["documents"] == 196
    assert result["grammar"]["seed"] == 1 and result["reused"] is False
    assert 0.05 < result["gzip"]["median"] < 0.3
    assert "\x1b[" not in err  # not a terminal: no control codes
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and json.loads(out)["reused"] is True


def test_data_command_refuses_bad_input_naming_the_field(tmp_path, capsys):
    cases = [
        (
            ["--grammar", "3,0,2,2", "--tokens", "10K"],
            "'terminals' must be an integer in 1..1000000",
        ),
        (["--grammar", "3,300,2", "--tokens", "10K"], "four integers"),
        (["--grammar", "3,300,2,2", "--tokens", "ten"], "'tokens' must be a count"),
        (
            ["--grammar", "3,300,2,2", "--tokens", "10K", "--seed", "-2"],
            "'seed' must be an integer",
        ),
        (
            ["--grammar", "3,300,2,2", "--tokens", "10K", "--workers", "0"],
            "'workers' must be an integer",
        ),
    ]
    for extra, message in cases:
        code, out, err = run_cli(capsys, "data", "--out", str(tmp_path / "never"), *extra)
        assert code == 2 and message in err, err
    assert not (tmp_path / "never").exists()  # refused before any work


def test_gzip_command_on_dataset_npy_and_real_data(ray_cluster, tmp_path, capsys):
    from gzipscale.grammars.dataset import DatasetSpec
    from gzipscale.grammars.pipeline import generate_dataset
    from gzipscale.grammars.spec import GrammarSpec

    generate_dataset(
        DatasetSpec(GrammarSpec(3, 300, 2, 2, seed=0), tokens=20_000, eval_tokens=2_000),
        tmp_path / "ds",
    )
    np.save(tmp_path / "ids.npy", np.random.default_rng(0).integers(1, 301, (30, 256)))
    code, out, err = run_cli(
        capsys, "gzip", str(tmp_path / "ds"), str(tmp_path / "ids.npy"), "--real", "--json"
    )
    assert code == 0, err
    corpora = json.loads(out)["corpora"]
    kinds = [(c["name"], c["kind"]) for c in corpora]
    assert kinds[0] == ("pcfg-3-300-2-2-s0", "pcfg") and kinds[1] == ("ids", "tokens")
    assert ("python-stdlib", "text") in kinds and ("python-stdlib", "byte-tokens") in kinds
    assert corpora[1]["median"] == pytest.approx(0.5, abs=0.03)
    code, out, err = run_cli(
        capsys, "gzip", str(tmp_path / "ds"), "--plot", str(tmp_path / "h.png")
    )
    assert code == 0 and "pcfg-3-300-2-2-s0" in out and "H (median)" in out
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli(capsys, "gzip", str(tmp_path / "nothing-here"))
    assert code == 2 and "does not exist" in err


def test_grammar_command(capsys):
    code, out, _ = run_cli(capsys, "grammar", "3,20,2,2", "--text")
    assert code == 0 and out.startswith("S -> N0 [0.3333333333333333]")
    code, out, _ = run_cli(
        capsys, "grammar", "10,300,3,5", "--seeds", "0-2", "--score", "20K", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert [g["grammar"]["seed"] for g in result["grammars"]] == [0, 1, 2]
    assert result["median_H_over_seeds"]["n_seeds"] == 3
    assert all(0.1 < g["gzip"]["median"] < 0.5 for g in result["grammars"])


@pytest.mark.skipif(shutil.which("gzipscale") is None, reason="console script not installed")
def test_console_script_is_installed_and_shows_help():
    result = subprocess.run(["gzipscale", "--help"], capture_output=True, text=True, check=True)
    for command in ("data", "gzip", "grammar"):
        assert command in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "gzipscale.cli", "grammar", "3,0,2,2"],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert result.returncode == 2 and "'terminals'" in result.stderr


def test_series_command_table_is_the_same_for_any_number_of_workers(ray_cluster, tmp_path, capsys):
    from gzipscale.grammars.series import read_table

    out = tmp_path / "series.json"
    args = ("series", "--series", "same-H", "--seeds", "0-1", "--tokens", "8K", "--no-real")
    args += ("--floor-documents", "30")  # small floors: they are checked in test_series_floor
    code, _, err = run_cli(capsys, *args, "--out", str(out))
    assert code == 0, err
    table = read_table(out)
    assert [r["grammar"] for r in table["rows"]] == [
        "10,600,10,5",
        "20,300,5,15",
        "30,200,15,10",
        "50,100,20,20",
    ]
    assert all(r["seeds"] == [0, 1] for r in table["rows"])
    assert [r["paper_H"]["same-H"] for r in table["rows"]] == [0.32, 0.36, 0.38, 0.34]
    assert len(table["scores"]) == 8 and table["command"].startswith("gzipscale series")
    for r in table["rows"]:
        medians = [s["median"] for s in table["scores"] if s["grammar"] == r["grammar"]]
        assert r["H_mean"] == pytest.approx(np.mean(medians))
        assert r["H_sd"] == pytest.approx(np.std(medians, ddof=1))
        assert 0.2 < r["H_mean"] < 0.5
        floors = [
            s["floor"]["nats_per_token"] for s in table["scores"] if s["grammar"] == r["grammar"]
        ]
        assert r["floor_mean"] == pytest.approx(np.mean(floors)) and r["floor_seeds"] == [0, 1]
    assert table["format"] == "gzipscale-series/2" and table["floor_documents"] == 30
    assert "--floor-documents 30" in table["command"]

    code, printed, _ = run_cli(capsys, *args, "--workers", "1", "--json")
    assert code == 0
    again = json.loads(printed)
    assert again["rows"] == table["rows"]  # one worker or two: the same table
    assert [s["floor"] for s in again["scores"]] == [s["floor"] for s in table["scores"]]
    # H matches what `gzipscale grammar --score` reports for the same grammar and seed.
    code, printed, _ = run_cli(
        capsys, "grammar", "30,200,15,10", "--seed", "1", "--score", "8K", "--json"
    )
    one = json.loads(printed)["grammars"][0]["gzip"]["median"]
    assert one == next(
        s["median"] for s in table["scores"] if s["grammar"] == "30,200,15,10" and s["seed"] == 1
    )


def test_series_command_refuses_bad_input(tmp_path, capsys):
    code, _, err = run_cli(capsys, "series", "--series", "main,nonsense")
    assert code == 2 and "field 'series'" in err and "same-vocabulary" in err
    code, _, err = run_cli(capsys, "series", "--seeds", "4-1")
    assert code == 2 and "field 'seeds'" in err
    code, _, err = run_cli(capsys, "series", "--out", str(tmp_path))
    assert code == 2 and "is a folder" in err
    bad = tmp_path / "other.json"
    bad.write_text('{"format": "something else"}')
    from gzipscale.grammars.series import read_table

    with pytest.raises(ValueError, match="not a compressibility table"):
        read_table(bad)
