"""The paper's reference sampler: PyPI ``pcfg`` (recursive, on top of NLTK).

Used only by the equivalence tests and the benchmarks, to compare the fast sampler with
what the paper ran. It draws every sentence in full with Python recursion (re-drawing a
sentence that hits the recursion limit, as the paper's code did) and then builds
documents with the same rule as the fast sampler.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import numpy as np

from gzipscale.vocabulary import DEFAULT_CONTEXT_LENGTH

from .sampler import assemble_documents


def reference_grammar(grammar_text: str):
    try:
        from pcfg import PCFG
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the reference sampler needs the 'pcfg' package: pip install -e '.[test]'"
        ) from exc
    return PCFG.fromstring(grammar_text)


def reference_sentences(
    grammar_text: str, seed: int, deadline: float | None = None
) -> Iterator[np.ndarray]:
    """Full sentences as token-id arrays; ``pcfg`` uses the global ``random``, seeded here.

    ``deadline`` (a ``time.perf_counter()`` value) stops the stream, for benchmarks of
    grammars on which the reference practically never finishes a sentence.
    """
    grammar = reference_grammar(grammar_text)
    random.seed(seed)
    while True:
        if deadline is not None and time.perf_counter() > deadline:
            return
        try:
            sentence = next(grammar.generate(1))
        except RecursionError:
            continue
        yield np.fromiter(map(int, sentence.split()), dtype=np.int32)


def reference_documents(
    grammar_text: str,
    n_docs: int,
    seed: int = 0,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
) -> np.ndarray:
    """``n_docs`` documents from the reference sampler, an (n_docs, L) int32 array."""
    return assemble_documents(reference_sentences(grammar_text, seed), n_docs, context_length)
