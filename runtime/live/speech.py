"""The speech queue of a live session: utterances of 48 kHz audio, queued in order, taken one
video frame's slice at a time.

Producers (a client's ``audio`` stream, TTS, a microphone) ``add`` float32 chunks to an
utterance on the event loop or in their own thread; the scheduler's worker thread ``pull`` s
exactly one slice per frame (silence where nothing is queued), and learns which utterances the
samples came from, which is how a session knows when one starts and ends playing. The queue is
bounded in audio (``max_seconds``; ``add`` beyond it raises ``BufferFull``) and in utterances
(``max_utterances``; a new one beyond it raises ``TooManyQueued``), and every operation costs
O(1) in what is queued (a running count, not a sum over the queue).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from engines.audio import OUTPUT_SAMPLE_RATE

MAX_UTTERANCES = 32
"""Default most utterances queued at once (not yet fully played) in one session."""


class BufferFull(ValueError):
    """More speech audio queued than the session's limit."""


class TooManyQueued(ValueError):
    """More utterances queued than the session's limit."""


@dataclass
class Utterance:
    """Speech queued for playing: float32 chunks at 48 kHz, in order.

    ``total`` samples queued so far; ``taken`` taken from the queue; ``played`` output so far;
    ``done`` when no more chunks will come (``audio_end``, or a TTS utterance); ``started`` /
    ``ended`` once its ``speech_started`` / ``speech_ended`` event has been sent. ``created`` and
    ``first_audio`` (its first non-empty chunk) are ``time.monotonic()`` seconds, for the
    speech-latency metric.
    """

    id: str
    chunks: deque = field(default_factory=deque)
    total: int = 0
    taken: int = 0
    played: int = 0
    done: bool = False
    started: bool = False
    ended: bool = False
    created: float = field(default_factory=time.monotonic)
    first_audio: float | None = None

    @property
    def duration_ms(self) -> float:
        """Milliseconds of audio queued for it so far."""
        return self.total / OUTPUT_SAMPLE_RATE * 1000


class SpeechQueue:
    """Thread-safe queue of utterances at 48 kHz; ``pull(n)`` always returns n samples (silence
    where nothing is queued) and says which utterances they came from.

    Args:
        max_seconds: most audio buffered (not yet taken) across utterances; ``add`` raises
            ``BufferFull`` beyond it.
        max_utterances: most utterances queued at once; ``add`` of a new one raises
            ``TooManyQueued`` beyond it.
    """

    def __init__(self, max_seconds: float = 60.0, max_utterances: int = MAX_UTTERANCES) -> None:
        self.max_samples = int(max_seconds * OUTPUT_SAMPLE_RATE)
        self.max_utterances = max_utterances
        self._lock = threading.Lock()
        self._items: deque[Utterance] = deque()
        self._by_id: dict[str, Utterance] = {}
        self._queued = 0  # samples added and not yet taken, over every utterance

    @property
    def buffered(self) -> int:
        """Samples queued and not yet taken."""
        return self._queued

    @property
    def room_samples(self) -> int:
        """Samples that may still be added before ``BufferFull`` (at 48 kHz)."""
        return max(0, self.max_samples - self._queued)

    def __len__(self) -> int:
        """Utterances queued (open, or not yet fully taken)."""
        return len(self._items)

    def add(self, utt_id: str, samples: np.ndarray, done: bool = False) -> Utterance:
        """Append float32 [n] 48 kHz samples to utterance ``utt_id`` (created if new, or if the
        one of that id is already done). Raises BufferFull if the audio limit would be passed,
        TooManyQueued if a new utterance would pass the utterance limit."""
        x = np.asarray(samples, dtype=np.float32)
        with self._lock:
            if self._queued + len(x) > self.max_samples:
                raise BufferFull(f"more than {self.max_samples / OUTPUT_SAMPLE_RATE:.0f} s of "
                                 "speech buffered")
            u = self._by_id.get(utt_id)
            if u is None or u.done:
                if len(self._items) >= self.max_utterances:
                    raise TooManyQueued(f"{len(self._items)} utterances are queued (the limit); "
                                        "wait for some to play, or interrupt")
                u = Utterance(utt_id)
                self._items.append(u)
                self._by_id[utt_id] = u
            if len(x):
                u.chunks.append(x)
                u.total += len(x)
                self._queued += len(x)
                if u.first_audio is None:
                    u.first_audio = time.monotonic()
            u.done = u.done or done
            return u

    def end(self, utt_id: str) -> Utterance | None:
        """Mark ``utt_id`` complete; None if there is no such open utterance."""
        with self._lock:
            u = self._by_id.get(utt_id)
            if u is None or u.done:
                return None
            u.done = True
            return u

    def discard(self, utt_id: str) -> bool:
        """Withdraw open utterance ``utt_id`` (its producer failed): removed if none of it was
        taken yet, else marked done so what was taken plays out. False if there is no such open
        utterance."""
        with self._lock:
            u = self._by_id.get(utt_id)
            if u is None or u.done:
                return False
            if u.taken == 0:
                self._items = deque(x for x in self._items if x is not u)
                del self._by_id[utt_id]
                self._queued -= u.total
            else:
                u.done = True
            return True

    def pull(self, n: int) -> tuple[np.ndarray, list[tuple[Utterance, int]]]:
        """Take n samples: (float32 [n], [(utterance, samples taken from it), ...]).

        An utterance that is open but has no audio yet (a stream that stalls) blocks the ones
        behind it and yields silence; a finished one is removed once fully taken."""
        out = np.zeros(n, np.float32)
        parts: list[tuple[Utterance, int]] = []
        pos = 0
        with self._lock:
            while pos < n and self._items:
                u = self._items[0]
                while pos < n and u.chunks:
                    chunk = u.chunks[0]
                    k = min(n - pos, len(chunk))
                    out[pos:pos + k] = chunk[:k]
                    if k == len(chunk):
                        u.chunks.popleft()
                    else:
                        u.chunks[0] = chunk[k:]
                    u.taken += k
                    self._queued -= k
                    pos += k
                    if parts and parts[-1][0] is u:
                        parts[-1] = (u, parts[-1][1] + k)
                    else:
                        parts.append((u, k))
                if u.done and not u.chunks:
                    self._items.popleft()
                    if self._by_id.get(u.id) is u:  # a later utterance may reuse the id
                        del self._by_id[u.id]
                    if not parts or parts[-1][0] is not u:
                        parts.append((u, 0))  # an empty utterance still ends
                    continue
                break  # open utterance waiting for more audio
        return out, parts

    def clear(self) -> list[Utterance]:
        """Drop everything queued (barge-in); returns the utterances dropped."""
        with self._lock:
            dropped = list(self._items)
            self._items.clear()
            self._by_id.clear()
            self._queued = 0
            return dropped
