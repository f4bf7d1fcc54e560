"""Enroll the bundled default avatar from scikit-image's public-domain astronaut portrait.

    python tools/make_default_avatar.py [--out avatars] [--check]

``skimage.data.astronaut()`` is NASA's portrait of astronaut Eileen Collins (public domain, a
work of the US government), shipped inside the scikit-image wheel, so nothing is downloaded.
The same ``avatars.enroll`` code a user runs writes ``avatars/default/``. With ``--check`` it
enrolls into a temporary folder and compares with the committed bundle instead (landmarks to
1e-3 px, crop box and mask exactly), exiting 1 on a difference.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatars import load
from avatars.bundle import encode_png
from avatars.enroll import EnrollOptions, enroll

OPTIONS = EnrollOptions(
    consent=(
        "Public-domain NASA portrait of astronaut Eileen Collins, distributed with scikit-image "
        "as skimage.data.astronaut(); used as facecast's demonstration avatar."
    ),
    source="scikit-image 0.24.0, skimage.data.astronaut() (from NASA's image archive)",
    licence="Public domain (work of the U.S. federal government, NASA)",
    attribution="NASA; portrait of Eileen Collins; via scikit-image",
    overwrite=True,
)


def enroll_astronaut(out_dir: Path) -> Path:
    """Write the astronaut bundle as ``out_dir/default`` and return its folder."""
    import skimage.data

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "astronaut.png"
        src.write_bytes(encode_png(skimage.data.astronaut()))
        return enroll(src, "default", out_dir, OPTIONS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "avatars")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if not args.check:
        print(f"wrote {enroll_astronaut(args.out)}")
        return 0
    committed = load(ROOT / "avatars" / "default")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = load(enroll_astronaut(Path(tmp)))
    diff = float(np.abs(fresh.landmarks - committed.landmarks).max())
    same = (diff <= 1e-3 and fresh.crop_box == committed.crop_box
            and np.array_equal(fresh.mask, committed.mask))
    print(f"max landmark difference {diff:.2e} px; crop box {fresh.crop_box} vs "
          f"{committed.crop_box}; {'reproducible' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
