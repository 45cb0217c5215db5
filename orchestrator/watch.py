"""``gzipscale watch RUN``, and the live display ``gzipscale sweep`` shows.

Attached to a cluster (``--address``, ``RAY_ADDRESS`` or ``auto``) the fits come from
the sweep's live analysis actor and the header shows the cluster's nodes and devices;
with no cluster reachable everything is read from the run directory, so ``watch`` also
works after ``ray job submit``, and on a finished or killed sweep. Ctrl-C detaches; it
never stops the sweep.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

from rich.text import Text

from gzipscale.helpers import PathNotFound
from gzipscale.vocabulary import ACTOR_NAMESPACE, actor_name

from .sweep_state import OfflineFits, collect

REFRESH_S = 0.5


def cluster_info() -> dict | None:
    import ray

    if not ray.is_initialized():
        return None
    try:
        total, free = ray.cluster_resources(), ray.available_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    except Exception:  # the cluster went away mid-watch: show what the files say
        return None
    return {
        "nodes": nodes,
        "cpu": total.get("CPU", 0.0),
        "cpu_used": total.get("CPU", 0.0) - free.get("CPU", 0.0),
        "gpu": total.get("GPU", 0.0),
        "gpu_used": total.get("GPU", 0.0) - free.get("GPU", 0.0),
    }


class FitSource:
    """The sweep's analysis actor if reachable, else offline fits of results.csv."""

    def __init__(self, run_dir: Path, name: str, offline: bool = True):
        # offline=False inside the sweep's own process: fitting there would take CPU from
        # the trials, and the actor does the same fits anyway.
        self.offline = OfflineFits(run_dir) if offline else None
        self.name = name
        self._actor = None
        self._tried = 0.0

    def attach(self) -> bool:
        import ray

        self._tried = time.monotonic()
        if not ray.is_initialized():
            return False
        try:
            self._actor = ray.get_actor(actor_name(self.name), namespace=ACTOR_NAMESPACE)
        except ValueError:
            self._actor = None
        return self._actor is not None

    def settle(self, timeout: float = 15.0) -> None:
        """Let the actor finish the refit of the last results (for the final frame)."""
        if self._actor is None:
            return
        import ray

        try:
            ray.get(self._actor.wait_for_idle.remote(timeout), timeout=timeout + 5)
        except Exception:
            pass  # the final frame then shows the fits as they are

    def snapshot(self):
        """The fit report (:class:`~gzipscale.analysis.fitreport.FitReport`) now, or None."""
        if self._actor is None and time.monotonic() - self._tried > 2.0:
            self.attach()
        if self._actor is not None:
            import ray

            try:
                snap = ray.get(self._actor.snapshot.remote(), timeout=5)
            except Exception:
                self._actor = None
            else:
                from gzipscale.analysis.fitreport import FitReport

                return FitReport.from_dict(snap["report"])
        if self.offline is None:
            return None
        return self.offline.snapshot()


class LiveDisplay:
    """Refreshes a rich Live display (terminal) or prints plain lines (anything else)
    from the run directory, in a background thread, until stopped."""

    def __init__(
        self,
        run_dir: Path,
        name: str,
        console=None,
        plain: bool | None = None,
        offline_fits: bool = True,
    ):
        from rich.console import Console

        from .display import PlainReporter

        self.run_dir = Path(run_dir)
        self.console = console or Console()
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self.fits = FitSource(self.run_dir, name, offline=offline_fits)
        self.reporter = PlainReporter(write=lambda line: print(line, flush=True))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = None
        self._latest = Text("waiting for the sweep…")

    def view(self):
        return collect(self.run_dir, fits=self.fits.snapshot(), cluster=cluster_info())

    def renderable(self):
        from .display import render

        return render(self.view(), self.console.width)

    def start(self) -> LiveDisplay:
        if not self.plain:
            from rich.live import Live

            self._live = Live(
                console=self.console,
                refresh_per_second=4,
                redirect_stdout=True,
                redirect_stderr=True,
                transient=False,
                get_renderable=lambda: self._latest,
            )
            self._live.start()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        warned = False
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # a display bug must never take the display down
                if not warned:
                    warned = True
                    print(f"live display: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._stop.wait(REFRESH_S)

    def tick(self) -> None:
        try:
            view = self.view()
        except FileNotFoundError:
            return  # the run directory is still being created
        if self.plain:
            self.reporter.update(view)
        else:
            from .display import render

            self._latest = render(view, self.console.width)

    def stop(self, final: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if final:
            self.fits.settle()
            try:
                view = self.view()
            except FileNotFoundError:
                view = None
            if view is not None:
                if self.plain:
                    self.reporter.update(view, force_summary=True)
                else:
                    from .display import render

                    self._latest = render(view, self.console.width)
        if self._live is not None:
            self._live.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def resolve_run_dir(run: str) -> Path:
    path = Path(run)
    if (path / "sweep.json").exists():
        return path
    under = Path("runs") / run
    if (under / "sweep.json").exists():
        return under
    raise PathNotFound(
        f"{run} is not a sweep run directory (no sweep.json there or in runs/{run}); "
        "give the path printed by `gzipscale sweep`"
    )


def _connect(address: str | None) -> bool:
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        return False
    import ray

    try:
        ray.init(
            address=address, namespace=ACTOR_NAMESPACE, logging_level="ERROR", log_to_driver=False
        )
    except Exception:  # no cluster there: watch from the files
        return False
    return True


def cmd_watch(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    run_dir = resolve_run_dir(args.run)
    name = json.loads((run_dir / "sweep.json").read_text())["name"]
    attached = _connect(args.address)
    console = Console()
    display = LiveDisplay(run_dir, name, console=console, plain=args.plain or None)
    if args.once:
        display.fits.offline.wait()
        if display.plain:
            display.reporter.update(display.view(), force_summary=True)
        else:
            console.print(display.renderable())
        return 0
    where = "attached to the cluster" if attached else "reading the run directory"
    print(f"watching {run_dir} ({where}); Ctrl-C detaches, the sweep goes on", file=sys.stderr)
    display.start()
    try:
        while True:
            time.sleep(REFRESH_S)
            view = display.view()
            if view.finished_all and not args.follow:
                break
    except KeyboardInterrupt:
        display.stop(final=False)
        print("detached; the sweep goes on", file=sys.stderr)
        return 0
    if display.fits.offline is not None:
        display.fits.offline.wait()
    display.stop()
    return 0
