"""Drawing a :class:`~orchestrator.sweep_state.SweepView`: a rich live display, or plain lines.

:func:`render` returns one rich renderable for a console width: a header, one panel per
grammar (its shape x data-size grid and its current fit), the regression on H once three
grammars have fits, and the latest events. From 80 columns up; under 110 the grid is
compact (losses to 2 decimals, no parameter column) and the fit takes two lines.

:class:`PlainReporter` is for logs and pipes: one line per new event and a summary line
every ``every_s`` seconds, no control codes.
"""

from __future__ import annotations

import math
import time

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gzipscale.analysis.law import LAW_NAMES
from gzipscale.vocabulary import FAILED, FINISHED, RUNNING

from .sweep_state import SweepView

WIDE = 110
EVENTS_SHOWN = 6
SYMBOLS = {"E": "E", "A": "A", "B": "B", "alpha": "α", "beta": "β"}


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def header_line(view: SweepView) -> str:
    """The header as one line (plain output)."""
    return " · ".join(header_parts(view))


def header_text(view: SweepView) -> Text:
    """The header as two lines, each short enough for 80 columns (a wrapped line in a
    live display leaves stale rows behind on some terminals)."""
    parts = header_parts(view)
    return Text(" · ".join(parts[:3]) + "\n" + " · ".join(parts[3:]), style="bold")


def header_parts(view: SweepView) -> list[str]:
    total = len(view.runs)
    done, running, failed = view.count(FINISHED), view.count(RUNNING), view.count(FAILED)
    flops = view.done_flops / view.total_flops if view.total_flops else 0.0
    eta = view.eta()
    parts = [
        f"sweep {view.name}",
        f"elapsed {fmt_duration(view.elapsed())}",
        f"runs {done} done / {running} running / {failed} failed / {total}",
        f"FLOPs {view.done_flops:.2e}/{view.total_flops:.2e} ({flops:.0%})",
        "finished" if view.finished_all else f"ETA {fmt_duration(eta)}",
    ]
    if view.cluster:
        c = view.cluster
        parts.append(
            f"{c['nodes']} node{'s' if c['nodes'] != 1 else ''}, "
            f"CPU {c['cpu_used']:g}/{c['cpu']:g}, GPU {c['gpu_used']:g}/{c['gpu']:g}"
        )
    return parts


def _cell(run, wide: bool) -> Text:
    if run is None:
        return Text("")
    mark = "↻" if run.retries else ""
    if run.state == FINISHED:
        value = f"{run.val_loss:.3f}" if wide else f"{run.val_loss:.2f}"
        return Text(mark + value, style="green")
    if run.state == FAILED:
        return Text(mark + "failed", style="bold red")
    if run.state == RUNNING:
        pct = f"{run.progress:.0%}" if run.steps else "…"
        return Text(f"{mark}▶{pct}", style="yellow")
    return Text("·", style="dim")


