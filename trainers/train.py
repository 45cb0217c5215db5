"""One training run: a named shape on the first D tokens of a dataset, one epoch.

:func:`train_run` is the single code path for every caller: ``gzipscale train``, a Ray
Tune trial, and each worker of a Ray Train ``TorchTrainer`` (DDP, when
``torch.distributed`` is initialised). Callers differ only in the :class:`Session` they
pass, which decides where checkpoints and reports go.

Determinism: documents are consumed in dataset order, the model is initialised from
``config.seed``, and the learning rate is a pure function of the step, so the state saved
at step k (model, optimizer, step, RNG states, loss curve) is everything needed to go on.
On CPU a resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from gzipscale.helpers import UserError
from gzipscale.vocabulary import FAILED, FINISHED

from .config import TrainConfig
from .data import RunData, load_run_data
from .memory import check_fits
from .model import Llama
from .session import Session
from .shapes import counted_params, get_shape

STATE_VERSION = 1
DIVERGED_MARGIN_NATS = 1.0
CPU_COMPILE_MIN_STEPS = 1000
CPU_COMPILE_MAX_VOCAB = 4096
OPERATIONAL_SETTINGS = (
    "checkpoint_every",
    "keep_checkpoints",
    "log_points",
    "eval_batch_size",
    "device",
    "compile",
)


class TrainError(UserError, ValueError):
    """A run that cannot start: bad spec, vocabulary or resume state (names the field)."""


@dataclass(frozen=True)
class RunSpec:
    """What a run trains: everything that determines its result, besides the hardware."""

    data: str  # dataset directory
    model: str  # shape name (trainers.shapes)
    tokens: int  # D: training tokens, rounded up to whole documents
    config: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {
            "data": self.data,
            "model": self.model,
            "tokens": self.tokens,
            "config": self.config.to_dict(),
        }

    def identity(self) -> dict:
        """The settings that decide the result; how often to checkpoint or log, and on
        which device, may change between a run and its resumption."""
        d = self.to_dict()
        d["config"] = {k: v for k, v in d["config"].items() if k not in OPERATIONAL_SETTINGS}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        return cls(d["data"], d["model"], int(d["tokens"]), TrainConfig.from_dict(d["config"]))


@dataclass
class RunResult:
    status: str  # "finished" or "failed"
    reason: str
    val_loss: float  # mean held-out loss per predicted token, nats; NaN when failed
    val_loss_se: float  # its standard error over held-out documents
    model: str
    dataset: str
    gzip: float
    params: int  # total (the paper's N)
    non_embedding_params: int
    param_count: str  # which of the two ``params_counted`` is
    params_counted: int
    vocab_size: int
    tokens: int  # training tokens consumed
    steps: int
    batch_size: int
    context_length: int
    eval_tokens: int
    tokens_per_s: float
    wall_s: float
    device: str
    dtype: str
    resumed_from_step: int
    curve: list[dict]  # {"step", "tokens", "train_loss", "lr"}

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def ok(self) -> bool:
        return self.status == FINISHED


# -- setup -----------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainError("field 'device': cuda requested but no CUDA device is visible")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist.is_available() and dist.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_optimizer(model: Llama, cfg: TrainConfig, device: torch.device):
    kwargs = {
        "lr": cfg.peak_lr(model.shape.hidden),
        "betas": (cfg.beta1, cfg.beta2),
        "eps": cfg.eps,
    }
    # Fused AdamW: one kernel for all parameters on GPU. On CPU the fused kernel measured
    # about the same as foreach on tiny models; keep foreach there (the long-tested path).
    if device.type == "cuda":
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = True
    return torch.optim.AdamW(model.param_groups(cfg.weight_decay), **kwargs)


def wants_compile(cfg: TrainConfig, device: torch.device, steps: int, vocab: int) -> bool:
    """``auto``: always on CUDA. On CPU only for long runs at a small vocabulary: there
    compiling (25-170 s) made a step 1.2-1.7x faster (bench/train_throughput.py), while at
    32001 ids the step is the chunked cross-entropy, which compiling does not speed up."""
    if cfg.compile != "auto":
        return cfg.compile == "on"
    if device.type == "cuda":
        return True
    return steps >= CPU_COMPILE_MIN_STEPS and vocab <= CPU_COMPILE_MAX_VOCAB


def _maybe_compile(model: torch.nn.Module, wanted: bool):
    if not wanted or not hasattr(torch, "compile"):
        return model, False
    try:
        return torch.compile(model), True
    except Exception:  # no compiler toolchain, unsupported platform: eager works everywhere
        return model, False


# -- evaluation --------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, docs: torch.Tensor, batch_size: int, device, autocast
) -> tuple[float, float]:
    """Mean loss per predicted token over ``docs``, and its standard error over documents.

    Every document predicts the same number of tokens, so the mean of per-document means
    is the per-token mean, and the spread of document means (tokens within a document are
    correlated) gives an honest standard error. Under DDP each rank scores a share and
    the sums are all-reduced.
    """
    rank, world = _distributed()
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # n, sum, sum of squares
    mine = docs[rank::world]
    for start in range(0, len(mine), batch_size):
        batch = mine[start : start + batch_size].to(device, non_blocking=True).long()
        with autocast:
            _, losses = model(batch[:, :-1], batch[:, 1:], reduction="none")
        per_doc = losses.view(len(batch), -1).double().mean(dim=1)
        sums += torch.stack(
            [
                torch.tensor(float(len(batch)), device=device, dtype=torch.float64),
                per_doc.sum(),
                per_doc.pow(2).sum(),
            ]
        )
    if world > 1:
        dist.all_reduce(sums)
    model.train(was_training)
    n, total, squares = sums.tolist()
    mean = total / n
    var = max(0.0, squares / n - mean * mean) * n / max(1.0, n - 1)
    return mean, math.sqrt(var / n)


# -- the run ----------------------------------------------------------------------------


def _batch_rows(step: int, batch_size: int, n_docs: int, rank: int, world: int) -> slice:
    """Rows of the global batch ``step`` that this rank trains on.

    The global batch is ``batch_size`` consecutive documents; under DDP each rank takes a
    contiguous equal share. The last, short batch is cut to a multiple of the world size
    (at most world-1 documents are left out, and only under DDP).
    """
    start = step * batch_size
    stop = min(start + batch_size, n_docs)
    share = (stop - start) // world
    return slice(start + rank * share, start + (rank + 1) * share)


def total_steps(n_docs: int, batch_size: int, world: int = 1) -> int:
    steps = math.ceil(n_docs / batch_size)
    if world > 1 and (n_docs - (steps - 1) * batch_size) < world:
        steps -= 1
    return steps


def train_run(
    spec: RunSpec,
    session: Session | None = None,
    data: RunData | None = None,
    on_step: Callable[[dict], None] | None = None,
    stop_after_steps: int | None = None,
) -> RunResult:
    """Train ``spec`` to the end (or resume it) and return its result.

    ``session`` stores checkpoints and receives reports (default: neither). ``data``
    skips reading the dataset again (benchmarks). ``on_step`` gets a small progress dict
    after every optimizer step (rank 0). ``stop_after_steps`` ends the call early after
    that many steps of *this call* (after saving a checkpoint), which is how tests
    interrupt a run; the result then has status "interrupted".

    A run whose loss turns NaN or infinite returns status "failed" with the reason; it
    is never reported with a loss a fit could use. Bad input raises before training.
    """
    wall_start = time.perf_counter()
    session = session or Session()
    cfg = spec.config
    shape = get_shape(spec.model)
    rank, world = _distributed()
    if data is None:
        data = load_run_data(spec.data, spec.tokens, cfg.eval_tokens)
    vocab = cfg.vocab_size or data.vocab_size
    if vocab < data.vocab_size:
        raise TrainError(
            f"field 'vocab_size': {vocab} is smaller than the dataset's vocabulary "
            f"({data.vocab_size} ids); use 0 for the dataset's own or a larger value such as 32001"
        )
    if cfg.batch_size % world:
        raise TrainError(
            f"field 'batch_size': {cfg.batch_size} does not split over {world} workers"
        )
    device = resolve_device(cfg.device)
    context = data.context_length
    check_fits(shape, vocab, cfg.batch_size // world, context, device)

    torch.manual_seed(cfg.seed)
    model = Llama(shape, vocab, context).to(device)
    optimizer = make_optimizer(model, cfg, device)
    n_docs = len(data.train)
    steps = total_steps(n_docs, cfg.batch_size, world)
    log_every = max(1, steps // cfg.log_points)
    checkpoint_every = cfg.checkpoint_every or steps

    step, curve, elapsed_before, trained_before = 0, [], 0.0, 0
    state = session.latest_checkpoint()
    if state is not None:
        if state.get("spec") != spec.identity():
            raise TrainError(
                "the checkpoint to resume from belongs to a different run spec; "
                "use a new run directory for a new run"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        step, curve = state["step"], state["curve"]
        elapsed_before, trained_before = state["elapsed_s"], state["tokens_done"]
    resumed_from = step
    if state is not None and "final" in state:
        # The run had finished (its driver died before it knew): report the same result
        # again rather than a re-evaluation with different timings.
        session.report(state["final"]["metrics"])
        return RunResult(**state["final"]["result"])

    train_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    train_model, compiled = _maybe_compile(
        train_model, wants_compile(cfg, device, steps - step, vocab)
    )
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    dtype = "bf16-autocast" if use_bf16 else "fp32"
    params = shape.params(vocab)

    def tokens_done() -> int:  # training tokens consumed after ``step`` steps
        return min(step * cfg.batch_size, n_docs) * context

    def base_metrics() -> dict:
        return {
            "step": step,
            "steps": steps,
            "tokens_seen": tokens_done(),
        }

    def checkpoint_state(elapsed: float, tokens_done: int) -> dict:
        return {
            "version": STATE_VERSION,
            "spec": spec.identity(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "rng": _rng_state(),
            "curve": curve,
            "elapsed_s": elapsed,
            "tokens_done": tokens_done,
        }

    def result(status: str, reason: str, val: float, se: float, loop_s: float) -> RunResult:
        trained = tokens_done()
        wall = elapsed_before + time.perf_counter() - wall_start
        return RunResult(
            status=status,
            reason=reason,
            val_loss=val,
            val_loss_se=se,
            model=shape.name,
            dataset=data.name,
            gzip=data.gzip,
            params=params,
            non_embedding_params=shape.non_embedding_params(),
            param_count=cfg.param_count,
            params_counted=counted_params(shape, vocab, cfg.param_count),
            vocab_size=vocab,
            tokens=trained,
            steps=step,
            batch_size=cfg.batch_size,
            context_length=context,
            eval_tokens=data.eval_tokens,
            tokens_per_s=(trained - trained_before) / loop_s if loop_s > 0 else 0.0,
            wall_s=wall,
            device=str(device.type),
            dtype=dtype,
            resumed_from_step=resumed_from,
            curve=curve,
        )

    train_model.train()
    interval_loss = torch.zeros((), dtype=torch.float64, device=device)
    interval_steps = 0
    loop_start = time.perf_counter()
    stop_at = steps if stop_after_steps is None else min(steps, step + stop_after_steps)
    while step < stop_at:
        lr = cfg.lr_at(step, steps, shape.hidden)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = data.train[_batch_rows(step, cfg.batch_size, n_docs, rank, world)]
        batch = rows.to(device, non_blocking=True).long()
        try:
            with autocast:
                _, loss = train_model(batch[:, :-1], batch[:, 1:])
        except Exception:
            if not compiled:
                raise
            # torch.compile can fail late (at the first call); eager always works.
            train_model, compiled = (model if world == 1 else train_model._orig_mod), False
            with autocast:
                _, loss = train_model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        interval_loss += loss.detach().double()
        interval_steps += 1
        step += 1
        if step % log_every == 0 or step == steps or step == stop_at:
            mean_loss = interval_loss.item() / interval_steps
            interval_loss.zero_()
            interval_steps = 0
            if not math.isfinite(mean_loss):
                loop_s = time.perf_counter() - loop_start
                reason = (
                    f"training loss became {mean_loss} by step {step} of {steps} (lr {lr:.3g}); "
                    "the run diverged, lower the learning rate"
                )
                failed = result(FAILED, reason, math.nan, math.nan, loop_s)
                session.report({**base_metrics(), "status": FAILED, "reason": reason})
                return failed
            curve.append(
                {
                    "step": step,
                    "tokens": tokens_done(),
                    "train_loss": mean_loss,
                    "lr": lr,
                }
            )
            if on_step is not None and rank == 0:
                seconds = time.perf_counter() - loop_start
                done = tokens_done() - trained_before
                on_step(
                    {
                        **base_metrics(),
                        "train_loss": mean_loss,
                        "tokens_per_s": done / seconds if seconds > 0 else 0.0,
                    }
                )
        if step < steps and (step % checkpoint_every == 0 or step == stop_at):
            elapsed = elapsed_before + time.perf_counter() - wall_start
            session.save(
                checkpoint_state(elapsed, tokens_done()),
                {**base_metrics(), "train_loss": curve[-1]["train_loss"] if curve else math.nan},
            )
    loop_s = time.perf_counter() - loop_start

    if step < steps:
        return result(
            "interrupted", f"stopped after step {step} of {steps}", math.nan, math.nan, loop_s
        )

    val, se = evaluate(train_model, data.eval, cfg.eval_batch_size, device, autocast)
    # Worse than a uniform guess by a nat: the weights blew up (a finite, huge loss is
    # as much a divergence as NaN, and must not become a fit point either).
    uniform = math.log(vocab)
    if not math.isfinite(val) or val > uniform + DIVERGED_MARGIN_NATS:
        reason = (
            f"held-out loss is {val:.4g} after {steps} steps, worse than a uniform guess "
            f"(ln {vocab} = {uniform:.3f}); the run diverged, lower the learning rate"
        )
        session.report({**base_metrics(), "status": FAILED, "reason": reason})
        return result(FAILED, reason, math.nan, math.nan, loop_s)
    final = result(FINISHED, "", val, se, loop_s)
    metrics = {
        **base_metrics(),
        "status": FINISHED,
        "val_loss": val,
        "val_loss_se": se,
        "tokens_per_s": final.tokens_per_s,
        "wall_s": final.wall_s,
        "resumed_from_step": resumed_from,
    }
    state = checkpoint_state(final.wall_s, final.tokens)
    state["final"] = {"result": final.to_dict(), "metrics": metrics}
    session.save(state, metrics)
    return final
