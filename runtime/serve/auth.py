"""Who may talk to the server: the signed token (an HS256 JWT; the secret itself never travels),
the browser origin and the ``Host`` a request names, and a limit on failed token attempts per
client. Checked by ``runtime.serve.http`` before a request is answered or a WebSocket opens."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Bind addresses that keep the server on this machine (no token needed)."""

MIN_SECRET_BYTES = 32
"""Shortest secret (UTF-8 bytes) that signs tokens: RFC 7518 §3.2 requires an HS256 key at least
as long as the hash (256 bits), and PyJWT warns on every use of a shorter one."""

MAX_TOKEN_LIFETIME_S = 24 * 3600
"""Longest a token may live: one whose ``exp`` lies further ahead is refused, so a leaked URL
stops working within a day."""

EXPIRY_LEEWAY_S = 30
"""Clock skew, seconds, forgiven on ``exp`` (and ``nbf``) between the issuer and the server."""

LOOPBACK_NAMES = ("localhost",)
"""Host names always accepted in a ``Host`` header (besides IP literals): they resolve to this
machine without asking DNS."""


def check_secret(secret: str) -> str:
    """Return ``secret`` if it may sign tokens. Raises ValueError (one line) if it is shorter
    than ``MIN_SECRET_BYTES`` bytes in UTF-8."""
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        raise ValueError(f"the token secret is {size} bytes long; use at least "
                         f"{MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)")
    return secret


def check_token(token: str | None, secret: str | None) -> bool:
    """May a request carrying ``token`` pass?

    Args:
        token: what the client presented (``?token=`` or ``Authorization: Bearer``), or None.
        secret: the server's secret; None or "" means no token is needed (always True).

    Returns:
        True only for an HS256 JWT signed with ``secret`` whose ``exp`` (required) has not
        passed (``EXPIRY_LEEWAY_S`` of leeway) and lies at most ``MAX_TOKEN_LIFETIME_S`` ahead.
        The secret itself is not a token: it never travels, and every token expires.
    """
    if not secret:
        return True
    if not token:
        return False
    import jwt

    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], leeway=EXPIRY_LEEWAY_S,
                            options={"require": ["exp"]})
    except jwt.PyJWTError:
        return False
    exp = claims["exp"]  # PyJWT accepts any int()-able value, a string too
    return (isinstance(exp, int | float) and not isinstance(exp, bool)
            and exp <= time.time() + MAX_TOKEN_LIFETIME_S + EXPIRY_LEEWAY_S)


def issue_token(secret: str, ttl_s: float = 3600.0, subject: str = "facecast") -> str:
    """An HS256 JWT for ``check_token``, expiring ``ttl_s`` seconds from now.

    Raises ValueError if ``ttl_s`` is not in (0, ``MAX_TOKEN_LIFETIME_S``] or ``secret`` is too
    short (``check_secret``)."""
    import jwt

    check_secret(secret)
    if not 0 < ttl_s <= MAX_TOKEN_LIFETIME_S:
        raise ValueError(f"a token lives more than 0 and at most {MAX_TOKEN_LIFETIME_S} s; "
                         f"got {ttl_s}")
    now = time.time()
    return jwt.encode({"sub": subject, "iat": int(now), "exp": int(now + ttl_s)}, secret,
                      algorithm="HS256")


def origin_allowed(origin: str | None, host: str, allowed: tuple[str, ...]) -> bool:
    """May a page of ``origin`` open the WebSocket?

    Args:
        origin: the handshake's ``Origin`` header; None for a non-browser client (aiortc
            clients, voice agents), which is always allowed.
        host: the handshake's ``Host`` header (the server's own pages are allowed; the host
            itself must have passed ``host_allowed``, or a rebinding page passes as its own).
        allowed: other origins allowed (``--allowed-origin``); ``"*"`` allows any.
    """
    if origin is None:
        return True
    if origin in allowed or "*" in allowed:
        return True
    return origin in (f"http://{host}", f"https://{host}")


def _host_name(host: str) -> str | None:
    """The lower-case name or address of a ``host[:port]`` (``[v6]:port`` for IPv6), without
    the port and a trailing dot; None if it is malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
        try:
            return str(ipaddress.IPv6Address(name))
        except ValueError:
            return None
    name, _, port = host.partition(":")
    if not name or ":" in port or (port and not port.isdigit()):
        return None
    return name.removesuffix(".")


def host_allowed(host_header: str, public_hosts: tuple[str, ...],
                 allowed_origins: tuple[str, ...]) -> bool:
    """May a request naming ``host_header`` be answered? Refusing unknown names defeats DNS
    rebinding: a hostile page whose name the attacker re-points at this server becomes
    same-origin with it, and its requests carry that name in ``Host``.

    Args:
        host_header: the request's ``Host`` header, ``name[:port]`` or ``[IPv6][:port]``.
        public_hosts: names clients use to reach the server (``--public-host``; a port given
            with one is ignored).
        allowed_origins: ``--allowed-origin`` entries; their host names are allowed too
            (``"*"`` adds none).

    Returns:
        True for an IPv4 or bracketed IPv6 literal (a rebinding attack always uses a name),
        ``localhost``, or one of the names above; case-insensitive, port ignored.
    """
    name = _host_name(host_header)
    if name is None:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    names = {_host_name(h) for h in public_hosts}
    names.update((urlsplit(o).hostname or "").removesuffix(".") for o in allowed_origins)
    return name in LOOPBACK_NAMES or name in names - {None, ""}


class FailureLimiter:
    """Counts failed token attempts per client and holds a client back once it has failed
    ``max_failures`` times within a window of ``window_s`` seconds, until that window (which
    starts at its first failure) has passed. Memory is bounded: at most ``max_clients``
    clients are tracked, the one that failed least recently is forgotten first.

    Behind a reverse proxy every client shares the proxy's address (``X-Forwarded-For`` is not
    trusted): a guesser then holds back everyone for the window.
    """

    def __init__(self, max_failures: int = 10, window_s: float = 60.0, max_clients: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self.clock = clock
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()  # start, count

    def _current(self, client: str) -> tuple[float, int]:
        start, count = self._failures.get(client, (0.0, 0))
        if count and self.clock() - start >= self.window_s:
            del self._failures[client]
            return 0.0, 0
        return start, count

    def blocked(self, client: str) -> bool:
        """True while ``client`` (an address string) has used up its failures."""
        return self._current(client)[1] >= self.max_failures

    def failed(self, client: str) -> None:
        """Count one failed attempt of ``client``."""
        start, count = self._current(client)
        self._failures[client] = (start if count else self.clock(), count + 1)
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)


def client_key(address: str | None) -> str:
    """The limiter's key for a peer address: the address itself, or its /64 network for IPv6
    (one host usually holds a whole /64); ``"unknown"`` for None."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))

