"""One training run: a named shape on the first D tokens of a dataset, one epoch.

:func:`train_run` is the single code path for every caller: ``gzipscale train``, a Ray
Tune trial, and each worker of a Ray Train ``TorchTrainer`` (DDP, when
``torch.distributed`` is initialised). Callers differ only in the :class:`Session` they
pass, which decides where checkpoints and reports go.

Determinism: documents are consumed in dataset order, the model is initialised from
``config.seed``, and the learning rate is a pure function of the step, so the state saved
at step k (model, optimizer, step, RNG states, loss curve) is everything needed to go on.
On CPU a resumed run ends bit-identical to an uninterrupted one.

Nested data sizes: a spec with ``eval_at`` reports a row for each of those smaller sizes
on the way to ``tokens``, each scored as an independent run of that size would be (same
documents, batches, initialisation and learning rates). The run to ``tokens`` is the
*trunk*. Where an independent run of a smaller D would first do something else (its wsd
cooldown, or its last batch cut short at D's last document) the run *branches*: it keeps
the trunk's state aside, trains D's remaining steps, scores D, and goes back to the trunk.
A D whose run never differs from the trunk (constant schedule, whole batches) is scored on
the trunk itself. See :func:`plan_rows`.

Rows: every size a run reports, its own ``tokens`` last, is one results row. Each is
reported the moment the run has scored it, through ``Session.save``, with a checkpoint
that records it as reported: a run resumed from any checkpoint reports every row exactly
once (a run that had already finished replays its final report, identical). A row
report holds the row (``RunResult.rows`` holds the same dicts)::

    row_tokens      D as asked: the results row is (dataset, shape, row_tokens)
    tokens, step    training tokens and optimizer steps of an independent run of D
    val_loss, val_loss_se, schedule, cooldown_steps
    trained_tokens  tokens this run had trained on when it scored D (trunk and branches)
    wall_s          this run's wall time when it scored D

and the run's progress: ``status`` ("running"; "finished" for the last row), ``row_index``
and ``row_count``, ``steps`` and ``tokens_seen`` (the trunk's), ``tokens_per_s``,
``resumed_from_step``. The final report (status "finished") also carries ``rows``, every
row of the run keyed by its ``row_tokens`` as text. A failed run reports ``status`` "failed", a ``reason`` and the
sizes it never scored, ``unreported_tokens``.
"""

from __future__ import annotations

import copy
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
from gzipscale.vocabulary import FAILED, FINISHED, RUNNING

from .config import ConfigError, TrainConfig
from .data import RunData, load_run_data
from .memory import check_fits
from .model import Llama
from .nested import Row, plan_sizes, step_tokens
from .session import Session
from .shapes import counted_params, get_shape

