"""Charts as inline SVG, drawn on the server: no script, nothing fetched, readable by a
screen reader through each chart's title and a table beside it."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 320, 140, 24
# One colour per series, by CSS class (the style sheet gives them their colours).
SERIES = ("s0", "s1", "s2", "s3", "s4")


def _frame(title: str, body: list[str], labels: Sequence[str]) -> Markup:
    n = max(len(labels), 1)
    step = (WIDTH - PAD) / n
    ticks = []
    for i, label in enumerate(labels):
        if n <= 7 or i % max(n // 7, 1) == 0:
            x = PAD + step * i + step / 2
            ticks.append(f'<text x="{x:.1f}" y="{HEIGHT - 4}" class="tick" '
                         f'text-anchor="middle">{escape(label)}</text>')
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH}" y2="{HEIGHT - PAD}" class="axis"/>'
        + "".join(body) + "".join(ticks) + "</svg>"
    )


def bar_chart(title: str, labels: Sequence[str], stacks: Sequence[Sequence[float]]) -> Markup:
    """Stacked bars: ``stacks[i]`` holds the values of each series on day ``labels[i]``."""
    top = max((sum(s) for s in stacks), default=0) or 1
    n = max(len(labels), 1)
    step = (WIDTH - PAD) / n
    plot = HEIGHT - 2 * PAD
    body = [f'<text x="2" y="{PAD - 8}" class="tick">{top:.3g}</text>']
    for i, values in enumerate(stacks):
        y = float(HEIGHT - PAD)
        for j, value in enumerate(values):
            if value <= 0:
                continue
            h = plot * value / top
            y -= h
            body.append(f'<rect x="{PAD + step * i + 1:.1f}" y="{y:.1f}" '
                        f'width="{max(step - 2, 1):.1f}" height="{h:.1f}" '
                        f'class="{SERIES[j % len(SERIES)]}"/>')
    return _frame(title, body, labels)


def line_chart(
    title: str, labels: Sequence[str], lines: Sequence[Sequence[float | None]],
    *, top: float | None = None,
) -> Markup:
    """One polyline a series; ``None`` leaves a gap (no data that day)."""
    values = [v for line in lines for v in line if v is not None]
    high = top if top is not None else (max(values, default=0) or 1)
    n = max(len(labels), 1)
    step = (WIDTH - PAD) / n
    plot = HEIGHT - 2 * PAD
    body = [f'<text x="2" y="{PAD - 8}" class="tick">{high:.3g}</text>']
    for j, line in enumerate(lines):
        points = []
        for i, value in enumerate(line):
            if value is None:
                continue
            x = PAD + step * i + step / 2
            y = HEIGHT - PAD - plot * min(value / high, 1)
            points.append(f"{x:.1f},{y:.1f}")
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" '
                        f'class="{SERIES[j % len(SERIES)]}"/>')
        if len(points) > 1:
            body.append(f'<polyline points="{" ".join(points)}" '
                        f'class="line {SERIES[j % len(SERIES)]}"/>')
    return _frame(title, body, labels)
