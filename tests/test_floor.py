"""The floor (Bayes-optimal loss): exact against brute-force enumeration of derivations,
proper conditional distributions on the random grammars, the derivation bound, the block
split, supercritical grammars and bounded work."""

from __future__ import annotations

import itertools
import json
import math
import time

import numpy as np
import pytest

from gzipscale.grammars.compiled import GrammarError, compile_grammar
from gzipscale.grammars.dataset import DatasetSpec, make_block
from gzipscale.grammars.floor import (
    combine_blocks,
    dataset_floor,
    derivation_entropy_rate,
    document_log_probs,
    eval_documents,
    floor_blocks,
    floor_grammar,
    score_block,
    score_documents,
)
from gzipscale.grammars.prefix_probability import (
    ChartLimitError,
    FloorError,
    PrefixUndefinedError,
    parse,
    parser_tables,
)
from gzipscale.grammars.sampler import compiled_for, sample_documents
from gzipscale.grammars.spec import GrammarSpec

# Ambiguous (S -> S S, two routes to '2' '1'), a unit chain S -> A -> B -> C, a unit cycle
# A -> B -> A, left recursion (A -> A '1') and a long right-hand side.
AMBIGUOUS = """S -> S S [0.1]
S -> A [0.2]
S -> '1' [0.4]
S -> '2' B [0.3]
A -> B [0.3]
A -> A '1' [0.1]
A -> '2' '1' [0.6]
B -> A [0.1]
B -> C [0.1]
B -> '1' '2' [0.3]
B -> '2' [0.5]
C -> '2' '1' [0.5]
C -> '1' C '2' '1' [0.5]
"""
# The same shapes without the unit cycle: every string has finitely many derivations, so
# enumeration is exact (used for the derivation entropy given the string).
ACYCLIC = """S -> S S [0.15]
S -> A [0.25]
S -> '1' [0.3]
S -> '2' B [0.3]
A -> B [0.4]
A -> A '1' [0.2]
A -> '2' '1' [0.4]
B -> '1' '2' [0.3]
B -> '2' [0.4]
B -> '2' '1' [0.3]
"""


def _rules(g):
    rules = {}
    for j in range(len(g.prod_lhs)):
        rhs = tuple(int(x) for x in g.rhs_symbols[g.rhs_offset[j] : g.rhs_offset[j] + g.rhs_len[j]])
        rules.setdefault(int(g.prod_lhs[j]), []).append((float(g.prod_prob[j]), rhs))
    return rules


def brute_force(g, w, mode, eps=1e-14):
    """Enumerate leftmost derivations. mode 'prefix': P(the first len(w) tokens are w);
    'string': the probabilities of all derivations of exactly w. Returns (value, mass of
    the branches dropped below eps), so |exact - value| <= dropped."""
    rules, n = _rules(g), len(w)
    found, dropped = [], 0.0
    stack = [(1.0, 0, (g.start_symbol,))]
    while stack:
        p, k, form = stack.pop()
        while form and form[0] >= 1 and k < n and form[0] == w[k]:
            k, form = k + 1, form[1:]
        if mode == "prefix" and k == n:
            found.append(p)
            continue
        if form and form[0] >= 1:
            continue  # a token that differs from w
        if not form:
            if mode == "string" and k == n:
                found.append(p)
            continue
        if mode == "string" and k + len(form) > n:
            continue  # every symbol yields at least one token
        if p < eps:
            dropped += p
            continue
        for q, rhs in rules[-form[0] - 1]:
            stack.append((p * q, k, rhs + form[1:]))
    return (sum(found) if mode == "prefix" else found), dropped


def strings_upto(n, alphabet=(1, 2)):
    return [np.array(s) for m in range(1, n + 1) for s in itertools.product(alphabet, repeat=m)]


