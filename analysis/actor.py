"""Live analysis during a sweep: a Ray actor that refits the law as runs finish.

A sweep creates one :class:`AnalysisActor` (named, detached, ``num_cpus=0``, in an
explicit namespace) with :func:`get_or_create_analysis_actor`, and hands Tune an
:class:`AnalysisCallback` that knows only the actor's name and namespace.  The callback
runs in the Tune driver and sends every reported result (``add_result``) and every
run's end (``run_finished``) fire-and-forget; the actor refits the finished runs of
that dataset in a background thread and keeps a JSON-ready :meth:`~AnalysisActor.snapshot`
that any driver in the namespace can read while the sweep runs.

Rows are keyed by ``(trial_id, step)``: a retried or restored trial replays results
after its last checkpoint (ray-notes pitfall 15), and a repeated key replaces the row,
so nothing is counted twice.  One point per run enters a fit: the row that
``run_finished`` carried (the run's final ``val_loss``).  Failed runs are kept, with
their reason, and left out of the fits.

The actor is threaded, so Ray may run its calls concurrently and out of order
(``allow_out_of_order_execution`` is forced on for ``max_concurrency > 1``).  Hence
the rules do not depend on call order: ``add_result`` never changes a run's status,
and ``run_finished`` carries the run's final row itself.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import ray
import ray.cloudpickle
from ray import tune

from gzipscale.analysis.commands import DEFAULT_BUDGET, DEFAULT_SEED, LAW_KEYS, fit_datasets
from gzipscale.analysis.fit import UnderdeterminedFit
from gzipscale.analysis.regression import MIN_DATASETS, fit_gzip_regression
from gzipscale.analysis.results import ResultRow, ResultRowError
from gzipscale.analysis.table import dataset_gzip
from gzipscale.helpers import json_safe
from gzipscale.vocabulary import FAILED, FINISHED, RUNNING

logger = logging.getLogger(__name__)

# Live refits run after every burst of completions: keep the bootstrap small
# (``gzipscale fit`` uses 200 for the final numbers).
DEFAULT_BOOTSTRAP = 50
# How long the refit thread waits after a completion before reading the rows, so a
# burst of completions becomes one refit.
DEFAULT_SETTLE_S = 0.2
# Threads for the actor's methods: a blocked wait_for_idle must not stall the callback.
MAX_CONCURRENCY = 8

# Keys the callback reads.  From trial.config: the run's identity (ResultRow fields).
CONFIG_KEYS = (
    "dataset",
    "grammar",
    "seed",
    "gzip",
    "shape",
    "params",
    "non_embedding_params",
    "tokens",
)
# Used when trial.config lacks them; dataset, gzip, params and tokens are required.
CONFIG_DEFAULTS = {"grammar": "", "seed": 0, "shape": "unknown", "non_embedding_params": 0}
# How long on_experiment_end waits for the last sends to reach the actor.
FLUSH_TIMEOUT_S = 30.0
MAX_REASON_CHARS = 500


# -- rows ------------------------------------------------------------------------------


def _validated(row: Mapping, status: str, reason: str) -> dict:
    """``row`` checked as a ResultRow with the given status, as plain values."""
    clean = ResultRow.from_dict({**row, "status": status, "reason": reason}).to_dict()
    if not clean["trial_id"]:
        raise ResultRowError("trial_id", "the analysis actor keys rows by trial_id; it is empty")
    return clean


def _key(row: Mapping) -> tuple[str, int]:
    return row["trial_id"], row["step"]


@dataclass
class _Run:
    """One trial as the actor knows it; ``final`` is the row ``run_finished`` sent."""

    dataset: str
    status: str = RUNNING
    reason: str = ""
    final: dict | None = None


def _points(name: str, runs: list[_Run]) -> pd.DataFrame:
    """A dataset's finished runs as :func:`analysis.table.load_points` returns them."""
    finals = [r.final for r in runs if r.status == FINISHED]
    frame = pd.DataFrame(
        {
            "dataset": pd.Series([name] * len(finals), dtype=object),
            "params": [float(f["params"]) for f in finals],
            "tokens": [float(f["tokens"]) for f in finals],
            "loss": [f["val_loss"] for f in finals],
            "gzip": [f["gzip"] for f in finals],
        }
    )
    failed = sum(r.status == FAILED for r in runs)
    frame.attrs["excluded"] = {name: {FAILED: failed}} if failed else {}
    return frame


