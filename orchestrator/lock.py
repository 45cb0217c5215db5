"""One driver per sweep: a lock taken when ``gzipscale sweep`` starts driving a run directory.

A local run directory gets an OS file lock (``flock`` on ``RUN_DIR/driver.lock``): the kernel
releases it when the driver dies, even by SIGKILL, so "run the same command again" resumes
at once. A URI run directory (``s3://``, ``file://``...) has no such lock, so it gets a lease
object ``RUN_DIR/driver.lease``: its holder (host, pid, since) rewrites it every
``expiry_s / 4`` seconds from a background thread, and another driver takes it over only
once it has gone ``expiry_s`` without renewal. Object stores have no compare-and-swap, so
two drivers that find a stale lease at the same moment both write and read back; the one
whose write did not survive backs off. Lease ages compare the holder's clock with the
reader's: keep ``expiry_s`` well above the clock skew between hosts.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.fs as pafs

from gzipscale.helpers import UserError

from .storage import is_uri

LOCK_FILE = "driver.lock"
LEASE_FILE = "driver.lease"
# Overridable so that tests (and impatient operators) need not wait a minute.
LEASE_EXPIRY_S = float(os.environ.get("GZIPSCALE_LEASE_EXPIRY_S", "60"))


class SweepBusy(UserError, RuntimeError):
    """Another driver holds the sweep; the message names it and how to follow it."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    since: str  # UTC, when the holder took the lock
    token: str = ""
    renewed: float = 0.0  # epoch seconds of the last heartbeat (leases only)
    expiry_s: float = 0.0

    @classmethod
    def me(cls, expiry_s: float = 0.0) -> Holder:
        return cls(
            socket.gethostname(),
            os.getpid(),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            uuid.uuid4().hex,
            time.time(),
            expiry_s,
        )

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.since}"


def _busy(location: str, holder: Holder | None, extra: str = "") -> SweepBusy:
    who = holder.describe() if holder else "another process (its details are unreadable)"
    return SweepBusy(
        f"the sweep in {location} is already being driven by {who}{extra}; nothing was "
        f"changed. Follow it with `gzipscale watch {location}` instead, or run this command "
        "again once that driver has ended"
    )


class LocalLock:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._file = None

    def acquire(self) -> LocalLock:
        path = self.run_dir / LOCK_FILE
        if not path.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held for the driver's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = None
            for _ in range(5):  # the holder may be between truncate and write
                handle.seek(0)
                try:
                    holder = Holder(**json.loads(handle.read()))
                    break
                except (ValueError, TypeError):
                    time.sleep(0.05)
            handle.close()
            raise _busy(str(self.run_dir), holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(asdict(Holder.me())))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the last descriptor releases the flock
            self._file = None


class Lease:
    def __init__(self, location: str, expiry_s: float | None = None, settle_s: float = 0.2):
        self.location = location
        self.expiry_s = LEASE_EXPIRY_S if expiry_s is None else expiry_s
        self.settle_s = settle_s
        self.fs, root = pafs.FileSystem.from_uri(location)
        self.root = root.rstrip("/")
        self.path = f"{self.root}/{LEASE_FILE}"
        self.holder: Holder | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> Holder | None:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return Holder(**json.loads(f.read().decode()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, OSError):
            return None  # unreadable: treated as absent (a torn write is renewed soon)

    def _write(self, holder: Holder) -> None:
        self.fs.create_dir(self.root, recursive=True)
        with self.fs.open_output_stream(self.path) as f:
            f.write(json.dumps(asdict(holder)).encode())

    def acquire(self) -> Lease:
        current = self.read()
        if current is not None:
            age = time.time() - current.renewed
            if age < current.expiry_s:
                raise _busy(
                    self.location,
                    current,
                    f" (lease renewed {age:.0f} s ago; it expires after "
                    f"{current.expiry_s:.0f} s without renewal)",
                )
        mine = Holder.me(self.expiry_s)
        self._write(mine)
        time.sleep(self.settle_s)
        back = self.read()
        if back is None or back.token != mine.token:
            raise _busy(self.location, back, " (it took the lease at the same moment)")
        self.holder = mine
        self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="sweep-lease")
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.expiry_s / 4):
            current = self.read()
            if current is not None and current.token != self.holder.token:
                self.lost = True  # taken over while this driver stalled: never steal it back
                return
            self.holder = Holder(**{**asdict(self.holder), "renewed": time.time()})
            try:
                self._write(self.holder)
            except OSError:
                pass  # a transient store error; the next beat tries again

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = self.read()
        if self.holder is not None and current is not None and current.token == self.holder.token:
            self.fs.delete_file(self.path)
        self.holder = None


class driver_lock:  # noqa: N801 - used as a context manager, like open()
    """``with driver_lock(run_location):`` holds the sweep for this driver, or raises
    SweepBusy before anything is written."""

    def __init__(self, location: str, expiry_s: float | None = None):
        self.lock = Lease(location, expiry_s) if is_uri(location) else LocalLock(location)

    def __enter__(self):
        return self.lock.acquire()

    def __exit__(self, *exc) -> None:
        self.lock.release()
