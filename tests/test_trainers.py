"""trainers/: exact parameter counts, real training steps on tiny models, resume, failure.

Datasets are made once per session by the real pipeline (shared Ray cluster).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gzipscale.grammars.dataset import DatasetError, DatasetSpec
from gzipscale.grammars.pipeline import generate_dataset
from gzipscale.grammars.spec import GrammarSpec
from gzipscale.orchestrator.cli import main
from gzipscale.trainers.config import ConfigError, TrainConfig, preset
from gzipscale.trainers.data import load_run_data
from gzipscale.trainers.memory import MemoryTooSmall
from gzipscale.trainers.model import Llama
from gzipscale.trainers.session import LocalSession
from gzipscale.trainers.shapes import PAPER_SHAPES, PAPER_VOCAB, SHAPES, TINY_SHAPES, get_shape
from gzipscale.trainers.train import RunSpec, TrainError, evaluate, train_run
from gzipscale.vocabulary import FAILED, FINISHED

PAPER_COUNTS = [4_178_368, 8_848_768, 20_320_000, 58_994_176, 275_295_232, 1_389_492_224]
PAPER_NON_EMBEDDING = [82_240, 656_512, 3_935_488, 26_225_152, 209_757_184, 1_258_416_128]

TRAIN_TOKENS = 240_000
EVAL_TOKENS = 32_768


@pytest.fixture(scope="session")
def dataset(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("trainers") / "ds"
    spec = DatasetSpec(
        GrammarSpec.parse("10,300,3,5", seed=1), tokens=TRAIN_TOKENS, eval_tokens=EVAL_TOKENS
    )
    generate_dataset(spec, out)
    return out


@pytest.fixture(scope="session")
def run_data(dataset):
    return load_run_data(dataset, TRAIN_TOKENS, EVAL_TOKENS)


def quick_config(**kw) -> TrainConfig:
    base = dict(eval_tokens=8192, batch_size=8, checkpoint_every=0, warmup_steps=2)
    base.update(kw)
    return TrainConfig(**base)


# -- shapes and the model ---------------------------------------------------------------


def test_paper_shapes_have_the_papers_exact_parameter_counts():
    assert [s.params(PAPER_VOCAB) for s in PAPER_SHAPES] == PAPER_COUNTS
    assert [s.non_embedding_params() for s in PAPER_SHAPES] == PAPER_NON_EMBEDDING


def test_models_command_lists_every_shape_with_exact_counts(capsys):
    assert main(["models", "--vocab", "32001", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(SHAPES)
    assert [by_name[s.name]["params"] for s in PAPER_SHAPES] == PAPER_COUNTS
    for r in rows:
        assert set(r) >= {
            "name",
            "hidden",
            "intermediate",
            "layers",
            "heads",
            "params",
            "non_embedding_params",
        }
        assert r["intermediate"] == 2 * r["hidden"]


@pytest.mark.parametrize(
    "shape", [*TINY_SHAPES, PAPER_SHAPES[0], PAPER_SHAPES[2]], ids=lambda s: s.name
)
def test_built_model_has_exactly_the_counted_parameters(shape):
    vocab = 32001 if shape.name.startswith("paper") else 301
    model = Llama(shape, vocab, context_length=64)
    assert sum(p.numel() for p in model.parameters()) == shape.params(vocab)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_tiny_shapes_span_10k_to_2m_parameters_at_a_pcfg_vocabulary():
    counts = [s.params(301) for s in TINY_SHAPES]
    assert counts == sorted(counts)
    assert 8_000 <= counts[0] <= 15_000 and 1_000_000 <= counts[-1] <= 2_500_000
    assert all(s.head_dim >= 12 and s.head_dim % 2 == 0 for s in TINY_SHAPES)


def test_model_is_causal():
    torch.manual_seed(0)
    model = Llama(get_shape("tiny-2"), 50, context_length=16).eval()
    ids = torch.randint(0, 50, (1, 16))
    changed = ids.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 50
    with torch.no_grad():
        a, _ = model(ids)
        b, _ = model(changed)
    assert torch.equal(a[0, :10], b[0, :10])
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_unknown_shape_names_the_allowed_ones():
    with pytest.raises(ValueError, match="field 'model' must be one of .*tiny-1"):
        get_shape("tiny-99")


# -- config -----------------------------------------------------------------------------


def test_config_errors_name_the_field_and_the_allowed_values():
    with pytest.raises(ConfigError, match="field 'schedule' must be one of constant, cosine"):
        TrainConfig(schedule="linear")
    with pytest.raises(ConfigError, match="field 'lr' must be in"):
        TrainConfig(lr=0.0)
    with pytest.raises(ConfigError, match="field 'batch_size' must be >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="unknown training setting"):
        TrainConfig.from_dict({"learning_rate": 1e-3})


def test_paper_preset_is_the_papers_setup():
    cfg = preset("paper")
    assert (cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay) == (5e-5, 0.9, 0.999, 1e-6, 0)
    assert cfg.batch_size == 32 and cfg.schedule == "constant" and cfg.warmup_steps == 0
    assert [cfg.lr_at(s, 100, 64) for s in (0, 50, 99)] == [5e-5] * 3


def test_cpu_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1e-3, lr_scaling="none", warmup_steps=10, min_lr_ratio=0.1)
    lrs = [cfg.lr_at(s, 200, 64) for s in range(200)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.01)
    # width scaling: half the width, twice the rate
    wide = TrainConfig(lr=1e-3)
    assert wide.peak_lr(32) == pytest.approx(2 * wide.peak_lr(64))


# -- training ---------------------------------------------------------------------------


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


def test_prefixes_are_nested(dataset):
    small = load_run_data(dataset, 25_600, 8192)
    large = load_run_data(dataset, 102_400, 8192)
    assert torch.equal(large.train[: len(small.train)], small.train)
    assert torch.equal(large.eval, small.eval)


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


def test_paper_vocabulary_setting(dataset):
    data = load_run_data(dataset, 10_240, 8192)
    cfg = quick_config(vocab_size=PAPER_VOCAB, param_count="non_embedding")
    result = train_run(RunSpec(str(dataset), "tiny-1", 10_240, cfg), data=data)
    assert result.vocab_size == PAPER_VOCAB
    assert result.params == get_shape("tiny-1").params(PAPER_VOCAB)
    assert result.params_counted == result.non_embedding_params
    with pytest.raises(TrainError, match="field 'vocab_size'"):
        train_run(RunSpec(str(dataset), "tiny-1", 10_240, quick_config(vocab_size=100)), data=data)


def test_model_too_big_for_memory_names_what_it_needs(dataset, monkeypatch):
    import gzipscale.trainers.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 64 * 1024**2)
    data = load_run_data(dataset, 10_240, 8192)
    spec = RunSpec(str(dataset), "paper-59m", 10_240, quick_config(vocab_size=PAPER_VOCAB))
    with pytest.raises(MemoryTooSmall, match=r"needs about [\d.]+ GiB .* only 0.1 GiB"):
        train_run(spec, data=data)


# -- input validation before training -----------------------------------------------------


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
    with pytest.raises(DatasetError, match="fails its checksum|wrong size"):
        load_run_data(broken, 1000, 1000)
    (broken / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="not a dataset directory"):
        load_run_data(broken, 1000, 1000)


# -- the command line ---------------------------------------------------------------------


def test_train_command_writes_result_curve_and_figure(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--data",
        str(dataset),
        "--model",
        "tiny-1",
        "--tokens",
        "20K",
        "--out",
        str(out),
        "--eval-tokens",
        "8192",
        "--batch-size",
        "8",
        "--json",
    ]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    for key in (
        "val_loss",
        "curve",
        "params",
        "non_embedding_params",
        "vocab_size",
        "tokens",
        "steps",
        "batch_size",
        "context_length",
        "tokens_per_s",
        "wall_s",
    ):
        assert key in printed
    assert printed == json.loads((out / "result.json").read_text())
    assert (out / "loss.png").stat().st_size > 1000
    assert (out / "run.json").exists()
    # The same command again does not train again: it prints the stored result.
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["wall_s"] == printed["wall_s"]


def test_train_command_refuses_another_run_in_the_same_directory(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    base = [
        "train",
        "--data",
        str(dataset),
        "--model",
        "tiny-1",
        "--out",
        str(out),
        "--eval-tokens",
        "8192",
        "--batch-size",
        "8",
    ]
    assert main([*base, "--tokens", "10K"]) == 0
    before = (out / "result.json").read_bytes()
    capsys.readouterr()
    assert main([*base, "--tokens", "20K"]) == 2
    err = capsys.readouterr().err
    assert "different run" in err and "tokens: 10000 there, 20000 requested" in err
    assert (out / "result.json").read_bytes() == before


def test_train_command_bad_input_leaves_no_run_directory(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(dataset),
                "--model",
                "tiny-1",
                "--tokens",
                "10G",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "field 'tokens'" in capsys.readouterr().err
    assert not out.exists()
    assert (
        main(
            [
                "train",
                "--data",
                str(dataset),
                "--model",
                "huge",
                "--tokens",
                "10K",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "field 'model' must be one of" in capsys.readouterr().err


# -- distributed (DDP over gloo, as TorchTrainer runs it) ---------------------------------

DDP_TOKENS = 40_960


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        mp.spawn(_ddp_worker, args=(2, _free_port(), spec.to_dict(), out), nprocs=2, join=True)
        results = dict(out)
    assert set(results) == {0, 1}
    for status, val_loss, steps, tokens in results.values():
        assert status == FINISHED
        assert (steps, tokens) == (single.steps, single.tokens)
        assert val_loss == pytest.approx(single.val_loss, abs=2e-4)


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
