"""Shared fixtures: the committed default avatar and real portraits made from it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GLOG_minloglevel", "2")

import avatars
from avatars.rig import Rig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def default_avatar() -> avatars.Avatar:
    return avatars.load("default")


@pytest.fixture(scope="session")
def default_rig(default_avatar: avatars.Avatar) -> Rig:
    return Rig.for_avatar(default_avatar, 256)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's public-domain astronaut portrait, uint8 [512, 512, 3]."""
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


@pytest.fixture(scope="session")
def face_crop(default_avatar: avatars.Avatar) -> np.ndarray:
    """The astronaut's render crop at native resolution, uint8 RGB, face filling the frame."""
    x0, y0, side = default_avatar.crop_box
    return default_avatar.image[y0:y0 + side, x0:x0 + side].copy()


def save_png(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="session")
def sound_server(tmp_path_factory):
    """A private PulseAudio whose null-sink monitor is the test microphone
    (``test_mic.start_sound_server``), with this process's environment pointed at it. One per
    test session: ALSA reads its configuration once per process, so a second server with other
    paths would be invisible to in-process PortAudio."""
    from test_mic import start_sound_server, stop_sound_server

    server = start_sound_server(tmp_path_factory.mktemp("pulse"))
    with pytest.MonkeyPatch.context() as mp:
        for key in ("ALSA_CONFIG_PATH", "PULSE_SERVER", "PULSE_RUNTIME_PATH", "PULSE_STATE_PATH",
                    "XDG_RUNTIME_DIR", "JACK_NO_START_SERVER"):
            mp.setenv(key, server.env[key])
        yield server
    stop_sound_server(server)
