"""``gzipscale predict``: refused outside the fitted range of H, told how far with
--extrapolate, and never a law with a negative coefficient or a non-positive exponent.

The command-line tests fit small tables built from known laws (builders.py) whose H lie
below the corpus's; the verdict tests build regressions directly (no fits)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import LINES, dataset_rows, law_at, write_run_dir
from rich.console import Console

from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.predict_command import (
    NoValidLaw,
    OutsideFittedRange,
    extrapolation,
    predict_from_regression,
    render_prediction,
    score_corpus,
)
from gzipscale.analysis.regression import LinearTerm, ParameterRegression, fit_gzip_regression
from gzipscale.cli import main
from gzipscale.helpers import UserError

ROOT = Path(__file__).resolve().parents[1]
N_GRID = np.geomspace(1e5, 1e8, 4)
D_GRID = np.geomspace(1e7, 1e10, 4)
# B falls with H: positive on the fitted datasets (H 0.2 to 0.3), negative at H = 0.5.
FALLING_B = {**LINES, "B": (150.0, -400.0)}


def _table(path: Path, hs, lines) -> Path:
    rows = []
    for i, h in enumerate(hs):
        rows += dataset_rows(f"d{i}", h, law_at(h, lines), N_GRID, D_GRID, noise=0.003, seed=i)
    return write_run_dir(path, rows)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, float]:
    """Uniform random tokens (H near 0.5) and their H."""
    path = tmp_path_factory.mktemp("corpus") / "uniform.npy"
    np.save(path, np.random.default_rng(0).integers(0, 300, 256 * 200).astype(np.int32))
    H = float(score_corpus(path, text=False, context_length=256).stats.median)
    assert 0.45 < H < 0.55
    return path, H


@pytest.fixture(scope="module")
def falling_b(tmp_path_factory) -> Path:
    """Three datasets at H 0.2, 0.25, 0.3 whose B extrapolates below zero at H = 0.5."""
    return _table(tmp_path_factory.mktemp("falling_b"), [0.2, 0.25, 0.3], FALLING_B)


@pytest.fixture(scope="module")
def below(tmp_path_factory) -> Path:
    """Three datasets at H 0.3, 0.35, 0.4 whose law stays possible at H = 0.5."""
    return _table(tmp_path_factory.mktemp("below"), [0.3, 0.35, 0.4], LINES)


def _predict(corpus, table, *extra):
    return ["predict", str(corpus), "--budget", "1e20", "--from", str(table), *extra]


def test_outside_the_fitted_range_is_refused_in_one_line(corpus, falling_b):
    path, H = corpus
    result = subprocess.run(
        [sys.executable, "-m", "gzipscale", *_predict(path, falling_b)],
        capture_output=True,
        text=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("gzipscale predict: error: ")
    assert f"H = {H:.4f}" in line
    assert "[0.2000, 0.3000]" in line
    assert "--extrapolate" in line


def test_extrapolate_says_how_far_and_predicts(corpus, below, capsys):
    path, H = corpus
    assert main(_predict(path, below, "--extrapolate", "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    e = report["extrapolation"]
    assert e["outside"] and e["side"] == "above" and e["range"] == pytest.approx([0.3, 0.4])
    assert e["distance"] == pytest.approx(H - 0.4)
    assert e["fraction_of_range"] == pytest.approx((H - 0.4) / 0.1)
    assert report["valid"] and report["reason"] is None
    assert report["law"] == report["point"]
    assert any("--extrapolate" in w and f"{H - 0.4:.4g} above" in w for w in report["warnings"])
    assert report["frontier"] is not None


def test_extrapolate_text_names_the_distance(corpus, below, capsys):
    path, H = corpus
    assert main(_predict(path, below, "--extrapolate")) == 0
    out = capsys.readouterr().out
    assert f"extrapolated: H is {H - 0.4:.4g} above the fitted range [0.3000, 0.4000]" in out
    assert f"({(H - 0.4) / 0.1:.0%} of its width)" in out
    assert "L(N, D) = " in out


def test_negative_coefficient_is_no_law_and_exits_non_zero(corpus, falling_b, capsys):
    path, H = corpus
    assert main(_predict(path, falling_b, "--extrapolate")) == 2
    captured = capsys.readouterr()
    assert "L(N, D)" not in captured.out
    assert f"no valid law at H = {H:.4f}: B = -" in captured.out
    assert "(impossible)" in captured.out
    assert "Traceback" not in captured.err
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gzipscale predict: error: no valid law at H")


def test_no_valid_law_json_carries_the_verdict(corpus, falling_b, capsys):
    path, _ = corpus
    assert main(_predict(path, falling_b, "--extrapolate", "--json")) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    assert report["law"] is None and report["frontier"] is None
    assert report["point"]["B"] < 0
    assert set(report["problems"]) == {"B"}
    assert report["reason"].startswith("no valid law at H")
    assert report["draws"]["n"] == 2000 and report["draws"]["valid"] < 2000
    assert report["interval"].startswith(f"95% interval, {report['draws']['valid']} of 2000")
    assert report["extrapolation"]["outside"]


# -- verdicts on regressions built by hand -----------------------------------------------------


def _exact(lines, hs=(0.2, 0.3, 0.4)) -> ParameterRegression:
    return fit_gzip_regression([law_at(h, lines) for h in hs], list(hs))


def _term(name, intercept, stderr=0.0) -> LinearTerm:
    return LinearTerm(
        name=name,
        slope=0.0,
        intercept=intercept,
        slope_stderr=0.0,
        intercept_stderr=stderr,
        pvalue=1.0,
        rvalue=0.0,
        r_squared=0.0,
        n=3,
        mean_h=0.0,
    )


def _report(prediction: dict, H: float) -> dict:
    corpus = {"path": "c", "name": "c", "kind": "tokens", "H": H, "documents": 10}
    return {"corpus": corpus, "budget": 1e20, **prediction, "datasets": {}, "skipped": {}}


def _render(report: dict) -> str:
    out = io.StringIO()
    render_prediction(report, Console(file=out, width=200, highlight=False))
    return out.getvalue()


def test_extrapolation_distance():
    assert extrapolation(0.35, (0.3, 0.4)) == {
        "range": [0.3, 0.4],
        "outside": False,
        "side": None,
        "distance": 0.0,
        "fraction_of_range": 0.0,
    }
    below = extrapolation(0.25, (0.3, 0.5))
    assert below["side"] == "below"
    assert below["distance"] == pytest.approx(0.05)
    assert below["fraction_of_range"] == pytest.approx(0.25)
    assert extrapolation(0.3, (0.3, 0.5))["outside"] is False  # the ends are inside


def test_refusal_is_a_user_error_naming_range_and_flag():
    reg = _exact(LINES)
    with pytest.raises(
        OutsideFittedRange, match=r"H = 0\.1000 .*\[0\.2000, 0\.4000\].*--extrapolate"
    ):
        predict_from_regression(reg, 0.1, budget=1e20)
    assert issubclass(OutsideFittedRange, UserError) and issubclass(NoValidLaw, UserError)


def test_impossible_exponent_inside_the_range_is_no_law():
    # beta crosses zero at H = 0.3, inside the fitted range: the regression flags it, and
    # the law at 0.35 has beta < 0.
    reg = _exact({**LINES, "beta": (0.3, -1.0)})
    assert "beta" in reg.flags
    result = predict_from_regression(reg, 0.35, budget=1e20)
    assert not result["valid"] and result["law"] is None
    assert "beta" in result["problems"]
    assert any("regression line of beta is impossible" in w for w in result["warnings"])
    text = _render(_report(result, 0.35))
    assert "L(N, D)" not in text
    assert "no valid law at H = 0.3500: beta = -0.05 <= 0" in text


def test_few_valid_draws_is_no_law_and_point_outside_its_interval_is_said():
    # alpha and beta sit just above zero with wide draws: the point is a possible law, but
    # only about a quarter of the draws are, and the truncated draws put the point below
    # its own interval.
    terms = {
        "E": _term("E", 1.0),
        "A": _term("A", 100.0),
        "B": _term("B", 100.0),
        "alpha": _term("alpha", 0.01, stderr=1.0),
        "beta": _term("beta", 0.01, stderr=1.0),
    }
    law = ScalingLaw(E=1.0, A=100.0, B=100.0, alpha=0.01, beta=0.01)
    reg = ParameterRegression(
        terms=terms, H=[0.2, 0.3, 0.4], names=["a", "b", "c"], laws=[law] * 3, log_amplitudes=False
    )
    result = predict_from_regression(reg, 0.3, budget=1e20)
    assert result["problems"] == {} and result["law"] is not None
    assert not result["valid"]
    assert result["reason"].startswith("no reliable law at H = 0.3000: only ")
    assert result["draws"]["valid"] < 1000
    assert {"alpha", "beta"} <= set(result["outside_interval"])
    for key in result["outside_interval"]:
        if key in result["intervals"]:
            lo, hi = result["intervals"][key]
            assert not lo <= result["point"][key] <= hi
    text = _render(_report(result, 0.3))
    assert "L(N, D)" not in text
    assert "(outside interval)" in text
    assert "neither is a finding" in " ".join(text.split())


def test_point_inside_its_intervals_when_the_draws_are_all_valid():
    reg = fit_gzip_regression(
        [
            {k: v * (1 + 0.01 * s) for k, v in law_at(h).to_dict().items()}
            for h, s in ((0.2, 1), (0.3, -1), (0.4, 0.5), (0.5, -0.5))
        ],
        [0.2, 0.3, 0.4, 0.5],
    )
    result = predict_from_regression(reg, 0.35, budget=1e20)
    assert result["valid"] and result["draws"]["valid"] == 2000
    assert result["outside_interval"] == []
    for key, (lo, hi) in result["intervals"].items():
        assert lo <= result["point"][key] <= hi
    assert "L(N, D) = " in _render(_report(result, 0.35))


def test_cli_points_at_the_predict_module():
    from gzipscale.cli import COMMANDS

    assert COMMANDS["predict"][1] == "gzipscale.analysis.predict_command:cmd_predict"
    import gzipscale.analysis.commands as fit_commands

    assert not hasattr(fit_commands, "cmd_predict")
    assert (ROOT / "analysis" / "predict_command.py").exists()
