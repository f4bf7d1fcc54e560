"""One connection's speech going into a live session: ``speak`` text through the TTS engine,
``audio`` streams through their resamplers to the 48 kHz output, ``audio_end``, ``interrupt``.

A ``speak`` is checked and given its place in the session's queue at once (``begin_speak``:
text that cannot fit the remaining audio buffer is refused before any synthesis), then
synthesised sentence by sentence (``fill_speak``; ``runtime.audio.tts.split_for_synthesis``), so
one message never holds more than a piece's audio, the first sentence plays while the rest is
synthesised, and an ``interrupt`` (``reset``) stops what is left.

Library failures become protocol errors by their type: ``runtime.live.speech.BufferFull``
→ ``AudioBufferFull``; ``TooManyQueued`` → ``TooManyUtterances``;
``runtime.audio.espeak.UnknownVoice`` → ``BadVoice``; another ValueError of the TTS engine (text
it refuses) → ``BadMessage``; ``TTSError`` / ``EspeakError`` → ``TTSFailed``.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import numpy as np

from engines.audio import OUTPUT_SAMPLE_RATE
from runtime.audio.resample import StreamResampler, resample
from runtime.serve.protocol import (
    Audio,
    AudioBufferFull,
    AudioEnd,
    BadMessage,
    BadVoice,
    Speak,
    TooManyStreams,
    TooManyUtterances,
    TTSFailed,
    first_line,
)

MAX_OPEN_STREAMS = 8
"""Audio streams (``audio`` ids without ``audio_end``) one connection may hold open: each holds a
resampler and its buffered audio until its ``audio_end`` (or an ``interrupt``)."""


def queue_speech(session, utt_id: str, samples: np.ndarray, done: bool = False) -> None:
    """Queue float32 [n] 48 kHz mono ``samples`` as utterance ``utt_id`` on ``session``
    (``runtime.live.session.Session``), ``done`` with its last chunk. Raises AudioBufferFull
    when the session's speech buffer limit would be passed, TooManyUtterances when a new
    utterance would pass its utterance limit."""
    from runtime.live.speech import BufferFull, TooManyQueued

    try:
        session.queue.add(utt_id, samples, done=done)
    except BufferFull as exc:
        raise AudioBufferFull(str(exc)) from exc
    except TooManyQueued as exc:
        raise TooManyUtterances(str(exc)) from exc


@dataclass(frozen=True)
class PendingSpeak:
    """A ``speak`` queued by ``SpeechInput.begin_speak`` and not yet synthesised: its utterance
    ``id``, the ``message``, and the input's interrupt count (``epoch``) when it was queued."""

    id: str
    message: Speak
    epoch: int


