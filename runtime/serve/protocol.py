"""The control protocol of ``facecast serve``: typed messages, parsed and serialised here only.

Every control message is one JSON text frame with a string ``type`` (``web/PROTOCOL.md`` is the
readable version of this module). ``parse_message`` turns a received frame into one of the
client messages below, or raises a ``ProtocolError`` subclass whose ``code`` is the ``error``
reply's code; ``encode`` turns any message (client's, server's, or a session event of
``runtime.live.events``) into its JSON text.

Client → server: ``Ping``, ``Offer``, ``Speak``, ``Audio``, ``AudioEnd``, ``Interrupt`` (a
display's controller sends the same ones). Server → client: ``Ready`` (``ControllerReady`` for a
controller), ``Answer``, ``ErrorReply``, ``Pong``, ``DisplayChanged``, and the session's events
``SpeechStarted``, ``SpeechEnded``, ``StateChanged`` (wire types ``speech_started``,
``speech_ended``, ``state``).

The connection URL's query (``?avatar=…&display=…&control=…``) is parsed by ``parse_connect``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import numpy as np

from runtime.audio.tts import MAX_TEXT_CHARS
from runtime.live.events import SessionEvent

MAX_MESSAGE_BYTES = 1 << 20
"""Default limit on one control message, in bytes of its UTF-8 encoded JSON text."""
MIN_PCM_RATE, MAX_PCM_RATE = 8000, 96000
"""Sample rates (Hz) an ``audio`` chunk may have."""
MAX_ID_CHARS = 64
"""Longest utterance ``id`` (after ``str()``)."""
MAX_NAME_CHARS = 64
"""Longest avatar or display name in the URL (``avatar=`` / ``display=`` / ``control=``)."""
MAX_ERROR_CHARS = 300
"""Longest ``error`` message sent (longer ones are cut, ending with "…")."""
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_OPTIONAL = {"optional": True}  # field metadata: left out of the JSON when None


# --- errors -----------------------------------------------------------------------------------
class ProtocolError(Exception):
    """A request refused with an ``error`` reply; the session goes on.

    Each subclass fixes the reply's ``code`` (a class attribute); the exception's text is the
    reply's ``message``. Raise a subclass, never this class itself.
    """

    code: ClassVar[str] = "internal"


class BadJSON(ProtocolError):
    """The text frame is not JSON."""

    code = "bad_json"


class BadMessage(ProtocolError):
    """Not an object, no or unknown ``type``, a field of the wrong type, or a request that
    makes no sense now (``audio_end`` with no open stream)."""

    code = "bad_message"


class BinaryNotSupported(ProtocolError):
    """A binary frame: the protocol is JSON text only."""

    code = "binary_not_supported"


class MessageTooLarge(ProtocolError):
    """A frame longer than the server's ``max_message_bytes``."""

    code = "message_too_large"


class TextTooLong(ProtocolError):
    """``speak`` text longer than the server's ``max_text_chars``."""

    code = "text_too_long"


class EmptyText(ProtocolError):
    """``speak`` text that is empty or only whitespace."""

    code = "empty_text"


class BadVoice(ProtocolError):
    """The TTS engine knows no such voice."""

    code = "bad_voice"


class BadAudio(ProtocolError):
    """``audio`` whose ``pcm16`` is not base64 of whole int16 samples, or a bad sample rate."""

    code = "bad_audio"


class AudioBufferFull(ProtocolError):
    """More speech queued than the session's buffer limit."""

    code = "audio_buffer_full"


class TooManyStreams(ProtocolError):
    """A new ``audio`` stream while the most a connection may hold are open."""

    code = "too_many_streams"


class NoPeer(ProtocolError):
    """An ``offer`` on a session that has a peer already, or on a controller (no media)."""

    code = "no_peer"


class WebRTCFailed(ProtocolError):
    """The offer could not be answered (bad SDP, no common codec …)."""

    code = "webrtc_failed"


class TTSFailed(ProtocolError):
    """The TTS engine failed (missing program or library, program error)."""

    code = "tts_failed"


class TooManySessions(ProtocolError):
    """The server holds its most sessions; the connection is closed."""

    code = "too_many_sessions"


class TooManyControllers(ProtocolError):
    """The server holds its most ``?control=`` connections; the connection is closed."""

    code = "too_many_controllers"


