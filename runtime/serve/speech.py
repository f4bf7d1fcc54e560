"""One connection's speech going into a live session: ``speak`` text through the TTS engine,
``audio`` streams through their resamplers to the 48 kHz output, ``audio_end``, ``interrupt``.

Library failures become protocol errors by their type: ``runtime.live.speech.BufferFull``
→ ``AudioBufferFull``; ``runtime.audio.espeak.UnknownVoice`` → ``BadVoice``; another ValueError
of the TTS engine (text it refuses) → ``BadMessage``; ``TTSError`` / ``EspeakError`` →
``TTSFailed``.
"""

from __future__ import annotations

import asyncio
import itertools

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
    TTSFailed,
    first_line,
)

MAX_OPEN_STREAMS = 8
"""Audio streams (``audio`` ids without ``audio_end``) one connection may hold open: each holds a
resampler and its buffered audio until its ``audio_end`` (or an ``interrupt``)."""


def queue_speech(session, utt_id: str, samples: np.ndarray, done: bool = False) -> None:
    """Queue float32 [n] 48 kHz mono ``samples`` as utterance ``utt_id`` on ``session``
    (``runtime.live.session.Session``), ``done`` with its last chunk. Raises AudioBufferFull
    when the session's speech buffer limit would be passed."""
    from runtime.live.speech import BufferFull

    try:
        session.queue.add(utt_id, samples, done=done)
    except BufferFull as exc:
        raise AudioBufferFull(str(exc)) from exc


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
        self.current: str | None = None
        """The stream the last ``audio`` went to (used by ``audio`` / ``audio_end`` without id)."""

    def new_id(self) -> str:
        """A fresh utterance id: ``u1``, ``u2`` … (with the default prefix)."""
        return f"{self.prefix}{next(self._count)}"

    @property
    def open_streams(self) -> int:
        """Audio streams started and not yet ended."""
        return len(self._streams)

    async def speak(self, session, msg: Speak) -> str:
        """Synthesise ``msg.text`` (in a worker thread), resample it to 48 kHz and queue it as one
        finished utterance. Returns its id. Raises BadVoice, BadMessage (text the engine
        refuses), TTSFailed, AudioBufferFull."""
        from runtime.audio.espeak import EspeakError, UnknownVoice
        from runtime.audio.tts import TTSError

        uid = msg.id if msg.id is not None else self.new_id()
        loop = asyncio.get_running_loop()
        try:
            speech = await loop.run_in_executor(None, self.tts.synthesize, msg.text, msg.voice)
        except UnknownVoice as exc:
            raise BadVoice(first_line(exc)) from exc
        except ValueError as exc:
            raise BadMessage(first_line(exc)) from exc
        except (TTSError, EspeakError) as exc:
            raise TTSFailed(first_line(exc)) from exc
        audio = await loop.run_in_executor(None, resample, speech.audio, speech.sample_rate,
                                           OUTPUT_SAMPLE_RATE)
        queue_speech(session, uid, audio, done=True)
        return uid

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
        if stream is None or stream.rate_in != msg.sample_rate:
            stream = StreamResampler(msg.sample_rate, OUTPUT_SAMPLE_RATE)
            self._streams[uid] = stream
        queue_speech(session, uid, stream.push(msg.samples()))
        return uid

    def audio_end(self, session, msg: AudioEnd) -> str:
        """End stream ``msg.id`` (None: the current one): queue what its resampler still holds
        and mark the utterance done. Returns its id. Raises BadMessage when no stream is named
        or current, AudioBufferFull."""
        uid = msg.id if msg.id is not None else self.current
        if uid is None:
            raise BadMessage("'audio_end' without an open audio stream")
        stream = self._streams.pop(uid, None)
        tail = stream.flush() if stream is not None else np.zeros(0, np.float32)
        queue_speech(session, uid, tail, done=True)
        if self.current == uid:
            self.current = None
        return uid

    def reset(self) -> None:
        """Forget every open stream (an interrupt, or a controller's display reconnected)."""
        self._streams.clear()
        self.current = None
