"""Protocol cases: malformed messages and query strings, each on a fresh session. Handled means
refused with the right ``error`` code and a readable message (no path in it where the input
named one), and the session still answering ``ping``."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from runtime.bench.hostile.clients import audio_msg as _audio
from runtime.bench.hostile.clients import connected, err, readable
from runtime.bench.hostile.clients import speak_msg as _speak
from runtime.bench.hostile.model import Case, Outcome, Run, Target, case_of


def expect_codes(raw: str | bytes | dict | Callable[[], str | bytes],
                 codes: set[str | None]) -> Run:
    """A case: send ``raw`` on a fresh session; handled when the reply's ``error`` code is in
    ``codes`` (None in it: no error is fine too) with a readable message, and a ``ping`` then
    still gets its ``pong``."""
    async def run(t: Target) -> Outcome:
        message = raw() if callable(raw) else raw
        async with connected(t) as (p, _ready):
            t0 = time.monotonic()
            reply = await p.ask(message, ("error",), 1.0 if None in codes else 4.0)
            dt = time.monotonic() - t0
            code = None if reply is None else reply.get("code")
            alive = await p.alive()
            got = "no error" if reply is None else f"{err(reply)} in {dt * 1000:.0f} ms"
            is_readable = reply is None or readable(reply.get("message"))
            if not is_readable:
                got += f" (message not readable: {len(str(reply.get('message')))} chars)"
            ok = code in codes and alive and is_readable
            return ok, f"{got}; " + ("ping answered" if alive else
                                     f"no pong (close {p.close_code})")
    return run


MALFORMED: list[tuple[str, Any, set[str | None], bool]] = [
    # (name, message or a function making it, accepted codes, in --quick)
    ("not_json", "hello", {"bad_json"}, True),
    ("truncated_json", '{"type": "ping"', {"bad_json"}, False),
    ("empty_text_frame", "", {"bad_json"}, False),
    ("json_with_bom", '\ufeff{"type": "ping"}', {"bad_json"}, False),
    ("trailing_garbage", '{"type": "ping"} x', {"bad_json"}, False),
    ("binary_frame", b"\x00\x01\x02\xff", {"binary_not_supported"}, True),
    ("binary_json", b'{"type": "ping"}', {"binary_not_supported"}, False),
    ("json_array", "[1, 2]", {"bad_message"}, False),
    ("json_string", '"ping"', {"bad_message"}, False),
    ("json_number", "42", {"bad_message"}, False),
    ("json_null", "null", {"bad_message"}, False),
    ("json_nan", "NaN", {"bad_message", "bad_json"}, False),
    ("no_type", "{}", {"bad_message"}, True),
    ("type_number", {"type": 5}, {"bad_message"}, False),
    ("type_null", {"type": None}, {"bad_message"}, False),
    ("type_list", {"type": ["ping"]}, {"bad_message"}, False),
    ("unknown_type", {"type": "nope"}, {"bad_message"}, False),
    ("type_wrong_case", {"type": "PING"}, {"bad_message"}, False),
    ("type_100k_chars", lambda: json.dumps({"type": "x" * 100_000}), {"bad_message"}, False),
    ("speak_text_number", _speak(5), {"bad_message"}, False),
    ("speak_text_missing", {"type": "speak"}, {"bad_message"}, False),
    ("speak_text_list", _speak(["a"]), {"bad_message"}, False),
    ("speak_text_object", _speak({"a": 1}), {"bad_message"}, False),
    ("speak_text_null", _speak(None), {"bad_message"}, False),
    ("speak_empty_text", _speak(""), {"empty_text"}, True),
    ("speak_blank_text", _speak(" \n\t "), {"empty_text"}, False),
    ("speak_text_too_long", lambda: json.dumps(_speak("a" * 5001)), {"text_too_long"}, False),
    ("speak_voice_number", _speak(voice=7), {"bad_message"}, False),
    ("speak_voice_unknown", _speak(voice="xx-nosuchvoice"), {"bad_voice"}, False),
    ("speak_voice_path", _speak(voice="../../../etc/passwd"), {"bad_voice", "bad_message"},
     False),
    ("speak_voice_10k", lambda: json.dumps(_speak(voice="v" * 10_000)),
     {"bad_voice", "bad_message"}, False),
    ("speak_id_65_chars", _speak(id="i" * 65), {"bad_message"}, False),
    ("speak_id_list", _speak(id=[1]), {"bad_message"}, False),
    ("speak_id_float", _speak(id=1.5), {"bad_message"}, False),
    ("speak_id_object", _speak(id={"a": 1}), {"bad_message"}, False),
    ("speak_lone_surrogate", '{"type": "speak", "text": "a\\ud800b"}', {None, "bad_message"},
     False),
    ("audio_pcm_missing", _audio(...), {"bad_audio"}, False),
    ("audio_pcm_number", _audio(12), {"bad_audio"}, False),
    ("audio_pcm_not_base64", _audio("!!!!"), {"bad_audio"}, True),
    ("audio_pcm_odd_bytes", _audio(base64.b64encode(b"abc").decode()), {"bad_audio"}, False),
    ("audio_pcm_spaces", _audio("AAAA AAAA"), {"bad_audio"}, False),
    ("audio_rate_zero", _audio(rate=0), {"bad_audio"}, False),
    ("audio_rate_7999", _audio(rate=7999), {"bad_audio"}, False),
    ("audio_rate_96001", _audio(rate=96001), {"bad_audio"}, False),
    ("audio_rate_negative", _audio(rate=-16000), {"bad_audio"}, False),
    ("audio_rate_string", _audio(rate="16000"), {"bad_audio"}, False),
    ("audio_rate_float", _audio(rate=16000.5), {"bad_audio"}, False),
    ("audio_rate_bool", _audio(rate=True), {"bad_audio"}, False),
    ("audio_rate_missing", {"type": "audio", "pcm16": "AAAA"}, {"bad_audio"}, False),
    ("audio_rate_1e30", _audio(rate=10 ** 30), {"bad_audio"}, False),
    ("audio_rate_nan", '{"type": "audio", "pcm16": "AAAA", "sample_rate": NaN}', {"bad_audio"},
     False),
    ("audio_id_65_chars", _audio(id="i" * 65), {"bad_message"}, False),
    ("audio_id_list", _audio(id=["x"]), {"bad_message"}, False),
    ("audio_end_id_list", {"type": "audio_end", "id": ["x"]}, {"bad_message"}, False),
    ("audio_end_no_stream", {"type": "audio_end"}, {"bad_message"}, False),
    ("audio_end_never_opened", {"type": "audio_end", "id": "never-opened"}, {"bad_message"},
     True),
    ("offer_sdp_missing", {"type": "offer"}, {"bad_message"}, False),
    ("offer_sdp_number", {"type": "offer", "sdp": 1}, {"bad_message"}, False),
    ("offer_sdp_blank", {"type": "offer", "sdp": "  "}, {"bad_message"}, False),
    ("offer_sdp_type_answer", {"type": "offer", "sdp": "v=0", "sdp_type": "answer"},
     {"bad_message"}, False),
    ("ping_extra_fields", {"type": "ping", "x": [1, {"y": None}]}, {None}, False),
    ("interrupt_when_idle", {"type": "interrupt"}, {None}, False),
    ("integer_5000_digits", lambda: '{"type": "ping", "n": ' + "9" * 5000 + "}", {"bad_json"},
     True),
    ("rate_4400_digits", lambda: '{"type": "audio", "pcm16": "", "sample_rate": '
     + "1" * 4400 + "}", {"bad_json"}, False),
    ("arrays_100k_deep", lambda: "[" * 100_000 + "]" * 100_000, {"bad_json"}, True),
    ("objects_50k_deep", lambda: '{"a":' * 50_000 + "1" + "}" * 50_000, {"bad_json"}, False),
    ("nested_text_100k_deep", lambda: '{"type": "speak", "text": ' + "[" * 100_000
     + "]" * 100_000 + "}", {"bad_json"}, False),
    ("utf8_1_2_mb", lambda: json.dumps(_speak("é" * 600_000), ensure_ascii=False),
     {"message_too_large"}, True),
    ("ascii_1_5_mb", lambda: json.dumps(_speak("a" * 1_500_000)), {"message_too_large"}, False),
]
"""Malformed messages: (case name, the message or a function making it, the ``error`` codes
accepted (None: no error), in ``--quick``)."""


async def _frame_3_mb(t: Target) -> Outcome:
    """A 3 MB frame, far beyond the limit: ``message_too_large`` or close 1009."""
    async with connected(t) as (p, _ready):
        reply = await p.ask(json.dumps(_speak("b" * 3_000_000)), ("error",), 5)
        if reply is not None and reply.get("code") == "message_too_large":
            alive = await p.alive()
            return alive, f"{err(reply)}; " + ("ping answered" if alive else "no pong")
        code = await p.wait_closed(3)
        return code == 1009, f"reply {err(reply)}; close code {code}"


def bad_query(query: str, code: str, close: int = 1008) -> Run:
    """A case: connect with ``query``; handled when the first message is an ``error`` with
    ``code`` whose message holds no path ('/'), and the server then closes with ``close``."""
    async def run(t: Target) -> Outcome:
        async with connected(t, query, expect=None) as (p, first):
            got = (first or {}).get("code")
            closed = await p.wait_closed(3)
            msg = (first or {}).get("message", "")
            ok = got == code and closed == close and readable(msg) and "/" not in msg
            return ok, f"{err(first)}; close {closed}"
    return run


BAD_AVATARS = [("etc", "/etc", True), ("dotdot_x", "../x", False),
               ("home_ssh", str(Path.home() / ".ssh"), False), ("abs_dot_default", None, False),
               ("dot_default", "./default", False), ("dotdot", "..", False), ("dot", ".", False),
               ("default_dotdot_default", "default/../default", False),
               ("tilde_root", "~root", False), ("windows_path", "C:\\Windows", False),
               ("name_65_chars", "a" * 65, False), ("non_ascii", "déjà", False),
               ("with_suffix", "default.json", False), ("with_space", "with space", False),
               ("percent_encoded_path", "%2Fetc", False), ("nul_byte", "default\x00", False),
               ("dash_only", "-", False), ("missing_name", "nosuch_hx", False),
               ("broken_bundle", "hx_badjson", False)]
"""``?avatar=`` values to refuse with ``bad_avatar``: (case name without ``avatar_``, value
(None: the package's default bundle by an absolute path with a ``.`` in it), in ``--quick``)."""


def _avatar_case(value: str | None) -> Run:
    async def run(t: Target) -> Outcome:
        import avatars.bundle

        v = value if value is not None else f"{avatars.bundle.PACKAGE_AVATAR_DIR}/./default"
        return await bad_query(f"?avatar={quote(v, safe='')}", "bad_avatar")(t)
    return run


def _same_avatar_message(missing: str, existing: str) -> Run:
    """A case: ``missing`` (no such avatar) and ``existing`` (something that exists on disk but
    is no usable bundle) get the same ``bad_avatar`` message, with no path in it: a client
    cannot probe the server's files."""
    async def run(t: Target) -> Outcome:
        messages = {}
        for v in (missing, existing):
            async with connected(t, f"?avatar={quote(v, safe='')}", expect=None) as (_p, m):
                text = (m or {}).get("message") if (m or {}).get("code") == "bad_avatar" \
                    else f"not bad_avatar: {err(m)}"
                messages[v] = str(text).replace(v, "NAME")  # the name itself may be echoed
        same = len(set(messages.values())) == 1
        no_path = all(isinstance(m, str) and "/" not in m for m in messages.values())
        return same and no_path, "; ".join(f"{k}: {str(m)[:80]!r}" for k, m in messages.items())
    return run


BAD_NAMES = [("display_dotdot", "display", "../x"), ("display_space", "display", "a b"),
             ("display_65_chars", "display", "d" * 65), ("display_nul", "display", "x\x00"),
             ("control_path", "control", "/etc"), ("control_non_ascii", "control", "é"),
             ("control_dotdot", "control", "..")]
"""Display and controller names to refuse with ``bad_message``: (case name, query key,
value)."""


CASES: tuple[Case, ...] = (
    *(Case(name, "protocol", expect_codes(raw, codes), quick=quick)
      for name, raw, codes, quick in MALFORMED),
    case_of(_frame_3_mb, "protocol"),
    *(Case(f"avatar_{name}", "protocol", _avatar_case(value), quick=quick)
      for name, value, quick in BAD_AVATARS),
    Case("avatar_same_message_names", "protocol", _same_avatar_message("nosuch_hx", "hx_badjson")),
    Case("avatar_same_message_paths", "protocol", _same_avatar_message("/nonexistent_hx", "/etc")),
    *(Case(name, "protocol", bad_query(f"?{key}={quote(value, safe='')}", "bad_message"))
      for name, key, value in BAD_NAMES),
)
"""The protocol cases, in the order they run."""
