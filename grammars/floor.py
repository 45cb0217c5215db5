"""Each dataset's floor: the expected loss of the Bayes-optimal predictor, computed exactly.

What is computed. A document is the first L tokens of ``s1 0 s2 0 s3 ...`` (sentences
i.i.d. from the grammar, each document starting at a fresh sentence; grammars/sampler.py),
and the trainer scores the L - 1 predictions of x_1..x_{L-1} from the tokens before them.
The Bayes-optimal predictor knows the grammar, so its loss on a document is

    -log p(x_1 .. x_{L-1} | x_0) / (L - 1)
      = -[ sum over complete sentences s of log P(s)      (P(s) = P(s, then 0): the
                                                            string probability, summed over
                                                            all derivations)
           + log P(prefix of the cut sentence)            (1 if the document ends on a 0)
           - log P(prefix x_0) ] / (L - 1)

and per position t, -log p(x_t | x_<t) = -log P(prefix_{k+1}) / P(prefix_k) inside a
sentence and -log P(s) / P(prefix s) at a separator (prefix probabilities and string
probabilities come from grammars/prefix_probability.py: Stolcke's Earley parser, exact).
The floor is the mean over documents of the eval split's own stream (blocks
``make_block(spec, "eval", b)``, b = 0, 1, ...): documents are i.i.d., so the standard
error is that of a mean of i.i.d. per-document losses, std / sqrt(n). The per-position
floor averages the loss at each position t = 1..L-1; its mean over positions is the floor.

What the floor is compared to. With H(S) the entropy of one sentence (string), H(D) that of
its derivation and E|S| its mean length (all per sentence; +1 for the separator):

* ``derivation_bound`` = H(D) / (E|S| + 1), in closed form from the mean matrix. It is the
  entropy rate of the derivation stream, an upper bound on the string stream's entropy rate
  h = H(S) / (E|S| + 1), with equality exactly when the grammar is unambiguous (almost every
  sentence has one derivation). None where E|S| is infinite (a critical or supercritical
  grammar with the prefix sampler): sentences are then not a renewal process of finite
  mean and no per-token rate exists in this sense.
* ``ambiguity`` = H(D | S) / (E|S| + 1) = derivation_bound - h, in nats per token, where
  H(D | S) = E_s[H(D | S = s)] and H(D | S = s) = E[-log p(D) | s] + log P(s) is computed
  exactly per sentence (inside pass in the expectation semiring). It is estimated on the
  first sentence of every document, an unbiased draw from the sentence distribution; a
  first sentence cut at L tokens contributes 0, so with cut first sentences
  (``first_sentences_cut`` > 0) the estimate is a lower bound. It is exactly 0 on an
  unambiguous grammar. ``string_entropy_rate`` = derivation_bound - ambiguity estimates h.
* The document floor is not h itself: it is h plus boundary terms of order 1/L. The
  per-position floor at position t is the conditional entropy at the sentence phase t
  reaches from a sentence start; it converges to h as t grows (the renewal phase mixes), but
  early positions differ (x_0, a sentence's first token, is conditioned on and not scored;
  sentence starts and ends are over- or under-represented in a finite window; the cut
  sentence contributes its prefix). So the floor can lie on either side of h, and
  ``floor - string_entropy_rate`` measures that finite-window effect, while
  ``derivation_bound - floor`` mixes it with the ambiguity. For an unambiguous grammar
  the precise statements are: ambiguity = 0 exactly, string_entropy_rate = derivation_bound
  exactly, E[-log P(s)] over sentences = H(D), and the per-position floor tends to the bound.

Parallel use: ``floor_blocks`` lists the eval blocks a floor needs, ``score_block`` scores
one (pure, picklable result: run it as a Ray task), ``combine_blocks`` joins them in block
order. The result depends only on the spec and the number of documents, never on how the
blocks were spread over workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .compiled import SEPARATOR, CompiledGrammar
from .dataset import DatasetSpec, block_rng
from .prefix_probability import (
    DEFAULT_MAX_ITEMS,
    DerivationEntropy,
    FloorError,
    FloorNumericsError,
    ParserTables,
    derivation_entropy_rate,
    parse,
    parser_tables,
)
from .random_pcfg import grammar_text
from .sampler import compiled_for, sample_documents
from .spec import GrammarSpec

DEFAULT_FLOOR_DOCUMENTS = 2000

__all__ = [
    "DEFAULT_FLOOR_DOCUMENTS",
    "BlockScore",
    "DerivationEntropy",
    "DocumentScores",
    "Floor",
    "FloorError",
    "combine_blocks",
    "dataset_floor",
    "derivation_entropy_rate",
    "document_log_probs",
    "eval_documents",
    "floor_blocks",
    "floor_grammar",
    "score_block",
    "score_documents",
]


# -- per-document Bayes losses ------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentScores:
    """Bayes losses of a set of documents (n, L) and facts about their first sentences."""

    losses: np.ndarray  # (n, L - 1): -log p(x_t | x_<t), t = 1..L-1
    first_ambiguity: np.ndarray  # (n,): H(D | S = first sentence), nan where it is cut
    first_derivation_loss: np.ndarray  # (n,): E[-log p(D) | first sentence], nan where cut
    first_string_loss: np.ndarray  # (n,): -log P(first sentence), nan where cut


def _segments(docs: np.ndarray):
    """Every sentence piece of every document: (doc, start, length, complete)."""
    n, length = docs.shape
    is_sep = docs == SEPARATOR
    # a piece starts at position 0 or after a separator, at a non-separator token
    starts = np.zeros_like(is_sep)
    starts[:, 0] = True
    starts[:, 1:] = is_sep[:, :-1]
    starts &= ~is_sep
    d, s = np.nonzero(starts)
    # its end: the next separator in the row, or L
    flat_sep = np.flatnonzero(np.concatenate([is_sep, np.ones((n, 1), bool)], axis=1).ravel())
    key = d * (length + 1) + s
    nxt = flat_sep[np.searchsorted(flat_sep, key)]
    end = nxt - d * (length + 1)
    return d, s, end - s, end < length


def score_documents(
    grammar: CompiledGrammar | ParserTables,
    docs: np.ndarray,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> DocumentScores:
    """Bayes losses per position of every document, and the first sentences' ambiguity.

    Identical sentence pieces are parsed once. Each document's numbers depend only on that
    document and the grammar (to the last bit, on the other documents through BLAS kernels:
    exact identity across worker splits comes from scoring whole blocks).
    """
    docs = np.asarray(docs)
    if docs.ndim != 2 or docs.shape[1] < 2:
        raise ValueError(f"documents must be an (n, L) array with L >= 2, got {docs.shape}")
    tables = grammar if isinstance(grammar, ParserTables) else parser_tables(grammar)
    n, length = docs.shape
    if n and (docs[:, 0] == SEPARATOR).any():
        raise FloorError(
            f"grammar {tables.name}: a document starts with the separator; documents must "
            "start at a sentence"
        )
    d, s, ln, comp = _segments(docs)
    first = s == 0
    # deduplicate pieces by their tokens
    index: dict[bytes, int] = {}
    uid = np.empty(len(d), np.int64)
    pieces: list[np.ndarray] = []
    rows = docs.astype(np.int64)
    for i in range(len(d)):
        tokens = rows[d[i], s[i] : s[i] + ln[i]]
        k = tokens.tobytes()
        j = index.get(k)
        if j is None:
            j = index[k] = len(pieces)
            pieces.append(tokens)
        uid[i] = j
    u_complete = np.zeros(len(pieces), bool)
    u_entropy = np.zeros(len(pieces), bool)
    np.logical_or.at(u_complete, uid, comp)
    np.logical_or.at(u_entropy, uid, comp & first)
    res = parse(tables, pieces, u_complete, u_entropy, max_items=max_items)

    # conditional log-probabilities per piece: tokens, then the separator if complete
    cond = []
    with np.errstate(invalid="ignore"):  # -inf - -inf after an impossible prefix
        for j, lp in enumerate(res.log_prefix):
            c = np.diff(lp)
            if u_complete[j]:
                c = np.append(c, res.log_string[j] - lp[-1])
            cond.append(c)
    bad = [j for j, c in enumerate(cond) if not np.isfinite(c).all()]
    if bad:
        raise FloorNumericsError(
            f"grammar {tables.name}: a sentence of {len(pieces[bad[0]])} tokens has probability "
            "0 under the grammar: these documents were not drawn from it"
        )
    flat = np.concatenate(cond) if cond else np.zeros(0)
    u_off = np.concatenate([[0], np.cumsum([len(c) for c in cond])[:-1]]).astype(np.int64)
    take = ln + comp  # positions each piece covers in its document
    logp = np.zeros((n, length))
    dest = np.repeat(d * length + s, take) + _ranges(take)
    logp.ravel()[dest] = flat[np.repeat(u_off[uid], take) + _ranges(take)]
    losses = -logp[:, 1:]  # x_0 is conditioned on, not predicted

    first_h = np.full(n, np.nan)
    first_dl = np.full(n, np.nan)
    first_sl = np.full(n, np.nan)
    fc = first & comp
    j = uid[fc]
    first_sl[d[fc]] = -res.log_string[j]
    first_dl[d[fc]] = res.derivation_loss[j]
    # H(D | s) >= 0 exactly; below 1e-12 nats it is rounding (an unambiguous sentence)
    h = res.derivation_loss[j] + res.log_string[j]
    first_h[d[fc]] = np.where(h < 1e-12, 0.0, h)
    return DocumentScores(losses, first_h, first_dl, first_sl)


def _ranges(counts: np.ndarray) -> np.ndarray:
    """concatenate(arange(c) for c in counts)."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


