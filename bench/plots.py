"""SVG plots next to the JSON in bench/results/ (README.md shows them): latency CDFs and throughput bars,
one line or bar per endpoint or run measured in the same `python -m bench` run. Hand-written SVG: no
plotting library to install, and the files diff as text."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

WIDTH, HEIGHT, MARGIN = 640, 360, 56
COLOURS = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f")


def _frame(title: str, x_label: str, y_label: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f"<title>{html.escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle">{html.escape(x_label)}</text>',
        f'<text x="14" y="{HEIGHT / 2}" transform="rotate(-90 14 {HEIGHT / 2})" text-anchor="middle">'
        f"{html.escape(y_label)}</text>",
        f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - 16}" y2="{HEIGHT - MARGIN}" stroke="#333"/>',
        f'<line x1="{MARGIN}" y1="30" x2="{MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#333"/>',
    ]


def latency_cdf(series: Mapping[str, Sequence[float]], title: str) -> str:
    """Empirical CDFs on a log10 time axis (latencies span milliseconds to seconds)."""
    series = {name: sorted(v for v in values if v > 0) for name, values in series.items() if values}
    lines = _frame(title, "latency (ms, log scale)", "fraction of records")
    if not series:
        return "\n".join([*lines, '<text x="320" y="180" text-anchor="middle">no samples</text>', "</svg>"])
    low = math.floor(math.log10(min(v[0] for v in series.values())))
    high = math.ceil(math.log10(max(v[-1] for v in series.values())))
    high = max(high, low + 1)
    plot_w, plot_h = WIDTH - MARGIN - 16, HEIGHT - MARGIN - 30

    def x(ms: float) -> float:
        return MARGIN + (math.log10(ms) - low) / (high - low) * plot_w

    def y(fraction: float) -> float:
        return HEIGHT - MARGIN - fraction * plot_h

    for decade in range(low, high + 1):
        lines.append(
            f'<line x1="{x(10**decade):.1f}" y1="30" x2="{x(10**decade):.1f}" y2="{HEIGHT - MARGIN}" stroke="#eee"/>'
        )
        lines.append(
            f'<text x="{x(10**decade):.1f}" y="{HEIGHT - MARGIN + 14}" text-anchor="middle">{10**decade:g}</text>'
        )
    for fraction in (0, 0.5, 0.9, 1):
        lines.append(f'<text x="{MARGIN - 4}" y="{y(fraction) + 4:.1f}" text-anchor="end">{fraction:g}</text>')
        lines.append(
            f'<line x1="{MARGIN}" y1="{y(fraction):.1f}" x2="{WIDTH - 16}" y2="{y(fraction):.1f}" stroke="#f0f0f0"/>'
        )
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{x(v):.1f},{y((i + 1) / len(values)):.1f}" for i, v in enumerate(values))
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{points}"/>')
        median = values[len(values) // 2]
        lines.append(
            f'<text x="{MARGIN + 8}" y="{44 + 14 * index}" fill="{colour}">{html.escape(name)}: n={len(values)}, '
            f"p50 {median:.1f} ms, max {values[-1]:.1f} ms</text>"
        )
    return "\n".join([*lines, "</svg>"])


def bars(values: Mapping[str, float], title: str, unit: str) -> str:
    lines = _frame(title, "", unit)
    values = {name: value for name, value in values.items() if value is not None}
    if not values:
        return "\n".join([*lines, "</svg>"])
    top = max(values.values()) * 1.15 or 1
    plot_w, plot_h = WIDTH - MARGIN - 16, HEIGHT - MARGIN - 30
    slot = plot_w / len(values)
    for index, (name, value) in enumerate(values.items()):
        height = value / top * plot_h
        left = MARGIN + index * slot + slot * 0.2
        colour = COLOURS[index % len(COLOURS)]
        lines.append(
            f'<rect x="{left:.1f}" y="{HEIGHT - MARGIN - height:.1f}" width="{slot * 0.6:.1f}" '
            f'height="{height:.1f}" fill="{colour}"/>'
        )
        middle = left + slot * 0.3
        top_y = HEIGHT - MARGIN - height - 4
        lines.append(f'<text x="{middle:.1f}" y="{top_y:.1f}" text-anchor="middle">{value:,.1f}</text>')
        lines.append(
            f'<text x="{middle:.1f}" y="{HEIGHT - MARGIN + 14}" text-anchor="middle">{html.escape(name)}</text>'
        )
    return "\n".join([*lines, "</svg>"])


def figures(part: str, data: Mapping[str, Any]) -> dict[str, str]:
    """file name -> SVG for one part's report data (empty for parts without plots)."""
    plots: dict[str, str] = {}
    if part == "smoke":
        runs = {
            name: run for name, run in (data.get("runs") or {}).items() if isinstance(run, dict) and run.get("paths")
        }
        for path in ("kinesisOneHop", "kinesisTwoHops", "sqs"):
            series = {name: run["paths"].get(path, {}).get("samplesMs") or [] for name, run in runs.items()}
            if any(series.values()):
                plots[f"smoke-{path}-cdf.svg"] = latency_cdf(series, f"smoke: {path} latency, per endpoint")
    if part == "pipeline":
        runs = data.get("runs") or []
        series = {f"run {i + 1}": (run.get("latency") or {}).get("perEventMs") or [] for i, run in enumerate(runs)}
        if any(series.values()):
            plots["pipeline-latency-cdf.svg"] = latency_cdf(series, "pipeline: event to view row (updatedAt)")
        rates = {f"run {i + 1}": (run.get("throughput") or {}).get("eventsPerSecond") for i, run in enumerate(runs)}
        if any(rates.values()):
            plots["pipeline-throughput.svg"] = bars(rates, "pipeline: sustained events/s", "events/s")
    if part == "console":
        rates = data.get("throughputByCondition") or {}
        if rates:
            plots["console-throughput.svg"] = bars(
                rates, "pipeline throughput with the console open or not", "events/s"
            )
    return plots


def write(part: str, data: Mapping[str, Any], directory: Path) -> list[Path]:
    written = []
    for name, svg in figures(part, data).items():
        path = directory / name
        path.write_text(svg + "\n")
        written.append(path)
    return written
