"""Every framing mode end to end over real TLS, both ends on one daemon and
against Python's ssl as the peer."""

import socket
import ssl
import struct
import threading

import pytest

from conftest import client_tls, tls_listen


def pair(client, pki, mode, **extra):
    """A TLS connection between a listener and a connect on the same daemon."""
    lst = tls_listen(client, pki, mode=mode, **extra)
    aref = client.send({"op": "accept", "id": lst["id"]})
    c = client.call({"op": "connect", "host": "127.0.0.1", "port": lst["port"], "mode": mode,
                     "tls": client_tls(pki), **extra})
    assert c["ok"], c
    a = client.reply(aref)
    assert a["ok"], a
    return c["id"], a["id"], lst["port"]


PACKETS = [b"", b"x", b"hello", bytes(range(256)) * 3, b"\x00" * 70000]


@pytest.mark.parametrize("mode,header", [("packet:1", 1), ("onebyte", 1), ("packet:2", 2),
                                         ("twobytes", 2), ("packet:4", 4), ("fourbytes", 4),
                                         ("binary_packet:2", 2), ("{packet,4}", 4)])
def test_packet_modes_keep_boundaries(client, pki, mode, header):
    c, a, _ = pair(client, pki, mode)
    fits = [p for p in PACKETS if len(p) < (1 << (8 * header))]
    for p in fits:
        client.deliver(c, p)
    assert client.packets(a, len(fits)) == fits


def test_packet_too_long_for_header_is_an_error_never_truncated(client, pki):
    c, a, _ = pair(client, pki, "packet:1")
    r = client.call({"op": "deliver", "ref": "d1", "id": c, "data": b"y" * 256})
    assert r["ok"] is False and r["error"]["kind"] == "emsgsize"
    client.deliver(c, b"after")
    assert client.packets(a, 1) == [b"after"]


def ber(tag: bytes, content: bytes) -> bytes:
    n = len(content)
    if n < 128:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return tag + length + content


def test_asn1_definite_indefinite_and_multibyte_tags(client, pki):
    c, a, _ = pair(client, pki, "asn1")
    msgs = [
        ber(b"\x02", b"\x05"),                                   # INTEGER 5
        ber(b"\x30", ber(b"\x04", b"a" * 300)),                  # long-form length
        ber(b"\x9f\x81\x00", b"hi"),                             # tag number 128
        b"\x30\x80" + ber(b"\x04", b"in") + b"\x24\x80" + ber(b"\x04", b"deep") + b"\x00\x00" + b"\x00\x00",
        ber(b"\x04", b"z" * 70000),
    ]
    for m in msgs:
        client.deliver(c, m)
    assert client.packets(a, len(msgs)) == msgs


def test_asn1_from_python_peer_split_in_pieces(client, pki):
    lst = tls_listen(client, pki, mode="asn1")
    aref = client.send({"op": "accept", "id": lst["id"]})
    msg = b"\x30\x80" + ber(b"\x04", b"q" * 1000) + b"\x00\x00"
    ctx = ssl.create_default_context(cafile=pki.ca)
    raw = socket.create_connection(("127.0.0.1", lst["port"]))
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    a = client.reply(aref)
    for i in range(0, len(msg), 7):   # one TLS record per 7 bytes
        s.sendall(msg[i:i + 7])
    assert client.packets(a["id"], 1) == [msg]
    s.close()


def test_line_mode(client, pki):
    c, a, _ = pair(client, pki, "line")
    client.deliver(c, b"first\nsecond\nthi")
    client.deliver(c, b"rd\n")
    assert client.packets(a, 3) == [b"first\n", b"second\n", b"third\n"]


def test_raw_mode_delivers_bytes_in_order(client, pki):
    c, a, _ = pair(client, pki, "raw")
    payload = bytes(i % 251 for i in range(300000))
    for i in range(0, len(payload), 10000):
        client.deliver(c, payload[i:i + 10000])
    assert client.read_data(a, len(payload)) == payload


def test_packet_size_cap_closes_with_emsgsize(client, pki):
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "mode": "packet:4",
                     "packet_size": 1000,
                     "tls": {"certfile": pki.server_cert, "keyfile": pki.server_key}})
    aref = client.send({"op": "accept", "id": lst["id"]})
    ctx = ssl.create_default_context(cafile=pki.ca)
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", lst["port"])),
                        server_hostname="localhost")
    a = client.reply(aref)["id"]
    s.sendall(struct.pack(">I", 1000) + b"k" * 1000)
    assert client.packets(a, 1) == [b"k" * 1000]
    s.sendall(struct.pack(">I", 1001))  # one byte over the listener's cap
    ev = client.closed_event(a)
    assert ev["reason"]["kind"] == "emsgsize"
    s.close()


def test_peer_closing_inside_a_packet_is_not_normal(client, pki):
    lst = tls_listen(client, pki, mode="packet:2")
    aref = client.send({"op": "accept", "id": lst["id"]})
    ctx = ssl.create_default_context(cafile=pki.ca)
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", lst["port"])),
                        server_hostname="localhost")
    a = client.reply(aref)["id"]
    s.sendall(b"\x00\x10abc")
    s.unwrap()
    s.close()
    ev = client.closed_event(a)
    assert ev["reason"] != "normal" and ev["reason"]["kind"] == "closed"


def test_bad_mode_is_refused(client, pki):
    r = client.call({"op": "listen", "host": "127.0.0.1", "port": 0, "mode": "packet:3",
                     "tls": False})
    assert r["ok"] is False and r["error"]["kind"] == "bad_request" and "packet:3" in r["error"]["message"]


def test_active_once_and_recv(client, pki):
    c, a, _ = pair(client, pki, "packet:2")
    client.ok({"op": "setopts", "id": a, "active": False})
    for p in (b"one", b"two", b"three"):
        client.deliver(c, p)
    r = client.ok({"op": "recv", "id": a, "timeout_ms": 3000})
    assert r["data"] == b"one"
    client.ok({"op": "setopts", "id": a, "active": "once"})
    assert client.packets(a, 1) == [b"two"]
    with pytest.raises(AssertionError):
        client.event(timeout=0.3)
    client.ok({"op": "setopts", "id": a, "active": 1})
    assert client.packets(a, 1) == [b"three"]
    assert client.event() == {"event": "passive", "id": a}
    r = client.call({"op": "recv", "id": a, "timeout_ms": 200})
    assert r["ok"] is False and r["error"]["kind"] == "timeout"
