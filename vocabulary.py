"""The words every stage shares: run statuses, file names, and the few constants that must agree
between the data, the trainer, the sweeps and the fits. Each is defined here and nowhere else.

This module imports nothing of the project (it is the bottom layer, with ``helpers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# -- run statuses (a trial's result row, the live display) ------------------------------------
PENDING = "pending"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
RUN_STATUSES = (PENDING, RUNNING, FINISHED, FAILED)

# -- file names -------------------------------------------------------------------------------
MANIFEST_FILE = "manifest.json"  # a dataset directory's; written last: its presence = complete
RESULTS_FILE = "results.csv"  # a sweep's table, one row per run
EVENTS_FILE = "events.log"  # a sweep's event log, one JSON object per line
SWEEP_SPEC_FILE = "sweep.json"  # the spec a sweep directory was made for
RUN_SPEC_FILE = "run.json"  # the spec a training run directory was made for
RUN_RESULT_FILE = "result.json"  # a training run's final result
REPORT_DIR = "report"  # a sweep's report, inside its directory
DATA_DIR = "data"  # a sweep's datasets, inside its directory (data/<dataset>/)
POSITIONS_DIR = "positions"  # a sweep's per-position held-out losses, one JSON per run

# -- documents, held-out data, compute
SAMPLER_MODES = (
    "prefix",
    "finite",
)  # the grammar as written; conditioned on finite sentences --------------------------------------------------------
DEFAULT_CONTEXT_LENGTH = 256  # tokens per document, as the paper trained (Pandey 2024)
# A dataset's held-out split holds DATASET_EVAL_TOKENS; a run is scored on the first
# EVAL_TOKENS of it (standard error 0.002-0.004 nats on the tiny models), so that the split
# can serve larger evaluations without being regenerated.
DATASET_EVAL_TOKENS = 512_000
EVAL_TOKENS = 131_072
# Training FLOPs per parameter per token, C = 6·N·D (Kaplan et al. 2020; Hoffmann et al. 2022).
FLOPS_PER_PARAM_TOKEN = 6.0

# -- fits -------------------------------------------------------------------------------------
# The one bootstrap policy: every interval the project shows comes from this many resamples
# of the runs, drawn from this seed, and says so beside it.
BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_SEED = 0
REFERENCE_BUDGET = 1e18  # FLOPs at which a law's compute-optimal split is summarised
# The two kinds of scaling-law fit: E held at the dataset's known floor, or all five
# parameters free (the paper's).  The floor-anchored one drives frontiers and regressions
# by default: where the floor is known, a free E is a nuisance parameter the runs cannot
# separate from a slowly falling N term.
FLOOR_FIT, FREE_FIT = "floor", "free"
LAW_CHOICES = (FLOOR_FIT, FREE_FIT)
DEFAULT_LAW_CHOICE = FLOOR_FIT

# -- sweeps -------------------------------------------------------------------------------------
DEFAULT_STORAGE = "runs"  # where run directories go unless --storage says otherwise

# -- the live analysis actor ------------------------------------------------------------------
ACTOR_NAMESPACE = "gzipscale"


def actor_name(sweep_name: str) -> str:
    """The named Ray actor that fits one sweep's results live."""
    return f"analysis-{sweep_name}"


# -- a run's identity ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class RunKey:
    """What makes a run one run: one row of results.csv per (dataset, shape, tokens)."""

    dataset: str
    shape: str
    tokens: int

    @classmethod
    def of(cls, record) -> RunKey:
        """The key of a result row, a planned run or a trial config (a mapping or an object
        with ``dataset``, ``shape`` and ``tokens``)."""
        if isinstance(record, Mapping):
            return cls(str(record["dataset"]), str(record["shape"]), int(record["tokens"]))
        return cls(str(record.dataset), str(record.shape), int(record.tokens))

    def __str__(self) -> str:
        return f"{self.dataset} {self.shape} {self.tokens:,} tokens"
