"""What a sweep looks like now, read from its run directory (and the analysis actor).

:func:`collect` builds a :class:`SweepView` from files any process can read: the spec
(``sweep.json``), ``results.csv``, ``events.log`` and the last result each Tune trial
wrote (its progress). It works for a running, finished or killed sweep, with or without
a cluster. Fits are a :class:`~gzipscale.analysis.fitreport.FitReport`: the live
analysis actor's when one is reachable, else one made by fitting results.csv here
(:class:`OfflineFits`, refitted only when the table changes), with the same bootstrap
policy either way.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gzipscale.analysis.bootstrap import DEFAULT_POLICY, BootstrapPolicy
from gzipscale.analysis.fitreport import DatasetFit, FitReport
from gzipscale.vocabulary import (
    EVENTS_FILE,
    FAILED,
    FINISHED,
    PENDING,
    RESULTS_FILE,
    RUNNING,
    SWEEP_SPEC_FILE,
)

from .plan import plan_trials, runs_of
from .spec import SweepSpec

EVENT_LINE = re.compile(r"^(\S+) (\S+)\s+(\S+) (\S+) D=(\d+)(?:: (.*))?$")
SESSION_LINE = re.compile(r"^(\S+) session\s+(.*)$")
LOG_KEEP = 200


@dataclass
class RunView:
    run_id: str
    dataset: str
    grammar: str
    shape: str
    params: int
    tokens: int
    flops: float
    state: str = PENDING
    val_loss: float | None = None
    step: int = 0
    steps: int = 0
    retries: int = 0
    reason: str = ""
    # A nested-data trial's rows count their progress in tokens: ``step`` is how far its
    # trunk has trained, capped at the row's size, and ``steps`` the size.

    @property
    def progress(self) -> float:
        if self.state == FINISHED or self.state == FAILED:
            return 1.0
        return self.step / self.steps if self.steps else 0.0


@dataclass
class TrialView:
    """One Tune trial (a nested-data trial makes several rows), for the ETA: when it
    started and ended, how many tokens of its trunk it has trained, in how many seconds."""

    dataset: str
    shape: str
    params: int
    tokens: int  # the trunk's tokens: its largest row
    flops: float
    state: str = PENDING
    started_at: float | None = None  # its last "started" (or "retrying") event
    ended_at: float | None = None  # the event that ended its last row
    tokens_seen: int = 0
    done_flops: float = 0.0  # of ``flops``: its trunk so far and the rows it has ended
    train_s: float | None = None  # seconds it has trained (its last result), or in all
    tokens_per_s: float | None = None  # its throughput in its last result
    reported_at: float | None = None  # epoch seconds of its last result


@dataclass
class DatasetView:
    name: str
    grammar: str
    seed: int
    gzip: float | None
    fit: DatasetFit | None = None  # the law, its intervals and their policy, the frontier
    note: str = ""  # why there is no fit
    comparison: DatasetFit | None = None  # the other kind of fit, where both were made
    comparison_note: str = ""  # why the other kind could not be made


@dataclass
class SweepView:
    name: str
    run_dir: str
    shapes: list[str]
    sizes: list[int]
    runs: list[RunView]
    datasets: list[DatasetView]
    events: list[str]
    started: float | None  # epoch seconds of the current (or last) session
    first_started: float | None
    last_event: float | None
    report: FitReport | None = None  # the fits, from the actor or from results.csv
    cluster: dict | None = None  # nodes, CPU/GPU total and in use
    now: float = field(default_factory=time.time)
    trials: list[TrialView] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.runs)

    @property
    def total_flops(self) -> float:
        return sum(r.flops for r in self.runs)

    @property
    def done_flops(self) -> float:
        return sum(r.flops * r.progress for r in self.runs if r.state != FAILED) + sum(
            r.flops for r in self.runs if r.state == FAILED
        )

    @property
    def finished_all(self) -> bool:
        return all(r.state in (FINISHED, FAILED) for r in self.runs)

    def elapsed(self) -> float | None:
        if self.first_started is None:
            return None
        end = self.last_event if self.finished_all and self.last_event else self.now
        return max(0.0, end - self.first_started)

    def eta(self, session_done_flops: float | None = None) -> float | None:
        """Seconds left: the makespan of the remaining trials on the sweep's slots, each
        timed from the throughput measured for its shape (:func:`schedule_eta`); before
        any throughput is measured, at the FLOPs rate of this session."""
        if self.finished_all or self.started is None:
            return None
        estimate = schedule_eta(self.trials, self.now)
        if estimate is not None:
            return estimate
        return self.flops_rate_eta(session_done_flops)

    def flops_rate_eta(self, session_done_flops: float | None = None) -> float | None:
        """Seconds left at the FLOPs rate measured in this session (small models run at
        far fewer FLOPs/s than large ones, so this is off on a sweep of mixed shapes)."""
        if self.finished_all or self.started is None:
            return None
        spent = self.now - self.started
        done = self.done_flops if session_done_flops is None else session_done_flops
        if spent <= 0 or done <= 0:
            return None
        return (self.total_flops - self.done_flops) / (done / spent)

    def grid(self, dataset: str) -> dict[tuple[str, int], RunView]:
        return {(r.shape, r.tokens): r for r in self.runs if r.dataset == dataset}


DEFAULT_STARTUP_S = 3.0  # a trial's start-up before its first result, until measured


def _concurrency(trials: list[TrialView], now: float) -> int:
    """The most trials that have run at once (the sweep's slots), at least one."""
    edges = []
    for t in trials:
        if t.started_at is None:
            continue
        end = t.ended_at if t.ended_at is not None else now
        edges += [(t.started_at, 1), (max(end, t.started_at), -1)]
    most = running = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        running += step
        most = max(most, running)
    return max(1, most, sum(t.state == RUNNING for t in trials))


def _seconds_per_token(trials: list[TrialView]) -> dict[str, tuple[float, bool]]:
    """Measured training seconds per trained token (FLOPs / 6N: trunk and cooldown
    branches) of each shape, and whether that is from finished trials: a shape's
    finished trials when it has some (their whole runs: evaluations, branches and the
    throughput's drift over a run included), else its running ones, each at the
    throughput of its last result (past its warm-up) or, without one, its seconds so far
    over its FLOPs so far.  Failed trials are not measured."""
    spent: dict[tuple[str, bool], list[float]] = {}
    for t in trials:
        if t.state == RUNNING and t.tokens_per_s:  # its throughput now, past its warm-up
            acc = spent.setdefault((t.shape, False), [0.0, 0.0])
            acc[0] += 1.0
            acc[1] += t.tokens_per_s
        elif t.train_s and t.done_flops > 0 and t.params > 0:
            if t.state == FAILED:
                continue
            acc = spent.setdefault((t.shape, t.state == FINISHED), [0.0, 0.0])
            acc[0] += t.train_s
            acc[1] += t.done_flops / (6.0 * t.params)
    out: dict[str, tuple[float, bool]] = {}
    for (shape, done), (s, n) in sorted(spent.items(), key=lambda kv: kv[0][1]):
        if n > 0:
            out[shape] = (s / n, done)  # finished (True) sorts last and wins
    return out


def _startup_s(trials: list[TrialView]) -> float:
    """A trial's start-up: from its "started" event to its training clock (median)."""
    gaps = []
    for t in trials:
        if t.started_at is None or not t.train_s:
            continue
        end = t.ended_at if t.ended_at is not None else t.reported_at
        if end is not None:
            gaps.append(max(0.0, end - t.started_at - t.train_s))
    if not gaps:
        return DEFAULT_STARTUP_S
    gaps.sort()
    return gaps[len(gaps) // 2]


# A shape not measured yet costs, per token, a measured shape's cost times the ratio of
# their N to this power: below 1, as small models are overhead-dominated (on the recorded
# CPU sweep of tiny-2..tiny-5 in tests/test_eta.py the exponent between shapes is 0.3-0.8).
PER_TOKEN_EXPONENT = 0.5


def _per_token_model(measured: dict[str, tuple[float, bool]], params: dict[str, int]):
    """Seconds per token of a shape of N parameters not measured yet, scaled from the
    measured shape nearest in N (one with a finished trial, where there is one)."""
    points = [(params[s], v, done) for s, (v, done) in measured.items() if params.get(s)]
    if not points:
        return None
    if any(done for *_, done in points):
        points = [p for p in points if p[2]]

    def per_token(n: int) -> float:
        ref_n, ref_v, _ = min(points, key=lambda p: abs(math.log(p[0] / n)))
        return ref_v * (n / ref_n) ** PER_TOKEN_EXPONENT

    return per_token


def schedule_eta(trials: list[TrialView], now: float) -> float | None:
    """Seconds until the last trial ends: the remaining training of the running trials
    and the pending ones (longest first, one start-up each) laid onto the slots (as many
    as have run at once), each timed at its shape's measured seconds per token (shapes
    not measured yet: :func:`_per_token_model`).  None before any throughput is known."""
    measured = _seconds_per_token(trials)
    params = {t.shape: t.params for t in trials}
    model = _per_token_model(measured, params)
    if model is None:
        return None

    def per_flop(shape: str) -> float:
        per_token = measured[shape][0] if shape in measured else model(params[shape])
        return per_token / (6.0 * params[shape])

    startup = _startup_s(trials)
    slots = _concurrency(trials, now)
    free = []
    for t in trials:
        if t.state != RUNNING:
            continue
        left = per_flop(t.shape) * max(0.0, t.flops - t.done_flops)
        if t.reported_at is not None:
            left -= max(0.0, now - t.reported_at)  # trained since its last result
        elif t.started_at is not None:
            left += max(0.0, startup - (now - t.started_at))
        else:
            left += startup
        free.append(max(0.0, left))
    free += [0.0] * max(0, slots - len(free))
    pending = sorted(
        (per_flop(t.shape) * t.flops for t in trials if t.state == PENDING), reverse=True
    )
    for work in pending:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += startup + work
    return max(free) if free else 0.0


def _iso(text: str) -> float | None:
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _last_json_line(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 16384))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError, IndexError):
        return None


