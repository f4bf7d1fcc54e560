"""The HTTP side of the server's one port (websockets' ``process_request`` hook): the checks every
request passes (well-formed, ``Host`` allowed), then the ``/ws`` handshake's checks (origin,
token), ``/healthz``, ``/metrics`` and the static files of ``web/``.

websockets (asyncio API) parses any method and hands it to the hook; it answers by itself only a
request line over 8 KiB (414), oversized headers (431), and drops, unanswered, a request with a
body or a non-ASCII target. The hook may be a coroutine: files are read in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import http
import json
import logging
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, unquote

from runtime.serve.auth import (
    FailureLimiter,
    check_token,
    client_key,
    host_allowed,
    origin_allowed,
)

log = logging.getLogger("facecast.http")

WEB_DIR = Path(str(resources.files("web")))
"""The widget, demo and kiosk pages: package data of ``web`` (so a wheel install serves them)."""

MAX_PATH_BYTES = 2048
"""Longest request target answered; a longer one gets 414."""

SAFE_METHODS = "GET, HEAD"
"""The methods every route but ``/ws`` (GET only) answers; others get 405."""

PAGE_CSP = ("default-src 'self'; script-src 'self' blob: {scripts}; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
            "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
"""Content-Security-Policy of an HTML page. ``{scripts}``: the hashes of the page's own inline
scripts (no ``'unsafe-inline'``: an injected script does not run); ``blob:``: the widget loads
its microphone AudioWorklet from a Blob URL; ``style-src 'unsafe-inline'``: the pages' ``<style>``
and the widget's shadow-DOM ``<style>`` (styles run no code); ``ws: wss:``: the widget's
``server`` attribute and the kiosk's ``?server=`` may name another facecast server; the pages
are never framed (the widget is embedded as a script, not an iframe)."""

OTHER_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
"""Content-Security-Policy of every other response: opened on its own (an SVG, a text file), it
runs nothing."""

_INLINE_SCRIPT = re.compile(rb"<script\b([^>]*)>(.*?)</script[\s/>]", re.DOTALL | re.IGNORECASE)


def response(status: int, body: bytes, content_type: str,
             headers: tuple[tuple[str, str], ...] = ()):
    """A websockets ``Response`` with ``body`` and ``headers`` besides the ones every response
    carries: never cached, never content-sniffed, no referrer, ``OTHER_CSP`` unless ``headers``
    has a Content-Security-Policy."""
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    all_headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                           ("Referrer-Policy", "no-referrer"), ("Connection", "close"), *headers])
    if "Content-Security-Policy" not in all_headers:
        all_headers["Content-Security-Policy"] = OTHER_CSP
    return Response(status, http.HTTPStatus(status).phrase, all_headers, body)


def refuse(status: int, text: str, *headers: tuple[str, str]):
    """A plain-text ``response`` of one line, ``text``, for a refused or failed request."""
    return response(status, f"{text}\n".encode(), "text/plain; charset=utf-8", headers)


def page_csp(html: bytes) -> str:
    """``PAGE_CSP`` for the page ``html`` (UTF-8): its inline ``<script>`` elements (those
    without ``src``) allowed by their SHA-256, hashed as a browser does (line ends as LF)."""
    hashes = []
    for attrs, text in _INLINE_SCRIPT.findall(html):
        if not re.search(rb"\bsrc\s*=", attrs, re.IGNORECASE):
            text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            digest = base64.b64encode(hashlib.sha256(text).digest()).decode()
            hashes.append(f"'sha256-{digest}'")
    return PAGE_CSP.format(scripts=" ".join(sorted(set(hashes))))


def static_file(web_dir: Path, path: str):
    """The ``Response`` for a GET of URL path ``path`` (percent-encoded; ``/``: ``index.html``)
    under ``web_dir``: 200 with the file, 400 for a path that decodes to no text or to a control
    character, 404 for a missing file, one outside the folder or one with a component (on the
    path or, for a link, where it leads) starting with "." (``.git/config``, ``.env``).
    Blocking (reads the file): call it in a worker thread."""
    try:
        rel = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return refuse(400, "malformed path")
    if any(ord(c) < 0x20 or c == "\x7f" for c in rel):
        return refuse(400, "malformed path")
    parts = [p for p in rel.split("/") if p] or ["index.html"]
    not_found = refuse(404, "not found")
    if any(p.startswith(".") for p in parts):
        return not_found
    root = web_dir.resolve()
    try:
        target = root.joinpath(*parts).resolve()
        if root not in target.parents or not target.is_file():
            return not_found
        if any(p.startswith(".") for p in target.relative_to(root).parts):
            return not_found
        body = target.read_bytes()
    except (OSError, ValueError):  # a name too long for the file system, an unreadable file
        return not_found
    kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    headers: tuple[tuple[str, str], ...] = ()
    if target.suffix in (".js", ".mjs"):
        kind = "text/javascript"
        # the widget is a module script of other origins' pages: CORS and CORP must allow it
        headers = (("Access-Control-Allow-Origin", "*"),
                   ("Cross-Origin-Resource-Policy", "cross-origin"))
    elif kind == "text/html":
        headers = (("Content-Security-Policy", page_csp(body)), ("X-Frame-Options", "DENY"))
    if kind.startswith("text/"):
        kind += "; charset=utf-8"
    return response(200, body, kind, headers)


def _malformed(request):
    """400/414 for a request no route should see (odd target, duplicated or missing headers);
    None for a well-formed one."""
    path = request.path
    if len(path) > MAX_PATH_BYTES:
        return refuse(414, f"request target longer than {MAX_PATH_BYTES} bytes")
    if not path.startswith("/") or any(ord(c) <= 0x20 or c == "\x7f" for c in path):
        return refuse(400, "malformed request target")
    for name in ("Host", "Origin", "Authorization"):
        if len(request.headers.get_all(name)) > 1:
            return refuse(400, f"duplicate {name} header")
    if "Host" not in request.headers:
        return refuse(400, "missing Host header")
    return None


def _presented_token(request, query: str) -> str | None:
    """The token of ``Authorization: Bearer T``, else of ``?token=T``; None if neither."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return parse_qs(query).get("token", [None])[0]


