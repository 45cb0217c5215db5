"""Fitting one dataset: recovery of known laws, the grid search, bootstrap, errors."""

from __future__ import annotations

import dataclasses
import json
import re
import warnings

import numpy as np
import pytest
from builders import grid_points
from scipy.optimize import check_grad

from gzipscale.analysis.bootstrap import DEFAULT_POLICY, BootstrapPolicy, bootstrap_fit
from gzipscale.analysis.fit import (
    DEFAULT_GRID,
    FitWarning,
    StartGrid,
    UnderdeterminedFit,
    fit_scaling_law,
    fit_scaling_law_naive,
)
from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.objective import huber_objective
from gzipscale.vocabulary import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

CHINCHILLA = ScalingLaw(E=1.6934, A=406.40, B=410.72, alpha=0.33917, beta=0.28491)
CHINCHILLA_N = (7e7, 1.6e10)
CHINCHILLA_D = (5e9, 5e11)
# A tiny CPU sweep: small models, few tokens.
TINY = ScalingLaw(E=0.8, A=50.0, B=150.0, alpha=0.4, beta=0.35)
TINY_N = (1e4, 2e6)
TINY_D = (1e5, 1e8)
# 3^5 = 243 starts: small enough for the naive per-start loop in a test.
COARSE_GRID = StartGrid(
    a=(0.0, 10.0, 20.0),
    b=(0.0, 10.0, 20.0),
    e=(-1.0, 0.0, 1.0),
    alpha=(0.0, 1.0, 2.0),
    beta=(0.0, 1.0, 2.0),
)


def grid_data(law, n_range, d_range, noise, seed, shape=(6, 6)):
    """Losses of ``law`` on a log-spaced N x D grid with log-normal noise."""
    n_grid, d_grid = np.geomspace(*n_range, shape[0]), np.geomspace(*d_range, shape[1])
    return grid_points(law, n_grid, d_grid, noise, seed)


CASES = {
    "chinchilla": (CHINCHILLA, grid_data(CHINCHILLA, CHINCHILLA_N, CHINCHILLA_D, 0.01, 0)),
    "tiny": (TINY, grid_data(TINY, TINY_N, TINY_D, 0.01, 1)),
}


@pytest.fixture(scope="module")
def fitted():
    """Point fit and 100-resample bootstrap per case, computed once."""
    out = {}
    for name, (_, (N, D, L)) in CASES.items():
        fit = fit_scaling_law(N, D, L)
        boot = bootstrap_fit(N, D, L, n_resamples=100, seed=0, point_fit=fit)
        out[name] = (fit, boot)
    return out


def truth_values(law):
    return law.to_dict()  # the five parameters and the two frontier exponents


@pytest.mark.parametrize(
    "case, exponent_tol, e_rel_tol",
    # 1% noise at Chinchilla's scale moves the exponents by ~0.05: the loss
    # barely changes across the N, D range, so that is the data's resolution.
    [("chinchilla", 0.06, 0.08), ("tiny", 0.02, 0.05)],
)
def test_point_estimates_close_to_truth(fitted, case, exponent_tol, e_rel_tol):
    truth = CASES[case][0]
    fit, _ = fitted[case]
    assert fit.law.alpha == pytest.approx(truth.alpha, abs=exponent_tol)
    assert fit.law.beta == pytest.approx(truth.beta, abs=exponent_tol)
    assert fit.law.E == pytest.approx(truth.E, rel=e_rel_tol)
    assert fit.converged
    assert fit.warnings == []
    assert fit.n_points == 36 and fit.n_starts == len(DEFAULT_GRID) == 4500
    # Residuals are observed minus predicted, in input order.
    N, D, L = CASES[case][1]
    np.testing.assert_allclose(fit.residuals_loss, L - fit.loss(N, D))
    np.testing.assert_allclose(fit.residuals_log, np.log(L) - np.log(fit.loss(N, D)))


@pytest.mark.parametrize("case", ["chinchilla", "tiny"])
def test_truth_inside_bootstrap_intervals(fitted, case):
    truth = truth_values(CASES[case][0])
    fit, boot = fitted[case]
    assert boot.n_resamples == 100 and boot.level == 0.95
    for name, (lo, hi) in boot.intervals.items():
        assert lo <= truth[name] <= hi, f"{name}: truth {truth[name]} outside [{lo}, {hi}]"
        assert lo <= boot.point[name] <= hi
    assert boot.point["alpha"] == fit.law.alpha


