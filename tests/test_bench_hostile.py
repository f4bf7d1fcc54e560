"""``facecast bench hostile``: the case list (over 100 cases in every group, in a fixed order, a
``--quick`` subset), its raw-HTTP helpers, and one real ``--quick`` run (a server child process, the
well-behaved aiortc peer talking throughout, ~25 hostile cases, SIGTERM at the end) whose report
has every figure and whose well-behaved session received frames.

Which cases are handled is not asserted yet: the server is being hardened against the contract
the cases encode; the report names the ones that fail."""

from __future__ import annotations

import dataclasses

import pytest

from runtime.bench import hostile as H
from runtime.bench.hostile import campaign, wire


def test_case_list_has_over_100_cases_in_every_group() -> None:
    names = [c.name for c in H.CASES]
    assert len(names) >= 100
    assert len(set(names)) == len(names)
    assert {c.group for c in H.CASES} == set(H.GROUPS)
    assert all(c.phase in ("cli", "server", "end") for c in H.CASES)
    quick = H.select_cases(quick=True)
    assert 15 <= len(quick) <= 35
    assert {c.group for c in quick} == set(H.GROUPS)
    assert [c.name for c in H.select_cases(names={"not_json", "head_root"})] == \
        ["not_json", "head_root"]
    # the rate-limit case holds its address back: it must be the token server's last case
    assert [c.name for c in H.CASES if c.group == "auth"][-1] == "token_rate_limit"
    # SIGTERM comes before the log checks
    end = [c.name for c in H.CASES if c.phase == "end"]
    assert end.index("sigterm_graceful") < end.index("no_tracebacks_in_logs")
    # the cli cases run before the servers, and only they
    assert all((c.phase == "cli") == (c.group == "cli") for c in H.CASES)


def test_check_cases_refuses_a_wrong_order() -> None:
    by_name = {c.name: c for c in H.CASES}
    rate, good = by_name["token_rate_limit"], by_name["token_good_jwt"]
    with pytest.raises(ValueError, match="token_rate_limit"):
        H.check_cases((rate, good))
    with pytest.raises(ValueError, match="sigterm_graceful"):
        H.check_cases((by_name["no_tracebacks_in_logs"], by_name["sigterm_graceful"]))
    with pytest.raises(ValueError, match="twice"):
        H.check_cases((good, good))
    with pytest.raises(ValueError, match="group"):
        dataclasses.replace(good, group="nope")


def test_server_flags_and_pacing_figures() -> None:
    flags = H.ServerFlags()
    args = flags.args()
    assert args[args.index("--offer-timeout") + 1] == "10"
    assert flags.args("s")[-2:] == ["--token", "s"]
    assert flags.paced_seconds(2002) == pytest.approx(8.01)
    assert flags.paced_seconds(100) == 0


def test_raw_http_helpers() -> None:
    req = H.http_request("GET", "/ws", 8765, [("Origin", "http://x")], upgrade=True)
    assert req.startswith(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nUpgrade: websocket")
    assert req.endswith(b"Origin: http://x\r\n\r\n")
    assert b"Host:" not in H.http_request("GET", "/", 1, host=None)
    assert campaign.only_known(["--a", "1", "--b", "2"], {"--a"}) == (["--a", "1"], ["--b"])
    frame = wire.ws_frame(8, b"\x03\xe9", masked=False)
    assert wire.close_code_of(frame) == 1001
    assert wire.close_code_of(wire.ws_frame(1, b"x" * 200, masked=False) + frame) == 1001


@pytest.fixture(scope="module")
def quick_report() -> dict:
    return H.run_campaign(quick=True)


def test_quick_run_reports_every_figure(quick_report: dict) -> None:
    r = quick_report
    assert set(r) >= {"quick", "seconds", "count", "handled", "failed", "failed_names", "ok",
                      "cases", "well_behaved", "server"}
    assert r["quick"] is True
    assert r["count"] == len(r["cases"]) == len(H.select_cases(quick=True))
    assert r["handled"] + r["failed"] == r["count"]
    assert r["failed_names"] == [c["name"] for c in r["cases"] if not c["handled"]]
    assert any("fds" in c for c in r["cases"])
    for c in r["cases"]:
        base = {"name", "group", "handled", "detail", "seconds", "t_s"}
        assert base <= set(c) <= base | {"fds", "threads", "rss_mb"}
        for key in {"fds", "threads", "rss_mb"} & set(c):  # the server's, before and after
            assert len(c[key]) == 2 and min(c[key]) > 0
        assert c["group"] in H.GROUPS and isinstance(c["handled"], bool)
        assert isinstance(c["detail"], str) and c["detail"]
    wb = r["well_behaved"]
    assert wb["frames"] > 50 and wb["frames_measured"] > 0  # the session received video
    assert wb["windows"] >= 3 and 0 <= wb["fps_min"] <= wb["fps_mean"] < 40
    assert wb["windows_below_target"] == len(wb["below_target"]) or len(wb["below_target"]) == 40
    srv = r["server"]
    for key in ("fds", "threads", "rss_mb"):
        assert srv[f"{key}_before"] > 0 and srv[f"{key}_after"] > 0
    assert {"sigterm_exit", "sigterm_s", "flags", "missing_flags", "log_bytes"} <= set(srv)
    assert "--max-sessions" in srv["flags"]
    assert r["ok"] == (r["failed"] == 0 and wb["fps_min"] >= H.TARGET_FPS)
    summary = H.summary(r)
    assert f"{r['handled']}/{r['count']} cases handled" in summary
