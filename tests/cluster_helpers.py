"""Helpers for tests that start their own Ray clusters in subprocesses (tests/test_cluster.py).

Every process such a test starts carries a tag in its environment (``GZIPSCALE_TEST_CLUSTER``).
Ray passes the environment on to everything it spawns (GCS, raylets, dashboard, the autoscaler,
fake worker nodes, workers, job drivers), so :func:`stop_tagged` can end exactly the cluster a
test started. ``ray stop`` cannot: it kills every Ray process of the machine, including the
session's shared cluster and any other Ray run on the same machine.

This module is also imported by ``tests/autoscale_scenario.py``, which runs in its own process.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

TAG_VAR = "GZIPSCALE_TEST_CLUSTER"
FAKE_BASE_CONFIG = Path(__file__).with_name("fake_multi_node.yaml")
# Set by the launcher, read by the scenario script.
SCENARIO_ENV = "GZIPSCALE_SCENARIO"


def ray_cli() -> str:
    """The ``ray`` console script of the interpreter running the tests (not whatever is on PATH)."""
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_temp_dir(prefix: str) -> str:
    # Ray puts Unix sockets under --temp-dir; pytest's tmp_path can push them past the
    # 107-byte limit of a socket path.
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def cluster_env(tag: str, token: str, **extra: str) -> dict:
    """Environment for a test cluster and its clients: token auth with a throwaway token.

    ``RAY_AUTH_TOKEN`` takes precedence over ``~/.ray/auth_token``, so the user's token file
    is neither read nor created. ``RAY_AUTH_MODE=token`` must be set on the server *and* on
    every client (``ray job submit``, ``ray.init``).
    """
    env = os.environ.copy()
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)
    bin_dir = str(Path(sys.executable).parent)  # the job's entrypoint resolves `gzipscale` here
    env.update(
        {
            TAG_VAR: tag,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def new_tag() -> str:
    return f"gzs-{uuid.uuid4().hex[:12]}"


def new_token() -> str:
    return secrets.token_hex(32)  # the format `ray get-auth-token --generate` writes


def _psutil():
    import ray

    del ray  # importing Ray put the psutil it vendors on sys.path
    import psutil

    return psutil


def _started_by_test(proc, tag: str, temp_dir: str | None) -> bool:
    try:
        if proc.environ().get(TAG_VAR) == tag:
            return True
    except Exception:  # psutil.Error, or an environ clobbered by setproctitle
        pass
    if temp_dir:
        # Ray redirects its processes' stdout/stderr into <temp_dir>/session_*/logs.
        for fd in (1, 2):
            try:
                if os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith(temp_dir + os.sep):
                    return True
            except OSError:
                pass
    return False


def tagged_processes(tag: str, temp_dir: str | None = None) -> list:
    """Processes of the test cluster ``tag``: tagged ones, those logging under ``temp_dir``,
    and all their descendants.

    The tag alone is not enough: Ray's Python processes (``ray::DashboardAgent``, workers)
    rename themselves with setproctitle, which can overwrite the environment that
    ``/proc/<pid>/environ`` shows.
    """
    psutil = _psutil()

    me = os.getpid()
    found: dict[int, object] = {}
    for proc in psutil.process_iter():
        if proc.pid != me and _started_by_test(proc, tag, temp_dir):
            found[proc.pid] = proc
    for proc in list(found.values()):
        try:
            for child in proc.children(recursive=True):
                if child.pid != me:
                    found.setdefault(child.pid, child)
        except psutil.Error:
            pass
    return list(found.values())


def stop_tagged(tag: str, temp_dir: str | None = None, grace_s: float = 3.0) -> int:
    """SIGTERM the test cluster's processes, SIGKILL what is left after ``grace_s``.

    Some Ray agents ignore SIGTERM once their raylet is gone, hence the SIGKILL round.
    """
    psutil = _psutil()

    procs = tagged_processes(tag, temp_dir)
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    alive = _wait_gone(procs, grace_s)
    # Anything still there, plus processes that were being spawned while we looked.
    rest = {p.pid: p for p in alive}
    rest.update({p.pid: p for p in tagged_processes(tag, temp_dir)})
    for p in rest.values():
        try:
            p.kill()
        except psutil.Error:
            pass
    left = _wait_gone(list(rest.values()), grace_s)
    if left:
        raise RuntimeError(f"could not stop test cluster processes: {[p.pid for p in left]}")
    return len({p.pid for p in procs} | set(rest))


def _wait_gone(procs: list, timeout: float) -> list:
    """Wait until ``procs`` have exited; return those still alive. Zombies count as gone
    (orphans are reaped by init, not by us)."""
    psutil = _psutil()

    def running(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    deadline = time.monotonic() + timeout
    alive = [p for p in procs if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if running(p)]
    return alive


def run_checked(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


# ---------------------------------------------------------------------------------------
# Fake autoscaling cluster (used inside the scenario subprocess)
# ---------------------------------------------------------------------------------------


def _autoscaling_cluster_class():
    from ray.cluster_utils import AutoscalingCluster

    class IsolatedAutoscalingCluster(AutoscalingCluster):
        """``AutoscalingCluster`` that works with the 2.60 wheel and leaves other clusters alone.

        * ``_generate_config`` reads ``tests/fake_multi_node.yaml``: the wheel lacks
          ``ray/autoscaler/_private/fake_multi_node/example.yaml`` (FileNotFoundError).
        * ``start`` does not run ``ray stop --force`` first and uses its own ports and temp
          dir; the fake provider is pointed at that GCS port (it assumes 6379 otherwise).
        * There is no ``shutdown``: the launching test ends the cluster with
          :func:`stop_tagged`, since ``ray stop --force`` would also end every other cluster.
        """

        def __init__(self, head_resources, worker_node_types, *, gcs_port, temp_dir, **kw):
            self._gcs_port = gcs_port
            self._temp_dir = temp_dir
            super().__init__(head_resources, worker_node_types, **kw)

        def _generate_config(
            self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs
        ):
            import ray._private.services as services
            from ray._common.network_utils import build_address

            base = yaml.safe_load(FAKE_BASE_CONFIG.read_text())
            config = copy.deepcopy(base)
            config["available_node_types"] = copy.deepcopy(worker_node_types)
            config["available_node_types"]["ray.head.default"] = {
                "resources": dict(head_resources),
                "node_config": {},
                "max_workers": 0,
            }
            config["provider"]["gcs_address"] = build_address(
                services.get_node_ip_address(), self._gcs_port
            )
            if autoscaler_v2:
                raise NotImplementedError("only the default (v1) autoscaler is exercised")
            config.update(config_kwargs)
            return config

        def start(self, _system_config=None, override_env=None):
            import ray._private.services as services

            config_path = os.path.join(self._temp_dir, "fake_autoscaling.json")
            with open(config_path, "w") as f:
                json.dump(self._config, f)
            resources = dict(self._head_resources)
            cmd = [
                ray_cli(),
                "start",
                "--head",
                f"--autoscaling-config={config_path}",
                f"--port={self._gcs_port}",
                f"--temp-dir={self._temp_dir}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--num-cpus={resources.pop('CPU', 0)}",
                f"--num-gpus={resources.pop('GPU', 0)}",
            ]
            if "object_store_memory" in resources:
                cmd.append(f"--object-store-memory={resources.pop('object_store_memory')}")
            if resources:
                cmd.append(f"--resources={json.dumps(resources)}")
            env = os.environ.copy()
            env.update({"AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1"})
            env.update(override_env or {})
            run_checked(cmd, env=env, timeout=120)
            services.find_gcs_addresses.cache_clear()

        def shutdown(self):  # pragma: no cover - see class docstring
            raise RuntimeError(
                "use cluster_helpers.stop_tagged(); ray stop would kill all clusters"
            )

    return IsolatedAutoscalingCluster


def make_autoscaling_cluster(head_resources: dict, worker_node_types: dict, **kw):
    return _autoscaling_cluster_class()(head_resources, worker_node_types, **kw)
