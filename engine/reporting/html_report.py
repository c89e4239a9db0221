"""One self-contained HTML report per run: opens with no network (inline CSS, no scripts, every image a
base64 PNG data URI).

It shows the nightly verdict (each rule with baseline, tonight and the allowed change), the paper's Table I
(deletion / insertion, over-all), IV (S-PT) and V (seconds per map, and per reference forward pass) with
deltas against the baseline coloured green (better) or red (worse), the mean deletion and insertion
curves per method, each metric's trend over the preset's past nightly runs, and saliency overlays of a
few fixed clips (the first clips of each manifest the run evaluated). Where an `aosa serve` of the store runs
when the report is written (engine.serve.registry), each clip links to its page there.

    path = write_report(StoreReader("results"), "nightly-20250101T030000-1a2b3c")  # results/reports/<id>.html
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from aosa.engine.reporting.regression import HIGHER, METRICS, NightlyRun, Summary
from aosa.engine.reporting.report_data import ClipMaps, Curves, ReportData, gather_report_data
from aosa.engine.reporting.visualize import overlay
from aosa.engine.store.paths import partition_value
from aosa.engine.store.reader import StoreReader

REPORTS = "reports"  # folder of the store that holds the reports
OVERLAY_FRAMES = 4
LABELS = {"deletion_auc": "deletion", "insertion_auc": "insertion", "overall": "over-all", "spt": "S-PT",
          "seconds_per_map": "s / map", "speed_ratio": "x reference forward"}
TABLES = (("Table I: deletion (lower is better) / insertion (higher), over-all (higher)",
           ("deletion_auc", "insertion_auc", "overall")),
          ("Table IV: spatial pointing game (S-PT, higher is better)", ("spt",)),
          ("Table V: seconds per map, and as multiples of one reference forward pass (lower is better)",
           ("seconds_per_map", "speed_ratio")))
TREND_METRICS = ("overall", "deletion_auc", "insertion_auc", "spt", "speed_ratio")

STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; } td.name { text-align: left; font-family: monospace; }
.better { color: #117a11; } .worse { color: #c0161b; } .same { color: #777; }
tr.broken td { background: #fde4e4; } .passed { color: #117a11; } .failed { color: #c0161b; }
.note { color: #7a5a00; } img { display: block; margin: 6px 0; } img.pixels { image-rendering: pixelated; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; } dt { font-weight: bold; }
"""


def report_path(store: StoreReader, run_id: str) -> Path:
    """Where a run's report lives in the store."""
    return store.root / REPORTS / f"{partition_value(run_id)}.html"


