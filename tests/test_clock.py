"""runtime.clock: exact frame rates and the sample-counter clock of audio and video."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from runtime.clock import AvClock, as_fps

NTSC = Fraction(30000, 1001)


def test_as_fps_integer_string_and_float() -> None:
    assert as_fps(25) == Fraction(25)
    assert isinstance(as_fps(25), Fraction)
    assert as_fps("30000/1001") == NTSC
    assert as_fps(NTSC) == NTSC
    assert as_fps(29.97) == Fraction(2997, 100)
    assert as_fps(1) == 1 and as_fps(240) == 240


@pytest.mark.parametrize("bad", [0, 0.5, 500, 241, -25, "abc", "1/0", None, float("nan")])
def test_as_fps_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        as_fps(bad)  # type: ignore[arg-type]


def test_as_fps_rejects_infinity() -> None:
    with pytest.raises(ValueError):
        as_fps(float("inf"))


def test_clock_rejects_bad_sample_rate_and_fps() -> None:
    with pytest.raises(ValueError):
        AvClock(25, sample_rate=0)
    with pytest.raises(ValueError):
        AvClock(0)


def test_clock_25_fps_at_48k() -> None:
    c = AvClock(25)
    assert c.sample_rate == 48_000
    assert c.fps == 25 and isinstance(c.fps, Fraction)
    assert c.time_base == Fraction(1, 48_000)
    assert c.samples_per_frame == 1920
    for n in (0, 1, 2, 7, 1000, 25 * 3600 * 10):
        assert c.frame_start(n) == 1920 * n
    assert c.frames_for(0) == 0
    assert c.frames_for(1) == 1
    assert c.frames_for(1920) == 1
    assert c.frames_for(1921) == 2
    assert c.frames_for(48_000) == 25
    assert c.frame_of_sample(0) == 0
    assert c.frame_of_sample(1919) == 0
    assert c.frame_of_sample(1920) == 1
    assert c.frame_of_sample(1920 * 10 + 5) == 10


def test_clock_accepts_string_fps() -> None:
    c = AvClock("30000/1001")  # type: ignore[arg-type]
    assert c.fps == NTSC
    assert c.samples_per_frame == Fraction(48_000 * 1001, 30_000)  # 1601.6


def test_ntsc_slice_lengths_alternate_by_one_sample() -> None:
    c = AvClock(NTSC)
    starts = [c.frame_start(n) for n in range(30_001)]
    lengths = {b - a for a, b in itertools.pairwise(starts)}
    assert lengths == {1601, 1602}
    # 30000 frames at 30000/1001 fps are exactly 1001 s.
    assert starts[30_000] == 1001 * 48_000
    for n in range(0, 30_000, 997):
        assert c.frames_for(starts[n + 1]) == n + 1
        assert c.frames_for(starts[n + 1] + 1) == n + 2
        # The last sample of slice n is in frame n (the slice's exact end, by the floor).
        assert c.frame_of_sample(starts[n + 1] - 1) == n


def test_ntsc_boundaries_do_not_drift_over_ten_hours() -> None:
    c = AvClock(NTSC)
    ten_hours = int(10 * 3600 * NTSC)  # 1 078 921 frames
    prev = c.frame_start(ten_hours - 1)
    for n in range(ten_hours, ten_hours + 200):
        start = c.frame_start(n)
        assert start == n * 48_000 * 1001 // 30_000  # floor(n · sample_rate / fps), exact
        assert start - prev in (1601, 1602)
        prev = start
    # Whole multiples of 1001 s land exactly on sample boundaries.
    assert c.frame_start(30_000 * 36) == 36 * 1001 * 48_000


def test_ntsc_frame_of_sample_inverts_frame_start() -> None:
    c = AvClock(NTSC)
    for n in (1, 2, 3, 4, 1000, int(10 * 3600 * NTSC)):
        start = c.frame_start(n)
        assert c.frame_of_sample(start) == n  # AvClock(30000/1001).frame_of_sample(1601) == 0
        assert c.frames_for(start + 1) == c.frame_of_sample(start) + 1


def test_wire_fps_is_an_int_when_whole() -> None:
    from runtime.clock import wire_fps

    assert wire_fps(25) == 25 and isinstance(wire_fps(25), int)
    assert wire_fps("30000/1001") == pytest.approx(29.97002997)
    with pytest.raises(ValueError):
        wire_fps(0)
