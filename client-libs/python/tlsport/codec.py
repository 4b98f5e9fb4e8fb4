"""Sans-io codec for the tlsportd control protocol (binary encoding, JSON terms).

This module does no I/O at all: it turns bytes into messages and messages into
bytes, in the style of `h11 <https://h11.readthedocs.io/>`_.  Both the
synchronous and the asyncio clients use it, and you can use it to drive the
daemon from any event loop or from a test.

Wire format (``docs/protocol.md`` §1.1): every message is a frame made of a
big-endian length header (4 bytes by default) and a body whose first byte is
the frame type:

* ``0x00`` CONTROL: UTF-8 JSON text (a command, a reply or an event);
* ``0x01`` DATA: a 4-byte big-endian socket id, then raw bytes (``deliver``
  from the client, the ``fromsocket`` event from the daemon).

Decoding::

    decoder = Decoder()
    decoder.receive_data(chunk_read_from_the_daemon)
    for message in decoder:          # or: while (m := decoder.next_event()) is not NEED_DATA
        if isinstance(message, Data): ...     # fromsocket: message.socket_id, message.data
        elif isinstance(message, Reply): ...  # message.ref, message.ok, message.body, message.error
        elif isinstance(message, Event): ...  # message.name, message.socket_id, message.body

    decoder.receive_data(b"")        # end of input; next_event() then returns CLOSED

Encoding::

    encode_command({"op": "hello", "ref": 1})   # -> b'\\x00\\x00\\x00\\x17\\x00{"op":"hello","ref":1}'
    encode_deliver(5, b"hi")                    # -> b'\\x00\\x00\\x00\\x07\\x01\\x00\\x00\\x00\\x05hi'
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Mapping, Optional, Union

__all__ = [
    "CONTROL",
    "DATA",
    "DEFAULT_MAX_MESSAGE",
    "NEED_DATA",
    "CLOSED",
    "Reply",
    "Event",
    "Data",
    "Message",
    "Decoder",
    "CodecError",
    "encode_command",
    "encode_deliver",
    "max_data_per_frame",
]

CONTROL = 0x00
"""Frame type of a CONTROL frame (JSON term)."""
DATA = 0x01
"""Frame type of a DATA frame (socket id + raw bytes)."""

DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024 + 64 * 1024
"""The daemon's default ``--max-message``: the largest frame body accepted."""

_HEADER_FORMATS = {1: ">B", 2: ">H", 4: ">I"}


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Any = _Sentinel("NEED_DATA")
"""Returned by :meth:`Decoder.next_event` when more bytes are needed."""
CLOSED: Any = _Sentinel("CLOSED")
"""Returned by :meth:`Decoder.next_event` once end of input was received and every
complete frame has been returned."""


class CodecError(ValueError):
    """The byte stream (or a message to encode) violates the protocol."""


@dataclass(frozen=True)
class Reply:
    """A reply to a command: ``{"ref":R,"ok":true,...}`` or ``{"ok":false,"error":{...}}``.

    ``ref`` is ``None`` for replies the daemon sends without one (errors about a
    malformed frame, errors about a ``deliver`` that had no ref).
    """

    ref: Any
    ok: bool
    body: Dict[str, Any] = field(repr=False)

    @property
    def error_kind(self) -> Optional[str]:
        """The error kind (``"closed"``, ``"not_owner"`` ...) of a failed reply, else ``None``."""
        if self.ok:
            return None
        err = self.body.get("error")
        if isinstance(err, dict):
            return str(err.get("kind", "unknown"))
        return "unknown"

    @property
    def error_message(self) -> str:
        """The error message of a failed reply (empty when there is none)."""
        err = self.body.get("error")
        if isinstance(err, dict):
            return str(err.get("message", ""))
        return ""


@dataclass(frozen=True)
class Event:
    """An event other than ``fromsocket``: ``socket_closed``, ``owned``, ``passive`` ..."""

    name: str
    socket_id: Optional[int]
    body: Dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Data:
    """A ``fromsocket`` event: raw bytes received from the peer of socket ``socket_id``."""

    socket_id: int
    data: bytes


Message = Union[Reply, Event, Data]
"""What :meth:`Decoder.next_event` returns (besides :data:`NEED_DATA` / :data:`CLOSED`)."""


def _check_header_size(header_size: int) -> None:
    if header_size not in _HEADER_FORMATS:
        raise ValueError(f"header_size must be 1, 2 or 4, not {header_size!r}")


def max_data_per_frame(header_size: int = 4, max_message: int = DEFAULT_MAX_MESSAGE) -> int:
    """The most raw bytes one DATA frame can carry with this header size and cap."""
    _check_header_size(header_size)
    limit = (1 << (8 * header_size)) - 1
    return min(limit, max_message) - 5


def _frame(body: bytes, header_size: int, max_message: int) -> bytes:
    n = len(body)
    if n > max_message or n >= (1 << (8 * header_size)):
        raise CodecError(
            f"message of {n} bytes is too large for a frame "
            f"(header {header_size} bytes, cap {max_message} bytes)"
        )
    return struct.pack(_HEADER_FORMATS[header_size], n) + body


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        # In JSON term format a ``data`` field is base64 (protocol §1.1).
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__} in a tlsport command")


