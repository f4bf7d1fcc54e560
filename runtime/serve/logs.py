"""Quieter library logs for a long-running server (``facecast serve``, ``facecast kiosk``)."""

from __future__ import annotations

import logging

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


def quiet_library_logs() -> None:
    """Tame chatty library loggers for long-running servers: websockets' per-request INFO lines
    (``_QuietWebsockets``) and aioice's per-candidate-pair INFO lines (raised to WARNING).
    Idempotent."""
    ws_log = logging.getLogger("websockets.server")
    if not any(isinstance(f, _QuietWebsockets) for f in ws_log.filters):
        ws_log.addFilter(_QuietWebsockets())
    logging.getLogger("aioice").setLevel(logging.WARNING)
