"""Fault cases (abrupt disconnects and WebSocket protocol violations: the server must go back to
its baseline), the command-line cases (bad values refused in one line, run before the servers
start) and the end cases (after every other case: the server healthy, SIGTERM, its logs)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from runtime.bench.harness import free_port
from runtime.bench.hostile.clients import Probe, healthy_after, offer_sdp, settled, speak_msg
from runtime.bench.hostile.model import MAX_LOG_BYTES, SECRET, Case, Outcome, Run, Target, case_of
from runtime.bench.hostile.wire import (
    close_code_of,
    http_request,
    raw_ws,
    recv_until_closed,
    rst,
    tcp_connect,
    ws_frame,
)


# --- faults: abrupt disconnects ------------------------------------------------------------------
def _reset_mid_handshake(port: int) -> str:
    with tcp_connect(port) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgr" % port)
        time.sleep(0.1)
        rst(s)
    return "reset mid-handshake"


def _reset_after_request(port: int) -> str:
    with tcp_connect(port) as s:
        s.sendall(http_request("GET", "/ws", port, upgrade=True))
        rst(s)
    return "reset right after the upgrade request"


def _reset_mid_frame(port: int) -> str:
    s, _rest = raw_ws(port)
    try:
        s.sendall(ws_frame(1, b'{"type": "sp', declared=1000)[:20])
        time.sleep(0.1)
    finally:
        rst(s)
        s.close()
    return "reset mid-frame"


def _reset_storm(port: int) -> str:
    for _ in range(20):
        _reset_after_request(port)
        time.sleep(0.05)
    return "20 resets in a row"


def _protocol_violation(frame: bytes, what: str) -> Callable[[int], str]:
    def run(port: int) -> str:
        s, rest = raw_ws(port)
        try:
            s.sendall(frame)
            closed, got = recv_until_closed(s, 5)
            got = rest + got
        finally:
            s.close()
        return f"{what}: {'closed' if closed else 'still open'} (close code {close_code_of(got)})"
    return run


def _half_close(port: int) -> str:
    s, _rest = raw_ws(port)
    try:
        s.shutdown(socket.SHUT_WR)
        closed, _ = recv_until_closed(s, 5)
    finally:
        s.close()
    return f"half-closed: server {'closed' if closed else 'kept'} the connection"


def fault_case(fn: Callable[[int], str]) -> Run:
    """A case: ``fn(port)`` (blocking, in a thread; returns what it did) then the server is
    back to its baseline (``healthy_after``)."""
    async def run(t: Target) -> Outcome:
        return await healthy_after(t, await asyncio.to_thread(fn, t.port))
    return run


FAULTS = [("reset_mid_handshake", _reset_mid_handshake),
          ("reset_after_request", _reset_after_request),
          ("reset_mid_frame", _reset_mid_frame),
          ("reset_storm", _reset_storm),
          ("half_close", _half_close),
          ("reserved_opcode", _protocol_violation(ws_frame(3, b"x"), "reserved opcode")),
          ("unmasked_frame", _protocol_violation(ws_frame(1, b'{"type":"ping"}', masked=False),
                                                 "unmasked frame"))]
"""Raw-socket faults: (case name, what to do to the port)."""


def abort_after(send: Callable[[Target], Awaitable[Any]] | None, what: str) -> Run:
    """A case: open a session, send what ``send`` makes (None: nothing), reset the TCP
    connection; the server goes back to its baseline."""
    async def run(t: Target) -> Outcome:
        p = Probe(t.ws)
        try:
            first = await p.open()
            if send is not None:
                await p.send(await send(t))
            p.abort()
        finally:
            await p.close()
        return await healthy_after(t, f"{what} (first message: {(first or {}).get('type')})")
    return run


async def _good_offer(t: Target) -> dict:
    return {"type": "offer", "sdp": await offer_sdp(t)}


async def _long_speak(_t: Target) -> dict:
    return speak_msg("This speech is cut off by a reset. " * 8)


FAULT_CASES: tuple[Case, ...] = (
    *(Case(name, "faults", fault_case(fn)) for name, fn in FAULTS),
    Case("reset_after_ready", "faults", abort_after(None, "reset after ready"), quick=True),
    Case("reset_after_offer", "faults", abort_after(_good_offer, "reset right after an offer")),
    Case("reset_during_speak", "faults", abort_after(_long_speak, "reset during a speak")),
)
"""The fault cases, in the order they run."""


# --- cli: the command line refuses bad values in one line ----------------------------------------
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def cli_case(name: str, *argv: str, port: bool = False, quick: bool = False) -> Case:
    """The case ``cli_NAME``: ``facecast ARGV`` (``port``: with ``--port`` of a free port,
    should it start) exits non-zero with one line of error (or argparse's usage + error) and no
    traceback."""
    async def run(_t: Target) -> Outcome:
        args = list(argv) + (["--port", str(free_port())] if port else [])
        cmd = [sys.executable, "-m", "runtime.cli", *args]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE, env=env)
        try:
            _out, stderr = await asyncio.wait_for(proc.communicate(), 25)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return False, "still running after 25 s (it started?)"
        text = stderr.decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip() and not _LOG_LINE.match(ln)]
        usage = bool(lines) and lines[0].startswith("usage:") and "error:" in lines[-1]
        one = len(lines) == 1 or usage
        ok = proc.returncode != 0 and one and "Traceback" not in text
        last = lines[-1][:160] if lines else "(nothing on stderr)"
        return ok, f"exit {proc.returncode}; {len(lines)} line(s): {last!r}"
    return Case(f"cli_{name}", "cli", run, quick=quick, timeout=30, phase="cli")


CLI_CASES: tuple[Case, ...] = (
    cli_case("serve_fps_0", "serve", "--fps", "0", port=True),
    cli_case("serve_fps_text", "serve", "--fps", "abc", port=True),
    cli_case("serve_port_99999", "serve", "--port", "99999"),
    cli_case("serve_max_sessions_0", "serve", "--max-sessions", "0", port=True),
    cli_case("serve_public_without_token", "serve", "--host", "0.0.0.0", port=True),
    cli_case("serve_short_token", "serve", "--token", "short", port=True),
    cli_case("token_negative_ttl", "token", "--secret", "0123456789abcdef0123", "--ttl", "-100"),
    cli_case("token_short_secret", "token", "--secret", "short", quick=True),
    cli_case("token_empty_secret", "token", "--secret", ""),
    cli_case("token_nan_ttl", "token", "--secret", SECRET, "--ttl", "nan"),
    cli_case("token_ttl_1e12", "token", "--secret", SECRET, "--ttl", "1e12"),
)
"""The command-line cases (phase "cli"), in the order they run."""


# --- end: after the cases ------------------------------------------------------------------------
async def _healthy_after_campaign(t: Target) -> Outcome:
    """After every case: ``/healthz`` ok, only the well-behaved session left, and it is still
    connected."""
    ok, h = await settled(t)
    alive = t.well is not None and t.well.connected()
    return ok and alive, (f"status {h.get('status')}, sessions {h.get('sessions')}; "
                          f"well-behaved session {'connected' if alive else 'GONE'}")


async def _sigterm_graceful(t: Target) -> Outcome:
    """SIGTERM: the server exits 0 within 5 s and the connected session sees close 1001."""
    if t.well is not None:
        await t.well.stop_speaking()
    t0 = time.monotonic()
    t.proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(t.proc.wait, 15)
    except subprocess.TimeoutExpired:
        code = None
    dt = time.monotonic() - t0
    t.sigterm = (code, round(dt, 2) if code is not None else None)
    close = await t.well.close_code(3) if t.well is not None else None
    ok = code == 0 and dt <= 5 and close == 1001
    return ok, (f"exit {code} after {dt:.2f} s" if code is not None else
                f"still running {dt:.0f} s after SIGTERM") + f"; the session saw close {close}"


async def _no_tracebacks_in_logs(t: Target) -> Outcome:
    """No ``Traceback`` in the servers' logs (stderr) over the whole campaign."""
    found = []
    for log in t.logs:
        text = log.read_text(errors="replace") if log.is_file() else ""
        for m in re.finditer(r"Traceback \(most recent call last\):\n(?:[ \t].*\n)*(.*)", text):
            found.append(f"{log.name}: {m.group(1)[:120]}")
    return not found, f"{len(found)} traceback(s)" + (f": {found[:3]}" if found else "")


async def _log_size_bounded(t: Target) -> Outcome:
    """The main server's log stays under ``MAX_LOG_BYTES``."""
    size = t.logs[0].stat().st_size if t.logs and t.logs[0].is_file() else 0
    return size < MAX_LOG_BYTES, f"{size / 1024:.0f} KiB"


END_CASES: tuple[Case, ...] = (
    case_of(_healthy_after_campaign, "faults", quick=True, phase="end"),
    case_of(_sigterm_graceful, "faults", quick=True, phase="end", timeout=30),  # before the logs
    case_of(_no_tracebacks_in_logs, "faults", quick=True, phase="end"),
    case_of(_log_size_bounded, "faults", phase="end"),
)
"""The end cases (phase "end"), in the order they run: SIGTERM before the log checks."""

CASES: tuple[Case, ...] = FAULT_CASES + CLI_CASES + END_CASES
"""The fault, command-line and end cases."""
