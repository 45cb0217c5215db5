"""The gzip metric against hand-computed values and the paper's own implementation."""

from __future__ import annotations

import gzip
import io
import zlib

import numpy as np
import pytest

from gzipscale.grammars.corpora import (
    byte_token_documents,
    real_data_scores,
    score_path,
    score_text,
)
from gzipscale.grammars.gzip_metric import (
    GzipStats,
    gzip_ratio,
    gzip_ratios,
    gzip_ratios_chunks,
    token_bytes,
)


def paper_gzipability(tokens) -> float:
    """The paper's code path: big-endian 4-byte ints through gzip.GzipFile at level 9."""
    raw = b"".join(int(t).to_bytes(4, "big", signed=True) for t in tokens)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as f:
        f.write(raw)
    return buf.tell() / len(raw)


def test_all_zero_document_is_0_0283():
    # 1024 zero bytes deflate to 11 bytes; + 10 header + 8 trailer = 29; 29 / 1024
    assert gzip_ratio(np.zeros(256, np.int32)) == pytest.approx(0.0283, abs=5e-5)
    assert gzip_ratio(np.zeros(256, np.int32)) == 29 / 1024


def test_hand_computed_values():
    # header and trailer counted: an empty-content gzip stream is 20 bytes
    assert len(gzip.compress(b"", 9)) == 20
    doc = np.full(256, 7)
    expected = (len(zlib.compress(bytes([0, 0, 0, 7]) * 256, 9, wbits=-15)) + 18) / 1024
    assert gzip_ratio(doc) == expected
    assert token_bytes([1, 256, -1]) == b"\x00\x00\x00\x01\x00\x00\x01\x00\xff\xff\xff\xff"


def test_matches_the_paper_implementation_exactly():
    rng = np.random.default_rng(0)
    docs = np.concatenate(
        [rng.integers(0, 300, (20, 256)), rng.integers(0, 4, (20, 256)), np.zeros((1, 256), int)]
    )
    ours = gzip_ratios(docs)
    for doc, value in zip(docs, ours, strict=True):
        assert value == paper_gzipability(doc)
        assert value == gzip_ratio(doc)


def test_uniform_random_ids_match_the_papers_sanity_values():
    rng = np.random.default_rng(1)
    assert np.median(gzip_ratios(rng.integers(1, 301, (300, 256)))) == pytest.approx(0.50, abs=0.03)
    assert np.median(gzip_ratios(rng.integers(1, 2001, (300, 256)))) == pytest.approx(
        0.61, abs=0.03
    )


def test_stats_summary():
    s = GzipStats.of([0.1, 0.2, 0.3, 0.4])
    assert s.median == pytest.approx(0.25)
    assert s.mean == pytest.approx(0.25)
    assert s.std == pytest.approx(np.std([0.1, 0.2, 0.3, 0.4], ddof=1))
    assert s.iqr == pytest.approx(0.325 - 0.175)
    assert s.n == 4
    with pytest.raises(ValueError):
        GzipStats.of([])


def test_text_and_byte_token_scoring():
    data = (b"the quick brown fox jumps over the lazy dog. " * 200)[:8192]
    ratios = gzip_ratios_chunks(data, 1024)
    assert len(ratios) == 8
    assert ratios[0] == len(gzip.compress(data[:1024], 9)) / 1024
    docs = byte_token_documents(data, 256)
    assert docs.shape == (32, 256) and docs[0, 0] == ord("t")
    text, tokens = score_text("fox", data)
    assert text.kind == "text" and tokens.kind == "byte-tokens"
    assert text.stats.n == 8 and tokens.stats.n == 32
    with pytest.raises(ValueError, match="at least 1024"):
        score_text("tiny", b"abc")


def test_real_data_is_scored_and_prose_is_less_compressible_than_code():
    scores = {(s.name, s.kind): s.stats for s in real_data_scores()}
    code = scores[("python-stdlib", "text")]
    assert code.n > 1000 and 0.2 < code.median < 0.6
    if ("python-docs", "text") in scores:  # some distributions strip pydoc_data
        assert scores[("python-docs", "text")].median > code.median


def test_score_user_token_corpora(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(2)
    docs = rng.integers(1, 301, (50, 256))
    np.save(tmp_path / "docs.npy", docs)
    np.save(tmp_path / "stream.npy", docs.ravel())
    pq.write_table(pa.table({"ids": [list(map(int, d)) for d in docs]}), tmp_path / "docs.parquet")
    expected = np.median(gzip_ratios(docs))
    for name in ("docs.npy", "stream.npy", "docs.parquet"):
        (score,) = score_path(tmp_path / name)
        assert score.kind == "tokens"
        assert score.stats.median == expected and score.stats.n == 50
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="list-of-integers column"):
        score_path(tmp_path / "bad.parquet")
    with pytest.raises(FileNotFoundError):
        score_path(tmp_path / "missing.npy")
