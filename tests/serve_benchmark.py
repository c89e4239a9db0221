"""How fast `aosa serve` answers on a large store: `python -m tests.serve_benchmark STORE RUN_ID METHOD VIDEO`
(the store of `python -m tests.load_run 100000 1000 DIR`: run `load`, method `random`, a real video `v0000000`).

Starts a server of its own on the store and times, over HTTP from request to the last byte of the answer, the
gallery's first page, a sort by a metric, two filters, the video page, the video page's frame and map strips, and
a gallery page's thumbnails; the first answer (cold: nothing cached) and the median of REPEATS more. Prints a line
`RESULT {json}` of seconds. A benchmark, not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

from tests.served import fetch, server

REPEATS = 5


def timed(url: str) -> tuple[float, int, str]:
    began = time.perf_counter()
    status, body, _ = fetch(url)
    return time.perf_counter() - began, status, body


def measure(url: str) -> dict[str, float]:
    """Cold and warm (median) seconds of one address; every answer must be a 200."""
    seconds = []
    for _ in range(REPEATS + 1):
        spent, status, _ = timed(url)
        assert status == 200, (status, url)
        seconds.append(spent)
    return {"cold": round(seconds[0], 3), "warm": round(statistics.median(seconds[1:]), 3)}


def main(store: str, run_id: str, method: str, video: str) -> int:
    with server(Path(store)) as (base, _):
        model = _model(base, run_id, video)
        pages = {
            "runs page": ("", {}),
            "run page": ("run", {"run": run_id}),
            "gallery first page": ("videos", {"run": run_id}),
            "sort by a metric": ("videos", {"run": run_id, "sort": "metric", "metric": "deletion_auc",
                                            "method": method, "order": "asc"}),
            "filter by status": ("videos", {"run": run_id, "status": "ok"}),
            "filter by a metric's range": ("videos", {"run": run_id, "fmetric": "overall", "fmethod": method,
                                                      "low": "0"}),
            "video page": ("video", {"run": run_id, "model": model, "video": video}),
            "frame strip": ("media/frames.png", {"run": run_id, "model": model, "video": video}),
            "map strip": ("media/map.png", {"run": run_id, "model": model, "video": video, "method": method}),
        }
        result = {name: measure(base + path + ("?" + urlencode(params) if params else ""))
                  for name, (path, params) in pages.items()}
        result["thumbnails of a sorted page (each)"] = _thumbnails(base, pages["sort by a metric"][1], method)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def _model(base: str, run_id: str, video: str) -> str:
    """The model of the run's video, read off the gallery page."""
    _, body, _ = fetch(base + "videos?" + urlencode({"run": run_id}))
    marker = f'data-video="{video}" data-model="'
    return body.split(marker, 1)[1].split('"', 1)[0]


def _thumbnails(base: str, params: dict[str, str], method: str) -> dict[str, float]:
    """Cold seconds of each thumbnail one gallery page shows (mean and max)."""
    _, body, _ = fetch(base + "videos?" + urlencode(params))
    links = [part.split('"', 1)[0].replace("&amp;", "&") for part in body.split('src="/media/thumb.jpg')[1:]]
    seconds = [timed(base + "media/thumb.jpg" + link)[0] for link in links]
    return {"count": len(seconds), "mean": round(statistics.mean(seconds), 3), "max": round(max(seconds), 3)}


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
