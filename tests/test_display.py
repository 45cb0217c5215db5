"""The live display and `gzipscale watch`, on a recorded run directory (no cluster).

The run directory is written here as a sweep leaves it mid-run: the spec, results.csv
with finished and failed runs, events.log, one running trial's last result, and the
datasets' manifests; the fits are a recorded analysis snapshot.
"""

from __future__ import annotations

import json
import time

import pytest
from rich.cells import cell_len
from rich.console import Console

from gzipscale.analysis.bootstrap import DEFAULT_POLICY
from gzipscale.analysis.fitreport import BootstrapSummary, DatasetFit, FitReport
from gzipscale.analysis.frontier import compute_optimal
from gzipscale.analysis.identification import EXPONENT_WIDE, IdentificationFlag, below_floor_flag
from gzipscale.analysis.law import ScalingLaw
from gzipscale.analysis.results import write_results_csv
from gzipscale.analysis.table import KnownFloor
from gzipscale.cli import main
from gzipscale.helpers import json_safe
from gzipscale.orchestrator.display import PlainReporter, header_line, regression_line, render
from gzipscale.orchestrator.plan import plan_runs
from gzipscale.orchestrator.spec import SweepSpec
from gzipscale.orchestrator.sweep_state import collect
from gzipscale.vocabulary import FLOOR_FIT, FREE_FIT

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


# -- identification: which kind drives, flagged and identified fits, impossible frontiers -----

FLOOR = KnownFloor(0.724, 0.002)
WIDE_BETA = IdentificationFlag(
    EXPONENT_WIDE,
    "β's 95% interval [0.05, 2.1] spans a factor of 42.0 (more than 3): β is not "
    "identified by these runs.",
)


def _flagged_report(alpha_slope: float = 0.1) -> FitReport:
    """The recorded report with floor-anchored fits driving: the first grammar's fit is
    flagged (β's interval too wide; its free comparison lies below the floor), the others
    identified; ``alpha_slope`` sets the regression's α line."""
    base = report()
    for i, (name, fit) in enumerate(base.datasets.items()):
        fit.kind, fit.floor = FLOOR_FIT, FLOOR
        fit.law = ScalingLaw(E=FLOOR.nats_per_token, A=12.0, B=300.0, alpha=0.3, beta=0.3)
        fit.intervals = {**fit.intervals, "beta": (0.21, 0.42)}
        fit.left_at_floor, fit.rms_log_residual = 2, 0.012
        if i == 0:
            fit.flags = [WIDE_BETA, below_floor_flag(0.4, 0.724, 0.002)]
            fit.intervals["beta"] = (0.05, 2.1)
            free = DatasetFit.from_dict(fit.to_dict())
            free.kind, free.law = FREE_FIT, ScalingLaw(E=0.4, A=9.0, B=300.0, alpha=0.12, beta=0.3)
            free.flags = [below_floor_flag(0.4, 0.724, 0.002)]
            base.comparison[name] = free
    base.law_choice = FLOOR_FIT
    base.regression.terms["alpha"].slope = alpha_slope
    return base


