"""The five claims of Pandey (2024), "gzip Predicts Data-dependent Scaling Laws"
(arXiv 2405.16684), checked against a sweep's fits.

Each check is a pure function of the fitted datasets and returns a :class:`Verdict`:
``holds``, ``does not hold`` or ``cannot decide``.  The rules are fixed here, before
looking at any sweep, so a report cannot pick the reading that suits it:

- A trend in H is **significant** when the least-squares slope over the datasets has
  p < 0.05 *and* the bootstrap interval of that slope excludes 0.  The second test
  carries each fit's own uncertainty (the p-value treats the fitted values as exact):
  resample k of every dataset's bootstrap gives one slope; datasets are paired through
  fixed permutations, because every dataset is resampled with the same seed and
  pairing equal indices would correlate their resamples.
- A significant trend in the claimed direction: ``holds``; in the other direction:
  ``does not hold``; no significant trend: ``cannot decide``.
- A claim made of several parts holds when every part holds, does not hold when any
  part does not, and otherwise cannot be decided.

The frontier exponent is ``a = β/(α+β)`` (the law's ``n_opt_exponent``: N_opt ∝ C^a,
D_opt ∝ C^(1-a)); a frontier "shifts toward data" when ``a`` falls.  Chinchilla's frontier
has a ≈ 0.5 (N and D grow alike; Hoffmann et al. 2022), so "crossing Chinchilla's 1:1
frontier" is read as ``a`` crossing 0.5.  Every interval quoted says which bootstrap
policy made it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.stats import linregress

from gzipscale.analysis.bootstrap import INTERVAL_LEVEL, BootstrapPolicy
from gzipscale.analysis.fitreport import DatasetFit
from gzipscale.analysis.law import ScalingLaw
from gzipscale.vocabulary import FLOPS_PER_PARAM_TOKEN

ALPHA_LEVEL = 0.05
LEVEL = INTERVAL_LEVEL
HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "cannot decide"
PAPER_A_CROSSING = (0.23, 0.45)  # claim 1: a crosses 0.5 between these H
PAPER_ALPHA_BETA_CROSSING = 0.27  # claim 2
NEAR = 0.1  # "near H = 0.27": within this distance
SAME_H_TOLERANCE = 0.03  # claim 4: a grammar belongs to the same-H group within this
MIN_H_GAP = 0.02  # claim 5: grammars closer in H than this are not ordered by H
NO_SAME_H = "fewer than 2 grammars of about the same H in the sweep"
NO_LEVELS = "no loss level that two grammars reach with different compute"
MAX_RUNS_FACTOR = 100.0  # "cannot decide" estimates above this say no trend to resolve
MIN_IDENTIFIED = 2  # identified fits the law claims (1-4) need at all
A = "n_opt_exponent"  # the key of a = β/(α+β) in a law's dict and its intervals


@dataclass(frozen=True)
class Dataset:
    """What the checks need of one fitted dataset."""

    name: str
    grammar: str  # "NT,T,LEN,OPTS"
    H: float
    law: ScalingLaw
    samples: dict | None  # name -> bootstrap estimates (alpha, beta, ..., n_opt_exponent)
    intervals: dict | None  # name -> (lo, hi)
    N: np.ndarray
    D: np.ndarray
    L: np.ndarray
    policy: BootstrapPolicy | None = None  # how the samples and intervals were made
    flags: tuple[str, ...] = ()  # the fit's identification flags (sentences); () = identified
    floor: float | None = None  # the grammar's floor, where known

    @classmethod
    def of(cls, fit: DatasetFit, grammar: str) -> Dataset:
        """The claims' view of a fit of a dataset made from ``grammar``."""
        return cls(
            name=fit.name,
            grammar=grammar,
            H=fit.gzip,
            law=fit.law,
            samples=fit.samples,
            intervals=fit.intervals,
            N=fit.N,
            D=fit.D,
            L=fit.L,
            policy=fit.bootstrap.policy if fit.bootstrap else None,
            flags=tuple(f.sentence for f in fit.flags),
            floor=None if fit.floor is None else float(fit.floor.nats_per_token),
        )

    @property
    def identified(self) -> bool:
        return not self.flags

    @property
    def terminals(self) -> int:
        return int(self.grammar.split(",")[1])

    @property
    def a(self) -> float:
        return self.law.n_opt_exponent

    def sample(self, key: str) -> np.ndarray | None:
        if self.samples is None:
            return None
        return np.asarray(self.samples[key], dtype=float)

    def value(self, key: str) -> float:
        return float(getattr(self.law, key))

    def interval(self, key: str) -> tuple[float, float] | None:
        if self.intervals is None or key not in self.intervals:
            return None
        lo, hi = self.intervals[key]
        return float(lo), float(hi)


