"""`aosa serve` in a real browser: Playwright (from PyPI) drives Debian's chromium (executable_path; Playwright's own
browser download cannot run here) over a store that `aosa evaluate` filled from both probe tasks. Every page loads
without a console error; the gallery sorts and filters as the same SQL does; play and step move every panel
together; the opacity slider changes the pixels; the SQL box refuses what the sandbox refuses; unknown runs, videos
and paths are 404 pages; off loopback the token is needed; the evaluation stored a preview of each clip it decoded.

`AOSA_SCREENSHOTS=DIR` saves a screenshot of each page there (the README's come from tests/screenshots)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest

from aosa.engine.datasets.manifests import read_manifest, write_manifest
from aosa.engine.datasets.synthetic import write_benchmark
from aosa.engine.reporting.clips import run_parts, source_frames
from aosa.engine.store.query import run_query
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.sql import QueryError
from aosa.jobs.evaluate import main as evaluate
from aosa.jobs.render import render
from aosa.schemas.manifest import ManifestRow
from tests.served import server
from tests.test_html_report import FLAGS, chromium

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.sync_api")

METHODS = "aosa,aosa-approx,gradcam,random"
SCREENSHOTS = ("runs", "run", "videos", "video", "sql")
MOTION = "probe:motion"


def evaluated(store: Path, manifest: Path, model: str, methods: str, run_id: str) -> int:
    return evaluate(["--manifest", str(manifest), "--model", model, "--methods", methods, "--store", str(store),
                     "--run-id", run_id, "--model-actors", "2"])


@pytest.fixture(scope="session")
def store(ray_cluster, tmp_path_factory) -> Path:
    """Run `motion` (2 clips and a missing file), `appearance` (2 clips), and `motion-probe3d`: the same motion
    clips through an untrained model, the run the video page shows beside the first."""
    root = tmp_path_factory.mktemp("browse")
    motion = write_benchmark(root / "motion", videos=2, seed=0)
    write_manifest(read_manifest(motion) + [ManifestRow("lost", root / "motion" / "lost.mp4", label=1)], motion)
    appearance = write_benchmark(root / "appearance", videos=2, seed=0, task="appearance")
    assert evaluated(root / "store", motion, MOTION, METHODS, "motion") == 3  # the missing file's units failed
    assert evaluated(root / "store", appearance, "probe:appearance", METHODS, "appearance") == 0
    assert evaluated(root / "store", motion, "probe3d", "gradcam,random", "motion-probe3d") == 3
    return root / "store"


@pytest.fixture(scope="session")
def url(store) -> Iterator[str]:
    with server(store) as (address, _):
        yield address


@pytest.fixture(scope="session")
def browser(url) -> Iterator[object]:
    """Chromium with a fresh profile, quiet on the network (no background requests); started after the store and
    its server, since Playwright's sync API holds an event loop that `aosa evaluate` cannot run beside."""
    with playwright.sync_playwright() as driver, tempfile.TemporaryDirectory(prefix="chromium") as profile:
        context = driver.chromium.launch_persistent_context(
            profile, executable_path=str(chromium()), args=[flag for flag in FLAGS if "log" not in flag and
                                                            "--v=" not in flag and "window" not in flag],
            headless=True, viewport={"width": 1400, "height": 1000})
        yield context
        context.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A tab that records console errors and uncaught exceptions in `page.errors`."""
    tab = browser.new_page()
    tab.errors = []
    tab.on("console", lambda message: tab.errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    yield tab
    tab.close()


def address(url: str, path: str, **params: str) -> str:
    return url.rstrip("/") + path + ("?" + urlencode(params) if params else "")


def videos_of(store: Path, run_id: str) -> list[str]:
    with StoreReader(store).connect(run_id) as con:
        return [row[0] for row in con.sql("SELECT DISTINCT video_id FROM metrics WHERE status = 'ok' ORDER BY 1")
                .fetchall()]


def sql(store: Path, query: str, *parameters: object) -> list[tuple]:
    with StoreReader(store).connect() as con:
        return con.execute(query, list(parameters)).fetchall()


def open_player(page, url: str, **params: str) -> None:
    page.goto(address(url, "/video", **params))
    page.wait_for_selector("#player[data-ready='true']")


def frames_shown(page) -> list[int]:
    """The frame every panel shows now, read in one go."""
    return page.evaluate("[...document.querySelectorAll('canvas.panel')].map((c) => Number(c.dataset.frame))")


def screenshot(page, name: str) -> None:
    """The README's screenshot of a page, where AOSA_SCREENSHOTS names a folder."""
    folder = os.environ.get("AOSA_SCREENSHOTS")
    if folder and name in SCREENSHOTS:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_every_page_loads_without_a_console_error(page, url, store):
    video = videos_of(store, "motion")[0]
    pages = {"runs": ("/", {}), "run": ("/run", {"run": "motion", "a": "aosa", "b": "gradcam"}),
             "videos": ("/videos", {"run": "motion", "sort": "metric", "metric": "overall", "method": "aosa"}),
             "video": ("/video", {"run": "motion", "model": MOTION, "video": video,
                                  "compare": "motion-probe3d|probe3d"}),
             "appearance": ("/videos", {"run": "appearance", "status": "ok"}), "sql": ("/sql", {})}
    for name, (path, params) in pages.items():
        reply = page.goto(address(url, path, **params))
        page.wait_for_load_state("networkidle")
        assert reply.status == 200, name
        assert page.evaluate("[...document.images].every((i) => i.complete && i.naturalWidth > 0)"), name
        if name == "video":
            page.wait_for_selector("#player[data-ready='true']")
            assert len(frames_shown(page)) == 4 + 2
        if name == "sql":
            page.click("#run-sql")
            page.wait_for_selector("table.answer")
        screenshot(page, name)
        assert page.errors == [], name


