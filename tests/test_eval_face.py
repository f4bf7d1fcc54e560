"""runtime.evals.face (``facecast eval face``): the viewer-side face figures on a real facecast
render, and the pure measures on real landmarks of the default avatar's portrait where the
answer is known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from avatars import topology as T
from avatars.bundle import inter_ocular_distance
from runtime.cli import main
from runtime.evals import face

pytest.importorskip("av")
pytest.importorskip("mediapipe")

TEXT = "Hello, I am here to help you with your order today."


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~3.5 s render of the default avatar speaking TEXT (256-px renderer, CPU)."""
    out = tmp_path_factory.mktemp("face") / "speak.mp4"
    assert main(["render", "--avatar", "default", "--text", TEXT, "--out", str(out),
                 "--size", "256", "--backend", "onnxruntime", "--json"]) == 0
    return out


@pytest.fixture(scope="module")
def report(video: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    sheet = tmp_path_factory.mktemp("sheet") / "sheet.png"
    return face.evaluate_face(video, sheet)


@pytest.fixture(scope="module")
def portrait(default_avatar) -> tuple[np.ndarray, np.ndarray]:
    """The default avatar's image uint8 RGB and its Face Mesh landmarks float64 [478, 2]."""
    from avatars.enroll import detect_faces

    image = np.ascontiguousarray(default_avatar.image)
    faces = detect_faces(image, 1)
    assert faces
    return image, faces[0][:, :2].astype(np.float64)


def test_report_on_a_render(report: dict) -> None:
    keys = {"frames", "fps", "seconds", "face_found_fraction", "eye_open_ref", "blink_min_ratio",
            "blinks", "blinks_per_min", "blink_depths", "open_frames", "wide_open_frames",
            "interior_darkness_median", "interior_darkness_p90",
            "interior_darkness_wide_median", "interior_red_minus_blue", "mouth_gap_p5",
            "mouth_gap_p50", "mouth_gap_p95", "mouth_range", "flicker", "flicker_p95",
            "reference", "sheet"}
    assert keys <= set(report)
    json.dumps(report)  # JSON-ready
    assert report["frames"] > 0
    assert report["fps"] == pytest.approx(25.0, rel=1e-3)
    assert report["face_found_fraction"] >= 0.9
    assert report["mouth_range"] > 0.0  # the mouth moves when speaking
    assert report["mouth_gap_p5"] <= report["mouth_gap_p50"] <= report["mouth_gap_p95"]
    assert 0.0 <= report["blink_min_ratio"] <= 1.2
    assert report["eye_open_ref"] > 0.0
    assert report["blinks"] == len(report["blink_depths"])
    assert all(d < face.BLINK_RATIO for d in report["blink_depths"])
    if report["open_frames"]:
        assert isinstance(report["interior_darkness_median"], float)
        assert report["interior_darkness_median"] >= 0.0
        assert report["interior_darkness_p90"] >= report["interior_darkness_median"]
    assert report["flicker"] is not None and report["flicker"] >= 0.0
    assert report["reference"]["interior_darkness"]["bar_max"] == 0.2
    sheet = np.asarray(Image.open(report["sheet"]))
    assert sheet.ndim == 3 and sheet.shape[1] == 2 * face.TILE and sheet.shape[0] > 3 * face.TILE


def test_cli_prints_one_json_line(video: Path, capsys) -> None:
    assert main(["eval", "face", str(video), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["frames"] > 0


def test_cli_rejects_a_file_that_is_not_video(tmp_path: Path) -> None:
    bad = tmp_path / "x.mp4"
    bad.write_text("not a video")
    with pytest.raises(ValueError, match="cannot decode"):
        face.evaluate_face(bad)


def _paint_interior(image: np.ndarray, lm: np.ndarray, colour: tuple[int, int, int]
                    ) -> np.ndarray:
    out = image.copy()
    poly = face.contour(lm, T.LIPS_INNER_UPPER, T.LIPS_INNER_LOWER)
    out[face.polygon_mask(out.shape[:2], poly)] = colour
    return out


def test_interior_darkness_and_hue_of_painted_mouths(portrait) -> None:
    image, lm = portrait
    iod = inter_ocular_distance(lm)
    # Widen the mouth opening so the polygon has plenty of pixels: move the lower inner lip
    # 0.3 IOD down (the pure measures only see the landmarks and the pixels).
    lm = lm.copy()
    lm[list(T.LIPS_INNER_LOWER[1:-1]), 1] += 0.3 * iod
    cheek = face.cheek_luma(face.luma(image), lm, iod)
    assert 60.0 < cheek < 255.0

    black = _paint_interior(image, lm, (0, 0, 0))
    dark, red = face.interior(black, face.luma(black), lm, iod)
    assert dark == pytest.approx(0.0, abs=1e-6)
    assert red == pytest.approx(0.0, abs=1e-6)

    grey = _paint_interior(image, lm, (100, 100, 100))
    dark, _ = face.interior(grey, face.luma(grey), lm, iod)
    assert dark == pytest.approx(100.0 / cheek, rel=0.02)

    red_mouth = _paint_interior(image, lm, (200, 40, 40))
    _, red = face.interior(red_mouth, face.luma(red_mouth), lm, iod)
    assert red == pytest.approx(160.0 / 255.0, abs=1e-6)


def test_interior_needs_pixels(portrait) -> None:
    image, lm = portrait
    shut = lm.copy()
    shut[list(T.LIPS_INNER_LOWER)] = shut[list(T.LIPS_INNER_UPPER)]  # lips meet: no polygon
    dark, red = face.interior(image, face.luma(image), shut, inter_ocular_distance(lm))
    assert math.isnan(dark) and math.isnan(red)


def test_eye_opening_follows_the_lids(portrait) -> None:
    _, lm = portrait
    open_ = face.eye_opening(lm)
    assert 0.15 < open_ < 0.5
    shut = lm.copy()
    shut[T.RIGHT_EYE_TOP] = shut[T.RIGHT_EYE_BOTTOM]
    shut[T.LEFT_EYE_TOP] = shut[T.LEFT_EYE_BOTTOM]
    assert face.eye_opening(shut) == pytest.approx(0.0, abs=1e-9)
    half = lm.copy()
    for top, bottom in ((T.RIGHT_EYE_TOP, T.RIGHT_EYE_BOTTOM), (T.LEFT_EYE_TOP, T.LEFT_EYE_BOTTOM)):
        half[top] = 0.5 * (lm[top] + lm[bottom])
    assert face.eye_opening(half) == pytest.approx(0.5 * open_, rel=1e-6)


def test_flicker_region_and_level(portrait) -> None:
    image, lm = portrait
    iod = inter_ocular_distance(lm)
    region = face.stable_region(image.shape[:2], lm, iod)
    oval = face.polygon_mask(image.shape[:2], lm[list(T.FACE_OVAL)])
    assert region.sum() > 0.5 * oval.sum()
    assert not (region & face.polygon_mask(
        image.shape[:2], face.contour(lm, T.LIPS_OUTER_UPPER, T.LIPS_OUTER_LOWER))).any()
    y = face.luma(image)
    assert face.flicker(y, y, region) == 0.0
    assert face.flicker(y, y + 3.0, region) == pytest.approx(3.0)
    # A change inside the mouth and eyes only does not count.
    changed = cv2.GaussianBlur(image, (0, 0), 3)
    changed[region] = image[region]
    assert face.flicker(y, face.luma(changed), region) == 0.0


def test_blink_events() -> None:
    r = np.array([1, 1, 0.3, 0.2, 1, 0.4, 1, 1, 0.1, np.nan, 1, 1, 0.45, 1.0])
    # frames 2–5 are one blink (one open frame between), 8 another, 12 a third
    assert face.blink_events(r) == [(2, 5, 0.2), (8, 8, 0.1), (12, 12, 0.45)]
    assert face.blink_events(np.ones(10)) == []
    assert face.blink_events(np.full(5, np.nan)) == []
