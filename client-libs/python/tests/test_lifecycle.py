"""Daemon death, Unix-socket attach, finding the daemon, and bad arguments."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

import tlsport
from tlsport import _locate

# ----------------------------------------------------------------------------- daemon death


def _collect(fn: Any, out: List[Any]) -> threading.Thread:
    def run() -> None:
        t0 = time.monotonic()
        try:
            out.append(("ok", fn(), time.monotonic()))
        except BaseException as exc:
            out.append(("err", exc, time.monotonic()))
        _ = t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_daemon_killed_pending_calls_fail_at_once(daemon_path: str) -> None:
    client = tlsport.Client.spawn(daemon_path)
    lst = client.listen(0, "127.0.0.1", tls=False)
    a = client.connect("127.0.0.1", lst.port, tls=False, timeout=5)
    b = lst.accept(timeout=5)
    b2_passive = client.connect("127.0.0.1", lst.port, tls=False, timeout=5)
    lst.accept(timeout=5)
    b2_passive.setopts(active=False)
    results: List[Any] = []
    threads = [
        _collect(lambda: lst.accept(), results),  # waits for a connection
        _collect(lambda: b.recv(), results),  # waits in the library queue
        _collect(lambda: list(a), results),  # iteration
        _collect(lambda: b2_passive.recv(), results),  # waits for the daemon's recv reply
        _collect(lambda: client.adopted(), results),
    ]
    time.sleep(0.2)
    assert not results
    killed_at = time.monotonic()
    os.kill(client.pid, signal.SIGKILL)  # type: ignore[arg-type]
    for t in threads:
        t.join(3)
    assert len(results) == len(threads)
    for status, exc, when in results:
        assert status == "err"
        assert isinstance(exc, tlsport.DaemonGone), exc
        assert "SIGKILL" in str(exc) and exc.kind == "daemon_gone"
        assert when - killed_at < 1.5
    # Every later call fails at once too.
    t0 = time.monotonic()
    with pytest.raises(tlsport.DaemonGone):
        client.resolve()
    with pytest.raises(tlsport.DaemonGone):
        a.send(b"x")
    with pytest.raises(tlsport.DaemonGone):
        client.connect("127.0.0.1", 1, tls=False)
    assert time.monotonic() - t0 < 0.5
    assert client.closed
    client.close()


def test_daemon_exit_status_in_error(daemon_path: str) -> None:
    client = tlsport.Client.spawn(daemon_path)
    client.stop()
    with pytest.raises(tlsport.DaemonGone, match="exited with status 0"):
        client.adopted(timeout=5)
    client.close()


def test_spawn_bad_daemon_arguments(daemon_path: str) -> None:
    with pytest.raises(tlsport.DaemonGone, match="exited with status"):
        tlsport.Client.spawn(daemon_path, args=["--no-such-option"], stderr=subprocess.DEVNULL)


# ----------------------------------------------------------------------------- Unix socket


def test_attach_two_clients(unix_daemon: Dict[str, Any]) -> None:
    path = unix_daemon["path"]
    with tlsport.attach(path, name="one") as one, tlsport.Client.attach(Path(path), name="two") as two:
        assert one.number != two.number and one.pid is None
        with pytest.raises(tlsport.NetworkError) as info:
            tlsport.attach(path, name="one")
        assert info.value.kind == "eaddrinuse"
        lst = one.listen(0, "127.0.0.1", tls=False, mode="packet:2")
        a = one.connect("127.0.0.1", lst.port, tls=False, mode="packet:2", timeout=5)
        b = lst.accept(timeout=5)
        adopted: List[Any] = []
        got = threading.Event()

        def on_adopt(sock: Any) -> None:
            adopted.append(sock)
            got.set()

        two.on_adopt(on_adopt)
        assert b.controlling_process(two.number) == []  # type: ignore[arg-type]
        assert got.wait(5)
        nb = adopted[0]
        assert nb.id == b.id and nb.mode == "packet:2" and nb.previous_owner == (one.number, "one")
        a.send(b"to the new owner")
        assert nb.recv(timeout=5) == b"to the new owner"
        nb.send(b"from the new owner")
        assert a.recv(timeout=5) == b"from the new owner"
        with pytest.raises(tlsport.NotOwner):
            one._call({"op": "peername", "id": nb.id}, timeout=5)
        # Back to the first client, by name.
        two.on_adopt(None)
        assert nb.controlling_process("one") == []
        back = one.adopted(timeout=5)
        a.send(b"home")
        assert back.recv(timeout=5) == b"home"
        # Handing a socket to yourself changes nothing.
        assert back.controlling_process(one.number) == []  # type: ignore[arg-type]
        assert not back.closed
        # A client that goes away closes its sockets (the peer sees EOF).
        a2 = one.connect("127.0.0.1", lst.port, tls=False, mode="packet:2", timeout=5)
        b2 = lst.accept(timeout=5)
        b2.controlling_process("two")
        two.adopted(timeout=5)
        t0 = time.monotonic()
        two.close()
        assert time.monotonic() - t0 < 2
        assert a2.recv(timeout=5) == b"" and a2.closed
        with pytest.raises(tlsport.NoSuchClient):
            back.controlling_process("two")


def test_attach_daemon_killed(unix_daemon: Dict[str, Any]) -> None:
    client = tlsport.attach(unix_daemon["path"])
    results: List[Any] = []
    t = _collect(lambda: client.adopted(), results)
    time.sleep(0.1)
    unix_daemon["proc"].kill()
    t.join(3)
    assert results and isinstance(results[0][1], tlsport.DaemonGone)
    assert "Unix socket" in str(results[0][1])
    client.close()


def test_attach_missing_path(tmp_path: Path) -> None:
    with pytest.raises(tlsport.DaemonGone, match="cannot connect"):
        tlsport.attach(str(tmp_path / "none.sock"))


def test_spawn_with_unix_path(daemon_path: str, tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with tlsport.Client.spawn(daemon_path, unix_path=path, name="main") as main:
        with tlsport.attach(path, name="side") as side:
            assert side.resolve("127.0.0.1", timeout=5)
            assert main.number != side.number
    assert not path.exists() or True  # the daemon may leave the socket file behind


# ----------------------------------------------------------------------------- finding the daemon


def test_find_daemon_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, daemon_path: str) -> None:
    fake = tmp_path / "tlsportd"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("TLSPORTD", daemon_path)
    assert tlsport.find_daemon(fake) == str(fake)  # the argument first
    assert tlsport.find_daemon() == daemon_path  # then $TLSPORTD
    monkeypatch.setenv("TLSPORTD", str(tmp_path / "missing"))
    with pytest.raises(tlsport.DaemonNotFound, match="TLSPORTD"):
        tlsport.find_daemon()
    with pytest.raises(FileNotFoundError):
        tlsport.find_daemon(tmp_path / "missing")
    monkeypatch.delenv("TLSPORTD")
    installed = tmp_path / "bin"
    installed.mkdir()
    (installed / "tlsportd").write_text("#!/bin/sh\n")
    (installed / "tlsportd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'empty'}:{installed}")
    monkeypatch.setattr(_locate, "build_tree_daemon", lambda: fake)
    assert tlsport.find_daemon() == str(installed / "tlsportd")  # then tlsportd on PATH
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert tlsport.find_daemon() == str(fake)  # then the build tree
    monkeypatch.setattr(_locate, "build_tree_daemon", lambda: tmp_path / "nothing")
    with pytest.raises(tlsport.DaemonNotFound) as info:
        tlsport.Client.spawn()
    assert "TLSPORTD" in str(info.value) and str(tmp_path / "nothing") in str(info.value)
    assert "PATH" in str(info.value)


def test_build_tree_location() -> None:
    repo = Path(__file__).resolve().parents[3]
    assert _locate.build_tree_daemon() == repo / "build" / "daemon" / "tlsportd"


# ----------------------------------------------------------------------------- bad arguments


@pytest.fixture
def recording_client(client: tlsport.Client) -> Any:
    """The client, with a list of the frames written to the daemon."""
    written: List[bytes] = []
    orig = client._chan.write

    def write(data: bytes) -> None:
        written.append(data)
        orig(data)

    client._chan.write = write  # type: ignore[method-assign]
    client.written = written  # type: ignore[attr-defined]
    return client


BAD_CALLS = [
    (lambda c: c.connect(1234, 443), TypeError),
    (lambda c: c.connect("", 443), ValueError),
    (lambda c: c.connect("h", 0), ValueError),
    (lambda c: c.connect("h", 70000), ValueError),
    (lambda c: c.connect("h", "443"), TypeError),
    (lambda c: c.connect("h", True), TypeError),
    (lambda c: c.connect("h", 443, mode="packet:3"), ValueError),
    (lambda c: c.connect("h", 443, mode=2), TypeError),
    (lambda c: c.connect("h", 443, tls=5), TypeError),  # a string names a tls_context
    (lambda c: c.connect("h", 443, tls=""), ValueError),
    (lambda c: c.connect("h", 443, tls={"verify": 3}), ValueError),
    (lambda c: c.connect("h", 443, tls={"verify": True}), TypeError),
    (lambda c: c.connect("h", 443, tls={"certfle": "x"}), ValueError),
    (lambda c: c.connect("h", 443, tls={"certfile": 5}), TypeError),
    (lambda c: c.connect("h", 443, tls={"verify_hostname": True}), ValueError),  # a name, or False
    (lambda c: c.connect("h", 443, timeout=-1), ValueError),
    (lambda c: c.connect("h", 443, timeout="5"), TypeError),
    (lambda c: c.connect("h", 443, packet_size=0), ValueError),
    (lambda c: c.listen(0), TypeError),  # tls is required (False for plain TCP)
    (lambda c: c.listen(-1, tls=False), ValueError),
    (lambda c: c.listen(0, tls=False, backlog=0), ValueError),
    (lambda c: c.listen(0, tls=False, handshake_timeout=-2), ValueError),
    # 0 would be "at once" (never "none"); the daemon takes up to an hour, a day when idle.
    (lambda c: c.listen(0, tls=False, idle_timeout=0), ValueError),
    (lambda c: c.connect("h", 443, close_timeout=0), ValueError),
    (lambda c: c.connect("h", 443, handshake_timeout=3601), ValueError),
    (lambda c: c.connect("h", 443, idle_timeout=86401), ValueError),
    (lambda c: c.resolve(127001), TypeError),
    (lambda c: c.adopted(timeout=-1), ValueError),
    (lambda c: c.on_adopt(5), TypeError),
]


@pytest.mark.parametrize("call, exc", BAD_CALLS)
def test_bad_arguments_send_nothing(recording_client: Any, call: Any, exc: type) -> None:
    before = len(recording_client.written)
    with pytest.raises(exc):
        call(recording_client)
    assert len(recording_client.written) == before


def test_bad_socket_arguments_send_nothing(recording_client: Any) -> None:
    c = recording_client
    lst = c.listen(0, "127.0.0.1", tls=False, mode="packet:1")
    a = c.connect("127.0.0.1", lst.port, tls=False, mode="packet:1", timeout=5)
    lst.accept(timeout=5)
    time.sleep(0.1)  # let the flow thread send its setopts
    before = len(c.written)
    for call, exc in [
        (lambda: a.send("text"), TypeError),
        (lambda: a.send(123), TypeError),
        (lambda: a.send(b"x" * 256), ValueError),  # packet:1 holds 255 bytes at most
        (lambda: a.setopts(), ValueError),
        (lambda: a.setopts(active="twice"), ValueError),
        (lambda: a.setopts(active=0), ValueError),
        (lambda: a.setopts(active=2**31), ValueError),
        (lambda: a.setopts(packet_size=2**31), ValueError),
        (lambda: a.controlling_process(""), ValueError),
        (lambda: a.controlling_process(0), ValueError),
        (lambda: a.controlling_process(None), TypeError),
        (lambda: a.controlling_process(True), TypeError),
        (lambda: a.recv(timeout="1"), TypeError),
        (lambda: a.on_data(42), TypeError),
        (lambda: tlsport.Client.attach(5), TypeError),
        (lambda: tlsport.Client.spawn(name=""), ValueError),
        (lambda: tlsport.Client.spawn(args="--x"), TypeError),
        (lambda: tlsport.Client.spawn(window=0), ValueError),
    ]:
        with pytest.raises(exc):
            call()
    assert len(c.written) == before
    # The client still works.
    a.send(b"ok")
    assert c.resolve("127.0.0.1", timeout=5)


def test_daemon_rejections_are_classified(client: tlsport.Client) -> None:
    with pytest.raises(tlsport.NoSuchSocket):
        client._call({"op": "peername", "id": 999}, timeout=5)
    with pytest.raises(tlsport.BadRequest):
        client._call({"op": "no_such_op"}, timeout=5)
    with pytest.raises(tlsport.NetworkError) as info:
        client.connect("name.invalid", 443, tls=False, timeout=5)
    assert info.value.kind in ("nxdomain", "ehostunreach", "enoent")


def test_socket_object_after_peer_close(client: tlsport.Client) -> None:
    lst = client.listen(0, "127.0.0.1", tls=False)
    raw = socket.create_connection(("127.0.0.1", lst.port), timeout=5)
    b = lst.accept(timeout=5)
    raw.close()
    assert b.recv(timeout=5) == b""
    with pytest.raises(tlsport.SocketClosed):
        b.send(b"late")
    b.close()  # closing a closed socket is a no-op
