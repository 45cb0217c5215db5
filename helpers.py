"""Helpers every stage shares, each defined once: the user-error base, checked parsing of
fields and sizes, atomic writes, checksums, JSON-safe values, the console and progress policy,
and the connection to Ray.

Bottom layer (with ``vocabulary``): imports nothing of the project; heavy libraries (rich,
torch, ray) are imported inside the functions that need them, so the command line's
``--help`` stays fast.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# -- errors a user should see -----------------------------------------------------------------


class UserError(Exception):
    """A refusal meant for the user: bad input, a path that cannot be used, a dataset or run
    that is not the one asked for. The command line prints its message as one line and exits
    with status 2; every other exception is a bug and keeps its traceback."""


class SpecError(UserError, ValueError):
    """A field of a spec, a size or a seed that cannot be used; the message names the field
    and what it allows."""


class InputError(UserError, ValueError):
    """A file or value given to a command that it cannot use (a table, a corpus, a folder)."""


class PathNotFound(UserError, FileNotFoundError):
    """A path given to a command that does not exist or lacks what the command reads."""


# -- checked fields ---------------------------------------------------------------------------


def check_int_field(name: str, value: object, low: int, high: int, what: str = "field") -> int:
    """Return ``value`` as an int if it is an integer in ``low..high``, else raise SpecError."""
    # bool is an int subclass; "True nonterminals" is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            value = int(value)
        else:
            raise SpecError(f"{what} '{name}' must be an integer in {low}..{high}, got {value!r}")
    if not low <= value <= high:
        raise SpecError(f"{what} '{name}' must be an integer in {low}..{high}, got {value}")
    return value


def check_choice(field: str, value, allowed: tuple, error: type[Exception] = SpecError) -> None:
    if value not in allowed:
        raise error(f"field {field!r} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def check_int(
    field: str, value, low: int, high: int | None = None, error: type[Exception] = SpecError
) -> None:
    """A strict integer field (no strings, floats or bools) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"field {field!r} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise error(f"field {field!r} must be {bound}, got {value}")


def check_number(
    field: str,
    value,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
    error: type[Exception] = SpecError,
) -> None:
    """A strict finite number field in the interval ``low..high`` (open ends as flagged)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise error(f"field {field!r} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise error(f"field {field!r} must be in {lo}{low}, {high}{hi}, got {value}")


_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9, "T": 10**12}


def parse_size(text: str | int, field: str = "tokens", minimum: int = 1) -> int:
    """Parse a count such as ``100K``, ``10M``, ``1.5M``, ``2e6`` or ``250000`` (decimal units)."""
    if isinstance(text, bool):
        raise SpecError(f"'{field}' must be a positive count such as 100K or 10M, got {text!r}")
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(
            r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*([kKmMgGbBtT]?)\s*", str(text)
        )
        if not match:
            raise SpecError(
                f"'{field}' must be a count such as 100K, 10M or 250000 "
                f"(suffixes K, M, G), got {text!r}"
            )
        number = float(match.group(1)) * _SUFFIXES[match.group(2).upper()]
        if not number.is_integer():
            raise SpecError(f"'{field}' must be a whole number of tokens, got {text!r}")
        value = int(number)
    if value < minimum:
        raise SpecError(f"'{field}' must be at least {minimum}, got {text!r}")
    return value


def format_size(n: int) -> str:
    """Inverse of parse_size for round numbers: 100000 -> '100K'."""
    for suffix, scale in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{suffix}"
    return str(n)


# Each seed is a grammar built and scored in turn; a range such as 0-99999999999 would
# otherwise be expanded into a list until memory runs out, long before any work.
MAX_SEEDS = 10_000


def parse_seeds(text: str) -> list[int]:
    """``3`` -> [3]; ``0-4`` -> [0..4]; ``1,5,9`` -> [1, 5, 9]; duplicates dropped; at most
    :data:`MAX_SEEDS` of them."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                if int(hi) < int(lo):
                    raise ValueError
                if len(seeds) + int(hi) - int(lo) + 1 > MAX_SEEDS:
                    raise SpecError(
                        f"field 'seeds' may list at most {MAX_SEEDS:,} seeds, got {text!r}"
                    )
                seeds += list(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except SpecError:  # the cap's own message (a SpecError is a ValueError too)
        raise
    except ValueError:
        raise SpecError(
            f"field 'seeds' must be integers such as 3, 0-4 or 1,5,9, got {text!r}"
        ) from None
    if len(seeds) > MAX_SEEDS:
        raise SpecError(f"field 'seeds' may list at most {MAX_SEEDS:,} seeds, got {len(seeds):,}")
    return list(dict.fromkeys(seeds))


def spec_differences(have: dict, want: dict, prefix: str = "") -> list[str]:
    """What differs between two nested spec dicts, one ``key: old there, new requested``
    line per leaf; the refusals of datasets, runs and sweeps all say it this way."""
    diffs = []
    for key in sorted(set(have) | set(want), key=str):
        a, b = have.get(key), want.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += spec_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} there, {b!r} requested")
    return diffs


# -- destinations the user names ----------------------------------------------------------


