"""The checks a design is judged by: predictions of held-out runs, decision accuracy and
the compute-optimal check's plan, on synthetic laws whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gzipscale.analysis.bootstrap import BootstrapPolicy
from gzipscale.analysis.decision import EXCESS, LOSS, decision_accuracy
from gzipscale.analysis.holdout import extrapolation_test, held_out_mask
from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.optimum import budget_at, judge_optimum, plan_optimum_check

FLOOR = 0.8
TRUE = dict(A=300.0, B=2000.0, alpha=0.7, beta=0.6)


def _grid(noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    N, D = np.meshgrid([5e3, 1e4, 2e4, 4e4, 8e4], [1.3e5, 2.6e5, 5.2e5, 1e6, 2e6])
    N, D = N.ravel(), D.ravel()
    excess = TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]
    return N, D, FLOOR + excess * np.exp(rng.normal(0.0, noise, N.size))


def test_held_out_runs_are_the_largest_compute():
    N, D, _ = _grid(0.0)
    mask, threshold = held_out_mask(N, D)
    C = 6 * N * D
    # 20% of 25 runs, plus the runs tied with the fifth largest compute.
    assert mask.sum() == np.sum(C >= np.sort(C)[-5]) >= 5
    assert C[mask].min() >= C[~mask].max() and threshold == C[mask].min()


def test_a_true_law_predicts_its_held_out_runs_inside_their_intervals():
    N, D, L = _grid(0.02)
    test = extrapolation_test("synthetic", N, D, L, floor=FLOOR, policy=BootstrapPolicy(60, 0))
    assert test.made, test.reason
    held, _ = held_out_mask(N, D)
    assert test.n_fitted == int((~held).sum()) and len(test.predictions) == int(held.sum())
    assert test.n_inside >= len(test.predictions) - 1
    # The held-out excess losses are 0.2-0.45 nats, fitted with 2% noise: the errors are
    # a small part of them.
    excess = np.array([p.observed - FLOOR for p in test.predictions])
    errors = np.array([abs(p.error) for p in test.predictions])
    assert np.all(errors < 0.12 * excess)
    d = test.to_dict()
    assert d["n_held_out"] == int(held.sum()) and d["mean_abs_error"] == pytest.approx(
        test.mean_abs_error
    )


def test_a_law_of_the_wrong_shape_misses_its_held_out_runs():
    N, D, L = _grid(0.0)
    # The largest runs bend away from the law fitted to the rest (a second floor-like
    # plateau the small runs cannot see): the test must show errors outside the intervals.
    mask, _ = held_out_mask(N, D)
    L = np.where(mask, L + 0.05, L)
    test = extrapolation_test("bent", N, D, L, floor=FLOOR, policy=BootstrapPolicy(60, 0))
    assert test.made
    assert test.n_inside < len(test.predictions)
    assert test.max_abs_error > 0.04


def test_too_few_runs_say_why():
    N, D, L = _grid(0.0)
    test = extrapolation_test("few", N[:4], D[:4], L[:4], floor=FLOOR)
    assert not test.made and "fit" in test.reason


def test_decision_accuracy_counts_pairs_ordered_as_at_the_largest_scale():
    cells = {
        "a": {(1e4, 1e5): 3.0, (1e4, 1e6): 1.0, (1e5, 1e6): 0.5},
        "b": {(1e4, 1e5): 2.0, (1e4, 1e6): 1.5, (1e5, 1e6): 0.9},
        "c": {(1e4, 1e5): 2.5, (1e4, 1e6): 2.0, (1e5, 1e6): 1.2},
    }
    result = decision_accuracy(cells, floors={"a": 0.45, "b": 0.1, "c": 1.0})
    assert (result.target_params, result.target_tokens) == (1e5, 1e6)
    by_loss = {(s.params, s.tokens): s.accuracy for s in result.of(LOSS)}
    assert by_loss[(1e5, 1e6)] == 1.0 and by_loss[(1e4, 1e6)] == 1.0
    # At the smallest cell the order is b < c < a; the target's is a < b < c: of the pairs
    # (a,b), (a,c), (b,c) only (b,c) agrees.
    assert by_loss[(1e4, 1e5)] == pytest.approx(1 / 3)
    assert result.target_order[LOSS] == ["a", "b", "c"]
    # By excess: target a 0.05, b 0.8, c 0.2 -> a < c < b.
    assert result.target_order[EXCESS] == ["a", "c", "b"]
    assert decision_accuracy({"a": cells["a"]}).reason


def _law():
    return ScalingLaw(E=FLOOR, A=TRUE["A"], B=TRUE["B"], alpha=TRUE["alpha"], beta=TRUE["beta"])


def test_the_optimum_check_plans_three_runs_of_equal_compute_around_n_opt():
    law = _law()
    shapes = {"s0": 5_000, "s1": 10_000, "s2": 20_000, "s3": 40_000, "s4": 80_000}
    budget = budget_at(law, 20_000)
    check = plan_optimum_check("synthetic", law, budget, shapes)
    assert check.n_opt == pytest.approx(20_000, rel=1e-9)
    assert [c.shape for c in check.candidates] == ["s1", "s2", "s3"]
    for c in check.candidates:
        assert 6 * c.params * c.tokens == pytest.approx(budget, rel=0.01)
    assert check.predicted_best.shape == "s2" and check.holds is None
    judged = judge_optimum(check, {c.shape: c.predicted for c in check.candidates})
    assert judged.holds is True
    worse = judge_optimum(check, {"s1": 1.0, "s2": 1.2, "s3": 1.1})
    assert worse.holds is False
    assert judged.to_dict()["predicted_best"] == "s2"


def test_the_optimum_check_refuses_a_budget_at_the_edge_of_the_shapes():
    law = _law()
    shapes = {"s0": 5_000, "s1": 10_000, "s2": 20_000}
    with pytest.raises(ValueError, match="edge"):
        plan_optimum_check("synthetic", law, budget_at(law, 4_000), shapes)
    with pytest.raises(ValueError, match="budget"):
        plan_optimum_check("synthetic", law, math.nan, shapes)