# 2: nested data sizes. "step" counts every optimizer step, trunk and branches (it names
# the checkpoint and only grows); "trunk_step", "branch" and "rows" are new. A version-1
# checkpoint (one size, on its trunk) is read as version 2 by upgrade_state.
STATE_VERSION = 2
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
    tokens: int  # D: training tokens, rounded up to whole documents; the last row
    config: TrainConfig = field(default_factory=TrainConfig)
    # Smaller data sizes to report a row for on the way (each rounded up to whole
    # documents, as ``tokens`` is): kept sorted, without ``tokens`` itself. Empty: the
    # run reports its one size.
    eval_at: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        sizes = sorted({int(d) for d in self.eval_at} - {self.tokens})
        if sizes and (sizes[0] < 1 or sizes[-1] > self.tokens):
            raise TrainError(
                f"field 'eval_at': every size must be between 1 and tokens ({self.tokens}), "
                f"got {sizes}"
            )
        if sizes and self.config.schedule == "cosine":
            raise TrainError(
                "field 'eval_at': the cosine schedule decays over the whole run, so a smaller "
                "size partway through is not a run of that size; use schedule constant or wsd"
            )
        object.__setattr__(self, "eval_at", tuple(sizes))

    def to_dict(self) -> dict:
        return {
            "data": self.data,
            "model": self.model,
            "tokens": self.tokens,
            "eval_at": list(self.eval_at),
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
        return cls(
            d["data"],
            d["model"],
            int(d["tokens"]),
            TrainConfig.from_dict(d["config"]),
            tuple(d.get("eval_at", ())),
        )

    def same_run(self, identity: dict) -> bool:
        """Whether ``identity`` (a saved ``identity()``, perhaps from an older version that
        lacked a newer setting, which then takes its default) is this run's."""
        try:
            return RunSpec.from_dict(identity).identity() == self.identity()
        except (ConfigError, TrainError, KeyError, TypeError, ValueError):
            return False


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
    resumed_from_step: int  # optimizer steps (trunk and branches) done before this call
    curve: list[dict]  # the trunk's {"step", "tokens", "train_loss", "lr"}
    trained_tokens: int = 0  # every token trained on, trunk and branches together
    rows: list[dict] = field(default_factory=list)  # one per reported size (see row_record)

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


def run_vocab(cfg: TrainConfig, data) -> int:
    """The vocabulary a run's model has: the config's, or the dataset's where it says 0.
    A separate check so that ``gzipscale train`` refuses it before making a run directory."""
    vocab = cfg.vocab_size or data.vocab_size
    if vocab < data.vocab_size:
        raise TrainError(
            f"field 'vocab_size': {vocab} is smaller than the dataset's vocabulary "
            f"({data.vocab_size} ids); use 0 for the dataset's own or a larger value such as 32001"
        )
    return vocab


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
    model: torch.nn.Module,
    docs: torch.Tensor,
    batch_size: int,
    device,
    autocast,
    positions: dict | None = None,
) -> tuple[float, float]:
    """Mean loss per predicted token over ``docs``, and its standard error over documents.

    A ``positions`` dict is filled, from the same forward passes, with the loss at each
    position of the context (``mean`` and ``stderr`` lists, one per predicted position:
    what the dataset's per-position floor is drawn against); single-process only.

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
        per_token = losses.view(len(batch), -1).double()
        if positions is not None:
            by_position = per_token.cpu()
            positions.setdefault("_sum", torch.zeros(by_position.shape[1], dtype=torch.float64))
            positions.setdefault("_squares", torch.zeros_like(positions["_sum"]))
            positions["_sum"] += by_position.sum(dim=0)
            positions["_squares"] += by_position.pow(2).sum(dim=0)
        per_doc = per_token.mean(dim=1)
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
    if positions is not None and "_sum" in positions:
        at = positions.pop("_sum") / n
        spread = (positions.pop("_squares") / n - at.pow(2)).clamp(min=0.0) * n / max(1.0, n - 1)
        positions["mean"] = [float(v) for v in at]
        positions["stderr"] = [float(v) for v in (spread / n).sqrt()]
    return mean, math.sqrt(var / n)


# -- batches ------------------------------------------------------------------------------


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


# -- nested data sizes: the trunk and its branches -----------------------------------------


def plan_rows(spec: RunSpec, n_docs: int, context: int, world: int = 1) -> list[Row]:
    """The rows of ``spec`` over its ``n_docs`` documents, smallest first; the last is the
    trunk's own end (``tokens``). See :func:`trainers.nested.plan_sizes`."""
    return plan_sizes(spec.config, spec.tokens, spec.eval_at, n_docs, context, world)


@dataclass
class Branch:
    """A row's own steps in progress, off the trunk."""

    row: int  # its index in the plan
    step: int  # its next optimizer step, counted as in an independent run of its size
    trunk: dict  # the trunk's state where the branch left it (_snapshot), to go back to

    def to_dict(self) -> dict:  # not dataclasses.asdict: that would deep-copy the trunk
        return {"row": self.row, "step": self.step, "trunk": self.trunk}


