"""Phonemes → visemes → ARKit coefficient tracks, with coarticulation.

This file is the one readable table of the motion targets: ``VISEME_TARGETS`` says what each
viseme does to the face, ``ARPABET_TO_VISEME`` and ``IPA_TO_VISEME`` which phones belong to it.

Viseme set: the 15 visemes of Meta's Oculus Lipsync (sil, PP, FF, TH, DD, kk, CH, SS, nn, RR, aa,
E, ih, oh, ou), with its phoneme grouping (Oculus Lipsync "Viseme Reference").

Coarticulation: the dominance model of Cohen & Massaro (1993), "Modeling coarticulation in
synthetic visual speech" (in Thalmann & Thalmann, eds., Models and Techniques in Computer
Animation). Each segment s has, per coefficient, a target T_s and a dominance

    D_s(t) = α_s · exp(−θ_s · |t − c_s|^γ),   c_s = segment centre,

and the track is the dominance-weighted mean  x(t) = Σ_s D_s(t)·T_s / Σ_s D_s(t). Segments with
strong, narrow dominance (bilabials' lip closure) win locally; weak ones (/h/, schwa) borrow their
neighbours' shapes. On top of the blend two hard rules from the design: bilabials (PP) close the
lips fully over the middle of the segment (``mouthClose`` = 1; speech is unintelligible to a
lip-reader otherwise, and the blend alone would leave a gap between open vowels), and silence
relaxes to a closed mouth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

VISEMES: tuple[str, ...] = (
    "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou",
)
VISEME_INDEX = {v: i for i, v in enumerate(VISEMES)}

MOTION_COEFFICIENTS: tuple[str, ...] = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmile", "mouthStretch",
    "mouthUpperUp", "mouthLowerDown", "mouthPress",
)
"""What the speech motion model drives: side-less names (speech is symmetric), expanded to both
ARKit sides by ``avatars.rig.coefficients_from_mapping``."""

# ---------------------------------------------------------------------------------------------
# The table. Values are coefficient targets in [0, 1]; missing names are 0.
VISEME_TARGETS: dict[str, dict[str, float]] = {
    "sil": {"mouthClose": 1.0},                                   # relaxed, lips together
    "PP": {"jawOpen": 0.08, "mouthClose": 1.0, "mouthPress": 0.2},  # p b m: lips pressed shut
    "FF": {"jawOpen": 0.10, "mouthClose": 0.55, "mouthUpperUp": 0.25},  # f v: lip to teeth
    "TH": {"jawOpen": 0.20, "mouthClose": 0.15},                  # th: tongue between teeth
    "DD": {"jawOpen": 0.22, "mouthStretch": 0.10},                # t d
    "kk": {"jawOpen": 0.28, "mouthStretch": 0.10},                # k g ng
    "CH": {"jawOpen": 0.18, "mouthFunnel": 0.55, "mouthPucker": 0.30},  # ch j sh zh
    "SS": {"jawOpen": 0.10, "mouthStretch": 0.30, "mouthSmile": 0.15, "mouthClose": 0.30},  # s z
    "nn": {"jawOpen": 0.20, "mouthClose": 0.10},                  # n l
    "RR": {"jawOpen": 0.20, "mouthPucker": 0.35, "mouthFunnel": 0.25},  # r
    "aa": {"jawOpen": 0.62, "mouthLowerDown": 0.30},              # father, cat, cut
    "E": {"jawOpen": 0.42, "mouthStretch": 0.30, "mouthSmile": 0.10, "mouthLowerDown": 0.20},
    "ih": {"jawOpen": 0.28, "mouthStretch": 0.35, "mouthSmile": 0.20},  # bit, beet
    "oh": {"jawOpen": 0.48, "mouthFunnel": 0.60, "mouthPucker": 0.20},  # thought, boat
    "ou": {"jawOpen": 0.20, "mouthPucker": 0.80, "mouthFunnel": 0.30},  # boot, book, w
}

# Dominance magnitude α by viseme: how strongly the segment holds its shape against neighbours.
# Consonants articulated with the lips or teeth are strong on the lip coefficients; vowels on
# the jaw; silence is strong everywhere (a pause is a pause).
DOMINANCE: dict[str, float] = {
    "sil": 1.0, "PP": 3.0, "FF": 2.0, "TH": 0.8, "DD": 0.5, "kk": 0.4, "CH": 1.5, "SS": 1.0,
    "nn": 0.5, "RR": 0.8, "aa": 1.5, "E": 1.2, "ih": 1.0, "oh": 1.5, "ou": 1.5,
}
WEAK_PHONES = frozenset({"HH", "h", "AH0", "ə"})
"""Phones that take their neighbours' shape (dominance × 0.2)."""
DOMINANCE_RATE = 60.0
"""θ in s^-γ: a segment's dominance falls to 1/e about 130 ms from its centre (γ = 1)."""
DOMINANCE_SHAPE = 1.0
"""γ of the dominance function (1: exponential falloff, as in Cohen & Massaro's examples)."""
SILENCE_CLOSE_AFTER_S = 0.15
"""Inside silence, more than this from speech, the mouth is held closed exactly."""

