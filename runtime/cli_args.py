"""What the modules of the ``facecast`` command line share (``runtime.cli`` and the ``command``
modules of ``runtime.bench`` and ``runtime.evals``): exit statuses, the shape of a command tree,
and options whose defaults are read from where the code that runs the command keeps them.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

EXIT_OK = 0
EXIT_BAD_INPUT = 1
"""Exit status for bad input, reported as one line on stderr."""
EXIT_USAGE = 2
"""argparse's exit status for a malformed command line."""

Commands = dict[str, tuple[str, "Callable[[argparse.ArgumentParser], None] | Commands"]]
"""Command name → (one-line help, the function that adds the command's options to its parser
and sets ``func`` (``args -> exit status``), or the commands of a group such as ``bench``)."""


def quiet_native_logs() -> None:
    """Keep mediapipe's glog/TFLite start-up chatter off the terminal (errors still show); call
    before mediapipe is imported."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def param_default(fn: Callable[..., Any], name: str) -> Any:
    """The default of parameter ``name`` of ``fn`` (a function or a dataclass), read where it
    is written. Raises KeyError if ``fn`` has no such parameter."""
    return inspect.signature(fn).parameters[name].default


@contextlib.contextmanager
def backend_errors_as_input_errors() -> Iterator[None]:
    """Turn ``RuntimeError`` into ``ValueError`` (bad input, one line): a backend that cannot run
    here (no CUDA provider, no TensorRT plan, a plan from another GPU) is the user's choice of
    ``--backend``."""
    try:
        yield
    except RuntimeError as exc:
        raise ValueError(str(exc) or type(exc).__name__) from exc


def print_json(result: Any, args: argparse.Namespace) -> int:
    """Print ``result`` as JSON: one line with ``--json``, else indented. Returns ``EXIT_OK``."""
    print(json.dumps(result, indent=None if args.json else 2))
    return EXIT_OK


def add_json(p: argparse.ArgumentParser, help: str = "one line of JSON") -> None:
    """``--json``: a flag, False unless given."""
    p.add_argument("--json", action="store_true", help=help)


def add_avatar(p: argparse.ArgumentParser, default: str,
               help: str = "avatar name or bundle folder") -> None:
    """``--avatar NAME``, defaulting to ``default``."""
    p.add_argument("--avatar", default=default, help=f"{help} (default %(default)r)")


def add_allow_unconsented(p: argparse.ArgumentParser) -> None:
    """``--allow-unconsented-avatar``: run a bundle that states no consent (logged); without it
    such a bundle is refused (``avatars.bundle.require_consent``)."""
    p.add_argument("--allow-unconsented-avatar", action="store_true",
                   help="run an avatar whose bundle states no consent of the person it shows "
                        "(logged); without it such a bundle is refused")


def add_badge(p: argparse.ArgumentParser) -> None:
    """``--badge-text``, ``--badge-corner`` and ``--no-badge``: the visible disclosure in every
    frame (``runtime.provenance.disclosure``; on by default); ``--no-watermark``: the invisible
    mark (``runtime.provenance.watermark``; on by default)."""
    from runtime.provenance.disclosure import CORNERS, Badge

    p.add_argument("--badge-text", default=Badge.text,
                   help="the disclosure badge's text (default %(default)r)")
    p.add_argument("--badge-corner", default=Badge.corner, choices=CORNERS,
                   help="corner of the badge; another is used if it would cover the face "
                        "(default %(default)s)")
    p.add_argument("--no-badge", action="store_true",
                   help="no visible AI-generated badge (logged; disclose it another way)")
    p.add_argument("--no-watermark", action="store_true",
                   help="no invisible watermark in the frames (logged, and recorded in a "
                        "file's C2PA credentials)")


def add_c2pa(p: argparse.ArgumentParser) -> None:
    """``--c2pa-cert`` and ``--c2pa-key``: who signs the file's C2PA credentials
    (``runtime.provenance.c2pa.resolve_identity``)."""
    from runtime.provenance.c2pa import CERT_ENV, KEY_ENV

    p.add_argument("--c2pa-cert", default=None, metavar="CHAIN.pem",
                   help=f"PEM certificate chain that signs the file's C2PA credentials, signing "
                        f"certificate first (default ${CERT_ENV}; with neither, a local "
                        f"development identity, which others do not trust)")
    p.add_argument("--c2pa-key", default=None, metavar="KEY.pem",
                   help=f"its PEM (PKCS#8, EC P-256) private key (default ${KEY_ENV})")


def c2pa_identity_from(args: argparse.Namespace):
    """The signing identity ``add_c2pa`` asks for (``runtime.provenance.c2pa.Identity``).
    Raises ValueError for half a pair or unreadable files, C2paFailure when the development
    identity cannot be kept."""
    from runtime.provenance.c2pa import resolve_identity

    return resolve_identity(args.c2pa_cert, args.c2pa_key)


def note_signer(identity) -> None:
    """After a file was signed: say on stderr when it was with the local development identity
    (after the work, so that an error stays the one line on stderr)."""
    if identity is not None and identity.development:
        print(f"note: the C2PA credentials are signed with facecast's local development "
              f"identity ({identity.source}); others will not trust it: pass "
              f"--c2pa-cert/--c2pa-key", file=sys.stderr)


def badge_from(args: argparse.Namespace):
    """The ``runtime.provenance.disclosure.Badge`` the ``add_badge`` options ask for, None with
    ``--no-badge``. Raises ValueError for a bad text."""
    from runtime.provenance.disclosure import Badge

    return None if args.no_badge else Badge(args.badge_text, args.badge_corner)


def sessions_arg(text: str) -> int | str:
    """``--max-sessions`` of ``serve`` and ``livekit``: a positive integer or "auto". Raises
    ``argparse.ArgumentTypeError`` otherwise."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or 'auto', not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def add_size(p: argparse.ArgumentParser, default: int,
             help: str = "renderer face crop side in pixels") -> None:
    """``--size R``, one of ``engines.renderer.SIZES``, defaulting to ``default``."""
    from engines.renderer import SIZES

    p.add_argument("--size", type=int, default=default, choices=SIZES,
                   help=f"{help} (default %(default)s)")


def add_backend(p: argparse.ArgumentParser, default: str) -> None:
    """``--backend NAME``, one of ``engines.renderer.BACKENDS``, defaulting to ``default``."""
    from engines.renderer import BACKENDS

    p.add_argument("--backend", default=default, choices=BACKENDS,
                   help="renderer backend (default %(default)s)")
