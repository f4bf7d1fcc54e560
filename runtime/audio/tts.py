"""Text to speech behind one small interface, chosen by configuration.

The avatar is always driven from the synthesised *audio* (the motion model listens to it), never
from a TTS engine's phoneme events, so any engine that returns audio works.

Engines, selected by a spec string (``--tts`` on the command line, ``FACECAST_TTS`` in the
environment):

* ``espeak`` (default): espeak-ng through its C library (``runtime.audio.espeak``), built in, offline,
  every language espeak-ng knows; ``voice`` is an espeak-ng voice such as ``en-us``, ``de`` or
  ``en-us+f3``.
* ``piper:/path/to/voice.onnx``: the Piper neural TTS (https://github.com/rhasspy/piper) with a
  voice file the user supplies; runs the ``piper`` executable (``$FACECAST_PIPER`` or ``piper``
  on PATH) as ``piper --model VOICE --output_file OUT.wav`` with the text on stdin.
* ``command:TEMPLATE``: any program that writes a WAV (or anything PyAV decodes). The template
  is split like a shell command line (no shell runs) and ``{text_file}``, ``{out}`` and
  ``{voice}`` are substituted, e.g.
  ``command:my-tts --in {text_file} --voice {voice} --out {out}``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

MAX_TEXT_CHARS = 5000
"""Longest text accepted by every engine, in characters."""
DEFAULT_TTS = "espeak"
COMMAND_TIMEOUT_S = 300.0
"""Longest an external TTS program may run."""


class TTSError(RuntimeError):
    """The TTS engine failed (missing program or library, bad voice file, program error)."""


@dataclass(frozen=True)
class Speech:
    """Synthesised speech: ``audio`` float32 [N] mono in [-1, 1] at ``sample_rate`` Hz."""

    audio: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


class TTS(Protocol):
    """A text-to-speech engine."""

    name: str

    def synthesize(self, text: str, voice: str | None = None) -> Speech:
        """Speak ``text``; ``voice`` is engine-specific (None: the engine's default)."""
        ...


def check_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Validate text to speak. Raises ValueError for non-str, empty/whitespace-only, longer than
    ``max_chars`` characters, or containing NUL. Returns the text unchanged."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text to speak is empty")
    if len(text) > max_chars:
        raise ValueError(f"text is {len(text)} characters; the limit is {max_chars}")
    if "\0" in text:
        raise ValueError("text contains a NUL character")
    return text


MAX_SPOKEN_CHARS_PER_S = 24.0
"""Fastest speech any engine is assumed to make, in letters and digits per second: espeak-ng
speaks 8 a second at its default 165 words a minute and 21 at its maximum of 450 (measured on an
English text with numbers). ``min_duration_s`` divides by it, so its result is a lower bound."""
SYNTHESIS_CHUNK_CHARS = 240
"""Longest piece of text synthesised at once by ``split_for_synthesis``' callers: bounds the
audio (and the engine's memory) one synthesis call holds, about 30 s at the default rate."""
_SENTENCE_END = re.compile(r"(?<=[.!?;:。！？])\s+|\n\s*\n")
_SOFT_BREAK = re.compile(r"(?<=[,)\]–—])\s+|\s+")


def min_duration_s(text: str) -> float:
    """A lower bound of how long ``text`` takes to speak, in seconds: its letters and digits
    over ``MAX_SPOKEN_CHARS_PER_S`` (numbers and abbreviations only make speech longer). Lets a
    server refuse text that cannot fit its audio buffer before synthesising any of it."""
    return sum(c.isalnum() for c in text) / MAX_SPOKEN_CHARS_PER_S


def split_for_synthesis(text: str, max_chars: int = SYNTHESIS_CHUNK_CHARS) -> list[str]:
    """Split ``text`` into pieces of at most ``max_chars`` characters to synthesise one after
    another: at sentence ends (``. ! ? ; :`` and blank lines) where possible, else at commas or
    spaces, else hard. Joining the pieces with spaces gives the text back up to whitespace;
    pieces with no letter or digit are dropped (an engine would speak nothing). Raises
    ValueError for ``max_chars < 1``."""
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(text.strip()):
        for word in _pieces_of(sentence.strip(), max_chars):
            joined = f"{current} {word}" if current else word
            if len(joined) <= max_chars:
                current = joined
            else:
                pieces.append(current)
                current = word
    if current:
        pieces.append(current)
    return [p for p in pieces if any(c.isalnum() for c in p)]


def _pieces_of(sentence: str, max_chars: int) -> list[str]:
    """A sentence as one piece, or cut at soft breaks (then hard) into pieces ≤ max_chars."""
    if len(sentence) <= max_chars:
        return [sentence] if sentence else []
    out: list[str] = []
    for word in _SOFT_BREAK.split(sentence):
        while len(word) > max_chars:
            out.append(word[:max_chars])
            word = word[max_chars:]
        if word:
            out.append(word)
    return out


