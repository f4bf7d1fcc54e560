"""Train the audio → expression motion model.

    python tools/train_motion.py --data data/speech --out runs/motion [--steps 3000] [--seed 0]

Reads the corpus of ``tools/prepare_speech.py``; trains ``engines.training.motion_model.MotionModel`` on
random 3-second windows of the "train" split with on-the-fly augmentation, and writes
``OUT/motion.pt`` ({"dims", "state"}) and ``OUT/log.jsonl``. Export with
``tools/export_motion.py``. Seeded (numpy, random, torch); on the 2-core project machine the
default run (6000 steps of 24 × 3 s) takes about 25 minutes.

Windows come 40% from recorded speech and 60% from espeak-ng (``REAL_SPEECH_SHARE``); errors on
jawOpen and mouthClose inside bilabials weigh 8× (``BILABIAL_WEIGHT``).

Targets per 10-ms frame (``engines.visemes``): coarticulated coefficient tracks, viseme class and
voice activity from the phone timings. The network output at step t is trained against the
target at frame t − D (``delay_frames``), which is its fixed lookahead.

Augmentation (``augment``): gain −20…+6 dB; additive noise (white, pink or babble from other
utterances) at 0–30 dB SNR; reverberation with an exponentially decaying noise impulse response
(RT60 0.1–0.7 s); telephone band-limiting (down to 8 kHz and back, PyAV's resampler); G.711
μ-law companding (8-bit codec artefacts). Windows of pure noise or synthetic music (random
harmonic notes) with silence targets teach the model not to move the mouth without speech.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.audio import FEATURE_RATE_HZ, HOP_LENGTH, SAMPLE_RATE, WINDOW_SECONDS
from engines.features import log_mel, n_frames
from engines.training.motion_model import CONTEXT_FRAMES, MotionDims, MotionModel
from engines.visemes import (
    MOTION_COEFFICIENTS,
    VISEME_INDEX,
    coefficient_tracks,
    segments_from_phones,
)
from runtime.evals.signals import pink_noise, synthetic_music

WINDOW_S = 3.0
COEFF_WEIGHTS = {"jawOpen": 3.0, "mouthClose": 3.0}
BILABIAL_WEIGHT = 8.0
"""Extra weight of jawOpen/mouthClose errors on frames inside /p b m/: closures are short (50–
100 ms) and a lip-reader notices a missed one, so they must not be averaged away."""
REAL_SPEECH_SHARE = 0.4
"""Share of training windows drawn from recorded speech (asterisk), the rest espeak-ng."""


@dataclass
class Utterance:
    """One corpus entry with its audio and per-frame targets (feature frame rate)."""

    name: str
    audio: np.ndarray
    coeffs: np.ndarray   # [T, K]
    visemes: np.ndarray  # [T]
    speech: np.ndarray   # [T]
    real: bool = False   # recorded speech (asterisk) rather than espeak-ng


def load_corpus(data: Path, splits: tuple[str, ...]) -> list[Utterance]:
    """Utterances of the given splits with their targets (skips any phone without a viseme)."""
    index = json.loads((data / "index.json").read_text())
    audio = np.load(data / "corpus.npz")["audio"]
    out = []
    for e in index:
        if e["split"] not in splits:
            continue
        a = audio[e["offset"]:e["offset"] + e["length"]]
        t = n_frames(a.size)
        if t < 10:
            continue
        try:
            segs = segments_from_phones([tuple(p) for p in e["phones"]], a.size / SAMPLE_RATE)
        except KeyError:
            continue
        c, v, s = coefficient_tracks(segs, t, FEATURE_RATE_HZ, offset_s=WINDOW_SECONDS / 2)
        out.append(Utterance(e["name"], a, c, v, s, real=e.get("source") == "asterisk"))
    return out


def reverb(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Convolve with an exponentially decaying noise impulse response, RT60 0.1–0.7 s."""
    from scipy.signal import fftconvolve

    rt60 = rng.uniform(0.1, 0.7)
    n = int(rt60 * SAMPLE_RATE)
    ir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    ir[0] = 1.0 / rng.uniform(0.3, 1.0)  # direct path
    y = fftconvolve(x, ir)[: x.size]
    return y * (np.std(x) / (np.std(y) + 1e-9))