@pytest.mark.parametrize("text", [AMBIGUOUS, ACYCLIC])
def test_string_and_prefix_probabilities_match_brute_force(text):
    g = compile_grammar(text, "toy")
    strs = strings_upto(4)
    res = parse(parser_tables(g), strs, complete=np.ones(len(strs), bool))
    for s, lp, ls in zip(strs, res.log_prefix, res.log_string, strict=True):
        found, dropped = brute_force(g, list(s), "string")
        assert dropped < 1e-9
        assert abs(math.exp(ls) - sum(found)) <= dropped + 1e-12, s
        for j in range(1, len(s) + 1):
            value, dropped = brute_force(g, list(s[:j]), "prefix")
            assert dropped < 1e-9
            assert abs(math.exp(lp[j]) - value) <= dropped + 1e-12, (s, j)
        assert lp[0] == 0.0


def test_derivation_entropy_given_string_matches_enumeration():
    g = compile_grammar(ACYCLIC, "toy")
    strs = strings_upto(5)
    res = parse(parser_tables(g), strs, entropy=np.ones(len(strs), bool))
    ambiguous = 0
    for s, ls, dl in zip(strs, res.log_string, res.derivation_loss, strict=True):
        found, dropped = brute_force(g, list(s), "string", eps=0.0)  # finite: exact
        assert dropped == 0.0
        if not found:
            assert ls == -np.inf
            continue
        p = np.array(found)
        post = p / p.sum()
        assert abs(ls - math.log(p.sum())) < 1e-9
        assert abs(dl - float(post @ -np.log(p))) < 1e-9  # E[-log p(D) | s]
        assert abs((dl + ls) - float(-(post * np.log(post)).sum())) < 1e-9  # H(D | s)
        ambiguous += len(found) > 1
    assert ambiguous > 5


def test_document_losses_match_brute_force():
    g = compile_grammar(AMBIGUOUS, "toy")
    docs = np.array(
        [
            [2, 1, 0, 1, 0, 2, 2, 1],  # complete, complete, cut ('2 2 1' as a prefix)
            [1, 2, 1, 0, 2, 1, 1, 0],  # ends exactly on a separator: nothing is cut
            [1, 1, 2, 1, 2, 0, 2, 2],
        ]
    )
    losses = document_log_probs(g, docs)
    assert losses.shape == (3, 7)

    # brute force gives each probability within [value, value + dropped]; a ratio's log is
    # then certified to an interval (< 1e-5 wide: the dropped-mass bound is loose)
    def prefix(w):
        v, dropped = brute_force(g, list(w), "prefix") if w else (1.0, 0.0)
        return v, v + dropped

    def string(w):
        found, dropped = brute_force(g, list(w), "string")
        return sum(found), sum(found) + dropped

    def neg_log_ratio(num, den):
        return -math.log(num[1] / den[0]), -math.log(num[0] / den[1])

    for doc, loss in zip(docs, losses, strict=True):
        want, sentence = [], []
        for x in doc:
            if x == 0:
                want.append(neg_log_ratio(string(sentence), prefix(sentence)))
                sentence = []
            else:
                before = prefix(sentence)
                sentence.append(int(x))
                want.append(neg_log_ratio(prefix(sentence), before))
        # x_0 is conditioned on: the document's loss is -log p(x_1..x_{L-1} | x_0)
        lo, hi = np.array(want[1:]).T
        assert (hi - lo).max() < 1e-5
        assert (loss >= lo - 1e-12).all() and (loss <= hi + 1e-12).all()
    # the per-document quantity directly: complete sentences' string probabilities, the cut
    # sentence's prefix probability, divided by the prefix probability of x_0
    direct = -math.log(string([2, 1])[0] * string([1])[0] * prefix([2, 2, 1])[0] / prefix([2])[0])
    assert abs(losses[0].sum() - direct) < 1e-7
    # and exactly (1e-12) from the parser's string and prefix probabilities, which match
    # brute force to 1e-9 (test above)
    res = parse(
        parser_tables(g), [np.array([2, 1]), np.array([1]), np.array([2, 2, 1])], np.ones(3, bool)
    )
    direct = -(res.log_string[0] + res.log_string[1] + res.log_prefix[2][3] - res.log_prefix[0][1])
    assert abs(losses[0].sum() - direct) < 1e-12
    res = parse(parser_tables(g), [np.array([1, 2, 1]), np.array([2, 1, 1])], np.ones(2, bool))
    direct = -(res.log_string[0] + res.log_string[1] - res.log_prefix[0][1])
    assert abs(losses[1].sum() - direct) < 1e-12


