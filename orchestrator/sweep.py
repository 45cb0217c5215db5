"""Run a sweep: data (Ray Data), training (Ray Tune trials), analysis (live actor, report).

The run directory ``STORAGE/NAME`` holds::

    sweep.json          the resolved spec; another spec under the same name is refused
    data/<dataset>/     one dataset per grammar, at the sweep's largest data size
    results.csv         one row per finished or failed run, written as each run's row
                        is reported (a nested-data trial reports one per data size)
    events.log          one line per event (started, finished, retrying, failed)
    report/             fits, tables and figures, written when the sweep ends
    tuner.pkl, experiment_state-*.json, <trial dirs>/   Ray Tune's state (restore)
    tune-state/         the last complete copy of Tune's snapshot (experiment and
                        search state), put back if a full disk truncated Tune's own

Running the same command again resumes: complete datasets are reused, ``Tuner.restore``
re-runs only unfinished trials from their last checkpoints, and results.csv is keyed
by run, so nothing is lost or duplicated. Tune rewrites its snapshot in place, so a disk
that fills up mid-sweep can leave it truncated; Tune would then start every trial over
from scratch, finished ones included. The sweep keeps a complete copy of each snapshot
(:class:`KeepTuneState`) and puts it back before restoring (:func:`recover_tune_state`);
without a copy, only the runs that have no row yet are started, afresh.

With ``spec.nested`` a trial is a (grammar, shape) trained to the largest data size that
reports every size's row on the way; otherwise a trial is one run. Either way a run is
one results row (:class:`~orchestrator.plan.PlannedRun`), and a trial produces the rows
of its sizes (:func:`~orchestrator.callbacks.row_keys`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from gzipscale.helpers import UserError, atomic_directory
from gzipscale.vocabulary import (
    ACTOR_NAMESPACE,
    FAILED,
    FINISHED,
    RESULTS_FILE,
    SWEEP_SPEC_FILE,
    RunKey,
    actor_name,
)

from .callbacks import (
    AnalysisCallback,
    EventLog,
    ResultsTable,
    append_event,
    ended_rows,
    read_rows,
    row_keys,
    upsert_rows,
)
from .plan import PlannedTrial, plan_summary, plan_trials, runs_of
from .spec import SweepSpec
from .storage import RunStore, join, resolve_storage


class SweepError(UserError, ValueError):
    """A sweep that cannot start as asked (names what to change)."""


@dataclass
class SweepOutcome:
    run_dir: str
    runs: int
    finished: int
    failed: list[dict]
    missing: int
    report: str | None
    report_note: str
    wall_s: float
    trials: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# -- helpers picklable by Tune (module level) ---------------------------------------------


def trial_resources(config: dict) -> dict:
    run = config["run"]
    if run["workers"] > 1:
        return {"cpu": 1}  # the trial only drives a TorchTrainer that asks for its own GPUs
    resources = {"cpu": run["cpus"]}
    if run["gpus"]:
        resources["gpu"] = run["gpus"]
    return resources


def trial_name(trial) -> str:
    run = trial.config["run"]
    return f"{run['dataset']}_{run['shape']}_{run['tokens']}"


def trial_dirname(trial) -> str:
    return f"{trial_name(trial)}_{trial.trial_id}"


# -- Tune's snapshot, kept whole -------------------------------------------------------------

# What Tune.restore reads (the newest of each kind): trials and their checkpoints, the
# search algorithm's state (which grid points were made), the callbacks' state. The run
# directory is trusted as it is for Tune's restore, which unpickles these same files.
TUNE_STATE_PATTERNS = (
    "experiment_state-*.json",
    "basic-variant-state-*.json",
    "search_gen_state-*.json",
    "callback-states-*.pkl",
)
TUNE_STATE_COPY = "tune-state"


def tune_state_files(directory: Path) -> list[Path]:
    return sorted(p for pattern in TUNE_STATE_PATTERNS for p in Path(directory).glob(pattern))


def _readable(path: Path) -> bool:
    """Whether a snapshot file reads back whole: Tune writes JSON (experiment state) or a
    pickle under a .json name (search state); a truncated one of either fails to load."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if not data:
        return False
    try:
        json.loads(data)
        return True
    except ValueError:
        pass
    import ray.cloudpickle

    try:
        ray.cloudpickle.loads(data)  # Tune's own restore unpickles the same file
        return True
    except Exception:
        return False


