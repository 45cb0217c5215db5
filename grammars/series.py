"""The paper's grammar series and their gzip compressibility over several seeds.

Pandey (2024) uses three series of random PCFGs (its Table 1): one with the
vocabulary (terminals) held at 300, a main series whose vocabulary grows with the
complexity, and four grammars of about the same H but very different syntax.  H varies
with the grammar's random draw, so the compressibility table reports each grammar's
median H as mean ± sd over seeds.

Beside gzip H, each grammar and seed records the same ratio with lzma and bz2
(:func:`grammars.gzip_metric.compression_ratios`: the same documents, bytes, normalisation
and median) and the dataset's floor (:mod:`grammars.floor`: the Bayes-optimal loss per
predicted token, from the eval stream's first documents, as ``gzipscale data`` records it
in the manifest), or the reason the floor was refused.

Everything here is pure (no Ray): :func:`score_grammar` scores one grammar and seed the
way ``gzipscale data`` would write its training split, :func:`floor_record` and
:func:`floor_refusal` are what a table records of a floor, and :func:`summarise` turns the
per-seed scores into the table.  :mod:`grammars.series_command` fans the work out.

Format ``gzipscale-series/2`` adds to ``/1`` (whose fields it keeps, with the same
meaning): per score ``lzma_*``/``bz2_*`` (median, mean, std) and ``floor`` (a floor record,
``{"error": reason}``, or null when not computed) and ``floor_s`` (the seconds its
floor's tasks ran); per row ``lzma_*``/``bz2_*`` (mean, sd)
and ``floor_mean``, ``floor_sd``, ``floor_seeds``, ``floor_refused``; at the top
``compressors`` and ``floor_documents``.  :func:`read_table` reads both.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gzipscale.helpers import InputError

from .spec import GrammarSpec

SERIES_FORMAT = "gzipscale-series/2"  # the "format" field of a table written with --out
SERIES_FORMATS = ("gzipscale-series/1", SERIES_FORMAT)  # what read_table accepts
OTHER_COMPRESSORS = ("lzma", "bz2")  # scored beside gzip (grammars.gzip_metric.COMPRESSORS)


@dataclass(frozen=True)
class SeriesGrammar:
    """One grammar of a paper series, with the H the paper reports or implies (or None)."""

    grammar: str  # "NT,T,LEN,OPTS"
    paper_H: float | None


# The order within a series is the paper's (increasing complexity).
PAPER_SERIES: dict[str, tuple[SeriesGrammar, ...]] = {
    "same-vocabulary": (
        SeriesGrammar("3,300,2,2", 0.11),
        SeriesGrammar("10,300,3,5", 0.25),
        SeriesGrammar("20,300,5,10", 0.36),
        SeriesGrammar("50,300,10,20", 0.47),
        SeriesGrammar("100,300,30,100", None),
        SeriesGrammar("200,300,50,200", None),
    ),
    "main": (
        SeriesGrammar("3,20,2,2", 0.11),
        SeriesGrammar("10,150,3,5", 0.22),
        SeriesGrammar("20,300,5,10", 0.35),
        SeriesGrammar("30,400,8,10", 0.42),
        SeriesGrammar("50,500,15,20", 0.51),
        SeriesGrammar("100,2000,30,100", 0.61),
    ),
    "same-H": (
        SeriesGrammar("10,600,10,5", 0.32),
        SeriesGrammar("20,300,5,15", 0.36),
        SeriesGrammar("30,200,15,10", 0.38),
        SeriesGrammar("50,100,20,20", 0.34),
    ),
}


def series_grammars(series: list[str] | None = None) -> list[str]:
    """The distinct grammars of ``series`` (default all), in first-appearance order."""
    names = list(PAPER_SERIES) if series is None else series
    unknown = [s for s in names if s not in PAPER_SERIES]
    if unknown:
        raise InputError(
            f"field 'series' must be among {', '.join(PAPER_SERIES)}, got {', '.join(unknown)}"
        )
    return list(dict.fromkeys(g.grammar for s in names for g in PAPER_SERIES[s]))


@dataclass(frozen=True)
class SeedScore:
    """One grammar drawn with one seed and scored on ``tokens`` tokens."""

    grammar: str
    seed: int
    tokens: int
    documents: int
    median: float  # the dataset's H: median over documents
    mean: float
    std: float
    productions: int
    growth_rate: float  # spectral radius of the expectation matrix (> 1: supercritical)
    p_finite: float  # probability that a sentence is finite
    wall_s: float
    # The same documents with the other compressors (None: not scored).
    lzma_median: float | None = None
    lzma_mean: float | None = None
    lzma_std: float | None = None
    bz2_median: float | None = None
    bz2_mean: float | None = None
    bz2_std: float | None = None
    # floor_record(...), floor_refusal(...) ({"error": reason}), or None: not computed
    floor: dict | None = None
    floor_s: float | None = None  # seconds the floor's block tasks ran, summed

    def to_dict(self) -> dict:
        return asdict(self)


def score_H(score: dict, compressor: str = "gzip") -> float | None:
    """A score's H with ``compressor`` (gzip: ``median``), from a score dict of either format."""
    return score.get("median" if compressor == "gzip" else f"{compressor}_median")


