"""facecast as the avatar of a LiveKit Agents voice agent (``livekit-agents`` 1.8, extra
``facecast[livekit]``): the ``VideoGenerator`` of LiveKit's avatar protocol, and its two ways in.

LiveKit's avatar protocol (``livekit.agents.voice.avatar``): the agent's speech goes to an
``AudioReceiver`` (``DataStreamAudioReceiver`` on ``lk.audio_stream`` byte streams from another
participant, or ``QueueAudioOutput`` in the agent's own job); ``AvatarRunner`` pushes it into a
``VideoGenerator`` and publishes what the generator yields through ``rtc.AVSynchronizer``,
counting the audio it pushed as the playback position it reports in ``lk.playback_finished``
(``interrupted=True`` after ``lk.clear_buffer``).

* ``FacecastVideoGenerator`` — that ``VideoGenerator`` on ``runtime.integrations.stream``:
  ``push_audio(rtc.AudioFrame | AudioSegmentEnd)`` queues speech (any rate, any channel count),
  ``clear_buffer()`` interrupts (facecast's speech queue, motion rows and frame queue), and
  iterating it yields, once per 1/fps s of real time, an ``rtc.VideoFrame`` (RGB24) followed —
  while speech plays — by the ``rtc.AudioFrame`` of exactly the 48 kHz samples that image plays
  (1920 at 25 fps), then ``AudioSegmentEnd`` after a segment's last frame. While the avatar is
  silent only video frames come (blinks, breathing): the runner counts every audio frame it is
  given as playback, so silence between segments must not be yielded as audio.
* ``InProcessAvatar`` — one-machine setups: facecast inside the agent's job (``QueueAudioOutput``
  + ``AvatarRunner``); the agent participant itself publishes the avatar's audio and video.
* ``FacecastAvatarSession`` — the agent side of the other way: dispatches a ``facecast livekit``
  worker (``runtime.integrations.livekit_worker``) to the room through LiveKit's agent dispatch
  and sends the agent's speech to it over ``DataStreamAudioOutput``; the worker joins as the
  avatar participant, publishing on the agent's behalf (``lk.publish_on_behalf``).

``StreamPort`` lets a job running on its own event loop (LiveKit runs each job in a thread or
process of its own) use an ``AvatarStream`` of an engine on another loop, so one
``AvatarEngine`` — one renderer, one batched tick — serves every job of a worker process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import (
    AudioSegmentEnd,
    AvatarOptions,
    AvatarRunner,
    AvatarSession,
    DataStreamAudioOutput,
    QueueAudioOutput,
    VideoGenerator,
)

from avatars.bundle import NAME_PATTERN
from runtime.integrations.livekit_worker import AGENT_NAME
from runtime.integrations.stream import AvatarEngine, AvatarStream, BufferFull, PairedFrame
from runtime.live.events import SpeechEnded

__all__ = ["AGENT_NAME", "AVATAR_IDENTITY", "AvatarDispatch", "FacecastAvatarSession",
           "FacecastVideoGenerator", "InProcessAvatar", "StreamPort", "avatar_options"]

log = logging.getLogger("facecast.integrations.livekit")

AVATAR_IDENTITY = "facecast-avatar"
"""The avatar participant's identity in the room, unless the dispatch names another."""
BRIDGE_FRAMES = 2
"""Frames in flight between an engine's loop and a job's loop (``StreamPort.frames``); the
stream's own queue (``stream.MAX_QUEUED_FRAMES``) bounds what waits behind them."""
MAX_METADATA_BYTES = 4096
"""Longest dispatch metadata ``AvatarDispatch.from_metadata`` reads."""