@pytest.mark.parametrize(("run_id", "metric", "method", "order"),
                         [("motion", "overall", "aosa", "desc"), ("appearance", "deletion_auc", "gradcam", "asc"),
                          ("appearance", "spt", "aosa-approx", "desc")])
def test_sorting_the_gallery_by_a_metric_gives_the_order_sql_gives(page, url, store, run_id, metric, method, order):
    page.goto(address(url, "/videos", run=run_id, sort="metric", metric=metric, method=method, order=order))
    shown = page.eval_on_selector_all(".card", "(cards) => cards.map((card) => card.dataset.video)")
    measure = "spt_hits::DOUBLE / nullif(spt_frames, 0)" if metric == "spt" else metric
    expected = [row[0] for row in sql(store, f"SELECT video_id FROM metrics WHERE run_id = ? AND method = ? "
                                             f"ORDER BY {measure} {order} NULLS LAST, model, video_id", run_id, method)]
    assert shown == expected and len(shown) >= 2


def test_a_filter_gives_the_count_sql_gives(page, url, store):
    (middle,) = sql(store, "SELECT median(overall) FROM metrics WHERE run_id = 'appearance' AND method = 'aosa'")[0]
    filters = {
        (("fmetric", "overall"), ("fmethod", "aosa"), ("low", str(middle))):
            ("SELECT count(*) FROM metrics WHERE run_id = 'appearance' AND method = 'aosa' AND overall >= ?",
             [middle]),
        (("a", "aosa"), ("b", "gradcam"), ("gap", "0.05")):
            ("SELECT count(*) FROM metrics x JOIN metrics y USING (run_id, model, video_id) WHERE run_id = "
             "'appearance' AND x.method = 'aosa' AND y.method = 'gradcam' AND abs(x.overall - y.overall) >= ?",
             [0.05]),
        (("status", "ok"),): ("SELECT count(DISTINCT video_id) FROM metrics WHERE run_id = 'appearance'", []),
    }
    for given, (query, parameters) in filters.items():
        page.goto(address(url, "/videos", run="appearance", **dict(given)))
        assert int(page.get_attribute("#count", "data-total")) == sql(store, query, *parameters)[0][0], given
    page.goto(address(url, "/videos", run="motion", status="error"))
    assert int(page.get_attribute("#count", "data-total")) == 1 and page.inner_text(".card .id") == "lost"


