"""orchestrator/: sweep specs, plans, and real sweeps on the shared Ray cluster.

The sweeps here are real: Ray Data datasets, Ray Tune trials that train tiny models with
checkpoints, results.csv, the analysis actor. Fault tolerance is tested by injecting
faults through tests/faults.py (a crashed trial, a diverging run) and, in
test_sweep_recovery.py, by killing the driver and losing a node.
"""

from __future__ import annotations

import json
import math

import faults
import pytest
import ray.cloudpickle

from gzipscale.analysis.results import read_results_csv
from gzipscale.cli import main
from gzipscale.helpers import SpecError
from gzipscale.orchestrator.plan import plan_runs
from gzipscale.orchestrator.presets import PRESETS, preset_spec
from gzipscale.orchestrator.spec import SweepSpec
from gzipscale.orchestrator.sweep import SweepError, run_sweep, runs_unknown_to_tune

SMALL = {
    "name": "small",
    "grammars": [{"grammar": "3,300,2,2", "seed": 0}],
    "shapes": ["tiny-1", "tiny-2"],
    "data_sizes": [16_384, 49_152],
    "eval_tokens": "8K",
    "train": {"preset": "cpu", "batch_size": 8, "checkpoint_every": 3},
}


def small_spec(**changes) -> SweepSpec:
    return SweepSpec.from_dict({**SMALL, **changes})


def rows_by_run(run_dir) -> dict:
    rows = [r.to_dict() for r in read_results_csv(run_dir / "results.csv")]
    keys = [(r["dataset"], r["shape"], r["tokens"]) for r in rows]
    assert len(keys) == len(set(keys)), "a run appears twice in results.csv"
    return {k: r for k, r in zip(keys, rows, strict=True)}


# -- specs and plans (no cluster) ---------------------------------------------------------


def test_presets_resolve_and_have_the_promised_sizes():
    smoke, tiny, repro, paper, pilot = (
        preset_spec(n) for n in ("smoke", "tiny", "reproduction", "paper", "pilot")
    )
    assert (len(smoke.grammars), len(smoke.shapes), len(smoke.data_sizes)) == (2, 3, 2)
    # The designed grid (docs/design.md): 4 shapes x 5 sizes from 256 steps, nested WSD.
    assert len(tiny.grammars) == 2 and tiny.runs_per_grammar() == 20 and tiny.nested
    assert min(tiny.data_sizes) // (tiny.train.batch_size * tiny.context_length) == 256
    assert tiny.train.schedule == "wsd" and tiny.train.compile == "off"
    assert len(paper.grammars) == 6 and paper.runs_per_grammar() == 36
    assert paper.train.vocab_size == 32001 and paper.train.lr == 5e-5
    # The reproduction study: the paper's three same-H grammars among six, one
    # vocabulary for every model (docs/reproduction.md), on the tiny grid.
    assert len(repro.grammars) == 6 and repro.train.vocab_size == 301
    assert {"20,300,5,15", "30,200,15,10", "50,100,20,20"} <= {g.grammar for g in repro.grammars}
    assert (repro.shapes, repro.data_sizes) == (tiny.shapes, tiny.data_sizes)
    assert {g.grammar for g in tiny.grammars} <= {g.grammar for g in pilot.grammars}
    assert pilot.runs_per_grammar() == 25 and pilot.nested
    assert set(PRESETS) == {"smoke", "tiny", "pilot", "reproduction", "paper"}


def test_toml_spec_round_trips_and_errors_name_the_field(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "t"\nshapes = ["tiny-1"]\ndata_sizes = ["10K", 20000]\neval_tokens = "8K"\n'
        '[[grammars]]\ngrammar = "3,300,2,2"\nseed = 4\n[train]\npreset = "paper"\nlr = 1e-4\n'
    )
    spec = SweepSpec.load(path)
    assert spec.data_sizes == (10_000, 20_000) and spec.grammars[0].seed == 4
    assert spec.train.lr == 1e-4 and spec.train.batch_size == 32  # paper preset, lr overridden
    assert SweepSpec.from_dict(spec.to_dict()) == spec

    with pytest.raises(SpecError, match="field 'shapes' must name shapes among .*tiny-1"):
        small_spec(shapes=["tiny-1", "huge"])
    with pytest.raises(SpecError, match="unknown field.*colour.*allowed"):
        SweepSpec.from_dict({**SMALL, "colour": "red"})
    with pytest.raises(SpecError, match="field 'name'"):
        small_spec(name="../etc")
    with pytest.raises(SpecError, match="field 'resources.gpu' must be one of auto, yes, no"):
        small_spec(resources={"gpu": "maybe"})
    with pytest.raises(SpecError, match="field 'nonterminals'"):
        small_spec(grammars=[{"grammar": "0,300,2,2"}])


