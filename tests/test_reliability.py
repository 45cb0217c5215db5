"""One driver per sweep (file lock, URI lease), verified and repairable datasets, a manifest
that cannot be trusted blindly, weights-only checkpoints, an embedded Ray cluster on the
loopback interface only, a private dataset cache, only the auth token in cluster.yaml's
copies, a failing exit status for failed runs, and a resume that survives a truncated
Tune snapshot (a full disk)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from gzipscale.orchestrator.lock import LEASE_FILE, Lease, LocalLock, SweepBusy

HOLD = """
import sys, time
from gzipscale.orchestrator.lock import Lease, LocalLock
lock = Lease(sys.argv[2], expiry_s=float(sys.argv[3])) if sys.argv[1] == "lease" else LocalLock(sys.argv[2])
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(kind: str, where: str, expiry: float = 0) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, kind, where, str(expiry)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_local_lock_refuses_second_driver_then_sigkill_releases_at_once(tmp_path):
    run = tmp_path / "sweep"
    proc = _holder("local", str(run))
    try:
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        with pytest.raises(SweepBusy, match=rf"pid {proc.pid}, since .*gzipscale watch {run}"):
            LocalLock(run).acquire()
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing written
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    LocalLock(run).acquire().release()  # the kernel released it: no wait, no stale file


