"""The HTTP side of `facecast serve` against a real server, spoken to in raw HTTP where the
request is odd: the Host allow-list (DNS rebinding), malformed requests answered 4xx without a
traceback, HEAD and other methods, hidden files, security headers, tokens (JWT only, bounded
lifetime, /metrics), the per-client limit on failed tokens, and what already worked."""

from __future__ import annotations

import base64
import hashlib
import inspect
import logging
import re
import shutil
import socket
import sys
import threading
import time

import jwt
import pytest

from runtime.serve.auth import (
    MAX_TOKEN_LIFETIME_S,
    FailureLimiter,
    check_secret,
    check_token,
    host_allowed,
    issue_token,
)
from runtime.serve.http import WEB_DIR, HttpRoutes
from runtime.serve.server import ServerConfig, serve_in_thread

SECRET = "test-secret-0123456789abcdef0123456789"
SHOP = "https://shop.example"
WS_HEADERS = (("Upgrade", "websocket"), ("Connection", "Upgrade"),
              ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"))
MARKER = "read-me-off-the-loop.txt"
_opened: list[str] = []  # threads that opened MARKER (audit hook below)


def _audit(event: str, args: tuple) -> None:
    if event == "open" and str(args[0]).endswith(MARKER):
        _opened.append(threading.current_thread().name)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    web = tmp_path_factory.mktemp("web")
    for f in WEB_DIR.iterdir():
        if f.is_file():
            shutil.copy(f, web / f.name)
    (web / ".git").mkdir()
    (web / ".git" / "config").write_text("[remote] secret\n")
    (web / "sub" / ".hidden").mkdir(parents=True)
    (web / "sub" / ".hidden" / "x.txt").write_text("hidden\n")
    (web / "sub" / "page.txt").write_text("visible\n")
    (web / MARKER).write_text("marker\n")
    handle = serve_in_thread(ServerConfig(port=0, size=256, token=SECRET, web_dir=web,
                                          allowed_origins=(SHOP,)))
    # these tests present many bad tokens from 127.0.0.1; the limit has its own test
    handle.server.http.limiter = FailureLimiter(max_failures=1000)
    yield handle
    handle.stop()


def http(server, path: str = "/healthz", method: str = "GET", host: str | None = "",
         headers: tuple = (), ws: bool = False, source: str | None = None,
         version: str = "HTTP/1.1") -> tuple[int, dict, bytes]:
    """One raw request; (status, {lower-case name: value}, body). ``host``: "" the server's
    own ``127.0.0.1:PORT``, None no Host header. ``ws``: a WebSocket handshake (its 101 is read
    up to the end of the headers, then the connection is dropped)."""
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host or f'127.0.0.1:{server.server.port}'}")
    lines += [f"{k}: {v}" for k, v in (*(WS_HEADERS if ws else ()), *headers)]
    data = b""
    with socket.create_connection(("127.0.0.1", server.server.port), timeout=15,
                                  source_address=(source, 0) if source else None) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        while chunk := s.recv(65536):
            data += chunk
            if data.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in data:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), fields, body


def ws_status(server, token: str | None = None, **kw) -> int:
    path = "/ws" if token is None else f"/ws?token={token}"
    return http(server, path, ws=True, **kw)[0]


def metric(server, code: str) -> float:
    _, _, body = http(server, "/metrics", headers=(("Authorization", f"Bearer {_token()}"),))
    found = re.search(rf'facecast_errors_total{{code="{code}"}} (\S+)', body.decode())
    return float(found.group(1)) if found else 0.0


def _token(ttl_s: float = 300) -> str:
    return issue_token(SECRET, ttl_s)


