"""Rows of docs/bad-inputs.md not covered elsewhere: what a TLS listener
does with things that are not TLS, garbage after close_notify, TLS files of
the wrong type or content, a client that leaves mid-transfer. Each checks
what the daemon answers and that nobody else notices."""

import os
import socket
import ssl
import threading
import time

import pytest

from conftest import unix_client, tls_listen


def _served_meanwhile(client) -> None:
    started = time.monotonic()
    assert client.ok({"op": "hello"}, timeout=2)["ok"]
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("what, first_bytes", [
    ("plain HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("a fatal TLS alert", bytes.fromhex("15030300020228")),
    ("random bytes", os.urandom(64)),
])
def test_not_tls_on_a_tls_listener_is_refused_and_harms_no_one(unix_daemon, pki, what, first_bytes):
    owner = unix_client(unix_daemon.path)
    other = unix_client(unix_daemon.path)
    lst = tls_listen(owner, pki)
    ref = owner.send({"op": "accept", "id": lst["id"]})
    s = socket.create_connection(("127.0.0.1", lst["port"]))
    s.sendall(first_bytes)
    s.settimeout(5)
    try:
        while s.recv(4096):  # at most an alert, then the daemon closes
            pass
    except ConnectionResetError:
        pass
    s.close()
    _served_meanwhile(other)
    assert ref not in owner.replies  # no connection was handed over
    ctx = ssl.create_default_context(cafile=pki.ca)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", lst["port"])),
                         server_hostname="localhost"):
        assert owner.reply(ref)["ok"] is True  # a real client still gets in
    stats = owner.ok({"op": "stats"})
    assert sum(stats["handshakes"]["failed"].values()) >= 1, stats


def test_garbage_after_close_notify_is_not_delivered(client, pki):
    lst = tls_listen(client, pki)
    ref = client.send({"op": "accept", "id": lst["id"]})
    ctx = ssl.create_default_context(cafile=pki.ca)
    tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", lst["port"])),
                          server_hostname="localhost")
    sid = client.reply(ref)["id"]
    tls.sendall(b"last words")
    raw = tls.unwrap()  # our close_notify; then plaintext garbage on the same TCP
    raw.sendall(b"GARBAGE AFTER CLOSE_NOTIFY")
    got = client.read_data(sid, len(b"last words"))
    assert got == b"last words"
    ev = client.event()
    assert ev == {"event": "socket_closed", "id": sid, "reason": "normal"}, ev
    raw.close()


@pytest.mark.parametrize("kind", ["fifo", "directory", "device", "garbage", "missing"])
def test_tls_files_of_the_wrong_type_or_content_are_refused_at_once(unix_daemon, pki, tmp_path, kind):
    path = tmp_path / "cert.pem"
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would wait for a writer
    elif kind == "directory":
        path.mkdir()
    elif kind == "device":
        path = "/dev/zero"
    elif kind == "garbage":
        path.write_bytes(os.urandom(300))
    a = unix_client(unix_daemon.path)
    b = unix_client(unix_daemon.path)
    started = time.monotonic()
    r = a.error({"op": "listen", "host": "127.0.0.1", "port": 0,
                 "tls": {"certfile": str(path), "keyfile": pki.server_key}}, "bad_tls_config",
                timeout=3)
    assert time.monotonic() - started < 1.0
    assert str(path) in r["error"]["message"], r
    expected = {"fifo": "a FIFO", "directory": "a directory", "device": "a device",
                "garbage": "no certificate", "missing": "No such file"}[kind]
    assert expected in r["error"]["message"], r
    _served_meanwhile(b)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_tls_file_is_refused_naming_it(client, pki, tmp_path):
    path = tmp_path / "key.pem"
    path.write_bytes(open(pki.server_key, "rb").read())
    path.chmod(0)
    r = client.error({"op": "listen", "host": "127.0.0.1", "port": 0,
                      "tls": {"certfile": pki.server_cert, "keyfile": str(path)}}, "bad_tls_config")
    assert str(path) in r["error"]["message"] and "ermission" in r["error"]["message"]


def test_a_client_that_leaves_mid_transfer_still_gets_its_data_to_the_peer(unix_daemon, pki):
    """Leaving closes its sockets orderly: what it had delivered is written,
    then close_notify."""
    owner = unix_client(unix_daemon.path)
    lst = tls_listen(owner, pki)
    ref = owner.send({"op": "accept", "id": lst["id"]})
    ctx = ssl.create_default_context(cafile=pki.ca)
    peer = ctx.wrap_socket(socket.create_connection(("127.0.0.1", lst["port"])),
                           server_hostname="localhost")
    sid = owner.reply(ref)["id"]
    payload = bytes(i % 241 for i in range(3 << 20))
    for i in range(0, len(payload), 65536):
        owner.deliver(sid, payload[i:i + 65536])
    owner.ok({"op": "hello"})  # every deliver has been read by the daemon
    owner.sock.shutdown(socket.SHUT_RDWR)
    owner.sock.close()
    got = bytearray()
    peer.settimeout(10)
    while True:
        chunk = peer.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    assert bytes(got) == payload
    peer.close()
