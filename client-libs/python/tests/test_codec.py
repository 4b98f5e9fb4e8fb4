"""The sans-io codec, against the byte-level examples of docs/protocol.md §6.2."""

from __future__ import annotations

import struct

import pytest

from tlsport import errors
from tlsport.codec import (
    CLOSED,
    NEED_DATA,
    CodecError,
    Data,
    Decoder,
    Event,
    Reply,
    encode_command,
    encode_deliver,
    max_data_per_frame,
)


def frame(body: bytes, header: int = 4) -> bytes:
    fmt = {1: ">B", 2: ">H", 4: ">I"}[header]
    return struct.pack(fmt, len(body)) + body


def test_encode_hello_matches_spec_bytes() -> None:
    expected = bytes.fromhex("00000017 00") + b'{"op":"hello","ref":1}'
    assert encode_command({"op": "hello", "ref": 1}) == expected


def test_encode_deliver_matches_spec_bytes() -> None:
    assert encode_deliver(5, b"hi") == bytes.fromhex("00000007 01 00000005 6869")


def test_decode_fromsocket_spec_bytes() -> None:
    d = Decoder()
    d.receive_data(bytes.fromhex("00000007 01 00000005 6f6b"))
    assert d.next_event() == Data(5, b"ok")
    assert d.next_event() is NEED_DATA


def test_decode_byte_by_byte_and_many_frames() -> None:
    stream = (
        frame(b'\x00{"ref":1,"ok":true,"client":3}')
        + frame(b"\x01\x00\x00\x00\x09" + bytes(range(256)))
        + frame(b'\x00{"event":"socket_closed","id":9,"reason":"normal"}')
        + frame(b'\x00{"ok":false,"error":{"kind":"emsgsize","message":"m"}}')
    )
    d = Decoder()
    got = []
    for b in stream:
        d.receive_data(bytes([b]))
        got.extend(d)
    assert len(got) == 4
    r, data, ev, err = got
    assert isinstance(r, Reply) and r.ref == 1 and r.ok and r.body["client"] == 3
    assert data == Data(9, bytes(range(256)))
    assert isinstance(ev, Event) and ev.name == "socket_closed" and ev.socket_id == 9
    assert isinstance(err, Reply) and err.ref is None and not err.ok
    assert err.error_kind == "emsgsize" and err.error_message == "m"
    d.receive_data(b"")
    assert d.next_event() is CLOSED


def test_one_chunk_many_frames() -> None:
    d = Decoder()
    d.receive_data(b"".join(encode_deliver(i, b"x" * i) for i in range(1, 50)))
    got = list(d)
    assert [m.socket_id for m in got] == list(range(1, 50))
    assert d.buffered == 0


def test_header_sizes() -> None:
    for h in (1, 2, 4):
        data = encode_deliver(7, b"abc", header_size=h)
        assert len(data) == h + 5 + 3
        d = Decoder(header_size=h)
        d.receive_data(data)
        assert d.next_event() == Data(7, b"abc")
    assert max_data_per_frame(1) == 250
    assert max_data_per_frame(2) == 65530
    with pytest.raises(CodecError):
        encode_deliver(7, b"x" * 251, header_size=1)


def test_eof_inside_frame_is_an_error() -> None:
    d = Decoder()
    d.receive_data(encode_command({"op": "hello"})[:-3])
    assert d.next_event() is NEED_DATA
    d.receive_data(b"")
    with pytest.raises(CodecError, match="inside a frame"):
        d.next_event()


@pytest.mark.parametrize(
    "raw, match",
    [
        (frame(b"\x07abc"), "unknown frame type"),
        (frame(b"\x00not json"), "not JSON"),
        (frame(b"\x00{bad json"), "bad JSON"),
        (frame(b"\x01\x00\x00"), "shorter"),
        (b"\x00\x00\x00\x00", "empty frame"),
        (b"\x7f\xff\xff\xff", "exceeds the cap"),
        (frame(b'\x00{"neither":1}'), "neither"),
    ],
)
def test_malformed(raw: bytes, match: str) -> None:
    d = Decoder()
    d.receive_data(raw)
    with pytest.raises(CodecError, match=match):
        d.next_event()


def test_json_fromsocket_is_decoded_as_data() -> None:
    d = Decoder()
    d.receive_data(frame(b'\x00{"event":"fromsocket","id":4,"data":"aGk="}'))
    assert d.next_event() == Data(4, b"hi")


def test_encode_command_bytes_become_base64() -> None:
    out = encode_command({"op": "deliver", "id": 1, "ref": 2, "data": b"\x00\xff"})
    assert out[5:] == b'{"op":"deliver","id":1,"ref":2,"data":"AP8="}'


def test_encode_command_utf8() -> None:
    out = encode_command({"op": "hello", "name": "wörker"})
    assert "wörker".encode() in out


@pytest.mark.parametrize(
    "cmd, exc",
    [
        ([("op", "x")], TypeError),
        ({"ref": 1}, ValueError),
        ({"op": ""}, ValueError),
        ({"op": "x", "v": object()}, TypeError),
        ({"op": "x", "v": float("nan")}, ValueError),
    ],
)
def test_encode_command_rejects(cmd: object, exc: type) -> None:
    with pytest.raises(exc):
        encode_command(cmd)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "sid, data, exc",
    [(0, b"", ValueError), (2**32, b"", ValueError), ("1", b"", TypeError), (True, b"", TypeError), (1, "str", TypeError)],
)
def test_encode_deliver_rejects(sid: object, data: object, exc: type) -> None:
    with pytest.raises(exc):
        encode_deliver(sid, data)  # type: ignore[arg-type]


def test_error_classes() -> None:
    e = errors.error_from_kind("timeout", "slow")
    assert isinstance(e, errors.Timeout) and isinstance(e, TimeoutError)
    assert e.kind == "timeout" and e.message == "slow" and str(e) == "timeout: slow"
    assert isinstance(errors.error_from_kind("econnrefused", "x"), errors.NetworkError)
    assert isinstance(errors.error_from_kind("not_owner"), errors.NotOwner)
    assert isinstance(errors.error_from_kind("not_owner"), errors.OwnershipError)
    assert isinstance(errors.error_from_kind("bad_tls_config"), errors.TlsError)
    assert type(errors.error_from_kind("strange")) is errors.TlsportError
    assert isinstance(errors.DaemonNotFound("x"), FileNotFoundError)
    r = errors.error_from_reply({"ok": False, "error": {"kind": "closed", "message": "m"}})
    assert isinstance(r, errors.SocketClosed) and r.message == "m"
