"""The voice gate: a live microphone stream cut into utterances by level.

``facecast kiosk --mic`` feeds the microphone (48 kHz) through it so that the avatar speaks while
someone talks and idles between phrases, and an app's speech is not held up behind a microphone
stream that never ends. The level of a chunk is its RMS in dBFS (``runtime.audio.resample.
level_dbfs``); the thresholds below have hysteresis (an utterance opens louder than it closes),
so a voice hovering near one threshold does not flap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from engines.audio import OUTPUT_SAMPLE_RATE
from runtime.audio.resample import level_dbfs

OPEN_DBFS = -38.0
"""Chunk level (dBFS, RMS) at or above which an utterance opens: quiet speech at arm's length
from a laptop microphone, well above a room's hiss (about −60 dBFS)."""
CLOSE_DBFS = -45.0
"""Chunk level (dBFS, RMS) under which a chunk counts as quiet while an utterance is open."""
PREROLL_S = 0.2
"""Seconds of audio before the opening chunk that start the utterance (the first consonant,
quieter than the vowel that opened the gate, is not clipped)."""
HANG_S = 0.6
"""Seconds of quiet chunks that end an utterance (pauses inside a phrase are shorter)."""

Emit = Callable[[str, np.ndarray, bool], None]
"""``emit(utterance_id, samples float32 [n] at 48 kHz, done)``."""


class VoiceGate:
    """Cuts a live stream into utterances by level.

    An utterance opens when a chunk's level reaches ``open_db`` and starts with the
    ``preroll_s`` of audio before it; it ends (``done``) after ``hang_s`` of chunks below
    ``close_db``. Chunks while closed are kept only as pre-roll, then dropped.

    Args:
        emit: called as ``emit(utt_id, samples float32 [n] at 48 kHz, done)`` for each piece.
        open_db, close_db: level thresholds, dBFS RMS (close_db ≤ open_db: hysteresis).
        preroll_s, hang_s: seconds.
        prefix: utterance ids are ``f"{prefix}{k}"``, k = 1, 2, …
        sample_rate: rate of the pushed audio, Hz.

    Raises ``ValueError`` when ``close_db`` exceeds ``open_db``.
    """

    def __init__(self, emit: Emit, open_db: float = OPEN_DBFS, close_db: float = CLOSE_DBFS,
                 preroll_s: float = PREROLL_S, hang_s: float = HANG_S, prefix: str = "mic",
                 sample_rate: int = OUTPUT_SAMPLE_RATE) -> None:
        if close_db > open_db:
            raise ValueError("close_db must not exceed open_db")
        self.emit = emit
        self.open_db, self.close_db = open_db, close_db
        self.rate = sample_rate
        self.preroll = int(preroll_s * sample_rate)
        self.hang = hang_s
        self.prefix = prefix
        self.count = 0
        self.current: str | None = None
        self._quiet_s = 0.0
        self._ring: deque[np.ndarray] = deque()
        self._ring_n = 0

    def push(self, x: np.ndarray) -> None:
        """One chunk: float32 [n] mono at ``sample_rate``."""
        x = np.asarray(x, np.float32)
        if not len(x):
            return
        level = level_dbfs(x)
        if self.current is None:
            if level >= self.open_db:
                self.count += 1
                self.current = f"{self.prefix}{self.count}"
                self._quiet_s = 0.0
                pre = np.concatenate(list(self._ring)) if self._ring else x[:0]
                self._ring.clear()
                self._ring_n = 0
                self.emit(self.current, np.concatenate([pre, x]), False)
            else:
                self._ring.append(x)
                self._ring_n += len(x)
                while self._ring_n - len(self._ring[0]) >= self.preroll:
                    self._ring_n -= len(self._ring.popleft())
            return
        self._quiet_s = self._quiet_s + len(x) / self.rate if level < self.close_db else 0.0
        done = self._quiet_s >= self.hang
        self.emit(self.current, x, done)
        if done:
            self.current = None

    def close(self) -> None:
        """End the open utterance, if any (an empty last piece with ``done``)."""
        if self.current is not None:
            self.emit(self.current, np.zeros(0, np.float32), True)
            self.current = None
