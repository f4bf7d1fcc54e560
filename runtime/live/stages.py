"""Where a live frame's time goes: seconds per pipeline stage, summed over frames and sessions.

The stages of one output frame, in order: ``motion`` (the streaming motion model and its fps
resampler), ``behaviour`` (idle, blinks, prosody, the optional drive), ``rig`` (coefficients and
pose → keypoints), ``render`` (the batched renderer call, shared by the tick's sessions),
``composite`` (paste-back and wrapping as ``av`` frames), ``encode_video`` / ``encode_audio``
(VP8 and Opus; measured where the encoding runs: aiortc's executor in a server, the consumer in
``facecast bench capacity``). Each is wall time (``time.perf_counter``) spent in that stage by the
thread that ran it; a stage running on several threads at once adds up every thread's time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

STAGES = ("motion", "behaviour", "rig", "render", "composite", "encode_video", "encode_audio")
"""The stages, in pipeline order."""


class StageTimes:
    """Seconds per stage (``STAGES``), summed; thread-safe (the tick thread, composite pool
    threads and encoders add to it).

    Attributes:
        seconds: stage → seconds summed (read a ``snapshot`` for a consistent copy).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def add(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage``. Raises KeyError for an unknown stage."""
        with self._lock:
            self.seconds[stage] += seconds

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """``with times.timed("rig"): ...`` adds the block's wall time to the stage."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def snapshot(self) -> dict[str, float]:
        """A copy of ``seconds``."""
        with self._lock:
            return dict(self.seconds)

    @staticmethod
    def per_frame_ms(before: dict[str, float], after: dict[str, float],
                     frames: int) -> dict[str, float]:
        """Milliseconds per frame of each stage between two snapshots over ``frames`` frames
        (all sessions' frames counted). Raises ValueError for ``frames < 1``."""
        if frames < 1:
            raise ValueError("frames must be at least 1")
        return {s: (after[s] - before[s]) * 1000.0 / frames for s in STAGES}
