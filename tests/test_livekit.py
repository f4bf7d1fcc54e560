"""facecast as a LiveKit Agents avatar (``runtime.integrations.livekit_avatar`` and
``livekit_worker``), against the real SDK (``livekit`` 1.1.21, ``livekit-agents`` 1.8.9) and real
speech, with no LiveKit server: none can be installed here, and none is faked.

What runs for real: facecast's renderer, motion model and scheduler; the SDK's ``AvatarRunner``
(its audio reading, frame forwarding, playback-position counting, ``clear_buffer`` handling and
``rtc.AVSynchronizer``) and its ``rtc.AudioSource`` / ``rtc.VideoSource`` / local tracks, read
back with ``rtc.AudioStream`` / ``rtc.VideoStream``; the SDK's ``QueueAudioOutput`` as the
audio receiver (the in-process mode) and its ``PlaybackFinishedEvent``; the SDK's
``AudioByteStream`` framing of ``lk.audio_stream`` data as ``DataStreamAudioReceiver`` does it;
its ``JobRequest``; its ``AgentServer`` with facecast's load function, unregistered (its own
``/worker`` endpoint reports the load). What does not: publishing the two tracks into a room
(``LocalRunner`` creates them exactly as ``AvatarRunner._publish_track`` does but cannot
publish them without a server), and the RPC / byte-stream transport between participants.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from dataclasses import asdict

import numpy as np
import pytest
from conftest import pcm16
from conftest import prompt as asterisk_prompt

pytest.importorskip("livekit.agents", reason="the livekit extra is not installed")

from livekit import rtc
from livekit.agents import JobRequest
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.utils.audio import AudioByteStream
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarRunner, QueueAudioOutput
from livekit.agents.voice.avatar._datastream_io import DataStreamAudioOutput
from livekit.agents.voice.io import PlaybackFinishedEvent
from livekit.protocol import agent as lk_agent
from livekit.protocol import models as lk_models

from engines.audio import OUTPUT_SAMPLE_RATE
from runtime.audio.resample import resample
from runtime.bench.harness import darkness, mouth_box
from runtime.integrations.livekit_avatar import (
    AvatarDispatch,
    FacecastVideoGenerator,
    StreamPort,
)
from runtime.integrations.livekit_worker import (
    SessionLoad,
    WorkerConfig,
    accept_request,
    livekit_credentials,
    serve_worker,
    session_capacity,
)
from runtime.integrations.stream import AvatarEngine

FPS = 25
FRAME = OUTPUT_SAMPLE_RATE // FPS  # 1920 samples of 48 kHz audio per video frame
FPS_TOLERANCE = 2.5
"""Frame rates measured on the wall clock are printed; asserted only within ±10 % (a broken
clock, not this shared machine's load: ``DESIGN.md`` asks for no precise timing in tests)."""


def prompt(name: str, rate: int) -> np.ndarray:
    """An Asterisk prompt (16 kHz G.722) as int16 [n] at ``rate`` Hz; skips without them."""
    x, r = asterisk_prompt(name)
    return pcm16(resample(x, r, rate) if rate != r else x)


def audio_frames(pcm: np.ndarray, rate: int, ms: int = 20) -> list[rtc.AudioFrame]:
    """int16 mono ``pcm`` as ``rtc.AudioFrame`` s of ``ms`` milliseconds (the last shorter), as a
    TTS streams them."""
    n = rate * ms // 1000
    return [rtc.AudioFrame(pcm[i:i + n].tobytes(), rate, 1, len(pcm[i:i + n]))
            for i in range(0, len(pcm), n)]


def frame_offsets(out: np.ndarray, expected: np.ndarray, skips: int) -> list[int]:
    """For each whole frame (``FRAME`` samples) of int16 ``out``, the frame of float32
    ``expected`` (48 kHz, from its start) it is (relative error under 5 %, or both near
    silent), searched forward with at most ``skips`` frames skipped in all: a frame the stream
    dropped because its consumer stalled (``AvatarStream.frames_dropped``) is skipped whole.
    Raises AssertionError for a frame that is none of them."""
    pad = -len(expected) % FRAME
    ref = np.concatenate([expected, np.zeros(pad, np.float32)]).reshape(-1, FRAME)
    got = (out[:len(out) // FRAME * FRAME].astype(np.float32) / 32767.0).reshape(-1, FRAME)
    found, k = [], 0
    for i, f in enumerate(got):
        budget = skips - (k - len(found))  # skips left: frames of ref passed over so far
        for j in range(k, min(len(ref), k + budget + 1)):
            energy = float(np.sum(ref[j] ** 2))
            if (energy < 1e-4 and float(np.sum(f ** 2)) < 1e-3) \
                    or float(np.sum((f - ref[j]) ** 2)) < 0.05 * energy:
                found.append(j)
                k = j + 1
                break
        else:
            raise AssertionError(f"yielded audio frame {i} is not the speech's frame {k}")
    return found


class LocalRunner(AvatarRunner):
    """The SDK's ``AvatarRunner`` unchanged but for ``_publish_track``: it creates the two
    local tracks as the SDK's does ("avatar_audio" / "avatar_video" on the runner's own
    sources) and does not publish them, as there is no server. ``tracks``: (audio, video),
    ``published`` set once they exist."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tracks: tuple[rtc.LocalAudioTrack, rtc.LocalVideoTrack] | None = None
        self.published = asyncio.Event()

    async def _publish_track(self) -> None:
        if self.tracks is None:
            self.tracks = (
                rtc.LocalAudioTrack.create_audio_track("avatar_audio", self._audio_source),
                rtc.LocalVideoTrack.create_video_track("avatar_video", self._video_source))
            self.published.set()


class Recorded(FacecastVideoGenerator):
    """The generator, keeping a log of what it yields: (perf_counter s, "video" | "audio" |
    "end", int16 samples for audio). ``audio_seen`` is set after ``wake_after`` audio frames."""

    def __init__(self, port: StreamPort, wake_after: int = 0) -> None:
        super().__init__(port)
        self.log: list[tuple[float, str, np.ndarray | None]] = []
        self.wake_after = wake_after
        self.audio_seen = asyncio.Event()

    def __aiter__(self):
        return self._record()

    async def _record(self):
        async for item in self._frames():
            if isinstance(item, rtc.AudioFrame):
                samples = np.frombuffer(item.data, np.int16).copy()
                self.log.append((time.perf_counter(), "audio", samples))
                if self.wake_after and sum(k == "audio" for _, k, _ in self.log) \
                        >= self.wake_after:
                    self.audio_seen.set()
            else:
                kind = "end" if isinstance(item, AudioSegmentEnd) else "video"
                self.log.append((time.perf_counter(), kind, None))
            yield item

    def kinds(self, since: float = 0.0) -> list[str]:
        return [k for t, k, _ in self.log if t >= since]

    def audio(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        parts = [x for t, k, x in self.log if k == "audio" and since <= t < until]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)


class Tracks:
    """Reads the runner's two local tracks with ``rtc.VideoStream`` / ``rtc.AudioStream``, as a
    subscriber's SDK would: per video frame (arrival s, mouth-box darkness), and the audio as
    (arrival s of each 10 ms frame, float32 samples at 48 kHz)."""

    def __init__(self, runner: LocalRunner, box: tuple[int, int, int, int]) -> None:
        self.runner, self.box = runner, box
        self.video: list[tuple[float, float]] = []
        self.audio: list[tuple[float, np.ndarray]] = []
        self._tasks: list[asyncio.Task] = []
        self._streams: list = []

    async def start(self) -> None:
        await self.runner.published.wait()  # the runner creates them with its first frame
        audio_track, video_track = self.runner.tracks
        video = rtc.VideoStream(video_track, format=rtc.VideoBufferType.RGBA)
        audio = rtc.AudioStream(audio_track, sample_rate=OUTPUT_SAMPLE_RATE, num_channels=1)
        self._streams = [video, audio]
        self._tasks = [asyncio.create_task(self._read_video(video)),
                       asyncio.create_task(self._read_audio(audio))]

    async def _read_video(self, stream: rtc.VideoStream) -> None:
        x0, y0, x1, y1 = self.box
        async for ev in stream:
            f = ev.frame
            rgba = np.frombuffer(f.data, np.uint8).reshape(f.height, f.width, 4)
            self.video.append((time.perf_counter(), darkness(rgba[y0:y1, x0:x1, :3])))

    async def _read_audio(self, stream: rtc.AudioStream) -> None:
        async for ev in stream:
            x = np.frombuffer(ev.frame.data, np.int16).astype(np.float32) / 32767.0
            self.audio.append((time.perf_counter(), x))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for stream in self._streams:
            await stream.aclose()

    def loud_until(self, since: float, until: float, level: float = 0.01) -> float:
        """Arrival time of the last 10 ms audio frame in [since, until) whose RMS is over
        ``level``; ``since`` when none is."""
        times = [t for t, x in self.audio
                 if since <= t < until and len(x) and np.sqrt(np.mean(x ** 2)) > level]
        return max(times, default=since)

    def mouth_idle_after(self, since: float, level: float, hold: float = 0.4) -> float:
        """Seconds after ``since`` until the mouth-box darkness is at most ``level`` in every
        video frame for ``hold`` seconds; inf when it never is."""
        frames = [(t, d) for t, d in self.video if t >= since]
        for i, (t, _) in enumerate(frames):
            window = [d for u, d in frames[i:] if u < t + hold]
            if frames[-1][0] >= t + hold and max(window) <= level:
                return t - since
        return float("inf")

    def fps(self, t0: float, t1: float) -> float:
        n = sum(t0 <= t < t1 for t, _ in self.video)
        return n / (t1 - t0)


async def in_process_avatar(engine: AvatarEngine, wake_after: int = 0):
    """The in-process chain on ``engine``: QueueAudioOutput → Recorded generator → LocalRunner
    (started), and a ``Tracks`` reader of its tracks (started)."""
    port = await StreamPort.open(engine)
    gen = Recorded(port, wake_after)
    audio_out = QueueAudioOutput()
    runner = LocalRunner(rtc.Room(), audio_recv=audio_out, video_gen=gen, options=gen.options)
    await runner.start()
    tracks = Tracks(runner, mouth_box("default"))
    await asyncio.wait_for(tracks.start(), 10)
    return audio_out, gen, runner, tracks


async def speak(audio_out: QueueAudioOutput, frames: list[rtc.AudioFrame]) -> None:
    """Capture one segment into the agent's audio output and flush it, as a TTS reply is."""
    for frame in frames:
        await audio_out.capture_frame(frame)
    audio_out.flush()


# --- pacing, pairing, segment ends -----------------------------------------------------------
@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_speech_at_any_rate_comes_out_paired_paced_and_ended(rate: int) -> None:
    pcm = prompt("agent-pass", rate)  # "Please enter your password followed by the pound key"
    expected = resample(pcm.astype(np.float32) / 32767.0, rate, OUTPUT_SAMPLE_RATE)

    async def main():
        async with await AvatarEngine.start(fps=FPS) as engine:
            audio_out, gen, runner, tracks = await in_process_avatar(engine)
            await asyncio.sleep(1.0)  # idle first
            t_speak = time.perf_counter()
            dropped = gen.port.stream.frames_dropped
            await speak(audio_out, audio_frames(pcm, rate))
            finished = await asyncio.wait_for(audio_out.wait_for_playout(), 30)
            t_done = time.perf_counter()
            dropped = gen.port.stream.frames_dropped - dropped
            await asyncio.sleep(0.6)  # idle after
            await tracks.stop()
            await runner.aclose()
            await gen.aclose()
            return gen, tracks, finished, t_speak, t_done, dropped

    gen, tracks, finished, t_speak, t_done, dropped = asyncio.run(main())
    kinds = gen.kinds()
    # idle before and after: video frames only, no audio counted as playback
    first_audio, last_audio = kinds.index("audio"), len(kinds) - 1 - kinds[::-1].index("audio")
    assert kinds[:first_audio].count("video") >= 20 and "end" not in kinds[:first_audio]
    assert kinds[last_audio + 1] == "end" and kinds.count("end") == 1
    assert set(kinds[last_audio + 2:]) == {"video"} and kinds[last_audio + 2:].count("video") >= 10
    # pairing: every audio frame right after its video frame, exactly one frame's samples
    for i, k in enumerate(kinds):
        if k == "audio":
            assert kinds[i - 1] == "video"
    assert all(len(x) == FRAME for _, k, x in gen.log if k == "audio")
    # the audio yielded is the speech (resampled to 48 kHz) frame by frame, from its first
    # frame to its last (padded), less whole frames dropped if this machine stalled the loop
    out = gen.audio()
    n_frames = -(-len(expected) // FRAME)
    found = frame_offsets(out, expected, dropped)
    assert found[0] == 0 and found[-1] == n_frames - 1
    skipped = n_frames - len(found)
    assert skipped <= dropped
    # the runner's playback position = the audio it was given, within one frame of the speech
    assert not finished.interrupted
    assert finished.playback_position == pytest.approx(len(out) / OUTPUT_SAMPLE_RATE)
    heard = finished.playback_position + skipped / FPS
    assert abs(heard - len(expected) / OUTPUT_SAMPLE_RATE) < 1 / FPS
    # paced: 25 fps at the video track, over the idle and the speech
    assert abs(tracks.fps(t_speak - 0.8, t_done) - FPS) <= FPS_TOLERANCE
    assert abs(gen.options.video_fps - FPS) < 1e-9 and gen.options.audio_sample_rate == 48000
    # the mouth opens with the speech and not in silence (track frames, mouth-box darkness)
    idle = [d for t, d in tracks.video if t < t_speak]
    talk = [d for t, d in tracks.video if t_speak + 0.3 < t < t_done - 0.2]
    assert np.percentile(talk, 90) > np.percentile(idle, 90) + 3
    print(f"\n{rate} Hz: {len(expected) / 48000:.3f} s of speech, position reported "
          f"{finished.playback_position:.3f} s, video track "
          f"{tracks.fps(t_speak - 0.8, t_done):.2f} fps, {dropped} frame(s) dropped")


# --- interruption ------------------------------------------------------------------------------
def test_clear_buffer_mid_segment_reports_the_position_of_the_audio_yielded() -> None:
    rate = 24000
    long = np.concatenate([prompt("agent-pass", rate), prompt("vm-options", rate)])
    short = prompt("hello-world", rate)
    cut_after = 30  # audio frames yielded (1.2 s) before the interruption

    async def main():
        async with await AvatarEngine.start(fps=FPS) as engine:
            audio_out, gen, runner, tracks = await in_process_avatar(engine, cut_after)
            await asyncio.sleep(0.8)
            t_speak = time.perf_counter()
            dropped = gen.port.stream.frames_dropped
            await speak(audio_out, audio_frames(long, rate))
            await asyncio.wait_for(gen.audio_seen.wait(), 30)
            dropped = gen.port.stream.frames_dropped - dropped
            t_clear = time.perf_counter()
            audio_out.clear_buffer()  # what the agent does on barge-in
            cut = await asyncio.wait_for(audio_out.wait_for_playout(), 5)
            await asyncio.sleep(1.0)
            t_next = time.perf_counter()
            await speak(audio_out, audio_frames(short, rate))
            after = await asyncio.wait_for(audio_out.wait_for_playout(), 30)
            await asyncio.sleep(0.3)
            await tracks.stop()
            await runner.aclose()
            await gen.aclose()
            return gen, tracks, cut, after, t_speak, t_clear, t_next, dropped

    gen, tracks, cut, after, t_speak, t_clear, t_next, dropped = asyncio.run(main())
    yielded = gen.audio(until=t_clear)  # speech the runner was given before the clear
    yielded_s = len(yielded) / OUTPUT_SAMPLE_RATE
    (ended,) = gen.interruptions
    assert cut.interrupted and not after.interrupted
    # the position reported = the audio yielded, and facecast's own count agrees within a frame
    # (a frame the runner was still pushing into its AudioSource when the clear came is counted
    # into the next segment by the SDK's runner: hence one frame's tolerance both ways)
    assert abs(cut.playback_position - yielded_s) <= 1 / FPS + 1e-6
    assert abs(ended.played_ms / 1000 - yielded_s) <= 1 / FPS
    assert ended.duration_ms / 1000 == pytest.approx(len(long) / rate, abs=0.01)
    # what was yielded is the start of the speech, and nothing of it comes after the clear
    expected = resample(long.astype(np.float32) / 32767.0, rate, OUTPUT_SAMPLE_RATE)
    found = frame_offsets(yielded, expected, dropped)
    assert found[0] == 0 and len(found) >= cut_after
    kinds = gen.kinds(since=t_clear)
    between = kinds[:kinds.index("audio")]  # up to the next segment's first audio
    assert "end" not in between and between.count("video") >= 20
    # the video went on at 25 fps through the interruption
    assert abs(tracks.fps(t_clear - 0.4, t_clear + 0.8) - FPS) <= FPS_TOLERANCE
    # the voice stops at the track within the runner's audio queue (100 ms) plus a frame
    heard_after_ms = (tracks.loud_until(t_clear, t_next) - t_clear) * 1000
    assert heard_after_ms < 200
    # and the mouth is back at rest (as dark as when idle) soon after, on the video track
    idle = np.percentile([d for t, d in tracks.video if t < t_speak], 95)
    idle_after_ms = tracks.mouth_idle_after(t_clear, idle + 1.0) * 1000
    assert idle_after_ms < 400
    # the next segment starts from 0 and is reported whole
    next_audio = gen.audio(since=t_next)
    assert abs(after.playback_position - len(next_audio) / OUTPUT_SAMPLE_RATE) <= 1 / FPS + 1e-6
    assert abs(after.playback_position - len(short) / rate) < 2 / FPS
    print(f"\ninterrupted after {yielded_s:.3f} s yielded: position reported "
          f"{cut.playback_position:.3f} s, facecast played_ms {ended.played_ms}, voice heard "
          f"{heard_after_ms:.0f} ms and mouth at rest {idle_after_ms:.0f} ms after "
          f"clear_buffer; next segment: position "
          f"{after.playback_position:.3f} s, yielded {len(next_audio) / 48000:.3f} s, speech "
          f"{len(short) / rate:.3f} s")


def test_in_process_avatar_takes_over_the_agent_sessions_audio_output() -> None:
    """``InProcessAvatar.start`` on a real ``AgentSession`` (no models, not started) and an
    unconnected room: the session's audio output becomes the runner's ``QueueAudioOutput``, one
    stream is open on the shared engine, and ``aclose`` closes it and leaves the engine."""
    from livekit.agents import AgentSession

    from runtime.integrations.livekit_avatar import InProcessAvatar

    async def main():
        async with await AvatarEngine.start(fps=FPS) as engine:
            session = AgentSession()
            avatar = await InProcessAvatar.start(session, rtc.Room(), engine=engine)
            wired = (session.output.audio is avatar.audio_output, engine.sessions,
                     avatar.generator.options)
            await avatar.aclose()
            return wired, engine.sessions, engine.closed

    (same, open_, options), after, closed = asyncio.run(main())
    assert same and open_ == 1 and after == 0 and not closed
    assert (options.video_width, options.video_height, options.audio_sample_rate) \
        == (512, 512, 48000)


# --- lk.audio_stream framing and lk.playback_finished payload ---------------------------------
def test_datastream_framing_of_any_rate_reaches_the_generator_whole() -> None:
    """``DataStreamAudioOutput.capture_frame`` writes each frame's bytes to the byte stream,
    with ``sample_rate`` / ``num_channels`` attributes; ``DataStreamAudioReceiver`` re-frames
    them with the SDK's ``AudioByteStream`` (100 ms frames, then ``flush``). Mono 16 kHz and
    stereo 22.05 kHz both reach facecast's speech queue whole (on a virtual clock, so that no
    frame is played while they are counted)."""
    from runtime.live.monotonic import VirtualClock

    mono16 = prompt("hello-world", 16000)
    x = prompt("hello-world", 22050)
    stereo = np.stack([x, x // 2], axis=1).reshape(-1)  # interleaved L/R

    def received(pcm: np.ndarray, rate: int, channels: int) -> list[rtc.AudioFrame]:
        data, step = pcm.tobytes(), rate * channels * 2 * 20 // 1000  # 20 ms writes
        sent = [data[i:i + step] for i in range(0, len(data), step)]
        attrs = {"sample_rate": str(rate), "num_channels": str(channels)}  # the stream's
        bstream = AudioByteStream(sample_rate=int(attrs["sample_rate"]),
                                  num_channels=int(attrs["num_channels"]),
                                  samples_per_channel=int(np.ceil(rate * 100 / 1000)))
        frames = [f for chunk in sent for f in bstream.push(chunk)]
        return frames + list(bstream.flush())

    async def main():
        async with await AvatarEngine.start(fps=FPS, clock=VirtualClock()) as engine:
            gen = FacecastVideoGenerator(await StreamPort.open(engine))
            for frames in (received(mono16, 16000, 1), received(stereo, 22050, 2)):
                assert {f.samples_per_channel for f in frames[:-1]} in ({1600}, {2205})
                for f in frames:
                    await gen.push_audio(f)
                await gen.push_audio(AudioSegmentEnd())
            queue = gen.port.stream.session.queue
            buffered, segments = queue.buffered, len(queue)
            await gen.aclose()
            return buffered, segments

    buffered, segments = asyncio.run(main())
    expect = len(mono16) * 3 + round(len(x) * 48000 / 22050)
    assert segments == 2 and abs(buffered - expect) <= 96  # the resamplers' ~1 ms each


def test_playback_finished_payload_is_what_the_agent_side_parses() -> None:
    """The avatar side sends ``json.dumps(asdict(PlaybackFinishedEvent(position,
    interrupted)))`` (``DataStreamAudioReceiver._send_task``); the agent side's RPC handler
    (``DataStreamAudioOutput._handle_playback_finished``) turns it back into the event, and
    refuses it from any participant but the avatar."""
    class Agent(DataStreamAudioOutput):
        def on_playback_finished(self, **event) -> None:
            self.seen.append(event)

    async def main():
        out = Agent(rtc.Room(), destination_identity="facecast-avatar")
        out.seen = []
        payload = json.dumps(asdict(PlaybackFinishedEvent(playback_position=1.24,
                                                          interrupted=True)))
        answers = [out._handle_playback_finished(rtc.RpcInvocationData(
            "req", who, payload, 5.0)) for who in ("facecast-avatar", "someone-else")]
        return answers, out.seen

    answers, seen = asyncio.run(main())
    assert answers == ["ok", "reject"]
    assert seen == [{"playback_position": 1.24, "interrupted": True}]


# --- dispatch --------------------------------------------------------------------------------
def test_dispatch_metadata_round_trip_and_errors() -> None:
    d = AvatarDispatch(agent_identity="agent-AJ_1", avatar="default", seed=3)
    assert AvatarDispatch.from_metadata(d.to_metadata()) == d
    plain = AvatarDispatch.from_metadata('{"agent_identity": "agent-AJ_1"}')
    assert plain.avatar is None and plain.avatar_identity == "facecast-avatar"  # worker's own
    for bad, says in [("", "JSON object"), ("[1]", "JSON object"), ("{", "not JSON"),
                      ('{"avatar": "x"}', "agent_identity is missing"),
                      ('{"agent_identity": "a", "colour": 1}', "unknown field"),
                      ('{"agent_identity": ""}', "non-empty"),
                      ('{"agent_identity": "a", "seed": true}', "integer"),
                      ('{"agent_identity": "a", "avatar": "/etc"}', "avatar name"),
                      ('{"agent_identity": "a", "avatar": "../x"}', "avatar name"),
                      ('{"agent_identity": "a", "avatar_identity": "a"}', "differ"),
                      ('{"agent_identity": "' + "a" * 5000 + '"}', "over")]:
        with pytest.raises(ValueError, match=says):
            AvatarDispatch.from_metadata(bad)


def test_the_worker_accepts_a_dispatch_as_the_avatar_publishing_on_behalf_of_the_agent() -> None:
    def request(metadata: str):
        answers: list = []

        async def on_accept(args):
            answers.append(("accept", args))

        async def on_reject(terminate: bool):
            answers.append(("reject", terminate))

        job = lk_agent.Job(id="AJ_1", type=lk_agent.JobType.JT_ROOM, metadata=metadata,
                           room=lk_models.Room(name="room-1"), agent_name="facecast-avatar")
        asyncio.run(accept_request(JobRequest(job=job, on_reject=on_reject,
                                              on_accept=on_accept)))
        return answers

    [(verb, args)] = request(AvatarDispatch(agent_identity="agent-7").to_metadata())
    assert verb == "accept" and args.identity == "facecast-avatar"
    assert args.attributes == {ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-7"}
    assert request("not json") == [("reject", True)]


# --- credentials, load ---------------------------------------------------------------------------
def test_missing_credentials_are_one_line(capsys) -> None:
    from runtime.cli import main

    assert livekit_credentials("wss://x.livekit.cloud", "k", "s", env={}).url.startswith("wss")
    with pytest.raises(ValueError, match="LIVEKIT_API_KEY, LIVEKIT_API_SECRET"):
        livekit_credentials("wss://x", env={})
    with pytest.raises(ValueError, match="must start with"):
        livekit_credentials("x.livekit.cloud", "k", "s", env={})
    with pytest.MonkeyPatch.context() as mp:
        for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
            mp.delenv(name, raising=False)
        assert main(["livekit", "--max-sessions", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "set LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET" in err


def test_no_server_at_the_url_is_a_one_line_error(capsys) -> None:
    """The worker really tries to register (the SDK's connection task) with a URL where no
    LiveKit server listens, and gives up after ``--max-retry`` attempts with one line."""
    from runtime.bench.harness import free_port
    from runtime.cli import main

    url = f"ws://127.0.0.1:{free_port()}"
    assert main(["livekit", "--url", url, "--api-key", "devkey", "--api-secret", "x" * 32,
                 "--max-sessions", "1", "--max-retry", "0", "--http-port", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "facecast livekit: error: failed to connect to livekit after 0 attempts"


def test_load_is_sessions_over_capacity_and_full_at_capacity() -> None:
    open_streams = [0]
    load = SessionLoad(3, lambda: open_streams[0])
    assert load.threshold == pytest.approx(2.5 / 3)
    for n, full in [(0, False), (1, False), (2, False), (3, True)]:
        open_streams[0] = n
        assert load.load() == pytest.approx(n / 3)
        assert (load.load() >= load.threshold) == full  # the SDK's test for "full"
    with pytest.raises(ValueError):
        SessionLoad(0, lambda: 0)


def test_auto_capacity_is_the_stored_measurement(tmp_path, monkeypatch) -> None:
    from runtime.bench.capacity import machine_key, save_capacity

    monkeypatch.setenv("FACECAST_CACHE_DIR", str(tmp_path))

    async def main():
        engine = await AvatarEngine.start(fps=FPS)
        try:
            save_capacity(machine_key(engine.renderer.backend, engine.size, FPS),
                          {"capacity": 3})
            fresh = await AvatarEngine.start(fps=FPS)  # reads the store at start
            try:
                return await session_capacity(fresh, "auto", FPS)
            finally:
                await fresh.aclose()
        finally:
            await engine.aclose()

    load = asyncio.run(main())
    assert load.capacity == 3 and load.source == "measured"


def test_the_sdk_server_reports_the_load_of_a_job_on_another_loop() -> None:
    """An unregistered ``AgentServer`` with facecast's load function (no LiveKit server): a
    stream opened from a thread with its own loop, as a LiveKit job thread is, shows in the
    SDK's ``/worker`` report as load 1/2, and its frames reach that loop at 25 fps."""
    from runtime.bench.harness import free_port

    ready = threading.Event()
    state: dict = {}

    def on_ready(server, host, load):
        state.update(server=server, host=host, load=load)
        ready.set()

    def worker_load() -> float:
        # a fixed port: with port 0 the SDK binds IPv4 and IPv6 on two ports and reports one
        port = state["server"].worker_info.http_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/worker", timeout=5) as r:
            return json.loads(r.read()).get("worker_load", 0.0)

    async def job(engine, engine_loop):
        port = await StreamPort.open(engine, engine_loop)
        gen = FacecastVideoGenerator(port)
        for f in audio_frames(prompt("agent-pass", 16000), 16000):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())

        async def read_load():
            await asyncio.sleep(1.0)  # the SDK refreshes the load every 0.5 s
            state["load_during"] = await asyncio.to_thread(worker_load)

        reading = asyncio.create_task(read_load())
        seen: list[tuple[float, str]] = []
        async for item in gen:
            seen.append((time.perf_counter(), type(item).__name__))
            if isinstance(item, AudioSegmentEnd):
                break
        await reading
        await gen.aclose()
        return seen

    async def main():
        stop = asyncio.Event()
        config = WorkerConfig(max_sessions=2, http_port=free_port())
        task = asyncio.create_task(serve_worker(config, stop, register=False,
                                                on_ready=on_ready))
        await asyncio.wait_for(asyncio.to_thread(ready.wait), 60)
        host = state["host"]
        assert host.loop is asyncio.get_running_loop()
        seen = await asyncio.to_thread(lambda: asyncio.run(job(host.engine, host.loop)))
        await asyncio.sleep(1.0)
        state["load_after"] = await asyncio.to_thread(worker_load)
        stop.set()
        await task
        return seen

    seen = asyncio.run(main())
    assert state["load"].capacity == 2
    assert state["load_during"] == pytest.approx(0.5) and state["load_after"] == 0.0
    videos = [t for t, k in seen if k == "VideoFrame"][10:]  # after what queued at the start
    fps = (len(videos) - 1) / (videos[-1] - videos[0])
    assert abs(fps - FPS) <= FPS_TOLERANCE
    kinds = [k for _, k in seen]
    assert kinds.count("AudioSegmentEnd") == 1 and kinds.count("AudioFrame") >= 20
