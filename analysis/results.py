"""A sweep's result row: the one definition shared by the orchestrator and the fits.

Every trial of a sweep ends as one :class:`ResultRow`; a run directory keeps them in
``results.csv`` (columns in :data:`RESULT_COLUMNS` order).  A row is validated once on
the way in (building a :class:`ResultRow` from a mapping checks every field) and once on
the way out (:func:`read_results_csv`), so a bad value fails where it is written, naming
the field, rather than later inside a fit.  In between it travels as a ``ResultRow``:
:func:`write_results_csv` writes those as they are.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from gzipscale.helpers import InputError, PathNotFound, atomic_write
from gzipscale.vocabulary import FAILED, FINISHED, FLOPS_PER_PARAM_TOKEN, RunKey

STATUSES = (FINISHED, FAILED)
# C = 6 N D (Kaplan et al. 2020; Hoffmann et al. 2022); the frontier in
# analysis/frontier.py assumes it, so a row whose flops disagree would silently put the
# fit on another compute axis.
FLOPS_RTOL = 1e-6


class ResultRowError(InputError):
    """A result row has a missing or invalid field (``field`` names it)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field {field!r}: {message}")
        self.field = field


@dataclass(frozen=True)
class ResultRow:
    """One trial of a sweep: which data and model, how far it trained, what it reached.

    ``flops`` defaults to ``6 * params * tokens``; ``val_loss`` may be NaN only for a
    failed trial, and ``reason`` is set exactly when the trial failed.
    """

    dataset: str
    grammar: str  # "NT,T,LEN,OPTS", e.g. "20,300,5,10"
    seed: int
    gzip: float  # the dataset's gzip compressibility H (median over documents)
    shape: str  # model shape name
    params: int  # N, total parameters
    non_embedding_params: int
    tokens: int  # D, training tokens
    val_loss: float
    status: str
    reason: str = ""
    wall_s: float = 0.0
    tokens_per_s: float = 0.0
    flops: float | None = None
    trial_id: str = ""
    step: int = 0
    # The dataset's floor (exact Bayes-optimal loss per predicted token) and its standard
    # error, from its manifest; NaN for data without one (real corpora, older run dirs).
    floor: float = math.nan
    floor_se: float = math.nan
    # The learning-rate schedule the row was trained with (constant, cosine, wsd); empty
    # in results written before it was recorded.
    schedule: str = ""

    def __post_init__(self) -> None:
        # Coerce and check every field; frozen, so values are set through object.
        for f in fields(self):
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, _PARSERS[f.name](f.name, value))
        self._check_relations()

    def _check_relations(self) -> None:
        if self.non_embedding_params > self.params:
            raise ResultRowError(
                "non_embedding_params",
                f"{self.non_embedding_params} exceeds params={self.params}",
            )
        expected = FLOPS_PER_PARAM_TOKEN * self.params * self.tokens
        if self.flops is None:
            object.__setattr__(self, "flops", expected)
        elif not math.isclose(self.flops, expected, rel_tol=FLOPS_RTOL):
            raise ResultRowError(
                "flops",
                f"{self.flops!r} is not 6 * params * tokens = {expected!r}; leave it empty "
                "to have it computed",
            )
        if self.status == FINISHED:
            if not (math.isfinite(self.val_loss) and self.val_loss > 0):
                raise ResultRowError(
                    "val_loss", f"a finished trial needs a finite loss > 0, got {self.val_loss!r}"
                )
            if self.reason:
                raise ResultRowError(
                    "reason", f"must be empty for a finished trial, got {self.reason!r}"
                )
        else:
            if not self.reason:
                raise ResultRowError("reason", "a failed trial must say why (reason is empty)")
            if not (math.isnan(self.val_loss) or self.val_loss > 0):
                raise ResultRowError("val_loss", f"must be NaN or > 0, got {self.val_loss!r}")

    @property
    def key(self) -> RunKey:
        """The run this row is the result of: one row of results.csv per key."""
        return RunKey(self.dataset, self.shape, self.tokens)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def replace(self, **changes) -> ResultRow:
        """A copy with ``changes``, checked like any new row."""
        return ResultRow(**{**asdict(self), **changes})

    def to_dict(self) -> dict:
        """Plain values, keys in :data:`RESULT_COLUMNS` order."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> ResultRow:
        """Build a row from a mapping (e.g. a CSV record of strings), checking every field.

        Raises
        ------
        ResultRowError
            A required field is missing, a field is unknown, or a value is invalid.
        """
        unknown = [k for k in data if k not in RESULT_COLUMNS]
        if unknown:
            raise ResultRowError(
                unknown[0], f"unknown field; allowed fields are {', '.join(RESULT_COLUMNS)}"
            )
        missing = [k for k in REQUIRED_COLUMNS if k not in data]
        if missing:
            raise ResultRowError(missing[0], "missing (required: " + ", ".join(missing) + ")")
        # Empty CSV cells mean "default" for the optional fields.
        values = {k: v for k, v in data.items() if not (k in OPTIONAL_COLUMNS and v in ("", None))}
        return cls(**values)


RESULT_COLUMNS: list[str] = [f.name for f in fields(ResultRow)]
OPTIONAL_COLUMNS = (
    "reason",
    "wall_s",
    "tokens_per_s",
    "flops",
    "trial_id",
    "step",
    "floor",
    "floor_se",
    "schedule",
)
REQUIRED_COLUMNS = [c for c in RESULT_COLUMNS if c not in OPTIONAL_COLUMNS]


# -- field parsers ---------------------------------------------------------------------


def _text(nonempty: bool):
    def parse(name, value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = ""
        if not isinstance(value, str):
            raise ResultRowError(name, f"must be a string, got {type(value).__name__} {value!r}")
        value = value.strip()
        if nonempty and not value:
            raise ResultRowError(name, "must not be empty")
        return value

    return parse


def _integer(minimum: int):
    def parse(name, value):
        if isinstance(value, bool):
            raise ResultRowError(name, f"must be an integer, got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value
            # Accept 1e6 or 1000000.0 (pandas writes ints as floats once a column has a NaN).
            if isinstance(number, float):
                if not number.is_integer():
                    raise ValueError
                number = int(number)
            number = int(number)
        except (TypeError, ValueError, OverflowError):
            raise ResultRowError(name, f"must be an integer, got {value!r}") from None
        if number < minimum:
            raise ResultRowError(name, f"must be >= {minimum}, got {number}")
        return number

    return parse


def _real(minimum: float, *, strict: bool = False, nan_ok: bool = False):
    def parse(name, value):
        if isinstance(value, bool):
            raise ResultRowError(name, f"must be a number, got {value!r}")
        if nan_ok and value in ("", None):
            return math.nan
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ResultRowError(name, f"must be a number, got {value!r}") from None
        if math.isnan(number):
            if nan_ok:
                return number
            raise ResultRowError(name, "must be a number, got NaN")
        if not math.isfinite(number) or number < minimum or (strict and number == minimum):
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise ResultRowError(name, f"must be finite and {bound}, got {value!r}")
        return number

    return parse


def _status(name, value):
    value = _text(True)(name, value)
    if value not in STATUSES:
        raise ResultRowError(name, f"must be one of {', '.join(STATUSES)}; got {value!r}")
    return value


def _flops(name, value):
    return None if value is None else _real(0.0, strict=True)(name, value)


_PARSERS = {
    "dataset": _text(True),
    "grammar": _text(False),
    "seed": _integer(0),
    "gzip": _real(0.0, strict=True),
    "shape": _text(True),
    "params": _integer(1),
    "non_embedding_params": _integer(0),
    "tokens": _integer(1),
    "val_loss": _real(0.0, nan_ok=True),
    "status": _status,
    "reason": _text(False),
    "wall_s": _real(0.0),
    "tokens_per_s": _real(0.0),
    "flops": _flops,
    "trial_id": _text(False),
    "step": _integer(0),
    "floor": _real(0.0, strict=True, nan_ok=True),
    "floor_se": _real(0.0, nan_ok=True),
    "schedule": _text(False),
}


# -- results.csv -----------------------------------------------------------------------


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)  # repr: floats round-trip exactly
    return str(value)


def write_results_csv(rows: Iterable[ResultRow | Mapping], path: str | Path) -> Path:
    """Write rows to ``path`` atomically: a reader sees the old file or the new, never half.

    A :class:`ResultRow` is written as it is (it was checked when it was made); a mapping
    is checked through :meth:`ResultRow.from_dict` first.  The temporary file
    lives in the target's directory so the final ``os.replace`` is a rename on one
    filesystem.
    """
    path = Path(path)
    records = [r if isinstance(r, ResultRow) else ResultRow.from_dict(r) for r in rows]

    def write(handle) -> None:
        writer = csv.writer(handle)
        writer.writerow(RESULT_COLUMNS)
        for row in records:
            record = row.to_dict()
            writer.writerow([_cell(record[c]) for c in RESULT_COLUMNS])

    atomic_write(path, write, mode="w")
    return path


def read_results_csv(path: str | Path) -> list[ResultRow]:
    """Read and validate ``results.csv``; errors name the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise PathNotFound(f"{path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise InputError(
                f"{path}: missing column(s) {', '.join(missing)} "
                f"(a results file has columns {', '.join(RESULT_COLUMNS)})"
            )
        rows = []
        for record in reader:
            if None in record:  # more cells than header columns
                raise InputError(f"{path}, line {reader.line_num}: more cells than columns")
            try:
                rows.append(ResultRow.from_dict(record))
            except ResultRowError as exc:
                raise InputError(f"{path}, line {reader.line_num}: {exc}") from exc
    return rows
