"""Compute-optimal frontier formulas."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from gzipscale.analysis.frontier import (
    CHINCHILLA,
    EPOCH_CHINCHILLA,
    FrontierPoint,
    compute_optimal,
    crossing_budget,
    frontier_coefficient,
    frontier_exponents,
    loss_at_optimum,
    optimal_allocation,
    tokens_per_parameter,
)
from gzipscale.analysis.law import ScalingLaw

GOPHER_BUDGET = 5.76e23  # FLOPs of Gopher and Chinchilla
TINY = ScalingLaw(E=0.8, A=50.0, B=150.0, alpha=0.4, beta=0.35)
LAWS = [CHINCHILLA, EPOCH_CHINCHILLA, TINY]
BUDGETS = np.geomspace(1e15, 1e26, 12)


@pytest.mark.parametrize("law", LAWS)
def test_allocation_spends_the_budget_and_exponents_sum_to_one(law):
    n_opt, d_opt = optimal_allocation(law, BUDGETS)
    np.testing.assert_allclose(6 * n_opt * d_opt, BUDGETS, rtol=1e-12)
    a, b = frontier_exponents(law)
    assert a + b == pytest.approx(1.0, abs=1e-15)
    # N_opt grows as C**a: check the slope on a log-log plot.
    slope = np.polyfit(np.log(BUDGETS), np.log(n_opt), 1)[0]
    assert slope == pytest.approx(a, rel=1e-10)


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("C", [1e18, GOPHER_BUDGET])
def test_allocation_minimises_loss_along_the_isoflop(law, C):
    n_opt, _ = optimal_allocation(law, C)

    def on_isoflop(log_n):
        return float(law.loss(math.exp(log_n), C / (6 * math.exp(log_n))))

    best = minimize_scalar(on_isoflop, bracket=(math.log(n_opt) - 1, math.log(n_opt) + 1))
    assert math.exp(best.x) == pytest.approx(float(n_opt), rel=1e-4)
    assert float(loss_at_optimum(law, C)) == pytest.approx(best.fun, rel=1e-12)


@pytest.mark.parametrize("law", LAWS)
def test_tokens_per_parameter_is_the_ratio(law):
    n_opt, d_opt = optimal_allocation(law, BUDGETS)
    np.testing.assert_allclose(tokens_per_parameter(law, BUDGETS), d_opt / n_opt, rtol=1e-12)
    G = frontier_coefficient(law)
    a, b = frontier_exponents(law)
    np.testing.assert_allclose(n_opt, G * (BUDGETS / 6) ** a, rtol=1e-10)


def test_chinchilla_approach3_constants_at_gopher_budget():
    # Chinchilla's Approach 3 constants put the optimum near 40B parameters at
    # Gopher's budget (Hoffmann et al. 2022, Table 3), i.e. ~60 tokens/param:
    # the published fit disagrees with their Approaches 1-2 (70B, ~20 tokens).
    point = compute_optimal(CHINCHILLA, GOPHER_BUDGET)
    assert float(point.N_opt) == pytest.approx(40e9, rel=0.05)
    assert float(point.tokens_per_parameter) == pytest.approx(59, rel=0.05)


def test_epoch_refit_gives_about_20_tokens_per_parameter():
    # Epoch AI's refit (Besiroglu et al. 2024) restores the well-known ~20
    # tokens per parameter (Chinchilla: 70B parameters, 1.4T tokens).
    point = compute_optimal(EPOCH_CHINCHILLA, GOPHER_BUDGET)
    assert 15 < float(point.tokens_per_parameter) < 25
    assert float(point.N_opt) == pytest.approx(70e9, rel=0.1)


def test_crossing_budget_equalises_tokens_per_parameter():
    C = crossing_budget(TINY, CHINCHILLA)
    assert C is not None and C > 0
    assert float(tokens_per_parameter(TINY, C)) == pytest.approx(
        float(tokens_per_parameter(CHINCHILLA, C)), rel=1e-9
    )
    # Same ratio and same budget mean the same allocation.
    np.testing.assert_allclose(optimal_allocation(TINY, C), optimal_allocation(CHINCHILLA, C))
    # The crossing is symmetric, and the order of the ratios flips across it.
    assert crossing_budget(CHINCHILLA, TINY) == pytest.approx(C, rel=1e-12)
    below = tokens_per_parameter(TINY, C / 10) - tokens_per_parameter(CHINCHILLA, C / 10)
    above = tokens_per_parameter(TINY, C * 10) - tokens_per_parameter(CHINCHILLA, C * 10)
    assert np.sign(below) == -np.sign(above)


def test_parallel_laws_never_cross():
    # Same exponents, different coefficients: parallel power laws.
    shifted = ScalingLaw(
        E=2.0, A=2 * CHINCHILLA.A, B=CHINCHILLA.B, alpha=CHINCHILLA.alpha, beta=CHINCHILLA.beta
    )
    assert crossing_budget(shifted, CHINCHILLA) is None
    assert crossing_budget(CHINCHILLA, CHINCHILLA) is None


def test_vectorised_over_budgets_and_json():
    point = compute_optimal(CHINCHILLA, BUDGETS.reshape(3, 4))
    assert point.N_opt.shape == (3, 4)
    single = compute_optimal(CHINCHILLA, 1e21)
    assert np.ndim(single.N_opt) == 0
    data = json.loads(json.dumps(point.to_dict()))
    assert len(data["N_opt"]) == 3 and isinstance(json.dumps(single.to_dict()), str)


@pytest.mark.parametrize("field", ["A", "B", "alpha", "beta"])
def test_frontier_needs_positive_parameters(field):
    bad = dataclasses.replace(CHINCHILLA, **{field: -0.1})
    with pytest.raises(ValueError, match="needs A, B, alpha, beta > 0"):
        optimal_allocation(bad, 1e21)


@pytest.mark.parametrize("bad", [0.0, -1e20, np.nan, np.inf])
def test_bad_budget_raises(bad):
    with pytest.raises(ValueError, match="C \\(compute budget"):
        tokens_per_parameter(CHINCHILLA, [1e20, bad])


def test_the_frontier_exponents_are_the_laws_own():
    a, b = frontier_exponents(CHINCHILLA)
    assert (a, b) == (CHINCHILLA.n_opt_exponent, CHINCHILLA.d_opt_exponent)
    point = compute_optimal(CHINCHILLA, 1e21)
    assert set(point.to_dict()) == {"C", "N_opt", "D_opt", "tokens_per_parameter", "loss"}
    back = FrontierPoint.from_dict(json.loads(json.dumps(point.to_dict())))
    assert float(back.N_opt) == float(point.N_opt) and float(back.C) == 1e21
