"""Nested-data sweeps: one trial per (grammar, shape) reports the row of every data size.

Plans and the callbacks' bookkeeping are checked without a cluster (fake trials); the
real sweeps run tiny models on the shared cluster: a nested sweep at constant lr gives
the independent runs' losses, a rerun changes nothing, and a worker killed in a cooldown
branch resumes without repeating or losing a row. The driver-kill scenario is in
test_sweep_recovery.py (it needs its own process).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
import ray.cloudpickle

from gzipscale.analysis.results import read_results_csv
from gzipscale.cli import main
from gzipscale.helpers import SpecError
from gzipscale.orchestrator import trial as trial_module
from gzipscale.orchestrator.callbacks import (
    EventLog,
    ResultsTable,
    ended_rows,
    read_rows,
    reported_row,
)
from gzipscale.orchestrator.plan import plan_runs, plan_summary, plan_trials
from gzipscale.orchestrator.presets import preset_spec
from gzipscale.orchestrator.spec import SweepSpec
from gzipscale.orchestrator.storage import RunStore
from gzipscale.orchestrator.sweep import check_spec, run_sweep
from gzipscale.orchestrator.sweep_state import collect
from gzipscale.trainers.config import nested_compute
from gzipscale.vocabulary import RunKey

ROOT = Path(__file__).resolve().parents[1]
DATASET = "pcfg-3-300-2-2-s0"
SIZES = [16_384, 49_152, 98_304]
SMALL = {
    "name": "nest",
    "grammars": [{"grammar": "3,300,2,2", "seed": 0}],
    "shapes": ["tiny-1", "tiny-2"],
    "data_sizes": SIZES,
    "eval_tokens": "8K",
    # No warmup: a nested run warms up as its smallest size does (8 steps: none), so
    # that every row is exactly the independent run of its size.
    "train": {
        "preset": "cpu",
        "batch_size": 8,
        "checkpoint_every": 3,
        "schedule": "constant",
        "warmup_steps": 0,
    },
    "nested": True,
}


def small_spec(train: dict | None = None, **changes) -> SweepSpec:
    return SweepSpec.from_dict({**SMALL, **changes, "train": {**SMALL["train"], **(train or {})}})


def rows_by_run(run_dir: Path) -> dict:
    rows = [r.to_dict() for r in read_results_csv(run_dir / "results.csv")]
    keys = [(r["dataset"], r["shape"], r["tokens"]) for r in rows]
    assert len(keys) == len(set(keys)), "a run appears twice in results.csv"
    return dict(zip(keys, rows, strict=True))


# -- specs and plans (no cluster) ---------------------------------------------------------


def test_nested_needs_a_schedule_that_can_be_nested_and_orders_are_named():
    with pytest.raises(SpecError, match="field 'nested': the cosine schedule.*wsd"):
        small_spec(train={"schedule": "cosine"})
    with pytest.raises(SpecError, match="field 'order' must be one of longest-first"):
        small_spec(order="random")
    with pytest.raises(SpecError, match="field 'nested' must be true or false"):
        small_spec(nested="yes")
    spec = small_spec(train={"schedule": "wsd"})
    assert SweepSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["nested"] is True and spec.to_dict()["order"] == "longest-first"


def test_paper_plan_nested_trials_longest_first_and_the_exact_saving():
    paper = preset_spec("paper")
    assert paper.nested and paper.train.schedule == "constant"
    trials = plan_trials(paper, use_gpu=True)
    runs = plan_runs(paper, use_gpu=True)
    assert len(trials) == 36 and len(runs) == 216 and len({r.run_id for r in runs}) == 216
    assert [t.flops for t in trials] == sorted((t.flops for t in trials), reverse=True)
    assert trials[0].shape == "paper-1.4b" and trials[-1].shape == "paper-4m"
    for t in trials:  # every trial: the six sizes, its rows' FLOPs adding up to its own
        mine = [r for r in runs if r.trial == t.run_id]
        assert [r.tokens for r in mine] == list(t.sizes) and len(t.sizes) == 6
        assert sum(r.flops for r in mine) == pytest.approx(t.flops, rel=1e-12)
        assert t.flops == pytest.approx(6 * t.params * t.trained_tokens)

    summary = plan_summary(paper, use_gpu=True)
    modes = summary["modes"]
    # Constant lr: the trunk to 100M tokens plus, per smaller size, its short last batch
    # (a one-step branch); as separate runs, the sum of the six sizes.
    per_trial = {"independent": 176_100_608, "nested": 100_013_312}
    for mode, tokens in per_trial.items():
        assert modes[mode]["tokens"] == 36 * tokens and modes[mode]["trials"] in (36, 216)
    assert modes["saving"] == pytest.approx(1.7608, abs=1e-4)
    assert modes["saving"] == pytest.approx(nested_compute(paper.data_sizes).saving, rel=1e-3)
    assert summary["total_flops"] == pytest.approx(modes["nested"]["flops"])
    assert summary["gpu_hours_estimate"] < modes["independent"]["gpu_hours_estimate"]
    assert modes["saving_wsd"] == pytest.approx(1.528, abs=1e-3)  # D_max + 0.2 x the rest

    cheap = plan_trials(paper.with_changes(order="cheapest-first"), use_gpu=True)
    assert [t.flops for t in cheap] == sorted(t.flops for t in cheap)
    independent = plan_runs(paper.with_changes(nested=False), use_gpu=True)
    assert all(math.isclose(r.flops, 6 * r.params * r.tokens) for r in independent)
    assert {r.run_id for r in independent} == {r.run_id for r in runs}


def test_nested_wsd_plan_counts_the_trainers_tokens():
    """The plan's tokens are the ones the trainer trains: the trunk, plus each smaller
    size's cooldown from its branch point (whole steps)."""
    spec = small_spec(train={"schedule": "wsd"})
    (trial, *_) = plan_trials(spec, use_gpu=False)
    # 16K: 8 steps, cooldown 2 (2 x 8 documents); 48K: 24 steps, cooldown 5 (5 x 8).
    assert trial.sizes == tuple(SIZES)
    assert trial.trained_tokens == 98_304 + (2 * 8 + 5 * 8) * 256