# Tune writes a trial's params.json once; its run keys never change.
_TRIAL_KEYS: dict[Path, tuple] = {}


def _trial_dirs(run_dir: Path):
    """(trial directory, run keys, dataset H, nested) for every Tune trial directory: the
    keys of every row it produces (several for a nested-data trial)."""
    if not run_dir.is_dir():
        return
    for trial_dir in run_dir.iterdir():
        if trial_dir not in _TRIAL_KEYS:
            params = trial_dir / "params.json"
            if not params.is_file():
                continue  # not a trial directory, or Tune has not written it yet
            try:
                run = json.loads(params.read_text()).get("run", {})
            except ValueError:
                continue  # half-written: read it again next time
            sizes = sorted({*(run.get("eval_at") or ()), run.get("tokens")} - {None})
            keys = [(run.get("dataset"), run.get("shape"), d) for d in sizes]
            _TRIAL_KEYS[trial_dir] = (keys, run.get("gzip"), bool(run.get("eval_at")))
        keys, gzip, nested = _TRIAL_KEYS[trial_dir]
        yield trial_dir, keys, gzip, nested


def read_events(run_dir: Path) -> list[str]:
    path = run_dir / EVENTS_FILE
    if not path.exists():
        return []
    return path.read_text(errors="replace").splitlines()


