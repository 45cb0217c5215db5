"""Tune callbacks of a sweep: the results table, the event log and the feed of the live
analysis actor.

All three run in the Tune driver and are pickled into ``tuner.pkl``, so they hold only
strings and rebuild everything else when used.  A trial's result becomes a
:class:`~gzipscale.analysis.results.ResultRow` once, in :func:`trial_row` (its checks
are the row's way in); the table and the actor receive that row and do not check it
again, and results.csv is validated once more when it is read back.

Rows are keyed by run (:class:`~gzipscale.vocabulary.RunKey`: dataset, shape, data
size). A trial produces the rows of its sizes (:func:`trial_sizes`): one for an
independent run, every size of the grid for a nested-data trial (``run["eval_at"]``).
A report that carries ``row_tokens`` and a finite ``val_loss`` is that size's row
(:func:`reported_row`); it reaches results.csv, the actor and the event log the moment it
arrives. The first report of a run wins: a trial resumed from an older checkpoint, or a
driver restored from an older experiment state, may report a row again, and the copy
changes nothing. When a trial ends, every size it never reported gets a failed row
(:func:`ended_rows`): its failure's reason, or ``unreported_tokens``.
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

from gzipscale.analysis.positions import positions_name, positions_record
from gzipscale.analysis.results import (
    ResultRow,
    ResultRowError,
    read_results_csv,
    write_results_csv,
)
from gzipscale.helpers import InputError
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
    trial_id: str,
    config: Mapping,
    result: Mapping,
    status: str = FINISHED,
    reason: str = "",
    tokens: int | None = None,
) -> ResultRow:
    """The ResultRow of a trial's config and one reported result (validated here).

    Reads :data:`CONFIG_KEYS` from ``config`` or, for a sweep's trials, from
    ``config["run"]`` (defaults: :data:`CONFIG_DEFAULTS`)
    and from ``result``: ``val_loss`` (NaN if absent; only a failed row may lack it),
    ``step`` (else ``training_iteration``), ``wall_s`` (else Tune's
    ``time_total_s``), ``tokens_per_s`` (else 0) and ``schedule`` (else the run's or the
    training config's). The row's data size is ``tokens``, else the result's
    ``row_tokens`` (a nested trial's row), else the config's.

    Raises
    ------
    ResultRowError
        A required key is missing or a value is invalid (names the field).
    """
    train = config.get("train") if isinstance(config.get("train"), Mapping) else {}
    config = config.get("run", config)  # a sweep's trials nest the run under "run"
    row = {k: config[k] for k in CONFIG_KEYS if k in config}
    for key, default in CONFIG_DEFAULTS.items():
        row.setdefault(key, default)
    if tokens is None:
        tokens = result.get("row_tokens")
    if tokens is not None:
        row["tokens"] = tokens
    row.update(
        trial_id=trial_id,
        val_loss=result.get("val_loss", math.nan),
        step=result.get("step", result.get("training_iteration", 0)),
        wall_s=result.get("wall_s", result.get("time_total_s", 0.0)),
        tokens_per_s=result.get("tokens_per_s", 0.0),
        schedule=result.get("schedule") or config.get("schedule") or train.get("schedule", ""),
        status=status,
        reason=reason,
    )
    return ResultRow.from_dict(row)


def trial_sizes(config: Mapping) -> list[int]:
    """The data sizes whose rows a trial produces, smallest first: a nested-data trial's
    ``eval_at`` and its own ``tokens``; an independent run's ``tokens``."""
    run = config.get("run", config)
    return sorted({*(int(d) for d in run.get("eval_at") or ()), int(run["tokens"])})


def is_nested(config: Mapping) -> bool:
    return bool(config.get("run", config).get("eval_at"))


def row_keys(config: Mapping) -> list[RunKey]:
    """The results rows (run keys) a trial produces."""
    run = config.get("run", config)
    return [RunKey(str(run["dataset"]), str(run["shape"]), d) for d in trial_sizes(run)]


def reported_row(trial_id: str, config: Mapping, result: Mapping) -> ResultRow | None:
    """The row a report carries: one with ``row_tokens`` (a size of this trial) and a
    finite ``val_loss``; None for progress reports and failures."""
    size = result.get("row_tokens")
    if size is None or not _finite_positive(result.get("val_loss")):
        return None
    if int(size) not in trial_sizes(config):
        return None
    return trial_row(trial_id, config, result, FINISHED, "", int(size))


def ended_rows(
    trial_id: str, config: Mapping, result: Mapping, error: str | None
) -> list[ResultRow]:
    """One row per size of a trial that ended (``error`` says why it errored; None: it
    returned), from its last result.

    A size the trial reported (the final report holds every row in ``rows``) is
    finished; any other failed, with the trial's error, the run's own failure (its
    ``status``/``reason``: diverged, too big for the device) or ``unreported_tokens``.
    """
    reported: dict[int, Mapping] = {}
    listed = result.get("rows") or {}
    for record in listed.values() if isinstance(listed, Mapping) else listed:
        if isinstance(record, Mapping) and _finite_positive(record.get("val_loss")):
            reported[int(record["row_tokens"])] = record
    if result.get("row_tokens") is not None and _finite_positive(result.get("val_loss")):
        reported.setdefault(int(result["row_tokens"]), {})
    if result.get("row_tokens") is None and error is None and not is_nested(config):
        # A run without row reports (an older trainer): its last result is its one row.
        status, reason = completed_status(result)
        if status == FINISHED:
            reported[trial_sizes(config)[-1]] = {}
    rows = []
    for size in trial_sizes(config):
        if size in reported:
            record = {**result, **reported[size]}
            rows.append(trial_row(trial_id, config, record, FINISHED, "", size))
            continue
        if error is not None:
            reason = error
        elif result.get("status") == FAILED:
            reason = str(result.get("reason") or "the run failed (no reason given)")
        else:
            reason = (
                f"unreported_tokens: the trial ended without reporting the row of {size:,} tokens"
            )
        failed = {**result, "val_loss": math.nan}
        rows.append(trial_row(trial_id, config, failed, FAILED, reason, size))
    return rows


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

    A nested-data trial (``config["run"]["eval_at"]``) makes one run per data size: each
    row report reaches the actor at once as a run of its own, ended (``run_finished``),
    under the id ``TRIAL_ID@TOKENS`` (the actor keys runs by trial id), and the sizes the
    trial never reported end failed when it ends. The first report of a run wins: with
    ``run_location`` (the sweep's run directory) a run that results.csv already holds
    as finished is not sent again, nor turned failed, after a driver restart.
    """

    def __init__(self, actor_name: str, namespace: str, run_location: str | None = None):
        self.actor_name = actor_name
        self.namespace = namespace
        self.run_location = run_location
        self._actor = None
        self._pending: list = []
        self._warned: set[str] = set()
        self._sent: set[RunKey] = set()

    def __getstate__(self) -> dict:
        return {
            "actor_name": self.actor_name,
            "namespace": self.namespace,
            "run_location": self.run_location,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["actor_name"], state["namespace"], state.get("run_location"))

    def setup(self, **info) -> None:
        self._handle()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if not _finite_positive(result.get("val_loss")):
            return  # an intermediate report without a loss: nothing to record
        if self._nested(trial):
            row = self._guard(trial, lambda: reported_row(trial.trial_id, trial.config, result))
            if row is not None and row.key not in self._recorded():
                self._finish_row(trial, row)
            return
        row = self._row(trial, result, FINISHED, "")
        if row is not None:
            self._send("add_result", row)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result
        if self._nested(trial):
            self._end_rows(trial, None)
            return
        status, reason = completed_status(result)
        if status == FINISHED:
            row = self._row(trial, result, FINISHED, "")
        else:
            row = self._row(trial, {**result, "val_loss": math.nan}, FAILED, reason)
        if row is not None:
            self._send("run_finished", trial.trial_id, row)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if self._nested(trial):
            self._end_rows(trial, error_reason(trial))
            return
        result = dict(trial.last_result)
        if not _finite_positive(result.get("val_loss")):
            result["val_loss"] = math.nan
        row = self._row(trial, result, FAILED, error_reason(trial))
        if row is not None:
            self._send("run_finished", trial.trial_id, row)

    # -- nested-data trials: one run per data size ---------------------------------------

    @staticmethod
    def _nested(trial) -> bool:
        config = trial.config
        return isinstance(config, Mapping) and "run" in config and is_nested(config)

    def _recorded(self) -> set[RunKey]:
        """Runs already sent, or finished in results.csv (the first report won)."""
        done = set(self._sent)
        if self.run_location is not None:
            try:
                done |= {k for k, r in read_rows(RunStore(self.run_location)).items() if r.finished}
            except Exception as exc:  # an unreadable table must not stop the feed
                logger.warning("analysis: cannot read results.csv: %s", exc)
        return done

    def _end_rows(self, trial, error: str | None) -> None:
        recorded = self._recorded()
        rows = self._guard(
            trial, lambda: ended_rows(trial.trial_id, trial.config, trial.last_result, error)
        )
        for row in rows or ():
            if row.key not in recorded:
                self._finish_row(trial, row)

    def _finish_row(self, trial, row: ResultRow) -> None:
        run_id = f"{trial.trial_id}@{row.tokens}"
        self._sent.add(row.key)
        self._send("run_finished", run_id, row.replace(trial_id=run_id))

    def _guard(self, trial, make):
        try:
            return make()
        except ResultRowError as exc:
            if trial.trial_id not in self._warned:
                self._warned.add(trial.trial_id)
                logger.warning("analysis: no row for trial %s: %s", trial.trial_id, exc)
            return None

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


def upsert_rows(store: RunStore, rows: Iterable[ResultRow]) -> list[ResultRow]:
    """:func:`upsert_row` for several rows in one write; returns the rows it recorded."""
    have = read_rows(store)
    recorded = []
    for row in rows:
        old = have.get(row.key)
        if old is not None and old.finished:
            continue
        have[row.key] = row
        recorded.append(row)
    if recorded:
        write_rows(store, have.values())
    return recorded


class ResultsTable(tune.Callback):
    """Writes one results.csv row per run: as its row is reported (a nested-data trial
    reports one per data size, on the way), and for every size not reported when its
    trial finishes or fails for good."""

    def __init__(self, run_location: str):
        self.run_location = run_location

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        row = reported_row(trial.trial_id, trial.config, result)
        if row is not None:
            store = RunStore(self.run_location)
            upsert_row(store, row)
            curve = result.get("position_loss")
            if row.finished and isinstance(curve, Mapping) and "mean" in curve:
                # Where in its context the run falls short: drawn against the floor.
                name = positions_name(row.dataset, row.shape, row.tokens)
                store.write_text(name, positions_record(row, curve))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(trial, error_reason(trial))

    def _record(self, trial, error: str | None) -> None:
        rows = ended_rows(trial.trial_id, trial.config, trial.last_result or {}, error)
        upsert_rows(RunStore(self.run_location), rows)


def _describe(trial, tokens=None) -> str:
    run = trial.config.get("run", {})
    tokens = run.get("tokens", "?") if tokens is None else tokens
    return f"{run.get('dataset', '?')} {run.get('shape', '?')} D={tokens}"


class EventLog(tune.Callback):
    """One line per event in RUN_DIR/events.log, which the live display and ``watch``
    read; printed directly when the run directory is remote (no file to append to).

    A nested-data trial's line names its largest size (``D=``), with every size it
    trains in the detail of ``started``; each of its rows gets a ``finished`` line as
    it is reported, and each size it never reported a ``failed`` line when it ends.
    """

    def __init__(self, run_location: str):
        self.run_location = run_location
        self._logged: set[RunKey] = set()

    def __getstate__(self) -> dict:
        return {"run_location": self.run_location}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["run_location"])

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        detail = ""
        if is_nested(trial.config):
            detail = "nested, sizes " + ",".join(str(d) for d in trial_sizes(trial.config))
        self._log("started", trial, detail)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if not is_nested(trial.config):
            return
        try:
            row = reported_row(trial.trial_id, trial.config, result)
        except ResultRowError:
            return
        if row is not None and row.key not in self._logged:
            self._logged.add(row.key)
            self._log("finished", trial, f"val_loss {row.val_loss:.4f}", row.tokens)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if is_nested(trial.config):
            self._log_ended(trial, None)
            return
        status, reason = completed_status(trial.last_result or {})
        if status == FINISHED:
            self._log("finished", trial, f"val_loss {trial.last_result['val_loss']:.4f}")
        else:
            self._log("failed", trial, reason)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._log("retrying", trial, error_reason(trial))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if is_nested(trial.config):
            self._log_ended(trial, error_reason(trial))
            return
        self._log("failed", trial, error_reason(trial))

    def _log_ended(self, trial, error: str | None) -> None:
        try:
            rows = ended_rows(trial.trial_id, trial.config, trial.last_result or {}, error)
            table = (
                read_rows(RunStore(self.run_location)) if RunStore(self.run_location).local else {}
            )
        except (ResultRowError, InputError):
            rows, table = [], {}
        for row in rows:
            if row.key in self._logged:
                continue
            if not row.finished and row.key in table and table[row.key].finished:
                continue  # reported before the driver restarted: it stands
            self._logged.add(row.key)
            if row.finished:
                self._log("finished", trial, f"val_loss {row.val_loss:.4f}", row.tokens)
            else:
                self._log("failed", trial, row.reason, row.tokens)

    def _log(self, event: str, trial, detail: str, tokens: int | None = None) -> None:
        line = f"{event:8s} {_describe(trial, tokens)}" + (f": {detail}" if detail else "")
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
