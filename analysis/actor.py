"""Live analysis during a sweep: a Ray actor that refits the law as runs finish.

A sweep creates one :class:`AnalysisActor` (named, detached, ``num_cpus=0``, in an
explicit namespace) with :func:`get_or_create_analysis_actor`; the sweep's Tune callback
(``orchestrator/callbacks.py``) sends it every reported result (:meth:`add_result`) and
every run's end (:meth:`run_finished`) as a validated
:class:`~gzipscale.analysis.results.ResultRow`, fire-and-forget.  The actor refits the
finished runs of that dataset in a background thread, with the same code and the same
bootstrap policy as ``gzipscale fit``, and keeps a JSON-ready :meth:`snapshot` that any
driver in the namespace can read while the sweep runs.  The actor knows nothing of Tune.

Rows are keyed by ``(trial_id, step)``: a retried or restored trial replays its results
from its last checkpoint, and a repeated key replaces the row, so nothing is counted
twice.  One point per run enters a fit: the row that ``run_finished`` carried (the run's
final ``val_loss``).  Failed runs are kept, with their reason, and left out of the fits.

The actor is threaded, so Ray may run its calls concurrently and out of order
(``allow_out_of_order_execution`` is forced on for ``max_concurrency > 1``).  Hence
the rules do not depend on call order: ``add_result`` never changes a run's status,
and ``run_finished`` carries the run's final row itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import ray

from gzipscale.analysis.bootstrap import BootstrapPolicy
from gzipscale.analysis.fitreport import (
    DEFAULT_LAW_CHOICE,
    LAW_CHOICES,
    DatasetFit,
    FitReport,
    fit_datasets,
    regress_on_floor,
    regress_on_gzip,
)
from gzipscale.analysis.results import ResultRow, ResultRowError
from gzipscale.analysis.table import Points
from gzipscale.helpers import json_safe
from gzipscale.vocabulary import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    FAILED,
    FINISHED,
    REFERENCE_BUDGET,
    RUNNING,
)

logger = logging.getLogger(__name__)

# How long the refit thread waits after a completion before reading the rows, so a
# burst of completions becomes one refit.
DEFAULT_SETTLE_S = 0.2
# Threads for the actor's methods: a blocked wait_for_idle must not stall the callback.
MAX_CONCURRENCY = 8
# A dataset's state in the snapshot.
WAITING, FITTED, SKIPPED, ERROR = "waiting", "fitted", "skipped", "error"


# -- rows ------------------------------------------------------------------------------


def _checked(row: ResultRow | Mapping) -> ResultRow:
    """``row`` as a ResultRow: a mapping is validated here (its way in); a ResultRow was
    validated when it was made."""
    if not isinstance(row, ResultRow):
        row = ResultRow.from_dict(row)
    if not row.trial_id:
        raise ResultRowError("trial_id", "the analysis actor keys rows by trial_id; it is empty")
    return row


def _key(row: ResultRow) -> tuple[str, int]:
    return row.trial_id, row.step


@dataclass
class _Run:
    """One trial as the actor knows it; ``final`` is the row ``run_finished`` sent."""

    dataset: str
    status: str = RUNNING
    reason: str = ""
    final: ResultRow | None = None


@dataclass
class _DatasetState:
    status: str = WAITING
    reason: str | None = None
    fit: DatasetFit | None = None
    fit_version: int = 0
    comparison: DatasetFit | None = None  # the other kind of fit, where both were made
    comparison_reason: str | None = None


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
        bootstrap: int = BOOTSTRAP_RESAMPLES,
        seed: int = BOOTSTRAP_SEED,
        budget: float = REFERENCE_BUDGET,
        settle_s: float = DEFAULT_SETTLE_S,
        law_choice: str = DEFAULT_LAW_CHOICE,
    ):
        if bootstrap < 0 or settle_s < 0 or not budget > 0 or law_choice not in LAW_CHOICES:
            raise ValueError(
                f"need bootstrap >= 0, settle_s >= 0, budget > 0, law_choice in "
                f"{LAW_CHOICES}; got {bootstrap}, {settle_s}, {budget}, {law_choice!r}"
            )
        self._policy = BootstrapPolicy(resamples=int(bootstrap), seed=int(seed))
        self._law_choice = law_choice
        self._budget = float(budget)
        self._settle_s = float(settle_s)
        self._cond = threading.Condition()
        self._rows: dict[tuple[str, int], ResultRow] = {}
        self._runs: dict[str, _Run] = {}
        self._datasets: dict[str, _DatasetState] = {}
        self._dirty: dict[str, None] = {}  # insertion-ordered set of datasets to refit
        self._in_flight: str | None = None
        self._refits: dict[str, int] = {}
        self._regression = None
        self._regression_note: str | None = None
        self._floor_regression: tuple = (None, None)
        self._regression_refits = 0
        self._version = 0
        threading.Thread(target=self._refit_loop, name="analysis-refit", daemon=True).start()

    # -- writes ------------------------------------------------------------------------

    def add_result(self, row: ResultRow | Mapping) -> None:
        """Record one reported result; ``(trial_id, step)`` replaces an earlier copy.

        The row needs a finite ``val_loss > 0`` (a finished row's checks); a mapping's
        ``status``/``reason`` are ignored: only :meth:`run_finished` ends a run.
        """
        if isinstance(row, Mapping):
            row = {**row, "status": FINISHED, "reason": ""}
        clean = _checked(row)
        if clean.status != FINISHED:
            raise ResultRowError("status", f"a reported result is {FINISHED}, got {clean.status}")
        with self._cond:
            self._rows[_key(clean)] = clean
            self._runs.setdefault(clean.trial_id, _Run(clean.dataset))
            self._datasets.setdefault(clean.dataset, _DatasetState())
            self._version += 1

    def run_finished(self, trial_id: str, row: ResultRow | Mapping) -> None:
        """Mark a run final with its last row (``status`` finished or failed, + reason).

        Triggers a refit of the run's dataset.  A later call for the same run replaces
        the earlier one (a failed trial resumed with ``resume_errored`` ends again).
        """
        if isinstance(row, Mapping):
            status, reason = row.get("status") or FINISHED, row.get("reason") or ""
            row = {**row, "trial_id": trial_id, "status": status, "reason": reason}
        clean = _checked(row)
        with self._cond:
            self._rows[_key(clean)] = clean
            old = self._runs.get(trial_id)
            self._runs[trial_id] = _Run(clean.dataset, clean.status, clean.reason, clean)
            for name in {clean.dataset, old.dataset if old else clean.dataset}:
                self._datasets.setdefault(name, _DatasetState())
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
        - ``report``: the fits, a :meth:`FitReport.to_dict` (read it back with
          ``FitReport.from_dict``): every fitted dataset's law, intervals with the
          bootstrap policy that made them, frontier at the report's budget; the skipped
          ones with the reason; the regression on H or why there is none.
        - ``datasets``: name -> ``status`` (waiting/fitted/skipped/error), ``reason``,
          ``fit_version``, ``refit_pending`` and ``runs`` (counts).
        - ``counts``: runs reported / running / finished / failed.
        """
        with self._cond:
            out = {
                "version": self._version,
                "rows": [self._row_view(row) for _, row in sorted(self._rows.items())],
                "final_rows": [
                    run.final.to_dict()
                    for _, run in sorted(self._runs.items())
                    if run.final is not None
                ],
                "report": self._report().to_dict(),
                "datasets": {n: self._dataset_view(n) for n in sorted(self._datasets)},
                "counts": _run_counts(list(self._runs.values())),
            }
        return json_safe(out)

    def report(self) -> FitReport:
        """The fits as they are now (the object :meth:`snapshot` serialises)."""
        with self._cond:
            return self._report()

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

    def _report(self) -> FitReport:
        names = sorted(self._datasets)
        return FitReport(
            datasets={n: self._datasets[n].fit for n in names if self._datasets[n].fit},
            skipped={
                n: self._datasets[n].reason or self._datasets[n].status
                for n in names
                if self._datasets[n].status in (SKIPPED, ERROR)
            },
            regression=self._regression,
            regression_note=self._regression_note,
            policy=self._policy,
            budget=self._budget,
            source="analysis actor",
            law_choice=self._law_choice,
            floor_regression=self._floor_regression[0],
            floor_regression_note=self._floor_regression[1],
            comparison={
                n: self._datasets[n].comparison for n in names if self._datasets[n].comparison
            },
            comparison_skipped={
                n: self._datasets[n].comparison_reason
                for n in names
                if self._datasets[n].comparison_reason
            },
        )

    def _row_view(self, row: ResultRow) -> dict:
        # A row shows its run's current status, so rows of a failed run carry the reason.
        run = self._runs[row.trial_id]
        return {**row.to_dict(), "status": run.status, "reason": run.reason}

    def _dataset_view(self, name: str) -> dict:
        state = self._datasets[name]
        runs = [r for r in self._runs.values() if r.dataset == name]
        return {
            "status": state.status,
            "reason": state.reason,
            "fit_version": state.fit_version,
            "refit_pending": name in self._dirty or name == self._in_flight,
            "runs": _run_counts(runs),
        }

    # -- the refit thread --------------------------------------------------------------

    def _refit_loop(self) -> None:
        while True:
            name, points = self._take_dirty()
            try:
                report = fit_datasets(
                    points, policy=self._policy, budget=self._budget, law_choice=self._law_choice
                )
                if name in report.datasets:
                    state = _DatasetState(
                        FITTED,
                        None,
                        report.datasets[name],
                        comparison=report.comparison.get(name),
                        comparison_reason=report.comparison_skipped.get(name),
                    )
                else:
                    reason = report.skipped.get(name, "no finished runs")
                    state = _DatasetState(SKIPPED, reason)
            except Exception as exc:  # a dead refit thread would hang wait_for_idle
                logger.exception("refit of dataset %r failed", name)
                state = _DatasetState(ERROR, f"refit failed: {type(exc).__name__}: {exc}")
            self._store_fit(name, state)
            self._refit_regression()

    def _take_dirty(self) -> tuple[str, Points]:
        with self._cond:
            self._cond.wait_for(lambda: self._dirty)
        time.sleep(self._settle_s)  # let the rest of a burst land: one refit for all of it
        with self._cond:
            name = next(iter(self._dirty))
            del self._dirty[name]
            self._in_flight = name
            finals = [
                r.final for r in self._runs.values() if r.dataset == name and r.final is not None
            ]
            return name, Points.from_rows(finals, source=f"dataset {name} (live)")

    def _store_fit(self, name: str, state: _DatasetState) -> None:
        with self._cond:
            self._refits[name] = self._refits.get(name, 0) + 1
            state.fit_version = self._refits[name]
            self._datasets[name] = state
            self._version += 1

    def _refit_regression(self) -> None:
        with self._cond:
            fitted = {n: self._datasets[n].fit for n in sorted(self._datasets)}
        fits = {n: f for n, f in fitted.items() if f is not None}
        regression, note = regress_on_gzip(fits)
        floor_regression = regress_on_floor(fits)
        with self._cond:
            self._regression, self._regression_note = regression, note
            self._floor_regression = floor_regression
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
    bootstrap: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    budget: float = REFERENCE_BUDGET,
    settle_s: float = DEFAULT_SETTLE_S,
    law_choice: str = DEFAULT_LAW_CHOICE,
    **options,
):
    """The detached actor ``name`` in ``namespace``, created if it does not exist.

    The settings apply only on creation; an existing actor keeps its own (its snapshot's
    ``report`` says which bootstrap policy made its intervals).  Extra ``options`` go to
    ``.options()`` (e.g. ``resources={"head": 0.001}`` to pin the actor to the head node,
    which, unlike a spot worker, does not go away during a sweep).
    """
    if not name or not namespace:
        raise ValueError(f"need a name and an explicit namespace, got {name!r}, {namespace!r}")
    return AnalysisActor.options(
        name=name, namespace=namespace, lifetime="detached", get_if_exists=True, **options
    ).remote(
        bootstrap=bootstrap, seed=seed, budget=budget, settle_s=settle_s, law_choice=law_choice
    )
