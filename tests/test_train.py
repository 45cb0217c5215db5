"""trainers/train.py: real training steps on tiny models, the held-out evaluation, bit-identical
resume and restarts, checkpoint pruning, and runs that fail (divergence, NaN, a broken compiler).

The dataset is made once per session by the real pipeline (shared Ray cluster).
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from trainer_fixtures import EVAL_TOKENS, TRAIN_TOKENS, quick_config, session_dataset

from gzipscale.grammars.dataset import DatasetSpec
from gzipscale.grammars.pipeline import generate_dataset
from gzipscale.grammars.spec import GrammarSpec
from gzipscale.trainers.config import TrainConfig
from gzipscale.trainers.data import load_run_data
from gzipscale.trainers.model import Llama
from gzipscale.trainers.session import LocalSession
from gzipscale.trainers.shapes import PAPER_VOCAB, get_shape
from gzipscale.trainers.train import RunSpec, TrainError, evaluate, train_run
from gzipscale.vocabulary import FAILED, FINISHED


@pytest.fixture(scope="session")
def dataset(ray_cluster, tmp_path_factory):
    return session_dataset(tmp_path_factory)


@pytest.fixture(scope="session")
def run_data(dataset):
    return load_run_data(dataset, TRAIN_TOKENS, EVAL_TOKENS)


def unigram_entropy(tokens: torch.Tensor) -> float:
    counts = np.bincount(tokens.flatten().numpy())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_tiny_model_learns_well_below_the_unigram_entropy(dataset, run_data):
    spec = RunSpec(str(dataset), "tiny-2", TRAIN_TOKENS, quick_config(eval_tokens=16384))
    result = train_run(spec, data=load_run_data(dataset, TRAIN_TOKENS, 16384))
    h1 = unigram_entropy(run_data.train)
    assert result.status == FINISHED
    assert result.val_loss < h1 - 1.0, (result.val_loss, h1)
    assert result.curve[-1]["train_loss"] < result.curve[0]["train_loss"] - 1.0
    assert result.tokens == TRAIN_TOKENS // 256 * 256 + (256 if TRAIN_TOKENS % 256 else 0)
    assert result.steps == math.ceil(result.tokens / 256 / 8)
    assert result.params == get_shape("tiny-2").params(run_data.vocab_size)
    assert result.vocab_size == run_data.vocab_size == 301
    assert result.tokens_per_s > 0 and result.wall_s > 0


def test_default_eval_size_gives_a_standard_error_below_0_005(ray_cluster, tmp_path):
    out = tmp_path / "ds"
    spec = DatasetSpec(GrammarSpec.parse("20,300,5,10", seed=0), tokens=256, eval_tokens=131_072)
    generate_dataset(spec, out)
    cfg = TrainConfig()
    data = load_run_data(out, 256, cfg.eval_tokens)
    torch.manual_seed(0)
    model = Llama(get_shape("tiny-1"), data.vocab_size, data.context_length)
    _, se = evaluate(
        model, data.eval, 64, torch.device("cpu"), torch.autocast("cpu", enabled=False)
    )
    # An untrained model's losses vary most between documents; a trained one less.
    assert 0 < se < 0.005


# -- resume and checkpoints ------------------------------------------------------------


def test_interrupted_run_resumes_bit_identical(dataset, run_data, tmp_path):
    cfg = quick_config(checkpoint_every=5, keep_checkpoints=100)
    spec = RunSpec(str(dataset), "tiny-1", 80_000, cfg)
    data = load_run_data(dataset, 80_000, cfg.eval_tokens)
    full_session = LocalSession(tmp_path / "full", keep=100)
    full = train_run(spec, session=full_session, data=data)
    assert full.status == FINISHED and full.steps == 40

    # Interrupted twice, at steps that are not checkpoint boundaries, then finished.
    part = LocalSession(tmp_path / "part", keep=100)
    first = train_run(spec, session=part, data=data, stop_after_steps=13)
    assert first.status == "interrupted" and first.steps == 13
    second = train_run(spec, session=part, data=data, stop_after_steps=9)
    assert second.resumed_from_step == 13 and second.steps == 22
    last = train_run(spec, session=part, data=data)
    assert last.resumed_from_step == 22
    assert last.val_loss == full.val_loss  # bit-identical, not approximately equal
    assert [p["train_loss"] for p in last.curve if p["step"] in (5, 10, 30, 40)] == [
        p["train_loss"] for p in full.curve if p["step"] in (5, 10, 30, 40)
    ]

    # Restarting from any one of the uninterrupted run's checkpoints ends the same way.
    *during, final_ckpt = full_session.checkpoints()
    for ckpt in during[1::3]:
        run_dir = tmp_path / f"from-{ckpt.stem}"
        (run_dir / "checkpoints").mkdir(parents=True)
        shutil.copy(ckpt, run_dir / "checkpoints" / ckpt.name)
        again = train_run(spec, session=LocalSession(run_dir), data=data)
        assert again.resumed_from_step == int(ckpt.stem.split("-")[1])
        assert again.val_loss == full.val_loss
    # From the final checkpoint (a run that ended just before its driver died): the same
    # result is reported again, not a re-evaluation.
    run_dir = tmp_path / "from-final"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(final_ckpt, run_dir / "checkpoints" / final_ckpt.name)
    assert train_run(spec, session=LocalSession(run_dir), data=data) == full


def test_checkpoints_are_atomic_and_pruned(dataset, tmp_path):
    spec = RunSpec(str(dataset), "tiny-1", 40_960, quick_config(checkpoint_every=4))
    session = LocalSession(tmp_path, keep=2)
    train_run(spec, session=session, data=load_run_data(dataset, 40_960, 8192))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000016.pt", "step-00000020.pt"]  # newest two, no temp files


def test_resume_refuses_a_checkpoint_of_another_run(dataset, tmp_path):
    data = load_run_data(dataset, 40_960, 8192)
    session = LocalSession(tmp_path)
    spec = RunSpec(str(dataset), "tiny-1", 40_960, quick_config(checkpoint_every=4))
    train_run(spec, session=session, data=data, stop_after_steps=4)
    other = RunSpec(str(dataset), "tiny-1", 40_960, quick_config(checkpoint_every=4, lr=1e-2))
    with pytest.raises(TrainError, match="different run spec"):
        train_run(other, session=session, data=data)


# -- failed runs and fallbacks ---------------------------------------------------------


def test_nan_loss_stops_the_run_as_failed_and_never_reports_a_loss(dataset, tmp_path):
    data = load_run_data(dataset, 40_960, 8192)
    spec = RunSpec(str(dataset), "tiny-1", 40_960, quick_config(checkpoint_every=4))
    session = LocalSession(tmp_path)
    train_run(spec, session=session, data=data, stop_after_steps=4)
    # Poison the checkpoint the run resumes from (a corrupt or diverged state).
    ckpt = session.checkpoints()[-1]
    state = torch.load(ckpt, weights_only=False)
    state["model"]["blocks.0.mlp.down.weight"][0, 0] = float("nan")
    torch.save(state, ckpt)
    reports = []
    session.on_report = reports.append
    result = train_run(spec, session=session, data=data)
    assert result.status == FAILED
    assert "nan" in result.reason and "diverged" in result.reason
    assert math.isnan(result.val_loss)
    assert reports and all("val_loss" not in r for r in reports)
    assert reports[-1]["status"] == FAILED


def test_huge_learning_rate_diverges_into_a_failed_run(dataset):
    data = load_run_data(dataset, 40_960, 8192)
    cfg = quick_config(lr=10.0, lr_scaling="none", grad_clip=0.0, warmup_steps=0)
    result = train_run(RunSpec(str(dataset), "tiny-2", 40_960, cfg), data=data)
    # Depending on float rounding it overflows to NaN or stays finite but huge; both are
    # divergences with a reason, and neither reports a loss.
    assert result.status == FAILED
    assert "diverged" in result.reason and math.isnan(result.val_loss)


def test_failed_compile_falls_back_to_eager(dataset, monkeypatch):
    def broken_compile(model, **kw):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken_compile)
    data = load_run_data(dataset, 10_240, 8192)
    result = train_run(
        RunSpec(str(dataset), "tiny-1", 10_240, quick_config(compile="on")), data=data
    )
    assert result.status == FINISHED


def test_finite_but_hopeless_held_out_loss_is_a_failure(dataset, monkeypatch):
    import gzipscale.trainers.train as train_module

    monkeypatch.setattr(train_module, "evaluate", lambda *a, **k: (50.0, 0.1))
    data = load_run_data(dataset, 10_240, 8192)
    result = train_run(RunSpec(str(dataset), "tiny-1", 10_240, quick_config()), data=data)
    assert result.status == FAILED and "worse than a uniform guess" in result.reason
    assert math.isnan(result.val_loss)


# -- settings ----------------------------------------------------------------------------


def test_paper_vocabulary_setting(dataset):
    data = load_run_data(dataset, 10_240, 8192)
    cfg = quick_config(vocab_size=PAPER_VOCAB, param_count="non_embedding")
    result = train_run(RunSpec(str(dataset), "tiny-1", 10_240, cfg), data=data)
    assert result.vocab_size == PAPER_VOCAB
    assert result.params == get_shape("tiny-1").params(PAPER_VOCAB)
    assert result.params_counted == result.non_embedding_params
    with pytest.raises(TrainError, match="field 'vocab_size'"):
        train_run(RunSpec(str(dataset), "tiny-1", 10_240, quick_config(vocab_size=100)), data=data)


# -- GPU (skipped without CUDA; run on a lent device machine) --------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_uses_bf16_autocast_and_learns(dataset, run_data):
    data = load_run_data(dataset, TRAIN_TOKENS, 16384)
    spec = RunSpec(
        str(dataset), "tiny-2", TRAIN_TOKENS, quick_config(eval_tokens=16384, device="cuda")
    )
    result = train_run(spec, data=data)
    assert result.device == "cuda" and result.dtype == "bf16-autocast"
    assert result.val_loss < unigram_entropy(run_data.train) - 1.0