ARPABET_TO_VISEME: dict[str, str] = {
    "SIL": "sil", "SP": "sil", "NSN": "sil", "SPN": "sil", "+NSN+": "sil", "+SPN+": "sil",
    "P": "PP", "B": "PP", "M": "PP",
    "F": "FF", "V": "FF",
    "TH": "TH", "DH": "TH",
    "T": "DD", "D": "DD",
    "K": "kk", "G": "kk", "NG": "kk", "HH": "kk",
    "CH": "CH", "JH": "CH", "SH": "CH", "ZH": "CH",
    "S": "SS", "Z": "SS",
    "N": "nn", "L": "nn",
    "R": "RR", "ER": "RR",
    "AA": "aa", "AE": "aa", "AH": "aa", "AW": "aa", "AY": "aa",
    "EH": "E", "EY": "E",
    "IH": "ih", "IY": "ih", "Y": "ih",
    "AO": "oh", "OW": "oh", "OY": "oh",
    "UH": "ou", "UW": "ou", "W": "ou",
}

IPA_TO_VISEME: dict[str, str] = {
    "_": "sil", "": "sil",
    "p": "PP", "b": "PP", "m": "PP",
    "f": "FF", "v": "FF",
    "θ": "TH", "ð": "TH",
    "t": "DD", "d": "DD", "ɾ": "DD", "ʔ": "DD",
    "k": "kk", "ɡ": "kk", "g": "kk", "ŋ": "kk", "x": "kk", "h": "kk",
    "tʃ": "CH", "dʒ": "CH", "ʃ": "CH", "ʒ": "CH",
    "s": "SS", "z": "SS",
    "n": "nn", "l": "nn", "ɫ": "nn", "ɬ": "nn",
    "ɹ": "RR", "r": "RR", "ɚ": "RR", "ɝ": "RR", "ɜ": "RR",
    "a": "aa", "ɑ": "aa", "æ": "aa", "ʌ": "aa", "ɐ": "aa", "aɪ": "aa", "aʊ": "aa", "ə": "aa",
    "e": "E", "ɛ": "E", "eɪ": "E", "eə": "E",
    "ɪ": "ih", "i": "ih", "ᵻ": "ih", "j": "ih", "ɪə": "ih",
    "ɔ": "oh", "o": "oh", "oʊ": "oh", "əʊ": "oh", "ɒ": "oh", "ɔɪ": "oh",
    "u": "ou", "ʊ": "ou", "w": "ou", "ʊə": "ou",
}
_IPA_MARKS = str.maketrans("", "", "ˈˌːˑ̩̯̃͡‿")


def viseme_of(phone: str) -> str:
    """Viseme of an ARPAbet phone (stress digits ignored) or an IPA phoneme string (stress and
    length marks ignored; a multi-symbol string is matched by its longest known prefix).

    Raises ``KeyError`` for a phone neither table knows.
    """
    arpa = phone.upper().rstrip("012")
    if arpa in ARPABET_TO_VISEME:
        return ARPABET_TO_VISEME[arpa]
    ipa = phone.translate(_IPA_MARKS)
    for end in range(len(ipa), 0, -1):
        if ipa[:end] in IPA_TO_VISEME:
            return IPA_TO_VISEME[ipa[:end]]
    if ipa == "":
        return "sil"
    raise KeyError(f"no viseme for phone {phone!r}")


@dataclass(frozen=True)
class Segment:
    """One phone: its viseme and its time span in seconds."""

    viseme: str
    start_s: float
    end_s: float
    weak: bool = False