def telephone(x: np.ndarray) -> np.ndarray:
    """Band-limit to telephone bandwidth: 16 kHz → 8 kHz → 16 kHz (PyAV's resampler)."""
    from runtime.audio.resample import resample

    y = resample(resample(x.astype(np.float32), SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)
    return np.pad(y, (0, max(0, x.size - y.size)))[: x.size]


def mu_law(x: np.ndarray, mu: float = 255.0) -> np.ndarray:
    """8-bit G.711 μ-law companding round trip (quantisation noise shaped like the codec's)."""
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu)
    y = np.round((y + 1) * 127.5) / 127.5 - 1
    return np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu


def augment(rng: np.random.Generator, x: np.ndarray, babble: np.ndarray) -> np.ndarray:
    """Random chain of the augmentations listed in the module docstring; float32 in [-1, 1]."""
    x = x.astype(np.float64)
    if rng.random() < 0.3:
        x = reverb(rng, x)
    if rng.random() < 0.6:
        kind = rng.integers(3)
        noise = (rng.standard_normal(x.size) if kind == 0 else pink_noise(rng, x.size) if kind == 1
                 else babble[: x.size] / (np.std(babble[: x.size]) + 1e-9))
        snr_db = rng.uniform(0, 30)
        x = x + noise * np.std(x) / (10 ** (snr_db / 20) + 1e-9)
    if rng.random() < 0.15:
        x = telephone(x)
    gain = 10 ** (rng.uniform(-20, 6) / 20)
    x = np.clip(x / (np.abs(x).max() + 1e-9) * 0.5 * gain, -1, 1)
    if rng.random() < 0.15:
        x = mu_law(x)
    return x.astype(np.float32)


