"""Who may open a session: the shared-secret / JWT token and the browser origin, checked on the
WebSocket handshake (``runtime.serve.http``) before the connection opens."""

from __future__ import annotations

import hmac
import time

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Bind addresses that keep the server on this machine (no token needed)."""


def check_token(token: str | None, secret: str | None) -> bool:
    """True if ``secret`` is None, or ``token`` equals it, or is an HS256 JWT signed with it
    that has not expired (PyJWT; ``exp`` required)."""
    if not secret:
        return True
    if not token:
        return False
    if hmac.compare_digest(token.encode(), secret.encode()):
        return True
    import jwt

    try:
        jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
        return True
    except jwt.PyJWTError:
        return False


def issue_token(secret: str, ttl_s: float = 3600.0, subject: str = "facecast") -> str:
    """An HS256 JWT for ``check_token``, expiring after ``ttl_s`` seconds."""
    import jwt

    now = int(time.time())
    return jwt.encode({"sub": subject, "iat": now, "exp": now + int(ttl_s)}, secret,
                      algorithm="HS256")


def origin_allowed(origin: str | None, host: str, allowed: tuple[str, ...]) -> bool:
    """May a page of ``origin`` open the WebSocket?

    Args:
        origin: the handshake's ``Origin`` header; None for a non-browser client (aiortc
            clients, voice agents), which is always allowed.
        host: the handshake's ``Host`` header (the server's own pages are allowed).
        allowed: other origins allowed (``--allowed-origin``); ``"*"`` allows any.
    """
    if origin is None:
        return True
    if origin in allowed or "*" in allowed:
        return True
    return origin in (f"http://{host}", f"https://{host}")