def _jwt(claims: dict) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _tracebacks(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# --- 1. Host allow-list (DNS rebinding) ---------------------------------------------------------

def test_a_rebinding_host_is_refused_on_every_route(server) -> None:
    port = server.server.port
    evil = f"evil.example:{port}"
    before = metric(server, "forbidden_host")
    # the attack: a page of evil.example, re-pointed at 127.0.0.1, is same-origin with "itself"
    assert ws_status(server, _token(), host=evil,
                     headers=(("Origin", f"http://{evil}"),)) == 403
    auth = (("Authorization", f"Bearer {_token()}"),)
    for path in ("/healthz", "/metrics", "/index.html", "/facecast-avatar.js"):
        status, _, body = http(server, path, host=evil, headers=auth)
        assert (status, body.split(b" (")[0]) == (403, b"host not allowed"), path
    assert metric(server, "forbidden_host") == before + 5
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}",
                 "10.1.2.3", "shop.example", f"Shop.Example:{port}"):
        assert http(server, "/healthz", host=host)[0] == 200, host
    for host in ("evil.example", "foo.localhost", "2130706433", "[::1", "127.0.0.1:x", ""):
        assert http(server, "/healthz", host=host or " ")[0] in (400, 403), host
    assert http(server, "/healthz", host=None, version="HTTP/1.0")[0] == 400  # no Host at all


def test_public_hosts_are_allowed(server) -> None:
    routes = server.server.http
    assert http(server, "/healthz", host="avatar.example.com:443")[0] == 403
    routes.public_hosts = ("Avatar.Example.com",)  # what `--public-host` sets
    try:
        assert http(server, "/healthz", host="avatar.example.com:443")[0] == 200
        assert ws_status(server, _token(), host="avatar.example.com:443",
                         headers=(("Origin", "https://avatar.example.com:443"),)) == 101
    finally:
        routes.public_hosts = ()


def test_host_allowed() -> None:
    public, origins = ("avatar.example.com:8443",), ("https://shop.example", "*")
    for ok in ("127.0.0.1", "127.0.0.1:80", "[::1]:8765", "[2001:db8::1]", "localhost",
               "LocalHost:1", "localhost.", "avatar.example.com", "AVATAR.example.com:1",
               "shop.example:443"):
        assert host_allowed(ok, public, origins), ok
    for bad in ("", "evil.example", "::1", "[::1", "[::1]8765", "[evil]:1", "a:b:c",
                "127.0.0.1:x", "2130706433", "foo.localhost", "shop.example.evil"):
        assert not host_allowed(bad, public, origins), bad


# --- 2. odd requests: 4xx, never a traceback ---------------------------------------------------

def test_odd_requests_get_4xx_and_log_no_traceback(server, caplog) -> None:
    cases = [
        ("/" + "a" * 8000, {}, 414),
        ("/" + "a" * 9000, {}, 414),  # past websockets' own 8 KiB line limit
        ("/%00", {}, 400),
        ("/index.html%00.txt", {}, 400),
        ("/a\x00b", {}, 400),
        ("/%ff", {}, 400),
        ("*", {}, 400),
        ("http://127.0.0.1/index.html", {}, 400),
        ("/" + "b" * 1500, {}, 404),  # longer than a file name may be
        ("/nope.js", {}, 404),
        ("/../README.md", {}, 404),
        ("/%2e%2e/README.md", {}, 404),
        ("/ws", {"headers": (("Origin", SHOP), ("Origin", "https://evil.example"))}, 400),
        ("/healthz", {"headers": (("Host", "evil.example"),)}, 400),  # a second Host
        ("/metrics", {"headers": (("Authorization", "Bearer a"), ("Authorization", "b"))}, 400),
    ]
    with caplog.at_level(logging.INFO):
        for path, kw, want in cases:
            assert http(server, path, ws=path == "/ws", **kw)[0] == want, path[:40]
    assert not _tracebacks(caplog)
    assert http(server, "/healthz")[0] == 200


def test_an_unexpected_failure_is_a_500_and_the_server_goes_on(server, caplog,
                                                                monkeypatch) -> None:
    def broken() -> dict:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server.server.http, "health", broken)
    with caplog.at_level(logging.INFO):
        status, _, body = http(server, "/healthz")
    assert (status, body) == (500, b"internal error\n")
    failed = _tracebacks(caplog)
    assert len(failed) == 1 and failed[0].name == "facecast.http"  # not websockets' own
    monkeypatch.undo()
    assert http(server, "/healthz")[0] == 200


