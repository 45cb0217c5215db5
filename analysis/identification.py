"""How well a fit is identified: the flags every fit carries, each with one plain sentence.

A fitted law is a finding only when the runs pin it down.  Four things say they do not:

- runs at the floor: a run whose excess loss ``L - floor`` is under
  :data:`AT_FLOOR_FRACTION` of the floor has learnt the grammar to its entropy, so its loss
  says nothing about N or D; the floor-anchored fit leaves it out and says so;
- an exponent (alpha or beta) whose bootstrap interval includes 0 (the loss is not shown to
  fall along that axis) or spans more than a factor of :data:`MAX_EXPONENT_SPAN`;
- a law whose RMS log residual exceeds :data:`MAX_RMS_LOG_RESIDUAL` (of the excess loss for
  a floor-anchored fit, of the loss for a free one: each is judged on what it fitted);
- a free fit whose E lies below the floor (no predictor can reach below it, so such an E
  is the fit trading E against a slowly falling N term, not an irreducible loss).

These are pure functions of the points, the floor and the fit's intervals; the fits
(:mod:`gzipscale.analysis.fitreport`) call them and every display prints the sentences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

AT_FLOOR_FRACTION = 0.01
MAX_EXPONENT_SPAN = 3.0
MAX_RMS_LOG_RESIDUAL = 0.05
# A free E this many floor standard errors below the floor is below it.
FLOOR_SE_MARGIN = 3.0

AT_FLOOR = "at_floor"
EXPONENT_INCLUDES_ZERO = "exponent_includes_zero"
EXPONENT_WIDE = "exponent_wide"
POOR_FIT = "rms_log_residual"
BELOW_FLOOR = "free_e_below_floor"
FLAG_CODES = (AT_FLOOR, EXPONENT_INCLUDES_ZERO, EXPONENT_WIDE, POOR_FIT, BELOW_FLOOR)

_AXIS = {"alpha": ("α", "N", "model size"), "beta": ("β", "D", "data size")}


@dataclass(frozen=True)
class IdentificationFlag:
    """One reason a fit is not (fully) identified: a ``code`` from :data:`FLAG_CODES`
    and the sentence a user reads."""

    code: str
    sentence: str

    def to_dict(self) -> dict:
        return {"code": self.code, "sentence": self.sentence}

    @classmethod
    def from_dict(cls, data: Mapping) -> IdentificationFlag:
        return cls(str(data["code"]), str(data["sentence"]))


def tokens_text(tokens: float) -> str:
    """A token count as a reader says it: 262144 -> "262K", 1048576 -> "1.05M"."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if tokens >= scale:
            return f"{tokens / scale:.3g}{suffix}"
    return f"{tokens:.0f}"


def at_floor_mask(L, floor: float) -> np.ndarray:
    """Which runs are at the floor: excess loss under :data:`AT_FLOOR_FRACTION` of it (runs
    below the floor, within its noise, count as at it)."""
    return np.asarray(L, dtype=float) - floor < AT_FLOOR_FRACTION * floor


def at_floor_flag(N, D, L, floor: float) -> IdentificationFlag | None:
    """The flag for runs at the floor, or None when no run is at it.

    Says, where it holds, the data size from which every model is at the floor, and
    whether what is left can still measure the N term (two or more model sizes) and the D
    term (two or more data sizes).
    """
    N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
    mask = at_floor_mask(L, floor)
    k, n = int(mask.sum()), len(mask)
    if not k:
        return None
    counts = f"{k} of {n} runs have an excess loss under {AT_FLOOR_FRACTION:.0%} of the floor"
    counts += f" {floor:.4g}"
    lead = counts[0].upper() + counts[1:]
    sizes = np.unique(D)
    reached = [d for d in sizes if mask[D >= d].all()]
    if reached and len(np.unique(N[D >= reached[0]])) == len(np.unique(N)):
        lead = f"every model reaches the floor by {tokens_text(reached[0])} tokens ({counts})"
    rest_n, rest_d = len(np.unique(N[~mask])), len(np.unique(D[~mask]))
    missing = [axis for axis, left in (("N", rest_n), ("D", rest_d)) if left < 2]
    if missing:
        terms = " and ".join(f"the {axis} term" for axis in missing)
        tail = f"this grid cannot measure {terms} of this grammar"
    else:
        tail = "those runs say nothing about N or D and are left out of the floor-anchored fit"
    return IdentificationFlag(AT_FLOOR, f"{lead}: {tail}.")


def exponent_flags(
    intervals: Mapping[str, tuple[float, float]] | None, level: float
) -> list[IdentificationFlag]:
    """Flags for alpha and beta from their bootstrap intervals (none without intervals)."""
    if not intervals:
        return []
    flags = []
    for name, (symbol, axis, what) in _AXIS.items():
        if name not in intervals:
            continue
        lo, hi = (float(v) for v in intervals[name])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            flags.append(
                IdentificationFlag(
                    EXPONENT_WIDE,
                    f"{symbol}'s {level:.0%} interval is unbounded: the runs do not "
                    f"measure how the loss falls with {what} {axis}.",
                )
            )
        elif lo <= 0:
            where = "includes 0" if hi >= 0 else "lies below 0"
            flags.append(
                IdentificationFlag(
                    EXPONENT_INCLUDES_ZERO,
                    f"{symbol}'s {level:.0%} interval [{lo:.3g}, {hi:.3g}] {where}: the "
                    f"runs do not show the loss falling with {what} {axis}.",
                )
            )
        elif hi / lo > MAX_EXPONENT_SPAN:
            flags.append(
                IdentificationFlag(
                    EXPONENT_WIDE,
                    f"{symbol}'s {level:.0%} interval [{lo:.3g}, {hi:.3g}] spans a factor of "
                    f"{hi / lo:.3g} (more than {MAX_EXPONENT_SPAN:g}): {symbol} is not "
                    "identified by these runs.",
                )
            )
    return flags


def rms_log_residual(residuals_log) -> float:
    values = np.asarray(residuals_log, dtype=float)
    return float(np.sqrt(np.mean(values**2))) if values.size else math.nan


def residual_flag(residuals_log, anchored: bool) -> IdentificationFlag | None:
    """The flag for a law that misses its runs, or None."""
    rms = rms_log_residual(residuals_log)
    if not rms > MAX_RMS_LOG_RESIDUAL:
        return None
    what = "excess loss L - floor" if anchored else "loss"
    return IdentificationFlag(
        POOR_FIT,
        f"the law misses its runs by {rms:.3g} in log {what} (RMS, above "
        f"{MAX_RMS_LOG_RESIDUAL:g}): these runs do not follow one power law.",
    )


def below_floor_flag(E: float, floor: float, floor_se: float) -> IdentificationFlag | None:
    """The flag for a free fit whose E lies below the known floor, or None."""
    if not E < floor - FLOOR_SE_MARGIN * floor_se:
        return None
    return IdentificationFlag(
        BELOW_FLOOR,
        f"the free fit's E = {E:.3g} lies below the floor {floor:.4g} that no model can "
        "beat: it trades E against a slowly falling N term, and its E, A and α are not "
        "findings.",
    )