# -- one dataset's fit -----------------------------------------------------------------


def _empty_entry(status: str, reason: str | None = None) -> dict:
    return {
        "status": status,
        "reason": reason,
        "fit": None,
        "intervals": None,
        "frontier": None,
        "n_points": 0,
        "gzip": None,
        "warnings": [],
        "fit_version": 0,
    }


def _fit_entry(name: str, points: pd.DataFrame, settings: Mapping) -> dict:
    """Fit one dataset with the same code as ``gzipscale fit``; a skip records why."""
    result = fit_datasets(
        points, bootstrap=settings["bootstrap"], seed=settings["seed"], budget=settings["budget"]
    )
    if name not in result["datasets"]:
        entry = _empty_entry("skipped", result["skipped"].get(name, "no finished runs"))
        entry["n_points"] = len(points)
        entry["gzip"] = dataset_gzip(points, name)[0] if len(points) else None
        return entry
    fitted = result["datasets"][name]
    entry = _empty_entry("fitted")
    entry.update(
        fit={k: fitted[k] for k in LAW_KEYS},
        intervals=fitted["ci"],
        frontier=fitted["frontier"],
        n_points=fitted["n_points"],
        gzip=fitted["gzip"],
        warnings=fitted["warnings"],
    )
    return entry


def _regression(fitted: dict[str, dict]) -> tuple[dict | None, str | None]:
    """Each law parameter regressed on gzip H across datasets, or why not."""
    with_h = {n: e for n, e in fitted.items() if e["gzip"] is not None}
    if len(with_h) < MIN_DATASETS:
        return None, (
            f"the regression on H needs {MIN_DATASETS} fitted datasets with gzip H, "
            f"have {len(with_h)}"
        )
    names = sorted(with_h)
    try:
        reg = fit_gzip_regression(
            [with_h[n]["fit"] for n in names], [with_h[n]["gzip"] for n in names], names=names
        )
    except (UnderdeterminedFit, ValueError) as exc:
        return None, f"no regression on H: {exc}"
    return reg.to_dict(), None


# -- the actor -------------------------------------------------------------------------


