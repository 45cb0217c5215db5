"""``gzipscale report`` end to end on a run directory built from known laws."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from builders import REPORT_LINES, run_row, write_run_dir
from builders import dataset_rows as law_rows
from builders import law_at as linear_law

from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.report import default_out
from gzipscale.analysis.results import ResultRow
from gzipscale.cli import _implementation, build_parser

# Every parameter a line in H, so table 3 has slopes to find.
H_VALUES = {"pcfg-low": 0.2, "pcfg-mid": 0.35, "pcfg-high": 0.5}
N_GRID = np.geomspace(1e4, 2e6, 6).round()
D_GRID = np.geomspace(1e5, 1e8, 6).round()
NOISE = 0.01
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TABLES = ("table1_datasets.csv", "table2_fits.csv", "table3_regression.csv")
FIGURES = ("loss_vs_tokens.png", "loss_surface.png", "frontiers.png", "parameters_vs_gzip.png")


def law_at(h: float) -> ScalingLaw:
    return linear_law(h, REPORT_LINES)


def row(name: str, h: float, n: float, d: float, loss: float) -> ResultRow:
    return run_row(name, h, n, d, loss)


def failed(r: ResultRow, reason: str) -> ResultRow:
    return r.replace(status="failed", reason=reason, val_loss=math.nan)


def dataset_rows(name: str, h: float, seed: int, n_grid=N_GRID, d_grid=D_GRID) -> list[ResultRow]:
    return law_rows(name, h, law_at(h), n_grid, d_grid, NOISE, seed)


def run(argv: list[str]) -> dict:
    """Run ``gzipscale report ... --json`` in-process, as the CLI would, and parse its output."""
    args = build_parser().parse_args(["report", *argv, "--json"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert _implementation(args.implementation)(args) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Three good datasets, failed rows, and one dataset with too few points."""
    rows = []
    for i, (name, h) in enumerate(H_VALUES.items()):
        rows += dataset_rows(name, h, seed=i)
    rows += [
        failed(row("pcfg-mid", 0.35, 1e4, 1e5, 1.0), "CUDA out of memory"),
        failed(row("pcfg-high", 0.5, 2e6, 1e8, 1.0), "node lost"),
    ]
    rows += [row("tiny", 0.6, 1e4, d, 3.0 + 1e3 / d) for d in (1e5, 1e6, 1e7)]
    return write_run_dir(tmp_path_factory.mktemp("sweep"), rows)


@pytest.fixture(scope="module")
def report(run_dir):
    # Module-scoped: the fits are the slow part, and most tests read the same folder.
    return run([str(run_dir), "--bootstrap", "20", "--seed", "1"])


def test_every_file_is_written(run_dir, report):
    out = run_dir / "report"
    assert report["out"] == str(out)
    assert set(report["files"]) == {"report.md", *TABLES, *FIGURES}
    for name in report["files"]:
        assert (out / name).is_file(), name
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert 20_000 < len(data) < 1_000_000, (name, len(data))


def test_table1_counts_finished_and_failed_runs(run_dir, report):
    t1 = pd.read_csv(run_dir / "report" / "table1_datasets.csv", keep_default_na=False)
    assert list(t1["dataset"]) == [*H_VALUES, "tiny"]
    by_name = t1.set_index("dataset")
    assert by_name.loc["pcfg-low", "grammar"] == "20,200,5,10"
    assert by_name.loc["pcfg-mid", "gzip_H"] == pytest.approx(0.35)
    assert list(by_name["finished_runs"]) == [36, 36, 36, 3]
    assert list(by_name["failed_runs"]) == [0, 1, 1, 0]
    assert list(by_name["fitted"]) == [True, True, True, False]


