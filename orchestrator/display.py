"""Drawing a :class:`~orchestrator.sweep_state.SweepView`: a rich live display, or plain lines.

:func:`render` returns one rich renderable for a console width: a header, one panel per
grammar (its shape x data-size grid and its current fit), the regression on H once three
grammars have fits, and the latest events. From 80 columns up; under 110 the grid is
compact (losses to 2 decimals, no parameter column). Every fit line is one line at any
width (shortened with an ellipsis, never wrapped): which kind of fit drives ("E at floor
0.724" or "free"), α and β with their intervals, and the verdict -- "identified", or a red
"not identified:" with the first identification flag's sentence.  A frontier exponent is
never shown as a finding when it cannot be one: from a fit that is not identified (flags,
or an impossible law), or regressed on H where it leaves (0, 1), where the regressed law
is impossible (a negative α or β, even with a inside (0, 1)), or where it rests on fits
that are not identified. It is then labelled "not identified" with the reasons, and the
values are shown as "not a finding" (dim), never with the sentence that reads a trend
from them.

:class:`PlainReporter` is for logs and pipes: one line per new event and a summary line
every ``every_s`` seconds, no control codes.
"""

from __future__ import annotations

import math
import time

from rich.cells import cell_len
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gzipscale.analysis.law import LAW_NAMES
from gzipscale.analysis.regression import law_problems
from gzipscale.vocabulary import FAILED, FINISHED, FLOOR_FIT, RUNNING

from .sweep_state import SweepView

WIDE = 110
PANEL_CHROME = 4  # a panel's borders and padding, in columns
EVENTS_SHOWN = 6
EVENTS_MIN = 3  # events a fitted frame keeps room for before it keeps a grammar's panel
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


def _fit_width(text: Text, width: int | None) -> Text:
    """``text`` cut to ``width`` cells with an ellipsis (a wrapped line in a live display
    leaves stale rows behind); unchanged when ``width`` is None (plain output)."""
    if width is not None and text.cell_len > width:
        text.truncate(width, overflow="ellipsis")
    return text


def _one_line(*parts, width: int | None) -> Text:
    """One display line from (text, style) parts, never wider than ``width``."""
    return _fit_width(Text.assemble(*parts, no_wrap=True, overflow="ellipsis"), width)


def _first_fitting(candidates: list[str], width: int | None) -> str:
    """The first (richest) of ``candidates`` that fits ``width``, else the last."""
    if width is not None:
        for text in candidates:
            if cell_len(text) <= width:
                return text
    return candidates[-1] if width is not None else candidates[0]


def floor_text(floor) -> str:
    """A dataset's floor as the panels write it: ``floor 0.7241±0.0012``."""
    return f"floor {floor.nats_per_token:.4g}±{floor.stderr:.2g}"


def kind_text(fit) -> str:
    """Which kind of fit this is: ``E at floor 0.7241`` or ``free``."""
    if fit.kind == FLOOR_FIT:
        at = fit.floor.nats_per_token if fit.floor is not None else fit.law.E
        return f"E at floor {_num(at, '.4g')}"
    return "free"


def fit_problems(fit) -> list[str]:
    """Every reason ``fit`` is not a finding, as sentences: its identification flags, then
    what makes its law impossible (a law with a non-positive or non-finite exponent is
    never shown unflagged, even from a fit without intervals to raise a flag)."""
    reasons = [flag.sentence for flag in fit.flags]
    problems = law_problems(fit.law)
    if problems:
        reasons.append(f"the law is impossible: {'; '.join(problems.values())}.")
    return reasons


