"""The campaign: every case in its fixed order, choosing the cases a run takes, running them
against the servers with the well-behaved session talking, and the report (``run_campaign``,
``summary``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.bench.harness import Prompt, free_port, sentence_prompts, serve_process
from runtime.bench.hostile import (
    cases_faults,
    cases_http,
    cases_limits,
    cases_protocol,
    cases_signaling,
)
from runtime.bench.hostile.clients import connected, health, resources, settled
from runtime.bench.hostile.model import (
    GROUPS,
    PACE_S,
    SECRET,
    SETTLE_S,
    TARGET_FPS,
    WARM_UP_SECOND_SESSION_S,
    WARMUP_S,
    Case,
    CaseFailed,
    ServerFlags,
    Target,
)
from runtime.bench.hostile.well_behaved import WellBehaved


def check_cases(cases: tuple[Case, ...]) -> tuple[Case, ...]:
    """``cases`` once checked: unique names, ``token_rate_limit`` the last auth case (it holds
    its address back on the token server), ``sigterm_graceful`` before the other end cases
    that read the logs. Raises ValueError otherwise."""
    names = [c.name for c in cases]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"case names used twice: {twice}")
    auth = [c.name for c in cases if c.group == "auth"]
    if auth and auth[-1] != "token_rate_limit":
        raise ValueError("token_rate_limit must be the last auth case")
    end = [c.name for c in cases if c.phase == "end"]
    if "sigterm_graceful" in end and any(n in end[:end.index("sigterm_graceful")]
                                         for n in ("no_tracebacks_in_logs", "log_size_bounded")):
        raise ValueError("sigterm_graceful must come before the log checks")
    return cases


CASES: tuple[Case, ...] = check_cases(
    cases_protocol.CASES + cases_signaling.CASES + cases_http.CASES + cases_limits.CASES
    + cases_faults.CASES)
"""Every case, in the order they run within their phase (``PHASES``): protocol, signaling,
http, auth, limits, faults; the cli cases before the servers start, the end cases after."""


def select_cases(quick: bool = False, names: set[str] | None = None) -> list[Case]:
    """The cases a run takes, in ``CASES`` order: all, the ``--quick`` subset, or those named
    (``names`` overrides ``quick``)."""
    return [c for c in CASES if (names is None or c.name in names) and (not quick or c.quick
                                                                        or names is not None)]


async def _run_one(c: Case, t: Target) -> dict[str, Any]:
    start = time.monotonic()
    use0 = _resources_or_none(t)
    try:
        ok, detail = await asyncio.wait_for(c.run(t), c.timeout)
    except CaseFailed as exc:
        ok, detail = False, str(exc)
    except TimeoutError:
        ok, detail = False, f"no outcome within {c.timeout:g} s"
    except Exception as exc:  # noqa: BLE001 - a case's failure is its finding
        text = str(exc).strip().splitlines()
        ok, detail = False, f"{type(exc).__name__}: {text[0][:300] if text else ''}"
    end = time.monotonic()
    use1 = _resources_or_none(t)
    used = {k: [use0[k], use1[k]] for k in ("fds", "threads", "rss_mb")} if use0 and use1 else {}
    return {"name": c.name, "group": c.group, "handled": bool(ok), "detail": str(detail)[:600],
            "seconds": round(end - start, 2), "t_s": round(start - t.t0, 1) if t.t0 else None,
            **used, "_span": (c.name, start, end)}


def _resources_or_none(t: Target) -> dict[str, float] | None:
    """The server's fds, threads and RSS, or None once it is gone (after SIGTERM)."""
    try:
        return resources(t)
    except (FileNotFoundError, ProcessLookupError, AttributeError):
        return None


async def _run_phase(cases: list[Case], t: Target, paced: bool) -> list[dict]:
    out = []
    for c in cases:
        out.append(await _run_one(c, t))
        if paced:
            await settled(t, 3.0)
            await asyncio.sleep(PACE_S)
    return out


