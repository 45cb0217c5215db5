"""Fast, exact sampling of fixed-length token documents from a compiled PCFG.

A document is the first ``context_length`` (L) tokens of ``s1 0 s2 0 s3 0 ...`` where the
sentences s_i are independent draws from the grammar: sentences joined by the separator 0
and the one that does not fit cut to the space left (as in Pandey 2024). Each document
starts with a fresh sentence, so documents are windows of one long sentence stream.

How sentences are drawn, without Python recursion:

1. Tree phase. A chunk of sentences grows level by level: one vectorised step picks a
   production for every nonterminal of the level (Walker alias tables) and lays out the
   children, in left-to-right order, as the next level. Work is proportional to the
   number of tree nodes, which is about the number of tokens.
2. Layout. Yield sizes bottom-up and positions top-down give every leaf its place in its
   sentence; leaves at position >= L are dropped. That cut is exact because no
   production is empty: a symbol at position >= L only yields tokens at positions >= L,
   and no document reads past L tokens of a sentence.
3. Form phase, for sentences that grew past L symbols (long or infinite ones: the
   grammar is supercritical) or too deep. Their sentential forms, cut to L symbols, are
   rewritten in parallel rounds, each row cut back to L symbols every round, so a round
   costs O(L) per unfinished sentence whatever the grammar's growth rate; positions left
   of a row's first nonterminal are final and skipped.

Expanding breadth-first, and switching a sentence from phase 1 to phase 3 by a rule
that looks only at its own partial tree, do not change its distribution: in a PCFG every
nonterminal occurrence picks its production independently of the others.

Two modes:
- ``prefix`` (default): the grammar as written. On grammars whose sentences are finite
  this is distributed exactly like drawing each sentence in full with the reference
  sampler (PyPI ``pcfg``) and cutting. On supercritical grammars the reference re-draws
  sentences that hit Python's recursion limit; this mode yields the document prefix
  instead (the one intended difference).
- ``finite``: the grammar conditioned on finite sentences (see
  ``CompiledGrammar.conditioned``), which is what the reference's re-drawing converges to
  when its recursion limit is deep enough. Identical to ``prefix`` when P(finite) = 1.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from gzipscale.vocabulary import DEFAULT_CONTEXT_LENGTH, SAMPLER_MODES

from .compiled import (
    SEPARATOR,
    CompiledGrammar,
    GrammarError,
    check_prefix_sampleable,
    inline_start_units,
)
from .compiled import compile_grammar as _compile

# Rounds are cheap once few documents remain; this cap only triggers for grammars whose
# leftmost derivations almost never reach a terminal (or never do).
DEFAULT_MAX_ROUNDS = 20_000


class SamplingBoundError(GrammarError):
    """The round bound was hit; the grammar almost never finishes a token."""


@lru_cache(maxsize=32)
def compiled_for(grammar_text: str, mode: str = "prefix", name: str = "grammar") -> CompiledGrammar:
    """Parse and compile a grammar text once per process (workers call this per block)."""
    if mode not in SAMPLER_MODES:
        raise ValueError(f"sampler mode must be one of {', '.join(SAMPLER_MODES)}, got {mode!r}")
    g = _compile(grammar_text, name=name)
    if mode == "finite":
        g = g.conditioned()
    else:
        check_prefix_sampleable(g)
    return inline_start_units(g)


def sample_documents(
    grammar: CompiledGrammar,
    n_docs: int,
    rng: np.random.Generator,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
) -> np.ndarray:
    """Sample ``n_docs`` documents, an ``(n_docs, context_length)`` int32 array.

    The result depends only on the grammar, ``n_docs``, ``context_length`` and the state
    of ``rng``; callers that need results independent of batching seed one generator per
    fixed-size block of documents.
    """
    length = int(context_length)
    if length < 1:
        raise ValueError(f"context_length must be a positive integer, got {context_length}")
    out = np.empty((n_docs, length), np.int32)
    made = 0
    stream = np.zeros(0, np.int32)  # unused sentences, each followed by its separator
    starts = np.zeros(0, np.int64)  # where each unused sentence begins in `stream`
    # Sentences per document, re-estimated from what was consumed. Start low: on
    # supercritical grammars one sentence usually fills a document, and every surplus
    # sentence costs up to L symbols of work.
    per_doc = 1.0
    while made < n_docs:
        need = n_docs - made
        chunk = int(min(max(64, np.ceil(need * per_doc * 1.1)), 1 << 14))
        piece, lengths = sample_sentences(grammar, chunk, rng, length, max_rounds)
        starts = np.concatenate([starts, len(stream) + np.cumsum(lengths + 1) - (lengths + 1)])
        stream = np.concatenate([stream, piece])

        # A document is the L-token window from a sentence's start; the next document
        # starts at the first sentence that begins at or after the window's end.
        following = np.searchsorted(starts, starts + length, side="left").tolist()
        fits = (starts + length <= len(stream)).tolist()
        doc_starts, i = [], 0
        while made + len(doc_starts) < n_docs and i < len(starts) and fits[i]:
            doc_starts.append(int(starts[i]))
            i = following[i]
        if doc_starts:
            window = np.asarray(doc_starts)[:, None] + np.arange(length)
            out[made : made + len(doc_starts)] = stream[window]
            made += len(doc_starts)
            per_doc = max(i / len(doc_starts), 1.0)
        else:
            per_doc *= 2  # not one document yet: sentences are long, draw more at once
        if i < len(starts):
            base = int(starts[i])
            stream, starts = stream[base:], starts[i:] - base
        else:
            stream, starts = stream[:0], starts[:0]
    return out


def _choose(grammar: CompiledGrammar, nonterminals: np.ndarray, rng: np.random.Generator):
    """One production index per nonterminal index, by the alias tables."""
    n_prods = grammar.prods_per_nonterminal[nonterminals]
    # u < 1 - 2**-53, so u * n rounds to at most the float below n: slot <= n - 1.
    scaled = rng.random(len(nonterminals)) * n_prods
    slot = scaled.astype(np.int64)
    prod = grammar.first_prod[nonterminals] + slot
    return np.where(scaled - slot < grammar.alias_threshold[prod], prod, grammar.alias_target[prod])


# A sentence leaves the tree phase after this many levels (a long unit-production chain,
# say); the form phase finishes it with the same distribution.
MAX_TREE_LEVELS = 512
# A sentence whose sentential form reaches FREEZE_FACTOR * cap symbols moves to the form
# phase (only its first cap tokens matter, and the tree phase cannot cut it). Long finite
# sentences are cheaper to finish as trees; on supercritical grammars a sentence that
# reaches cap symbols usually keeps growing geometrically, so it moves at cap.
FREEZE_FACTOR = 4


def sample_sentences(
    grammar: CompiledGrammar,
    n: int,
    rng: np.random.Generator,
    cap: int = DEFAULT_CONTEXT_LENGTH,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` sentences, each cut to its first ``cap`` tokens.

    Returns ``(stream, lengths)``: the sentences end to end, each followed by the
    separator 0 (int32), and each sentence's length after the cut (``cap`` for sentences
    at least that long).
    """
    rhs_len = grammar.rhs_len.astype(np.int32)
    freeze_at = cap * (1 if grammar.growth_rate >= 1 else FREEZE_FACTOR)
    # Tree phase: level arrays of symbols and sentence ids, left to right.
    level_sym = [np.full(n, grammar.start_symbol, np.int32)]
    level_sent = [np.arange(n, dtype=np.int32)]
    expanded = []  # per level: indices of the nodes that were expanded
    child_counts = []  # per level: number of children of each expanded node
    child_first = []  # per level: index of each expanded node's first child
    frontier = np.ones(n, np.int64)  # symbols in each sentence's current sentential form
    frozen = np.zeros(n, bool)  # handed to the form phase
    any_frozen = False
    for _ in range(MAX_TREE_LEVELS):
        sym, sent = level_sym[-1], level_sent[-1]
        expandable = sym < 0
        if any_frozen:
            expandable &= ~frozen[sent]
        idx = np.flatnonzero(expandable)
        if idx.size == 0:
            break
        prod = _choose(grammar, -1 - sym[idx], rng)
        counts = rhs_len[prod]
        first = np.cumsum(counts, dtype=np.int32)
        total = int(first[-1])
        first -= counts
        # child c of production p is rhs_symbols[rhs_offset[p] + (c - first[p])]
        where = np.repeat(grammar.rhs_offset[prod] - first, counts)
        where += np.arange(total)
        parent_sent = sent[idx]
        expanded.append(idx)
        child_counts.append(counts)
        child_first.append(first)
        level_sym.append(grammar.rhs_symbols[where])
        level_sent.append(np.repeat(parent_sent, counts))
        # Sentence ids are sorted along a level, so per-sentence growth is a reduceat.
        seg = np.flatnonzero(np.diff(parent_sent, prepend=-1))
        touched = parent_sent[seg]
        frontier[touched] += np.add.reduceat(counts - 1, seg)
        grown = touched[frontier[touched] >= freeze_at]
        if grown.size:
            frozen[grown] = True
            any_frozen = True
    else:
        sym, sent = level_sym[-1], level_sent[-1]
        frozen[sent[sym < 0]] = True
        any_frozen = bool(frozen.any())

    # Layout: yield sizes bottom-up (unexpanded nonterminals count 1), then positions.
    sizes = [np.ones(len(s), np.int32) for s in level_sym]
    for t in range(len(expanded) - 1, -1, -1):
        sizes[t][expanded[t]] = np.add.reduceat(sizes[t + 1], child_first[t])
    positions = [np.zeros(n, np.int32)]
    for t in range(len(expanded)):
        before = np.cumsum(sizes[t + 1], dtype=np.int32)
        before -= sizes[t + 1]
        before += np.repeat(positions[t][expanded[t]] - before[child_first[t]], child_counts[t])
        positions.append(before)
    lengths = np.minimum(sizes[0], cap).astype(np.int64)

    # Form phase for sentences that still hold nonterminals; their final lengths are
    # needed before the stream can be laid out.
    rows = None
    if any_frozen:
        todo = np.flatnonzero(frozen)
        row_of = np.full(n, -1, np.int64)
        row_of[todo] = np.arange(len(todo))
        rows = np.zeros((len(todo), cap), np.int32)
        for t in range(len(level_sym)):
            pos, sent = positions[t], level_sent[t]
            pick = (row_of[sent] >= 0) & (pos < cap)
            rows[row_of[sent[pick]], pos[pick]] = level_sym[t][pick]
        rows, row_len = _finish_forms(grammar, rows, lengths[todo].copy(), rng, max_rounds)
        lengths[todo] = row_len

    # Lay the sentences out end to end, each followed by a separator (the zeros that are
    # never written). An inner node sits where its first child does, so writing level by
    # level lets the deeper levels overwrite it and only the leaves remain.
    starts = np.cumsum(lengths + 1) - (lengths + 1)
    stream = np.zeros(int(starts[-1] + lengths[-1] + 1), np.int32)
    for t in range(len(level_sym)):
        pos, sent, sym = positions[t], level_sent[t], level_sym[t]
        if int(pos.max()) >= cap:
            inside = pos < cap
            pos, sent, sym = pos[inside], sent[inside], sym[inside]
        stream[starts[sent] + pos] = sym
    if rows is not None:
        mask = np.arange(cap) < lengths[todo][:, None]
        stream[(starts[todo][:, None] + np.arange(cap))[mask]] = rows[mask]
    return stream, lengths


