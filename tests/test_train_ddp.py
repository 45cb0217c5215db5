"""trainers/train.py under DDP: two processes over gloo, set up as Ray Train's TorchTrainer sets
them up, give the one-process run.

The dataset is made once per session by the real pipeline (shared Ray cluster).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from trainer_fixtures import free_port, quick_config, session_dataset

from gzipscale.trainers.data import load_run_data
from gzipscale.trainers.train import RunSpec, train_run
from gzipscale.vocabulary import FINISHED


@pytest.fixture(scope="session")
def dataset(ray_cluster, tmp_path_factory):
    return session_dataset(tmp_path_factory)


DDP_TOKENS = 40_960


def _ddp_worker(rank: int, world: int, port: int, spec_dict: dict, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        spec = RunSpec.from_dict(spec_dict)
        result = train_run(spec)
        out[rank] = (result.status, result.val_loss, result.steps, result.tokens)
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_matches_one_process(dataset):
    """Ray Train's TorchTrainer sets up this process group for its workers; train_run does
    not know who started it. Two halves of each batch, gradients averaged, give the
    one-process run up to float rounding."""
    spec = RunSpec(str(dataset), "tiny-1", DDP_TOKENS, quick_config())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: the same float reduction order
    try:
        single = train_run(spec, data=load_run_data(dataset, DDP_TOKENS, spec.config.eval_tokens))
    finally:
        torch.set_num_threads(threads)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_ddp_worker, args=(2, free_port(), spec.to_dict(), out), nprocs=2, join=True)
        results = dict(out)
    assert set(results) == {0, 1}
    for status, val_loss, steps, tokens in results.values():
        assert status == FINISHED
        assert (steps, tokens) == (single.steps, single.tokens)
        assert val_loss == pytest.approx(single.val_loss, abs=2e-4)