def _policy(datasets: list[Dataset], resamples: int | None = None) -> BootstrapPolicy | None:
    """The bootstrap policy the datasets share (with ``resamples`` paired ones)."""
    policy = next((d.policy for d in datasets if d.policy is not None), None)
    if policy is None or resamples is None:
        return policy
    return BootstrapPolicy(resamples, policy.seed, policy.level)


def _quote(policy: BootstrapPolicy | None, lo_hi: tuple[float, float], spec: str = ".3g") -> str:
    if policy is None:
        return f"bootstrap {100 * LEVEL:.0f}% interval [{lo_hi[0]:{spec}}, {lo_hi[1]:{spec}}]"
    return policy.quote(*lo_hi, spec=spec)


@dataclass(frozen=True)
class Trend:
    """A parameter regressed on H: least squares plus a bootstrap interval of the slope."""

    key: str
    slope: float
    intercept: float
    pvalue: float
    slope_interval: tuple[float, float] | None
    n: int
    policy: BootstrapPolicy | None = None  # the paired resamples behind slope_interval

    @property
    def significant(self) -> bool:
        if not self.pvalue < ALPHA_LEVEL:
            return False
        lo_hi = self.slope_interval
        return lo_hi is None or lo_hi[0] > 0 or lo_hi[1] < 0

    def direction(self) -> str:
        return "rises" if self.slope > 0 else "falls"

    def short(self) -> str:
        """The slope and why it counts or not, in a few words."""
        ci = (
            f", slope {_quote(self.policy, self.slope_interval, '.2g')}"
            if self.slope_interval
            else ""
        )
        verdict = "significant" if self.significant else "not significant"
        return f"slope {self.slope:.3g}, p = {self.pvalue:.2g}{ci}: {verdict}"

    def describe(self, label: str) -> str:
        ci = f", {_quote(self.policy, self.slope_interval)}" if self.slope_interval else ""
        if self.significant:
            why = "significant"
        elif not self.pvalue < ALPHA_LEVEL:
            why = f"not significant: p ≥ {ALPHA_LEVEL}"
        else:
            why = "not significant: the bootstrap interval of the slope includes 0"
        text = (
            f"{label} {self.direction()} with H: slope {self.slope:.3g} (p = {self.pvalue:.2g}"
            f"{ci}; {self.n} grammars) — {why}"
        )
        if not self.significant:
            text += f"; {self.to_decide()}"
        return text

    def runs_factor(self) -> float:
        """How many times the runs per grammar would make this slope significant, were its
        estimate to stay where it is: the bootstrap interval narrows as 1/sqrt(runs), so
        the factor is (1.96 SE / |slope|)^2 with SE = interval width / 3.92 (at least 1).
        inf without an interval or with a zero slope."""
        if self.slope_interval is None or self.slope == 0 or not math.isfinite(self.slope):
            return math.inf
        lo, hi = self.slope_interval
        se = (hi - lo) / (2 * 1.959964)
        if not (math.isfinite(se) and se > 0):
            return math.inf
        return max(1.0, (1.959964 * se / abs(self.slope)) ** 2)

    def to_decide(self) -> str:
        """The estimate a "cannot decide" verdict quotes (bootstrap-based, see
        :meth:`runs_factor`)."""
        k = self.runs_factor()
        if not math.isfinite(k) or k > MAX_RUNS_FACTOR:
            return (
                f"to decide: more than {MAX_RUNS_FACTOR:g}x the runs per grammar at the slope "
                "measured (the data show no trend to resolve at this scale)"
            )
        return (
            f"to decide: about {k:.1f}x the runs per grammar (or {k:.1f}x the compute at "
            "this grid's shape), if the slope stayed at its estimate"
        )


@dataclass(frozen=True)
class Verdict:
    claim: int
    statement: str
    verdict: str
    evidence: list[str] = field(default_factory=list)
    parts: dict[str, str] = field(default_factory=dict)
    summary: str = ""  # one line for a table: the deciding numbers

    def to_dict(self) -> dict:
        return {
            "claim": self.claim,
            "statement": self.statement,
            "verdict": self.verdict,
            "summary": self.summary,
            "evidence": list(self.evidence),
            "parts": dict(self.parts),
        }


