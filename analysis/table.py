"""Read the (N, D, loss) points to fit from a CSV/Parquet table or a run directory.

The result is a DataFrame with columns ``dataset``, ``params``, ``tokens``, ``loss``
and ``gzip`` (NaN when unknown), finished rows only.  What was left out is recorded
in ``frame.attrs["excluded"]``: ``{dataset: {status: count}}``, so a report can say
that a dataset lost rows (or all of them) to failed trials.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gzipscale.analysis.results import RESULT_COLUMNS, read_results_csv
from gzipscale.vocabulary import RESULTS_FILE

DEFAULT_DATASET = "all"
POINT_COLUMNS = ("params", "tokens", "loss")
LOSS_COLUMNS = ("loss", "val_loss")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def read_frame(path: Path) -> tuple[pd.DataFrame, str]:
    """The raw table and a label for error messages."""
    if path.is_dir():
        results = path / RESULTS_FILE
        if not results.is_file():
            raise FileNotFoundError(
                f"{path} is a directory without {RESULTS_FILE}; give a run directory or a "
                f"table file ({', '.join(TABLE_SUFFIXES)})"
            )
        rows = read_results_csv(results)
        # columns= keeps the header of a run with no rows yet, so the error says "no rows".
        frame = pd.DataFrame([r.to_dict() for r in rows], columns=RESULT_COLUMNS)
        return frame, str(results)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        # Keep dataset names as written ("001" must not become 1).
        return pd.read_csv(path, dtype={"dataset": str, "status": str}), str(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path), str(path)
    raise ValueError(
        f"{path}: unknown table format {suffix or '(no suffix)'!r}; expected one of "
        f"{', '.join(TABLE_SUFFIXES)} or a run directory containing {RESULTS_FILE}"
    )


def _loss_column(frame: pd.DataFrame, label: str) -> str:
    present = [c for c in LOSS_COLUMNS if c in frame.columns]
    if len(present) == 2:
        raise ValueError(f"{label}: has both 'loss' and 'val_loss' columns; keep only one")
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
            raise ValueError(
                f"{label}, row {rows[i]}: column '{column}' {what}, got {raw.iloc[i]!r} "
                f"({int(bad.sum())} bad row(s))"
            )
    return values


def load_points(path: str | Path) -> pd.DataFrame:
    """Load the finished points of a results table for fitting.

    Parameters
    ----------
    path : str or Path
        A ``.csv`` or ``.parquet`` table with columns ``params``, ``tokens`` and
        ``loss`` (or ``val_loss``), optionally ``dataset``, ``gzip`` and ``status``;
        or a run directory holding ``results.csv`` (see analysis/results.py).

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset`` (str), ``params``, ``tokens``, ``loss``, ``gzip`` (float;
        NaN without a gzip column), and ``row`` (the 1-based data row it came from).
        A table without ``dataset`` is one dataset named ``all``.  Rows whose
        ``status`` is not ``finished`` are left out and counted in
        ``attrs["excluded"]``; ``attrs["source"]`` names the file read.

    Raises
    ------
    FileNotFoundError
        The path does not exist (or a directory has no results.csv).
    ValueError
        A required column is missing, or a value is non-numeric, NaN or <= 0
        (the message names the column and the row).
    """
    frame, label = read_frame(Path(path))
    loss_col = _loss_column(frame, label)
    missing = [c for c in ("params", "tokens", loss_col) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{label}: missing column(s) {', '.join(missing)}; a points table needs "
            "params, tokens and loss (or val_loss), optionally dataset, gzip, status "
            f"(found: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    rows = np.arange(1, len(frame) + 1)

    if "dataset" in frame.columns:
        names = frame["dataset"]
        empty = names.isna().to_numpy() | (names.astype(str).str.strip() == "").to_numpy()
        if empty.any():
            raise ValueError(
                f"{label}, row {rows[int(np.flatnonzero(empty)[0])]}: dataset is empty"
            )
        datasets = names.astype(str).str.strip().to_numpy()
    else:
        datasets = np.full(len(frame), DEFAULT_DATASET, dtype=object)

    if "status" in frame.columns:
        status = frame["status"].fillna("").astype(str).str.strip().str.lower().to_numpy()
        keep = status == "finished"
    else:
        status = np.full(len(frame), "finished", dtype=object)
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
            "gzip": _gzip(kept, label, kept_rows),
            "row": kept_rows,
        }
    )
    if out.empty and not excluded:
        raise ValueError(f"{label}: the table has no rows")
    out.attrs["excluded"] = excluded
    out.attrs["source"] = label
    return out


def _gzip(frame: pd.DataFrame, label: str, rows: np.ndarray) -> np.ndarray:
    # gzip is optional per row: a dataset without H is still fitted, just not regressed.
    if "gzip" not in frame.columns:
        return np.full(len(frame), np.nan)
    raw = frame["gzip"]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = (np.isnan(values) & pd.notna(raw).to_numpy()) | np.isinf(values) | (values <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{label}, row {rows[i]}: column 'gzip' must be a number > 0 (or empty), "
            f"got {raw.iloc[i]!r}"
        )
    return values


def dataset_gzip(points: pd.DataFrame, name: str) -> tuple[float | None, str | None]:
    """A dataset's H (median of its rows' gzip) and a warning when its rows disagree."""
    values = points.loc[points["dataset"] == name, "gzip"].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    H = float(np.median(values))
    lo, hi = float(values.min()), float(values.max())
    note = None
    if hi - lo > 1e-9 * max(abs(hi), 1.0):
        note = f"gzip differs across this dataset's rows ({lo:.4g} to {hi:.4g}); using the median"
    return H, note
