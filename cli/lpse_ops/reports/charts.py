"""The reports' charts: matplotlib figures rendered to inline SVG, labelled in Bahasa Indonesia.

Every function takes typed report rows and returns an ``<svg>`` element as text, or None when
there is nothing to draw (the template then says "tidak ada data"). No pyplot (no global figure
state), the Agg canvas only, text kept as SVG text (searchable, and the PDF's text layer), and a
fixed hash salt so the same data gives the same SVG. Dates on axes use our own Indonesian month
abbreviations, never the machine's locale.
"""

from __future__ import annotations

import io
import re
import statistics
from collections.abc import Sequence
from datetime import date, datetime, time

import matplotlib

matplotlib.use("Agg")

from matplotlib import dates as mdates  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

MONTHS_SHORT = ("Jan", "Feb", "Mar", "Apr", "Mei", "Jun", "Jul", "Agu", "Sep", "Okt", "Nov", "Des")
MAX_LINES = 8
"""More sites than this are drawn as the fleet's median and worst line, not one line each."""
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "lpse-ops-report", "font.family": "DejaVu Sans",
         "font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
         "grid.alpha": 0.3}
PREVIOUS_COLOUR, CURRENT_COLOUR, TARGET_COLOUR, BAD_COLOUR = "#9aa9b8", "#1f5f99", "#c0392b", "#c0392b"


def _svg(figure: Figure, title: str) -> str:
    """Return *figure* as an ``<svg>`` element (no XML prolog) with an accessible *title*."""
    buffer = io.StringIO()
    with matplotlib.rc_context(STYLE):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<svg ", f'<svg role="img" aria-label="{title}" class="chart" ', text, count=1)
    return text


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(STYLE):
        return Figure(figsize=(width, height), dpi=96, layout="constrained")


def _day_label(value: float, _position: int) -> str:
    day = mdates.num2date(value)
    return f"{day.day} {MONTHS_SHORT[day.month - 1]}"


def _decimal(value: float, _position: int) -> str:
    return f"{value:g}".replace(".", ",")


def _as_datetime(day: date) -> datetime:
    return datetime.combine(day, time(12))


def utilisation(daily: dict[str, Sequence], period_label: str, first: date | None = None,
                last: date | None = None) -> str | None:
    """Return the daily disk, memory and load chart of the sites (``DailyPoint`` rows per host) over the
    days *first* to *last* (WIB), or None when there is no point."""
    series = {host: points for host, points in daily.items() if points}
    if not series:
        return None
    with matplotlib.rc_context(STYLE):
        figure = _figure(7.2, 6.0)
        axes = figure.subplots(3, 1, sharex=True)
        panels = (("disk_max", "Disk terpakai (%) tertinggi", (0, 100)),
                  ("memory_min", "Memori tersedia (%) terendah", (0, 100)),
                  ("load_per_cpu_max", "Beban 5 menit per CPU tertinggi", None))
        for axis, (name, label, limits) in zip(axes, panels, strict=True):
            if len(series) <= MAX_LINES:
                for host, points in sorted(series.items()):
                    xs = [_as_datetime(point.day) for point in points if getattr(point, name) is not None]
                    ys = [getattr(point, name) for point in points if getattr(point, name) is not None]
                    axis.plot(xs, ys, marker="o", markersize=2.5, linewidth=1.3, label=host)
            else:
                days = sorted({point.day for points in series.values() for point in points})
                by_day = {day: [getattr(point, name) for points in series.values() for point in points
                                if point.day == day and getattr(point, name) is not None] for day in days}
                worst = max if name != "memory_min" else min
                xs = [_as_datetime(day) for day in days if by_day[day]]
                axis.plot(xs, [statistics.median(by_day[day]) for day in days if by_day[day]],
                          linewidth=1.5, label="median armada")
                axis.plot(xs, [worst(by_day[day]) for day in days if by_day[day]], linewidth=1.2,
                          color=BAD_COLOUR, label="situs terburuk")
            axis.set_title(label, loc="left", fontsize=9)
            if limits:
                axis.set_ylim(*limits)
            axis.yaxis.set_major_locator(MaxNLocator(5))
            axis.yaxis.set_major_formatter(FuncFormatter(_decimal))
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        axes[-1].xaxis.set_major_formatter(FuncFormatter(_day_label))
        axes[-1].xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=8))
        if first and last:
            axes[-1].set_xlim(datetime.combine(first, time(0)), datetime.combine(last, time(23, 59)))
        axes[-1].set_xlabel(f"Tanggal ({period_label}, WIB)")
        return _svg(figure, f"Pemanfaatan sumber daya harian, {period_label}")


