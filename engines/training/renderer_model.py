"""The neural renderer: avatar source crop + driving keypoints → face crop (torch; training/export).

A warping renderer in the FOMM/TPSMM/LivePortrait family, restricted to 2-D ops that ONNX Runtime
and TensorRT run natively (Conv, Resize, 2-D GridSample, MatMul, Sigmoid, ReduceMin…). Two graphs:

* ``RendererEncoder``: source crop [B, 3, R, R] → features [B, F, G, G] (G = ``motion_grid``),
  run once per avatar and cached.
* ``Renderer``: (source, features, source keypoints, driving keypoints) → frames [B, 3, R, R].

Per frame:

1. **Sparse → dense motion (analytic).** The backward displacement known at the 468 driving mesh
   keypoints (source − driving) and at fixed border anchors (zero) is spread over a G × G grid by
   inverse-distance weighting (Shepard 1968, power 2) — one MatMul.
2. **Dense-motion network.** A small U-Net on that grid sees the IDW displacement, the source and
   its encoder features warped by it (2-D grid_sample), and a soft mask of the driving inner-lip
   polygon, and returns a flow correction and decoder features.
3. **Decoder** at ``decoder_grid`` (2G): from those features, the source warped by the refined flow,
   the mouth mask and a "mouth frame" (signed distances to the upper and lower inner-lip contours
   and the lateral position along the lips, in inter-ocular units) it paints what the source cannot
   show — cavity, teeth moving with each jaw, tongue, and lids — and a blend mask.
4. **Output** at R: the source warped by the upsampled flow, blended with the painted RGB.

Weights are independent of R: every learned layer works on the G / 2G grids, so the same weights
export at R = 256 and R = 512 (``RendererDims.size``). Keypoints are crop pixels with mediapipe's
convention (pixel j spans [j, j+1)); grid_sample uses ``align_corners=False``, the same convention.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avatars import topology as T
from engines.teacher import border_anchors

DISP_SCALE = 10.0
"""Displacements (normalised units, −1…1 across the crop) are multiplied by this before entering
the network so that typical values are O(1)."""


@dataclass(frozen=True)
class RendererDims:
    """Dimensions of the renderer; saved with the weights and in the ONNX metadata.

    Attributes:
        size: output crop side R in pixels (256 or 512); does not change the weights.
        motion_grid: G, side of the dense-motion grid (encoder features and flow).
        feature_channels: F, encoder feature channels.
        unet_channels: channels at G, G/2 and G/4 in the dense-motion U-Net.
        decoder_channels: channels of the decoder at 2G.
        idw_eps: IDW regulariser (normalised units squared), about a quarter cell².
    """

    size: int = 256
    motion_grid: int = 64
    feature_channels: int = 16
    unet_channels: tuple[int, int, int] = (32, 48, 64)
    decoder_channels: int = 16
    idw_eps: float = 2.5e-4

    def to_json(self) -> str:
        """JSON text of the dimensions (for checkpoints and ONNX metadata)."""
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> RendererDims:
        """Inverse of ``to_json``; unknown keys raise TypeError."""
        data = json.loads(text)
        data["unet_channels"] = tuple(data["unet_channels"])
        return RendererDims(**data)

    def with_size(self, size: int) -> RendererDims:
        """Same weights-relevant dimensions at another output size R."""
        return replace(self, size=size)


MOUTH_POLYGON = tuple(T.LIPS_INNER_UPPER) + tuple(T.LIPS_INNER_LOWER[::-1][1:-1])
"""Driving inner-lip polygon: upper contour right→left corner, then the lower back (20 vertices)."""
N_UPPER_EDGES = len(T.LIPS_INNER_UPPER) - 1


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))


def grid_centres(n: int) -> torch.Tensor:
    """Normalised pixel-centre coordinates of an n × n grid: [n·n, 2] (x, y) in (−1, 1)."""
    c = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], 1)


def normalise(kp: torch.Tensor, size: int) -> torch.Tensor:
    """Crop pixels [..., 2] → normalised [-1, 1] coordinates (align_corners=False convention)."""
    return kp * (2.0 / size) - 1.0


def idw_displacement(points: torch.Tensor, values: torch.Tensor, grid: torch.Tensor,
                     eps: float) -> torch.Tensor:
    """Inverse-distance-weighted interpolation (power 2; Shepard 1968).

    Args:
        points: [B, N, 2] normalised control-point positions.
        values: [B, N, 2] values at the points.
        grid: [P, 2] query positions.
        eps: added to squared distances (keeps weights finite on a point).

    Returns:
        [B, P, 2] interpolated values.
    """
    g2 = (grid * grid).sum(-1)[None, :, None]  # [1, P, 1]
    p2 = (points * points).sum(-1)[:, None, :]  # [B, 1, N]
    cross = torch.matmul(grid[None].expand(points.shape[0], -1, -1), points.transpose(1, 2))
    d2 = torch.clamp(g2 + p2 - 2 * cross, min=0.0)
    w = 1.0 / (d2 + eps) ** 2
    w = w / w.sum(-1, keepdim=True)
    return torch.matmul(w, values)


def _edge_distances(poly: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Signed distances [B, P, E] from grid points [P, 2] to the edge lines of closed polygons
    poly [B, E, 2], positive on the inner side (orientation from the shoelace area)."""
    a = poly
    b = torch.roll(poly, -1, dims=1)
    e = b - a  # [B, E, 2]
    length = torch.sqrt((e * e).sum(-1) + 1e-12)  # [B, E]
    area = (a[..., 0] * b[..., 1] - b[..., 0] * a[..., 1]).sum(-1)  # 2·signed area, [B]
    orient = torch.where(area >= 0, torch.ones_like(area), -torch.ones_like(area))
    # cross(e, g − a) = e_x (g_y − a_y) − e_y (g_x − a_x)
    gx = grid[None, :, None, 0]
    gy = grid[None, :, None, 1]
    cross = e[:, None, :, 0] * (gy - a[:, None, :, 1]) - e[:, None, :, 1] * (gx - a[:, None, :, 0])
    return cross / length[:, None, :] * orient[:, None, None]


