"""Exact string and prefix probabilities of token strings under a compiled PCFG.

For a batch of token strings w (no separators) this computes, for every string and every
j = 1..n, the prefix probability P(the sentence starts with w_0..w_{j-1}) and, for strings
that are complete sentences, the string probability P(sentence = w) summed over all
derivations. Optionally, in the expectation semiring, also E[-log p(D) | sentence = w], the
posterior mean of the derivation log-loss, which gives the derivation entropy given the
string, H(D | S = w) = E[-log p(D) | w] + log P(w).

Algorithm: Stolcke's probabilistic Earley parser (1995), split into a bottom-up inside pass
and a left-to-right forward pass.

* Items are dotted productions (X -> r_0..r_{k-1} . r_k..r_{m-1}, 1 <= k < m) over spans
  (i, j), with inner probability gamma = P(X -> r) * inside(r_0..r_{k-1} over w_i..w_{j-1}).
  Dotted productions binarise long right-hand sides implicitly: an item extends by one
  symbol at a time, by a terminal equal to the next token or by a complete constituent of
  the next nonterminal. Constituents (i, j, X) sum the completed items, then close over unit
  productions with R_U = (I - P_U)^{-1} (unit cycles included). The pass runs by span width,
  all strings of a batch at once; only items the input allows are ever built (an item
  needs its terminals to match), so a rule costs nothing at spans where its terminals do not
  occur. Work: items waiting for a nonterminal are looked at once per width, so a string
  costs O(n x its items), at worst O(n^3 |G|); a sampled 255-token string of
  (50,300,10,20) has a few thousand items.
* Forward pass: the weight pi(i, X) with which X is predicted at position i is
  R_L[S, X] at i = 0 and sum over items (h, i, Z -> l . Y m) with l non-empty of
  pi(h, Z) gamma R_L[Y, X], where R_L = (I - P_L)^{-1} is the left-corner closure (left
  recursion and unit chains included). The prefix probability of w_0..w_{j-1} is then
  the sum over scanned items (i, j, X -> l a . m) with a = w_{j-1} of pi(i, X) gamma: every
  partial leftmost derivation that has just produced w_{j-1} is counted exactly once.

The prefix probability is P(first j tokens = w_0..w_{j-1}) for any grammar whose left-corner
closure exists (the spectral radius of P_L over reachable nonterminals is below 1: the
leftmost derivation reaches a terminal with probability 1), whether or not sentences are
finite: partial leftmost derivations are disjoint events with probability the product of
their rules. Where the closure does not exist this module refuses (PrefixUndefinedError).

Underflow: every value over a span of width w is stored scaled by c^-w for one constant
c per grammar (products of adjacent spans stay consistently scaled), so 255-token strings
stay in float64 range. A string whose values leave a safe range (where underflow could
lose precision) is parsed again, alone, at other scales; if none works FloorNumericsError
is raised rather than a wrong number returned. Work is bounded: a string whose chart
exceeds ``max_items`` items raises ChartLimitError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .compiled import CompiledGrammar, GrammarError

# Chart items per string. A sampled 255-token string of (50,300,10,20) needs < 1e4; the work
# of a string is at most about (its length) x (this cap) item updates, ~10 s at the cap.
DEFAULT_MAX_ITEMS = 1_000_000
# Strings per parse call are grouped so that a batch holds about this many positions times
# widths (the cost of the per-width Python loop is then amortised over many strings).
BATCH_POSITION_WIDTHS = 400_000


class FloorError(GrammarError):
    """The floor cannot be computed for this grammar or these documents; the message says why."""


class PrefixUndefinedError(FloorError):
    """The left-corner closure does not exist, so prefix probabilities are not defined."""


class ChartLimitError(FloorError):
    """A string's chart grew past the item cap (bounded work instead of a hang)."""


class FloorNumericsError(FloorError):
    """A probability left float64 range or is zero (a string the grammar cannot produce)."""


