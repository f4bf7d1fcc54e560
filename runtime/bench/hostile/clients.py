"""The campaign's hostile client side: ``Probe`` (a WebSocket that sends whatever it is told and
keeps every reply), the messages the cases build, real SDP offers, and what the cases read of
the server's state (``/healthz``, ``/proc``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import urllib.error
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from runtime.bench.harness import get_json
from runtime.bench.hostile.model import CaseFailed, Outcome, Target
from runtime.bench.hostile.wire import rst
from runtime.bench.soak import proc_resources


class Probe:
    """One WebSocket connection that sends whatever it is told (text, binary, dicts) and keeps
    every message received (``messages``, JSON-decoded; anything else as ``{"type": "?raw"}``)
    with when it arrived (``arrivals``, monotonic s, one per message).

    Args:
        url: the ``ws://`` URL with its query. origin: Origin header (None: none).
        headers: more handshake headers. source: local address to connect from.
    """

    def __init__(self, url: str, origin: str | None = None,
                 headers: list[tuple[str, str]] | None = None, source: str | None = None) -> None:
        self.url = url
        self.origin = origin
        self.headers = headers
        self.source = source
        self.ws = None
        self.messages: list[dict] = []
        self.arrivals: list[float] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._reader: asyncio.Task | None = None

    async def open(self, timeout: float = 10.0) -> dict | None:
        """Connect; returns the first message (``ready`` or ``error``), None if none came within
        ``timeout``. Raises websockets' ``InvalidStatus`` for a refused handshake."""
        from websockets.asyncio.client import connect

        extra: dict[str, Any] = {"local_addr": (self.source, 0)} if self.source else {}
        self.ws = await connect(self.url, max_size=None, open_timeout=timeout, ping_interval=None,
                                origin=self.origin, additional_headers=self.headers,
                                close_timeout=2, **extra)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return await self.next(lambda m: True, timeout, 0)

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in self.ws:
                try:
                    msg = json.loads(raw)
                except (ValueError, TypeError):
                    msg = None
                self.messages.append(msg if isinstance(msg, dict) else
                                     {"type": "?raw", "raw": repr(raw)[:200]})
                self.arrivals.append(time.monotonic())
                self._changed.set()
        except (ConnectionClosed, OSError):  # any end of the connection ends the reader
            return
        finally:
            self.closed.set()
            self._changed.set()

    async def next(self, predicate: Callable[[dict], bool], timeout: float,
                   start: int | None = None) -> dict | None:
        """The first message from index ``start`` on (default: all) that ``predicate`` accepts;
        None when the connection closed or ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        i = start or 0
        while True:
            while i < len(self.messages):
                i += 1
                if predicate(self.messages[i - 1]):
                    return self.messages[i - 1]
            left = deadline - loop.time()
            if self.closed.is_set() or left <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def send(self, message: str | bytes | dict) -> None:
        """Send a raw text or binary frame (a dict as JSON)."""
        await self.ws.send(json.dumps(message) if isinstance(message, dict) else message)

    async def ask(self, message: str | bytes | dict, types: tuple[str, ...] = ("error",),
                  timeout: float = 5.0) -> dict | None:
        """Send, then the first later message whose type is in ``types`` (None: none came)."""
        mark = len(self.messages)
        await self.send(message)
        return await self.next(lambda m: m.get("type") in types, timeout, mark)

    async def errors_until_pong(self, since: int, timeout: float = 10.0
                                ) -> tuple[list[dict], bool]:
        """Send ``ping``; the ``error`` messages received from index ``since`` until its
        ``pong``, and whether the pong came."""
        pong = await self.ask({"type": "ping"}, ("pong",), timeout)
        errors = [m for m in self.messages[since:] if m.get("type") == "error"]
        return errors, pong is not None

    async def alive(self, timeout: float = 3.0) -> bool:
        """Does a ``ping`` still get its ``pong``?"""
        from websockets.exceptions import ConnectionClosed

        try:
            return await self.ask({"type": "ping"}, ("pong",), timeout) is not None
        except ConnectionClosed:
            return False

    async def wait_closed(self, timeout: float) -> int | None:
        """The close code once the server closed the connection; None if it is still open
        after ``timeout`` seconds."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    @property
    def close_code(self) -> int | None:
        """The close code received (1006: none, the TCP connection just ended); None while
        open."""
        if self.ws is None or not self.closed.is_set():
            return None
        return self.ws.close_code

    def abort(self) -> None:
        """Reset the TCP connection (RST, no close frame)."""
        if self.ws is not None:
            rst(self.ws.transport.get_extra_info("socket"))
            self.ws.transport.abort()

    async def close(self) -> None:
        """Close politely (if still open) and stop reading."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 3)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


@contextlib.asynccontextmanager
async def connected(t: Target, query: str = "", expect: str | None = "ready",
                    **kw: Any) -> AsyncIterator[tuple[Probe, dict | None]]:
    """A ``Probe`` to the main server's ``/ws`` + ``query``; yields (probe, first message).
    Raises CaseFailed when the first message's type is not ``expect`` (None: anything)."""
    p = Probe(t.ws + query, **kw)
    try:
        first = await p.open()
        if expect is not None and (first or {}).get("type") != expect:
            raise CaseFailed(f"connect: expected {expect!r}, got {first!r} "
                             f"(close {p.close_code})")
        yield p, first
    finally:
        await p.close()


