"""Audio and frame-rate constants of the model front-end, in one place (units in the names).

Derived values are computed from the base ones, never retyped.
"""

from __future__ import annotations

SAMPLE_RATE = 16_000
"""Model front-end sample rate, Hz (mono float32 in [-1, 1])."""
OUTPUT_SAMPLE_RATE = 48_000
"""Outgoing audio track sample rate, Hz (WebRTC Opus)."""

WINDOW_SECONDS = 0.025
HOP_SECONDS = 0.010
CHUNK_SECONDS = 0.020
"""Streaming input chunk: 20 ms, a WebRTC audio frame."""

WIN_LENGTH = round(WINDOW_SECONDS * SAMPLE_RATE)  # 400 samples
HOP_LENGTH = round(HOP_SECONDS * SAMPLE_RATE)  # 160 samples
CHUNK_SAMPLES = round(CHUNK_SECONDS * SAMPLE_RATE)  # 320 samples
N_FFT = 512
"""FFT size: the next power of two above WIN_LENGTH; the window is zero-padded to it."""
N_MELS = 80
FMIN_HZ = 0.0
FMAX_HZ = SAMPLE_RATE / 2
FEATURE_RATE_HZ = SAMPLE_RATE // HOP_LENGTH  # 100 frames per second
LOG_FLOOR = 1e-10
"""Power floor before log10 (−100 dB re full scale), so digital silence gives finite features."""
