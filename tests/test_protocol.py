"""The control protocol without a server: every client message parses into its dataclass, every
malformed frame raises the error whose code the server replies with, and every server message
(session events included) serialises to the same JSON as the server sent before it was typed."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from runtime.live.events import SpeechEnded, SpeechStarted, StateChanged
from runtime.serve import protocol as p

PCM = base64.b64encode(np.arange(-4, 4, dtype="<i2").tobytes()).decode()


def parse(obj, limits: p.Limits | None = None):
    raw = obj if isinstance(obj, (str, bytes)) else json.dumps(obj)
    return p.parse_message(raw, limits or p.Limits())


# --- every message type ------------------------------------------------------------------------
def test_every_client_message_type_parses() -> None:
    assert parse({"type": "ping"}) == p.Ping()
    assert parse({"type": "interrupt"}) == p.Interrupt()
    assert parse({"type": "offer", "sdp": "v=0\r\n"}) == p.Offer("v=0\r\n")
    assert parse({"type": "offer", "sdp": "v=0", "sdp_type": "offer"}) == p.Offer("v=0")
    assert parse({"type": "speak", "text": "hi"}) == p.Speak("hi")
    assert parse({"type": "speak", "text": "hi", "voice": "en-us", "id": "a"}) == \
        p.Speak("hi", "en-us", "a")
    audio = parse({"type": "audio", "pcm16": PCM, "sample_rate": 16000, "id": 7})
    assert audio == p.Audio(np.arange(-4, 4, dtype="<i2").tobytes(), 16000, "7")
    np.testing.assert_array_equal(audio.samples(), np.arange(-4, 4) / 32768.0)
    assert audio.samples().dtype == np.float32
    assert parse({"type": "audio", "pcm16": "", "sample_rate": 8000}).id is None
    assert parse({"type": "audio_end"}) == p.AudioEnd(None)
    assert parse({"type": "audio_end", "id": "x"}) == p.AudioEnd("x")
    assert set(p.CLIENT_MESSAGES) == {"ping", "offer", "speak", "audio", "audio_end", "interrupt"}


def test_ids_are_strings_or_numbers_of_at_most_64_characters() -> None:
    assert parse({"type": "speak", "text": "hi", "id": 12}).id == "12"
    assert parse({"type": "speak", "text": "hi", "id": True}).id == "True"  # as before: an int
    assert parse({"type": "audio_end", "id": "x" * 64}).id == "x" * 64
    for bad in ("x" * 65, 1.5, [1], {"a": 1}):
        with pytest.raises(p.BadMessage, match="'id' must be"):
            parse({"type": "audio_end", "id": bad})


# --- every malformed case and its code ------------------------------------------------------------
MALFORMED = [
    ("binary_not_supported", b"\x00\x01"),
    ("bad_json", "not json"),
    ("bad_json", "{"),
    ("bad_message", [1, 2]),
    ("bad_message", "null"),
    ("bad_message", {"no": "type"}),
    ("bad_message", {"type": 3}),
    ("bad_message", {"type": "dance"}),
    ("bad_message", {"type": "offer"}),
    ("bad_message", {"type": "offer", "sdp": "   "}),
    ("bad_message", {"type": "offer", "sdp": 5}),
    ("bad_message", {"type": "offer", "sdp": "v=0", "sdp_type": "answer"}),
    ("bad_message", {"type": "offer", "sdp": "v=0", "sdp_type": None}),
    ("bad_message", {"type": "speak"}),
    ("bad_message", {"type": "speak", "text": 5}),
    ("bad_message", {"type": "speak", "text": "hi", "voice": 5}),
    ("bad_message", {"type": "speak", "text": "hi", "id": 1.5}),
    ("empty_text", {"type": "speak", "text": "  \n"}),
    ("empty_text", {"type": "speak", "text": ""}),
    ("text_too_long", {"type": "speak", "text": "a" * 5001}),
    ("bad_audio", {"type": "audio", "sample_rate": 16000}),
    ("bad_audio", {"type": "audio", "pcm16": 5, "sample_rate": 16000}),
    ("bad_audio", {"type": "audio", "pcm16": "@@@", "sample_rate": 16000}),
    ("bad_audio", {"type": "audio", "pcm16": base64.b64encode(b"abc").decode(),
                   "sample_rate": 16000}),
    ("bad_audio", {"type": "audio", "pcm16": "", "sample_rate": 100}),
    ("bad_audio", {"type": "audio", "pcm16": "", "sample_rate": 96001}),
    ("bad_audio", {"type": "audio", "pcm16": "", "sample_rate": "16000"}),
    ("bad_audio", {"type": "audio", "pcm16": "", "sample_rate": 16000.0}),
    ("bad_audio", {"type": "audio", "pcm16": "", "sample_rate": True}),
    ("bad_audio", {"type": "audio", "pcm16": ""}),
    ("bad_message", {"type": "audio", "pcm16": "", "sample_rate": 8000, "id": "x" * 65}),
    ("bad_message", {"type": "audio_end", "id": [1]}),
]


@pytest.mark.parametrize(("code", "raw"), MALFORMED, ids=[f"{c}-{i}" for i, (c, _r)
                                                          in enumerate(MALFORMED)])
def test_every_malformed_message_raises_its_code(code: str, raw) -> None:
    with pytest.raises(p.ProtocolError) as caught:
        parse(raw)
    assert caught.value.code == code
    reply = p.ErrorReply.of(caught.value)
    assert json.loads(p.encode(reply)) == {"type": "error", "code": code,
                                           "message": str(caught.value)}


def test_limits_are_the_servers() -> None:
    small = p.Limits(max_message_bytes=100, max_text_chars=10)
    with pytest.raises(p.MessageTooLarge, match="message is 101 bytes; the limit is 100"):
        parse("x" * 101, small)  # size first, before JSON
    with pytest.raises(p.TextTooLong, match="text is 11 characters; the limit is 10"):
        parse({"type": "speak", "text": "a" * 11}, small)
    assert parse({"type": "speak", "text": "a" * 10}, small).text == "a" * 10
    assert p.Limits() == p.Limits(1 << 20, 5000)
    for rate in (p.MIN_PCM_RATE, p.MAX_PCM_RATE):
        assert parse({"type": "audio", "pcm16": "", "sample_rate": rate}).sample_rate == rate


def test_the_messages_sent_as_error_text_are_unchanged() -> None:
    cases = {
        b"\x00": "send JSON text messages",
        json.dumps([1]): "a message is a JSON object with a string 'type'",
        json.dumps({"type": "d" * 50}): f"unknown message type {'d' * 40!r}",
        json.dumps({"type": "speak", "text": " "}): "nothing to say",
        json.dumps({"type": "offer", "sdp": "v", "sdp_type": "x"}): "'sdp_type' must be 'offer'",
        json.dumps({"type": "audio", "pcm16": "", "sample_rate": 1}):
            "'sample_rate' must be an integer in [8000, 96000], got 1",
    }
    for raw, text in cases.items():
        with pytest.raises(p.ProtocolError) as caught:
            p.parse_message(raw)
        assert str(caught.value) == text
    with pytest.raises(p.BadJSON, match="^not JSON: Expecting value$"):
        p.parse_message("nope")


def test_every_error_code_is_a_distinct_class() -> None:
    classes = [c for c in vars(p).values()
               if isinstance(c, type) and issubclass(c, p.ProtocolError) and c is not p.ProtocolError]
    codes = sorted(c.code for c in classes)
    assert codes == sorted({
        "bad_json", "bad_message", "binary_not_supported", "message_too_large", "text_too_long",
        "empty_text", "bad_voice", "bad_audio", "audio_buffer_full", "too_many_streams",
        "no_peer", "webrtc_failed", "tts_failed", "too_many_sessions", "bad_avatar",
        "no_display", "internal", "too_many_controllers", "too_many_utterances",
            "media_timeout"})
    assert p.NoDisplay("x").code == "no_display" and str(p.NoDisplay("x")) == "x"


# --- serialisation ---------------------------------------------------------------------------------
def test_session_events_serialise_to_the_json_sent_before() -> None:
    assert p.encode(SpeechStarted("u1", first_audio=123.4)) == json.dumps(
        {"type": "speech_started", "id": "u1"})
    assert p.encode(SpeechEnded("agent-1", 1840, 2000, interrupted=True)) == json.dumps(
        {"type": "speech_ended", "id": "agent-1", "played_ms": 1840, "duration_ms": 2000,
         "interrupted": True})
    for state in ("idle", "speaking"):
        assert p.encode(StateChanged(state)) == json.dumps({"type": "state", "state": state})


def test_server_messages_serialise_to_the_json_sent_before() -> None:
    cases = [
        (p.Ready("s1", "default", 25, 48000),
         {"type": "ready", "session": "s1", "avatar": "default", "fps": 25, "sample_rate": 48000,
          "disclosure": "AI-generated", "badge": True}),
        (p.ControllerReady("lobby", False, None),
         {"type": "ready", "control": "lobby", "display_connected": False, "session": None}),
        (p.Answer("v=0"), {"type": "answer", "sdp": "v=0", "sdp_type": "answer"}),
        (p.ErrorReply("no_peer", "no"), {"type": "error", "code": "no_peer", "message": "no"}),
        (p.Pong(), {"type": "pong"}),
        (p.DisplayChanged("lobby", True, "s2"),
         {"type": "display", "display": "lobby", "connected": True, "session": "s2"}),
        (p.DisplayChanged("lobby", False, None),
         {"type": "display", "display": "lobby", "connected": False, "session": None}),
    ]
    for message, wire in cases:
        assert p.encode(message) == json.dumps(wire)  # same keys in the same order


def test_client_messages_round_trip() -> None:
    x = np.sin(np.linspace(0, 20, 320)).astype(np.float32) * 0.5
    messages = [p.Ping(), p.Interrupt(), p.Offer("v=0\r\n"), p.Speak("hi"),
                p.Speak("hi", "en-us", "u9"), p.Audio.from_samples(x, 16000, "a"),
                p.Audio.from_samples(np.zeros(3, np.int16), 8000), p.AudioEnd(), p.AudioEnd("a")]
    for message in messages:
        assert p.parse_message(p.encode(message)) == message
    assert p.to_wire(p.Speak("hi")) == {"type": "speak", "text": "hi"}  # no nulls for options
    audio = p.Audio.from_samples(x, 16000)
    assert np.abs(audio.samples() - x).max() < 1 / 32767
    assert list(p.to_wire(audio)) == ["type", "pcm16", "sample_rate"]


# --- the connection URL ------------------------------------------------------------------------------
def test_connect_query() -> None:
    assert p.parse_connect("/ws", "default") == p.ConnectRequest("default")
    assert p.parse_connect("/ws?avatar=", "default").avatar == "default"
    assert p.parse_connect("/ws?avatar=ada&display=lobby-1&token=t", "d") == \
        p.ConnectRequest("ada", "lobby-1", None)
    assert p.parse_connect("/ws?control=" + "a" * 64, "d").control == "a" * 64
    assert p.parse_connect("/ws?display=", "d").display is None  # blank: absent
    for bad in ("display=a%20b", "control=" + "a" * 65, "control=caf%C3%A9"):
        with pytest.raises(p.BadMessage, match="1–64 letters, digits"):
            p.parse_connect("/ws?" + bad, "d")


def test_avatar_in_the_url_is_a_name_never_a_path() -> None:
    # a path is for the server's command line (its default), never for a client
    assert p.parse_connect("/ws", "/srv/avatars/ada").avatar == "/srv/avatars/ada"
    for bad in ("/etc", "../default", "./default", "%2Froot%2F.ssh", "avatars/./default",
                "a" * 65, "caf%C3%A9", "default%00"):
        with pytest.raises(p.BadAvatar, match="must be a name"):
            p.parse_connect("/ws?avatar=" + bad, "default")


def test_json_the_parser_cannot_hold_is_bad_json() -> None:
    with pytest.raises(p.BadJSON):  # beyond Python's 4300-digit int limit
        p.parse_message('{"type": "ping", "n": ' + "9" * 5000 + "}")
    with pytest.raises(p.BadJSON, match="nested too deeply"):
        p.parse_message("[" * 200_000 + "]" * 200_000, p.Limits(max_message_bytes=1 << 20))


def test_message_limit_counts_utf8_bytes() -> None:
    limits = p.Limits(max_message_bytes=1000)
    text = '{"type": "speak", "text": "' + "é" * 600 + '"}'  # 629 characters, 1229 bytes
    with pytest.raises(p.MessageTooLarge, match="1229 bytes"):
        p.parse_message(text, limits)
    assert isinstance(p.parse_message('{"type": "speak", "text": "' + "é" * 400 + '"}', limits),
                      p.Speak)
