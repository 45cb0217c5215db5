"""Tune callbacks of a sweep: the results table, the event log and the feed of the live
analysis actor.

All three run in the Tune driver and are pickled into ``tuner.pkl``, so they hold only
strings and rebuild everything else when used.  A trial's result becomes a
:class:`~gzipscale.analysis.results.ResultRow` once, in :func:`trial_row` (its checks
are the row's way in); the table and the actor receive that row and do not check it
again, and results.csv is validated once more when it is read back.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import ray
import ray.cloudpickle
from ray import tune

from gzipscale.analysis.results import (
    ResultRow,
    ResultRowError,
    read_results_csv,
    write_results_csv,
)
from gzipscale.vocabulary import EVENTS_FILE, FAILED, FINISHED, RESULTS_FILE, RunKey

from .storage import RunStore

logger = logging.getLogger(__name__)

# Keys the callbacks read.  From trial.config: the run's identity (ResultRow fields).
CONFIG_KEYS = (
    "dataset",
    "grammar",
    "seed",
    "gzip",
    "shape",
    "params",
    "non_embedding_params",
    "tokens",
    "floor",
    "floor_se",
)
# Used when trial.config lacks them; dataset, gzip, params and tokens are required.
CONFIG_DEFAULTS = {"grammar": "", "seed": 0, "shape": "unknown", "non_embedding_params": 0}
# How long on_experiment_end waits for the last sends to reach the actor.
FLUSH_TIMEOUT_S = 30.0
MAX_REASON_CHARS = 500


# -- a trial's row -----------------------------------------------------------------------


def _finite_positive(value) -> bool:
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


def trial_row(
    trial_id: str, config: Mapping, result: Mapping, status: str = FINISHED, reason: str = ""
) -> ResultRow:
    """The ResultRow of a trial's config and one reported result (validated here).

    Reads :data:`CONFIG_KEYS` from ``config`` or, for a sweep's trials, from
    ``config["run"]`` (defaults: :data:`CONFIG_DEFAULTS`)
    and from ``result``: ``val_loss`` (NaN if absent; only a failed row may lack it),
    ``step`` (else ``training_iteration``), ``wall_s`` (else Tune's
    ``time_total_s``) and ``tokens_per_s`` (else 0).

    Raises
    ------
    ResultRowError
        A required key is missing or a value is invalid (names the field).
    """
    config = config.get("run", config)  # a sweep's trials nest the run under "run"
    row = {k: config[k] for k in CONFIG_KEYS if k in config}
    for key, default in CONFIG_DEFAULTS.items():
        row.setdefault(key, default)
    row.update(
        trial_id=trial_id,
        val_loss=result.get("val_loss", math.nan),
        step=result.get("step", result.get("training_iteration", 0)),
        wall_s=result.get("wall_s", result.get("time_total_s", 0.0)),
        tokens_per_s=result.get("tokens_per_s", 0.0),
        status=status,
        reason=reason,
    )
    return ResultRow.from_dict(row)


def completed_status(result: Mapping) -> tuple[str, str]:
    """(status, reason) of a trial that returned normally, from its last result.

    A run that failed for good (diverged, did not fit in memory) ends its trial normally
    and says so in ``status``/``reason``; a result without a finite loss is a failure too.
    """
    if result.get("status") == FAILED:
        return FAILED, str(result.get("reason") or "the run failed (no reason given)")
    if not _finite_positive(result.get("val_loss")):
        return FAILED, "the trial finished without reporting a finite val_loss"
    return FINISHED, ""


def error_reason(trial) -> str:
    """One line saying why a trial failed, from the error files Tune just wrote."""
    for read in (_pickled_error_line, _error_file_line):
        try:
            line = read(trial)
        except Exception:  # an unreadable error file must still leave a reason
            line = None
        if line:
            return line[:MAX_REASON_CHARS]
    return "trial errored (no error recorded)"


# At on_trial_error the error files exist only in the driver's staging directory
# (trial.local_path); they reach storage_path later, so trial.get_pickled_error(),
# which reads storage, finds nothing yet.


def _pickled_error_line(trial) -> str | None:
    path = trial.pickled_error_file
    if not path or not os.path.exists(path):
        return None
    with open(path, "rb") as handle:
        error = ray.cloudpickle.load(handle)
    cause = getattr(error, "cause", None) or error  # RayTaskError wraps the trainable's error
    return _first_line(f"{type(cause).__name__}: {cause}")


def _error_file_line(trial) -> str | None:
    path = trial.error_file
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    return lines[-1] if lines else None  # a traceback ends with the exception's line


def _first_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else None


# -- the live analysis actor's feed ------------------------------------------------------


class AnalysisCallback(tune.Callback):
    """Feeds a sweep's results to the analysis actor ``actor_name`` in ``namespace``.

    Tune pickles callbacks into ``tuner.pkl``, so only the two names are pickled;
    the handle is looked up in :meth:`setup` (the actor must exist by then: create it
    with :func:`~gzipscale.analysis.actor.get_or_create_analysis_actor` before
    ``Tuner.fit()``).  Sends are
    fire-and-forget; their refs are kept only to log rejected rows and to wait, at
    the end of the experiment, until every send has reached the actor.

    Keys read are those of :func:`trial_row`.  A result without a finite
    ``val_loss`` is skipped; a trial that completes without one is reported failed.
    """

    def __init__(self, actor_name: str, namespace: str):
        self.actor_name = actor_name
        self.namespace = namespace
        self._actor = None
        self._pending: list = []
        self._warned: set[str] = set()

    def __getstate__(self) -> dict:
        return {"actor_name": self.actor_name, "namespace": self.namespace}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["actor_name"], state["namespace"])

    def setup(self, **info) -> None:
        self._handle()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if not _finite_positive(result.get("val_loss")):
            return  # an intermediate report without a loss: nothing to record
        row = self._row(trial, result, FINISHED, "")
        if row is not None:
            self._send("add_result", row)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result
        status, reason = completed_status(result)
        if status == FINISHED:
            row = self._row(trial, result, FINISHED, "")
        else:
            row = self._row(trial, {**result, "val_loss": math.nan}, FAILED, reason)
        if row is not None:
            self._send("run_finished", trial.trial_id, row)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        result = dict(trial.last_result)
        if not _finite_positive(result.get("val_loss")):
            result["val_loss"] = math.nan
        row = self._row(trial, result, FAILED, error_reason(trial))
        if row is not None:
            self._send("run_finished", trial.trial_id, row)

    def on_experiment_end(self, trials, **info) -> None:
        if self._pending:
            ray.wait(self._pending, num_returns=len(self._pending), timeout=FLUSH_TIMEOUT_S)
        self._reap()

    def _handle(self):
        if self._actor is None:
            try:
                self._actor = ray.get_actor(self.actor_name, namespace=self.namespace)
            except ValueError as exc:
                raise ValueError(
                    f"no analysis actor {self.actor_name!r} in namespace {self.namespace!r}; "
                    "create it with get_or_create_analysis_actor() before Tuner.fit()"
                ) from exc
        return self._actor

    def _row(self, trial, result: Mapping, status: str, reason: str) -> ResultRow | None:
        # A bad config must not stop the sweep: warn once per trial and send nothing.
        try:
            return trial_row(trial.trial_id, trial.config, result, status, reason)
        except ResultRowError as exc:
            if trial.trial_id not in self._warned:
                self._warned.add(trial.trial_id)
                logger.warning("analysis: no row for trial %s: %s", trial.trial_id, exc)
            return None

    def _send(self, method: str, *args) -> None:
        self._pending.append(getattr(self._handle(), method).remote(*args))
        self._reap()

    def _reap(self) -> None:
        """Drop finished sends, logging any the actor rejected."""
        if not self._pending:
            return
        done, self._pending = ray.wait(self._pending, num_returns=len(self._pending), timeout=0)
        for ref in done:
            try:
                ray.get(ref)
            except Exception as exc:  # the analysis must not stop the sweep
                logger.warning("analysis actor rejected a row: %s", exc)


# -- results.csv -------------------------------------------------------------------------


def read_rows(store: RunStore) -> dict[RunKey, ResultRow]:
    """results.csv's rows by run (validated as they are read), or {} before the first."""
    if not store.exists(RESULTS_FILE):
        return {}
    if store.local:
        rows = read_results_csv(store.local_path(RESULTS_FILE))
    else:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / RESULTS_FILE
            path.write_text(store.read_text(RESULTS_FILE))
            rows = read_results_csv(path)
    return {r.key: r for r in rows}


