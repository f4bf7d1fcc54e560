"""`facecast serve --max-sessions auto`: admission from the capacity measured for this machine
(`runtime.bench.capacity`), reported in /healthz and /metrics; a session past capacity is refused
with `too_many_sessions` and the session already served keeps its frames."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from runtime.serve.client import AvatarClient
from runtime.serve.server import ServerConfig, serve_in_thread


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def test_a_session_past_measured_capacity_is_refused_and_the_served_one_unharmed(
        tmp_path, monkeypatch) -> None:
    from engines.renderer import NeuralRenderer
    from runtime.bench.capacity import load_capacity, machine_key, save_capacity

    monkeypatch.setenv("FACECAST_CACHE_DIR", str(tmp_path))
    backend = NeuralRenderer(256, "auto").backend
    key = machine_key(backend, 256, 25)
    save_capacity(key, {"capacity": 1, "steps": [], "note": "seeded by the test"})
    assert load_capacity(key)["capacity"] == 1

    handle = serve_in_thread(ServerConfig(port=0, max_sessions="auto"))
    try:
        assert handle.server.max_sessions == 1
        health = json.loads(_get(handle.url + "/healthz"))
        assert health["capacity"] == 1 and health["capacity_source"] == "measured"
        assert health["load"] == 0

        async def main():
            async with AvatarClient(handle.ws_url) as first:
                await first.start_media()
                await first.wait_video(frames=10)
                async with AvatarClient(handle.ws_url) as second:
                    assert second.ready["type"] == "error"
                    assert second.ready["code"] == "too_many_sessions"
                    assert "1 sessions" in second.ready["message"]
                before = len(first.received.video)
                await asyncio.sleep(1.0)
                after = len(first.received.video)
                health = json.loads(_get(handle.url + "/healthz"))
                metrics = _get(handle.url + "/metrics").decode()
                return after - before, health, metrics

        grew, health, metrics = asyncio.run(asyncio.wait_for(main(), 90))
        assert grew >= 15  # the served session kept receiving frames (25 a second)
        assert health["sessions"] == 1 and health["load"] == 1.0
        assert "facecast_capacity_sessions 1.0" in metrics
        assert "facecast_load 1.0" in metrics
        for stage in ("motion", "behaviour", "rig", "render", "composite"):
            line = next(ln for ln in metrics.splitlines()
                        if ln.startswith(f'facecast_stage_seconds_total{{stage="{stage}"}}'))
            assert float(line.split()[-1]) > 0, line
    finally:
        handle.stop()


def test_max_sessions_takes_a_number_or_auto() -> None:
    import pytest

    ServerConfig(max_sessions="auto").check()
    for bad in (0, "many", -1):
        with pytest.raises(ValueError, match="max-sessions"):
            ServerConfig(max_sessions=bad).check()
