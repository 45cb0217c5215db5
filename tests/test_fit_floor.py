"""The floor-anchored fit (analysis/fit.py ``floor=``, analysis/objective.py
``anchored_objective``, analysis/bootstrap.py ``floor=``): E held at a known floor, the
excess ``L - floor`` fitted in log space.

Synthetic data from a law whose E is the floor: the anchored fit recovers A, alpha, B, beta
(exactly without noise, and where a free fit cannot); the batched search equals the naive
start-by-start loop; E never moves from the floor; bad input is refused naming the field;
the bootstrap's intervals cover the truth and E's is the floor; and on runs that plateau at
the floor (the real failure) the free fit's E falls below the floor while the anchored fit
leaves the plateau out and says so.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from builders import grid_points, run_row
from scipy.optimize import check_grad

from gzipscale.analysis.bootstrap import BootstrapPolicy, bootstrap_fit
from gzipscale.analysis.fit import (
    ANCHORED,
    DEFAULT_GRID,
    FREE,
    MIN_POINTS_ANCHORED,
    FitTarget,
    StartGrid,
    UnderdeterminedFit,
    fit_scaling_law,
    fit_scaling_law_naive,
)
from gzipscale.analysis.fitreport import fit_dataset, fit_datasets
from gzipscale.analysis.identification import AT_FLOOR, BELOW_FLOOR
from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.lbfgs import batched_lbfgs, scipy_polish
from gzipscale.analysis.objective import HUBER_DELTA, anchored_objective
from gzipscale.analysis.table import Points
from gzipscale.helpers import InputError

FLOOR = 0.72379  # the floor of grammar (3,300,2,2) seed 0
FLOOR_SE = 0.00029
LAW = ScalingLaw(E=FLOOR, A=50.0, B=150.0, alpha=0.4, beta=0.35)
N_GRID = np.geomspace(1e4, 2e6, 6)
D_GRID = np.geomspace(1e5, 1e8, 6)
# 3^5 = 243 grid starts, 81 once the e axis collapses onto log floor.
COARSE_GRID = StartGrid(
    a=(0.0, 10.0, 20.0),
    b=(0.0, 10.0, 20.0),
    e=(-1.0, 0.0, 1.0),
    alpha=(0.0, 1.0, 2.0),
    beta=(0.0, 1.0, 2.0),
)
PARAMS = ("A", "B", "alpha", "beta")


def excess_huber(theta, N, D, L, floor, delta=HUBER_DELTA) -> float:
    """The anchored objective written out directly: summed Huber of
    log(A N^-alpha + B D^-beta) - log(L - floor)."""
    a, b, _, alpha, beta = theta
    r = np.log(np.exp(a) * N**-alpha + np.exp(b) * D**-beta) - np.log(L - floor)
    c = np.clip(r, -delta, delta)
    return float(np.sum(c * (r - c / 2)))


# -- recovery ----------------------------------------------------------------------------


def test_anchored_fit_recovers_a_noiseless_law_with_e_exactly_the_floor():
    N, D, L = grid_points(LAW, N_GRID, D_GRID)
    fit = fit_scaling_law(N, D, L, floor=FLOOR)
    assert fit.kind == ANCHORED and fit.floor == FLOOR
    assert fit.law.E == FLOOR  # exactly, not exp(log floor)
    for name in PARAMS:
        assert getattr(fit.law, name) == pytest.approx(getattr(LAW, name), rel=1e-6), name
    assert fit.objective < 1e-20 and fit.converged and fit.warnings == []
    # The e axis collapses: 4500 starts become 900, every one at e = log floor.
    assert fit.n_starts == len(DEFAULT_GRID) // len(DEFAULT_GRID.e) == 900
    assert fit.start["e"] == math.log(FLOOR) and "e" not in fit.grid_edge
    # What was fitted is the excess: residuals are in log(L - floor).
    predicted = fit.loss(N, D)
    np.testing.assert_allclose(fit.residuals_log, np.log(L - FLOOR) - np.log(predicted - FLOOR))
    np.testing.assert_allclose(fit.residuals_loss, L - predicted)
    d = fit.to_dict()
    assert d["kind"] == "floor" and d["floor"] == FLOOR and d["law"]["E"] == FLOOR


def test_anchored_fit_identifies_what_a_free_fit_cannot():
    """Two token counts: a free fit's E, B and beta form a one-parameter family (it lands
    somewhere on it); with E known the D term is pinned, and the anchored fit is exact."""
    N, D, L = grid_points(LAW, N_GRID, np.array([1e5, 1e8]))
    fit = fit_scaling_law(N, D, L, floor=FLOOR)
    for name in PARAMS:
        assert getattr(fit.law, name) == pytest.approx(getattr(LAW, name), rel=1e-6), name
    assert fit.warnings == []  # "only 2 distinct" concerns E, which is not fitted here
    free = fit_scaling_law(N, D, L, emit_warnings=False)
    assert free.kind == FREE and free.floor is None
    assert any("only 2 distinct token counts" in w for w in free.warnings)
    # Control: the same tolerance would reject the free fit (it does not recover beta).
    assert abs(free.law.beta - LAW.beta) > 0.1 and abs(free.law.E - FLOOR) > 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anchored_fit_recovers_exponents_at_low_noise(seed):
    N, D, L = grid_points(LAW, N_GRID, D_GRID, noise=0.003, seed=seed)
    fit = fit_scaling_law(N, D, L, floor=FLOOR, emit_warnings=False)
    assert fit.law.E == FLOOR
    assert fit.law.alpha == pytest.approx(LAW.alpha, abs=0.006)
    assert fit.law.beta == pytest.approx(LAW.beta, abs=0.006)
    assert fit.law.A == pytest.approx(LAW.A, rel=0.05)
    assert fit.law.B == pytest.approx(LAW.B, rel=0.05)


def test_anchored_fit_at_a_wrong_floor_misses_the_law():
    """The floor is used, not ignored: held 0.05 too low, the noiseless law is not
    recovered and the fit is far from exact."""
    N, D, L = grid_points(LAW, N_GRID, D_GRID)
    wrong = fit_scaling_law(N, D, L, floor=FLOOR - 0.05, emit_warnings=False)
    assert wrong.law.E == FLOOR - 0.05
    assert abs(wrong.law.alpha - LAW.alpha) > 0.01 or abs(wrong.law.beta - LAW.beta) > 0.01
    assert wrong.objective > 1e-6


# -- the objective and the e column ------------------------------------------------------


def test_anchored_objective_is_the_huber_of_the_log_excess_and_ignores_e():
    N, D, L = grid_points(LAW, N_GRID, D_GRID, noise=0.01, seed=3)
    log_n, log_d, log_y = np.log(N), np.log(D), np.log(L - FLOOR)
    rng = np.random.default_rng(0)
    thetas = np.column_stack(
        [
            rng.uniform(2, 6, 20),
            rng.uniform(3, 7, 20),
            rng.uniform(-3, 3, 20),
            rng.uniform(0.1, 1, 20),
            rng.uniform(0.1, 1, 20),
        ]
    )
    f, grad = anchored_objective(thetas, log_n, log_d, log_y)
    expected = [excess_huber(t, N, D, L, FLOOR) for t in thetas]
    np.testing.assert_allclose(f, expected, rtol=1e-10)
    assert np.all(grad[:, 2] == 0.0)
    moved = thetas.copy()
    moved[:, 2] += 5.0
    f_moved, grad_moved = anchored_objective(moved, log_n, log_d, log_y)
    np.testing.assert_array_equal(f_moved, f)
    np.testing.assert_array_equal(grad_moved, grad)
    assert np.all(thetas[:, 2] != -np.inf)  # the caller's theta is not modified
    # The gradient of the four fitted coordinates matches finite differences.
    for theta in thetas[:5]:

        def fun(x, theta=theta):
            return float(anchored_objective(x, log_n, log_d, log_y)[0][0])

        def jac(x, theta=theta):
            return anchored_objective(x, log_n, log_d, log_y)[1][0]

        assert check_grad(fun, jac, theta, epsilon=1e-7) < 1e-4 * max(1.0, np.abs(jac(theta)).max())


def test_weighted_anchored_objective_counts_copies():
    N, D, L = grid_points(LAW, N_GRID, D_GRID, noise=0.01, seed=4)
    weights = np.arange(len(N)) % 3
    theta = LAW.to_theta()
    f_w, _ = anchored_objective(theta, np.log(N), np.log(D), np.log(L - FLOOR), weights=weights)
    keep = np.repeat(np.arange(len(N)), weights)
    copies = excess_huber(theta, N[keep], D[keep], L[keep], FLOOR)
    assert f_w[0] == pytest.approx(copies, rel=1e-12)


def test_the_e_column_never_moves():
    N, D, L = grid_points(LAW, N_GRID, D_GRID, noise=0.01, seed=5)
    target = FitTarget.of(N, D, L, FLOOR)
    starts = target.starts(COARSE_GRID.points())
    assert len(starts) == len(COARSE_GRID) // 3 == 81
    assert np.all(starts[:, 2] == math.log(FLOOR))
    assert len(np.unique(starts, axis=0)) == len(starts)
    # Batched L-BFGS from starts at assorted e: each e is where it started, bit for bit.
    starts = starts.copy()
    starts[:, 2] = np.linspace(-2, 2, len(starts))

    def fun(x, rows):
        return target.objective(x, target.log_n, target.log_d, target.log_y)

    batch = batched_lbfgs(fun, starts, max_iter=100)
    np.testing.assert_array_equal(batch.x[:, 2], starts[:, 2])
    assert np.any(np.abs(batch.x[:, [0, 1, 3, 4]] - starts[:, [0, 1, 3, 4]]) > 0.1)
    res = scipy_polish(
        batch.x[0],
        target.log_n,
        target.log_d,
        target.log_y,
        HUBER_DELTA,
        objective=target.objective,
    )
    assert res.x[2] == batch.x[0, 2]
    # The fit: E is the floor in the law, in every local minimum, and in theta.
    fit = fit_scaling_law(N, D, L, floor=FLOOR, grid=COARSE_GRID, emit_warnings=False)
    assert fit.law.E == FLOOR and fit.theta[2] == math.log(FLOOR)
    assert fit.local_minima and all(m["E"] == FLOOR for m in fit.local_minima)


def test_batched_anchored_fit_matches_the_naive_loop():
    N, D, L = grid_points(LAW, N_GRID, D_GRID, noise=0.01, seed=1)
    fast = fit_scaling_law(N, D, L, grid=COARSE_GRID, floor=FLOOR)
    naive = fit_scaling_law_naive(N, D, L, grid=COARSE_GRID, floor=FLOOR)
    assert fast.kind == naive.kind == ANCHORED
    assert fast.n_starts == naive.n_starts == 81
    assert naive.n_batch_unconverged == 0
    assert fast.objective == pytest.approx(naive.objective, rel=1e-9)
    np.testing.assert_allclose(fast.theta, naive.theta, rtol=1e-5, atol=1e-6)
    assert fast.law.E == naive.law.E == FLOOR
    # The reported objective is the anchored one at the returned law.
    assert naive.objective == pytest.approx(excess_huber(naive.theta, N, D, L, FLOOR), rel=1e-9)
    # ... and is not the free objective of the same data (a different problem).
    free = fit_scaling_law_naive(N, D, L, grid=COARSE_GRID, emit_warnings=False)
    assert free.objective != pytest.approx(naive.objective, rel=1e-3)


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0.0, -1e-3], ids=["at", "below"])
@pytest.mark.parametrize("fitter", [fit_scaling_law, fit_scaling_law_naive, bootstrap_fit])
def test_a_loss_at_or_below_the_floor_is_refused_naming_the_field(fitter, offset):
    N, D, L = grid_points(LAW, N_GRID, D_GRID)
    L = L.copy()
    L[7] = FLOOR + offset
    with pytest.raises(InputError, match=r"L \(loss\) must exceed the floor 0\.72379") as info:
        fitter(N, D, L, floor=FLOOR)
    assert "at index 7" in str(info.value) and "1 such point(s)" in str(info.value)
    # The free fit takes the same points.
    assert fit_scaling_law(N, D, L, grid=COARSE_GRID, emit_warnings=False).kind == FREE


@pytest.mark.parametrize("floor", [0.0, -0.5, math.nan, math.inf])
def test_a_floor_that_is_not_a_positive_number_is_refused(floor):
    N, D, L = grid_points(LAW, N_GRID, D_GRID)
    with pytest.raises(InputError, match="floor must be a finite number > 0"):
        fit_scaling_law(N, D, L, floor=floor)


def test_fewer_than_five_points_is_underdetermined():
    assert MIN_POINTS_ANCHORED == 5
    N = np.array([1e4, 1e4, 1e5, 1e5, 3e4])
    D = np.array([1e5, 1e6, 1e5, 1e6, 3e5])
    L = LAW.loss(N, D)
    with pytest.raises(UnderdeterminedFit, match="need at least 5 points for 4 parameters, got 4"):
        fit_scaling_law(N[:4], D[:4], L[:4], floor=FLOOR)
    with pytest.raises(UnderdeterminedFit, match="need at least 5 points for 4 parameters"):
        fit_scaling_law_naive(N[:4], D[:4], L[:4], floor=FLOOR, grid=COARSE_GRID)
    # Five are enough with E held, and not without.
    fit = fit_scaling_law(N, D, L, floor=FLOOR, grid=COARSE_GRID, emit_warnings=False)
    assert fit.n_points == 5 and fit.law.E == FLOOR
    with pytest.raises(UnderdeterminedFit, match="need at least 6 points for 5 parameters"):
        fit_scaling_law(N, D, L)
    # Holding E does not make one model size enough.
    with pytest.raises(UnderdeterminedFit, match="distinct model sizes N"):
        fit_scaling_law(np.full(6, 1e4), np.geomspace(1e5, 1e8, 6), L[:1].repeat(6), floor=0.5)


# -- bootstrap ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_boot():
    N, D, L = grid_points(LAW, N_GRID, D_GRID, noise=0.01, seed=0)
    fit = fit_scaling_law(N, D, L, floor=FLOOR, emit_warnings=False)
    boot = bootstrap_fit(N, D, L, n_resamples=100, seed=0, point_fit=fit, floor=FLOOR)
    return (N, D, L), fit, boot


def test_anchored_bootstrap_covers_the_true_law_and_pins_e_at_the_floor(noisy_boot):
    _, fit, boot = noisy_boot
    truth = LAW.to_dict()
    for name in ("A", "B", "alpha", "beta", "n_opt_exponent", "d_opt_exponent"):
        lo, hi = boot.intervals[name]
        assert lo <= truth[name] <= hi, f"{name}: truth {truth[name]} outside [{lo}, {hi}]"
        assert lo < hi
    assert boot.intervals["E"] == (FLOOR, FLOOR)
    assert np.all(boot.samples["E"] == FLOOR) and len(boot.samples["E"]) == 100
    assert boot.point["E"] == FLOOR and boot.point["alpha"] == fit.law.alpha
    # The exponents are measured: neither interval is wide.
    for name in ("alpha", "beta"):
        lo, hi = boot.intervals[name]
        assert 0 < lo and hi / lo < 1.3


def test_anchored_bootstrap_refuses_a_point_fit_of_another_kind(noisy_boot):
    (N, D, L), fit, _ = noisy_boot
    free = fit_scaling_law(N, D, L, grid=COARSE_GRID, emit_warnings=False)
    with pytest.raises(ValueError, match="fitted with floor None"):
        bootstrap_fit(N, D, L, n_resamples=2, point_fit=free, floor=FLOOR)
    with pytest.raises(ValueError, match="fitted with floor 0.72379"):
        bootstrap_fit(N, D, L, n_resamples=2, point_fit=fit)


# -- the real failure: runs that plateau at the floor ------------------------------------

PLATEAU_FROM = 2**18  # 262,144 tokens: from here on every model is at the floor
PLATEAU_LAW = ScalingLaw(E=FLOOR, A=1.0, B=1e4, alpha=0.3, beta=1.0)


def plateau_points() -> Points:
    """Six model sizes x eight data sizes (16K..2M tokens); from 262K tokens on every
    model's loss is the floor (with 0.05% noise), below it the law's."""
    n_grid = np.geomspace(1.2e4, 4e5, 6)
    d_grid = 2.0 ** np.arange(14, 22)
    N, D, L = grid_points(PLATEAU_LAW, n_grid, d_grid)
    L = np.where(D >= PLATEAU_FROM, FLOOR, L)
    L = L * np.exp(np.random.default_rng(0).normal(0.0, 0.0005, L.size))
    rows = [
        run_row("plateau", 0.3, n, d, float(x), floor=FLOOR, floor_se=FLOOR_SE)
        for n, d, x in zip(N, D, L, strict=True)
    ]
    return Points.from_rows(rows, source="plateau")


NO_BOOTSTRAP = BootstrapPolicy(resamples=0)


def test_on_runs_at_the_floor_the_free_e_falls_below_it():
    points = plateau_points()
    free = fit_dataset("plateau", points, policy=NO_BOOTSTRAP, kind=FREE)
    assert free.kind == FREE and free.left_at_floor == 0 and free.n_points == 48
    assert free.law.E < FLOOR - 3 * FLOOR_SE
    codes = [f.code for f in free.flags]
    assert BELOW_FLOOR in codes and AT_FLOOR not in codes
    sentence = next(f.sentence for f in free.flags if f.code == BELOW_FLOOR)
    assert f"E = {free.law.E:.3g}" in sentence and "below the floor 0.7238" in sentence
    assert not free.identified


def test_on_runs_at_the_floor_the_anchored_fit_leaves_them_out_and_says_so():
    points = plateau_points()
    N, D, _ = points.arrays("plateau")
    fit = fit_dataset("plateau", points, policy=NO_BOOTSTRAP, kind=ANCHORED)
    assert fit.kind == ANCHORED and fit.law.E == FLOOR
    assert fit.floor.nats_per_token == FLOOR and fit.floor.stderr == FLOOR_SE
    np.testing.assert_array_equal(fit.at_floor, D >= PLATEAU_FROM)
    assert fit.left_at_floor == 24 and fit.n_points == 24
    codes = [f.code for f in fit.flags]
    assert codes == [AT_FLOOR]
    sentence = fit.flags[0].sentence
    assert sentence.startswith("every model reaches the floor by 262K tokens (24 of 48 runs")
    assert "left out of the floor-anchored fit" in sentence
    # What is left still measures the law that made it.
    assert fit.law.alpha == pytest.approx(PLATEAU_LAW.alpha, abs=0.03)
    assert fit.law.beta == pytest.approx(PLATEAU_LAW.beta, abs=0.03)
    assert fit.rms_log_residual < 0.05


def test_fit_datasets_on_the_plateau_makes_both_and_the_anchored_one_drives():
    report = fit_datasets(plateau_points(), policy=NO_BOOTSTRAP)
    assert report.law_choice == ANCHORED
    drives, other = report.datasets["plateau"], report.comparison["plateau"]
    assert (drives.kind, other.kind) == (ANCHORED, FREE)
    assert drives.law.E == FLOOR and other.law.E < FLOOR
    assert set(report.fits_of("plateau")) == {ANCHORED, FREE}
