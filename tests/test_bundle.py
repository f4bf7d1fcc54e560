"""Avatar bundles: the committed default loads; every kind of damage is a clear BundleError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import avatars
from avatars import bundle as B


def test_default_avatar_is_complete(default_avatar: avatars.Avatar) -> None:
    a = default_avatar
    assert a.name == "default"
    assert a.image.dtype == np.uint8 and a.image.shape == (512, 512, 3)
    assert a.landmarks.dtype == np.float32 and a.landmarks.shape == (478, 3)
    x0, y0, side = a.crop_box
    assert a.mask.shape == (side, side) and a.mask.dtype == np.float32
    assert 0.0 <= a.mask.min() and a.mask.max() == pytest.approx(1.0)
    for key in ("source", "licence", "attribution", "consent", "content_hash"):
        assert a.metadata[key]
    assert "public domain" in a.metadata["licence"].lower()
    # the mask covers the face (eye centres, nose tip, chin) and is 0 on the border
    for i in (1, 152, 33, 263):
        x, y = a.landmarks[i, :2] - (x0, y0)
        assert a.mask[int(y), int(x)] > 0.99
    assert a.mask[0].max() == 0 and a.mask[-1].max() == 0
    assert a.mask[:, 0].max() == 0 and a.mask[:, -1].max() == 0


def test_crop_helpers(default_avatar: avatars.Avatar) -> None:
    crop = default_avatar.crop_image(256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    lm = default_avatar.crop_landmarks(256)
    assert lm.shape == (478, 3) and lm.dtype == np.float32
    assert (lm[:, :2] > 0).all() and (lm[:, :2] < 256).all()
    m = default_avatar.crop_mask(512)
    assert m.shape == (512, 512) and m.max() <= 1.0


def test_load_by_path_and_name(default_avatar: avatars.Avatar) -> None:
    by_path = avatars.load(default_avatar.path)
    assert by_path.metadata == default_avatar.metadata


@pytest.fixture()
def copy(default_avatar: avatars.Avatar, tmp_path: Path) -> Path:
    dst = tmp_path / "default"
    shutil.copytree(default_avatar.path, dst)
    return dst


@pytest.mark.parametrize("missing", ["avatar.json", "image.png", "landmarks.npy", "mask.png"])
def test_missing_file(copy: Path, missing: str) -> None:
    (copy / missing).unlink()
    with pytest.raises(B.BundleError, match=f"incomplete: {missing} is missing"):
        avatars.load(copy)


def test_changed_file_fails_hash(copy: Path) -> None:
    lm = np.load(copy / "landmarks.npy")
    lm[0, 0] += 1.0
    np.save(copy / "landmarks.npy", lm)
    with pytest.raises(B.BundleError, match="content hash does not match"):
        avatars.load(copy)


def test_bad_json(copy: Path) -> None:
    (copy / "avatar.json").write_text("{not json")
    with pytest.raises(B.BundleError, match="not valid JSON"):
        avatars.load(copy)


def test_missing_field(copy: Path) -> None:
    meta = json.loads((copy / "avatar.json").read_text())
    del meta["consent"]
    (copy / "avatar.json").write_text(json.dumps(meta))
    with pytest.raises(B.BundleError, match="missing field 'consent'"):
        avatars.load(copy)


def _rewrite(default_avatar: avatars.Avatar, tmp_path: Path, **changes) -> Path:
    """Write a bundle whose hash is right but whose content is inconsistent."""
    a = default_avatar
    meta = {k: v for k, v in a.metadata.items() if k != "content_hash"}
    meta.update(changes.pop("meta", {}))
    args = {"image": a.image, "landmarks": a.landmarks, "mask": np.round(a.mask * 255).astype(np.uint8)}
    args.update(changes)
    return B.write_bundle(tmp_path / "default", meta, **args)


def test_wrong_landmark_shape(default_avatar: avatars.Avatar, tmp_path: Path) -> None:
    path = _rewrite(default_avatar, tmp_path, landmarks=default_avatar.landmarks[:468])
    with pytest.raises(B.BundleError, match=r"expected float32 \[478, 3\]"):
        avatars.load(path)


def test_nan_landmarks(default_avatar: avatars.Avatar, tmp_path: Path) -> None:
    lm = default_avatar.landmarks.copy()
    lm[5, 1] = np.nan
    with pytest.raises(B.BundleError, match="NaN"):
        avatars.load(_rewrite(default_avatar, tmp_path, landmarks=lm))


def test_crop_box_outside_image(default_avatar: avatars.Avatar, tmp_path: Path) -> None:
    _, y0, side = default_avatar.crop_box
    path = _rewrite(default_avatar, tmp_path, meta={"crop_box": [512 - side + 10, y0, side]})
    with pytest.raises(B.BundleError, match="does not lie inside"):
        avatars.load(path)


def test_mask_not_zero_at_border(default_avatar: avatars.Avatar, tmp_path: Path) -> None:
    mask = np.round(default_avatar.mask * 255).astype(np.uint8)
    mask[0, :] = 255
    with pytest.raises(B.BundleError, match="fall to 0 at the crop border"):
        avatars.load(_rewrite(default_avatar, tmp_path, mask=mask))


def test_corrupt_png(copy: Path) -> None:
    data = (copy / "image.png").read_bytes()
    (copy / "image.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(B.BundleError):
        avatars.load(copy)


def test_unknown_name_and_bad_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECAST_AVATAR_DIR", str(tmp_path))
    with pytest.raises(B.BundleError, match="unknown avatar 'nobody'"):
        avatars.load("nobody")
    for bad in ("..", "-x", "a b", "é" * 3, "x" * 65):
        with pytest.raises(B.BundleError):
            B.check_name(bad)
    with pytest.raises(B.BundleError, match="not found"):
        avatars.load(tmp_path / "absent")


def test_write_refuses_to_overwrite(default_avatar: avatars.Avatar, tmp_path: Path) -> None:
    _rewrite(default_avatar, tmp_path)
    with pytest.raises(B.BundleError, match="already exists"):
        _rewrite(default_avatar, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default"]