# --- 3. static files ---------------------------------------------------------------------------

def test_head_has_no_body_and_other_methods_get_405(server) -> None:
    status, fields, body = http(server, "/index.html")
    assert status == 200 and int(fields["content-length"]) == len(body) > 1000
    status, head_fields, head_body = http(server, "/index.html", "HEAD")
    assert (status, head_body) == (200, b"")
    assert head_fields["content-length"] == fields["content-length"]
    assert http(server, "/healthz", "HEAD")[:3:2] == (200, b"")
    for method in ("PUT", "DELETE", "POST", "PATCH", "OPTIONS"):
        status, fields, _ = http(server, "/index.html", method)
        assert (status, fields.get("allow")) == (405, "GET, HEAD"), method
    assert http(server, "/ws", "POST", ws=True)[0] == 405


def test_hidden_files_are_not_served(server) -> None:
    assert http(server, "/sub/page.txt")[2] == b"visible\n"
    for path in ("/.git/config", "/%2egit/config", "/sub/.hidden/x.txt", "/sub/%2Ehidden/x.txt",
                 "/sub/../.git/config", "/.git/"):
        assert http(server, path)[0] == 404, path


def test_static_files_are_read_off_the_event_loop(server) -> None:
    assert inspect.iscoroutinefunction(HttpRoutes.process_request)
    sys.addaudithook(_audit)  # sees every open(), in the thread that opens
    assert http(server, "/" + MARKER)[2] == b"marker\n"
    assert _opened and server.thread.name not in _opened


def test_pages_carry_security_headers(server) -> None:
    status, fields, body = http(server, "/")
    csp = fields["content-security-policy"]
    assert status == 200 and fields["content-type"] == "text/html; charset=utf-8"
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'" and fields["x-frame-options"] == "DENY"
    assert "'unsafe-inline'" not in directives["script-src"]
    inline = re.search(rb"<script type=\"module\">(.*?)</script>", body, re.DOTALL).group(1)
    digest = base64.b64encode(hashlib.sha256(inline).digest()).decode()
    assert f"'sha256-{digest}'" in directives["script-src"]  # the page's own script runs
    assert directives["object-src"] == "'none'" and "ws:" in directives["connect-src"]
    assert fields["referrer-policy"] == "no-referrer"
    assert fields["x-content-type-options"] == "nosniff"
    # the widget: a module script of other origins' pages
    status, fields, _ = http(server, "/facecast-avatar.js")
    assert status == 200 and fields["content-type"] == "text/javascript; charset=utf-8"
    assert fields["access-control-allow-origin"] == "*"
    assert fields["cross-origin-resource-policy"] == "cross-origin"
    assert "x-frame-options" not in fields
    status, fields, _ = http(server, "/healthz")
    assert fields["referrer-policy"] == "no-referrer" and "sandbox" in fields[
        "content-security-policy"]


# --- 4. tokens ---------------------------------------------------------------------------------

def test_metrics_need_the_token_healthz_does_not(server) -> None:
    status, fields, _ = http(server, "/metrics")
    assert status == 401 and fields["www-authenticate"] == "Bearer"
    assert http(server, "/metrics", headers=(("Authorization", "Bearer nope"),))[0] == 401
    assert http(server, "/metrics", headers=(("Authorization", f"Bearer {SECRET}"),))[0] == 401
    status, _, body = http(server, "/metrics", headers=(("Authorization", f"Bearer {_token()}"),))
    assert status == 200 and b"facecast_sessions" in body
    assert http(server, f"/metrics?token={_token()}")[0] == 200
    assert http(server, "/healthz")[0] == 200


