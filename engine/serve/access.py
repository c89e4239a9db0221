"""Who may use a server. On loopback: anyone on this machine, through a request that names a loopback host (so a
web page cannot reach it by DNS rebinding). On any other address: only holders of the token printed at start, as
Jupyter does it: opening a page with `?token=...` once sets a cookie (and drops the token from the address), or a
client sends `Authorization: token ...`. `/health` answers everyone: it says only that an aosa server runs."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp

COOKIE = "aosa_token"
OPEN_PATHS = ("/health",)

Refuse = Callable[[Request, int, str], Response]


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Access(BaseHTTPMiddleware):
    """Requires `token` on every request but OPEN_PATHS, or, without one, a loopback Host header."""

    def __init__(self, app: ASGIApp, token: str | None, refuse: Refuse) -> None:
        super().__init__(app)
        self.token, self.refuse = token, refuse

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path in OPEN_PATHS:
            return await call_next(request)
        if self.token is None:
            if is_loopback(request.url.hostname or ""):
                return await call_next(request)
            return self.refuse(request, 400, f"this server answers requests for loopback hosts only, not for "
                                             f"{request.url.hostname!r}")
        if self._matches(request.query_params.get("token")):
            return self._remember(request)
        header = request.headers.get("authorization", "")
        if self._matches(request.cookies.get(COOKIE)) or self._matches(header.removeprefix("token ")):
            return await call_next(request)
        return self.refuse(request, 403, "this server needs its token: open the address `aosa serve` printed "
                                         "(ending in ?token=...) once in this browser")

    def _matches(self, given: str | None) -> bool:
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())

    def _remember(self, request: Request) -> Response:
        """Redirect to the same page without the token, with a cookie that holds it."""
        target = request.url.remove_query_params("token")
        response = RedirectResponse(target.path + (f"?{target.query}" if target.query else ""), status_code=303)
        response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        return response
