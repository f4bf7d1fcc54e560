"""Phone-aligned speech from the Asterisk core prompts (one professional voice, 16 kHz G.722).

The Debian package ``asterisk-core-sounds-en-g722`` installs about 570 telephony prompts read by
one speaker ("Allison") as raw G.722 files; ``asterisk-core-sounds-en`` documents each one with a
``name: Text.`` line. This module finds the prompts, decodes them in-process with PyAV, turns the
transcripts into words the pocketsphinx dictionary knows, and force-aligns them to ARPAbet phones
with pocketsphinx 5 (bundled en-us acoustic model and CMU dictionary).

CLI::

    python -m tools.speech.asterisk --out DIR [--limit N] [--jobs 2]   # DIR/alignments.json
    python -m tools.speech.asterisk --make-heldout                    # rewrite heldout.txt

``alignments.json`` maps each aligned prompt name to ``{"text", "words", "word_times", "phones",
"duration_s", "score_per_frame", "wide_beam"}``: ``words`` is the normalised word list given to
the aligner, ``word_times`` is ``[[word, start_s, end_s], ...]`` as the aligner placed them
(``<sil>`` for pauses, alternative pronunciations marked ``word(2)``), ``phones`` is
``[[symbol, start_s, end_s], ...]`` contiguous from 0 to ``duration_s`` (seconds),
``score_per_frame`` the aligner's acoustic log score per 10 ms frame (higher fits better; short
isolated words score lowest) and ``wide_beam`` whether the default beams lost every path and the
retry with ``WIDE_BEAM`` was needed. A JSON summary goes to stdout, failures to stderr.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import multiprocessing
import re
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
"""Hz, of the prompts and of everything this module returns."""
FRAME_S = 0.01
"""Seconds per pocketsphinx frame (its default 100 frames/s)."""

SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
"""The voice's own folder (the ``en``/``en_US`` symlinks go through alternatives and may dangle)."""
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
"""One ``name: Text.`` line per prompt; ``;`` starts a comment line."""
HELDOUT_FILE = Path(str(resources.files("runtime.evals") / "heldout.txt"))
"""The committed held-out list, shipped as package data of ``runtime.evals``."""
HELDOUT_FRACTION = 0.15

ARPABET = frozenset(
    ["AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH"]
)
"""The 39 ARPAbet phones of the CMU dictionary, without stress digits."""

EXTRA_LEXICON: dict[str, str] = {
    # Asterisk's own vocabulary, missing from the CMU dictionary (ARPAbet, no stress digits).
    "dahdi": "D AA D IY",
    "digium": "D IH JH IY AH M",
    "iax": "IY K S",  # "eeks" in the spy-* prompts; spelled out in demo-instruct
    "iax(2)": "AY EY EH K S",
    "unistim": "Y UW N IH S T IH M",
}
"""Pronunciations added to the pocketsphinx dictionary before aligning."""


@dataclass(frozen=True)
class Phone:
    """One aligned phone. Unpacks and indexes like the tuple ``(symbol, start_s, end_s)``.

    ``symbol`` is an upper-case ARPAbet phone without stress digits (``"AA"``, ``"P"``) or ``"SIL"``
    for silence; ``start_s`` and ``end_s`` are seconds from the start of the audio.
    """

    symbol: str
    start_s: float
    end_s: float

    def __iter__(self) -> Iterator[Any]:
        return iter((self.symbol, self.start_s, self.end_s))

    def __getitem__(self, index: int) -> Any:
        return (self.symbol, self.start_s, self.end_s)[index]

    def __len__(self) -> int:
        return 3


@dataclass(frozen=True)
class Prompt:
    """One speech prompt: ``name`` as in the transcript file (``"vm-goodbye"``, ``"digits/1"``),
    ``path`` to its ``.g722`` file, ``text`` its transcript exactly as the package gives it."""

    name: str
    path: Path
    text: str


class AlignmentError(RuntimeError):
    """Forced alignment failed. ``reason`` is a short machine-readable category: ``"no_words"``,
    ``"oov"``, ``"audio_too_short"``, ``"search_failed"`` or ``"decoder_error"``."""

    def __init__(self, message: str, reason: str = "search_failed") -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Prompts and audio
