"""Named displays and their controllers (the kiosk).

A session opened with ``?display=NAME`` is display NAME (the latest such session wins); a
connection opened with ``?control=NAME`` is one of NAME's controllers: it carries no media, its
speech acts on the display's current session, it receives that session's events and a
``DisplayChanged`` whenever a display NAME connects or goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from runtime.serve.protocol import DisplayChanged, NoDisplay, ServerMessage


class Displays:
    """Display name → its current session, and display name → its controllers' WebSockets.

    Args:
        send: ``send(ws, message)`` queues a message to one WebSocket (synchronous, on the
            event loop).

    ``name in displays`` is True while display ``name`` is connected; iterating gives the names.
    """

    def __init__(self, send: Callable[[object, ServerMessage], None]) -> None:
        self._send = send
        self._sessions: dict[str, object] = {}
        self._controllers: dict[str, set] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._sessions

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._sessions))

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, name: str):
        """The display's current session, or None (it may be closed: see ``session``)."""
        return self._sessions.get(name)

    def session(self, name: str):
        """The display's current session. Raises NoDisplay if none is connected (or it closed)."""
        session = self._sessions.get(name)
        if session is None or session.closed:
            raise NoDisplay(f"no display {name!r} is connected")
        return session

    def show(self, name: str, session) -> None:
        """``session`` is display ``name`` now; its controllers are told."""
        self._sessions[name] = session
        self._announce(name, session)

    def forget(self, session) -> None:
        """``session`` closed: every display it was is gone; their controllers are told."""
        for name, shown in list(self._sessions.items()):
            if shown is session:
                del self._sessions[name]
                self._announce(name, None)

    def attach(self, name: str, ws) -> None:
        """Add a controller of display ``name``."""
        self._controllers.setdefault(name, set()).add(ws)

    def detach(self, name: str, ws) -> None:
        """Remove a controller of display ``name`` (no error if it is not one); a name with no
        controller left is forgotten."""
        controllers = self._controllers.get(name)
        if controllers is not None:
            controllers.discard(ws)
            if not controllers:
                del self._controllers[name]

    def controllers(self, name: str | None) -> list:
        """The WebSockets controlling display ``name`` (none for None)."""
        return list(self._controllers.get(name, ())) if name is not None else []

    def _announce(self, name: str, session) -> None:
        message = DisplayChanged(name, session is not None, getattr(session, "id", None))
        for controller in self.controllers(name):
            self._send(controller, message)
