"""One driver per sweep (file lock, URI lease), verified and repairable datasets, a manifest
that cannot be trusted blindly, weights-only checkpoints."""

from __future__ import annotations

import json
import os
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