def floor_nats(floor: dict | None) -> float | None:
    """A score's ``floor`` field in nats per token; None when refused or not computed."""
    return None if not floor or "error" in floor else float(floor["nats_per_token"])


def training_split_documents(
    spec: GrammarSpec, tokens: int, *, context_length: int = 256, sampler: str = "prefix"
):
    """The training split ``gzipscale data`` would write for ``spec``, block by block:
    (documents (n, L), their gzip ratios (n,)), same blocks and random streams."""
    from .dataset import DatasetSpec, make_block

    data = DatasetSpec(spec, tokens=tokens, context_length=context_length, sampler=sampler)
    for b in range(data.blocks("train")):
        yield make_block(data, "train", b)


def training_split_ratios(
    spec: GrammarSpec,
    tokens: int,
    *,
    context_length: int = 256,
    sampler: str = "prefix",
    compressor: str = "gzip",
) -> np.ndarray:
    """Per-document ratios of the training split ``gzipscale data`` would write for
    ``spec`` (same blocks, same random streams), without writing it: gzip's are those the
    shards record, another ``compressor``'s come from the same documents."""
    from .gzip_metric import compression_ratios

    blocks = training_split_documents(spec, tokens, context_length=context_length, sampler=sampler)
    return np.concatenate(
        [r if compressor == "gzip" else compression_ratios(d, compressor) for d, r in blocks]
    )


def floor_dataset(grammar: str, seed: int, *, context_length: int = 256, sampler: str = "prefix"):
    """The dataset whose floor a score records: the floor depends on the grammar, seed,
    context length and sampler only (the eval stream), so this is the spec
    ``gzipscale grammar --floor`` uses."""
    from .dataset import DatasetSpec

    return DatasetSpec(
        grammar=GrammarSpec.parse(grammar, seed=seed),
        tokens=context_length,
        context_length=context_length,
        sampler=sampler,
    )


def floor_record(floor) -> dict:
    """What a table records of a :class:`grammars.floor.Floor`: its manifest block
    (``Floor.to_dict``) without the per-position curves."""
    d = floor.to_dict()
    d.pop("per_position")
    d.pop("per_position_stderr")
    return d


def floor_refusal(exc: BaseException) -> dict:
    """What a table records of a refused floor: the FloorError's message (its last line,
    as the manifest does: a Ray task error puts the remote traceback before it)."""
    return {"error": str(exc).strip().splitlines()[-1]}


def score_grammar(
    grammar: str,
    seed: int,
    tokens: int,
    *,
    context_length: int = 256,
    sampler: str = "prefix",
    compressors: tuple[str, ...] = OTHER_COMPRESSORS,
) -> SeedScore:
    """Score one grammar and seed: H of the training split ``gzipscale data`` would write,
    and the same ratio of the same documents with each of ``compressors`` (lzma, bz2).

    The documents are exactly those of ``gzipscale data --grammar G --seed S --tokens T``
    (same blocks, same random streams), so the table and a sweep's datasets agree. The
    floor is not computed here (see :func:`floor_record`; the command runs it as tasks).
    """
    import time

    from .compiled import compile_grammar
    from .gzip_metric import GzipStats, compression_ratios
    from .random_pcfg import grammar_text

    unknown = [c for c in compressors if c not in OTHER_COMPRESSORS]
    if unknown:
        raise InputError(
            f"compressors beside gzip must be among {', '.join(OTHER_COMPRESSORS)}, "
            f"got {', '.join(unknown)}"
        )
    start = time.perf_counter()
    spec = GrammarSpec.parse(grammar, seed=seed)
    compiled = compile_grammar(grammar_text(spec), spec.name)
    ratios: dict[str, list[np.ndarray]] = {"gzip": [], **{c: [] for c in compressors}}
    for docs, gzip in training_split_documents(
        spec, tokens, context_length=context_length, sampler=sampler
    ):
        ratios["gzip"].append(gzip)  # the shard's own numbers
        for c in compressors:
            ratios[c].append(compression_ratios(docs, c))
    stats = {c: GzipStats.of(np.concatenate(r)) for c, r in ratios.items()}
    others = {}
    for c in compressors:
        others.update(
            {f"{c}_median": stats[c].median, f"{c}_mean": stats[c].mean, f"{c}_std": stats[c].std}
        )
    gz = stats["gzip"]
    return SeedScore(
        grammar=spec.short,
        seed=seed,
        tokens=tokens,
        documents=gz.n,
        median=gz.median,
        mean=gz.mean,
        std=gz.std,
        productions=int(len(compiled.prod_lhs)),
        growth_rate=float(compiled.spectral_radius()),
        p_finite=float(compiled.finite_probabilities()[compiled.start]),
        wall_s=time.perf_counter() - start,
        **others,
    )


