"""Charts as server-side SVG: no script, no CDN, nothing for the CSP to allow.

Pure: numbers in, markup out. Every text is escaped; numbers are formatted by the caller's
``fmt`` (decimal comma in German). Bars of the current period stand beside those of the
previous one, and each bar carries a <title> with its exact value, so the chart is
readable by a screen reader and by a test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 12, 28


def _nice_max(top: Decimal) -> Decimal:
    if top <= 0:
        return Decimal(1)
    magnitude = Decimal(10) ** (top.adjusted())
    for step in (1, 2, 2.5, 5, 10):
        candidate = magnitude * Decimal(str(step))
        if candidate >= top:
            return candidate
    return magnitude * 10


def bar_chart(labels: Sequence[str], current: Sequence[Decimal | None], previous: Sequence[Decimal | None] | None,
              unit: str, fmt: Callable[[Decimal], str], names: tuple[str, str], title: str) -> Markup:
    """``names`` = (current period, previous period) for the legend and the bar titles."""
    values = [v for v in list(current) + list(previous or []) if v is not None]
    top = _nice_max(max(values, default=Decimal(0)))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(labels))
    bar_w = slot * (0.4 if previous is not None else 0.7)
    parts = [(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>')]
    for i in range(5):
        level = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="axis" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(level))}</text>')
    parts.append(f'<text class="axis" x="4" y="{TOP + 8}">{escape(unit)}</text>')
    step = max(1, len(labels) // 16)
    for i, label in enumerate(labels):
        x0 = LEFT + slot * i
        series = [("prev", previous[i] if previous is not None and i < len(previous) else None, names[1])] \
            if previous is not None else []
        series.append(("cur", current[i] if i < len(current) else None, names[0]))
        for j, (cls, value, name) in enumerate(series):
            if value is None:
                continue
            h = float(plot_h * max(value, Decimal(0)) / top)
            x = x0 + (slot - bar_w * len(series)) / 2 + j * bar_w
            parts.append(f'<rect class="{cls}" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" '
                         f'height="{h:.1f}"><title>{escape(name)} {escape(label)}: {escape(fmt(value))} '
                         f'{escape(unit)}</title></rect>')
        if i % step == 0:
            parts.append(f'<text class="axis" x="{x0 + slot / 2:.1f}" y="{HEIGHT - 10}" '
                         f'text-anchor="middle">{escape(label)}</text>')
    legend_y = TOP + 4
    for k, (cls, name) in enumerate((("cur", names[0]), ("prev", names[1])) if previous is not None
                                    else (("cur", names[0]),)):
        x = WIDTH - RIGHT - 200 + k * 100
        parts.append(f'<rect class="{cls}" x="{x}" y="{legend_y}" width="10" height="10"/>'
                     f'<text class="legend" x="{x + 14}" y="{legend_y + 9}">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
