"""``gzipscale fit`` / ``predict`` end to end on tables built from known laws, plus results.csv."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from builders import failed_row, grid_points, law_at, result_row

from gzipscale.analysis.commands import render_fit
from gzipscale.analysis.fitreport import FitReport
from gzipscale.analysis.results import (
    RESULT_COLUMNS,
    ResultRow,
    ResultRowError,
    read_results_csv,
    write_results_csv,
)
from gzipscale.analysis.table import load_points
from gzipscale.cli import _implementation, build_parser
from gzipscale.helpers import UserError

# Every parameter a line in H, so the regression has something to recover.
H_VALUES = {"low": 0.3, "mid": 0.45, "high": 0.7}
N_GRID = np.geomspace(1e5, 1e8, 6)
D_GRID = np.geomspace(1e7, 1e10, 6)
NOISE = 0.01


def synthetic_rows(name: str, h: float, seed: int) -> list[dict]:
    N, D, loss = grid_points(law_at(h), N_GRID, D_GRID, NOISE, seed)
    return [
        {"dataset": name, "gzip": h, "params": n, "tokens": d, "loss": loss_i, "status": "finished"}
        for n, d, loss_i in zip(N, D, loss, strict=True)
    ]


def parse(argv: list[str]):
    """The command's function bound to its parsed arguments, as the CLI would call it
    (user errors raise here instead of becoming exit status 2)."""
    args = build_parser().parse_args(argv)
    return lambda: _implementation(args.implementation)(args)


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
    assert set(fit_json) == {
        "source",
        "bootstrap",
        "budget",
        "datasets",
        "skipped",
        "regression",
        "regression_note",
        "law_choice",
        "comparison",
        "comparison_skipped",
        "floor_regression",
        "floor_regression_note",
    }
    assert fit_json["bootstrap"] == {"resamples": 20, "seed": 3, "level": 0.95}
    # A table without floors: free fits only, nothing to compare, no floor regression.
    assert fit_json["law_choice"] == "floor"
    assert fit_json["comparison"] == {}
    assert fit_json["floor_regression"] is None
    assert all(d["kind"] == "free" and d["floor"] is None for d in fit_json["datasets"].values())
    assert list(fit_json["datasets"]) == list(H_VALUES)
    for name, h in H_VALUES.items():
        d = fit_json["datasets"][name]
        for key in ("law", "intervals", "bootstrap", "n_points", "frontier", "gzip"):
            assert key in d
        law, truth = d["law"], law_at(h)
        assert law["alpha"] == pytest.approx(truth.alpha, abs=0.06)
        assert law["beta"] == pytest.approx(truth.beta, abs=0.06)
        assert d["gzip"] == pytest.approx(h)
        # One key per concept: the law's and its intervals' keys are the same.
        assert (
            set(d["intervals"])
            == set(law)
            == {
                "E",
                "A",
                "B",
                "alpha",
                "beta",
                "n_opt_exponent",
                "d_opt_exponent",
            }
        )
        for lo, hi in d["intervals"].values():
            assert lo <= hi
        assert d["bootstrap"]["resamples"] == 20 and d["bootstrap"]["seed"] == 3
        assert law["n_opt_exponent"] + law["d_opt_exponent"] == pytest.approx(1.0)
        assert law["n_opt_exponent"] == pytest.approx(law["beta"] / (law["alpha"] + law["beta"]))
        f = d["frontier"]
        assert f["C"] == 1e18
        assert 6 * f["N_opt"] * f["D_opt"] == pytest.approx(1e18, rel=1e-9)
        assert f["tokens_per_parameter"] == pytest.approx(f["D_opt"] / f["N_opt"])
        assert d["chinchilla_crossing"] > 0


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
    assert d["intervals"] is None and d["bootstrap"] is None
    assert d["gzip"] is None and d["n_points"] == 36
    assert d["law"]["alpha"] == pytest.approx(law_at(0.45).alpha, abs=0.06)
    assert report["regression"] is None and report["skipped"] == {}


def test_fit_report_renders_as_tables(fit_json):
    from rich.console import Console

    console = Console(record=True, width=140)
    render_fit(FitReport.from_dict(fit_json), console)
    text = console.export_text()
    for name in H_VALUES:
        assert name in text
    assert "95% interval, 20 bootstrap resamples, seed 3" in text  # beside the intervals
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
    with pytest.raises(UserError, match=r"missing column\(s\) loss"):
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
    with pytest.raises(FileNotFoundError):  # a UserError too: the CLI prints one line
        load_points(tmp_path / "nope.csv")
    with pytest.raises(UserError):
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


def test_result_row_round_trip_and_atomic_write(tmp_path):
    rows = [
        result_row(),
        result_row(params=2_400_000, val_loss=2.25, trial_id="t-002"),
        failed_row("CUDA out of memory"),
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
    rows.append(failed_row("diverged"))
    write_results_csv(rows, tmp_path / "results.csv")
    points = load_points(tmp_path)
    assert len(points) == 4
    assert points.names == ["20,300,5,10-s0"]
    assert points.frame["gzip"].tolist() == [0.41] * 4
    assert points.excluded == {"20,300,5,10-s0": {"failed": 1}}
    assert points.grammars == {"20,300,5,10-s0": "20,300,5,10"}
    assert points.rows == read_results_csv(tmp_path / "results.csv")  # read once, kept
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
    assert set(law) == {"E", "A", "B", "alpha", "beta", "n_opt_exponent", "d_opt_exponent"}
    truth = law_at(H)
    assert law["alpha"] == pytest.approx(truth.alpha, abs=0.06)
    assert report["interval"] == "95% interval, 2000 of 2000 regression draws valid, seed 0"
    assert report["valid"] and report["reason"] is None and report["problems"] == {}
    assert report["law"] == report["point"]
    assert report["draws"] == {"n": 2000, "valid": 2000, "level": 0.95, "seed": 0}
    assert report["extrapolation"]["outside"] is False
    assert report["extrapolation"]["range"] == pytest.approx([0.3, 0.7])
    assert report["outside_interval"] == []
    assert report["regression"]["covariate"] == "gzip"
    for key in ("E", "alpha", "beta", "n_opt_exponent", "d_opt_exponent"):
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


def test_fit_report_round_trips_through_json(fit_json):
    """The one fit-report object: what the actor sends and the display reads back."""
    from gzipscale.helpers import json_safe

    report = FitReport.from_dict(fit_json)
    assert json.loads(json.dumps(json_safe(report.to_dict()))) == fit_json
    low = report.datasets["low"]
    assert low.interval("alpha")[0] <= low.law.alpha <= low.interval("alpha")[1]
    assert low.bootstrap.policy.describe() == "95% interval, 20 bootstrap resamples, seed 3"