class KeepTuneState(tune.Callback):
    """Keep a complete copy of Tune's latest snapshot in ``RUN_DIR/tune-state``.

    Tune writes each snapshot into the driver's staging directory (all of it before this
    step's ``on_step_end``) and then copies it over the one in the run directory, in place.
    Whenever the staging snapshot changed and every file of it reads back whole, it is
    copied here as one directory that replaces the previous copy atomically. On a full disk
    that copy fails and the previous one stays; the sweep goes on as Tune would.
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self._seen: tuple = ()

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if not trials:
            return
        try:
            staging = Path(trials[0].storage.experiment_driver_staging_path)
            files = tune_state_files(staging)
            seen = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
            if not files or seen == self._seen or not all(_readable(p) for p in files):
                return
            with atomic_directory(Path(self.run_dir) / TUNE_STATE_COPY) as tmp:
                for p in files:
                    (tmp / p.name).write_bytes(p.read_bytes())
            self._seen = seen
        except OSError:
            return  # e.g. no space left: keep the last complete copy


def has_experiment_state(run_dir: Path) -> bool:
    return any(p.name.startswith("experiment_state-") for p in tune_state_files(run_dir))


def _kept_copy(run_dir: Path) -> list[Path]:
    copy = run_dir / TUNE_STATE_COPY
    if not copy.is_dir():  # atomic_directory was between its two renames
        aside = sorted(run_dir.glob(f".{TUNE_STATE_COPY}.*.old/{TUNE_STATE_COPY}"))
        copy = aside[-1] if aside else copy
    files = tune_state_files(copy) if copy.is_dir() else []
    ok = files and all(_readable(p) for p in files) and has_experiment_state(copy)
    return files if ok else []


def recover_tune_state(run_dir: Path) -> tuple[bool, str]:
    """Before a restore: if any of Tune's snapshot files in ``run_dir`` cannot be read,
    move them all aside (``*.unreadable``) and put the kept copy in their place.

    Returns (restorable, note): restorable is False when the snapshot was unreadable and
    no complete copy was kept (the caller then starts afresh the runs that have no row);
    note says what was done, empty when nothing was wrong.
    """
    files = tune_state_files(run_dir)
    broken = [p.name for p in files if not _readable(p)]
    if not broken:
        return True, ""
    copy = _kept_copy(run_dir)
    staged = []
    try:  # the copy goes next to its place first: a failure here leaves everything as it was
        for p in copy:
            staged.append((run_dir / f".{p.name}.restoring", run_dir / p.name))
            staged[-1][0].write_bytes(p.read_bytes())
    except OSError:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for p in files:
        os.replace(p, p.with_name(p.name + ".unreadable"))
    for tmp, target in staged:
        os.replace(tmp, target)
    if not copy:
        return False, (
            f"Tune's experiment state in {run_dir} cannot be read ({', '.join(broken)}: "
            "truncated, e.g. by a full disk) and no complete copy was kept; the runs "
            "without a row start afresh"
        )
    return True, (
        f"Tune's experiment state in {run_dir} could not be read ({', '.join(broken)}: "
        "truncated, e.g. by a full disk); resuming from its last complete copy"
    )


# -- stages -------------------------------------------------------------------------------


def check_spec(store: RunStore, spec: SweepSpec) -> bool:
    """True if the run directory already holds this spec; raise if it holds another."""
    if not store.exists(SWEEP_SPEC_FILE):
        return False
    have = json.loads(store.read_text(SWEEP_SPEC_FILE))
    diff = spec.differences(have)
    if diff:
        shown = "; ".join(diff[:6]) + ("; ..." if len(diff) > 6 else "")
        raise SweepError(
            f"a sweep named {spec.name!r} already exists in {store.location} with a different "
            f"spec ({shown}). Nothing was changed. To start a new sweep, pass --name NEW_NAME "
            "(or another --storage); to continue the old one, run it with its own spec."
        )
    return True


def decide_gpu(spec: SweepSpec) -> bool:
    import ray

    mode = spec.resources.gpu
    if mode == "yes":
        return True
    if mode == "no":
        return False
    return ray.cluster_resources().get("GPU", 0) > 0


def prepare_data(
    spec: SweepSpec, store: RunStore, on_progress: Callable[[str, int, int], None] | None = None
) -> dict[str, dict]:
    """Stage 1: every grammar's dataset at the largest data size, before any trial starts
    (Ray Data inside trials deadlocks small clusters). Returns name -> {location, gzip,
    floor, floor_se} (the floor NaN where the manifest has none or records why not)."""
    from gzipscale.grammars.dataset import DatasetSpec
    from gzipscale.grammars.pipeline import generate_dataset

    out = {}
    for entry in spec.grammars:
        name = entry.dataset
        rel = f"data/{name}"
        dspec = DatasetSpec(
            grammar=entry.spec,
            tokens=spec.max_tokens,
            eval_tokens=spec.eval_tokens,
            context_length=spec.context_length,
            sampler=entry.sampler,
        )
        progress = (lambda d, t, n=name: on_progress(n, d, t)) if on_progress else None
        if store.local:
            manifest = generate_dataset(dspec, store.local_path(rel), on_progress=progress)
        elif store.exists(f"{rel}/manifest.json"):
            manifest = json.loads(store.read_text(f"{rel}/manifest.json"))
        else:
            with tempfile.TemporaryDirectory() as d:
                manifest = generate_dataset(dspec, Path(d) / name, on_progress=progress)
                store.upload_dir(Path(d) / name, rel)
        floor = manifest.get("floor") or {}
        out[name] = {
            "location": join(store.location, rel),
            "gzip": float(manifest["gzip"]["median"]),
            "floor": float(floor.get("nats_per_token", math.nan)),
            "floor_se": float(floor.get("stderr", math.nan)),
        }
    return out


def trial_configs(trials: list[PlannedTrial], datasets: dict) -> list[dict]:
    """Each planned trial with its dataset's location and H (known after stage 1)."""
    configs = []
    for r in trials:
        run = r.to_dict()
        run["gzip"] = datasets[r.dataset]["gzip"]
        run["floor"] = datasets[r.dataset].get("floor", math.nan)
        run["floor_se"] = datasets[r.dataset].get("floor_se", math.nan)
        run["data"] = datasets[r.dataset]["location"]
        configs.append(run)
    return configs


