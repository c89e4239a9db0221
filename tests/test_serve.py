"""`aosa serve` over HTTP (no browser: tests/test_serve_browser.py drives Chromium) on a store written without Ray:
pages answer, unknown runs, videos and traversal paths are 404 pages, a non-loopback bind needs its token, frames
come from the video, else the stored preview, else not at all; the nightly report links into a running server;
`aosa figure` writes a PDF and a PNG."""

from __future__ import annotations

import http.client
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
import pytest
from PIL import Image

from aosa.engine.datasets.manifests import find_row, read_manifest, write_manifest
from aosa.engine.datasets.synthetic import write_benchmark
from aosa.engine.io.preprocess import load_clip
from aosa.engine.reporting.clips import preprocessing
from aosa.engine.reporting.html_report import write_report
from aosa.engine.store.previews import Preview, decode_preview, encode_preview
from aosa.engine.store.reader import StoreReader
from aosa.jobs.figure import main as figure_main
from aosa.jobs.serve import main as serve_main
from aosa.schemas.manifest import ManifestRow
from tests.served import fetch, server, write_run

MODEL = "probe:motion"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Runs `alpha` and `beta` over four clips and a missing video; clip 2's file is gone after the runs (alpha
    stored its preview), clip 3's too (no preview)."""
    root = tmp_path_factory.mktemp("served")
    manifest = write_benchmark(root / "clips", videos=4, seed=0)
    rows = read_manifest(manifest) + [ManifestRow("gone", root / "clips" / "gone.mp4", label=1)]
    write_manifest(rows, manifest)
    frames = np.random.default_rng(1).integers(0, 255, (16, 112, 112, 3), dtype=np.uint8)
    write_run(root / "store", "alpha", manifest, MODEL, "aosa-approx,random", seed=0,
              previews={rows[2].video_id: frames})
    write_run(root / "store", "beta", manifest, MODEL, "gradcam", seed=1)
    for row in rows[2:4]:
        row.path.unlink()
    return root / "store"


@pytest.fixture(scope="module")
def url(store) -> str:
    with server(store) as (address, _):
        yield address


def page(url: str, path: str, **params: str) -> tuple[int, str, dict]:
    return fetch(url.rstrip("/") + path + ("?" + urlencode(params) if params else ""))


