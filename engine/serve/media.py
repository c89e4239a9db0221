"""The endpoints that answer with images and files: frame and map strips for the player, gallery thumbnails, and
the paper's figure (the same as `aosa figure`) as a download."""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from aosa.engine.errors import ConfigError
from aosa.engine.reporting.clips import ClipFrames
from aosa.engine.reporting.figure import FORMATS, figure_bytes, frame_indices
from aosa.engine.reporting.video_maps import figure_videos
from aosa.engine.serve.images import frames_strip, map_strip, thumbnail
from aosa.engine.serve.params import not_found, required, store_of
from aosa.engine.serve.video_page import unit_map, video_frames

CACHE = {"Cache-Control": "private, max-age=600"}  # a stored unit does not change; a page reload may refetch


def _unit(request: Request) -> tuple[str, str, str]:
    return required(request, "run"), required(request, "model"), required(request, "video")


def _frames(request: Request, run_id: str, model: str, video_id: str) -> ClipFrames:
    store = store_of(request)
    with store.connect(run_id) as con:
        return video_frames(store, con, run_id, model, video_id)


def frames_png(request: Request) -> Response:
    """The frames the model saw, as one PNG strip; 404 where neither the video nor a preview is there."""
    run_id, model, video_id = _unit(request)
    frames = _frames(request, run_id, model, video_id)
    if frames.frames is None:
        raise HTTPException(404, frames.note or "no frames")
    return Response(frames_strip(frames.frames), media_type="image/png", headers=CACHE)


def map_png(request: Request) -> Response:
    """A unit's map in colour, as one PNG strip."""
    run_id, model, video_id = _unit(request)
    with not_found():
        saliency = unit_map(store_of(request), run_id, model, video_id, required(request, "method"))
    return Response(map_strip(saliency), media_type="image/png", headers=CACHE)


def thumb_jpg(request: Request) -> Response:
    """A gallery thumbnail: the unit's map over the middle frame."""
    run_id, model, video_id = _unit(request)
    with not_found():
        saliency = unit_map(store_of(request), run_id, model, video_id, required(request, "method"))
    frames = _frames(request, run_id, model, video_id).frames
    usable = frames is not None and frames.shape[:3] == saliency.shape
    return Response(thumbnail(frames if usable else None, saliency), media_type="image/jpeg", headers=CACHE)


def figure_file(request: Request) -> Response:
    """The figure of one video's maps (methods=a,b,...; frames=0,5,...) as a PDF or PNG download."""
    fmt = request.path_params["format"]
    run_id, model, video_id = _unit(request)
    if fmt not in FORMATS:
        raise HTTPException(404, f"a figure is a .pdf or a .png, not .{fmt}")
    methods = [name for name in required(request, "methods").split(",") if name]
    with not_found():
        videos = figure_videos(store_of(request), run_id, [video_id], methods, model)
    try:
        frames = frame_indices(request.query_params.get("frames"), min(len(m) for _, m in videos[0].maps))
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from None
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"figure-{run_id}-{video_id}.{fmt}")
    return Response(figure_bytes(videos, frames, fmt), media_type="application/pdf" if fmt == "pdf" else "image/png",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