def test_dry_run_shows_both_modes(capsys):
    assert main(["sweep", "--preset", "paper", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["nested"] and plan["trials"] == 36 and plan["runs"] == 216
    assert plan["total_flops"] == pytest.approx(sum(r["flops"] for r in plan["plan"]))
    assert main(["sweep", "--preset", "paper", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "216 runs in 36 nested-data trials" in text and "1.76x fewer tokens" in text
    assert "independent runs (constant): 216 trials, 6,339,621,888 tokens" in text
    assert main(["sweep", "--preset", "tiny", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "40 runs in 8 nested-data trials (schedule wsd)" in text
    assert main(["sweep", "--preset", "smoke", "--nested", "--dry-run"]) == 2
    assert "the cosine schedule" in capsys.readouterr().err


def test_an_old_sweep_json_still_resumes(tmp_path):
    """A sweep.json written before nested, order and train.cooldown_fraction existed is
    the same spec: its run directory resumes and is not refused."""
    # The reproduction's sweep.json as an earlier version wrote it.
    recorded = json.loads((ROOT / "tests" / "data" / "sweep_before_nested.json").read_text())
    assert "nested" not in recorded and "cooldown_fraction" not in recorded["train"]
    spec = SweepSpec.from_dict({k: v for k, v in recorded.items()})
    assert spec.differences(recorded) == []
    (tmp_path / "reproduction").mkdir()
    (tmp_path / "reproduction" / "sweep.json").write_text(json.dumps(recorded))
    assert check_spec(RunStore(str(tmp_path / "reproduction")), spec) is True
    assert spec.differences({**recorded, "shapes": ["tiny-1"]})  # a real difference shows


# -- the callbacks' bookkeeping, on fake trials ------------------------------------------


def fake_trial(sizes=SIZES, shape="tiny-2", trial_id="t1", last=None):
    run = {
        "run_id": f"{DATASET}/{shape}/nested",
        "dataset": DATASET,
        "grammar": "3,300,2,2",
        "seed": 0,
        "gzip": 0.137,
        "shape": shape,
        "params": 26_088,
        "non_embedding_params": 11_640,
        "tokens": sizes[-1],
        "eval_at": list(sizes[:-1]),
    }
    return SimpleNamespace(
        trial_id=trial_id,
        config={"run": run, "train": {"schedule": "wsd"}},
        last_result=last or {},
        pickled_error_file=None,
        error_file=None,
    )


def row_report(size: int, loss: float, final: bool = False) -> dict:
    return {
        "row_tokens": size,
        "tokens": size,
        "step": size // 2048,
        "val_loss": loss,
        "schedule": "wsd",
        "status": "finished" if final else "running",
        "tokens_seen": size,
        "steps": 48,
    }


def test_rows_are_recorded_as_reported_once_each_and_unreported_sizes_fail(tmp_path):
    table, log = ResultsTable(str(tmp_path)), EventLog(str(tmp_path))
    trial = fake_trial()
    for cb in (table, log):
        cb.on_trial_result(0, [], trial, {"step": 3, "tokens_seen": 6144, "status": "running"})
        cb.on_trial_result(0, [], trial, row_report(16_384, 4.0))
    rows = read_rows(RunStore(str(tmp_path)))
    assert list(rows) == [RunKey(DATASET, "tiny-2", 16_384)]  # there as soon as reported
    row = rows[RunKey(DATASET, "tiny-2", 16_384)]
    assert row.val_loss == 4.0 and row.schedule == "wsd" and row.trial_id == "t1"
    # A replay (a trial resumed from an older checkpoint) changes nothing: the first wins.
    for cb in (table, log):
        cb.on_trial_result(0, [], trial, row_report(16_384, 3.5))
    assert read_rows(RunStore(str(tmp_path)))[RunKey(DATASET, "tiny-2", 16_384)].val_loss == 4.0
    # The trial ends after its 48K row, without the 96K one.
    trial.last_result = row_report(49_152, 2.0)
    for cb in (table, log):
        cb.on_trial_result(0, [], trial, trial.last_result)
        cb.on_trial_complete(0, [], trial)
    rows = read_rows(RunStore(str(tmp_path)))
    assert [(k.tokens, r.status) for k, r in sorted(rows.items())] == [
        (16_384, "finished"),
        (49_152, "finished"),
        (98_304, "failed"),
    ]
    assert rows[RunKey(DATASET, "tiny-2", 98_304)].reason.startswith("unreported_tokens")
    events = (tmp_path / "events.log").read_text()
    assert events.count("finished pcfg-3-300-2-2-s0 tiny-2 D=16384") == 1
    assert "failed   pcfg-3-300-2-2-s0 tiny-2 D=98304: unreported_tokens" in events


def test_ended_rows_recover_missed_reports_and_name_the_failure():
    trial = fake_trial()
    final = row_report(98_304, 1.5, final=True)
    final["rows"] = {str(d): row_report(d, 5.0 - i) for i, d in enumerate(SIZES)}
    rows = ended_rows("t1", trial.config, final, None)
    assert [(r.tokens, r.status, r.val_loss) for r in rows] == [
        (16_384, "finished", 5.0),
        (49_152, "finished", 4.0),
        (98_304, "finished", 3.0),
    ]
    failed = {"status": "failed", "reason": "held-out loss at 16,384 tokens diverged"}
    rows = ended_rows("t1", trial.config, failed, None)
    assert {r.status for r in rows} == {"failed"} and "diverged" in rows[0].reason
    rows = ended_rows("t1", trial.config, row_report(16_384, 4.0), "ActorDiedError: gone")
    assert [(r.status, r.reason) for r in rows[1:]] == [("failed", "ActorDiedError: gone")] * 2
    assert rows[0].finished
    assert reported_row("t1", trial.config, row_report(12_345, 4.0)) is None  # not its size
    single = fake_trial(sizes=[49_152])
    assert [r.tokens for r in ended_rows("t2", single.config, row_report(49_152, 2.0), None)] == [
        49_152
    ]


def test_collect_shows_every_row_of_a_running_nested_trial(tmp_path):
    run_dir = tmp_path / "nest"
    run_dir.mkdir()
    spec = small_spec()
    (run_dir / "sweep.json").write_text(json.dumps(spec.to_dict()))
    table, log = ResultsTable(str(run_dir)), EventLog(str(run_dir))
    trial = fake_trial()
    log.on_trial_start(0, [], trial)
    table.on_trial_result(0, [], trial, row_report(16_384, 4.0))
    trial_dir = run_dir / f"{DATASET}_tiny-2_98304_t1"
    trial_dir.mkdir()
    (trial_dir / "params.json").write_text(json.dumps(trial.config))
    (trial_dir / "result.json").write_text(json.dumps({"tokens_seen": 24_576, "steps": 48}))
    view = collect(run_dir)
    grid = view.grid(DATASET)
    assert grid[("tiny-2", 16_384)].state == "finished"
    assert grid[("tiny-2", 49_152)].state == "running"
    assert grid[("tiny-2", 49_152)].progress == pytest.approx(0.5)
    assert grid[("tiny-2", 98_304)].progress == pytest.approx(0.25)
    assert grid[("tiny-1", 16_384)].state == "pending"
    assert view.total_flops == pytest.approx(sum(t.flops for t in plan_trials(spec, False)))


# -- real sweeps ----------------------------------------------------------------------------


def test_nested_rows_equal_independent_runs_and_a_rerun_changes_nothing(ray_cluster, tmp_path):
    nested = run_sweep(small_spec(), str(tmp_path), say=lambda s: None)
    independent = run_sweep(
        small_spec(name="indep", nested=False), str(tmp_path), say=lambda s: None
    )
    assert (nested.trials, nested.finished, independent.trials) == (2, 6, 6)
    ours, theirs = rows_by_run(tmp_path / "nest"), rows_by_run(tmp_path / "indep")
    assert set(ours) == set(theirs) and len(ours) == 6
    for key, row in ours.items():
        assert row["status"] == "finished" and row["schedule"] == "constant"
        assert abs(row["val_loss"] - theirs[key]["val_loss"]) < 1e-6, key
    # One trial made all three rows of each shape.
    for shape in ("tiny-1", "tiny-2"):
        assert len({ours[(DATASET, shape, d)]["trial_id"] for d in SIZES}) == 1

    # Every row reached the actor as a run of its own, and the event log once each.
    actor = ray.get_actor("analysis-nest", namespace="gzipscale")
    assert ray.get(actor.wait_for_idle.remote(60))
    snap = ray.get(actor.snapshot.remote())
    assert snap["counts"]["finished"] == 6 and len(snap["final_rows"]) == 6
    assert all("@" in r["trial_id"] for r in snap["final_rows"])
    events = (tmp_path / "nest" / "events.log").read_text()
    assert events.count("finished ") == 6 and events.count("started ") == 2

    before = (tmp_path / "nest" / "results.csv").read_bytes()
    again = run_sweep(small_spec(), str(tmp_path), say=lambda s: None)
    assert again.finished == 6 and not again.failed
    assert (tmp_path / "nest" / "results.csv").read_bytes() == before


# Fault injection: Tune pickles this module's trainable by value (the shared cluster's
# workers started before the test), and it is steered by STORAGE/faults.json.


def branch_faulty_trial(config: dict) -> None:
    storage = Path(config["train_storage"]).parent.parent
    faults = json.loads((storage / "faults.json").read_text())
    run_id = config["run"]["run_id"]
    if run_id in faults.get("diverge", []):
        config = {
            **config,
            "train": {**config["train"], "lr": 10.0, "lr_scaling": "none", "grad_clip": 0.0},
        }
    marker = storage / f"crashed-{run_id.replace('/', '_')}"
    if run_id not in faults.get("crash_mid_branch", []) or marker.exists():
        trial_module.train_trial(config)
        return
    original = trial_module.TuneSession.save

    def save_then_crash(self, state, metrics):
        original(self, state, metrics)
        if state["branch"] is not None:  # a checkpoint inside a cooldown branch
            marker.write_text(json.dumps({"step": state["step"], "rows": len(state["rows"])}))
            os._exit(1)  # the process dies as on a lost node: no exception, no cleanup

    trial_module.TuneSession.save = save_then_crash
    try:
        trial_module.train_trial(config)
    finally:
        trial_module.TuneSession.save = original


def test_worker_killed_mid_branch_repeats_and_loses_no_row(ray_cluster, tmp_path):
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    wsd = {"schedule": "wsd"}
    crash, diverge = f"{DATASET}/tiny-2/nested", f"{DATASET}/tiny-1/nested"
    (tmp_path / "faults.json").write_text(
        json.dumps({"crash_mid_branch": [crash], "diverge": [diverge]})
    )
    outcome = run_sweep(
        small_spec(name="branch", train=wsd),
        str(tmp_path),
        say=lambda s: None,
        trainable=branch_faulty_trial,
    )
    clean = run_sweep(
        small_spec(name="clean", train=wsd, shapes=["tiny-2"]), str(tmp_path), say=lambda s: None
    )
    assert clean.finished == 3
    crashed = json.loads((tmp_path / "crashed-pcfg-3-300-2-2-s0_tiny-2_nested").read_text())
    assert crashed["step"] > 0 and crashed["rows"] >= 1  # after a row, inside a branch

    rows, reference = rows_by_run(tmp_path / "branch"), rows_by_run(tmp_path / "clean")
    assert len(rows) == 6 and outcome.finished == 3
    for d in SIZES:  # the diverged trial's sizes all fail, with its reason
        failed = rows[(DATASET, "tiny-1", d)]
        assert failed["status"] == "failed" and "diverged" in failed["reason"]
        row = rows[(DATASET, "tiny-2", d)]  # the crashed one: the clean run's losses
        assert row["status"] == "finished" and row["schedule"] == "wsd"
        assert row["val_loss"] == pytest.approx(reference[(DATASET, "tiny-2", d)]["val_loss"])

    # The trial reported every row exactly once, across its crash and retry.
    trial_dir = next((tmp_path / "branch").glob(f"{DATASET}_tiny-2_98304_*"))
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    reported = [r["row_tokens"] for r in results if "row_tokens" in r]
    assert sorted(reported) == SIZES
    assert results[-1]["resumed_from_step"] == crashed["step"]
    events = (tmp_path / "branch" / "events.log").read_text()
    assert "retrying pcfg-3-300-2-2-s0 tiny-2 D=98304" in events
    assert events.count("finished pcfg-3-300-2-2-s0 tiny-2") == 3