@dataclass(frozen=True)
class GrammarRow:
    """A grammar's line of the compressibility table."""

    grammar: str
    series: tuple[str, ...]
    paper_H: dict[str, float | None]  # per series: the paper's value (None: not given)
    H_mean: float  # mean over seeds of the per-seed median H
    H_sd: float  # sample sd over seeds (0 with one seed)
    H_min: float
    H_max: float
    seeds: tuple[int, ...]
    p_finite_min: float
    growth_rate_max: float
    # The other compressors' H, mean and sample sd over seeds (None: not scored).
    lzma_mean: float | None = None
    lzma_sd: float | None = None
    bz2_mean: float | None = None
    bz2_sd: float | None = None
    # The floor (nats per token), mean and sample sd over the seeds that have one (None:
    # no seed has one); floor_refused: [{"seed", "reason"}] for the seeds refused.
    floor_mean: float | None = None
    floor_sd: float | None = None
    floor_seeds: tuple[int, ...] = ()
    floor_refused: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["series"] = list(self.series)
        d["seeds"] = list(self.seeds)
        d["floor_seeds"] = list(self.floor_seeds)
        d["floor_refused"] = [dict(r) for r in self.floor_refused]
        return d


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return float(statistics.fmean(values)), float(sd)


def summarise(scores: list[SeedScore], series: list[str] | None = None) -> list[GrammarRow]:
    """The compressibility table: one row per grammar, series order, H over seeds.

    Raises ValueError when a grammar of the series has no score (the table would
    otherwise silently lose a row).
    """
    by_grammar: dict[str, list[SeedScore]] = {}
    for s in scores:
        by_grammar.setdefault(s.grammar, []).append(s)
    names = list(PAPER_SERIES) if series is None else series
    rows = []
    for grammar in series_grammars(names):
        got = sorted(by_grammar.get(grammar, []), key=lambda s: s.seed)
        if not got:
            raise InputError(f"grammar {grammar} has no scores; score every grammar of the series")
        medians = [s.median for s in got]
        member = tuple(n for n in names if any(g.grammar == grammar for g in PAPER_SERIES[n]))
        others = {}
        for c in OTHER_COMPRESSORS:
            values = [getattr(s, f"{c}_median") for s in got]
            mean, sd = _mean_sd([v for v in values if v is not None])
            others.update({f"{c}_mean": mean, f"{c}_sd": sd})
        floors = [(s.seed, floor_nats(s.floor)) for s in got]
        floor_mean, floor_sd = _mean_sd([f for _, f in floors if f is not None])
        rows.append(
            GrammarRow(
                grammar=grammar,
                series=member,
                paper_H={
                    n: next(g.paper_H for g in PAPER_SERIES[n] if g.grammar == grammar)
                    for n in member
                },
                H_mean=float(statistics.fmean(medians)),
                H_sd=float(statistics.stdev(medians)) if len(medians) > 1 else 0.0,
                H_min=float(min(medians)),
                H_max=float(max(medians)),
                seeds=tuple(s.seed for s in got),
                p_finite_min=float(min(s.p_finite for s in got)),
                growth_rate_max=float(max(s.growth_rate for s in got)),
                **others,
                floor_mean=floor_mean,
                floor_sd=floor_sd,
                floor_seeds=tuple(seed for seed, f in floors if f is not None),
                floor_refused=tuple(
                    {"seed": s.seed, "reason": s.floor["error"]}
                    for s in got
                    if s.floor and "error" in s.floor
                ),
            )
        )
    return rows


def read_table(path: str | Path) -> dict:
    """A table written by ``gzipscale series --out`` (format /1 or /2, returned as written:
    a /1 table has no floors or other compressors); ValueError if it is not one."""
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    if not isinstance(table, dict) or table.get("format") not in SERIES_FORMATS:
        raise InputError(
            f"{path}: not a compressibility table (field 'format' must be one of "
            f"{', '.join(map(repr, SERIES_FORMATS))}); write one with `gzipscale series --out FILE`"
        )
    return table