def test_plan_runs_longest_first_with_resources_by_model_size():
    spec = preset_spec("paper").with_changes(nested=False)  # one trial per run
    runs = plan_runs(spec, use_gpu=True)
    assert len(runs) == 216 and len({r.run_id for r in runs}) == 216
    assert [r.flops for r in runs] == sorted((r.flops for r in runs), reverse=True)
    assert all(math.isclose(r.flops, 6 * r.params * r.tokens) for r in runs)
    cheapest = plan_runs(spec.with_changes(order="cheapest-first"), use_gpu=True)
    assert [r.flops for r in cheapest] == sorted(r.flops for r in cheapest)
    by_shape = {r.shape: r for r in runs}
    assert by_shape["paper-4m"].gpus == 0.25 and by_shape["paper-1.4b"].gpus == 1.0
    assert by_shape["paper-4m"].params == 4_178_368  # vocab 32001
    cpu = plan_runs(preset_spec("tiny"), use_gpu=False)
    assert all(r.gpus == 0 and r.cpus == 1 for r in cpu)
    multi = plan_runs(small_spec(resources={"multi_gpu_params": 20_000, "gpus_per_multi": 2}), True)
    assert {r.shape: r.workers for r in multi} == {"tiny-1": 1, "tiny-2": 2}


def test_dry_run_prints_runs_flops_and_gpu_hours(capsys):
    assert main(["sweep", "--preset", "paper", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["runs"] == 216 and len(plan["plan"]) == 216
    assert plan["total_flops"] == pytest.approx(sum(r["flops"] for r in plan["plan"]))
    assert plan["gpu_hours_estimate"] > 1
    assert main(["sweep", "--preset", "tiny", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "40 runs" in text and "GPU-hours" in text


def test_sweep_needs_exactly_one_source(capsys):
    with pytest.raises(SystemExit):
        main(["sweep"])
    assert main(["sweep", "--preset", "nope", "--dry-run"]) == 2
    assert (
        "field 'preset' must be one of smoke, tiny, pilot, reproduction, paper"
        in capsys.readouterr().err
    )


def test_runs_unknown_to_a_resumed_tune_experiment_are_found_only_when_it_is_idle():
    """Tune resumes only the trials of its last snapshot; runs it never created must be
    started afresh, but not while a known trial is merely unfinished (an interrupt)."""
    from types import SimpleNamespace

    from gzipscale.vocabulary import RunKey

    def run(shape, tokens):
        return {"dataset": "d", "shape": shape, "tokens": tokens}

    configs = [run("tiny-1", 16), run("tiny-1", 32), run("tiny-2", 16), run("tiny-2", 32)]
    grid = [SimpleNamespace(config={"run": c}) for c in configs[:2]]
    grid.append(SimpleNamespace(config=None))  # a trial Tune restored without a config
    rows = {
        RunKey("d", "tiny-1", 16): {},
        RunKey("d", "tiny-1", 32): {},
        RunKey("d", "tiny-2", 32): {},
    }
    assert runs_unknown_to_tune(configs, grid, rows) == [run("tiny-2", 16)]
    del rows[RunKey("d", "tiny-1", 32)]  # a known trial did not finish: wait for the next session
    assert runs_unknown_to_tune(configs, grid, rows) == []


# -- real sweeps ----------------------------------------------------------------------------


def test_smoke_sweep_end_to_end_and_rerun_changes_nothing(ray_cluster, tmp_path):
    spec = preset_spec("smoke")
    outcome = run_sweep(spec, str(tmp_path), say=lambda s: None)
    run_dir = tmp_path / "smoke"
    assert outcome.runs == 12 and outcome.finished == 12 and not outcome.failed
    rows = rows_by_run(run_dir)
    assert len(rows) == 12
    assert {r["status"] for r in rows.values()} == {"finished"}
    h = {r["dataset"]: r["gzip"] for r in rows.values()}
    assert h["pcfg-3-300-2-2-s0"] < h["pcfg-20-300-5-10-s0"]
    # More data, lower loss, for every grammar and shape.
    for (dataset, shape, tokens), r in rows.items():
        if tokens == 16_384:
            assert rows[(dataset, shape, 49_152)]["val_loss"] < r["val_loss"]
    assert json.loads((run_dir / "sweep.json").read_text()) == spec.to_dict()
    assert (run_dir / "events.log").read_text().count("finished") == 12
    # Six runs per grammar: the report the sweep wrote at its end fits both.
    assert outcome.report is not None, outcome.report_note
    fits = (run_dir / "report" / "table2_fits.csv").read_text()
    assert "pcfg-3-300-2-2-s0" in fits and "pcfg-20-300-5-10-s0" in fits

    # The analysis actor received every run live.
    actor = ray.get_actor("analysis-smoke", namespace="gzipscale")
    snap = ray.get(actor.snapshot.remote())
    assert snap["counts"]["finished"] == 12

    # Same command again: nothing re-runs, nothing changes.
    before = (run_dir / "results.csv").read_bytes()
    again = run_sweep(spec, str(tmp_path), say=lambda s: None)
    assert again.finished == 12
    assert (run_dir / "results.csv").read_bytes() == before

    # Same name, different spec: refused, saying what differs; nothing touched.
    changed = SweepSpec.from_dict({**PRESETS["smoke"], "shapes": ["tiny-1", "tiny-3"]})
    with pytest.raises(
        SweepError, match=r"shapes: \['tiny-0', 'tiny-1', 'tiny-2'\] there, .*--name NEW_NAME"
    ):
        run_sweep(changed, str(tmp_path), say=lambda s: None)
    assert (run_dir / "results.csv").read_bytes() == before
    assert json.loads((run_dir / "sweep.json").read_text()) == spec.to_dict()


def test_crashed_trial_retries_from_checkpoint_and_diverged_run_fails_alone(ray_cluster, tmp_path):
    ray.cloudpickle.register_pickle_by_value(faults)
    spec = small_spec(name="faults")
    crash, diverge = "pcfg-3-300-2-2-s0/tiny-2/49152", "pcfg-3-300-2-2-s0/tiny-1/16384"
    (tmp_path / "faults.json").write_text(
        json.dumps({"crash_after_checkpoint": [crash], "diverge": [diverge]})
    )
    outcome = run_sweep(spec, str(tmp_path), say=lambda s: None, trainable=faults.faulty_trial)
    run_dir = tmp_path / "faults"
    rows = rows_by_run(run_dir)
    assert len(rows) == 4 and outcome.finished == 3
    failed = rows[("pcfg-3-300-2-2-s0", "tiny-1", 16_384)]
    assert failed["status"] == "failed" and "diverged" in failed["reason"]
    assert math.isnan(failed["val_loss"])
    assert [r["status"] for k, r in rows.items() if k[1:] != ("tiny-1", 16_384)] == ["finished"] * 3

    crashed_at = int((tmp_path / "crashed-pcfg-3-300-2-2-s0_tiny-2_49152").read_text())
    assert crashed_at > 0
    events = (run_dir / "events.log").read_text()
    assert "retrying pcfg-3-300-2-2-s0 tiny-2 D=49152" in events
    trial_dir = next(run_dir.glob("pcfg-3-300-2-2-s0_tiny-2_49152_*"))
    last = json.loads((trial_dir / "result.json").read_text().strip().splitlines()[-1])
    assert last["resumed_from_step"] == crashed_at  # only the steps after it were redone
    assert outcome.report is None or "report" in outcome.report
