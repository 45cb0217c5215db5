"""The live display and `gzipscale watch`, on a recorded run directory (no cluster).

The run directory is written here as a sweep leaves it mid-run: the spec, results.csv
with finished and failed runs, events.log, one running trial's last result, and the
datasets' manifests; the fits are a recorded analysis snapshot.
"""

from __future__ import annotations

import json
import time

import pytest
from rich.console import Console

from gzipscale.analysis.bootstrap import DEFAULT_POLICY
from gzipscale.analysis.fitreport import BootstrapSummary, DatasetFit, FitReport
from gzipscale.analysis.frontier import compute_optimal
from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.results import write_results_csv
from gzipscale.cli import main
from gzipscale.helpers import json_safe
from gzipscale.orchestrator.display import PlainReporter, header_line, render
from gzipscale.orchestrator.plan import plan_runs
from gzipscale.orchestrator.spec import SweepSpec
from gzipscale.orchestrator.sweep_state import collect

SPEC = {
    "name": "rec",
    "grammars": [
        {"grammar": "3,300,2,2", "seed": 0},
        {"grammar": "10,300,3,5", "seed": 0},
        {"grammar": "20,300,5,10", "seed": 0},
    ],
    "shapes": ["tiny-1", "tiny-2"],
    "data_sizes": [16_384, 32_768, 65_536],
    "eval_tokens": 8192,
}
H = {"pcfg-3-300-2-2-s0": 0.137, "pcfg-10-300-3-5-s0": 0.243, "pcfg-20-300-5-10-s0": 0.362}


def _term(name: str, slope: float) -> dict:
    return {
        "name": name,
        "slope": slope,
        "intercept": 1.0,
        "slope_stderr": 0.1,
        "intercept_stderr": 0.1,
        "pvalue": 0.04,
        "rvalue": 0.95,
        "r_squared": 0.9,
        "n": 3,
        "mean_h": 0.25,
        "log_scale": False,
    }


def _fit(name: str, h: float) -> dict:
    law = ScalingLaw(E=0.5 + h, A=12.0, B=300.0, alpha=0.3, beta=0.3)  # a = 0.5
    return DatasetFit(
        name=name,
        law=law,
        gzip=h,
        n_points=3,
        objective=1e-4,
        converged=True,
        frontier=compute_optimal(law, 1e18),
        chinchilla_crossing=None,
        intervals={"alpha": (0.2, 0.4), "n_opt_exponent": (0.4, 0.6)},
        bootstrap=BootstrapSummary(DEFAULT_POLICY),
    ).to_dict()


# A recorded fit report, as the analysis actor's snapshot carries it (FitReport.to_dict).
FITS = {
    "source": "analysis actor",
    "bootstrap": DEFAULT_POLICY.to_dict(),
    "budget": 1e18,
    "datasets": {name: _fit(name, h) for name, h in H.items()},
    "skipped": {},
    "regression": {
        "H": list(H.values()),
        "names": list(H),
        "laws": [_fit(name, h)["law"] for name, h in H.items()],
        "log_amplitudes": False,
        "terms": {
            k: _term(k, s)
            for k, s in (("E", 1.0), ("A", 2.0), ("B", 3.0), ("alpha", 0.1), ("beta", -0.25))
        },
    },
    "regression_note": None,
}


def report(fits: dict = FITS) -> FitReport:
    return FitReport.from_dict(json.loads(json.dumps(json_safe(fits))))


def stamp(offset: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - offset))


@pytest.fixture
def recorded(tmp_path):
    run_dir = tmp_path / "rec"
    run_dir.mkdir()
    spec = SweepSpec.from_dict(SPEC)
    (run_dir / "sweep.json").write_text(json.dumps(spec.to_dict()))
    runs = plan_runs(spec, use_gpu=False)
    rows, events = [], [f"{stamp(120)} session 18 runs"]
    for i, r in enumerate(runs[:10]):
        failed = i == 3
        rows.append(
            {
                "dataset": r.dataset,
                "grammar": r.grammar,
                "seed": 0,
                "gzip": H[r.dataset],
                "shape": r.shape,
                "params": r.params,
                "non_embedding_params": r.non_embedding_params,
                "tokens": r.tokens,
                "val_loss": float("nan") if failed else 4.0 - i / 10,
                "status": "failed" if failed else "finished",
                "reason": "held-out loss is 1e3, the run diverged" if failed else "",
                "trial_id": f"t{i}",
                "step": 8,
            }
        )
        desc = f"{r.dataset} {r.shape} D={r.tokens}"
        events.append(f"{stamp(110 - i)} started  {desc}")
        if failed:
            events.append(
                f"{stamp(105 - i)} failed   {desc}: held-out loss is 1e3, the run diverged"
            )
        else:
            events.append(f"{stamp(105 - i)} finished {desc}: val_loss {4.0 - i / 10:.4f}")
    write_results_csv(rows, run_dir / "results.csv")
    running = runs[10]
    desc = f"{running.dataset} {running.shape} D={running.tokens}"
    events += [f"{stamp(30)} started  {desc}", f"{stamp(20)} retrying {desc}: ActorDiedError"]
    (run_dir / "events.log").write_text("\n".join(events) + "\n")
    trial = run_dir / f"{running.dataset}_{running.shape}_{running.tokens}_abc_00010"
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps({"run": running.to_dict()}))
    (trial / "result.json").write_text(json.dumps({"step": 5, "steps": 10}) + "\n")
    return run_dir