def known_serve_flags() -> set[str]:
    """The options this ``facecast serve`` knows (from its ``--help``)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    text = subprocess.run([sys.executable, "-m", "runtime.cli", "serve", "--help"],
                          capture_output=True, text=True, env=env, timeout=60,
                          check=False).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", text))


def only_known(args: list[str], known: set[str]) -> tuple[list[str], list[str]]:
    """``args`` (flag, value pairs) without the flags not in ``known``; and those flags."""
    kept: list[str] = []
    missing: list[str] = []
    for flag, value in zip(args[::2], args[1::2]):
        if flag in known:
            kept += [flag, value]
        else:
            missing.append(flag)
    return kept, missing


def _broken_avatars(root: Path) -> Path:
    """A ``FACECAST_AVATAR_DIR`` holding a bundle that exists but does not load."""
    folder = root / "avatars"
    (folder / "hx_badjson").mkdir(parents=True)
    (folder / "hx_badjson" / "avatar.json").write_text("{broken")
    (folder / "hx_empty").mkdir()
    return folder


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_campaign(quick: bool = False, port: int | None = None, flags: ServerFlags | None = None,
                 size: int = 256, avatar: str = "default", backend: str = "auto",
                 names: set[str] | None = None, log_path: Path | None = None) -> dict[str, Any]:
    """Run the campaign; returns the JSON-ready report described in the package docstring.

    Args:
        quick: only the ``--quick`` subset (about 25 cases, about a minute).
        port: the main server's port (None: a free one). flags: the servers' settings (None:
            ``ServerFlags()``).
        size, avatar, backend: passed to ``facecast serve``.
        names: run only these cases (and the servers they need); overrides ``quick``.
        log_path: keep the main server's stderr here (None: a temporary file).

    Raises:
        RuntimeError: a server did not start, or the well-behaved session did not come up.
    """
    flags = flags or ServerFlags()
    cases = select_cases(quick, names)
    wall0 = time.monotonic()
    try:
        prompts = sentence_prompts(8)
    except FileNotFoundError:
        prompts = []
    with tempfile.TemporaryDirectory(prefix="facecast-hostile-") as tmp:
        root = Path(tmp)
        t = Target(flags, avatar_dir=_broken_avatars(root))
        t.logs = [log_path or root / "serve.log", root / "serve-token.log"]
        results = asyncio.run(_run_phase([c for c in cases if c.phase == "cli"], t, False))
        known = known_serve_flags()
        args, missing = only_known(flags.args(), known)
        t.port = port or free_port()
        with contextlib.ExitStack() as stack:
            with _env(FACECAST_AVATAR_DIR=str(t.avatar_dir)):
                t.proc = stack.enter_context(serve_process(
                    t.port, size, avatar, backend, extra=tuple(args), log_path=t.logs[0]))
            if any(c.group == "auth" for c in cases):
                t.auth_port = free_port()
                stack.enter_context(serve_process(
                    t.auth_port, size, avatar, backend,
                    extra=tuple(only_known(flags.args(SECRET), known)[0]), log_path=t.logs[1]))
            report = asyncio.run(_campaign(t, cases, prompts))
        results += report["results"]
    for r in results:
        r.pop("_span", None)
    failed = [r["name"] for r in results if not r["handled"]]
    wb = report["well_behaved"]
    return {"quick": quick, "seconds": round(time.monotonic() - wall0, 1),
            "count": len(results), "handled": len(results) - len(failed), "failed": len(failed),
            "failed_names": failed, "ok": not failed and wb["fps_min"] >= TARGET_FPS,
            "cases": results, "well_behaved": wb,
            "server": {**report["server"], "flags": args, "missing_flags": missing}}


async def _warm_up_two_sessions(t: Target) -> None:
    """Open a second session for a moment before the baseline: the first two-session tick
    starts the server's composite pool (``Scheduler.composite_threads`` threads) and grows ONNX
    Runtime's arena for a batch of two, once and for good; measured from before that, every
    campaign would read those as growth."""
    async with connected(t) as probe:
        await asyncio.sleep(WARM_UP_SECOND_SESSION_S)
        del probe
    await settled(t, 5.0)


async def _campaign(t: Target, cases: list[Case], prompts: list[Prompt]) -> dict[str, Any]:
    """The part of the run with the servers up: the well-behaved session, the server cases, the
    end cases."""
    t.well = WellBehaved(t.ws, prompts)
    try:
        await t.well.start()
        await asyncio.sleep(WARMUP_S)
        await _warm_up_two_sessions(t)
        health0 = await health(t)
        t.baseline = int(health0.get("sessions", 1))
        before = resources(t)
        t.t0 = time.monotonic()
        results = await _run_phase([c for c in cases if c.phase == "server"], t, True)
        await asyncio.sleep(SETTLE_S)
        after = resources(t)
        health1 = await health(t)
        well = t.well.figures(t.t0, time.monotonic(), [r["_span"] for r in results])
        well["connected_after_cases"] = t.well.connected()
        results += await _run_phase([c for c in cases if c.phase == "end"], t, False)
    finally:
        await t.well.close()
    log_bytes = t.logs[0].stat().st_size if t.logs[0].is_file() else None
    server = {"fds_before": before["fds"], "fds_after": after["fds"],
              "threads_before": before["threads"], "threads_after": after["threads"],
              "rss_mb_before": before["rss_mb"], "rss_mb_after": after["rss_mb"],
              "late_ticks_before": health0.get("late_ticks"),
              "late_ticks_after": health1.get("late_ticks"),
              "watchdog_restarts": health1.get("watchdog_restarts"),
              "sigterm_exit": t.sigterm[0], "sigterm_s": t.sigterm[1], "log_bytes": log_bytes}
    return {"results": results, "well_behaved": well, "server": server}


def summary(report: dict[str, Any]) -> str:
    """A readable summary of ``run_campaign``'s report."""
    quick = " (quick)" if report["quick"] else ""
    lines = [f"facecast bench hostile: {report['handled']}/{report['count']} cases handled "
             + f"in {report['seconds']:.0f} s{quick}"]
    for group in GROUPS:
        rows = [r for r in report["cases"] if r["group"] == group]
        if not rows:
            continue
        ok = sum(r["handled"] for r in rows)
        lines.append(f"\n{group}: {ok}/{len(rows)}")
        for r in rows:
            if not r["handled"]:
                lines.append(f"  FAIL {r['name']}: {r['detail']}")
    wb, srv = report["well_behaved"], report["server"]
    lines.append(f"\nwell-behaved session: {wb['frames']} frames; fps per {wb['window_s']:g} s "
                 f"window min {wb['fps_min']:.0f}, mean {wb['fps_mean']:.1f} (target "
                 f"{wb['target_fps']:g}); {wb['windows_below_target']} of {wb['windows']} "
                 f"windows below target")
    for low in wb["below_target"][:10]:
        lines.append(f"  at {low['t_s']:.0f} s: {low['fps']:.0f} fps during {low['cases']}")
    lines.append(f"server: fds {srv['fds_before']} -> {srv['fds_after']}, threads "
                 f"{srv['threads_before']} -> {srv['threads_after']}, RSS "
                 f"{srv['rss_mb_before']:.0f} -> {srv['rss_mb_after']:.0f} MB, late ticks "
                 f"{srv['late_ticks_before']} -> {srv['late_ticks_after']}; SIGTERM: exit "
                 f"{srv['sigterm_exit']} after {srv['sigterm_s']} s")
    if srv.get("missing_flags"):
        lines.append(f"server lacks flags: {srv['missing_flags']}")
    lines.append("OK" if report["ok"] else "NOT OK")
    return "\n".join(lines)

