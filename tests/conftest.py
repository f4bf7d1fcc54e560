"""Shared fixtures: the committed default avatar and real portraits made from it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GLOG_minloglevel", "2")
# mediapipe 0.10.21 beside protobuf >= 5 (livekit, pipecat): avatars.enroll.PROTOBUF_BACKEND_VAR
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

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



_SOUND_ENV = ("ALSA_CONFIG_PATH", "PULSE_SERVER", "PULSE_RUNTIME_PATH", "PULSE_STATE_PATH",
              "XDG_RUNTIME_DIR", "JACK_NO_START_SERVER")


def pytest_configure(config):
    """Start the test microphone (``test_mic.start_sound_server``: a private PulseAudio whose
    null-sink monitor PortAudio lists) before any test module is imported, with this process's
    environment pointed at it. It must come first: importing mediapipe imports sounddevice, which
    initialises PortAudio, and PortAudio keeps the device list of its first initialisation for
    the whole process (PyAudio's later ``Pa_Initialize`` only counts up)."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_mic import start_sound_server

    config.facecast_sound = None
    try:
        server = start_sound_server(Path(tempfile.mkdtemp(prefix="facecast-pulse-")))
    except pytest.skip.Exception as why:  # packages missing: the microphone tests skip
        config.facecast_sound_missing = str(why)
        return
    except BaseException as exc:  # noqa: BLE001 - reported by the tests that need it
        config.facecast_sound_missing = f"the test microphone did not start: {exc}"
        return
    config.facecast_sound = server
    for key in _SOUND_ENV:
        os.environ[key] = server.env[key]


def pytest_unconfigure(config):
    server = getattr(config, "facecast_sound", None)
    if server is not None:
        import shutil

        from test_mic import stop_sound_server

        stop_sound_server(server)
        shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def sound_server(pytestconfig):
    """The test microphone started in ``pytest_configure`` (a ``test_mic.SoundServer``)."""
    server = getattr(pytestconfig, "facecast_sound", None)
    if server is None:
        pytest.skip(getattr(pytestconfig, "facecast_sound_missing", "no test microphone"))
    return server


def env_without_test_microphone() -> dict[str, str]:
    """This process's environment without the test microphone's PulseAudio/ALSA variables, for
    browsers: Chromium would otherwise play its audio out through the private PulseAudio, which
    under load left the received audio unplayed (``totalAudioEnergy`` 0) in one full-suite run."""
    return {k: v for k, v in os.environ.items() if k not in _SOUND_ENV}


VOICE = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
"""The Asterisk prompts' voice folder (apt package asterisk-core-sounds-en-g722)."""


def prompt(name: str) -> tuple[np.ndarray, int]:
    """An Asterisk prompt: float32 [N] mono at 16 kHz, and its rate; skips the test without the
    package."""
    from runtime.audio.decode import load_audio

    path = VOICE / f"{name}.g722"
    if not path.is_file():
        pytest.skip("apt package asterisk-core-sounds-en-g722 is not installed")
    return load_audio(path)


def pcm16(x: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] → int16 PCM (rounded, clipped)."""
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def unconsented(tmp_path_factory) -> avatars.Avatar:
    """A copy of the default avatar whose bundle says "not stated"."""
    from avatars.bundle import write_bundle

    default = avatars.load("default")
    meta = {k: v for k, v in default.metadata.items() if k != "content_hash"}
    folder = write_bundle(tmp_path_factory.mktemp("avatars") / "nobody",
                          {**meta, "name": "nobody", "consent": "not stated"}, default.image,
                          default.landmarks, (default.mask * 255).astype(np.uint8))
    return avatars.load(folder)
