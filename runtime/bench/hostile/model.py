"""What a hostile case is and what it acts on: ``Case``, ``Target``, ``ServerFlags``, the
campaign's constants. Every other module of ``runtime.bench.hostile`` imports from here; this one
imports none of them."""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.bench.hostile.well_behaved import WellBehaved

GROUPS = ("protocol", "signaling", "http", "auth", "limits", "faults", "cli")
"""Case groups, in the order they run (``cli`` first, before the servers start)."""
PHASES = ("cli", "server", "end")
"""When a case runs: before the servers start, against them, after the other cases."""
TARGET_FPS = 24.0
"""Frames per second the well-behaved session must receive in every window."""
WINDOW_S = 1.0
"""Length of one delivered-fps window, seconds."""
WARMUP_S = 2.0
"""Seconds the well-behaved session runs before the measured span begins."""
PACE_S = 0.15
"""Pause between cases, seconds (2 shared cores: the campaign must not starve the server)."""
SETTLE_S = 2.0
"""Seconds after the last case before the server's resources are read again."""
WARM_UP_SECOND_SESSION_S = 1.5
"""Seconds a second session is held open before the baseline (``campaign``'s warm-up)."""
SECRET = "facecast-hostile-0123456789abcde"
"""The token server's secret (32 bytes, the shortest ``runtime.serve.auth`` accepts)."""
OTHER_KEY = "another-key-entirely-0123456789ab"
"""A secret that is not the server's (signs the forged tokens)."""
MAX_LOG_BYTES = 2 * 1024 * 1024
"""The server log must stay under this for the whole campaign."""

Outcome = tuple[bool, str]
"""(handled, detail: what was observed) of one case."""


@dataclass(frozen=True)
class ServerFlags:
    """The ``facecast serve`` settings the campaign runs against (the one place they are set),
    and the contract figures derived from them.

    Attributes:
        max_sessions: ``--max-sessions`` (the well-behaved session holds one).
        max_controllers: ``--max-controllers``.
        offer_timeout: ``--offer-timeout``, seconds a session may wait for its offer (long
            enough for the pacing case's flood to drain before it).
        connect_timeout: ``--connect-timeout``, seconds from the answer to a connected peer.
        open_timeout: seconds the server gives a request's headers (websockets' default
            handshake timeout; the slowloris bound).
        vanish_timeout: seconds within which a session whose peer vanished must be closed.
        max_utterances: utterances a session may queue (the server's default).
        failed_tokens: failed token attempts from one address before it is held back (429).
        messages_per_s: messages a second one connection is served at once its burst is spent
            (the server's pacing; beyond it messages are delayed, never refused).
        message_burst: messages one connection may send at once before pacing starts.
    """

    max_sessions: int = 4
    max_controllers: int = 8
    offer_timeout: float = 10.0
    connect_timeout: float = 6.0
    open_timeout: float = 10.0
    vanish_timeout: float = 30.0
    max_utterances: int = 32
    failed_tokens: int = 10
    messages_per_s: float = 200.0
    message_burst: int = 400

    def args(self, token: str | None = None) -> list[str]:
        """``facecast serve`` arguments (besides ``--port``, ``--size``, ``--avatar``,
        ``--backend``, which ``harness.serve_process`` adds)."""
        out = ["--host", "127.0.0.1", "--max-sessions", str(self.max_sessions),
               "--max-controllers", str(self.max_controllers),
               "--offer-timeout", f"{self.offer_timeout:g}",
               "--connect-timeout", f"{self.connect_timeout:g}"]
        return out + (["--token", token] if token else [])

    def paced_seconds(self, messages: int) -> float:
        """The least time the server may take to handle ``messages`` sent at once on one
        connection: what exceeds the burst is served at ``messages_per_s``."""
        return max(0, messages - self.message_burst) / self.messages_per_s


class CaseFailed(Exception):
    """Raised inside a case when a precondition fails; its text is the case's detail."""


@dataclass
class Target:
    """What the cases act on: the servers, their logs, the well-behaved session, and what the
    campaign keeps between cases.

    Attributes:
        flags: the servers' settings. port, proc: the main server. auth_port: the ``--token``
            server's port (None when no auth case runs). logs: the servers' stderr files.
        avatar_dir: the server's ``FACECAST_AVATAR_DIR`` (holds broken bundles).
        well: the well-behaved session (None during the ``cli`` group). baseline: sessions the
            server holds between cases (the well-behaved one). t0: when the measured span began
            (monotonic s). sigterm: (exit status, seconds) once SIGTERM was sent.
        offers: real aiortc offers made once and reused (``clients.offer_sdp``).
    """

    flags: ServerFlags
    port: int = 0
    proc: subprocess.Popen | None = None
    auth_port: int | None = None
    logs: list[Path] = field(default_factory=list)
    avatar_dir: Path | None = None
    well: WellBehaved | None = None
    baseline: int = 1
    t0: float = 0.0
    sigterm: tuple[int | None, float | None] = (None, None)
    offers: dict = field(default_factory=dict)
    _source: int = 10

    @property
    def ws(self) -> str:
        """``ws://127.0.0.1:PORT/ws`` of the main server."""
        return f"ws://127.0.0.1:{self.port}/ws"

    def next_source(self) -> str:
        """A loopback source address not used before (127.0.0.10 …): the token server holds back
        an address after ``failed_tokens`` failures, so each auth case comes from its own."""
        self._source = self._source + 1 if self._source < 249 else 10
        return f"127.0.0.{self._source}"


Run = Callable[[Target], Awaitable[Outcome]]
"""A case's body: ``await run(target)`` → ``(handled, detail)``."""


@dataclass(frozen=True)
class Case:
    """One hostile case.

    Attributes:
        name: unique, snake_case. group: one of ``GROUPS``.
        run: ``await run(target)`` → ``(handled, detail)``.
        quick: part of the ``--quick`` subset. timeout: seconds before it counts as not handled.
        phase: one of ``PHASES``: "cli" (before the servers), "server" (against them), "end"
            (after the cases: SIGTERM, the logs).
    """

    name: str
    group: str
    run: Run
    quick: bool = False
    timeout: float = 20.0
    phase: str = "server"

    def __post_init__(self) -> None:
        if self.group not in GROUPS or self.phase not in PHASES:
            raise ValueError(f"case {self.name!r}: unknown group {self.group!r} or phase "
                             f"{self.phase!r}")


def case_of(fn: Run, group: str, **kw: object) -> Case:
    """The ``Case`` running ``fn``, named after it (leading underscores dropped); ``kw``:
    ``quick``, ``timeout``, ``phase``."""
    return Case(fn.__name__.lstrip("_"), group, fn, **kw)  # type: ignore[arg-type]