# --------------------------------------------------------------------------------------------

_NON_SPEECH = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>")
"""Bracketed descriptions: ``[ascending tones]``, ``(1 second of silence)``, ``<beep>``."""


def read_transcripts(path: Path = TRANSCRIPTS) -> dict[str, str]:
    """``{name: text}`` from the package's gzipped transcript list (text as given, stripped).

    Raises ``FileNotFoundError`` if the documentation file is missing.
    """
    out: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(";") or ":" not in line:
                continue
            name, text = line.split(":", 1)
            out[name.strip()] = text.strip()
    return out


def is_speech(text: str) -> bool:
    """False for transcripts that are only bracketed non-speech descriptions."""
    return bool(re.search(r"[A-Za-z0-9]", _NON_SPEECH.sub(" ", text)))


def find_prompts(sounds_dir: Path = SOUNDS_DIR, transcripts: Path = TRANSCRIPTS) -> list[Prompt]:
    """All prompts with both a ``.g722`` file and a spoken transcript, sorted by name.

    Prompts whose transcript is only a bracketed description (``[beep]``, ``(5 seconds of
    silence)``) are skipped. Returns ``[]`` if the sounds folder or transcript file is missing.
    """
    if not sounds_dir.is_dir() or not transcripts.is_file():
        return []
    prompts = []
    for name, text in sorted(read_transcripts(transcripts).items()):
        path = sounds_dir / f"{name}.g722"
        if path.is_file() and is_speech(text):
            prompts.append(Prompt(name, path, text))
    return prompts