def test_play_advances_every_panel_together_and_step_moves_them_by_one(page, url, store):
    open_player(page, url, run="motion", model=MOTION, video=videos_of(store, "motion")[0],
                compare="motion-probe3d|probe3d")
    assert set(frames_shown(page)) == {0}
    page.click("#play")
    seen = []
    for _ in range(6):
        page.wait_for_timeout(150)
        seen.append(frames_shown(page))
    page.click("#play")
    assert all(len(set(shown)) == 1 for shown in seen)
    assert seen[-1][0] > 0 and len({shown[0] for shown in seen}) > 2
    now = frames_shown(page)[0]
    page.click("#next")
    assert frames_shown(page) == [(now + 1) % 16] * 6
    page.click("#prev")
    page.click("#prev")
    assert frames_shown(page) == [(now - 1) % 16] * 6
    page.locator("#timeline").fill("9")
    assert frames_shown(page) == [9] * 6 and page.inner_text("#frame-label") == "frame 10 / 16"


def test_the_opacity_slider_changes_the_rendered_pixels(page, url, store):
    open_player(page, url, run="motion", model=MOTION, video=videos_of(store, "motion")[0])
    pixels = "[...document.querySelectorAll('canvas.panel')].map((c) => c.toDataURL())"
    half = page.evaluate(pixels)
    page.locator("#opacity").fill("0")
    clear = page.evaluate(pixels)
    page.locator("#opacity").fill("1")
    full = page.evaluate(pixels)
    assert len(set(clear)) == 1  # no map: every panel shows the same frame and box
    assert len(set(full)) == len(full) and all(a != b != c for a, b, c in zip(clear, half, full))


def test_the_sql_box_refuses_a_write_and_a_read_outside_the_store_with_the_sandboxs_message(page, url, store):
    for statement in ("COPY (SELECT * FROM metrics) TO '/tmp/aosa-serve-copy.csv'",
                      "SELECT * FROM read_csv('/etc/passwd')"):
        with pytest.raises(QueryError) as refused:
            run_query(StoreReader(store), statement)
        page.goto(address(url, "/sql"))
        page.fill("#sql", statement)
        page.click("#run-sql")
        assert page.inner_text("#sql-error") == str(refused.value)
    assert not Path("/tmp/aosa-serve-copy.csv").exists()
    query = "SELECT run_id, count(*) AS units FROM metrics GROUP BY run_id ORDER BY run_id"
    page.fill("#sql", query)
    with page.expect_download() as download:
        page.click("#csv")
    expected = run_query(StoreReader(store), query, render=partial(render, fmt="csv"))[0]
    assert Path(download.value.path()).read_text() == expected + "\n"


def test_traversal_paths_and_unknown_runs_or_videos_are_404_pages(page, url):
    for path, message in (("/static/../../../../etc/passwd", "no page at"),
                          ("/static/%2e%2e/%2e%2e/app.py", "no page at"),
                          ("/run?run=nope", "this store has no run 'nope'"),
                          ("/videos?run=nope", "this store has no run 'nope'"),
                          ("/video?run=motion&model=probe%3Amotion&video=nope", "run 'motion' has no video 'nope'")):
        reply = page.goto(url.rstrip("/") + path)
        assert reply.status == 404 and page.inner_text("h1") == "404 Not found", path
        assert message in page.inner_text("#error-message"), path


def test_off_loopback_the_server_refuses_a_browser_without_its_token(page, store):
    with server(store, "--host", "0.0.0.0") as (printed, _):
        base, token = printed.split("?token=")
        local = "http://127.0.0.1:" + base.rsplit(":", 1)[1]
        assert page.goto(local).status == 403 and "needs its token" in page.inner_text("#error-message")
        assert page.goto(f"{local}?token={token}").status == 200 and page.inner_text("h1") == "Runs"
        assert page.goto(local + "run?run=motion").status == 200  # the cookie holds the token now


def test_evaluate_stores_one_preview_per_clip_it_decoded_matching_the_frames(store):
    previews = sorted(path.relative_to(store).as_posix() for path in (store / "previews").rglob("*.jpg"))
    assert len(previews) == 6 and all("lost" not in path for path in previews)  # 2 clips x 3 runs; none failed
    video = videos_of(store, "motion")[0]
    with StoreReader(store).connect("motion") as con:
        (part,) = run_parts(con, "motion")
    preview = StoreReader(store).load_preview("motion", MOTION, video)
    decoded = source_frames(part, next(row for row in read_manifest(Path(part["manifest"])) if row.video_id == video))
    assert np.abs(preview.frames.astype(int) - decoded.frames).mean() < 4
    assert preview.boxes == decoded.boxes and preview.decoder == decoded.decoder
