"""The invisible watermark: read back from the avatar's frames after what the product's outputs go
through (H.264 at CRF 28 and half size, a 10% crop, brightness/contrast, a PNG screenshot, the
served VP8 stream received by a real aiortc peer), and never read from frames facecast did not
mark (real photos, renders with the mark off)."""

from __future__ import annotations

import asyncio
import io

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from runtime.compositor import Compositor
from runtime.provenance import watermark as wm
from runtime.serve.client import AvatarClient
from runtime.serve.server import ServerConfig, serve_in_thread


@pytest.fixture(scope="module")
def marked(default_avatar):
    """(unmarked base frame, marked frame, the compositor) of the default avatar."""
    comp = Compositor(default_avatar, 256, None, watermark=True)
    plain = Compositor(default_avatar, 256).image
    return plain, comp.watermark.apply(plain), comp


def _expected(default_avatar) -> str:
    return f"{wm.payload_for(default_avatar.metadata['content_hash']):08x}"


def _h264(frames: list[np.ndarray], crf: int, scale: float) -> list[np.ndarray]:
    """Re-encode with libx264 (PyAV's FFmpeg) at ``crf`` after resizing by ``scale``."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        h, w = frames[0].shape[:2]
        s.width, s.height = int(w * scale) // 2 * 2, int(h * scale) // 2 * 2
        s.pix_fmt, s.options = "yuv420p", {"crf": str(crf)}
        for f in frames:
            small = cv2.resize(f, (s.width, s.height), interpolation=cv2.INTER_AREA)
            for p in s.encode(av.VideoFrame.from_ndarray(small, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_payload_coding_round_trips_and_rejects_bad_input() -> None:
    p = wm.payload_for("sha256:9c858a827e")
    assert p >> 24 == wm.MAGIC and p & 0xFFFFFF == 0x9C858A
    soft = wm.code_bits(p) * np.linspace(1.0, 2.0, wm.CODE_BITS)
    assert wm.chase_decode(soft) == p
    soft[[3, 17]] *= -0.1  # two weak wrong bits: Chase decoding repairs them
    assert wm.chase_decode(soft) == p
    with pytest.raises(ValueError):
        wm.payload_for("sha256:zz")
    with pytest.raises(ValueError):
        wm.code_bits(1 << 32)


def test_mark_is_invisible_enough_and_cheap(marked) -> None:
    plain, m, comp = marked
    assert cv2.PSNR(plain, m) > 35.0
    change = np.abs(m.astype(int) - plain.astype(int))[..., 0]
    p99, peak = float(np.percentile(change, 99)), int(change.max())
    assert np.median(change) <= 3 and p99 <= 12 and peak <= 25, (p99, peak)  # most on texture
    assert comp.watermark.bit_gain is not None and comp.watermark.bit_gain.max() <= wm.MAX_BIT_GAIN


def test_mark_survives_the_transformations_of_the_issue(marked, default_avatar) -> None:
    _plain, m, _ = marked
    h, w = m.shape[:2]
    want = _expected(default_avatar)
    png = io.BytesIO()
    Image.fromarray(m).save(png, format="PNG")
    cases = {
        "as made": m,
        "half size": cv2.resize(m, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
        "10% crop": m[int(0.05 * h):int(0.95 * h), int(0.07 * w):int(0.97 * w)],
        "brightness and contrast": np.clip(m.astype(np.float32) * 1.1 + 8, 0, 255).astype(np.uint8),
        "PNG screenshot": np.asarray(Image.open(io.BytesIO(png.getvalue())).convert("RGB")),
        "H.264 CRF 28": _h264([m] * 4, 28, 1.0)[2],
        "H.264 CRF 28 at half size": _h264([m] * 4, 28, 0.5)[2],
    }
    for name, frame in cases.items():
        d = wm.detect(frame)
        assert d.found and d.payload == want, (name, d)
        assert d.confidence > 0.999, (name, d)


def test_no_mark_is_read_from_frames_facecast_did_not_mark(marked, astronaut) -> None:
    from skimage import data

    plain, _m, _ = marked
    images = [plain, astronaut, data.chelsea(), data.coffee(), data.rocket(),
              np.stack([data.camera()] * 3, -1)]
    # and 100 frames of a real moving picture: the unmarked avatar, shifted and rescaled
    rng = np.random.default_rng(0)
    for _ in range(100):
        dx, dy = rng.integers(0, 40, 2)
        s = rng.uniform(0.5, 1.0)
        crop = plain[dy:dy + 400, dx:dx + 400]
        images.append(cv2.resize(crop, (int(400 * s), int(400 * s)), interpolation=cv2.INTER_AREA))
    found = [wm.detect(img).found for img in images]
    assert not any(found)


def test_served_vp8_frames_carry_the_mark(default_avatar) -> None:
    """A real aiortc peer receives `facecast serve`'s VP8 stream; its decoded frames carry the
    avatar's mark, alone and averaged."""
    handle = serve_in_thread(ServerConfig(port=0, size=256, max_sessions=1))
    try:
        async def main():
            async with AvatarClient(handle.ws_url, keep_frames=True) as c:
                await c.start_media()
                await c.wait_video(40, timeout=40)
                return list(c.received.frames)

        frames = asyncio.run(asyncio.wait_for(main(), 90))
    finally:
        handle.stop()
    frames = frames[10:40]  # after the encoder's first key frames
    want = _expected(default_avatar)
    together = wm.detect(frames)
    assert together.found and together.payload == want
    alone = [wm.detect_residual(wm.residual(f), np.array([together.period_px])) for f in frames]
    assert sum(d.found and d.payload == want for d in alone) >= 0.9 * len(frames)


def test_a_frame_the_mark_fails_on_is_dropped_and_counted_never_sent_unmarked() -> None:
    """Fault injection on a real server: the avatar's watermarker is swapped for a real one of
    another frame size, so ``apply`` raises. Frames stop (none goes out unmarked), the failure
    is counted in /metrics, and the server keeps serving."""
    import urllib.request

    handle = serve_in_thread(ServerConfig(port=0, size=256, max_sessions=1))
    try:
        async def main():
            async with AvatarClient(handle.ws_url, keep_frames=True) as c:
                await c.start_media()
                await c.wait_video(10, timeout=40)
                state = next(iter(handle.server.avatars.values()))
                good = state.compositor.watermark
                state.compositor.watermark = wm.Watermarker((64, 64), good.payload)
                await asyncio.sleep(0.3)
                n = len(c.received.frames)
                await asyncio.sleep(1.0)
                during = len(c.received.frames) - n
                state.compositor.watermark = good
                await c.wait_video(n + during + 10, timeout=20)
                return during

        during = asyncio.run(asyncio.wait_for(main(), 90))
        with urllib.request.urlopen(handle.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        handle.stop()
    assert during <= 2  # at most what was already in flight
    line = next(x for x in text.splitlines() if x.startswith("facecast_composite_failures_total"))
    assert float(line.split()[-1]) >= 20


def test_watermarker_refuses_frames_of_another_shape(marked) -> None:
    _plain, _m, comp = marked
    with pytest.raises(ValueError, match="expects uint8"):
        comp.watermark.apply(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        wm.detect(np.zeros((20, 20, 3), np.uint8))
