"""The fast sampler: document shape, exactness against the paper's reference sampler,
bounded work on supercritical grammars, clear errors, and the 'finite' mode."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import stats

from gzipscale.grammars.compiled import GrammarError, compile_grammar
from gzipscale.grammars.gzip_metric import gzip_ratios
from gzipscale.grammars.random_pcfg import grammar_text
from gzipscale.grammars.reference import reference_documents
from gzipscale.grammars.sampler import (
    SamplingBoundError,
    assemble_documents,
    compiled_for,
    complete_sentence_lengths,
    sample_documents,
)
from gzipscale.grammars.spec import GrammarSpec


def test_documents_have_exact_length_and_valid_ids():
    spec = GrammarSpec(10, 300, 3, 5, seed=2)
    g = compiled_for(grammar_text(spec), "prefix", spec.name)
    docs = sample_documents(g, 300, np.random.default_rng(0), context_length=256)
    assert docs.shape == (300, 256) and docs.dtype == np.int32
    assert docs.min() >= 0 and docs.max() <= 300
    # documents start with a sentence, never with a separator
    assert (docs[:, 0] != 0).all()
    # no two separators in a row: sentences are never empty
    assert not ((docs[:, 1:] == 0) & (docs[:, :-1] == 0)).any()


def test_same_rng_same_documents_and_block_independence():
    spec = GrammarSpec(20, 300, 5, 10, seed=0)
    g = compiled_for(grammar_text(spec), "prefix", spec.name)
    a = sample_documents(g, 200, np.random.default_rng([0, 0, 7]))
    b = sample_documents(g, 200, np.random.default_rng([0, 0, 7]))
    np.testing.assert_array_equal(a, b)
    c = sample_documents(g, 200, np.random.default_rng([0, 0, 8]))
    assert not np.array_equal(a, c)


def test_assemble_documents_cuts_the_sentence_that_does_not_fit():
    sentences = [[1, 2, 3], [4, 5, 6, 7], [8], [9, 9], [7, 7, 7]]
    docs = assemble_documents(map(np.array, sentences), 2, context_length=6)
    # doc 1: 1 2 3 0 4 5 (sentence 2 cut, its rest discarded); doc 2 starts fresh at 8
    assert docs[0].tolist() == [1, 2, 3, 0, 4, 5]
    assert docs[1].tolist() == [8, 0, 9, 9, 0, 7]


def permutation_chi_square(
    docs_a: np.ndarray, docs_b: np.ndarray, n_perm: int = 999, seed: int = 0
):
    """Chi-square test of equal terminal unigram frequencies, documents as the unit.

    Tokens of one document are not independent draws (a production emits its symbols
    together), so the asymptotic chi-square distribution rejects far too often. Documents
    are independent and identically distributed in each sampler, so the chi-square
    statistic of the 2 x vocabulary table is referred to its permutation distribution
    (documents' sampler labels shuffled), which is exact whatever the correlation.
    Returns (p-value, observed statistic).
    """
    vocab = int(max(docs_a.max(), docs_b.max())) + 1
    docs = np.concatenate([docs_a, docs_b])
    counts = np.zeros((len(docs), vocab))
    np.add.at(counts, (np.repeat(np.arange(len(docs)), docs.shape[1]), docs.ravel()), 1)
    counts = counts[:, 1:]  # terminals only; the separator is tested by sentence lengths
    counts = counts[:, counts.sum(0) > 0]
    total = counts.sum(0)
    grand = total.sum()

    def statistic(in_a: np.ndarray) -> np.ndarray:  # in_a: (m, docs) 0/1 labels
        row_a = in_a @ counts
        row_b = total - row_a
        size_a = row_a.sum(1, keepdims=True)
        exp_a = size_a * total / grand
        exp_b = (grand - size_a) * total / grand
        return (((row_a - exp_a) ** 2) / exp_a + ((row_b - exp_b) ** 2) / exp_b).sum(1)

    labels = np.zeros(len(docs))
    labels[: len(docs_a)] = 1
    observed = statistic(labels[None])[0]
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(labels) for _ in range(n_perm)])
    null = statistic(perms)
    return (1 + np.sum(null >= observed)) / (1 + n_perm), observed


EQUIVALENCE_GRAMMARS = [(10, 300, 3, 5, 1), (20, 300, 5, 10, 1), (50, 300, 10, 20, 2)]


@pytest.mark.slow
@pytest.mark.parametrize("grammar", EQUIVALENCE_GRAMMARS, ids=lambda g: ",".join(map(str, g)))
def test_statistically_equivalent_to_reference_sampler(grammar):
    *shape, seed = grammar
    spec = GrammarSpec(*shape, seed=seed)
    text = grammar_text(spec)
    g = compiled_for(text, "prefix", spec.name)
    assert g.finite_probabilities()[g.start] == pytest.approx(1.0)  # finite sentences
    n_docs = 800  # 204,800 tokens from each sampler
    ours = sample_documents(g, n_docs, np.random.default_rng(123))
    ref = reference_documents(text, n_docs, seed=456)
    assert ours.size >= 200_000 and ref.size >= 200_000

    p_unigram, _ = permutation_chi_square(ours, ref)
    assert p_unigram > 0.01, f"terminal unigram frequencies differ (p={p_unigram:.4g})"

    ks = stats.ks_2samp(complete_sentence_lengths(ours), complete_sentence_lengths(ref))
    assert ks.pvalue > 0.01, f"sentence lengths differ (KS p={ks.pvalue:.4g})"

    h_ours, h_ref = np.median(gzip_ratios(ours)), np.median(gzip_ratios(ref))
    assert abs(h_ours - h_ref) < 0.01


def test_equivalence_test_has_power():
    """The same tests reject a sampler that is slightly wrong (one weight perturbed)."""
    text = "S -> N0 [1.0]\nN0 -> '1' N0 [0.6]\nN0 -> '2' [0.25]\nN0 -> '3' [0.15]\n"
    wrong = "S -> N0 [1.0]\nN0 -> '1' N0 [0.55]\nN0 -> '2' [0.3]\nN0 -> '3' [0.15]\n"
    good = sample_documents(compile_grammar(text, "good"), 800, np.random.default_rng(1))
    bad = sample_documents(compile_grammar(wrong, "bad"), 800, np.random.default_rng(2))
    ref = reference_documents(text, 800, seed=3)
    assert permutation_chi_square(good, ref)[0] > 0.01
    assert permutation_chi_square(bad, ref)[0] < 0.01
    assert (
        stats.ks_2samp(complete_sentence_lengths(bad), complete_sentence_lengths(ref)).pvalue < 0.01
    )


def test_supercritical_grammar_finishes_in_bounded_work():
    # A -> A A with probability 0.9: sentences are infinite with probability 8/9.
    text = "S -> A [1.0]\nA -> A A [0.9]\nA -> '1' [0.05]\nA -> '2' [0.05]\n"
    g = compiled_for(text, "prefix", "supercritical")
    assert g.spectral_radius() == pytest.approx(1.8)
    assert g.finite_probabilities()[g.start] == pytest.approx(1 / 9, abs=1e-9)
    start = time.perf_counter()
    docs = sample_documents(g, 256, np.random.default_rng(0), context_length=64)
    assert time.perf_counter() - start < 10
    assert docs.shape == (256, 64) and set(np.unique(docs)) <= {0, 1, 2}
    # most documents are the prefix of one infinite sentence: no separator at all
    assert (docs != 0).all(axis=1).mean() > 0.5


def test_hard_paper_grammar_samples_quickly():
    spec = GrammarSpec(100, 300, 30, 100, seed=0)
    g = compiled_for(grammar_text(spec), "prefix", spec.name)
    assert g.spectral_radius() > 1  # supercritical: the reference practically never finishes
    start = time.perf_counter()
    docs = sample_documents(g, 400, np.random.default_rng(0))
    assert time.perf_counter() - start < 20
    assert docs.shape == (400, 256) and docs.max() <= 300


def test_unit_cycle_with_exit_finishes():
    text = "S -> A [1.0]\nA -> B [0.999]\nA -> '1' [0.001]\nB -> A [1.0]\n"
    docs = sample_documents(compiled_for(text, "prefix", "cycle"), 8, np.random.default_rng(0), 16)
    assert docs.shape == (8, 16)


def test_cycle_without_exit_is_refused_with_the_grammar_named():
    text = "S -> A [0.5]\nS -> C [0.5]\nA -> B '1' [1.0]\nB -> A [1.0]\nC -> '2' [1.0]\n"
    with pytest.raises(GrammarError, match="grammar looping.*A, B"):
        compiled_for(text, "prefix", "looping")
    # conditioning on finite sentences removes the dead branch instead
    g = compiled_for(text, "finite", "looping")
    docs = sample_documents(g, 4, np.random.default_rng(0), 8)
    assert set(np.unique(docs)) <= {0, 2}


def test_round_bound_raises_instead_of_hanging():
    text = "S -> A [1.0]\nA -> A '1' [0.9999]\nA -> '2' [0.0001]\n"
    g = compiled_for(text, "prefix", "slowleft")
    with pytest.raises(SamplingBoundError, match="grammar slowleft"):
        sample_documents(g, 4, np.random.default_rng(0), 64, max_rounds=50)


def test_finite_mode_matches_reference_on_a_supercritical_grammar():
    # P(finite) q = 0.45 / 0.55; conditioned on it (h-transform): A -> A A [0.55 q],
    # '1' [0.225 / q], '2' [0.225 / q].
    text = "S -> A [1.0]\nA -> A A [0.55]\nA -> '1' [0.225]\nA -> '2' [0.225]\n"
    g = compiled_for(text, "finite", "h")
    q = 0.45 / 0.55
    lo, hi = g.first_prod[1], g.last_prod[1] + 1
    np.testing.assert_allclose(g.prod_prob[lo:hi], [0.55 * q, 0.225 / q, 0.225 / q], atol=1e-9)
    ours = sample_documents(g, 300, np.random.default_rng(0), 64)
    ref = reference_documents(text, 300, seed=1, context_length=64)
    ks = stats.ks_2samp(complete_sentence_lengths(ours), complete_sentence_lengths(ref))
    assert ks.pvalue > 0.01


def test_finite_mode_equals_prefix_mode_on_finite_grammars():
    spec = GrammarSpec(10, 300, 3, 5, seed=1)
    a = sample_documents(
        compiled_for(grammar_text(spec), "prefix", "a"), 50, np.random.default_rng(5)
    )
    b = sample_documents(
        compiled_for(grammar_text(spec), "finite", "a"), 50, np.random.default_rng(5)
    )
    np.testing.assert_array_equal(a, b)


def test_start_unit_productions_are_composed_without_changing_the_language():
    from gzipscale.grammars.compiled import inline_start_units

    text = (
        "S -> A [0.5]\nS -> B [0.3]\nS -> S [0.1]\nS -> '9' [0.1]\n"
        "A -> '1' [0.2]\nA -> '2' [0.8]\nB -> '3' A [1.0]\n"
    )
    g = compile_grammar(text, "units")
    composed = inline_start_units(g)
    lo, hi = composed.first_prod[0], composed.last_prod[0] + 1
    # S -> '1' [0.1], '2' [0.4], '3' A [0.3], S [0.1] (a self-loop is kept), '9' [0.1]
    np.testing.assert_allclose(sorted(composed.prod_prob[lo:hi]), [0.1, 0.1, 0.1, 0.3, 0.4])
    np.testing.assert_array_equal(composed.prod_prob[composed.prod_lhs == 1], [0.2, 0.8])
    # same distribution of sentences: compare first tokens of many documents
    a = sample_documents(g, 3000, np.random.default_rng(1), 4)[:, 0]
    b = sample_documents(composed, 3000, np.random.default_rng(2), 4)[:, 0]
    table = np.array([np.bincount(a, minlength=10), np.bincount(b, minlength=10)])
    table = table[:, table.sum(0) > 0]
    assert stats.chi2_contingency(table).pvalue > 0.01