def make_batch(rng: np.random.Generator, corpus: list[Utterance], batch: int,
               window_s: float = WINDOW_S, augment_p: float = 0.8, negatives_p: float = 0.08,
               real_p: float = REAL_SPEECH_SHARE) -> dict[str, torch.Tensor]:
    """A batch of random windows: features [B, T + 2, 80] and targets for T frames. A window
    comes from recorded speech with probability ``real_p`` (when the corpus has any)."""
    t_frames = int(window_s * FEATURE_RATE_HZ)
    real = [u for u in corpus if u.real]
    synthetic = [u for u in corpus if not u.real] or real
    n_samples = (t_frames - 1) * HOP_LENGTH + int(WINDOW_SECONDS * SAMPLE_RATE)
    feats, coeffs, vis, speech = [], [], [], []
    for _ in range(batch):
        pool = real if real and rng.random() < real_p else synthetic
        u = pool[rng.integers(len(pool))]
        # start on a frame boundary; windows may run past the end (padded with silence)
        start_frame = int(rng.integers(0, max(1, len(u.coeffs) - t_frames // 2)))
        start = start_frame * HOP_LENGTH
        ctx = CONTEXT_FRAMES * HOP_LENGTH
        a = np.zeros(n_samples + ctx, np.float32)
        lo = max(0, start - ctx)
        piece = u.audio[lo:start + n_samples]
        a[ctx - (start - lo): ctx - (start - lo) + piece.size] = piece
        c = np.zeros((t_frames, len(MOTION_COEFFICIENTS)), np.float32)
        c[:, MOTION_COEFFICIENTS.index("mouthClose")] = 1.0
        v = np.full(t_frames, VISEME_INDEX["sil"], np.int64)
        s = np.zeros(t_frames, np.float32)
        m = min(t_frames, len(u.coeffs) - start_frame)
        c[:m], v[:m], s[:m] = u.coeffs[start_frame:start_frame + m], \
            u.visemes[start_frame:start_frame + m], u.speech[start_frame:start_frame + m]
        if rng.random() < negatives_p:  # noise or music only: the mouth must stay shut
            a = (synthetic_music(rng, a.size) if rng.random() < 0.5 else pink_noise(rng, a.size))
            a = (a * 10 ** (rng.uniform(-30, -6) / 20)).astype(np.float32)
            c[:] = 0.0
            c[:, MOTION_COEFFICIENTS.index("mouthClose")] = 1.0
            v[:], s[:] = VISEME_INDEX["sil"], 0.0
        elif rng.random() < augment_p:
            other = corpus[rng.integers(len(corpus))].audio
            babble = np.resize(other, a.size)
            a = augment(rng, a, babble)
        f = log_mel(a)  # [T + 2, 80]
        feats.append(f[: t_frames + CONTEXT_FRAMES])
        coeffs.append(c)
        vis.append(v)
        speech.append(s)
    return {name: torch.from_numpy(np.stack(values)) for name, values in
            (("feats", feats), ("coeffs", coeffs), ("visemes", vis), ("speech", speech))}


def loss_fn(model: MotionModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Weighted binary cross-entropy on coefficients (soft targets) + BCE on voice activity +
    0.2 × viseme cross-entropy, with the output at step t compared to the target at frame t − D."""
    d = model.dims.delay_frames
    h0 = model.initial_state(batch["feats"].shape[0])
    coeffs, vad, visemes, _ = model(batch["feats"], h0)
    tgt_c, tgt_v, tgt_s = batch["coeffs"], batch["visemes"], batch["speech"]
    if d:
        coeffs, vad, visemes = coeffs[:, d:], vad[:, d:], visemes[:, d:]
        tgt_c, tgt_v, tgt_s = tgt_c[:, :-d], tgt_v[:, :-d], tgt_s[:, :-d]
    w = torch.tensor([COEFF_WEIGHTS.get(n, 1.0) for n in MOTION_COEFFICIENTS])
    lips = torch.tensor([n in ("jawOpen", "mouthClose") for n in MOTION_COEFFICIENTS])
    bilabial = (tgt_v == VISEME_INDEX["PP"]).float()[..., None]  # [B, T, 1]
    w = w * (1.0 + (BILABIAL_WEIGHT - 1.0) * bilabial * lips)
    # binary cross-entropy against the soft targets: its gradient with respect to the logit is
    # (prediction − target) whatever the saturation, so rarely-active coefficients (funnel,
    # pucker) cannot die at 0 the way they do under L1 through a sigmoid
    bce = nn.functional.binary_cross_entropy(coeffs.clamp(1e-6, 1 - 1e-6), tgt_c,
                                             reduction="none")
    l_coeff = (bce * w).mean()
    l_vad = nn.functional.binary_cross_entropy_with_logits(vad, tgt_s)
    l_vis = nn.functional.cross_entropy(visemes.reshape(-1, visemes.shape[-1]), tgt_v.reshape(-1))
    total = l_coeff + 0.5 * l_vad + 0.2 * l_vis
    return total, {"coeff": float(l_coeff.detach()), "vad": float(l_vad.detach()),
                   "viseme": float(l_vis.detach())}


def feature_stats(rng: np.random.Generator, corpus: list[Utterance], n: int = 200
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band mean and std of log-mel over ``n`` random utterances."""
    picks = [corpus[i] for i in rng.integers(0, len(corpus), n)]
    f = np.concatenate([log_mel(u.audio) for u in picks])
    return torch.from_numpy(f.mean(0)), torch.from_numpy(f.std(0))


def train(data: Path, out: Path, steps: int, batch: int, lr: float, seed: int,
          dims: MotionDims | None = None, log_every: int = 50) -> list[dict]:
    """Train and save ``out/motion.pt``; returns the log records. ``dims``: the model's
    dimensions (default ``MotionDims()``)."""
    dims = MotionDims() if dims is None else dims
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    corpus = load_corpus(data, ("train",))
    if not corpus:
        raise SystemExit(f"no training utterances in {data}")
    model = MotionModel(dims)
    model.set_normalisation(*feature_stats(rng, corpus))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    out.mkdir(parents=True, exist_ok=True)
    log, t0 = [], time.time()
    with open(out / "log.jsonl", "w") as fh:
        for step in range(1, steps + 1):
            model.train()
            loss, parts = loss_fn(model, make_batch(rng, corpus, batch))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % log_every == 0 or step == 1 or step == steps:
                rec = {"step": step, "loss": round(float(loss.detach()), 5), **parts,
                       "elapsed_s": round(time.time() - t0, 1)}
                log.append(rec)
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                print(json.dumps(rec), flush=True)
    torch.save({"dims": dims.to_json(), "state": model.state_dict()}, out / "motion.pt")
    return log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "speech")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "motion")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train(args.data, args.out, args.steps, args.batch, args.lr, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