def _num(value, spec: str = ".3g") -> str:
    """A number for the display; a fit can hold NaN (None in the actor's JSON)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def _interval(fit, key: str) -> str:
    bounds = fit.interval(key)
    return "" if bounds is None else f" [{bounds[0]:.3g}, {bounds[1]:.3g}]"


def fit_text(ds, wide: bool) -> Text:
    """A dataset's fit: the law (with intervals when wide), the frontier exponent with its
    interval and tokens per parameter, and the bootstrap policy of those intervals."""
    if not ds.fit:
        note = ds.note or "waiting for at least 6 finished runs"
        return Text(f"fit: {note}", style="dim")
    fit = ds.fit
    law = "  ".join(
        f"{SYMBOLS[key]}={_num(getattr(fit.law, key))}{_interval(fit, key) if wide else ''}"
        for key in LAW_NAMES
    )
    frontier = f"a=β/(α+β)={_num(fit.law.n_opt_exponent, '.3f')}{_interval(fit, 'n_opt_exponent')}"
    if fit.frontier is not None:
        tpp = float(fit.frontier.tokens_per_parameter)
        frontier += f"  D/N={_num(tpp)} at C={float(fit.frontier.C):.0e}"
    lines = [f"fit: {law}", frontier]
    if fit.bootstrap is not None:
        lines.append(f"intervals: {fit.bootstrap.policy.describe()}")
    return Text("\n".join(lines))


def grammar_panel(view: SweepView, ds, wide: bool) -> Panel:
    grid = view.grid(ds.name)
    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1))
    table.add_column("shape", style="bold", no_wrap=True)
    if wide:
        table.add_column("N", justify="right", no_wrap=True)
    for size in view.sizes:
        table.add_column(f"D={fmt_count(size)}", justify="right", no_wrap=True)
    for shape in view.shapes:
        runs = [grid.get((shape, size)) for size in view.sizes]
        params = next((r.params for r in runs if r is not None), 0)
        cells = [_cell(r, wide) for r in runs]
        table.add_row(shape, *([fmt_count(params)] if wide else []), *cells)
    h = f"H={ds.gzip:.3f}" if ds.gzip is not None else "H=…"
    title = f"{ds.name} ({ds.grammar}) {h}"
    done = sum(r.state == FINISHED for r in grid.values())
    subtitle = f"{done}/{len(grid)} runs"
    return Panel(
        Group(table, fit_text(ds, wide)),
        title=title,
        title_align="left",
        subtitle=subtitle,
        subtitle_align="right",
        padding=(0, 1),
    )


def frontier_shift(regression) -> tuple[float, float, float, float] | None:
    """a = β/(α+β) of the law the regression predicts at its lowest and highest H."""
    if not regression.H:
        return None
    lo, hi = min(regression.H), max(regression.H)
    return lo, regression.law_at(lo).n_opt_exponent, hi, regression.law_at(hi).n_opt_exponent


def regression_panel(view: SweepView, wide: bool) -> Panel | None:
    reg = view.report.regression if view.report else None
    note = view.report.regression_note if view.report else None
    fitted = sum(1 for d in view.datasets if d.fit)
    if reg is None:
        if fitted >= 3 and note:
            return Panel(Text(note, style="dim"), title="regression on H")
        return None
    lines = []
    for key in LAW_NAMES:
        t = reg.terms.get(key)
        if t is None or math.isnan(t.intercept) or math.isnan(t.slope):
            continue
        lines.append(
            f"{SYMBOLS[key]} = {t.intercept:.3g} {'+' if t.slope >= 0 else '-'} "
            f"{abs(t.slope):.3g}·H   p={_num(t.pvalue, '.2g')}"
            + (f"  R²={_num(t.r_squared, '.2f')}" if wide else "")
        )
    shift = frontier_shift(reg)
    if shift:
        lo, a_lo, hi, a_hi = shift
        lines.append(
            f"frontier exponent a = β/(α+β): {a_lo:.3f} at H={lo:.2f} → {a_hi:.3f} at H={hi:.2f}"
            + ("  (more data per parameter as H grows)" if a_hi < a_lo else "")
        )
    if wide:  # the five parameters three to a line, then the frontier shift
        terms, rest = lines[:5], lines[5:]
        body = "\n".join(["   ".join(terms[:3]), "   ".join(terms[3:]), *rest])
    else:
        body = "\n".join(lines)
    return Panel(Text(body), title=f"regression on H ({len(reg.H)} grammars)", title_align="left")


def events_panel(view: SweepView, width: int) -> Panel:
    shown = view.events[-EVENTS_SHOWN:]
    lines = []
    for line in shown:
        stamp, _, rest = line.partition(" ")
        lines.append(f"{stamp[-8:]} {rest}"[: max(20, width - 4)])
    return Panel(
        Text("\n".join(lines) or "no events yet", style="dim" if not lines else ""),
        title="events",
        title_align="left",
    )


def render(view: SweepView, width: int):
    wide = width >= WIDE
    parts = [header_text(view)]
    parts += [grammar_panel(view, ds, wide) for ds in view.datasets]
    reg = regression_panel(view, wide)
    if reg is not None:
        parts.append(reg)
    parts.append(events_panel(view, width))
    return Group(*parts)


class PlainReporter:
    """Plain lines for non-terminals: each new event once, a summary now and then."""

    def __init__(self, every_s: float = 30.0, write=print):
        self.every_s = every_s
        self.write = write
        self._seen = 0
        self._last_summary = 0.0
        self._last_header = ""

    def update(self, view: SweepView, force_summary: bool = False) -> None:
        if self._seen > len(view.events):  # events.log was rotated or replaced
            self._seen = 0
        for line in view.events[self._seen :]:
            self.write(line)
        self._seen = len(view.events)
        now = time.monotonic()
        if force_summary or now - self._last_summary >= self.every_s:
            self._last_summary = now
            self.write(header_line(view))
            for ds in view.datasets:
                grid = view.grid(ds.name)
                done = sum(r.state == FINISHED for r in grid.values())
                fit = fit_text(ds, wide=True).plain.replace("\n", " ")
                h = f"{ds.gzip:.3f}" if ds.gzip is not None else "?"
                self.write(f"  {ds.name} H={h}: {done}/{len(grid)} runs; {fit}")
