"""The pages' templates (Jinja2, autoescaped) and the helpers they call: numbers, intervals, links, line charts
drawn as inline SVG (so a page needs no plotting script)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup, escape
from starlette.templating import Jinja2Templates

TEMPLATES = Path(__file__).parent / "templates"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
LABELS = {"overall": "over-all", "deletion_auc": "deletion", "insertion_auc": "insertion", "spt": "S-PT",
          "seconds_total": "s / map", "seconds_model": "s in the model", "n_forward": "clips through the model"}


def number(value: Any, digits: int = 3) -> str:
    """A number to `digits` decimals ('-' for none or NaN); integers as they are."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def interval(mean: float | None, half: float | None, digits: int = 3) -> str:
    """`mean ±half`, the half-width of a 95% interval ('-' when no mean)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return number(mean, digits) + ("" if half is None or math.isnan(half) else f" ±{half:.{digits}f}")


def link(path: str, **params: Any) -> str:
    """`path` with the non-empty parameters as its query string."""
    given = {name: value for name, value in params.items() if value not in (None, "")}
    return path + ("?" + urlencode(given) if given else "")


def moment(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S} UTC"


def line_chart(series: Mapping[str, Sequence[float]], title: str = "", width: int = 300, height: int = 150,
               y_range: tuple[float, float] | None = (0.0, 1.0)) -> Markup:
    """Lines over a shared x axis from 0 to 1 (each series spread over it), a legend of series names, as SVG."""
    values = [v for points in series.values() for v in points if v is not None and math.isfinite(v)]
    low, high = y_range or (min(values, default=0.0), max(values, default=1.0))
    high = high if high > low else low + 1.0
    left, top, plot_w, plot_h = 34, 16, width - 44, height - 34

    def xy(index: int, count: int, value: float) -> str:
        x = left + plot_w * index / max(count - 1, 1)
        return f"{x:.1f},{top + plot_h * (1 - (value - low) / (high - low)):.1f}"
    lines = [f'<polyline fill="none" stroke="{PALETTE[i % len(PALETTE)]}" stroke-width="1.5" points="'
             + " ".join(xy(j, len(points), v) for j, v in enumerate(points) if v is not None) + '"/>'
             for i, points in enumerate(series.values())]
    legend = [f'<text x="{left + 4}" y="{top + 11 + 11 * i}" fill="{PALETTE[i % len(PALETTE)]}">{escape(name)}</text>'
              for i, name in enumerate(series)]
    axes = (f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
            f'<text x="2" y="{top + 8}">{high:.2g}</text><text x="2" y="{top + plot_h}">{low:.2g}</text>'
            f'<text x="{left}" y="11">{escape(title)}</text>')
    return Markup(f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
                  f'role="img" aria-label="{escape(title)}">{axes}{"".join(lines)}{"".join(legend)}</svg>')


def templates() -> Jinja2Templates:
    """The pages' templates with the helpers above."""
    found = Jinja2Templates(directory=TEMPLATES)
    found.env.globals |= {"number": number, "interval": interval, "link": link, "moment": moment,
                          "line_chart": line_chart, "label": lambda name: LABELS.get(name, name)}
    return found