def readable(message: Any) -> bool:
    """An error message a person can read: text, not empty, short (≤ 500 characters), no
    traceback, not aiortc's internals."""
    return (isinstance(message, str) and 0 < len(message) <= 500 and "Traceback" not in message
            and "None is not in list" not in message)


def err(m: dict | None) -> str:
    """An ``error`` message (or its absence) for a detail: code and the message's start."""
    if m is None:
        return "no reply"
    return f"{m.get('code')}: {str(m.get('message'))[:120]!r}"


# --- messages ------------------------------------------------------------------------------------
def speak_msg(text: Any = "hello", **extra: Any) -> dict:
    """A ``speak`` message (any ``text``, more fields in ``extra``)."""
    return {"type": "speak", "text": text, **extra}


def audio_msg(pcm: Any = "AAAAAA==", rate: Any = 16000, **extra: Any) -> dict:
    """An ``audio`` message (``pcm`` ``...``: no ``pcm16`` field at all)."""
    out = {"type": "audio", "sample_rate": rate, **extra}
    if pcm is not ...:
        out["pcm16"] = pcm
    return out


def pcm(n: int = 320) -> str:
    """``n`` samples of silence, base64 PCM16."""
    return base64.b64encode(np.zeros(n, "<i2").tobytes()).decode()


async def open_stream(p: Probe) -> None:
    """Start an audio stream that never ends: everything queued after it waits behind it."""
    await p.send(audio_msg(pcm(), 16000, id="open"))


async def offer_sdp(t: Target, kinds: tuple[str, ...] = ("video", "audio"),
                    datachannel: bool = False) -> str:
    """A real aiortc offer (recvonly ``kinds``; ``datachannel``: a data channel), made once per
    campaign by a peer connection that is closed right away."""
    from aiortc import RTCPeerConnection

    key = (kinds, datachannel)
    if key not in t.offers:
        pc = RTCPeerConnection()
        try:
            for kind in kinds:
                pc.addTransceiver(kind, direction="recvonly")
            if datachannel:
                pc.createDataChannel("hostile")
            await pc.setLocalDescription(await pc.createOffer())
            t.offers[key] = pc.localDescription.sdp
        finally:
            await pc.close()
    return t.offers[key]


def strip_sdp(sdp: str, *prefixes: str) -> str:
    """``sdp`` without the lines starting with any of ``prefixes``."""
    return "\r\n".join(ln for ln in sdp.split("\r\n") if not ln.startswith(prefixes))


# --- the server's state --------------------------------------------------------------------------
def _health_sync(port: int) -> dict:
    try:
        return get_json(f"http://127.0.0.1:{port}/healthz")
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read())
        except ValueError:
            return {"status": f"HTTP {exc.code}"}
    except OSError as exc:
        return {"status": f"unreachable: {exc}"}


async def health(t: Target) -> dict:
    """``/healthz`` of the main server ({"status": "unreachable: …"} when it does not answer)."""
    return await asyncio.to_thread(_health_sync, t.port)


async def settled(t: Target, timeout: float = 5.0) -> tuple[bool, dict]:
    """Wait until the server holds no more sessions than between cases and answers ``ok``;
    returns (whether it did within ``timeout``, the last ``/healthz``)."""
    deadline = time.monotonic() + timeout
    while True:
        h = await health(t)
        if h.get("status") == "ok" and h.get("sessions", 1 << 30) <= t.baseline:
            return True, h
        if time.monotonic() > deadline:
            return False, h
        await asyncio.sleep(0.2)


def resources(t: Target) -> dict[str, float]:
    """The main server process's fds, threads and RSS (``/proc``)."""
    return proc_resources(t.proc.pid)


async def healthy_after(t: Target, what: str) -> Outcome:
    """The outcome of a fault case: the server still answers and its sessions went back to
    the baseline."""
    ok, h = await settled(t)
    return ok, (f"{what}; server fine (sessions {h.get('sessions')})" if ok else
                f"{what}; server not back to baseline: {h}")