def encode_command(
    command: Mapping[str, Any],
    *,
    header_size: int = 4,
    max_message: int = DEFAULT_MAX_MESSAGE,
) -> bytes:
    """Encode one command as a CONTROL frame.

    ``command`` must be a mapping with a string ``"op"``.  ``bytes`` values (a
    ``data`` field) are written as base64, as the protocol requires in JSON.

    Raises :class:`TypeError` for a non-mapping or an unencodable value and
    :class:`CodecError` (a :class:`ValueError`) for a missing ``op`` or a frame
    over the cap.
    """
    _check_header_size(header_size)
    if not isinstance(command, Mapping):
        raise TypeError(f"a command must be a mapping, not {type(command).__name__}")
    op = command.get("op")
    if not isinstance(op, str) or not op:
        raise CodecError("a command needs a non-empty string 'op'")
    text = json.dumps(
        dict(command), separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    )
    return _frame(b"\x00" + text.encode("utf-8"), header_size, max_message)


def encode_deliver(
    socket_id: int,
    data: Union[bytes, bytearray, memoryview],
    *,
    header_size: int = 4,
    max_message: int = DEFAULT_MAX_MESSAGE,
) -> bytes:
    """Encode a ``deliver`` of raw ``data`` to ``socket_id`` as a DATA frame (no reply)."""
    _check_header_size(header_size)
    if isinstance(socket_id, bool) or not isinstance(socket_id, int):
        raise TypeError(f"socket id must be an int, not {type(socket_id).__name__}")
    if not 0 < socket_id < (1 << 32):
        raise ValueError(f"socket id out of range: {socket_id}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
    body = b"\x01" + struct.pack(">I", socket_id) + bytes(data)
    return _frame(body, header_size, max_message)


def _classify(obj: Dict[str, Any]) -> Message:
    if "event" in obj:
        name = obj["event"]
        sid = obj.get("id")
        if isinstance(sid, bool) or not isinstance(sid, int):
            sid = None
        if name == "fromsocket" and sid is not None:
            # Only the lines encoding sends this as JSON; accept it anyway.
            if "data" in obj:
                try:
                    payload = base64.b64decode(obj["data"], validate=True)
                except (ValueError, TypeError) as exc:
                    raise CodecError(f"fromsocket with bad base64: {exc}") from None
            else:
                payload = str(obj.get("text", "")).encode("utf-8")
            return Data(sid, payload)
        return Event(str(name), sid, obj)
    if "ok" in obj:
        return Reply(obj.get("ref"), obj.get("ok") is True, obj)
    raise CodecError(f"message is neither a reply nor an event: {obj!r:.200}")


class Decoder:
    """Incremental decoder of the daemon's output.

    Feed bytes with :meth:`receive_data` (``b""`` means end of input) and pull
    messages with :meth:`next_event` or by iterating.  A malformed stream
    raises :class:`CodecError`; the decoder should then be discarded.
    """

    def __init__(self, header_size: int = 4, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        _check_header_size(header_size)
        self._header_size = header_size
        self._header = struct.Struct(_HEADER_FORMATS[header_size])
        self._max_message = max_message
        self._buf = bytearray()
        self._pos = 0
        self._eof = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages."""
        return len(self._buf) - self._pos

    @property
    def eof(self) -> bool:
        """Whether end of input was signalled."""
        return self._eof

    def receive_data(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """Add bytes read from the daemon; an empty ``data`` signals end of input."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise CodecError("data received after end of input")
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> Any:
        """Return the next :data:`Message`, :data:`NEED_DATA`, or :data:`CLOSED`.

        Raises :class:`CodecError` on a malformed frame, and at end of input
        when a frame was cut short.
        """
        buf, pos, hs = self._buf, self._pos, self._header_size
        avail = len(buf) - pos
        if avail < hs:
            return self._at_end(avail)
        (length,) = self._header.unpack_from(buf, pos)
        if length > self._max_message:
            raise CodecError(f"frame of {length} bytes exceeds the cap of {self._max_message}")
        if length == 0:
            raise CodecError("empty frame")
        if avail < hs + length:
            return self._at_end(avail)
        start = pos + hs
        end = start + length
        self._pos = end
        kind = buf[start]
        if kind == DATA:
            if length < 5:
                raise CodecError("DATA frame shorter than its socket id")
            (sid,) = struct.unpack_from(">I", buf, start + 1)
            with memoryview(buf) as view:  # one copy, not two
                payload = bytes(view[start + 5 : end])
            return Data(sid, payload)
        if kind == CONTROL:
            text = bytes(buf[start + 1 : end])
            if text[:1] != b"{":
                raise CodecError(
                    "CONTROL frame is not JSON (is the daemon writing ETF? send JSON first)"
                )
            try:
                obj = json.loads(text.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise CodecError(f"bad JSON in CONTROL frame: {exc}") from None
            if not isinstance(obj, dict):
                raise CodecError("CONTROL frame is not a JSON object")
            return _classify(obj)
        raise CodecError(f"unknown frame type 0x{kind:02x}")

    def _at_end(self, avail: int) -> Any:
        if not self._eof:
            return NEED_DATA
        if avail:
            raise CodecError(f"end of input inside a frame ({avail} bytes left over)")
        return CLOSED

    def __iter__(self) -> Iterator[Message]:
        """Yield every complete message buffered so far (stops at NEED_DATA / CLOSED)."""
        while True:
            msg = self.next_event()
            if msg is NEED_DATA or msg is CLOSED:
                return
            yield msg
