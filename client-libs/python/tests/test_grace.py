"""Sockets that survive their client: hello's grace period, and the successor
that gets them back (docs/protocol.md, "Surviving a crash"); stats and reload."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest
from conftest import recv_exactly, ssl_connect

import tlsport
import tlsport.aio
from tlsport.errors import NetworkError, TlsportError

WORKER = Path(__file__).resolve().parent / "grace_worker.py"
LIBRARY = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def boss(daemon_path: str, tmp_path: Path) -> Iterator[tlsport.Client]:
    """The test's own client: spawns the daemon, which serves a Unix socket too."""
    path = str(tmp_path / "d.sock")
    client = tlsport.Client.spawn(daemon_path, unix_path=path, name="boss")
    client.socket_path = path  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        client.close()


def read_line(proc: "subprocess.Popen[bytes]", timeout: float) -> Dict[str, Any]:
    """The worker's next JSON line, within ``timeout`` seconds."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            assert left > 0 and sel.select(left), f"no line from the worker within {timeout} s: {buf!r}"
            chunk = os.read(fd, 1)
            assert chunk, f"the worker ended ({proc.poll()}) after {buf!r}"
            buf += chunk
    return json.loads(buf)  # type: ignore[no-any-return]


def attach_successor(path: str, name: str, timeout: float = 10, **kwargs: Any) -> tlsport.Client:
    """Attach as ``name``.  Until the daemon has seen the dead client's channel
    end, the name is taken (eaddrinuse): no event says when, so try again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return tlsport.attach(path, name=name, **kwargs)
        except NetworkError as err:
            if err.kind != "eaddrinuse" or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


async def attach_successor_async(path: str, name: str, timeout: float = 10, **kwargs: Any) -> tlsport.aio.AsyncClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await tlsport.aio.attach(path, name=name, **kwargs)
        except NetworkError as err:
            if err.kind != "eaddrinuse" or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


def test_successor_takes_over_after_sigkill(boss: tlsport.Client, certs: Dict[str, str]) -> None:
    """A worker with a grace period is killed (SIGKILL) between two lines of its
    peer; a successor of the same name gets its listener and its connection
    back, reads the line sent while nobody owned it, answers, and accepts on."""
    path = boss.socket_path  # type: ignore[attr-defined]
    env = {**os.environ, "PYTHONPATH": LIBRARY}
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), path, "w1", certs["server_cert"], certs["server_key"]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
    )
    peer: Optional[Any] = None
    successor: Optional[tlsport.Client] = None
    try:
        started = read_line(worker, 10)
        assert started["event"] == "listening" and started["grace"] == 30
        peer = ssl_connect(started["port"], certs)
        peer.sendall(b"one\n")
        assert recv_exactly(peer, 7) == b"w1:one\n"
        assert read_line(worker, 10) == {"event": "served", "line": "one\n"}

        worker.send_signal(signal.SIGKILL)
        assert worker.wait(10) == -signal.SIGKILL
        peer.sendall(b"two\n")  # nobody owns the connection now: the daemon keeps it

        successor = attach_successor(path, "w1", grace=30)
        assert successor.grace == 30
        back = {type(s).__name__: s for s in successor.reclaimed}
        assert set(back) == {"Socket", "Listener"}
        sock, lst = back["Socket"], back["Listener"]
        assert sock.previous_owner == (started["client"], "w1") == lst.previous_owner
        assert sock.mode == "line" and lst.port == started["port"]
        assert sock.recv(timeout=10) == b"two\n"
        sock.send(b"w2:two\n")
        assert recv_exactly(peer, 7) == b"w2:two\n"

        second = ssl_connect(started["port"], certs)
        try:
            new = lst.accept(timeout=10)
            second.sendall(b"three\n")
            assert new.recv(timeout=10) == b"three\n"
        finally:
            second.close()
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(10)
        for f in (worker.stdin, worker.stdout):
            if f is not None:
                f.close()
        if peer is not None:
            peer.close()
        if successor is not None:
            successor.close()


