"""The paper's grammar series and their gzip compressibility over several seeds.

Pandey (2024) uses three series of random PCFGs (its Table 1): one with the
vocabulary (terminals) held at 300, a main series whose vocabulary grows with the
complexity, and four grammars of about the same H but very different syntax.  H varies
with the grammar's random draw, so the compressibility table reports each grammar's
median H as mean ± sd over seeds.

Everything here is pure (no Ray): :func:`score_grammar` scores one grammar and seed the
way ``gzipscale data`` would write its training split, and :func:`summarise` turns the
per-seed scores into the table.  :mod:`grammars.series_command` fans the work out.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gzipscale.helpers import InputError

from .spec import GrammarSpec

SERIES_FORMAT = "gzipscale-series/1"  # the "format" field of a table written with --out


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

    def to_dict(self) -> dict:
        return asdict(self)


def training_split_ratios(
    spec: GrammarSpec, tokens: int, *, context_length: int = 256, sampler: str = "prefix"
) -> np.ndarray:
    """Per-document gzip ratios of the training split ``gzipscale data`` would write
    for ``spec`` (same blocks, same random streams), without writing it."""
    from .dataset import DatasetSpec, make_block

    data = DatasetSpec(spec, tokens=tokens, context_length=context_length, sampler=sampler)
    return np.concatenate([make_block(data, "train", b)[1] for b in range(data.blocks("train"))])


def score_grammar(
    grammar: str, seed: int, tokens: int, *, context_length: int = 256, sampler: str = "prefix"
) -> SeedScore:
    """Score one grammar and seed: H of the training split ``gzipscale data`` would write.

    The documents are exactly those of ``gzipscale data --grammar G --seed S --tokens T``
    (same blocks, same random streams), so the table and a sweep's datasets agree.
    """
    import time

    from .compiled import compile_grammar
    from .gzip_metric import GzipStats
    from .random_pcfg import grammar_text

    start = time.perf_counter()
    spec = GrammarSpec.parse(grammar, seed=seed)
    compiled = compile_grammar(grammar_text(spec), spec.name)
    stats = GzipStats.of(
        training_split_ratios(spec, tokens, context_length=context_length, sampler=sampler)
    )
    return SeedScore(
        grammar=spec.short,
        seed=seed,
        tokens=tokens,
        documents=stats.n,
        median=stats.median,
        mean=stats.mean,
        std=stats.std,
        productions=int(len(compiled.prod_lhs)),
        growth_rate=float(compiled.spectral_radius()),
        p_finite=float(compiled.finite_probabilities()[compiled.start]),
        wall_s=time.perf_counter() - start,
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["series"] = list(self.series)
        d["seeds"] = list(self.seeds)
        return d


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
            )
        )
    return rows


def read_table(path: str | Path) -> dict:
    """A table written by ``gzipscale series --out``; ValueError if it is not one."""
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    if not isinstance(table, dict) or table.get("format") != SERIES_FORMAT:
        raise InputError(
            f"{path}: not a compressibility table (field 'format' must be {SERIES_FORMAT!r}); "
            "write one with `gzipscale series --out FILE`"
        )
    return table
