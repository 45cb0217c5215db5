"""A PCFG compiled once into flat numpy arrays, plus the facts about it that decide
whether (and how) it can be sampled.

Symbols are int32: terminals are their token ids (>= 1), the separator is 0, and
nonterminal k is ``-(k + 1)``. Productions are grouped by left-hand side; each block carries a Walker
alias table, so one vectorised lookup picks productions for every nonterminal of every
sentential form at once.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass

import numpy as np

from gzipscale.helpers import UserError

SEPARATOR = 0


class GrammarError(UserError, ValueError):
    """A grammar that cannot be compiled or sampled; the message names the grammar."""


@dataclass(frozen=True)
class CompiledGrammar:
    name: str
    nonterminal_names: tuple[str, ...]
    start: int  # nonterminal index of the start symbol
    prod_lhs: np.ndarray  # (P,) int64
    prod_prob: np.ndarray  # (P,) float64, normalised per lhs
    first_prod: np.ndarray  # (K,) int64
    last_prod: np.ndarray  # (K,) int64 (inclusive)
    rhs_offset: np.ndarray  # (P,) int64 into rhs_symbols
    rhs_len: np.ndarray  # (P,) int64, always >= 1
    rhs_symbols: np.ndarray  # (sum rhs_len,) int32
    max_terminal: int
    alias_threshold: np.ndarray  # (P,) float64, Walker alias table per lhs block
    alias_target: np.ndarray  # (P,) int64, global production index
    prods_per_nonterminal: np.ndarray  # (K,) int64
    conditioned_on_finite: bool = False

    @property
    def start_symbol(self) -> int:
        return -(self.start + 1)

    @property
    def n_nonterminals(self) -> int:
        return len(self.nonterminal_names)

    # -- analysis ---------------------------------------------------------------------

    def reachable(self) -> np.ndarray:
        """Boolean mask of nonterminals reachable from the start symbol."""
        seen = np.zeros(self.n_nonterminals, bool)
        seen[self.start] = True
        frontier = [self.start]
        while frontier:
            k = frontier.pop()
            for j in range(self.first_prod[k], self.last_prod[k] + 1):
                rhs = self.rhs_symbols[self.rhs_offset[j] : self.rhs_offset[j] + self.rhs_len[j]]
                for s in rhs[rhs < 0]:
                    child = -int(s) - 1
                    if not seen[child]:
                        seen[child] = True
                        frontier.append(child)
        return seen

    def left_resolvable(self) -> np.ndarray:
        """Nonterminals whose leftmost symbol can become a terminal.

        The leftmost symbol of a sentential form follows a finite Markov chain over
        nonterminals; if every reachable state can reach a terminal, the chain is absorbed
        with probability 1 and geometric tails, so every position of a document resolves.
        """
        first = self.rhs_symbols[self.rhs_offset]
        ok = np.zeros(self.n_nonterminals, bool)
        while True:
            first_ok = np.where(first >= 0, True, ok[np.maximum(-first - 1, 0)])
            new = np.zeros_like(ok)
            np.logical_or.at(new, self.prod_lhs, first_ok)
            if np.array_equal(new, ok):
                return ok
            ok = new

    def mean_matrix(self) -> np.ndarray:
        """M[k, j] = expected number of nonterminal j in one rewrite of nonterminal k."""
        k_count = self.n_nonterminals
        m = np.zeros((k_count, k_count))
        owner = np.repeat(np.arange(len(self.rhs_len)), self.rhs_len)
        nt = self.rhs_symbols < 0
        np.add.at(
            m,
            (self.prod_lhs[owner[nt]], -self.rhs_symbols[nt] - 1),
            self.prod_prob[owner[nt]],
        )
        return m

    @functools.cached_property
    def growth_rate(self) -> float:
        """``spectral_radius()``, computed once."""
        return self.spectral_radius()

    def spectral_radius(self) -> float:
        """Growth rate of the derivation tree: < 1 subcritical, > 1 supercritical."""
        mask = self.reachable()
        m = self.mean_matrix()[np.ix_(mask, mask)]
        return float(np.max(np.abs(np.linalg.eigvals(m)))) if m.size else 0.0

    def finite_probabilities(self, max_iter: int = 100_000, tol: float = 1e-15) -> np.ndarray:
        """q[k] = probability that a derivation from nonterminal k is finite.

        The minimal fixed point of q = F(q), reached by iterating from q = 0 (standard for
        multi-type branching processes). Near criticality convergence is slow, hence the
        generous iteration cap.
        """
        q = np.zeros(self.n_nonterminals)
        nt_pos = self.rhs_symbols < 0
        idx = np.where(nt_pos, -self.rhs_symbols - 1, 0)
        for _ in range(max_iter):
            factors = np.where(nt_pos, q[idx], 1.0)
            per_prod = np.multiply.reduceat(factors, self.rhs_offset)
            new = np.zeros_like(q)
            np.add.at(new, self.prod_lhs, self.prod_prob * per_prod)
            if np.max(np.abs(new - q)) < tol:
                return new
            q = new
        return q

    def conditioned(self) -> CompiledGrammar:
        """The same grammar conditioned on finite sentences (Doob h-transform).

        p'(k -> rhs) = p(k -> rhs) * prod_{s in rhs} q[s] / q[k]. Sampling the reweighted
        grammar is exactly sampling the original one and rejecting infinite sentences,
        which is what the reference sampler approximates by re-drawing on RecursionError.
        """
        q = self.finite_probabilities()
        if np.all(q[self.reachable()] > 1 - 1e-12):
            # Every sentence is finite: conditioning changes nothing; keep the exact weights.
            return dataclasses.replace(self, conditioned_on_finite=True)
        if q[self.start] <= 0:
            raise GrammarError(
                f"grammar {self.name}: no sentence is finite (P(finite) = 0), "
                "so it cannot be conditioned on finite sentences; use sampler 'prefix'"
            )
        nt_pos = self.rhs_symbols < 0
        factors = np.where(nt_pos, q[np.where(nt_pos, -self.rhs_symbols - 1, 0)], 1.0)
        per_prod = np.multiply.reduceat(factors, self.rhs_offset)
        weights = self.prod_prob * per_prod
        return _with_probabilities(self, weights, conditioned=True)


def _alias_tables(prob: np.ndarray, first: np.ndarray, last: np.ndarray):
    """Walker/Vose alias tables, one per lhs block, stored in the blocks' own slots.

    Drawing production i = floor(u * n) of a block and keeping it when the fractional part
    of u * n is below ``threshold[i]`` (else taking ``target[i]``) picks production j with
    probability exactly prob[j], in O(1) per draw. It replaces a binary search over all
    productions, which dominated the run time on large grammars (cache misses).
    """
    threshold = np.ones_like(prob)
    target = np.arange(len(prob), dtype=np.int64)
    for k in range(len(first)):
        lo, hi = int(first[k]), int(last[k]) + 1
        n = hi - lo
        if n <= 1:
            continue
        total = prob[lo:hi].sum()
        scaled = (prob[lo:hi] / total * n) if total > 0 else np.ones(n)
        small = [i for i in range(n) if scaled[i] < 1.0]
        large = [i for i in range(n) if scaled[i] >= 1.0]
        while small and large:
            s_i, l_i = small.pop(), large.pop()
            threshold[lo + s_i] = scaled[s_i]
            target[lo + s_i] = lo + l_i
            scaled[l_i] -= 1.0 - scaled[s_i]
            (small if scaled[l_i] < 1.0 else large).append(l_i)
        for i in small + large:  # leftovers are 1 up to rounding
            threshold[lo + i] = 1.0
    return threshold, target


def _with_probabilities(g: CompiledGrammar, weights: np.ndarray, conditioned: bool):
    totals = np.zeros(g.n_nonterminals)
    np.add.at(totals, g.prod_lhs, weights)
    safe = np.where(totals[g.prod_lhs] > 0, totals[g.prod_lhs], 1.0)
    prob = weights / safe
    threshold, target = _alias_tables(prob, g.first_prod, g.last_prod)
    return CompiledGrammar(
        name=g.name,
        nonterminal_names=g.nonterminal_names,
        start=g.start,
        prod_lhs=g.prod_lhs,
        prod_prob=prob,
        first_prod=g.first_prod,
        last_prod=g.last_prod,
        rhs_offset=g.rhs_offset,
        rhs_len=g.rhs_len,
        rhs_symbols=g.rhs_symbols,
        max_terminal=g.max_terminal,
        alias_threshold=threshold,
        alias_target=target,
        prods_per_nonterminal=g.last_prod - g.first_prod + 1,
        conditioned_on_finite=conditioned,
    )


def inline_start_units(g: CompiledGrammar) -> CompiledGrammar:
    """The same language with the start symbol's unit productions composed away.

    ``S -> B [p]`` followed by ``B -> rhs [q]`` becomes ``S -> rhs [p q]``: every sentence
    then needs one tree level fewer, and the yield distribution is unchanged. The random
    grammars' start symbol has only such productions (S -> N_i, uniformly), and for short
    sentences that level is a third of the sampler's work.
    """
    k0 = g.start
    rows: list[tuple[float, np.ndarray]] = []  # the start block, composed
    changed = False
    for j in range(g.first_prod[k0], g.last_prod[k0] + 1):
        rhs = g.rhs_symbols[g.rhs_offset[j] : g.rhs_offset[j] + g.rhs_len[j]]
        child = -int(rhs[0]) - 1 if len(rhs) == 1 and rhs[0] < 0 else -1
        if child < 0 or child == k0:
            rows.append((g.prod_prob[j], rhs))
            continue
        changed = True
        for m in range(g.first_prod[child], g.last_prod[child] + 1):
            sub = g.rhs_symbols[g.rhs_offset[m] : g.rhs_offset[m] + g.rhs_len[m]]
            rows.append((g.prod_prob[j] * g.prod_prob[m], sub))
    if not changed:
        return g
    keep = g.prod_lhs != k0
    lhs = np.concatenate([np.full(len(rows), k0), g.prod_lhs[keep]]).astype(np.int64)
    order = np.argsort(lhs, kind="stable")  # blocks stay grouped by lhs
    prob = np.concatenate([[p for p, _ in rows], g.prod_prob[keep]])[order]
    rhs_list = [r for _, r in rows] + [
        g.rhs_symbols[g.rhs_offset[j] : g.rhs_offset[j] + g.rhs_len[j]]
        for j in np.flatnonzero(keep)
    ]
    rhs_list = [rhs_list[i] for i in order]
    lhs = lhs[order]
    rhs_len = np.array([len(r) for r in rhs_list], np.int64)
    counts = np.bincount(lhs, minlength=g.n_nonterminals)
    last = np.cumsum(counts) - 1
    composed = dataclasses.replace(
        g,
        prod_lhs=lhs,
        prod_prob=prob,
        first_prod=last - counts + 1,
        last_prod=last,
        rhs_offset=np.concatenate([[0], np.cumsum(rhs_len)[:-1]]).astype(np.int64),
        rhs_len=rhs_len,
        rhs_symbols=np.concatenate(rhs_list).astype(np.int32),
    )
    return _with_probabilities(composed, prob, conditioned=g.conditioned_on_finite)


def terminal_id(symbol: str, grammar_name: str) -> int:
    try:
        value = int(symbol)
    except ValueError:
        value = -1
    if value < 1 or str(value) != symbol:
        raise GrammarError(
            f"grammar {grammar_name}: terminal {symbol!r} is not a token id; terminals must be "
            "the integers 1..T written as quoted strings ('1', '2', ...); 0 is the separator"
        )
    return value


Row = tuple[str, tuple[str, ...], float]  # (lhs, rhs, probability); terminals quoted


def nltk_rows(grammar) -> list[Row]:
    """An NLTK PCFG as rows, the start symbol's productions first."""
    start = grammar.start()
    ordered = grammar.productions(lhs=start) + [
        p for p in grammar.productions() if p.lhs() != start
    ]
    return [
        (
            str(p.lhs()),
            tuple(f"'{s}'" if isinstance(s, str) else str(s) for s in p.rhs()),
            p.prob(),
        )
        for p in ordered
    ]


