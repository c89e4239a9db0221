"""What every endpoint reads from its request: the store it serves and its required query parameters, and how a
missing run, video or map becomes a 404 page."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from starlette.exceptions import HTTPException
from starlette.requests import Request

from aosa.engine.errors import ConfigError
from aosa.engine.store.reader import StoreReader


def store_of(request: Request) -> StoreReader:
    return request.app.state.store


def required(request: Request, name: str) -> str:
    """A query parameter the page cannot do without (400 when absent)."""
    value = request.query_params.get(name, "")
    if not value:
        raise HTTPException(400, f"this page needs the parameter {name}")
    return value


@contextlib.contextmanager
def not_found() -> Iterator[None]:
    """A ConfigError inside (an unknown run, video, method or map) is a 404 page with its message."""
    try:
        yield
    except ConfigError as exc:
        raise HTTPException(404, str(exc)) from None