@dataclass(frozen=True)
class ParserTables:
    """A compiled grammar as dotted-production tables (only positive, reachable rules)."""

    name: str
    n_nonterminals: int
    start: int
    log_scale: float  # log c: values over width w are stored divided by c^w
    # dotted states (p, k), 1 <= k < m_p
    st_next: np.ndarray  # (S,) int64 the symbol after the dot (terminal >= 1, NT < 0)
    st_succ: np.ndarray  # (S,) int64 state after advancing, -1 if that completes the rule
    st_lhs: np.ndarray  # (S,) int64
    # productions starting with terminal a: CSR over a = 0..max_terminal
    t_ptr: np.ndarray  # (T + 2,)
    t_state: np.ndarray  # first state, or -1 for a one-terminal production
    t_lhs: np.ndarray
    t_prob: np.ndarray
    # productions of length >= 2 starting with nonterminal Y: CSR over Y
    n_ptr: np.ndarray  # (K + 1,)
    n_state: np.ndarray
    n_prob: np.ndarray
    left_closure: np.ndarray  # R_L (K, K)
    unit_closure: np.ndarray  # R_U (K, K)
    unit_entropy: np.ndarray  # R_U E R_U, E = P_U * -log P_U: the expectation-semiring part
    has_units: bool

    @property
    def scale(self) -> float:
        return math.exp(self.log_scale)


def positive_reachable(g: CompiledGrammar) -> np.ndarray:
    """Nonterminals reachable from the start through productions of positive probability."""
    seen = np.zeros(g.n_nonterminals, bool)
    seen[g.start] = True
    frontier = [g.start]
    while frontier:
        k = frontier.pop()
        for j in range(g.first_prod[k], g.last_prod[k] + 1):
            if g.prod_prob[j] <= 0:
                continue
            rhs = g.rhs_symbols[g.rhs_offset[j] : g.rhs_offset[j] + g.rhs_len[j]]
            for s in rhs[rhs < 0]:
                child = -int(s) - 1
                if not seen[child]:
                    seen[child] = True
                    frontier.append(child)
    return seen


def parser_tables(g: CompiledGrammar, log_scale: float | None = None) -> ParserTables:
    """Build the tables; refuse grammars whose left-corner closure does not exist."""
    k_count = g.n_nonterminals
    reach = positive_reachable(g)
    keep = (g.prod_prob > 0) & reach[g.prod_lhs]
    prods = np.flatnonzero(keep)
    p_left = np.zeros((k_count, k_count))
    p_unit = np.zeros((k_count, k_count))
    e_unit = np.zeros((k_count, k_count))
    st_next, st_succ, st_lhs = [], [], []
    t_rows, n_rows = [], []  # (symbol, state, lhs, prob)
    for j in prods:
        rhs = g.rhs_symbols[g.rhs_offset[j] : g.rhs_offset[j] + g.rhs_len[j]].astype(np.int64)
        x, p, m = int(g.prod_lhs[j]), float(g.prod_prob[j]), len(rhs)
        first = int(rhs[0])
        base = len(st_next)
        if m >= 2:
            st_next.extend(rhs[1:].tolist())
            st_succ.extend([base + k for k in range(1, m - 1)] + [-1])
            st_lhs.extend([x] * (m - 1))
        if first >= 1:
            t_rows.append((first, base if m >= 2 else -1, x, p))
        else:
            y = -first - 1
            p_left[x, y] += p
            if m == 1:
                p_unit[x, y] += p
                e_unit[x, y] += -p * math.log(p)
            else:
                n_rows.append((y, base, x, p))

    sub = np.ix_(reach, reach)
    rho = float(np.max(np.abs(np.linalg.eigvals(p_left[sub])))) if reach.any() else 0.0
    if not rho < 1 - 1e-9:
        raise PrefixUndefinedError(
            f"grammar {g.name}: prefix probabilities are undefined: the left-corner closure "
            f"(I - P_L)^-1 does not exist (spectral radius of the left-corner matrix "
            f"{rho:.6g} >= 1; nonterminal(s) {_stuck_names(g, p_left, reach)} never reach "
            "their first token: a left-recursive or unit-production cycle with no exit)"
        )
    eye = np.eye(k_count)
    r_left = np.linalg.inv(eye - p_left)
    r_unit = np.linalg.inv(eye - p_unit)
    has_units = bool(p_unit.any())

    def csr(rows, n_keys):
        rows = sorted(rows, key=lambda r: r[0])  # stable: production order within a key
        keys = np.array([r[0] for r in rows], np.int64)
        ptr = np.searchsorted(keys, np.arange(n_keys + 1), side="left").astype(np.int64)
        cols = [np.array([r[i] for r in rows], dt) for i, dt in ((1, np.int64), (2, np.int64))]
        return ptr, cols[0], cols[1], np.array([r[3] for r in rows], np.float64)

    t_ptr, t_state, t_lhs, t_prob = csr(t_rows, g.max_terminal + 1)
    n_ptr, n_state, _, n_prob = csr(n_rows, k_count)
    if log_scale is None:
        log_scale = default_log_scale(g)
    return ParserTables(
        name=g.name,
        n_nonterminals=k_count,
        start=g.start,
        log_scale=float(log_scale),
        st_next=np.asarray(st_next, np.int64),
        st_succ=np.asarray(st_succ, np.int64),
        st_lhs=np.asarray(st_lhs, np.int64),
        t_ptr=t_ptr,
        t_state=t_state,
        t_lhs=t_lhs,
        t_prob=t_prob,
        n_ptr=n_ptr,
        n_state=n_state,
        n_prob=n_prob,
        left_closure=r_left,
        unit_closure=r_unit,
        unit_entropy=r_unit @ e_unit @ r_unit,
        has_units=has_units,
    )