def _to_cpu(value):
    """A deep copy with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return copy.deepcopy(value)


def _snapshot(model: Llama, optimizer) -> dict:
    """The trunk's state at a branch point. Kept on the CPU (a branch costs no accelerator
    memory) and saved in the branch's checkpoints, so that a run killed mid-branch can
    still go back to the trunk."""
    return {
        "model": _to_cpu(model.state_dict()),
        "optimizer": _to_cpu(optimizer.state_dict()),
        "rng": _rng_state(),
    }


def _restore(model: Llama, optimizer, state: dict) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])


def upgrade_state(state: dict) -> dict:
    """A checkpoint of any version as this version reads it; a newer one is refused."""
    version = state.get("version", 1)
    if version > STATE_VERSION:
        raise TrainError(
            f"the checkpoint to resume from has state version {version}, newer than this "
            f"gzipscale's {STATE_VERSION}; resume it with the version that wrote it"
        )
    if version == 1:
        # One size, always on its trunk: "step" was the trunk's, no row was reported yet.
        state = {**state, "version": 2, "trunk_step": state["step"], "branch": None, "rows": []}
        if "final" in state:
            state["final"] = _upgrade_final(state["final"], state["spec"])
    state.setdefault("interval", [0.0, 0])
    return state


def _upgrade_final(final: dict, identity: dict) -> dict:
    """A version-1 finished run's result and report, with the one row it stands for."""
    result = final["result"]
    row = {
        "row_tokens": int(identity["tokens"]),
        "tokens": result["tokens"],
        "step": result["steps"],
        "val_loss": result["val_loss"],
        "val_loss_se": result["val_loss_se"],
        "schedule": identity["config"]["schedule"],
        "cooldown_steps": 0,
        "trained_tokens": result["tokens"],
        "wall_s": result["wall_s"],
    }
    return {
        "result": {**result, "trained_tokens": result["tokens"], "rows": [row]},
        "metrics": {
            **final["metrics"],
            "row_tokens": row["row_tokens"],
            "row_index": 0,
            "row_count": 1,
            "rows": rows_by_size([row]),
        },
    }


def rows_by_size(rows: list[dict]) -> dict[str, dict]:
    """A run's rows keyed by their size (as text: a report's keys are strings, and a dict
    of numbers is what Tune's loggers store without complaint)."""
    return {str(row["row_tokens"]): dict(row) for row in rows}


def _position_loss(positions: dict | None) -> dict:
    """The report's ``position_loss`` entry (empty when not measured, e.g. under DDP)."""
    if not positions or "mean" not in positions:
        return {}
    return {"position_loss": {"mean": positions["mean"], "stderr": positions["stderr"]}}


def _divergence(val: float, vocab: int, row: Row, final: bool) -> str:
    """Why a held-out loss cannot be a fit point, or "" when it can.

    Worse than a uniform guess by a nat: the weights blew up (a finite, huge loss is as
    much a divergence as NaN, and must not become a fit point either)."""
    uniform = math.log(vocab)
    if math.isfinite(val) and val <= uniform + DIVERGED_MARGIN_NATS:
        return ""
    at = "" if final else f" at {row.tokens:,} tokens"
    return (
        f"held-out loss{at} is {val:.4g} after {row.steps} steps, worse than a uniform guess "
        f"(ln {vocab} = {uniform:.3f}); the run diverged, lower the learning rate"
    )