def mouth_maps(drv: torch.Tensor, grid: torch.Tensor, n: int, iod: torch.Tensor,
               cell: float) -> torch.Tensor:
    """Mouth conditioning maps on an n × n grid for normalised driving keypoints [B, 478, 2].

    Returns [B, 4, n, n]: soft inside-mask of the inner-lip polygon (convex approximation), the
    distance below the upper inner-lip contour and above the lower one (IOD units, positive
    inside), and the lateral position along the corner-to-corner axis (−1…1 at the corners).
    """
    poly = drv[:, list(MOUTH_POLYGON)]
    d = _edge_distances(poly, grid)  # [B, P, 20]
    scale = iod[:, None]
    inside = d.min(-1).values
    mask = torch.sigmoid((inside - 0.5 * cell) / (0.5 * cell))
    d_upper = d[..., :N_UPPER_EDGES].min(-1).values / scale
    d_lower = d[..., N_UPPER_EDGES:].min(-1).values / scale
    right, left = drv[:, T.INNER_CORNER_RIGHT], drv[:, T.INNER_CORNER_LEFT]
    mid = 0.5 * (right + left)
    axis = left - right
    half = torch.sqrt((axis * axis).sum(-1) + 1e-12) * 0.5  # [B]
    unit = axis / (2 * half[:, None])
    lateral = ((grid[None] - mid[:, None]) * unit[:, None]).sum(-1) / half[:, None]
    maps = torch.stack([mask, d_upper.clamp(-1, 1), d_lower.clamp(-1, 1), lateral.clamp(-2, 2)], 1)
    return maps.reshape(drv.shape[0], 4, n, n)


def inter_ocular(kp: torch.Tensor) -> torch.Tensor:
    """Inter-ocular distance [B] of keypoints [B, 478, 2]: eye-centre distance, each centre the
    midpoint of its corners (33/133, 263/362), as ``avatars.bundle.inter_ocular_distance``."""
    r = 0.5 * (kp[:, 33] + kp[:, 133])
    left = 0.5 * (kp[:, 263] + kp[:, 362])
    d = left - r
    return torch.sqrt((d * d).sum(-1) + 1e-12)