def segments_from_phones(phones: Sequence[tuple[str, float, float]], duration_s: float
                         ) -> list[Segment]:
    """Phones [(symbol, start_s, end_s)] → sorted segments with gaps filled by silence, covering
    [0, duration_s]. Unknown phones raise ``KeyError``."""
    out: list[Segment] = []
    t = 0.0
    for symbol, start, end in sorted(phones, key=lambda p: p[1]):
        start, end = max(start, t), min(end, duration_s)
        if end <= start:
            continue
        if start > t + 1e-6:
            out.append(Segment("sil", t, start))
        out.append(Segment(viseme_of(symbol), start, end, weak=symbol in WEAK_PHONES
                           or symbol.upper().rstrip("012") == "HH"))
        t = end
    if t < duration_s - 1e-6:
        out.append(Segment("sil", t, duration_s))
    return out


def target_matrix() -> np.ndarray:
    """float32 [15, len(MOTION_COEFFICIENTS)]: ``VISEME_TARGETS`` as an array."""
    m = np.zeros((len(VISEMES), len(MOTION_COEFFICIENTS)), np.float32)
    for v, targets in VISEME_TARGETS.items():
        for name, value in targets.items():
            m[VISEME_INDEX[v], MOTION_COEFFICIENTS.index(name)] = value
    return m


def coefficient_tracks(segments: Sequence[Segment], n_frames: int, frame_rate: float = 100.0,
                       offset_s: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coarticulated coefficient tracks for frames at times k / frame_rate + offset_s (use
    ``offset_s`` = 12.5 ms for log-mel frames, whose window centres sit there).

    Returns:
        coeffs: float32 [n_frames, len(MOTION_COEFFICIENTS)] in [0, 1].
        viseme: int64 [n_frames], index of the viseme whose segment contains the frame.
        speech: float32 [n_frames], 1 inside a non-silence segment, else 0 (voice activity).
    """
    t = np.arange(n_frames) / frame_rate + offset_s
    targets = target_matrix()
    num = np.zeros((n_frames, targets.shape[1]))
    den = np.full((n_frames, 1), 1e-12)
    viseme = np.zeros(n_frames, np.int64)
    speech = np.zeros(n_frames, np.float32)
    for seg in segments:
        v = VISEME_INDEX[seg.viseme]
        centre = 0.5 * (seg.start_s + seg.end_s)
        half = 0.5 * (seg.end_s - seg.start_s)
        # distance from the segment, 0 inside its middle: long segments hold their shape
        dist = np.maximum(np.abs(t - centre) - max(half - 0.03, 0.0), 0.0)
        alpha = DOMINANCE[seg.viseme] * (0.2 if seg.weak else 1.0)
        d = alpha * np.exp(-DOMINANCE_RATE * dist ** DOMINANCE_SHAPE)
        num += d[:, None] * targets[v]
        den[:, 0] += d
        inside = (t >= seg.start_s) & (t < seg.end_s)
        viseme[inside] = v
        if seg.viseme != "sil":
            speech[inside] = 1.0
    coeffs = num / den
    close = MOTION_COEFFICIENTS.index("mouthClose")
    jaw = MOTION_COEFFICIENTS.index("jawOpen")
    for seg in segments:
        if seg.viseme == "PP":
            span = seg.end_s - seg.start_s
            lo, hi = seg.start_s + 0.2 * span, seg.end_s - 0.2 * span
            hold = (t >= lo) & (t <= hi)
            if not hold.any():  # very short closure: hold the frame nearest its centre
                hold = np.abs(t - 0.5 * (seg.start_s + seg.end_s)) == np.abs(
                    t - 0.5 * (seg.start_s + seg.end_s)).min()
            coeffs[hold, close] = 1.0
            coeffs[hold, jaw] = np.minimum(coeffs[hold, jaw], VISEME_TARGETS["PP"]["jawOpen"])
        elif seg.viseme == "sil":
            deep = (t >= seg.start_s + (SILENCE_CLOSE_AFTER_S if seg.start_s > 0 else 0.0)) & (
                t < seg.end_s - SILENCE_CLOSE_AFTER_S)
            coeffs[deep] = targets[VISEME_INDEX["sil"]]
    return np.clip(coeffs, 0.0, 1.0).astype(np.float32), viseme, speech
