"""Random PCFGs built by the paper's recipe (Pandey 2024), as NLTK grammars.

The draws follow the reference code call for call (``random.randint`` for the number of
options, one weight per option, then per option a length and its symbols drawn with
``random.choice``), from a private ``random.Random(seed)``. Python's Mersenne Twister and
these two methods are specified bit for bit, so the same spec and seed give the same
grammar on every machine and Python version. The one deliberate change: terminals are
the ids 1..T (the reference used 0..T-1, colliding with the separator 0).
"""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np

from .spec import GrammarSpec

START = "S"


def nonterminal_names(n: int) -> list[str]:
    return [f"N{i}" for i in range(n)]


def random_productions(spec: GrammarSpec) -> list[tuple[str, tuple[str, ...], float]]:
    """Draw the grammar's productions as ``(lhs, rhs, probability)``.

    Nonterminal symbols are names (``N3``); terminals are quoted ids (``'17'``), which is
    how NLTK's grammar text writes them. The start production list comes first.
    """
    rng = random.Random(spec.seed)
    nonterminals = nonterminal_names(spec.nonterminals)
    terminals = [f"'{i}'" for i in range(1, spec.terminals + 1)]
    symbols = nonterminals + terminals

    productions: list[tuple[str, tuple[str, ...], float]] = [
        (START, (nt,), 1 / spec.nonterminals) for nt in nonterminals
    ]
    for lhs in nonterminals:
        n_options = rng.randint(1, spec.max_rhs_options)
        weights = [rng.randint(1, 100) for _ in range(n_options)]
        total = sum(weights)
        for weight in weights:
            length = rng.randint(1, spec.max_rhs_len)
            rhs = tuple(rng.choice(symbols) for _ in range(length))
            productions.append((lhs, rhs, weight / total))
    return productions


def productions_to_text(productions: list[tuple[str, tuple[str, ...], float]]) -> str:
    """One production per line, ``LHS -> RHS [p]``, probabilities in full precision.

    Probabilities are written positionally with the shortest digits that round-trip
    (NLTK's grammar reader does not accept exponents such as ``9.9e-05``).
    """
    return (
        "\n".join(
            f"{lhs} -> {' '.join(rhs)} [{format_probability(p)}]" for lhs, rhs, p in productions
        )
        + "\n"
    )


def format_probability(p: float) -> str:
    return np.format_float_positional(float(p), unique=True, trim="0")


@lru_cache(maxsize=64)
def grammar_text(spec: GrammarSpec) -> str:
    """The grammar's text form; ``nltk.PCFG.fromstring`` loads it back exactly."""
    return productions_to_text(random_productions(spec))


def random_pcfg(spec: GrammarSpec):
    """The grammar as an ``nltk.grammar.PCFG`` whose start symbol is ``S``."""
    import nltk  # imported lazily: it costs most of a second, and sampling never needs it

    return nltk.PCFG.fromstring(grammar_text(spec))


def pcfg_to_text(grammar) -> str:
    """Text form of any NLTK PCFG (start symbol's productions first), full precision.

    ``str(grammar)`` is not usable for this: it adds a header line and rounds
    probabilities to 6 significant digits.
    """
    from .compiled import nltk_rows

    return productions_to_text(nltk_rows(grammar))