def _stuck_names(g: CompiledGrammar, p_left: np.ndarray, reach: np.ndarray) -> str:
    """Reachable nonterminals from which the left-corner chain never leaves its cycle."""
    k_count = g.n_nonterminals
    exits = np.zeros(k_count, bool)  # a positive production starting with a terminal
    first = g.rhs_symbols[g.rhs_offset]
    np.logical_or.at(exits, g.prod_lhs, (first >= 1) & (g.prod_prob > 0))
    ok = exits.copy()
    while True:
        new = ok | ((p_left > 0) & ok[None, :]).any(axis=1)
        if np.array_equal(new, ok):
            break
        ok = new
    stuck = reach & ~ok
    names = np.asarray(g.nonterminal_names)[stuck][:10]
    return ", ".join(names) if len(names) else "(numerically)"


@dataclass(frozen=True)
class DerivationEntropy:
    """Per-sentence derivation entropy H(D), mean length E|S|, and their rate.

    ``nats_per_token`` = H(D) / (E|S| + 1); all three None (with ``reason``) where the
    expected length is infinite.
    """

    nats_per_sentence: float | None
    mean_length: float | None
    nats_per_token: float | None
    growth_rate: float
    reason: str | None = None


def derivation_entropy_rate(grammar: CompiledGrammar) -> DerivationEntropy:
    """H(D) = sum_X E[#X] h(X) with E[#X] = [(I - M)^-1]_{S,X} and h(X) the entropy of X's
    production choice; E|S| = sum_X E[#X] (expected terminals of one rewrite of X)."""
    g = grammar
    reach = positive_reachable(g)
    idx = np.flatnonzero(reach)
    m = g.mean_matrix()[np.ix_(idx, idx)]
    rho = float(np.max(np.abs(np.linalg.eigvals(m)))) if m.size else 0.0
    if not rho < 1 - 1e-9:
        kind = "critical" if abs(rho - 1) < 1e-9 else "supercritical"
        return DerivationEntropy(
            None,
            None,
            None,
            rho,
            f"grammar {g.name} is {kind} (growth rate {rho:.6g} >= 1): the expected sentence "
            "length is infinite, so the derivation entropy per token is undefined",
        )
    visits = np.linalg.solve((np.eye(len(idx)) - m).T, (idx == g.start).astype(float))
    p = g.prod_prob
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    owner = np.repeat(np.arange(len(g.rhs_len)), g.rhs_len)
    terminals = np.bincount(owner, g.rhs_symbols > 0, len(g.rhs_len))
    h = np.bincount(g.prod_lhs, plogp, g.n_nonterminals)[idx]
    t = np.bincount(g.prod_lhs, p * terminals, g.n_nonterminals)[idx]
    entropy, length = float(visits @ h), float(visits @ t)
    return DerivationEntropy(entropy, length, entropy / (length + 1), rho)