def test_async_successor_gets_what_a_closed_client_left(boss: tlsport.Client, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    """Closing a client with a grace period leaves its sockets for a successor as
    a crash does; the asyncio client takes them over alike."""
    path = boss.socket_path  # type: ignore[attr-defined]
    lst = boss.listen(0, "127.0.0.1", tls=server_tls, mode="packet:2")
    first = tlsport.attach(path, name="w-async", grace=30)
    try:
        sock = first.connect("127.0.0.1", lst.port, tls={"cacertfile": certs["ca"]}, mode="packet:2", timeout=10)
        served = lst.accept(timeout=10)
    finally:
        first.close()
    served.send(b"while nobody owned it")

    async def take_over() -> None:
        client = await attach_successor_async(path, "w-async")
        try:
            assert client.grace is None  # this one asked for none
            [back] = client.reclaimed
            assert isinstance(back, tlsport.aio.AsyncSocket) and back.id == sock.id
            assert back.previous_owner == (first.number, "w-async")
            assert await back.recv(timeout=10) == b"while nobody owned it"
            await back.send(b"taken over")
        finally:
            await client.close()  # no grace: the socket closes

    asyncio.run(asyncio.wait_for(take_over(), 15))
    assert served.recv(timeout=10) == b"taken over"
    assert served.recv(timeout=10) == b""  # closed with the successor


def test_unclaimed_sockets_close_after_the_grace_period(boss: tlsport.Client, server_tls: Dict[str, Any], certs: Dict[str, str]) -> None:
    path = boss.socket_path  # type: ignore[attr-defined]
    lst = boss.listen(0, "127.0.0.1", tls=server_tls)
    first = tlsport.attach(path, name="w-late", grace=0.2)
    try:
        assert first.grace == 0.2
        first.connect("127.0.0.1", lst.port, tls={"cacertfile": certs["ca"]}, timeout=10)
        served = lst.accept(timeout=10)
    finally:
        first.close()
    assert served.recv(timeout=10) == b""  # the grace period ran out: closed in order
    late = tlsport.attach(path, name="w-late")
    try:
        assert late.reclaimed == []
    finally:
        late.close()


def test_grace_arguments() -> None:
    with pytest.raises(ValueError, match="needs a name"):
        tlsport.attach("/nonexistent/tlsportd.sock", grace=5)
    with pytest.raises(ValueError):
        tlsport.attach("/nonexistent/tlsportd.sock", name="w", grace=-1)
    with pytest.raises(TypeError):
        tlsport.attach("/nonexistent/tlsportd.sock", name="w", grace="5")


def test_stats_and_reload(client: tlsport.Client, certs: Dict[str, str], tmp_path: Path) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(certs["server_cert"], cert)
    shutil.copy(certs["server_key"], key)
    lst = client.listen(0, "127.0.0.1", tls={"certfile": str(cert), "keyfile": str(key)})
    stats = client.stats(timeout=10)
    assert stats["listeners"] == 1 and stats["clients"] == 1
    assert stats["connections"]["open"] == 0 and "rss_bytes" in stats["memory"]
    client.reload(timeout=10)

    cert.write_text("not a certificate\n")
    with pytest.raises(TlsportError) as err:
        client.reload(timeout=10)
    assert err.value.kind == "bad_tls_config" and "server.pem" in err.value.message
    shutil.copy(certs["server_cert"], cert)
    client.reload(timeout=10)
    peer = ssl_connect(lst.port, certs)  # still served
    try:
        lst.accept(timeout=10)
    finally:
        peer.close()


def test_stats_and_reload_async(daemon_path: str) -> None:
    async def main() -> None:
        async with await tlsport.aio.spawn(daemon_path) as client:
            assert (await client.stats(timeout=10))["clients"] == 1
            await client.reload(timeout=10)

    asyncio.run(asyncio.wait_for(main(), 15))
