"""The HTTP side of the server's one port (websockets' ``process_request`` hook): the handshake
checks of ``/ws`` (origin, token), ``/healthz``, ``/metrics`` and the static files of ``web/``."""

from __future__ import annotations

import http
import json
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from runtime.serve.auth import check_token, origin_allowed

WEB_DIR = Path(str(resources.files("web")))
"""The widget, demo and kiosk pages: package data of ``web`` (so a wheel install serves them)."""


def response(status: int, body: bytes, content_type: str):
    """A websockets ``Response`` with ``body`` (never cached, never content-sniffed)."""
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def static_file(web_dir: Path, path: str):
    """The ``Response`` for a GET of ``path`` under ``web_dir`` (``/``: ``index.html``): 200 with
    the file, or 404 for a missing file, a hidden one or one outside the folder."""
    root = web_dir.resolve()
    rel = "index.html" if path in ("", "/") else path.lstrip("/")
    target = (root / rel).resolve()
    if root not in target.parents or not target.is_file() or target.name.startswith("."):
        return response(404, b"not found\n", "text/plain")
    kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if target.suffix == ".js":
        kind = "text/javascript"
    if kind.startswith("text/"):
        kind += "; charset=utf-8"
    return response(200, target.read_bytes(), kind)


@dataclass
class HttpRoutes:
    """Answers every HTTP request of the port; pass ``process_request`` to websockets' ``serve``.

    Attributes:
        web_dir: the static files' folder.
        token: the handshake's secret (``runtime.serve.auth.check_token``), None: none needed.
        allowed_origins: browser origins allowed besides the server's own pages.
        health: returns the ``/healthz`` JSON object; its ``status`` "ok" answers 200, else 503.
        metrics: the server's ``runtime.serve.metrics.Metrics`` (``/metrics``; refusals are
            counted in its ``errors{code}``: ``forbidden_origin``, ``unauthorized``).
    """

    web_dir: Path
    token: str | None
    allowed_origins: tuple[str, ...]
    health: Callable[[], dict]
    metrics: object

    def process_request(self, connection, request):
        """websockets' hook: None lets a ``/ws`` handshake go on; otherwise the ``Response``
        (403 for a refused origin, 401 for a missing or bad token)."""
        url = urlsplit(request.path)
        if url.path == "/ws":
            if not origin_allowed(request.headers.get("Origin"),
                                  request.headers.get("Host", ""), self.allowed_origins):
                self.metrics.errors.labels("forbidden_origin").inc()
                return response(403, b"origin not allowed\n", "text/plain")
            token = parse_qs(url.query).get("token", [None])[0]
            if not check_token(token, self.token):
                self.metrics.errors.labels("unauthorized").inc()
                return response(401, b"missing or invalid token\n", "text/plain")
            return None
        if url.path == "/healthz":
            health = self.health()
            status = 200 if health["status"] == "ok" else 503
            return response(status, json.dumps(health).encode(), "application/json")
        if url.path == "/metrics":
            return response(200, self.metrics.text(), "text/plain; version=0.0.4; charset=utf-8")
        return static_file(self.web_dir, url.path)
