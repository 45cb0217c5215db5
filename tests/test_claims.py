"""The paper's claims as decision rules (analysis/claims.py), on constructed fits.

Each rule must be able to say all three things: holds, does not hold, cannot decide.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gzipscale.analysis.bootstrap import BootstrapPolicy
from gzipscale.analysis.claims import (
    FAILS,
    HOLDS,
    UNDECIDED,
    A,
    Dataset,
    check_claim_1,
    check_claim_2,
    check_claim_3,
    check_claim_4,
    check_claim_5,
    compute_to_reach,
    trend,
)
from gzipscale.analysis.law import ScalingLaw

N_GRID = np.repeat([1e4, 3e4, 1e5], 3)
D_GRID = np.tile([1e4, 1e5, 1e6], 3)


def make(grammar: str, H: float, a: float, *, spread: float = 0.01, seed: int = 0, **law):
    """A fitted dataset whose frontier exponent is ``a`` (alpha + beta = 1), with
    bootstrap samples of sd ``spread`` around every value."""
    rng = np.random.default_rng(seed)
    alpha, beta = 1.0 - a, a
    values = {"E": 1.0, "A": 100.0, "B": 100.0, "alpha": alpha, "beta": beta, **law}
    samples = {k: v + spread * rng.standard_normal(200) for k, v in values.items()}
    samples["n_opt_exponent"] = samples["beta"] / (samples["alpha"] + samples["beta"])
    intervals = {k: tuple(np.percentile(s, [2.5, 97.5])) for k, s in samples.items()}
    law = ScalingLaw(**values)
    L = law.loss(N_GRID, D_GRID)
    return Dataset(
        grammar, grammar, H, law, samples, intervals, N_GRID, D_GRID, L, BootstrapPolicy(200, 0)
    )


def series(a_of_h, spread=0.01, hs=(0.12, 0.24, 0.36, 0.48)):
    grammars = ("3,300,2,2", "10,300,3,5", "20,300,5,10", "50,300,10,20")
    return [
        make(g, h, a_of_h(h), spread=spread, seed=i)
        for i, (g, h) in enumerate(zip(grammars, hs, strict=True))
    ]


def test_claim_1_holds_when_a_falls_through_one_half_inside_the_paper_range():
    data = series(lambda h: 0.5 - 1.5 * (h - 0.34))  # crosses 0.5 at H = 0.34
    v = check_claim_1(data)
    assert v.verdict == HOLDS, v.parts
    assert any("0.340" in e for e in v.evidence)


def test_claim_1_does_not_hold_when_a_rises():
    v = check_claim_1(series(lambda h: 0.3 + 0.8 * h))
    assert v.parts["frontier shifts toward data as H rises (a falls)"] == FAILS
    assert v.verdict == FAILS


def test_claim_1_does_not_hold_when_the_crossing_is_outside_the_range():
    v = check_claim_1(series(lambda h: 0.5 - 1.5 * (h - 0.6)))  # crosses at 0.6
    assert v.parts["crosses a = 0.5 between H = 0.23 and 0.45"] == FAILS
    assert v.verdict == FAILS


def test_claim_1_cannot_decide_with_wide_intervals():
    # The point estimates fall, but every bootstrap is as wide as the whole effect.
    v = check_claim_1(series(lambda h: 0.5 - 0.2 * (h - 0.34), spread=0.4))
    assert v.verdict == UNDECIDED


def test_trend_needs_both_the_p_value_and_the_bootstrap():
    data = series(lambda h: 0.5 - 0.5 * h, spread=0.5)
    t = trend(data, A)
    assert t.pvalue < 0.05  # the points lie on a line...
    assert t.slope_interval[0] < 0 < t.slope_interval[1]  # ...but the fits are too loose
    assert not t.significant
    assert trend(data[:2], A) is None  # two grammars are no trend
    # Every interval quoted names the bootstrap policy behind it.
    assert "(200 bootstrap resamples, seed 0)" in t.describe("a")
    assert "(200 bootstrap resamples, seed 0)" in t.short()


def test_claim_2_parts_and_the_alpha_beta_crossing():
    grammars = ("3,300,2,2", "10,300,3,5", "20,300,5,10", "50,300,10,20")
    hs = (0.12, 0.24, 0.36, 0.48)
    data = []
    for i, (g, h) in enumerate(zip(grammars, hs, strict=True)):
        # alpha and beta both fall, alpha faster: the lines cross at H = 0.27.
        alpha = 1.0 - 2.0 * (h - 0.27)
        beta = 1.0 - 1.0 * (h - 0.27)
        d = make(g, h, 0.5, seed=i, alpha=alpha, beta=beta, A=200 - 100 * h, B=300 - 200 * h)
        data.append(d)
    v = check_claim_2(data)
    assert v.parts["α falls with H"] == HOLDS
    assert v.parts["β falls with H"] == HOLDS
    assert v.parts["A falls with H"] == HOLDS
    assert v.parts["α and β lines cross near H = 0.27"] == HOLDS
    # E is flat (constant 1 plus noise): it does not clearly rise.
    assert v.parts["E rises with H, not significantly"] in (HOLDS, UNDECIDED)


def test_claim_3_uses_the_grammars_with_one_vocabulary():
    data = series(lambda h: 0.7 - 0.8 * h)
    # A grammar with another vocabulary that would reverse the trend is left out.
    data.append(make("50,100,20,20", 0.6, 0.95, seed=9))
    v = check_claim_3(data)
    assert "4 grammars with 300 terminals" in v.evidence[0]
    assert v.verdict == HOLDS


def test_claim_4_three_ways():
    same_h = {"30,200,15,10", "50,100,20,20"}
    base = series(lambda h: 0.8 - 1.0 * h)  # a spans 0.32 across the series
    anchor_a = base[2].a  # 20,300,5,10 at H 0.36
    close = [
        make("30,200,15,10", 0.37, anchor_a + 0.01, seed=5),
        make("50,100,20,20", 0.35, anchor_a - 0.01, seed=6),
    ]
    assert check_claim_4(base + close, same_h).verdict == HOLDS
    apart = [
        make("30,200,15,10", 0.37, anchor_a + 0.2, seed=5),
        make("50,100,20,20", 0.35, anchor_a - 0.01, seed=6),
    ]
    assert check_claim_4(base + apart, same_h).verdict == FAILS
    loose = [
        make("30,200,15,10", 0.37, anchor_a, spread=0.5, seed=5),
        make("50,100,20,20", 0.35, anchor_a, spread=0.5, seed=6),
    ]
    assert check_claim_4(base + loose, same_h).verdict == UNDECIDED
    assert check_claim_4(base, same_h).verdict == UNDECIDED  # none of them in the sweep


def _with_losses(d: Dataset, L: np.ndarray) -> Dataset:
    return dataclasses.replace(d, L=L)


def test_claim_5_is_model_free():
    low, high = series(lambda h: 0.5)[:2]
    C = 6 * N_GRID * D_GRID
    # Loss falls with compute; the harder grammar sits higher everywhere.
    easy = _with_losses(low, 3.0 / np.log10(C))
    hard = _with_losses(high, 3.5 / np.log10(C))
    assert compute_to_reach(easy, 0.3) < compute_to_reach(hard, 0.3)
    assert compute_to_reach(hard, 0.01) == np.inf
    assert check_claim_5([easy, hard]).verdict == HOLDS
    assert check_claim_5([_with_losses(low, hard.L), _with_losses(high, easy.L)]).verdict == FAILS
    # Equal losses: no pair needs different compute, so nothing to decide.
    assert check_claim_5([easy, _with_losses(high, easy.L)]).verdict == UNDECIDED


@pytest.mark.parametrize("check", [check_claim_1, check_claim_2, check_claim_3, check_claim_5])
def test_checks_without_bootstrap_samples_still_answer(check):
    data = [
        dataclasses.replace(d, samples=None, intervals=None, policy=None)
        for d in series(lambda h: 0.9 - 1.2 * h)
    ]
    assert check(data).verdict in (HOLDS, FAILS, UNDECIDED)
