"""The tests of the fitted laws a report runs beside the fits: held-out extrapolation,
decision accuracy and (when ``gzipscale optimum`` has trained it) the optimum check.

:func:`law_tests` computes them from the points (pure, no files); :func:`render_law_tests`
writes their Markdown.  The first two need only the sweep's runs; the optimum check needs
the three extra runs ``gzipscale optimum RUN_DIR`` trains and records in ``optimum.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gzipscale.analysis.bootstrap import BootstrapPolicy
from gzipscale.analysis.decision import EXCESS, LOSS, DecisionAccuracy, decision_accuracy
from gzipscale.analysis.holdout import HOLDOUT_FRACTION, ExtrapolationTest, extrapolation_test
from gzipscale.analysis.identification import tokens_text
from gzipscale.analysis.markdown import markdown_table
from gzipscale.analysis.optimum import OptimumCheck
from gzipscale.analysis.table import Points


@dataclass
class LawTests:
    extrapolation: list[ExtrapolationTest] = field(default_factory=list)
    decision: DecisionAccuracy | None = None
    optimum: list[OptimumCheck] = field(default_factory=list)
    optimum_skipped: dict[str, str] = field(default_factory=dict)
    optimum_ran: bool = False
    flagged: set[str] = field(default_factory=set)  # datasets whose driving law is not identified

    def to_dict(self) -> dict:
        return {
            "extrapolation": [t.to_dict() for t in self.extrapolation],
            "decision": None if self.decision is None else self.decision.to_dict(),
            "optimum": [c.to_dict() for c in self.optimum],
            "optimum_skipped": dict(self.optimum_skipped),
            "not_identified": sorted(self.flagged),
        }


def law_tests(
    points: Points, policy: BootstrapPolicy, optimum=None, flagged: set[str] | None = None
) -> LawTests:
    """Extrapolation per dataset (floor-anchored where a floor is known, else free),
    decision accuracy over the datasets' shared cells, and the optimum outcome if given
    (an ``OptimumOutcome``)."""
    out = LawTests(flagged=set(flagged or ()))
    cells: dict[str, dict[tuple[float, float], float]] = {}
    floors: dict[str, float] = {}
    for name in points.names:
        N, D, L = points.arrays(name)
        floor, _ = points.floor(name)
        value = None if floor is None else floor.nats_per_token
        out.extrapolation.append(extrapolation_test(name, N, D, L, floor=value, policy=policy))
        cells[name] = {(float(n), float(d)): float(v) for n, d, v in zip(N, D, L, strict=True)}
        if value is not None:
            floors[name] = value
    out.decision = decision_accuracy(cells, floors or None)
    if optimum is not None:
        out.optimum_ran = True
        out.optimum = list(optimum.checks)
        out.optimum_skipped = dict(optimum.skipped)
    return out


def extrapolation_md(tests: list[ExtrapolationTest], flagged: set[str] = frozenset()) -> str:
    import pandas as pd

    rows, notes = [], []
    for t in tests:
        if not t.made:
            notes.append(f"- {t.dataset}: not made ({t.reason})")
            continue
        for p in t.predictions:
            rows.append(
                {
                    "dataset": t.dataset,
                    "N": f"{p.params:,.0f}",
                    "D": tokens_text(p.tokens),
                    "observed": f"{p.observed:.4f}",
                    "predicted": f"{p.predicted:.4f}",
                    "interval": f"[{p.low:.4f}, {p.high:.4f}]",
                    "error": f"{p.error:+.4f}",
                    "inside": "yes" if p.inside else "**no**",
                }
            )
    summary = [
        f"- {t.dataset}: fitted on {t.n_fitted} runs, {len(t.predictions)} held out "
        f"(C ≥ {t.compute_threshold:.3g} FLOPs): mean |error| {t.mean_abs_error:.4f}, "
        f"max {t.max_abs_error:.4f} nats per token; {t.n_inside} of {len(t.predictions)} "
        f"inside their {t.level:.0%} prediction intervals"
        + (
            " (its law is not identified, section 2: small errors here are runs at the floor "
            "or a flexible fit, not a law confirmed)"
            if t.dataset in flagged
            else ""
        )
        for t in tests
        if t.made
    ]
    text = [
        f"Each grammar's runs of the largest compute (the top {HOLDOUT_FRACTION:.0%} by "
        "C = 6·N·D, at least 3) are held out, the law is fitted to the rest (E held at the "
        "floor where it is known), and it predicts the held-out losses. The prediction "
        "interval is the bootstrap of that fit with one of its own log residuals drawn per "
        "resample, so it carries both the law's uncertainty and the scatter of single runs.",
        "\n".join(summary + notes),
    ]
    if rows:
        frame = pd.DataFrame(rows)
        text.append(markdown_table(frame, [(c, c, str) for c in frame.columns]))
    return "\n\n".join(text)


def decision_md(result: DecisionAccuracy | None) -> str:
    if result is None or result.reason:
        return f"Not computed: {result.reason if result else 'no datasets'}."
    import pandas as pd

    orders = {LOSS: "by loss", EXCESS: "by excess loss L − floor"}
    lines = [
        "Do small runs rank the grammars as the largest runs do (as DataDecide, Magnusson et "
        "al. 2025, asks of data choices)? Each (N, D) cell every grammar has a run at ranks "
        "them; the accuracy is the fraction of grammar pairs it orders as the target cell "
        f"(N = {result.target_params:,.0f}, D = {tokens_text(result.target_tokens)}, the largest "
        "compute they share) does.",
    ]
    for by, order in result.target_order.items():
        lines.append(f"Target order {orders[by]}, lowest first: " + ", ".join(order) + ".")
    rows = {}
    for s in result.scales:
        key = (s.compute, s.params, s.tokens)
        rows.setdefault(key, {})[by_label(s.by)] = f"{s.accuracy:.2f}"
    table = [
        {"C (FLOPs)": f"{c:.3g}", "N": f"{n:,.0f}", "D": tokens_text(d), **v}
        for (c, n, d), v in sorted(rows.items())
    ]
    frame = pd.DataFrame(table)
    lines.append(markdown_table(frame, [(c, c, str) for c in frame.columns]))
    for by in result.target_order:
        scales = sorted(result.of(by), key=lambda s: s.compute)
        if not scales:
            continue
        label = orders[by][0].upper() + orders[by][1:]
        # The smallest compute from which every cell ranks every pair as the target does.
        settled = None
        for s in reversed(scales):
            if s.accuracy < 1.0:
                break
            settled = s
        correct = sum(s.accuracy == 1.0 for s in scales)
        lines.append(
            f"{label}: {correct} of {len(scales)} cells rank every pair as the target; the "
            f"smallest ({scales[0].compute:.3g} FLOPs) ranks {scales[0].accuracy:.0%} of "
            f"{scales[0].pairs} pairs correctly; "
            + (
                f"every cell from {settled.compute:.3g} FLOPs "
                f"({settled.compute / scales[-1].compute:.2g} of the target's compute) on does."
                if settled is not None and settled is not scales[-1]
                else "only the target itself ranks them all."
            )
        )
    return "\n\n".join(lines)


def by_label(by: str) -> str:
    return "accuracy by loss" if by == LOSS else "accuracy by excess"


def optimum_md(tests: LawTests, run_dir_name: str = "RUN_DIR") -> str:
    if not tests.optimum_ran:
        return (
            "Not run for these inputs: `gzipscale optimum "
            f"{run_dir_name}` trains the three models and records them in `optimum.json`."
        )
    import pandas as pd

    lines = [
        "For one compute budget C the grid does not contain, the floor-anchored law names its "
        "compute-optimal model size N_opt(C); the shape nearest it and its neighbours in the "
        "tiny family are each trained on D = C / 6N tokens (so all three cost C), exactly "
        "as the sweep trains, and the law's choice is checked against the measured losses."
    ]
    rows = []
    for check in tests.optimum:
        best = check.observed_best
        for c in check.candidates:
            rows.append(
                {
                    "dataset": check.dataset,
                    "C (FLOPs)": f"{check.budget:.3g}",
                    "shape": c.shape + (" (law's optimum)" if c is check.predicted_best else ""),
                    "N": f"{c.params:,}",
                    "D": tokens_text(c.tokens),
                    "predicted": f"{c.predicted:.4f}",
                    "observed": "failed" if math.isnan(c.observed) else f"{c.observed:.4f}",
                    "measured best": "yes" if best is not None and c.shape == best.shape else "",
                }
            )
        verdict = {True: "holds", False: "**does not hold**", None: "undecided (a run failed)"}
        gap = ""
        if best is not None:
            others = sorted(c.observed for c in check.candidates)
            gap = f"; the two lowest losses differ by {others[1] - others[0]:.4f}"
        lines.append(
            f"- {check.dataset}: N_opt = {check.n_opt:,.0f} at C = {check.budget:.3g}; the "
            f"law's choice {check.predicted_best.shape} is the measured best: "
            f"{verdict[check.holds]}{gap}"
        )
    if rows:
        frame = pd.DataFrame(rows)
        lines.append(markdown_table(frame, [(c, c, str) for c in frame.columns]))
    lines += [f"- {name}: no check ({why})" for name, why in tests.optimum_skipped.items()]
    return "\n\n".join(lines)