_LINE = re.compile(r"^\s*(\S+)\s*->\s*(.*?)\s*\[\s*([0-9.]+)\s*\]\s*$")


def parse_grammar_text(text: str, name: str = "grammar") -> list[Row]:
    """Parse grammar text into rows.

    The one-production-per-line form written by ``productions_to_text`` is parsed
    directly (NLTK's reader takes seconds on grammars with 10^4 productions); anything
    else (``|`` alternatives, comments) goes through ``nltk.PCFG.fromstring``.
    """
    rows: list[Row] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None or "|" in line or "#" in line:
            import nltk  # lazily: slow to import, and only needed for general grammar text

            return nltk_rows(nltk.PCFG.fromstring(text))
        lhs, rhs, prob = match.groups()
        rows.append((lhs, tuple(rhs.split()), float(prob)))
    if not rows:
        raise GrammarError(f"grammar {name}: the grammar text has no productions")
    return rows


def compile_grammar(source, name: str = "grammar") -> CompiledGrammar:
    """Compile a grammar (NLTK PCFG, grammar text or rows) whose terminals are '1'..'T'.

    The first row's left-hand side is the start symbol, as in NLTK's grammar text.
    """
    if hasattr(source, "productions"):  # an nltk.PCFG
        rows = nltk_rows(source)
    elif isinstance(source, str):
        rows = parse_grammar_text(source, name)
    else:
        rows = list(source)

    names: list[str] = []
    index: dict[str, int] = {}
    for lhs, _, _ in rows:
        if lhs not in index:
            index[lhs] = len(names)
            names.append(lhs)
    by_lhs: list[list[Row]] = [[] for _ in names]
    for row in rows:
        by_lhs[index[row[0]]].append(row)

    prod_lhs, prob, rhs_len, rhs_symbols = [], [], [], []
    first = np.zeros(len(names), np.int64)
    last = np.zeros(len(names), np.int64)
    for k, prods in enumerate(by_lhs):
        first[k] = len(prod_lhs)
        for lhs, rhs, p in prods:
            if len(rhs) == 0:
                raise GrammarError(
                    f"grammar {name}: empty right-hand side for {lhs} (epsilon productions "
                    "are not supported: every symbol must produce at least one token)"
                )
            for s in rhs:
                if s[0] in "'\"":
                    rhs_symbols.append(terminal_id(s[1:-1], name))
                elif s in index:
                    rhs_symbols.append(-(index[s] + 1))
                else:
                    raise GrammarError(
                        f"grammar {name}: nonterminal {s} appears on a right-hand side "
                        "but has no productions"
                    )
            prod_lhs.append(k)
            prob.append(p)
            rhs_len.append(len(rhs))
        last[k] = len(prod_lhs) - 1

    prod_lhs_a = np.asarray(prod_lhs, np.int64)
    prob_a = np.asarray(prob, np.float64)
    rhs_len_a = np.asarray(rhs_len, np.int64)
    rhs_offset = np.concatenate([[0], np.cumsum(rhs_len_a)[:-1]]).astype(np.int64)
    rhs_symbols_a = np.asarray(rhs_symbols, np.int32)
    base = CompiledGrammar(
        name=name,
        nonterminal_names=tuple(names),
        start=0,
        prod_lhs=prod_lhs_a,
        prod_prob=prob_a,
        first_prod=first,
        last_prod=last,
        rhs_offset=rhs_offset,
        rhs_len=rhs_len_a,
        rhs_symbols=rhs_symbols_a,
        max_terminal=int(rhs_symbols_a.max(initial=0)),
        alias_threshold=np.zeros(0),
        alias_target=np.zeros(0, np.int64),
        prods_per_nonterminal=last - first + 1,
    )
    return _with_probabilities(base, prob_a, conditioned=False)


def check_prefix_sampleable(g: CompiledGrammar) -> None:
    """Refuse grammars where some reachable position could never become a token."""
    stuck = g.reachable() & ~g.left_resolvable()
    if stuck.any():
        names = ", ".join(np.asarray(g.nonterminal_names)[stuck][:10])
        raise GrammarError(
            f"grammar {g.name}: nonterminal(s) {names} can never produce their first token "
            "(every production starts with a nonterminal of this set: a left-recursive or "
            "unit-production cycle with no exit), so documents cannot be completed. "
            "Use the 'finite' sampler, which conditions on finite sentences as the "
            "reference sampler does, or another seed."
        )