def trend(rows: Sequence, previous_label: str, current_label: str) -> str | None:
    """Return grouped bars of each priority and the requests, previous against current period, or None."""
    if not rows or not any(row.previous or row.current for row in rows):
        return None
    with matplotlib.rc_context(STYLE):
        figure = _figure(7.2, 2.8)
        axis = figure.subplots()
        positions = list(range(len(rows)))
        width = 0.38
        before = axis.bar([p - width / 2 for p in positions], [row.previous for row in rows], width,
                          color=PREVIOUS_COLOUR, label=previous_label)
        now = axis.bar([p + width / 2 for p in positions], [row.current for row in rows], width,
                       color=CURRENT_COLOUR, label=current_label)
        axis.bar_label(before, fontsize=8)
        axis.bar_label(now, fontsize=8)
        axis.set_xticks(positions, [row.label for row in rows])
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel("Jumlah")
        axis.legend(frameon=False, fontsize=8)
        return _svg(figure, f"Gangguan per prioritas dan permintaan layanan, {previous_label} dan {current_label}")


def audit_scores(rows: Sequence) -> str | None:
    """Return bars of each site's audit score (with its previous score as a marker), or None."""
    scored = [row for row in rows if row.score is not None]
    if not scored:
        return None
    with matplotlib.rc_context(STYLE):
        figure = _figure(7.2, 0.5 + 0.35 * len(scored))
        axis = figure.subplots()
        names = [row.site for row in scored]
        bars = axis.barh(names, [row.score for row in scored], color=CURRENT_COLOUR, label="skor terakhir")
        axis.bar_label(bars, fmt="%.0f", fontsize=8, padding=2)
        previous = [(row.site, row.previous_score) for row in scored if row.previous_score is not None]
        if previous:
            axis.scatter([score for _, score in previous], [name for name, _ in previous], marker="|", s=200,
                         color=TARGET_COLOUR, zorder=3, label="skor sebelumnya")
        axis.set_xlim(0, 105)
        axis.invert_yaxis()
        axis.set_xlabel("Skor audit (0-100)")
        axis.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(figure, "Skor audit kepatuhan per situs")


def drills(rows: Sequence, scenario_names: dict[str, str] | None = None) -> str | None:
    """Return bars of each drill's measured RTO (minutes) against its target, or None.

    *scenario_names* maps a runbook scenario to its Indonesian name for the labels."""
    measured = [row for row in rows if row.rto_s is not None]
    if not measured:
        return None
    names_of = scenario_names or {}
    with matplotlib.rc_context(STYLE):
        figure = _figure(7.2, 1.0 + 0.35 * len(measured))
        axis = figure.subplots()
        names = [f"{names_of.get(row.scenario, row.scenario)} · {row.site}" for row in measured]
        colours = [BAD_COLOUR if row.met is False else CURRENT_COLOUR for row in measured]
        bars = axis.barh(names, [row.rto_s / 60 for row in measured], color=colours, label="RTO terukur")
        axis.bar_label(bars, labels=[_decimal(round(row.rto_s / 60, 1), 0) for row in measured], fontsize=8,
                       padding=2)
        axis.xaxis.set_major_formatter(FuncFormatter(_decimal))
        targets = [(name, row.targets.get("rto_s")) for name, row in zip(names, measured, strict=True)
                   if row.targets.get("rto_s")]
        if targets:
            axis.scatter([target / 60 for _, target in targets], [name for name, _ in targets], marker="|", s=200,
                         color="black", zorder=3, label="target RTO")
        axis.invert_yaxis()
        axis.set_xlabel("RTO (menit)")
        axis.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(figure, "RTO uji pemulihan bencana terhadap target")
