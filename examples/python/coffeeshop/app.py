"""The web app: a WSGI application on the standard library's server, wrapped in the Sentry SDK's
WSGI middleware, which reports what a request raises (and the request's transaction) to the DSN
in ``SENTRY_DSN``.

    SENTRY_DSN=http://<public key>@localhost:8080/1 python -m coffeeshop --port 8000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import make_server
from wsgiref.types import StartResponse, WSGIEnvironment

import sentry_sdk
from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware

from coffeeshop.orders import STOCK, OrderLine, reserve


def _json(start_response: StartResponse, status: str, body: Any) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """``GET /`` lists the stock; ``POST /orders`` with ``{"lines": [{"sku", "quantity"}]}``
    places an order (an ``X-User-Id`` header names the customer)."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    if (method, path) == ("GET", "/"):
        return _json(start_response, "200 OK", {"stock": STOCK})
    if (method, path) == ("POST", "/orders"):
        user = environ.get("HTTP_X_USER_ID")
        if user:
            sentry_sdk.set_user({"id": user})
        size = int(environ.get("CONTENT_LENGTH") or 0)
        order = json.loads(environ["wsgi.input"].read(size) or b"{}")
        lines = [OrderLine(str(line["sku"]), int(line["quantity"])) for line in order.get("lines", [])]
        return _json(start_response, "201 Created", {"left": reserve(lines)})
    return _json(start_response, "404 Not Found", {"detail": f"no route for {method} {path}"})


def main(argv: list[str] | None = None) -> None:
    """Serve the app until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(prog="coffeeshop", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    # The DSN, environment and release come from SENTRY_DSN, SENTRY_ENVIRONMENT and
    # SENTRY_RELEASE; a release spelled "name@version" names the service in AppGuard.
    sentry_sdk.init(traces_sample_rate=float(os.environ.get("SENTRY_TRACES_SAMPLE_RATE", "1.0")))
    # Leave through sys.exit so the SDK sends what it still holds before the process ends.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with make_server(args.host, args.port, SentryWsgiMiddleware(application)) as server:
        print(f"coffeeshop listening on http://{args.host}:{server.server_port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
