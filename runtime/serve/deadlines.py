"""Deadlines on a session's media: a session that holds a slot and is rendered every tick must
show, in time, that someone receives it.

Three deadlines, each answered by closing the session (``runtime.serve.server`` sends
``media_timeout`` and closes the WebSocket with 1008):

1. **Offer**: the client sends its SDP offer within ``offer_s`` of ``ready``.
2. **Connect**: the peer connection reaches "connected" (ICE and DTLS done) within
   ``connect_s`` of the answer: an offer without usable candidates, or a peer that never
   completes ICE, no longer keeps its slot.
3. **Feedback**: once connected, the peer's RTCP receiver reports (RFC 3550 §6.4.2; browsers and
   aiortc send one about every second per received stream) keep arriving; none for
   ``feedback_s`` means the peer vanished even if its WebSocket stays open (ICE consent
   freshness, RFC 7675, takes aioice 30 s or more to notice, and was seen not to at all).

Meanwhile the watch says whether anyone receives the video (``on_watched``): not before the
peer connects, nor while its feedback has paused for ``pause_s``; the server then stops
rendering that session's video (``Session.render_video``), so a session nobody watches costs
its audio timeline only, not a renderer slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class MediaDeadlines:
    """Seconds allowed for each step of a session's media (see the module docstring).

    Attributes:
        offer_s: from ``ready`` to the client's offer.
        connect_s: from the answer to the peer connection's "connected".
        feedback_s: longest gap between RTCP receiver reports once connected.
        pause_s: a gap after which the video is no longer rendered (until reports resume).
        poll_s: how often the watch looks.
    """

    offer_s: float = 15.0
    connect_s: float = 20.0
    feedback_s: float = 20.0
    pause_s: float = 3.0
    poll_s: float = 1.0

    def check(self) -> None:
        """Raises ValueError unless every deadline is positive and finite."""
        for name in ("offer_s", "connect_s", "feedback_s", "pause_s", "poll_s"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ValueError(f"media deadline {name} must be a positive number of seconds, "
                                 f"got {value!r}")


async def last_feedback(pc) -> float | None:
    """The newest RTCP receiver-report time (``time.time()`` seconds) over the senders of the
    aiortc ``RTCPeerConnection`` ``pc``, or None if none arrived yet."""
    newest = None
    for sender in pc.getSenders():
        stats = await sender.getStats()
        for item in stats.values():
            if getattr(item, "type", None) == "remote-inbound-rtp":
                t = item.timestamp.timestamp()
                newest = t if newest is None else max(newest, t)
    return newest


async def watch_media(get_pc: Callable[[], object], deadlines: MediaDeadlines,
                      on_watched: Callable[[bool], None] = lambda watched: None,
                      clock: Callable[[], float] = time.monotonic) -> str:
    """Watch one session's media until a deadline passes; returns why (one line of text for
    the ``media_timeout`` error and the close reason). Runs until cancelled while the media is
    healthy.

    Args:
        get_pc: returns the session's aiortc ``RTCPeerConnection``, None before the offer.
        deadlines: the deadlines.
        on_watched: called with True when the peer connects or its feedback resumes, False at
            the start and when its feedback pauses for ``pause_s`` (only on changes).
        clock: monotonic seconds (injected by tests).
    """
    state = [None]

    def watched(now: bool) -> None:
        if state[0] is not now:
            state[0] = now
            on_watched(now)

    watched(False)
    start = clock()
    while (pc := get_pc()) is None:
        if clock() - start > deadlines.offer_s:
            return f"no offer within {deadlines.offer_s:g} s"
        await asyncio.sleep(deadlines.poll_s)
    answered = clock()
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed"):
            return f"peer connection {pc.connectionState}"
        if clock() - answered > deadlines.connect_s:
            return f"peer connection not established within {deadlines.connect_s:g} s"
        await asyncio.sleep(deadlines.poll_s)
    heard, seen = clock(), None
    watched(True)
    while True:
        await asyncio.sleep(deadlines.poll_s)
        if pc.connectionState in ("failed", "closed"):
            return f"peer connection {pc.connectionState}"
        newest = await last_feedback(pc)
        if newest is not None and newest != seen:
            heard, seen = clock(), newest
        elif clock() - heard > deadlines.feedback_s:
            return f"no RTCP feedback from the peer for {deadlines.feedback_s:g} s"
        watched(clock() - heard <= deadlines.pause_s)
