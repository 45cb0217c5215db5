"""Shared by the trainers/ tests: the session's dataset, its sizes, the papers' counts, and a
quick training configuration.

A plain module, not a conftest: ``from trainer_fixtures import ...`` finds it because pytest puts
tests/ on ``sys.path``. It holds no pytest fixtures itself: pytest would give every module that
imports a session fixture its own copy, and make the dataset once per module. Each test module
declares its ``dataset`` fixture in three lines that call :func:`session_dataset`, which makes
it once per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gzipscale.grammars.dataset import DatasetSpec
from gzipscale.grammars.pipeline import generate_dataset
from gzipscale.grammars.spec import GrammarSpec
from gzipscale.trainers.config import TrainConfig

PAPER_COUNTS = [4_178_368, 8_848_768, 20_320_000, 58_994_176, 275_295_232, 1_389_492_224]

TRAIN_TOKENS = 240_000
EVAL_TOKENS = 32_768

_datasets: dict[Path, Path] = {}


def session_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trainers' dataset, made by the real pipeline (needs the shared Ray cluster) the first
    time a test session asks for it; the same directory after that."""
    session = tmp_path_factory.getbasetemp()
    if session not in _datasets:
        out = tmp_path_factory.mktemp("trainers") / "ds"
        spec = DatasetSpec(
            GrammarSpec.parse("10,300,3,5", seed=1), tokens=TRAIN_TOKENS, eval_tokens=EVAL_TOKENS
        )
        generate_dataset(spec, out)
        _datasets[session] = out
    return _datasets[session]


def free_port() -> int:
    """A TCP port free on this machine now, for a test's gloo process group."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quick_config(**kw) -> TrainConfig:
    base = dict(eval_tokens=8192, batch_size=8, checkpoint_every=0, warmup_steps=2)
    base.update(kw)
    return TrainConfig(**base)
