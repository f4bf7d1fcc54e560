"""The one clock of audio and video: the output audio sample counter.

Video frame n shows the mouth for output audio samples [n·S, (n+1)·S), S = sample_rate / fps
(``DESIGN.md``, "One clock"). Both the video frame and its audio slice take their pts from that
counter, in a time base of 1 / sample_rate, so they cannot drift apart however long a stream
runs. With a frame rate that does not divide the sample rate (29.97 fps at 48 kHz), slice
lengths alternate by one sample and the boundaries stay exact: start(n) = ⌊n · sample_rate /
fps⌋ in rational arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from engines.audio import OUTPUT_SAMPLE_RATE


def as_fps(fps: float | str | Fraction) -> Fraction:
    """A frame rate as an exact fraction: 25 → 25, "30000/1001" → 30000/1001, 29.97 → 2997/100.

    Raises ValueError unless 1 ≤ fps ≤ 240.
    """
    try:
        f = Fraction(fps) if not isinstance(fps, float) else Fraction(fps).limit_denominator(1001)
    except (ValueError, ZeroDivisionError, TypeError, OverflowError) as exc:
        raise ValueError(f"not a frame rate: {fps!r}") from exc
    if not 1 <= f <= 240:
        raise ValueError(f"fps must be between 1 and 240, got {float(f):g}")
    return f


def wire_fps(fps: float | str | Fraction) -> int | float:
    """A frame rate for JSON: an int when whole (25), else a float (29.97002997…)."""
    f = as_fps(fps)
    return int(f) if f.denominator == 1 else float(f)


@dataclass(frozen=True)
class AvClock:
    """Sample-counter clock: ``sample_rate`` (Hz, the output audio's) and ``fps`` (exact).

    pts of both tracks are in ``time_base`` = 1 / sample_rate.
    """

    fps: Fraction
    sample_rate: int = OUTPUT_SAMPLE_RATE

    def __post_init__(self) -> None:
        object.__setattr__(self, "fps", as_fps(self.fps))
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")

    @property
    def time_base(self) -> Fraction:
        return Fraction(1, self.sample_rate)

    @property
    def samples_per_frame(self) -> Fraction:
        """S = sample_rate / fps (exact; 1920 at 48 kHz and 25 fps)."""
        return self.sample_rate / self.fps

    def frame_start(self, n: int) -> int:
        """First output-audio sample of video frame n, = its pts in ``time_base``."""
        return int(n * self.samples_per_frame)  # floor for n ≥ 0

    def frame_of_sample(self, sample: int) -> int:
        """The video frame whose audio slice holds ``sample``: the largest n with
        frame_start(n) ≤ sample, i.e. ⌈(sample + 1) / S⌉ − 1 (floor(sample / S) would give the
        frame before wherever a slice starts at a fractional n·S)."""
        x = (sample + 1) / self.samples_per_frame
        return int(-(-x // 1)) - 1

    def frames_for(self, n_samples: int) -> int:
        """Video frames needed to cover ``n_samples`` of audio (the last one may be partial)."""
        return -int(-n_samples // self.samples_per_frame)
