"""What the `aosa serve` tests share: a store written unit by unit without Ray, and a server of a store started as a
process of the test's own (its address read from the line it prints), stopped by its pid."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from aosa.engine.datasets.manifests import read_manifest
from aosa.engine.store.previews import Preview, encode_preview, preview_path
from aosa.engine.store.rows import PreviewFile, map_file, unit_rows
from aosa.engine.store.writer import RunWriter
from aosa.schemas.method_params import MethodParams
from aosa.schemas.run_config import RunConfig, parse_methods

DETAILS = {"versions": {}, "git_sha": None, "host": "test", "device": "cpu"}
SHAPE = (16, 112, 112)


def write_run(root: Path, run_id: str, manifest: Path, model: str, methods: str, seed: int,
              previews: dict[str, np.ndarray] | None = None) -> None:
    """A finished run over the manifest's videos: random maps, metrics that vary by video, a missing video's rows
    as `missing_file` errors, and the previews given (video id -> frames)."""
    rng = np.random.default_rng(seed)
    config = RunConfig(run_id, str(manifest), model, tuple(parse_methods(methods, MethodParams())))
    with RunWriter(root, run_id) as writer:
        writer.write_run({"run_id": run_id, "config": config.to_dict(), "status": "finished", **DETAILS})
        for row in read_manifest(manifest):
            units = []
            for spec in config.methods:
                keys = {"run_id": run_id, "video_id": row.video_id, "model": model, "method": spec.key}
                if not row.path.exists():
                    units.append(unit_rows(run_id, [{**keys, "status": "error", "error_kind": "missing_file",
                                                     "error": f"{row.path}: file not found", "params": "{}"}]))
                    continue
                saved = map_file(run_id, row.video_id, model, spec.key, rng.random(SHAPE, dtype=np.float32))
                deletion = np.sort(rng.random(29))[::-1]
                insertion = np.sort(rng.random(29))
                metrics = {**keys, "status": "ok", "label": row.label, "target": row.label, "score": 0.9,
                           "deletion_auc": float(deletion.mean()), "insertion_auc": float(insertion.mean()),
                           "overall": float(insertion.mean() - deletion.mean()), "deletion_curve": deletion.tolist(),
                           "insertion_curve": insertion.tolist(), "spt_hits": int(rng.integers(0, 17)),
                           "spt_frames": 16, "seconds_total": float(rng.random()), "n_forward": 1,
                           "map_path": saved.path, "params": "{}"}
                timings = [{**keys, "stage": "total", "seconds": 0.5, "items": 1, "unit": "maps"}]
                kept = [PreviewFile(preview_path(run_id, model, row.video_id),
                                    encode_preview(Preview(previews[row.video_id], ((0, 1, 2, 30, 40),), "test")))
                        ] if previews and row.video_id in previews and not units else []
                units.append(unit_rows(run_id, [metrics], timings, [], [saved], kept))
            writer.write_units(units)


@contextmanager
def server(store: Path, *options: str, runtime: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`aosa serve` of `store` on a free port: its printed address (with ?token=... where it made one) and its
    process, terminated on leaving; `runtime` is the folder it announces itself in."""
    env = {**os.environ, "AOSA_RUNTIME_DIR": str(runtime or store.parent / "runtime")}
    process = subprocess.Popen([sys.executable, "-m", "aosa.jobs.serve", "--store", str(store), "--port", "0",
                                *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("aosa serve: "), process.stderr.read() if process.poll() is not None else line
        yield line.rsplit(" at ", 1)[1].strip(), process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    """Status, body and headers of one request (no proxy, no redirect followed)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003 - urllib's signature
            return None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers or {}), timeout=60) as reply:
            return reply.status, reply.read().decode(errors="replace"), dict(reply.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace"), dict(error.headers)