def _tuner(
    spec: SweepSpec,
    runs: list[dict],
    storage: str,
    run_location: str,
    use_gpu: bool,
    callbacks: list,
    trainable_fn=None,
    restore: bool = True,
):
    import ray
    from ray import tune

    from .trial import train_trial

    trainable = tune.with_resources(trainable_fn or train_trial, trial_resources)
    param_space = {
        "run": tune.grid_search(runs),
        "train": spec.train.to_dict(),
        "train_storage": join(run_location, "train"),
    }
    if restore and tune.Tuner.can_restore(run_location):
        # Same spec (checked), so the same trials: finished ones are kept, the rest
        # continue from their last checkpoints, errored ones get another chance.
        # tuner.pkl does not keep the param space; when Tune cannot read its own
        # snapshot it "restarts the experiment" from the param space given here (an
        # empty one made trials without a run).
        tuner = tune.Tuner.restore(
            run_location, trainable=trainable, resume_errored=True, param_space=param_space
        )
        return tuner, True
    concurrent = spec.resources.max_concurrent_trials
    if not concurrent and not use_gpu:
        cpus = ray.cluster_resources().get("CPU", 1)
        concurrent = max(1, int(cpus // spec.resources.cpus_per_trial))
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrent or None,
            # A new trial process imports torch and the project (~3 s on 2 cores); with
            # 36 short runs per grammar that was most of a tiny sweep's time.
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # Tune can snapshot its experiment state a checkpoint or two behind a trial
            # that checkpoints in a quick burst; with only 2 kept, a driver killed then
            # resumed to a checkpoint already deleted and failed the trial. Keeping 4
            # leaves the snapshot's checkpoint on disk.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4),
            # In this order: the actor's feed reads results.csv to tell a row's first
            # report from a replayed one, before the table records it.
            callbacks=[
                AnalysisCallback(actor_name(spec.name), ACTOR_NAMESPACE, run_location),
                ResultsTable(run_location),
                EventLog(run_location),
                *([KeepTuneState(run_location)] if RunStore(run_location).local else []),
                *callbacks,
            ],
            verbose=0,
        ),
    )
    return tuner, False


