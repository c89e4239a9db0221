"""The HTML pages: Runs, Run, Videos (the gallery) and Video (the player). Each reads the store through its own
DuckDB connection (views over the files visible when it connects) and renders a template; nothing is written."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from aosa.engine.errors import ConfigError
from aosa.engine.reporting.clips import run_parts
from aosa.engine.serve import run_page
from aosa.engine.serve.gallery import PAGE_SIZE, GalleryQuery, gallery_page, metric_columns
from aosa.engine.serve.params import not_found, required, store_of
from aosa.engine.serve.runs_page import has_run, list_runs
from aosa.engine.serve.video_page import clip_view, other_curves, other_measures, runs_with_video


def render(request: Request, template: str, status_code: int = 200, **context: object) -> Response:
    return request.app.state.templates.TemplateResponse(request, template, context, status_code=status_code)


def runs(request: Request) -> Response:
    """Every run of the store, newest first."""
    with store_of(request).connect() as con:
        return render(request, "runs.html", runs=list_runs(con))


def _known_run(request: Request) -> str:
    run_id = required(request, "run")
    with store_of(request).connect(run_id) as con:
        if not has_run(con, run_id):
            raise HTTPException(404, f"this store has no run {run_id!r}")
    return run_id


def run(request: Request) -> Response:
    """A run's tables with intervals, a paired difference, mean curves, stage timings and failures."""
    run_id = _known_run(request)
    a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
    with store_of(request).connect(run_id) as con:
        parts = run_parts(con, run_id)
        methods = run_page.run_methods(con, run_id, parts)
        context = {"tables": run_page.paper_tables(run_page.summary(con, run_id), methods),
                   "curves": run_page.mean_curves(con, run_id), "stages": run_page.stages(con, run_id),
                   "failures": run_page.failures(con, run_id),
                   "paired": run_page.paired(con, run_id, a, b) if a and b else None}
    return render(request, "run.html", run_id=run_id, parts=parts, methods=methods, a=a, b=b, **context)


def videos(request: Request) -> Response:
    """The gallery: a page of the run's videos, sorted and filtered by DuckDB."""
    run_id = _known_run(request)
    query = GalleryQuery.of(dict(request.query_params))
    with store_of(request).connect(run_id) as con:
        parts = run_parts(con, run_id)
        methods = run_page.run_methods(con, run_id, parts)
        thumb = query.method or query.a or (methods[0] if methods else "")
        metrics = metric_columns(con)
        try:
            rows, total = gallery_page(con, run_id, query, thumb)
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
    models = sorted({part["model"] for part in parts})
    return render(request, "videos.html", run_id=run_id, query=query, rows=rows, total=total, page_size=PAGE_SIZE,
                  metrics=metrics, methods=methods, models=models, thumb=thumb)


def video(request: Request) -> Response:
    """Every method's map of one video over its frames, on one timeline; optionally a second run beside it."""
    run_id, model, video_id = required(request, "run"), required(request, "model"), required(request, "video")
    compare = request.query_params.get("compare", "")
    store = store_of(request)
    with not_found():
        views = [clip_view(store, run_id, model, video_id)]
        if compare:
            run, _, other_model = compare.partition("|")
            views.append(clip_view(store, run, other_model or model, video_id))
    with store.connect() as con:
        others = [pair for pair in runs_with_video(con, video_id) if pair != (run_id, model)]
    return render(request, "video.html", views=views, others=others, compare=compare, other_curves=other_curves,
                  other_measures=other_measures, run_id=run_id, model=model, video_id=video_id)

