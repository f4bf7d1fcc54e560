"""Raw bytes on raw sockets: HTTP requests and WebSocket frames the way a hostile client writes
them (no library in between to tidy them up), and reading what comes back. Blocking; the cases
run these in threads."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from runtime.bench.hostile.model import CaseFailed, Target


@dataclass
class HttpReply:
    """What a raw HTTP exchange got back: ``status`` (None: no response), the headers (in
    order, names as sent), the body, and ``error`` (how the exchange ended, if abnormally)."""

    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    error: str | None = None

    def header(self, name: str) -> str | None:
        """The first header ``name`` (case-insensitive), None if absent."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def __str__(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else \
            f"no response ({self.error or 'closed'})"


_DEFAULT_HOST = object()


def http_request(method: str, path: str, port: int, headers: list[tuple[str, str]] = (),
                 host: Any = _DEFAULT_HOST, upgrade: bool = False, body: bytes = b"") -> bytes:
    """The bytes of an HTTP/1.1 request. ``host``: the Host header (default
    ``127.0.0.1:port``; None: no Host header). ``upgrade``: a WebSocket handshake's headers."""
    lines = [f"{method} {path} HTTP/1.1"]
    if host is _DEFAULT_HOST:
        host = f"127.0.0.1:{port}"
    if host is not None:
        lines.append(f"Host: {host}")
    if upgrade:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13"]
    else:
        lines.append("Connection: close")
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def rst(sock: socket.socket) -> None:
    """Make closing ``sock`` send a TCP RST (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def tcp_connect(port: int, source: str | None = None, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port`` (from the local address ``source``, if given)."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def http_exchange(port: int, data: bytes, source: str | None = None, timeout: float = 5.0,
                  head: bool = False) -> HttpReply:
    """Send ``data`` on a new TCP connection to 127.0.0.1:``port`` and read the response: up to
    the end of a 101's headers, ``Content-Length`` bytes of body, or the connection's end
    (``head``: any bytes after the headers within 0.7 s are the body a HEAD must not have).
    Blocking; run it in a thread."""
    buf = b""
    error = None
    try:
        with tcp_connect(port, source, timeout) as s:
            s.sendall(data)
            end = None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if end is None and b"\r\n\r\n" in buf:
                    end = buf.index(b"\r\n\r\n") + 4
                    if buf.startswith(b"HTTP/1.1 101"):
                        rst(s)
                        break
                    if head:
                        deadline = min(deadline, time.monotonic() + 0.7)
                if end is not None and not head:
                    m = re.search(rb"(?im)^content-length:\s*(\d+)", buf[:end])
                    if m and len(buf) - end >= int(m.group(1)):
                        break
                s.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                buf += chunk
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    if not buf.startswith(b"HTTP/"):
        return HttpReply(None, [], buf, error)
    head_part, _, body = buf.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return HttpReply(None, [], buf, error or "unparsable status line")
    headers = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
    return HttpReply(status, headers, body, error)


async def http(t: Target, method: str, path: str, headers: list[tuple[str, str]] = (),
               port: int | None = None, **kw: Any) -> HttpReply:
    """``http_exchange`` of ``http_request(...)`` against the main server (or ``port``) in a
    thread (``kw``: ``host``, ``upgrade``, ``body`` for the request; ``source``, ``head``,
    ``timeout`` for the exchange)."""
    port = port or t.port
    req = {k: kw.pop(k) for k in ("host", "upgrade", "body") if k in kw}
    data = http_request(method, path, port, list(headers), **req)
    return await asyncio.to_thread(http_exchange, port, data, **kw)


def ws_frame(opcode: int, payload: bytes, masked: bool = True, declared: int | None = None
             ) -> bytes:
    """One WebSocket frame (FIN set); ``declared``: the length announced, if not the real one."""
    n = len(payload) if declared is None else declared
    head = bytes([0x80 | opcode])
    mbit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 1 << 16:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def raw_ws(port: int, path: str = "/ws", timeout: float = 5.0) -> tuple[socket.socket, bytes]:
    """A TCP connection through a WebSocket handshake (101 read); the caller closes it.
    Returns it and the bytes received after the handshake's headers. Raises CaseFailed when
    the handshake is refused."""
    s = tcp_connect(port, timeout=timeout)
    s.sendall(http_request("GET", path, port, upgrade=True))
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    if not buf.startswith(b"HTTP/1.1 101"):
        s.close()
        raise CaseFailed(f"handshake refused: {buf[:40]!r}")
    return s, buf.partition(b"\r\n\r\n")[2]


def recv_until_closed(s: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read until the peer closes (True) or ``timeout`` passes (False); returns what came."""
    s.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def close_code_of(frames: bytes) -> int | None:
    """The status code of the first server close frame (opcode 8) in raw received bytes."""
    i = 0
    while i + 2 <= len(frames):
        op, n = frames[i] & 0x0F, frames[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            n, j = struct.unpack("!H", frames[j:j + 2])[0], j + 2
        elif n == 127:
            n, j = struct.unpack("!Q", frames[j:j + 8])[0], j + 8
        if op == 8 and n >= 2:
            return struct.unpack("!H", frames[j:j + 2])[0]
        i = j + n
    return None
