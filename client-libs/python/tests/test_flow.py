"""Flow control a user can feel: a slow consumer keeps memory bounded and slows
the peer down; a slow peer makes send() block."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from typing import Any, Dict, List

import pytest
from conftest import ssl_connect

import tlsport
import tlsport._flow
from tlsport.aio import AsyncClient

CHUNK = 64 * 1024


def library_bound(window: int) -> int:
    """What the library may hold for one socket: the credit window (raw chunks of at
    most 64 KiB; the socket is created with active:N, so nothing arrives outside
    the window), plus one chunk of slack."""
    return (window + 1) * CHUNK


LIBRARY_BOUND = library_bound(tlsport._flow.DEFAULT_WINDOW)


def _chunk(i: int) -> bytes:
    return struct.pack(">Q", i) * (CHUNK // 8)


def _fast_sender(port: int, certs: Dict[str, str], total_chunks: int, state: Dict[str, Any]) -> None:
    try:
        conn = ssl_connect(port, certs, timeout=30)
        for i in range(total_chunks):
            conn.sendall(_chunk(i))
            state["sent"] = (i + 1) * CHUNK
        conn.unwrap()
        conn.close()
    except BaseException as exc:
        state["error"] = exc


class _Checker:
    """Checks that the stream is exactly chunk 0, 1, 2 ... whatever the read sizes."""

    def __init__(self) -> None:
        self.offset = 0

    def feed(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            i, within = divmod(self.offset, CHUNK)
            take = min(len(data) - pos, CHUNK - within)
            expected = _chunk(i)[within : within + take]
            assert data[pos : pos + take] == expected, f"stream corrupted at offset {self.offset}"
            pos += take
            self.offset += take


def test_slow_consumer_sync(client: tlsport.Client, server_tls: Dict[str, Any], certs: Dict[str, str]) -> None:
    total_chunks = 512  # 32 MiB: far more than every buffer on the way
    lst = client.listen(0, "127.0.0.1", tls=server_tls, mode="raw")
    state: Dict[str, Any] = {"sent": 0}
    sender = threading.Thread(target=_fast_sender, args=(lst.port, certs, total_chunks, state), daemon=True)
    sender.start()
    sock = lst.accept(timeout=5)
    check = _Checker()
    max_buffered = 0
    # Phase 1: a consumer that sleeps.
    t_end = time.monotonic() + 1.5
    while time.monotonic() < t_end:
        check.feed(sock.recv(timeout=5))
        max_buffered = max(max_buffered, client.buffered_bytes, sock.buffered_bytes)
        time.sleep(0.05)
    # Phase 2: not consuming at all: the peer must be blocked.
    sent_1 = state["sent"]
    for _ in range(10):
        time.sleep(0.05)
        max_buffered = max(max_buffered, client.buffered_bytes)
    sent_2 = state["sent"]
    assert "error" not in state, state.get("error")
    assert sent_1 < total_chunks * CHUNK, "the peer was never slowed down"
    assert sent_2 - sent_1 <= CHUNK, f"the peer kept sending: {sent_1} -> {sent_2}"
    assert sent_1 - check.offset < 24 * 1024 * 1024  # kernel + daemon buffers, not unbounded
    assert max_buffered <= LIBRARY_BOUND, f"library buffered {max_buffered} bytes"
    # Phase 3: read everything, in order.
    for data in sock:
        check.feed(data)
        max_buffered = max(max_buffered, sock.buffered_bytes)
    sender.join(10)
    assert "error" not in state, state.get("error")
    assert check.offset == total_chunks * CHUNK
    assert max_buffered <= LIBRARY_BOUND


def test_slow_consumer_async(daemon_path: str, server_tls: Dict[str, Any], certs: Dict[str, str]) -> None:
    total_chunks = 256

    async def main() -> None:
        async with await AsyncClient.spawn(daemon_path, window=4, max_buffer=256 * 1024) as client:
            lst = await client.listen(0, "127.0.0.1", tls=server_tls)
            state: Dict[str, Any] = {"sent": 0}
            sender = threading.Thread(target=_fast_sender, args=(lst.port, certs, total_chunks, state), daemon=True)
            sender.start()
            sock = await lst.accept(timeout=5)
            check = _Checker()
            max_buffered = 0
            t_end = time.monotonic() + 1.0
            while time.monotonic() < t_end:
                check.feed(await sock.recv(timeout=5))
                max_buffered = max(max_buffered, client.buffered_bytes)
                await asyncio.sleep(0.05)
            sent_1 = state["sent"]
            await asyncio.sleep(0.4)
            sent_2 = state["sent"]
            max_buffered = max(max_buffered, client.buffered_bytes)
            assert sent_1 < total_chunks * CHUNK
            assert sent_2 - sent_1 <= CHUNK
            assert max_buffered <= library_bound(4), max_buffered
            async for data in sock:
                check.feed(data)
            await asyncio.get_running_loop().run_in_executor(None, sender.join, 10)
            assert "error" not in state, state.get("error")
            assert check.offset == total_chunks * CHUNK

    asyncio.run(asyncio.wait_for(main(), 12))


def test_callback_consumer_is_flow_controlled(client: tlsport.Client, server_tls: Dict[str, Any], certs: Dict[str, str]) -> None:
    total_chunks = 96
    lst = client.listen(0, "127.0.0.1", tls=server_tls)
    state: Dict[str, Any] = {"sent": 0}
    sender = threading.Thread(target=_fast_sender, args=(lst.port, certs, total_chunks, state), daemon=True)
    sender.start()
    sock = lst.accept(timeout=5)
    check = _Checker()
    done = threading.Event()
    sock.on_data(check.feed)
    sock.on_close(lambda reason: done.set())
    assert done.wait(10)
    sender.join(5)
    assert check.offset == total_chunks * CHUNK


def test_slow_peer_blocks_send(client: tlsport.Client, server_tls: Dict[str, Any], certs: Dict[str, str]) -> None:
    lst = client.listen(0, "127.0.0.1", tls=server_tls)
    conns: List[Any] = []
    connector = threading.Thread(target=lambda: conns.append(ssl_connect(lst.port, certs)))
    connector.start()  # the daemon handshakes once an accept is waiting
    sock = lst.accept(timeout=5)
    connector.join(5)
    conn = conns[0]
    total = 256  # 16 MiB
    progress = {"sent": 0}
    errors: List[BaseException] = []

    def writer() -> None:
        try:
            for i in range(total):
                sock.send(_chunk(i))
                progress["sent"] = (i + 1) * CHUNK
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(1.0)
    s1 = progress["sent"]
    time.sleep(0.3)
    s2 = progress["sent"]
    assert s1 < total * CHUNK, "send() never blocked although the peer does not read"
    assert s2 == s1
    # Reading at the peer unblocks the sender; everything arrives in order.
    check = _Checker()
    while check.offset < total * CHUNK:
        check.feed(conn.recv(1 << 20))
    t.join(10)
    assert not errors
    conn.close()


def test_busy_socket_blocks_only_its_own_sends(client: tlsport.Client) -> None:
    """A peer that does not read makes its socket busy: send() waits on that socket
    only; another socket of the same client keeps going."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(2)
    slow = client.connect("127.0.0.1", srv.getsockname()[1], tls=False, timeout=5)
    slow_peer, _ = srv.accept()
    fast = client.connect("127.0.0.1", srv.getsockname()[1], tls=False, timeout=5)
    fast_peer, _ = srv.accept()
    progress = {"sent": 0}
    errors: List[BaseException] = []

    def writer() -> None:
        try:
            for i in range(256):  # 16 MiB
                slow.send(_chunk(i))
                progress["sent"] = (i + 1) * CHUNK
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while not slow.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slow.busy
    time.sleep(0.3)
    stalled = progress["sent"]
    time.sleep(0.3)
    assert progress["sent"] == stalled < 256 * CHUNK
    with pytest.raises(tlsport.Timeout, match="busy"):
        slow.send(b"more", timeout=0.2)
    # The other socket is not held up.
    fast.send(b"still fast")
    fast_peer.settimeout(5)
    assert fast_peer.recv(100) == b"still fast"
    # Reading at the slow peer makes the socket ready again and the writer finishes.
    check = _Checker()
    slow_peer.settimeout(5)
    while check.offset < 256 * CHUNK:
        check.feed(slow_peer.recv(1 << 20))
    t.join(5)
    assert not errors and not slow.busy
    slow.send(b"more", timeout=5)  # the timed-out "more" was not sent; now it goes
    assert slow_peer.recv(100) == b"more"
    for s in (slow_peer, fast_peer, srv):
        s.close()


