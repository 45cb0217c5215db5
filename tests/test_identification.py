"""analysis/identification.py: each flag fires exactly when its condition holds, at its
boundary too, and its sentence names the numbers; flags survive a JSON round trip alone and
inside a DatasetFit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gzipscale.analysis.fitreport import DatasetFit
from gzipscale.analysis.identification import (
    AT_FLOOR,
    AT_FLOOR_FRACTION,
    BELOW_FLOOR,
    EXPONENT_INCLUDES_ZERO,
    EXPONENT_WIDE,
    FLAG_CODES,
    FLOOR_SE_MARGIN,
    MAX_EXPONENT_SPAN,
    MAX_RMS_LOG_RESIDUAL,
    POOR_FIT,
    IdentificationFlag,
    at_floor_flag,
    at_floor_mask,
    below_floor_flag,
    exponent_flags,
    residual_flag,
    rms_log_residual,
    tokens_text,
)
from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.table import KnownFloor

FLOOR = 0.5


def test_thresholds_and_codes():
    assert (AT_FLOOR_FRACTION, MAX_EXPONENT_SPAN, MAX_RMS_LOG_RESIDUAL, FLOOR_SE_MARGIN) == (
        0.01,
        3.0,
        0.05,
        3.0,
    )
    assert len(set(FLAG_CODES)) == len(FLAG_CODES) == 5


@pytest.mark.parametrize(
    "tokens, text",
    [(500, "500"), (16_384, "16.4K"), (262_144, "262K"), (1_048_576, "1.05M"), (2e9, "2B")],
)
def test_tokens_text(tokens, text):
    assert tokens_text(tokens) == text


# -- runs at the floor -------------------------------------------------------------------


def test_at_floor_is_an_excess_under_one_percent_of_the_floor():
    one_percent = AT_FLOOR_FRACTION * FLOOR
    L = np.array(
        [
            FLOOR * 1.01,  # excess 1% (as floats, a hair above): not at the floor
            FLOOR + one_percent * 1.0001,  # just above 1%
            FLOOR + one_percent * 0.9999,  # just under 1%: at the floor
            FLOOR,  # exactly the floor
            FLOOR - 0.001,  # below it, within its noise: counts as at it
            FLOOR * 1.5,  # far above
        ]
    )
    assert L[0] - FLOOR >= one_percent  # the boundary case is the boundary
    np.testing.assert_array_equal(at_floor_mask(L, FLOOR), [False, False, True, True, True, False])
    # A floor where an excess of exactly 1% is exact in floating point: not under 1%.
    floor = 1.21
    exact = floor + AT_FLOOR_FRACTION * floor
    assert exact - floor == AT_FLOOR_FRACTION * floor
    np.testing.assert_array_equal(
        at_floor_mask([exact, np.nextafter(exact, 0.0)], floor), [False, True]
    )


def test_no_run_at_the_floor_no_flag():
    N = np.array([1e4, 1e5, 1e4, 1e5])
    D = np.array([1e5, 1e5, 1e6, 1e6])
    L = np.full(4, FLOOR * 1.01)  # every run exactly at the 1% boundary: none at the floor
    assert at_floor_flag(N, D, L, FLOOR) is None


def grid(n_sizes=3, d_sizes=4):
    n_grid = np.geomspace(1e4, 1e6, n_sizes)
    d_grid = 2.0 ** np.arange(14, 14 + 2 * d_sizes, 2)  # 16K, 64K, 262K, 1.05M tokens
    N, D = (g.ravel() for g in np.meshgrid(n_grid, d_grid))
    return N, D


def test_every_model_at_the_floor_from_a_data_size_names_that_size():
    N, D = grid()
    L = np.where(D >= 2**18, FLOOR * 1.001, FLOOR * 1.2)
    flag = at_floor_flag(N, D, L, FLOOR)
    assert flag.code == AT_FLOOR
    assert flag.sentence == (
        "every model reaches the floor by 262K tokens (6 of 12 runs have an excess loss under "
        "1% of the floor 0.5): those runs say nothing about N or D and are left out of the "
        "floor-anchored fit."
    )


def test_some_runs_at_the_floor_but_not_every_model_counts_them():
    N, D = grid()
    # Only the largest model at the two largest sizes: not "every model".
    L = np.where((D >= 2**18) & (N == N.max()), FLOOR * 1.005, FLOOR * 1.2)
    flag = at_floor_flag(N, D, L, FLOOR)
    assert flag.sentence.startswith(
        "2 of 12 runs have an excess loss under 1% of the floor 0.5: those runs say nothing"
    )
    assert "every model" not in flag.sentence


@pytest.mark.parametrize(
    "at, terms",
    [
        (lambda N, D: D >= 2**16, "the D term"),  # one data size left
        (lambda N, D: N > N.min(), "the N term"),  # one model size left
        (lambda N, D: np.ones_like(N, dtype=bool), "the N term and the D term"),
    ],
)
def test_at_floor_says_which_term_the_grid_cannot_measure(at, terms):
    N, D = grid()
    L = np.where(at(N, D), FLOOR * 1.001, FLOOR * 1.2)
    flag = at_floor_flag(N, D, L, FLOOR)
    assert flag.sentence.endswith(f"this grid cannot measure {terms} of this grammar.")
    if terms == "the D term":
        assert flag.sentence.startswith("every model reaches the floor by 65.5K tokens (9 of 12")


# -- exponents ---------------------------------------------------------------------------


def codes(flags):
    return [f.code for f in flags]


@pytest.mark.parametrize(
    "alpha, expected",
    [
        ((0.0, 0.5), [EXPONENT_INCLUDES_ZERO]),  # [0, x]: 0 is in it
        ((-0.1, 0.5), [EXPONENT_INCLUDES_ZERO]),
        ((1e-9, 0.5), [EXPONENT_WIDE]),  # excludes 0, but spans 5e8
        ((0.25, 0.75), []),  # span exactly 3.0: not more than 3
        ((0.25, 0.7525), [EXPONENT_WIDE]),  # span 3.01
        ((0.3, 0.4), []),
        ((math.nan, 0.4), [EXPONENT_WIDE]),
        ((0.1, math.inf), [EXPONENT_WIDE]),
    ],
)
def test_exponent_flags_fire_exactly_at_their_conditions(alpha, expected):
    assert codes(exponent_flags({"alpha": alpha, "beta": (0.3, 0.35)}, 0.95)) == expected
    # The same rules for beta.
    assert codes(exponent_flags({"alpha": (0.3, 0.35), "beta": alpha}, 0.95)) == expected


def test_exponent_sentences_name_the_interval_and_the_axis():
    flags = exponent_flags({"alpha": (0.0, 0.5), "beta": (0.25, 0.7525)}, 0.95)
    assert flags[0].sentence == (
        "α's 95% interval [0, 0.5] includes 0: the runs do not show the loss falling with "
        "model size N."
    )
    assert flags[1].sentence == (
        "β's 95% interval [0.25, 0.752] spans a factor of 3.01 (more than 3): β is not "
        "identified by these runs."
    )
    (unbounded,) = exponent_flags({"beta": (0.1, math.inf)}, 0.9)
    assert unbounded.sentence.startswith("β's 90% interval is unbounded")
    assert "data size D" in unbounded.sentence


def test_no_intervals_no_exponent_flags():
    assert exponent_flags(None, 0.95) == []
    assert exponent_flags({}, 0.95) == []
    assert exponent_flags({"E": (0.0, 1.0), "A": (-1.0, 1.0)}, 0.95) == []


# -- residuals ---------------------------------------------------------------------------


def test_residual_flag_fires_above_an_rms_of_0_05():
    at_boundary = [0.05, -0.05, 0.05, -0.05]
    assert rms_log_residual(at_boundary) == 0.05
    assert residual_flag(at_boundary, anchored=True) is None
    assert residual_flag([0.01, -0.02, 0.0], anchored=False) is None
    assert residual_flag([], anchored=False) is None and math.isnan(rms_log_residual([]))
    above = [0.0501, -0.0501, 0.0501, -0.0501]
    flag = residual_flag(above, anchored=True)
    assert flag.code == POOR_FIT
    assert flag.sentence == (
        "the law misses its runs by 0.0501 in log excess loss L - floor (RMS, above 0.05): "
        "these runs do not follow one power law."
    )
    assert "in log loss (RMS" in residual_flag([0.2, -0.1], anchored=False).sentence
    assert "0.158" in residual_flag([0.2, -0.1], anchored=False).sentence


# -- a free E below the floor ------------------------------------------------------------


def test_below_floor_fires_more_than_three_standard_errors_under_the_floor():
    floor, se = 0.72, 0.001
    boundary = floor - FLOOR_SE_MARGIN * se
    assert below_floor_flag(boundary, floor, se) is None
    assert below_floor_flag(floor + 0.1, floor, se) is None
    assert below_floor_flag(floor - 0.002, floor, se) is None  # within its noise
    flag = below_floor_flag(np.nextafter(boundary, 0.0), floor, se)
    assert flag.code == BELOW_FLOOR
    flag = below_floor_flag(0.61, floor, se)
    assert flag.sentence == (
        "the free fit's E = 0.61 lies below the floor 0.72 that no model can beat: it trades "
        "E against a slowly falling N term, and its E, A and α are not findings."
    )
    # Without a standard error, anything below the floor is below it.
    assert below_floor_flag(floor - 1e-9, floor, 0.0) is not None
    assert below_floor_flag(floor, floor, 0.0) is None


# -- JSON ----------------------------------------------------------------------------------


def test_flags_round_trip_through_json():
    flags = [
        at_floor_flag(*grid(), np.where(grid()[1] >= 2**18, FLOOR, 0.6), FLOOR),
        *exponent_flags({"alpha": (0.0, 0.5), "beta": (0.1, 0.9)}, 0.95),
        residual_flag([0.3], anchored=False),
        below_floor_flag(0.1, FLOOR, 0.001),
    ]
    assert codes(flags) == [AT_FLOOR, EXPONENT_INCLUDES_ZERO, EXPONENT_WIDE, POOR_FIT, BELOW_FLOOR]
    for flag in flags:
        back = IdentificationFlag.from_dict(json.loads(json.dumps(flag.to_dict())))
        assert back == flag and back.to_dict() == {"code": flag.code, "sentence": flag.sentence}

    fit = DatasetFit(
        name="g",
        law=ScalingLaw(E=FLOOR, A=1.0, B=2.0, alpha=0.3, beta=0.4),
        gzip=0.3,
        n_points=24,
        objective=1e-3,
        converged=True,
        frontier=None,
        chinchilla_crossing=None,
        intervals={"alpha": (0.0, 0.5), "beta": (0.1, 0.9)},
        bootstrap=None,
        kind="floor",
        floor=KnownFloor(FLOOR, 0.001),
        flags=flags,
        left_at_floor=6,
        rms_log_residual=0.02,
    )
    data = json.loads(json.dumps(fit.to_dict()))
    assert data["identified"] is False and len(data["flags"]) == 5
    back = DatasetFit.from_dict(data)
    assert back.flags == flags and not back.identified
    assert back.verdict == flags[0].sentence + " (+4 more flags)"
    assert (back.kind, back.floor, back.left_at_floor) == ("floor", KnownFloor(FLOOR, 0.001), 6)
    assert back.rms_log_residual == 0.02
    one = DatasetFit.from_dict({**data, "flags": data["flags"][:2]})
    assert one.verdict.endswith(" (+1 more flag)")
    clean = DatasetFit.from_dict({**data, "flags": []})
    assert clean.identified and clean.verdict == "identified"