def test_bootstrap_same_seed_same_intervals():
    N, D, L = CASES["tiny"][1]
    fit = fit_scaling_law(N, D, L, grid=COARSE_GRID)
    first = bootstrap_fit(N, D, L, n_resamples=20, seed=7, point_fit=fit)
    again = bootstrap_fit(N, D, L, n_resamples=20, seed=7, point_fit=fit)
    other = bootstrap_fit(N, D, L, n_resamples=20, seed=8, point_fit=fit)
    assert first.intervals == again.intervals
    assert first.intervals != other.intervals
    narrow = bootstrap_fit(N, D, L, n_resamples=20, seed=7, point_fit=fit, level=0.5)
    for name, (lo, hi) in narrow.intervals.items():
        assert first.intervals[name][0] <= lo <= hi <= first.intervals[name][1]


# The first 9 runs of a real tiny sweep (20,300,5,10): the point fit drives A to 0
# (log A far below what a double holds), which once crashed the bootstrap's start.
UNDERFLOW_RUNS = [
    (12240, 16384, 4.935159691908926),
    (12240, 32768, 4.163639656271712),
    (12240, 65536, 2.8960889278162343),
    (12240, 131072, 1.7575352501166943),
    (12240, 262144, 1.4556752740248726),
    (12240, 524288, 1.1481588518544181),
    (26088, 16384, 4.930150921087639),
    (26088, 32768, 4.210006455865269),
    (26088, 65536, 2.946346674651346),
]


def test_bootstrap_survives_a_point_fit_with_an_underflowed_coefficient():
    N, D, L = (np.array(c, dtype=float) for c in zip(*UNDERFLOW_RUNS, strict=True))
    fit = fit_scaling_law(N, D, L, emit_warnings=False)
    # The point fit drives A to (or, on some platforms, within a few hundred orders of
    # magnitude of) 0; the case this guards is A exactly 0, so make it so.
    assert fit.law.A < 1e-100
    fit = dataclasses.replace(fit, law=dataclasses.replace(fit.law, A=0.0))
    assert np.isneginf(fit.theta).any()
    boot = bootstrap_fit(N, D, L, n_resamples=10, seed=0, point_fit=fit)
    lo, hi = boot.intervals["beta"]
    assert np.isfinite(lo) and np.isfinite(hi) and lo <= hi


def test_bootstrap_warm_start_matches_full_grid_fit():
    """A resample's warm-started fit equals a 4500-start fit of the same resample."""
    N, D, L = CASES["chinchilla"][1]
    boot = bootstrap_fit(N, D, L, n_resamples=2, seed=3)
    for r in range(2):
        counts = boot.resample_counts[r]
        full = fit_scaling_law(
            np.repeat(N, counts), np.repeat(D, counts), np.repeat(L, counts), emit_warnings=False
        )
        for name in ("E", "alpha", "beta"):
            assert boot.samples[name][r] == pytest.approx(getattr(full.law, name), rel=1e-4)


def test_bootstrap_groups_redraws_degenerate_resamples():
    # Three runs (groups), one per model size: a resample of a single run has
    # one distinct N and must be redrawn (probability 1/9 per resample).
    N, D, L = grid_data(TINY, TINY_N, TINY_D, 0.01, 2, shape=(3, 6))
    groups = np.unique(N, return_inverse=True)[1]
    boot = bootstrap_fit(N, D, L, n_resamples=30, seed=0, groups=groups)
    assert boot.resample_unit == "group"
    assert boot.n_redrawn > 0
    for counts in boot.resample_counts:
        assert len(np.unique(N[counts > 0])) >= 2
        # Whole runs are drawn: every point of a run appears equally often.
        for g in range(3):
            assert len(np.unique(counts[groups == g])) == 1
    json.dumps(boot.to_dict(include_samples=True))


