"""A session's WebRTC peer: one aiortc ``RTCPeerConnection`` that sends the session's audio and
video tracks to the client that made the offer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from runtime.serve.protocol import WebRTCFailed, first_line

MEDIA_KINDS = ("audio", "video")
"""What the server sends; an offer must ask to receive both."""
MAX_CANDIDATES = 32
"""Most ICE candidates (``a=candidate``) one offer may carry. The server sends a STUN check to
each (RFC 8445), so an offer must not make it probe an unbounded list of addresses; browsers
offer a handful per interface."""


def check_offer(offer_sdp: str) -> None:
    """Refuse an offer this server cannot answer, before aiortc sees it (its own errors on
    such offers say things like "None is not in list"). Raises WebRTCFailed saying what is
    wrong: not SDP; no m=audio or m=video section; a section that does not ask to receive
    (sendonly, inactive); no DTLS fingerprint (a=fingerprint; DTLS-SRTP is required, RFC 8827);
    no ICE credentials (a=ice-ufrag, a=ice-pwd); more than ``MAX_CANDIDATES`` candidates."""
    from aiortc.sdp import SessionDescription

    try:
        description = SessionDescription.parse(offer_sdp)
    except Exception as exc:  # the parser raises many kinds on broken lines
        raise WebRTCFailed(f"the offer is not valid SDP: {first_line(exc)[:120]}") from exc
    sections = {m.kind: m for m in description.media}
    missing = [kind for kind in MEDIA_KINDS if kind not in sections]
    if missing:
        raise WebRTCFailed(f"the offer has no m={' or m='.join(missing)} section: this server "
                           "sends audio and video, so offer to receive both (recvonly "
                           "transceivers)")
    candidates = sum(len(m.ice_candidates) for m in description.media)
    if candidates > MAX_CANDIDATES:
        raise WebRTCFailed(f"the offer carries {candidates} ICE candidates; at most "
                           f"{MAX_CANDIDATES} are checked")
    for kind in MEDIA_KINDS:
        m = sections[kind]
        if m.direction in ("sendonly", "inactive"):
            raise WebRTCFailed(f"the offer's m={kind} section is {m.direction}: offer to "
                               "receive it (recvonly or sendrecv)")
        if m.dtls is None or not m.dtls.fingerprints:
            raise WebRTCFailed(f"the offer's m={kind} section has no a=fingerprint: DTLS-SRTP "
                               "is required")
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise WebRTCFailed(f"the offer's m={kind} section has no a=ice-ufrag / a=ice-pwd")


async def answer_offer(session, offer_sdp: str,
                       on_end: Callable[[object, str], Awaitable[None]]):
    """Make the peer connection for ``session`` (``runtime.live.session.Session``: its
    ``audio_track`` and ``video_track``) and answer the client's offer.

    Args:
        session: the session whose tracks are sent.
        offer_sdp: the client's offer, SDP text.
        on_end: awaited as ``on_end(pc, state)`` when the connection's state becomes "failed"
            or "closed".

    Returns the ``RTCPeerConnection``; its ``localDescription.sdp`` is the answer. Raises
    WebRTCFailed (``check_offer``'s reasons; or the peer connection closed) when the offer
    cannot be answered.
    """
    from aiortc import RTCPeerConnection, RTCSessionDescription

    check_offer(offer_sdp)
    pc = RTCPeerConnection()

    @pc.on("connectionstatechange")
    async def _on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            await on_end(pc, pc.connectionState)

    try:
        pc.addTrack(session.audio_track)
        pc.addTrack(session.video_track)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # aiortc raises many kinds on a bad SDP
        await pc.close()
        raise WebRTCFailed(f"cannot answer the offer: {first_line(exc)[:200]}") from exc
    return pc
