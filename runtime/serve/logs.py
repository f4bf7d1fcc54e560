"""Quieter logs for a long-running server (``facecast serve``, ``facecast kiosk``): library
chatter dropped, and every kind of line rate-limited so that no client can fill the disk."""

from __future__ import annotations

import logging
import threading
import time

_QUIET_HTTP = ("connection open", "connection rejected (%d %s)", "HTTP response sent (%d %s)")


class _QuietWebsockets(logging.Filter):
    """Drops websockets' INFO line for every HTTP request answered below 400 (``/healthz`` polled
    every few seconds by a supervisor would fill a log) and for every WebSocket opened; errors
    and refusals (4xx/5xx) still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or record.msg not in _QUIET_HTTP:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        return bool(args) and isinstance(args[0], int) and args[0] >= 400


class RateLimit(logging.Filter):
    """Lets through at most ``burst`` records of one kind (logger name, level and message
    template) per ``window_s`` seconds; when a window that dropped some ends, the next record of
    that kind says how many were dropped. Memory is bounded: at most ``max_kinds`` kinds are
    tracked (the table is cleared when full). Thread-safe.

    Args:
        burst: records of one kind let through per window.
        window_s: window length, seconds (monotonic clock).
        max_kinds: kinds tracked at once.
    """

    def __init__(self, burst: int = 20, window_s: float = 60.0, max_kinds: int = 1024) -> None:
        super().__init__()
        self.burst, self.window_s, self.max_kinds = burst, window_s, max_kinds
        self._lock = threading.Lock()
        self._kinds: dict[tuple, list] = {}  # kind → [window start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg)[:200])
        now = time.monotonic()
        with self._lock:
            state = self._kinds.get(kind)
            if state is None:
                if len(self._kinds) >= self.max_kinds:
                    self._kinds.clear()
                state = self._kinds[kind] = [now, 0, 0]
            if now - state[0] >= self.window_s:
                if state[2]:
                    record.msg = f"{record.msg} [{state[2]} more like this dropped]"
                state[:] = [now, 0, 0]
            if state[1] < self.burst:
                state[1] += 1
                return True
            state[2] += 1
            return False


def quiet_library_logs() -> None:
    """Tame logs for long-running servers: websockets' per-request INFO lines
    (``_QuietWebsockets``), aioice's per-candidate-pair INFO lines (raised to WARNING), and a
    ``RateLimit`` on every handler of the root logger (set up logging first). Idempotent."""
    ws_log = logging.getLogger("websockets.server")
    if not any(isinstance(f, _QuietWebsockets) for f in ws_log.filters):
        ws_log.addFilter(_QuietWebsockets())
    logging.getLogger("aioice").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RateLimit) for f in handler.filters):
            handler.addFilter(RateLimit())