def write_rows(store: RunStore, rows: Iterable[ResultRow]) -> None:
    ordered = sorted(rows, key=lambda r: (r.dataset, r.params, r.tokens, r.shape))
    if store.local:
        write_results_csv(ordered, store.local_path(RESULTS_FILE))
        return
    with tempfile.TemporaryDirectory() as d:
        path = write_results_csv(ordered, Path(d) / RESULTS_FILE)
        store.write_text(RESULTS_FILE, path.read_text())


def upsert_row(store: RunStore, row: ResultRow) -> None:
    """Put ``row`` in results.csv, replacing the same run's row (never a second copy).

    A finished row is never replaced: a run that Tune reports again after a restore
    (its experiment state was older than its end) keeps the row it first finished with,
    and a replayed failure must not hide a result.
    """
    rows = read_rows(store)
    old = rows.get(row.key)
    if old is not None and old.finished:
        return
    rows[row.key] = row
    write_rows(store, rows.values())


def result_row(trial_id: str, config: Mapping, result: Mapping, error: str | None) -> ResultRow:
    """The row of a trial that ended: ``error`` says why it errored (None: it returned)."""
    if error is not None:
        return trial_row(trial_id, config, {**result, "val_loss": math.nan}, FAILED, error)
    status, reason = completed_status(result)
    if status == FAILED:
        result = {**result, "val_loss": math.nan}
    return trial_row(trial_id, config, result, status, reason)