def collect(
    run_dir: str | Path, fits: FitReport | None = None, cluster: dict | None = None
) -> SweepView:
    """The sweep in ``run_dir`` now. ``fits`` is the fit report (the actor's, or
    :meth:`OfflineFits.snapshot`); ``cluster`` the cluster's resources, if attached."""
    from gzipscale.analysis.results import read_results_csv

    run_dir = Path(run_dir)
    spec_path = run_dir / SWEEP_SPEC_FILE
    if not spec_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a sweep run directory (no {SWEEP_SPEC_FILE})")
    spec = SweepSpec.from_dict(json.loads(spec_path.read_text()))
    trials = plan_trials(spec, use_gpu=False)
    planned = [run for trial in trials for run in runs_of(trial, spec)]
    runs = {
        (p.dataset, p.shape, p.tokens): RunView(
            p.run_id, p.dataset, p.grammar, p.shape, p.params, p.tokens, p.flops
        )
        for p in planned
    }
    # An event names a trial by its largest size; it stands for every row of the trial.
    rows_of = {
        (t.dataset, t.shape, t.tokens): [runs[(t.dataset, t.shape, d)] for d in t.sizes]
        for t in trials
    }
    trial_views = {
        (t.dataset, t.shape, t.tokens): TrialView(t.dataset, t.shape, t.params, t.tokens, t.flops)
        for t in trials
    }
    h: dict[str, float] = {}

    # Events: started / retrying / finished / failed, and session starts.
    events = read_events(run_dir)
    started = first_started = last_event = None
    for line in events:
        m = SESSION_LINE.match(line)
        if m:
            t = _iso(m.group(1))
            started = t
            first_started = first_started or t
            continue
        m = EVENT_LINE.match(line)
        if not m:
            continue
        last_event = _iso(m.group(1)) or last_event
        key = (m.group(3), m.group(4), int(m.group(5)))
        event = m.group(2)
        trial = trial_views.get(key)
        if trial is not None:
            stamp = _iso(m.group(1))
            if event in ("started", "retrying"):
                trial.started_at, trial.ended_at = stamp, None
                trial.state = RUNNING
            elif event in ("finished", "failed"):
                trial.ended_at = stamp
        for run in rows_of.get(key, [runs[key]] if key in runs else []):
            if event == "started" and run.state == PENDING:
                run.state = RUNNING
            elif event == "retrying" and run.state in (PENDING, RUNNING):
                run.retries += 1
                run.state = RUNNING
                run.reason = m.group(6) or ""

    # Ended runs: results.csv is the truth (applied last, over the events).
    ended = []
    if (run_dir / RESULTS_FILE).exists():
        ended = [row.to_dict() for row in read_results_csv(run_dir / RESULTS_FILE)]
    ended_keys = {(r["dataset"], r["shape"], r["tokens"]) for r in ended}

    # Progress of the other trials: the last result Tune wrote for each. The display
    # calls this twice a second, so ended runs' files are not read at all.
    for trial_dir, keys, gzip, nested in _trial_dirs(run_dir):
        mine = [(key, runs[key]) for key in keys if key in runs]
        if not mine:
            continue
        if gzip is not None:
            h.setdefault(mine[0][1].dataset, gzip)
        open_rows = [(key, run) for key, run in mine if key not in ended_keys]
        if not open_rows:
            continue
        last = _last_json_line(trial_dir / "result.json")
        if not last:
            continue
        trial = trial_views.get(max(keys, key=lambda k: k[2] or 0))
        if trial is not None:
            seen = last.get("tokens_seen")
            if seen is None and last.get("steps"):
                seen = trial.tokens * int(last.get("step", 0) or 0) / int(last["steps"])
            trial.tokens_seen = int(seen or 0)
            trial.done_flops = 6.0 * trial.params * trial.tokens_seen + _branch_flops(
                [run for _, run in mine], ended_keys
            )
            trial.train_s = float(last.get("time_total_s", 0) or 0) or None
            trial.reported_at = last.get("timestamp")
            trial.tokens_per_s = float(last.get("tokens_per_s") or 0) or None
            trial.state = RUNNING
        for _, run in open_rows:
            if nested:  # the trunk's tokens against each row's size
                seen = int(last.get("tokens_seen", 0) or 0)
                run.step, run.steps = min(seen, run.tokens), run.tokens
            else:
                run.step = int(last.get("step", 0) or 0)
                run.steps = int(last.get("steps", 0) or 0)
            if run.state == PENDING:
                run.state = RUNNING

    for r in ended:
        run = runs.get((r["dataset"], r["shape"], r["tokens"]))
        if run is None:
            continue
        h[run.dataset] = r["gzip"]
        run.state = FINISHED if r["status"] == "finished" else FAILED
        run.val_loss = None if math.isnan(r["val_loss"]) else r["val_loss"]
        run.reason = r["reason"]

    # A trial has ended when every row it produces has; its last row's wall time is how
    # long it trained.
    ended_rows = {(r["dataset"], r["shape"], r["tokens"]): r for r in ended}
    for key, trial in trial_views.items():
        rows = [ended_rows.get((trial.dataset, trial.shape, d)) for d in _sizes(rows_of[key])]
        if rows and all(rows):
            failed = any(r["status"] != "finished" for r in rows)
            trial.state = FAILED if failed else FINISHED
            trial.tokens_seen, trial.done_flops = trial.tokens, trial.flops
            walls = [float(r.get("wall_s") or 0) for r in rows]
            trial.train_s = (max(walls) or None) if not any(map(math.isnan, walls)) else None
            if trial.ended_at is None:
                trial.ended_at = last_event

    datasets = []
    for entry in spec.grammars:
        name = entry.dataset
        manifest = run_dir / "data" / name / "manifest.json"
        gzip = h.get(name)
        if gzip is None and manifest.exists():
            gzip = json.loads(manifest.read_text())["gzip"]["median"]
        view = DatasetView(name, entry.grammar, entry.seed, gzip)
        if fits is not None:
            view.fit = fits.datasets.get(name)
            view.note = fits.skipped.get(name, "")
            view.comparison = fits.comparison.get(name)
            view.comparison_note = fits.comparison_skipped.get(name, "")
        datasets.append(view)

    return SweepView(
        name=spec.name,
        run_dir=str(run_dir),
        shapes=list(spec.shapes),
        sizes=sorted({p.tokens for p in planned}),
        runs=list(runs.values()),
        datasets=datasets,
        events=[e for e in events if not SESSION_LINE.match(e)][-LOG_KEEP:],
        started=started,
        first_started=first_started,
        last_event=last_event,
        report=fits,
        cluster=cluster,
        trials=list(trial_views.values()),
    )


