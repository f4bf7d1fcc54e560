"""``facecast bench soak``: a short real run (server child process, aiortc peer on loopback,
Asterisk speech) with reconnects every 6 s; the JSON has every figure and they are sane. Timings
are not asserted (shared 2-core machine), only that things happened and nothing leaked grossly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from runtime.bench import harness
from runtime.bench import soak as bench_soak


def test_proc_resources_of_this_process() -> None:
    import os
    import threading

    r = bench_soak.proc_resources(os.getpid())
    assert r["rss_mb"] > 10 and r["fds"] >= 3
    assert r["threads"] == threading.active_count() or r["threads"] >= 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="minutes"):
        bench_soak.bench_soak(0)
    with pytest.raises(ValueError, match="reconnect"):
        bench_soak.bench_soak(1, reconnect_every=1)


def test_short_soak_run_reports_everything() -> None:
    try:
        harness.heldout_prompts()
    except FileNotFoundError:
        pytest.skip("asterisk-core-sounds-en-g722 is not installed")
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "bench", "soak", "--minutes", "0.4",
         "--reconnect-every", "6", "--json"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # --json: one line
    r = json.loads(lines[0])
    assert set(r) >= {"minutes", "reconnect_every_s", "frames", "stalls", "reconnections", "av",
                      "server", "connections"}
    assert 0.35 <= r["minutes"] <= 0.8
    # 24 s in 6 s connections: 3 or 4 connections
    assert r["reconnections"]["count"] == len(r["connections"]) - 1 >= 2
    assert r["reconnections"]["first_video_ms_median"] > 0
    assert r["reconnections"]["failed_attempts"] == []
    assert r["reconnections"]["dropped_connections"] == 0
    f = r["frames"]
    assert f["delivered"] > 0.6 * f["expected"] > 0
    assert f["delivered_fps"] > 10
    # received audio lost in the pts: counted (ms), and far less than what was connected
    assert 0.0 <= f["audio_missing_ms"] < 0.2 * f["expected"] / 25.0 * 1000
    s = r["stalls"]
    assert s["video_gaps_over_2s"] == 0 and s["watchdog_restarts"] == 0
    assert s["unrecovered"] is False
    assert set(r["av"]) == {"offset_start_ms", "offset_end_ms", "offset_change_ms",
                            "clock_drift_ms_max_abs"}
    # speech in every connection: the A/V offset is measured and plausible (within ±200 ms)
    for key in ("offset_start_ms", "offset_end_ms"):
        assert r["av"][key] is not None and abs(r["av"][key]) < 200, r["av"]
    srv = r["server"]
    for when in ("start", "end"):
        assert set(srv[when]) == {"rss_mb", "fds", "threads"}
        assert srv[when]["rss_mb"] > 50 and srv[when]["fds"] > 3 and srv[when]["threads"] > 1
    assert srv["status"] == "ok"
    assert abs(srv["fds_change"]) < 50 and abs(srv["threads_change"]) < 20
    for c in r["connections"]:
        assert c["frames"] > 0 and c["gaps_over_2s"] == 0
        assert c["audio_missing_ms"] is not None and c["audio_missing_ms"] >= 0.0
