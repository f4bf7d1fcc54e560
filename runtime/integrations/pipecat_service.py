"""``FacecastVideoService``: facecast as the face of a Pipecat bot, in-process, no cloud (and
``FacecastTTSService``: facecast's offline text-to-speech, espeak-ng, as a Pipecat TTS service).

Put it after the TTS service and before the output transport::

    pipeline = Pipeline([transport.input(), ..., tts, FacecastVideoService(),
                         transport.output()])

with the transport's video out enabled at the avatar's size and frame rate
(``video_out_enabled=True, video_out_is_live=True, video_out_width=512,
video_out_height=512, video_out_framerate=25`` for the default avatar) and its audio out at
48 kHz (``audio_out_sample_rate=48000``: the transport then neither resamples nor re-chunks, each
40 ms frame being exactly one of its 40 ms chunks).

In: ``TTSAudioRawFrame`` at any rate and channel count (``SpeechOutputAudioRawFrame`` too, as one
open segment), ``TTSStartedFrame`` / ``TTSStoppedFrame`` (one speech segment each; they go on
downstream when the segment's first and last samples do, so that the output transport's flush
at ``TTSStoppedFrame`` (it pads a partial audio chunk with silence) falls after the speech, not
in the middle of the stream),
``InterruptionFrame`` (Pipecat 1.14's interruption; its ``UserStartedSpeakingFrame`` only
interrupts through it, when the pipeline allows interruptions, so it passes through untouched).
The TTS audio is swallowed: it leaves again, paced, with the video.

Out: every 1/fps seconds of real time, an ``OutputImageRawFrame`` (RGB, the avatar's full frame
with the disclosure badge and the invisible watermark) followed by a
``SpeechOutputAudioRawFrame`` of exactly the audio that image plays (48 kHz mono, 1920 samples
at 25 fps; silence while idle, when the avatar blinks, breathes and moves a little). The pair comes from one ``runtime.integrations.stream.PairedFrame``
(``facecast serve``'s scheduler and sample clock), so a transport that plays each audio chunk as
it comes shows each image with its own sound. ``SpeechOutputAudioRawFrame`` (not
``TTSAudioRawFrame``) because the stream is continuous, silence included: the output transport
then reports ``BotStartedSpeakingFrame`` / ``BotStoppedSpeakingFrame`` from the audio itself.
All other frames pass through in order.

An ``InterruptionFrame`` empties facecast's queued speech, motion rows and undelivered frames
before it goes on downstream (where the transport drops what it had queued); the next image is
silent (the frame being rendered at that moment is dropped too) and shows the mouth closing:
silent with the mouth closed 1–2 frames after the interruption (``tests/test_pipecat.py``). ``EndFrame`` lets the
queued speech play out first (up to the seconds queued plus ``END_GRACE_S``); ``CancelFrame``
stops at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import (
    FrameDirection,
    FrameProcessor,
    FrameProcessorSetup,
)
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from engines.audio import OUTPUT_SAMPLE_RATE
from runtime.integrations.stream import (
    MAX_QUEUED_FRAMES,
    AvatarEngine,
    AvatarStream,
    BufferFull,
    PairedFrame,
    TooManyQueued,
)
from runtime.live.events import SpeechEnded, SpeechStarted
from runtime.provenance.disclosure import Badge

log = logging.getLogger("facecast.pipecat")

END_GRACE_S = 2.0
"""Seconds beyond the queued speech an ``EndFrame`` waits for it to play out."""


def pcm_mono(frame) -> np.ndarray:
    """The int16 [n] mono samples of a Pipecat audio frame (``audio`` bytes, interleaved
    ``num_channels``; channels averaged). Raises ValueError for a byte count that is not a
    whole number of samples."""
    ch = max(1, int(frame.num_channels))
    data = np.frombuffer(frame.audio, dtype=np.int16)
    if data.size % ch:
        raise ValueError(f"{len(frame.audio)} bytes are not whole {ch}-channel int16 samples")
    if ch == 1:
        return data
    return np.round(data.reshape(-1, ch).mean(axis=1)).astype(np.int16)


class FacecastVideoService(FrameProcessor):
    """The talking avatar of a Pipecat bot (see the module docstring for the frames).

    Args:
        engine: a started ``AvatarEngine`` to share with other services of the process (it is
            not closed here); None: one is started in ``setup`` with ``size``, ``fps`` and
            ``backend``, and closed with the service.
        avatar: the avatar (bundle name or folder).
        size, fps, backend: of the engine started when ``engine`` is None (renderer crop 256 or
            512; frame rate, exact; "auto", "onnxruntime", "cuda", "tensorrt").
        seed: behaviour seed (blinks, idle motion).
        badge: the visible AI-generated disclosure in every frame (True: the default
            ``Badge()``; None: none, logged). watermark: the invisible mark in every frame
            (False: none, logged).
        allow_unconsented: run an avatar whose bundle states no consent (logged); otherwise
            such a bundle fails the pipeline's setup (``avatars.bundle.ConsentMissing``).
        max_buffer_s: speech queued at most, seconds; a TTS that runs further ahead waits.
        max_queued_frames: frames held when the pipeline does not take them as fast as they
            come (oldest dropped beyond).
        **kwargs: ``FrameProcessor``'s (``name`` …).

    Attributes:
        stream: the ``AvatarStream`` while the pipeline runs (its counters: frames_dropped,
            images_repeated; its session), else None.
    """

    def __init__(self, *, engine: AvatarEngine | None = None, avatar: str = "default",
                 size: int = 256, fps: int | str = 25, backend: str = "auto", seed: int = 0,
                 badge: Badge | bool | None = True, watermark: bool = True,
                 allow_unconsented: bool = False,
                 max_buffer_s: float = 60.0, max_queued_frames: int = MAX_QUEUED_FRAMES,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self._engine = engine
        self._owns_engine = engine is None
        self._engine_args = (size, fps, backend)
        self._stream_args = {"seed": seed, "badge": badge, "watermark": watermark,
                             "allow_unconsented": allow_unconsented,
                             "max_buffer_s": max_buffer_s, "max_queued_frames": max_queued_frames}
        self._avatar = avatar
        self.stream: AvatarStream | None = None
        self._play_task: asyncio.Task | None = None
        self._segment: str | None = None
        self._segment_ids = itertools.count(1)
        self._voiced: set[str] = set()  # segments that got audio
        self._starts: dict[str, Frame] = {}  # TTSStartedFrame waiting for its first sample
        self._stops: dict[str, Frame] = {}  # TTSStoppedFrame waiting for its last sample
        self._yielded = asyncio.Event()  # set by each frame the pipeline is given

    # --- lifecycle --------------------------------------------------------------------------
    async def setup(self, setup: FrameProcessorSetup) -> None:
        """Start the engine (unless one was given) and prepare the avatar: the slow part,
        while the pipeline sets up. Raises what ``AvatarEngine.start`` and
        ``AvatarEngine.prepare`` raise (a backend that cannot run, ``ConsentMissing`` …)."""
        await super().setup(setup)
        if self._engine is None:
            size, fps, backend = self._engine_args
            self._engine = await AvatarEngine.start(size, fps, backend)
        args = self._stream_args
        await self._engine.prepare(self._avatar, badge=args["badge"],
                                   watermark=args["watermark"],
                                   allow_unconsented=args["allow_unconsented"])

    async def _start(self) -> None:
        """Open the stream and start sending its frames (on ``StartFrame``)."""
        if self.stream is not None:
            return
        self.stream = await self._engine.open_stream(self._avatar, **self._stream_args)
        self._play_task = self.create_task(self._play(self.stream), name="facecast-frames")

    async def _stop(self) -> None:
        """Stop sending frames, close the stream, and the engine if this service started it.
        Idempotent."""
        if self._play_task is not None:
            await self.cancel_task(self._play_task)
            self._play_task = None
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None
        if self._owns_engine and self._engine is not None:
            await self._engine.aclose()
            self._engine = None

    async def cleanup(self) -> None:
        """Release the stream and the engine (the pipeline's teardown)."""
        await super().cleanup()
        await self._stop()

    async def _play_out(self) -> None:
        """Wait until every queued segment has been sent (``EndFrame``), at most its queued
        seconds plus ``END_GRACE_S``."""
        stream = self.stream
        if stream is None:
            return
        await self._end_segment()
        budget = stream.session.queue.buffered / OUTPUT_SAMPLE_RATE + END_GRACE_S
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        while stream.pending_segments and loop.time() < deadline:
            self._yielded.clear()
            try:
                await asyncio.wait_for(self._yielded.wait(), deadline - loop.time())
            except TimeoutError:
                break
        for held in (self._starts, self._stops):  # what never played: in order, now
            for frame in held.values():
                await self.push_frame(frame)
            held.clear()

    # --- frames in --------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Route one frame (see the module docstring)."""
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._start()
        elif isinstance(frame, EndFrame):
            await self._play_out()
            await self._stop()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._stop()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            self._interrupt()
            await self.push_frame(frame, direction)
        elif (isinstance(frame, (TTSAudioRawFrame, SpeechOutputAudioRawFrame))
              and direction == FrameDirection.DOWNSTREAM):
            if self.stream is not None:  # never passed on unpaced (none comes before Start)
                await self._queue_speech(frame)
        elif isinstance(frame, TTSStartedFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._end_segment()
            self._segment = f"tts{next(self._segment_ids)}"
            self._starts[self._segment] = frame
        elif isinstance(frame, TTSStoppedFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._end_segment(frame)
        else:
            await self.push_frame(frame, direction)

    def _interrupt(self) -> None:
        """Barge-in: facecast drops its queued speech and frames, and the TTS start/stop
        frames held for them; idle from the next frame."""
        self._segment = None
        self._voiced.clear()
        self._starts.clear()
        self._stops.clear()
        if self.stream is not None:
            for ended in self.stream.interrupt():
                log.debug("interrupted %s after %d ms", ended.id, ended.played_ms)

    async def _end_segment(self, stopped: Frame | None = None) -> None:
        """The current segment gets no more audio; ``stopped`` (its ``TTSStoppedFrame``) is
        sent with its last sample, or now (with its held ``TTSStartedFrame``) if it had no
        audio."""
        segment, self._segment = self._segment, None
        if segment is not None and self.stream is not None:
            self.stream.end_segment(segment)
        if segment is not None and segment in self._voiced:
            if stopped is not None:
                self._stops[segment] = stopped
            return
        for frame in (self._starts.pop(segment, None), stopped):
            if frame is not None:
                await self.push_frame(frame)

    async def _queue_speech(self, frame) -> None:
        """Queue a TTS audio frame's samples on the current segment (opened if none), waiting
        for room while the speech buffer is full (the TTS runs ahead of playback)."""
        stream = self.stream
        if self._segment is None:
            self._segment = f"tts{next(self._segment_ids)}"
        samples = pcm_mono(frame)
        while True:
            try:
                stream.push_audio(samples, frame.sample_rate, self._segment)
                self._voiced.add(self._segment)
                return
            except (BufferFull, TooManyQueued):
                self._yielded.clear()
                await self._yielded.wait()

    # --- frames out -------------------------------------------------------------------------
    async def _play(self, stream: AvatarStream) -> None:
        """Send each ``PairedFrame`` downstream as it comes: its image, then its audio, with a
        segment's held ``TTSStartedFrame`` just before the pair carrying its first sample and
        its ``TTSStoppedFrame`` just after the pair carrying its last."""
        width, height = stream.size
        async for paired in stream:
            for event in paired.events:
                if isinstance(event, SpeechStarted) and event.id in self._starts:
                    await self.push_frame(self._starts.pop(event.id))
            await self.push_frame(self.image_frame(paired, width, height))
            await self.push_frame(self.audio_frame(paired))
            for event in paired.events:
                if isinstance(event, SpeechEnded):
                    self._voiced.discard(event.id)
                    if event.id in self._stops:
                        await self.push_frame(self._stops.pop(event.id))
            self._yielded.set()

    @staticmethod
    def image_frame(paired: PairedFrame, width: int, height: int) -> OutputImageRawFrame:
        """``paired``'s image as an ``OutputImageRawFrame`` (RGB bytes, ``size`` (w, h))."""
        return OutputImageRawFrame(image=paired.image.tobytes(), size=(width, height),
                                   format="RGB")

    @staticmethod
    def audio_frame(paired: PairedFrame) -> SpeechOutputAudioRawFrame:
        """``paired``'s audio as a ``SpeechOutputAudioRawFrame`` (int16 mono bytes)."""
        return SpeechOutputAudioRawFrame(audio=paired.audio.tobytes(),
                                         sample_rate=paired.sample_rate, num_channels=1)


class FacecastTTSService(TTSService):
    """facecast's text-to-speech (``runtime.audio.tts``: espeak-ng by default) as a Pipecat
    TTS service: one ``TTSAudioRawFrame`` (int16 mono at the engine's own rate, 22.05 kHz for
    espeak-ng) per sentence, synthesised in an executor thread.

    Args:
        voice: the engine's voice ("en-us"). tts: TTS spec (None: ``$FACECAST_TTS`` or espeak).
    """

    def __init__(self, *, voice: str = "en-us", tts: str | None = None, **kwargs) -> None:
        from runtime.audio.tts import make_tts

        super().__init__(push_start_frame=True, push_stop_frames=True,
                         settings=TTSSettings(model=None, voice=voice, language=None), **kwargs)
        self._tts = make_tts(tts)
        self._voice = voice

    async def run_tts(self, text: str, context_id: str) -> AsyncIterator[Frame]:
        """Synthesise ``text``; yields its ``TTSAudioRawFrame``, or an ``ErrorFrame`` when the
        engine refuses the text or voice (ValueError) or fails (``TTSError``, ``EspeakError``:
        RuntimeErrors)."""
        loop = asyncio.get_running_loop()
        try:
            speech = await loop.run_in_executor(None, self._tts.synthesize, text, self._voice)
        except (ValueError, RuntimeError) as exc:
            yield ErrorFrame(error=f"facecast TTS: {exc}")
            return
        pcm = np.clip(np.round(speech.audio * 32767.0), -32768, 32767).astype(np.int16)
        yield TTSAudioRawFrame(pcm.tobytes(), speech.sample_rate, 1, context_id=context_id)
