"""`gzipscale optimum`: the law's compute-optimal model and one on each side, trained for
real at one budget the grid does not contain, judged against the law's choice."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
from trainer_fixtures import session_dataset

from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.optimum import OptimumOutcome, budget_at
from gzipscale.analysis.results import ResultRow, write_results_csv
from gzipscale.orchestrator.optimum_check import choose_check, shape_family
from gzipscale.orchestrator.spec import SweepSpec

DATASET = "pcfg-10-300-3-5-s1"
FLOOR = 0.9
# Equal exponents: at the optimum A/sqrt(N) = B/sqrt(D), so B = A sqrt(D/N) puts the
# optimum at tiny-1 (12,240 parameters) with D about 30K tokens.
LAW = ScalingLaw(E=FLOOR, A=10.0, B=10.0 * math.sqrt(30_000 / 12_240), alpha=0.5, beta=0.5)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return session_dataset(tmp_path_factory)


def _run_dir(tmp_path, dataset):
    run = tmp_path / "run"
    shutil.copytree(dataset, run / "data" / DATASET)
    family = shape_family(301)
    rng = np.random.default_rng(0)
    sizes = [8_192, 16_384, 32_768, 65_536, 131_072]
    rows = []
    for shape in ("tiny-0", "tiny-1", "tiny-2", "tiny-3", "tiny-4"):
        for d in sizes:
            n = family[shape]
            loss = float(LAW.loss(n, d)) * math.exp(rng.normal(0, 0.002))
            rows.append(
                ResultRow(
                    dataset=DATASET, grammar="10,300,3,5", seed=1, gzip=0.25, shape=shape,
                    params=n, non_embedding_params=n // 2, tokens=d, val_loss=loss,
                    status="finished", wall_s=1.0, tokens_per_s=1e5, trial_id=shape, step=1,
                    floor=FLOOR, floor_se=0.001, schedule="wsd",
                )
            )  # fmt: skip
    write_results_csv(rows, run / "results.csv")
    spec = SweepSpec.from_dict(
        {
            "name": "run",
            "grammars": [{"grammar": "10,300,3,5", "seed": 1}],
            "shapes": ["tiny-0", "tiny-1", "tiny-2", "tiny-3", "tiny-4"],
            "data_sizes": sizes,
            "eval_tokens": 8192,
            "nested": True,
            "train": {"preset": "cpu", "batch_size": 8, "schedule": "wsd", "vocab_size": 301,
                      "warmup_steps": 2, "compile": "off"},
        }
    )  # fmt: skip
    (run / "sweep.json").write_text(json.dumps(spec.to_dict()))
    return run, sizes


def test_the_check_is_planned_at_an_interior_shape_within_the_dataset():
    family = shape_family(301)
    check = choose_check(DATASET, LAW, family, max_tokens=240_000, min_tokens=2048, context=256)
    shapes = [c.shape for c in check.candidates]
    assert len(shapes) == 3 and shapes[0] != sorted(family, key=family.get)[0]
    # The three cost the same budget, to within a document of tokens each.
    for c in check.candidates:
        assert 6 * c.params * c.tokens == pytest.approx(check.budget, rel=0.05)
    assert all(c.tokens <= 240_000 for c in check.candidates)
    assert check.predicted_best.shape == shapes[1]
    with pytest.raises(ValueError, match="no budget fits"):
        choose_check(DATASET, LAW, family, max_tokens=1_000, min_tokens=512, context=256)
    assert budget_at(LAW, family["tiny-1"]) > 0


def test_optimum_command_trains_three_models_and_judges_the_law(dataset, tmp_path):
    run, sizes = _run_dir(tmp_path, dataset)
    cmd = [sys.executable, "-m", "gzipscale", "optimum", str(run), "--min-steps", "2",
           "--workers", "2", "--bootstrap", "40"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = OptimumOutcome.from_dict(json.loads((run / "optimum.json").read_text()))
    (check,) = outcome.checks
    assert check.dataset == DATASET and len(check.candidates) == 3
    grid = {6 * r_n * d for r_n in shape_family(301).values() for d in sizes}
    assert all(abs(check.budget - c) / c > 0.01 for c in grid)  # a budget the grid lacks
    for c in check.candidates:
        assert math.isfinite(c.observed) and 0 < c.observed < 10
        assert (run / "optimum" / DATASET / f"{c.shape}-{c.tokens}" / "result.json").is_file()
    assert check.holds in (True, False)
    assert "law's best" in done.stdout
    # A rerun trains nothing again: the same losses.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    second = OptimumOutcome.from_dict(json.loads((run / "optimum.json").read_text()))
    assert [c.observed for c in second.checks[0].candidates] == [
        c.observed for c in check.candidates
    ]
