"""In-process text-to-speech with eSpeak NG (``libespeak-ng.so.1`` through ctypes), returning the
audio together with the phoneme timings espeak-ng itself used to synthesise it.

Needs the Debian/Ubuntu packages ``libespeak-ng1`` and ``espeak-ng-data``; nothing is imported
from Python packages beyond numpy.

Timing: every ``PHONEME`` event carries ``sample``, the index of the output sample at which the
phoneme starts, counted from the start of the message (``audio_position`` is the same instant
rounded down to whole milliseconds, so the sample index is used). Measured on espeak-ng 1.51,
the first phone starts at the first non-zero sample, and a voiceless plosive's phone starts at
the first sample after its closure silence, i.e. at the release burst. Consequences for lip-sync:

* the closure of a voiceless stop (``p``, ``t``, ``k``) is silence at the *end of the previous
  phone's interval* (or before the first phone, at the start of the audio);
* espeak-ng sometimes renders a vowel and a following liquid as one formant sequence; the
  liquid's event (e.g. the ``l`` of "world") then comes at the end of that sequence and its
  interval can be short or silent.

Pauses: espeak-ng reports pauses (between clauses, sentences, at the end) as phoneme events with
an empty name. They bound the previous phone's interval but are not returned, so a pause shows
up as a gap between consecutive phones. Language-switch markers (``(en)`` ... ``(fr)`` around a
word a voice speaks with another language's rules, 7 ms each) are treated the same way. Short
word gaps (about 10 ms) carry no event and stay inside the previous phone.

libespeak-ng keeps global state, so every call into it is serialised by one module-level lock;
the library is initialised lazily on first use, once per process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EspeakError", "Phone", "Synthesis", "list_voices", "synthesize"]

_SONAME = "libespeak-ng.so.1"

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_INITIALIZE_DONT_EXIT = 0x8000  # without it a missing espeak-ng-data calls exit(1)
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0

RATE_MIN_WPM = 80  # espeakRATE_MINIMUM
RATE_MAX_WPM = 450  # espeakRATE_MAXIMUM


class EspeakError(RuntimeError):
    """libespeak-ng is missing, failed to initialise, or failed during synthesis."""


class UnknownVoice(ValueError):
    """The voice (or its ``+variant``) names no espeak-ng voice (see ``list_voices``)."""


@dataclass(frozen=True)
class Phone:
    """One phoneme of the synthesised speech.

    ``symbol`` is the IPA string espeak-ng reports in its PHONEME event (at most 8 UTF-8 bytes;
    stress marks are not included). ``start_s`` and ``end_s`` are seconds from the start of the
    returned audio, ``0 <= start_s < end_s <= duration``.
    """

    symbol: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Synthesis:
    """Synthesised speech.

    ``audio``: float32 array of shape ``[N]``, mono, in ``[-1, 1)`` (int16 samples / 32768).
    ``sample_rate``: Hz, as returned by ``espeak_Initialize`` (22050 for espeak-ng's voices).
    ``phones``: sorted by time, non-overlapping, within ``[0, N / sample_rate]``; pauses are
    gaps between phones (see the module docstring).
    """

    audio: np.ndarray
    sample_rate: int
    phones: list[Phone]

    @property
    def duration_s(self) -> float:
        """Length of ``audio`` in seconds."""
        return len(self.audio) / self.sample_rate


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    """``espeak_EVENT``: 40 bytes on LP64 (six 4-byte ints, a pointer, an 8-byte union)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    """``espeak_VOICE``; ``languages`` is a list of (priority byte, NUL-terminated name)."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class _Engine:
    """The initialised library: its functions, sample rate, voice table and the C callback.

    Only ever used with ``_LOCK`` held. ``chunks`` / ``events`` collect one synthesis.
    """

    def __init__(self) -> None:
        path = ctypes.util.find_library("espeak-ng") or _SONAME
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise EspeakError(
                f"cannot load {_SONAME} ({exc}); install it with: apt-get install libespeak-ng1"
            ) from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))

        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 100, None, options)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}); is espeak-ng-data installed?")
        self.lib = lib
        self.sample_rate = int(rate)
        self.chunks: list[bytes] = []
        self.events: list[tuple[int, str]] = []
        self.failed = False
        self.callback = _SynthCallback(self._on_synth)  # referenced here: never collected
        lib.espeak_SetSynthCallback(self.callback)

        self.voices: list[str] = []  # one key per voice, see list_voices
        self.languages: dict[str, list[str]] = {}  # key -> language codes
        self.resolve: dict[str, str] = {}  # lower-case name, code, key or id -> identifier
        self._read_voices()
        if not self.voices:
            raise EspeakError("espeak-ng lists no voices; install espeak-ng-data")
        variants = [ident.rsplit("/", 1)[-1] for ident, _, _ in self._list(b"variant")]
        self.variants = {v.lower(): v for v in variants}  # lower-case -> file name in !v/

    def _list(self, language: bytes | None) -> list[tuple[str, str, list[tuple[int, str]]]]:
        """(identifier, name, [(priority, language)]) of espeak_ListVoices, in its order."""
        spec = None
        if language is not None:
            spec = _Voice()
            spec.languages = ctypes.cast(ctypes.c_char_p(language), ctypes.c_void_p)
        table = self.lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
        out = []
        i = 0
        while table[i]:
            v = table[i].contents
            langs = []
            p = v.languages
            while p and ctypes.c_ubyte.from_address(p).value:
                priority = ctypes.c_ubyte.from_address(p).value
                code = ctypes.string_at(p + 1)
                langs.append((priority, code.decode("utf-8", "replace").lower()))
                p += len(code) + 2
            ident = (v.identifier or b"").decode("utf-8", "replace")
            out.append((ident, (v.name or b"").decode("utf-8", "replace").strip(), langs))
            i += 1
        return out

    def _read_voices(self) -> None:
        table = [t for t in self._list(None) if t[2]]
        primaries = [langs[0][1] for _, _, langs in table]
        best: dict[str, tuple[int, str]] = {}
        for ident, name, langs in table:
            base = ident.rsplit("/", 1)[-1].lower()
            code = langs[0][1]
            key = code if primaries.count(code) == 1 or base == code else base
            self.voices.append(key)
            self.languages[key] = [c for _, c in langs]
            for alias in (ident.lower(), base, name.lower()):
                self.resolve.setdefault(alias, ident)
            for priority, c in langs:
                if c not in best or priority < best[c][0]:
                    best[c] = (priority, ident)
        for code, (_, ident) in best.items():
            self.resolve.setdefault(code, ident)
        for key, ident in zip(self.voices, (t[0] for t in table)):
            self.resolve[key] = ident  # a listed key always means its own voice

    def _on_synth(self, wav: Any, n: int, events: Any) -> int:
        try:
            if wav and n > 0:
                self.chunks.append(ctypes.string_at(wav, 2 * n))
            if events:
                i = 0
                while events[i].type != _EVENT_LIST_TERMINATED:
                    e = events[i]
                    if e.type == _EVENT_PHONEME:
                        raw = bytes(e.id.string)  # up to 8 bytes; NUL-terminated if shorter
                        symbol = raw.split(b"\0", 1)[0].decode("utf-8", "ignore")
                        self.events.append((int(e.sample), symbol))
                    i += 1
        except Exception:  # noqa: BLE001 - never let an exception unwind into C; abort synthesis
            self.failed = True
            return 1
        return 0


_LOCK = threading.Lock()
_engine: _Engine | None = None


def _get_engine() -> _Engine:
    """The initialised library; call with ``_LOCK`` held. Raises EspeakError."""
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def list_voices(language: str | None = None) -> list[str]:
    """Voice identifiers accepted by :func:`synthesize`, sorted.

    Each voice is named by its primary language code as espeak-ng lists it, lower-case
    (``"en-us"``, ``"en-gb"``, ``"en-gb-scotland"``, ``"fr-fr"``), or by its file name where two
    voices share a code (``"yue-latn-jyutping"``). ``language`` (case-insensitive) keeps the
    voices that list that language or a dialect of it: ``"en"`` gives every English voice.
    Variants (``+f3``, ``+m1``, ``+whisper``, ...) are not listed; append one to any voice.

    Raises EspeakError if the library or its data is missing.
    """
    with _LOCK:
        engine = _get_engine()
        keys = engine.voices
        if language is not None:
            want = language.strip().lower()
            keys = [
                k for k in keys
                if any(c == want or c.startswith(want + "-") for c in engine.languages[k])
            ]
        return sorted(set(keys))


def _resolve_voice(engine: _Engine, voice: str) -> bytes:
    base, _, variant = voice.strip().partition("+")
    ident = engine.resolve.get(base.strip().lower())
    if ident is None:
        raise UnknownVoice(
            f"unknown espeak-ng voice {voice!r}; see runtime.audio.espeak.list_voices() (e.g. 'en-us')"
        )
    if variant:
        canonical = engine.variants.get(variant.strip().lower())
        if canonical is None:
            raise UnknownVoice(
                f"unknown espeak-ng voice variant {variant!r} in {voice!r}; variants are "
                f"{', '.join(sorted(engine.variants.values())[:12])}, ..."
            )
        ident = f"{ident}+{canonical}"
    return ident.encode("utf-8")


def _is_marker(symbol: str) -> bool:
    """Language-switch markers such as ``(en)``, reported as phonemes around foreign words."""
    return symbol.startswith("(") and symbol.endswith(")")


def synthesize(
    text: str,
    voice: str = "en-us",
    rate_wpm: int = 175,
    pitch: int = 50,
    max_chars: int = 5000,
) -> Synthesis:
    """Speak ``text`` (plain text, UTF-8; no SSML, no ``[[phonemes]]``) with espeak-ng.

    ``voice``: an entry of :func:`list_voices`, any language code, voice file name or name
    espeak-ng lists (case-insensitive), optionally with a variant: ``"en-us+f3"``.
    ``rate_wpm``: words per minute, 80–450. ``pitch``: base pitch 0–100 (50 is the voice's own).
    ``max_chars``: longest ``text`` accepted, in characters.

    Returns a :class:`Synthesis`: float32 ``[N]`` audio at the library's sample rate and the
    phones with start/end in seconds. Text with nothing to pronounce (only punctuation, say)
    can give silent audio and no phones.

    Raises ValueError for empty/whitespace-only text, text longer than ``max_chars`` or
    containing NUL, or rate/pitch out of range; ``UnknownVoice`` (a ValueError) for an unknown
    voice or variant; EspeakError if the library is missing (``apt-get install libespeak-ng1``)
    or synthesis fails.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text to synthesize is empty or whitespace only")
    if len(text) > max_chars:
        raise ValueError(f"text is {len(text)} characters, more than max_chars={max_chars}")
    if "\0" in text:
        raise ValueError("text contains a NUL character")
    if not RATE_MIN_WPM <= rate_wpm <= RATE_MAX_WPM:
        raise ValueError(f"rate_wpm={rate_wpm} outside [{RATE_MIN_WPM}, {RATE_MAX_WPM}]")
    if not 0 <= pitch <= 100:
        raise ValueError(f"pitch={pitch} outside [0, 100]")
    data = text.encode("utf-8") + b"\0"

    with _LOCK:
        engine = _get_engine()
        lib = engine.lib
        name = _resolve_voice(engine, voice)
        if lib.espeak_SetVoiceByName(name) != _EE_OK:
            raise EspeakError(f"espeak_SetVoiceByName({name.decode()!r}) failed")
        lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
        lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        engine.chunks, engine.events, engine.failed = [], [], False
        try:
            status = lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            lib.espeak_Synchronize()
            chunks, events, failed = engine.chunks, engine.events, engine.failed
        finally:
            engine.chunks, engine.events = [], []
        sample_rate = engine.sample_rate
    if status != _EE_OK:
        raise EspeakError(f"espeak_Synth failed with status {status}")
    if failed:
        raise EspeakError("reading espeak-ng's synthesis callback failed; synthesis aborted")

    pcm = np.frombuffer(b"".join(chunks), dtype=np.int16)
    audio = (pcm.astype(np.float32) / np.float32(32768.0)).astype(np.float32, copy=False)
    n = len(audio)
    # Every PHONEME event (pauses included) bounds the one before it; the last runs to the end.
    events = sorted(events, key=lambda e: e[0])  # stable: equal samples keep their order
    phones = []
    for i, (sample, symbol) in enumerate(events):
        start = min(max(sample, 0), n)
        end = min(max(events[i + 1][0], 0), n) if i + 1 < len(events) else n
        if symbol and end > start and not _is_marker(symbol):
            phones.append(Phone(symbol, start / sample_rate, end / sample_rate))
    return Synthesis(audio=audio, sample_rate=sample_rate, phones=phones)
