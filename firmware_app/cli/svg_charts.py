"""Bar charts as inline SVG: no script, no library, every text escaped.

Used by ``clinibox infer --html`` (lesions per study, lesion sizes, assessments);
a histogram is a bar chart of its bins (:func:`histogram_bins`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 560, 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 16, 64


def nice_step(largest: float, steps: int = 5) -> float:
    """A round step (1, 2 or 5 × 10ⁿ) that splits 0..``largest`` into about ``steps``."""
    if largest <= 0:
        return 1.0
    raw = largest / steps
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def histogram_bins(values: Sequence[float], most: int = 12) -> list[tuple[float, float, int]]:
    """(low, high, count) bins of round width from 0 covering ``values`` (at most ``most``
    bins; a value on a bin's edge counts in the bin above it)."""
    if not values:
        return []
    width = nice_step(max(values) or 1.0, most - 1)
    bins = math.floor(max(values) / width) + 1
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, math.floor(value / width)))] += 1
    return [(round(i * width, 9), round((i + 1) * width, 9), n) for i, n in enumerate(counts)]


def edge_digits(bins: Sequence[tuple[float, float, int]]) -> int:
    """The decimals that tell the bins' edges apart (0 for a width of 1 or more)."""
    if not bins:
        return 0
    width = bins[0][1] - bins[0][0]
    return max(0, -math.floor(math.log10(width) + 1e-9)) if width < 1 else 0


def _number(value: float) -> str:
    return f"{value:g}"


def _width(text: str) -> float:
    """Rough width of ``text`` at 11 px: wide (CJK) characters count double."""
    return sum(2.0 if ord(c) > 0x2E80 else 1.0 for c in text) * 6.2


def wrap_label(label: str, room: float, lines: int = 3) -> list[str]:
    """``label`` broken into at most ``lines`` lines that fit ``room`` pixels (at spaces,
    or anywhere in a text without them), the last one cut with an ellipsis."""
    words = label.split(" ") if " " in label else list(label)
    joiner = " " if " " in label else ""
    out: list[str] = []
    for word in words:
        if out and _width(out[-1] + joiner + word) <= room:
            out[-1] += joiner + word
        else:
            out.append(word)
    if len(out) > lines:
        out = out[:lines]
        out[-1] += "…"
    return out


def bar_chart(title: str, bars: Sequence[tuple[str, int]], x_label: str, y_label: str,
              colour: str = "#3b6ea5") -> str:
    """An SVG bar chart of ``bars`` (label, count) with its title, axes and counts."""
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    top = max((n for _label, n in bars), default=0)
    step = max(1.0, nice_step(top))
    y_max = step * max(1, math.ceil(top / step))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" '
             f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" class="chart">',
             f"<title>{escape(title)}</title>"]
    tick = 0.0
    while tick <= y_max:
        y = _TOP + plot_h - tick / y_max * plot_h
        parts.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" y2="{y:.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{_number(tick)}</text>')
        tick += step
    slot = plot_w / max(1, len(bars))
    for index, (label, count) in enumerate(bars):
        height = count / y_max * plot_h
        x, y = _LEFT + index * slot + slot * 0.15, _TOP + plot_h - height
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                     f'height="{height:.1f}" fill="{escape(colour)}">'
                     f"<title>{escape(label)}: {count}</title></rect>")
        centre = x + slot * 0.35
        parts.append(f'<text x="{centre:.1f}" y="{y - 4:.1f}" text-anchor="middle" '
                     f'font-size="11">{count}</text>')
        lines = "".join(f'<tspan x="{centre:.1f}" dy="{0 if n == 0 else 13}">{escape(line)}'
                        "</tspan>" for n, line in enumerate(wrap_label(label, slot - 4)))
        parts.append(f'<text x="{centre:.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle" '
                     f'font-size="11">{lines}</text>')
    parts += [f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{WIDTH - _RIGHT}" '
              f'y2="{_TOP + plot_h}" stroke="#333"/>',
              f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}" stroke="#333"/>',
              f'<text x="{_LEFT + plot_w / 2:.1f}" y="{HEIGHT - 12}" text-anchor="middle" '
              f'font-size="12">{escape(x_label)}</text>',
              f'<text x="14" y="{_TOP + plot_h / 2:.1f}" text-anchor="middle" font-size="12" '
              f'transform="rotate(-90 14 {_TOP + plot_h / 2:.1f})">{escape(y_label)}</text>',
              "</svg>"]
    return "\n".join(parts)
