"""Regressions of fitted parameters on gzip compressibility H, Eq. 5 and Eq. 6."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from builders import law_at as linear_law

from gzipscale.analysis.fit import UnderdeterminedFit, fit_scaling_law
from gzipscale.analysis.frontier import CHINCHILLA, compute_optimal
from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.regression import (
    GzipRegression,
    ParameterRegression,
    epsilon_adjusted_law,
    fit_epsilon,
    fit_gzip_regression,
    fit_regression,
    law_problems,
    predict_at_gzip,
)

# Each parameter an exact line in H: (intercept, slope).
LINES = {
    "E": (0.5, 2.0),
    "A": (300.0, 150.0),
    "B": (500.0, -200.0),
    "alpha": (0.25, 0.2),
    "beta": (0.35, -0.1),
}
H_VALUES = [0.2, 0.3, 0.45, 0.6]


def law_at(H: float) -> ScalingLaw:
    return linear_law(H, LINES)


@pytest.fixture(scope="module")
def exact():
    return fit_gzip_regression([law_at(h) for h in H_VALUES], H_VALUES)


def test_exact_lines_are_recovered(exact):
    for name, (intercept, slope) in LINES.items():
        term = exact.terms[name]
        assert term.slope == pytest.approx(slope, rel=1e-9)
        assert term.intercept == pytest.approx(intercept, rel=1e-9)
        assert term.r_squared == pytest.approx(1.0)
        assert term.pvalue < 1e-6
        assert term.n == 4
    got = exact.law_at(0.37)
    for name, value in law_at(0.37).to_dict().items():
        assert getattr(got, name) == pytest.approx(value, rel=1e-12)


def test_noisy_lines_give_small_pvalues_and_honest_errors():
    rng = np.random.default_rng(0)
    H = np.linspace(0.1, 0.7, 8)
    laws = []
    for h in H:
        law = law_at(h).to_dict()
        laws.append({k: v * (1 + rng.normal(0, 0.01)) for k, v in law.items()})
    reg = fit_gzip_regression(laws, H, names=[f"pcfg{i}" for i in range(8)])
    for name, (_, slope) in LINES.items():
        term = reg.terms[name]
        assert term.pvalue < 0.01
        assert abs(term.slope - slope) < 4 * term.slope_stderr
        assert 0 < term.slope_stderr and 0 < term.intercept_stderr


def test_accepts_fits_mappings_and_log_amplitudes():
    laws = [law_at(h).to_dict() for h in H_VALUES]
    reg = fit_gzip_regression(laws, H_VALUES, log_amplitudes=True)
    assert reg.terms["A"].log_scale and not reg.terms["E"].log_scale
    # A line in log A is not exact here, but stays positive and close.
    assert reg.law_at(0.3).A == pytest.approx(law_at(0.3).A, rel=0.02)


def test_two_datasets_raise():
    with pytest.raises(UnderdeterminedFit, match="need at least 3 datasets.*got 2"):
        fit_gzip_regression([law_at(0.2), law_at(0.4)], [0.2, 0.4])


def test_identical_h_raises():
    with pytest.raises(UnderdeterminedFit, match="2 distinct H"):
        fit_gzip_regression([law_at(0.2)] * 3, [0.2, 0.2, 0.2])


def test_epsilon_endpoints(exact):
    assert epsilon_adjusted_law(exact, 0.4, 0.0) == CHINCHILLA
    at_one = epsilon_adjusted_law(exact, 0.4, 1.0)
    for name, value in law_at(0.4).to_dict().items():
        assert getattr(at_one, name) == pytest.approx(value, rel=1e-12)
    with pytest.raises(ValueError, match="epsilon"):
        epsilon_adjusted_law(exact, 0.4, 1.5)


def test_fitted_epsilon_recovers_generating_value(exact):
    rng = np.random.default_rng(1)
    rows = []
    for h in H_VALUES:
        law = epsilon_adjusted_law(exact, h, 0.3)
        for n in np.geomspace(1e6, 1e9, 5):
            for d in np.geomspace(1e8, 1e11, 5):
                rows.append((n, d, h, float(law.loss(n, d)) * (1 + rng.normal(0, 0.002))))
    N, D, H, L = (np.array(col) for col in zip(*rows, strict=True))
    result = fit_epsilon(exact, N, D, H, L)
    assert result.epsilon == pytest.approx(0.3, abs=0.02)
    assert not result.at_bound and result.n_points == len(rows)
    json.dumps(result.to_dict())


def test_prediction_intervals_contain_point_and_are_seeded():
    rng = np.random.default_rng(2)
    H = np.linspace(0.1, 0.7, 6)
    laws = [{k: v * (1 + rng.normal(0, 0.01)) for k, v in law_at(h).to_dict().items()} for h in H]
    reg = fit_gzip_regression(laws, H)
    budgets = [1e19, 1e21, 1e23]
    pred = predict_at_gzip(reg, 0.4, C=budgets, n_samples=500, seed=3)
    again = predict_at_gzip(reg, 0.4, C=budgets, n_samples=500, seed=3)
    assert pred.intervals == again.intervals
    assert pred.law == reg.law_at(0.4)
    for name in ("E", "A", "B", "alpha", "beta"):
        lo, hi = pred.intervals[name]
        assert lo < getattr(pred.law, name) < hi
    point = compute_optimal(pred.law, budgets)
    for field in ("N_opt", "D_opt", "tokens_per_parameter", "loss"):
        for (lo, hi), value in zip(
            pred.frontier_intervals[field], getattr(point, field), strict=True
        ):
            assert lo < value < hi
    assert pred.n_invalid == 0
    data = json.loads(json.dumps(pred.to_dict()))
    assert data["frontier"]["N_opt"] == pytest.approx(point.N_opt.tolist())


def test_prediction_with_epsilon_moves_towards_chinchilla(exact):
    pred = predict_at_gzip(exact, 0.4, epsilon=0.25, n_samples=200)
    assert pred.law == epsilon_adjusted_law(exact, 0.4, 0.25)
    # An exact regression has zero standard errors: degenerate intervals.
    lo, hi = pred.intervals["alpha"]
    assert lo == pytest.approx(hi) == pytest.approx(pred.law.alpha)


def test_end_to_end_from_fitted_datasets():
    """Fit three synthetic datasets, regress on H, get the lines back roughly."""
    rng = np.random.default_rng(4)
    H = [0.25, 0.45, 0.65]
    fits = []
    N, D = (g.ravel() for g in np.meshgrid(np.geomspace(1e4, 2e6, 6), np.geomspace(1e5, 1e8, 6)))
    for h in H:
        law = ScalingLaw(E=0.5 + h, A=50.0, B=150.0, alpha=0.3 + 0.2 * h, beta=0.35)
        L = law.loss(N, D) * np.exp(rng.normal(0, 0.003, N.size))
        fits.append(fit_scaling_law(N, D, L))
    reg = fit_gzip_regression([f.law for f in fits], H, names=["a", "b", "c"])
    assert reg.terms["alpha"].slope == pytest.approx(0.2, abs=0.05)
    assert reg.terms["E"].slope == pytest.approx(1.0, abs=0.15)
    json.dumps(reg.to_dict())


def test_regression_round_trips_through_json(exact):
    back = GzipRegression.from_dict(json.loads(json.dumps(exact.to_dict())))
    assert back == exact
    assert back.law_at(0.37) == exact.law_at(0.37)


# -- covariates other than H -------------------------------------------------------------------


def test_covariate_is_recorded_and_round_trips():
    floors = [1.1, 1.4, 1.9, 2.3]
    reg = fit_regression([law_at(h) for h in H_VALUES], floors, covariate="floor")
    assert reg.covariate == "floor" and reg.symbol == "floor"
    assert reg.fitted_range == (1.1, 2.3)
    data = json.loads(json.dumps(reg.to_dict()))
    assert data["covariate"] == "floor"
    back = ParameterRegression.from_dict(data)
    assert back == reg and back.covariate == "floor"
    # The same laws on a different covariate give different lines.
    on_h = fit_gzip_regression([law_at(h) for h in H_VALUES], H_VALUES)
    assert on_h.covariate == "gzip" and on_h.symbol == "H"
    assert reg.terms["E"].slope != pytest.approx(on_h.terms["E"].slope)


def test_covariate_errors_name_the_covariate():
    with pytest.raises(UnderdeterminedFit, match="regress parameters on floor, got 2"):
        fit_regression([law_at(0.2), law_at(0.4)], [1.0, 2.0], covariate="floor")
    with pytest.raises(UnderdeterminedFit, match="2 distinct floor"):
        fit_regression([law_at(0.2)] * 3, [1.0] * 3, covariate="floor")
    with pytest.raises(ValueError, match="floor .covariate floor. must be finite"):
        fit_regression([law_at(0.2)] * 3, [1.0, float("nan"), 2.0], covariate="floor")
    with pytest.raises(ValueError, match="needs a name"):
        fit_regression([law_at(h) for h in H_VALUES], H_VALUES, covariate="")


def test_old_dicts_without_covariate_read_as_gzip(exact):
    old = exact.to_dict()
    del old["covariate"], old["flags"]
    back = GzipRegression.from_dict(json.loads(json.dumps(old)))
    assert back.covariate == "gzip"
    assert back == exact


# -- impossible laws are flagged, not presented ------------------------------------------------


def test_law_problems_names_each_impossible_parameter():
    assert law_problems(law_at(0.3)) == {}
    bad = law_problems(ScalingLaw(E=-0.1, A=10.0, B=-5.0, alpha=0.3, beta=0.0))
    assert bad == {"E": "E = -0.1 < 0", "B": "B = -5 <= 0", "beta": "beta = 0 <= 0"}
    # alpha + beta > 0 with alpha < 0: the exponent fault is alpha's, named once.
    assert set(law_problems(ScalingLaw(E=1, A=1, B=1, alpha=-0.1, beta=0.3))) == {"alpha"}
    assert "not finite" in law_problems(ScalingLaw(E=1, A=float("nan"), B=1, alpha=1, beta=1))["A"]


def test_lines_crossing_zero_inside_the_range_are_flagged(exact):
    assert exact.flags == {}
    # beta = 0.3 - H crosses zero at H = 0.3, inside [0.2, 0.6].
    reg = fit_gzip_regression(
        [linear_law(h, {**LINES, "beta": (0.3, -1.0)}) for h in H_VALUES], H_VALUES
    )
    assert set(reg.flags) == {"beta"}
    assert "crosses 0 at H = 0.3" in reg.flags["beta"] and "[0.2, 0.6]" in reg.flags["beta"]
    assert reg.to_dict()["flags"] == reg.flags
    assert reg.valid_at(0.25) and not reg.valid_at(0.45)
    assert set(reg.problems_at(0.45)) == {"beta"}


def test_prediction_of_an_impossible_law_says_so(exact):
    # B = 500 - 200 H is negative beyond H = 2.5; every draw of an exact regression is too.
    pred = predict_at_gzip(exact, 3.0, C=[1e20], n_samples=200)
    assert not pred.valid and set(pred.problems) == {"B"}
    assert pred.frontier is None
    assert pred.n_valid == 0 and pred.intervals == {} and pred.frontier_intervals == {}
    data = json.loads(json.dumps(pred.to_dict()))
    assert data["valid"] is False and data["problems"] == pred.problems
    assert data["n_valid"] == 0 and data["covariate"] == "gzip"


def test_draws_with_negative_E_are_not_valid():
    # E = 0.01 with a wide spread: about half the draws give E < 0 and are left out.
    reg = fit_gzip_regression([law_at(h) for h in H_VALUES], H_VALUES)
    reg.terms["E"] = dataclasses.replace(
        reg.terms["E"], intercept=0.01, slope=0.0, intercept_stderr=1.0, slope_stderr=0.0
    )
    pred = predict_at_gzip(reg, 0.3, n_samples=1000, seed=1)
    assert pred.valid
    assert 350 < pred.n_invalid < 650
    assert pred.intervals["E"][0] >= 0