def test_table2_recovers_the_laws(run_dir, report):
    t2 = pd.read_csv(run_dir / "report" / "table2_fits.csv")
    assert list(t2["dataset"]) == list(H_VALUES)
    for _, r in t2.iterrows():
        truth = law_at(H_VALUES[r["dataset"]])
        assert r["alpha"] == pytest.approx(truth.alpha, abs=0.05)
        assert r["beta"] == pytest.approx(truth.beta, abs=0.05)
        assert r["n_opt_exponent"] == pytest.approx(r["beta"] / (r["alpha"] + r["beta"]))
        assert (r["bootstrap_resamples"], r["bootstrap_seed"]) == (20, 1)
        for key in ("E", "A", "B", "alpha", "beta", "n_opt_exponent", "d_opt_exponent"):
            assert r[f"{key}_lo"] <= r[f"{key}_hi"], key
        assert r["tokens_per_parameter"] == pytest.approx(r["D_opt"] / r["N_opt"])
        assert 6 * r["N_opt"] * r["D_opt"] == pytest.approx(1e18, rel=1e-9)
        assert r["chinchilla_crossing_flops"] > 0


def test_table3_regresses_each_parameter_on_h(run_dir, report):
    t3 = pd.read_csv(run_dir / "report" / "table3_regression.csv")
    assert list(t3["parameter"]) == ["E", "A", "B", "alpha", "beta"]
    assert {"slope", "intercept", "slope_stderr", "pvalue", "r_squared"} <= set(t3.columns)
    assert (t3["n_datasets"] == 3).all()
    beta = t3.set_index("parameter").loc["beta"]
    assert beta["slope"] < 0  # beta = 0.4 - 0.2 H in the generating laws


def test_markdown_has_tables_figures_and_skips(run_dir, report):
    text = (run_dir / "report" / "report.md").read_text()
    assert "--bootstrap 20" in text and "--seed 1" in text
    # The bootstrap policy stands beside the intervals it made.
    assert "Estimates [95% interval, 20 bootstrap resamples, seed 1]" in text
    for figure in FIGURES:
        assert f"]({figure})" in text, figure
    assert "## Skipped datasets" in text
    assert "**tiny**" in text and "need at least 6 points" in text
    assert "Table 3" in text and "| beta |" in text


def test_rerun_replaces_the_folder_reproducibly(run_dir, report):
    out = run_dir / "report"
    before = (out / "table2_fits.csv").read_text()
    (out / "stale.txt").write_text("from an older report")
    again = run([str(run_dir), "--bootstrap", "20", "--seed", "1"])
    assert again["files"] == report["files"]
    assert not (out / "stale.txt").exists()
    assert (out / "table2_fits.csv").read_text() == before  # seeded bootstrap
    assert sorted(p.name for p in run_dir.iterdir()) == ["report", "results.csv"]


def test_fewer_than_three_datasets_has_no_regression(tmp_path):
    small = (N_GRID[::2], D_GRID[::2])  # 9 points each: enough to fit, quicker
    rows = dataset_rows("a", 0.2, 0, *small) + dataset_rows("b", 0.5, 1, *small)
    write_run_dir(tmp_path, rows)
    out = tmp_path / "elsewhere"
    result = run([str(tmp_path), "--bootstrap", "0", "--out", str(out)])
    assert result["out"] == str(out) and not result["regression"]
    assert "table3_regression.csv" not in result["files"]
    assert "parameters_vs_gzip.png" not in result["files"]
    assert sorted(p.name for p in out.iterdir()) == sorted(result["files"])
    text = (out / "report.md").read_text()
    assert "needs at least 3 fitted datasets" in text and "got 2" in text
    assert "parameters_vs_gzip.png" not in text
    t2 = pd.read_csv(out / "table2_fits.csv")
    assert t2["alpha_lo"].isna().all()  # --bootstrap 0: no intervals


def test_refuses_to_replace_a_folder_that_is_not_a_report(run_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="does not look like a previous report"):
        run([str(run_dir), "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="contains the input"):
        run([str(run_dir), "--out", str(run_dir)])
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_missing_run_dir_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.csv"):
        run([str(tmp_path)])


def test_default_out(tmp_path):
    assert default_out(tmp_path) == tmp_path / "report"
    assert default_out(tmp_path / "points.csv") == tmp_path / "points_report"
