"""Per-avatar adaptation (``facecast adapt``; engines.training.adapt, avatars.adaptation): a real
short fit on the committed avatar with the committed renderer and the teacher, the file in the
bundle, the runtime using it only when it fits, and the command line."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import avatars
from avatars.adaptation import (
    ADAPTATION_FILE,
    AdaptOptions,
    applies,
    read_adaptation,
    remove_adaptation,
    write_adaptation,
)
from avatars.bundle import BundleError
from engines.renderer import CHECKPOINT, NeuralRenderer, checkpoint_digest
from engines.training.adapt import adapt
from runtime.cli import main

TINY = AdaptOptions(steps=6, batch=2, validation_pairs=4, lr=2e-2)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, default_avatar: avatars.Avatar):
    """A copy of the default bundle and a real 6-step fit of it."""
    folder = tmp_path_factory.mktemp("adapt") / "default"
    shutil.copytree(default_avatar.path, folder)
    avatar = avatars.load(folder)
    return avatar, adapt(avatar, CHECKPOINT, TINY)


@pytest.fixture(scope="module")
def renderer() -> NeuralRenderer:
    return NeuralRenderer(256, "onnxruntime", threads=1)


def test_the_fit_moves_the_features_and_scores_them(fitted, renderer: NeuralRenderer) -> None:
    avatar, result = fitted
    zero_shot = renderer.prepare(avatar)
    assert zero_shot.adapted is False
    assert result.features.shape == zero_shot.features.shape == (8, 64, 64)
    assert result.features.dtype == np.float32 and np.isfinite(result.features).all()
    assert result.steps == TINY.steps
    # Started from the encoder's features (torch vs ONNX Runtime: float rounding apart) and moved.
    change = np.abs(result.features - zero_shot.features).mean()
    assert 1e-4 < change < 0.5
    for terms in (result.before, result.after):
        assert set(terms) == {"total", "frame", "flow", "painted", "mask"}
        assert all(np.isfinite(v) and v >= 0 for v in terms.values())
    assert result.improved == (result.after["total"] < result.before["total"])


def test_the_runtime_uses_a_stored_adaptation_that_fits(fitted, renderer: NeuralRenderer,
                                                        default_rig) -> None:
    avatar, result = fitted
    model = checkpoint_digest()
    assert model is not None and renderer.model == model
    path = write_adaptation(avatar.path, result.features, result.meta(avatar, model))
    try:
        assert path.name == ADAPTATION_FILE
        stored = read_adaptation(avatar.path)
        assert stored is not None and stored.meta["steps"] == TINY.steps
        assert applies(stored, avatar, model, result.features.shape) is None
        adapted = renderer.prepare(avatar)
        plain = renderer.prepare(avatar, use_adaptation=False)
        assert adapted.adapted and not plain.adapted
        np.testing.assert_array_equal(adapted.features, result.features)
        # Adapted and zero-shot rows share one batch of the one graph.
        kp = _open_mouth(default_rig)
        frames = renderer.render([adapted, plain], kp)
        assert frames.shape == (2, 3, 256, 256)
        assert np.abs(frames[0] - frames[1]).max() > 1e-3
    finally:
        remove_adaptation(avatar.path)
    assert read_adaptation(avatar.path) is None


def _open_mouth(rig) -> np.ndarray:
    from avatars.rig import coefficients_from_mapping, pose_vector

    coeffs = np.stack([coefficients_from_mapping({"jawOpen": 0.7}),
                       coefficients_from_mapping({"jawOpen": 0.7})])
    poses = np.stack([pose_vector(0.0, 0.0, 0.0)] * 2)
    return rig.keypoints(coeffs, poses).astype(np.float32)


def test_an_adaptation_that_does_not_fit_is_logged_and_left_unused(
        fitted, renderer: NeuralRenderer, caplog) -> None:
    avatar, result = fitted
    model = checkpoint_digest()
    cases = {
        "another renderer model": {**result.meta(avatar, model), "model": "sha256:0"},
        "earlier enrollment": {**result.meta(avatar, model), "avatar_content_hash": "sha256:1"},
    }
    try:
        for why, meta in cases.items():
            write_adaptation(avatar.path, result.features, meta)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="engines.renderer"):
                src = renderer.prepare(avatar)
            assert src.adapted is False
            assert why in caplog.text
        # Features of another shape (e.g. from another architecture).
        write_adaptation(avatar.path, result.features[:4], result.meta(avatar, model))
        with caplog.at_level(logging.WARNING, logger="engines.renderer"):
            assert renderer.prepare(avatar).adapted is False
        assert "do not fit" in caplog.text
        # A damaged file: a warning, the avatar still renders zero-shot.
        (avatar.path / ADAPTATION_FILE).write_bytes(b"PK\x03\x04 truncated")
        with pytest.raises(BundleError, match="not a readable adaptation"):
            read_adaptation(avatar.path)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="engines.renderer"):
            assert renderer.prepare(avatar).adapted is False
        assert "not a readable adaptation" in caplog.text
    finally:
        remove_adaptation(avatar.path)


def test_bad_adaptations_are_refused(tmp_path: Path) -> None:
    feats = np.zeros((8, 64, 64), np.float32)
    meta = {"model": "sha256:0", "avatar_content_hash": "sha256:1"}
    with pytest.raises(ValueError, match="finite"):
        write_adaptation(tmp_path, np.full((8, 64, 64), np.nan), meta)
    with pytest.raises(ValueError, match="lacks"):
        write_adaptation(tmp_path, feats, {"model": "sha256:0"})
    path = tmp_path / ADAPTATION_FILE
    np.savez(path, features=feats)  # no meta
    with pytest.raises(BundleError, match="'features' and 'meta'"):
        read_adaptation(tmp_path)
    np.savez(path, features=feats.astype(np.float64), meta=np.array(json.dumps(meta)))
    with pytest.raises(BundleError, match="float32"):
        read_adaptation(tmp_path)
    np.savez(path, features=feats, meta=np.array(json.dumps({**meta, "format": "x",
                                                              "version": 1})))
    with pytest.raises(BundleError, match="unsupported adaptation"):
        read_adaptation(tmp_path)
    with pytest.raises(ValueError):
        AdaptOptions(steps=0)


def test_the_command_adapts_reports_and_removes(tmp_path: Path, default_avatar,
                                                capsys) -> None:
    folder = tmp_path / "default"
    shutil.copytree(default_avatar.path, folder)
    assert main(["adapt", str(folder), "--steps", "3", "--force", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps"] == 3 and out["stored"] == str(folder / ADAPTATION_FILE)
    assert out["validation_before"]["total"] > 0
    # eval renderer judges the adapted student, or the zero-shot one when asked
    for extra, adapted in (([], True), (["--zero-shot"], False)):
        assert main(["eval", "renderer", "--avatar", str(folder), "--n", "2",
                     "--backend", "onnxruntime", "--json", *extra]) == 0
        assert json.loads(capsys.readouterr().out)["adapted"] is adapted
    # so does a render of it
    assert main(["render", "--avatar", str(folder), "--text", "Hi.", "--size", "256",
                 "--out", str(tmp_path / "hi.mp4"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["adapted"] is True
    assert main(["avatar-info", str(folder)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["adaptation"]["steps"] == 3
    assert info["adaptation"]["model"] == checkpoint_digest()
    assert main(["adapt", str(folder), "--remove"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] is True
    assert not (folder / ADAPTATION_FILE).exists()
    assert main(["adapt", str(folder), "--steps", "0"]) == 1
    assert "at least 1" in capsys.readouterr().err
