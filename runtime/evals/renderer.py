"""``facecast eval renderer``: does the neural renderer draw the face it is asked for?

An independent judge (mediapipe Face Mesh, static image mode, refined, one face; the landmarker
enrollment uses) looks at full composited frames of the student (``engines.renderer``) and, as
the reference ceiling, of the procedural teacher (``engines.teacher``) over a fixed, seeded set
of driving poses: draw 0 is the neutral face (zero coefficients, ``NEUTRAL_POSE``), draws
1 … n−1 come from ``avatars.expressions.sample_coefficients`` + ``sample_pose`` (a share
``WIDE_SHARE`` of them over the full ±20° range) on ``np.random.default_rng(seed)`` (so the set
is prefix-stable in ``n``). Figures, per renderer:

* ``nme``: mean over frames with a detected face of the mean distance over the 478 points
  between the driving keypoints (crop pixels mapped into the full image) and the detected
  landmarks (x, y), divided by the avatar's inter-ocular distance (IOD) in image pixels;
  ``nme_p95`` its 95th percentile over frames; ``nme_by_pose`` the mean over frames with a head
  turn up to / over 10° (``moderate`` / ``wide``); ``faces_missing`` frames without a face.
* ``mouth_open_fidelity``: inner-lip gap asked (driving keypoints) vs found (detected), as
  ``mae_iod`` (mean absolute difference / IOD) and ``corr`` (Pearson; null when undefined).
* ``nme_by_jaw``: the mean nme of the draws with jawOpen up to / over ``WIDE_JAW``
  (``speech_range`` / ``wide``): the seeded set is a stress set (jawOpen skewed towards 1),
  wider than speech ever opens the mouth.

``judge_floor``: how far the judge itself moves on this portrait when nothing but the pixel grid
changes: the mean nme between its landmarks on the source image and on the same image translated
by each of ``JUDGE_SHIFTS_PX`` (landmarks moved back). No renderer can be certified below it; on
an old sepia photo it is about 0.03, near the nme bar.

``speech`` (issue 17 asks for every figure "rendering held-out speech"): the same nme and
mouth-open figures for both renderers on ``speech_n`` frames of held-out speech
(``speech_driving``: the held-out Asterisk sentence prompts, never trained on, animated as
``facecast render`` animates them: motion model, prosody, behaviour layer), or ``{"skipped":
reason}`` when the prompts are not installed.

Top level: ``psnr_neutral`` / ``psnr_neutral_teacher`` (the neutral frame against the source
crop over the face region, crop mask > 0.5, images in [0, 1], dB, capped at ``PSNR_CAP_DB`` for
an exact match), ``background_exact`` (every student composite equals the source image wherever
the mask is 0 and outside the crop box), ``nme_gap`` (student − teacher nme) and ``seconds``.

What a viewer sees (``viewer``, per renderer; issue 17), measured by the same judge with the
``runtime.evals.face`` figures on full composites at the neutral head pose:

* ``blink_closure``: eye opening (lid gap / eye width, both eyes) at eyeBlink = 1 over the
  opening at the neutral face; the bar is < ``BARS["blink_closure"]`` (lids meet).
* ``interior_darkness`` / ``interior_red_minus_blue``: 10th-percentile luma inside the detected
  inner lips over cheek luma (median over ``OPEN_MOUTHS``), and mean (R − B) / 255 there; real
  speakers measure 0.04–0.08, the bar is ≤ ``BARS["interior_darkness"]`` and reddish (> 0).

``evaluate_heldout`` runs all of it on every held-out portrait of ``runtime.evals.portraits``
that is installed (enrolled into a temporary folder; never trained on) and checks ``BARS``.

``contact_sheet`` draws ``SHEET_POSES`` (hand-picked, separate from the evaluation set): student
crops in the top 4×4 block, teacher crops in the bottom one, each tile labelled.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import avatars
from avatars.bundle import Avatar
from avatars.expressions import sample_coefficients, sample_pose
from avatars.rig import (
    INDEX,
    N_COEFFICIENTS,
    NEUTRAL_POSE,
    Rig,
    coefficients_from_mapping,
    inner_lip_gap,
    pose_vector,
)
from engines import teacher
from engines.renderer import AvatarSource, NeuralRenderer
from runtime.compositor import Compositor

BATCH = 8
"""Student frames rendered per call."""
PSNR_CAP_DB = 100.0
"""PSNR reported for an exact match (zero error)."""
WIDE_SHARE = 0.3
"""Share of evaluation draws whose head pose spans the full ±20° pitch/yaw, ±15° roll range
(``avatars.expressions.POSE_LIMITS``); the rest stay within a quarter of it, as a talking head
mostly does. ``nme_by_pose`` reports the two kinds apart."""
WIDE_TURN_RAD = np.radians(10.0)
"""Head turn (max |pitch|, |yaw|) above which a frame counts as ``wide`` in ``nme_by_pose``."""

SHEET_POSES: tuple[tuple[str, dict[str, float], dict[str, float]], ...] = (
    # (label, coefficients by name, pose by name): the contact sheet's 16 tiles, chosen to cover
    # the extremes a viewer notices first: mouth shapes, eyes, brows and head turns.
    ("neutral", {}, {}),
    ("jaw 0.5", {"jawOpen": 0.5}, {}),
    ("jaw wide 1.0", {"jawOpen": 1.0}, {}),
    ("pucker", {"mouthPucker": 1.0}, {}),
    ("funnel", {"mouthFunnel": 1.0, "jawOpen": 0.2}, {}),
    ("smile", {"mouthSmile": 1.0}, {}),
    ("smile+jaw", {"mouthSmile": 0.8, "jawOpen": 0.5}, {}),
    ("stretch", {"mouthStretch": 1.0, "jawOpen": 0.3}, {}),
    ("press", {"mouthPress": 1.0}, {}),
    ("blink", {"eyeBlink": 1.0}, {}),
    ("wink L", {"eyeBlinkLeft": 1.0}, {}),
    ("brows up", {"browInnerUp": 1.0, "browOuterUp": 1.0}, {}),
    ("yaw +20", {}, {"yaw": 0.35}),
    ("yaw -20", {"jawOpen": 0.4}, {"yaw": -0.35}),
    ("pitch+15 jaw", {"jawOpen": 0.6}, {"pitch": 0.26}),
    ("roll+15 smile", {"mouthSmile": 0.7}, {"roll": 0.26, "scale": 1.05}),
)


OPEN_MOUTHS: tuple[dict[str, float], ...] = (
    {"jawOpen": 0.5}, {"jawOpen": 0.8}, {"jawOpen": 1.0}, {"jawOpen": 0.6, "mouthFunnel": 0.5},
    {"jawOpen": 0.7, "mouthSmile": 0.5})
"""Open mouths whose interior ``viewer`` measures (neutral head pose)."""
BARS = {"nme": 0.035, "nme_speech": 0.035, "psnr_neutral": 35.0, "blink_closure": 0.2,
        "interior_darkness": 0.2, "interior_red_minus_blue": 0.0}
"""Issue 17's bars for every held-out identity: nme (the seeded stress set) and nme_speech (held-out
speech) ≤, psnr ≥, closure <, darkness ≤, R − B >."""
WIDE_JAW = 0.5
"""jawOpen above which an evaluation draw counts as ``wide`` in ``nme_by_jaw``. Speech stays under
it: over the 24 held-out sentence prompts animated by ``speech_driving`` jawOpen has its 99th
percentile at 0.61 and is over 0.5 in 7.5% of frames, while 42% of the seeded draws (n = 60) are
over it, most near 1 (a yawn: ``avatars.rig.JAW_DROP_IOD``)."""
JUDGE_SHIFTS_PX = ((1.0, 0.0), (0.0, 1.0), (2.0, 1.0), (-1.0, 2.0))
"""Translations (x, y pixels) of the source image over which ``judge_floor`` is taken."""
SPEECH_FPS = 25.0
"""Video frame rate at which ``speech_driving`` animates held-out speech (the live default)."""
SPEECH_PAUSE_S = 0.4
"""Silence between the joined held-out prompts, seconds (the behaviour layer's pauses)."""
SPEECH_PROMPTS = 24
"""How many held-out sentence prompts ``speech_driving`` joins (``harness.sentence_prompts``)."""


@dataclass(frozen=True)
class SpeechDriving:
    """Driving poses from held-out speech (``speech_driving``).

    coeffs float64 [n, K] and pose float64 [n, 6]: the rig input of n frames taken evenly over
    the animation; ``prompts`` how many prompts were joined, ``seconds`` their length with the
    pauses, ``frames`` the animation's length at ``SPEECH_FPS``, ``jaw_p99`` the 99th percentile
    of jawOpen over all of its frames.
    """

    coeffs: np.ndarray
    pose: np.ndarray
    prompts: int
    seconds: float
    frames: int
    jaw_p99: float

    def info(self) -> dict[str, Any]:
        """JSON-ready description (no arrays)."""
        return {"frames": int(len(self.coeffs)), "prompts": self.prompts,
                "seconds_of_speech": round(self.seconds, 2), "animation_frames": self.frames,
                "jaw_open_p99": round(self.jaw_p99, 3)}


def driving_set(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation poses: (coeffs float64 [n, K], pose float64 [n, 6]); row 0 is neutral."""
    if n < 1:
        raise ValueError(f"need at least one frame, got n={n}")
    rng = np.random.default_rng(seed)
    coeffs = np.zeros((n, N_COEFFICIENTS))
    poses = np.tile(NEUTRAL_POSE, (n, 1))
    for i in range(1, n):
        coeffs[i] = sample_coefficients(rng)
        poses[i] = sample_pose(rng, wide=WIDE_SHARE)
    return coeffs, poses


def _nme_split(results: list[tuple[float, float, float] | None], iod: float,
               groups: dict[str, np.ndarray]) -> dict[str, float | None]:
    """Mean nme of the frames each bool mask [n] of ``groups`` selects (None: no such frame)."""
    out: dict[str, float | None] = {}
    for name, sel in groups.items():
        vals = [r[0] / iod for r, s in zip(results, sel) if s and r is not None]
        out[name] = round(float(np.mean(vals)), 5) if vals else None
    return out


def _nme_by_pose(results: list[tuple[float, float, float] | None], poses: np.ndarray,
                 iod: float) -> dict[str, float | None]:
    """Mean nme of frames whose head turn max(|pitch|, |yaw|) is ≤ / > ``WIDE_TURN_RAD``."""
    turn = np.abs(poses[:, :2]).max(axis=1)
    return _nme_split(results, iod, {"moderate": turn <= WIDE_TURN_RAD,
                                     "wide": turn > WIDE_TURN_RAD})


def _nme_by_jaw(results: list[tuple[float, float, float] | None], coeffs: np.ndarray,
                iod: float) -> dict[str, float | None]:
    """Mean nme of draws whose jawOpen is ≤ / > ``WIDE_JAW`` (``speech_range`` / ``wide``)."""
    jaw = coeffs[:, INDEX["jawOpen"]]
    return _nme_split(results, iod, {"speech_range": jaw <= WIDE_JAW, "wide": jaw > WIDE_JAW})


def judge_floor(image: np.ndarray, iod: float) -> float | None:
    """The judge's own nme on an unchanged portrait (module docstring, ``judge_floor``).

    Args:
        image: uint8 [H, W, 3] RGB, the avatar's source image.
        iod: its inter-ocular distance, pixels.

    Returns the mean over ``JUDGE_SHIFTS_PX`` of the mean landmark distance / ``iod``, or None
    when the judge finds no face on the image or on a shifted copy.
    """
    from avatars.enroll import detect_faces

    base = detect_faces(image, 1)
    if not base:
        return None
    h, w = image.shape[:2]
    errs = []
    for dx, dy in JUDGE_SHIFTS_PX:
        moved = cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        found = detect_faces(moved, 1)
        if not found:
            return None
        back = found[0][:, :2].astype(np.float64) - (dx, dy)
        errs.append(float(np.linalg.norm(back - base[0][:, :2], axis=1).mean()) / iod)
    return round(float(np.mean(errs)), 5)


def speech_driving(n: int, seed: int = 0, prompts: int = SPEECH_PROMPTS) -> SpeechDriving:
    """Driving poses of ``n`` frames of held-out speech.

    The held-out Asterisk sentence prompts (``runtime.bench.harness.sentence_prompts``: 1–5 s,
    listed in ``runtime/evals/heldout.txt``, never trained on), at most ``prompts`` of them,
    resampled to 16 kHz and joined with ``SPEECH_PAUSE_S`` of silence, are animated as
    ``facecast render`` animates audio (``runtime.offline.render.animate``: the motion model,
    prosody and the behaviour layer seeded with ``seed``, so head motion and blinks are in) at
    ``SPEECH_FPS``; ``n`` frames are taken evenly spaced over the whole animation.

    Raises:
        ValueError: n < 1 or prompts < 1.
        FileNotFoundError: the prompts are not installed (apt-get install
            asterisk-core-sounds-en-g722).
    """
    from engines.audio import SAMPLE_RATE
    from runtime.audio.resample import resample
    from runtime.bench.harness import sentence_prompts
    from runtime.offline.render import animate

    if n < 1 or prompts < 1:
        raise ValueError(f"need at least one frame and one prompt, got n={n}, prompts={prompts}")
    clips = [resample(a, r, SAMPLE_RATE) for _name, a, r in sentence_prompts(prompts)]
    if not clips:
        raise FileNotFoundError("no held-out sentence prompt (1-5 s) is installed")
    pause = np.zeros(int(round(SPEECH_PAUSE_S * SAMPLE_RATE)), np.float32)
    audio = np.concatenate([x for c in clips for x in (pause, c)] + [pause]).astype(np.float32)
    seconds = len(audio) / SAMPLE_RATE
    frames = max(int(seconds * SPEECH_FPS), 1)
    anim = animate(audio, frames, SPEECH_FPS, seed)
    pick = np.round(np.linspace(0, frames - 1, n)).astype(int)
    jaw_p99 = float(np.percentile(anim.coeffs[:, INDEX["jawOpen"]], 99))
    return SpeechDriving(anim.coeffs[pick].astype(np.float64), anim.pose[pick].astype(np.float64),
                         len(clips), seconds, frames, jaw_p99)


def sheet_set() -> tuple[list[str], np.ndarray, np.ndarray]:
    """(labels, coeffs [16, K], pose [16, 6]) of ``SHEET_POSES``."""
    labels = [label for label, _, _ in SHEET_POSES]
    coeffs = np.stack([coefficients_from_mapping(c) for _, c, _ in SHEET_POSES])
    poses = np.stack([pose_vector(**p) for _, _, p in SHEET_POSES])
    return labels, coeffs, poses


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """PSNR in dB of images [R, R, 3] in [0, 1] over the bool ``region`` [R, R]."""
    diff = np.asarray(a, np.float64)[region] - np.asarray(b, np.float64)[region]
    mse = float(np.mean(diff ** 2))
    if mse <= 10.0 ** (-PSNR_CAP_DB / 10.0):
        return PSNR_CAP_DB
    return float(-10.0 * np.log10(mse))


class _Frames:
    """Student and teacher crops for driving poses of one avatar at side R."""

    def __init__(self, avatar: Avatar, renderer: NeuralRenderer, use_adaptation: bool = True):
        self.size = renderer.size
        self.renderer = renderer
        self.rig = Rig.for_avatar(avatar, self.size)
        self.source: AvatarSource = renderer.prepare(avatar, use_adaptation)
        self.crop = avatar.crop_image(self.size)
        self.triangles = teacher.triangulate(self.source.keypoints, self.size)

    def driving(self, coeffs: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keypoints float32 [B, 478, 2], depth float64 [B, 478]) in crop pixels."""
        kp3 = self.rig.keypoints3d(coeffs, poses)
        return kp3[..., :2].astype(np.float32), kp3[..., 2]

    def student(self, kp: np.ndarray) -> np.ndarray:
        """float32 [B, R, R, 3] in [0, 1]."""
        out = [self.renderer.render(self.source, kp[i:i + BATCH])
               for i in range(0, len(kp), BATCH)]
        return np.concatenate(out).transpose(0, 2, 3, 1)

    def teacher(self, kp: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """float32 [R, R, 3] in [0, 1] for one driving pose [478, 2] / [478]."""
        return teacher.render(self.crop, self.source.keypoints, kp, self.triangles, depth).image


def _composites(frames: _Frames, comp: Compositor, kp: np.ndarray, depth: np.ndarray
                ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Both renderers on driving poses kp [n, 478, 2] / depth [n, 478], ``BATCH`` student frames
    at a time: per pose i, (i, student crop, its full composite, teacher crop, its composite);
    crops float32 [R, R, 3] in [0, 1], composites uint8 [H, W, 3] of the avatar's image."""
    for start in range(0, len(kp), BATCH):
        crops = frames.student(kp[start:start + BATCH])
        for j, s_crop in enumerate(crops):
            i = start + j
            t_crop = frames.teacher(kp[i], depth[i])
            yield i, s_crop, comp.paste(s_crop), t_crop, comp.paste(t_crop)


def _judge(full: np.ndarray, asked_px: np.ndarray) -> tuple[float, float, float] | None:
    """(nme numerator: mean point distance px, asked gap px, found gap px) or None."""
    from avatars.enroll import detect_faces  # mediapipe: evaluation-only dependency

    faces = detect_faces(full, 1)
    if not faces:
        return None
    found = faces[0][:, :2].astype(np.float64)
    err = float(np.linalg.norm(found - asked_px, axis=1).mean())
    gaps = inner_lip_gap(np.stack([asked_px, found]))
    return err, float(gaps[0]), float(gaps[1])


def _summary(results: list[tuple[float, float, float] | None], iod: float) -> dict[str, Any]:
    found = [r for r in results if r is not None]
    out: dict[str, Any] = {"faces_missing": len(results) - len(found)}
    if not found:
        out.update(nme=None, nme_p95=None, mouth_open_fidelity={"mae_iod": None, "corr": None})
        return out
    arr = np.array(found, dtype=np.float64)
    nme = arr[:, 0] / iod
    asked, got = arr[:, 1], arr[:, 2]
    corr = None
    if len(arr) > 1 and asked.std() > 1e-9 and got.std() > 1e-9:
        corr = round(float(np.corrcoef(asked, got)[0, 1]), 4)
    out.update(
        nme=round(float(nme.mean()), 5),
        nme_p95=round(float(np.percentile(nme, 95)), 5),
        mouth_open_fidelity={"mae_iod": round(float(np.abs(asked - got).mean() / iod), 5),
                             "corr": corr},
    )
    return out


def evaluate(avatar_name: str = "default", n: int = 200, seed: int = 0, size: int = 256,
             backend: str = "auto", sheet: Path | None = None,
             use_adaptation: bool = True, speech_n: int = 60,
             speech: SpeechDriving | str | None = None) -> dict[str, Any]:
    """Judge student and teacher on ``n`` seeded driving poses and on ``speech_n`` frames of
    held-out speech (see the module docstring; ``speech_n`` = 0 skips the speech part).

    The student uses the avatar's ``facecast adapt`` features when the bundle has some that
    apply and ``use_adaptation`` (``adapted`` in the result says which ran). ``speech``: the
    speech frames when already made, or the reason they could not be (``speech_frames``;
    ``evaluate_heldout`` makes them once for every identity).
    Returns a JSON-ready dict; with ``sheet``, also writes the contact sheet PNG there.
    Raises ValueError for a bad size/backend/n/speech_n, BundleError for an unknown avatar.
    """
    if speech_n < 0:
        raise ValueError(f"speech_n must be ≥ 0, got {speech_n}")
    t0 = time.perf_counter()
    avatar = avatars.load(avatar_name)
    frames = _Frames(avatar, NeuralRenderer(size, backend), use_adaptation)
    comp = Compositor(avatar, size)
    iod = avatar.iod_px

    coeffs, poses = driving_set(n, seed)
    kp, depth = frames.driving(coeffs, poses)
    asked_px = comp.crop_to_image(kp)  # [n, 478, 2] float64 image pixels

    x0, y0, side = avatar.crop_box
    keep = np.ones(avatar.image.shape[:2], bool)  # must stay the source's pixels
    keep[y0:y0 + side, x0:x0 + side] = avatar.mask <= 0.0
    region = avatar.crop_mask(size) > 0.5
    source = frames.crop.astype(np.float32) / 255.0

    student_res: list[tuple[float, float, float] | None] = []
    teacher_res: list[tuple[float, float, float] | None] = []
    background_exact = True
    psnr_student = psnr_teacher = None
    for i, s_crop, s_full, t_crop, t_full in _composites(frames, comp, kp, depth):
        background_exact &= bool(np.array_equal(s_full[keep], avatar.image[keep]))
        student_res.append(_judge(s_full, asked_px[i]))
        teacher_res.append(_judge(t_full, asked_px[i]))
        if i == 0:
            psnr_student = round(psnr(s_crop, source, region), 3)
            psnr_teacher = round(psnr(t_crop, source, region), 3)

    student = _summary(student_res, iod)
    teach = _summary(teacher_res, iod)
    student["nme_by_pose"] = _nme_by_pose(student_res, poses, iod)
    teach["nme_by_pose"] = _nme_by_pose(teacher_res, poses, iod)
    student["nme_by_jaw"] = _nme_by_jaw(student_res, coeffs, iod)
    teach["nme_by_jaw"] = _nme_by_jaw(teacher_res, coeffs, iod)
    gap = (round(student["nme"] - teach["nme"], 5)
           if student["nme"] is not None and teach["nme"] is not None else None)
    result: dict[str, Any] = {
        "avatar": avatar.name,
        "frames": n,
        "size": size,
        "backend": frames.renderer.backend,
        "seed": seed,
        "student": student,
        "teacher": teach,
        "nme_gap": gap,
        "judge_floor": judge_floor(avatar.image, iod),
        "psnr_neutral": psnr_student,
        "psnr_neutral_teacher": psnr_teacher,
        "background_exact": background_exact,
        "viewer": {"student": _viewer(frames, comp, "student"),
                   "teacher": _viewer(frames, comp, "teacher")},
        "speech": _speech(frames, comp, iod,
                          speech_frames(speech_n) if speech is None else speech),
    }
    result["adapted"] = frames.source.adapted
    if sheet is not None:
        result["sheet"] = str(contact_sheet(frames, Path(sheet)))
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def speech_frames(n: int) -> SpeechDriving | str:
    """``speech_driving(n)``, or why there is none: "speech_n = 0", or the FileNotFoundError's
    message when the held-out prompts are not installed. Raises ValueError for n < 0."""
    if n < 0:
        raise ValueError(f"speech_n must be ≥ 0, got {n}")
    if n == 0:
        return "speech_n = 0"
    try:
        return speech_driving(n)
    except FileNotFoundError as e:
        return str(e)


def _speech(frames: _Frames, comp: Compositor, iod: float,
            speech: SpeechDriving | str) -> dict[str, Any]:
    """nme and mouth-open figures of both renderers on held-out speech (module docstring), or
    ``{"skipped": reason}``."""
    if isinstance(speech, str):
        return {"skipped": speech}
    kp, depth = frames.driving(speech.coeffs, speech.pose)
    asked_px = comp.crop_to_image(kp)
    judged = [(_judge(s_full, asked_px[i]), _judge(t_full, asked_px[i]))
              for i, _, s_full, _, t_full in _composites(frames, comp, kp, depth)]
    student = [s for s, _ in judged]
    teach = [t for _, t in judged]
    return {**speech.info(), "student": _summary(student, iod), "teacher": _summary(teach, iod)}


def _viewer(frames: _Frames, comp: Compositor, kind: str) -> dict[str, float | None]:
    """``blink_closure``, ``interior_darkness`` and ``interior_red_minus_blue`` of one renderer
    (``kind`` "student" or "teacher") on full composites judged by mediapipe (module docstring)."""
    from avatars.bundle import inter_ocular_distance
    from avatars.enroll import detect_faces
    from runtime.evals.face import eye_opening, interior, luma

    shapes = [{}, {"eyeBlink": 1.0}] + list(OPEN_MOUTHS)
    coeffs = np.stack([coefficients_from_mapping(c) for c in shapes])
    poses = np.tile(NEUTRAL_POSE, (len(shapes), 1))
    kp, depth = frames.driving(coeffs, poses)
    if kind == "student":
        crops = frames.student(kp)
    else:
        crops = np.stack([frames.teacher(kp[i], depth[i]) for i in range(len(kp))])
    found = []
    for crop in crops:
        full = comp.paste(crop)
        faces = detect_faces(full, 1)
        found.append((full, faces[0] if faces else None))
    out: dict[str, float | None] = {"blink_closure": None, "interior_darkness": None,
                                    "interior_red_minus_blue": None}
    if found[0][1] is not None and found[1][1] is not None:
        open_ = eye_opening(found[0][1])
        if open_ > 0:
            out["blink_closure"] = round(eye_opening(found[1][1]) / open_, 4)
    dark, red = [], []
    for full, lm in found[2:]:
        if lm is None:
            continue
        d, r = interior(full, luma(full), lm, inter_ocular_distance(lm[:, :2]))
        if not math.isnan(d):
            dark.append(d)
            red.append(r)
    if dark:
        out["interior_darkness"] = round(float(np.median(dark)), 4)
        out["interior_red_minus_blue"] = round(float(np.mean(red)), 4)
    return out


def bars_passed(result: dict[str, Any]) -> dict[str, bool | None]:
    """Which of ``BARS`` the student meets in an ``evaluate`` result (None: not measured)."""
    v = result["viewer"]["student"]
    speech = result.get("speech", {}).get("student", {})
    figures = {"nme": result["student"]["nme"], "nme_speech": speech.get("nme"),
               "psnr_neutral": result["psnr_neutral"],
               "blink_closure": v["blink_closure"], "interior_darkness": v["interior_darkness"],
               "interior_red_minus_blue": v["interior_red_minus_blue"]}
    checks = {"nme": lambda x: x <= BARS["nme"],
              "nme_speech": lambda x: x <= BARS["nme_speech"],
              "psnr_neutral": lambda x: x >= BARS["psnr_neutral"],
              "blink_closure": lambda x: x < BARS["blink_closure"],
              "interior_darkness": lambda x: x <= BARS["interior_darkness"],
              "interior_red_minus_blue": lambda x: x > BARS["interior_red_minus_blue"]}
    return {k: (None if figures[k] is None else bool(checks[k](figures[k]))) for k in checks}


def evaluate_heldout(n: int = 60, seed: int = 0, size: int = 256, backend: str = "auto",
                     sheet_dir: Path | None = None, adapt_steps: int = 0,
                     speech_n: int = 60) -> dict[str, Any]:
    """``evaluate`` on every installed held-out portrait (``runtime.evals.portraits``), each
    enrolled into a temporary folder, with ``bars_passed`` per identity; with ``sheet_dir``, a
    contact sheet ``NAME.png`` per identity there. With ``adapt_steps`` > 0, each bundle is first
    adapted (``engines.training.adapt``, that many steps; needs torch) and stored whatever the
    validation says; ``adaptation`` per identity gives the fit's figures. The ``speech_n``
    frames of held-out speech are made once and judged on every identity. Raises RuntimeError
    when none is installed (the message lists the install commands)."""
    from avatars.enroll import EnrollOptions, enroll
    from runtime.evals import portraits

    held = [p for p in portraits.PORTRAITS if p.heldout]
    present = [(p, path) for p in held if (path := portraits.locate(p)) is not None]
    if not present:
        raise RuntimeError("no held-out portrait is installed: "
                           + "; ".join(f"{p.name}: {p.install}" for p in held))
    t0 = time.perf_counter()
    speech = speech_frames(speech_n)
    identities: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="facecast-heldout-") as tmp:
        for p, path in present:
            options = EnrollOptions(consent=f"held-out evaluation portrait; {p.licence}",
                                    source=p.source, licence=p.licence,
                                    attribution=p.attribution, overwrite=True)
            bundle = enroll(path, p.name.replace("_", "-"), tmp, options)
            fit = _adapt(bundle, adapt_steps) if adapt_steps > 0 else None
            sheet = None if sheet_dir is None else Path(sheet_dir) / f"{p.name}.png"
            res = evaluate(str(bundle), n, seed, size, backend, sheet, speech_n=speech_n,
                           speech=speech)
            res["passed"] = bars_passed(res)
            if fit is not None:
                res["adaptation"] = fit
            identities[p.name] = res
    missing = [p.name for p in held if p.name not in identities]
    return {"identities": identities, "missing": missing, "bars": BARS,
            "all_passed": {k: all(r["passed"][k] for r in identities.values())
                           for k in BARS},
            "seconds": round(time.perf_counter() - t0, 2)}


def _adapt(bundle: Path, steps: int) -> dict[str, Any]:
    """Adapt the bundle at ``bundle`` (``steps`` steps), store it, and return the fit's figures."""
    from avatars.adaptation import AdaptOptions
    from engines.training.adapt import adapt_and_store

    result, _ = adapt_and_store(avatars.load(bundle), AdaptOptions(steps=steps), force=True)
    return result.figures()


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    """``tile`` with ``text`` written top left (white on a black outline), scaled with R."""
    tile = np.ascontiguousarray(tile)
    s = tile.shape[0] / 256.0
    org = (int(6 * s), int(18 * s))
    for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(tile, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * s, colour,
                    max(1, round(width * s)), cv2.LINE_AA)
    return tile


def contact_sheet(frames: _Frames, path: Path) -> Path:
    """Write the ``SHEET_POSES`` sheet (uint8 RGB [8R, 4R]) to ``path``; returns the path."""
    from PIL import Image

    labels, coeffs, poses = sheet_set()
    kp, depth = frames.driving(coeffs, poses)
    student = frames.student(kp)
    teach = np.stack([frames.teacher(kp[i], depth[i]) for i in range(len(kp))])
    r = frames.size

    def grid(imgs: np.ndarray, tag: str) -> np.ndarray:
        u8 = np.clip(imgs * 255.0 + 0.5, 0, 255).astype(np.uint8)
        tiles = [_label(u8[i], f"{tag} {labels[i]}") for i in range(len(labels))]
        rows = [np.concatenate(tiles[k:k + 4], axis=1) for k in range(0, 16, 4)]
        return np.concatenate(rows, axis=0)

    out = np.concatenate([grid(student, "S"), grid(teach, "T")], axis=0)
    assert out.shape == (8 * r, 4 * r, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(path)
    return path