def test_cli_sweep_refused_while_another_driver_holds_it(tmp_path):
    run = tmp_path / "s" / "smoke"
    proc = _holder("local", str(run))
    try:
        before = sorted(p.name for p in run.rglob("*"))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "gzipscale",
                "sweep",
                "--preset",
                "smoke",
                "--storage",
                str(tmp_path / "s"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode != 0
        assert f"pid {proc.pid}" in done.stderr and "gzipscale watch" in done.stderr
        assert "Traceback" not in done.stderr
        assert sorted(p.name for p in run.rglob("*")) == before
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def test_uri_lease_taken_over_only_after_expiry(tmp_path):
    uri = f"file://{tmp_path}/sweep"
    proc = _holder("lease", uri, 2.0)
    try:
        time.sleep(1.5)  # past half the expiry: the heartbeat keeps it alive
        with pytest.raises(SweepBusy, match=f"pid {proc.pid}"):
            Lease(uri, expiry_s=2.0).acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    text = (tmp_path / "sweep" / LEASE_FILE).read_text()
    with pytest.raises(SweepBusy):  # dead but not yet expired: still refused, nothing written
        Lease(uri, expiry_s=2.0).acquire()
    assert (tmp_path / "sweep" / LEASE_FILE).read_text() == text
    time.sleep(2.2)
    lease = Lease(uri, expiry_s=2.0).acquire()
    assert json.loads((tmp_path / "sweep" / LEASE_FILE).read_text())["pid"] == os.getpid()
    lease.release()
    assert not (tmp_path / "sweep" / LEASE_FILE).exists()


# -- datasets -----------------------------------------------------------------------------


def _dataset(tmp_path):
    from gzipscale.grammars.dataset import DatasetSpec
    from gzipscale.grammars.spec import GrammarSpec

    return DatasetSpec(
        GrammarSpec(10, 300, 3, 5, seed=3),
        tokens=20_000,
        eval_tokens=4_000,
        context_length=256,
        block_docs=32,
    )


def test_flipped_byte_refused_everywhere_then_repaired_byte_identical(ray_cluster, tmp_path):
    from gzipscale.grammars.corpora import score_path
    from gzipscale.grammars.dataset import DatasetError
    from gzipscale.grammars.pipeline import generate_dataset
    from gzipscale.helpers import file_sha256
    from gzipscale.trainers.data import load_run_data

    spec, out = _dataset(tmp_path), tmp_path / "d"
    generate_dataset(spec, out)
    shard = out / "train" / "part-000001.parquet"
    original = file_sha256(shard)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    for use in (
        lambda: generate_dataset(spec, out),
        lambda: score_path(out),
        lambda: load_run_data(out, 20_000, 4_000),
    ):
        with pytest.raises(DatasetError, match=r"part-000001.parquet fails its checksum.*--repair"):
            use()
    (out / "eval" / "part-000000.parquet").unlink()
    with pytest.raises(DatasetError, match=r"eval/part-000000.parquet is missing"):
        generate_dataset(spec, out)
    manifest = generate_dataset(spec, out, repair=True)
    assert manifest["repaired"] == ["eval/part-000000.parquet", "train/part-000001.parquet"]
    assert file_sha256(shard) == original
    assert generate_dataset(spec, out)["repaired"] == []


def test_edited_manifest_is_refused(ray_cluster, tmp_path):
    from gzipscale.grammars.dataset import DatasetError
    from gzipscale.grammars.pipeline import generate_dataset
    from gzipscale.trainers.data import load_run_data

    spec, out = _dataset(tmp_path), tmp_path / "d"
    generate_dataset(spec, out)
    path = out / "manifest.json"
    good = json.loads(path.read_text())
    inflated = {**good, "tokens": good["tokens"] * 10, "documents": good["documents"] * 10}
    path.write_text(json.dumps(inflated))
    with pytest.raises(DatasetError, match="shards list"):
        load_run_data(out, good["tokens"] * 5, 4_000)
    for bad in ("../../etc/passwd", "/etc/passwd"):
        edited = json.loads(json.dumps(good))
        edited["shards"][0]["path"] = bad
        path.write_text(json.dumps(edited))
        with pytest.raises(DatasetError, match="outside the dataset directory"):
            load_run_data(out, 1_000, 1_000)
    edited = json.loads(json.dumps(good))
    edited["shards"][0]["documents"] += 1  # counts agree with each other, not with the shard
    edited["shards"][1]["documents"] -= 1
    path.write_text(json.dumps(edited))
    with pytest.raises(DatasetError, match="rows, the manifest records"):
        load_run_data(out, 1_000, 1_000)


# -- checkpoints ----------------------------------------------------------------------------


class _Foreign:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_checkpoint_foreign_object_and_truncation_refused(tmp_path):
    import numpy as np
    import torch

    from gzipscale.trainers.session import LocalSession, load_state
    from gzipscale.trainers.train import TrainError

    good = tmp_path / "good.pt"
    torch.save({"rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state()}}, good)
    np.random.set_state(load_state(good)["rng"]["numpy"])
    evil = tmp_path / "evil.pt"
    torch.save({"step": 1, "x": _Foreign()}, evil)
    with pytest.raises(TrainError, match="something other than .*posix.system"):
        load_state(evil)
    session = LocalSession(tmp_path / "run")
    session.dir.mkdir(parents=True)
    data = good.read_bytes()
    (session.dir / "step-00000001.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainError, match="truncated or corrupt"):
        session.latest_checkpoint()


# -- embedded cluster -------------------------------------------------------------------------

EMBEDDED = """
import json, os, ray
from gzipscale.helpers import ensure_ray
ensure_ray(num_cpus=1)
ray.get(ray.remote(lambda: 1).remote())  # a worker process, with its own gRPC server
import psutil  # the copy Ray vendors, on sys.path once ray is imported
mine = {p.pid: p.name() for p in psutil.Process().children(recursive=True)}
mine[os.getpid()] = "driver"
listening = [
    [mine[c.pid], c.laddr.ip, c.laddr.port]
    for c in psutil.net_connections(kind="inet")
    if c.status == psutil.CONN_LISTEN and c.pid in mine
]
from ray._private.authentication.authentication_utils import is_token_auth_enabled
node = ray._private.worker.global_worker.node
print(json.dumps({"node_ip": node.node_ip_address, "gcs": node.gcs_address,
                  "listening": listening, "token_auth": is_token_auth_enabled()}))
ray.shutdown()
"""

LOOPBACK_IPS = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lists sockets through /proc")
def test_embedded_cluster_listens_on_loopback_only(tmp_path):
    """The cluster ``ensure_ray`` starts when no address is given: every socket its processes
    (driver, GCS, raylet, agents, a worker) listen on is a loopback one, and token auth is on
    by Ray's default (RAY_AUTH_MODE unset; a throwaway token, so ~/.ray is not touched)."""
    from cluster_helpers import cluster_env, new_tag, new_token, stop_tagged

    tag = new_tag()
    env = cluster_env(tag, new_token())
    del env["RAY_AUTH_MODE"]
    try:
        done = subprocess.run(
            [sys.executable, "-c", EMBEDDED],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        stop_tagged(tag)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["node_ip"] == "127.0.0.1"
    assert report["gcs"].startswith("127.0.0.1:")
    names = {name for name, _, _ in report["listening"]}
    assert {"gcs_server", "raylet"} <= names, report["listening"]
    wide = [entry for entry in report["listening"] if entry[1] not in LOOPBACK_IPS]
    assert not wide, f"listening beyond loopback: {wide}"
    assert report["token_auth"] is True


# -- node-local dataset cache -----------------------------------------------------------------


def test_dataset_cache_private_per_user(tmp_path, monkeypatch):
    """The default cache is ``gzipscale-cache-<uid>`` created 0700; a directory there that is
    open to others, a symlink, or (as root) one owned by another user is refused in one line."""
    from gzipscale.helpers import UserError
    from gzipscale.orchestrator.storage import cache_root

    monkeypatch.delenv("GZIPSCALE_CACHE", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    old = os.umask(0)  # the widest umask: the cache must still come out 0700
    try:
        root = cache_root()
    finally:
        os.umask(old)
    assert root == tmp_path / f"gzipscale-cache-{os.getuid()}"
    assert root.stat().st_mode & 0o777 == 0o700
    assert cache_root() == root  # its own 0700 directory is reused

    root.chmod(0o777)  # e.g. made by someone else with a permissive umask
    with pytest.raises(UserError, match=r"has mode 0777; it must be 0700") as err:
        cache_root()
    assert "\n" not in str(err.value) and "GZIPSCALE_CACHE" in str(err.value)
    root.chmod(0o700)

    elsewhere = tmp_path / "planted"
    elsewhere.mkdir(mode=0o700)
    root.rmdir()
    root.symlink_to(elsewhere)
    with pytest.raises(UserError, match="is not a directory .a symlink."):
        cache_root()
    root.unlink()

    monkeypatch.setenv("GZIPSCALE_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    if os.getuid() == 0:  # only root can hand a directory to another user
        os.chown(tmp_path / "mine", 65534, -1)
        with pytest.raises(UserError, match="is owned by uid 65534, not this user"):
            cache_root()


# -- exit status ----------------------------------------------------------------------------

DIVERGING = {
    "name": "diverges",
    "grammars": [{"grammar": "3,300,2,2", "seed": 0}],
    "shapes": ["tiny-0"],
    "data_sizes": [16_384],
    "eval_tokens": 8_192,
    # A learning rate that blows up: the run fails for good (it is not retried).
    "train": {
        "preset": "cpu",
        "batch_size": 8,
        "checkpoint_every": 4,
        "lr": 10.0,
        "lr_scaling": "none",
        "grad_clip": 0.0,
        "warmup_steps": 0,
    },
}


def test_cli_sweep_exits_nonzero_when_runs_failed(tmp_path):
    """The real command line, on its embedded cluster: a sweep whose only run fails ends with
    a non-zero status and says so, although nothing is left to resume."""
    from cluster_helpers import cluster_env, new_tag, new_token, stop_tagged

    spec = tmp_path / "diverges.json"
    spec.write_text(json.dumps(DIVERGING))
    tag = new_tag()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gzipscale", "sweep", "--spec", str(spec)]
            + ["--storage", str(tmp_path / "s")],
            env=cluster_env(tag, new_token()),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop_tagged(tag)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    assert "1 of 1 runs failed" in done.stderr, done.stderr[-3000:]
    assert "diverged" in done.stdout
    assert "Traceback" not in done.stderr


# -- cluster launcher: only the token leaves the laptop ---------------------------------------


def test_cluster_yaml_copies_only_the_auth_token(tmp_path):
    """cluster.yaml mounts no part of ~/.ray, only a directory meant for the token, and its
    setup commands (run here with a throwaway HOME) install that token as ~/.ray/auth_token,
    mode 0600, and refuse to go on without one."""
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "cluster.yaml").read_text())
    mounts = config["file_mounts"]
    ray_dir = Path("~/.ray").expanduser()
    for path in (p for pair in mounts.items() for p in pair):
        assert ray_dir != Path(path).expanduser(), mounts
        assert ray_dir not in Path(path).expanduser().parents, mounts
    assert mounts["~/.gzipscale-token"] == "~/.gzipscale-token"
    setup = config["setup_commands"]
    token_cmds = [c for c in setup if "gzipscale-token" in c]
    first_pip = next(i for i, c in enumerate(setup) if "pip install" in c)
    assert token_cmds and all(setup.index(c) < first_pip for c in token_cmds)  # fail fast

    home = tmp_path / "home"
    home.mkdir()
    script = " && ".join(f"( {c} )" for c in token_cmds)
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    missing = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "auth_token missing" in missing.stdout + missing.stderr
    assert not (home / ".ray").exists()
    (home / ".gzipscale-token").mkdir(mode=0o700)
    (home / ".gzipscale-token" / "auth_token").write_text("a" * 64)
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    installed = home / ".ray" / "auth_token"
    assert installed.read_text() == "a" * 64
    assert installed.stat().st_mode & 0o777 == 0o600
    assert (home / ".ray").stat().st_mode & 0o777 == 0o700


# -- Tune's snapshot truncated (a full disk) --------------------------------------------------

# Checkpoints far enough apart (tiny-2 and tiny-3, every 6 steps) that the driver is killed
# between two of Tune's snapshots, not amid a burst of checkpoints: with num_to_keep=2, a
# snapshot that lags two checkpoints behind names one already deleted, whatever copy of it
# is read (a race of Tune's own, after any SIGKILL). Cheapest first: the small runs have
# their rows by the time the longest ones checkpoint.
TRUNCATED_SPEC = """
name = "truncated"
order = "cheapest-first"
shapes = ["tiny-2", "tiny-3"]
data_sizes = ["16K", "48K", "96K"]
eval_tokens = "8K"
[[grammars]]
grammar = "3,300,2,2"
seed = 0
[train]
batch_size = 8
checkpoint_every = 6
"""


def _rows(results) -> dict:
    from gzipscale.analysis.results import read_results_csv

    if not results.exists():
        return {}
    found = [r.to_dict() for r in read_results_csv(results)]
    keyed = {(r["dataset"], r["shape"], r["tokens"]): r for r in found}
    assert len(keyed) == len(found), "a run appears twice in results.csv"
    return keyed


def _checkpointed_without_row(run_dir, rows: dict, at_least: int) -> list:
    """Trial directories (``dataset_shape_tokens_trialid``) holding checkpoints of a run
    that has no row yet."""
    found = []
    for d in run_dir.glob("pcfg-*_*_*_*"):
        dataset, shape, tokens = d.name.split("_")[:3]
        if (dataset, shape, int(tokens)) not in rows:
            if len(list(d.glob("checkpoint_*"))) >= at_least:
                found.append(d)
    return found


def _early_in_a_long_run(run_dir, rows: dict) -> list:
    """Trial directories of a 96K run without a row that has made 2 to 4 checkpoints: far
    from its end, so it is still unfinished a moment later."""
    found = []
    for d in _checkpointed_without_row(run_dir, rows, at_least=1):
        last = max(int(c.name.split("_")[1]) for c in d.glob("checkpoint_*"))
        if int(d.name.split("_")[2]) > 90_000 and 1 <= last <= 3:
            found.append(d)
    return found


def test_truncated_tune_state_resumes_trials_from_their_checkpoints(tmp_path):
    """A driver killed mid-sweep whose Tune snapshot is then cut short, as a full disk
    leaves it: the same command puts back the last complete copy, says so, and resumes the
    unfinished trials from their checkpoints (same trial directories); no finished run is
    run again and every run ends with exactly one row."""
    from gzipscale.orchestrator.sweep import tune_state_files

    spec = tmp_path / "truncated.toml"
    spec.write_text(TRUNCATED_SPEC)
    storage = tmp_path / "runs"
    run_dir = storage / "truncated"
    results = run_dir / "results.csv"
    cmd = [sys.executable, "-m", "gzipscale", "sweep", "--spec", str(spec)]
    cmd += ["--storage", str(storage)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 240
        # Killed once some run has a row and a long one has made a few checkpoints.
        while not ((rows := _rows(results)) and (early := _early_in_a_long_run(run_dir, rows))):
            assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoints in time"
            time.sleep(0.2)
        time.sleep(0.5)  # Tune snapshots its state after every second trial checkpoint
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
    before = _rows(results)
    # The long runs seen with checkpoints well before the kill (so Tune's last snapshot
    # knows of one). A checkpoint written after that snapshot is unknown to Tune whichever
    # copy it reads, so another run that had just checkpointed may start over.
    unfinished = _checkpointed_without_row(run_dir, before, at_least=1)
    assert len(before) < 6 and set(early) <= set(unfinished)
    unfinished = early
    trial_dirs = sorted(d.name for d in run_dir.glob("pcfg-*"))
    state = tune_state_files(run_dir)
    assert any(p.name.startswith("experiment_state-") for p in state)
    for p in state:  # what ENOSPC leaves: the file Tune was rewriting, cut short
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 3])

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming from its last complete copy" in again.stdout
    after = _rows(results)
    assert len(after) == 6 and {r["status"] for r in after.values()} == {"finished"}
    for key, row in before.items():
        assert after[key] == row
    # The same trials continued: no run got a second trial directory.
    now = sorted(d.name for d in run_dir.glob("pcfg-*"))
    assert set(trial_dirs) <= set(now)
    assert len({tuple(name.split("_")[:3]) for name in now}) == len(now), now
    resumed = []
    for d in unfinished:
        last = json.loads((d / "result.json").read_text().strip().splitlines()[-1])
        resumed.append(last["resumed_from_step"])
    assert resumed and all(step > 0 for step in resumed), resumed  # not from step 0


def test_recover_tune_state_puts_back_the_kept_copy_or_says_there_is_none(tmp_path):
    from gzipscale.orchestrator.sweep import TUNE_STATE_COPY, recover_tune_state

    good = json.dumps({"trial_data": [], "runner_data": {}}).encode()
    state = tmp_path / "experiment_state-2026-01-01_00-00-00.json"
    state.write_bytes(good)
    assert recover_tune_state(tmp_path) == (True, "")  # readable: left alone
    state.write_bytes(good[:10])
    restorable, note = recover_tune_state(tmp_path)
    assert not restorable and "no complete copy was kept" in note and "full disk" in note
    assert not state.exists() and state.with_name(state.name + ".unreadable").exists()

    (tmp_path / TUNE_STATE_COPY).mkdir()
    (tmp_path / TUNE_STATE_COPY / state.name).write_bytes(good)
    state.write_bytes(good[:10])
    restorable, note = recover_tune_state(tmp_path)
    assert restorable and "resuming from its last complete copy" in note
    assert state.read_bytes() == good
    assert recover_tune_state(tmp_path) == (True, "")


def test_unreadable_tune_state_without_a_copy_reruns_only_the_runs_without_a_row(
    ray_cluster, tmp_path
):
    """A sweep whose Tune state is unreadable and has no kept copy (one started before
    copies were kept): only the run without a row is run again; the finished one is not."""
    from gzipscale.orchestrator.spec import SweepSpec
    from gzipscale.orchestrator.sweep import TUNE_STATE_COPY, run_sweep, tune_state_files

    spec = SweepSpec.from_dict(
        {
            **DIVERGING,
            "name": "nocopy",
            "data_sizes": [16_384, 32_768],
            "train": {"preset": "cpu", "batch_size": 8, "checkpoint_every": 4},
        }
    )
    assert run_sweep(spec, str(tmp_path), say=lambda s: None).finished == 2
    run_dir = tmp_path / "nocopy"
    results = run_dir / "results.csv"
    kept = [line for line in results.read_text().splitlines(keepends=True) if ",16384," in line]
    assert len(kept) == 1
    results.write_text(results.read_text().splitlines(keepends=True)[0] + kept[0])
    shutil.rmtree(run_dir / TUNE_STATE_COPY)
    for p in tune_state_files(run_dir):
        p.write_bytes(p.read_bytes()[:100])

    said = []
    outcome = run_sweep(spec, str(tmp_path), say=said.append)
    assert any("no complete copy was kept" in s for s in said), said
    assert outcome.finished == 2 and not outcome.failed and not outcome.missing
    assert kept[0] in results.read_text()  # the finished run's row, as it was
    events = (run_dir / "events.log").read_text()
    assert events.count("started  pcfg-3-300-2-2-s0 tiny-0 D=16384") == 1
    assert events.count("started  pcfg-3-300-2-2-s0 tiny-0 D=32768") == 2