@dataclass
class HttpRoutes:
    """Answers every HTTP request of the port; pass ``process_request`` to websockets' ``serve``.

    Every request must be well-formed (400; 414 for a target over ``MAX_PATH_BYTES``) and name
    an allowed ``Host`` (``runtime.serve.auth.host_allowed``; 403 otherwise: DNS rebinding).
    With a token configured, ``/ws`` and ``/metrics`` need one (``?token=`` or
    ``Authorization: Bearer``; 401), and a client that presented ``limiter.max_failures`` bad
    ones is refused (429) until its window passes. ``/healthz`` stays open: load balancers and
    orchestrators probe it without a secret, and what it tells (status, counts, display names,
    renderer settings) opens nothing without a token.

    Attributes:
        web_dir: the static files' folder.
        token: the secret tokens are signed with (``runtime.serve.auth.check_token``), None:
            none needed.
        allowed_origins: browser origins allowed besides the server's own pages.
        health: returns the ``/healthz`` JSON object; its ``status`` "ok" answers 200, else 503.
        metrics: the server's ``runtime.serve.metrics.Metrics`` (``/metrics``; refusals are
            counted in its ``errors{code}``: ``forbidden_host``, ``forbidden_origin``,
            ``unauthorized``, ``rate_limited``, and ``internal`` for a 500).
        public_hosts: names clients reach the server by (``--public-host``), allowed in ``Host``
            besides IP literals, ``localhost`` and the allowed origins' names.
        limiter: counts failed tokens per client address (IPv6: per /64).
    """

    web_dir: Path
    token: str | None
    allowed_origins: tuple[str, ...]
    health: Callable[[], dict]
    metrics: object
    public_hosts: tuple[str, ...] = ()
    limiter: FailureLimiter = field(default_factory=FailureLimiter)

    async def process_request(self, connection, request):
        """websockets' hook: None lets a ``/ws`` handshake go on; otherwise the ``Response``.
        A failure of the server itself answers 500 and is logged; the server goes on."""
        try:
            answer = await self._answer(connection, request)
        except Exception:
            log.exception("%s %.100r failed", request.method, request.path)
            self.metrics.errors.labels("internal").inc()
            answer = refuse(500, "internal error")
        if answer is not None and request.method == "HEAD":  # a GET's headers, Content-Length too
            answer = dataclasses.replace(answer, body=b"")
        return answer

    async def _answer(self, connection, request):
        refused = _malformed(request)
        if refused is not None:
            return refused
        host = request.headers["Host"]
        if not host_allowed(host, self.public_hosts, self.allowed_origins):
            self.metrics.errors.labels("forbidden_host").inc()
            return refuse(403, "host not allowed (facecast serve --public-host NAME)")
        path, _, query = request.path.partition("?")  # not urlsplit: "//x/ws" has no netloc here
        if path == "/ws":
            if request.method != "GET":
                return refuse(405, "method not allowed", ("Allow", "GET"))
            if not origin_allowed(request.headers.get("Origin"), host, self.allowed_origins):
                self.metrics.errors.labels("forbidden_origin").inc()
                return refuse(403, "origin not allowed")
            return self._authorize(connection, request, query)
        if request.method not in ("GET", "HEAD"):
            return refuse(405, "method not allowed", ("Allow", SAFE_METHODS))
        if path == "/healthz":
            health = self.health()
            status = 200 if health["status"] == "ok" else 503
            return response(status, json.dumps(health).encode(), "application/json")
        if path == "/metrics":
            return self._authorize(connection, request, query) or response(
                200, self.metrics.text(), "text/plain; version=0.0.4; charset=utf-8")
        return await asyncio.to_thread(static_file, self.web_dir, path)

    def _authorize(self, connection, request, query: str):
        """None if the request may pass the token check; else 429 (too many failures from its
        client) or 401 (a presented bad token counts as a failure, a missing one does not)."""
        if not self.token:
            return None
        address = getattr(connection, "remote_address", None)
        client = client_key(address[0] if address else None)
        if self.limiter.blocked(client):
            self.metrics.errors.labels("rate_limited").inc()
            return refuse(429, "too many failed attempts",
                          ("Retry-After", str(round(self.limiter.window_s))))
        token = _presented_token(request, query)
        if check_token(token, self.token):
            return None
        if token:
            self.limiter.failed(client)
        self.metrics.errors.labels("unauthorized").inc()
        return refuse(401, "missing or invalid token", ("WWW-Authenticate", "Bearer"))