def test_summed_objective_beats_averaged_from_same_starts():
    """Averaging the Huber terms stops L-BFGS early (the Chinchilla fit's flaw).

    Noise-free Chinchilla-scale data, same starts, scipy's default tolerances:
    the summed objective recovers the true law, the averaged one stops short.
    """
    N, D, L = grid_data(CHINCHILLA, CHINCHILLA_N, CHINCHILLA_D, 0.0, 0)
    summed = fit_scaling_law_naive(N, D, L, grid=COARSE_GRID, options={}, emit_warnings=False)
    averaged = fit_scaling_law_naive(
        N, D, L, grid=COARSE_GRID, reduction="mean", options={}, emit_warnings=False
    )
    # Both objectives reported on the summed scale; the true optimum is 0.
    assert summed.objective < 1e-8
    assert averaged.objective > 1000 * summed.objective
    for name in ("E", "A", "B", "alpha", "beta"):
        assert getattr(summed.law, name) == pytest.approx(getattr(CHINCHILLA, name), rel=0.01)
    assert abs(averaged.law.beta - CHINCHILLA.beta) > 0.01
    assert abs(averaged.law.B - CHINCHILLA.B) / CHINCHILLA.B > 0.2


@pytest.mark.parametrize("case", ["chinchilla", "tiny"])
def test_vectorised_fit_matches_naive_loop(case):
    N, D, L = CASES[case][1]
    fast = fit_scaling_law(N, D, L, grid=COARSE_GRID)
    naive = fit_scaling_law_naive(N, D, L, grid=COARSE_GRID)
    assert fast.objective == pytest.approx(naive.objective, rel=1e-9)
    np.testing.assert_allclose(fast.theta, naive.theta, rtol=1e-5, atol=1e-6)


def test_full_grid_fit_at_least_as_good_as_naive_on_random_starts():
    N, D, L = CASES["chinchilla"][1]
    subset = np.random.default_rng(0).choice(len(DEFAULT_GRID), 100, replace=False)
    naive = fit_scaling_law_naive(N, D, L, start_indices=subset)
    fast = fit_scaling_law(N, D, L)
    assert fast.objective <= naive.objective * (1 + 1e-9)


@pytest.mark.parametrize("delta", [1e-3, 1.0])  # linear and quadratic Huber regions
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_objective_gradient_matches_finite_differences(delta, weighted, reduction):
    N, D, L = CASES["tiny"][1]
    logs = np.log(N), np.log(D), np.log(L)
    rng = np.random.default_rng(0)
    w = rng.integers(0, 3, N.size).astype(float) if weighted else None
    theta = np.array([4.0, 5.0, -0.2, 0.4, 0.35]) + rng.normal(0, 0.1, 5)

    def f(t):
        return huber_objective(t, *logs, delta, w, reduction)[0][0]

    def g(t):
        return huber_objective(t, *logs, delta, w, reduction)[1][0]

    assert check_grad(f, g, theta, epsilon=1e-7) < 1e-4 * np.max(np.abs(g(theta)))


def test_huber_is_summed_and_quadratic_then_linear():
    log_n = np.log([1e6, 1e7])
    log_d = np.log([1e8, 1e9])
    law = ScalingLaw(E=1.0, A=10.0, B=10.0, alpha=0.5, beta=0.5)
    exact = np.log(law.loss(np.exp(log_n), np.exp(log_d)))
    theta = law.to_theta()
    small, large = 5e-4, 0.1
    f, _ = huber_objective(theta, log_n, log_d, exact - np.array([small, large]), 1e-3)
    assert f[0] == pytest.approx(0.5 * small**2 + 1e-3 * (large - 0.5e-3))


@pytest.mark.parametrize(
    "N, D, message",
    [
        ([1e6] * 8, np.geomspace(1e8, 1e10, 8), "need at least 2 distinct model sizes N, got 1"),
        (np.geomspace(1e6, 1e8, 8), [1e9] * 8, "need at least 2 distinct token counts D, got 1"),
        (np.geomspace(1e6, 1e8, 5), np.geomspace(1e8, 1e10, 5), "need at least 6 points"),
    ],
)
def test_underdetermined_input_raises_naming_what_is_missing(N, D, message):
    L = np.full(len(N), 3.0)
    with pytest.raises(UnderdeterminedFit, match=message):
        fit_scaling_law(N, D, L)
    with pytest.raises(ValueError):  # UnderdeterminedFit is a ValueError
        bootstrap_fit(N, D, L)


def test_underdetermined_message_lists_the_single_value():
    with pytest.raises(UnderdeterminedFit, match=r"N=1e\+06"):
        fit_scaling_law([1e6] * 8, np.geomspace(1e8, 1e10, 8), np.full(8, 3.0))