def _fit_lines(text: str, name: str) -> list[str]:
    """The rows of ``name``'s panel below its grid (its fit lines)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if name in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("╰"))
    body = [line.strip("│ ") for line in lines[start + 1 : end]]
    first = next(i for i, line in enumerate(body) if line.startswith("fit"))
    return body[first:]


@pytest.mark.parametrize("width", [80, 110, 200])
def test_flagged_and_identified_fits_at_every_width(recorded, width):
    text = draw(collect(recorded, fits=_flagged_report()), width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    flagged = _fit_lines(text, "pcfg-3-300-2-2-s0")
    identified = _fit_lines(text, "pcfg-10-300-3-5-s0")
    # One line per fit: the law, its verdict, the frontier, the policy, the comparison.
    assert len(flagged) == 5 and len(identified) == 4
    for fit_lines in (flagged, identified):
        # Which kind drives, and α and β with their intervals.
        assert fit_lines[0].startswith("fit (E at floor 0.724): ")
        assert "β=0.3 [" in fit_lines[0] and "α=0.3 [0.2, 0.4]" in fit_lines[0]
    assert "β=0.3 [0.05, 2.1]" in flagged[0]
    # The flagged fit: "not identified:" and the start of its first flag's sentence,
    # shortened to the width, with the count of the others kept.
    assert flagged[1].startswith("not identified: β's 95% interval [0.05, 2.1] spans")
    assert flagged[1].endswith("(+1 more flag)")
    assert ("…" in flagged[1]) == (width < 200)
    assert "not identified: law flagged" in flagged[2]  # its frontier exponent is no finding
    assert flagged[4].startswith("vs (free): E=0.4")
    assert "not identified" in flagged[4]
    # The identified fit says so, and its frontier stands.
    assert identified[1].startswith("identified (3 runs fitted, 2 at floor left out")
    assert identified[2].startswith("a=β/(α+β)=0.500 [0.4, 0.6]  D/N=")
    # The floor is in the title.
    assert "pcfg-3-300-2-2-s0 (3,300,2,2) H=0.137 floor 0.724±0.002" in text
    # Behind the regression is one unidentified fit: its frontier exponent is flagged.
    assert "not identified: 1 of 3 fits behind it not identified" in text
    assert "frontier exponent a = β/(α+β): " not in text  # the finding's sentence


@pytest.mark.parametrize("width", [80, 110, 200])
def test_an_impossible_frontier_exponent_is_flagged(recorded, width):
    # α's line 1 - 4 H is negative at H = 0.362: a = β/(α+β) = 1.97 there.
    fits = report()
    fits.regression.terms["alpha"].slope = -4.0
    text = draw(collect(recorded, fits=fits), width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "→ 1.971 at H=0.36" in text
    assert "a = β/(α+β) not identified" in text
    assert "not identified: a = 1.971 at H=0.36 is outside (0, 1)" in text
    assert "more data per parameter" not in text
    assert "frontier exponent a = β/(α+β): " not in text
    lines = []
    PlainReporter(write=lines.append).update(collect(recorded, fits=fits), force_summary=True)
    regression = [line for line in lines if "regression on H" in line]
    assert len(regression) == 1
    assert "a = β/(α+β) not identified (not a finding): " in regression[0]
    assert "not identified: a = 1.971 at H=0.36 is outside (0, 1): alpha = " in regression[0]


def test_a_law_with_an_impossible_exponent_is_never_shown_unflagged(recorded):
    """Without intervals no exponent flag is raised; the display flags the law itself."""
    fits = report()
    fit = fits.datasets["pcfg-3-300-2-2-s0"]
    fit.law, fit.intervals, fit.bootstrap = ScalingLaw(0.5, 12.0, 300.0, -0.2, 0.3), None, None
    text = draw(collect(recorded, fits=fits), 110)
    lines = _fit_lines(text, "pcfg-3-300-2-2-s0")
    assert lines[1].startswith("not identified: the law is impossible: alpha = -0.2 <= 0")
    assert "not identified" in lines[2]
    identified = _fit_lines(text, "pcfg-10-300-3-5-s0")
    assert identified[1].startswith("identified")


def test_plain_summaries_carry_the_verdicts(recorded):
    lines = []
    PlainReporter(write=lines.append).update(
        collect(recorded, fits=_flagged_report()), force_summary=True
    )
    summary = {name: next(line for line in lines if line.startswith(f"  {name} ")) for name in H}
    flagged = summary["pcfg-3-300-2-2-s0"]
    assert "H=0.137 floor 0.724±0.002:" in flagged
    assert "fit (E at floor 0.724): " in flagged
    assert f"not identified: {WIDE_BETA.sentence} (+1 more flag)" in flagged  # whole
    assert "vs (free): E=0.4" in flagged
    assert "; identified (3 runs fitted" in summary["pcfg-10-300-3-5-s0"]
    assert "not identified: 1 of 3 fits behind it not identified" in lines[-1]


def test_a_skipped_driving_fit_still_shows_the_other_kind(recorded):
    fits = _flagged_report()
    name = "pcfg-3-300-2-2-s0"
    del fits.datasets[name]
    fits.skipped[name] = "floor fit: every model reaches the floor by 16.4K tokens"
    text = draw(collect(recorded, fits=fits), 80)
    assert "fit: floor fit: every model reaches the floor" in text
    assert "vs (free): E=0.4  α=0.12  β=0.3 · not identified: the free fit's E" in text
    assert "pcfg-3-300-2-2-s0 (3,300,2,2) H=0.137 floor 0.724±0.002" in text


def _regression_at_ends(fits: FitReport) -> FitReport:
    """``fits`` with every dataset fit identified (no flags), so that only the
    regression's own law can make its frontier exponent no finding."""
    for fit in fits.datasets.values():
        fit.flags = []
    return fits


