"""The live analysis actor on the shared test cluster: dedupe, coalescing, a real Tune sweep."""

from __future__ import annotations

import json
import math
import pickle
import sys
import time
import uuid

import numpy as np
import pytest
import ray
import ray.cloudpickle
from builders import law_at, result_row
from ray import tune

from gzipscale.analysis.actor import get_or_create_analysis_actor
from gzipscale.analysis.fitreport import FitReport
from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.results import ResultRow
from gzipscale.orchestrator.callbacks import AnalysisCallback

NAMESPACE = "gzipscale-test-analysis"  # not the driver's namespace: lookups must name it
N_GRID = (1e6, 3e6, 1e7, 3e7)
D_GRID = (1e8, 3e8, 1e9, 3e9)
H_VALUES = {"low": 0.3, "mid": 0.45, "high": 0.7}
TUNE_LAW = ScalingLaw(E=1.5, A=300.0, B=600.0, alpha=0.35, beta=0.3)
FAIL_AT = (1e7, 1e9)  # the one Tune trial that raises


def row(
    dataset: str, h: float, n: float, d: float, loss: float, trial_id: str, step: int
) -> ResultRow:
    """A reported result as the sweep's callback sends it: a validated ResultRow."""
    return result_row(
        dataset=dataset,
        gzip=h,
        params=int(n),
        non_embedding_params=int(n // 2),
        tokens=int(d),
        val_loss=loss,
        trial_id=trial_id,
        step=step,
    )


@pytest.fixture
def by_value():
    """Pickle this module's functions by value: workers cannot import a test module."""
    module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(module)
    yield
    ray.cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture
def actor(ray_cluster):
    """A fresh detached actor; killed afterwards so detached actors do not outlive the test."""
    name = f"analysis-{uuid.uuid4().hex[:8]}"
    handle = get_or_create_analysis_actor(name, NAMESPACE, bootstrap=10, seed=0)
    yield name, handle
    ray.kill(handle)


def test_rows_dedupe_failed_runs_and_fits(actor):
    name, handle = actor
    sends = []
    for dataset, h in H_VALUES.items():
        law = law_at(h)
        for i, (n, d) in enumerate((n, d) for n in N_GRID for d in D_GRID):
            trial = f"{dataset}-{i}"
            final = float(law.loss(n, d))
            sends.append(handle.add_result.remote(row(dataset, h, n, d, final * 1.2, trial, 1)))
            sends.append(handle.add_result.remote(row(dataset, h, n, d, final, trial, 2)))
            sends.append(handle.run_finished.remote(trial, row(dataset, h, n, d, final, trial, 2)))
    ray.get(sends)  # the actor may run calls out of order: the replay must come after
    # A replayed result (a retry after the last checkpoint) replaces, never duplicates.
    sends = [handle.add_result.remote(row("low", 0.3, 1e6, 1e8, 9.0, "low-0", 1))]
    # A plain mapping is validated by the actor itself (here without status or reason).
    plain = row("low", 0.3, 1e6, 1e8, 7.0, "low-oom", 1).to_dict()
    del plain["status"], plain["reason"]
    sends.append(handle.add_result.remote(plain))
    failed = row("low", 0.3, 1e6, 1e8, 7.0, "low-oom", 1).replace(
        status="failed", reason="CUDA out of memory", val_loss=math.nan
    )
    sends.append(handle.run_finished.remote("low-oom", failed))
    ray.get(sends)
    assert ray.get(handle.wait_for_idle.remote(60))

    snap = ray.get(handle.snapshot.remote())
    json.dumps(snap, allow_nan=False)
    keys = [(r["trial_id"], r["step"]) for r in snap["rows"]]
    assert len(keys) == len(set(keys)) == 3 * 16 * 2 + 1
    assert (
        next(r["val_loss"] for r in snap["rows"] if r["trial_id"] == "low-0" and r["step"] == 1)
        == 9.0
    )
    assert snap["counts"] == {"reported": 49, "running": 0, "finished": 48, "failed": 1}
    oom = [r for r in snap["final_rows"] if r["trial_id"] == "low-oom"]
    assert oom[0]["status"] == "failed" and oom[0]["reason"] == "CUDA out of memory"
    assert oom[0]["val_loss"] is None  # NaN, as strict JSON allows

    report = FitReport.from_dict(snap["report"])
    assert report.policy.describe() == "95% interval, 10 bootstrap resamples, seed 0"
    for dataset, h in H_VALUES.items():
        state, fit, truth = snap["datasets"][dataset], report.datasets[dataset], law_at(h)
        assert state["status"] == "fitted" and state["fit_version"] >= 1
        assert fit.n_points == 16  # the OOM run left out
        assert fit.excluded == {"failed": 1} if dataset == "low" else fit.excluded == {}
        assert fit.law.alpha == pytest.approx(truth.alpha, abs=0.02)
        assert fit.law.beta == pytest.approx(truth.beta, abs=0.02)
        assert fit.interval("alpha")[0] <= fit.law.alpha <= fit.interval("alpha")[1]
        assert fit.bootstrap.policy == report.policy  # said beside the intervals
        assert float(fit.frontier.tokens_per_parameter) > 0
    assert snap["datasets"]["low"]["runs"]["failed"] == 1
    assert report.regression.names == sorted(H_VALUES)
    assert report.regression.terms["alpha"].slope == pytest.approx(0.2, abs=0.05)

    # Another driver finds the same actor by name in the namespace.
    assert ray.get(ray.get_actor(name, namespace=NAMESPACE).snapshot.remote()) == snap
    same = get_or_create_analysis_actor(name, NAMESPACE)
    assert ray.get(same.snapshot.remote())["version"] == snap["version"]


def test_a_burst_of_completions_coalesces(actor):
    _, handle = actor
    law, runs = law_at(0.45), [(n, d) for n in N_GRID for d in D_GRID[:3]]
    rows = [
        row("burst", 0.45, n, d, float(law.loss(n, d)), f"b{i}", 3) for i, (n, d) in enumerate(runs)
    ]
    ray.get([handle.run_finished.remote(r.trial_id, r) for r in rows])
    assert ray.get(handle.wait_for_idle.remote(60))
    first = ray.get(handle.stats.remote())["refits"]["burst"]
    assert first <= 3
    report = ray.get(handle.snapshot.remote())["report"]
    assert report["datasets"]["burst"]["n_points"] == 12

    # Completions that land during a refit cause exactly one more, with every run.
    extra = [
        row("burst", 0.45, n, 1e10, float(law.loss(n, 1e10)), f"x{n:g}", 3) for n in N_GRID[:3]
    ]
    ray.get(handle.run_finished.remote(extra[0].trial_id, extra[0]))
    deadline = time.monotonic() + 30
    while ray.get(handle.stats.remote())["in_flight"] != "burst":
        assert time.monotonic() < deadline, "the refit never started"
        time.sleep(0.01)
    ray.get([handle.run_finished.remote(r.trial_id, r) for r in extra[1:]])
    assert ray.get(handle.wait_for_idle.remote(60))
    assert ray.get(handle.stats.remote())["refits"]["burst"] == first + 2
    snap = ray.get(handle.snapshot.remote())
    assert snap["report"]["datasets"]["burst"]["n_points"] == 15
    assert snap["datasets"]["burst"]["fit_version"] == first + 2


def law_trainable(config: dict) -> None:
    """Reports once without a loss, then two losses that settle on TUNE_LAW's value."""
    final = float(TUNE_LAW.loss(config["params"], config["tokens"]))
    tune.report({"step": 0})
    for step in (1, 2):
        if step == 2 and (config["params"], config["tokens"]) == FAIL_AT:
            raise RuntimeError("boom at step 2")
        tune.report({"val_loss": final * (1.0 + 0.1 * (2 - step)), "step": step, "wall_s": 0.5})


def test_tune_sweep_feeds_the_actor(actor, by_value, tmp_path):
    name, handle = actor
    callback = AnalysisCallback(name, NAMESPACE)
    tuner = tune.Tuner(
        tune.with_resources(law_trainable, {"cpu": 0.5}),
        param_space={
            "dataset": "tune-law",
            "gzip": 0.4,
            "params": tune.grid_search([1e6, 1e7, 1e8]),
            "tokens": tune.grid_search([1e8, 1e9, 1e10]),
        },
        # Reusing trial actors saves a worker start per trial on a 2-core machine.
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            name="analysis-actor", storage_path=str(tmp_path), callbacks=[callback], verbose=0
        ),
    )
    grid = tuner.fit()
    assert grid.num_errors == 1
    assert ray.get(handle.wait_for_idle.remote(60))

    snap = ray.get(handle.snapshot.remote())
    finals = snap["final_rows"]
    assert len(finals) == len({r["trial_id"] for r in finals}) == 9
    assert {r["trial_id"] for r in snap["rows"]} == {r["trial_id"] for r in finals}
    assert len(snap["rows"]) == 8 * 2 + 1  # step 0 had no loss; the failed run stopped at 1
    failed = [r for r in finals if r["status"] == "failed"]
    assert len(failed) == 1 and "boom at step 2" in failed[0]["reason"]
    assert (failed[0]["params"], failed[0]["tokens"]) == FAIL_AT
    assert all(
        r["step"] == 2 and r["shape"] == "unknown" for r in finals if r["status"] == "finished"
    )

    report = FitReport.from_dict(snap["report"])
    fit = report.datasets["tune-law"]
    assert snap["datasets"]["tune-law"]["status"] == "fitted" and fit.n_points == 8
    assert fit.law.alpha == pytest.approx(TUNE_LAW.alpha, abs=0.02)
    assert fit.law.beta == pytest.approx(TUNE_LAW.beta, abs=0.02)
    assert report.regression is None and "needs at least 3" in report.regression_note

    # Tune pickled the callback into tuner.pkl: names only, never a handle.
    for blob in (pickle.dumps(callback), (tmp_path / "analysis-actor" / "tuner.pkl").read_bytes()):
        assert b"ActorHandle" not in blob
    assert vars(pickle.loads(pickle.dumps(callback)))["actor_name"] == name
    assert np.isfinite(fit.frontier.tokens_per_parameter)
