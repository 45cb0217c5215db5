"""``gzipscale series`` with floors and two more compressors (format gzipscale-series/2).

gzip H must not change (the recorded /1 table of tests/data/reproduction_run is the
reference); lzma and bz2 are computed on the very documents gzip scores; each floor is the
one ``gzipscale grammar --floor`` and the manifest (``pipeline.compute_floor``) compute; a
refused floor records its reason without stopping the series; /1 tables stay readable.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import zlib
from pathlib import Path

import numpy as np
import pytest

from gzipscale.cli import main

RECORDED = Path(__file__).parent / "data" / "reproduction_run" / "series.json"


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- the compressors ------------------------------------------------------------------------


def _documents(grammar: str, seed: int, tokens: int) -> np.ndarray:
    from gzipscale.grammars.series import training_split_documents
    from gzipscale.grammars.spec import GrammarSpec

    spec = GrammarSpec.parse(grammar, seed=seed)
    return np.concatenate([d for d, _ in training_split_documents(spec, tokens)])


def test_gzip_is_the_default_and_its_numbers_do_not_change():
    from gzipscale.grammars.gzip_metric import compression_ratios, gzip_ratio, gzip_ratios

    docs = _documents("20,300,5,15", 1, 8192)
    direct = np.array([len(gzip.compress(d.astype(">i4").tobytes(), 9)) / 1024 for d in docs])
    assert np.array_equal(compression_ratios(docs), direct)
    assert np.array_equal(compression_ratios(docs, "gzip"), gzip_ratios(docs))
    assert gzip_ratio(docs[0]) == direct[0]
    with pytest.raises(ValueError, match="compressor must be one of gzip, lzma, bz2"):
        compression_ratios(docs, "zstd")


@pytest.mark.parametrize(("grammar", "seed"), [("3,300,2,2", 0), ("20,300,5,15", 1)])
def test_series_gzip_scores_equal_the_recorded_v1_table(grammar, seed):
    """The /1 table was written before lzma, bz2 and the floor were added: same H."""
    from gzipscale.grammars.series import score_grammar

    recorded = json.loads(RECORDED.read_text())
    assert recorded["format"] == "gzipscale-series/1"
    want = next(s for s in recorded["scores"] if s["grammar"] == grammar and s["seed"] == seed)
    got = score_grammar(grammar, seed, recorded["tokens"]).to_dict()
    for key in ("documents", "median", "mean", "std", "productions"):
        assert got[key] == want[key], key
    # Spectral quantities come from an eigen-solve whose last bit depends on the BLAS build
    # and its threads: equal to rounding, not bit for bit.
    for key in ("growth_rate", "p_finite"):
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-15), key
    assert got["floor"] is None  # the task scores; floors are separate tasks


def test_lzma_and_bz2_are_computed_on_the_same_documents_as_gzip():
    from gzipscale.grammars.gzip_metric import compression_ratios
    from gzipscale.grammars.series import score_grammar

    grammar, seed, tokens = "30,200,15,10", 1, 8192
    docs = _documents(grammar, seed, tokens)
    raws = [d.astype(">i4").tobytes() for d in docs]
    # The plain stdlib calls (xz -9, bzip2 -9, gzip -9), container included, over raw size.
    xz = np.array([len(lzma.compress(r, preset=9)) for r in raws]) / 1024
    bz = np.array([len(bz2.compress(r, 9)) for r in raws]) / 1024
    gz = np.array([len(zlib.compress(r, 9, wbits=31)) for r in raws]) / 1024
    assert compression_ratios(docs[:1], "lzma")[0] == xz[0]
    assert np.array_equal(compression_ratios(docs, "lzma"), xz)
    assert np.array_equal(compression_ratios(docs, "bz2"), bz)
    score = score_grammar(grammar, seed, tokens)
    assert score.documents == len(docs) == 32
    assert score.median == np.median(gz) and score.mean == pytest.approx(gz.mean(), abs=1e-15)
    assert score.lzma_median == np.median(xz) and score.bz2_median == np.median(bz)
    assert score.lzma_mean == pytest.approx(xz.mean(), abs=1e-15)
    assert score.bz2_std == pytest.approx(bz.std(ddof=1), abs=1e-15)
    assert len({score.median, score.lzma_median, score.bz2_median}) == 3  # three compressors


# -- floors ---------------------------------------------------------------------------------


def test_series_floors_are_those_of_grammar_floor_and_the_manifest(ray_cluster, capsys):
    from gzipscale.grammars.pipeline import compute_floor
    from gzipscale.grammars.series import floor_dataset
    from gzipscale.grammars.series_command import score_series

    documents = 1100  # two eval blocks of 1024: the floor joins two tasks
    scores = score_series(
        ["3,20,2,2", "20,300,5,15"], [0, 1], 4096, floor_documents=documents, workers=2
    )
    assert [(s.grammar, s.seed) for s in scores] == [
        ("3,20,2,2", 0),
        ("3,20,2,2", 1),
        ("20,300,5,15", 0),
        ("20,300,5,15", 1),
    ]
    for grammar in ("3,20,2,2", "20,300,5,15"):
        code, printed, err = run_cli(
            capsys, "grammar", grammar, "--seeds", "0,1", "--floor", "--documents",
            str(documents), "--json",
        )  # fmt: skip
        assert code == 0, err
        for row in json.loads(printed)["grammars"]:
            seed = row["grammar"]["seed"]
            mine = next(s.floor for s in scores if s.grammar == grammar and s.seed == seed)
            assert mine == row["floor"]
            assert mine["documents"] == documents
            assert next(s.floor_s for s in scores if s.grammar == grammar and s.seed == seed) > 0
            for key in ("nats_per_token", "stderr", "derivation_bound", "ambiguity"):
                assert key in mine
    manifest = compute_floor(floor_dataset("20,300,5,15", 1), documents)
    manifest.pop("per_position"), manifest.pop("per_position_stderr")
    assert manifest == scores[3].floor


def test_a_refused_floor_records_its_reason_and_the_series_goes_on(ray_cluster, monkeypatch):
    from gzipscale.grammars.floor import FloorError, dataset_floor
    from gzipscale.grammars.series import PAPER_SERIES, SeriesGrammar, floor_dataset, summarise
    from gzipscale.grammars.series_command import _floor_cell, score_series

    # A 50-item chart cap refuses 30,200,15,10 (its long sentences) but not 3,20,2,2.
    with pytest.raises(FloorError) as refused:
        dataset_floor(floor_dataset("30,200,15,10", 0), documents=10, max_items=50)
    scores = score_series(
        ["30,200,15,10", "3,20,2,2"], [0, 1], 2048, floor_documents=10, max_items=50
    )
    by = {(s.grammar, s.seed): s for s in scores}
    assert len(by) == 4
    assert by["30,200,15,10", 0].floor == {"error": str(refused.value)}
    assert "passed 50 items" in by["30,200,15,10", 0].floor["error"]
    assert by["30,200,15,10", 0].median > 0 and by["30,200,15,10", 0].lzma_median > 0
    assert by["3,20,2,2", 0].floor["nats_per_token"] > 0
    assert by["3,20,2,2", 1].floor["documents"] == 10

    # The table's rows: mean and sd over the seeds with a floor, the refused with reasons
    # (an ad-hoc series of the two grammars: the paper's are fixed).
    two = (SeriesGrammar("30,200,15,10", 0.38), SeriesGrammar("3,20,2,2", 0.11))
    monkeypatch.setitem(PAPER_SERIES, "test-two", two)
    rows = {r.grammar: r for r in summarise(scores, ["test-two"])}
    bad, good = rows["30,200,15,10"], rows["3,20,2,2"]
    assert bad.floor_mean is None and bad.floor_seeds == ()
    assert [r["seed"] for r in bad.floor_refused] == [0, 1]
    assert bad.floor_refused[0]["reason"] == str(refused.value)
    assert _floor_cell(bad.to_dict(), True) == "refused (2/2)"
    floors = [by["3,20,2,2", s].floor["nats_per_token"] for s in (0, 1)]
    assert good.floor_mean == pytest.approx(np.mean(floors))
    assert good.floor_sd == pytest.approx(np.std(floors, ddof=1))
    assert good.floor_seeds == (0, 1) and good.floor_refused == ()
    assert _floor_cell(good.to_dict(), True).startswith(f"{good.floor_mean:.4f} ± ")


def test_series_without_floor_and_bad_floor_documents(ray_cluster, tmp_path, capsys):
    from gzipscale.grammars.series import read_table

    out = tmp_path / "s.json"
    args = ("series", "--series", "same-H", "--seeds", "0", "--tokens", "2K", "--no-real")
    code, printed, err = run_cli(capsys, *args, "--no-floor", "--out", str(out))
    assert code == 0, err
    table = read_table(out)
    assert table["format"] == "gzipscale-series/2" and table["floor_documents"] is None
    assert table["command"].endswith("--no-floor --no-real --out " + str(out))
    assert set(table["compressors"]) == {"gzip", "lzma", "bz2"}
    assert all(s["floor"] is None for s in table["scores"])
    assert all(r["floor_mean"] is None and r["floor_refused"] == [] for r in table["rows"])
    assert all(r["lzma_mean"] > 0 and r["bz2_mean"] > 0 for r in table["rows"])
    assert "lzma" in printed and "floor" in printed
    code, _, err = run_cli(capsys, *args, "--floor-documents", "1")
    assert code == 2 and "floor_documents" in err


# -- readers of both formats ----------------------------------------------------------------


def _v2_from(v1: dict) -> dict:
    """A /2 table with the /1 table's rows and scores plus made-up floors and compressors."""
    table = json.loads(json.dumps(v1))
    table["format"] = "gzipscale-series/2"
    table["compressors"] = {"gzip": "", "lzma": "", "bz2": ""}
    table["floor_documents"] = 2000
    for i, s in enumerate(table["scores"]):
        s.update({f"{c}_{k}": s[k] * 0.9 for c in ("lzma", "bz2") for k in ("median", "mean")})
        s.update({"lzma_std": 0.0, "bz2_std": 0.0})
        s["floor"] = {"error": "grammar g: refused"} if i == 0 else {
            "nats_per_token": 3 * s["median"], "stderr": 0.001, "documents": 2000,
            "derivation_bound": None, "ambiguity": None,
        }  # fmt: skip
    for r in table["rows"]:
        r.update({"lzma_mean": r["H_mean"], "lzma_sd": 0.0, "bz2_mean": r["H_mean"]})
        r.update({"bz2_sd": 0.0, "floor_mean": 3 * r["H_mean"], "floor_sd": 0.0})
        r.update({"floor_seeds": r["seeds"], "floor_refused": []})
    return table


