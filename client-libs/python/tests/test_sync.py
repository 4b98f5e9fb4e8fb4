"""The synchronous API against real TLS peers (Python ssl, openssl s_server/s_client)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional

import pytest
from conftest import echo_handler, recv_exactly, recv_until_eof, ssl_connect

import tlsport

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def test_hello_info(client: tlsport.Client) -> None:
    assert client.number is not None and client.number >= 1
    assert client.protocol == 1
    assert "binary" in client.capabilities and "json" in client.capabilities
    assert client.pid is not None


def test_connect_to_python_ssl_server(client: tlsport.Client, peer_server: Any, client_tls: Dict[str, Any]) -> None:
    srv = peer_server(echo_handler)
    sock = client.connect("localhost", srv.port, tls=client_tls, timeout=10)
    assert sock.peer == ("127.0.0.1", srv.port) or sock.peer[1] == srv.port
    info = sock.info(timeout=5)
    assert info["protocol"] in ("TLSv1.2", "TLSv1.3")
    assert info["verify_result"]["code"] == 0
    sock.send(b"hello ")
    sock.send(bytearray(b"tls"))
    sock.send(memoryview(b" world"))
    got = b""
    while len(got) < 15:
        got += sock.recv(timeout=5)
    assert got == b"hello tls world"
    assert sock.peername(timeout=5)[1] == srv.port
    assert sock.sockname(timeout=5)[0] == "127.0.0.1"
    sock.close(timeout=5)
    assert sock.closed
    sock.close()  # idempotent
    with pytest.raises(tlsport.SocketClosed):
        sock.send(b"x")


def test_big_payload_roundtrip(client: tlsport.Client, peer_server: Any, client_tls: Dict[str, Any]) -> None:
    srv = peer_server(echo_handler)
    sock = client.connect("127.0.0.1", srv.port, tls={**client_tls, "verify_hostname": "localhost"}, timeout=10)
    payload = bytes(range(256)) * 8192  # 2 MiB, split by the library, raw bytes on the wire
    result = bytearray()

    def reader() -> None:
        for chunk in sock:
            result.extend(chunk)
            if len(result) >= len(payload):
                break

    t = threading.Thread(target=reader)
    t.start()
    sock.send(payload)
    t.join(10)
    assert bytes(result) == payload
    sock.close()


def test_python_ssl_client_to_listener_with_client_cert(client: tlsport.Client, certs: Dict[str, str]) -> None:
    tls = {"certfile": certs["server_cert"], "keyfile": certs["server_key"], "cacertfile": certs["ca"], "verify": 2}
    lst = client.listen(0, "127.0.0.1", tls=tls, mode="raw")
    assert lst.port and lst.sockname(timeout=5) == ("127.0.0.1", lst.port)

    # A client without a certificate is dropped; the accept keeps waiting.
    def bad() -> None:
        try:
            c = ssl_connect(lst.port, certs)
            c.recv(1)
        except (ssl.SSLError, OSError):
            pass

    t = threading.Thread(target=bad)
    t.start()
    with pytest.raises(tlsport.Timeout):
        lst.accept(timeout=0.5)
    t.join(5)

    conn = ssl_connect(lst.port, certs, client_cert=True)
    sock = lst.accept(timeout=5)
    info = sock.info(timeout=5)
    assert "tlsport test client" in str(info["peer_certificate"])
    conn.sendall(b"ping")
    assert sock.recv(timeout=5) == b"ping"
    sock.send(b"pong")
    assert recv_exactly(conn, 4) == b"pong"
    conn.unwrap()
    conn.close()
    assert list(sock) == []
    assert sock.closed and sock.close_reason is None
    lst.close()


def test_tls_verification_failures(client: tlsport.Client, peer_server: Any, certs: Dict[str, str]) -> None:
    srv = peer_server(echo_handler)
    with pytest.raises(tlsport.TlsError) as info:  # unknown CA: system store only
        client.connect("localhost", srv.port, tls={}, timeout=10)
    assert info.value.kind == "tls"
    with pytest.raises(tlsport.TlsError):  # wrong host name
        client.connect("127.0.0.1", srv.port, tls={"cacertfile": certs["ca"], "verify_hostname": "example.org"}, timeout=10)
    # verify 1: an unknown issuer is tolerated
    sock = client.connect("localhost", srv.port, tls={"cacertfile": certs["other_ca"], "verify": 1}, timeout=10)
    sock.close()
    with pytest.raises(tlsport.TlsError) as info:
        client.connect("localhost", srv.port, tls={"min_version": "tlsv1.1"}, timeout=10)
    assert info.value.kind == "unsupported_protocol"
    with pytest.raises(tlsport.TlsError) as info:
        client.listen(0, "127.0.0.1", tls={"certfile": "/nonexistent.pem"})
    assert info.value.kind == "bad_tls_config"


def test_connection_refused(client: tlsport.Client) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(tlsport.NetworkError) as info:
        client.connect("127.0.0.1", port, tls=False, timeout=5)
    assert info.value.kind == "econnrefused"
    with pytest.raises(tlsport.NetworkError) as info:
        client.listen(port, "203.0.113.7", tls=False)  # not a local address
    assert info.value.kind.startswith("e")


def test_plain_tcp_and_same_daemon_pair(client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False, mode="packet:4")
    a = client.connect("127.0.0.1", lst.port, tls=False, mode="packet:4", timeout=5)
    b = lst.accept(timeout=5)
    for i in range(200):
        a.send(b"%d" % i)
    assert [b.recv(timeout=5) for _ in range(200)] == [b"%d" % i for i in range(200)]
    a.close()
    assert b.recv(timeout=5) == b""
    assert b.closed


def test_callbacks(client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False, mode="line")
    a = client.connect("127.0.0.1", lst.port, tls=False, mode="line", timeout=5)
    b = lst.accept(timeout=5)
    a.send(b"before callback\n")
    deadline = time.monotonic() + 5
    while b.buffered_bytes == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    got: List[bytes] = []
    closed: List[Optional[tlsport.TlsportError]] = []
    done = threading.Event()

    @b.on_data
    def on_data(data: bytes) -> None:
        got.append(data)
        b.send(b"echo " + data)  # sending from a callback is allowed
        with pytest.raises(RuntimeError):
            b.peername()  # waiting for a reply is not

    @b.on_close
    def on_close(reason: Optional[tlsport.TlsportError]) -> None:
        closed.append(reason)
        done.set()

    with pytest.raises(RuntimeError):
        b.recv(timeout=0.1)
    a.send(b"one\n")
    a.send(b"two\n")
    assert a.recv(timeout=5) == b"echo before callback\n"
    assert a.recv(timeout=5) == b"echo one\n"
    assert a.recv(timeout=5) == b"echo two\n"
    a.close()
    assert done.wait(5)
    assert got == [b"before callback\n", b"one\n", b"two\n"]
    assert closed == [None]


def test_passive_recv_once_and_n(client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False, mode="packet:2")
    a = client.connect("127.0.0.1", lst.port, tls=False, mode="packet:2", timeout=5)
    b = lst.accept(timeout=5)
    b.setopts(active=False, timeout=5)
    assert b.active is False
    with pytest.raises(tlsport.Timeout):
        b.recv(timeout=0.2)
    for i in range(5):
        a.send(b"p%d" % i)
    assert [b.recv(timeout=5) for _ in range(5)] == [b"p0", b"p1", b"p2", b"p3", b"p4"]

    passives = threading.Event()
    b.on_passive(passives.set)
    b.setopts(active=2, timeout=5)
    for i in range(4):
        a.send(b"n%d" % i)
    assert b.recv(timeout=5) == b"n0"
    assert b.recv(timeout=5) == b"n1"
    assert passives.wait(5)
    with pytest.raises(tlsport.Timeout):
        b.recv(timeout=0.2)  # the count ran out: nothing more is read
    b.setopts(active="once", timeout=5)
    assert b.recv(timeout=5) == b"n2"
    b.setopts(active=True, timeout=5)
    assert b.recv(timeout=5) == b"n3"


def test_packet_size_at_listen(client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False, mode="packet:2", packet_size=4)
    a = client.connect("127.0.0.1", lst.port, tls=False, mode="packet:2", timeout=5)
    b = lst.accept(timeout=5)
    a.send(b"four")
    assert b.recv(timeout=5) == b"four"
    a.send(b"toolong")
    with pytest.raises(tlsport.NetworkError) as info:
        b.recv(timeout=5)
    assert info.value.kind == "emsgsize"
    assert b.closed and b.close_reason is info.value


def test_packet_size_by_setopts(client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False, mode="packet:2")
    a = client.connect("127.0.0.1", lst.port, tls=False, mode="packet:2", timeout=5)
    b = lst.accept(timeout=5)
    b.setopts(packet_size=4, timeout=5)
    a.send(b"toolong")
    with pytest.raises(tlsport.NetworkError) as info:
        b.recv(timeout=2)
    assert info.value.kind == "emsgsize"


def test_passive_recv_sees_close(client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False)
    a = client.connect("127.0.0.1", lst.port, tls=False, timeout=5)
    b = lst.accept(timeout=5)
    b.setopts(active=False)
    a.send(b"last")
    a.close()
    assert b.recv(timeout=5) == b"last"
    assert b.recv(timeout=5) == b""


def test_resolve(client: tlsport.Client) -> None:
    assert client.resolve(timeout=5)
    assert client.resolve("127.0.0.1", timeout=5)


def test_accept_cancel_and_listener_close(client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False)
    with pytest.raises(tlsport.Timeout):
        lst.accept(timeout=0.1)
    errors: List[BaseException] = []

    def waiter() -> None:
        try:
            lst.accept(timeout=5)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    lst.close(timeout=5)
    t.join(5)
    assert len(errors) == 1 and isinstance(errors[0], tlsport.SocketClosed)
    with pytest.raises(tlsport.SocketClosed):
        lst.accept(timeout=1)


def test_listener_iteration(client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False)
    accepted: List[tlsport.Socket] = []

    def acceptor() -> None:
        for s in lst:
            accepted.append(s)

    t = threading.Thread(target=acceptor)
    t.start()
    conns = [socket.create_connection(("127.0.0.1", lst.port), timeout=5) for _ in range(3)]
    deadline = time.monotonic() + 5
    while len(accepted) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    lst.close()
    t.join(5)
    assert len(accepted) == 3
    for c in conns:
        c.close()


def test_openssl_s_server(client: tlsport.Client, certs: Dict[str, str]) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", certs["server_cert"],
         "-key", certs["server_key"], "-rev", "-quiet", "-naccept", "1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        sock = None
        deadline = time.monotonic() + 5
        while sock is None:
            try:
                sock = client.connect("localhost", port, tls={"cacertfile": certs["ca"]}, mode="line", timeout=5)
            except tlsport.NetworkError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        sock.send(b"tlsport\n")  # -rev: the server answers every line reversed
        assert sock.recv(timeout=5) == b"tropslt\n"
        sock.close()
    finally:
        proc.kill()
        proc.wait()


def test_openssl_s_client(client: tlsport.Client, server_tls: Dict[str, Any], certs: Dict[str, str]) -> None:
    lst = client.listen(0, "127.0.0.1", tls=server_tls, mode="line")
    proc = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{lst.port}", "-CAfile", certs["ca"],
         "-verify_return_error", "-verify_hostname", "localhost", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        sock = lst.accept(timeout=5)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"from s_client\n")
        proc.stdin.flush()
        assert sock.recv(timeout=5) == b"from s_client\n"
        sock.send(b"to s_client\n")
        assert proc.stdout.readline() == b"to s_client\n"
        sock.close()
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_peer_reset_is_reported(client: tlsport.Client, peer_server: Any, client_tls: Dict[str, Any]) -> None:
    def rude(conn: socket.socket) -> None:
        conn.sendall(b"partial")
        time.sleep(0.3)  # let the daemon read it: an RST discards unread data
        raw = conn.detach() if hasattr(conn, "detach") else conn
        s = socket.socket(fileno=raw) if isinstance(raw, int) else raw
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()

    srv = peer_server(rude)
    sock = client.connect("localhost", srv.port, tls=client_tls, timeout=5)
    chunks: List[bytes] = []
    with pytest.raises(tlsport.TlsportError) as info:
        for c in sock:
            chunks.append(c)
    assert b"".join(chunks) == b"partial"
    assert info.value.kind in ("econnreset", "tls", "closed")
    assert sock.close_reason is info.value


def test_client_close_closes_its_sockets(daemon_path: str, peer_server: Any, client_tls: Dict[str, Any]) -> None:
    seen: List[bytes] = []

    def handler(conn: socket.socket) -> None:
        seen.append(recv_until_eof(conn))

    srv = peer_server(handler)
    c = tlsport.Client.spawn(daemon_path)
    sock = c.connect("localhost", srv.port, tls=client_tls, timeout=5)
    sock.send(b"bye")
    c.close()
    with pytest.raises(tlsport.SocketClosed):
        sock.send(b"x")
    with pytest.raises(tlsport.SocketClosed):
        c.resolve()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [b"bye"]
    assert c.closed
    c.close()  # idempotent


def test_stop(daemon_path: str) -> None:
    c = tlsport.Client.spawn(daemon_path)
    c.stop()
    assert c._chan.proc.wait(5) == 0  # type: ignore[union-attr]
    with pytest.raises(tlsport.TlsportError):
        c.resolve(timeout=1)
    c.close()


def test_send_wait_reports_errors(client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False, mode="packet:1")
    a = client.connect("127.0.0.1", lst.port, tls=False, mode="packet:1", timeout=5)
    b = lst.accept(timeout=5)
    a.send(b"x" * 255, wait=True)
    assert b.recv(timeout=5) == b"x" * 255
    with pytest.raises(ValueError, match="too long"):
        a.send(b"x" * 256)


def test_connect_timeout(client: tlsport.Client) -> None:
    # A listener that never completes the handshake: connect must time out.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        t0 = time.monotonic()
        with pytest.raises(tlsport.Timeout):
            client.connect("127.0.0.1", s.getsockname()[1], tls={"verify": 0}, timeout=0.3)
        assert time.monotonic() - t0 < 3
    finally:
        s.close()


def test_per_accept_tls_and_initial_active(client: tlsport.Client, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    """listen(tls=None): each accept brings its own TLS settings; accept/connect set the
    initial active mode."""
    lst = client.listen(0, "127.0.0.1", tls=None, mode="packet:2")
    conns: List[Any] = []

    def peer() -> None:
        c = ssl_connect(lst.port, certs)
        c.sendall(b"\x00\x03one\x00\x03two\x00\x05three")
        conns.append(c)

    t = threading.Thread(target=peer)
    t.start()
    sock = lst.accept(timeout=5, tls=server_tls, active=2)
    t.join(5)
    assert sock.active == 2
    assert sock.recv(timeout=5) == b"one"
    assert sock.recv(timeout=5) == b"two"
    with pytest.raises(tlsport.Timeout):
        sock.recv(timeout=0.2)  # the count is used up
    sock.setopts(active=True)
    assert sock.recv(timeout=5) == b"three"
    conns[0].close()

    plain = client.listen(0, "127.0.0.1", tls=False)
    a = client.connect("127.0.0.1", plain.port, tls=False, active=False, timeout=5)
    b = plain.accept(timeout=5)
    assert a.active is False
    b.send(b"for the passive one")
    time.sleep(0.1)
    assert a.buffered_bytes == 0  # nothing read yet
    assert a.recv(timeout=5) == b"for the passive one"
    with pytest.raises(ValueError):
        plain.accept(timeout=1, active="twice")
    with pytest.raises(ValueError):
        client.listen(0, tls=False, active=0)
    with pytest.raises(TypeError):
        plain.accept(timeout=1, tls=5)  # a string names a tls_context
