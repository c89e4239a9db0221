"""Issue 15 provenance: the decoder travels with the clip into PreparedVideo, meta.json and the metrics table,
and `aosa report` warns when the same video was decoded by different decoders."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from aosa.engine.io.preprocess import load_clip
from aosa.engine.runtime.workers import PreparedVideo, VideoPreparer
from aosa.engine.store.writer import RunWriter
from aosa.jobs.explain import main as explain_main
from aosa.jobs.report import main as report_main
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.preprocessing import Preprocessing
from aosa.schemas.tables import build_table
from tests.stored import stored_rows, write_unit
from tests.test_store import metrics_row
from tests.videos import moving_square, write_video


@pytest.fixture(scope="module")
def vp9(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("prov") / "square.webm", moving_square(8, 48, 64), "libvpx-vp9")


def test_clip_and_prepared_video_name_their_decoder(vp9: Path) -> None:
    prep = Preprocessing(frames=4, size=(32, 32))
    assert load_clip(vp9, prep, backend="pyav").decoder.startswith("pyav ")
    assert load_clip(vp9, prep, backend="dali").decoder.startswith("dali-cpu ")
    prepared = VideoPreparer(prep, decoder="pyav").prepare(ManifestRow(video_id="v", path=vp9), ())
    assert isinstance(prepared, PreparedVideo) and prepared.decoder == prepared.clip.decoder
    assert "FFmpeg" in prepared.decoder


def test_explain_meta_records_the_decoder(vp9: Path, tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", moving_square(20, 96, 128))
    assert explain_main([str(clip), "--model", "probe3d", "--method", "aosa-approx", "--out", str(tmp_path / "o"),
                         "--decoder", "pyav"]) == 0
    assert json.loads((tmp_path / "o" / "meta.json").read_text())["decoder"].startswith("pyav ")


def _write(store: Path, run_id: str, video: str, decoder: str | None, method: str = "aosa") -> None:
    row = metrics_row(video, method=method) | ({"decoder": decoder} if decoder else {})
    with RunWriter(store, run_id) as writer:
        write_unit(writer, [row])


def test_metrics_decoder_column_round_trips_and_old_files_read_it_as_null(tmp_path: Path) -> None:
    _write(tmp_path, "run", "new", "dali-cpu 2.4.0")
    old = build_table("metrics", [metrics_row("old") | {"run_id": "run"}]).drop_columns(["decoder"])
    pq.write_table(old, tmp_path / "metrics" / "run_id=run" / "method=aosa" / "part-old.parquet")
    got = {row["video_id"]: row["decoder"] for row in stored_rows(tmp_path, "metrics", "run")}
    assert got == {"new": "dali-cpu 2.4.0", "old": None}


def test_report_warns_about_mixed_decoders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write(tmp_path, "run", "a", "dali-cpu 2.4.0", "aosa")
    _write(tmp_path, "run", "a", "pyav 18.1.0 (FFmpeg 8.1.2)", "osa")
    _write(tmp_path, "run", "b", "pyav 18.1.0 (FFmpeg 8.1.2)", "aosa")
    assert report_main(["--store", str(tmp_path), "--run-id", "run"]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 video(s) were decoded with different decoders" in err and "a: dali-cpu 2.4.0 vs pyav" in err


def test_report_on_a_store_without_the_decoder_column_does_not_warn(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "metrics" / "run_id=run" / "method=aosa"
    folder.mkdir(parents=True)
    old = build_table("metrics", [metrics_row("a") | {"run_id": "run"}]).drop_columns(["decoder"])
    pq.write_table(old, folder / "part-old.parquet")
    assert report_main(["--store", str(tmp_path), "--run-id", "run"]) == 0
    assert "warning" not in capsys.readouterr().err
