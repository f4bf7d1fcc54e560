"""The ``facecast`` console script as a user runs it, and the serving path's imports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image


def _facecast(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_rig_preview_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "preview.png"
    r = _facecast("rig-preview", "--avatar", "default", "--out", str(out))
    assert r.returncode == 0, r.stderr
    img = np.asarray(Image.open(out))
    assert img.shape == (768, 1536, 3)
    # every panel shows the face with coloured overlays, not a blank
    for row in range(2):
        for col in range(4):
            panel = img[row * 384:(row + 1) * 384, col * 384:(col + 1) * 384]
            assert panel.std() > 20


def test_rig_preview_unknown_avatar(tmp_path: Path) -> None:
    r = _facecast("rig-preview", "--avatar", "nobody", "--out", str(tmp_path / "p.png"))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "unknown avatar 'nobody'" in r.stderr
    assert not (tmp_path / "p.png").exists()


def test_avatar_info_prints_metadata() -> None:
    r = _facecast("avatar-info", "default")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["name"] == "default" and info["content_hash"].startswith("sha256:")


def test_serving_path_imports_neither_torch_nor_mediapipe() -> None:
    code = (
        "import sys, avatars, avatars.rig, avatars.retarget, runtime.cli, runtime.animation.one_euro, "
        "runtime.offline.preview, engines\n"
        "avatars.load('default')\n"
        "bad = [m for m in ('torch', 'mediapipe') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


def test_default_avatar_is_reproducible_from_its_script() -> None:
    r = subprocess.run([sys.executable, "tools/make_default_avatar.py", "--check"], check=False,
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reproducible" in r.stdout


def test_bench_rig_prints_json() -> None:
    r = _facecast("bench", "rig", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["benchmark"] == "rig"
    assert set(result["keypoints_us_per_frame"]) == {"1", "8", "64"}
    assert result["retarget_max_coeff_error"] < 0.05


def test_bench_renderer_prints_one_json_line() -> None:
    r = _facecast("bench", "renderer", "--json", "--seconds", "0.5", "--backend", "onnxruntime")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    for key in ("median_ms_per_frame", "p95_ms_per_frame", "fps", "batch", "size", "backend",
                "calls", "threads", "cpus"):
        assert key in out, key
    assert out["backend"] == "onnxruntime-cpu" and out["batch"] == 1 and out["calls"] >= 3


def test_eval_renderer_runs() -> None:
    r = _facecast("eval", "renderer", "--n", "4", "--speech-frames", "3", "--json",
                  "--backend", "onnxruntime")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["frames"] == 4 and out["background_exact"] is True
    assert {"student", "teacher", "psnr_neutral", "nme_gap", "judge_floor"} <= set(out)
    assert out["speech"]["frames"] == 3 and "nme" in out["speech"]["student"]


def test_renderer_commands_refuse_bad_input() -> None:
    r = _facecast("eval", "renderer", "--n", "0", "--json")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "n=0" in r.stderr
    r = _facecast("eval", "renderer", "--speech-frames", "-1", "--json")
    assert r.returncode == 1 and "speech_n" in r.stderr
    r = _facecast("bench", "renderer", "--batch", "0")
    assert r.returncode == 1 and "batch" in r.stderr


def test_build_engines_without_tensorrt_exits_1() -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    r = _facecast("build-engines")
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorRT is not installed" in lines[0]


def test_bench_and_eval_subcommands_take_only_their_own_options() -> None:
    r = _facecast("bench", "latency", "--help")
    assert r.returncode == 0, r.stderr
    assert "--sessions" in r.stdout and "(default 30.0)" in " ".join(r.stdout.split())
    for other in ("--batch", "--minutes", "--reconnect-every", "--threads"):
        assert other not in r.stdout, other
    r = _facecast("bench", "soak", "--help")
    assert "--minutes" in r.stdout and "--sessions" not in r.stdout
    r = _facecast("eval", "sync", "--help")
    assert "--json" in r.stdout and "--n " not in r.stdout and "--data" not in r.stdout
    r = _facecast("bench", "latency", "--batch", "2")  # renderer's option: a usage error
    assert r.returncode == 2 and "unrecognized arguments: --batch" in r.stderr


def test_defaults_come_from_the_code_that_runs_each_command() -> None:
    """The parser reads every default where the command's code keeps it; building all of it
    imports neither torch nor mediapipe."""
    code = (
        "import sys, inspect\n"
        "from runtime.cli import build_parser\n"
        "from runtime.serve.server import ServerConfig\n"
        "from runtime.offline.render import RenderOptions\n"
        "from runtime.bench.latency import bench_latency\n"
        "from runtime.bench.soak import bench_soak\n"
        "from runtime.bench.components import bench_renderer\n"
        "p = build_parser()\n"
        "d = lambda fn, k: inspect.signature(fn).parameters[k].default\n"
        "a = p.parse_args(['serve'])\n"
        "assert (a.port, a.size, a.max_sessions) == (ServerConfig.port, ServerConfig.size,\n"
        "                                            ServerConfig.max_sessions)\n"
        "a = p.parse_args(['render', '--text', 'hi', '--out', 'x.mp4'])\n"
        "assert (a.size, a.fps) == (RenderOptions.size, RenderOptions.fps)\n"
        "a = p.parse_args(['bench', 'latency'])\n"
        "assert (a.seconds, a.sessions) == (d(bench_latency, 'seconds'),\n"
        "                                   d(bench_latency, 'sessions'))\n"
        "a = p.parse_args(['bench', 'soak'])\n"
        "assert (a.minutes, a.reconnect_every) == (d(bench_soak, 'minutes'),\n"
        "                                          d(bench_soak, 'reconnect_every'))\n"
        "a = p.parse_args(['bench', 'renderer'])\n"
        "assert (a.backend, a.seconds) == (d(bench_renderer, 'backend'),\n"
        "                                  d(bench_renderer, 'seconds'))\n"
        "bad = [m for m in ('torch', 'mediapipe') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