class ResultsTable(tune.Callback):
    """Writes one results.csv row per run as it finishes or fails for good."""

    def __init__(self, run_location: str):
        self.run_location = run_location

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(trial, error_reason(trial))

    def _record(self, trial, error: str | None) -> None:
        row = result_row(trial.trial_id, trial.config, trial.last_result or {}, error)
        upsert_row(RunStore(self.run_location), row)


def _describe(trial) -> str:
    run = trial.config.get("run", {})
    return f"{run.get('dataset', '?')} {run.get('shape', '?')} D={run.get('tokens', '?')}"


class EventLog(tune.Callback):
    """One line per event in RUN_DIR/events.log, which the live display and ``watch``
    read; printed directly when the run directory is remote (no file to append to)."""

    def __init__(self, run_location: str):
        self.run_location = run_location

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._log("started", trial, "")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        status, reason = completed_status(trial.last_result or {})
        if status == FINISHED:
            self._log("finished", trial, f"val_loss {trial.last_result['val_loss']:.4f}")
        else:
            self._log("failed", trial, reason)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._log("retrying", trial, error_reason(trial))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._log("failed", trial, error_reason(trial))

    def _log(self, event: str, trial, detail: str) -> None:
        line = f"{event:8s} {_describe(trial)}" + (f": {detail}" if detail else "")
        if not append_event(self.run_location, line):
            print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stdout, flush=True)


def append_event(run_location: str, line: str) -> bool:
    """One timestamped line in RUN_DIR/events.log; False if the run directory is remote
    (an object store cannot append; ``watch`` then reads the live analysis actor)."""
    store = RunStore(run_location)
    if not store.local:
        return False
    path = store.local_path(EVENTS_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
    return True
