"""Nested-data runs (trainers/train.py with ``RunSpec.eval_at``) and the wsd schedule
(trainers/config.py): one run reports a whole row of data sizes, each equal to an
independent run of that size; stopped, killed and resumed anywhere (trunk or branch) it
reports every row exactly once; version-1 checkpoints still resume; the CLI prints rows.

A tiny dataset (grammar 3,300,2,2; 200 training documents) is made once per session by
the real pipeline (shared Ray cluster).
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from trainer_fixtures import free_port

from gzipscale.cli import main
from gzipscale.grammars.dataset import DatasetSpec
from gzipscale.grammars.pipeline import generate_dataset
from gzipscale.grammars.spec import GrammarSpec
from gzipscale.trainers.config import ConfigError, TrainConfig, nested_compute
from gzipscale.trainers.data import load_run_data
from gzipscale.trainers.session import LocalSession, Session
from gzipscale.trainers.train import STATE_VERSION, RunSpec, TrainError, train_run
from gzipscale.vocabulary import FAILED, FINISHED, RUNNING

MODEL = "tiny-1"
TOKENS = 51_200  # 200 documents of 256 tokens
EVAL = 4096
# At batch 4: 81 documents (a short last batch), 120 (whole batches), 170 (short), then 200.
SIZES = (20_700, 30_720, 43_500)
ALL_SIZES = (*SIZES, TOKENS)
TOLERANCE = 1e-6  # nested against independent, on CPU (measured: 0.0, bit-identical)


def config(**kw) -> TrainConfig:
    base = dict(
        batch_size=4,
        eval_tokens=EVAL,
        eval_batch_size=16,
        checkpoint_every=0,
        warmup_steps=2,  # at most a tenth of the smallest size's 21 steps: never capped
        schedule="constant",
        compile="off",
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="session")
def dataset(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("nested") / "ds"
    spec = DatasetSpec(GrammarSpec.parse("3,300,2,2"), tokens=TOKENS, eval_tokens=EVAL)
    generate_dataset(spec, out)
    return out


@pytest.fixture(scope="session")
def data(dataset):
    return load_run_data(dataset, TOKENS, EVAL)


def nested_spec(dataset, **kw) -> RunSpec:
    return RunSpec(str(dataset), MODEL, TOKENS, config(**kw), SIZES)


def independent_runs(dataset, cfg: TrainConfig) -> dict:
    return {
        d: train_run(RunSpec(str(dataset), MODEL, d, cfg), data=load_run_data(dataset, d, EVAL))
        for d in ALL_SIZES
    }


@pytest.fixture(scope="session", params=["constant", "wsd"])
def schedule(request):
    return request.param


_cache: dict = {}


def reference(dataset, data, schedule: str):
    """The uninterrupted nested run and the independent runs of each size (made once)."""
    if schedule not in _cache:
        nested = train_run(nested_spec(dataset, schedule=schedule), data=data)
        _cache[schedule] = nested, independent_runs(dataset, config(schedule=schedule))
    return _cache[schedule]


class Recording(Session):
    """Keeps every report (those that come with a checkpoint too), and no checkpoint."""

    def __init__(self):
        self.reports = []

    def save(self, state: dict, metrics: dict) -> None:
        self.reports.append(metrics)

    def report(self, metrics: dict) -> None:
        self.reports.append(metrics)


def row_reports(reports: list[dict]) -> list[dict]:
    return [r for r in reports if "row_tokens" in r]


def same_rows(a: list[dict], b: list[dict]) -> bool:
    """Bit-identical scores (timings and the compute spent so far may differ)."""
    keys = ("row_tokens", "tokens", "step", "val_loss", "val_loss_se", "cooldown_steps")
    return [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]


# -- the schedule and the plan -------------------------------------------------------------


def test_wsd_holds_the_peak_then_cools_down_in_1_minus_sqrt_to_the_floor():
    cfg = TrainConfig(lr=1e-3, lr_scaling="none", schedule="wsd", warmup_steps=10)
    lrs = [cfg.lr_at(s, 100, 64) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert cfg.cooldown_for(100) == 20
    assert lrs[10:80] == [1e-3] * 70  # stable: exactly the peak
    assert lrs[80] == pytest.approx(1e-4 + 9e-4 * (1 - math.sqrt(1 / 20)))
    assert lrs[89] == pytest.approx(1e-4 + 9e-4 * (1 - math.sqrt(10 / 20)))
    assert lrs[99] == pytest.approx(1e-4)  # the floor, min_lr_ratio x peak, at the last step
    assert all(a > b for a, b in zip(lrs[79:], lrs[80:], strict=False))
    # The stable part does not depend on the run's length: what lets runs share a trunk.
    assert [cfg.lr_at(s, 1000, 64) for s in range(80)] == lrs[:80]
    assert TrainConfig(schedule="wsd", min_lr_ratio=0.0).lr_at(99, 100, 64) == 0.0
    assert [cfg.cooldown_for(n) for n in (1, 4, 21, 43)] == [1, 1, 4, 9]
    with pytest.raises(ConfigError, match="field 'cooldown_fraction' must be in"):
        TrainConfig(cooldown_fraction=0.0)
    with pytest.raises(ConfigError, match="must be one of constant, cosine, wsd"):
        TrainConfig(schedule="linear")


def test_nested_compute_is_the_trunk_plus_the_cooldowns():
    sizes = [10**7, 10**6, 10**8]
    constant = nested_compute(sizes, "constant")
    assert (constant.nested_tokens, constant.independent_tokens) == (10**8, 111 * 10**6)
    wsd = nested_compute(sizes, "wsd", cooldown_fraction=0.2)
    assert wsd.nested_tokens == 10**8 + 2_200_000
    assert wsd.saving == pytest.approx(111 / 102.2)
    assert wsd.flops(1000) == (6.0 * 1000 * wsd.nested_tokens, 6.0 * 1000 * 111 * 10**6)
    assert nested_compute([5000], "wsd").nested_tokens == 5000  # one size: one run
    with pytest.raises(ConfigError, match="field 'schedule'"):
        nested_compute(sizes, "cosine")


def test_eval_at_is_kept_sorted_and_refused_where_it_cannot_be_nested(tmp_path):
    spec = RunSpec(str(tmp_path), MODEL, 1000, config(), (500, 200, 1000, 200))
    assert spec.eval_at == (200, 500)  # sorted, once each, the run's own size left out
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(TrainError, match="field 'eval_at'"):
        RunSpec(str(tmp_path), MODEL, 1000, config(), (2000,))
    with pytest.raises(TrainError, match="field 'eval_at'"):
        RunSpec(str(tmp_path), MODEL, 1000, config(), (0,))
    with pytest.raises(TrainError, match="field 'eval_at'.*cosine"):
        RunSpec(str(tmp_path), MODEL, 1000, config(schedule="cosine"), (500,))
    # An identity saved before eval_at and cooldown_fraction existed is the same run.
    old = RunSpec(str(tmp_path), MODEL, 1000, config()).identity()
    del old["eval_at"], old["config"]["cooldown_fraction"]
    assert RunSpec(str(tmp_path), MODEL, 1000, config()).same_run(old)
    assert not RunSpec(str(tmp_path), MODEL, 999, config()).same_run(old)


# -- nested equals independent --------------------------------------------------------------


def test_nested_rows_equal_independent_runs(dataset, data, schedule):
    nested, independent = reference(dataset, data, schedule)
    assert nested.status == FINISHED
    assert [r["row_tokens"] for r in nested.rows] == list(ALL_SIZES)
    for row in nested.rows:
        alone = independent[row["row_tokens"]]
        assert alone.rows[0]["row_tokens"] == row["row_tokens"]
        assert (row["tokens"], row["step"]) == (alone.tokens, alone.steps)
        assert abs(row["val_loss"] - alone.val_loss) <= TOLERANCE
        assert abs(row["val_loss_se"] - alone.val_loss_se) <= TOLERANCE
        assert row["schedule"] == schedule
    assert nested.val_loss == nested.rows[-1]["val_loss"]
    assert (nested.tokens, nested.steps) == (TOKENS, 50)
    # Compute: the trunk, plus each smaller size's branch (wsd: its cooldown; constant:
    # its short last batch), within a batch per size of the planned count.
    planned = nested_compute(ALL_SIZES, schedule)
    assert abs(nested.trained_tokens - planned.nested_tokens) <= len(SIZES) * 4 * 256
    assert planned.independent_tokens == sum(ALL_SIZES)
    assert nested.trained_tokens < sum(alone.tokens for alone in independent.values()) / 1.5
    cooldowns = [r["cooldown_steps"] for r in nested.rows]
    assert cooldowns == ([4, 6, 9, 10] if schedule == "wsd" else [0, 0, 0, 0])


def test_nested_run_warms_up_as_its_smallest_size_does(dataset, data):
    """warmup_for(total steps) caps the warmup at a tenth of a run: 5 steps for the
    50-step run, 2 for the 21-step smallest size. A nested run warms up as its smallest
    size does, for every size: each row is the independent run with that warmup."""
    nested = train_run(nested_spec(dataset, warmup_steps=5), data=data)
    _, independent = reference(dataset, data, "constant")  # warmup_steps=2
    for row in nested.rows:
        assert row["val_loss"] == independent[row["row_tokens"]].val_loss
    own_warmup = train_run(RunSpec(str(dataset), MODEL, TOKENS, config(warmup_steps=5)), data=data)
    assert own_warmup.val_loss != nested.val_loss  # 5 warmup steps: another run


def test_a_single_size_run_reports_its_one_row(dataset, data):
    _, independent = reference(dataset, data, "constant")
    alone = independent[SIZES[0]]
    assert len(alone.rows) == 1
    row = alone.rows[0]
    assert (row["row_tokens"], row["tokens"], row["step"]) == (SIZES[0], 81 * 256, 21)
    assert row["val_loss"] == alone.val_loss and alone.trained_tokens == alone.tokens


# -- reports: each row once, as the run passes it ---------------------------------------------


def test_each_row_is_reported_once_with_the_checkpoint_that_records_it(dataset, data, tmp_path):
    session = LocalSession(tmp_path, keep=100)
    reports = []

    def on_report(metrics: dict) -> None:
        reports.append(metrics)
        if "row_tokens" in metrics:  # the checkpoint saved with it already holds the row
            assert session.latest_checkpoint()["rows"][-1]["row_tokens"] == metrics["row_tokens"]

    session.on_report = on_report
    result = train_run(nested_spec(dataset, schedule="wsd"), session=session, data=data)
    rows = row_reports(reports)
    assert [r["row_tokens"] for r in rows] == list(ALL_SIZES)
    assert [r["status"] for r in rows] == [RUNNING] * 3 + [FINISHED]
    assert [r["row_index"] for r in rows] == [0, 1, 2, 3] and rows[0]["row_count"] == 4
    for report, row in zip(rows, result.rows, strict=True):
        assert {k: report[k] for k in row} == row
        assert report["trained_tokens"] <= result.trained_tokens
    assert [r["trained_tokens"] for r in rows] == sorted(r["trained_tokens"] for r in rows)
    # Checkpoint names only grow, although a branch's steps run ahead of the trunk's.
    steps = [int(p.stem.split("-")[1]) for p in session.checkpoints()]
    assert steps == sorted(steps) and steps[-1] == 69  # 50 trunk + 4 + 6 + 9 cooldown steps


def test_a_row_that_diverges_fails_the_run_and_names_the_sizes_never_scored(
    dataset, data, monkeypatch
):
    import gzipscale.trainers.train as train_module

    real = train_module.evaluate
    calls = []

    def second_blows_up(*args, **kwargs):
        calls.append(1)
        return (50.0, 0.1) if len(calls) == 2 else real(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", second_blows_up)
    session = Recording()
    reports = session.reports
    result = train_run(nested_spec(dataset, schedule="wsd"), session=session, data=data)
    assert result.status == FAILED and math.isnan(result.val_loss)
    assert "held-out loss at 30,720 tokens is 50" in result.reason
    assert [r["row_tokens"] for r in result.rows] == [SIZES[0]]
    assert reports[-1]["status"] == FAILED
    assert reports[-1]["unreported_tokens"] == [30_720, 43_500, TOKENS]
    assert [r["row_tokens"] for r in row_reports(reports)] == [SIZES[0]]


# -- resume: stopped or killed anywhere ----------------------------------------------------------


def test_stopped_on_the_trunk_and_mid_branch_resumes_to_the_same_rows(
    dataset, data, schedule, tmp_path
):
    uninterrupted, _ = reference(dataset, data, schedule)
    spec = nested_spec(dataset, schedule=schedule)
    session = LocalSession(tmp_path, keep=100)
    reports = []
    session.on_report = reports.append
    stopped_in = set()
    for _ in range(100):
        result = train_run(spec, session=session, data=data, stop_after_steps=5)
        if result.status != "interrupted":
            break
        state = session.latest_checkpoint()
        stopped_in.add("branch" if state["branch"] is not None else "trunk")
    assert result.status == FINISHED and result.resumed_from_step > 0
    assert same_rows(result.rows, uninterrupted.rows)
    assert result.val_loss == uninterrupted.val_loss
    assert [r["row_tokens"] for r in row_reports(reports)] == list(ALL_SIZES)  # once each
    assert same_rows(row_reports(reports), uninterrupted.rows)
    assert result.curve == uninterrupted.curve  # every step is a curve point here
    if schedule == "wsd":  # constant's branches are one step: they end where they start
        assert stopped_in == {"trunk", "branch"}


class Killed(BaseException):
    """The process died: nothing in the run may catch it."""


class KillingSession(LocalSession):
    """Dies at its ``kill_at``-th save: before writing it ("before": neither the
    checkpoint nor its report happened) or just after ("after": both did)."""

    def __init__(self, run_dir, kill_at: int, when: str, on_report):
        super().__init__(run_dir, keep=100, on_report=on_report)
        self.kill_at, self.when, self.saves = kill_at, when, 0
        self.kinds = []  # what each save was: "row", "branch" (mid-branch) or "trunk"

    def save(self, state: dict, metrics: dict) -> None:
        self.saves += 1
        in_branch = "branch" if state["branch"] is not None else "trunk"
        self.kinds.append("row" if "row_tokens" in metrics else in_branch)
        if self.saves == self.kill_at and self.when == "before":
            raise Killed
        super().save(state, metrics)
        if self.saves == self.kill_at:
            raise Killed


def test_killed_at_a_row_or_mid_branch_save_the_run_reports_every_row_exactly_once(
    dataset, data, tmp_path
):
    """Killed at a save, before it was written or just after (written and reported), then
    resumed: the same rows, each reported once. Saves every 8 steps fall on the trunk and
    in two cooldowns; the kills are at every save but the trunk's (the stop-and-resume
    test covers those), and the first (before it: a restart from scratch)."""
    spec = nested_spec(dataset, schedule="wsd", checkpoint_every=8)
    counting = KillingSession(tmp_path / "reference", 0, "after", None)
    uninterrupted = train_run(spec, session=counting, data=data)
    saves = counting.saves
    assert counting.kinds.count("row") == 4 and counting.kinds.count("branch") == 2
    assert saves == 12  # 8 periodic checkpoints, 3 rows, the final
    kills = [
        (n, when)
        for n, kind in enumerate(counting.kinds, 1)
        for when in ("before", "after")
        if kind != "trunk" or n == 1
    ]
    for kill_at, when in kills:
        run_dir = tmp_path / f"kill-{kill_at}-{when}"
        reports = []
        killer = KillingSession(run_dir, kill_at, when, reports.append)
        with pytest.raises(Killed):
            train_run(spec, session=killer, data=data)
        resumed = LocalSession(run_dir, 100, reports.append)
        result = train_run(spec, session=resumed, data=data)
        assert result.status == FINISHED, (kill_at, when)
        assert same_rows(result.rows, uninterrupted.rows), (kill_at, when)
        rows = row_reports(reports)
        if kill_at == saves and when == "after":
            # Killed after its final report: the resumed run replays it, identical.
            # The orchestrator keeps the first row of each (dataset, shape, row_tokens).
            assert rows[-1] == rows[-2] and rows[-1]["status"] == FINISHED
            rows = rows[:-1]
        assert [r["row_tokens"] for r in rows] == list(ALL_SIZES), (kill_at, when)
        assert same_rows(rows, uninterrupted.rows)


VERSION_1_METRICS = (
    *("step", "steps", "tokens_seen", "status", "val_loss", "val_loss_se"),
    *("tokens_per_s", "wall_s", "resumed_from_step"),
)


def test_version_1_checkpoints_resume_and_newer_ones_are_refused(dataset, tmp_path):
    """A checkpoint written before nested runs (state version 1: no trunk_step, branch,
    rows or interval; a spec without eval_at and cooldown_fraction) resumes as before."""
    d = 30_720
    run_data = load_run_data(dataset, d, EVAL)
    spec = RunSpec(str(dataset), MODEL, d, config(checkpoint_every=5))
    uninterrupted = train_run(spec, session=LocalSession(tmp_path / "full"), data=run_data)

    def as_version_1(path) -> None:
        state = torch.load(path, weights_only=False)
        assert state["version"] == STATE_VERSION == 2
        for key in ("trunk_step", "branch", "rows", "interval"):
            del state[key]
        del state["spec"]["eval_at"], state["spec"]["config"]["cooldown_fraction"]
        state["version"] = 1
        if "final" in state:
            del state["final"]["result"]["rows"], state["final"]["result"]["trained_tokens"]
            state["final"]["metrics"] = {
                k: v for k, v in state["final"]["metrics"].items() if k in VERSION_1_METRICS
            }
        torch.save(state, path)

    session = LocalSession(tmp_path / "old", keep=100)
    train_run(spec, session=session, data=run_data, stop_after_steps=12)
    as_version_1(session.checkpoints()[-1])
    resumed = train_run(spec, session=session, data=run_data)
    assert resumed.resumed_from_step == 12 and resumed.val_loss == uninterrupted.val_loss
    assert same_rows(resumed.rows, uninterrupted.rows)

    # A finished version-1 run: its result again, with its one row, and the same report.
    final = session.checkpoints()[-1]
    as_version_1(final)
    reports = []
    again = train_run(
        spec, session=LocalSession(tmp_path / "old", 100, reports.append), data=run_data
    )
    assert again.val_loss == uninterrupted.val_loss and len(again.rows) == 1
    assert again.rows[0]["row_tokens"] == d and again.rows[0]["val_loss"] == again.val_loss
    assert reports[0]["row_tokens"] == d and reports[0]["status"] == FINISHED

    state = torch.load(final, weights_only=False)
    state["version"] = STATE_VERSION + 1
    torch.save(state, final)
    with pytest.raises(TrainError, match="newer than this gzipscale"):
        train_run(spec, session=LocalSession(tmp_path / "old"), data=run_data)


# -- DDP -------------------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, port: int, spec_dict: dict, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        spec = RunSpec.from_dict(spec_dict)
        nested = train_run(spec)
        smallest = train_run(RunSpec(spec.data, spec.model, SIZES[0], spec.config))
        rows = [(r["row_tokens"], r["step"], r["val_loss"]) for r in nested.rows]
        out[rank] = rows, (smallest.steps, smallest.val_loss)
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_nested_run_matches_independent_runs(dataset, data):
    """Every rank branches and goes back in step. Under DDP a last batch smaller than the
    world is dropped (the smallest size's 81st document): its row is the two-process
    independent run's; the others agree with one process up to float rounding (the
    gradients are averaged over two halves of each batch)."""
    spec = nested_spec(dataset, schedule="wsd")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: the same float reduction order
    try:
        single = train_run(spec, data=data)
    finally:
        torch.set_num_threads(threads)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_ddp_worker, args=(2, free_port(), spec.to_dict(), out), nprocs=2, join=True)
        results = dict(out)
    assert set(results) == {0, 1}
    for rows, (smallest_steps, smallest_loss) in results.values():
        assert [(t, s) for t, s, _ in rows] == list(zip(ALL_SIZES, (20, 30, 43, 50), strict=True))
        assert smallest_steps == 20 and abs(rows[0][2] - smallest_loss) <= 2e-4
        for (_, _, val), row in zip(rows[1:], single.rows[1:], strict=True):
            assert val == pytest.approx(row["val_loss"], abs=2e-4)


# -- the command line ------------------------------------------------------------------------


def test_train_command_reports_every_size_of_a_nested_run(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        *("--data", str(dataset), "--model", MODEL, "--tokens", str(TOKENS)),
        *("--eval-at", "20.7K,30720,43.5K", "--schedule", "wsd", "--cooldown-fraction", "0.25"),
        *("--batch-size", "4", "--eval-tokens", str(EVAL), "--out", str(out)),
    ]
    assert main([*argv, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["row_tokens"] for r in printed["rows"]] == list(ALL_SIZES)
    assert printed == json.loads((out / "result.json").read_text())
    spec = json.loads((out / "run.json").read_text())
    assert spec["eval_at"] == list(SIZES) and spec["config"]["cooldown_fraction"] == 0.25
    assert printed["rows"][-1]["cooldown_steps"] == 13  # a quarter of 50 steps, rounded
    # Printed again from the stored result, as a table with one line per size.
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "4 data sizes in one run" in text
    for row in printed["rows"]:
        assert f"{row['row_tokens']:,}" in text and f"{row['val_loss']:.4f}" in text
    # A cosine schedule cannot be nested: refused before anything is made.
    bad = tmp_path / "bad"
    refused = [*argv[:-2], "--out", str(bad)]
    refused[refused.index("wsd")] = "cosine"
    assert main(refused) == 2
    assert "cosine" in capsys.readouterr().err and not bad.exists()
