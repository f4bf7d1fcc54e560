"""``facecast eval lipsync``: lip-sync figures of the motion model on held-out speech.

Reads the corpus written by ``tools/prepare_speech.py`` (``index.json`` + ``corpus.npz``); the
held-out asterisk prompts (split "heldout", never trained on) and the held-out espeak voices
(split "heldout_voice") are scored separately. Mouth state is judged through the rig on the
default avatar, as a viewer would see it:

* ``bilabial_closure``: share of /p b m/ phones during which the inner-lip gap falls under 2% of
  the inter-ocular distance (IOD) at some frame of the phone (±20 ms).
* ``silence_closed``: share of frames more than 150 ms inside silence with the gap under 2% IOD
  (each utterance is scored with 0.5 s of quiet-room noise before and after, ``with_pauses``).
* ``open_vowel``: share of open-vowel phones (visemes aa and oh) whose jawOpen peak (±30 ms)
  exceeds 0.3.
* ``jaw_corr``: Pearson correlation of predicted and target jawOpen over all frames.
* ``viseme_accuracy``: share of frames whose most likely viseme is the target's.
* ``lookahead_ms``: audio the model needs past the frame it draws.

The same figures for an energy baseline (``energy_baseline``: RMS level → jawOpen, lips closed
below a level threshold) show what the model adds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatars import load
from avatars.rig import Rig, coefficients_from_mapping, inner_lip_gap
from engines.audio import FEATURE_RATE_HZ, SAMPLE_RATE, WINDOW_SECONDS
from engines.features import log_mel, n_frames
from engines.motion import MotionEngine, frame_time_s
from engines.visemes import (
    MOTION_COEFFICIENTS,
    coefficient_tracks,
    segments_from_phones,
)

CLOSED_IOD = 0.02
JAW = MOTION_COEFFICIENTS.index("jawOpen")
CLOSE = MOTION_COEFFICIENTS.index("mouthClose")


@dataclass(frozen=True)
class Utterance:
    """A scored utterance: audio (16 kHz float32) and phones [(symbol, start_s, end_s)]."""

    name: str
    audio: np.ndarray
    phones: list[tuple[str, float, float]]


PAUSE_S = 0.5
PAUSE_DBFS = -65.0


def with_pauses(u: Utterance, seed: int = 0) -> Utterance:
    """The utterance with ``PAUSE_S`` of quiet-room noise (``PAUSE_DBFS`` RMS) before and after:
    the asterisk prompts are trimmed to their speech, so without this they hold almost no
    silence to judge ``silence_closed`` on."""
    rng = np.random.default_rng(seed)
    n = int(PAUSE_S * SAMPLE_RATE)
    pad = (rng.standard_normal(n) * 10 ** (PAUSE_DBFS / 20)).astype(np.float32)
    audio = np.concatenate([pad, u.audio, pad[::-1]])
    phones = [(s, a + PAUSE_S, b + PAUSE_S) for s, a, b in u.phones]
    return Utterance(u.name, audio, phones)


def load_split(data: Path, split: str) -> list[Utterance]:
    """Utterances of one split of a prepared corpus. Raises ``FileNotFoundError`` if the
    corpus is missing (run ``tools/prepare_speech.py``)."""
    index_path = data / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"no speech corpus at {data} (run tools/prepare_speech.py)")
    index = json.loads(index_path.read_text())
    audio = np.load(data / "corpus.npz")["audio"]
    return [Utterance(e["name"], audio[e["offset"]:e["offset"] + e["length"]],
                      [tuple(p) for p in e["phones"]])
            for e in index if e["split"] == split]


def energy_baseline(audio: np.ndarray) -> np.ndarray:
    """The simple baseline: per feature frame, RMS level → jawOpen (−50 dBFS → 0, −15 → 0.7),
    mouthClose 1 below −45 dBFS; float32 [T, K]."""
    feats = log_mel(audio)
    level_db = 10.0 * np.log10(np.maximum(10.0 ** feats, 1e-12).mean(axis=1)) - 10.0
    out = np.zeros((len(feats), len(MOTION_COEFFICIENTS)), np.float32)
    out[:, JAW] = np.clip((level_db + 50.0) / 35.0, 0.0, 1.0) * 0.7
    out[:, CLOSE] = (level_db < -45.0).astype(np.float32)
    return out


def lip_gap_iod(rig: Rig, coeffs: np.ndarray) -> np.ndarray:
    """Inner-lip gap in IOD for side-less coefficient frames [T, K] through ``rig``."""
    full = np.stack([coefficients_from_mapping(dict(zip(MOTION_COEFFICIENTS, row)))
                     for row in coeffs])
    pose = np.tile([0.0, 0.0, 0.0, 0.0, 0.0, 1.0], (len(full), 1))
    return inner_lip_gap(rig.keypoints(full, pose)) / rig.iod


def score(utterances: list[Utterance], predict, rig: Rig, with_visemes: bool = True) -> dict:
    """Figures for one predictor: ``predict(audio) -> (coeffs [T, K], visemes [T] | None)``."""
    bil_hit = bil_n = sil_hit = sil_n = ov_hit = ov_n = vis_hit = vis_n = 0
    jaw_pred, jaw_tgt = [], []
    for u in utterances:
        t = n_frames(u.audio.size)
        segs = segments_from_phones(u.phones, u.audio.size / SAMPLE_RATE)
        tgt, tgt_vis, _ = coefficient_tracks(segs, t, FEATURE_RATE_HZ, WINDOW_SECONDS / 2)
        coeffs, vis = predict(u.audio)
        coeffs = coeffs[:t]
        gap = lip_gap_iod(rig, coeffs)
        times = frame_time_s(np.arange(t))
        for s in segs:
            span = (times >= s.start_s - 0.02) & (times <= s.end_s + 0.02)
            if s.viseme == "PP" and span.any():
                bil_n += 1
                bil_hit += bool((gap[span] < CLOSED_IOD).any())
            if s.viseme in ("aa", "oh"):
                wide = (times >= s.start_s - 0.03) & (times <= s.end_s + 0.03)
                if wide.any():
                    ov_n += 1
                    ov_hit += bool(coeffs[wide, JAW].max() > 0.3)
            if s.viseme == "sil":
                deep = (times > s.start_s + 0.15) & (times < s.end_s - 0.15)
                sil_n += int(deep.sum())
                sil_hit += int((gap[deep] < CLOSED_IOD).sum())
        jaw_pred.append(coeffs[:, JAW])
        jaw_tgt.append(tgt[:, JAW])
        if with_visemes and vis is not None:
            vis_n += t
            vis_hit += int((vis[:t] == tgt_vis).sum())
    jp, jt = np.concatenate(jaw_pred), np.concatenate(jaw_tgt)
    out = {
        "utterances": len(utterances),
        "bilabial_closure": round(bil_hit / max(bil_n, 1), 4),
        "bilabial_phones": bil_n,
        "silence_closed": round(sil_hit / max(sil_n, 1), 4),
        "silence_frames": sil_n,
        "open_vowel": round(ov_hit / max(ov_n, 1), 4),
        "open_vowel_phones": ov_n,
        "jaw_corr": round(float(np.corrcoef(jp, jt)[0, 1]), 4),
    }
    if with_visemes:
        out["viseme_accuracy"] = round(vis_hit / max(vis_n, 1), 4)
    return out


NON_SPEECH_SECONDS = 10.0


def non_speech(engine: MotionEngine, rig: Rig, seed: int = 0) -> dict:
    """How the model behaves without speech: for silence, white and pink noise and synthetic
    music (10 s each), the share of frames with the mouth open (gap ≥ 2% IOD), jawOpen mean and
    max, and mean voice-activity probability. A good model keeps the mouth shut (no chatter)."""
    from runtime.evals.signals import at_level, pink_noise, synthetic_music

    rng = np.random.default_rng(seed)
    n = int(NON_SPEECH_SECONDS * SAMPLE_RATE)
    signals = {
        "silence": np.zeros(n, np.float32),
        "white_noise_-30dBFS": at_level(rng.standard_normal(n), -30),
        "pink_noise_-20dBFS": at_level(pink_noise(rng, n), -20),
        "music_-20dBFS": at_level(synthetic_music(rng, n), -20),
        "music_-10dBFS": at_level(synthetic_music(rng, n), -10),
    }
    out = {}
    for name, audio in signals.items():
        track = engine.offline(audio)
        gap = lip_gap_iod(rig, track.coeffs)
        out[name] = {"open_frames": round(float((gap >= CLOSED_IOD).mean()), 4),
                     "jaw_mean": round(float(track.coeffs[:, JAW].mean()), 4),
                     "jaw_max": round(float(track.coeffs[:, JAW].max()), 4),
                     "vad_mean": round(float(track.vad.mean()), 4)}
    return out


def evaluate(data: Path, model_path: Path | None = None, avatar: str = "default") -> dict:
    """All figures as a JSON-ready dict (model and baseline, per held-out split)."""
    engine = MotionEngine(model_path) if model_path else MotionEngine()
    rig = Rig.for_avatar(load(avatar), 256)

    def model_predict(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        track = engine.offline(audio)
        return track.coeffs, track.visemes

    def baseline_predict(audio: np.ndarray) -> tuple[np.ndarray, None]:
        return energy_baseline(audio), None

    result: dict = {"lookahead_ms": engine.lookahead_ms, "closed_threshold_iod": CLOSED_IOD,
                    "avatar": avatar}
    for split in ("heldout", "heldout_voice"):
        utts = [with_pauses(u, i) for i, u in enumerate(load_split(data, split))]
        if not utts:
            continue
        result[split] = {"model": score(utts, model_predict, rig),
                         "energy_baseline": score(utts, baseline_predict, rig, False)}
    result["non_speech"] = non_speech(engine, rig)
    return result


def plot(data: Path, out: Path, model_path: Path | None = None, name: str | None = None) -> Path:
    """Draw one held-out prompt: waveform, aligned phones, target and predicted jawOpen,
    mouthClose and mouthFunnel. Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    utts = load_split(data, "heldout")
    if not utts:
        raise FileNotFoundError(f"no held-out utterances in {data}")
    u = next((x for x in utts if x.name == name), None) if name else max(
        utts[:40], key=lambda x: sum(1 for p in x.phones if p[0] in ("P", "B", "M")))
    if u is None:
        raise KeyError(f"no held-out prompt named {name!r}")
    engine = MotionEngine(model_path) if model_path else MotionEngine()
    pred = engine.offline(u.audio).coeffs
    t = n_frames(u.audio.size)
    segs = segments_from_phones(u.phones, u.audio.size / SAMPLE_RATE)
    tgt, _, _ = coefficient_tracks(segs, t, FEATURE_RATE_HZ, WINDOW_SECONDS / 2)
    times = frame_time_s(np.arange(t))
    fig, axes = plt.subplots(4, 1, figsize=(12, 8), sharex=True)
    axes[0].plot(np.arange(u.audio.size) / SAMPLE_RATE, u.audio, lw=0.5, color="0.3")
    axes[0].set_title(f"held-out prompt {u.name}")
    for sym, a, b in u.phones:
        axes[0].axvspan(a, b, color="C1" if sym in ("P", "B", "M") else "none", alpha=0.2)
        axes[0].text((a + b) / 2, 0.9 * np.abs(u.audio).max(), sym, ha="center", fontsize=7)
    for ax, name_ in zip(axes[1:], ("jawOpen", "mouthClose", "mouthFunnel")):
        j = MOTION_COEFFICIENTS.index(name_)
        ax.plot(times, tgt[:, j], label="target", color="C0")
        ax.plot(times, pred[:, j], label="predicted", color="C3")
        ax.set_ylabel(name_)
        ax.set_ylim(-0.05, 1.05)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