def default_log_scale(g: CompiledGrammar) -> float:
    """log c: minus a typical per-token log-probability, so that scaled values stay near 1
    over spans of hundreds of tokens: the derivation entropy per token, or for a grammar
    whose expected length is infinite that of the grammar conditioned on finite sentences,
    else half the log of the vocabulary. (Only the numerics depend on it; a string that
    leaves the safe range is parsed again at other scales, see ``parse``.)"""
    rate = derivation_entropy_rate(g).nats_per_token
    if rate is None:
        try:
            rate = derivation_entropy_rate(g.conditioned()).nats_per_token
        except GrammarError:
            rate = None
    if rate is None or not np.isfinite(rate) or rate <= 0:
        rate = 0.5 * math.log(g.max_terminal + 1)
    return -float(rate)


# A string is accepted at a scale when every scaled value stored for it (items, constituents,
# prediction weights, prefix probabilities) lies in [SAFE_MIN, SAFE_MAX] or is a structural
# zero: then the product of any two stays in float64's normal range, nothing underflowed
# and a zero result is an exact zero (an impossible string). Otherwise it is parsed again,
# alone, at the next scale of the ladder (offsets in nats per token from the default):
# the result is a function of the string only.
SAFE_MAX = 1e150
SAFE_MIN = 1e-150
SCALE_LADDER = (0.0, 1.5, -1.5, 3.0, -3.0, 5.0, -5.0, 8.0, -8.0)


@dataclass(frozen=True)
class ParseResult:
    """Per string of the batch, in the order given."""

    log_prefix: list[np.ndarray]  # log P(w_0..w_{j-1} ...) for j = 0..n (entry 0 is 0)
    log_string: np.ndarray  # log P(sentence = w); -inf where not asked (complete=False)
    derivation_loss: np.ndarray  # E[-log p(D) | w]; nan where not asked


class _Buffer:
    """A growable 2-D float array (constituent rows, appended width by width)."""

    def __init__(self, cols: int):
        self.data = np.zeros((256, cols))
        self.n = 0

    def append(self, rows: np.ndarray) -> int:
        need = self.n + len(rows)
        if need > len(self.data):
            grown = np.zeros((max(need, 2 * len(self.data)), self.data.shape[1]))
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        base = self.n
        self.data[base:need] = rows
        self.n = need
        return base


