"""The ETA of a sweep of mixed shapes, replayed from a recorded run (no cluster).

``tests/data/eta_run`` is a finished 40-run sweep (two grammars, shapes tiny-2..tiny-5,
five nested data sizes, one trial per grammar and shape: 8 trials on 2 slots, 8m22s):
its spec, results.csv, events.log and each trial's params.json and result.json (cut to
the fields the view reads).  The view at time ``t`` is built from a copy holding only
what had been written by ``t``: the events before it, the rows whose "finished" event
came before it, and the results each trial had reported.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pytest

from gzipscale.orchestrator.sweep_state import (
    EVENT_LINE,
    PENDING,
    RUNNING,
    TrialView,
    collect,
    schedule_eta,
)

RUN = Path(__file__).parent / "data" / "eta_run"


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """events.log was written in UTC local time; results carry epoch seconds."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _iso(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def replay(dst: Path, t: float) -> Path:
    """A copy of the recorded run directory as it stood at epoch second ``t``."""
    shutil.copytree(RUN, dst)
    events = (RUN / "events.log").read_text().splitlines()
    kept = [e for e in events if _iso(e.split(" ", 1)[0]) <= t]
    (dst / "events.log").write_text("".join(e + "\n" for e in kept))
    done = set()
    for e in kept:
        m = EVENT_LINE.match(e)
        if m and m.group(2) == "finished":
            done.add((m.group(3), m.group(4), m.group(5)))
    with open(RUN / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if (r["dataset"], r["shape"], r["tokens"]) in done]
        fields = reader.fieldnames
    with open(dst / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for trial in dst.iterdir():
        result = trial / "result.json"
        if result.is_file():
            lines = [
                line
                for line in result.read_text().splitlines()
                if json.loads(line)["timestamp"] <= t
            ]
            if lines:
                result.write_text("".join(line + "\n" for line in lines))
            else:
                result.unlink()
    return dst


def _bounds() -> tuple[float, float]:
    events = (RUN / "events.log").read_text().splitlines()
    stamps = [_iso(e.split(" ", 1)[0]) for e in events]
    return stamps[0], stamps[-1]


def view_at(tmp_path: Path, t: float):
    view = collect(replay(tmp_path / f"at{int(t)}", t))
    view.now = t
    return view


def test_the_recorded_run_is_whole(tmp_path):
    first, last = _bounds()
    view = collect(RUN)
    assert view.finished_all and len(view.runs) == 40 and len(view.trials) == 8
    assert last - first == 8 * 60 + 2  # session start to the last trial's end
    assert all(t.train_s and t.started_at and t.ended_at for t in view.trials)


# Every 20 s from the session start.  Checked: from 25% of the planned FLOPs (the first
# point past 10%, at 11%, is +39%: the first trial's throughput then was a quarter below
# its average over its whole run, and every estimate scales from it) while more than a
# minute is left (in the last minute the last trials, no longer sharing the CPU, speed up
# by half, so their ETA is some 20 s too long).
REPLAY = list(range(20, 500, 20))
FROM_FLOPS = 0.25
TOLERANCE = 0.25
LAST_S = 60.0


def replay_errors(tmp_path, eta=lambda view: view.eta()):
    first, last = _bounds()
    out = []
    for offset in REPLAY:
        t = first + offset
        view = view_at(tmp_path, t)
        flops = view.done_flops / view.total_flops
        if flops < 0.1:
            continue
        actual = last - t
        estimate = eta(view)
        out.append((offset, flops, actual, estimate, (estimate - actual) / actual))
    return out


def describe(errors) -> str:
    return "\n".join(
        f"t={o:4d}s FLOPs {f:4.0%} actual {a:5.0f}s ETA {e:5.0f}s error {x:+5.0%}"
        for o, f, a, e, x in errors
    )


def test_eta_within_a_quarter_of_the_real_remaining_time(tmp_path):
    errors = replay_errors(tmp_path)
    print("\n" + describe(errors))
    checked = [e for e in errors if e[1] >= FROM_FLOPS and e[2] > LAST_S]
    assert len(checked) >= 15
    assert all(abs(x) <= TOLERANCE for *_, x in checked), describe(checked)


def test_the_flops_rate_estimate_is_what_the_schedule_replaces(tmp_path):
    """The old estimate, kept as the fallback, is off by more than a quarter here."""
    errors = replay_errors(tmp_path, eta=lambda view: view.flops_rate_eta())
    print("\n" + describe(errors))
    checked = [e for e in errors if e[1] >= FROM_FLOPS and e[2] > LAST_S]
    assert max(abs(x) for *_, x in checked) > TOLERANCE


def test_schedule_of_mixed_shapes_on_two_slots():
    """A constructed view: two big trials running, three small ones pending, two slots."""

    def running():
        t = TrialView("d", "big", 1_000_000, 1000, 6e9, RUNNING, started_at=-5.0)
        t.done_flops, t.train_s, t.reported_at, t.tokens_per_s = 3e9, 50.0, 50.0, 10.0
        return t

    small = [TrialView("e", "small", 250_000, 1000, 1.5e9, PENDING) for _ in range(3)]
    # big: 500 tokens left at 10 tokens/s = 50 s each; start-up: 55 s from its start to
    # its last result, 50 s of them training = 5 s; small: 0.1 s/token x (1/4)^0.5 =
    # 0.05 s/token x 1000 tokens = 50 s + 5 s each, two after each other on one slot.
    assert schedule_eta([running(), running(), *small], now=50.0) == pytest.approx(160.0)
    # Nothing measured: no estimate from the schedule (the view falls back to FLOPs).
    assert schedule_eta(small, now=50.0) is None
