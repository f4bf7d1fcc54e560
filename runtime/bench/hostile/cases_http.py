"""HTTP cases on the server's port (Host and Origin checks, traversal, dotfiles, odd methods and
headers, security headers, slowloris) and the auth cases against the ``--token`` server (each
from its own loopback address; the rate limit last, since it holds its address back)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from runtime.bench.hostile.clients import Probe, connected, health, settled
from runtime.bench.hostile.model import OTHER_KEY, SECRET, Case, Outcome, Run, Target, case_of
from runtime.bench.hostile.wire import http, http_exchange, recv_until_closed, tcp_connect


def status_case(method: str, path: str, allowed: set[int | None], headers=(),
                check_body: bool = False, **kw: Any) -> Run:
    """A case: one raw request (``{P}`` in a header or the Host: the server's port); handled
    when the status is in ``allowed`` (``check_body``: and the body leaks no file contents)."""
    async def run(t: Target) -> Outcome:
        hdrs = [(k, v.replace("{P}", str(t.port))) for k, v in headers]
        host = kw.get("host")
        extra = dict(kw)
        if isinstance(host, str):
            extra["host"] = host.replace("{P}", str(t.port))
        r = await http(t, method, path, hdrs, **extra)
        leak = check_body and any(s in r.body for s in (b"root:", b"import ", b"[project]"))
        return r.status in allowed and not leak, f"{r}" + ("; body leaks a file" if leak else "")
    return run


BAD_HOSTS = [("evil", "evil.example", True), ("evil_port", "evil.example:{P}", False),
             ("evil_upper", "EVIL.EXAMPLE:{P}", False),
             ("localhost_suffix", "localhost.evil.example:{P}", False),
             ("ip_suffix", "127.0.0.1.nip.io:{P}", False),
             ("trailing_dot", "evil.example.:{P}", False)]
"""Host headers refused with 403 (DNS rebinding): (name, Host, in ``--quick``)."""
ALLOWED_HOSTS = [("ipv4", "127.0.0.1:{P}"), ("localhost", "localhost:{P}"),
                 ("ipv6", "[::1]:{P}"), ("other_loopback", "127.0.0.2")]
"""Host headers that must be served (no false refusal)."""
BAD_ORIGINS = [("evil", "http://evil.example"), ("null", "null"),
               ("https_evil", "https://evil.example"),
               ("suffix", "http://127.0.0.1:{P}.evil.example"),
               ("other_port", "http://127.0.0.1:1")]
"""Origins whose WebSocket handshake is refused with 403."""
TRAVERSALS = ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2fserver.py",
              "/..%2f..%2f..%2fetc%2fpasswd", "//etc/passwd", "/web/../../x",
              "/..\\..\\etc\\passwd", "/%2e%2e%5c%2e%2e%5cetc%5cpasswd", "/....//....//etc/passwd",
              "/%252e%252e/%252e%252e/etc/passwd", "/index.html/../../../../etc/passwd",
              "/./../pyproject.toml", "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
              "/..;/..;/etc/passwd", "/../runtime/serve/server.py"]
"""Paths out of the web folder: 404 or 400, no file's contents."""
DOTFILES = ["/.git/config", "/.env", "/.htaccess", "/%2egit/HEAD", "/.hidden/index.html",
            "/.well-known/security.txt"]
"""Dotfile paths: 404."""
NUL_PATHS = ["/index.html%00", "/%00", "/index.html%00.js", "/ws%00"]
"""Paths with an encoded NUL: 400 or 404."""


async def _origin_same_allowed(t: Target) -> Outcome:
    """The server's own origin may open a session (no false refusal)."""
    async with connected(t, origin=f"http://127.0.0.1:{t.port}") as (_p, first):
        return True, f"{(first or {}).get('type')}"


async def _head_root(t: Target) -> Outcome:
    """HEAD / → 200 with no body."""
    r = await http(t, "HEAD", "/", head=True)
    return r.status == 200 and not r.body, f"{r}; {len(r.body)} body bytes"


def method_case(method: str, body: bytes = b"") -> Run:
    """A case: ``method /``; handled with a 4xx (405 expected; which one is recorded). With a
    ``body``, also when the request is dropped unanswered (websockets' HTTP parser refuses
    request bodies before the server sees the request), never a 2xx or 5xx."""
    async def run(t: Target) -> Outcome:
        r = await http(t, method, "/", body=body)
        ok = (r.status is not None and 400 <= r.status < 500) or (bool(body) and r.status is None)
        note = "" if r.status == 405 else " (not 405)" if r.status else \
            " (dropped unanswered)" if body else ""
        return ok, f"{r}{note}"
    return run


def headers_case(path: str) -> Run:
    """A case: ``GET path`` is 200 with a Content-Security-Policy, ``nosniff`` and framing
    protection (X-Frame-Options or ``frame-ancestors``)."""
    async def run(t: Target) -> Outcome:
        r = await http(t, "GET", path)
        csp = r.header("Content-Security-Policy") or ""
        have = {"csp": bool(csp), "nosniff": (r.header("X-Content-Type-Options") or "").lower()
                == "nosniff", "framing": bool(r.header("X-Frame-Options"))
                or "frame-ancestors" in csp}
        ok = r.status == 200 and all(have.values())
        return ok, f"{r}; " + ", ".join(f"{k} {'yes' if v else 'MISSING'}" for k, v in have.items())
    return run


async def _garbage_request(t: Target) -> Outcome:
    """Bytes that are not HTTP (a TLS ClientHello's start): 400 or closed, never a 5xx."""
    data = bytes.fromhex("16030100a5010000a10303") + os.urandom(64) + b"\r\n\r\n"
    r = await asyncio.to_thread(http_exchange, t.port, data)
    ok = r.status is None or 400 <= r.status < 500
    return ok and (await settled(t))[0], f"{r}"


def _slowloris_one(port: int, limit: float) -> tuple[bool, float]:
    """Send a request's headers one byte per second; (dropped by the server, seconds)."""
    t0 = time.monotonic()
    payload = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode() + b"s" * 100
    with tcp_connect(port) as s:
        for b in payload:
            try:
                s.sendall(bytes([b]))
            except OSError:
                return True, time.monotonic() - t0
            closed, _ = recv_until_closed(s, 1.0)
            if closed:
                return True, time.monotonic() - t0
            if time.monotonic() - t0 > limit:
                break
    return False, time.monotonic() - t0


async def _slowloris(t: Target) -> Outcome:
    """Three connections sending headers one byte per second: dropped within the open timeout
    (+5 s); ``/healthz`` answers meanwhile."""
    limit = t.flags.open_timeout + 5
    tasks = [asyncio.ensure_future(asyncio.to_thread(_slowloris_one, t.port, limit + 5))
             for _ in range(3)]
    await asyncio.sleep(3)
    t0 = time.monotonic()
    h = await health(t)
    health_s = time.monotonic() - t0
    done = await asyncio.gather(*tasks)
    dropped = [d for d, s in done if d and s <= limit]
    ok = len(dropped) == len(done) and h.get("status") == "ok" and health_s < 2
    times = ", ".join(f"{s:.1f} s" if d else f"not dropped in {s:.0f} s" for d, s in done)
    return ok, f"dropped after {times}; /healthz meanwhile {h.get('status')} in {health_s:.2f} s"


_4XX = set(range(400, 500))
HTTP_CASES: tuple[Case, ...] = (
    *(Case(f"host_{name}_root", "http", status_case("GET", "/", {403}, host=host), quick=quick)
      for name, host, quick in BAD_HOSTS),
    Case("host_rebinding_ws", "http",
         status_case("GET", "/ws", {403}, [("Origin", "http://evil.example:{P}")],
                     host="evil.example:{P}", upgrade=True), quick=True),
    *(Case(f"host_evil_{path.strip('/').replace('.', '_')}", "http",
           status_case("GET", path, {403}, host="evil.example:{P}"))
      for path in ("/healthz", "/metrics", "/index.html")),
    *(Case(f"host_allowed_{name}", "http", status_case("GET", "/", {200}, host=host))
      for name, host in ALLOWED_HOSTS),
    *(Case(f"origin_{name}_ws", "http",
           status_case("GET", "/ws", {403}, [("Origin", origin)], upgrade=True))
      for name, origin in BAD_ORIGINS),
    case_of(_origin_same_allowed, "http"),
    *(Case(f"traversal_{i:02d}", "http", status_case("GET", path, {404, 400}, check_body=True),
           quick=i == 0) for i, path in enumerate(TRAVERSALS)),
    *(Case(f"dotfile_{i}", "http", status_case("GET", path, {404}, check_body=True))
      for i, path in enumerate(DOTFILES)),
    Case("path_8000_chars", "http", status_case("GET", "/" + "a" * 8000, {414, 400})),
    *(Case(f"nul_in_path_{i}", "http", status_case("GET", path, {400, 404}))
      for i, path in enumerate(NUL_PATHS)),
    Case("duplicate_origin_ws", "http",
         status_case("GET", "/ws", {400}, [("Origin", "http://127.0.0.1:{P}"),
                                           ("Origin", "http://evil.example")], upgrade=True)),
    Case("duplicate_host_root", "http", status_case("GET", "/", {400}, [("Host", "evil.example")])),
    Case("duplicate_host_ws", "http",
         status_case("GET", "/ws", {400}, [("Host", "evil.example")], upgrade=True)),
    Case("missing_host_root", "http", status_case("GET", "/", _4XX, host=None)),
    Case("header_16k", "http", status_case("GET", "/", _4XX | {None}, [("X-Big", "b" * 16_000)])),
    Case("headers_300", "http",
         status_case("GET", "/", _4XX | {None}, [(f"X-H{i}", "v") for i in range(300)])),
    case_of(_head_root, "http", quick=True),
    *(Case(f"method_{m.lower()}", "http", method_case(m))
      for m in ("PUT", "DELETE", "POST", "OPTIONS", "PATCH", "TRACE")),
    *(Case(f"method_{m.lower()}_with_body", "http", method_case(m, b"x=1")) for m in ("PUT", "POST")),
    *(Case(f"security_headers_{path.strip('/').replace('.', '_') or 'root'}", "http",
           headers_case(path), quick=quick)
      for path, quick in (("/", True), ("/index.html", False), ("/kiosk.html", False))),
    case_of(_garbage_request, "http"),
    case_of(_slowloris, "http", timeout=60),
)
"""The http cases, in the order they run."""


# --- auth: the --token server --------------------------------------------------------------------
def _b64url(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()) \
        .rstrip(b"=").decode()


def refused_tokens() -> dict[str, str | None]:
    """Tokens that must all be refused (None: no token)."""
    import jwt

    from runtime.serve.auth import issue_token

    now = int(time.time())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        good = issue_token(SECRET, 600)
        h, _p, s = good.split(".")
        return {
            "none": None, "bad": "nope", "empty": "",
            "other_key": jwt.encode({"sub": "x", "exp": now + 600}, OTHER_KEY, "HS256"),
            "expired": jwt.encode({"sub": "x", "exp": now - 3600}, SECRET, "HS256"),
            "year_9999": jwt.encode({"sub": "x", "exp": 253402300799}, SECRET, "HS256"),
            "no_exp": jwt.encode({"sub": "x"}, SECRET, "HS256"),
            "alg_none": f"{_b64url({'alg': 'none', 'typ': 'JWT'})}."
                        f"{_b64url({'sub': 'x', 'exp': now + 600})}.",
            "hs512": jwt.encode({"sub": "x", "exp": now + 600}, SECRET * 2, "HS512"),
            "tampered": f"{h}.{_b64url({'sub': 'admin', 'exp': now + 600})}.{s}",
            "raw_secret": SECRET,
        }


REFUSED_TOKENS = ("none", "bad", "empty", "other_key", "expired", "year_9999", "no_exp",
                  "alg_none", "hs512", "tampered", "raw_secret")
"""The keys of ``refused_tokens()``, in the order their cases run."""


def _good_jwt() -> str:
    from runtime.serve.auth import issue_token

    return issue_token(SECRET, 600)


async def ws_status(t: Target, token: str | None, source: str) -> tuple[int | None, str]:
    """Open ``/ws`` on the token server with ``token`` from ``source``: (HTTP status, 101 when
    accepted; what happened)."""
    from websockets.exceptions import InvalidStatus

    query = "" if token is None else f"?token={quote(token, safe='')}"
    p = Probe(f"ws://127.0.0.1:{t.auth_port}/ws{query}", source=source)
    try:
        first = await p.open(10)
        return 101, f"accepted ({(first or {}).get('type')})"
    except InvalidStatus as exc:
        return exc.response.status_code, f"HTTP {exc.response.status_code}"
    finally:
        await p.close()


def _token_refused(which: str) -> Run:
    async def run(t: Target) -> Outcome:
        status, what = await ws_status(t, refused_tokens()[which], t.next_source())
        return status == 401, what
    return run


async def _token_good_jwt(t: Target) -> Outcome:
    """A good JWT (``issue_token``) opens a session."""
    status, what = await ws_status(t, _good_jwt(), t.next_source())
    return status == 101 and "ready" in what, what


def auth_http_case(path: str, token: str | None | Callable[[], str], expect: int) -> Run:
    """A case: ``GET path`` on the token server with ``Authorization: Bearer token`` (None:
    none; a function: its result) is answered ``expect``."""
    async def run(t: Target) -> Outcome:
        tok = token() if callable(token) else token
        headers = [("Authorization", f"Bearer {tok}")] if tok else []
        r = await http(t, "GET", path, headers, port=t.auth_port, source=t.next_source())
        return r.status == expect, f"{r}"
    return run


async def _token_rate_limit(t: Target) -> Outcome:
    """After ``failed_tokens`` failures from one address, even a good token gets 429 there."""
    source = "127.0.0.250"
    statuses = []
    for k in range(t.flags.failed_tokens):
        statuses.append((await ws_status(t, f"wrong-{k}", source))[0])
        await asyncio.sleep(0.05)
    status, what = await ws_status(t, _good_jwt(), source)
    ok = status == 429 and all(s in (401, 429) for s in statuses)
    return ok, f"failures answered {sorted(set(statuses))}; then a good token: {what}"


AUTH_CASES: tuple[Case, ...] = (
    *(Case(f"token_{which}", "auth", _token_refused(which), quick=which == "none")
      for which in REFUSED_TOKENS),
    case_of(_token_good_jwt, "auth", quick=True),
    Case("metrics_without_token", "auth", auth_http_case("/metrics", None, 401)),
    Case("metrics_bearer_jwt", "auth", auth_http_case("/metrics", _good_jwt, 200)),
    Case("metrics_bearer_bad", "auth", auth_http_case("/metrics", "nope", 401)),
    Case("healthz_without_token", "auth", auth_http_case("/healthz", None, 200)),
    case_of(_token_rate_limit, "auth"),  # last: it holds its address back
)
"""The auth cases, in the order they run (``token_rate_limit`` last)."""

CASES: tuple[Case, ...] = HTTP_CASES + AUTH_CASES
"""The http then the auth cases."""