def verdict_text(fit, width: int | None) -> Text:
    """One line: a green "identified" (with what was fitted), or a red "not identified:"
    and the first reason, shortened to ``width`` (the count of further reasons kept)."""
    reasons = fit_problems(fit)
    if not reasons:
        facts = [f"{fit.n_points} runs fitted"]
        if fit.left_at_floor:
            facts.append(f"{fit.left_at_floor} at floor left out")
        if not math.isnan(fit.rms_log_residual):
            facts.append(f"RMS log residual {fit.rms_log_residual:.3f}")
        if fit.intervals is None:
            facts.append("α, β unchecked: no bootstrap intervals")
        return _one_line(("identified", "bold green"), f" ({', '.join(facts)})", width=width)
    more = len(reasons) - 1
    suffix = f" (+{more} more flag{'s' * (more > 1)})" if more else ""
    head = "not identified:"
    sentence = Text(reasons[0])
    if width is not None:
        if width - len(head) - 1 - len(suffix) < 12:
            suffix = ""  # too narrow for the count: the first reason goes first
        _fit_width(sentence, max(10, width - len(head) - 1 - len(suffix)))
    return _one_line((head, "bold red"), " ", sentence, suffix, width=width)


def law_text(fit, wide: bool, width: int | None, lead: str = "fit") -> str:
    """The law on one line: which kind it is, then its free parameters, α and β with
    their intervals; E, A and B lose their intervals, then A and B their place, as the
    width shrinks (a free E stays: it is what a floor judges)."""
    keys = [k for k in LAW_NAMES if not (k == "E" and fit.kind == FLOOR_FIT)]

    def term(key: str, interval: bool) -> str:
        value = f"{SYMBOLS[key]}={_num(getattr(fit.law, key))}"
        return value + (_interval(fit, key) if interval else "")

    head = f"{lead} ({kind_text(fit)}): "
    exponents = {"alpha", "beta"}
    candidates = [
        [term(k, True) for k in keys],
        [term(k, k in exponents) for k in keys],
        [term(k, k in exponents) for k in keys if k not in ("A", "B")],
    ]
    if not wide:
        candidates = candidates[1:]
    return _first_fitting([head + "  ".join(c) for c in candidates], width)


def compact_law_text(fit, lead: str) -> str:
    """The law without intervals, A or B: ``vs (free): E=0.41  α=0.12  β=0.3``."""
    keys = [k for k in LAW_NAMES if k not in ("A", "B")]
    if fit.kind == FLOOR_FIT:
        keys.remove("E")
    terms = "  ".join(f"{SYMBOLS[k]}={_num(getattr(fit.law, k))}" for k in keys)
    return f"{lead} ({kind_text(fit)}): {terms}"


def frontier_text(fit, width: int | None) -> Text:
    """The frontier exponent, with its interval and tokens per parameter; from a fit that
    is not identified it is labelled "not identified" (it is a function of α and β)."""
    a = f"a=β/(α+β)={_num(fit.law.n_opt_exponent, '.3f')}{_interval(fit, 'n_opt_exponent')}"
    if fit_problems(fit):
        return _one_line(
            (a, "dim"), ("  not identified: law flagged, not a finding", "red"), width=width
        )
    if fit.frontier is not None:
        tpp = float(fit.frontier.tokens_per_parameter)
        a += f"  D/N={_num(tpp)} at C={float(fit.frontier.C):.0e}"
    return _one_line(a, width=width)


def comparison_text(fit, width: int | None) -> Text:
    """The other kind of fit on one line: its E and exponents (dim), then its verdict
    shortened to what is left of ``width``."""
    law = Text(compact_law_text(fit, lead="vs"), style="dim")
    rest = None if width is None else width - law.cell_len - 3
    return _fit_width(Text.assemble(law, " · ", verdict_text(fit, rest)), width)


def fit_text(ds, wide: bool, width: int | None = None) -> Text:
    """A dataset's fit, one line each: the law (which kind drives, α and β with their
    intervals), its verdict, the frontier exponent, the bootstrap policy of the
    intervals, and the other kind of fit (where both were made). ``width`` (the panel's
    inside) shortens each line to fit; None leaves them whole (plain output)."""
    if not ds.fit:
        note = ds.note or "waiting for at least 6 finished runs"
        lines = [_one_line((f"fit: {note}", "dim"), width=width)]
        if ds.comparison is not None:  # the driving kind failed; the other was made
            lines.append(comparison_text(ds.comparison, width))
        return Text("\n", no_wrap=True, overflow="ellipsis").join(lines)
    fit = ds.fit
    lines = [
        _one_line(law_text(fit, wide, width), width=width),
        verdict_text(fit, width),
        frontier_text(fit, width),
    ]
    if fit.bootstrap is not None:
        lines.append(_one_line(f"intervals: {fit.bootstrap.policy.describe()}", width=width))
    other = ds.comparison
    if other is not None:
        lines.append(comparison_text(other, width))
    elif ds.comparison_note:
        lines.append(_one_line((f"no comparison fit: {ds.comparison_note}", "dim"), width=width))
    return Text("\n", no_wrap=True, overflow="ellipsis").join(lines)


