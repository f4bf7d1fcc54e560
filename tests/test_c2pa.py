"""C2PA credentials on every render, through the real c2pa-python: signed with the local
development identity or the operator's, validated, broken by tampering, gone after a re-encode;
`facecast verify` reports them beside the watermark; a render whose signing fails leaves no
file."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import av
import pytest

from runtime.cli import main
from runtime.provenance import c2pa as cp
from runtime.provenance.c2pa import TRAINED_ALGORITHMIC_MEDIA


@pytest.fixture(scope="module")
def signed_render(tmp_path_factory) -> tuple[Path, Path]:
    """(a render signed with a fresh development identity, its data folder)."""
    root = tmp_path_factory.mktemp("c2pa")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_DATA_HOME", str(root / "data"))
    mp.delenv(cp.CERT_ENV, raising=False)
    mp.delenv(cp.KEY_ENV, raising=False)
    out = root / "hello.mp4"
    try:
        assert main(["render", "--avatar", "default", "--size", "256", "--text",
                     "Hello, this video says where it came from.", "--out", str(out)]) == 0
    finally:
        mp.undo()
    return out, root / "data"


def _verify_json(path: Path, capsys, data_home: Path | None, monkeypatch) -> dict:
    if data_home is not None:
        monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    capsys.readouterr()
    assert main(["verify", str(path), "--json", "--frames", "60"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_render_carries_a_valid_manifest_and_the_mark(signed_render, capsys,
                                                        monkeypatch) -> None:
    out, data = signed_render
    assert (data / "facecast" / "c2pa-dev" / "key.pem").is_file()
    report = _verify_json(out, capsys, data, monkeypatch)
    for key in ("watermark_found", "watermark_payload", "watermark_confidence", "c2pa_present",
                "c2pa_valid"):
        assert key in report
    assert report["watermark_found"] and report["watermark_payload"].startswith("fc")
    assert report["frames_marked"] == report["frames_checked"] > 0
    assert report["c2pa_present"] and report["c2pa_valid"] and report["c2pa_trusted"]
    assert report["c2pa_source_type"] == TRAINED_ALGORITHMIC_MEDIA
    assert report["c2pa_generator"].startswith("facecast")
    facts = report["c2pa_facecast"]
    assert facts["avatar"]["name"] == "default" and facts["avatar"]["consent"]
    assert facts["disclosure_badge"] is True and facts["watermark"] is True
    assert facts["speech"].startswith("tts:espeak")


def test_elsewhere_the_development_signer_is_not_trusted_but_valid(signed_render,
                                                                   tmp_path) -> None:
    out, _data = signed_render
    creds = cp.read_credentials(out)  # no trust anchors: another machine
    assert creds.present and creds.valid and not creds.trusted
    assert "signingCredential.untrusted" in creds.failures


def test_tampering_invalidates_and_reencoding_removes_the_manifest(signed_render,
                                                                   tmp_path) -> None:
    out, _data = signed_render
    tampered = tmp_path / "tampered.mp4"
    data = bytearray(out.read_bytes())
    mdat = data.index(b"mdat")
    for i in range(mdat + 5000, mdat + 5064):
        data[i] ^= 0x5A
    tampered.write_bytes(bytes(data))
    creds = cp.read_credentials(tampered)
    assert creds.present and not creds.valid

    copy = tmp_path / "copy.mp4"
    with av.open(str(out)) as src, av.open(str(copy), "w") as dst:
        s = dst.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 256, 256, "yuv420p"
        for frame in src.decode(video=0):
            img = frame.reformat(width=256, height=256)
            for p in s.encode(img):
                dst.mux(p)
        for p in s.encode():
            dst.mux(p)
    assert not cp.read_credentials(copy).present


def test_operator_identity_signs_and_half_a_pair_is_refused(tmp_path, default_avatar) -> None:
    cp._make_dev_identity(tmp_path / "op")  # stands in for an operator's CA-issued chain
    cert, key = tmp_path / "op" / "chain.pem", tmp_path / "op" / "key.pem"
    identity = cp.resolve_identity(cert, key)
    assert not identity.development
    with pytest.raises(ValueError, match="both"):
        cp.resolve_identity(cert, None)
    shutil.copy(Path(av.__file__).parent / "__init__.py", tmp_path / "not.pem")
    with pytest.raises(ValueError, match="not PEM"):
        cp.resolve_identity(tmp_path / "not.pem", key)

    video = tmp_path / "v.mp4"
    with av.open(str(video), "w") as dst:
        s = dst.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for p in s.encode(av.VideoFrame.from_ndarray(default_avatar.image[:64, :64].copy(),
                                                     format="rgb24")):
            dst.mux(p)
        for p in s.encode():
            dst.mux(p)
    prov = cp.Provenance("default", default_avatar.metadata, "audio:x.wav", False, True)
    cp.sign_file(video, prov, identity)
    creds = cp.read_credentials(video)
    assert creds.valid and creds.assertion["disclosure_badge"] is False


def test_a_render_whose_signing_fails_leaves_no_file(tmp_path, capsys) -> None:
    cp._make_dev_identity(tmp_path / "op")
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    out = tmp_path / "never.mp4"
    rc = main(["render", "--avatar", "default", "--size", "256", "--text", "Hello there.",
               "--out", str(out), "--c2pa-cert", str(tmp_path / "op" / "chain.pem"),
               "--c2pa-key", str(bad_key)])
    err = capsys.readouterr().err
    assert rc == 1 and "C2PA signing" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_verify_refuses_what_it_cannot_read(tmp_path, capsys) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    assert main(["verify", str(junk)]) == 1
    assert "cannot decode" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "missing.png")]) == 1


def test_png_screenshot_of_a_frame_is_verified(signed_render, tmp_path, capsys,
                                               monkeypatch) -> None:
    from PIL import Image

    out, data = signed_render
    with av.open(str(out)) as c:
        frame = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    shot = tmp_path / "shot.png"
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    shot.write_bytes(buf.getvalue())
    report = _verify_json(shot, capsys, data, monkeypatch)
    assert report["kind"] == "image" and report["watermark_found"]
    assert not report["c2pa_present"]
