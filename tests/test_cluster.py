"""cluster.yaml and cluster-level behaviour: the launcher config, autoscaling GPUs, job submission.

Fast tests (no Ray cluster) validate ``cluster.yaml`` offline with the code path ``ray up`` uses
(``prepare_config`` + ``validate_config``), so a misspelt key fails CI instead of ``ray up``, and
check the properties the design relies on (no trials on the head, GPU workers from zero, no
public dashboard, token auth on every node, Ray pinned to the installed version).

Tests marked ``@pytest.mark.isolated`` start their own Ray clusters, each in subprocesses:

* a fake autoscaling cluster (``ray.cluster_utils.AutoscalingCluster``, driven by
  ``tests/autoscale_scenario.py``) whose GPU nodes scale from 0 for a Tune experiment;
* a local head with the dashboard, token auth and ``ray job submit --working-dir``.

Isolation and ordering. ``AutoscalingCluster.start()/shutdown()`` run ``ray stop --force``,
which kills every Ray process of the machine, among them the session's shared cluster (the
``ray_cluster`` fixture of conftest.py, started by ``ray.init`` in the pytest process) and any
other Ray run on the same machine. These tests therefore never call ``ray stop``: every
process they start carries a tag in its environment, and ``cluster_helpers.stop_tagged`` ends
exactly those (plus their descendants and anything logging under the test's own
``--temp-dir``). Each cluster gets its own free ports, temp dir and throwaway auth token
(``RAY_AUTH_TOKEN``), so neither ``~/.ray/auth_token`` nor ``/tmp/ray`` is touched. The shared
cluster keeps running, so a test that needs ``ray_cluster`` after these still works.
In addition, conftest.py's ``pytest_collection_modifyitems`` moves isolated tests to the very
end of the run: they are the slowest, and should one of them ever fall back to ``ray stop``,
no test that needs the shared cluster runs after it.
"""

from __future__ import annotations

import copy
import json
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cluster_helpers as ch
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
RAY_VERSION = "2.60.0"
TORCH_PIN = "torch==2.13.0"
GPU_INSTANCE_PREFIXES = ("g4dn.", "g5.", "g6.", "g6e.", "p3.", "p4d.", "p5.")

# What test_job_submit_working_dir runs, and the file it must leave behind. `{out}` is an
# absolute directory: the job runs inside a temporary copy of the working dir, so relative
# outputs would be lost.
JOB_ENTRYPOINT = "gzipscale sweep --preset smoke --storage {out}/sweeps --json"
JOB_RESULT = "sweeps/smoke/results.csv"