class RendererEncoder(nn.Module):
    """Source crop [B, 3, R, R] in [0, 1] → features [B, F, G, G] (once per avatar)."""

    def __init__(self, dims: RendererDims):
        super().__init__()
        self.dims = dims
        f = dims.feature_channels
        self.net = nn.Sequential(_conv(3, f), _conv(f, f, 2), nn.Conv2d(f, f, 3, 1, 1))

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        g2 = 2 * self.dims.motion_grid
        x = F.interpolate(source, size=(g2, g2), mode="bilinear", align_corners=False,
                          antialias=False) if source.shape[-1] != g2 else source
        return self.net(x)


class Renderer(nn.Module):
    """One frame per batch row.

    forward(source [B, 3, R, R] in [0, 1], features [B, F, G, G], source_keypoints [B, 478, 2],
    driving_keypoints [B, 478, 2] in crop pixels) → frames [B, 3, R, R] in [0, 1].
    ``forward_train`` also returns the flow and mask for auxiliary losses.
    """

    def __init__(self, dims: RendererDims):
        super().__init__()
        self.dims = dims
        g = dims.motion_grid
        c1, c2, c3 = dims.unet_channels
        f = dims.feature_channels
        anchors = torch.tensor(border_anchors(1), dtype=torch.float32) * 2 - 1  # normalised
        self.register_buffer("anchors", anchors, persistent=False)
        self.register_buffer("grid_g", grid_centres(g), persistent=False)
        self.register_buffer("grid_2g", grid_centres(2 * g), persistent=False)
        self.register_buffer("grid_r", grid_centres(dims.size), persistent=False)
        cin = 2 + 4 + 3 + f
        self.enc1 = nn.Sequential(_conv(cin, c1), _conv(c1, c1))
        self.enc2 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2))
        self.enc3 = nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3))
        self.up3 = nn.Conv2d(c3, c2, 1)
        self.dec2 = _conv(c2, c2)
        self.up2 = nn.Conv2d(c2, c1, 1)
        self.dec1 = _conv(c1, c1)
        self.flow_head = nn.Conv2d(c1, 2, 3, 1, 1)
        nn.init.zeros_(self.flow_head.weight)
        nn.init.zeros_(self.flow_head.bias)
        d = dims.decoder_channels
        self.dec_in = nn.Conv2d(c1, d, 1)
        self.decoder = nn.Sequential(_conv(d + 3 + 4, d), _conv(d, d), nn.Conv2d(d, 4, 3, 1, 1))

    def _sparse(self, skp: torch.Tensor, dkp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised control points and backward displacements: [B, 468 + A, 2] each."""
        b = skp.shape[0]
        anchors = self.anchors[None].expand(b, -1, -1)
        s = normalise(skp[:, : T.N_MESH], self.dims.size)
        d = normalise(dkp[:, : T.N_MESH], self.dims.size)
        pts = torch.cat([d, anchors], 1)
        disp = torch.cat([s - d, torch.zeros_like(anchors)], 1)
        return pts, disp

    def forward_train(self, source: torch.Tensor, features: torch.Tensor, source_keypoints:
                      torch.Tensor, driving_keypoints: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward pass returning ``frames`` [B,3,R,R], ``disp`` [B,2,G,G] (backward displacement,
        normalised units), ``mask`` [B,1,2G,2G] (painted share) and ``painted`` [B,3,2G,2G]."""
        dims = self.dims
        g, r = dims.motion_grid, dims.size
        b = source.shape[0]
        pts, disp_pts = self._sparse(source_keypoints, driving_keypoints)
        disp0 = idw_displacement(pts, disp_pts, self.grid_g, dims.idw_eps)  # [B, G², 2]
        disp0 = disp0.transpose(1, 2).reshape(b, 2, g, g)
        base_g = self.grid_g.t().reshape(1, 2, g, g)

        drv = normalise(driving_keypoints, r)
        iod = inter_ocular(drv)
        m_g = mouth_maps(drv, self.grid_g, g, iod, 2.0 / g)
        src_2g = F.interpolate(source, size=(2 * g, 2 * g), mode="bilinear", align_corners=False)
        src_g = F.avg_pool2d(src_2g, 2)
        grid0 = (base_g + disp0).permute(0, 2, 3, 1)
        warped_src = F.grid_sample(src_g, grid0, mode="bilinear", padding_mode="border",
                                   align_corners=False)
        warped_feat = F.grid_sample(features, grid0, mode="bilinear", padding_mode="border",
                                    align_corners=False)
        x = torch.cat([disp0 * DISP_SCALE, m_g, warped_src, warped_feat], 1)
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        u2 = self.dec2(F.interpolate(self.up3(e3), scale_factor=2.0, mode="bilinear",
                                     align_corners=False) + e2)
        u1 = self.dec1(F.interpolate(self.up2(u2), scale_factor=2.0, mode="bilinear",
                                     align_corners=False) + e1)
        disp = disp0 + self.flow_head(u1) / DISP_SCALE

        # Decoder at 2G.
        n2 = 2 * g
        disp_2g = F.interpolate(disp, size=(n2, n2), mode="bilinear", align_corners=False)
        base_2g = self.grid_2g.t().reshape(1, 2, n2, n2)
        warped_2g = F.grid_sample(src_2g, (base_2g + disp_2g).permute(0, 2, 3, 1),
                                  mode="bilinear", padding_mode="border", align_corners=False)
        m_2g = mouth_maps(drv, self.grid_2g, n2, iod, 2.0 / n2)
        h = F.interpolate(self.dec_in(u1), size=(n2, n2), mode="bilinear", align_corners=False)
        out = self.decoder(torch.cat([h, warped_2g, m_2g], 1))
        painted = torch.sigmoid(out[:, :3])
        mask = torch.sigmoid(out[:, 3:4])

        # Output at R.
        disp_r = F.interpolate(disp, size=(r, r), mode="bilinear", align_corners=False)
        base_r = self.grid_r.t().reshape(1, 2, r, r)
        warped = F.grid_sample(source, (base_r + disp_r).permute(0, 2, 3, 1), mode="bilinear",
                               padding_mode="border", align_corners=False)
        if r != n2:
            painted_r = F.interpolate(painted, size=(r, r), mode="bilinear", align_corners=False)
            mask_r = F.interpolate(mask, size=(r, r), mode="bilinear", align_corners=False)
        else:
            painted_r, mask_r = painted, mask
        frames = warped * (1 - mask_r) + painted_r * mask_r
        return {"frames": frames, "disp": disp, "mask": mask, "painted": painted}

    def forward(self, source: torch.Tensor, features: torch.Tensor, source_keypoints: torch.Tensor,
                driving_keypoints: torch.Tensor) -> torch.Tensor:
        return self.forward_train(source, features, source_keypoints, driving_keypoints)["frames"]


def build(dims: RendererDims) -> tuple[RendererEncoder, Renderer]:
    """Fresh encoder and renderer for ``dims``."""
    return RendererEncoder(dims), Renderer(dims)


def load_checkpoint(path: str, size: int | None = None) -> tuple[RendererEncoder, Renderer]:
    """Encoder and renderer from a checkpoint written by ``tools/train_renderer.py`` (keys
    ``dims`` JSON, ``encoder``, ``renderer`` state dicts), optionally at another output size."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    dims = RendererDims.from_json(ckpt["dims"])
    if size is not None:
        dims = dims.with_size(size)
    enc, ren = build(dims)
    enc.load_state_dict(ckpt["encoder"])
    ren.load_state_dict(ckpt["renderer"])
    return enc.eval(), ren.eval()


def count_parameters(*modules: nn.Module) -> int:
    """Total number of parameters."""
    return int(sum(p.numel() for m in modules for p in m.parameters()))


def to_tensor_image(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] RGB → float32 [1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
