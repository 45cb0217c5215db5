"""`gzipscale ... --help` is fast: building the parser imports no heavy library.

Every command's work is imported only when it runs (cli.py), so ``--help`` (and a refused
flag) costs a bare interpreter's start plus argparse. Measured in fresh interpreters, as a
user runs it: the import of the command line against ``python -c pass`` (the fastest of
several tries each, so a busy machine's noise cancels), and for every subcommand the
modules ``python -m gzipscale COMMAND --help`` leaves loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from gzipscale.cli import COMMANDS

# Each of these takes from 0.3 s (pyarrow) to several seconds (torch, ray.tune) to import.
HEAVY = ("torch", "ray", "pandas", "scipy", "matplotlib", "pyarrow", "nltk")
TRIES = 5
# What the command line may add to a bare interpreter's start: `--help` stays under 1 s.
BUDGET_S = 0.5

# Runs `python -m gzipscale ARGS...` in this interpreter, then prints its exit status and
# the heavy top-level packages it loaded.
PROBE = """
import json, runpy, sys
heavy, argv = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["gzipscale", *argv]
code = 0
try:
    runpy.run_module("gzipscale", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code or 0
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(heavy))
print("PROBE " + json.dumps({"code": code, "loaded": loaded}))
"""


def _env() -> dict:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def _fastest(code: str) -> float:
    best = float("inf")
    for _ in range(TRIES):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=_env())
        best = min(best, time.perf_counter() - start)
    return best


def test_building_the_parser_costs_under_half_a_second():
    bare = _fastest("pass")
    cli = _fastest("import gzipscale.cli; gzipscale.cli.build_parser()")
    assert cli - bare < BUDGET_S, (
        f"importing gzipscale.cli and building its parser took {cli:.2f} s against "
        f"{bare:.2f} s for a bare interpreter; find the slow import with "
        "`python -X importtime -c 'import gzipscale.cli'`"
    )


@pytest.mark.parametrize("argv", [[]] + [[name] for name in COMMANDS], ids=lambda a: a or "top")
def test_help_exits_0_and_loads_no_heavy_library(argv):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), json.dumps([*argv, "--help"])],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: gzipscale" in proc.stdout
    probe = json.loads(proc.stdout.rsplit("PROBE ", 1)[1])
    assert probe == {"code": 0, "loaded": []}, f"gzipscale {' '.join(argv)} --help: {probe}"
