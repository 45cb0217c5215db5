"""Sweeps that lose their driver or a node finish with every run exactly once.

Each scenario runs in a subprocess with its own Ray cluster (embedded, or a 2-node
ray.cluster_utils.Cluster), apart from the test session's shared one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gzipscale.analysis.results import read_results_csv

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

SPEC = """
name = "killed"
shapes = ["tiny-1", "tiny-2"]
data_sizes = ["16K", "48K", "96K"]
eval_tokens = "8K"
[[grammars]]
grammar = "3,300,2,2"
seed = 0
[train]
batch_size = 8
checkpoint_every = 3
"""


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def rows(path: Path) -> dict:
    if not path.exists():
        return {}
    found = [r.to_dict() for r in read_results_csv(path)]
    keys = [(r["dataset"], r["shape"], r["tokens"]) for r in found]
    assert len(keys) == len(set(keys)), "a run appears twice in results.csv"
    return dict(zip(keys, found, strict=True))


def _kill_after_rows(cmd: list[str], results, log_path, poll_s: float, rows_wanted: int = 2):
    """Start a driver, SIGKILL it once ``results`` holds ``rows_wanted`` rows."""
    log = open(log_path, "w")
    driver = subprocess.Popen(cmd, env=clean_env(), cwd=REPO, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 240
        while len(rows(results)) < rows_wanted:
            assert driver.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no rows reported in time"
            time.sleep(poll_s)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()


def test_driver_killed_mid_sweep_resumes_without_loss_or_duplicates(tmp_path):
    spec = tmp_path / "killed.toml"
    spec.write_text(SPEC)
    storage = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "gzipscale.cli",
        "sweep",
        "--spec",
        str(spec),
        "--storage",
        str(storage),
    ]
    results = storage / "killed" / "results.csv"
    _kill_after_rows(cmd, results, tmp_path / "first.log", poll_s=0.5)
    before = rows(results)
    assert 2 <= len(before) < 6

    again = subprocess.run(
        cmd, env=clean_env(), cwd=REPO, capture_output=True, text=True, timeout=420
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after = rows(results)
    assert len(after) == 6 and {r["status"] for r in after.values()} == {"finished"}
    for key, row in before.items():  # finished runs were not run again
        assert after[key] == row


NESTED_SPEC = """
name = "killed-nested"
shapes = ["tiny-1", "tiny-2"]
data_sizes = ["16K", "48K", "96K"]
eval_tokens = "8K"
nested = true
[[grammars]]
grammar = "3,300,2,2"
seed = 0
[train]
batch_size = 8
checkpoint_every = 3
schedule = "wsd"
"""


def test_nested_sweep_driver_killed_resumes_and_a_rerun_changes_nothing(tmp_path):
    """Two nested-data trials (three rows each, WSD cooldown branches): the driver is
    SIGKILLed once some rows are in; the same command finishes the rest, every row once,
    the rows already in unchanged; a third run changes nothing at all."""
    spec = tmp_path / "killed-nested.toml"
    spec.write_text(NESTED_SPEC)
    storage = tmp_path / "runs"
    cmd = [sys.executable, "-m", "gzipscale.cli", "sweep", "--spec", str(spec)]
    cmd += ["--storage", str(storage)]
    results = storage / "killed-nested" / "results.csv"
    _kill_after_rows(cmd, results, tmp_path / "first.log", poll_s=0.2)
    before = rows(results)
    assert 2 <= len(before) < 6, before.keys()

    again = subprocess.run(
        cmd, env=clean_env(), cwd=REPO, capture_output=True, text=True, timeout=420
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after = rows(results)
    assert len(after) == 6 and {r["status"] for r in after.values()} == {"finished"}
    assert {r["schedule"] for r in after.values()} == {"wsd"}
    for key, row in before.items():  # rows already recorded stand as they were
        assert after[key] == row
    assert len({r["trial_id"] for r in after.values()}) == 2  # one trial per shape

    finished = results.read_bytes()
    third = subprocess.run(
        cmd, env=clean_env(), cwd=REPO, capture_output=True, text=True, timeout=420
    )
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert results.read_bytes() == finished


def test_lost_worker_node_costs_only_the_steps_since_the_checkpoint(tmp_path):
    storage = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, str(TESTS / "node_loss_scenario.py"), str(storage)],
        env=clean_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outcome = json.loads(done.stdout.split("OUTCOME ", 1)[1].splitlines()[0])
    assert outcome == {"finished": 4, "failed": 0, "missing": 0}
    run_dir = storage / "node-loss"
    assert len(rows(run_dir / "results.csv")) == 4
    events = (run_dir / "events.log").read_text()
    assert "retrying pcfg-3-300-2-2-s0 tiny-2 D=96000" in events, events
    trial_dir = next(run_dir.glob("pcfg-3-300-2-2-s0_tiny-2_96000_*"))
    last = json.loads((trial_dir / "result.json").read_text().strip().splitlines()[-1])
    assert last["resumed_from_step"] >= 10  # restarted from its checkpoint, not from 0
