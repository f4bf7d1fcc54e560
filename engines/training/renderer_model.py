"""The neural renderer: avatar source crop + driving keypoints → face crop (torch; training/export).

A warping renderer in the FOMM/TPSMM/LivePortrait family, restricted to 2-D ops that ONNX Runtime
and TensorRT run natively (Conv, Resize, GatherElements, MatMul, Sigmoid, ReduceMin…). Two graphs:

* ``RendererEncoder``: source crop [B, 3, R, R] → features [B, F, G, G] (G = ``motion_grid``),
  run once per avatar and cached.
* ``Renderer``: (source, features, source keypoints, driving keypoints) → frames [B, 3, R, R].

Per frame (version 2, issue 17: half the CPU time of version 1, lids and interior painted from
geometry and the face's own colours):

1. **Sparse → dense motion (analytic).** The backward displacement known at the 468 driving mesh
   keypoints (source − driving) and at fixed border anchors (zero) is spread over a grid by
   inverse-distance weighting (Shepard 1968, power 2) — two MatMuls and a Reciprocal — on a
   G/2 grid, upsampled bilinearly to G.
2. **Conditioning** (computed on the G/2 grid, upsampled to G), all from keypoints: mouth maps (a soft inside-mask of the driving
   inner-lip polygon, signed distances to the upper and lower inner-lip contours in IOD units, the
   lateral position along the lips), eye maps (the same for the nearer eye's lid contours, and that
   eye's closure 1 − driving lid gap / source lid gap under a Gaussian window), and the face's own
   colours: the source sampled at known mesh vertices of the cheeks, the lips and the upper lids
   (``COLOUR_GROUPS``), one RGB triple each, broadcast over the grid. The painted cavity, teeth,
   tongue and lids are conditioned on these, not on what surrounds the mouth (clothes, background).
3. **Dense-motion network.** A small U-Net on G sees the IDW displacement, the conditioning, the
   source and its encoder features warped by it (bilinear, ``sample_bilinear``), and returns a
   flow correction and decoder features.
4. **Output** at R: the source warped by the upsampled flow (``sample_bilinear`` at R: grid_sample
   in torch, four GatherElements in the exported graph, where ONNX Runtime's GridSample is
   single-threaded and was a quarter of the batch-1 time).
5. **Decoder on G with a sub-pixel output** (Shi et al. 2016, "Real-Time Single Image and Video
   Super-Resolution Using an Efficient Sub-Pixel CNN"): from the U-Net features, the conditioning
   and the warped output folded to G (average-pooled to 2G, then space-to-depth; computed as one
   strided conv, ``Renderer._decoder_input``), it paints RGB and a blend mask at 2G by
   depth-to-space (resized to R) — what the source cannot show (cavity, teeth, tongue,
   closing lids). Version 1 ran its decoder and a second grid_sample at 2G; this is where most of
   the time went.
6. The warped source blended with the painted RGB by the mask.

Weights are independent of R: every learned layer works on the G / 2G grids, so the same weights
export at R = 256 and R = 512 (``RendererDims.size``). Keypoints are crop pixels with mediapipe's
convention (pixel j spans [j, j+1)); grid_sample's ``align_corners=False`` is the same convention.
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
        decoder_channels: channels of the decoder on G.
        idw_eps: IDW regulariser (normalised units squared), about a quarter cell².
        idw_grid: side of the grid the IDW displacement is computed on before a bilinear
            upsampling to G (the IDW was a fifth of version 1's time at G; the U-Net's
            correction restores the detail at the lips).
        version: architecture version (2; checkpoints of version 1 do not load).
    """

    size: int = 256
    motion_grid: int = 64
    feature_channels: int = 8
    unet_channels: tuple[int, int, int] = (32, 48, 64)
    decoder_channels: int = 24
    idw_eps: float = 2.5e-4
    idw_grid: int = 32
    version: int = 2

    def to_json(self) -> str:
        """JSON text of the dimensions (for checkpoints and ONNX metadata)."""
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> RendererDims:
        """Inverse of ``to_json``; unknown keys raise TypeError, another version ValueError."""
        data = json.loads(text)
        if data.get("version", 1) != 2:
            raise ValueError(f"renderer checkpoint of version {data.get('version', 1)}; this code "
                             "runs version 2 (retrain with tools/train_renderer.py)")
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


