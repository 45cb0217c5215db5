"""Read the (N, D, loss) points to fit from a CSV/Parquet table or a run directory.

:func:`load_points` reads the table once and returns :class:`Points`: the finished rows'
points, what was left out (``{dataset: {status: count}}``, so a report can say that a
dataset lost rows, or all of them, to failed trials), and what the reports show of every
row (a dataset's grammar, its H even when every run failed).  A run directory's
``results.csv`` is read through :func:`~gzipscale.analysis.results.read_results_csv`,
which validates every row; its rows are kept, and not checked again here.  Any other
table is checked column by column, naming the column and the row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gzipscale.analysis.results import ResultRow, read_results_csv
from gzipscale.helpers import InputError, PathNotFound
from gzipscale.vocabulary import FINISHED, RESULTS_FILE

DEFAULT_DATASET = "all"
POINT_COLUMNS = ("params", "tokens", "loss")
LOSS_COLUMNS = ("loss", "val_loss")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
FRAME_COLUMNS = ("dataset", "params", "tokens", "loss", "gzip", "floor", "floor_se", "row")


@dataclass(frozen=True)
class KnownFloor:
    """A dataset's floor (exact Bayes-optimal loss per predicted token) and its standard
    error, as the fits use it."""

    nats_per_token: float
    stderr: float

    def to_dict(self) -> dict:
        return {"nats_per_token": float(self.nats_per_token), "stderr": float(self.stderr)}


@dataclass
class Points:
    """The finished points of a results table, read once.

    Attributes
    ----------
    frame : pandas.DataFrame
        Columns ``dataset`` (str), ``params``, ``tokens``, ``loss``, ``gzip``, ``floor``,
        ``floor_se`` (floats; NaN without one) and ``row`` (the 1-based data row it came
        from); finished rows only.
    source : str
        The file read (for messages and reports).
    excluded : dict
        ``{dataset: {status: count}}`` of the rows left out (not finished).
    grammars : dict
        Per dataset, its grammar spec(s) over all rows ("; "-joined when several).
    all_gzip : dict
        Per dataset, the median H over all its rows, finished or not.
    rows : list of ResultRow, optional
        Every row, when the table was a run directory's results.csv.
    """

    frame: pd.DataFrame
    source: str
    excluded: dict[str, dict[str, int]] = field(default_factory=dict)
    grammars: dict[str, str] = field(default_factory=dict)
    all_gzip: dict[str, float] = field(default_factory=dict)
    rows: list[ResultRow] | None = None

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def names(self) -> list[str]:
        """Datasets with finished points, in the order they first appear."""
        return list(dict.fromkeys(self.frame["dataset"]))

    @property
    def all_names(self) -> list[str]:
        """Every dataset of the table, those whose rows all failed last."""
        return list(dict.fromkeys([*self.names, *self.excluded]))

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(N, D, L)`` of one dataset's finished points, as float arrays."""
        rows = self.frame[self.frame["dataset"] == name]
        return tuple(rows[c].to_numpy(dtype=float) for c in ("params", "tokens", "loss"))

    def gzip(self, name: str) -> tuple[float | None, str | None]:
        """A dataset's H (median of its finished rows' gzip) and a note when they disagree."""
        values = self.frame.loc[self.frame["dataset"] == name, "gzip"].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return None, None
        H = float(np.median(values))
        lo, hi = float(values.min()), float(values.max())
        note = None
        if hi - lo > 1e-9 * max(abs(hi), 1.0):
            note = (
                f"gzip differs across this dataset's rows ({lo:.4g} to {hi:.4g}); using the median"
            )
        return H, note

    def floor(self, name: str) -> tuple[KnownFloor | None, str | None]:
        """A dataset's floor (from its finished rows) and a note when they disagree."""
        rows = self.frame[self.frame["dataset"] == name]
        values = rows["floor"].to_numpy(dtype=float)
        ok = np.isfinite(values)
        if not ok.any():
            return None, None
        values, errors = values[ok], rows["floor_se"].to_numpy(dtype=float)[ok]
        note = None
        if values.max() - values.min() > 1e-9 * values.max():
            note = (
                f"the floor differs across this dataset's rows ({values.min():.6g} to "
                f"{values.max():.6g}); using the median"
            )
        i = int(np.argsort(values)[len(values) // 2])
        stderr = float(errors[i]) if np.isfinite(errors[i]) else 0.0
        return KnownFloor(float(values[i]), stderr), note

    def with_floors(self, floors: dict[str, KnownFloor]) -> Points:
        """These points with the given datasets' floors set (e.g. computed from their
        grammars for a table recorded before rows carried them)."""
        frame = self.frame.copy()
        for name, known in floors.items():
            rows = frame["dataset"] == name
            frame.loc[rows, "floor"] = known.nats_per_token
            frame.loc[rows, "floor_se"] = known.stderr
        return Points(frame, self.source, self.excluded, self.grammars, self.all_gzip, self.rows)

    @classmethod
    def from_rows(cls, rows: Iterable[ResultRow], source: str = "") -> Points:
        """The points of validated result rows (a run directory's, or a live sweep's)."""
        rows = list(rows)
        kept = [(i, r) for i, r in enumerate(rows, start=1) if r.status == FINISHED]
        frame = pd.DataFrame(
            {
                "dataset": pd.Series([r.dataset for _, r in kept], dtype=object),
                "params": np.array([r.params for _, r in kept], dtype=float),
                "tokens": np.array([r.tokens for _, r in kept], dtype=float),
                "loss": np.array([r.val_loss for _, r in kept], dtype=float),
                "gzip": np.array([r.gzip for _, r in kept], dtype=float),
                "floor": np.array([r.floor for _, r in kept], dtype=float),
                "floor_se": np.array([r.floor_se for _, r in kept], dtype=float),
                "row": np.array([i for i, _ in kept], dtype=int),
            }
        )
        excluded: dict[str, dict[str, int]] = {}
        grammars: dict[str, list[str]] = {}
        gzips: dict[str, list[float]] = {}
        for r in rows:
            if r.status != FINISHED:
                counts = excluded.setdefault(r.dataset, {})
                counts[r.status] = counts.get(r.status, 0) + 1
            if r.grammar:
                grammars.setdefault(r.dataset, []).append(r.grammar)
            gzips.setdefault(r.dataset, []).append(r.gzip)
        return cls(
            frame=frame,
            source=source,
            excluded=excluded,
            grammars={k: "; ".join(dict.fromkeys(v)) for k, v in grammars.items()},
            all_gzip={k: float(np.median(v)) for k, v in gzips.items()},
            rows=rows,
        )


def read_frame(path: Path) -> tuple[pd.DataFrame, str]:
    """The raw table of a table file, and a label for error messages."""
    if not path.exists():
        raise PathNotFound(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        # Keep dataset names as written ("001" must not become 1).
        return pd.read_csv(path, dtype={"dataset": str, "status": str}), str(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path), str(path)
    raise InputError(
        f"{path}: unknown table format {suffix or '(no suffix)'!r}; expected one of "
        f"{', '.join(TABLE_SUFFIXES)} or a run directory containing {RESULTS_FILE}"
    )


def _loss_column(frame: pd.DataFrame, label: str) -> str:
    present = [c for c in LOSS_COLUMNS if c in frame.columns]
    if len(present) == 2:
        raise InputError(f"{label}: has both 'loss' and 'val_loss' columns; keep only one")
    return present[0] if present else "loss"


def _numeric(frame: pd.DataFrame, column: str, label: str, rows: np.ndarray) -> np.ndarray:
    """The column as floats, or an error naming the first bad row (1-based, data rows)."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    problems = (
        (lambda v, r: np.isnan(v) & pd.notna(r).to_numpy(), "is not a number"),
        (lambda v, r: np.isnan(v), "is missing (NaN)"),
        (lambda v, r: ~np.isfinite(v), "is not finite"),
        (lambda v, r: v <= 0, "must be > 0"),
    )
    for test, what in problems:
        bad = test(values, raw)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{label}, row {rows[i]}: column '{column}' {what}, got {raw.iloc[i]!r} "
                f"({int(bad.sum())} bad row(s))"
            )
    return values


def load_points(path: str | Path) -> Points:
    """Load the finished points of a results table for fitting.

    Parameters
    ----------
    path : str or Path
        A ``.csv`` or ``.parquet`` table with columns ``params``, ``tokens`` and
        ``loss`` (or ``val_loss``), optionally ``dataset``, ``gzip``, ``grammar`` and
        ``status``; or a run directory holding ``results.csv`` (see analysis/results.py).

    Returns
    -------
    Points
        A table without ``dataset`` is one dataset named ``all``.  Rows whose ``status``
        is not ``finished`` are left out and counted in ``excluded``.

    Raises
    ------
    PathNotFound (a FileNotFoundError)
        The path does not exist (or a directory has no results.csv).
    InputError (a ValueError)
        A required column is missing, or a value is non-numeric, NaN or <= 0
        (the message names the column and the row).
    """
    path = Path(path)
    if path.is_dir():
        results = path / RESULTS_FILE
        if not results.is_file():
            raise PathNotFound(
                f"{path} is a directory without {RESULTS_FILE}; give a run directory or a "
                f"table file ({', '.join(TABLE_SUFFIXES)})"
            )
        points = Points.from_rows(read_results_csv(results), source=str(results))
        if not points.rows:
            raise InputError(f"{results}: the table has no rows")
        _refuse_duplicates(points.frame, str(results))
        return points
    frame, label = read_frame(path)
    return _table_points(frame, label)


def _table_points(frame: pd.DataFrame, label: str) -> Points:
    loss_col = _loss_column(frame, label)
    missing = [c for c in ("params", "tokens", loss_col) if c not in frame.columns]
    if missing:
        raise InputError(
            f"{label}: missing column(s) {', '.join(missing)}; a points table needs "
            "params, tokens and loss (or val_loss), optionally dataset, gzip, status "
            f"(found: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    rows = np.arange(1, len(frame) + 1)

    if "dataset" in frame.columns:
        names = frame["dataset"]
        empty = names.isna().to_numpy() | (names.astype(str).str.strip() == "").to_numpy()
        if empty.any():
            raise InputError(
                f"{label}, row {rows[int(np.flatnonzero(empty)[0])]}: dataset is empty"
            )
        datasets = names.astype(str).str.strip().to_numpy()
    else:
        datasets = np.full(len(frame), DEFAULT_DATASET, dtype=object)

    if "status" in frame.columns:
        status = frame["status"].fillna("").astype(str).str.strip().str.lower().to_numpy()
        keep = status == FINISHED
    else:
        status = np.full(len(frame), FINISHED, dtype=object)
        keep = np.ones(len(frame), dtype=bool)
    excluded: dict[str, dict[str, int]] = {}
    for name, state in zip(datasets[~keep], status[~keep], strict=True):
        counts = excluded.setdefault(str(name), {})
        counts[state or "(empty)"] = counts.get(state or "(empty)", 0) + 1

    kept = frame.loc[keep]
    kept_rows = rows[keep]
    out = pd.DataFrame(
        {
            "dataset": pd.Series(datasets[keep], dtype=object),
            "params": _numeric(kept, "params", label, kept_rows),
            "tokens": _numeric(kept, "tokens", label, kept_rows),
            "loss": _numeric(kept, loss_col, label, kept_rows),
            "gzip": _optional_positive(kept, "gzip", label, kept_rows),
            "floor": _optional_positive(kept, "floor", label, kept_rows),
            "floor_se": _optional_positive(kept, "floor_se", label, kept_rows, zero_ok=True),
            "row": kept_rows,
        }
    )
    if out.empty and not excluded:
        raise InputError(f"{label}: the table has no rows")
    _refuse_duplicates(out, label)
    grammars, all_gzip = _all_rows(frame, pd.Series(datasets, index=frame.index))
    return Points(out, label, excluded, grammars, all_gzip)


def _refuse_duplicates(points: pd.DataFrame, label: str) -> None:
    """Two finished rows of one dataset at the same (N, D) would count one run twice in
    the fit (and its bootstrap): refuse them, naming the rows."""
    keys = ["dataset", "params", "tokens"]
    repeated = points[points.duplicated(keys, keep=False)]
    if repeated.empty:
        return
    groups = [
        f"rows {', '.join(str(r) for r in group['row'])} ({name}, N={n:.6g}, D={d:.6g})"
        for (name, n, d), group in repeated.groupby(keys, sort=False)
    ]
    raise InputError(
        f"{label}: {len(groups)} (dataset, params, tokens) point(s) appear more than once "
        f"among the finished rows: {'; '.join(groups[:3])}"
        f"{' ...' if len(groups) > 3 else ''}; keep one row per run (drop the copies, or "
        "mark all but one with a status other than finished)"
    )


def _all_rows(frame: pd.DataFrame, names: pd.Series) -> tuple[dict[str, str], dict[str, float]]:
    """Per dataset: its grammar spec(s) and H over all rows, finished or not."""
    grammars: dict[str, str] = {}
    if "grammar" in frame.columns:
        specs = frame["grammar"].fillna("").astype(str).str.strip()
        for name, group in specs.groupby(names, sort=False):
            # A dataset built from several grammars lists them all rather than hiding one.
            grammars[name] = "; ".join(dict.fromkeys(s for s in group if s))
    all_gzip: dict[str, float] = {}
    if "gzip" in frame.columns:
        gzip = pd.to_numeric(frame["gzip"], errors="coerce")
        all_gzip = {k: float(v) for k, v in gzip.groupby(names).median().items() if np.isfinite(v)}
    return grammars, all_gzip


def _optional_positive(
    frame: pd.DataFrame, column: str, label: str, rows: np.ndarray, zero_ok: bool = False
) -> np.ndarray:
    # gzip and the floor are optional per row: a dataset without H is still fitted, just
    # not regressed; one without a floor gets the free fit only.
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    too_small = (values < 0) if zero_ok else (values <= 0)
    bad = (np.isnan(values) & pd.notna(raw).to_numpy()) | np.isinf(values) | too_small
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        bound = ">= 0" if zero_ok else "> 0"
        raise InputError(
            f"{label}, row {rows[i]}: column '{column}' must be a number {bound} (or empty), "
            f"got {raw.iloc[i]!r}"
        )
    return values