# --- a stream from any event loop ----------------------------------------------------------------
async def _run_on(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any,
                  **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` (a coroutine function's result awaited) on ``loop``: directly
    when it is the running loop, else through ``asyncio.run_coroutine_threadsafe``, awaited
    here; ``fn``'s exception is raised here, and cancelling here cancels it there."""
    async def run() -> Any:
        result = fn(*args, **kwargs)
        return await result if asyncio.iscoroutine(result) else result

    if loop is asyncio.get_running_loop():
        return await run()
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))


class StreamPort:
    """An ``AvatarStream`` used from any event loop: calls made on another loop than the
    engine's are run on the engine's (``asyncio.run_coroutine_threadsafe``) and awaited, and
    frames are handed over through a queue of ``BRIDGE_FRAMES``. On the engine's own loop every
    call goes straight to the stream. Made by ``StreamPort.open``.

    Attributes:
        stream: the ``AvatarStream`` (its methods only on ``loop``). loop: the engine's loop.
        fps (``Fraction``), sample_rate (Hz), size ((width, height) pixels): the stream's.
    """

    def __init__(self, stream: AvatarStream, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.loop = loop
        self.fps = stream.fps
        self.sample_rate = stream.sample_rate
        self.size = stream.size

    @classmethod
    async def open(cls, engine: AvatarEngine, loop: asyncio.AbstractEventLoop | None = None,
                   **options: Any) -> StreamPort:
        """``engine.open_stream(**options)`` on ``loop`` (the engine's; None: this one).
        Raises what ``open_stream`` raises."""
        loop = loop or asyncio.get_running_loop()
        return cls(await _run_on(loop, engine.open_stream, **options), loop)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the engine's loop (``_run_on``)."""
        return await _run_on(self.loop, fn, *args)

    async def push_audio(self, samples: np.ndarray, sample_rate: int, segment_id: str) -> None:
        """``AvatarStream.push_audio`` (mono int16 or float32 [n] at ``sample_rate`` Hz).
        Raises as it does (``BufferFull`` when the speech buffer has no room)."""
        await self._call(self.stream.push_audio, samples, sample_rate, segment_id)

    async def end_segment(self, segment_id: str) -> None:
        """``AvatarStream.end_segment``."""
        await self._call(self.stream.end_segment, segment_id)

    async def interrupt(self) -> tuple[list[SpeechEnded], int]:
        """``AvatarStream.interrupt``: (its ``SpeechEnded`` list, the first frame index that
        can follow it: frames below it were produced before the interruption)."""
        def cut() -> tuple[list[SpeechEnded], int]:
            ended = self.stream.interrupt()
            return ended, self.stream.session.frame

        return await self._call(cut)

    async def played_seconds(self) -> float:
        """``AvatarStream.played_seconds``: seconds of the current segment yielded."""
        return await self._call(self.stream.played_seconds)

    async def frames(self) -> AsyncIterator[PairedFrame]:
        """The stream's ``PairedFrame`` s, in order, in real time; ends when it closes."""
        if self.loop is asyncio.get_running_loop():
            async for frame in self.stream.frames():
                yield frame
            return
        here = asyncio.get_running_loop()
        handover: asyncio.Queue[PairedFrame | None] = asyncio.Queue(BRIDGE_FRAMES)
        forward = asyncio.run_coroutine_threadsafe(self._forward(handover, here), self.loop)
        try:
            while (frame := await handover.get()) is not None:
                yield frame
        finally:
            forward.cancel()

    async def _forward(self, handover: asyncio.Queue, there: asyncio.AbstractEventLoop) -> None:
        """On the engine's loop: put each frame into ``handover`` (a queue of loop ``there``),
        waiting for room; None at the end. Ends quietly when ``there`` is closed."""
        def put(item: PairedFrame | None) -> asyncio.Future:
            return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(handover.put(item),
                                                                        there))
        try:
            async for frame in self.stream.frames():
                await put(frame)
            await put(None)
        except RuntimeError:  # the job's loop is closed: nobody is reading any more
            log.debug("stream %s: consumer loop closed", self.stream.id)

    async def aclose(self) -> None:
        """Close the stream (``AvatarStream.aclose``); idempotent."""
        await self._call(self.stream.aclose)


def avatar_options(port: StreamPort) -> AvatarOptions:
    """The ``AvatarOptions`` for an ``AvatarRunner`` of ``port``'s stream: its image size,
    frame rate (float fps), 48 kHz mono."""
    width, height = port.size
    return AvatarOptions(video_width=width, video_height=height, video_fps=float(port.fps),
                         audio_sample_rate=port.sample_rate, audio_channels=1)


# --- the generator -------------------------------------------------------------------------------
def _mono(frame: rtc.AudioFrame) -> np.ndarray:
    """The samples of an ``rtc.AudioFrame`` as mono: int16 [n] as they are for one channel,
    else float32 [n] in [-1, 1], the channels' mean. Raises ValueError for no channels."""
    channels = frame.num_channels
    if channels < 1:
        raise ValueError(f"an audio frame needs at least one channel, got {channels}")
    pcm = np.frombuffer(frame.data, dtype=np.int16, count=frame.samples_per_channel * channels)
    if channels == 1:
        return pcm
    return pcm.reshape(-1, channels).astype(np.float32).mean(axis=1) / np.float32(32767.0)


class FacecastVideoGenerator(VideoGenerator):
    """LiveKit's ``VideoGenerator`` on a facecast stream (module docstring).

    Args:
        port: the ``StreamPort`` of the stream (``StreamPort.open``); the generator speaks for
            it alone and closes it in ``aclose``.

    Attributes:
        options: the ``AvatarOptions`` for the ``AvatarRunner`` (``avatar_options``).
        segments_ended: segments whose ``AudioSegmentEnd`` was yielded.
        interruptions: ``clear_buffer`` calls that cut speech, as the ``SpeechEnded`` facecast
            reported for them (``played_ms``: what of each segment had been yielded).

    One consumer (the runner) iterates it; ``push_audio`` and ``clear_buffer`` are called on
    the same event loop.
    """

    def __init__(self, port: StreamPort) -> None:
        self.port = port
        self.options = avatar_options(port)
        self._segment: str | None = None
        self._segment_ids = 0
        self._cut = 0  # frames below this index were produced before the last clear_buffer
        self._clearing = 0  # clear_buffer calls in flight
        self._frame_taken = asyncio.Event()
        self.segments_ended = 0
        self.interruptions: list[SpeechEnded] = []
        self.closed = False

    # --- audio in ---------------------------------------------------------------------------
    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        """Queue one frame of the agent's speech (an ``rtc.AudioFrame``: int16 interleaved, any
        rate and channel count) in the current segment, opening one if none is open; or end the
        segment (``AudioSegmentEnd``; nothing happens when none is open). While facecast's
        speech buffer is full it waits for frames to be taken (awaited back-pressure, never a
        dropped frame). Raises ValueError for a frame with a bad rate or no channels,
        RuntimeError after ``aclose``."""
        if self.closed:
            raise RuntimeError("the generator is closed")
        if isinstance(frame, AudioSegmentEnd):
            if self._segment is not None:
                segment, self._segment = self._segment, None
                await self.port.end_segment(segment)
            return
        if not isinstance(frame, rtc.AudioFrame):
            raise TypeError(f"push_audio takes rtc.AudioFrame or AudioSegmentEnd, got "
                            f"{type(frame).__name__}")
        samples = _mono(frame)
        if self._segment is None:
            self._segment_ids += 1
            self._segment = f"lk{self._segment_ids}"
        segment = self._segment
        while True:
            try:
                await self.port.push_audio(samples, frame.sample_rate, segment)
                return
            except BufferFull:
                self._frame_taken.clear()
                await self._frame_taken.wait()
                if self.closed or segment != self._segment:
                    return  # cleared or closed while waiting: the frame was cut with it

    async def clear_buffer(self) -> None:
        """Interrupt: drop the queued speech, the motion rows computed for it and the frames
        not yet yielded; no audio of the cut segments is yielded afterwards and no
        ``AudioSegmentEnd`` for them (the runner reports them itself, ``interrupted=True``).
        The avatar is idle from the next frame on."""
        self._segment = None
        self._clearing += 1
        self._frame_taken.set()  # a push waiting for room gives up: its segment is cut
        try:
            ended, cut = await self.port.interrupt()
        finally:
            self._clearing -= 1
        self._cut = max(self._cut, cut)
        self.interruptions.extend(ended)
        if ended:
            log.info("interrupted: %s", ", ".join(f"{e.id} at {e.played_ms} ms" for e in ended))

    # --- frames out -------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        """Per stream frame: its ``rtc.VideoFrame`` (RGB24, ``options`` size); if it plays
        speech, its ``rtc.AudioFrame`` (int16 mono, 48 kHz, exactly that frame's samples); an
        ``AudioSegmentEnd`` for each segment whose last sample it plays. Ends when the stream
        closes."""
        return self._frames()

    def _stale(self, frame: PairedFrame) -> bool:
        """True for a frame produced before a ``clear_buffer`` (or while one is in flight)."""
        return frame.index < self._cut or self._clearing > 0

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        width, height = self.options.video_width, self.options.video_height
        async for frame in self.port.frames():
            self._frame_taken.set()
            if self._stale(frame):
                continue
            yield rtc.VideoFrame(width, height, rtc.VideoBufferType.RGB24, frame.image.tobytes())
            if frame.speaking and not self._stale(frame):
                yield rtc.AudioFrame(frame.audio.tobytes(), frame.sample_rate, 1,
                                     len(frame.audio))
            for event in frame.events:
                if isinstance(event, SpeechEnded) and not event.interrupted \
                        and not self._stale(frame):
                    self.segments_ended += 1
                    yield AudioSegmentEnd()

    async def aclose(self) -> None:
        """Close the stream; a running iteration ends, a waiting ``push_audio`` returns."""
        self.closed = True
        self._frame_taken.set()
        await self.port.aclose()


# --- in the agent's own job ----------------------------------------------------------------------
class InProcessAvatar:
    """facecast inside the agent's own job: the agent session's audio output becomes a
    ``QueueAudioOutput`` that feeds a ``FacecastVideoGenerator``, and an ``AvatarRunner``
    publishes the avatar's audio and video as the agent participant. For one machine; past it,
    ``FacecastAvatarSession`` and ``facecast livekit`` workers.

    ``await InProcessAvatar.start(session, ctx.room)`` before ``session.start(...)`` (the audio
    output must be set first, so that the session does not publish its own audio track);
    ``aclose()`` at the end (it is also added to the job's shutdown callbacks).

    Attributes:
        generator, runner, audio_output: the parts. engine: the ``AvatarEngine`` used.
    """

    def __init__(self, engine: AvatarEngine, owns_engine: bool, generator: FacecastVideoGenerator,
                 audio_output: QueueAudioOutput, runner: AvatarRunner) -> None:
        self.engine = engine
        self._owns_engine = owns_engine
        self.generator = generator
        self.audio_output = audio_output
        self.runner = runner
        self.closed = False

    @classmethod
    async def start(cls, agent_session: Any, room: rtc.Room, *,
                    engine: AvatarEngine | None = None,
                    engine_loop: asyncio.AbstractEventLoop | None = None,
                    avatar: str = "default", size: int = 256, fps: int | str = 25,
                    backend: str = "auto", **stream_options: Any) -> InProcessAvatar:
        """Start facecast for ``agent_session`` (a ``livekit.agents.AgentSession`` not yet
        started) in ``room`` (the job's room).

        Args:
            engine: an ``AvatarEngine`` to share (its loop: ``engine_loop``, None: this one);
                None: one is started here (``size``, ``fps``, ``backend``) and closed by
                ``aclose``.
            avatar: the avatar (bundle name or folder). stream_options: more
                ``AvatarEngine.open_stream`` options (``badge``, ``allow_unconsented``, ``seed``).

        Raises what ``AvatarEngine.start`` and ``open_stream`` raise (ValueError, BundleError,
        ``ConsentMissing``).
        """
        owns = engine is None
        if engine is None:
            engine = await AvatarEngine.start(size, fps, backend)
        try:
            port = await StreamPort.open(engine, engine_loop, avatar=avatar, **stream_options)
            generator = FacecastVideoGenerator(port)
            audio_output = QueueAudioOutput()
            agent_session.output.audio = audio_output
            runner = AvatarRunner(room, audio_recv=audio_output, video_gen=generator,
                                  options=generator.options)
            await runner.start()
        except BaseException:
            if owns:
                await engine.aclose()
            raise
        avatar_ = cls(engine, owns, generator, audio_output, runner)
        _add_shutdown_callback(avatar_.aclose)
        return avatar_

    async def aclose(self) -> None:
        """Stop the runner and the stream (and the engine if it was started here)."""
        if self.closed:
            return
        self.closed = True
        await self.runner.aclose()
        await self.generator.aclose()
        if self._owns_engine:
            await self.engine.aclose()


def _add_shutdown_callback(callback: Callable[[], Any]) -> None:
    """Run ``callback`` when the current LiveKit job shuts down (nothing outside a job)."""
    from livekit.agents import get_job_context

    ctx = get_job_context(required=False)
    if ctx is not None:
        ctx.add_shutdown_callback(callback)


# --- the agent side of a facecast worker ---------------------------------------------------------
@dataclass(frozen=True)
class AvatarDispatch:
    """What an agent asks of a ``facecast livekit`` worker, sent as the dispatch's metadata
    (JSON). ``agent_identity``: the agent participant whose speech the avatar plays and on
    whose behalf it publishes (required); ``avatar``: the avatar's name (a bundle installed
    where the worker runs; never a path; None: the worker's ``--avatar``); ``avatar_identity``: the avatar participant's identity; ``seed``: behaviour seed."""

    agent_identity: str
    avatar: str | None = None
    avatar_identity: str = AVATAR_IDENTITY
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("agent_identity", "avatar_identity"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"dispatch metadata: {name} must be a non-empty string, got "
                                 f"{value!r}")
        if self.avatar is not None and (not isinstance(self.avatar, str)
                                        or not NAME_PATTERN.fullmatch(self.avatar)):
            # a name the worker has, never a path
            raise ValueError(f"dispatch metadata: avatar must be an avatar name (1-64 letters, "
                             f"digits, '_' or '-'), got {self.avatar!r}")
        if self.agent_identity == self.avatar_identity:
            raise ValueError("dispatch metadata: avatar_identity must differ from "
                             "agent_identity")
        if type(self.seed) is not int:  # bool is not a seed
            raise ValueError(f"dispatch metadata: seed must be an integer, got {self.seed!r}")

    def to_metadata(self) -> str:
        """This request as the dispatch's metadata (one JSON object)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_metadata(cls, metadata: str) -> Self:
        """Parse ``to_metadata``'s JSON. Raises ValueError (one line) for text that is not
        such an object, an unknown or missing field, or a bad value."""
        if len(metadata.encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"dispatch metadata is over {MAX_METADATA_BYTES} bytes")
        try:
            data = json.loads(metadata or "null")
        except ValueError as exc:
            raise ValueError(f"dispatch metadata is not JSON: {exc}") from None
        if type(data) is not dict:
            raise ValueError('dispatch metadata must be a JSON object like {"agent_identity": '
                             '"agent-…"}, got ' + (repr(metadata[:60]) if metadata else "none"))
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"dispatch metadata: unknown field(s) {sorted(unknown)}")
        if "agent_identity" not in data:
            raise ValueError("dispatch metadata: agent_identity is missing")
        return cls(**data)


class FacecastAvatarSession(AvatarSession):
    """The agent side of a ``facecast livekit`` worker: ``start`` dispatches the worker
    (``agent_name``) to the room and sends the agent's speech to the avatar participant it
    becomes (``DataStreamAudioOutput`` on ``lk.audio_stream``, waiting for its video track and
    for ``lk.playback_started``)::

        avatar = FacecastAvatarSession()
        await avatar.start(session, room=ctx.room)
        await session.start(agent=..., room=ctx.room)

    Args:
        avatar: the avatar the worker shows (the name of a bundle it has; None: the one it was
            started with, ``facecast livekit --avatar``).
        agent_name: the worker's registered agent name (``facecast livekit --agent-name``).
        avatar_identity: the avatar participant's identity in the room.
        seed: behaviour seed.
        api: a ``livekit.api.LiveKitAPI``; None: the job's (``JobContext.api``).
    """

    def __init__(self, *, avatar: str | None = None, agent_name: str = AGENT_NAME,
                 avatar_identity: str = AVATAR_IDENTITY, seed: int = 0, api: Any = None) -> None:
        super().__init__()
        self._avatar = avatar
        self._agent_name = agent_name
        self._avatar_identity = avatar_identity
        self._seed = seed
        self._api = api
        self.dispatch_id: str | None = None

    @property
    def avatar_identity(self) -> str:
        return self._avatar_identity

    @property
    def provider(self) -> str:
        return "facecast"

    async def start(self, agent_session: Any, room: rtc.Room) -> None:
        """Dispatch the worker to ``room`` (connected) and route ``agent_session``'s audio to
        it. Raises RuntimeError outside a job without ``api``; what the dispatch API raises."""
        from livekit import api as lkapi
        from livekit.agents import get_job_context

        request = AvatarDispatch(agent_identity=room.local_participant.identity,
                                 avatar=self._avatar, avatar_identity=self._avatar_identity,
                                 seed=self._seed)
        client = self._api
        if client is None:
            ctx = get_job_context(required=False)
            if ctx is None:
                raise RuntimeError("FacecastAvatarSession.start outside a LiveKit job needs "
                                   "api=livekit.api.LiveKitAPI(...)")
            client = ctx.api
        await super().start(agent_session, room)
        dispatch = await client.agent_dispatch.create_dispatch(lkapi.CreateAgentDispatchRequest(
            agent_name=self._agent_name, room=room.name, metadata=request.to_metadata()))
        self.dispatch_id = dispatch.id
        agent_session.output.replace_audio_tail(DataStreamAudioOutput(
            room, destination_identity=self._avatar_identity,
            wait_remote_track=rtc.TrackKind.KIND_VIDEO, wait_playback_start=True))