@pytest.mark.parametrize("shape", ["20,300,5,10", "50,300,10,20"])
def test_conditionals_are_distributions_on_random_grammars(shape):
    """sum over next tokens a of P(w a) + P(w complete) = P(w), for sampled prefixes w."""
    spec = DatasetSpec(GrammarSpec.parse(shape, seed=0), tokens=2560)
    g = floor_grammar(spec)
    tables = parser_tables(g)
    docs = eval_documents(spec, 0, 40)
    rng = np.random.default_rng(0)
    for row in rng.choice(len(docs), 2, replace=False):
        cut = np.flatnonzero(docs[row] == 0)
        end = int(cut[0]) if len(cut) else docs.shape[1]
        w = docs[row, : max(1, min(end, int(rng.integers(1, 40))))].astype(np.int64)
        cands = [w] + [np.append(w, a) for a in range(1, g.max_terminal + 1)]
        res = parse(tables, cands, complete=np.arange(len(cands)) == 0)
        base = res.log_prefix[0][-1]
        total = math.exp(res.log_string[0] - base) + sum(
            math.exp(r[-1] - base) for r in res.log_prefix[1:]
        )
        assert abs(total - 1) < 1e-10


def _unambiguous():
    """LL(1) by construction: every production of a nonterminal starts with its own
    terminal, so each sentence has exactly one (leftmost) derivation."""
    return compile_grammar(
        "S -> '1' A S [0.3]\nS -> '2' [0.45]\nS -> '3' A [0.25]\n"
        "A -> '4' [0.5]\nA -> '5' S '6' [0.2]\nA -> '6' A [0.3]\n",
        "ll1",
    )


def test_unambiguous_grammar_meets_the_derivation_bound():
    g = _unambiguous()
    de = derivation_entropy_rate(g)
    docs = sample_documents(g, 3000, np.random.default_rng(3), context_length=64)
    scores = score_documents(g, docs)
    complete = ~np.isnan(scores.first_ambiguity)
    assert complete.mean() > 0.98
    # exactly: no sentence has a second derivation
    assert np.abs(scores.first_ambiguity[complete]).max() < 1e-12
    np.testing.assert_allclose(
        scores.first_derivation_loss[complete], scores.first_string_loss[complete], atol=1e-9
    )
    # the sentence entropy is the closed form's H(D): the mean -log P(s) over i.i.d. first
    # sentences (cut ones are long: their loss is at least 0 and ignoring them only lowers
    # the mean by < the cut fraction times their entropy, so we only use a one-sided bound)
    x = scores.first_string_loss[complete]
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert x.mean() < de.nats_per_sentence + 4 * se
    assert x.mean() > de.nats_per_sentence - 4 * se - 0.5  # cut sentences' share
    # and the length in closed form
    from gzipscale.grammars.sampler import sample_sentences

    _, lengths = sample_sentences(g, 20000, np.random.default_rng(4), cap=100_000)
    assert abs(lengths.mean() - de.mean_length) < 4 * lengths.std() / math.sqrt(len(lengths))


