# apt packages needed (installs are wired elsewhere); sizes are the bookworm .deb downloads:
#   scribus-data      17.5 MB  # apt-get install -y --no-install-recommends scribus-data
#                              # (or, without its python3-tk dependency:
#                              #  apt-get download scribus-data && dpkg -x scribus-data_*.deb "$FACECAST_DEB_ROOT")
#   scribus-template   1.8 MB  # apt-get install -y --no-install-recommends scribus-template (no dependencies)
#   gramps             6.7 MB  # apt-get download gramps && dpkg -x gramps_*.deb "$FACECAST_DEB_ROOT"
#                              # (files are under /usr/share/doc, which slim images exclude on install;
#                              #  installing would also pull GTK)
#   kphotoalbum       12.2 MB  # apt-get download kphotoalbum && dpkg -x kphotoalbum_*.deb "$FACECAST_DEB_ROOT"
#                              # (installing would pull KDE Frameworks)
#   freecol          142.0 MB  # apt-get download freecol && dpkg -x freecol_*.deb "$FACECAST_DEB_ROOT"
#                              # (the only painted portraits found; installing would pull a JRE)
"""Real human faces (photographs, plus a few painted or engraved portraits) that ship inside
registry packages.

Every entry has a known licence and source and was checked with mediapipe's legacy
Face Mesh (static mode, refine_landmarks=True, max_num_faces=5): exactly one face,
inter-ocular distance (midpoint of landmarks 33/133 to midpoint of 263/362) >= 32 px,
roughly frontal (head yaw within about 20 degrees, from the depth of the eye line),
eyes open, mouth closed or slightly open. Besides photographs, a few entries are
painted portraits or an engraving (see each entry's comment).

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
    Portrait(
        name="craig_bradney",
        manager="apt",
        package="scribus-template",
        path="/usr/share/scribus/templates/scribus_project_pl/craigbradney.jpg",
        licence="GPL-2+ (debian/copyright of scribus-template 1.2.4.1-6, 'Sample Scribus "
        "Presentation' templates, (c) 2004 Maciej Hanski)",
        source="Debian scribus-template 1.2.4.1-6, Scribus 'Sample Scribus Presentation in Polish' "
        "template (an identical copy is in templates/scribus_project_de/)",
        attribution="Maciej Hanski; photograph of Scribus developer Craig Bradney",
        install="apt-get install -y --no-install-recommends scribus-template",
        heldout=True,
        # Photo. 202x263 RGB, 1 face, IOD 44 px, yaw ~0 deg; man, glasses, white shirt and tie.
    ),
    Portrait(
        name="jesper_pedersen",
        manager="apt",
        package="kphotoalbum",
        path="/usr/share/kphotoalbum/demo/jesper_2.jpg",
        licence="GPL-2+ (debian/copyright of kphotoalbum 5.9.1-1; upstream author's own demo photos)",
        source="Debian kphotoalbum 5.9.1-1, KPhotoAlbum demo database (demo/index.xml tags the "
        "person 'Jesper')",
        attribution="Jesper K. Pedersen (KPhotoAlbum author), photograph of himself",
        install='apt-get download kphotoalbum && dpkg -x kphotoalbum_*.deb "$FACECAST_DEB_ROOT"',
        heldout=True,
        # Photo. 800x532 RGB, 1 face, IOD 113 px, yaw ~8 deg; man, 30s, mouth slightly open (talking).
        # demo/new_wave_2.jpg is the same person younger: not listed, to keep identities distinct.
    ),
    Portrait(
        name="aksel_andersson",
        manager="apt",
        package="gramps",
        path="/usr/share/doc/gramps/example/gramps/654px-Aksel_Andersson.jpg",
        licence="GPL-2+ (debian/copyright 'Files: *' of gramps 5.1.5-1); the photograph itself is "
        "an early-20th-century portrait from Wikimedia Commons, public domain by age",
        source="Debian gramps 5.1.5-1, Gramps example family tree (example/gramps/example.gramps "
        "media object O0008)",
        attribution="Gramps Project example data; portrait of Aksel Andersson (Wikimedia Commons)",
        install='apt-get download gramps && dpkg -x gramps_*.deb "$FACECAST_DEB_ROOT"',
        heldout=True,
        # Photo. 654x600 RGB (sepia), 1 face, IOD 66 px, yaw ~7 deg; elderly man, long white beard.
    ),
    Portrait(
        name="ew_dahlgren",
        manager="apt",
        package="gramps",
        path="/usr/share/doc/gramps/example/gramps/E_W_Dahlgren.jpg",
        licence="GPL-2+ (debian/copyright 'Files: *' of gramps 5.1.5-1); the photograph itself is "
        "an early-20th-century portrait from Wikimedia Commons, public domain by age",
        source="Debian gramps 5.1.5-1, Gramps example family tree (media object O0007)",
        attribution="Gramps Project example data; portrait of E. W. Dahlgren (Wikimedia Commons)",
        install='apt-get download gramps && dpkg -x gramps_*.deb "$FACECAST_DEB_ROOT"',
        # Photo. 703x622 RGB (sepia), 1 face, IOD 77 px, yaw ~19 deg (most turned entry); elderly
        # man, bald, white moustache.
    ),
    Portrait(
        name="alimehemet",
        manager="apt",
        package="gramps",
        path="/usr/share/doc/gramps/example/gramps/Alimehemet.jpg",
        licence="GPL-2+ (debian/copyright 'Files: *' of gramps 5.1.5-1); the engraving itself is "
        "19th-century, from Wikimedia Commons, public domain by age",
        source="Debian gramps 5.1.5-1, Gramps example family tree (media object O0006)",
        attribution="Gramps Project example data; 19th-century engraved portrait (Wikimedia Commons)",
        install='apt-get download gramps && dpkg -x gramps_*.deb "$FACECAST_DEB_ROOT"',
        # Engraving (black-and-white line art, not a photo). 450x518, 1 face, IOD 48 px, yaw ~8
        # deg; man, full beard, fez.
    ),
    Portrait(
        name="henry_hudson",
        manager="apt",
        package="freecol",
        path="/usr/share/games/freecol/default/resources/images/foundingFathers/henryHudson.size6.jpg",
        licence="GPL-2+ (debian/copyright 'Files: *' of freecol 1.0.0-1); reproduction of a "
        "historical painting in the public domain",
        source="Debian freecol 1.0.0-1, FreeCol founding-father portraits",
        attribution="The FreeCol Team; framed reproduction of a historical portrait of Henry Hudson",
        install='apt-get download freecol && dpkg -x freecol_*.deb "$FACECAST_DEB_ROOT"',
        # Painting (oil, in a gilt frame). 400x473 RGB, 1 face, IOD 34 px, yaw ~2 deg; man, long
        # grey beard, fur hat.
    ),
    Portrait(
        name="william_brewster",
        manager="apt",
        package="freecol",
        path="/usr/share/games/freecol/default/resources/images/foundingFathers/brewster.size6.jpg",
        licence="GPL-2+ (debian/copyright 'Files: *' of freecol 1.0.0-1); reproduction of a "
        "historical painting in the public domain",
        source="Debian freecol 1.0.0-1, FreeCol founding-father portraits",
        attribution="The FreeCol Team; framed reproduction of a historical portrait of William Brewster",
        install='apt-get download freecol && dpkg -x freecol_*.deb "$FACECAST_DEB_ROOT"',
        # Painting (oil, in a gilt frame). 400x473 RGB, 1 face, IOD 44 px, yaw ~12 deg, gaze
        # upward; elderly man, grey beard, white collar.
    ),
    Portrait(
        name="pocahontas",
        manager="apt",
        package="freecol",
        path="/usr/share/games/freecol/default/resources/images/foundingFathers/pocahontas.size6.jpg",
        licence="GPL-2+ (debian/copyright 'Files: *' of freecol 1.0.0-1); reproduction of a "
        "historical painting in the public domain",
        source="Debian freecol 1.0.0-1, FreeCol founding-father portraits",
        attribution="The FreeCol Team; framed reproduction of a historical portrait of Pocahontas",
        install='apt-get download freecol && dpkg -x freecol_*.deb "$FACECAST_DEB_ROOT"',
        heldout=True,
        # Painting (oil, in a gilt frame). 400x473 RGB, 1 face, IOD 49 px, yaw ~16 deg; young
        # Native American woman, hat, lace ruff.
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