class SpeechInput:
    """The speech one connection sends: utterance ids it made up and its open audio streams.

    Args:
        tts: the server's TTS engine (``runtime.audio.tts.TTS``).
        prefix: first part of the ids made up for utterances the client leaves unnamed.
    """

    def __init__(self, tts, prefix: str = "u") -> None:
        self.tts = tts
        self.prefix = prefix
        self._count = itertools.count(1)
        self._streams: dict[str, StreamResampler] = {}
        self._epoch = 0  # bumped by reset: a synthesis in flight stops queueing
        self._synthesis = asyncio.Lock()  # one synthesis at a time, in the order asked
        self.current: str | None = None
        """The stream the last ``audio`` went to (used by ``audio`` / ``audio_end`` without id)."""

    def new_id(self) -> str:
        """A fresh utterance id: ``u1``, ``u2`` … (with the default prefix)."""
        return f"{self.prefix}{next(self._count)}"

    @property
    def open_streams(self) -> int:
        """Audio streams started and not yet ended."""
        return len(self._streams)

    def begin_speak(self, session, msg: Speak) -> PendingSpeak:
        """Check ``msg`` against the session's room and queue its utterance, empty and open, so
        that speech asked for later plays after it. Synchronous, no synthesis. Returns what
        ``fill_speak`` needs. Raises AudioBufferFull (the text's shortest possible speech, ``min_duration_s``, does
        not fit what the buffer has left), TooManyUtterances."""
        from runtime.audio.tts import min_duration_s

        uid = msg.id if msg.id is not None else self.new_id()
        room_s = session.queue.room_samples / OUTPUT_SAMPLE_RATE
        need_s = min_duration_s(msg.text)
        if need_s > room_s:
            raise AudioBufferFull(f"the text takes at least {need_s:.0f} s to speak; the "
                                  f"session's speech buffer has {room_s:.0f} s left")
        queue_speech(session, uid, np.zeros(0, np.float32))
        return PendingSpeak(uid, msg, self._epoch)

    async def fill_speak(self, session, pending: PendingSpeak) -> None:
        """Synthesise the text of ``pending`` (from ``begin_speak``) piece by piece (in a worker
        thread; one synthesis of this connection at a time), resample each to 48 kHz and add it
        to its utterance; the last piece ends it. Stops quietly when a ``reset`` (an interrupt)
        since ``begin_speak``, or the session's close, comes first. Raises BadVoice, BadMessage (text the engine
        refuses), TTSFailed, AudioBufferFull; the utterance is then withdrawn (or, if it already
        started playing, ended where it is)."""
        from runtime.audio.espeak import EspeakError, UnknownVoice
        from runtime.audio.tts import TTSError, split_for_synthesis

        uid, msg, epoch = pending.id, pending.message, pending.epoch
        loop = asyncio.get_running_loop()
        pieces = split_for_synthesis(msg.text) or [msg.text]
        try:
            async with self._synthesis:
                for i, piece in enumerate(pieces):
                    if self._epoch != epoch or session.closed:
                        return
                    try:
                        speech = await loop.run_in_executor(None, self.tts.synthesize, piece,
                                                            msg.voice)
                    except UnknownVoice as exc:
                        raise BadVoice(first_line(exc)) from exc
                    except ValueError as exc:
                        raise BadMessage(first_line(exc)) from exc
                    except (TTSError, EspeakError) as exc:
                        raise TTSFailed(first_line(exc)) from exc
                    audio = await loop.run_in_executor(None, resample, speech.audio,
                                                       speech.sample_rate, OUTPUT_SAMPLE_RATE)
                    if self._epoch != epoch or session.closed:
                        return
                    queue_speech(session, uid, audio, done=i == len(pieces) - 1)
        except BaseException:
            if self._epoch == epoch:
                session.queue.discard(uid)
            raise

    async def speak(self, session, msg: Speak) -> str:
        """``begin_speak`` then ``fill_speak``: returns the id once the whole text is queued.
        Raises what those raise."""
        pending = self.begin_speak(session, msg)
        await self.fill_speak(session, pending)
        return pending.id

    def audio(self, session, msg: Audio) -> str:
        """Resample a chunk of stream ``msg.id`` (None: the current stream, or a new one) to
        48 kHz and queue it. Returns the stream's id. A stream whose sample rate changes starts
        a new resampler. Raises TooManyStreams (a new stream while ``MAX_OPEN_STREAMS`` are
        open), AudioBufferFull."""
        uid = msg.id if msg.id is not None else self.current
        if uid is None:
            uid = self.new_id()
        self.current = uid
        stream = self._streams.get(uid)
        if stream is None and len(self._streams) >= MAX_OPEN_STREAMS:
            raise TooManyStreams(f"{len(self._streams)} audio streams are open; end one with "
                                 f"'audio_end' (or 'interrupt') before starting another")
        new = stream is None or stream.rate_in != msg.sample_rate
        if new:
            stream = StreamResampler(msg.sample_rate, OUTPUT_SAMPLE_RATE)
        queue_speech(session, uid, stream.push(msg.samples()))
        if new:  # kept only once its first chunk is queued
            self._streams[uid] = stream
        return uid

    def audio_end(self, session, msg: AudioEnd) -> str:
        """End stream ``msg.id`` (None: the current one): queue what its resampler still holds
        and mark the utterance done. Returns its id. Raises BadMessage when no stream is named
        or current, or the named one is not open (never started, already ended, or dropped by an
        interrupt), AudioBufferFull."""
        uid = msg.id if msg.id is not None else self.current
        if uid is None:
            raise BadMessage("'audio_end' without an open audio stream")
        stream = self._streams.pop(uid, None)
        if stream is None:
            raise BadMessage(f"'audio_end' for {uid[:64]!r}, which is not an open audio stream")
        queue_speech(session, uid, stream.flush(), done=True)
        if self.current == uid:
            self.current = None
        return uid

    def reset(self) -> None:
        """Forget every open stream and stop queueing the speech being synthesised (an
        interrupt, or a controller's display reconnected)."""
        self._streams.clear()
        self.current = None
        self._epoch += 1
