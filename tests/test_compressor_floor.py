"""analysis.compressor_floor: the floor regressed on each compressor's H, with intervals
from resampling whole grammars; and its figure."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import linregress, spearmanr

from gzipscale.analysis.bootstrap import DEFAULT_POLICY, BootstrapPolicy
from gzipscale.analysis.compressor_floor import (
    CompressorFloorAnalysis,
    analyse_compressors,
    line_statistics,
)
from gzipscale.helpers import InputError


def _scores(floor_of, n_grammars=8, seeds=(0, 1, 2), noise=0.0, copies=1, seed=1):
    """Score dicts of synthetic grammars: H per compressor, floor = floor_of(gzip H) + a
    grammar's own offset (noise) + a seed's (noise / 4)."""
    rng = np.random.default_rng(seed)
    out = []
    for g in range(n_grammars):
        offset = noise * rng.standard_normal()
        for s in seeds:
            h = 0.1 + 0.05 * g + 0.01 * rng.standard_normal()
            y = floor_of(h) + offset + noise / 4 * rng.standard_normal()
            for _ in range(copies):
                out.append(
                    {
                        "grammar": f"{g},300,5,10",
                        "seed": s,
                        "median": h,
                        "lzma_median": 0.9 * h + 0.02,  # a monotone function of gzip's H
                        "bz2_median": 1.0 - h,  # reversed
                        "floor": {"nats_per_token": y, "stderr": 0.001},
                    }
                )
    return out


def test_an_exact_line_is_recovered_exactly():
    a = analyse_compressors(_scores(lambda h: 0.3 + 2.0 * h), policy=BootstrapPolicy(50, 0))
    g = a.fits["gzip"]
    assert g.slope == pytest.approx(2.0) and g.intercept == pytest.approx(0.3)
    assert g.r_squared == pytest.approx(1.0) and g.spearman == pytest.approx(1.0)
    assert g.rms_error == pytest.approx(0.0, abs=1e-12)
    assert g.loo_rms_error == pytest.approx(0.0, abs=1e-12)
    assert g.interval("slope") == pytest.approx((2.0, 2.0))
    assert g.n_points == 24 and g.n_grammars == 8
    # lzma H = 0.9 H + 0.02: the floor is the line 2/0.9 (H - 0.02) + 0.3 in it
    lz = a.fits["lzma"]
    assert lz.slope == pytest.approx(2.0 / 0.9) and lz.intercept == pytest.approx(0.3 - 0.04 / 0.9)
    assert a.fits["bz2"].slope == pytest.approx(-2.0) and a.fits["bz2"].spearman == pytest.approx(
        -1
    )
    assert a.differences["lzma"]["r_squared"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert a.differences["bz2"]["spearman"]["value"] == pytest.approx(-2.0)


def test_noisy_line_matches_scipy_and_its_interval_covers_the_slope():
    scores = _scores(lambda h: 0.5 + 1.5 * h, n_grammars=15, seeds=range(5), noise=0.05, seed=2)
    a = analyse_compressors(scores)
    h = np.array([s["median"] for s in scores])
    y = np.array([s["floor"]["nats_per_token"] for s in scores])
    ref = linregress(h, y)
    g = a.fits["gzip"]
    assert g.slope == pytest.approx(ref.slope) and g.intercept == pytest.approx(ref.intercept)
    assert g.r_squared == pytest.approx(ref.rvalue**2)
    assert g.spearman == pytest.approx(spearmanr(h, y).statistic)
    resid = y - (ref.intercept + ref.slope * h)
    assert g.rms_error == pytest.approx(math.sqrt(np.mean(resid**2)))
    assert g.loo_rms_error > g.rms_error  # unseen grammars are predicted worse
    lo, hi = g.interval("slope")
    assert lo < 1.5 < hi and lo < g.slope < hi
    lo, hi = g.interval("intercept")
    assert lo < 0.5 < hi
    for key in ("r_squared", "spearman", "rms_error"):
        lo, hi = g.interval(key)
        assert lo <= g.value(key) <= hi, key
    assert a.policy == DEFAULT_POLICY and len(g.samples) == DEFAULT_POLICY.resamples
    # The same draws serve every compressor: the differences' intervals are paired.
    d = a.differences["lzma"]["rms_error"]
    assert d["value"] == pytest.approx(a.fits["lzma"].rms_error - g.rms_error)
    assert d["interval"][0] <= d["value"] <= d["interval"][1]
    # The same policy gives the same intervals; another seed other ones.
    assert analyse_compressors(scores).to_dict() == a.to_dict()
    other = analyse_compressors(scores, policy=BootstrapPolicy(seed=7))
    assert other.fits["gzip"].interval("slope") != g.interval("slope")


def test_the_bootstrap_resamples_whole_grammars():
    """Each grammar's points repeated 4 times: resampling grammars gives the same fits and
    intervals (a resampled grammar brings all its copies); resampling points would not."""
    policy = BootstrapPolicy(100, 3)
    once = analyse_compressors(_scores(lambda h: 1 + h, noise=0.1), policy=policy)
    four = analyse_compressors(_scores(lambda h: 1 + h, noise=0.1, copies=4), policy=policy)
    for c in ("gzip", "lzma", "bz2"):
        f1, f4 = once.fits[c], four.fits[c]
        assert f4.n_points == 4 * f1.n_points and f4.n_grammars == f1.n_grammars
        for key in ("slope", "intercept", "r_squared", "spearman", "rms_error"):
            assert f4.value(key) == pytest.approx(f1.value(key))
            assert f4.interval(key) == pytest.approx(f1.interval(key))
        assert f4.loo_rms_error == pytest.approx(f1.loo_rms_error)


def test_refused_and_missing_floors_are_left_out():
    scores = _scores(lambda h: 2 * h, n_grammars=4)
    scores[0]["floor"] = {"error": "grammar pcfg-0-300-5-10-s0: the chart passed 10 items"}
    scores[1]["floor"] = None  # not computed
    a = analyse_compressors(scores, policy=BootstrapPolicy(20, 0))
    assert len(a.points) == 10 and a.fits["gzip"].n_points == 10
    assert [(r.grammar, r.seed) for r in a.refused] == [("0,300,5,10", 0)]
    assert a.refused_grammars() == {"0,300,5,10": list(a.refused)}
    assert a.fits["gzip"].slope == pytest.approx(2.0)
    # Too few grammars with a floor: no regression.
    for s in scores:
        if s["grammar"] != "3,300,5,10" and s["grammar"] != "2,300,5,10":
            s["floor"] = {"error": "refused"}
    with pytest.raises(InputError, match="at least 3 grammars"):
        analyse_compressors(scores)
    # A score without lzma H (a /1 table's) is refused with a message.
    scores = _scores(lambda h: h)
    del scores[0]["lzma_median"]
    with pytest.raises(InputError, match="has no lzma H"):
        analyse_compressors(scores)
    assert analyse_compressors(scores, compressors=["gzip"]).compressors == ("gzip",)


def test_series_membership_comes_from_the_paper_series():
    scores = _scores(lambda h: h, n_grammars=3)
    names = ["20,300,5,10"] * 3 + ["3,20,2,2"] * 3 + ["50,100,20,20"] * 3
    for s, g in zip(scores, names, strict=True):
        s["grammar"] = g
    a = analyse_compressors(scores, policy=BootstrapPolicy(0, 0))
    series = {p.grammar: p.series for p in a.points}
    assert series == {
        "20,300,5,10": ("same-vocabulary", "main"),
        "3,20,2,2": ("main",),
        "50,100,20,20": ("same-H",),
    }
    assert a.fits["gzip"].intervals == {} and a.fits["gzip"].band([0.2], 0.95) is None


def test_json_round_trip():
    a = analyse_compressors(
        _scores(lambda h: 0.2 + h, noise=0.05) + [
            {"grammar": "x", "seed": 3, "floor": {"error": "refused: why"}}
        ],
        policy=BootstrapPolicy(30, 2),
    )  # fmt: skip
    d = json.loads(json.dumps(a.to_dict()))
    back = CompressorFloorAnalysis.from_dict(d)
    assert back.to_dict() == a.to_dict()
    assert back.policy == a.policy and back.refused == a.refused and back.points == a.points
    for c, f in a.fits.items():
        g = back.fits[c]
        assert g.slope == f.slope and g.intervals == f.intervals
        assert np.array_equal(g.samples, f.samples)
        grid = np.linspace(0.1, 0.5, 5)
        assert np.array_equal(g.band(grid, 0.95)[0], f.band(grid, 0.95)[0])
    assert back.differences == a.differences
    with pytest.raises(InputError, match="not a compressor-floor analysis"):
        CompressorFloorAnalysis.from_dict({"format": "other"})


def test_line_statistics_refuses_a_constant_H():
    with pytest.raises(InputError, match="one value"):
        line_statistics(np.ones(4), np.arange(4.0))


def test_figure_renders_with_the_refused_grammars_noted(tmp_path):
    from gzipscale.analysis.compressor_figures import plot_floor_vs_compressors, refused_note

    scores = _scores(lambda h: 0.2 + h, noise=0.05)
    scores[0]["grammar"] = scores[1]["grammar"] = scores[2]["grammar"] = "20,300,5,10"
    scores[3]["floor"] = scores[4]["floor"] = {
        "error": "grammar pcfg-1-300-5-10-s0: the chart of a 9-token string passed 5 items"
    }
    a = analyse_compressors(scores, policy=BootstrapPolicy(20, 0))
    note = refused_note(a)
    assert note.startswith("Floor refused, not plotted: 1,300,5,10 (seeds 0, 1): the chart")
    assert "grammar pcfg" not in note
    path = tmp_path / "floor.png"
    plot_floor_vs_compressors(a, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    clean = analyse_compressors(_scores(lambda h: h), policy=BootstrapPolicy(0, 0))
    assert refused_note(clean) is None
    plot_floor_vs_compressors(clean, tmp_path / "clean.png")
    assert (tmp_path / "clean.png").stat().st_size > 1000
