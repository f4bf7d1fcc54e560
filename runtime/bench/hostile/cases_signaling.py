"""Signaling cases: offers the server must refuse, a second offer, and the media deadlines (no
offer, ICE that never connects, a peer that vanishes once connected)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from runtime.bench.hostile.clients import connected, err, offer_sdp, readable, settled, strip_sdp
from runtime.bench.hostile.model import Case, Outcome, Run, Target, case_of


def bad_offer(make: Callable[[Target], Awaitable[str]]) -> Run:
    """A case: offer what ``make`` returns; handled when it is refused with ``webrtc_failed``
    and a readable message, and the session still answers ``ping``."""
    async def run(t: Target) -> Outcome:
        sdp = await make(t)
        async with connected(t) as (p, _ready):
            reply = await p.ask({"type": "offer", "sdp": sdp}, ("answer", "error"), 10)
            alive = await p.alive()
            if reply is not None and reply.get("type") == "answer":
                return False, "answered (a peer connection was made)"
            ok = (reply or {}).get("code") == "webrtc_failed" and \
                readable(reply.get("message")) and alive
            return ok, f"{err(reply)}; " + ("ping answered" if alive else "no pong")
    return run


async def _garbage(_t: Target) -> str:
    return "hello, this is not SDP"


async def _no_media(_t: Target) -> str:
    return "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


async def _datachannel_only(t: Target) -> str:
    return await offer_sdp(t, (), datachannel=True)


async def _audio_only(t: Target) -> str:
    return await offer_sdp(t, ("audio",))


async def _video_only(t: Target) -> str:
    return await offer_sdp(t, ("video",))


async def _no_fingerprint(t: Target) -> str:
    return strip_sdp(await offer_sdp(t), "a=fingerprint")


async def _no_ice_credentials(t: Target) -> str:
    return strip_sdp(await offer_sdp(t), "a=ice-ufrag", "a=ice-pwd")


async def _unknown_codecs(t: Target) -> str:
    return re.sub(r"(a=rtpmap:\d+ )[^/\r\n]+", r"\1XYZ", await offer_sdp(t))


async def _huge_garbage(_t: Target) -> str:
    return "v=0\r\n" + "a=x-hostile:" + "z" * 500_000 + "\r\n"


BAD_OFFERS = [("offer_garbage", _garbage, True), ("offer_no_media", _no_media, False),
              ("offer_datachannel_only", _datachannel_only, False),
              ("offer_audio_only", _audio_only, True), ("offer_video_only", _video_only, False),
              ("offer_no_fingerprint", _no_fingerprint, False),
              ("offer_no_ice_credentials", _no_ice_credentials, False),
              ("offer_unknown_codecs", _unknown_codecs, False),
              ("offer_500k_garbage", _huge_garbage, False)]
"""Offers to refuse with ``webrtc_failed``: (case name, makes the SDP, in ``--quick``)."""


async def _second_offer(t: Target) -> Outcome:
    """A second offer on a session that has a peer: ``no_peer``."""
    sdp = strip_sdp(await offer_sdp(t), "a=candidate", "a=end-of-candidates")
    async with connected(t) as (p, _ready):
        first = await p.ask({"type": "offer", "sdp": sdp}, ("answer", "error"), 10)
        if (first or {}).get("type") != "answer":
            return False, f"the first offer was not answered: {err(first)}"
        second = await p.ask({"type": "offer", "sdp": sdp}, ("answer", "error"), 10)
        alive = await p.alive()
        ok = (second or {}).get("code") == "no_peer" and alive
        what = "answered" if (second or {}).get("type") == "answer" else err(second)
        return ok, f"second offer: {what}; " + ("ping answered" if alive else "no pong")


async def _no_offer(t: Target) -> Outcome:
    """A session that never offers: ``media_timeout`` and close 1008 after the offer timeout,
    and its slot is free again."""
    limit = t.flags.offer_timeout
    async with connected(t) as (p, _ready):
        t0 = time.monotonic()
        error = await p.next(lambda m: m.get("type") == "error", limit + 5)
        dt = time.monotonic() - t0
        code = await p.wait_closed(3)
    freed, h = await settled(t)
    ok = (error or {}).get("code") == "media_timeout" and code == 1008 and \
        limit - 0.5 <= dt <= limit + 2.5 and freed
    return ok, (f"{err(error)} after {dt:.1f} s (offer timeout {limit:g} s); close {code}; "
                f"slot {'freed' if freed else 'still held'} (sessions {h.get('sessions')})")


async def _ice_never_connects(t: Target) -> Outcome:
    """An offer with no candidates, from a peer that is gone: answered, then closed after the
    connect timeout."""
    limit = t.flags.connect_timeout
    sdp = strip_sdp(await offer_sdp(t), "a=candidate", "a=end-of-candidates")
    async with connected(t) as (p, _ready):
        reply = await p.ask({"type": "offer", "sdp": sdp}, ("answer", "error"), 10)
        if (reply or {}).get("type") != "answer":
            return False, f"offer not answered: {err(reply)}"
        t0 = time.monotonic()
        code = await p.wait_closed(limit + 8)
        dt = time.monotonic() - t0
        error = next((m for m in p.messages if m.get("type") == "error"), None)
    if code is None:
        return False, f"still open {dt:.1f} s after the answer (connect timeout {limit:g} s)"
    ok = dt <= limit + 3
    return ok, f"closed {code} {dt:.1f} s after the answer ({err(error)})"


def _sever(pc) -> None:
    """Make an aiortc peer vanish without a word: its ICE sockets stop sending and receiving
    (no DTLS close, no RTCP BYE), as when a client's network drops."""
    def nothing(*_a: Any, **_k: Any) -> None:
        return None

    async def nothing_async(*_a: Any, **_k: Any) -> None:
        return None

    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        ice = getattr(dtls, "transport", None)
        conn = getattr(ice, "_connection", None)
        for proto in getattr(conn, "_protocols", []):  # aioice's StunProtocol
            proto.send_data = nothing_async
            proto.send_stun = nothing
            proto.datagram_received = nothing


async def _media_vanishes(t: Target) -> Outcome:
    """A client whose media connected and then vanished (WebSocket kept): the session is closed
    within ~30 s."""
    from runtime.serve.client import AvatarClient

    limit = t.flags.vanish_timeout
    client = AvatarClient(t.ws)
    try:
        await client.__aenter__()
        if client.ready.get("type") != "ready":
            return False, f"refused: {client.ready}"
        await client.start_media()
        await client.wait_video(5, 20)
        _sever(client.pc)
        t0 = time.monotonic()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(client.ws.wait_closed(), limit + 10)
        dt = time.monotonic() - t0
        if client.ws.close_code is None:
            return False, f"still open {dt:.0f} s after the peer vanished"
        errors = [err(m) for _t, m in client.received.events if m.get("type") == "error"]
        return dt <= limit + 5, (f"closed {client.ws.close_code} {dt:.1f} s after the peer "
                                 f"vanished; errors {errors}")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 10)


CASES: tuple[Case, ...] = (
    *(Case(name, "signaling", bad_offer(make), quick=quick) for name, make, quick in BAD_OFFERS),
    case_of(_second_offer, "signaling"),
    case_of(_no_offer, "signaling", quick=True, timeout=30),
    case_of(_ice_never_connects, "signaling", timeout=30),
    case_of(_media_vanishes, "signaling", timeout=60),
)
"""The signaling cases, in the order they run."""
