"""Line charts drawn on the hospital's server as SVG: no script, no library, nothing from outside.

``firmware_app/cli/svg_charts.py`` draws the CLI's bar charts and histograms; a drift
chart is a line over time with a threshold, which it does not draw, so it is here.
A chart is plain SVG markup with presentation attributes only (no ``style=``: the
console's Content-Security-Policy allows no inline style), escaped, with a title
and a description for screen readers, one ``<circle>`` per point (``class="point"``,
``class="point marked"`` where the value is over its threshold) and a dashed
threshold line (``class="threshold"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

WIDTH, HEIGHT = 640, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 12, 28, 34


def _nice_top(largest: float) -> float:
    """A round number at or above ``largest`` for the vertical axis."""
    if largest <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(largest))
    for step in (1, 2, 5, 10):
        if step * magnitude >= largest * (1 - 1e-9):
            return step * magnitude
    return 10 * magnitude


def _ticks(top: float) -> list[float]:
    """The vertical axis's ticks from 0 to ``top`` (a :func:`_nice_top`): round steps,
    0 / 0.1 / 0.2 for a top of 0.2, never 0.125."""
    lead = round(top / 10 ** math.floor(math.log10(top) + 1e-9))
    count = {1: 5, 2: 2, 5: 5, 10: 5}.get(lead, 2)
    return [round(i * top / count, 12) for i in range(count + 1)]


def _number(value: float) -> str:
    return f"{value:.3g}"


def line_chart(title: str, points: Sequence[tuple[float, float | None, bool]], *,
               threshold: float | None, threshold_label: str, first_label: str,
               last_label: str, empty_label: str,
               number: Callable[[float], str] | None = None) -> str:
    """An SVG line chart of ``points`` (time, value or None, marked) with a threshold line.

    The horizontal axis is time (labelled with ``first_label`` and ``last_label``, the
    caller's formatted dates); points without a value are left out; with none,
    ``empty_label`` is shown instead. ``number`` writes the ticks, the threshold and the
    points' titles (a percentage for a rate); three significant digits by default.
    """
    shown = number or _number
    kept = [(at, float(value), marked) for at, value, marked in points if value is not None]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}">',
             f"<title>{escape(title)}</title>",
             f'<text x="{_LEFT}" y="18" class="chart-title">{escape(title)}</text>']
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    bottom = _TOP + plot_h
    parts.append(f'<line class="axis" x1="{_LEFT}" y1="{bottom}" x2="{WIDTH - _RIGHT}" '
                 f'y2="{bottom}" stroke="#555"/>')
    parts.append(f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" '
                 f'stroke="#555"/>')
    if not kept:
        parts.append(f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle" '
                     f'class="chart-empty">{escape(empty_label)}</text></svg>')
        return "".join(parts)
    top = _nice_top(max([v for _, v, _ in kept] + [threshold or 0.0]) * 1.1)
    start, end = kept[0][0], kept[-1][0]
    span = (end - start) or 1.0

    def x(at: float) -> float:
        return _LEFT + (at - start) / span * plot_w if end > start else _LEFT + plot_w / 2

    def y(value: float) -> float:
        return bottom - min(max(value, 0.0), top) / top * plot_h

    for tick in _ticks(top):
        parts.append(f'<text x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" '
                     f'class="tick">{escape(shown(tick))}</text>')
    parts.append(f'<text x="{_LEFT}" y="{HEIGHT - 8}" class="tick">{escape(first_label)}</text>')
    parts.append(f'<text x="{WIDTH - _RIGHT}" y="{HEIGHT - 8}" text-anchor="end" '
                 f'class="tick">{escape(last_label)}</text>')
    if threshold is not None:
        parts.append(f'<line class="threshold" x1="{_LEFT}" y1="{y(threshold):.1f}" '
                     f'x2="{WIDTH - _RIGHT}" y2="{y(threshold):.1f}" stroke="#c62828" '
                     f'stroke-dasharray="6 4"/>')
        parts.append(f'<text x="{WIDTH - _RIGHT}" y="{y(threshold) - 4:.1f}" text-anchor="end" '
                     f'class="threshold-label" fill="#c62828">'
                     f'{escape(threshold_label)} {escape(shown(threshold))}</text>')
    line = " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v, _ in kept)
    parts.append(f'<polyline class="series" fill="none" stroke="#1565c0" stroke-width="2" '
                 f'points="{line}"/>')
    for at, value, marked in kept:
        parts.append(f'<circle class="point{" marked" if marked else ""}" cx="{x(at):.1f}" '
                     f'cy="{y(value):.1f}" r="{5 if marked else 3}" '
                     f'fill="{"#c62828" if marked else "#1565c0"}" data-value="{_number(value)}">'
                     f"<title>{escape(shown(value))}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)