def _ended(metrics: dict) -> bool:
    """Whether a trial's last result is its end: its final report (finished or failed),
    or, from a trainer before row reports, any result with a loss."""
    status = metrics.get("status")
    return status in (FINISHED, FAILED) or (status is None and "val_loss" in metrics)


def reconcile(store: RunStore, grid) -> None:
    """Make results.csv agree with Tune's final state: a run that ended while the driver
    was down (or whose row write was cut off) still gets exactly one row, and every size
    of a trial that ended gets its row (reported, or failed: see ``ended_rows``)."""
    have = read_rows(store)
    for result in grid:
        config = result.config or {}
        if "run" not in config:
            continue
        if all(key in have for key in row_keys(config["run"])):
            continue
        metrics = result.metrics or {}
        error = None
        if result.error is not None:
            error = (
                f"{type(result.error).__name__}: {str(result.error).strip().splitlines()[-1][:300]}"
            )
        elif not _ended(metrics):
            continue  # never started, or interrupted (an interrupted sweep): no row yet
        rows = ended_rows(metrics.get("trial_id", ""), config, metrics, error)
        upsert_rows(store, [row for row in rows if row.key not in have])


def runs_unknown_to_tune(configs: list[dict], grid, rows: dict) -> list[dict]:
    """The planned trials that neither have their rows nor a trial in ``grid``.

    Empty while any trial Tune knows of is unfinished (an interrupted sweep): those
    trials, and the unknown ones, wait for the next session.
    """
    known = {k for r in grid if r.config and "run" in r.config for k in row_keys(r.config["run"])}
    if known - set(rows):
        return []
    return [
        c for c in configs if not known & set(row_keys(c)) and not set(row_keys(c)) <= set(rows)
    ]


def write_report(store: RunStore) -> tuple[str | None, str]:
    from gzipscale.analysis.report import build_report

    try:
        if store.local:
            info = build_report(store.local_path())
            return info["out"], ""
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / RESULTS_FILE).write_text(store.read_text(RESULTS_FILE))
            build_report(Path(d), Path(d) / "report")
            store.upload_dir(Path(d) / "report", "report")
        return join(store.location, "report"), ""
    except (ValueError, FileNotFoundError) as exc:
        return None, str(exc)


# -- the driver ------------------------------------------------------------------------------


def dry_run(spec: SweepSpec) -> dict:
    use_gpu = spec.resources.gpu == "yes"
    return plan_summary(spec, use_gpu)


def run_sweep(spec: SweepSpec, storage: str, **options) -> SweepOutcome:
    """Run (or resume) ``spec`` with its run directory in ``storage``; see the module doc.

    One driver per sweep: the run directory is locked (``orchestrator.lock``) before
    anything is read or written, and a second driver is refused naming the first.
    ``options`` are :func:`_drive`'s.
    """
    from .lock import driver_lock

    with driver_lock(join(resolve_storage(storage), spec.name)):
        return _drive(spec, storage, **options)


