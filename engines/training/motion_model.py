"""The audio → expression motion model as a torch module (training and export only).

Architecture (sizes in ``MotionDims``, saved beside the weights and in the ONNX metadata):

    log-mel [B, T + 2, 80]  (2 frames of left context: zeros at the start of a stream)
      → (x − mean) / std                      per-band normalisation fixed from training data
      → Conv1d(80→C, k=3, valid) → GELU        [B, C, T]   (causal: needs frames t−2…t)
      → Conv1d(C→C, k=1) → GELU
      → GRU(C→H, L layers), state h [L, B, H]  (causal)
      → heads: coefficients (sigmoid) [B, T, K], voice activity logit [B, T], viseme logits
        [B, T, 15]

Everything is causal; the model output at step t describes the face at frame t − D, where D =
``delay_frames`` is the model's fixed lookahead (it has heard D frames past the frame it draws).
Streaming equals offline because the same graph runs in both, the GRU state and the last two
feature frames being carried between calls.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from engines.audio import HOP_SECONDS, N_MELS, WINDOW_SECONDS
from engines.motion import CONTEXT_FRAMES  # noqa: F401  (re-exported for training)
from engines.visemes import MOTION_COEFFICIENTS, VISEMES


@dataclass(frozen=True)
class MotionDims:
    """Sizes of the motion model; rebuilt from this (``MotionModel(dims)``)."""

    n_mels: int = N_MELS
    channels: int = 128
    hidden: int = 128
    layers: int = 1
    delay_frames: int = 6
    n_coeffs: int = len(MOTION_COEFFICIENTS)
    n_visemes: int = len(VISEMES)

    @property
    def lookahead_ms(self) -> float:
        """Audio needed past a drawn frame's window centre: D hops plus half a window, ms."""
        return 1000.0 * (self.delay_frames * HOP_SECONDS + WINDOW_SECONDS / 2)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> MotionDims:
        return MotionDims(**json.loads(text))


class MotionModel(nn.Module):
    """Log-mel → (coefficients, voice activity, visemes), streaming-capable.

    ``forward(feats, h)``:
        feats: float32 [B, T + 2, 80] log-mel (the first 2 frames are context).
        h: float32 [layers, B, hidden] GRU state (zeros at a stream's start).
    Returns (coeffs [B, T, K] in [0, 1], vad_logit [B, T], viseme_logits [B, T, 15], h').
    """

    def __init__(self, dims: MotionDims = MotionDims()) -> None:
        super().__init__()
        self.dims = dims
        self.register_buffer("mean", torch.zeros(dims.n_mels))
        self.register_buffer("std", torch.ones(dims.n_mels))
        self.conv1 = nn.Conv1d(dims.n_mels, dims.channels, kernel_size=3)
        self.conv2 = nn.Conv1d(dims.channels, dims.channels, kernel_size=1)
        self.gru = nn.GRU(dims.channels, dims.hidden, num_layers=dims.layers, batch_first=True)
        self.coeff_head = nn.Linear(dims.hidden, dims.n_coeffs)
        self.vad_head = nn.Linear(dims.hidden, 1)
        self.viseme_head = nn.Linear(dims.hidden, dims.n_visemes)
        self.act = nn.GELU()

    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Fix the per-band feature mean and standard deviation, each [80]."""
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-3))

    def initial_state(self, batch: int = 1) -> torch.Tensor:
        """Zero GRU state [layers, batch, hidden]."""
        return torch.zeros(self.dims.layers, batch, self.dims.hidden)

    def forward(self, feats: torch.Tensor, h: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (feats - self.mean) / self.std
        x = self.act(self.conv1(x.transpose(1, 2)))
        x = self.act(self.conv2(x)).transpose(1, 2)
        y, h_next = self.gru(x, h)
        coeffs = torch.sigmoid(self.coeff_head(y))
        vad = self.vad_head(y).squeeze(-1)
        visemes = self.viseme_head(y)
        return coeffs, vad, visemes, h_next