def draw(view, width: int) -> str:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    console.print(render(view, width))
    return console.export_text()


def test_state_from_the_run_directory(recorded):
    view = collect(recorded, fits=report())
    assert (view.count("finished"), view.count("failed"), view.count("running")) == (9, 1, 1)
    assert len(view.runs) == 18
    running = next(r for r in view.runs if r.state == "running")
    assert (running.step, running.steps, running.retries) == (5, 10, 1)
    assert 0 < view.done_flops < view.total_flops
    assert view.eta() is not None and view.eta() > 0  # from the FLOPs rate
    assert 100 <= view.elapsed() <= 200


@pytest.mark.parametrize("width", [80, 120, 160])
def test_render_at_every_width(recorded, width):
    text = draw(
        collect(
            recorded,
            fits=report(),
            cluster={"nodes": 1, "cpu": 2, "cpu_used": 1, "gpu": 0, "gpu_used": 0},
        ),
        width,
    )
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "runs 9 done / 1 running / 1 failed / 18" in text.replace("\n", " ")
    assert "1 node, CPU 1/2, GPU 0/0" in text.replace("\n", " ")
    assert "pcfg-3-300-2-2-s0 (3,300,2,2) H=0.137" in text
    assert "failed" in text and "↻▶50%" in text
    assert "a=β/(α+β)=0.500" in text
    # The bootstrap policy is shown beside the intervals, at every width.
    assert "intervals: 95% interval, 200 bootstrap resamples, seed 0" in text
    assert "regression on H (3 grammars)" in text
    assert "frontier exponent a = β/(α+β)" in text
    assert "retrying" in text  # the event log
    if width >= 110:
        assert "3.900" in text and "[0.2, 0.4]" in text  # 3 decimals, intervals
    else:
        assert "3.90" in text and "3.900" not in text


def test_no_regression_panel_before_three_fits(recorded):
    one = {"pcfg-3-300-2-2-s0": FITS["datasets"]["pcfg-3-300-2-2-s0"]}
    fits = {**FITS, "datasets": one, "regression": None, "regression_note": "needs 3"}
    text = draw(collect(recorded, fits=report(fits)), 120)
    assert "regression on H" not in text
    assert "waiting for at least 6 finished runs" in text


def test_plain_mode_prints_each_event_once_and_summaries(recorded):
    lines = []
    reporter = PlainReporter(every_s=3600, write=lines.append)
    view = collect(recorded, fits=report())
    reporter.update(view)
    reporter.update(view)
    events = [line for line in lines if " started " in line or " finished " in line]
    assert len(events) == 11 + 9  # each once, across two updates
    assert sum(line.startswith("sweep rec") for line in lines) == 1
    assert not any("\x1b[" in line for line in lines)  # no control codes
    assert header_line(view) in lines


def test_watch_once_on_a_run_directory_without_a_cluster(recorded, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["watch", str(recorded), "--once", "--plain"]) == 0
    out = capsys.readouterr().out
    assert "runs 9 done / 1 running / 1 failed / 18" in out
    assert "pcfg-20-300-5-10-s0 H=0.362" in out


def test_watch_refuses_a_directory_that_is_not_a_sweep(tmp_path, capsys):
    assert main(["watch", str(tmp_path), "--once"]) == 2
    assert "not a sweep run directory" in capsys.readouterr().err


def test_fits_with_missing_values_still_render(recorded):
    """The actor's JSON turns NaN into None: the display shows a dash, it does not crash."""
    fits = json.loads(json.dumps(json_safe(FITS)))
    fits["datasets"]["pcfg-3-300-2-2-s0"]["law"]["E"] = None
    fits["datasets"]["pcfg-3-300-2-2-s0"]["intervals"]["alpha"] = [None, 0.4]
    fits["regression"]["terms"]["beta"]["pvalue"] = None
    fits["regression"]["terms"]["alpha"]["slope"] = None
    fits = report(fits)
    text = draw(collect(recorded, fits=fits), 120)
    assert "E=—" in text
    lines = []
    PlainReporter(write=lines.append).update(collect(recorded, fits=fits), force_summary=True)
    assert any("E=—" in line for line in lines)