def _finish_forms(grammar, rows, row_len, rng, max_rounds):
    """Rewrite sentential forms (rows, cut to ``cap`` = rows.shape[1]) until all terminal."""
    cap = rows.shape[1]
    out_rows, out_len = rows, row_len
    active = np.arange(len(rows))
    form, length = rows.copy(), row_len.copy()
    for _ in range(max_rounds):
        is_nt = form < 0
        pending = is_nt.any(axis=1)
        if not pending.all():
            done = ~pending
            out_rows[active[done]] = form[done]
            out_len[active[done]] = length[done]
            form, length, active, is_nt = (
                form[pending],
                length[pending],
                active[pending],
                is_nt[pending],
            )
        m = len(active)
        if m == 0:
            return out_rows, out_len

        # Work on each row from its first nonterminal to its end; the rest is final.
        first_nt = np.argmax(is_nt, axis=1)
        widths = length - first_nt
        slots = np.arange(int(widths.sum())) - np.repeat(np.cumsum(widths) - widths, widths)
        slots += np.repeat(np.arange(m) * cap + first_nt, widths)
        flat = form.ravel()
        work = flat[slots]
        nt_at = np.flatnonzero(work < 0)
        prod = _choose(grammar, -work[nt_at].astype(np.int64) - 1, rng)

        sizes = np.ones(len(work), np.int64)
        sizes[nt_at] = grammar.rhs_len[prod]
        start = np.cumsum(sizes) - sizes
        row_first = np.cumsum(widths) - widths
        start -= np.repeat(start[row_first], widths)  # position inside the row's region
        room = np.repeat(cap - first_nt, widths)
        emit = np.clip(room - start, 0, sizes)

        src = np.repeat(np.arange(len(work)), emit)
        within = np.arange(len(src)) - np.repeat(np.cumsum(emit) - emit, emit)
        new = work[src]
        rhs_base = np.full(len(work), -1, np.int64)
        rhs_base[nt_at] = grammar.rhs_offset[prod]
        base = rhs_base[src]
        from_rule = base >= 0
        new[from_rule] = grammar.rhs_symbols[base[from_rule] + within[from_rule]]
        dest_row_start = np.repeat(np.arange(m) * cap + first_nt, widths)
        flat[np.repeat(dest_row_start + start, emit) + within] = new
        length = first_nt + np.minimum(cap - first_nt, np.add.reduceat(sizes, row_first))

    raise SamplingBoundError(
        f"grammar {grammar.name}: {len(active)} sentences still had unexpanded nonterminals "
        f"after {max_rounds} rounds; its leftmost derivations almost never reach a terminal. "
        "Use the 'finite' sampler or another seed."
    )


def complete_sentence_lengths(documents: np.ndarray) -> np.ndarray:
    """Lengths of every sentence that ends inside its document (the cut ones are excluded)."""
    lengths = []
    for doc in documents:
        cuts = np.flatnonzero(doc == SEPARATOR)
        if len(cuts):
            lengths.append(np.diff(np.concatenate([[-1], cuts])) - 1)
    return np.concatenate(lengths) if lengths else np.zeros(0, np.int64)


def assemble_documents(sentences, n_docs: int, context_length: int = DEFAULT_CONTEXT_LENGTH):
    """Build documents from an iterator of full sentences (token-id sequences).

    The reference path: each document starts with a fresh sentence; sentences are
    followed by the separator; the sentence that does not fit is cut and the rest of it
    discarded. Used to compare the fast sampler with the reference sampler.
    """
    out = np.empty((n_docs, context_length), np.int32)
    it = iter(sentences)
    for d in range(n_docs):
        filled = 0
        while filled < context_length:
            sentence = next(it)
            take = min(len(sentence), context_length - filled)
            out[d, filled : filled + take] = sentence[:take]
            filled += take
            if filled < context_length:
                out[d, filled] = SEPARATOR
                filled += 1
    return out