CLAIMS = {
    1: "Per-grammar laws differ: as H rises the compute-optimal frontier shifts toward "
    "data, crossing Chinchilla's 1:1 frontier between H = 0.23 and H = 0.45.",
    2: "The regression lines of α and β cross near H = 0.27; all five parameters fall "
    "with H except E, which rises (not significantly).",
    3: "With the vocabulary held fixed, H still predicts the shift.",
    4: "Grammars of very different syntax but the same H give no significant shift.",
    5: "Less compressible data needs more compute to reach the same loss.",
}


def _pairing(n_datasets: int, n_samples: int) -> list[np.ndarray]:
    # Fixed permutations: deterministic (the same report twice is the same report),
    # different per dataset position.
    rng = np.random.default_rng(20240526)
    return [rng.permutation(n_samples) for _ in range(n_datasets)]


def _resampled_lines(datasets: list[Dataset], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(slopes, intercepts) of ``key`` on H, one least-squares line per paired bootstrap
    resample (non-finite where a resample's value is); None without samples."""
    samples = [d.sample(key) for d in datasets]
    if any(s is None for s in samples):
        return None
    k = min(len(s) for s in samples)
    order = _pairing(len(samples), k)
    Y = np.stack([s[:k][p] for s, p in zip(samples, order, strict=True)])  # (datasets, k)
    H = np.array([d.H for d in datasets])
    Hc = H - H.mean()
    with np.errstate(invalid="ignore", over="ignore"):
        slopes = (Hc @ (Y - Y.mean(axis=0))) / (Hc @ Hc)
        intercepts = Y.mean(axis=0) - slopes * H.mean()
    return slopes, intercepts


def _interval(values: np.ndarray) -> tuple[float, float] | None:
    """Percentile interval at LEVEL of the finite values; None with fewer than 10."""
    values = values[np.isfinite(values)]
    if values.size < 10:
        return None
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def trend(datasets: list[Dataset], key: str) -> Trend | None:
    """``key`` (a key of the law's dict, e.g. ``alpha`` or ``n_opt_exponent``) regressed
    on H; None below 3 datasets."""
    if len(datasets) < 3 or len({d.H for d in datasets}) < 2:
        return None
    H = np.array([d.H for d in datasets])
    y = np.array([d.value(key) for d in datasets])
    if not np.all(np.isfinite(y)):
        return None
    fit = linregress(H, y)
    lines = _resampled_lines(datasets, key)
    interval = None if lines is None else _interval(lines[0])
    policy = None if lines is None else _policy(datasets, len(lines[0]))
    return Trend(
        key, float(fit.slope), float(fit.intercept), float(fit.pvalue), interval, len(H), policy
    )


def _direction_part(t: Trend | None, want: str) -> str:
    if t is None or not t.significant:
        return UNDECIDED
    return HOLDS if t.direction() == want else FAILS


def _combine(parts: dict[str, str]) -> str:
    if any(v == FAILS for v in parts.values()):
        return FAILS
    if parts and all(v == HOLDS for v in parts.values()):
        return HOLDS
    return UNDECIDED


def _disjoint(x: tuple[float, float] | None, y: tuple[float, float] | None) -> bool:
    return x is not None and y is not None and (x[1] < y[0] or y[1] < x[0])


def _a_summary(datasets: list[Dataset]) -> str:
    cells = []
    for d in sorted(datasets, key=lambda d: d.H):
        ci = d.interval(A)
        cells.append(
            f"{d.grammar} (H {d.H:.3f}): a = {d.a:.3f}"
            + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        )
    policy = _policy(datasets)
    intervals = f" ({policy.describe()})" if policy and any(d.intervals for d in datasets) else ""
    return "; ".join(cells) + intervals


def check_claim_1(datasets: list[Dataset]) -> Verdict:
    evidence = [f"frontier exponent a = β/(α+β) per grammar: {_a_summary(datasets)}"]
    parts: dict[str, str] = {}
    ordered = sorted(datasets, key=lambda d: d.H)
    differ = any(
        _disjoint(x.interval(A), y.interval(A))
        for i, x in enumerate(ordered)
        for y in ordered[i + 1 :]
    )
    parts["laws differ (some pair of a intervals disjoint)"] = HOLDS if differ else UNDECIDED
    t = trend(datasets, A)
    parts["frontier shifts toward data as H rises (a falls)"] = _direction_part(t, "falls")
    if t is not None:
        evidence.append(t.describe("a"))
    crossing_part = UNDECIDED
    if t is not None and t.significant and t.slope != 0:
        h_star = (0.5 - t.intercept) / t.slope
        lo, hi = PAPER_A_CROSSING
        crossing_part = HOLDS if lo <= h_star <= hi else FAILS
        evidence.append(
            f"the fitted line of a crosses 0.5 (Chinchilla's 1:1) at H = {h_star:.3f}; "
            f"the paper: between {lo} and {hi}"
        )
    parts["crosses a = 0.5 between H = 0.23 and 0.45"] = crossing_part
    summary = (
        f"a goes from {ordered[0].a:.2f} (H {ordered[0].H:.2f}) to {ordered[-1].a:.2f} "
        f"(H {ordered[-1].H:.2f}); " + (t.short() if t is not None else "no trend fitted")
    )
    return Verdict(1, CLAIMS[1], _combine(parts), evidence, parts, summary)


def check_claim_2(datasets: list[Dataset]) -> Verdict:
    evidence: list[str] = []
    parts: dict[str, str] = {}
    trends = {key: trend(datasets, key) for key in ("E", "A", "B", "alpha", "beta")}
    labels = {"alpha": "α", "beta": "β"}
    for key in ("A", "B", "alpha", "beta"):
        t = trends[key]
        parts[f"{labels.get(key, key)} falls with H"] = _direction_part(t, "falls")
        if t is not None:
            evidence.append(t.describe(labels.get(key, key)))
    t = trends["E"]
    if t is None:
        parts["E rises with H, not significantly"] = UNDECIDED
    else:
        evidence.append(t.describe("E"))
        if t.slope > 0:
            parts["E rises with H, not significantly"] = HOLDS
        elif t.significant:
            parts["E rises with H, not significantly"] = FAILS
        else:
            parts["E rises with H, not significantly"] = UNDECIDED
    ta, tb = trends["alpha"], trends["beta"]
    crossing = UNDECIDED
    if ta is not None and tb is not None and ta.slope != tb.slope:
        h_cross = (tb.intercept - ta.intercept) / (ta.slope - tb.slope)
        interval = _crossing_interval(datasets)
        text = f"the lines of α and β cross at H = {h_cross:.3f}"
        target = (PAPER_ALPHA_BETA_CROSSING - NEAR, PAPER_ALPHA_BETA_CROSSING + NEAR)
        if interval is not None:
            text += f" ({_quote(_policy(datasets), interval)})"
            if target[0] <= interval[0] and interval[1] <= target[1]:
                crossing = HOLDS
            elif interval[1] < target[0] or interval[0] > target[1]:
                crossing = FAILS
        evidence.append(text + f"; the paper: near {PAPER_ALPHA_BETA_CROSSING} (±{NEAR})")
    parts[f"α and β lines cross near H = {PAPER_ALPHA_BETA_CROSSING}"] = crossing
    grouped = {
        verdict: [p for p, v in parts.items() if v == verdict]
        for verdict in (HOLDS, FAILS, UNDECIDED)
    }
    summary = "; ".join(f"{v}: {', '.join(ps)}" for v, ps in grouped.items() if ps)
    return Verdict(2, CLAIMS[2], _combine(parts), evidence, parts, summary)


def _crossing_interval(datasets: list[Dataset]) -> tuple[float, float] | None:
    """Bootstrap interval of the H where the α and β lines cross (resamples paired)."""
    alpha, beta = _resampled_lines(datasets, "alpha"), _resampled_lines(datasets, "beta")
    if alpha is None or beta is None:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = (beta[1] - alpha[1]) / (alpha[0] - beta[0])
    return _interval(cross)


def check_claim_3(datasets: list[Dataset]) -> Verdict:
    # The paper's same-vocabulary series: as many terminals in every grammar.
    by_t: dict[int, list[Dataset]] = {}
    for d in datasets:
        by_t.setdefault(d.terminals, []).append(d)
    terminals, group = max(by_t.items(), key=lambda kv: (len(kv[1]), kv[0]))
    parts: dict[str, str] = {}
    evidence = [
        f"{len(group)} grammars with {terminals} terminals: "
        + ", ".join(f"{d.grammar} (H {d.H:.3f})" for d in sorted(group, key=lambda d: d.H))
    ]
    t = trend(group, A)
    if t is not None:
        evidence.append(t.describe("a"))
    parts[f"a falls with H at {terminals} terminals"] = _direction_part(t, "falls")
    summary = f"{len(group)} grammars with {terminals} terminals: " + (
        t.short() if t is not None else "too few for a trend"
    )
    return Verdict(3, CLAIMS[3], _combine(parts), evidence, parts, summary)


def same_h_group(datasets: list[Dataset], same_h_grammars: set[str]) -> list[Dataset]:
    """The paper's same-H grammars in the sweep, with any other grammar as close in H."""
    core = [d for d in datasets if d.grammar in same_h_grammars]
    if not core:
        return []
    lo = min(d.H for d in core) - SAME_H_TOLERANCE
    hi = max(d.H for d in core) + SAME_H_TOLERANCE
    return sorted((d for d in datasets if lo <= d.H <= hi), key=lambda d: d.H)


def check_claim_4(datasets: list[Dataset], same_h_grammars: set[str]) -> Verdict:
    group = same_h_group(datasets, same_h_grammars)
    parts: dict[str, str] = {}
    if len(group) < 2:
        parts["no significant shift among same-H grammars"] = UNDECIDED
        return Verdict(4, CLAIMS[4], UNDECIDED, [NO_SAME_H], parts, NO_SAME_H)
    evidence = [f"same-H group: {_a_summary(group)}"]
    intervals = [d.interval(A) for d in group]
    shifted = any(_disjoint(x, y) for i, x in enumerate(intervals) for y in intervals[i + 1 :])
    # The data could show a shift only if the intervals are narrower than the shift H
    # itself produces across the sweep (the spread of a over all its grammars).
    spread = max(d.a for d in datasets) - min(d.a for d in datasets)
    widths = [hi - lo for lo, hi in (iv for iv in intervals if iv is not None)]
    evidence.append(
        f"spread of a over all {len(datasets)} grammars: {spread:.3f}; widest same-H "
        f"interval: {max(widths):.3f}"
        if widths
        else "no bootstrap intervals"
    )
    if shifted:
        verdict = FAILS
    elif widths and len(widths) == len(group) and max(widths) < spread:
        verdict = HOLDS
    else:
        verdict = UNDECIDED
    parts["no significant shift among same-H grammars"] = verdict
    if shifted:
        detail = "two of their intervals are disjoint"
    elif widths:
        detail = (
            f"the intervals overlap; the widest is {max(widths):.2f} wide, the spread of a "
            f"over all grammars {spread:.2f}"
        )
        if verdict == UNDECIDED and spread > 0:
            # Intervals narrow about as 1/sqrt(runs): below the spread after (w/s)^2 x.
            factor = (max(widths) / spread) ** 2
            evidence.append(
                f"to decide: the widest same-H interval must narrow below the spread, about "
                f"{factor:.1f}x the runs per grammar"
                if factor <= MAX_RUNS_FACTOR
                else f"to decide: more than {MAX_RUNS_FACTOR:g}x the runs per grammar"
            )
    else:
        detail = "no intervals"
    summary = (
        f"a = {min(d.a for d in group):.2f} to {max(d.a for d in group):.2f} over "
        f"{len(group)} grammars at H {group[0].H:.3f}–{group[-1].H:.3f}; {detail}"
    )
    return Verdict(4, CLAIMS[4], verdict, evidence, parts, summary)


def compute_to_reach(d: Dataset, level: float, losses=None) -> float:
    """Least training compute 6ND among the runs whose loss (``losses``, default d.L) is
    ≤ level (inf if none)."""
    reached = (d.L if losses is None else losses) <= level
    compute = FLOPS_PER_PARAM_TOKEN * d.N * d.D
    return float(compute[reached].min()) if reached.any() else math.inf


def _compute_share(datasets: list[Dataset], losses) -> tuple[int, int, tuple | None]:
    """(consistent, inconsistent, first exception) over every observed level of
    ``losses(d)``: at each, the least compute reaching it must rise with H."""
    levels = np.unique(np.concatenate([losses(d) for d in datasets]))
    consistent = inconsistent = 0
    worst = None
    ordered = sorted(datasets, key=lambda d: d.H)
    for level in levels:
        need = [compute_to_reach(d, level, losses(d)) for d in ordered]
        for i, lo in enumerate(ordered):
            for j in range(i + 1, len(ordered)):
                hi = ordered[j]
                if hi.H - lo.H < MIN_H_GAP or (math.isinf(need[i]) and math.isinf(need[j])):
                    continue
                if need[j] == need[i]:
                    continue
                if need[j] > need[i]:
                    consistent += 1
                else:
                    inconsistent += 1
                    worst = worst or (lo, hi, level, need[i], need[j])
    return consistent, inconsistent, worst


def _claim_5_to_decide(datasets: list[Dataset], share: float) -> list[str]:
    """What the undecided claim 5 would need: the same comparison on the excess loss over
    each grammar's floor (raw losses below a grammar's floor are unreachable for it, so
    grammars with different floors are compared at levels one of them can never reach)."""
    lines = []
    if all(d.floor is not None for d in datasets):
        c, i, _ = _compute_share(datasets, lambda d: d.L - d.floor)
        if c + i:
            lines.append(
                f"on the excess loss L − floor instead (each grammar's floor is known): "
                f"{c} of {c + i} comparisons ({c / (c + i):.0%}) need more compute for the "
                "less compressible grammar (not the rule's reading: the claim is about loss)"
            )
    lines.append(
        f"to decide: the share ({share:.0%}) must reach 95% or fall below 50%; its exceptions "
        "are levels near one grammar's floor, so more runs of this grid move it little — "
        "grammars whose floors order as their H, or the rule read on the excess loss, would"
    )
    return lines


def check_claim_5(datasets: list[Dataset]) -> Verdict:
    """Model-free: at every observed loss level, the compute needed must not fall as H rises."""
    consistent, inconsistent, worst = _compute_share(datasets, lambda d: d.L)
    total = consistent + inconsistent
    parts: dict[str, str] = {}
    if total == 0:
        parts["compute to reach a loss rises with H"] = UNDECIDED
        return Verdict(5, CLAIMS[5], UNDECIDED, [NO_LEVELS], parts, NO_LEVELS)
    share = consistent / total
    evidence = [
        f"at each observed loss level, the least compute 6ND among runs reaching it: "
        f"{consistent} of {total} grammar pairs that need different compute ({share:.0%}) "
        f"need more for the less compressible grammar"
    ]
    if worst is not None:
        lo, hi, level, c_lo, c_hi = worst
        evidence.append(
            f"first exception: loss {level:.3f} needs {c_lo:.3g} FLOPs on {lo.grammar} "
            f"(H {lo.H:.3f}) but {c_hi:.3g} on {hi.grammar} (H {hi.H:.3f})"
        )
    verdict = HOLDS if share >= 0.95 else FAILS if share < 0.5 else UNDECIDED
    if verdict == UNDECIDED:
        evidence += _claim_5_to_decide(datasets, share)
    parts["compute to reach a loss rises with H (≥ 95% of comparisons)"] = verdict
    summary = (
        f"in {consistent} of {total} comparisons ({share:.0%}) the less compressible grammar "
        "needs more compute to reach a loss (observed runs, no fit)"
    )
    return Verdict(5, CLAIMS[5], verdict, evidence, parts, summary)


def check_claims(datasets: list[Dataset], same_h_grammars: set[str]) -> list[Verdict]:
    """All five checks, in the paper's order.

    Claims 1-4 are about the fitted laws, so they use only the fits that are identified
    (no identification flag): a law the runs do not pin down is not evidence for or
    against anything.  Each verdict's evidence then starts by naming the fits left out.
    Claim 5 compares observed runs, not laws, and uses every dataset.
    """
    identified = [d for d in datasets if d.identified]
    left_out = [d.name for d in datasets if not d.identified]
    note = (
        f"{len(left_out)} of {len(datasets)} fits are not identified and are left out of "
        f"this check ({', '.join(left_out)}; their flags are listed with the fits)"
    )
    if len(identified) < MIN_IDENTIFIED:
        # A trend needs laws to compare; with fewer than two identified there are none.
        summary = (
            f"{len(identified)} identified fit(s) of {len(datasets)}: "
            "no law here to test the claim with"
        )
        parts = {f"at least {MIN_IDENTIFIED} identified fits to compare": UNDECIDED}
        evidence = [note] if left_out else [f"{len(datasets)} fitted dataset(s)"]
        law_checks = [
            Verdict(i, CLAIMS[i], UNDECIDED, list(evidence), dict(parts), summary)
            for i in (1, 2, 3, 4)
        ]
        return [*law_checks, check_claim_5(datasets)]
    law_checks = [
        check_claim_1(identified),
        check_claim_2(identified),
        check_claim_3(identified),
        check_claim_4(identified, same_h_grammars),
    ]
    if len(identified) < 3:
        # No trend in H from two laws: say what their difference shows and what would
        # decide it.
        pair = pair_estimate(identified, A, "a")
        law_checks = [
            replace(v, evidence=[*v.evidence, pair]) if v.claim in (1, 2) and pair else v
            for v in law_checks
        ]
    if law_checks[2].verdict == UNDECIDED:
        by_t: dict[int, list[Dataset]] = {}
        for d in datasets:
            by_t.setdefault(d.terminals, []).append(d)
        terminals, group = max(by_t.items(), key=lambda kv: (len(kv[1]), kv[0]))
        ok = [d for d in group if d.identified]
        if len(ok) < 3:
            law_checks[2] = replace(
                law_checks[2],
                evidence=[
                    *law_checks[2].evidence,
                    f"{len(group)} grammars with {terminals} terminals are in the sweep, "
                    f"{len(ok)} identified; to decide: identified laws for at least 3 of them "
                    "(a trend needs three), with the others' flags removed (section 2)",
                ],
            )
    same_h = same_h_group(datasets, same_h_grammars)
    unidentified_same_h = [d for d in same_h if not d.identified]
    if len(same_h_group(identified, same_h_grammars)) < 2 and unidentified_same_h:
        why = "; ".join(f"{d.grammar}: {d.flags[0]}" for d in unidentified_same_h)
        misfit = any(
            "do not follow one power law" in f for d in unidentified_same_h for f in d.flags
        )
        law_checks = [
            replace(
                v,
                evidence=[
                    *v.evidence,
                    f"{len(same_h)} grammars of about the same H are in the sweep, "
                    f"{len(same_h) - len(unidentified_same_h)} identified; the others: {why}"
                    + (
                        "; to decide: laws that fit those grammars (a misfit is not narrowed "
                        "by more runs of this grid: see docs/design.md)"
                        if misfit
                        else "; to decide: more runs of those grammars, until identified"
                    ),
                ],
            )
            if v.claim == 4
            else v
            for v in law_checks
        ]
    if left_out:
        law_checks = [replace(v, evidence=[note, *v.evidence]) for v in law_checks]
    return [*law_checks, check_claim_5(datasets)]


def pair_estimate(datasets: list[Dataset], key: str, label: str) -> str | None:
    """For exactly two identified laws: the difference of ``key`` between them (higher H
    minus lower) with its bootstrap interval (resamples paired as in the trends), and how
    many times the runs per grammar would make it significant were it to stay where it is:
    ((1.96 SE) / |difference|)^2, SE = interval width / 3.92."""
    if len(datasets) != 2:
        return None
    lo_h, hi_h = sorted(datasets, key=lambda d: d.H)
    diff = hi_h.value(key) - lo_h.value(key)
    a, b = lo_h.sample(key), hi_h.sample(key)
    if a is None or b is None or len(a) != len(b) or len(a) < 10:
        return None
    perm = _pairing(2, len(a))
    draws = b[perm[1]] - a[perm[0]]
    interval = _interval(draws)
    if interval is None:
        return None
    se = (interval[1] - interval[0]) / (2 * 1.959964)
    text = (
        f"two identified laws give no trend in H; {label} differs between them by "
        f"{diff:+.3g} (H {lo_h.H:.3f} → {hi_h.H:.3f}), {_quote(_policy(datasets), interval)}"
    )
    if interval[0] > 0 or interval[1] < 0:
        return text + "; to decide: a third identified grammar, for a trend"
    factor = (1.959964 * se / abs(diff)) ** 2 if diff != 0 and se > 0 else math.inf
    more = (
        f"about {factor:.1f}x the runs per grammar to resolve the difference"
        if factor <= MAX_RUNS_FACTOR
        else f"more than {MAX_RUNS_FACTOR:g}x the runs per grammar to resolve it"
    )
    return text + f"; to decide: a third identified grammar, for a trend, and {more}"
