"""`aosa serve --store DIR [--host 127.0.0.1] [--port 8765] [--token T]`: a read-only results browser over a store.

It listens on loopback unless told otherwise; any other address needs a token, made and printed at start unless
--token gives one (as Jupyter does; an empty --token there is refused). Pages, scripts and styles come from the
installed package; the SQL box runs `aosa query`'s sandbox within the same limit options. The server announces
itself in a runtime file (engine.serve.registry) so the nightly report can link into it. Ctrl-C or SIGTERM
stops it (exit status 130).

    python -m aosa.jobs.serve --store results --port 8765
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import uvicorn

from aosa.engine.errors import ConfigError
from aosa.engine.serve.access import is_loopback, new_token
from aosa.engine.serve.app import create_app
from aosa.engine.serve.registry import announced
from aosa.jobs.common import open_store, run_guarded, sigterm_interrupts
from aosa.jobs.query import add_limit_options, query_limits
from aosa.jobs.render import render

DEFAULT_PORT = 8765


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa serve", description="A read-only results browser over a store.")
    parser.add_argument("--store", type=Path, required=True, help="result store directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one, printed at start)")
    parser.add_argument("--token", default=None,
                        help="token every request must carry (default: none on loopback, a new one printed at start "
                             "on any other address, where an empty one is refused)")
    add_limit_options(parser)
    return parser


def choose_token(host: str, given: str | None) -> str | None:
    """The token to require: the given one, a new one off loopback, none on loopback."""
    if is_loopback(host):
        return given or None
    if given == "":
        raise ConfigError(f"--host {host} is not a loopback address, so the server needs a token; leave --token out "
                          "to have one made and printed")
    return given or new_token()


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); a port in use or an unknown host is one error line."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def address(host: str, port: int) -> str:
    """The server's address as a browser on this or another machine opens it."""
    name = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://[{name}]:{port}/" if ":" in name else f"http://{name}:{port}/"


def run(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    token = choose_token(args.host, args.token)
    app = create_app(store, token, query_limits(args), partial(render, fmt="csv"))
    sock = listen(args.host, args.port)
    url = address(args.host, sock.getsockname()[1])
    print(f"aosa serve: {store.root} at {url}" + (f"?token={token}" if token else ""), flush=True)
    with sigterm_interrupts(), announced(store.root, url):  # uvicorn stops, then re-raises the signal to this handler
        uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("serve", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