def sample_bilinear(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear backward warp by element gathers: [B, C, H', W'].

    ``out[b, :, i, j]`` is ``image[b]`` at the continuous pixel position ``points[b, :, i, j]``:
    the same values as ``F.grid_sample(..., mode="bilinear", padding_mode="border",
    align_corners=False)`` at the matching normalised grid (to float rounding), written as
    GatherElements on the flattened image when exported to ONNX, because ONNX Runtime's CPU
    GridSample runs on one thread: at [1, 3, 256, 256] it took 1.9 ms against 1.2 ms for this
    (ONNX Runtime 1.24, 2 threads), a quarter of the whole v2 graph at batch 1. In torch it
    is ``F.grid_sample`` (0.11 against 0.14–0.18 s for a training step's forward and backward
    at batch 8). The gather indices are int32 (GatherElements takes int32 or int64; TensorRT
    works in int32): against int64 the whole graph ran 5% faster at batch 1 and 5–6% at batch 8
    (R = 256, ONNX Runtime 1.24, 2 threads, the two alternated in one run, both orders).

    Args:
        image: float [B, C, H, W], H and W ≥ 2.
        points: float [B, 2, H', W'], channels first: (x, y) in the image's pixels, where
            pixel (j, i) has its centre at (j, i) (so x = (grid_x + 1) · W / 2 − 0.5 of the
            normalised convention); clamped to the border pixel centres.
    """
    b, c, h, w = image.shape
    if not torch.onnx.is_in_onnx_export():
        # In torch (training) grid_sample is the faster of the two, backward pass included.
        size = torch.tensor([w, h], dtype=points.dtype, device=points.device)[None, :, None, None]
        grid = ((points + 0.5) * (2.0 / size) - 1.0).permute(0, 2, 3, 1)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)
    px = points[:, 0].clamp(0.0, w - 1.0)
    py = points[:, 1].clamp(0.0, h - 1.0)
    x0 = px.floor().clamp(max=w - 2.0)
    y0 = py.floor().clamp(max=h - 2.0)
    fx = (px - x0).unsqueeze(1)
    fy = (py - y0).unsqueeze(1)
    out_hw = points.shape[2:]
    idx = (y0 * w + x0).int().reshape(b, 1, -1).expand(-1, c, -1)
    flat = image.reshape(b, c, h * w)

    def at(offset: int) -> torch.Tensor:
        return torch.gather(flat, 2, idx + offset).reshape(b, c, *out_hw)

    top_left, top_right, bottom_left, bottom_right = at(0), at(1), at(w), at(w + 1)
    top = top_left + (top_right - top_left) * fx
    bottom = bottom_left + (bottom_right - bottom_left) * fx
    return top + (bottom - top) * fy


def pixel_grid(n: int) -> torch.Tensor:
    """Pixel-centre positions of an n × n image in ``sample_bilinear``'s convention:
    float32 [1, 2, n, n], (x, y) = (j, i)."""
    c = torch.arange(n, dtype=torch.float32)
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x, y])[None]


def normalise(kp: torch.Tensor, size: int) -> torch.Tensor:
    """Crop pixels [..., 2] → normalised [-1, 1] coordinates (align_corners=False convention)."""
    return kp * (2.0 / size) - 1.0


def idw_displacement(points: torch.Tensor, values: torch.Tensor, grid: torch.Tensor,
                     eps: float) -> torch.Tensor:
    """Inverse-distance-weighted interpolation (power 2; Shepard 1968).

    Written for ONNX Runtime's CPU kernels: the squared distances plus ``eps`` come out of one
    MatMul of augmented vectors ([x, y, 1, x² + y²] · [−2p_x, −2p_y, |p|² + eps, 1]), and the
    weighted sum and the sum of weights out of one more ([values, 1]), so only a Reciprocal and
    a Mul touch the [B, P, N] weights.

    Args:
        points: [B, N, 2] normalised control-point positions.
        values: [B, N, 2] values at the points.
        grid: [P, 2] query positions.
        eps: added to squared distances (keeps weights finite on a point).

    Returns:
        [B, P, 2] interpolated values.
    """
    g_aug = torch.cat([grid, torch.ones_like(grid[:, :1]), (grid * grid).sum(-1, keepdim=True)],
                      1)  # [P, 4]
    p2 = (points * points).sum(-1, keepdim=True) + eps
    p_aug = torch.cat([-2 * points, p2, torch.ones_like(p2)], 2)  # [B, N, 4]
    d2 = torch.matmul(g_aug, p_aug.transpose(1, 2))  # [B, P, N], ≥ eps up to rounding
    r = torch.reciprocal(d2)
    w = r * r  # a Pow node costs ONNX Runtime several times a Mul
    num = torch.matmul(w, torch.cat([values, torch.ones_like(values[..., :1])], 2))  # [B, P, 3]
    return num[..., :2] / num[..., 2:]


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


EYES = ((T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER), (T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER))
EYE_WINDOW_IOD = 0.3
"""Gaussian sigma (IOD units) of the window that carries an eye's closure around it."""


def eye_maps(src: torch.Tensor, drv: torch.Tensor, grid: torch.Tensor, n: int,
             iod: torch.Tensor, cell: float) -> torch.Tensor:
    """Eye conditioning maps on an n × n grid for normalised keypoints [B, 478, 2].

    Returns [B, 4, n, n], each from the eye nearer to the grid point: soft inside-mask of the
    driving eye polygon, distance below the upper lid contour and above the lower one (IOD units,
    positive inside, clamped to ±1), and that eye's closure (1 − driving / source mean lid gap,
    clamped to [0, 1]) under a Gaussian window of sigma ``EYE_WINDOW_IOD``.
    """
    per_eye = []
    dist = []
    scale = iod[:, None]
    for upper, lower in EYES:
        poly = drv[:, list(upper) + list(lower[-2:0:-1])]
        d = _edge_distances(poly, grid)  # [B, P, 16]
        n_up = len(upper) - 1
        mask = torch.sigmoid((d.min(-1).values - 0.25 * cell) / (0.25 * cell))
        d_upper = (d[..., :n_up].min(-1).values / scale).clamp(-1, 1)
        d_lower = (d[..., n_up:].min(-1).values / scale).clamp(-1, 1)
        pairs = list(zip(upper[1:-1], lower[1:-1]))
        top = [a for a, _ in pairs]
        bottom = [b for _, b in pairs]
        gap_d = torch.sqrt(((drv[:, top] - drv[:, bottom]) ** 2).sum(-1) + 1e-12).mean(-1)
        gap_s = torch.sqrt(((src[:, top] - src[:, bottom]) ** 2).sum(-1) + 1e-12).mean(-1)
        closure = (1.0 - gap_d / (gap_s + 1e-6)).clamp(0, 1)  # [B]
        centre = drv[:, list(upper) + list(lower)].mean(1)  # [B, 2]
        r2 = ((grid[None] - centre[:, None]) ** 2).sum(-1) / (scale * scale)  # [B, P]
        window = torch.exp(-r2 / (2 * EYE_WINDOW_IOD ** 2))
        per_eye.append(torch.stack([mask, d_upper, d_lower, closure[:, None] * window], 1))
        dist.append(r2)
    nearer_right = (dist[0] <= dist[1])[:, None]
    maps = torch.where(nearer_right, per_eye[0], per_eye[1])
    return maps.reshape(drv.shape[0], 4, n, n)


COLOUR_GROUPS = (
    ("cheeks", (50, 280, 101, 330, 205, 425, 36, 266), (), 0.0),
    ("lips", (37, 0, 267, 84, 17, 314, 40, 270, 181, 405), (82, 13, 312, 87, 14, 317, 80, 310, 88,
                                                            318), 0.5),
    ("lids", (160, 159, 158, 387, 386, 385), (52, 65, 52, 282, 295, 282), 0.3),
)
"""Where the face's own colours are sampled: (name, vertices a, vertices b, t); each sample point is
a + t·(b − a) on the source keypoints (Face Mesh indices): cheek vertices; the middle of the
vermilion between the outer and inner lip contours; the upper lid skin 30% of the way from the
upper lid contour towards the lower brow edge."""


def face_colours(source: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Mean RGB [B, 3·len(COLOUR_GROUPS)] of the source crop [B, 3, R, R] at the
    ``COLOUR_GROUPS`` sample points of normalised source keypoints src [B, 478, 2]."""
    points = []
    counts = []
    for _, a, b, t in COLOUR_GROUPS:
        pa = src[:, list(a)]
        points.append(pa if not b else pa + t * (src[:, list(b)] - pa))
        counts.append(len(a))
    grid = torch.cat(points, 1)[:, None]  # [B, 1, K, 2]
    rgb = F.grid_sample(source, grid, mode="bilinear", padding_mode="border",
                        align_corners=False)[:, :, 0]  # [B, 3, K]
    out = []
    k = 0
    for c in counts:
        out.append(rgb[:, :, k:k + c].mean(-1))
        k += c
    return torch.cat(out, 1)


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
    """One frame per batch row (version 2; see the module docstring).

    forward(source [B, 3, R, R] in [0, 1], features [B, F, G, G], source_keypoints [B, 478, 2],
    driving_keypoints [B, 478, 2] in crop pixels) → frames [B, 3, R, R] in [0, 1].
    ``forward_train`` also returns the flow and mask for auxiliary losses.
    """

    UPSCALE = 2
    """The decoder paints at UPSCALE · G (depth-to-space), then a bilinear resize to R."""

    def __init__(self, dims: RendererDims):
        super().__init__()
        self.dims = dims
        g = dims.motion_grid
        c1, c2, c3 = dims.unet_channels
        f = dims.feature_channels
        anchors = torch.tensor(border_anchors(1), dtype=torch.float32) * 2 - 1  # normalised
        self.register_buffer("anchors", anchors, persistent=False)
        self.register_buffer("grid_idw", grid_centres(dims.idw_grid), persistent=False)
        self.register_buffer("pixels_g", pixel_grid(g), persistent=False)
        self.register_buffer("pixels_r", pixel_grid(dims.size), persistent=False)
        n_colours = 3 * len(COLOUR_GROUPS)
        self.n_cond = 4 + 4 + n_colours
        cin = 2 + 3 + f + 8  # the U-Net sees the mouth and eye maps; the colours go to the decoder
        self.enc1 = nn.Sequential(_conv(cin, c1))
        self.enc2 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2))
        self.enc3 = nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3))
        self.up3 = nn.Conv2d(c3, c2, 1)
        self.dec2 = _conv(c2, c2)
        self.up2 = nn.Conv2d(c2, c1, 1)
        self.dec1 = _conv(c1, c1)
        self.flow_head = nn.Conv2d(c1, 2, 1)
        nn.init.zeros_(self.flow_head.weight)
        nn.init.zeros_(self.flow_head.bias)
        d = dims.decoder_channels
        u = self.UPSCALE
        self.decoder = nn.Sequential(
            nn.Conv2d(c1 + 12 + self.n_cond, d, 1), nn.LeakyReLU(0.2),
            _conv(d, d),
            nn.Conv2d(d, 4 * u * u, 1))

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
        u = self.UPSCALE
        b = source.shape[0]
        pts, disp_pts = self._sparse(source_keypoints, driving_keypoints)
        n = dims.idw_grid
        disp0 = idw_displacement(pts, disp_pts, self.grid_idw, dims.idw_eps)  # [B, n², 2]
        disp0 = disp0.transpose(1, 2).reshape(b, 2, n, n)
        if n != g:
            disp0 = F.interpolate(disp0, size=(g, g), mode="bilinear", align_corners=False)

        drv = normalise(driving_keypoints, r)
        src = normalise(source_keypoints, r)
        iod = inter_ocular(drv)
        colours = face_colours(source, src)  # [B, 9]
        # Keypoint maps on the IDW grid, upsampled: distances are near-linear fields, and the
        # many small ops of the polygon distances were a quarter of the time on G.
        maps = torch.cat([mouth_maps(drv, self.grid_idw, n, iod, 2.0 / n),
                          eye_maps(src, drv, self.grid_idw, n, iod, 2.0 / n)], 1)
        if n != g:
            maps = F.interpolate(maps, size=(g, g), mode="bilinear", align_corners=False)
        src_g = F.avg_pool2d(source, r // g) if r != g else source
        # Normalised displacement → pixels of the G grid: one pixel is 2 / G.
        warped_g = sample_bilinear(torch.cat([src_g, features], 1),
                                   self.pixels_g + disp0 * (g / 2.0))
        warped_src, warped_feat = warped_g[:, :3], warped_g[:, 3:]
        x = torch.cat([disp0 * DISP_SCALE, warped_src, warped_feat, maps], 1)
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        u2 = self.dec2(F.interpolate(self.up3(e3), scale_factor=2.0, mode="bilinear",
                                     align_corners=False) + e2)
        u1 = self.dec1(F.interpolate(self.up2(u2), scale_factor=2.0, mode="bilinear",
                                     align_corners=False) + e1)
        disp = disp0 + self.flow_head(u1) / DISP_SCALE

        # Output warp at R.
        disp_r = F.interpolate(disp * (r / 2.0), size=(r, r), mode="bilinear",
                               align_corners=False)
        warped = sample_bilinear(source, self.pixels_r + disp_r)

        # Decoder on G, painting at 2G by depth-to-space.
        out = self.decoder[1:](self._decoder_input(u1, warped, maps, colours))
        out = torch.sigmoid(F.pixel_shuffle(out, u))  # [B, 4, 2G, 2G]: painted RGB, mask
        painted, mask = out[:, :3], out[:, 3:4]
        if r != u * g:
            out = F.interpolate(out, size=(r, r), mode="bilinear", align_corners=False)
        frames = warped + (out[:, :3] - warped) * out[:, 3:4]
        return {"frames": frames, "disp": disp, "mask": mask, "painted": painted}

    def _decoder_input(self, u1: torch.Tensor, warped: torch.Tensor, maps: torch.Tensor,
                       colours: torch.Tensor) -> torch.Tensor:
        """The decoder's first layer, a 1×1 conv over [u1, pixel_unshuffle(avg_pool(warped to
        2G), 2), maps, colours broadcast over G²] ([B, d, G, G]), computed in three parts with
        the same weights: a 1×1 conv over [u1, maps]; one k × k, stride-k conv over the warped
        source at R (k = 2·R/(2G); the average pool and the space-to-depth are folded into the
        kernel); and the colours' term as a per-image bias. The same numbers as the plain layer
        without the pool, the 6-D transpose and the 9 constant planes (about 0.3 ms a frame at
        R = 256 on ONNX Runtime CPU)."""
        first = self.decoder[0]
        c1 = u1.shape[1]
        w = first.weight[:, :, 0, 0]  # [d, c1 + 12 + 8 + 9]
        w_u1, w_rgb = w[:, :c1], w[:, c1:c1 + 12]
        w_maps, w_col = w[:, c1 + 12:c1 + 20], w[:, c1 + 20:]
        h = F.conv2d(torch.cat([u1, maps], 1), torch.cat([w_u1, w_maps], 1)[:, :, None, None])
        p = self.dims.size // (2 * self.dims.motion_grid)
        # pixel_unshuffle's channel c·4 + 2i + j holds the pixel at row i, column j of a block.
        d = self.dims.decoder_channels
        kernel = (w_rgb.reshape(d, 3, 2, 1, 2, 1).expand(d, 3, 2, p, 2, p)
                  .reshape(d, 3, 2 * p, 2 * p) / float(p * p))
        h = h + F.conv2d(warped, kernel, stride=2 * p)
        return h + (colours @ w_col.t() + first.bias)[:, :, None, None]

    def forward(self, source: torch.Tensor, features: torch.Tensor, source_keypoints: torch.Tensor,
                driving_keypoints: torch.Tensor) -> torch.Tensor:
        return self.forward_train(source, features, source_keypoints, driving_keypoints)["frames"]


def warm_start(renderer: Renderer, encoder: RendererEncoder, v1_state: dict) -> list[str]:
    """Copy the layers a version-1 checkpoint (``encoder``/``renderer`` state dicts) shares with
    version 2: the encoder and the U-Net, whose first layer's inputs were extended (the new
    input channels start at zero). Returns the names of the tensors copied."""
    copied = []
    enc_state = encoder.state_dict()
    for k, v in v1_state["encoder"].items():
        if k in enc_state and enc_state[k].shape == v.shape:
            enc_state[k] = v
            copied.append("encoder." + k)
        elif k in enc_state and enc_state[k].shape[1:] == v.shape[1:]:
            enc_state[k] = v[: enc_state[k].shape[0]]  # the first output channels
            copied.append("encoder." + k)
    encoder.load_state_dict(enc_state)
    state = renderer.state_dict()
    old = v1_state["renderer"]
    f = renderer.dims.feature_channels
    for k, v in old.items():
        if k not in state or k.startswith(("decoder", "dec_in")):
            continue
        if state[k].shape == v.shape:
            state[k] = v
            copied.append(k)
        elif k == "flow_head.weight":
            state[k] = v[:, :, 1:2, 1:2].clone()  # v1's 3 × 3 head: its centre tap
            copied.append(k)
        elif k == "enc1.0.0.weight":
            # v1 inputs: disp 2, mouth 4, warped src 3, feats 16; v2: disp 2, src 3, feats F,
            # mouth 4, eyes 4 (the encoder keeps v1's first F feature channels).
            w = torch.zeros_like(state[k])
            w[:, :2] = v[:, :2]
            w[:, 2:5 + f] = v[:, 6:9 + f]
            w[:, 5 + f:9 + f] = v[:, 2:6]
            state[k] = w
            copied.append(k)
    renderer.load_state_dict(state)
    return copied


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