def test_v1_and_v2_tables_are_read_by_the_report_readers(tmp_path):
    from gzipscale.analysis.compressor_floor import analyse_table
    from gzipscale.analysis.figures import plot_compressibility
    from gzipscale.analysis.reproduction_md import _compressibility_section
    from gzipscale.analysis.tables import compressibility_frame
    from gzipscale.grammars.series import read_table
    from gzipscale.helpers import InputError

    v1 = read_table(RECORDED)
    assert v1["format"] == "gzipscale-series/1"
    v2_path = tmp_path / "v2.json"
    v2_path.write_text(json.dumps(_v2_from(v1)))
    v2 = read_table(v2_path)
    for table in (v1, v2):
        frame = compressibility_frame(table)
        assert len(frame) == 10 and list(frame["H_mean"]) == [r["H_mean"] for r in v1["rows"]]
        text = _compressibility_section(table)
        assert f"{v1['rows'][0]['H_mean']:.3f} ± {v1['rows'][0]['H_sd']:.3f}" in text
        png = tmp_path / f"{table['format'][-1]}.png"
        plot_compressibility(table, png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="gzipscale-series/1 table has no floors"):
        analyse_table(v1)
    analysis = analyse_table(v2)
    assert len(analysis.points) == 19 and len(analysis.refused) == 1
    assert analysis.fits["gzip"].slope == pytest.approx(3.0)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "gzipscale-series/3"}')
    with pytest.raises(ValueError, match="gzipscale-series/1', 'gzipscale-series/2'"):
        read_table(bad)
