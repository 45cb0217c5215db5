"""Ray Data pipeline and dataset directories: determinism across worker counts, prefixes,
idempotent re-runs, resuming an interrupted run, refusing to overwrite, checksums."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from gzipscale.grammars.dataset import (
    INCOMPLETE,
    DatasetError,
    DatasetSpec,
    build_shard,
    load_tokens,
    read_manifest,
    verify_dataset,
)
from gzipscale.grammars.gzip_metric import gzip_ratios
from gzipscale.grammars.pipeline import generate_dataset
from gzipscale.grammars.spec import GrammarSpec
from gzipscale.vocabulary import MANIFEST_FILE

SMALL = dict(block_docs=64)  # small blocks so a small dataset spans several shards


def small_spec(tokens=60_000, eval_tokens=8_000, seed=3, **kw):
    return DatasetSpec(
        GrammarSpec(10, 300, 3, 5, seed=seed),
        tokens=tokens,
        eval_tokens=eval_tokens,
        **{**SMALL, **kw},
    )


def snapshot(path):
    return {
        p.relative_to(path).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_identical_bytes_whatever_the_number_of_workers(ray_cluster, tmp_path):
    spec = small_spec()
    m1 = generate_dataset(spec, tmp_path / "w1", workers=1)
    m2 = generate_dataset(spec, tmp_path / "w2", workers=2)
    assert m1["documents"] == 235 and m1["tokens"] == 235 * 256
    assert len(m1["shards"]) == 4 and m1["eval"]["documents"] == 32
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]
    assert m1["eval"]["shards"] == m2["eval"]["shards"]
    a, b = load_tokens(tmp_path / "w1"), load_tokens(tmp_path / "w2")
    np.testing.assert_array_equal(a, b)
    assert a.shape == (235, 256)
    # gzip column is each document's score; manifest H is their median
    table = pq.read_table(tmp_path / "w1" / m1["shards"][0]["path"])
    assert table.column_names == ["doc", "tokens", "gzip"]
    np.testing.assert_array_equal(table["gzip"].to_numpy(), gzip_ratios(a[:64]))
    all_gzip = np.concatenate(
        [pq.read_table(tmp_path / "w1" / s["path"])["gzip"].to_numpy() for s in m1["shards"]]
    )
    assert m1["gzip"]["median"] == pytest.approx(np.median(all_gzip))
    assert m1["gzip"]["n"] == 235


def test_manifest_contents(ray_cluster, tmp_path):
    spec = small_spec(tokens=20_000)
    m = generate_dataset(spec, tmp_path / "d")
    on_disk = read_manifest(tmp_path / "d")
    for key in (
        "tokens",
        "documents",
        "context_length",
        "grammar",
        "grammar_text",
        "gzip",
        "shards",
    ):
        assert key in on_disk
    assert on_disk["grammar"] == {
        "nonterminals": 10,
        "terminals": 300,
        "max_rhs_len": 3,
        "max_rhs_options": 5,
        "seed": 3,
    }
    assert set(on_disk["gzip"]) >= {"median", "mean", "std", "n", "iqr"}
    assert all(len(s["sha256"]) == 64 for s in on_disk["shards"])
    assert m["vocab_size"] == 301 and m["separator"] == 0
    assert not (tmp_path / "d" / INCOMPLETE).exists()


def test_smaller_dataset_is_a_prefix_of_a_larger_one(ray_cluster, tmp_path):
    generate_dataset(small_spec(tokens=30_000), tmp_path / "small")
    generate_dataset(small_spec(tokens=60_000), tmp_path / "large")
    small, large = load_tokens(tmp_path / "small"), load_tokens(tmp_path / "large")
    np.testing.assert_array_equal(small, large[: len(small)])
    # the eval split is the same stream in both, independent of the training one
    np.testing.assert_array_equal(
        load_tokens(tmp_path / "small", "eval"), load_tokens(tmp_path / "large", "eval")
    )
    assert not np.array_equal(load_tokens(tmp_path / "small", "eval"), small[:32])


def test_rerun_reuses_complete_dataset_without_touching_it(ray_cluster, tmp_path):
    spec = small_spec(tokens=20_000)
    generate_dataset(spec, tmp_path / "d")
    before = snapshot(tmp_path / "d")
    again = generate_dataset(spec, tmp_path / "d")
    assert again["reused"] is True
    assert snapshot(tmp_path / "d") == before


def test_different_dataset_in_out_is_refused_and_untouched(ray_cluster, tmp_path):
    generate_dataset(small_spec(tokens=20_000), tmp_path / "d")
    before = snapshot(tmp_path / "d")
    with pytest.raises(DatasetError, match=r"grammar.seed: 3 there, 4 requested"):
        generate_dataset(small_spec(tokens=20_000, seed=4), tmp_path / "d")
    with pytest.raises(DatasetError, match=r"tokens: 20000 there, 40000 requested"):
        generate_dataset(small_spec(tokens=40_000), tmp_path / "d")
    assert snapshot(tmp_path / "d") == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a gzipscale dataset"):
        generate_dataset(small_spec(), foreign)
    assert os.listdir(foreign) == ["notes.txt"]


def test_interrupted_run_never_looks_complete_and_resumes(ray_cluster, tmp_path):
    spec = small_spec()
    out = tmp_path / "d"
    # Simulate a run killed after two shards and mid-way through writing a third.
    from gzipscale.grammars.dataset import prepare_output
    from gzipscale.helpers import atomic_write_bytes

    assert prepare_output(out, spec) is None
    for block in (0, 2):
        rec = build_shard(spec, "train", block)
        atomic_write_bytes(out / rec["path"], rec["data"])
    (out / "train" / ".part-000001.parquet.tmp-999-deadbeef").write_bytes(b"half a shard")
    with pytest.raises(DatasetError, match="incomplete"):
        read_manifest(out)
    with pytest.raises(DatasetError, match="incomplete"):
        load_tokens(out)

    resumed = generate_dataset(spec, out)
    fresh = generate_dataset(spec, tmp_path / "fresh")
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in fresh["shards"]]
    assert not list(out.rglob("*.tmp-*"))
    assert not (out / INCOMPLETE).exists() and (out / MANIFEST_FILE).exists()
    assert sorted(p.name for p in (out / "train").iterdir()) == [
        f"part-{i:06d}.parquet" for i in range(4)
    ]


def test_checksums_catch_corruption(ray_cluster, tmp_path):
    generate_dataset(small_spec(tokens=20_000), tmp_path / "d")
    manifest = verify_dataset(tmp_path / "d")
    shard = tmp_path / "d" / manifest["shards"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="fails its checksum"):
        verify_dataset(tmp_path / "d")
    shard.unlink()
    with pytest.raises(DatasetError, match="missing"):
        verify_dataset(tmp_path / "d", checksums=False)


def test_load_tokens_prefix_and_limits(ray_cluster, tmp_path):
    generate_dataset(small_spec(tokens=20_000), tmp_path / "d")
    first = load_tokens(tmp_path / "d", max_tokens=1000)
    assert first.shape == (4, 256)
    np.testing.assert_array_equal(first, load_tokens(tmp_path / "d")[:4])
    with pytest.raises(DatasetError, match="20224 train tokens, 10000000 requested"):
        load_tokens(tmp_path / "d", max_tokens=10_000_000)
    with pytest.raises(DatasetError, match="not a dataset directory"):
        load_tokens(tmp_path)


def test_manifest_is_valid_json_with_grammar_text_that_loads(ray_cluster, tmp_path):
    import nltk

    generate_dataset(small_spec(tokens=20_000), tmp_path / "d")
    manifest = json.loads((tmp_path / "d" / MANIFEST_FILE).read_text())
    grammar = nltk.PCFG.fromstring(manifest["grammar_text"])
    assert len(grammar.productions(lhs=grammar.start())) == 10
