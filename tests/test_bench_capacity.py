"""``facecast bench capacity``: one short real run (the real scheduler, sessions, renderer and
VP8/Opus encoders, up to 2 sessions, a few seconds) has every figure; the persisted capacity
round-trips under its machine key, keeps other keys and survives a corrupt file.

No assertion on speed: the machine is shared, so whether a step holds is not tested."""

from __future__ import annotations

import asyncio
import json

import pytest

from runtime.bench import capacity as C
from runtime.bench.harness import heldout_prompts
from runtime.live.stages import STAGES


def _have_prompts() -> bool:
    try:
        return bool(heldout_prompts(1))
    except FileNotFoundError:
        return False


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FACECAST_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_capacity_path_and_key(cache_dir, monkeypatch, tmp_path) -> None:
    assert C.capacity_path() == cache_dir / "capacity.json"
    monkeypatch.delenv("FACECAST_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.capacity_path() == tmp_path / "xdg" / "facecast" / "capacity.json"
    key = C.machine_key("onnxruntime-cpu", 256, 25)
    assert key == C.machine_key("onnxruntime-cpu", 256, "25")
    assert f"{C.usable_cores()}cores" in key and C.cpu_model() in key
    assert key != C.machine_key("onnxruntime-cpu", 512, 25)
    assert key != C.machine_key("onnxruntime-cpu", 256, "30000/1001")
    assert key != C.machine_key("onnxruntime-cuda", 256, 25)
    with pytest.raises(ValueError):
        C.machine_key("onnxruntime-cpu", 256, 0)


def test_save_load_keeps_other_keys_and_survives_corruption(cache_dir) -> None:
    assert C.load_capacity("k1") is None  # no file yet
    path = C.save_capacity("k1", {"capacity": 3, "steps": []})
    assert path == C.capacity_path() and path.is_file()
    C.save_capacity("k2", {"capacity": 5})
    got = C.load_capacity("k1")
    assert got["capacity"] == 3 and got["measured_at"]
    assert C.load_capacity("k2")["capacity"] == 5
    assert C.load_capacity("other") is None
    assert not [p for p in cache_dir.iterdir() if p.name != "capacity.json"]  # no temp left
    for bad in ("{not json", "[1, 2]", json.dumps({"k1": {"capacity": "3"}}), "\xff\xfe", ""):
        path.write_text(bad)
        assert C.load_capacity("k1") is None
    path.write_bytes(b"\x80\x81garbage")
    assert C.load_capacity("k1") is None
    C.save_capacity("k1", {"capacity": 1})  # a corrupt file is replaced, not fatal
    assert C.load_capacity("k1")["capacity"] == 1


@pytest.mark.skipif(not _have_prompts(), reason="needs asterisk-core-sounds-en-g722")
def test_short_real_run(cache_dir) -> None:
    steps_seen: list[dict] = []

    async def main() -> dict:  # inside a running loop, as the server will call it
        return await C.measure_capacity(size=256, max_sessions=2, seconds=2.0, warmup_s=1.0,
                                        on_step=steps_seen.append)

    report = asyncio.run(main())
    for k in ("backend", "size", "fps", "cores", "cpu_model", "renderer", "key", "capacity",
              "steps"):
        assert k in report, k
    assert report["size"] == 256 and report["fps"] == 25
    assert report["cores"] == C.usable_cores()
    assert report["renderer"]["file"] == "renderer_256.onnx"
    assert len(report["renderer"]["sha256"]) == C.HASH_CHARS
    assert report["key"] == C.machine_key(report["backend"], 256, 25)
    assert 1 <= len(report["steps"]) <= 2 and steps_seen == report["steps"]
    assert 0 <= report["capacity"] <= 2
    assert report["capacity"] == sum(s["holds"] for s in report["steps"])
    first = report["steps"][0]
    assert first["sessions"] == 1
    assert first["fps_mean"] > 0 and first["fps_min"] > 0 and first["frames"] > 0
    for k in ("tick_p50_ms", "tick_p95_ms", "late_ticks", "cpu_percent", "rss_mb",
              "rss_mb_per_session", "holds"):
        assert k in first, k
    assert first["tick_p95_ms"] >= first["tick_p50_ms"] > 0
    stages = first["stage_ms_per_frame"]
    assert set(stages) == set(STAGES)
    assert all(v >= 0 for v in stages.values())
    assert stages["encode_video"] > 0 and stages["encode_audio"] > 0
    assert stages["render"] > 0 and stages["motion"] > 0
    assert first["cpu_percent"] > 0 and first["rss_mb"] > 0
    # the report is what the CLI saves: JSON-ready, and found again under its key
    C.save_capacity(report["key"], json.loads(json.dumps(report)))
    again = C.load_capacity(report["key"])
    assert again["capacity"] == report["capacity"] and again["measured_at"]
    assert C.table(report).splitlines()[-1].startswith("capacity:")
