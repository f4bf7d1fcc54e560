"""Consent is required (issue 19, item 1): a bundle that states no consent of the person it shows
is refused by serve, kiosk, cam and render with one clear line, unless the operator passes
``--allow-unconsented-avatar`` (logged). The shipped default avatar states its public-domain
source."""

from __future__ import annotations

import asyncio

import pytest

import avatars
from avatars.bundle import ConsentMissing, consent_stated, require_consent


def test_what_counts_as_stated() -> None:
    assert consent_stated("Jane Doe agreed on 2026-12-01 to a kiosk avatar for ACME")
    for empty in ("", "  ", "not stated", "Not Stated", "unknown", None, 3):
        assert not consent_stated(empty)
    assert require_consent(avatars.load("default"))  # the shipped avatar states its source


def test_an_unconsented_bundle_is_refused_unless_allowed(unconsented) -> None:
    with pytest.raises(ConsentMissing, match="--allow-unconsented-avatar"):
        require_consent(unconsented)
    assert require_consent(unconsented, allow_unconsented=True) is False


def test_render_refuses_it_in_one_line(unconsented, tmp_path, capsys) -> None:
    from runtime.cli import main

    out = tmp_path / "x.mp4"
    code = main(["render", "--avatar", str(unconsented.path), "--text", "Hi.", "--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(err) == 1 and "states no consent" in err[0], err
    assert not out.exists()


def test_cam_refuses_it(unconsented) -> None:
    from runtime.local.cam import CamOptions, run_cam

    with pytest.raises(ConsentMissing):
        run_cam(CamOptions(avatar=str(unconsented.path), record="/tmp/never.mp4", seconds=1))


def test_serve_refuses_it_at_start_and_to_clients(unconsented, monkeypatch) -> None:
    from runtime.serve.client import AvatarClient
    from runtime.serve.server import ServerConfig, serve_in_thread

    with pytest.raises(ConsentMissing):
        serve_in_thread(ServerConfig(port=0, avatar=str(unconsented.path)))
    monkeypatch.setenv("FACECAST_AVATAR_DIR", str(unconsented.path.parent))
    handle = serve_in_thread(ServerConfig(port=0))
    try:
        async def ask() -> dict:
            async with AvatarClient(handle.ws_url, {"avatar": "nobody"}) as c:
                return c.ready

        reply = asyncio.run(asyncio.wait_for(ask(), 60))
        assert reply["code"] == "bad_avatar" and "nobody" in reply["message"]
    finally:
        handle.stop()
    allowed = serve_in_thread(ServerConfig(port=0, avatar=str(unconsented.path),
                                           allow_unconsented=True))
    allowed.stop()