@pytest.mark.parametrize(
    "field, bad, label",
    [
        ("N", -1.0, "N (model size)"),
        ("N", 0.0, "N (model size)"),
        ("D", np.nan, "D (tokens)"),
        ("L", np.inf, "L (loss)"),
        ("L", -2.0, "L (loss)"),
    ],
)
def test_bad_values_raise_naming_the_field(field, bad, label):
    N, D, L = (np.array(v, dtype=float) for v in CASES["tiny"][1])
    {"N": N, "D": D, "L": L}[field][3] = bad
    with pytest.raises(ValueError, match=re.escape(label) + ".*index 3"):
        fit_scaling_law(N, D, L)


def test_edge_of_grid_warning_when_best_fit_needs_alpha_above_2():
    steep = ScalingLaw(E=1.0, A=1e4, B=200.0, alpha=2.8, beta=0.4)
    N, D, L = grid_data(steep, (10, 1000), (1e5, 1e8), 0.01, 0)
    with pytest.warns(FitWarning, match="alpha=2.8.*beyond the start grid's upper edge"):
        fit = fit_scaling_law(N, D, L)
    assert fit.law.alpha == pytest.approx(2.8, abs=0.1)
    # Which grid start "wins" among starts that reach the same optimum is
    # arbitrary, so only check that the edge report names grid coordinates.
    assert set(fit.grid_edge) <= {"a", "b", "e", "alpha", "beta"}
    assert any("beyond the start grid" in w for w in fit.warnings)


def test_two_distinct_model_sizes_warn_not_identified():
    N, D, L = grid_data(TINY, TINY_N, TINY_D, 0.01, 0, shape=(2, 6))
    with pytest.warns(FitWarning, match="only 2 distinct model sizes N"):
        fit_scaling_law(N, D, L, grid=COARSE_GRID)


def test_in_grid_fit_emits_no_warning():
    N, D, L = CASES["tiny"][1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)
        fit_scaling_law(N, D, L, grid=COARSE_GRID)


def test_results_are_json_serialisable(fitted):
    fit, boot = fitted["tiny"]
    fit_json = json.loads(json.dumps(fit.to_dict()))
    assert fit_json["law"]["alpha"] == fit.law.alpha and len(fit_json["residuals_log"]) == 36
    assert fit_json["local_minima"][0]["objective"] == fit.objective
    boot_json = json.loads(json.dumps(boot.to_dict()))
    assert set(boot_json["intervals"]) == {
        "E",
        "A",
        "B",
        "alpha",
        "beta",
        "n_opt_exponent",
        "d_opt_exponent",
    }


def test_law_carries_its_frontier_exponents():
    law = ScalingLaw(E=1.0, A=10.0, B=10.0, alpha=0.3, beta=0.1)
    assert law.n_opt_exponent == pytest.approx(0.25) and law.d_opt_exponent == pytest.approx(0.75)
    assert law.to_dict()["n_opt_exponent"] == law.n_opt_exponent
    assert ScalingLaw.from_dict(law.to_dict()) == law
    flat = ScalingLaw(E=1.0, A=10.0, B=10.0, alpha=0.0, beta=0.0)
    assert np.isnan(flat.n_opt_exponent)
    assert np.isnan(ScalingLaw.from_dict({**law.to_dict(), "E": None}).E)  # JSON's NaN


def test_one_bootstrap_policy_says_how_its_intervals_were_made():
    assert (DEFAULT_POLICY.resamples, DEFAULT_POLICY.seed) == (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    assert DEFAULT_POLICY.describe() == (
        f"95% interval, {BOOTSTRAP_RESAMPLES} bootstrap resamples, seed {BOOTSTRAP_SEED}"
    )
    assert BootstrapPolicy(0).describe() == "no intervals (0 bootstrap resamples)"
    assert BootstrapPolicy(20, 3).quote(0.2, 0.4) == (
        "95% interval [0.2, 0.4] (20 bootstrap resamples, seed 3)"
    )
    assert BootstrapPolicy.from_dict(DEFAULT_POLICY.to_dict()) == DEFAULT_POLICY
    N, D, L = CASES["tiny"][1]
    fit = fit_scaling_law(N, D, L, grid=COARSE_GRID)
    assert bootstrap_fit(N, D, L, n_resamples=5, seed=4, point_fit=fit).policy == (
        BootstrapPolicy(5, 4)
    )