def test_ambiguity_is_what_separates_the_bound_from_the_string_entropy():
    """On an ambiguous random grammar, E[-log P(s)] + E[H(D | s)] = H(D) (Monte Carlo)."""
    spec = DatasetSpec(GrammarSpec.parse("20,300,5,10", seed=0), tokens=2560)
    g = floor_grammar(spec)
    docs = sample_documents(g, 2000, np.random.default_rng(7), context_length=256)
    scores = score_documents(g, docs)
    assert not np.isnan(scores.first_ambiguity).any()  # short sentences: none cut
    x = scores.first_string_loss + scores.first_ambiguity
    de = derivation_entropy_rate(g)
    assert abs(x.mean() - de.nats_per_sentence) < 4 * x.std(ddof=1) / math.sqrt(len(x))
    assert scores.first_ambiguity.mean() > 0.01  # this grammar is ambiguous


def test_floor_identities_and_block_independence():
    spec = DatasetSpec(GrammarSpec.parse("20,300,5,10", seed=1), tokens=2560, block_docs=64)
    documents = 200
    blocks = floor_blocks(spec, documents)
    assert blocks == [0, 1, 2, 3]
    # the documents are the eval split's own: what make_block writes to eval/
    np.testing.assert_array_equal(
        eval_documents(spec, 1, documents), make_block(spec, "eval", 1)[0]
    )
    assert len(eval_documents(spec, 3, documents)) == 200 - 3 * 64
    scores = [score_block(spec, b, documents) for b in blocks]
    floor = dataset_floor(spec, documents)
    # any order of the blocks, as workers return them: bit-identical
    again = combine_blocks(spec, [scores[2], scores[0], scores[3], scores[1]])
    assert again.to_dict() == floor.to_dict()
    assert floor.documents == documents
    # the per-position floor averages to the floor
    assert abs(floor.per_position.mean() - floor.nats_per_token) < 1e-12
    assert floor.per_position.shape == floor.per_position_stderr.shape == (255,)
    # per-document numbers do not depend on which documents are scored together
    docs = np.concatenate([eval_documents(spec, b, documents) for b in blocks])
    whole = document_log_probs(floor_grammar(spec), docs)
    parts = np.concatenate(
        [
            document_log_probs(floor_grammar(spec), docs[a:b])
            for a, b in ((0, 7), (7, 150), (150, 200))
        ]
    )
    np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=1e-12)
    assert abs(whole.mean() - floor.nats_per_token) < 1e-12
    per_doc = whole.mean(axis=1)
    assert abs(floor.stderr - per_doc.std(ddof=1) / math.sqrt(documents)) < 1e-12
    d = json.loads(json.dumps(floor.to_dict()))
    for key in ("nats_per_token", "stderr", "documents", "derivation_bound", "ambiguity"):
        assert key in d
    assert len(d["per_position"]) == 255
    with pytest.raises(ValueError):
        combine_blocks(spec, scores[:2] + scores[3:])


def test_floor_is_below_the_trained_models():
    """Tiny trained models reach 0.7245-0.7250 on (3,300,2,2) and 0.938 on (10,300,3,5)."""
    for shape, best in (("3,300,2,2", 0.7245), ("10,300,3,5", 0.938)):
        floor = dataset_floor(DatasetSpec(GrammarSpec.parse(shape), tokens=2560), 1000)
        assert floor.nats_per_token < best
        assert floor.nats_per_token > best - 0.05
        assert floor.ambiguity < 1e-12  # these two grammars are unambiguous on their data


SUPERCRITICAL = "S -> S S [0.6]\nS -> '1' [0.25]\nS -> '2' [0.15]\n"