def _drive(
    spec: SweepSpec,
    storage: str,
    *,
    address: str | None = None,
    callbacks: list | None = None,
    on_data_progress: Callable[[str, int, int], None] | None = None,
    say: Callable[[str], None] = print,
    trainable=None,
) -> SweepOutcome:
    """``callbacks`` are extra Tune callbacks (the live display); ``trainable`` replaces
    :func:`orchestrator.trial.train_trial` (fault-injection tests wrap it)."""
    import ray

    from gzipscale.analysis.actor import get_or_create_analysis_actor
    from gzipscale.helpers import ensure_ray

    start = time.perf_counter()
    storage = resolve_storage(storage)
    run_location = join(storage, spec.name)
    store = RunStore(run_location)
    existed = check_spec(store, spec)
    ensure_ray(address)
    use_gpu = decide_gpu(spec)
    trials = plan_trials(spec, use_gpu)
    runs = [run for trial in trials for run in runs_of(trial, spec)]
    if not existed:
        store.write_text(SWEEP_SPEC_FILE, json.dumps(spec.to_dict(), indent=2) + "\n")
    nested = f", {len(trials)} nested-data trials" if spec.nested else ""
    say(
        f"sweep {spec.name}: {len(runs)} runs ({len(spec.grammars)} grammars x "
        f"{len(spec.shapes)} shapes x {len(spec.data_sizes)} sizes{nested}) in {run_location}"
        + (" (resuming)" if existed else "")
    )

    append_event(run_location, f"session {len(runs)} runs")
    datasets = prepare_data(spec, store, on_data_progress)
    for name, d in datasets.items():
        say(f"data {name}: H = {d['gzip']:.3f}")

    options = {"resources": {"head": 0.001}} if "head" in ray.cluster_resources() else {}
    get_or_create_analysis_actor(actor_name(spec.name), ACTOR_NAMESPACE, **options)
    configs = trial_configs(trials, datasets)
    restorable = True
    if store.local:
        restorable, note = recover_tune_state(store.local_path())
        if note:
            say(note)
        restorable = restorable and has_experiment_state(store.local_path())
        if not restorable:
            # Nothing Tune could restore (a new sweep, or a snapshot lost without a copy):
            # Tune would restart every trial, finished ones too, so only the runs without
            # a row are run (any checkpoints belong to trials Tune no longer knows).
            have = read_rows(store)
            configs = [c for c in configs if not set(row_keys(c)) <= set(have)]
    grid, restored = [], False
    if configs:
        tuner, restored = _tuner(
            spec,
            configs,
            storage,
            run_location,
            use_gpu,
            callbacks or [],
            trainable,
            restore=restorable,
        )
        if restored:
            say("resuming the Tune experiment: finished runs are kept, the rest continue")
        grid = tuner.fit()
        reconcile(store, grid)
    if restored:
        unknown = runs_unknown_to_tune(configs, grid, read_rows(store))
        if unknown:
            # Tune resumes only the trials its search-algorithm snapshot knew of; a driver
            # killed before that snapshot reached storage leaves runs no trial will ever
            # run. They have no checkpoints, so a fresh experiment over them loses nothing.
            say(f"{len(unknown)} trials were not in Tune's snapshot; starting them afresh")
            tuner, _ = _tuner(
                spec,
                unknown,
                storage,
                run_location,
                use_gpu,
                callbacks or [],
                trainable,
                restore=False,
            )
            grid = tuner.fit()
            reconcile(store, grid)

    rows = read_rows(store)
    planned = {RunKey.of(r) for r in runs}
    done = {k: v for k, v in rows.items() if k in planned}
    failed = [v.to_dict() for v in done.values() if v.status == FAILED]
    missing = len(planned - set(done))
    report, note = (None, "the sweep did not finish") if missing else write_report(store)
    return SweepOutcome(
        run_dir=run_location,
        runs=len(runs),
        finished=len(done) - len(failed),
        failed=failed,
        missing=missing,
        report=report,
        report_note=note,
        wall_s=time.perf_counter() - start,
        trials=len(trials),
    )
