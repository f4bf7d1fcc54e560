"""tools.speech.asterisk on the real Asterisk prompts with real pocketsphinx.

The prompts come from the Debian package asterisk-core-sounds-en-g722 (the project's CI installs
it); without it the tests that need audio skip. A few prompts only, so this runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pocketsphinx", reason="pocketsphinx (forced aligner) is not installed")
pytest.importorskip("av", reason="PyAV (G.722 decoder) is not installed")

import itertools

from tools.speech import asterisk as S

needs_sounds = pytest.mark.skipif(
    not (S.SOUNDS_DIR.is_dir() and S.TRANSCRIPTS.is_file()),
    reason="apt package asterisk-core-sounds-en-g722 is not installed "
    f"({S.SOUNDS_DIR} or {S.TRANSCRIPTS} missing); CI installs it",
)


@pytest.fixture(scope="module")
def prompts() -> dict[str, S.Prompt]:
    found = S.find_prompts()
    if not found:
        pytest.skip("apt package asterisk-core-sounds-en-g722 is not installed; CI installs it")
    return {p.name: p for p in found}


# --------------------------------------------------------------------------------------------
# Prompts and audio
# --------------------------------------------------------------------------------------------

@needs_sounds
def test_find_prompts_finds_the_speech_prompts(prompts: dict[str, S.Prompt]) -> None:
    assert len(prompts) > 500
    assert prompts["agent-pass"].text.startswith("Please enter your password")
    assert prompts["digits/1"].path == S.SOUNDS_DIR / "digits" / "1.g722"
    assert all(p.path.is_file() and p.path.suffix == ".g722" for p in prompts.values())
    # Bracketed non-speech descriptions are skipped; speech with a bracketed note is kept.
    assert "beep" not in prompts and "silence/1" not in prompts and "tt-monkeys" not in prompts
    assert "letters/at" in prompts


@needs_sounds
@pytest.mark.parametrize("name", ["agent-pass", "digits/1"])
def test_load_audio_is_16khz_float_of_the_right_length(
        prompts: dict[str, S.Prompt], name: str) -> None:
    path = prompts[name].path
    audio = S.load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    expected_s = path.stat().st_size / 8000  # G.722 is 64 kbit/s
    assert abs(len(audio) / S.SAMPLE_RATE - expected_s) < 0.2 * expected_s
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.05
    assert np.sqrt(np.mean(audio**2)) > 0.005  # speech, not silence


def test_load_audio_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        S.load_audio(tmp_path / "missing.g722")
    empty = tmp_path / "empty.g722"
    empty.write_bytes(b"")
    with pytest.raises(ValueError):
        S.load_audio(empty)


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("Press 1 to accept.", "press one to accept"),
    ("The 1st, 2nd, 3rd, 12th and 21st", "the first second third twelfth and twenty first"),
    ("24 hours, 100 users, 1,250", ("twenty four hours one hundred users one thousand two hundred "
                                   "fifty")),
    ("at 2:30 or 2:05pm or 2:00", "at two thirty or two oh five p m or two o'clock"),
    ("at 7 a.m. or 11:45 PM", "at seven a m or eleven forty five p m"),
    ("in 1999 and in 2005", "in nineteen ninety nine and in two thousand five"),
    ("dial 500, extension 1234", "dial five zero zero extension one two three four"),
    ("a 28.8 kilobit modem & 3D", "a twenty eight point eight kilobit modem and three d"),
    ("Call-Forward on No Answer.", "call forward on no answer"),
    ("press * or #", "press star or pound"),
    ("IAX (note: does not say \"2\")", "iax"),
    ("at [@]", "at"),
    ("polite \"don't call\" menu", "polite don't call menu"),
    ("the PBX at www.asterisk.org", "the p b x at w w w dot asterisk dot org"),
    ("exclaimation-point, forevermore, rerecord", "exclamation point forever more re record"),
    ("Waldo's premier H.323", "waldo's premier h three two three"),
])
def test_normalise_text(text: str, words: str) -> None:
    assert S.normalise_text(text) == words.split()


def test_normalised_words_are_all_pronounceable() -> None:
    text = "Umute the xray of Digium's 42nd lowercase witheld $5 50% zzqxv"
    words = S.normalise_text(text)
    assert words and all(S.pronunciation(w) is not None for w in words)
    assert words[:2] == ["un", "mute"] and "withheld" in words and "percent" in words


@needs_sounds
def test_every_prompt_normalises_to_known_words(prompts: dict[str, S.Prompt]) -> None:
    for prompt in prompts.values():
        words = S.normalise_text(prompt.text)
        assert words, prompt.name
        assert all(S.pronunciation(w) is not None for w in words), (prompt.name, words)


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------

def _check_phones(phones: list[S.Phone], duration_s: float) -> None:
    assert phones
    assert phones[0].start_s == 0.0
    assert phones[-1].end_s == pytest.approx(duration_s, abs=1e-3)
    for a, b in itertools.pairwise(phones):
        assert a.end_s == pytest.approx(b.start_s, abs=1e-6)  # contiguous, in order
    for p in phones:
        assert p.end_s > p.start_s
        assert p.symbol in S.ARPABET or p.symbol == "SIL"
        if p.symbol != "SIL":
            assert p.end_s - p.start_s >= 0.03 - 1e-6  # 3 HMM states at 10 ms


@needs_sounds
def test_align_places_the_bilabials_of_please_password_pound(
        prompts: dict[str, S.Prompt]) -> None:
    prompt = prompts["agent-pass"]  # "Please enter your password followed by the pound key."
    audio = S.load_audio(prompt.path)
    duration = len(audio) / S.SAMPLE_RATE
    words = S.normalise_text(prompt.text)
    assert words == ["please", "enter", "your", "password", "followed", "by", "the", "pound", "key"]
    phones = S.align(audio, words)
    _check_phones(phones, duration)
    speech = [p.symbol for p in phones if p.symbol != "SIL"]
    assert speech[:4] == ["P", "L", "IY", "Z"]
    assert speech[-2:] == ["K", "IY"]
    bilabials = [p for p in phones if p.symbol == "P"]
    assert len(bilabials) == 3  # please, password, pound
    please, password, pound = bilabials
    assert please.start_s < 0.3
    assert 0.15 * duration < password.start_s < 0.4 * duration
    assert 0.6 * duration < pound.start_s < 0.9 * duration
    assert all(0.03 <= p.end_s - p.start_s <= 0.25 for p in bilabials)
    # Phones unpack like the (symbol, start_s, end_s) tuples elsewhere in the project.
    symbol, start, end = please
    assert (symbol, start, end) == (please.symbol, please.start_s, please.end_s)


@needs_sounds
def test_align_a_prompt_with_a_number(prompts: dict[str, S.Prompt]) -> None:
    prompt = prompts["vm-delete"]  # "Press 7 to delete this message."
    audio = S.load_audio(prompt.path)
    words = S.normalise_text(prompt.text)
    assert words[:2] == ["press", "seven"]
    result = S.align_full(audio, words)
    _check_phones(result.phones, len(audio) / S.SAMPLE_RATE)
    first = next(p for p in result.phones if p.symbol != "SIL")
    assert first.symbol == "P" and first.start_s < 0.3
    spoken = [w.split("(")[0] for w, _, _ in result.words if w != "<sil>"]  # to(2) → to
    assert spoken == words
    starts = [s for _, s, _ in result.words]
    assert starts == sorted(starts)
    seven = next((s, e) for w, s, e in result.words if w.startswith("seven"))
    assert 0.15 < seven[0] < seven[1] < 0.5 * len(audio) / S.SAMPLE_RATE


@needs_sounds
def test_align_errors(prompts: dict[str, S.Prompt]) -> None:
    audio = S.load_audio(prompts["digits/1"].path)
    with pytest.raises(S.AlignmentError) as err:
        S.align(audio, [])
    assert err.value.reason == "no_words"
    with pytest.raises(S.AlignmentError) as err:
        S.align(audio, ["one", "zzqxvw"])
    assert err.value.reason == "oov"
    with pytest.raises(S.AlignmentError) as err:
        S.align(audio[:1600], ["please", "enter", "your", "password", "followed", "by", "the", "pound", "key"])
    assert err.value.reason == "audio_too_short"
    with pytest.raises(ValueError):
        S.align(np.zeros((2, 1600), np.float32), ["one"])


# --------------------------------------------------------------------------------------------
# Held-out split
# --------------------------------------------------------------------------------------------

def test_heldout_list_follows_its_rule() -> None:
    names = S.heldout_names()
    assert names == sorted(set(names)) and names
    assert all(S.heldout_rule(n) for n in names)
    assert all(S.is_heldout(n) for n in names)
    assert not S.is_heldout("no-such-prompt")
    # The rule is a pure function of the name.
    assert [S.heldout_rule(n) for n in ("vm-goodbye", "digits/1")] * 2 == [
        S.heldout_rule(n) for n in ("vm-goodbye", "digits/1", "vm-goodbye", "digits/1")]


@needs_sounds
def test_committed_heldout_list_is_current_and_about_15_percent(
        prompts: dict[str, S.Prompt]) -> None:
    committed = S.HELDOUT_FILE.read_text(encoding="utf-8")
    assert committed == S.make_heldout(list(prompts)), "regenerate with --make-heldout"
    assert S.make_heldout(list(prompts)) == S.make_heldout(sorted(prompts, reverse=True))
    held = [n for n in prompts if S.is_heldout(n)]
    assert set(held) == set(S.heldout_names())
    assert 0.12 <= len(held) / len(prompts) <= 0.18