@dataclass(frozen=True)
class EspeakTTS:
    """espeak-ng via its library. ``rate_wpm`` 80–450 words per minute; ``pitch`` 0–100."""

    default_voice: str = "en-us"
    rate_wpm: int = 165
    pitch: int = 50
    name: str = "espeak"

    def synthesize(self, text: str, voice: str | None = None) -> Speech:
        """Raises ValueError (bad text, unknown voice) or ``runtime.audio.espeak.EspeakError``."""
        from runtime.audio.espeak import synthesize

        check_text(text)
        out = synthesize(text, voice or self.default_voice, rate_wpm=self.rate_wpm,
                         pitch=self.pitch, max_chars=MAX_TEXT_CHARS)
        return Speech(out.audio, out.sample_rate)


@dataclass(frozen=True)
class CommandTTS:
    """An external program that writes an audio file; see the module docstring for the template.

    ``argv``: the template's words; ``default_voice`` replaces ``{voice}`` when none is given.
    """

    argv: tuple[str, ...]
    default_voice: str = ""
    name: str = "command"

    def synthesize(self, text: str, voice: str | None = None) -> Speech:
        """Raises ValueError for bad text, TTSError if the program is missing, fails, times out
        or writes nothing decodable."""
        from runtime.audio.decode import load_audio

        check_text(text)
        with tempfile.TemporaryDirectory(prefix="facecast-tts-") as tmp:
            text_file = Path(tmp) / "text.txt"
            text_file.write_text(text, encoding="utf-8")
            out = Path(tmp) / "speech.wav"
            subs = {"text_file": str(text_file), "out": str(out),
                    "voice": voice or self.default_voice}
            argv = [word.format(**subs) for word in self.argv]
            stdin_text = None if "{text_file}" in " ".join(self.argv) else text
            _run(argv, stdin_text)
            if not out.is_file() or out.stat().st_size == 0:
                raise TTSError(f"{argv[0]} wrote no audio to {out}")
            try:
                audio, rate = load_audio(out)
            except ValueError as exc:
                raise TTSError(f"{argv[0]} wrote audio that cannot be read: {exc}") from exc
        return Speech(audio, rate)


def _run(argv: list[str], stdin_text: str | None) -> None:
    exe = shutil.which(argv[0])
    if exe is None:
        raise TTSError(f"TTS program not found: {argv[0]!r} (install it or fix the --tts spec)")
    try:
        proc = subprocess.run([exe, *argv[1:]], input=(stdin_text or "").encode("utf-8"),
                              capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise TTSError(f"{argv[0]} took longer than {COMMAND_TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise TTSError(f"{argv[0]} exited with status {proc.returncode}: {tail[0]}")


def piper_tts(voice_file: str | os.PathLike[str]) -> CommandTTS:
    """Piper with the voice model ``voice_file`` (``.onnx``, its ``.onnx.json`` beside it).

    Raises ValueError if the voice file does not exist.
    """
    path = Path(voice_file).expanduser()
    if not path.is_file():
        raise ValueError(f"Piper voice file not found: {path}")
    exe = os.environ.get("FACECAST_PIPER", "piper")
    return CommandTTS((_literal(exe), "--model", _literal(str(path)), "--output_file", "{out}"),
                      name="piper")


def _literal(text: str) -> str:
    """``text`` escaped for the argv template (``str.format``): braces in a path stay braces."""
    return text.replace("{", "{{").replace("}", "}}")


def make_tts(spec: str | None = None) -> TTS:
    """The engine a spec string names (see the module docstring); None → ``$FACECAST_TTS`` or
    ``espeak``. Raises ValueError for an unknown or malformed spec."""
    spec = (spec or os.environ.get("FACECAST_TTS") or DEFAULT_TTS).strip()
    kind, _, arg = spec.partition(":")
    if kind == "espeak":
        return EspeakTTS(default_voice=arg or "en-us")
    if kind == "piper":
        if not arg:
            raise ValueError("--tts piper needs a voice file: piper:/path/to/voice.onnx")
        return piper_tts(arg)
    if kind == "command":
        try:
            argv = tuple(shlex.split(arg))
        except ValueError as exc:
            raise ValueError(f"cannot parse the TTS command template: {exc}") from exc
        if not argv:
            raise ValueError("--tts command: needs a program, e.g. command:my-tts --out {out}")
        if not any("{out}" in w for w in argv):
            raise ValueError("--tts command template must contain {out} (the WAV it writes)")
        try:
            [w.format(text_file="", out="", voice="") for w in argv]
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            raise ValueError(f"bad placeholder in the TTS command template: {exc}") from exc
        return CommandTTS(argv)
    raise ValueError(f"unknown TTS {spec!r}: use espeak[:VOICE], piper:VOICE.onnx or "
                     "command:TEMPLATE")
