"""``gzipscale fit`` / ``predict`` end to end on tables built from known laws, plus results.csv."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from gzipscale.analysis.commands import register, render_fit
from gzipscale.analysis.fit import ScalingLaw
from gzipscale.analysis.results import (
    RESULT_COLUMNS,
    ResultRow,
    ResultRowError,
    read_results_csv,
    write_results_csv,
)
from gzipscale.analysis.table import load_points

# Every parameter a line in H, so the regression has something to recover.
H_VALUES = {"low": 0.3, "mid": 0.45, "high": 0.7}
N_GRID = np.geomspace(1e5, 1e8, 6)
D_GRID = np.geomspace(1e7, 1e10, 6)
NOISE = 0.01


def law_at(h: float) -> ScalingLaw:
    return ScalingLaw(
        E=0.5 + h, A=40.0 + 40.0 * h, B=150.0, alpha=0.25 + 0.2 * h, beta=0.4 - 0.1 * h
    )


def synthetic_rows(name: str, h: float, seed: int) -> list[dict]:
    N, D = (g.ravel() for g in np.meshgrid(N_GRID, D_GRID))
    rng = np.random.default_rng(seed)
    loss = law_at(h).loss(N, D) * np.exp(rng.normal(0.0, NOISE, N.size))
    return [
        {"dataset": name, "gzip": h, "params": n, "tokens": d, "loss": loss_i, "status": "finished"}
        for n, d, loss_i in zip(N, D, loss, strict=True)
    ]


def parse(argv: list[str]):
    """The command's function bound to its parsed arguments, as the CLI would call it."""
    parser = argparse.ArgumentParser(prog="gzipscale")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return lambda: args.func(args)


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = parse(argv)()
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Three good datasets, one with too few points, one that only failed, plus failed rows."""
    rows = []
    for i, (name, h) in enumerate(H_VALUES.items()):
        rows += synthetic_rows(name, h, seed=i)
    # 4 points, one model size: underdetermined on two counts.
    rows += [
        {
            "dataset": "tiny",
            "gzip": 0.5,
            "params": 1e6,
            "tokens": d,
            "loss": 2.0 + 1e9 / d,
            "status": "finished",
        }
        for d in (1e7, 1e8, 1e9, 1e10)
    ]
    # Failed trials: NaN or absurd values that would wreck the fit if they were read.
    rows += [
        {"dataset": "mid", "gzip": 0.45, "params": 1e5, "tokens": 1e9, "loss": np.nan},
        {"dataset": "mid", "gzip": 0.45, "params": -1, "tokens": 1e9, "loss": 1e-9},
    ]
    for row in rows[-2:]:
        row["status"] = "failed"
    rows += [
        {"dataset": "crashed", "params": 1e6, "tokens": 1e8, "loss": np.nan, "status": "failed"}
    ]
    path = tmp_path_factory.mktemp("tables") / "points.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fit_json(table):
    # Module-scoped because the fits are the slow part and several tests read one report;
    # capsys is function-scoped, so stdout is captured by hand here.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = parse(["fit", str(table), "--json", "--bootstrap", "20", "--seed", "3"])()
    assert code == 0
    return json.loads(out.getvalue())


# -- gzipscale fit ---------------------------------------------------------------------


def test_fit_json_shape_and_recovers_exponents(fit_json):
    assert set(fit_json) == {"datasets", "skipped", "regression"}
    assert list(fit_json["datasets"]) == list(H_VALUES)
    for name, h in H_VALUES.items():
        d = fit_json["datasets"][name]
        for key in ("E", "A", "B", "alpha", "beta", "ci", "n_points", "frontier", "gzip"):
            assert key in d
        truth = law_at(h)
        assert d["alpha"] == pytest.approx(truth.alpha, abs=0.06)
        assert d["beta"] == pytest.approx(truth.beta, abs=0.06)
        assert d["gzip"] == pytest.approx(h)
        assert set(d["ci"]) == {"E", "A", "B", "alpha", "beta", "a", "b"}
        for lo, hi in d["ci"].values():
            assert lo <= hi
        f = d["frontier"]
        assert f["a"] + f["b"] == pytest.approx(1.0)
        assert f["a"] == pytest.approx(d["beta"] / (d["alpha"] + d["beta"]))
        assert 6 * f["N_opt"] * f["D_opt"] == pytest.approx(1e18, rel=1e-9)
        assert f["tokens_per_parameter"] == pytest.approx(f["D_opt"] / f["N_opt"])
        assert "chinchilla_crossing" in f


def test_fit_regression_on_gzip(fit_json):
    reg = fit_json["regression"]
    assert reg is not None and reg["names"] == list(H_VALUES)
    assert reg["H"] == pytest.approx(list(H_VALUES.values()))
    # alpha = 0.25 + 0.2 H in the generating laws.
    assert reg["terms"]["alpha"]["slope"] == pytest.approx(0.2, abs=0.15)
    for term in reg["terms"].values():
        assert {"slope", "intercept", "slope_stderr", "pvalue"} <= set(term)


def test_fit_skips_underdetermined_and_failed_datasets(fit_json):
    skipped = fit_json["skipped"]
    assert set(skipped) == {"tiny", "crashed"}
    assert "6 points" in skipped["tiny"] and "got 4" in skipped["tiny"]
    assert "distinct model sizes N" in skipped["tiny"]
    assert "no finished rows" in skipped["crashed"] and "1 failed" in skipped["crashed"]


def test_fit_excludes_failed_rows(fit_json):
    mid = fit_json["datasets"]["mid"]
    assert mid["n_points"] == 36
    assert mid["excluded"] == {"failed": 2}
    assert fit_json["datasets"]["low"]["excluded"] == {}


def test_fit_bootstrap_zero_on_parquet(tmp_path, capsys):
    # No dataset column: the whole table is one dataset, "all"; no gzip, so no regression.
    frame = pd.DataFrame(synthetic_rows("x", 0.45, seed=7)).drop(columns=["dataset", "gzip"])
    frame = frame.rename(columns={"loss": "val_loss"})
    path = tmp_path / "points.parquet"
    frame.to_parquet(path)
    code, out = run(["fit", str(path), "--json", "--bootstrap", "0"], capsys)
    report = json.loads(out)
    assert code == 0
    assert list(report["datasets"]) == ["all"]
    d = report["datasets"]["all"]
    assert d["ci"] is None and d["gzip"] is None and d["n_points"] == 36
    assert d["alpha"] == pytest.approx(law_at(0.45).alpha, abs=0.06)
    assert report["regression"] is None and report["skipped"] == {}


def test_fit_report_renders_as_tables(fit_json):
    from rich.console import Console

    console = Console(record=True, width=140)
    render_fit({**fit_json, "regression_note": None}, console)
    text = console.export_text()
    for name in H_VALUES:
        assert name in text
    assert "parameters regressed on gzip H" in text
    assert "p-value" in text and "skipped" in text and "tiny" in text


def test_fit_is_reproducible(table, fit_json, capsys):
    # Same seed, same numbers: a rerun (here on one dataset) reproduces its intervals.
    frame = pd.read_csv(table)
    path = table.parent / "low.csv"
    frame[frame["dataset"] == "low"].to_csv(path, index=False)
    _, out = run(["fit", str(path), "--json", "--bootstrap", "20", "--seed", "3"], capsys)
    assert json.loads(out)["datasets"]["low"] == fit_json["datasets"]["low"]


# -- load_points -----------------------------------------------------------------------


def test_missing_loss_column_is_named(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"params": [1e6], "tokens": [1e8], "lost": [3.0]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) loss"):
        parse(["fit", str(path), "--json"])()


def test_negative_params_names_column_and_row(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"params": [1e6, 2e6, -5.0], "tokens": [1e8] * 3, "loss": [3.0, 2.9, 2.8]}).to_csv(
        path, index=False
    )
    with pytest.raises(ValueError, match=r"row 3: column 'params' must be > 0"):
        load_points(path)


def test_non_numeric_and_nan_values_are_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("params,tokens,loss\n1e6,1e8,3.0\n1e6,lots,2.9\n")
    with pytest.raises(ValueError, match=r"row 2: column 'tokens' is not a number"):
        load_points(path)
    path.write_text("params,tokens,loss\n1e6,1e8,\n")
    with pytest.raises(ValueError, match=r"row 1: column 'loss' is missing"):
        load_points(path)


def test_unknown_suffix_and_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_points(tmp_path / "nope.csv")
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(ValueError, match=r"\.csv, \.parquet"):
        load_points(tmp_path / "t.json")
    with pytest.raises(FileNotFoundError, match="results.csv"):
        load_points(tmp_path)
    write_results_csv([], tmp_path / "results.csv")
    with pytest.raises(ValueError, match="no rows"):
        load_points(tmp_path)


# -- results.csv -----------------------------------------------------------------------


def result_row(**changes) -> ResultRow:
    row = {
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
    row.update(changes)
    return ResultRow(**row)


def test_result_row_round_trip_and_atomic_write(tmp_path):
    rows = [
        result_row(),
        result_row(params=2_400_000, val_loss=2.25, trial_id="t-002"),
        result_row(status="failed", reason="CUDA out of memory", val_loss=float("nan")),
    ]
    assert rows[0].flops == 6 * 1_200_000 * 50_000_000
    assert list(rows[0].to_dict()) == RESULT_COLUMNS
    run_dir = tmp_path / "run"
    write_results_csv(rows, run_dir / "results.csv")
    assert [p.name for p in run_dir.iterdir()] == ["results.csv"]  # no temp file left
    back = read_results_csv(run_dir / "results.csv")
    assert back[:2] == rows[:2]
    assert back[2].status == "failed" and math.isnan(back[2].val_loss)
    assert ResultRow.from_dict(rows[0].to_dict()) == rows[0]
    # Overwriting replaces the file whole.
    write_results_csv(rows[:1], run_dir / "results.csv")
    assert read_results_csv(run_dir / "results.csv") == rows[:1]
    assert [p.name for p in run_dir.iterdir()] == ["results.csv"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "results.csv"
    write_results_csv([result_row()], path)
    bad = result_row().to_dict() | {"status": "crashed"}
    with pytest.raises(ResultRowError, match="status"):
        write_results_csv([result_row(), bad], path)
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    assert len(read_results_csv(path)) == 1


def test_result_row_validation_names_the_field():
    with pytest.raises(ResultRowError, match=r"'status'.*finished, failed"):
        result_row(status="done")
    with pytest.raises(ResultRowError, match="'params'"):
        result_row(params=0)
    with pytest.raises(ResultRowError, match="'reason'"):
        result_row(status="failed", val_loss=float("nan"))
    with pytest.raises(ResultRowError, match="'flops'"):
        result_row(flops=1.0)
    with pytest.raises(ResultRowError, match="'tokens'"):
        ResultRow.from_dict(result_row().to_dict() | {"tokens": "many"})
    data = result_row().to_dict()
    del data["val_loss"]
    with pytest.raises(ResultRowError, match="'val_loss'"):
        ResultRow.from_dict(data)
    with pytest.raises(ResultRowError, match="'color'"):
        ResultRow.from_dict(result_row().to_dict() | {"color": "red"})


def test_run_directory_reads_through_result_rows(tmp_path):
    rows = [
        result_row(params=p, tokens=t, val_loss=2.0 + 1e3 / p**0.3 + 1e3 / t**0.3)
        for p in (1e6, 1e7)
        for t in (1e8, 1e9)
    ]
    rows.append(result_row(status="failed", reason="diverged", val_loss=float("nan")))
    write_results_csv(rows, tmp_path / "results.csv")
    points = load_points(tmp_path)
    assert len(points) == 4
    assert set(points["dataset"]) == {"20,300,5,10-s0"}
    assert points["gzip"].tolist() == [0.41] * 4
    assert points.attrs["excluded"] == {"20,300,5,10-s0": {"failed": 1}}
    (tmp_path / "results.csv").write_text(
        ",".join(RESULT_COLUMNS) + "\n" + ",".join(["x"] * len(RESULT_COLUMNS)) + "\n"
    )
    with pytest.raises(ValueError, match=r"line 2: field 'seed'"):
        load_points(tmp_path)


# -- gzipscale predict -----------------------------------------------------------------


def test_predict_from_uniform_tokens(table, tmp_path, capsys):
    corpus = tmp_path / "uniform.npy"
    np.save(corpus, np.random.default_rng(0).integers(0, 300, 256 * 200).astype(np.int32))
    budget = 1e20
    code, out = run(
        ["predict", str(corpus), "--budget", f"{budget:g}", "--from", str(table), "--json"], capsys
    )
    assert code == 0
    report = json.loads(out)
    assert report["corpus"]["kind"] == "tokens"
    H = report["corpus"]["H"]
    assert H == pytest.approx(0.5, abs=0.05)
    law = report["law"]
    assert set(law) == {"E", "A", "B", "alpha", "beta"}
    truth = law_at(H)
    assert law["alpha"] == pytest.approx(truth.alpha, abs=0.06)
    for key in ("E", "alpha", "beta", "a", "b"):
        lo, hi = report["intervals"][key]
        assert lo <= hi
    f = report["frontier"]
    assert 6 * f["N_opt"] * f["D_opt"] == pytest.approx(budget, rel=1e-9)
    assert set(report["skipped"]) == {"tiny", "crashed"}
    assert report["warnings"] == []


def test_predict_needs_three_datasets_with_gzip(tmp_path):
    path = tmp_path / "two.csv"
    pd.DataFrame([{"dataset": "a", "params": 1e6, "tokens": 1e8, "loss": 3.0}]).to_csv(
        path, index=False
    )
    corpus = tmp_path / "c.npy"
    np.save(corpus, np.zeros(512, dtype=np.int32))
    command = parse(["predict", str(corpus), "--budget", "1e20", "--from", str(path)])
    with pytest.raises(ValueError, match="at least 3 fitted datasets with a gzip"):
        command()
