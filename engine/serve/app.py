"""The results browser as a Starlette app: read-only pages over one result store, its static files served from the
package (no CDN, nothing fetched at run time), an error page for every refusal.

    app = create_app(StoreReader("results"), token=None, limits=QueryLimits(), csv=partial(render, fmt="csv"))

Files are served only from the package's static folder (Starlette's StaticFiles refuses paths that leave it) and,
as images, from maps the store's `metrics` rows name (StoreReader.load_map refuses paths outside the store).
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from aosa.engine.serve import media, pages, sql_box
from aosa.engine.serve.access import Access
from aosa.engine.serve.registry import store_key
from aosa.engine.serve.views import templates
from aosa.engine.store.query import Render
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.sql import QueryLimits, first_line

STATIC = Path(__file__).parent / "static"
TITLES = {400: "Bad request", 403: "Forbidden", 404: "Not found", 405: "Method not allowed", 500: "Server error"}


def refuse(request: Request, status: int, message: str) -> Response:
    """The error page: its status, a title and one line saying why."""
    return request.app.state.templates.TemplateResponse(
        request, "error.html", {"status": status, "title": TITLES.get(status, "Error"), "message": message},
        status_code=status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else \
        f"no page at {request.url.path}"
    return refuse(request, exc.status_code, message)


async def server_error(request: Request, exc: Exception) -> Response:
    """An unexpected failure, as one line on the error page (the traceback goes to the server's log)."""
    return refuse(request, 500, f"the page failed: {type(exc).__name__}: {first_line(exc)}")


def health(request: Request) -> Response:
    """That an aosa server runs, and a digest of its store's path (engine.serve.registry)."""
    return JSONResponse({"aosa": "serve", "store": store_key(request.app.state.store.root)})


def create_app(store: StoreReader, token: str | None, limits: QueryLimits, csv: Render) -> Starlette:
    """The app over `store`: every request but /health needs `token` when one is given, else a loopback host;
    the SQL box runs within `limits` and renders its CSV download with `csv(columns, rows)` (picklable)."""
    routes = [
        Route("/", pages.runs), Route("/run", pages.run), Route("/videos", pages.videos), Route("/video", pages.video),
        Route("/sql", sql_box.sql_page, methods=["GET", "POST"]), Route("/sql.csv", sql_box.sql_csv, methods=["POST"]),
        Route("/media/frames.png", media.frames_png), Route("/media/map.png", media.map_png),
        Route("/media/thumb.jpg", media.thumb_jpg), Route("/figure.{format}", media.figure_file),
        Route("/health", health), Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Access, token=token, refuse=refuse)],
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.store, app.state.templates, app.state.limits, app.state.csv = store, templates(), limits, csv
    return app