def test_busy_async(daemon_path: str) -> None:
    async def main() -> None:
        async with await AsyncClient.spawn(daemon_path) as client:
            srv = socket.socket()
            srv.bind(("127.0.0.1", 0))
            srv.listen(1)
            sock = await client.connect("127.0.0.1", srv.getsockname()[1], tls=False, timeout=5)
            peer, _ = srv.accept()
            with pytest.raises(tlsport.Timeout, match="busy"):
                for i in range(256):
                    await sock.send(_chunk(i), timeout=0.5)
            assert sock.busy
            sent = i

            def drain() -> int:
                check = _Checker()
                peer.settimeout(5)
                while check.offset < sent * CHUNK:
                    check.feed(peer.recv(min(1 << 20, sent * CHUNK - check.offset)))
                assert peer.recv(5) == b"after"
                return check.offset

            loop = asyncio.get_running_loop()
            reader = loop.run_in_executor(None, drain)
            await sock.send(b"after", timeout=5)  # waits for ready
            assert await reader == sent * CHUNK
            peer.close()
            srv.close()

    asyncio.run(asyncio.wait_for(main(), 12))


def test_created_passive_reads_nothing(client: tlsport.Client, server_tls: Dict[str, Any], certs: Dict[str, str]) -> None:
    """accept(active=False): not one byte is read before the application asks."""
    lst = client.listen(0, "127.0.0.1", tls=server_tls, active=False)
    state: Dict[str, Any] = {"sent": 0}
    sender = threading.Thread(target=_fast_sender, args=(lst.port, certs, 64, state), daemon=True)
    sender.start()
    sock = lst.accept(timeout=5)
    assert sock.active is False
    time.sleep(0.3)
    assert client.buffered_bytes == 0
    check = _Checker()
    while check.offset < 64 * CHUNK:
        check.feed(sock.recv(timeout=5))  # protocol recv, one packet at a time
    sock.close()  # a passive socket does not read the peer's close_notify: close ours
    sender.join(5)
    assert not sender.is_alive() and "error" not in state