def document_log_probs(grammar: CompiledGrammar, docs: np.ndarray, **kwargs) -> np.ndarray:
    """(n, L - 1) Bayes losses -log p(x_t | x_<t), t = 1..L-1, of documents (n, L)."""
    return score_documents(grammar, docs, **kwargs).losses


# -- datasets: blocks of the eval stream --------------------------------------------------------


def floor_grammar(spec: DatasetSpec) -> CompiledGrammar:
    """The grammar exactly as the sampler uses it for this dataset."""
    return compiled_for(grammar_text(spec.grammar), spec.sampler, spec.grammar.name)


def floor_blocks(spec: DatasetSpec, documents: int = DEFAULT_FLOOR_DOCUMENTS) -> list[int]:
    """The eval blocks that hold the first ``documents`` documents of the eval stream."""
    if documents < 2:
        raise ValueError("a floor needs at least 2 documents (for its standard error)")
    return list(range(math.ceil(documents / spec.block_docs)))


def _block_count(spec: DatasetSpec, block: int, documents: int) -> int:
    return min(spec.block_docs, documents - block * spec.block_docs)


def eval_documents(spec: DatasetSpec, block: int, documents: int) -> np.ndarray:
    """The eval stream's block ``block``, cut to the floor's documents.

    Within the eval split these are exactly the documents of ``make_block(spec, "eval",
    block)`` (what ``gzipscale data`` writes to eval/); beyond it, the same stream continues.
    """
    g = floor_grammar(spec)
    docs = sample_documents(g, spec.block_docs, block_rng(spec, "eval", block), spec.context_length)
    return docs[: _block_count(spec, block, documents)]


