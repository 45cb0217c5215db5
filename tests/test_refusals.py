"""Bad input through the real command line: each case must be refused cleanly.

For every row of CASES, ``gzipscale ...`` runs as a subprocess in a scratch folder and must
exit non-zero with one line on stderr that names the field or path, print no traceback, and
leave the folder exactly as it was (same entries, same bytes). Nearly all are refused before
Ray starts; the ``train`` rows share one small dataset made once for the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gzipscale.grammars.dataset import DatasetSpec
from gzipscale.grammars.pipeline import generate_dataset
from gzipscale.grammars.spec import GrammarSpec

SPEC_HEAD = 'name = "s"\nshapes = ["tiny-1"]\n'
GRAMMARS = '[[grammars]]\ngrammar = "3,300,2,2"\n'

# Sweep spec files: (file name, text, what the message must name).
SPECS = [
    (
        "cpus.toml",
        SPEC_HEAD + 'data_sizes = [16384]\n[resources]\ncpus_per_trial = "2"\n' + GRAMMARS,
        "cpus_per_trial",
    ),
    (
        "gpu.toml",
        SPEC_HEAD + 'data_sizes = [16384]\n[resources]\ngpu_fraction = "x"\n' + GRAMMARS,
        "gpu_fraction",
    ),
    ("sizes.toml", SPEC_HEAD + "data_sizes = 16384\n" + GRAMMARS, "data_sizes"),
    (
        "context.toml",
        "context_length = 256.0\n" + SPEC_HEAD + "data_sizes = [16384]\n" + GRAMMARS,
        "context_length",
    ),
    (
        "failures.toml",
        'max_failures = "2"\n' + SPEC_HEAD + "data_sizes = [16384]\n" + GRAMMARS,
        "max_failures",
    ),
    (
        "eval.toml",
        SPEC_HEAD + "data_sizes = [16384]\n[train]\neval_tokens = 8192\n" + GRAMMARS,
        "train.eval_tokens",
    ),
    ("list.json", "[1, 2]\n", "sweep spec"),
]

# (arguments, what the one-line message must contain); DS stands for the module's dataset.


def _train(out: str) -> list[str]:
    """A `train` command line that is good but for its ``--out``."""
    args = ["--data", "DS", "--model", "tiny-1", "--tokens", "1K", "--eval-tokens", "8192"]
    return ["train", *args, "--out", out]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The real command line, outside any Ray cluster the environment names."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [str(Path(sys.executable).with_name("gzipscale")), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


CASES = [
    (["data", "--grammar", "3,300,2,2", "--tokens", "1K", "--out", "afile/x"], "afile"),
    (["data", "--grammar", "3,300,2,2", "--tokens", "1K", "--out", "/sys/x"], "/sys/x"),
    (
        ["data", "--grammar", "3,300,2,2", "--tokens", "1K", "--address", "127.0.0.1:1"],
        "no Ray cluster at 127.0.0.1:1",
    ),
    (["grammar", "3,300,2,2", "--seeds", "0-99999999999", "--score", "1K"], "seeds"),
    (["grammar", "100000,1000000,10000,10000"], "10,000,000"),
    (["gzip", "t.txt", "--text", "--plot", "afile/x.png"], "--plot"),
    (["gzip", "t.txt", "--text", "--context-length", "0"], "context-length"),
    (["series", "--out", "afile/x.json"], "--out"),
    (["report", ".", "--out", "afile/x"], "--out"),
    (["report", ".", "--out", "/sys/x"], "/sys/x"),
    (["sweep", "--preset", "smoke", "--storage", "afile"], "--storage"),
    (["sweep", "--preset", "smoke", "--storage", "/sys/x"], "--storage"),
    *[(["sweep", "--spec", name], named) for name, _, named in SPECS],
    (_train("afile/x"), "afile"),
    (_train("/sys/x"), "/sys/x"),
    (
        [
            "train",
            "--data",
            "DS",
            "--model",
            "tiny-1",
            "--tokens",
            "1K",
            "--eval-tokens",
            "8192",
            "--out",
            "fresh",
            "--vocab",
            "10",
        ],
        "vocab_size",
    ),
    (
        [
            "train",
            "--data",
            "DS",
            "--model",
            "tiny-1",
            "--tokens",
            "1K",
            "--eval-tokens",
            "8192",
            "--out",
            "listrun",
        ],
        "run.json",
    ),
]


@pytest.fixture(scope="module")
def dataset(ray_cluster, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("refusals") / "ds"
    spec = DatasetSpec(GrammarSpec.parse("3,300,2,2"), tokens=20_000, eval_tokens=8192)
    generate_dataset(spec, out)
    return out


def _scratch(root: Path) -> None:
    """The folder every case runs in: a file where a folder is wanted, a text corpus, the
    spec files, and a run directory whose run.json is a JSON list."""
    (root / "afile").write_text("a file, not a folder\n")
    (root / "t.txt").write_text("some text to score " * 200)
    for name, text, _ in SPECS:
        (root / name).write_text(text)
    (root / "listrun").mkdir()
    (root / "listrun" / "run.json").write_text(json.dumps([1, 2]))


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_case_count():
    assert len(CASES) == 23


@pytest.mark.parametrize(("argv", "named"), CASES, ids=[" ".join(a[:4]) for a, _ in CASES])
def test_refused_cleanly(argv, named, tmp_path, request):
    if any(a == "DS" for a in argv):
        data = request.getfixturevalue("dataset")
        argv = [str(data) if a == "DS" else a for a in argv]
    _scratch(tmp_path)
    before = _snapshot(tmp_path)
    done = _run(argv, tmp_path)
    err = done.stderr.strip()
    assert done.returncode != 0, (argv, done.stdout, err)
    assert "Traceback" not in done.stderr + done.stdout, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"gzipscale {argv[0]}: error: "), err
    assert named in err, err
    assert _snapshot(tmp_path) == before, err


def test_fit_refuses_a_table_with_a_duplicated_run(tmp_path):
    """A run copied twice into a results table would count twice in the fit: refused,
    naming both rows, with nothing fitted."""
    import numpy as np
    import pandas as pd

    N, D = (x.ravel() for x in np.meshgrid([1e4, 2e4, 4e4], [1e5, 2e5, 4e5]))
    loss = 1 + 50 / N**0.5 + 80 / D**0.4
    frame = pd.DataFrame({"dataset": "d", "params": N, "tokens": D, "loss": loss})
    good = tmp_path / "good.csv"
    frame.to_csv(good, index=False)
    bad = tmp_path / "bad.csv"
    pd.concat([frame, frame.iloc[[4]]]).to_csv(bad, index=False)
    ok = _run(["fit", str(good), "--bootstrap", "0"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    refused = _run(["fit", str(bad), "--bootstrap", "0"], tmp_path)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    line = refused.stderr.strip()
    assert "\n" not in line and "rows 5, 10" in line and "more than once" in line