def test_only_signed_bounded_tokens_open_the_websocket(server) -> None:
    now = int(time.time())
    assert ws_status(server, _token()) == 101
    assert ws_status(server, headers=(("Authorization", f"Bearer {_token()}"),)) == 101
    assert ws_status(server, _jwt({"exp": now - 10})) == 101  # within the 30 s leeway
    for bad in (None, "", SECRET, "wrong",
                _jwt({"sub": "no exp"}),
                _jwt({"exp": now - 120}),
                _jwt({"exp": 253402300799}),  # year 9999
                _jwt({"exp": now + MAX_TOKEN_LIFETIME_S + 3600}),
                _jwt({"exp": str(now + 60)}),
                jwt.encode({"exp": now + 60}, "another-secret-0123456789abcdef01",
                           algorithm="HS256"),
                jwt.encode({"exp": now + 60}, None, algorithm="none")):
        assert ws_status(server, bad) == 401, bad


def test_issue_token_and_check_secret_refuse_bad_input() -> None:
    assert check_secret(SECRET) == SECRET
    with pytest.raises(ValueError, match="at least 32"):
        check_secret("short")
    for ttl in (0, -10, MAX_TOKEN_LIFETIME_S + 1, float("nan")):
        with pytest.raises(ValueError, match="token lives"):
            issue_token(SECRET, ttl)
    with pytest.raises(ValueError):
        issue_token("short", 60)
    assert check_token(issue_token(SECRET, MAX_TOKEN_LIFETIME_S), SECRET)
    assert check_token(None, None) and not check_token(SECRET, SECRET)


def test_failed_tokens_are_limited_per_client(server) -> None:
    routes = server.server.http
    saved = routes.limiter
    routes.limiter = FailureLimiter(max_failures=3, window_s=2.0)
    before = metric(server, "rate_limited")
    try:
        other = "127.0.0.2"  # another client of the loopback network
        assert ws_status(server, source=other) == 401  # no token: not a guess, not counted
        for _ in range(3):
            assert ws_status(server, "guess", source=other) == 401
        status, fields, body = http(server, f"/ws?token={_token()}", ws=True, source=other)
        assert (status, body) == (429, b"too many failed attempts\n") and fields["retry-after"]
        assert http(server, f"/metrics?token={_token()}", source=other)[0] == 429
        assert ws_status(server, _token()) == 101  # 127.0.0.1 is another client
        assert metric(server, "rate_limited") == before + 2
        time.sleep(2.1)
        assert ws_status(server, _token(), source=other) == 101  # the window has passed
    finally:
        routes.limiter = saved


def test_failure_limiter_memory_is_bounded() -> None:
    now = [0.0]
    limiter = FailureLimiter(max_failures=2, window_s=10, max_clients=3, clock=lambda: now[0])
    for i in range(100):
        limiter.failed(f"10.0.0.{i}")
        limiter.failed(f"10.0.0.{i}")
    assert len(limiter._failures) == 3 and limiter.blocked("10.0.0.99")
    assert not limiter.blocked("10.0.0.0")  # the oldest were forgotten
    now[0] = 10.0
    assert not limiter.blocked("10.0.0.99")


# --- 5. what already worked --------------------------------------------------------------------

def test_origins_as_before_and_star_still_checks_the_host(server) -> None:
    port, token = server.server.port, _token()
    assert ws_status(server, token) == 101  # no Origin: a non-browser client
    assert ws_status(server, token, headers=(("Origin", f"http://127.0.0.1:{port}"),)) == 101
    assert ws_status(server, token, headers=(("Origin", SHOP),)) == 101
    assert ws_status(server, token, headers=(("Origin", "https://evil.example"),)) == 403
    routes = server.server.http
    routes.allowed_origins = ("*",)
    try:
        assert ws_status(server, token, headers=(("Origin", "https://evil.example"),)) == 101
        assert ws_status(server, token, host=f"evil.example:{port}",
                         headers=(("Origin", f"http://evil.example:{port}"),)) == 403
    finally:
        routes.allowed_origins = (SHOP,)