def load_audio(path: Path) -> np.ndarray:
    """Decode a raw G.722 file in-process with PyAV.

    Returns float32 [N] mono samples at 16 kHz in [-1, 1]. The decoder's output is resampled
    (``av.AudioResampler``) if its rate, layout or sample format differ from 16 kHz mono s16.
    Raises ``FileNotFoundError`` if ``path`` does not exist and ``ValueError`` if it holds no
    decodable audio.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path), format="g722") as container:
            if not container.streams.audio:
                raise ValueError(f"{path}: no audio stream")
            resampler: av.AudioResampler | None = None
            for frame in container.decode(audio=0):
                if (resampler is None and frame.sample_rate == SAMPLE_RATE
                        and frame.layout.name == "mono" and frame.format.name == "s16"):
                    chunks.append(frame.to_ndarray().reshape(-1).astype(np.float32) / 32768.0)
                    continue
                if resampler is None:
                    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1).astype(np.float32) / 32768.0)
            if resampler is not None:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1).astype(np.float32) / 32768.0)
    except av.FFmpegError as exc:
        raise ValueError(f"{path}: cannot decode as G.722: {exc}") from exc
    if not chunks:
        raise ValueError(f"{path}: no audio decoded")
    return np.concatenate(chunks).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# Text normalisation
# --------------------------------------------------------------------------------------------

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                      "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_MONTHS = frozenset(["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"])
_YEAR_CUES = frozenset(["in", "since", "until", "till", "year", "from", "by", "of", "circa"])
_DIGIT_CUES = frozenset(["dial", "extension", "ext", "password", "pin", "code", "number", "mailbox"])
_SYMBOL_WORDS = {"&": "and", "@": "at", "+": "plus", "=": "equals", "%": "percent",
                 "*": "star", "#": "pound"}


def _cardinal(n: int) -> list[str]:
    """Words of a non-negative integer, American style without "and": 1234 → one thousand two
    hundred thirty four."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (_cardinal(n % 100) if n % 100 else [])
    for scale, word in _SCALES:
        if n >= scale:
            rest = n % scale
            return _cardinal(n // scale) + [word] + (_cardinal(rest) if rest else [])
    raise AssertionError("unreachable")


def _ordinal(n: int) -> list[str]:
    """Words of an ordinal: 1 → first, 24 → twenty fourth, 100 → one hundredth."""
    words = _cardinal(n)
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return words[:-1] + [last]


def _digits(s: str) -> list[str]:
    """Digit by digit: "4242" → four two four two."""
    return [_ONES[int(c)] for c in s if c.isdigit()]


def _two_digits(n: int) -> list[str]:
    """Words for 0..99 as the second half of a year or clock time: 5 → oh five, 0 → []."""
    if n == 0:
        return []
    if n < 10:
        return ["oh", _ONES[n]]
    return _cardinal(n)


def _year(n: int) -> list[str]:
    """Words of a year: 1999 → nineteen ninety nine, 1905 → nineteen oh five, 1900 → nineteen
    hundred, 2005 → two thousand five, 2024 → twenty twenty four."""
    if 2000 <= n <= 2009 or n % 1000 == 0:
        return _cardinal(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return _cardinal(hi) + ["hundred"]
    return _cardinal(hi) + _two_digits(lo)


def _time(hours: int, minutes: int) -> list[str]:
    """Clock time: 2:30 → two thirty, 2:05 → two oh five, 2:00 → two o'clock."""
    if minutes == 0:
        return _cardinal(hours) + ["o'clock"]
    return _cardinal(hours) + _two_digits(minutes)


def _integer(text: str, prev: str | None, next_word: str | None) -> list[str]:
    """Read an integer string as its context suggests (see ``normalise_text``)."""
    n = int(text)
    if len(text) > 1 and text.startswith("0"):
        return _digits(text)
    if prev in _DIGIT_CUES and len(text) >= 2:  # dial 500 → five zero zero
        return _digits(text)
    if len(text) == 4:
        if 1000 <= n <= 2099 and (prev in _YEAR_CUES or prev in _MONTHS
                                  or next_word in ("ad", "bc", "ce", "bce")):
            return _year(n)
        if n % 100 == 0 and n % 1000 != 0:  # 8500 → eighty five hundred
            return _cardinal(n // 100) + ["hundred"]
    if len(text) >= 7:  # phone-number-like
        return _digits(text)
    return _cardinal(n)


_WEB_ADDRESS = re.compile(
    r"\b(?:www\.[\w-]+(?:\.[\w-]+)*|[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|edu|gov|io|info))\b",
    re.IGNORECASE)
_TOKEN = re.compile(
    r"""(?P<time>\d{1,2}:\d{2}(?:\s*[ap]\.?m\b\.?)?
                 | \d{1,2}\s*[ap]\.?m\b\.?)
      | \$(?P<money>\d[\d,]*(?:\.\d+)?)
      | (?P<ordinal>\d+)(?:st|nd|rd|th)\b
      | (?P<decimal>\d+\.\d+)
      | (?P<grouped>\d{1,3}(?:,\d{3})+)
      | (?P<int>\d+)(?P<pct>%)?
      | (?P<word>[a-z]+(?:['’][a-z]+)*)
      | (?P<sym>[&@+=%*\#])
    """,
    re.VERBOSE | re.IGNORECASE,
)


def _raw_tokens(text: str) -> list[tuple[str, str, str]]:
    """(kind, value, original) tokens of a transcript with bracketed descriptions removed."""
    text = _NON_SPEECH.sub(" ", text)
    text = text.replace("’", "'").replace("‘", "'")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")  # café
    # Dots in web addresses are spoken: www.asterisk.org → www dot asterisk dot org.
    text = _WEB_ADDRESS.sub(lambda m: m.group(0).replace(".", " dot "), text)
    # Digits after a letter and a dot are read one by one: H.323 → H 3 2 3.
    text = re.sub(r"(?<=[A-Za-z])\.(\d+)", lambda m: " " + " ".join(m.group(1)), text)
    # Letters glued to digits are separate words: 3D → 3 D, mp3 → mp 3 (ordinals excepted).
    text = re.sub(r"(?<=\d)(?=[A-Za-z])(?!(?:st|nd|rd|th)\b)", " ", text, flags=re.IGNORECASE)
    text = re.sub(r"(?<=[A-Za-z])(?=\d)", " ", text)
    out = []
    for m in _TOKEN.finditer(text):
        kind = next(g for g in ("time", "money", "ordinal", "decimal", "grouped", "int", "word",
                                "sym") if m.group(g) is not None)
        out.append((kind, m.group(kind), m.group(0)))
    return out


def _expand(tokens: list[tuple[str, str, str]]) -> list[tuple[str, bool]]:
    """Spell out numbers and symbols; returns (word, was_all_caps) pairs."""
    out: list[tuple[str, bool]] = []
    words_lower = [v.lower() if k == "word" else None for k, v, _ in tokens]
    for i, (kind, value, original) in enumerate(tokens):
        prev = out[-1][0] if out else None
        next_word = words_lower[i + 1] if i + 1 < len(tokens) else None
        if kind == "word":
            caps = len(value) > 1 and value.isupper()
            out.append((value.lower(), caps))
            continue
        if kind == "time":
            clock = re.match(r"(\d+)(?::(\d+))?\s*(?:([ap])\.?m)?", value.lower())
            assert clock is not None
            hours, minutes, ampm = clock.groups()
            if minutes is None:
                words = _cardinal(int(hours))
            else:
                words = _time(int(hours), int(minutes))
            if ampm:
                words = [w for w in words if w != "o'clock"] + [ampm, "m"]
        elif kind == "money":
            amount = value.replace(",", "")
            whole, _, cents = amount.partition(".")
            words = _cardinal(int(whole)) + ["dollar" if int(whole) == 1 else "dollars"]
            if cents and int(cents):
                words += ["and"] + _cardinal(int(cents[:2].ljust(2, "0"))) + ["cents"]
        elif kind == "ordinal":
            words = _ordinal(int(value))
        elif kind == "decimal":
            whole, frac = value.split(".")
            words = _integer(whole, prev, None) + ["point"] + _digits(frac)
        elif kind == "grouped":
            words = _cardinal(int(value.replace(",", "")))
        elif kind == "int":
            words = _integer(value, prev, next_word)
            if original.endswith("%"):
                words.append("percent")
        else:  # sym
            words = [_SYMBOL_WORDS[value]]
        out.extend((w, False) for w in words)
    return out


@lru_cache(maxsize=1)
def _cmudict() -> dict[str, str]:
    """The pocketsphinx en-us dictionary as {word: first pronunciation} (alternates dropped)."""
    from pocketsphinx import get_model_path

    entries: dict[str, str] = {}
    with open(get_model_path("en-us/cmudict-en-us.dict"), encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and "(" not in parts[0]:
                entries[parts[0]] = " ".join(parts[1:])
    return entries


def _known(word: str) -> bool:
    return word in EXTRA_LEXICON or word in _cmudict()


def pronunciation(word: str) -> str | None:
    """Space-separated ARPAbet for ``word``: the CMU dictionary, ``EXTRA_LEXICON``, or a
    possessive (``waldo's``) built from its base word. ``None`` if none of those know it."""
    if word in EXTRA_LEXICON:
        return EXTRA_LEXICON[word]
    cmu = _cmudict()
    if word in cmu:
        return cmu[word]
    if word.endswith("'s") and word[:-2] in cmu:
        base = cmu[word[:-2]]
        last = base.split()[-1]
        if last in ("S", "Z", "SH", "ZH", "CH", "JH"):
            return base + " IH Z"
        return base + (" S" if last in ("P", "T", "K", "F", "TH") else " Z")
    return None


def _splits(word: str, min_part: int) -> list[list[str]]:
    """Ways to cut ``word`` into two or three known words, each at least ``min_part`` long."""
    found = []
    for i in range(min_part, len(word) - min_part + 1):
        head, tail = word[:i], word[i:]
        if not _known(head):
            continue
        if _known(tail):
            found.append([head, tail])
        for j in range(min_part, len(tail) - min_part + 1):
            if _known(tail[:j]) and _known(tail[j:]):
                found.append([head, tail[:j], tail[j:]])
    return found


def _best_split(word: str, min_part: int) -> list[str] | None:
    """The split with the fewest parts, then the longest shortest part."""
    splits = _splits(word, min_part)
    if not splits:
        return None
    return min(splits, key=lambda s: (len(s), -min(len(p) for p in s), s))


_PREFIXES = ("un", "re", "pre", "non", "dis", "mis", "sub", "de", "co", "over", "under", "out",
             "semi", "anti", "inter", "multi")
"""Prefixes the dictionary has as words of their own: rerecord → re record."""


def _prefixed(word: str) -> list[str] | None:
    """``[prefix, rest]`` when ``word`` is a known prefix plus a known word of 3+ letters."""
    for prefix in sorted(_PREFIXES, key=len, reverse=True):
        rest = word[len(prefix):]
        if word.startswith(prefix) and len(rest) >= 3 and _known(rest):
            return [prefix, rest]
    return None


def _typo_fix(word: str) -> list[str] | None:
    """A known (or known prefixed) word one inserted, deleted or transposed letter away, never
    at the first letter and never a substitution: exclaimation → exclamation, decending →
    descending, umute → un mute."""
    letters = "abcdefghijklmnopqrstuvwxyz'"
    candidates = set()
    for i in range(1, len(word) + 1):
        if i < len(word):
            candidates.add(word[:i] + word[i + 1:])
        if i + 1 < len(word):
            candidates.add(word[:i] + word[i + 1] + word[i] + word[i + 2:])
        candidates.update(word[:i] + c + word[i:] for c in letters)
    candidates.discard(word)
    known = sorted(c for c in candidates if len(c) >= 4 and _known(c))
    if known:
        return [known[0]]
    prefixed = sorted(p for c in candidates if (p := _prefixed(c)))
    return prefixed[0] if prefixed else None


@lru_cache(maxsize=4096)
def _resolve(word: str, caps: bool) -> tuple[str, ...]:
    """Dictionary words for one normalised word (see ``normalise_text``)."""
    word = word.strip("'")
    if not word:
        return ()
    if pronunciation(word) is not None:
        return (word,)
    if caps and len(word) <= 6:
        return tuple(c for c in word if c.isalpha())  # acronym: PBX → p b x
    for attempt in (_prefixed, lambda w: _best_split(w, 4),
                    lambda w: _typo_fix(w) if len(w) >= 5 else None,
                    lambda w: _best_split(w, 1)):
        found = attempt(word)
        if found:
            return tuple(found)
    return tuple(c for c in word if c.isalpha())


def normalise_text(text: str) -> list[str]:
    """Words of a transcript for the aligner, each one the pocketsphinx dictionary can say.

    Bracketed descriptions (``[@]``, ``(note: ...)``, ``<beep>``) are dropped; text is lower-cased
    and punctuation stripped (apostrophes inside words kept: ``don't``); hyphens and slashes split
    words; dots in web addresses are spoken (``www.asterisk.org`` → w w w dot asterisk dot org).
    Numbers are spelled out: ``24`` → twenty four, ``1st`` → first, ``2:30pm`` → two thirty p m,
    ``7 a.m.`` → seven a m, ``2:00`` → two o'clock, ``28.8`` → twenty eight point eight,
    ``$5`` → five dollars, ``50%`` → fifty percent, ``1,000`` → one thousand. Numbers of 2+
    digits after ``dial``, ``extension``, ``password``, ``pin``, ``code``, ``number`` or
    ``mailbox`` are read digit by digit (``dial 500`` → five zero zero, as the Asterisk voice
    says them), as are numbers with a leading zero or 7+ digits and digits after a letter and a
    dot (``H.323`` → h three two three). Other four-digit numbers read as years after a month
    or ``in``/``since``/``of``/... (``1999`` → nineteen ninety nine), ``8500`` → eighty five
    hundred, else as cardinals. Letters glued to digits split off (``3D`` → three d). ``&`` →
    and, ``@`` → at, ``+`` → plus, ``=`` → equals, ``*`` → star, ``#`` → pound (phone keys).

    Words missing from the dictionary are, in order: given a possessive pronunciation if their
    base is known (``waldo's``); spelled letter by letter if written in capitals (``PBX`` → p b
    x); split after a prefix the dictionary knows (``rerecord`` → re record); split into known
    words of 4+ letters (``forevermore`` → forever more); corrected to a known or prefixed word
    one letter away (``exclaimation`` → exclamation, ``umute`` → un mute); split into any known
    words (``xray`` → x ray); else spelled letter by letter.
    """
    words: list[str] = []
    for word, caps in _expand(_raw_tokens(text)):
        words.extend(_resolve(word, caps))
    return words


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------

WIDE_BEAM = {"beam": 1e-100, "wbeam": 1e-80, "pbeam": 1e-100}
"""Pocketsphinx beams for the retry after the default beams (1e-48) lose every path: long
prompts (over a minute) need them. The retry is recorded as ``"beam": "wide"``."""

_DECODERS: dict[bool, Any] = {}


def _decoder(wide: bool = False) -> Any:
    """This process's pocketsphinx decoder, default or wide beams (each made once, logging
    silenced, ``EXTRA_LEXICON`` added)."""
    if wide not in _DECODERS:
        from pocketsphinx import Decoder

        decoder = Decoder(samprate=SAMPLE_RATE, bestpath=False, loglevel="FATAL",
                          **(WIDE_BEAM if wide else {}))
        for word, phones in EXTRA_LEXICON.items():
            if decoder.lookup_word(word) is None:
                decoder.add_word(word, phones, update=True)
        _DECODERS[wide] = decoder
    return _DECODERS[wide]


def _phone_symbol(name: str) -> str:
    symbol = re.sub(r"\d", "", name).upper()
    return symbol if symbol in ARPABET else "SIL"


@dataclass(frozen=True)
class Alignment:
    """Full result of one forced alignment: ``phones`` as ``align`` returns them, the aligner's
    word segments ``(word, start_s, end_s)`` (``<sil>`` for pauses, ``word(2)`` for alternative
    pronunciations), its total acoustic log score (higher is better) and whether the wide-beam
    retry was needed."""

    phones: list[Phone]
    words: list[tuple[str, float, float]]
    score: int
    wide_beam: bool = False


def _add_words(decoder: Any, words: Sequence[str]) -> int:
    """Add any word the decoder lacks (``pronunciation`` must know it); return the phone count."""
    n_phones = 0
    for word in words:
        found = decoder.lookup_word(word)
        if found is None:
            found = pronunciation(word)
            if found is None:
                raise AlignmentError(f"word not in dictionary: {word!r}", "oov")
            decoder.add_word(word, found, update=True)
        n_phones += len(found.split())
    return n_phones


def _run_alignment(decoder: Any, pcm: bytes, words: Sequence[str]) -> Any:
    """Both pocketsphinx passes (word alignment, then phone/state alignment); the Alignment
    object, or None if the search lost every path."""
    try:
        decoder.set_align_text(" ".join(words))
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            return None
        decoder.set_alignment()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        return decoder.get_alignment()
    except RuntimeError as exc:
        raise AlignmentError(f"pocketsphinx: {exc}", "decoder_error") from exc


def align_full(audio: np.ndarray, words: Sequence[str]) -> Alignment:
    """Like ``align`` (same arguments, same errors) but returns an ``Alignment`` with word
    segments, the acoustic score and whether the wide-beam retry was used."""
    audio = np.asarray(audio)
    if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be float [N] mono, got {audio.dtype} {audio.shape}")
    words = [w for w in words if w]
    if not words:
        raise AlignmentError("no words to align", "no_words")
    n_phones = _add_words(_decoder(), words)
    duration_s = len(audio) / SAMPLE_RATE
    if round(duration_s / FRAME_S) < 3 * n_phones:  # each phone HMM needs a frame per state
        raise AlignmentError(f"{duration_s:.2f} s is too short for {n_phones} phones",
                             "audio_too_short")
    pcm = (np.clip(np.nan_to_num(audio), -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    wide = False
    alignment = _run_alignment(_decoder(), pcm, words)
    if alignment is None:
        wide = True
        _add_words(_decoder(wide=True), words)
        alignment = _run_alignment(_decoder(wide=True), pcm, words)
    if alignment is None:
        raise AlignmentError("no path through the word sequence, even with wide beams",
                             "search_failed")
    phones: list[Phone] = []
    segments: list[tuple[str, float, float]] = []
    score = 0
    for word in alignment:
        segments.append((word.name, word.start * FRAME_S, (word.start + word.duration) * FRAME_S))
        score += word.score
        for phone in word:
            start, end = phone.start * FRAME_S, (phone.start + phone.duration) * FRAME_S
            symbol = _phone_symbol(phone.name)
            if phones and phones[-1].symbol == "SIL" == symbol:
                phones[-1] = Phone("SIL", phones[-1].start_s, end)
            else:
                phones.append(Phone(symbol, start, end))
    if not any(p.symbol != "SIL" for p in phones):
        raise AlignmentError("alignment has no phones", "search_failed")
    return Alignment(_cover(phones, duration_s), segments, score, wide)


def _cover(phones: list[Phone], duration_s: float) -> list[Phone]:
    """Make phones contiguous from 0 to ``duration_s``: gaps and edges go to the neighbours
    (or to SIL where more than 30 ms is missing), times rounded to 0.1 ms."""
    out: list[Phone] = []
    t = 0.0
    for p in phones:
        start = max(p.start_s, t)
        if start - t > 0.03:
            out.append(Phone("SIL", t, start))
        elif out:
            out[-1] = Phone(out[-1].symbol, out[-1].start_s, start)
        else:
            start = 0.0
        end = min(p.end_s, duration_s)
        if end > start:
            out.append(Phone(p.symbol, start, end))
            t = end
    if out and duration_s - t > 0.03:
        out.append(Phone("SIL", t, duration_s))
    elif out:
        out[-1] = Phone(out[-1].symbol, out[-1].start_s, duration_s)
    return [Phone(p.symbol, round(p.start_s, 4), round(p.end_s, 4)) for p in out]


def align(audio: np.ndarray, words: list[str]) -> list[Phone]:
    """Force-align ``words`` to ``audio`` with pocketsphinx and return its phones.

    ``audio`` is float [N] mono 16 kHz in [-1, 1] (as from ``load_audio``); ``words`` are
    dictionary words (as from ``normalise_text``; ``pronunciation`` must know each one). Returns
    phones in time order, contiguous and covering [0, N / 16000] s, at 10 ms resolution; pauses
    the aligner inserts and the edges are ``"SIL"``. The decoder is made once per process.

    Raises ``AlignmentError`` (with ``.reason``) if there are no words, a word has no
    pronunciation, the audio is too short for the phones (3 frames each), or pocketsphinx finds
    no path; ``ValueError`` if ``audio`` is not a 1-D float array.
    """
    return align_full(audio, words).phones


# --------------------------------------------------------------------------------------------
# Held-out split
# --------------------------------------------------------------------------------------------

def heldout_rule(name: str) -> bool:
    """The stable hash rule behind ``heldout.txt``: first 8 hex digits of sha256(name) as an
    integer, below 0.15 * 2**32."""
    value = int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16)
    return value < HELDOUT_FRACTION * 2**32


@lru_cache(maxsize=1)
def _heldout_set() -> frozenset[str]:
    lines = HELDOUT_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(s.strip() for s in lines if s.strip() and not s.startswith("#"))


def heldout_names() -> list[str]:
    """Sorted prompt names in the committed ``heldout.txt`` (never train on these)."""
    return sorted(_heldout_set())


def is_heldout(name: str) -> bool:
    """Whether ``name`` is listed in the committed ``heldout.txt``."""
    return name in _heldout_set()


def make_heldout(names: Sequence[str]) -> str:
    """Text of ``heldout.txt`` for ``names``: a comment header and the selected names, sorted."""
    chosen = sorted(n for n in set(names) if heldout_rule(n))
    header = [
        "# Held-out Asterisk prompts (tools/speech/asterisk.py): evaluate on these, never train.",
        "# Rule: a prompt is held out when int(sha256(name.encode('utf-8')).hexdigest()[:8], 16)",
        f"# < {HELDOUT_FRACTION} * 2**32, over the names find_prompts() returns (about 15%).",
        f"# {len(chosen)} of {len(set(names))} prompts. Regenerate with:",
        "#   python -m tools.speech.asterisk --make-heldout",
    ]
    return "\n".join(header + chosen) + "\n"


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _init_worker() -> None:
    _decoder()


def _align_prompt(prompt: Prompt) -> tuple[str, dict[str, Any] | None, str | None]:
    """(name, record for alignments.json or None, failure reason or None)."""
    try:
        audio = load_audio(prompt.path)
    except (OSError, ValueError) as exc:
        print(f"{prompt.name}: audio: {exc}", file=sys.stderr)
        return prompt.name, None, "audio_error"
    words = normalise_text(prompt.text)
    try:
        result = align_full(audio, words)
    except AlignmentError as exc:
        print(f"{prompt.name}: {exc}", file=sys.stderr)
        return prompt.name, None, exc.reason
    duration = len(audio) / SAMPLE_RATE
    record = {
        "text": prompt.text,
        "words": words,
        "word_times": [[w, round(s, 4), round(e, 4)] for w, s, e in result.words],
        "phones": [[p.symbol, p.start_s, p.end_s] for p in result.phones],
        "duration_s": round(duration, 6),
        "score_per_frame": round(result.score / max(1.0, duration / FRAME_S), 1),
        "wide_beam": result.wide_beam,
    }
    return prompt.name, record, None


def run(out_dir: Path, limit: int | None = None, jobs: int = 2) -> dict[str, Any]:
    """Align every prompt (or the first ``limit``) with ``jobs`` worker processes, write
    ``out_dir/alignments.json`` and return the summary."""
    t0 = time.monotonic()
    prompts = find_prompts()
    if not prompts:
        raise SystemExit(f"no prompts: is asterisk-core-sounds-en-g722 installed ({SOUNDS_DIR})?")
    if limit is not None:
        prompts = prompts[:limit]
    results: dict[str, dict[str, Any]] = {}
    reasons: Counter[str] = Counter()
    if jobs > 1:
        ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        with ctx.Pool(jobs, initializer=_init_worker) as pool:
            outcomes = list(pool.imap_unordered(_align_prompt, prompts, chunksize=4))
    else:
        outcomes = [_align_prompt(p) for p in prompts]
    for name, record, reason in outcomes:
        if record is not None:
            results[name] = record
        else:
            reasons[reason or "unknown"] += 1
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "alignments.json"
    ordered = {name: results[name] for name in sorted(results)}
    path.write_text(json.dumps(ordered, indent=1) + "\n", encoding="utf-8")
    heldout = _heldout_set() if HELDOUT_FILE.is_file() else frozenset()
    aligned_s = sum(r["duration_s"] for r in results.values())
    return {
        "prompts_found": len(prompts),
        "aligned": len(results),
        "failed": len(prompts) - len(results),
        "failure_reasons": dict(sorted(reasons.items())),
        "aligned_with_wide_beam": sum(r["wide_beam"] for r in results.values()),
        "aligned_minutes": round(aligned_s / 60, 2),
        "heldout_found": sum(p.name in heldout for p in prompts),
        "heldout_aligned": sum(n in heldout for n in results),
        "heldout_aligned_minutes": round(
            sum(r["duration_s"] for n, r in results.items() if n in heldout) / 60, 2),
        "alignments": str(path),
        "elapsed_s": round(time.monotonic() - t0, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.speech.asterisk",
        description="Force-align the Asterisk core prompts to phones with pocketsphinx.")
    parser.add_argument("--out", type=Path, help="folder for alignments.json")
    parser.add_argument("--limit", type=int, default=None, help="align only the first N prompts")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--make-heldout", action="store_true",
                        help=f"rewrite {HELDOUT_FILE.name} from the hash rule and exit")
    args = parser.parse_args(argv)
    if args.make_heldout:
        names = [p.name for p in find_prompts()]
        if not names:
            parser.error(f"no prompts found under {SOUNDS_DIR}")
        HELDOUT_FILE.write_text(make_heldout(names), encoding="utf-8")
        _heldout_set.cache_clear()
        print(json.dumps({"heldout": len(heldout_names()), "prompts": len(names),
                          "file": str(HELDOUT_FILE)}))
        return 0
    if args.out is None:
        parser.error("--out is required (or --make-heldout)")
    if args.jobs < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--jobs and --limit must be positive")
    print(json.dumps(run(args.out, args.limit, args.jobs), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