def writable_destination(path: str | os.PathLike, field: str, kind: str = "directory") -> Path:
    """Refuse, before any work starts, a ``--out``/``--storage`` that cannot be created.

    ``kind`` is ``"directory"`` (the command creates or fills a folder) or ``"file"``. The
    nearest existing ancestor must be a folder in which this process can create an entry;
    that is tried (a temporary folder made and removed at once), because permission bits
    do not tell: root ignores them, and a file system such as /sys refuses root too.
    Returns the path unchanged; raises :class:`InputError` naming ``field``, the path and
    the reason.
    """
    path = Path(path)
    shown = f"{field} {path}"
    if path.exists():
        if kind == "directory" and not path.is_dir():
            raise InputError(f"{shown}: is a file, not a directory; give a folder")
        if kind == "file" and path.is_dir():
            raise InputError(f"{shown}: is a folder; give a file name")
        if kind == "file":
            parent = path.parent
        else:
            parent = path  # it already exists: what it must allow is creating entries in it
    else:
        parent = path.parent
    ancestor = Path(os.path.abspath(parent))
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{shown}: {ancestor} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".gzipscale-probe-", dir=ancestor))
    except OSError as exc:
        raise InputError(
            f"{shown}: cannot create anything in {ancestor} ({exc.strerror})"
        ) from None
    return path


# Errors of the operating system about a path (not a bug of the program): the command line
# reports them in one line, as it does a UserError.
PATH_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EACCES",
        "EPERM",
        "ENOTDIR",
        "EISDIR",
        "EROFS",
        "ENOSPC",
        "EDQUOT",
        "EEXIST",
        "ENAMETOOLONG",
        "ELOOP",
        "EMLINK",
        "ENOTEMPTY",
    )
    if hasattr(errno, name)
)


def path_error_message(exc: BaseException) -> str | None:
    """One line for an OSError about a path the system refused, or None for anything else."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.errno in PATH_ERRNOS:
        return f"cannot use {exc.filename}: {exc.strerror}"
    return None


# -- atomic writes and checksums --------------------------------------------------------------


def atomic_write(path: Path, write: Callable[[object], None], mode: str = "wb") -> None:
    """Write through ``write(handle)`` to a temporary name in the same directory, fsync, then
    rename over ``path``: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it what a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text), mode="w")


def atomic_write_json(path: Path, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def atomic_torch_save(state: dict, path: Path) -> None:
    import torch

    atomic_write(path, lambda handle: torch.save(state, handle))


@contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out`` that replaces ``out`` when the block succeeds."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; what is written here is meant to be read
        # rename(2) cannot replace a non-empty folder, so move the old one aside first;
        # between the two renames ``out`` briefly does not exist.
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            out.rename(old / out.name)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- JSON -------------------------------------------------------------------------------------


def json_safe(value):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- console and progress ---------------------------------------------------------------------


def console(stderr: bool = True):
    """The one console policy: no syntax highlighting; logs and pipes get at least 120
    columns so that tables are not squeezed to 80."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out.width = max(out.width, 120)
    return out


class Progress:
    """The one progress policy: a rich bar on a terminal; elsewhere (CI, a pipe) a plain line
    every ``every_s`` seconds and at the end, with no control codes.

    ``update(done, total, info)`` is all a stage calls; use it as a context manager.
    """

    def __init__(self, label: str, out=None, unit: str = "", every_s: float = 5.0):
        self.label = label
        self.unit = unit
        self.console = out if out is not None else console()
        self.every_s = every_s
        self._last = 0.0
        self._bar = None
        self._task = None
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn(f"[bold]{label}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=False,
            )

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, done: int, total: int, info: str = "") -> None:
        if self._bar is None:
            now = time.perf_counter()
            if done == total or now - self._last > self.every_s:
                self._last = now
                counted = f"{self.label}: {done}/{total}" + (f" {self.unit}" if self.unit else "")
                self.console.print(counted + (f"  {info}" if info else ""))
            return
        if self._task is None:
            self._task = self._bar.add_task(self.label, total=total, info=info)
        self._bar.update(self._task, completed=done, total=total, info=info)


# -- Ray --------------------------------------------------------------------------------------


def ensure_ray(address: str | None = None, num_cpus: int | None = None, **init_kwargs) -> None:
    """Attach to the cluster in ``address``/``RAY_ADDRESS``, or start an embedded one."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import logging

    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": False, **init_kwargs}
    if address or os.environ.get("RAY_ADDRESS"):
        _check_reachable(address or os.environ["RAY_ADDRESS"])
        ray.init(address=address, **kwargs)
    else:
        # The embedded cluster serves this process only, so it listens on the loopback
        # interface alone (token auth stays on as Ray sets it up). Ray's processes bind
        # 127.0.0.1 instead of every interface when the node's IP *is* 127.0.0.1, but
        # ray.init rewrites a loopback `_node_ip_address` to the machine's routable IP
        # (services.resolve_ip_for_localhost), so that rewrite is held off while the
        # node starts.
        with _loopback_node():
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                **kwargs,
            )


LOOPBACK = "127.0.0.1"


@contextmanager
def _loopback_node() -> Iterator[None]:
    from ray._private import services

    resolve = getattr(services, "resolve_ip_for_localhost", None)
    if resolve is None:  # a Ray without the rewrite: nothing to hold off
        yield
        return
    services.resolve_ip_for_localhost = lambda host: host
    try:
        yield
    finally:
        services.resolve_ip_for_localhost = resolve


def _check_reachable(address: str) -> None:
    """Refuse a ``host:port`` with nothing listening, within seconds: Ray's GCS client
    otherwise retries for a minute or more before it gives up. ``auto`` and ``ray://``
    addresses are left to Ray."""
    import socket

    match = re.fullmatch(r"\s*([^:/\s]+):(\d+)\s*", address)
    if not match:
        return
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as exc:
        raise UserError(
            f"no Ray cluster at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head --node-ip-address 127.0.0.1`, or leave --address and RAY_ADDRESS "
            "unset for an embedded cluster"
        ) from None