def test_supercritical_prefix_sampler_is_computed():
    g = compiled_for(SUPERCRITICAL, "prefix", "super")
    assert g.growth_rate > 1
    de = derivation_entropy_rate(g)
    assert de.nats_per_token is None and "super" in de.reason and "infinite" in de.reason
    tables = parser_tables(g)
    for w in ([1], [2, 1], [1, 1, 2], [2, 2, 1, 1]):
        value, dropped = brute_force(g, w, "prefix", eps=1e-11)
        got = math.exp(parse(tables, [np.array(w)]).log_prefix[0][-1])
        assert abs(got - value) <= dropped + 1e-12
    # P(w a) summed over a, plus P(w complete) = P(w), infinite sentences included
    w = np.array([1, 2, 2, 1, 1])
    res = parse(tables, [w, np.append(w, 1), np.append(w, 2)], complete=np.array([1, 0, 0], bool))
    parts = math.exp(res.log_string[0]) + sum(math.exp(r[-1]) for r in res.log_prefix[1:])
    assert abs(parts / math.exp(res.log_prefix[0][-1]) - 1) < 1e-12
    docs = sample_documents(g, 50, np.random.default_rng(0), context_length=128)
    losses = document_log_probs(g, docs)
    assert np.isfinite(losses).all() and (losses >= 0).all()
    # the finite sampler conditions it: subcritical, the bound is defined
    assert derivation_entropy_rate(compiled_for(SUPERCRITICAL, "finite", "super")).nats_per_token


def test_undefined_prefix_probabilities_are_refused_by_name():
    # A is reachable and never produces its first token: the left-corner closure diverges
    stuck = compile_grammar("S -> A '1' [0.5]\nS -> '2' [0.5]\nA -> A '2' [1.0]\n", "stuck-gram")
    with pytest.raises(PrefixUndefinedError, match="stuck-gram") as info:
        parser_tables(stuck)
    assert "A" in str(info.value) and isinstance(info.value, GrammarError)
    with pytest.raises(FloorError, match="stuck-gram"):
        document_log_probs(stuck, np.array([[2, 0, 2, 0]]))


def test_pathological_grammar_is_bounded():
    patho = compile_grammar("S -> S S [0.4]\nS -> S [0.1]\nS -> '1' [0.5]\n", "patho")
    start = time.perf_counter()
    losses = document_log_probs(patho, np.ones((1, 160), np.int32))  # Catalan-many parses
    assert np.isfinite(losses).all()
    assert time.perf_counter() - start < 20
    start = time.perf_counter()
    with pytest.raises(ChartLimitError, match="patho"):
        document_log_probs(patho, np.ones((1, 256), np.int32), max_items=5000)
    assert time.perf_counter() - start < 10


def test_impossible_documents_are_refused():
    g = compile_grammar(ACYCLIC, "toy")
    with pytest.raises(FloorError, match="probability 0"):
        document_log_probs(g, np.array([[1, 0, 3, 1]]))  # no production has '3'


@pytest.mark.slow
def test_predictions_are_calibrated_deep_in_long_sentences():
    """If q is the sampler's true conditional, E[-log q(x_t)] = E[H(q_t)] at sampled
    positions; a wrong but normalised q breaks it. Positions 20+ of sentences of 40+ tokens
    of (50,300,10,20), where the chart is largest. (~30 s)"""
    spec = DatasetSpec(GrammarSpec.parse("50,300,10,20", seed=0), tokens=2560)
    g = floor_grammar(spec)
    tables = parser_tables(g)
    docs = eval_documents(spec, 0, 1000)
    rng = np.random.default_rng(11)
    diffs = []
    for doc in docs[rng.permutation(len(docs))]:
        cut = np.flatnonzero(doc == 0)
        end = int(cut[0]) if len(cut) else len(doc)
        if end < 40:
            continue
        k = int(rng.integers(20, end))
        w = doc[:k].astype(np.int64)
        cands = [w] + [np.append(w, a) for a in range(1, g.max_terminal + 1)]
        res = parse(tables, cands, complete=np.arange(len(cands)) == 0)
        base = res.log_prefix[0][-1]
        logq = np.array([res.log_string[0] - base] + [r[-1] - base for r in res.log_prefix[1:]])
        q = np.exp(logq)
        diffs.append(-logq[doc[k]] + float((q[q > 0] * logq[q > 0]).sum()))
        if len(diffs) == 250:
            break
    diffs = np.array(diffs)
    assert abs(diffs.mean()) < 4 * diffs.std(ddof=1) / math.sqrt(len(diffs))
