"""A session's WebRTC peer: one aiortc ``RTCPeerConnection`` that sends the session's audio and
video tracks to the client that made the offer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from runtime.serve.protocol import WebRTCFailed, first_line


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
    WebRTCFailed (the peer connection closed) when the offer cannot be answered.
    """
    from aiortc import RTCPeerConnection, RTCSessionDescription

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