def parse(
    tables: ParserTables,
    strings: list[np.ndarray],
    complete: np.ndarray | None = None,
    entropy: np.ndarray | None = None,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> ParseResult:
    """Prefix probabilities of every prefix of every string, string probabilities of those
    flagged ``complete``, and E[-log p(D) | w] of those flagged ``entropy`` (implies complete).

    A string (or prefix) the grammar cannot produce gets log-probability -inf. Strings are
    grouped by length into batches; a string's results depend on the string and the
    grammar, and (at the last bit, through BLAS kernels) on the other strings of its batch.
    """
    n_str = len(strings)
    complete = np.zeros(n_str, bool) if complete is None else np.asarray(complete, bool)
    entropy = np.zeros(n_str, bool) if entropy is None else np.asarray(entropy, bool)
    complete = complete | entropy
    lengths = np.array([len(s) for s in strings], np.int64)
    if (lengths < 1).any():
        raise ValueError("strings must be non-empty")
    log_prefix: list[np.ndarray] = [np.zeros(0)] * n_str
    log_string = np.full(n_str, -np.inf)
    deriv = np.full(n_str, np.nan)
    # Entropy strings go in their own batches (the expectation semiring doubles the work).
    for flag in (False, True):
        idx = np.flatnonzero(entropy == flag)
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        retry: list[int] = []
        for batch in _batches(idx, lengths):
            ok = _parse_into(
                tables,
                strings,
                batch,
                complete,
                flag,
                max_items,
                tables.log_scale,
                log_prefix,
                log_string,
                deriv,
            )
            retry.extend(batch[~ok].tolist())
        for i in retry:  # one at a time: the result depends on the string alone
            for delta in SCALE_LADDER[1:]:
                ok = _parse_into(
                    tables,
                    strings,
                    np.array([i]),
                    complete,
                    flag,
                    max_items,
                    tables.log_scale + delta,
                    log_prefix,
                    log_string,
                    deriv,
                )
                if ok[0]:
                    break
            else:
                raise FloorNumericsError(
                    f"grammar {tables.name}: the probabilities of a {lengths[i]}-token string "
                    f"leave float64 range at every scale tried (log c = default "
                    f"{tables.log_scale:.4g} + {SCALE_LADDER})"
                )
    return ParseResult(log_prefix, log_string, deriv)


def _batches(idx: np.ndarray, lengths: np.ndarray):
    """Consecutive groups of ``idx`` (sorted by length) of bounded positions x widths."""
    start = 0
    while start < len(idx):
        stop = start + 1
        total = lengths[idx[start]] + 1
        while stop < len(idx):
            w = lengths[idx[stop]]
            if (total + w + 1) * w > BATCH_POSITION_WIDTHS:
                break
            total += w + 1
            stop += 1
        yield idx[start:stop]
        start = stop


def _parse_into(tables, strings, batch, complete, track_u, max_items, log_scale, lp, ls, dl):
    """Parse one batch at one scale, store the accepted strings' results; return accepted."""
    out = _parse_batch(
        tables, [strings[i] for i in batch], complete[batch], track_u, max_items, log_scale
    )
    log_prefix, log_string, deriv, ok = out
    for r in np.flatnonzero(ok):
        i = batch[r]
        lp[i] = log_prefix[r]
        ls[i] = log_string[r]
        dl[i] = deriv[r] if track_u else np.nan
    return ok


def _parse_batch(tables, strings, complete, track_u, max_items, log_scale):
    t = tables
    k_count = t.n_nonterminals
    lengths = np.array([len(s) for s in strings], np.int64)
    n_seg = len(strings)
    offsets = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
    n_pos = int(offsets[-1] + lengths[-1] + 1)
    width_max = int(lengths.max())
    stride = width_max + 1
    tok = np.zeros(n_pos, np.int64)  # gap slots hold 0, which no production has as terminal
    seg_of = np.repeat(np.arange(n_seg), lengths + 1)
    for s, o in zip(strings, offsets, strict=True):
        tok[o : o + len(s)] = s
    seg_end = offsets + lengths
    limit = seg_end[seg_of] - np.arange(n_pos)  # widest span starting at each position
    inv_c = math.exp(-log_scale)
    items_per_seg = np.zeros(n_seg, np.int64)
    bad = np.zeros(n_seg, bool)  # a value of the string's chart left the safe range

    rowmap = np.full(n_pos * stride, -1, np.int64)  # (position, width) -> constituent row
    cv = _Buffer(k_count)
    cu = _Buffer(k_count) if track_u else None

    # active items whose next symbol is a nonterminal (all widths so far)
    a_start = np.zeros(0, np.int64)
    a_end = np.zeros(0, np.int64)
    a_next = np.zeros(0, np.int64)  # nonterminal index
    a_state = np.zeros(0, np.int64)
    a_v = np.zeros(0)
    a_u = np.zeros(0)
    # items of the previous width whose next symbol is a terminal
    p_start = np.zeros(0, np.int64)
    p_state = np.zeros(0, np.int64)
    p_v = np.zeros(0)
    p_u = np.zeros(0)
    # records for the forward pass
    rec_nt: list[tuple] = []  # (start, end, lhs, next nonterminal, v)
    rec_sc: list[tuple] = []  # (start, end, lhs, v) for scanned items (incl. completed)

    empty_i = np.zeros(0, np.int64)
    empty_f = np.zeros(0)
    for w in range(1, width_max + 1):
        new_start, new_state, new_v, new_u = [], [], [], []
        done_start, done_lhs, done_v, done_u = [], [], [], []

        if w == 1:  # (d) productions starting with the token
            pos = np.flatnonzero(tok > 0)
            a = np.minimum(tok[pos], len(t.t_ptr) - 2)
            lo, hi = t.t_ptr[a], t.t_ptr[a + 1]
            hi = np.where(tok[pos] > len(t.t_ptr) - 2, lo, hi)
            cnt = hi - lo
            e_pos = np.repeat(pos, cnt)
            e = np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))
            st, prob, lhs = t.t_state[e], t.t_prob[e], t.t_lhs[e]
            v = prob * inv_c
            u = -np.log(prob) * v if track_u else empty_f
            sc_start, sc_state, sc_lhs, sc_v, sc_u = e_pos, st, lhs, v, u
        else:  # (a) items of width w - 1 scanning the token at start + w - 1
            ok = tok[p_start + w - 1] == t.st_next[p_state]
            sc_start = p_start[ok]
            sc_state = t.st_succ[p_state[ok]]
            sc_lhs = t.st_lhs[p_state[ok]]
            sc_v = p_v[ok] * inv_c
            sc_u = p_u[ok] * inv_c if track_u else empty_f
        if len(sc_start):
            rec_sc.append((sc_start, sc_start + w, sc_lhs, sc_v))
            fin = sc_state < 0
            done_start.append(sc_start[fin])
            done_lhs.append(sc_lhs[fin])
            done_v.append(sc_v[fin])
            go = ~fin
            new_start.append(sc_start[go])
            new_state.append(sc_state[go])
            new_v.append(sc_v[go])
            if track_u:
                done_u.append(sc_u[fin])
                new_u.append(sc_u[go])

        # (b) items ending at l extended by a constituent (l, start + w) of their next symbol
        if len(a_start):
            alive = limit[a_start] >= w
            if not alive.all():
                a_start, a_end, a_next, a_state = (
                    a_start[alive],
                    a_end[alive],
                    a_next[alive],
                    a_state[alive],
                )
                a_v = a_v[alive]
                if track_u:
                    a_u = a_u[alive]
            row = rowmap[a_end * stride + (w - (a_end - a_start))]
            hit = np.flatnonzero(row >= 0)
            if len(hit):
                val = cv.data[row[hit], a_next[hit]]
                nz = val != 0
                hit, val = hit[nz], val[nz]
            if len(hit):
                x_start = a_start[hit]
                x_state = t.st_succ[a_state[hit]]
                x_lhs = t.st_lhs[a_state[hit]]
                x_v = a_v[hit] * val
                if track_u:
                    x_u = a_v[hit] * cu.data[row[hit], a_next[hit]] + a_u[hit] * val
                fin = x_state < 0
                done_start.append(x_start[fin])
                done_lhs.append(x_lhs[fin])
                done_v.append(x_v[fin])
                if track_u:
                    done_u.append(x_u[fin])
                go = ~fin
                # the same item (start, state) arises from several split points: merge
                key = x_start[go] * len(t.st_next) + x_state[go]
                order = np.argsort(key, kind="stable")
                key = key[order]
                first = np.flatnonzero(np.diff(key, prepend=-1))
                new_start.append(x_start[go][order][first])
                new_state.append(x_state[go][order][first])
                new_v.append(np.add.reduceat(x_v[go][order], first) if len(first) else empty_f)
                if track_u:
                    new_u.append(np.add.reduceat(x_u[go][order], first) if len(first) else empty_f)

        # constituents of width w: completed items, closed over unit productions
        if done_start and sum(len(d) for d in done_start):
            d_start = np.concatenate(done_start)
            d_lhs = np.concatenate(done_lhs)
            starts, row_idx = np.unique(d_start, return_inverse=True)
            flat = row_idx * k_count + d_lhs
            slab = np.bincount(flat, np.concatenate(done_v), len(starts) * k_count)
            slab = slab.reshape(len(starts), k_count)
            if track_u:
                slab_u = np.bincount(flat, np.concatenate(done_u), len(starts) * k_count)
                slab_u = slab_u.reshape(len(starts), k_count)
            if t.has_units:
                if track_u:
                    slab_u = slab_u @ t.unit_closure.T + slab @ t.unit_entropy.T
                slab = slab @ t.unit_closure.T
            _track(
                bad,
                seg_of[starts],
                slab.max(axis=1),
                slab.min(axis=1, initial=np.inf, where=slab > 0),
            )
            base = cv.append(slab)
            if track_u:
                cu.append(slab_u)
            rowmap[starts * stride + w] = base + np.arange(len(starts))
            # (c) productions whose first symbol is a constituent of width w
            r_nz, y_nz = np.nonzero(slab)
            if len(r_nz):
                lo, hi = t.n_ptr[y_nz], t.n_ptr[y_nz + 1]
                cnt = hi - lo
                e = np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))
                rr = np.repeat(r_nz, cnt)
                yy = np.repeat(y_nz, cnt)
                cval = slab[rr, yy]
                prob = t.n_prob[e]
                new_start.append(starts[rr])
                new_state.append(t.n_state[e])
                new_v.append(prob * cval)
                if track_u:
                    new_u.append(prob * slab_u[rr, yy] - np.log(prob) * prob * cval)

        if new_start:
            l_start = np.concatenate(new_start)
            l_state = np.concatenate(new_state)
            l_v = np.concatenate(new_v)
            l_u = np.concatenate(new_u) if track_u else empty_f
        else:
            l_start, l_state, l_v, l_u = empty_i, empty_i, empty_f, empty_f
        if len(l_start):
            _track(bad, seg_of[l_start], l_v, l_v)
            items_per_seg += np.bincount(seg_of[l_start], minlength=n_seg)
            if items_per_seg.max() > max_items:
                bad = int(np.argmax(items_per_seg))
                raise ChartLimitError(
                    f"grammar {t.name}: the chart of a {lengths[bad]}-token string passed "
                    f"{max_items} items at span width {w} (the grammar is too ambiguous for "
                    "exact parsing within the cap); raise max_items to allow more work"
                )
        nxt = t.st_next[l_state]
        is_nt = nxt < 0
        p_start, p_state, p_v = l_start[~is_nt], l_state[~is_nt], l_v[~is_nt]
        if track_u:
            p_u = l_u[~is_nt]
        if is_nt.any():
            n_start, n_state = l_start[is_nt], l_state[is_nt]
            n_next = -nxt[is_nt] - 1
            n_v = l_v[is_nt]
            rec_nt.append((n_start, n_start + w, t.st_lhs[n_state], n_next, n_v))
            a_start = np.concatenate([a_start, n_start])
            a_end = np.concatenate([a_end, n_start + w])
            a_next = np.concatenate([a_next, n_next])
            a_state = np.concatenate([a_state, n_state])
            a_v = np.concatenate([a_v, n_v])
            if track_u:
                a_u = np.concatenate([a_u, l_u[is_nt]])

    # string probabilities (scaled) of complete strings
    inside = np.zeros(n_seg)
    u_inside = np.zeros(n_seg)
    row = rowmap[offsets * stride + lengths]
    has = (row >= 0) & complete
    inside[has] = cv.data[row[has], t.start]
    if track_u:
        u_inside[has] = cu.data[row[has], t.start]

    prefix, pi = _forward(t, rec_nt, rec_sc, offsets, seg_of, n_pos, width_max)
    _track(bad, seg_of, pi.max(axis=1), pi.min(axis=1, initial=np.inf, where=pi > 0))
    _track(bad, seg_of, prefix, np.where(prefix > 0, prefix, np.inf))
    _track(bad, np.arange(n_seg), inside, np.where(inside > 0, inside, np.inf))

    log_c = log_scale
    log_prefix = []
    ok = ~bad
    for s in range(n_seg):
        pre = prefix[offsets[s] : offsets[s] + lengths[s] + 1]
        with np.errstate(divide="ignore"):
            log_prefix.append(np.log(pre) + log_c * np.arange(lengths[s] + 1))
    with np.errstate(divide="ignore"):
        log_string = np.where(complete, np.log(inside) + log_c * lengths, -np.inf)
    deriv = np.divide(u_inside, inside, out=np.full(n_seg, np.nan), where=inside > 0)
    return log_prefix, log_string, deriv, ok


