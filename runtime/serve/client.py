"""A Python client of ``facecast serve``: WebSocket control + an aiortc receiving peer.

Used by the benchmarks and tests, and usable by any program (a voice agent, say) that wants to
drive an avatar and watch what comes back. It records every received video frame's arrival time
and pts (optionally the frames themselves, downscaled) and every audio frame's samples.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from runtime.serve.protocol import Audio, ControlMessage, Offer, Speak, encode

if TYPE_CHECKING:
    from typing import Self


@dataclass
class Received:
    """What a client received. Times are ``time.monotonic()`` seconds.

    video: [(arrival, pts, time_base)], frames: [uint8 RGB images] when kept,
    audio: [(arrival, pts, float32 mono samples at 48 kHz)], events: [(arrival, message)].
    ``arrival`` is when aiortc's receiver released the decoded frame. ``wire`` maps
    (kind, RTP timestamp) → when the frame's last RTP packet arrived (the marker-bit packet for
    video; RTP timestamps counted from the first, as aiortc counts received pts): the earliest
    a receiver could decode it. aiortc's video jitter buffer releases a frame only when the
    first packet of the next one arrives (one frame period later), and its audio buffer
    prefetches 4 packets (80 ms); browsers do neither, so ``wire`` is the fairer clock for
    latency.
    """

    video: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    audio: list = field(default_factory=list)
    events: list = field(default_factory=list)
    wire: dict = field(default_factory=dict)


class AvatarClient:
    """Connect with ``async with AvatarClient(ws_url) as c: await c.start_media()``.

    Args:
        ws_url: ``ws://host:port/ws`` (query parameters such as ``avatar`` and ``token`` may be
            passed in ``params``).
        keep_frames: keep decoded video frames (RGB, every one) in ``received.frames``.
        frame_region: (x0, y0, x1, y1) crop of kept frames (None: whole frame).
        origin: Origin header to send (None: none, like a non-browser client).
    """

    def __init__(self, ws_url: str, params: dict | None = None, keep_frames: bool = False,
                 frame_region: tuple[int, int, int, int] | None = None,
                 origin: str | None = None) -> None:
        query = "&".join(f"{k}={v}" for k, v in (params or {}).items())
        self.url = ws_url + (("?" + query) if query else "")
        self.keep_frames = keep_frames
        self.frame_region = frame_region
        self.origin = origin
        self.received = Received()
        self.ws = None
        self.pc = None
        self.ready: dict | None = None
        self._reader: asyncio.Task | None = None
        self._consumers: list[asyncio.Task] = []
        self._waiters: list[tuple[callable, asyncio.Future]] = []

    async def __aenter__(self) -> Self:
        from websockets.asyncio.client import connect

        extra = {"origin": self.origin} if self.origin else {}
        self.ws = await connect(self.url, max_size=None, **extra)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.ready = await self.wait_for(lambda m: m.get("type") in ("ready", "error"), 20)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        for task in self._consumers:
            task.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                self.received.events.append((time.monotonic(), msg))
                for pred, fut in list(self._waiters):
                    if not fut.done() and pred(msg):
                        fut.set_result(msg)
        except ConnectionClosed:
            pass
        finally:
            for _pred, fut in self._waiters:
                if not fut.done():
                    fut.set_exception(ConnectionError("control connection closed"))

    async def wait_for(self, predicate, timeout: float = 10.0) -> dict:
        """The first message (already received or future) for which ``predicate`` is true."""
        for _t, msg in self.received.events:
            if predicate(msg):
                return msg
        fut = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.remove(entry)

    async def send(self, message: ControlMessage | dict | str | bytes) -> None:
        """Send a protocol message (``runtime.serve.protocol``), a dict (as JSON) or a raw
        frame as it is (tests send malformed ones)."""
        if isinstance(message, dict):
            message = json.dumps(message)
        elif not isinstance(message, (str, bytes)):
            message = encode(message)
        await self.ws.send(message)

    async def request(self, message: ControlMessage | dict, reply_type: str,
                      timeout: float = 10.0) -> dict:
        """Send, then wait for the next message of ``reply_type`` or ``error``."""
        mark = len(self.received.events)
        await self.send(message)

        def later(m: dict) -> bool:
            return m.get("type") in (reply_type, "error")

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _t, m in self.received.events[mark:]:
                if later(m):
                    return m
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no {reply_type!r} within {timeout} s")

    async def start_media(self, timeout: float = 20.0) -> None:
        """Offer recvonly audio + video, apply the answer, start recording what arrives."""
        from aiortc import RTCPeerConnection, RTCSessionDescription

        self.pc = pc = RTCPeerConnection()
        for kind in ("video", "audio"):
            self._record_wire(pc.addTransceiver(kind, direction="recvonly").receiver, kind)

        @pc.on("track")
        def on_track(track) -> None:
            self._consumers.append(asyncio.get_running_loop().create_task(self._consume(track)))

        await pc.setLocalDescription(await pc.createOffer())
        reply = await self.request(Offer(pc.localDescription.sdp), "answer", timeout)
        if reply["type"] == "error":
            raise ConnectionError(f"offer refused: {reply}")
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))

    def _record_wire(self, receiver, kind: str) -> None:
        """Note when each frame's last RTP packet arrives (``Received.wire``). aiortc has no
        public hook for packet arrival, so this wraps ``RTCRtpReceiver._handle_rtp_packet``
        (aiortc 1.16, pinned); the packet is handled unchanged."""
        handle = receiver._handle_rtp_packet
        wire = self.received.wire
        origin: list[int] = []

        async def timed(packet, arrival_time_ms: int) -> None:
            if not origin:
                origin.append(packet.timestamp)
            if kind == "audio" or packet.marker:
                # aiortc's receiver makes pts = RTP timestamp - the first one (TimestampMapper)
                wire[(kind, (packet.timestamp - origin[0]) % 2**32)] = time.monotonic()
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = timed

    async def _consume(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                frame = await track.recv()
            except (MediaStreamError, asyncio.CancelledError):
                return
            now = time.monotonic()
            if track.kind == "video":
                self.received.video.append((now, frame.pts, frame.time_base))
                if self.keep_frames:
                    img = frame.to_ndarray(format="rgb24")
                    if self.frame_region is not None:
                        x0, y0, x1, y1 = self.frame_region
                        img = img[y0:y1, x0:x1].copy()
                    self.received.frames.append(img)
            else:
                pcm = frame.to_ndarray()
                x = pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm
                layout_channels = len(frame.layout.channels)
                x = x.reshape(-1, layout_channels).mean(axis=1) if x.ndim == 2 and \
                    x.shape[0] == 1 else x.reshape(-1)
                self.received.audio.append((now, frame.pts, x.astype(np.float32)))

    async def wait_video(self, frames: int = 1, timeout: float = 20.0) -> None:
        """Wait until at least ``frames`` video frames arrived."""
        deadline = time.monotonic() + timeout
        while len(self.received.video) < frames:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.received.video)} of {frames} video frames "
                                   f"within {timeout} s")
            await asyncio.sleep(0.02)

    async def speak(self, text: str, voice: str | None = None, id: str | None = None) -> None:
        """Send ``speak``: say ``text`` in ``voice`` (None: the server's default) as utterance
        ``id`` (None: the server names it)."""
        await self.send(Speak(text, voice, id))

    async def send_audio(self, samples: np.ndarray, sample_rate: int,
                         utt_id: str | None = None) -> None:
        """float32 [n] in [-1, 1] (or int16) as one ``audio`` message."""
        await self.send(Audio.from_samples(samples, int(sample_rate), utt_id))

    def audio_signal(self) -> tuple[np.ndarray, float]:
        """Received audio concatenated (float32 mono, 48 kHz) and the arrival time of its first
        sample."""
        if not self.received.audio:
            return np.zeros(0, np.float32), 0.0
        return (np.concatenate([a for _t, _p, a in self.received.audio]),
                self.received.audio[0][0])