def write_report(store: StoreReader, run_id: str) -> Path:
    """Gather the run's data, render its report into the store; returns its path."""
    path = report_path(store, run_id)
    page = render_report(gather_report_data(store, run_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def render_report(data: ReportData) -> str:
    """The whole page of one run (nightly or not) as HTML text."""
    sections = [_header(data.run_id, data.run, data.baseline), _verdict(data.judgement),
                *(_table(title, metrics, data.summary[data.run_id], data.summary.get(data.baseline, {}), data.baseline)
                  for title, metrics in TABLES),
                _curves_section(data.curves), _trends_section(data.trend, data.runs, data.summary),
                _overlays_section(data)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>AOSA run {_text(data.run_id)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(sections) + "\n</body></html>\n")


# -- sections --------------------------------------------------------------------------------------------


def _header(run_id: str, run: NightlyRun | None, baseline: str | None) -> str:
    facts = {"run": run_id, "baseline": baseline or "-"}
    if run is not None:
        rules = run.nightly.get("rules", {})
        facts |= {"status": run.status, "preset": run.preset, "started": f"{run.started:%Y-%m-%d %H:%M:%S} UTC",
                  "rules": f"v{rules['version']} ({rules['file']})" if rules else "not judged yet",
                  "host": run.row["host"], "device": run.row["device"], "git sha": run.row["git_sha"] or "-"}
    items = "".join(f"<dt>{_text(key)}</dt><dd>{_text(value)}</dd>" for key, value in facts.items())
    status = f' <span class="{_text(run.status)}">{_text(run.status.upper())}</span>' if run else ""
    return f"<h1>AOSA run {_text(run_id)}{status}</h1><dl>{items}</dl>"


def _verdict(judgement: dict[str, Any]) -> str:
    if not judgement:
        return "<h2>Verdict</h2><p>This run was not judged against a baseline.</p>"
    notes = "".join(f'<p class="note">note: {_text(note)}</p>' for note in judgement.get("notes", []))
    header = "<tr><th>metric</th><th>method</th><th>model</th><th>baseline</th><th>tonight</th>" \
             "<th>allowed</th><th>limit</th><th>verdict</th></tr>"
    body = "".join(
        f'<tr class="{"held" if r["passed"] else "broken"}"><td class="name">{_text(r["metric"])}</td>'
        f'<td class="name">{_text(r["method"])}</td><td class="name">{_text(r["model"])}</td>'
        f'<td>{_number(r["baseline"])}</td><td>{_number(r["tonight"])}</td><td>{_text(r["allowed"])}</td>'
        f'<td>{_number(r["limit"])}</td><td>{"held" if r["passed"] else "BROKEN"}</td></tr>'
        for r in judgement.get("results", []))
    return f"<h2>Verdict</h2>{notes}<table>{header}{body}</table>"


def _table(title: str, metrics: tuple[str, ...], tonight: Summary, baseline: Summary,
           baseline_id: str | None) -> str:
    """One of the paper's tables: a row per method, a column per metric x model, deltas to the baseline."""
    models = list(dict.fromkeys(model for _, model in tonight))
    methods = list(dict.fromkeys(method for method, _ in tonight))
    top = "".join(f'<th colspan="{len(models)}">{_text(LABELS[metric])}</th>' for metric in metrics)
    sub = "".join(f"<th>{_text(model)}</th>" for _ in metrics for model in models)
    body = "".join(
        f'<tr><td class="name">{_text(method)}</td>'
        + "".join(_cell(metric, tonight.get((method, model)), baseline.get((method, model)))
                  for metric in metrics for model in models) + "</tr>" for method in methods)
    against = f" (deltas against {_text(baseline_id)})" if baseline_id else ""
    return (f"<h2>{_text(title)}{against}</h2><table><tr><th rowspan=\"2\">method</th>{top}</tr>"
            f"<tr>{sub}</tr>{body}</table>")


def _cell(metric: str, tonight: dict[str, Any] | None, baseline: dict[str, Any] | None) -> str:
    value = None if tonight is None else tonight.get(metric)
    before = None if baseline is None else baseline.get(metric)
    if value is None:
        return "<td>-</td>"
    if before is None:
        return f"<td>{_number(value)}</td>"
    delta = 0.0 if math.isclose(value, before, rel_tol=1e-9, abs_tol=1e-12) else value - before  # float noise
    better = (delta > 0) == (METRICS[metric] == HIGHER)
    kind = "same" if delta == 0 else "better" if better else "worse"
    return f'<td>{_number(value)} <span class="{kind}">({delta:+.3g})</span></td>'


def _curves_section(curves: Curves) -> str:
    images = []
    for model, methods in curves.items():
        figure = Figure(figsize=(11, 3.6), dpi=90, layout="constrained")
        for ax, side in zip(figure.subplots(1, 2), ("deletion", "insertion")):
            for method, sides in methods.items():
                ax.plot(np.linspace(0, 1, len(sides[side])), sides[side], label=method)
            ax.set(title=f"{side} ({model})", xlabel="fraction of voxels", ylabel="target probability", ylim=(0, 1))
        figure.axes[1].legend(fontsize=8)
        images.append(_image(_figure_png(figure), f"{model} deletion and insertion curves"))
    return "<h2>Deletion and insertion curves (mean over videos)</h2>" + "".join(images)


def _trends_section(trend: list[str], runs: dict[str, NightlyRun], summary: dict[str, Summary]) -> str:
    """Each metric over the preset's past nightly runs; nothing for a run that is not a nightly."""
    if not trend:
        return ""
    labels = [f"{runs[run_id].started:%m-%d %H:%M}" for run_id in trend]
    keys = list(dict.fromkeys(key for run_id in trend for key in summary[run_id]))
    figure = Figure(figsize=(11, 2.6 * len(TREND_METRICS)), dpi=80, layout="constrained")
    for ax, metric in zip(figure.subplots(len(TREND_METRICS), 1, squeeze=False)[:, 0], TREND_METRICS):
        for method, model in keys:
            values = [summary[run_id].get((method, model), {}).get(metric) for run_id in trend]
            ax.plot(range(len(trend)), [np.nan if v is None else v for v in values], marker="o",
                    label=f"{method} ({model})")
        ax.set_xticks(range(len(trend)), labels, rotation=30, ha="right", fontsize=7)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title(LABELS[metric] + (" (higher is better)" if METRICS[metric] == HIGHER else " (lower is better)"))
    figure.axes[0].legend(fontsize=7, ncols=2)
    return (f"<h2>Trends over the last {len(trend)} nightly runs of this preset</h2>"
            + _image(_figure_png(figure), "metric trends"))


def _overlays_section(data: ReportData) -> str:
    out = ["<h2>Saliency overlays of fixed clips</h2>"]
    out += [f'<p class="note">{_text(note)}</p>' for note in data.notes]
    out += [_overlay_table(clip) + _browser_link(data, clip) for clip in data.clips]
    return "".join(out)


def _browser_link(data: ReportData, clip: ClipMaps) -> str:
    """A link to the clip's page in the running `aosa serve` of the store; nothing when none runs."""
    if data.browser is None:
        return ""
    query = urlencode({"run": data.run_id, "model": clip.model, "video": clip.video_id})
    return f'<p><a href="{_text(data.browser)}video?{_text(query)}">{_text(clip.video_id)} in aosa serve</a></p>'


def _overlay_table(clip: ClipMaps) -> str:
    """OVERLAY_FRAMES evenly spaced frames of the clip, then of each method's overlay, as pixel strips."""
    picked = np.linspace(0, len(clip.frames) - 1, OVERLAY_FRAMES).round().astype(int)
    videos = [("clip", clip.frames)] + [(method, overlay(clip.frames, saliency)) for method, saliency in clip.maps]
    rows = "".join(f'<tr><td class="name">{_text(name)}</td><td>{_image(uri, name, 2 * width)}</td></tr>'
                   for name, uri, width in ((name, *_png(_strip(video[picked]))) for name, video in videos))
    frames = ", ".join(map(str, picked.tolist()))
    return f"<h3>{_text(clip.video_id)} ({_text(clip.model)}), frames {frames}</h3><table>{rows}</table>"


# -- small pieces ----------------------------------------------------------------------------------------


def _strip(frames: np.ndarray) -> np.ndarray:
    """uint8 (N,H,W,3) frames side by side with a 4-pixel white gap."""
    gap = np.full((frames.shape[1], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([piece for frame in frames for piece in (frame, gap)][:-1], axis=1)


def _png(image: np.ndarray) -> tuple[str, int]:
    """A uint8 (H,W,3) image as a PNG data URI, and its width."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return _data_uri(buffer.getvalue()), image.shape[1]


def _figure_png(figure: Figure) -> str:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer, metadata={"Software": None})
    return _data_uri(buffer.getvalue())


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _image(uri: str, alt: str, width: int | None = None) -> str:
    """An <img>; a given width shows small frames enlarged with sharp pixels."""
    scale = f' class="pixels" width="{width}"' if width else ""
    return f'<img src="{uri}" alt="{_text(alt)}"{scale}>'


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _text(value: object) -> str:
    return html.escape(str(value))
