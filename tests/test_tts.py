"""runtime.audio.tts: engine selection, espeak-ng, and real external programs behind command:/piper:."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.audio.tts import (
    MAX_TEXT_CHARS,
    CommandTTS,
    EspeakTTS,
    Speech,
    TTSError,
    check_text,
    make_tts,
)


def _have_espeak() -> bool:
    try:
        ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
    except OSError:
        return False
    return True


needs_espeak = pytest.mark.skipif(
    not _have_espeak(), reason="libespeak-ng not installed (apt-get install libespeak-ng1)"
)

BAD_TEXTS = ["", "   \n\t ", "a" * (MAX_TEXT_CHARS + 1), "Hello\0world"]

# A stand-in TTS program: a 440 Hz tone, 10 ms per character of text, 16-bit mono WAV at RATE
# (the voice "fast" selects 22050 Hz instead). It logs what it received as JSON to LOG.
FAKE_TTS = r'''
import json, math, struct, sys, wave

args = sys.argv[1:]
log = args.pop()
if args[0] == "--stdin":
    text, out, voice = sys.stdin.read(), args[1], args[2]
    source = "stdin"
else:
    with open(args[0], encoding="utf-8") as f:
        text = f.read()
    out, voice = args[1], args[2]
    source = args[0]
rate = 22050 if voice == "fast" else 16000
n = rate * len(text) // 100
with wave.open(out, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(b"".join(struct.pack("<h", int(16000 * math.sin(2 * math.pi * 440 * i / rate)))
                           for i in range(n)))
with open(log, "w", encoding="utf-8") as f:
    json.dump({"text": text, "voice": voice, "source": source}, f)
'''

# A stand-in for the piper executable: same command line shape (--model M --output_file OUT,
# text on stdin). Writes a tone 10 ms per character at 22050 Hz and logs its arguments to
# $FAKE_PIPER_LOG.
FAKE_PIPER = r'''
import argparse, json, os, sys, wave

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--output_file", required=True)
a = ap.parse_args()
text = sys.stdin.read()
with open(a.model, encoding="utf-8") as f:
    model_text = f.read()
n = 22050 * len(text) // 100
with wave.open(a.output_file, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(22050)
    w.writeframes(b"\x00\x10" * n)
with open(os.environ["FAKE_PIPER_LOG"], "w", encoding="utf-8") as f:
    json.dump({"model": a.model, "model_text": model_text, "text": text}, f)
'''


def _script(tmp_path: Path, name: str, body: str, executable: bool = False) -> Path:
    path = tmp_path / name
    if executable:
        body = f"#!{sys.executable}\n{body}"
    path.write_text(body, encoding="utf-8")
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _check_speech(s: Speech, rate: int) -> None:
    assert isinstance(s, Speech)
    assert s.sample_rate == rate
    assert s.audio.dtype == np.float32 and s.audio.ndim == 1
    assert np.all(np.abs(s.audio) <= 1.0)
    assert np.max(np.abs(s.audio)) > 0.05


# ---- check_text and make_tts ------------------------------------------------------------------


@pytest.mark.parametrize("text", BAD_TEXTS, ids=["empty", "blank", "too-long", "nul"])
def test_check_text_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        check_text(text)


def test_check_text_accepts_the_limit() -> None:
    text = "a" * MAX_TEXT_CHARS
    assert check_text(text) is text
    assert check_text(" hi ") == " hi "
    with pytest.raises(ValueError):
        check_text(None)  # type: ignore[arg-type]


def test_make_tts_default_is_espeak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACECAST_TTS", raising=False)
    for tts in (make_tts(), make_tts(""), make_tts("espeak")):
        assert isinstance(tts, EspeakTTS)
        assert tts.default_voice == "en-us"
        assert tts.name == "espeak"
    de = make_tts("espeak:de")
    assert isinstance(de, EspeakTTS) and de.default_voice == "de"


def test_env_var_selects_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACECAST_TTS", "espeak:de")
    tts = make_tts()
    assert isinstance(tts, EspeakTTS) and tts.default_voice == "de"
    monkeypatch.setenv("FACECAST_TTS", f"command:{sys.executable} tts.py {{text_file}} {{out}}")
    tts = make_tts()
    assert isinstance(tts, CommandTTS)
    assert tts.argv == (sys.executable, "tts.py", "{text_file}", "{out}")
    # An explicit spec wins over the environment.
    assert isinstance(make_tts("espeak"), EspeakTTS)
    monkeypatch.setenv("FACECAST_TTS", "festival")
    with pytest.raises(ValueError):
        make_tts()


@pytest.mark.parametrize("spec", [
    "festival",
    "festival:voice",
    "command:",
    "command:my-tts --in {text_file}",  # no {out}
    "command:my-tts {out} {foo}",  # unknown placeholder
    "command:my-tts {out} {0}",  # positional placeholder
    "command:my-tts {out} 'unbalanced",  # shlex cannot parse it
    "piper:",
])
def test_make_tts_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        make_tts(spec)


@pytest.mark.parametrize("spec", ["command:my-tts {out} {voice.x}",
                                  "command:my-tts {out} {voice[x]}"])
def test_make_tts_rejects_attribute_placeholders(spec: str) -> None:
    with pytest.raises(ValueError):
        make_tts(spec)


# ---- espeak -----------------------------------------------------------------------------------


@needs_espeak
def test_espeak_hello_world() -> None:
    s = make_tts("espeak").synthesize("Hello world")
    _check_speech(s, 22050)
    assert 0.5 <= s.duration_s <= 3.0
    assert s.duration_s == len(s.audio) / 22050


@needs_espeak
def test_espeak_german_voice() -> None:
    text = "Guten Tag, wie geht es Ihnen?"
    de = make_tts("espeak:de").synthesize(text)
    _check_speech(de, 22050)
    assert 0.5 <= de.duration_s <= 5.0
    # espeak-ng's output varies by a few samples from call to call, so compare durations: the
    # voice argument gives the spec's voice; English reads the same text quite differently.
    same = EspeakTTS().synthesize(text, voice="de")
    assert same.duration_s == pytest.approx(de.duration_s, rel=0.02)
    en = EspeakTTS().synthesize(text)
    assert abs(en.duration_s - de.duration_s) > 0.1


@needs_espeak
def test_espeak_unknown_voice() -> None:
    with pytest.raises(ValueError):
        EspeakTTS().synthesize("Hello", voice="xx-nonexistent")
    with pytest.raises(ValueError):
        make_tts("espeak:xx-nonexistent").synthesize("Hello")


@needs_espeak
@pytest.mark.parametrize("text", BAD_TEXTS, ids=["empty", "blank", "too-long", "nul"])
def test_espeak_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError):
        EspeakTTS().synthesize(text)


# ---- command: with a real external program ----------------------------------------------------


def _command_tts(tmp_path: Path, *, stdin: bool = False) -> tuple[CommandTTS, Path]:
    script = _script(tmp_path, "fake_tts.py", FAKE_TTS)
    log = tmp_path / "log.json"
    source = "--stdin" if stdin else "{text_file}"
    tts = make_tts(f"command:{sys.executable} {script} {source} {{out}} {{voice}} {log}")
    assert isinstance(tts, CommandTTS) and tts.name == "command"
    return tts, log


def test_command_reads_text_file_and_writes_wav(tmp_path: Path) -> None:
    tts, log = _command_tts(tmp_path)
    text = "Hello there, {braces} and ünïcödé"
    s = tts.synthesize(text, voice="alice")
    _check_speech(s, 16000)
    assert len(s.audio) == 16000 * len(text) // 100
    got = json.loads(log.read_text(encoding="utf-8"))
    assert got["text"] == text and got["voice"] == "alice"
    assert got["source"].endswith("text.txt")
    assert not Path(got["source"]).exists()  # the temporary directory is cleaned up


def test_command_voice_changes_output_and_defaults_to_empty(tmp_path: Path) -> None:
    tts, log = _command_tts(tmp_path)
    s = tts.synthesize("Fast speech", voice="fast")
    _check_speech(s, 22050)
    assert len(s.audio) == 22050 * len("Fast speech") // 100
    s = tts.synthesize("No voice")
    assert s.sample_rate == 16000
    assert json.loads(log.read_text(encoding="utf-8"))["voice"] == ""


def test_command_text_on_stdin(tmp_path: Path) -> None:
    tts, log = _command_tts(tmp_path, stdin=True)
    text = "Read me from standard input"
    s = tts.synthesize(text, voice="bob")
    _check_speech(s, 16000)
    assert len(s.audio) == 16000 * len(text) // 100
    got = json.loads(log.read_text(encoding="utf-8"))
    assert got == {"text": text, "voice": "bob", "source": "stdin"}


@pytest.mark.parametrize("text", BAD_TEXTS, ids=["empty", "blank", "too-long", "nul"])
def test_command_rejects_bad_text_before_running(tmp_path: Path, text: str) -> None:
    tts, log = _command_tts(tmp_path)
    with pytest.raises(ValueError):
        tts.synthesize(text)
    assert not log.exists()


def test_command_nonzero_exit(tmp_path: Path) -> None:
    script = _script(tmp_path, "fail.py",
                     "import sys\nsys.stderr.write('warming up\\nvoice model is corrupt\\n')\n"
                     "sys.exit(3)\n")
    tts = make_tts(f"command:{sys.executable} {script} {{out}}")
    with pytest.raises(TTSError) as exc:
        tts.synthesize("Hello")
    msg = str(exc.value)
    assert "status 3" in msg
    assert "voice model is corrupt" in msg


def test_command_writes_nothing(tmp_path: Path) -> None:
    script = _script(tmp_path, "silent.py", "import sys\nsys.exit(0)\n")
    tts = make_tts(f"command:{sys.executable} {script} {{out}}")
    with pytest.raises(TTSError, match="no audio"):
        tts.synthesize("Hello")


def test_command_writes_garbage(tmp_path: Path) -> None:
    script = _script(tmp_path, "garbage.py",
                     "import sys\nopen(sys.argv[1], 'w').write('not a wav file\\n' * 10)\n")
    tts = make_tts(f"command:{sys.executable} {script} {{out}}")
    with pytest.raises(TTSError, match="cannot be read"):
        tts.synthesize("Hello")


def test_command_missing_program(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tts-program"
    for spec in (f"command:{missing} {{out}}", "command:facecast-no-such-tts-xyz --out {out}"):
        with pytest.raises(TTSError, match="not found"):
            make_tts(spec).synthesize("Hello")


# ---- piper: ---------------------------------------------------------------------------------
# These check the plumbing (spec parsing, $FACECAST_PIPER, the command line and stdin that
# runtime.audio.tts gives piper, decoding its output), not Piper itself, which is not installed here.


def test_piper_missing_voice_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        make_tts(f"piper:{tmp_path / 'missing.onnx'}")


def test_piper_runs_the_configured_executable(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    voice = tmp_path / "en_US-test-medium.onnx"
    voice.write_text("dummy voice model", encoding="utf-8")
    fake = _script(tmp_path, "fake-piper", FAKE_PIPER, executable=True)
    log = tmp_path / "piper.json"
    monkeypatch.setenv("FACECAST_PIPER", str(fake))
    monkeypatch.setenv("FAKE_PIPER_LOG", str(log))
    tts = make_tts(f"piper:{voice}")
    assert isinstance(tts, CommandTTS) and tts.name == "piper"
    text = "Piper says hello"
    s = tts.synthesize(text)
    assert s.sample_rate == 22050
    assert len(s.audio) == 22050 * len(text) // 100
    assert s.audio.dtype == np.float32 and np.all(s.audio == s.audio[0]) and s.audio[0] > 0
    got = json.loads(log.read_text(encoding="utf-8"))
    assert got == {"model": str(voice), "model_text": "dummy voice model", "text": text}


def test_piper_executable_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    voice = tmp_path / "voice.onnx"
    voice.write_text("dummy", encoding="utf-8")
    monkeypatch.setenv("FACECAST_PIPER", str(tmp_path / "no-piper-here"))
    with pytest.raises(TTSError, match="not found"):
        make_tts(f"piper:{voice}").synthesize("Hello")


def test_piper_voice_path_with_braces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    voice = tmp_path / "voice{x}.onnx"
    voice.write_text("dummy voice model", encoding="utf-8")
    fake = _script(tmp_path, "fake-piper", FAKE_PIPER, executable=True)
    monkeypatch.setenv("FACECAST_PIPER", str(fake))
    monkeypatch.setenv("FAKE_PIPER_LOG", str(tmp_path / "piper.json"))
    assert make_tts(f"piper:{voice}").synthesize("Hello").sample_rate == 22050


def test_piper_reads_env_at_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    voice = tmp_path / "voice.onnx"
    voice.write_text("dummy", encoding="utf-8")
    monkeypatch.delenv("FACECAST_PIPER", raising=False)
    tts = make_tts(f"piper:{voice}")
    assert isinstance(tts, CommandTTS)
    assert tts.argv == ("piper", "--model", str(voice), "--output_file", "{out}")
    assert os.environ.get("FACECAST_PIPER") is None
