"""Signaling cases: offers the server must refuse, a second offer, and the media deadlines (no
offer, ICE that never connects, a peer that vanishes once connected)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable

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


PEER_PROCESS = """
import asyncio, json, sys
from aiortc import RTCPeerConnection, RTCSessionDescription

async def main():
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    print(json.dumps(pc.localDescription.sdp), flush=True)
    answer = json.loads(await asyncio.get_running_loop().run_in_executor(None, input))
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    while pc.connectionState != "connected":
        await asyncio.sleep(0.05)
    print("connected", flush=True)
    await asyncio.sleep(3600)  # until SIGKILL: no BYE, no DTLS close, no ICE goodbye

asyncio.run(main())
"""
"""A media peer in its own process, so that it can vanish as a crashed client or a dropped
network does: SIGKILL, nothing said on the wire."""


async def _media_vanishes(t: Target) -> Outcome:
    """A client whose media connected and then vanished (its WebSocket kept open): the session
    is closed within ``vanish_timeout``. The peer is a separate process at the lowest CPU
    priority (``nice 19``): a second live session is not what this case tests, and on a small
    machine its decoding would otherwise take the well-behaved session's CPU."""
    import subprocess
    import sys

    limit = t.flags.vanish_timeout
    peer = await asyncio.create_subprocess_exec(
        "nice", "-n", "19", sys.executable, "-c", PEER_PROCESS,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        async with connected(t) as (p, _ready):
            offer = json.loads(await asyncio.wait_for(peer.stdout.readline(), 20))
            reply = await p.ask({"type": "offer", "sdp": offer}, ("answer", "error"), 15)
            if (reply or {}).get("type") != "answer":
                return False, f"offer not answered: {err(reply)}"
            peer.stdin.write((json.dumps(reply["sdp"]) + "\n").encode())
            await peer.stdin.drain()
            state = await asyncio.wait_for(peer.stdout.readline(), 20)
            if state.strip() != b"connected":
                return False, f"the peer did not connect: {state!r}"
            await asyncio.sleep(1.0)
            peer.kill()
            t0 = time.monotonic()
            await p.wait_closed(limit + 10)
            dt = time.monotonic() - t0
            if p.close_code is None:
                return False, f"still open {dt:.0f} s after the peer vanished"
            errors = [err(m) for m in p.messages if m.get("type") == "error"]
            return dt <= limit + 5, (f"closed {p.close_code} {dt:.1f} s after the peer was "
                                     f"killed; errors {errors}")
    finally:
        if peer.returncode is None:
            peer.kill()
        await peer.wait()


CASES: tuple[Case, ...] = (
    *(Case(name, "signaling", bad_offer(make), quick=quick) for name, make, quick in BAD_OFFERS),
    case_of(_second_offer, "signaling"),
    case_of(_no_offer, "signaling", quick=True, timeout=30),
    case_of(_ice_never_connects, "signaling", timeout=30),
    case_of(_media_vanishes, "signaling", timeout=60),
)
"""The signaling cases, in the order they run."""
