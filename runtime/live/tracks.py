"""A live session's two outgoing WebRTC tracks, and the PyAV frames they carry, stamped by one clock.

Both tracks are aiortc ``MediaStreamTrack`` s fed by the scheduler through bounded queues (the
oldest frame is dropped when the peer does not keep up) and read by aiortc with ``recv()``. Their
frames take pts from the session's ``runtime.clock.AvClock`` (``DESIGN.md``, "One clock"): video
frame n has pts ``clock.frame_start(n)``, and the audio frames of its slice start at that same
sample, in the same time base (1 / output sample rate). A slice is cut into audio frames of at
most ``AUDIO_FRAME_SAMPLES`` from its own start, so no audio frame crosses a video frame's
boundary: at 25 fps a slice is two 20 ms frames; at 30000/1001 fps (1601 or 1602 samples) one of
960 and one of 641 or 642 (aiortc's Opus encoder re-frames to 20 ms packets).
"""

from __future__ import annotations

import asyncio

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engines.audio import OUTPUT_SAMPLE_RATE
from runtime.clock import AvClock

AUDIO_FRAME_SAMPLES = OUTPUT_SAMPLE_RATE // 50
"""Most samples per outgoing audio frame: 20 ms at the output rate (one Opus packet)."""
VIDEO_QUEUE_FRAMES = 3
"""Outgoing video frames buffered per session (120 ms at 25 fps); the oldest is dropped beyond."""
AUDIO_QUEUE_FRAMES = 6
"""Outgoing audio frames buffered per session (120 ms of 20 ms frames)."""


class QueueTrack(MediaStreamTrack):
    """An aiortc track fed through a bounded queue: ``put`` on the event loop (the oldest frame
    is dropped when full, counted in ``dropped``), ``recv`` by aiortc. After ``stop``, ``recv``
    raises ``MediaStreamError`` (aiortc's end of stream).

    Args:
        maxsize: frames buffered.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self._queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.dropped = 0

    def put(self, frame) -> None:
        """Queue one ``av`` frame (ignored once the track is stopped). On the event loop."""
        if self.readyState != "live":
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(frame)

    async def recv(self):
        """The next frame; raises ``MediaStreamError`` once the track is stopped."""
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        """End the track; a pending ``recv`` wakes and raises ``MediaStreamError``."""
        super().stop()
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            self._queue.get_nowait()
            self._queue.put_nowait(None)


class SessionVideoTrack(QueueTrack):
    """The avatar's video: ``av.VideoFrame`` rgb24 (``video_frame``), pts = first output-audio
    sample of the frame's slice."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__(VIDEO_QUEUE_FRAMES)


class SessionAudioTrack(QueueTrack):
    """The avatar's voice: ``av.AudioFrame`` s16 mono at the output rate (``audio_frames``),
    pts = sample counter."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__(AUDIO_QUEUE_FRAMES)


def slice_length(clock: AvClock, index: int) -> int:
    """Samples in video frame ``index``'s audio slice: ``frame_start(index + 1) −
    frame_start(index)`` (S, or S ± 1 where S is not whole)."""
    return clock.frame_start(index + 1) - clock.frame_start(index)


def audio_frames(clock: AvClock, index: int, samples: np.ndarray) -> list:
    """Video frame ``index``'s audio slice as ``av.AudioFrame`` s, s16 mono.

    Args:
        clock: the session's clock.
        index: the video frame the slice belongs to.
        samples: float32 [slice_length(clock, index)] in [-1, 1] at ``clock.sample_rate``.

    Returns frames of at most ``AUDIO_FRAME_SAMPLES``, cut from the slice's start, with pts =
    ``clock.frame_start(index)`` + offset in ``clock.time_base``. Raises ``ValueError`` when
    ``samples`` is not exactly the slice's length.
    """
    import av

    first = clock.frame_start(index)
    if len(samples) != clock.frame_start(index + 1) - first:
        raise ValueError(f"frame {index} has {slice_length(clock, index)} samples, "
                         f"got {len(samples)}")
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
    out = []
    for i in range(0, len(pcm), AUDIO_FRAME_SAMPLES):
        chunk = pcm[i:i + AUDIO_FRAME_SAMPLES]
        frame = av.AudioFrame.from_ndarray(chunk[None], format="s16", layout="mono")
        frame.sample_rate = clock.sample_rate
        frame.pts = first + i
        frame.time_base = clock.time_base
        out.append(frame)
    return out


def video_frame(clock: AvClock, index: int, image: np.ndarray):
    """Video frame ``index`` as an rgb24 ``av.VideoFrame`` with pts = ``clock.frame_start(index)``
    in ``clock.time_base``.

    Args:
        image: uint8 [H, W, 3] RGB; an odd side loses its last row/column (VP8 and H.264 want
            even sides).
    """
    import av

    if image.shape[0] % 2 or image.shape[1] % 2:
        image = np.ascontiguousarray(image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2])
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    frame.pts = clock.frame_start(index)
    frame.time_base = clock.time_base
    return frame
