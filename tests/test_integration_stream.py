"""The integrations' shared adapter (``runtime.integrations.stream``) on the real pipeline: the
real renderer, motion model and scheduler of ``facecast serve`` and real speech (Asterisk
prompts), paced by a ``VirtualClock`` so that every tick happens where the test puts it (the
real-time pacing is measured through Pipecat in ``test_pipecat.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import numpy as np
import pytest
from conftest import pcm16, prompt

import avatars
from avatars.bundle import ConsentMissing
from engines.audio import OUTPUT_SAMPLE_RATE
from runtime.audio.resample import resample
from runtime.clock import AvClock
from runtime.integrations.stream import AvatarEngine, BufferFull, PairedFrame
from runtime.live.events import SpeechEnded, SpeechStarted, StateChanged
from runtime.live.monotonic import VirtualClock
from runtime.provenance.disclosure import Badge, badge_box


def run(main, fps=25):
    """``asyncio.run(main(engine, clock))`` with an engine started on a ``VirtualClock``,
    closed afterwards."""
    async def wrapper():
        clock = VirtualClock()
        engine = await AvatarEngine.start(fps=fps, clock=clock)
        try:
            return await main(engine, clock)
        finally:
            await engine.aclose()

    return asyncio.run(wrapper())


class Reader:
    """Reads a stream on virtual time: each ``step`` moves the clock one frame period (the
    first one and a half, so that ticks fall mid-step) and takes the frame it delivered."""

    def __init__(self, stream, clock: VirtualClock) -> None:
        self.frames = stream.frames()
        self.clock = clock
        self.period = float(1 / stream.fps)
        self.offset = self.period / 2

    async def take(self) -> PairedFrame:
        """The next frame already delivered (never waits long)."""
        return await asyncio.wait_for(anext(self.frames), 10.0)

    async def step(self) -> PairedFrame:
        await self.clock.advance(self.period + self.offset)
        self.offset = 0.0
        return await self.take()

    async def until(self, done, limit: int = 1000) -> list[PairedFrame]:
        """Frames, one step each, until ``done(frames)`` (at most ``limit``)."""
        frames: list[PairedFrame] = []
        while len(frames) < limit:
            frames.append(await self.step())
            if done(frames):
                break
        return frames


async def collect(stream, clock, until, limit: int = 1000) -> list[PairedFrame]:
    """Frames of a new ``Reader`` of ``stream`` until ``until(frames)``."""
    return await Reader(stream, clock).until(until, limit)


def ended(frames: list[PairedFrame], segment: str) -> bool:
    return any(isinstance(e, SpeechEnded) and e.id == segment for f in frames for e in f.events)


def first_with(frames: list[PairedFrame], kind: type, segment: str | None = None) -> int:
    """Position in ``frames`` of the first frame carrying an event of ``kind`` (for ``segment``)."""
    for i, f in enumerate(frames):
        if any(isinstance(e, kind) and (segment is None or e.id == segment) for e in f.events):
            return i
    raise AssertionError(f"no {kind.__name__} event")


def test_each_image_carries_exactly_its_audio_slice_and_48k_int16_comes_out_bit_for_bit():
    speech16, rate = prompt("hello-world")
    clip = pcm16(resample(speech16, rate, OUTPUT_SAMPLE_RATE))  # int16 at 48 kHz

    async def main(engine, clock):
        stream = await engine.open_stream()
        assert engine.sessions == 1 and stream.sample_rate == OUTPUT_SAMPLE_RATE
        assert engine.load is None or engine.load == pytest.approx(1 / max(1, engine.capacity))
        for i in range(0, len(clip), 960):  # 20 ms chunks, as a TTS streams them
            stream.push_audio(clip[i:i + 960], OUTPUT_SAMPLE_RATE, "u")
        stream.end_segment("u")
        frames = await collect(stream, clock, lambda fs: ended(fs, "u") and len(fs) > 60)
        return stream, frames, stream.played_seconds()

    stream, frames, played = run(main)
    clock = AvClock(25)
    w, h = stream.size
    for a, b in itertools.pairwise(frames):
        assert b.index == a.index + 1  # no frame lost: every index has an image
    for f in frames:
        assert f.image.shape == (h, w, 3) and f.image.dtype == np.uint8
        assert f.audio.dtype == np.int16 and f.sample_rate == OUTPUT_SAMPLE_RATE
        assert len(f.audio) == clock.frame_start(f.index + 1) - clock.frame_start(f.index) == 1920
        assert f.audio_pts == clock.frame_start(f.index)
    start = first_with(frames, SpeechStarted, "u")
    end = first_with(frames, SpeechEnded, "u")
    out = np.concatenate([f.audio for f in frames[start:]])
    assert np.array_equal(out[:len(clip)], clip)  # queued at a slice start, played unchanged
    assert not out[len(clip):].any()  # then silence
    assert end == start + (len(clip) - 1) // 1920  # the end comes with its last sample
    (done,) = [e for e in frames[end].events if isinstance(e, SpeechEnded)]
    assert done.played_ms == done.duration_ms == round(len(clip) / 48) and not done.interrupted
    assert played == pytest.approx(len(clip) / OUTPUT_SAMPLE_RATE)
    states = [(i, e.state) for i, f in enumerate(frames) for e in f.events
              if isinstance(e, StateChanged)]
    assert states[0] == (start, "speaking") and states[-1][1] == "idle" and states[-1][0] >= end
    assert all(f.speaking for f in frames[start:end + 1])
    assert stream.frames_dropped == 0


def test_any_rate_and_format_goes_through_the_project_resampler_without_seams():
    """Three segments at 16, 22.05 and 44.1 kHz (float32, int16, float32), pushed in uneven
    chunks: they play back to back, each equal to the whole clip resampled in one go."""
    speech16, rate = prompt("vm-goodbye")
    clips = {r: resample(speech16, rate, r) for r in (16000, 22050, 44100)}
    clips[22050] = pcm16(clips[22050])  # a TTS that sends int16

    async def main(engine, clock):
        stream = await engine.open_stream()
        for r, x in clips.items():
            for i in range(0, len(x), 333):
                stream.push_audio(x[i:i + 333], r, f"s{r}")
            stream.end_segment(f"s{r}")
        return await collect(stream, clock, lambda fs: ended(fs, "s44100") and len(fs) > 10)

    frames = run(main)
    expected = np.concatenate([
        pcm16(resample(x.astype(np.float32) / 32767.0 if x.dtype == np.int16 else x, r,
                       OUTPUT_SAMPLE_RATE)) for r, x in clips.items()])
    start = first_with(frames, SpeechStarted, "s16000")
    out = np.concatenate([f.audio for f in frames[start:]])[:len(expected)]
    assert np.abs(out.astype(np.int32) - expected).max() <= 1
    assert [e.id for f in frames for e in f.events if isinstance(e, SpeechEnded)] == \
        ["s16000", "s22050", "s44100"]


def test_interrupt_drops_queued_speech_reports_the_yielded_position_and_idles_next_frame():
    speech16, rate = prompt("demo-thanks")

    def one_second_in(fs):
        return any(isinstance(e, SpeechStarted) for f in fs[-25:-24] for e in f.events)

    async def main(engine, clock):
        stream = await engine.open_stream()
        reader = Reader(stream, clock)
        stream.push_audio(speech16, rate, "u")  # ~5.5 s, queued at once
        stream.end_segment("u")
        frames = await reader.until(one_second_in)
        position = stream.played_seconds()
        cut = stream.interrupt()
        stream.push_audio(speech16[:1600], rate, "u")  # late audio of the cut segment: ignored
        after = await reader.until(lambda fs: len(fs) >= 10)
        stream.push_audio(speech16[:8000], rate, "v")  # a new segment plays normally
        stream.end_segment("v")
        more = await reader.until(lambda fs: ended(fs, "v"))
        return frames, position, cut, after, more

    frames, position, cut, after, more = run(main)
    start = first_with(frames, SpeechStarted, "u")
    yielded = (len(frames) - start) * 1920  # samples of "u" the consumer was given
    assert yielded == 25 * 1920 and position == pytest.approx(1.0)
    assert cut == [SpeechEnded("u", round(yielded / 48), round(len(speech16) * 3 / 48),
                               interrupted=True)]
    assert after[0].index == frames[-1].index + 1  # the very next frame ...
    assert not np.concatenate([f.audio for f in after]).any()  # ... is silent
    assert StateChanged("idle") in after[0].events and not after[0].speaking
    assert not any(isinstance(e, (SpeechStarted, SpeechEnded)) for f in after for e in f.events)
    assert any(isinstance(e, SpeechStarted) and e.id == "v" for f in more for e in f.events)
    assert stream_played(more, "v") == 8000 * 3


def stream_played(frames: list[PairedFrame], segment: str) -> int:
    """Samples of ``segment`` in ``frames``: from its SpeechStarted to its SpeechEnded frame,
    the ``played_ms`` it reports, in samples."""
    (end,) = [e for f in frames for e in f.events if isinstance(e, SpeechEnded)
              and e.id == segment]
    return end.played_ms * 48


def test_a_lagging_consumer_loses_the_oldest_frames_whole_but_not_the_speech_events():
    speech16, rate = prompt("vm-goodbye")

    async def main(engine, clock):
        stream = await engine.open_stream(max_queued_frames=3)
        reader = Reader(stream, clock)
        stream.push_audio(speech16, rate, "u")
        stream.end_segment("u")
        await clock.advance(2.02)  # nobody reads for 2 s: 50 frames, the speech among them
        frames = [await reader.take() for _ in range(3)]
        return stream, frames

    stream, frames = run(main)
    assert stream.frames_dropped == 47 and frames[0].index == 47
    events = [e for f in frames for e in f.events]
    (start,) = [e for e in events if isinstance(e, SpeechStarted)]
    (end,) = [e for e in events if isinstance(e, SpeechEnded)]
    assert start.id == end.id == "u" and not end.interrupted
    assert end.played_ms == 0 < end.duration_ms  # none of its audio reached the consumer
    assert not any(isinstance(e, StateChanged) for e in events)  # it never saw it speak


def test_bad_input_is_refused_with_the_reason(caplog):
    async def main(engine, clock):
        stream = await engine.open_stream(max_buffer_s=1.0)
        x = np.zeros(1600, np.float32)
        with pytest.raises(ValueError, match="mono"):
            stream.push_audio(np.zeros((2, 800), np.float32), 16000, "u")
        with pytest.raises(ValueError, match="int16 or float32"):
            stream.push_audio(np.zeros(800, np.int32), 16000, "u")
        for bad in (0, 16000.0, True, 10**7):
            with pytest.raises(ValueError, match="sample_rate"):
                stream.push_audio(x, bad, "u")
        with pytest.raises(BufferFull):
            stream.push_audio(np.zeros(32000, np.float32), 16000, "u")  # 2 s > 1 s
        assert stream.session.queue.buffered == 0 and stream.pending_segments == 0
        stream.push_audio(x, 16000, "u")
        stream.end_segment("u")
        with pytest.raises(ValueError, match="ended"):
            stream.push_audio(x, 16000, "u")
        stream.end_segment("never-pushed")  # nothing happens
        with pytest.raises(TypeError, match="badge"):
            await engine.open_stream(badge="yes")
        await stream.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            stream.push_audio(x, 16000, "w")
        assert engine.sessions == 0

    run(main)


def test_consent_is_required_and_badge_and_watermark_are_on_by_default(unconsented, caplog):
    from runtime.provenance.watermark import detect

    default = avatars.load("default")
    x0, y0, x1, y1 = badge_box(default.image.shape, Badge(), avoid=default.crop_box)

    async def main(engine, clock):
        with pytest.raises(ConsentMissing, match="consent"):
            await engine.open_stream(str(unconsented.path))
        with caplog.at_level(logging.WARNING, logger="facecast.integrations"):
            allowed = await engine.open_stream(str(unconsented.path), allow_unconsented=True)
            plain = await engine.open_stream(badge=None, watermark=False)
        marked = await engine.open_stream()
        got = []
        for stream in (marked, plain, allowed):
            got.append((await collect(stream, clock, lambda fs: True))[0].image)
        return got

    marked, plain, allowed = run(main)
    plate = (slice(y0, y1), slice(x0, x1))
    assert np.array_equal(plain[plate], default.image[plate])  # none: the source pixels
    for image in (marked, allowed):
        assert np.abs(image[plate].astype(int) - default.image[plate]).mean() > 20  # the badge
    assert detect(marked).found and detect(allowed).found and not detect(plain).found
    assert "states no consent" in caplog.text and "badge is off" in caplog.text
    assert "watermark is off" in caplog.text


def test_ntsc_rate_slices_alternate_and_stay_on_the_sample_clock():
    async def main(engine, clock):
        stream = await engine.open_stream()
        return await collect(stream, clock, lambda fs: len(fs) >= 30)

    frames = run(main, fps="30000/1001")
    clock = AvClock("30000/1001")
    assert {len(f.audio) for f in frames} == {1601, 1602}
    assert all(f.audio_pts == clock.frame_start(f.index) for f in frames)
    assert all(len(f.audio) == clock.frame_start(f.index + 1) - f.audio_pts for f in frames)
