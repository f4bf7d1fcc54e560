# apt packages needed (installs are wired elsewhere):
#   scribus-data   # apt-get install -y --no-install-recommends scribus-data
#                  # (or, without its python3-tk dependency:
#                  #  apt-get download scribus-data && dpkg -x scribus-data_*.deb "$FACECAST_DEB_ROOT")
"""Real photographs of human faces that ship inside registry packages.

Every entry has a known licence and source and was checked with mediapipe's legacy
Face Mesh (static mode, refine_landmarks=True, max_num_faces=5): exactly one face,
inter-ocular distance (midpoint of landmarks 33/133 to midpoint of 263/362) >= 32 px,
roughly frontal.

``manager`` is ``"pip"`` or ``"apt"``:

* pip: ``path`` is relative to the directory of the top-level Python package
  ``package`` (found with ``importlib.util.find_spec``, without importing it).
* apt: ``path`` is absolute on an installed system. When the .deb was only unpacked
  (``dpkg -x PKG.deb ROOT``), set ``FACECAST_DEB_ROOT=ROOT`` (several roots may be
  joined with ``os.pathsep``) and the file is looked up under each root as well.

``heldout=True`` marks portraits kept out of training for evaluation.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PORTRAITS", "Portrait", "available", "load_portrait", "locate"]


@dataclass(frozen=True)
class Portrait:
    """One packaged portrait photograph.

    name: short unique id. manager: "pip" or "apt". package: pip top-level import
    name or Debian package name. path: see module docstring. licence / source /
    attribution: provenance as stated by the package or the image's origin.
    install: exact shell command that makes the file available.
    heldout: True when the image is reserved for evaluation (never train on it).
    """

    name: str
    manager: str
    package: str
    path: str
    licence: str
    source: str
    attribution: str
    install: str
    heldout: bool = False


PORTRAITS: tuple[Portrait, ...] = (
    Portrait(
        name="astronaut",
        manager="pip",
        package="skimage",
        path="data/astronaut.png",
        licence="Public domain (NASA; 'No known copyright restrictions')",
        source="scikit-image 0.24 wheel, skimage/data/astronaut.png (skimage.data.astronaut()); "
        "NASA Great Images database, https://flic.kr/p/r9qvLn",
        attribution="NASA; astronaut Eileen Collins",
        install="pip install scikit-image",
        # 512x512 RGB, 1 face, IOD 42 px, frontal.
    ),
    Portrait(
        name="grace_hopper",
        manager="pip",
        package="matplotlib",
        path="mpl-data/sample_data/grace_hopper.jpg",
        licence="Public domain (US Navy photograph, work of the US federal government)",
        source="matplotlib 3.10 wheel, mpl-data/sample_data/grace_hopper.jpg "
        "(matplotlib.cbook.get_sample_data('grace_hopper.jpg'))",
        attribution="US Navy; Commodore Grace M. Hopper, 1984",
        install="pip install matplotlib",
        heldout=True,
        # 512x600 RGB, 1 face, IOD 82 px, frontal.
    ),
    Portrait(
        name="scribus_author",
        manager="apt",
        package="scribus-data",
        path="/usr/share/scribus/templates/textbased/author.jpg",
        licence="GPL-2+ (debian/copyright 'Files: *' of scribus-data 1.5.8+dfsg-4)",
        source="Debian scribus-data 1.5.8+dfsg-4, Scribus 'Text based newsletter' template",
        attribution="Scribus Team; template by Petr Vaněk",
        install="apt-get install -y --no-install-recommends scribus-data",
        # 163x186 RGB, 1 face, IOD 38 px, roughly frontal, slight head tilt; low resolution.
    ),
)


def _roots_for_apt() -> list[Path]:
    roots = [Path("/")]
    extra = os.environ.get("FACECAST_DEB_ROOT", "")
    roots += [Path(r) for r in extra.split(os.pathsep) if r]
    return roots


def locate(p: Portrait) -> Path | None:
    """Return the file path of ``p`` on this machine, or None when it is absent."""
    if p.manager == "pip":
        try:
            spec = importlib.util.find_spec(p.package)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        for base in spec.submodule_search_locations:
            f = Path(base) / p.path
            if f.is_file():
                return f
        return None
    if p.manager == "apt":
        rel = p.path.lstrip("/")
        for root in _roots_for_apt():
            f = root / rel
            if f.is_file():
                return f
        return None
    raise ValueError(f"unknown manager {p.manager!r} for portrait {p.name!r}")


def load_portrait(p: Portrait) -> np.ndarray:
    """Load ``p`` as an RGB image.

    Returns a numpy array of shape [H, W, 3], dtype uint8, RGB channel order
    (grayscale or RGBA sources are converted; EXIF orientation is applied).
    Raises FileNotFoundError, whose message holds the install command, when the
    file is not on this machine.
    """
    f = locate(p)
    if f is None:
        raise FileNotFoundError(
            f"portrait {p.name!r} ({p.manager} package {p.package!r}, {p.path}) is not "
            f"installed; install it with: {p.install}"
        )
    from PIL import Image, ImageOps

    with Image.open(f) as im:
        im = ImageOps.exif_transpose(im)
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb)


def available() -> list[Portrait]:
    """Portraits from PORTRAITS whose file is present here (order kept)."""
    return [p for p in PORTRAITS if locate(p) is not None]
