"""runtime.audio.espeak against the real libespeak-ng: audio, phone timings, voices, errors, threads."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest


def _have_espeak() -> bool:
    try:
        ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _have_espeak(), reason="libespeak-ng not installed (apt-get install libespeak-ng1)"
)

from runtime.audio.espeak import EspeakError, Phone, Synthesis, list_voices, synthesize

ROOT = Path(__file__).resolve().parents[1]


def _samples(s: Synthesis, t: float) -> int:
    return round(t * s.sample_rate)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _check_phones(s: Synthesis) -> None:
    """Sorted, non-overlapping, non-empty, inside the audio."""
    duration = len(s.audio) / s.sample_rate
    assert s.phones
    for p in s.phones:
        assert isinstance(p, Phone)
        assert p.symbol and not p.symbol.startswith("(")
        assert 0.0 <= p.start_s < p.end_s <= duration + 1e-9
    for a, b in zip(s.phones, s.phones[1:]):
        assert a.end_s <= b.start_s + 1e-12


def test_hello_world_audio_is_plausible() -> None:
    s = synthesize("Hello world")
    assert isinstance(s, Synthesis)
    assert s.sample_rate == 22050
    assert s.audio.dtype == np.float32 and s.audio.ndim == 1
    assert np.all(np.abs(s.audio) <= 1.0)
    assert np.max(np.abs(s.audio)) > 0.05  # not silent
    assert 0.5 <= len(s.audio) / s.sample_rate <= 2.0
    assert s.duration_s == pytest.approx(len(s.audio) / s.sample_rate)
    _check_phones(s)
    assert "".join(p.symbol for p in s.phones) == "həloʊwɜːld"


def test_phones_cover_the_speech() -> None:
    s = synthesize("The quick brown fox jumps over the lazy dog. Then it sleeps.")
    _check_phones(s)
    covered = np.zeros(len(s.audio), dtype=bool)
    for p in s.phones:
        covered[_samples(s, p.start_s):_samples(s, p.end_s)] = True
    loud = np.abs(s.audio) > 0.01
    assert loud.sum() > s.sample_rate  # over a second of speech
    assert (covered & loud).sum() / loud.sum() > 0.98
    # The sentence pause is a gap between phones, not a phone, and it is silent.
    gaps = [(a.end_s, b.start_s) for a, b in zip(s.phones, s.phones[1:]) if b.start_s > a.end_s]
    assert len(gaps) == 1 and gaps[0][1] - gaps[0][0] > 0.1
    pause = s.audio[_samples(s, gaps[0][0]):_samples(s, gaps[0][1])]
    assert np.max(np.abs(pause)) < 0.01


def test_first_phone_starts_at_the_first_sound() -> None:
    """The event's ``sample`` index is exact: speech begins on the first phone's start."""
    s = synthesize("Hello world")
    first_sound = int(np.argmax(s.audio != 0))
    assert abs(_samples(s, s.phones[0].start_s) - first_sound) <= 2
    assert np.all(s.audio[: _samples(s, s.phones[0].start_s)] == 0)


def test_voiceless_plosives_start_at_their_release_burst() -> None:
    """espeak-ng times p/t/k at the burst: the closure just before is silent, sound follows."""
    s = synthesize("Peter picked a peck of pickled peppers")
    stops = [p for p in s.phones if p.symbol in ("p", "t", "k")]
    assert len(stops) >= 10
    ms = _samples(s, 0.001)
    for p in stops:
        i = _samples(s, p.start_s)
        assert _rms(s.audio[max(i - 3 * ms, 0):i]) < 1e-4, p
        assert _rms(s.audio[i:i + 3 * ms]) > 1e-3, p


@pytest.mark.parametrize(
    ("text", "expected"),
    [("papa", {"p": 2, "b": 0, "m": 0}), ("Bob ate a map", {"p": 1, "b": 2, "m": 1})],
)
def test_bilabials(text: str, expected: dict[str, int]) -> None:
    s = synthesize(text)
    _check_phones(s)
    symbols = [p.symbol for p in s.phones]
    assert {k: symbols.count(k) for k in expected} == expected
    peak = float(np.max(np.abs(s.audio)))
    ms = _samples(s, 0.001)
    for p in s.phones:
        if p.symbol not in expected:
            continue
        assert 0.0 < p.start_s < s.duration_s
        i = _samples(s, p.start_s)
        before = _rms(s.audio[max(i - 5 * ms, 0):i])
        after = _rms(s.audio[i:i + 5 * ms])
        if p.symbol == "p":  # released from a silent closure
            assert before < 0.01 * peak < after
        else:  # b, m: lips close at the event, sound drops to a voice bar / nasal murmur
            assert after < 0.5 * peak


def test_faster_rate_is_shorter() -> None:
    text = "A faster speaking rate gives shorter audio."
    d = [synthesize(text, rate_wpm=r).duration_s for r in (120, 175, 300)]
    assert d[0] > d[1] > d[2]
    assert d[2] < 0.75 * d[1]
    s = synthesize(text, rate_wpm=300)
    _check_phones(s)


def test_pitch_changes_audio_not_phones() -> None:
    low, high = synthesize("Hello there", pitch=20), synthesize("Hello there", pitch=80)
    assert [p.symbol for p in low.phones] == [p.symbol for p in high.phones]
    zc_low = np.mean(np.abs(np.diff(np.sign(low.audio))) > 0)
    zc_high = np.mean(np.abs(np.diff(np.sign(high.audio))) > 0)
    assert zc_high > zc_low


def test_voices() -> None:
    voices = list_voices()
    assert {"en-us", "en-gb"} <= set(voices)
    assert voices == sorted(set(voices))
    english = list_voices("en")
    assert "en-us" in english and "en-gb" in english
    assert all(v.startswith("en") for v in english)
    assert "en-gb" in list_voices("EN-GB") and "en-us" not in list_voices("en-gb")
    assert list_voices("xx-nothing") == []

    us = synthesize("Hello world", voice="en-us")
    gb = synthesize("Hello world", voice="en-gb")
    female = synthesize("Hello world", voice="en-us+f3")
    for s in (us, gb, female):
        _check_phones(s)
        assert 0.5 <= s.duration_s <= 2.0
    assert "oʊ" in [p.symbol for p in us.phones]  # General American "hello"
    assert "əʊ" in [p.symbol for p in gb.phones]  # British "hello"
    assert [p.symbol for p in female.phones] == [p.symbol for p in us.phones]
    assert synthesize("Hello", voice="EN-US").phones  # case-insensitive
    assert synthesize("Hello", voice="gmw/en-US+m3").phones  # espeak identifier + variant


def test_non_ascii_text() -> None:
    s = synthesize("Ça va très bien, merci.", voice="fr-fr")
    _check_phones(s)
    assert any(ord(c) > 127 for p in s.phones for c in p.symbol)  # IPA comes through as UTF-8


def test_bad_input_raises_value_error() -> None:
    for text in ("", "   \n\t"):
        with pytest.raises(ValueError, match="empty"):
            synthesize(text)
    with pytest.raises(ValueError, match="max_chars"):
        synthesize("x" * 11, max_chars=10)
    with pytest.raises(ValueError, match="max_chars"):
        synthesize("a " * 2501)
    with pytest.raises(ValueError, match="unknown espeak-ng voice"):
        synthesize("hello", voice="xx-nonexistent")
    with pytest.raises(ValueError, match="variant"):
        synthesize("hello", voice="en-us+nonexistent")
    with pytest.raises(ValueError, match="unknown espeak-ng voice"):
        synthesize("hello", voice="f3")  # a variant alone is not a voice
    with pytest.raises(ValueError, match="rate_wpm"):
        synthesize("hello", rate_wpm=1000)
    with pytest.raises(ValueError, match="pitch"):
        synthesize("hello", pitch=-1)
    with pytest.raises(ValueError, match="NUL"):
        synthesize("hel\0lo")
    assert synthesize("hello").phones  # the library still works after the errors


def test_missing_library_names_the_package() -> None:
    code = (
        "import ctypes.util\n"
        "ctypes.util.find_library = lambda name: '/nonexistent/libespeak-ng.so.1'\n"
        "from runtime.audio.espeak import EspeakError, synthesize\n"
        "try:\n"
        "    synthesize('hello')\n"
        "except EspeakError as e:\n"
        "    print('EspeakError:', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=False, capture_output=True, text=True, timeout=60
    )
    assert "EspeakError:" in out.stdout and "apt-get install libespeak-ng1" in out.stdout
    assert issubclass(EspeakError, RuntimeError)


def test_concurrent_calls_give_the_same_results() -> None:
    texts = [
        ("Hello world", "en-us"),
        ("Bob ate a map", "en-gb"),
        ("The rain in Spain stays mainly in the plain", "en-us+f3"),
        ("papa", "en-us"),
    ]
    expected = [synthesize(t, voice=v) for t, v in texts]
    jobs = texts * 6
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda tv: synthesize(tv[0], voice=tv[1]), jobs))
    for (t, _), got in zip(jobs, results):
        ref = expected[[x[0] for x in texts].index(t)]
        _check_phones(got)
        assert [p.symbol for p in got.phones] == [p.symbol for p in ref.phones]
        # Not bit-identical: espeak-ng carries state between messages, which moves phone
        # boundaries by under a millisecond and can lengthen an utterance-final stop by ~40 ms.
        assert abs(got.duration_s - ref.duration_s) < 0.1
        starts = np.array([p.start_s for p in got.phones])
        ref_starts = np.array([p.start_s for p in ref.phones])
        assert np.max(np.abs(starts - ref_starts)) < 0.005