# -- the run ----------------------------------------------------------------------------


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
    after every logged trunk step (rank 0). ``stop_after_steps`` ends the call early after
    that many optimizer steps of *this call*, trunk and branches counted together (after
    saving a checkpoint), which is how tests interrupt a run; the result then has status
    "interrupted".

    Every size the run reports is a row (see the module's docstring): a size of
    ``spec.eval_at`` is reported through ``session.save`` the moment it is scored, the
    run's own size is the final report (status "finished"); ``RunResult.rows`` lists all.

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
    vocab = run_vocab(cfg, data)
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
    plan = plan_rows(spec, n_docs, context, world)
    steps = plan[-1].steps  # the trunk's
    # Every row warms up as the smallest size's own run would: warmup_for depends on a
    # run's length, and the rows share the trunk's first steps. A row then equals the
    # independent run of its size whenever that run's warmup is not capped by its length
    # (warmup_steps at most a tenth of the smallest size's steps), and the smallest always.
    warmup = cfg.warmup_for(min(row.steps for row in plan))
    total_work = steps + sum(row.branch_steps for row in plan[:-1])
    log_every = max(1, steps // cfg.log_points)
    checkpoint_every = cfg.checkpoint_every or total_work

    # Where the run is: its trunk step, the branch in progress (if any), the rows scored,
    # and ``work``, the optimizer steps taken in all (trunk and branches).
    step, work, branch, rows, curve = 0, 0, None, [], []
    interval = [0.0, 0]  # the training loss summed since the last curve point, and steps
    elapsed_before, trained_before = 0.0, 0
    state = session.latest_checkpoint()
    if state is not None:
        state = upgrade_state(state)
        if not spec.same_run(state["spec"]):
            raise TrainError(
                "the checkpoint to resume from belongs to a different run spec; "
                "use a new run directory for a new run"
            )
        _restore(model, optimizer, state)
        step, work, rows, curve = state["trunk_step"], state["step"], state["rows"], state["curve"]
        branch = Branch(**state["branch"]) if state["branch"] is not None else None
        interval = state["interval"]
        elapsed_before, trained_before = state["elapsed_s"], state["tokens_done"]
    resumed_from = work
    trained = trained_before  # tokens trained on so far, trunk and branches
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
        train_model, wants_compile(cfg, device, total_work - work, vocab)
    )
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    dtype = "bf16-autocast" if use_bf16 else "fp32"
    params = shape.params(vocab)

    def tokens_done() -> int:  # the trunk's training tokens after ``step`` steps
        return min(step * cfg.batch_size, n_docs) * context

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - wall_start

    def throughput() -> float:
        seconds = time.perf_counter() - loop_start
        return (trained - trained_before) / seconds if seconds > 0 else 0.0

    def base_metrics() -> dict:
        return {
            "step": step,
            "steps": steps,
            "tokens_seen": tokens_done(),
        }

    def checkpoint_state() -> dict:
        return {
            "version": STATE_VERSION,
            "spec": spec.identity(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": _rng_state(),
            "step": work,  # names the checkpoint: it only grows, branch or trunk
            "trunk_step": step,
            "branch": None if branch is None else branch.to_dict(),
            "rows": rows,
            "interval": [interval_loss.item(), interval_steps],
            "curve": curve,
            "elapsed_s": elapsed(),
            "tokens_done": trained,
        }

    def result(
        status: str, reason: str, val: float, se: float, loop_s: float, wall: float
    ) -> RunResult:
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
            tokens=tokens_done(),
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
            trained_tokens=trained,
            rows=list(rows),
        )

    def row_record(row: Row, val: float, se: float, wall: float) -> dict:
        """One size's results row: ``row_tokens`` is the D it was asked for (the row's
        key), ``tokens`` and ``step`` what an independent run of D trains, and
        ``trained_tokens`` and ``wall_s`` what this run had spent when it scored it."""
        return {
            "row_tokens": row.tokens,
            "tokens": row.docs * context,
            "step": row.steps,
            "val_loss": val,
            "val_loss_se": se,
            "schedule": cfg.schedule,
            "cooldown_steps": cfg.cooldown_for(row.steps) if cfg.schedule == "wsd" else 0,
            "trained_tokens": trained,
            "wall_s": wall,
        }

    def row_metrics(record: dict, status: str, tokens_per_s: float) -> dict:
        """The report of a row: the run's progress and status, then the row itself."""
        return {
            **base_metrics(),
            **record,
            "status": status,
            "row_index": len(rows) - 1,
            "row_count": len(plan),
            "tokens_per_s": tokens_per_s,
            "resumed_from_step": resumed_from,
        }

    def fail(reason: str) -> RunResult:
        """End the run as failed. The rows reported so far stand; the rest never come."""
        unreported = [row.tokens for row in plan[len(rows) :]]
        metrics = {**base_metrics(), "status": FAILED, "reason": reason}
        session.report({**metrics, "unreported_tokens": unreported})
        loop_s = time.perf_counter() - loop_start
        return result(FAILED, reason, math.nan, math.nan, loop_s, elapsed())

    def row_due() -> Row | None:
        """The row to score now: a branch at its end, or a size scored on the trunk here."""
        if branch is not None:
            row = plan[branch.row]
            return row if branch.step == row.steps else None
        nxt = plan[len(rows)] if len(rows) < len(plan) - 1 else None
        return nxt if nxt is not None and nxt.branch_at == nxt.steps == step else None

    def branch_due() -> Row | None:
        """The row whose branch leaves the trunk at this step."""
        nxt = plan[len(rows)] if len(rows) < len(plan) - 1 else None
        if branch is None and nxt is not None and nxt.branch_at == step < nxt.steps:
            return nxt
        return None

    def score_row(row: Row) -> RunResult | None:
        """Score a smaller size, go back to the trunk, and report the row with a checkpoint
        that records it. Returns the failed result if the loss is no fit point."""
        nonlocal branch
        by_position = {} if world == 1 else None
        val, se = evaluate(
            train_model, data.eval, cfg.eval_batch_size, device, autocast, by_position
        )
        reason = _divergence(val, vocab, row, final=False)
        if reason:
            return fail(reason)
        if branch is not None:
            _restore(model, optimizer, branch.trunk)
            branch = None
        rows.append(row_record(row, val, se, elapsed()))
        # The per-position losses travel with the report only, not in the checkpoint.
        report = {**row_metrics(rows[-1], RUNNING, throughput()), **_position_loss(by_position)}
        session.save(checkpoint_state(), report)
        return None

    def optimizer_step(at: int, docs: int, run_steps: int) -> tuple[torch.Tensor, float]:
        """Step ``at`` of a run of ``run_steps`` steps over the first ``docs`` documents:
        the trunk's, or a branch's (then an independent run of that size's)."""
        nonlocal train_model, compiled
        lr = cfg.lr_at(at, run_steps, shape.hidden, warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows_now = data.train[_batch_rows(at, cfg.batch_size, docs, rank, world)]
        batch = rows_now.to(device, non_blocking=True).long()
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
        return loss.detach(), lr

    def log_point(lr: float) -> RunResult | None:
        """A point on the trunk's training-loss curve; the failed result if it is NaN."""
        nonlocal interval_steps
        mean_loss = interval_loss.item() / interval_steps
        interval_loss.zero_()
        interval_steps = 0
        if not math.isfinite(mean_loss):
            return fail(
                f"training loss became {mean_loss} by step {step} of {steps} (lr {lr:.3g}); "
                "the run diverged, lower the learning rate"
            )
        curve.append({"step": step, "tokens": tokens_done(), "train_loss": mean_loss, "lr": lr})
        if on_step is not None and rank == 0:
            on_step({**base_metrics(), "train_loss": mean_loss, "tokens_per_s": throughput()})
        return None

    train_model.train()
    interval_loss = torch.tensor(interval[0], dtype=torch.float64, device=device)
    interval_steps = interval[1]
    loop_start = time.perf_counter()
    stop_at = total_work if stop_after_steps is None else min(total_work, work + stop_after_steps)
    while True:
        row = row_due()
        if row is not None:
            failed = score_row(row)
            if failed is not None:
                return failed
            continue
        row = branch_due()
        if row is not None:
            branch = Branch(len(rows), row.branch_at, _snapshot(model, optimizer))
            continue
        if work == stop_at or (branch is None and step == steps):
            break
        if branch is None:
            loss, lr = optimizer_step(step, n_docs, steps)
            trained += step_tokens(step, cfg.batch_size, n_docs, context)
            interval_loss += loss.double()
            interval_steps += 1
            step += 1
            work += 1
            if step % log_every == 0 or step == steps or work == stop_at:
                failed = log_point(lr)
                if failed is not None:
                    return failed
        else:
            row = plan[branch.row]
            optimizer_step(branch.step, row.docs, row.steps)
            trained += step_tokens(branch.step, cfg.batch_size, row.docs, context)
            branch.step += 1
            work += 1
        # No checkpoint where a row's or the run's own follows at once.
        at_end = branch is None and step == steps
        if (work % checkpoint_every == 0 or work == stop_at) and not at_end and not row_due():
            session.save(
                checkpoint_state(),
                {**base_metrics(), "train_loss": curve[-1]["train_loss"] if curve else math.nan},
            )
    loop_s = time.perf_counter() - loop_start

    if branch is not None or step < steps:
        reason = f"stopped after step {work} of {total_work}"
        return result("interrupted", reason, math.nan, math.nan, loop_s, elapsed())

    by_position = {} if world == 1 else None
    val, se = evaluate(train_model, data.eval, cfg.eval_batch_size, device, autocast, by_position)
    reason = _divergence(val, vocab, plan[-1], final=True)
    if reason:
        return fail(reason)
    wall = elapsed()
    rows.append(row_record(plan[-1], val, se, wall))
    final = result(FINISHED, "", val, se, loop_s, wall)
    # The final report also holds every row, so that a caller that missed a row report
    # (a driver that died between receiving it and recording it) can still record it.
    metrics = {**row_metrics(rows[-1], FINISHED, final.tokens_per_s), "rows": rows_by_size(rows)}
    state = checkpoint_state()
    # The final report (kept in the checkpoint, replayed on a restore) carries the curve.
    metrics.update(_position_loss(by_position))
    state["elapsed_s"] = final.wall_s
    state["final"] = {"result": final.to_dict(), "metrics": metrics}
    session.save(state, metrics)
    return final
