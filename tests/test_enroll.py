"""Enrollment with real mediapipe Face Mesh on real portraits, through the CLI a user runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import save_png
from PIL import Image

import avatars
from avatars import enroll as E
from runtime.cli import main

pytest.importorskip("mediapipe")

CONSENT = "Public-domain test image; enrolled by facecast's tests, 2026-12-05."


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    if argv[:1] == ("enroll",) and "--consent" not in argv:
        argv = (*argv, "--consent", CONSENT)
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_refused(capsys, out_dir: Path, expect: str, *argv: str) -> None:
    code, _, err = _run(capsys, "enroll", *argv, "--out", str(out_dir))
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("facecast enroll: error: ")
    assert expect in lines[0]
    assert not out_dir.exists() or not any(out_dir.iterdir()), "nothing may be written"


def test_enrollment_is_reproducible(default_avatar: avatars.Avatar, astronaut: np.ndarray,
                                    tmp_path: Path, capsys) -> None:
    img = save_png(astronaut, tmp_path / "astronaut.png")
    code, out, _ = _run(capsys, "enroll", str(img), "--name", "astro", "--out",
                        str(tmp_path / "av"), "--consent", "public domain test")
    assert code == 0 and "enrolled 'astro'" in out
    fresh = avatars.load(tmp_path / "av" / "astro")
    assert np.abs(fresh.landmarks - default_avatar.landmarks).max() <= 1e-3
    assert fresh.crop_box == default_avatar.crop_box
    assert np.array_equal(fresh.mask, default_avatar.mask)
    assert fresh.metadata["consent"] == "public domain test"
    # the landmarks sit on the face: the nose tip is inside the oval's bounding box
    assert fresh.iod_px == pytest.approx(42.2, abs=1.0)


def test_jpeg_with_exif_rotation(astronaut: np.ndarray, tmp_path: Path) -> None:
    """A phone photo stored sideways with an EXIF orientation tag is enrolled upright."""
    sideways = Image.fromarray(np.rot90(astronaut, k=1).copy())  # 90° counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    path = tmp_path / "phone.jpg"
    sideways.save(path, quality=95, exif=exif)
    folder = E.enroll(path, "phone", tmp_path / "av", E.EnrollOptions(consent=CONSENT))
    a = avatars.load(folder)
    assert a.image.shape == (512, 512, 3)
    right_eye, left_eye = a.landmarks[33], a.landmarks[263]
    assert abs(right_eye[1] - left_eye[1]) < 10 and right_eye[0] < left_eye[0]


def test_several_faces(face_crop: np.ndarray, tmp_path: Path, capsys) -> None:
    small = np.asarray(Image.fromarray(face_crop).resize((150, 150)))
    second = np.pad(small, ((26, 26), (26, 26), (0, 0)), mode="edge")
    img = save_png(np.concatenate([face_crop, second], axis=1), tmp_path / "two.png")
    out_dir = tmp_path / "av"
    _assert_refused(capsys, out_dir, "2 faces found", str(img), "--name", "two")
    code, _, _ = _run(capsys, "enroll", str(img), "--name", "two", "--largest",
                      "--out", str(out_dir))
    assert code == 0
    a = avatars.load(out_dir / "two")
    assert a.landmarks[:, 0].max() < face_crop.shape[1], "the larger (left) face was chosen"


def test_no_face(tmp_path: Path, capsys) -> None:
    y, x = np.mgrid[0:256, 0:256]
    img = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    _assert_refused(capsys, tmp_path / "av", "no face found",
                    str(save_png(img, tmp_path / "gradient.png")), "--name", "x")


def test_face_too_small(astronaut: np.ndarray, tmp_path: Path, capsys) -> None:
    small = np.asarray(Image.fromarray(astronaut).resize((256, 256), Image.Resampling.LANCZOS))
    _assert_refused(capsys, tmp_path / "av", "face too small",
                    str(save_png(small, tmp_path / "small.png")), "--name", "x")


def test_image_too_large(tmp_path: Path, capsys) -> None:
    path = tmp_path / "huge.png"
    Image.new("L", (6400, 6400), 128).save(path)  # 41 MP, checked before decoding
    _assert_refused(capsys, tmp_path / "av", "image too large", str(path), "--name", "x")


def test_unreadable_inputs(astronaut: np.ndarray, tmp_path: Path, capsys) -> None:
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    _assert_refused(capsys, tmp_path / "av", "not an image", str(text), "--name", "x")
    _assert_refused(capsys, tmp_path / "av", "image not found",
                    str(tmp_path / "absent.jpg"), "--name", "x")
    good = save_png(astronaut, tmp_path / "a.png").read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[: len(good) // 3])
    _assert_refused(capsys, tmp_path / "av", "cannot read image", str(truncated), "--name", "x")


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "/abs", "", "x" * 65])
def test_names_that_escape(astronaut: np.ndarray, tmp_path: Path, capsys, name: str) -> None:
    img = save_png(astronaut, tmp_path / "a.png")
    _assert_refused(capsys, tmp_path / "av", "invalid avatar name", str(img), "--name", name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_existing_bundle_needs_force(astronaut: np.ndarray, tmp_path: Path, capsys) -> None:
    img = save_png(astronaut, tmp_path / "a.png")
    out_dir = tmp_path / "av"
    assert _run(capsys, "enroll", str(img), "--name", "a", "--out", str(out_dir))[0] == 0
    before = (out_dir / "a" / "avatar.json").read_bytes()
    code, _, err = _run(capsys, "enroll", str(img), "--name", "a", "--out", str(out_dir))
    assert code != 0 and "already exists" in err
    assert (out_dir / "a" / "avatar.json").read_bytes() == before
    assert _run(capsys, "enroll", str(img), "--name", "a", "--out", str(out_dir), "--force")[0] == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["a"], "no temporary folders left"


def test_enroll_requires_a_consent_statement(astronaut: np.ndarray, tmp_path: Path,
                                             capsys) -> None:
    img = save_png(astronaut, tmp_path / "a.png")
    out_dir = tmp_path / "av"
    with pytest.raises(SystemExit) as exc:  # argparse: --consent is required
        main(["enroll", str(img), "--name", "a", "--out", str(out_dir)])
    assert exc.value.code == 2 and "--consent" in capsys.readouterr().err
    for empty in ("not stated", "  "):
        _assert_refused(capsys, out_dir, "a consent statement is required", str(img),
                        "--name", "a", "--consent", empty)
    with pytest.raises(E.EnrollError, match="consent statement is required"):
        E.enroll(img, "a", out_dir)  # the Python API too