@dataclass(frozen=True)
class BlockScore:
    """One eval block's Bayes losses (picklable; what a Ray task returns)."""

    block: int
    losses: np.ndarray  # (n_b, L - 1)
    first_ambiguity: np.ndarray  # (n_b,), nan where the first sentence is cut
    first_string_loss: np.ndarray  # (n_b,)


def score_block(
    spec: DatasetSpec,
    block: int,
    documents: int = DEFAULT_FLOOR_DOCUMENTS,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> BlockScore:
    """Score eval block ``block`` (one of ``floor_blocks(spec, documents)``)."""
    if block not in floor_blocks(spec, documents):
        raise ValueError(f"block {block} is not among the {documents} floor documents' blocks")
    docs = eval_documents(spec, block, documents)
    scores = score_documents(_tables_for(spec), docs, max_items=max_items)
    return BlockScore(block, scores.losses, scores.first_ambiguity, scores.first_string_loss)


def _tables_for(spec: DatasetSpec) -> ParserTables:
    return _tables(spec.grammar, spec.sampler)


@lru_cache(maxsize=16)
def _tables(grammar: GrammarSpec, sampler: str) -> ParserTables:
    text = grammar_text(grammar)
    return parser_tables(compiled_for(text, sampler, grammar.name))


@dataclass(frozen=True)
class Floor:
    """A dataset's Bayes-optimal loss per predicted token (see the module docstring)."""

    nats_per_token: float
    stderr: float  # of the mean of i.i.d. per-document losses
    documents: int
    derivation_bound: float | None
    ambiguity: float | None
    per_position: np.ndarray = field(repr=False)  # (L - 1,) mean loss at t = 1..L-1
    per_position_stderr: np.ndarray = field(repr=False)
    context_length: int = 256
    sampler: str = "prefix"
    grammar: str = ""
    ambiguity_stderr: float | None = None
    string_entropy_rate: float | None = None
    bound_reason: str | None = None
    derivation_entropy: float | None = None  # H(D), nats per sentence
    mean_sentence_length: float | None = None  # E|S|
    sentence_ambiguity: float | None = None  # H(D | S), nats per sentence (first sentences)
    first_sentences_cut: float = 0.0  # fraction of documents whose first sentence is cut
    growth_rate: float = 0.0

    def to_dict(self) -> dict:
        def num(x):
            return None if x is None else float(x)

        return {
            "nats_per_token": float(self.nats_per_token),
            "stderr": float(self.stderr),
            "documents": int(self.documents),
            "derivation_bound": num(self.derivation_bound),
            "ambiguity": num(self.ambiguity),
            "ambiguity_stderr": num(self.ambiguity_stderr),
            "string_entropy_rate": num(self.string_entropy_rate),
            "bound_reason": self.bound_reason,
            "derivation_entropy_per_sentence": num(self.derivation_entropy),
            "mean_sentence_length": num(self.mean_sentence_length),
            "sentence_ambiguity": num(self.sentence_ambiguity),
            "first_sentences_cut": float(self.first_sentences_cut),
            "growth_rate": float(self.growth_rate),
            "context_length": int(self.context_length),
            "sampler": self.sampler,
            "grammar": self.grammar,
            "stderr_method": "std of i.i.d. per-document losses / sqrt(documents)",
            "per_position": [float(x) for x in self.per_position],
            "per_position_stderr": [float(x) for x in self.per_position_stderr],
        }


def combine_blocks(spec: DatasetSpec, scores: list[BlockScore]) -> Floor:
    """Join block scores (any order, each block once, blocks 0..B-1) into the floor."""
    scores = sorted(scores, key=lambda s: s.block)
    if [s.block for s in scores] != list(range(len(scores))) or not scores:
        raise ValueError(f"need the blocks 0..B-1 exactly once, got {[s.block for s in scores]}")
    losses = np.concatenate([s.losses for s in scores])
    first_h = np.concatenate([s.first_ambiguity for s in scores])
    n = len(losses)
    if n < 2:
        raise ValueError("a floor needs at least 2 documents")
    per_doc = losses.mean(axis=1)
    de = derivation_entropy_rate(floor_grammar(spec))
    cut = np.isnan(first_h)
    h_s = np.where(cut, 0.0, first_h)  # a cut first sentence counts 0: a lower bound
    ambiguity = ambiguity_se = rate = None
    if de.nats_per_token is not None:
        tokens = de.mean_length + 1
        ambiguity = float(h_s.mean() / tokens)
        ambiguity_se = float(h_s.std(ddof=1) / math.sqrt(n) / tokens)
        rate = de.nats_per_token - ambiguity
    return Floor(
        nats_per_token=float(per_doc.mean()),
        stderr=float(per_doc.std(ddof=1) / math.sqrt(n)),
        documents=n,
        derivation_bound=de.nats_per_token,
        ambiguity=ambiguity,
        per_position=losses.mean(axis=0),
        per_position_stderr=losses.std(axis=0, ddof=1) / math.sqrt(n),
        context_length=spec.context_length,
        sampler=spec.sampler,
        grammar=spec.grammar.name,
        ambiguity_stderr=ambiguity_se,
        string_entropy_rate=rate,
        bound_reason=de.reason,
        derivation_entropy=de.nats_per_sentence,
        mean_sentence_length=de.mean_length,
        sentence_ambiguity=float(h_s.mean()),
        first_sentences_cut=float(cut.mean()),
        growth_rate=de.growth_rate,
    )


def dataset_floor(
    spec: DatasetSpec,
    documents: int = DEFAULT_FLOOR_DOCUMENTS,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Floor:
    """The floor from the first ``documents`` documents of the eval stream, block by block."""
    blocks = [score_block(spec, b, documents, max_items) for b in floor_blocks(spec, documents)]
    return combine_blocks(spec, blocks)
