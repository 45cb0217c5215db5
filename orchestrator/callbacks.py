"""Tune callbacks of a sweep: the results table and the event log.

Both run in the Tune driver and are pickled into ``tuner.pkl``, so they hold only
strings and rebuild everything else when used.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from ray import tune

from gzipscale.analysis.actor import completed_status, error_reason, trial_row
from gzipscale.analysis.results import ResultRow, read_results_csv, write_results_csv
from gzipscale.vocabulary import EVENTS_FILE, FAILED, FINISHED, RESULTS_FILE

from .storage import RunStore


def row_key(row: Mapping) -> tuple:
    """A run's identity in results.csv: one row per (dataset, shape, tokens)."""
    return (row["dataset"], row["shape"], int(row["tokens"]))


def read_rows(store: RunStore) -> dict[tuple, dict]:
    if not store.exists(RESULTS_FILE):
        return {}
    if store.local:
        rows = read_results_csv(store.local_path(RESULTS_FILE))
    else:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / RESULTS_FILE
            path.write_text(store.read_text(RESULTS_FILE))
            rows = read_results_csv(path)
    return {row_key(r.to_dict()): r.to_dict() for r in rows}


def write_rows(store: RunStore, rows: Iterable[dict]) -> None:
    ordered = sorted(rows, key=lambda r: (r["dataset"], r["params"], r["tokens"], r["shape"]))
    if store.local:
        write_results_csv(ordered, store.local_path(RESULTS_FILE))
        return
    with tempfile.TemporaryDirectory() as d:
        path = write_results_csv(ordered, Path(d) / RESULTS_FILE)
        store.write_text(RESULTS_FILE, path.read_text())


def upsert_row(store: RunStore, row: dict) -> None:
    """Put ``row`` in results.csv, replacing the same run's row (never a second copy).

    A finished row is never replaced: a run that Tune reports again after a restore
    (its experiment state was older than its end) keeps the row it first finished with,
    and a replayed failure must not hide a result.
    """
    rows = read_rows(store)
    key = row_key(row)
    old = rows.get(key)
    if old is not None and old["status"] == FINISHED:
        return
    rows[key] = ResultRow.from_dict(row).to_dict()
    write_rows(store, rows.values())


def result_row(trial_id: str, config: Mapping, result: Mapping, error: str | None) -> dict:
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
