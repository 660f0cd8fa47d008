"""``smsc-mailer serve`` — the HTTP API on uvicorn — and ``smsc-mailer api-token``, which mints a token.

    smsc-mailer api-token --scope full      # line 1: the token (give it to the client), line 2: the
                                            # SMSC_API_TOKENS entry (sha256hex:full) for the server
    smsc-mailer serve --port 8000 [--host 127.0.0.1]
    python -m worker.http.serve --port 0    # the same; 0 takes a free port (the printed line names it)
    python -m worker.http.serve --write-openapi docs/openapi.json   # regenerate the committed document

The server prints ``api listening on http://HOST:PORT`` once its socket listens. uvicorn's access log is
off: the app logs one line per request itself, the path without its query string and with numbers masked
(:mod:`worker.http.app`), so no token and no full number reaches a log. Exit codes: 0 after SIGTERM or
SIGINT, 2 for bad settings or an address that cannot be bound (one line).

:func:`serve_main` and :data:`api_token` are what ``worker.cli`` registers (``serve``, ``api-token``).
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import click

from worker.settings import ConfigError, Settings, get_settings

__all__ = ["DEFAULT_PORT", "api_token", "main", "serve", "serve_main", "write_openapi"]

DEFAULT_PORT = 8000


def serve(settings: Settings, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
          announce: Callable[[str], None] | None = None) -> None:
    """Serve the API of ``settings`` with uvicorn until SIGTERM/SIGINT. ``port`` 0 takes a free one;
    ``announce`` hears ``http://host:port`` once the socket listens. ``OSError`` when the address cannot
    be bound, ``ConfigError`` for malformed settings (before anything listens)."""
    import uvicorn

    from worker.http.app import create_app

    app = create_app(settings)
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (design notes: ~40 ms otherwise)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    if announce is not None:
        announce(f"http://{host}:{bound}")
    # log_config=None: the process's logging (configure_logging) stays as set; access_log=False: the app's
    # own line replaces uvicorn's, which would show the query string.
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", loop="auto",
                            http="httptools" if _has("httptools") else "h11", server_header=False,
                            proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _configure_logging(settings: Settings) -> None:
    try:
        from worker.logs import configure_logging
    except ImportError:  # the log module is optional here: plain lines on standard error
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s] %(name)s: %(message)s")
        return
    configure_logging(settings, level=logging.INFO)


def serve_main(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> int:
    """``smsc-mailer serve``: the environment's settings, served; the exit code (one line on error)."""
    try:
        s = get_settings()
        _configure_logging(s)
        serve(s, host, port, announce=lambda url: print(f"api listening on {url}", flush=True))
    except ConfigError as exc:
        print(f"smsc-mailer serve: {exc}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:
        print(f"smsc-mailer serve: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr,
              flush=True)
        return 2
    return 0


def write_openapi(path: str) -> None:
    """Write the app's OpenAPI document (independent of the settings) to ``path`` (``-``: standard output)."""
    from pydantic import SecretStr

    from worker.http.app import create_app

    # Any settings make the same document; these need no environment and connect to nothing.
    s = Settings(_env_file=None, redis_url="redis://127.0.0.1:1/0", smsc_api_tokens=SecretStr(""))  # type: ignore[call-arg]
    text = json.dumps(create_app(s).openapi(), indent=2, ensure_ascii=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        Path(path).write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """``python -m worker.http.serve [--host H] [--port P] [--write-openapi PATH]``."""
    p = argparse.ArgumentParser(prog="python -m worker.http.serve")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 = a free port (the printed line names it)")
    p.add_argument("--write-openapi", metavar="PATH", help="write the OpenAPI document to PATH (- = stdout); "
                                                           "serve nothing")
    args = p.parse_args(argv)
    if args.write_openapi:
        write_openapi(args.write_openapi)
        return 0
    return serve_main(args.host, args.port)


@click.command(name="api-token")
@click.option("--scope", type=click.Choice(["read", "full"]), required=True,
              help="read: GET routes and quotes; full: everything.")
def api_token(scope: str) -> None:
    """Mint an HTTP API token: line 1 the token (for the client), line 2 the SMSC_API_TOKENS entry."""
    from worker.http.auth import mint_token

    token, entry = mint_token(scope)
    click.echo(token)
    click.echo(entry)


if __name__ == "__main__":
    sys.exit(main())
