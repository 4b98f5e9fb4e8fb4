"""Every framing mode through the Python API (sync and asyncio), with a Python ssl peer.

The peer writes wire bytes in awkward pieces (a header split across writes,
several packets in one write); the library must hand out whole packets.  The
library sends packets; the peer must read them with the mode's header.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from typing import Any, Dict, List, Tuple

import pytest
from conftest import recv_exactly, ssl_connect

import tlsport
from tlsport.aio import AsyncClient

CASES: Dict[str, Tuple[List[bytes], List[bytes], List[bytes], bytes]] = {}
"""mode -> (peer writes, packets the library must yield, packets the library sends, wire bytes the peer must read)"""


def _packet_case(n: int) -> None:
    fmt = {1: ">B", 2: ">H", 4: ">I"}[n]
    big = {1: 255, 2: 65535, 4: 300_000}[n]
    payloads = [b"first", b"", bytes(range(256))[:big] * (big // 256 or 1), b"x" * big, b"last"]
    payloads = [p[:big] for p in payloads]
    wire = b"".join(struct.pack(fmt, len(p)) + p for p in payloads)
    # header split byte by byte, then the rest in uneven pieces, last two packets in one write
    writes = [wire[:1], wire[1:2], wire[2:7], wire[7:1000], wire[1000:]]
    sends = [b"reply-1", b"", b"y" * big]
    out = b"".join(struct.pack(fmt, len(p)) + p for p in sends)
    for name in ("packet", "binary_packet"):
        CASES[f"{name}:{n}"] = (writes, payloads, sends, out)


for _n in (1, 2, 4):
    _packet_case(_n)

_long_value = bytes(range(256)) + b"z" * 44  # 300 bytes: long-form length 0x82 0x01 0x2c
_asn1 = [
    bytes.fromhex("040361 6263"),  # OCTET STRING "abc", definite short form
    bytes.fromhex("04 82012c") + _long_value,  # long-form length
    bytes.fromhex("1f8100 02 6869"),  # multi-byte tag (tag number 128)
    # indefinite length SEQUENCE holding an OCTET STRING and a nested indefinite SEQUENCE
    bytes.fromhex("3080 04026869 3080 020105 0000 0000"),
    bytes.fromhex("0500"),  # NULL
]
CASES["asn1"] = (
    [_asn1[0][:1], _asn1[0][1:] + _asn1[1][:3], _asn1[1][3:200], _asn1[1][200:] + _asn1[2] + _asn1[3][:5], _asn1[3][5:] + _asn1[4]],
    _asn1,
    [_asn1[3], _asn1[0]],
    _asn1[3] + _asn1[0],
)
_lines = [b"alpha\n", b"\n", b"b" * 5000 + b"\n", b"last line\r\n"]
CASES["line"] = (
    [b"al", b"pha\n\n" + _lines[2][:100], _lines[2][100:] + b"last ", b"line\r\n"],
    _lines,
    [b"out one\n", b"out two\n"],
    b"out one\nout two\n",
)
_raw = bytes(range(256)) * 300
CASES["raw"] = ([_raw[:10], _raw[10:70000], _raw[70000:]], [_raw], [b"raw out ", b"\x00\xff"], b"raw out \x00\xff")


def _peer(port: int, certs: Dict[str, str], writes: List[bytes], expect: bytes, result: Dict[str, Any]) -> None:
    try:
        conn = ssl_connect(port, certs)
        for w in writes:
            conn.sendall(w)
            time.sleep(0.02)
        result["got"] = recv_exactly(conn, len(expect)) if expect else b""
        conn.unwrap()
        conn.close()
    except BaseException as exc:
        result["error"] = exc


def _collect_ok(mode: str, got: List[bytes], expected: List[bytes]) -> bool:
    if mode == "raw":
        return b"".join(got) == expected[0]
    return got == expected


MODES = sorted(CASES)


@pytest.mark.parametrize("mode", MODES)
def test_mode_sync(mode: str, daemon_path: str, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    writes, packets, sends, out = CASES[mode]
    with tlsport.Client.spawn(daemon_path) as client:
        lst = client.listen(0, "127.0.0.1", tls=server_tls, mode=mode)
        result: Dict[str, Any] = {}
        t = threading.Thread(target=_peer, args=(lst.port, certs, writes, out, result))
        t.start()
        sock = lst.accept(timeout=5)
        assert sock.mode == mode
        got: List[bytes] = []
        while not _collect_ok(mode, got, packets):
            assert len(got) <= len(packets) * 100, got
            got.append(sock.recv(timeout=5))
        for p in sends:
            sock.send(p)
        t.join(10)
        assert "error" not in result, result.get("error")
        assert result["got"] == out
        assert sock.recv(timeout=5) == b"" and sock.closed  # the peer closed cleanly
        assert sock.close_reason is None


@pytest.mark.parametrize("mode", MODES)
def test_mode_async(mode: str, daemon_path: str, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    writes, packets, sends, out = CASES[mode]

    async def main() -> None:
        async with await AsyncClient.spawn(daemon_path) as client:
            lst = await client.listen(0, "127.0.0.1", tls=server_tls, mode=mode)
            result: Dict[str, Any] = {}
            t = threading.Thread(target=_peer, args=(lst.port, certs, writes, out, result))
            t.start()
            sock = await lst.accept(timeout=5)
            got: List[bytes] = []
            async for data in sock:
                got.append(data)
                if _collect_ok(mode, got, packets):
                    break
            assert _collect_ok(mode, got, packets)
            for p in sends:
                await sock.send(p)
            await asyncio.get_running_loop().run_in_executor(None, t.join, 10)
            assert "error" not in result, result.get("error")
            assert result["got"] == out
            assert await sock.recv(timeout=5) == b""

    asyncio.run(asyncio.wait_for(main(), 12))


@pytest.mark.parametrize("depth", [64, 65])
def test_asn1_indefinite_nesting_cap(depth: int, client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False, mode="asn1")
    peer = client.connect("127.0.0.1", lst.port, tls=False, mode="raw", timeout=5)
    sock = lst.accept(timeout=5)
    message = bytes.fromhex("3080") * depth + bytes.fromhex("0000") * depth
    peer.send(message + bytes.fromhex("0500"))
    if depth <= 64:
        assert sock.recv(timeout=5) == message
        assert sock.recv(timeout=5) == bytes.fromhex("0500")
    else:
        with pytest.raises(tlsport.TlsportError) as info:
            sock.recv(timeout=5)
        assert info.value.kind != "timeout"
        assert sock.closed


def test_asn1_eof_inside_indefinite_is_reported(client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False, mode="asn1")
    peer = client.connect("127.0.0.1", lst.port, tls=False, mode="raw", timeout=5)
    sock = lst.accept(timeout=5)
    peer.send(bytes.fromhex("3080 0402 6869"))  # indefinite length, then EOF inside it
    peer.close()
    with pytest.raises(tlsport.SocketClosed) as info:
        sock.recv(timeout=5)
    assert info.value.kind == "closed"


@pytest.mark.parametrize("alias, canonical", [("onebyte", "packet:1"), ("twobytes", "packet:2"), ("fourbytes", "packet:4"), (("packet", 2), "packet:2"), ("{binary_packet,4}", "binary_packet:4"), ("packet:0", "raw")])
def test_mode_aliases(alias: Any, canonical: str, client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False, mode=alias)
    assert lst.mode == canonical
    a = client.connect("127.0.0.1", lst.port, tls=False, mode=alias, timeout=5)
    b = lst.accept(timeout=5)
    a.send(b"same framing")
    got = b""
    while len(got) < 12:
        got += b.recv(timeout=5)
    assert got == b"same framing"


def test_connect_side_packet_mode(client: tlsport.Client, peer_server: Any, client_tls: Dict[str, Any]) -> None:
    def handler(conn: Any) -> None:
        (n,) = struct.unpack(">H", recv_exactly(conn, 2))
        body = recv_exactly(conn, n)
        conn.sendall(struct.pack(">H", len(body) * 2) + body * 2)
        conn.unwrap()

    srv = peer_server(handler)
    sock = client.connect("localhost", srv.port, tls=client_tls, mode="packet:2", timeout=5)
    sock.send(b"abc")
    assert sock.recv(timeout=5) == b"abcabc"
    assert sock.recv(timeout=5) == b""