# ---------------------------------------------------------------------------------------
# cluster.yaml, offline
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def prepare_and_validate(config: dict) -> dict:
    """What `ray up` does with the YAML before touching AWS (needs no credentials)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def node_types(config: dict) -> dict:
    return config["available_node_types"]


def worker_types(config: dict) -> dict:
    return {k: v for k, v in node_types(config).items() if k != config["head_node_type"]}


def is_gpu_type(node_type: dict) -> bool:
    itype = node_type["node_config"]["InstanceType"]
    return itype.startswith(GPU_INSTANCE_PREFIXES) or node_type["resources"].get("GPU", 0) > 0


def test_cluster_yaml_passes_ray_schema(raw_config):
    prepared = prepare_and_validate(raw_config)
    assert prepared["provider"]["type"] == "aws"
    assert set(node_types(prepared)) == set(node_types(raw_config))  # no defaults mixed in


def _rename(d: dict, old: str, new: str) -> None:
    d[new] = d.pop(old)


TYPOS = {
    "top-level": lambda c: _rename(c, "available_node_types", "available_node_type"),
    "node type": lambda c: _rename(
        c["available_node_types"]["gpu_worker"], "min_workers", "min_worker"
    ),
    "docker": lambda c: _rename(c["docker"], "pull_before_run", "pull_before_runs"),
    "security group": lambda c: _rename(
        c["provider"]["security_group"], "IpPermissions", "IpPermission"
    ),
}


@pytest.mark.parametrize("where", sorted(TYPOS))
def test_schema_rejects_misspelt_keys(raw_config, where):
    import jsonschema

    bad = copy.deepcopy(raw_config)
    TYPOS[where](bad)
    with pytest.raises(jsonschema.ValidationError, match="Additional properties are not allowed"):
        prepare_and_validate(bad)


def test_head_runs_no_trials(raw_config):
    head = node_types(raw_config)[raw_config["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("head") == 1  # pins the analysis actor (resources={"head": ...})
    assert not is_gpu_type(head)
    assert "InstanceMarketOptions" not in head["node_config"]  # the driver is not on spot


def test_workers_autoscale_from_zero(raw_config):
    workers = worker_types(raw_config)
    gpu = {k: v for k, v in workers.items() if is_gpu_type(v)}
    cpu = {k: v for k, v in workers.items() if not is_gpu_type(v)}
    assert gpu and cpu, "needs GPU workers for training and CPU workers for data generation"
    for name, node_type in workers.items():
        assert node_type.get("min_workers", 0) == 0, name
        assert node_type["max_workers"] >= 1, name
    for name, node_type in gpu.items():
        assert node_type["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot", name
    assert raw_config["max_workers"] >= max(t["max_workers"] for t in workers.values())


def test_dashboard_and_jobs_api_not_public(raw_config):
    head_cmds = " ; ".join(raw_config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmds
    all_cmds = head_cmds + " ; ".join(raw_config["worker_start_ray_commands"])
    assert "0.0.0.0" not in all_cmds
    assert "--ray-client-server-port" not in all_cmds
    # Ray adds SSH and intra-cluster rules itself; nothing else may be opened.
    rules = raw_config["provider"]["security_group"].get("IpPermissions", [])
    assert rules == [], "only SSH may be reachable from outside; use `ray dashboard`"


def test_token_auth_on_every_node(raw_config):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in raw_config[key] if "ray start" in c]
        assert start, key
        for cmd in start:
            assert cmd.index("RAY_AUTH_MODE=token") < cmd.index("ray start"), cmd
    # Only the token reaches the nodes (from a directory that holds nothing else), and is
    # installed as ~/.ray/auth_token, the file `ray start` reads.
    assert "~/.ray" not in raw_config["file_mounts"]
    assert raw_config["file_mounts"]["~/.gzipscale-token"] == "~/.gzipscale-token"
    assert any("~/.ray/auth_token" in c for c in raw_config["setup_commands"])


def test_ray_and_torch_pinned(raw_config):
    import ray

    assert ray.__version__ == RAY_VERSION, "bump cluster.yaml's image and pins with Ray"
    assert raw_config["docker"]["image"].startswith(f"rayproject/ray:{RAY_VERSION}-")
    setup = raw_config["setup_commands"]
    ray_pin = [i for i, c in enumerate(setup) if "ray[default" in c and f"=={RAY_VERSION}" in c]
    torch_pin = [i for i, c in enumerate(setup) if TORCH_PIN in c]
    project = [i for i, c in enumerate(setup) if "-e ~/gzipscale" in c]
    assert ray_pin and torch_pin and project
    assert torch_pin[0] < project[0], "torch first, so the project cannot pull another build"


def test_file_mounts_sync_the_checkout_without_local_state(raw_config):
    mounts = raw_config["file_mounts"]
    assert mounts["~/gzipscale"] == "."  # what `pip install -e ~/gzipscale` installs
    assert mounts["~/.gzipscale-token"] == "~/.gzipscale-token"  # only the auth token
    # Docker bind-mounts file_mounts; a single-file mount goes stale when re-synced.
    for remote, local in mounts.items():
        assert not (REPO / Path(local).expanduser()).is_file(), f"{remote}: mount a directory"
    # .venv/ and data/ stay on the laptop: the rsync filter applies .gitignore.
    assert ".gitignore" in raw_config["rsync_filter"]
    ignored = (REPO / ".gitignore").read_text().split()
    assert ".venv/" in ignored and "/data/" in ignored
    assert "**/.git" in raw_config["rsync_exclude"]


# ---------------------------------------------------------------------------------------
# Isolated: own clusters in subprocesses (see the module docstring)
# ---------------------------------------------------------------------------------------


@pytest.fixture
def own_cluster():
    """A tag, a throwaway token and a short temp dir; everything tagged is stopped afterwards."""
    tag, token = ch.new_tag(), ch.new_token()
    temp_dir = ch.short_temp_dir("gzs-ray-")
    try:
        yield tag, token, temp_dir
    finally:
        try:
            ch.stop_tagged(tag, temp_dir)
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _tail(text: str, n: int = 4000) -> str:
    return text[-n:] if text else ""


@pytest.mark.isolated
def test_gpu_nodes_autoscale_from_zero_for_tune(own_cluster, tmp_path):
    tag, token, temp_dir = own_cluster
    params = {"gcs_port": ch.free_port(), "temp_dir": temp_dir, "storage": str(tmp_path / "tune")}
    env = ch.cluster_env(tag, token, **{ch.SCENARIO_ENV: json.dumps(params)})
    script = Path(__file__).with_name("autoscale_scenario.py")
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"scenario failed ({proc.returncode})\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}"
    )
    result = json.loads(lines[-1][len("RESULT ") :])
    print(f"autoscale scenario: {time.monotonic() - t0:.1f}s, phases {result['timing_s']}")

    # Before the experiment: only the head, and no GPU anywhere.
    assert [n["node_id"] for n in result["nodes_before"]] == [result["head_node_id"]]
    assert all(n["resources"].get("GPU", 0) == 0 for n in result["nodes_before"])
    assert result["nodes_before"][0]["resources"].get("CPU", 0) == 0

    # After: the autoscaler added gpu_worker nodes, up to the type's max_workers (2), and the
    # trials ran there with a GPU assigned.
    gpu_nodes = {n["node_id"] for n in result["nodes_after"] if n["resources"].get("GPU", 0) > 0}
    assert len(gpu_nodes) == 2
    assert result["num_errors"] == 0
    trials = result["trials"]
    assert sorted(t["i"] for t in trials) == [0, 1, 2]
    for t in trials:
        assert t["error"] is None
        assert t["node_id"] in gpu_nodes and t["node_id"] != result["head_node_id"]
        assert t["gpu_ids"] == ["0"]
        assert t["cuda_visible_devices"] == "0"


def _get_job(dashboard: str, submission_id: str, token: str | None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"{dashboard}/api/jobs/{submission_id}", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.mark.isolated
def test_job_submit_working_dir(own_cluster, tmp_path):
    tag, token, temp_dir = own_cluster
    env = ch.cluster_env(tag, token)
    gcs_port, dashboard_port = ch.free_port(), ch.free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    t0 = time.monotonic()
    ch.run_checked(
        [
            ch.ray_cli(),
            "start",
            "--head",
            "--num-cpus=2",
            f"--port={gcs_port}",
            f"--dashboard-port={dashboard_port}",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
            f"--ray-client-server-port={ch.free_port()}",
            f"--dashboard-agent-listen-port={ch.free_port()}",
            f"--object-store-memory={200 * 1024**2}",
        ],
        env=env,
        timeout=120,
    )
    t_head = time.monotonic()

    out = tmp_path / "job-out"
    entrypoint = shlex.split(JOB_ENTRYPOINT.format(out=out))
    submission_id = f"{tag}-job"
    submit = subprocess.run(
        [
            ch.ray_cli(),
            "job",
            "submit",
            "--address",
            dashboard,
            "--submission-id",
            submission_id,
            "--working-dir",
            str(REPO),
            "--",
            *entrypoint,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    t_job = time.monotonic()
    print(f"job submit: head {t_head - t0:.1f}s, job {t_job - t_head:.1f}s")
    assert submit.returncode == 0, f"{_tail(submit.stdout)}\n{_tail(submit.stderr)}"

    # The Jobs API refuses requests without the token, and with a wrong one.
    with pytest.raises(urllib.error.HTTPError) as no_token:
        _get_job(dashboard, submission_id, None)
    assert no_token.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as wrong_token:
        _get_job(dashboard, submission_id, "0" * 64)
    assert wrong_token.value.code in (401, 403)

    job = _get_job(dashboard, submission_id, token)
    assert job["status"] == "SUCCEEDED", job.get("message")
    assert job["runtime_env"]["working_dir"].startswith("gcs://_ray_pkg_")
    result = out / JOB_RESULT
    assert result.is_file(), f"{result} missing; job output:\n{_tail(submit.stdout)}"
    from gzipscale.analysis.results import read_results_csv

    rows = read_results_csv(result)
    assert len(rows) == 12 and {r.status for r in rows} == {"finished"}