def _branch_flops(rows: list[RunView], ended_keys: set) -> float:
    """The FLOPs of the cooldown branches of a nested trial's rows that have ended: a
    row's share of the trial's FLOPs less its stretch of the trunk (the last row has no
    branch: the trunk's own cooldown ends it)."""
    rows = sorted(rows, key=lambda r: r.tokens)
    total, previous = 0.0, 0
    for run in rows[:-1]:
        if (run.dataset, run.shape, run.tokens) in ended_keys:
            total += max(0.0, run.flops - 6.0 * run.params * (run.tokens - previous))
        previous = run.tokens
    return total


def _sizes(rows: list[RunView]) -> list[int]:
    return [r.tokens for r in rows]


class OfflineFits:
    """Fits of a run directory's results.csv without a cluster, refitted in a background
    thread whenever the table changes (a fit with intervals takes seconds)."""

    def __init__(self, run_dir: str | Path, policy: BootstrapPolicy = DEFAULT_POLICY):
        self.path = Path(run_dir) / RESULTS_FILE
        self.policy = policy
        self._snapshot: FitReport | None = None
        self._seen = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> FitReport | None:
        stamp = self.path.stat().st_mtime_ns if self.path.exists() else None
        if stamp != self._seen and (self._thread is None or not self._thread.is_alive()):
            self._seen = stamp
            self._thread = threading.Thread(target=self._refit, daemon=True)
            self._thread.start()
        with self._lock:
            return self._snapshot

    def wait(self, timeout: float = 300.0) -> FitReport | None:
        """Block until the current refit is done (tests, one-shot output)."""
        self.snapshot()
        if self._thread is not None:
            self._thread.join(timeout)
        return self._snapshot

    def _refit(self) -> None:
        report = offline_fits(self.path.parent, self.policy)
        with self._lock:
            self._snapshot = report


def offline_fits(run_dir: Path, policy: BootstrapPolicy = DEFAULT_POLICY) -> FitReport:
    """The fit report of ``run_dir``'s results.csv (an empty one saying why, if none)."""
    from gzipscale.analysis.commands import fit_report

    try:
        return fit_report(run_dir, policy=policy)
    except (FileNotFoundError, ValueError) as exc:
        return FitReport({}, {}, None, str(exc), policy=policy, source=str(run_dir))
