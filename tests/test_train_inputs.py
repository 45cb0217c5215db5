"""What a run is handed and checks before its first step: the run data of trainers/data.py
(nested prefixes, sizes the dataset must have, damaged datasets refused) and the memory check
of trainers/memory.py.

The dataset is made once per session by the real pipeline (shared Ray cluster).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from trainer_fixtures import EVAL_TOKENS, TRAIN_TOKENS, quick_config, session_dataset

from gzipscale.grammars.dataset import DatasetError
from gzipscale.trainers.data import load_run_data
from gzipscale.trainers.memory import MemoryTooSmall
from gzipscale.trainers.shapes import PAPER_VOCAB
from gzipscale.trainers.train import RunSpec, train_run


@pytest.fixture(scope="session")
def dataset(ray_cluster, tmp_path_factory):
    return session_dataset(tmp_path_factory)


def test_prefixes_are_nested(dataset):
    small = load_run_data(dataset, 25_600, 8192)
    large = load_run_data(dataset, 102_400, 8192)
    assert torch.equal(large.train[: len(small.train)], small.train)
    assert torch.equal(large.eval, small.eval)


def test_more_tokens_than_the_dataset_is_an_error(dataset):
    with pytest.raises(DatasetError, match="field 'tokens'.*gzipscale data --tokens"):
        load_run_data(dataset, TRAIN_TOKENS * 2, 8192)
    with pytest.raises(DatasetError, match="field 'eval_tokens'"):
        load_run_data(dataset, 1000, EVAL_TOKENS * 2)


def test_incomplete_or_corrupt_dataset_is_refused(dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    shard = broken / "train" / "part-000000.parquet"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    with pytest.raises(DatasetError, match="fails its checksum|not a readable Parquet file"):
        load_run_data(broken, 1000, 1000)
    (broken / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="not a dataset directory"):
        load_run_data(broken, 1000, 1000)


def test_model_too_big_for_memory_names_what_it_needs(dataset, monkeypatch):
    import gzipscale.trainers.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 64 * 1024**2)
    data = load_run_data(dataset, 10_240, 8192)
    spec = RunSpec(str(dataset), "paper-59m", 10_240, quick_config(vocab_size=PAPER_VOCAB))
    with pytest.raises(MemoryTooSmall, match=r"needs about [\d.]+ GiB .* only 0.1 GiB"):
        train_run(spec, data=data)
