"""Running a finished sweep again: nothing to run, no Ray, nothing written.

One real ``gzipscale sweep --preset smoke`` (about a minute on 2 cores), run as a user
runs it, in a subprocess with its own embedded Ray; then the same command again, which
must see that every planned run has its finished row and that the report matches its
inputs, say "nothing to run" within seconds, import no Ray, and leave every file of the
run directory as it was. A missing or stale report is rebuilt alone (still no Ray, no
Tune: the experiment's files are untouched). A sweep with a failed run is not finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gzipscale.analysis.results import read_results_csv, write_results_csv
from gzipscale.orchestrator.presets import PRESETS, preset_spec
from gzipscale.orchestrator.spec import SweepSpec
from gzipscale.orchestrator.sweep_command import REPORT_STAMP, finished_runs

pytestmark = pytest.mark.slow

RERUN_BUDGET_S = 10.0
# Runs `python -m gzipscale ARGS...`, then prints whether it imported Ray (or Tune).
PROBE = """
import json, runpy, sys
sys.argv = ["gzipscale", *json.loads(sys.argv[1])]
code = 0
try:
    runpy.run_module("gzipscale", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code or 0
print("PROBE " + json.dumps({"code": code, "ray": "ray" in sys.modules}))
"""


def _sweep(storage: Path, timeout: float) -> tuple[subprocess.CompletedProcess, dict, float]:
    argv = ["sweep", "--preset", "smoke", "--storage", str(storage)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    wall = time.perf_counter() - start
    assert "PROBE " in proc.stdout, proc.stdout + proc.stderr
    probe = json.loads(proc.stdout.rsplit("PROBE ", 1)[1])
    return proc, probe, wall


def _files(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every file and folder under ``root``: (mtime_ns, size, sha256) of each file."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.split(os.sep)[0] in skip:
            continue
        if path.is_dir():
            out[rel] = "dir"
        else:
            st = path.stat()
            out[rel] = (st.st_mtime_ns, st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The smoke sweep, run once to the end by the command line: its run directory."""
    storage = tmp_path_factory.mktemp("rerun")
    proc, probe, _ = _sweep(storage, timeout=900)
    assert probe["code"] == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sweep smoke: 12 finished, 0 failed, 0 not run, of 12" in proc.stdout
    run_dir = storage / "smoke"
    assert (run_dir / "report" / "report.md").is_file()
    assert (run_dir / "report" / REPORT_STAMP).is_file()
    return run_dir


def test_rerun_of_a_finished_sweep_runs_nothing_and_writes_nothing(finished):
    before = _files(finished)
    proc, probe, wall = _sweep(finished.parent, timeout=60)
    assert probe == {"code": 0, "ray": False}, proc.stderr
    assert (
        f"sweep 'smoke': all 12 runs finished; nothing to run (report up to date: "
        f"{finished / 'report'})" in proc.stdout
    )
    assert wall < RERUN_BUDGET_S, f"the rerun took {wall:.1f} s"
    assert _files(finished) == before


def test_a_missing_or_stale_report_is_rebuilt_alone(finished):
    # Everything but the report (and the driver's lock file, which the rebuild holds):
    # Tune's experiment state, its trial folders, results.csv, events.log, the data.
    kept = ("report", "driver.lock")
    shutil.rmtree(finished / "report")
    before = _files(finished, skip=kept)
    proc, probe, _ = _sweep(finished.parent, timeout=300)
    assert probe == {"code": 0, "ray": False}, proc.stderr
    assert f"nothing to run (report regenerated: {finished / 'report'})" in proc.stdout
    assert (finished / "report" / "report.md").is_file()
    assert "pcfg-3-300-2-2-s0" in (finished / "report" / "table2_fits.csv").read_text()
    assert _files(finished, skip=kept) == before  # no Tune experiment was started

    # The same bytes written again (a new mtime) are the same inputs: still up to date.
    results = finished / "results.csv"
    results.write_bytes(results.read_bytes())
    before = _files(finished, skip=kept)
    proc, probe, _ = _sweep(finished.parent, timeout=60)
    assert "nothing to run (report up to date:" in proc.stdout, proc.stdout + proc.stderr

    # A report file gone: the report is stale, and rebuilt.
    (finished / "report" / "frontiers.png").unlink()
    proc, probe, _ = _sweep(finished.parent, timeout=300)
    assert probe == {"code": 0, "ray": False}, proc.stderr
    assert "nothing to run (report regenerated:" in proc.stdout
    assert (finished / "report" / "frontiers.png").is_file()
    assert _files(finished, skip=kept) == before


def test_a_sweep_with_a_failed_or_missing_run_is_not_finished(finished, tmp_path):
    spec = preset_spec("smoke")
    copy = tmp_path / "smoke"
    copy.mkdir()
    for name in ("sweep.json", "results.csv"):
        shutil.copy(finished / name, copy / name)
    assert finished_runs(spec, copy) == (12, 12)
    # Another spec under the same name: the driver refuses it, as before.
    other = SweepSpec.from_dict({**PRESETS["smoke"], "shapes": ["tiny-1", "tiny-3"]})
    assert finished_runs(other, copy) is None
    rows = [row.to_dict() for row in read_results_csv(copy / "results.csv")]
    # A failed run is retried by the driver.
    failed = [dict(rows[0], status="failed", val_loss=math.nan, reason="diverged"), *rows[1:]]
    write_results_csv(failed, copy / "results.csv")
    assert finished_runs(spec, copy) is None
    # A run without its row is still to run.
    write_results_csv(rows[1:], copy / "results.csv")
    assert finished_runs(spec, copy) is None