def raw_status(url: str, path: str) -> tuple[int, str]:
    """A request whose path is sent as written (a browser or urllib would resolve `..` first)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("GET", path)
    reply = connection.getresponse()
    return reply.status, reply.read().decode(errors="replace")


def test_every_page_answers(url, store):
    videos = [row.video_id for row in read_manifest(store.parent / "clips" / "manifest.csv")]
    assert page(url, "/")[1].count('href="/run?run=') == 2
    status, body, _ = page(url, "/run", run="alpha", a="aosa-approx", b="random")
    assert status == 200 and "Table I:" in body and 'id="paired"' in body and "missing_file: 2 units" in body
    status, body, _ = page(url, "/videos", run="alpha", sort="metric", method="random")
    assert status == 200 and body.count('class="card') == 5
    status, body, _ = page(url, "/video", run="alpha", model=MODEL, video=videos[0], compare=f"beta|{MODEL}")
    assert status == 200 and body.count('<canvas class="panel"') == 3
    assert page(url, "/sql")[0] == 200 and page(url, "/health")[0] == 200
    assert page(url, "/static/player.js")[0] == 200
    for fmt, magic in (("pdf", "%PDF-"), ("png", "\ufffdPNG")):  # the video page's Figure form
        status, body, headers = page(url, f"/figure.{fmt}", run="alpha", model=MODEL, video=videos[0],
                                     methods="aosa-approx,random", frames="0,15")
        assert status == 200 and body.startswith(magic) and "attachment" in headers["content-disposition"]


def test_unknown_runs_videos_and_traversal_paths_are_404_pages(url):
    status, body, _ = page(url, "/run", run="nope")
    assert status == 404 and "this store has no run &#39;nope&#39;" in body
    status, body, _ = page(url, "/video", run="alpha", model=MODEL, video="nope")
    assert status == 404 and "has no video" in body
    status, body, _ = page(url, "/media/map.png", run="alpha", model=MODEL, video="gone", method="random")
    assert status == 404 and "has no map" in body
    for path in ("/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/app.py", "/static/..%2f..%2fapp.py",
                 "/../../etc/passwd", "/nothing-here"):
        status, body = raw_status(url, path)
        assert status == 404 and "404 Not found" in body and "root:" not in body, path


def test_frames_come_from_the_video_else_the_preview_else_a_note(url, store):
    rows = read_manifest(store.parent / "clips" / "manifest.csv")
    status, body, _ = page(url, "/video", run="alpha", model=MODEL, video=rows[0].video_id)
    assert 'id="frames-note"' not in body and "/media/frames.png" in body
    status, body, _ = page(url, "/video", run="alpha", model=MODEL, video=rows[2].video_id)
    assert "the frames are the preview the run stored" in body and "/media/frames.png" in body
    image = fetch(url + "media/frames.png?" + urlencode({"run": "alpha", "model": MODEL, "video": rows[2].video_id}))
    assert image[0] == 200
    status, body, _ = page(url, "/video", run="alpha", model=MODEL, video=rows[3].video_id)
    assert "The source video is missing" in body and "the maps show without frames" in body
    assert "/media/frames.png" not in body and body.count('<canvas class="panel"') == 2


def test_a_non_loopback_bind_needs_its_token(store, capsys):
    assert serve_main(["--store", str(store), "--host", "0.0.0.0", "--token", ""]) == 2
    assert "is not a loopback address, so the server needs a token" in capsys.readouterr().err
    with server(store, "--host", "0.0.0.0") as (address, _):
        base, token = address.split("?token=")
        local = f"http://127.0.0.1:{urlsplit(base).port}/"
        status, body, _ = fetch(local)
        assert status == 403 and "needs its token" in body
        assert fetch(local + "?token=wrong")[0] == 403
        status, _, headers = fetch(local + "run?run=alpha&token=" + token)
        assert status == 303 and headers["location"] == "/run?run=alpha" and "aosa_token=" in headers["set-cookie"]
        assert fetch(local, headers={"Cookie": f"aosa_token={token}"})[0] == 200
        assert fetch(local, headers={"Authorization": f"token {token}"})[0] == 200
        assert fetch(local + "health")[0] == 200


def test_a_loopback_server_refuses_other_host_names(url):
    """A page elsewhere that rebinds its name to 127.0.0.1 sends its own name as the Host: refused."""
    assert fetch(url, headers={"Host": "attacker.example"})[0] == 400


def test_nightly_report_links_into_a_running_server_only(store, tmp_path):
    runtime = tmp_path / "runtime"
    with server(store, runtime=runtime) as (address, _):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AOSA_RUNTIME_DIR", str(runtime))
            linked = write_report(StoreReader(store), "alpha").read_text(encoding="utf-8")
            assert f'<a href="{address}video?run=alpha&amp;model=probe%3Amotion&amp;video=' in linked
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AOSA_RUNTIME_DIR", str(runtime))
        alone = write_report(StoreReader(store), "alpha").read_text(encoding="utf-8")
    assert "http" not in alone and "<a " not in alone and list(runtime.glob("*.json")) == []


def test_figure_writes_a_pdf_and_a_png_that_open(store, tmp_path, capsys):
    videos = ",".join(row.video_id for row in read_manifest(store.parent / "clips" / "manifest.csv")[:2])
    for suffix in ("png", "pdf"):
        out = tmp_path / f"fig.{suffix}"
        assert figure_main(["--store", str(store), "--run-id", "alpha", "--videos", videos,
                            "--methods", "aosa-approx,random", "--frames", "0,5,10,15", "--out", str(out)]) == 0
    with Image.open(tmp_path / "fig.png") as image:
        assert image.size[0] > 600 and np.asarray(image.convert("L")).std() > 20
    pdf = (tmp_path / "fig.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF") and b"/Type /Page" in pdf
    if shutil.which("pdftoppm"):  # poppler opens it (CI installs it): rendered, the page is the figure, not blank
        subprocess.run(["pdftoppm", "-png", "-r", "40", "-singlefile", str(tmp_path / "fig.pdf"),
                        str(tmp_path / "rendered")], check=True, capture_output=True)
        with Image.open(tmp_path / "rendered.png") as page:
            assert np.asarray(page.convert("L")).std() > 20
    assert figure_main(["--store", str(store), "--run-id", "alpha", "--videos", videos, "--methods", "osa",
                        "--out", str(tmp_path / "x.png")]) == 2
    assert "has no map of 'osa' in run 'alpha' (maps: aosa-approx, random)" in capsys.readouterr().err


def test_a_preview_keeps_the_frames_within_a_few_levels_and_the_boxes_and_decoder_exactly(tmp_path):
    row = read_manifest(write_benchmark(tmp_path, videos=1, seed=3))[0]
    clip = load_clip(row.path, preprocessing(MODEL)).frames
    preview = decode_preview(encode_preview(Preview(clip, ((0, 1, 2, 3, 4), (15, 5, 6, 7, 8)), "pyav x")))
    assert preview.frames.shape == clip.shape and np.abs(preview.frames.astype(int) - clip).mean() < 4
    assert preview.boxes == ((0, 1, 2, 3, 4), (15, 5, 6, 7, 8)) and preview.decoder == "pyav x"


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_find_row_matches_reading_the_whole_manifest(tmp_path, suffix):
    rows = read_manifest(write_benchmark(tmp_path / "clips", videos=3, seed=0))
    rows += [ManifestRow("007", tmp_path / "a b.mp4"), ManifestRow("x,\"y\"", tmp_path / "c.mp4", label=2)]
    manifest = tmp_path / f"m.{suffix}"
    write_manifest(rows, manifest)
    assert [find_row(manifest, row.video_id) for row in rows] == rows
    assert find_row(manifest, "7") is None and find_row(manifest, "absent") is None
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf video_id ,path\nv1,x.mp4\n")
    assert find_row(tmp_path / "bom.csv", "v1") == ManifestRow("v1", (tmp_path / "x.mp4").resolve())