class TooManyUtterances(ProtocolError):
    """The session's speech queue holds its most utterances (``SpeechQueue.max_utterances``)."""

    code = "too_many_utterances"


class MediaTimeout(ProtocolError):
    """No offer came, or the peer connection did not connect (or stopped), within the server's
    deadline; the connection is closed and the session freed."""

    code = "media_timeout"


class BadAvatar(ProtocolError):
    """The URL's ``avatar`` does not load; the connection is closed."""

    code = "bad_avatar"


class NoDisplay(ProtocolError):
    """A controller's (or the kiosk's) display is not connected."""

    code = "no_display"


class InternalError(ProtocolError):
    """A bug in the server; the session goes on."""

    code = "internal"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (its type's name if it has none): the message of
    an ``error`` reply that reports a library's failure."""
    text = str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


# --- client → server --------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """What ``parse_message`` accepts.

    Attributes:
        max_message_bytes: longest frame, in characters of its JSON text.
        max_text_chars: longest ``speak`` text, in characters.
    """

    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_text_chars: int = MAX_TEXT_CHARS


def _utterance_id(obj: dict) -> str | None:
    """The optional ``id`` of an utterance: a string or number of at most 64 characters, as
    ``str``; None when absent. Raises BadMessage."""
    uid = obj.get("id")
    if uid is None:
        return None
    if not isinstance(uid, (str, int)) or len(str(uid)) > MAX_ID_CHARS:
        raise BadMessage(f"'id' must be a string or number (≤ {MAX_ID_CHARS} chars)")
    return str(uid)


@dataclass(frozen=True)
class Ping:
    """Asks for a ``Pong`` (a keep-alive, or a check that the session still answers)."""

    type: ClassVar[str] = "ping"

    @classmethod
    def from_wire(cls, obj: dict, limits: Limits) -> Ping:
        """From a decoded JSON object (no fields)."""
        return cls()


@dataclass(frozen=True)
class Offer:
    """A WebRTC offer (``sdp``: the SDP text, not blank); answered by ``Answer``."""

    type: ClassVar[str] = "offer"
    sdp: str
    sdp_type: str = "offer"

    @classmethod
    def from_wire(cls, obj: dict, limits: Limits) -> Offer:
        """From a decoded JSON object. Raises BadMessage (no ``sdp`` string, ``sdp_type`` other
        than "offer")."""
        sdp = obj.get("sdp")
        if not isinstance(sdp, str) or not sdp.strip():
            raise BadMessage("'offer' needs an 'sdp' string")
        if obj.get("sdp_type", "offer") != "offer":
            raise BadMessage("'sdp_type' must be 'offer'")
        return cls(sdp)


@dataclass(frozen=True)
class Speak:
    """Say ``text`` (1 – ``max_text_chars`` characters, not only whitespace) in ``voice`` (a TTS
    voice, None: the engine's default) as utterance ``id`` (None: the server names it)."""

    type: ClassVar[str] = "speak"
    text: str
    voice: str | None = field(default=None, metadata=_OPTIONAL)
    id: str | None = field(default=None, metadata=_OPTIONAL)

    @classmethod
    def from_wire(cls, obj: dict, limits: Limits) -> Speak:
        """From a decoded JSON object. Raises BadMessage (``text`` not a string, ``voice`` not a
        string, bad ``id``), EmptyText, TextTooLong."""
        text, voice = obj.get("text"), obj.get("voice")
        if not isinstance(text, str):
            raise BadMessage("'speak' needs a 'text' string")
        if not text.strip():
            raise EmptyText("nothing to say")
        if len(text) > limits.max_text_chars:
            raise TextTooLong(f"text is {len(text)} characters; the limit is "
                              f"{limits.max_text_chars}")
        if voice is not None and not isinstance(voice, str):
            raise BadMessage("'voice' must be a string")
        return cls(text, voice, _utterance_id(obj))


@dataclass(frozen=True)
class Audio:
    """A chunk of speech: ``pcm16`` little-endian int16 mono samples (raw bytes here, base64 on
    the wire) at ``sample_rate`` Hz (8000–96000), part of utterance ``id`` (None: the stream
    this connection sent last, or a new one)."""

    type: ClassVar[str] = "audio"
    pcm16: bytes
    sample_rate: int
    id: str | None = field(default=None, metadata=_OPTIONAL)

    @classmethod
    def from_wire(cls, obj: dict, limits: Limits) -> Audio:
        """From a decoded JSON object. Raises BadAudio (``pcm16`` missing, not base64 or of an
        odd byte count; ``sample_rate`` not an integer in range), BadMessage (bad ``id``)."""
        pcm, rate = obj.get("pcm16"), obj.get("sample_rate")
        if not isinstance(pcm, str):
            raise BadAudio("'audio' needs 'pcm16': base64 of int16 samples")
        if isinstance(rate, bool) or not isinstance(rate, int) or \
                not MIN_PCM_RATE <= rate <= MAX_PCM_RATE:
            raise BadAudio(f"'sample_rate' must be an integer in [{MIN_PCM_RATE}, "
                           f"{MAX_PCM_RATE}], got {rate!r}")
        try:
            raw = base64.b64decode(pcm, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadAudio("'pcm16' is not valid base64") from exc
        if len(raw) % 2:
            raise BadAudio("'pcm16' has an odd number of bytes")
        return cls(raw, rate, _utterance_id(obj))

    @classmethod
    def from_samples(cls, samples: np.ndarray, sample_rate: int,
                     id: str | None = None) -> Audio:
        """From float32 [n] in [-1, 1] (rounded and clipped to int16) or int16 [n] samples."""
        x = np.asarray(samples)
        pcm = x if x.dtype == np.int16 else \
            np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
        return cls(pcm.astype("<i2").tobytes(), sample_rate, id)

    def samples(self) -> np.ndarray:
        """The chunk as float32 [n] in [-1, 1) (int16 / 32768) at ``sample_rate``."""
        return np.frombuffer(self.pcm16, "<i2").astype(np.float32) / 32768.0


@dataclass(frozen=True)
class AudioEnd:
    """Utterance ``id`` (None: the stream this connection sent last) is complete."""

    type: ClassVar[str] = "audio_end"
    id: str | None = field(default=None, metadata=_OPTIONAL)

    @classmethod
    def from_wire(cls, obj: dict, limits: Limits) -> AudioEnd:
        """From a decoded JSON object. Raises BadMessage (bad ``id``)."""
        return cls(_utterance_id(obj))


@dataclass(frozen=True)
class Interrupt:
    """Barge-in: drop all queued speech now; the face returns to idle."""

    type: ClassVar[str] = "interrupt"

    @classmethod
    def from_wire(cls, obj: dict, limits: Limits) -> Interrupt:
        """From a decoded JSON object (no fields)."""
        return cls()


ControlMessage = Ping | Offer | Speak | Audio | AudioEnd | Interrupt
"""Any client → server message."""
CLIENT_MESSAGES: dict[str, type[ControlMessage]] = {
    m.type: m for m in (Ping, Offer, Speak, Audio, AudioEnd, Interrupt)}
"""Wire ``type`` → message class."""


def parse_message(raw: str | bytes, limits: Limits = Limits()) -> ControlMessage:
    """Parse and validate one received WebSocket frame.

    Args:
        raw: the frame: text (JSON), or bytes for a binary frame.
        limits: the server's limits on frame size and text length.

    Returns the message. Raises a ``ProtocolError`` subclass: BinaryNotSupported,
    MessageTooLarge, BadJSON, BadMessage (not an object, no or unknown ``type``, wrong fields),
    or what the message's ``from_wire`` raises (EmptyText, TextTooLong, BadAudio).
    """
    if isinstance(raw, bytes):
        raise BinaryNotSupported("send JSON text messages")
    size = len(raw)  # characters: a lower bound of the UTF-8 bytes (≤ 4 bytes each)
    if size > limits.max_message_bytes or (
            size * 4 > limits.max_message_bytes
            and (size := len(raw.encode("utf-8", "surrogatepass"))) > limits.max_message_bytes):
        raise MessageTooLarge(f"message is {size} bytes; the limit is "
                              f"{limits.max_message_bytes}")
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadJSON(f"not JSON: {exc.msg}") from exc
    except ValueError as exc:  # an integer beyond Python's int/str digit limit (4300)
        raise BadJSON(f"not usable JSON: {first_line(exc)[:120]}") from exc
    except RecursionError as exc:  # arrays or objects nested beyond the parser's recursion
        raise BadJSON("not usable JSON: nested too deeply") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise BadMessage("a message is a JSON object with a string 'type'")
    kind = CLIENT_MESSAGES.get(obj["type"])
    if kind is None:
        raise BadMessage(f"unknown message type {obj['type'][:40]!r}")
    return kind.from_wire(obj, limits)


# --- server → client --------------------------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    """Sent once when a session is accepted: its id, avatar, video ``fps``, audio
    ``sample_rate`` (Hz), and the disclosure: ``disclosure`` is the text a client shows
    beside the video (the frames' badge text), ``badge`` whether the frames carry the badge
    (``runtime.provenance.disclosure``)."""

    type: ClassVar[str] = "ready"
    session: str
    avatar: str
    fps: int | float
    sample_rate: int
    disclosure: str = "AI-generated"
    badge: bool = True


@dataclass(frozen=True)
class ControllerReady:
    """Sent once to a display's controller: the display ``control`` names, whether it is
    connected, and its current session id (None if not)."""

    type: ClassVar[str] = "ready"
    control: str
    display_connected: bool
    session: str | None


@dataclass(frozen=True)
class Answer:
    """The WebRTC answer to an ``Offer``."""

    type: ClassVar[str] = "answer"
    sdp: str
    sdp_type: str = "answer"


@dataclass(frozen=True)
class ErrorReply:
    """A refused request: ``code`` (a ``ProtocolError`` subclass's) and a readable message."""

    type: ClassVar[str] = "error"
    code: str
    message: str

    @classmethod
    def of(cls, exc: ProtocolError) -> ErrorReply:
        """The reply for ``exc``: its class's code, its text (at most ``MAX_ERROR_CHARS``
        characters: a message may quote what the client sent)."""
        text = str(exc)
        if len(text) > MAX_ERROR_CHARS:
            text = text[:MAX_ERROR_CHARS - 1] + "…"
        return cls(exc.code, text)


@dataclass(frozen=True)
class Pong:
    """The reply to ``Ping``."""

    type: ClassVar[str] = "pong"


@dataclass(frozen=True)
class DisplayChanged:
    """To a display's controllers: display ``display`` connected (a new ``session``) or went
    away (``connected`` False, ``session`` None)."""

    type: ClassVar[str] = "display"
    display: str
    connected: bool
    session: str | None


ServerMessage = (Ready | ControllerReady | Answer | ErrorReply | Pong | DisplayChanged
                 | SessionEvent)
"""Any server → client message (session events included)."""


def to_wire(message: ControlMessage | ServerMessage) -> dict[str, Any]:
    """The JSON object of a message: ``type`` first, then its fields in order; a field marked
    optional is left out when None, a local one (``runtime.live.events``) always; bytes become
    base64 text."""
    out: dict[str, Any] = {"type": message.type}
    for f in fields(message):
        value = getattr(message, f.name)
        if f.metadata.get("local") or (value is None and f.metadata.get("optional")):
            continue
        out[f.name] = base64.b64encode(value).decode() if isinstance(value, bytes) else value
    return out


def encode(message: ControlMessage | ServerMessage) -> str:
    """The JSON text of a message (``to_wire``)."""
    return json.dumps(to_wire(message))


# --- the connection URL -----------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectRequest:
    """What a ``/ws`` URL's query asks for.

    Attributes:
        avatar: the avatar to load (the server's default when absent or empty).
        display: this session is display NAME (``?display=NAME``), or None.
        control: this connection controls display NAME (``?control=NAME``; no media), or None.
    """

    avatar: str
    display: str | None = None
    control: str | None = None


def _check_name(value: str | None, what: str, error: type[ProtocolError] = BadMessage
                ) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_NAME_CHARS or not set(value) <= _NAME_CHARS:
        raise error(f"'{what}' must be a name: 1–{MAX_NAME_CHARS} letters, digits, '_' or '-'")
    return value


def parse_connect(path: str, default_avatar: str) -> ConnectRequest:
    """Parse the request path of a WebSocket connection (``/ws?avatar=A&display=NAME``).

    A client names avatars, never paths: an ``avatar`` that is not 1–64 letters, digits, '_'
    or '-' raises BadAvatar (paths are for the server's command line: ``default_avatar`` may be
    one). Raises BadMessage for a display or control name that is not such a name."""
    query = parse_qs(urlsplit(path).query)
    avatar = _check_name(query.get("avatar", [None])[0] or None, "avatar", BadAvatar)
    return ConnectRequest(avatar or default_avatar,
                          _check_name(query.get("display", [None])[0], "display"),
                          _check_name(query.get("control", [None])[0], "control"))