@ray.remote(num_cpus=0, max_concurrency=MAX_CONCURRENCY)
class AnalysisActor:
    """Collects a sweep's rows and keeps per-dataset fits current (see module docstring).

    One background thread refits, one dataset at a time: at most one refit is in
    flight per dataset, and completions that arrive during a refit mark the dataset
    for exactly one more.  A single thread also keeps the actor, which reserves no
    CPU, from competing with the trials for more than one core.  All state is guarded
    by ``self._cond``'s lock; fits run outside it.
    """

    def __init__(
        self,
        bootstrap: int = DEFAULT_BOOTSTRAP,
        seed: int = DEFAULT_SEED,
        budget: float = DEFAULT_BUDGET,
        settle_s: float = DEFAULT_SETTLE_S,
    ):
        if bootstrap < 0 or settle_s < 0 or not budget > 0:
            raise ValueError(
                f"need bootstrap >= 0, settle_s >= 0, budget > 0; got {bootstrap}, "
                f"{settle_s}, {budget}"
            )
        self._settings = {"bootstrap": int(bootstrap), "seed": int(seed), "budget": float(budget)}
        self._settle_s = float(settle_s)
        self._cond = threading.Condition()
        self._rows: dict[tuple[str, int], dict] = {}
        self._runs: dict[str, _Run] = {}
        self._datasets: dict[str, dict] = {}
        self._dirty: dict[str, None] = {}  # insertion-ordered set of datasets to refit
        self._in_flight: str | None = None
        self._refits: dict[str, int] = {}
        self._regression: dict | None = None
        self._regression_note: str | None = None
        self._regression_refits = 0
        self._version = 0
        threading.Thread(target=self._refit_loop, name="analysis-refit", daemon=True).start()

    # -- writes ------------------------------------------------------------------------

    def add_result(self, row: dict) -> None:
        """Record one reported result; ``(trial_id, step)`` replaces an earlier copy.

        The row needs a finite ``val_loss > 0`` (a finished row's checks); its
        ``status``/``reason`` are ignored: only :meth:`run_finished` ends a run.
        """
        clean = _validated(row, FINISHED, "")
        with self._cond:
            self._rows[_key(clean)] = clean
            self._runs.setdefault(clean["trial_id"], _Run(clean["dataset"]))
            self._datasets.setdefault(clean["dataset"], _empty_entry("waiting"))
            self._version += 1

    def run_finished(self, trial_id: str, row: dict) -> None:
        """Mark a run final with its last row (``status`` finished or failed, + reason).

        Triggers a refit of the run's dataset.  A later call for the same run replaces
        the earlier one (a failed trial resumed with ``resume_errored`` ends again).
        """
        status = row.get("status") or FINISHED
        clean = _validated({**row, "trial_id": trial_id}, status, row.get("reason") or "")
        with self._cond:
            self._rows[_key(clean)] = clean
            old = self._runs.get(trial_id)
            self._runs[trial_id] = _Run(clean["dataset"], status, clean["reason"], clean)
            for name in {clean["dataset"], old.dataset if old else clean["dataset"]}:
                self._datasets.setdefault(name, _empty_entry("waiting"))
                self._dirty[name] = None
            self._version += 1
            self._cond.notify_all()

    # -- reads -------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Everything known now, JSON-serialisable (NaN becomes None).

        - ``version``: increases with every change (row, run end, refit).
        - ``rows``: one per ``(trial_id, step)``, ResultRow fields; ``status`` is the
          run's (``running`` until it ends, a state ResultRow itself does not know).
        - ``final_rows``: one ResultRow per ended run, the row its fit point comes from.
        - ``datasets``: name -> ``status`` (waiting/fitted/skipped/error), ``reason``,
          ``fit`` (E, A, B, alpha, beta), ``intervals`` (bootstrap, incl. ``a``/``b``),
          ``frontier`` (``a`` = beta/(alpha+beta), ``b``, ``tokens_per_parameter``,
          N_opt, D_opt at ``budget``), ``n_points``, ``gzip``, ``warnings``,
          ``fit_version``, ``refit_pending``, ``runs`` (counts).
        - ``regression`` (GzipRegression.to_dict() or None) and ``regression_note``.
        - ``counts``: runs reported / running / finished / failed; ``settings``.
        """
        with self._cond:
            out = {
                "version": self._version,
                "rows": [self._row_view(row) for _, row in sorted(self._rows.items())],
                "final_rows": [
                    dict(run.final)
                    for _, run in sorted(self._runs.items())
                    if run.final is not None
                ],
                "datasets": {n: self._dataset_view(n) for n in sorted(self._datasets)},
                "regression": self._regression,
                "regression_note": self._regression_note,
                "counts": self._counts(),
                "settings": dict(self._settings),
            }
        return json_safe(out)

    def stats(self) -> dict:
        """Refit counters (per dataset and for the regression) and what is in flight."""
        with self._cond:
            return {
                "refits": dict(self._refits),
                "regression_refits": self._regression_refits,
                "in_flight": self._in_flight,
                "pending": list(self._dirty),
                "rows": len(self._rows),
                "version": self._version,
            }

    def wait_for_idle(self, timeout: float = 60.0) -> bool:
        """Block until no refit is running or pending; False if ``timeout`` ran out.

        Waits ``settle_s`` first: calls sent just before this one may still be starting
        on another of the actor's threads.
        """
        deadline = time.monotonic() + timeout
        time.sleep(min(self._settle_s, timeout))
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._dirty and self._in_flight is None,
                timeout=max(0.0, deadline - time.monotonic()),
            )

    def _row_view(self, row: dict) -> dict:
        # A row shows its run's current status, so rows of a failed run carry the reason.
        run = self._runs[row["trial_id"]]
        return {**row, "status": run.status, "reason": run.reason}

    def _dataset_view(self, name: str) -> dict:
        runs = [r for r in self._runs.values() if r.dataset == name]
        return {
            **self._datasets[name],
            "refit_pending": name in self._dirty or name == self._in_flight,
            "runs": _run_counts(runs),
        }

    def _counts(self) -> dict:
        return _run_counts(list(self._runs.values()))

    # -- the refit thread --------------------------------------------------------------

    def _refit_loop(self) -> None:
        while True:
            name, points = self._take_dirty()
            try:
                entry = _fit_entry(name, points, self._settings)
            except Exception as exc:  # a dead refit thread would hang wait_for_idle
                logger.exception("refit of dataset %r failed", name)
                entry = _empty_entry("error", f"{type(exc).__name__}: {exc}")
            self._store_fit(name, entry)
            self._refit_regression()

    def _take_dirty(self) -> tuple[str, pd.DataFrame]:
        with self._cond:
            self._cond.wait_for(lambda: self._dirty)
        time.sleep(self._settle_s)  # let the rest of a burst land: one refit for all of it
        with self._cond:
            name = next(iter(self._dirty))
            del self._dirty[name]
            self._in_flight = name
            runs = [r for r in self._runs.values() if r.dataset == name and r.final is not None]
            return name, _points(name, runs)

    def _store_fit(self, name: str, entry: dict) -> None:
        with self._cond:
            self._refits[name] = self._refits.get(name, 0) + 1
            entry["fit_version"] = self._refits[name]
            self._datasets[name] = entry
            self._version += 1

    def _refit_regression(self) -> None:
        with self._cond:
            fitted = {n: e for n, e in self._datasets.items() if e["status"] == "fitted"}
        regression, note = _regression(fitted)
        with self._cond:
            self._regression, self._regression_note = regression, note
            self._regression_refits += regression is not None
            self._in_flight = None  # only now: the regression belongs to this refit
            self._version += 1
            self._cond.notify_all()


def _run_counts(runs: list[_Run]) -> dict:
    finished = sum(r.status == FINISHED for r in runs)
    failed = sum(r.status == FAILED for r in runs)
    return {
        "reported": len(runs),
        "running": len(runs) - finished - failed,
        "finished": finished,
        "failed": failed,
    }


def get_or_create_analysis_actor(
    name: str,
    namespace: str,
    *,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    budget: float = DEFAULT_BUDGET,
    settle_s: float = DEFAULT_SETTLE_S,
    **options,
):
    """The detached actor ``name`` in ``namespace``, created if it does not exist.

    The settings apply only on creation; an existing actor keeps its own.  Extra
    ``options`` go to ``.options()`` (e.g. ``resources={"head": 0.001}`` to pin the
    actor to the head node, ray-notes 1.6).
    """
    if not name or not namespace:
        raise ValueError(f"need a name and an explicit namespace, got {name!r}, {namespace!r}")
    return AnalysisActor.options(
        name=name, namespace=namespace, lifetime="detached", get_if_exists=True, **options
    ).remote(bootstrap=bootstrap, seed=seed, budget=budget, settle_s=settle_s)


# -- the Tune callback -----------------------------------------------------------------


def _finite_positive(value) -> bool:
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


def trial_row(
    trial_id: str, config: Mapping, result: Mapping, status: str = FINISHED, reason: str = ""
) -> dict:
    """A ResultRow dict from a trial's config and one reported result (validated).

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
    return ResultRow.from_dict(row).to_dict()


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


class AnalysisCallback(tune.Callback):
    """Feeds a sweep's results to the analysis actor ``actor_name`` in ``namespace``.

    Tune pickles callbacks into ``tuner.pkl``, so only the two names are pickled;
    the handle is looked up in :meth:`setup` (the actor must exist by then: create it
    with :func:`get_or_create_analysis_actor` before ``Tuner.fit()``).  Sends are
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

    def _row(self, trial, result: Mapping, status: str, reason: str) -> dict | None:
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