def _track(bad: np.ndarray, seg: np.ndarray, high: np.ndarray, low: np.ndarray) -> None:
    """Mark strings with a value above SAFE_MAX (or nan) in ``high`` or below SAFE_MIN in
    ``low`` (positive values only: pass inf for structural zeros); cheap when all is well."""
    if not len(high):
        return
    if high.max() <= SAFE_MAX and low.min() >= SAFE_MIN:
        return
    out = ~(high <= SAFE_MAX) | ~(low >= SAFE_MIN)
    bad[seg[out]] = True


def _forward(t, rec_nt, rec_sc, offsets, seg_of, n_pos, width_max):
    """Prediction weights pi left to right, and the (scaled) prefix probability per position."""
    k_count = t.n_nonterminals

    def cat(recs, n):
        if not recs:
            return [np.zeros(0, np.int64)] * (n - 1) + [np.zeros(0)]
        return [np.concatenate([r[i] for r in recs]) for i in range(n)]

    nt_start, nt_end, nt_lhs, nt_next, nt_v = cat(rec_nt, 5)
    sc_start, sc_end, sc_lhs, sc_v = cat(rec_sc, 4)
    nt_rel = nt_end - offsets[seg_of[nt_end]] if len(nt_end) else nt_end
    sc_rel = sc_end - offsets[seg_of[sc_end]] if len(sc_end) else sc_end
    nt_order = np.argsort(nt_rel, kind="stable")
    sc_order = np.argsort(sc_rel, kind="stable")
    nt_bounds = np.searchsorted(nt_rel[nt_order], np.arange(width_max + 2))
    sc_bounds = np.searchsorted(sc_rel[sc_order], np.arange(width_max + 2))

    pi = np.zeros((n_pos, k_count))
    pi[offsets] = t.left_closure[t.start]
    prefix = np.zeros(n_pos)
    prefix[offsets] = 1.0
    acc = np.zeros((n_pos, k_count))
    pi_flat, acc_flat = pi.ravel(), acc.ravel()
    for j in range(1, width_max + 1):
        sel = sc_order[sc_bounds[j] : sc_bounds[j + 1]]
        if len(sel):
            contrib = pi_flat[sc_start[sel] * k_count + sc_lhs[sel]] * sc_v[sel]
            np.add.at(prefix, sc_end[sel], contrib)
        sel = nt_order[nt_bounds[j] : nt_bounds[j + 1]]
        if len(sel):
            ends = nt_end[sel]
            contrib = pi_flat[nt_start[sel] * k_count + nt_lhs[sel]] * nt_v[sel]
            np.add.at(acc_flat, ends * k_count + nt_next[sel], contrib)
            rows = np.unique(ends)
            pi[rows] = acc[rows] @ t.left_closure
    return prefix, pi