@pytest.mark.parametrize("width", [80, 120])
def test_the_issue_frame_an_exponent_above_one_is_not_a_finding(recorded, width):
    """The frame of issue 16: a = 1.215 at H=0.14 -> 0.259 at H=0.36 was shown as a finding
    ("more data per parameter as H grows"). A regressed α that is negative at the low end
    makes a > 1 there: not identified, and no trend read from it."""
    fits = _regression_at_ends(report())
    # β = 1 and α = -2.027 + 13.5 H: α = -0.178 at H = 0.137 (a = 1.216), 2.86 at 0.362.
    fits.regression.terms["alpha"].intercept = -2.027
    fits.regression.terms["alpha"].slope = 13.5
    fits.regression.terms["beta"].slope = 0.0
    text = draw(collect(recorded, fits=fits), width)
    flat = " ".join(text.split())
    assert "a = β/(α+β) not identified" in flat
    assert ": 1.216 at H=0.14 → 0.259 at H=0.36" in flat
    assert "not identified: a = 1.216 at H=0.14 is outside (0, 1): alpha = -0.1" in flat
    assert "more data per parameter" not in text
    assert "frontier exponent a = β/(α+β): " not in text
    line = regression_line(collect(recorded, fits=fits))
    assert "not identified (not a finding): 1.216 at H=0.14 → 0.259 at H=0.36" in line
    assert "; not identified: a = 1.216 at H=0.14 is outside (0, 1)" in line
    assert "more data per" not in line


def test_an_impossible_regressed_law_with_a_inside_0_1_is_not_a_finding(recorded):
    """A regressed law with a negative B (and so impossible) at H = 0.36, whose exponents
    stay positive (a inside (0, 1)): its frontier is still no finding. (Negative α and β
    both give α + β < 0, where a is undefined: outside (0, 1), flagged as such.)"""
    fits = _regression_at_ends(report())
    fits.regression.terms["B"].slope = -4.0
    text = draw(collect(recorded, fits=fits), 160)
    assert "a = β/(α+β) not identified (not a finding): 0.4" in text
    assert "not identified: the regressed law at H=0.36 is impossible: B = -0.448" in text
    assert "frontier exponent a = β/(α+β): " not in text
    lines = []
    PlainReporter(write=lines.append).update(collect(recorded, fits=fits), force_summary=True)
    assert "not identified: the regressed law at H=0.36 is impossible" in lines[-1]


def test_a_possible_regression_on_identified_fits_is_a_finding(recorded):
    """The control: identified fits and a possible regressed law keep the finding."""
    fits = _regression_at_ends(report())
    text = draw(collect(recorded, fits=fits), 160)
    assert "frontier exponent a = β/(α+β): 0.4" in text
    assert "(more data per parameter as H grows)" in text
    assert "not identified" not in text


def draw_frame(view, width: int, height: int, terminal: bool = False) -> str:
    console = Console(
        width=width, height=height, record=True, force_terminal=terminal, color_system=None
    )
    # On a terminal the frame takes the console's height; else it is given.
    console.print(render(view, width, None if terminal else height))
    return console.export_text()


@pytest.mark.parametrize("terminal", [False, True])
@pytest.mark.parametrize("width,height", [(80, 24), (110, 45), (200, 60)])
def test_the_frame_fits_the_terminal(recorded, width, height, terminal):
    # A realistic frame: three grammars (one running), fits and a regression, and more
    # events than fit (the fixture's and forty more, the latest a retry).
    events = (recorded / "events.log").read_text().splitlines()
    extra = [f"{stamp(15)} started  pcfg-3-300-2-2-s0 tiny-1 D={1000 + i}" for i in range(40)]
    last = f"{stamp(1)} retrying pcfg-20-300-5-10-s0 tiny-2 D=65536: the latest event"
    (recorded / "events.log").write_text("\n".join([*events, *extra, last]) + "\n")
    view = collect(
        recorded,
        fits=report(),
        cluster={"nodes": 1, "cpu": 2, "cpu_used": 1, "gpu": 0, "gpu_used": 0},
    )
    text = draw_frame(view, width, height, terminal)
    lines = text.rstrip("\n").split("\n")
    assert max(cell_len(line) for line in lines) <= width
    assert len(lines) <= height
    for ds in view.datasets:
        assert ds.name in text
    assert "the latest event" in text
    assert "sweep rec" in text and "ETA" in text
    if height >= 45:  # room for every grammar's panel
        assert text.count("╭─ pcfg-") == 3 and "regression on H (3 grammars)" in text
    else:
        assert "▸ pcfg-" in text  # grammars collapsed to one line


def test_a_frame_collapses_finished_grammars_first(recorded):
    view = collect(recorded, fits=report())
    for run in view.runs:  # the first grammar has all its runs ended
        if run.dataset == "pcfg-3-300-2-2-s0" and run.state != "failed":
            run.state, run.val_loss = "finished", run.val_loss or 3.0
    text = draw_frame(view, 80, 30)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) <= 30 and max(cell_len(line) for line in lines) <= 80
    assert any(line.startswith("▸ pcfg-3-300-2-2-s0 (3,300,2,2)") for line in lines)
    assert "╭─ pcfg-10-300-3-5-s0" in text  # the grammar with a running run keeps its panel
    assert "ActorDiedError" in text  # the latest event