def grammar_panel(view: SweepView, ds, wide: bool, width: int | None = None) -> Panel:
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
    floor = next((f.floor for f in (ds.fit, ds.comparison) if f is not None), None)
    if floor is not None:
        title += f" {floor_text(floor)}"
    done = sum(r.state == FINISHED for r in grid.values())
    subtitle = f"{done}/{len(grid)} runs"
    inside = None if width is None else width - PANEL_CHROME
    return Panel(
        Group(table, fit_text(ds, wide, inside)),
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


def regression_doubts(view: SweepView) -> tuple[list[str], list[str]]:
    """Why the regression's frontier exponent is not a finding: (where it is impossible --
    outside (0, 1), or from a regressed law that is impossible there, such as negative α
    and β whose ratio lies inside (0, 1) -- with what breaks the law there; which fits
    behind it are not identified).  Both empty: nothing to doubt."""
    reg = view.report.regression
    impossible = []
    shift = frontier_shift(reg)
    if shift:
        lo, a_lo, hi, a_hi = shift
        for h, a in ((lo, a_lo), (hi, a_hi)):
            why = "; ".join(reg.problems_at(h).values())
            if not 0 < a < 1:  # NaN too
                impossible.append(
                    f"a = {_num(a, '.3f')} at H={h:.2f} is outside (0, 1)"
                    + (f": {why}" if why else "")
                )
            elif why:
                impossible.append(f"the regressed law at H={h:.2f} is impossible: {why}")
    fits = view.report.datasets
    behind = [n for n in reg.names if n in fits and fit_problems(fits[n])]
    unidentified = []
    if behind:
        unidentified.append(
            f"{len(behind)} of {len(reg.names)} fits behind it not identified ({', '.join(behind)})"
        )
    return impossible, unidentified


def regression_panel(view: SweepView, wide: bool, width: int | None = None) -> Panel | None:
    reg = view.report.regression if view.report else None
    note = view.report.regression_note if view.report else None
    fitted = sum(1 for d in view.datasets if d.fit)
    inside = None if width is None else width - PANEL_CHROME
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
    if wide:  # the five parameters three to a line
        lines = ["   ".join(lines[:3]), "   ".join(lines[3:])]
    body = [_one_line(line, width=inside) for line in lines]
    shift = frontier_shift(reg)
    if shift:
        lo, a_lo, hi, a_hi = shift
        impossible, unidentified = regression_doubts(view)
        values = f"{_num(a_lo, '.3f')} at H={lo:.2f} → {_num(a_hi, '.3f')} at H={hi:.2f}"
        if impossible or unidentified:
            line = Text(
                _first_fitting(
                    [
                        f"frontier exponent a = β/(α+β) not identified (not a finding): {values}",
                        f"frontier exponent a = β/(α+β) not identified: {values}",
                        f"frontier a = β/(α+β) not identified: {values}",
                    ],
                    inside,
                ),
                style="dim",
            )
            line.highlight_words(["not identified"], "bold red")
            body.append(_fit_width(line, inside))
            for why in impossible + unidentified:
                body.append(_one_line(("  not identified: ", "bold red"), why, width=inside))
        else:
            more = "  (more data per parameter as H grows)" if a_hi < a_lo else ""
            body.append(_one_line(f"frontier exponent a = β/(α+β): {values}{more}", width=inside))
    return Panel(
        Text("\n", no_wrap=True, overflow="ellipsis").join(body),
        title=f"regression on H ({len(reg.H)} grammars)",
        title_align="left",
    )


def regression_line(view: SweepView) -> str | None:
    """The regression's frontier exponent as one plain line (labelled not identified, with
    why, when it is not a finding), or None before there is a regression."""
    reg = view.report.regression if view.report else None
    shift = frontier_shift(reg) if reg is not None else None
    if not shift:
        return None
    lo, a_lo, hi, a_hi = shift
    values = f"{_num(a_lo, '.3f')} at H={lo:.2f} → {_num(a_hi, '.3f')} at H={hi:.2f}"
    impossible, unidentified = regression_doubts(view)
    head = f"  regression on H ({len(reg.H)} grammars): frontier exponent a = β/(α+β)"
    if not (impossible or unidentified):
        return f"{head} {values}"
    line = f"{head} not identified (not a finding): {values}"
    for why in impossible + unidentified:
        line += f"; not identified: {why}"
    return line


def events_panel(view: SweepView, width: int, shown: int = EVENTS_SHOWN) -> Panel:
    """The most recent ``shown`` events (at least one), one line each."""
    lines = []
    for line in view.events[-max(1, shown) :]:
        stamp, _, rest = line.partition(" ")
        lines.append(f"{stamp[-8:]} {rest}"[: max(20, width - 4)])
    return Panel(
        Text(
            "\n".join(lines) or "no events yet",
            style="dim" if not lines else "",
            no_wrap=True,
            overflow="ellipsis",
        ),
        title="events",
        title_align="left",
    )


def grammar_line(view: SweepView, ds, width: int) -> Text:
    """A grammar collapsed to one line: its name, H, runs done, and its fit's law and
    verdict (or why there is none)."""
    grid = view.grid(ds.name)
    done = sum(r.state == FINISHED for r in grid.values())
    running = sum(r.state == RUNNING for r in grid.values())
    h = f"H={ds.gzip:.3f}" if ds.gzip is not None else "H=…"
    runs = f"{done}/{len(grid)} runs" + (f", {running} running" if running else "")
    head = (f"▸ {ds.name} ({ds.grammar}) {h} · {runs} · ", "bold")
    if ds.fit is None:
        note = ds.note or "waiting for at least 6 finished runs"
        return _one_line(head, (f"fit: {note}", "dim"), width=width)
    verdict = ("not identified", "bold red") if fit_problems(ds.fit) else ("identified", "green")
    a = f" · a={_num(ds.fit.law.n_opt_exponent, '.3f')} · "
    return _one_line(head, verdict, a, compact_law_text(ds.fit, lead="fit"), width=width)


def _height(console, options, renderable, width: int) -> int:
    return len(console.render_lines(renderable, options.update(width=width, height=None)))


class Frame:
    """The display, fitted to the terminal: never wider than ``width`` and, where a height
    is known (``height``, else a terminal's), never taller.  What does not fit is
    chosen away in this order: finished grammars collapse to one line each, then those
    with no run running, then the regression panel to one line, then the grammars with
    runs running, then the collapsed grammars share lines (name and runs done only);
    the events panel takes the rest of the height, showing the most recent events that
    fit (``EVENTS_MIN`` while anything can still give way, at least the latest)."""

    def __init__(self, view: SweepView, width: int, height: int | None = None):
        self.view, self.width, self.height = view, width, height

    def __rich_console__(self, console, options):
        height = self.height
        if height is None and console.is_terminal:
            height = options.max_height
        yield from self.parts(console, options, height)

    def parts(self, console, options, height: int | None) -> list:
        view, width = self.view, self.width
        wide = width >= WIDE
        header = [_one_line(line, width=width) for line in header_text(view).plain.split("\n")]
        for line in header:
            line.stylize("bold")
        panels = {ds.name: grammar_panel(view, ds, wide, width) for ds in view.datasets}
        reg = regression_panel(view, wide, width)
        if height is None:  # plain output to a file: everything
            return [*header, *panels.values(), *([reg] if reg else []), events_panel(view, width)]

        lines = {ds.name: grammar_line(view, ds, width) for ds in view.datasets}
        full = {name: _height(console, options, p, width) for name, p in panels.items()}
        reg_line = regression_line(view)
        reg_full = _height(console, options, reg, width) if reg is not None else 0
        events_min = 2 + min(EVENTS_MIN, max(1, len(view.events)))  # borders and events

        def finished(ds) -> int:
            grid = view.grid(ds.name).values()
            if all(r.state in (FINISHED, FAILED) for r in grid):
                return 0
            return 2 if any(r.state == RUNNING for r in grid) else 1

        order = sorted(view.datasets, key=finished)
        idle = [ds.name for ds in order if finished(ds) < 2]
        busy = [ds.name for ds in order if finished(ds) == 2]
        collapsed: set[str] = set()
        reg_short = False
        packed: list[Text] | None = None
        reg_gone = False

        def used() -> int:
            if packed is not None:
                grammar = len(packed)
            else:
                grammar = sum(1 if n in collapsed else full[n] for n in full)
            if reg is None or reg_gone:
                reg_h = 0
            else:
                reg_h = (1 if reg_line else 0) if reg_short else reg_full
            return len(header) + grammar + reg_h

        steps = [*idle, "regression", *busy, "pack"]
        while used() + events_min > height and steps:
            step = steps.pop(0)
            if step == "regression":
                reg_short = True
            elif step == "pack":
                packed = self._packed(view, width)
            else:
                collapsed.add(step)
        if packed is not None and used() + 3 > height:  # more grammars than rows
            reg_gone = True
            room = max(1, height - len(header) - 3)
            if len(packed) > room:
                more = len(view.datasets) - sum(
                    line.plain.count(" · ") + 1 for line in packed[: room - 1]
                )
                packed = [
                    *packed[: room - 1],
                    _one_line(f"… and {more} more grammars", width=width),
                ]

        out = list(header)
        if packed is not None:
            out += packed
        else:
            out += [
                lines[ds.name] if ds.name in collapsed else panels[ds.name] for ds in view.datasets
            ]
        if reg is not None and not reg_gone:
            if not reg_short:
                out.append(reg)
            elif reg_line:
                out.append(_one_line(reg_line.strip(), width=width))
        shown = max(1, height - used() - 2)
        out.append(events_panel(view, width, shown))
        return out

    @staticmethod
    def _packed(view: SweepView, width: int) -> list[Text]:
        """Every grammar as a short item (name and runs done), as many to a line as fit."""
        items = []
        for ds in view.datasets:
            grid = view.grid(ds.name)
            done = sum(r.state == FINISHED for r in grid.values())
            items.append(f"{ds.name} {done}/{len(grid)}")
        out, line = [], ""
        for item in items:
            if line and cell_len(line) + 3 + cell_len(item) > width:
                out.append(_one_line(line, width=width))
                line = ""
            line = f"{line} · {item}" if line else item
        if line:
            out.append(_one_line(line, width=width))
        return out


def render(view: SweepView, width: int, height: int | None = None):
    """The display for a terminal ``width`` columns wide and ``height`` rows tall (None:
    the terminal's when it renders on one, else as tall as it takes)."""
    return Frame(view, width, height)


class PlainReporter:
    """Plain lines for non-terminals: each new event once, a summary now and then."""

    def __init__(self, every_s: float = 30.0, write=print):
        self.every_s = every_s
        self.write = write
        self._seen = 0
        self._last_summary: float | None = None  # the first update always summarises
        self._last_header = ""

    def update(self, view: SweepView, force_summary: bool = False) -> None:
        if self._seen > len(view.events):  # events.log was rotated or replaced
            self._seen = 0
        for line in view.events[self._seen :]:
            self.write(line)
        self._seen = len(view.events)
        now = time.monotonic()
        due = self._last_summary is None or now - self._last_summary >= self.every_s
        if force_summary or due:
            self._last_summary = now
            self.write(header_line(view))
            for ds in view.datasets:
                grid = view.grid(ds.name)
                done = sum(r.state == FINISHED for r in grid.values())
                lines = fit_text(ds, wide=True).plain.split("\n")
                fit = "; ".join(line.strip() for line in lines)
                h = f"{ds.gzip:.3f}" if ds.gzip is not None else "?"
                floor = next((f.floor for f in (ds.fit, ds.comparison) if f is not None), None)
                if floor is not None:
                    h += f" {floor_text(floor)}"
                self.write(f"  {ds.name} H={h}: {done}/{len(grid)} runs; {fit}")
            line = regression_line(view)
            if line is not None:
                self.write(line)
