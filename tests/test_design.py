"""The design rules (analysis/design.py) and `gzipscale design`, on pilots made from known
laws: a grammar whose runs follow a law is chosen with the window the rules should pick,
one whose runs sit at the floor or bend away from any one law is dropped with the reason."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from gzipscale.analysis.design import (
    DesignRules,
    Window,
    candidate_windows,
    choose_design,
    evaluate_window,
    fit_budget,
    judge_fit,
    makespan,
    min_tokens,
    nested_tokens,
    spread_order,
    trial_seconds,
)
from gzipscale.analysis.design_command import design_from_run_dir, design_spec
from gzipscale.analysis.fitreport import fit_dataset
from gzipscale.analysis.results import ResultRow, write_results_csv
from gzipscale.analysis.table import Points
from gzipscale.orchestrator.spec import SweepSpec
from gzipscale.vocabulary import FLOOR_FIT

SHAPES = {"tiny-0": 5480, "tiny-1": 12240, "tiny-2": 26088, "tiny-3": 45536, "tiny-4": 98352}
SIZES = [65_536, 131_072, 262_144, 524_288, 1_048_576]
RULES = DesignRules(min_steps=64, resamples=40)  # 64 steps of 8 x 256 = 131,072 tokens


def _rows(
    grammar,
    *,
    floor,
    A=60.0,
    alpha=0.55,
    B=900.0,
    beta=0.55,
    noise=0.005,
    bend=0.0,
    gzip=0.4,
    seed=0,
):
    """One dataset's pilot rows: L = floor + A/N^α + B/D^β, times log-normal noise; ``bend``
    adds a term that grows with D at small N (a shape no single law follows)."""
    rng = np.random.default_rng(seed)
    name = f"pcfg-{grammar.replace(',', '-')}-s0"
    rows = []
    for shape, n in SHAPES.items():
        for d in SIZES:
            excess = A / n**alpha + B / d**beta
            excess *= math.exp(rng.normal(0.0, noise)) * (
                1 + bend * math.log(d / SIZES[0]) * 5000 / n
            )
            rows.append(
                ResultRow(
                    dataset=name,
                    grammar=grammar,
                    seed=0,
                    gzip=gzip,
                    shape=shape,
                    params=n,
                    non_embedding_params=n // 2,
                    tokens=d,
                    val_loss=floor + excess,
                    status="finished",
                    wall_s=d * n * 2e-9 + 1.0,
                    tokens_per_s=1e5,
                    trial_id=f"{name}-{shape}",
                    step=d // 2048,
                    floor=floor,
                    floor_se=0.001,
                    schedule="wsd",
                )
            )
    return rows


def test_min_tokens_is_steps_times_batch():
    assert min_tokens(128, 8, 256) == 262_144
    with pytest.raises(ValueError):
        min_tokens(0, 8, 256)


def test_rules_check_their_thresholds():
    with pytest.raises(ValueError, match="max_span"):
        DesignRules(max_span=1.0)
    with pytest.raises(ValueError, match="min_steps"):
        DesignRules(min_steps=0)


def test_windows_skip_sizes_below_the_minimum_steps():
    windows = candidate_windows(list(SHAPES), SIZES, RULES, min_size=131_072)
    assert windows and all(w.sizes[0] >= 131_072 for w in windows)
    # 5 shapes give 6 blocks of 3 or more; the 4 usable sizes give 3.
    assert len(windows) == 6 * 3
    assert Window(("tiny-0", "tiny-1", "tiny-2"), (131_072, 262_144, 524_288)) in windows


def test_a_law_that_holds_passes_and_one_that_does_not_fails_with_reasons():
    good = Points.from_rows(_rows("30,200,15,10", floor=0.3))
    fit = fit_dataset("pcfg-30-200-15-10-s0", good, kind=FLOOR_FIT)
    check = judge_fit(fit, RULES)
    assert check.passes, check.failures
    assert check.alpha[1] > 0 and check.alpha[2] / check.alpha[1] < 2
    bent = Points.from_rows(_rows("50,100,20,20", floor=0.9, bend=1.0, noise=0.0))
    fit = fit_dataset("pcfg-50-100-20-20-s0", bent, kind=FLOOR_FIT)
    check = judge_fit(fit, RULES)
    assert not check.passes
    assert any("RMS" in f or "rms" in f for f in check.failures), check.failures


def test_a_grammar_at_its_floor_is_not_fitted():
    rows = _rows("3,300,2,2", floor=0.7, A=1e-3, B=1e-3)
    window = Window(("tiny-0", "tiny-1", "tiny-2"), (131_072, 262_144, 524_288))
    judged = evaluate_window(rows, window, RULES)
    assert judged.check is None and not judged.passes
    assert "at the floor" in judged.reason


def test_trial_seconds_come_from_each_trials_largest_row():
    rows = _rows("30,200,15,10", floor=0.3)
    rate = trial_seconds(rows)
    n = SHAPES["tiny-2"]
    assert rate["tiny-2"] == pytest.approx((SIZES[-1] * n * 2e-9 + 1.0) / SIZES[-1])
    assert nested_tokens([100, 200, 400], 0.2) == pytest.approx(400 + 0.2 * 300)


def test_makespan_packs_longest_first():
    assert makespan([3, 3, 2, 2, 2], 2) == 7  # {3, 2, 2} and {3, 2}
    assert makespan([5], 4) == 5
    with pytest.raises(ValueError):
        makespan([1], 0)


def test_spread_order_takes_the_ends_of_the_h_range_first():
    class G:
        def __init__(self, gzip):
            self.gzip = gzip

    order = spread_order([G(0.30), G(0.40), G(0.50), G(0.45), G(0.36)])
    assert [g.gzip for g in order][:3] == [0.30, 0.50, 0.40]


def test_the_budget_decides_how_many_grammars_a_window_trains():
    window = Window(tuple(SHAPES), tuple(SIZES[1:]))
    # The smallest model's runs are near its plateau here: rule 2b refuses the window ...
    plateau = evaluate_window(_rows("30,200,15,10", floor=0.3, gzip=0.36), window, RULES)
    assert not plateau.passes and "early plateau" in plateau.reason
    # ... which this test, about the budget, switches off.
    rules = DesignRules(min_steps=64, resamples=40, plateau_fraction=1.0)
    judged = [
        evaluate_window(_rows(g, floor=f, gzip=h, seed=i), window, rules)
        for i, (g, f, h) in enumerate(
            [("30,200,15,10", 0.3, 0.36), ("50,300,10,20", 0.6, 0.48), ("20,300,5,15", 1.2, 0.38)]
        )
    ]
    assert all(g.passes for g in judged), [g.failures() for g in judged]
    one_trial = max(judged[0].trial_s)
    taken, left, estimate = fit_budget(judged, budget_s=1e9, slots=2, overhead_s=10)
    assert len(taken) == 3 and not left and [g.gzip for g in taken] == sorted(g.gzip for g in taken)
    small = fit_budget(judged, budget_s=10 + 2.2 * one_trial, slots=2, overhead_s=10)
    assert len(small[0]) < 3 and small[1]
    design = choose_design([(window, judged)], budget_s=1e9, slots=2, overhead_s=10)
    assert design.window == window and len(design.chosen) == 3


def _pilot_dir(tmp_path, datasets):
    run = tmp_path / "pilot"
    run.mkdir()
    rows = [r for rs in datasets for r in rs]
    write_results_csv(rows, run / "results.csv")
    spec = {
        "name": "pilot",
        "grammars": [{"grammar": rs[0].grammar, "seed": 0} for rs in datasets],
        "shapes": list(SHAPES),
        "data_sizes": SIZES,
        "eval_tokens": 131_072,
        "nested": True,
        "train": {"preset": "cpu", "batch_size": 8, "schedule": "wsd", "vocab_size": 301},
    }
    (run / "sweep.json").write_text(json.dumps(SweepSpec.from_dict(spec).to_dict()))
    return run


def test_design_from_a_pilot_keeps_the_grammars_that_pass_and_names_the_one_dropped(tmp_path):
    run = _pilot_dir(
        tmp_path,
        [
            _rows("30,200,15,10", floor=0.3, gzip=0.36, seed=1),
            _rows("50,300,10,20", floor=0.6, gzip=0.48, seed=2),
            _rows("3,300,2,2", floor=0.7, A=1e-3, B=1e-3, gzip=0.12, seed=3),
        ],
    )
    rules = DesignRules(min_steps=64, resamples=30)
    design, pilot = design_from_run_dir(
        run, rules=rules, budget_s=1e9, slots=2, overhead_s=60, startup_s=2
    )
    assert design.window is not None
    assert {g.dataset for g in design.chosen} == {"pcfg-30-200-15-10-s0", "pcfg-50-300-10-20-s0"}
    assert "pcfg-3-300-2-2-s0" in design.dropped and "floor" in design.dropped["pcfg-3-300-2-2-s0"]
    spec = SweepSpec.from_dict(design_spec(design, pilot, "designed"))
    assert spec.name == "designed" and len(spec.grammars) == 2
    assert list(spec.shapes) == list(design.window.shapes)
    assert min(spec.data_sizes) >= min_tokens(64, 8, 256)


def test_design_command_writes_a_spec_the_sweep_accepts(tmp_path):
    run = _pilot_dir(
        tmp_path,
        [
            _rows("30,200,15,10", floor=0.3, gzip=0.36, seed=1),
            _rows("50,300,10,20", floor=0.6, gzip=0.48, seed=2),
        ],
    )
    out = tmp_path / "designed.json"
    cmd = [
        sys.executable,
        "-m",
        "gzipscale",
        "design",
        str(run),
        "--min-steps",
        "64",
        "--bootstrap",
        "30",
        "--budget-minutes",
        "600",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "chosen window" in done.stdout
    spec = SweepSpec.load(out)
    assert len(spec.grammars) == 2
    findings = json.loads(out.with_suffix(".design.json").read_text())
    assert findings["window"]["shapes"] == list(spec.shapes) and findings["windows"]
    # Bad input: one line, no traceback, nothing written.
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "gzipscale",
            "design",
            str(tmp_path / "nothing"),
            "--out",
            str(tmp_path / "x.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()
