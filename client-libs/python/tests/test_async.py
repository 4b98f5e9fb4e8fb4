"""The asyncio API."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from typing import Any, Awaitable, Callable, Dict, List, Optional, TypeVar

import pytest
from conftest import echo_handler, ssl_connect

import tlsport
from tlsport.aio import AsyncClient, AsyncListener, AsyncSocket

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]], timeout: float = 12) -> T:
    """Run a coroutine with a hard time bound."""
    return asyncio.run(asyncio.wait_for(coro_fn(), timeout))  # type: ignore[arg-type]


def test_connect_echo_and_info(daemon_path: str, peer_server: Any, client_tls: Dict[str, Any]) -> None:
    srv = peer_server(echo_handler)

    async def main() -> None:
        async with await AsyncClient.spawn(daemon_path) as client:
            assert client.protocol == 1 and client.number
            sock = await client.connect("localhost", srv.port, tls=client_tls, timeout=5)
            info = await sock.info()
            assert info["protocol"] in ("TLSv1.2", "TLSv1.3")
            assert (await sock.peername())[1] == srv.port
            assert (await sock.sockname())[0] == "127.0.0.1"
            payload = os.urandom(600_000)
            await sock.send(payload)
            got = bytearray()
            async for chunk in sock:
                got += chunk
                if len(got) >= len(payload):
                    break
            assert bytes(got) == payload
            await sock.close()
            assert sock.closed
            with pytest.raises(tlsport.SocketClosed):
                await sock.send(b"x")
            assert await client.resolve("127.0.0.1")

    run(main)


def test_errors(daemon_path: str, peer_server: Any, certs: Dict[str, str]) -> None:
    srv = peer_server(echo_handler)

    async def main() -> None:
        async with await AsyncClient.spawn(daemon_path) as client:
            with pytest.raises(tlsport.TlsError):
                await client.connect("localhost", srv.port, tls={}, timeout=5)
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            with pytest.raises(tlsport.NetworkError) as info:
                await client.connect("127.0.0.1", port, tls=False, timeout=5)
            assert info.value.kind == "econnrefused"
            with pytest.raises(TypeError):
                await client.connect("127.0.0.1", "443", tls=False)  # type: ignore[arg-type]
            with pytest.raises(ValueError):
                await client.listen(0, tls=False, mode="packet:3")
            with pytest.raises(TypeError):
                await client.listen(0)  # type: ignore[call-arg]

    run(main)


def test_listener_server_with_python_ssl_clients(daemon_path: str, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    async def main() -> None:
        async with await AsyncClient.spawn(daemon_path) as client:
            lst = await client.listen(0, "127.0.0.1", tls=server_tls, mode="line")
            served: List[bytes] = []

            async def serve(sock: AsyncSocket) -> None:
                async for line in sock:
                    served.append(line)
                    await sock.send(line.upper())

            async def server() -> None:
                tasks = []
                async for sock in lst:
                    tasks.append(asyncio.ensure_future(serve(sock)))
                await asyncio.gather(*tasks)

            server_task = asyncio.ensure_future(server())

            def peer(i: int) -> bytes:
                conn = ssl_connect(lst.port, certs)
                conn.sendall(b"hello %d\n" % i)
                data = b""
                while not data.endswith(b"\n"):
                    data += conn.recv(100)
                conn.unwrap()
                conn.close()
                return data

            loop = asyncio.get_running_loop()
            answers = await asyncio.gather(*(loop.run_in_executor(None, peer, i) for i in range(4)))
            assert sorted(answers) == [b"HELLO %d\n" % i for i in range(4)]
            await lst.close()
            await asyncio.wait_for(server_task, 5)
            assert sorted(served) == [b"hello %d\n" % i for i in range(4)]

    run(main)


def test_callbacks_and_passive(daemon_path: str) -> None:
    async def main() -> None:
        async with await AsyncClient.spawn(daemon_path) as client:
            lst = await client.listen(0, "127.0.0.1", tls=False, mode="packet:2")
            a = await client.connect("127.0.0.1", lst.port, tls=False, mode="packet:2", timeout=5)
            b = await lst.accept(timeout=5)
            got: List[bytes] = []
            closed = asyncio.Event()
            reasons: List[Optional[tlsport.TlsportError]] = []

            async def on_data(data: bytes) -> None:  # a coroutine callback is awaited
                await asyncio.sleep(0)
                got.append(data)

            def on_close(reason: Optional[tlsport.TlsportError]) -> None:
                reasons.append(reason)
                closed.set()

            b.on_data(on_data)
            b.on_close(on_close)
            for i in range(20):
                await a.send(b"%d" % i)
            await a.close()
            await asyncio.wait_for(closed.wait(), 5)
            assert got == [b"%d" % i for i in range(20)]
            assert reasons == [None]

            c = await client.connect("127.0.0.1", lst.port, tls=False, mode="packet:2", timeout=5)
            d = await lst.accept(timeout=5)
            await d.setopts(active=False)
            with pytest.raises(tlsport.Timeout):
                await d.recv(timeout=0.2)
            await c.send(b"one")
            await c.send(b"two")
            assert await d.recv(timeout=5) == b"one"
            passive = asyncio.Event()
            d.on_passive(passive.set)
            await d.setopts(active=1)
            assert await d.recv(timeout=5) == b"two"
            await asyncio.wait_for(passive.wait(), 5)
            await d.setopts(active=True)
            await c.send(b"three")
            assert await d.recv(timeout=5) == b"three"

    run(main)


async def _connected_pair(client: AsyncClient, mode: str) -> Any:
    """Two sockets of one client, connected to each other over plain TCP."""
    lst = await client.listen(0, "127.0.0.1", tls=False, mode=mode)
    a = await client.connect("127.0.0.1", lst.port, tls=False, mode=mode, timeout=5)
    return a, await lst.accept(timeout=5)


def test_callbacks_keep_order_and_may_not_await_replies(daemon_path: str) -> None:
    async def main() -> None:
        async with await AsyncClient.spawn(daemon_path) as client:
            a, b = await _connected_pair(client, "line")
            for i in range(3):
                await a.send(b"early %d\n" % i)
            while b.buffered_bytes < len(b"early 0\n") * 3:
                await asyncio.sleep(0.01)
            got: List[bytes] = []
            refused: List[BaseException] = []

            async def on_data(line: bytes) -> None:
                await asyncio.sleep(0.01)  # the queued ones are still being delivered
                got.append(line)
                try:
                    await b.peername()  # the reader waits for this callback: no reply can come
                except RuntimeError as exc:
                    refused.append(exc)
                await b.send(b"echo " + line)

            b.on_data(on_data)
            await a.send(b"late\n")
            echoes = [await a.recv(timeout=5) for _ in range(4)]
            assert got == [b"early 0\n", b"early 1\n", b"early 2\n", b"late\n"]
            assert echoes == [b"echo " + line for line in got]
            assert len(refused) == 4
            assert AsyncClient.adopt is AsyncClient.adopted

    run(main)


def test_large_packets_while_a_coroutine_callback_holds_the_reader(daemon_path: str) -> None:
    """A coroutine on_data callback pauses reading from the daemon (past 1 MiB
    undecoded); a packet larger than that still completes, and every byte of
    every packet arrives in order."""

    async def main() -> None:
        async with await AsyncClient.spawn(daemon_path) as client:
            a, b = await _connected_pair(client, "packet:4")
            packets = [bytes([i]) * (3 << 20) + os.urandom(64) for i in range(4)]
            got: List[bytes] = []
            done = asyncio.Event()

            async def on_data(packet: bytes) -> None:
                await asyncio.sleep(0.05)  # the reader task waits for this
                got.append(packet)
                if len(got) == len(packets):
                    done.set()

            b.on_data(on_data)
            for packet in packets:
                await a.send(packet)
            await asyncio.wait_for(done.wait(), 10)
            assert got == packets

    run(main, timeout=20)


def test_many_small_sends_without_yielding_stay_in_order(daemon_path: str) -> None:
    """Sends are written at the end of the event loop's turn (or once 64 KiB
    are due): a loop that never yields still sends everything, in order."""

    async def main() -> None:
        async with await AsyncClient.spawn(daemon_path) as client:
            a, b = await _connected_pair(client, "raw")
            expected = b"".join(b"%d," % i for i in range(20000))
            for i in range(20000):
                await a.send(b"%d," % i)
            received = b""
            while len(received) < len(expected):
                received += await b.recv(timeout=5)
            assert received == expected

    run(main)


def test_adopt_between_attached_clients(unix_daemon: Dict[str, Any]) -> None:
    path = unix_daemon["path"]

    async def main() -> None:
        async with await AsyncClient.attach(path, name="boss") as boss, await AsyncClient.attach(path, name="worker") as worker:
            lst = await boss.listen(0, "127.0.0.1", tls=False, mode="line")
            peer = await boss.connect("127.0.0.1", lst.port, tls=False, mode="line", timeout=5)
            sock = await lst.accept(timeout=5)
            await peer.send(b"before\n")
            assert await sock.recv(timeout=5) == b"before\n"
            await peer.send(b"in flight\n")
            leftover = await sock.controlling_process("worker")
            assert sock.closed
            with pytest.raises(tlsport.SocketClosed, match="handed over"):
                await sock.send(b"x")
            adopted = await worker.adopt(timeout=5)
            assert isinstance(adopted, AsyncSocket)
            assert adopted.id == sock.id and adopted.mode == "line"
            assert adopted.previous_owner == (boss.number, "boss")
            await peer.send(b"after\n")
            rest = [await adopted.recv(timeout=5)]
            if rest[0] == b"in flight\n" and leftover == []:
                rest.append(await adopted.recv(timeout=5))
            assert leftover + rest == [b"in flight\n", b"after\n"]
            await adopted.send(b"from worker\n")
            assert await peer.recv(timeout=5) == b"from worker\n"
            # by number, and a listener too
            await lst.controlling_process(worker.number)  # type: ignore[arg-type]
            wl = await worker.adopt(timeout=5)
            assert isinstance(wl, AsyncListener) and wl.port == lst.port
            with pytest.raises(tlsport.NoSuchClient):
                await peer.controlling_process("nobody")
            with pytest.raises(tlsport.Timeout):
                await worker.adopt(timeout=0.1)

    run(main)


def test_daemon_death_fails_pending_calls_at_once(daemon_path: str) -> None:
    async def main() -> None:
        client = await AsyncClient.spawn(daemon_path)
        lst = await client.listen(0, "127.0.0.1", tls=False)
        a = await client.connect("127.0.0.1", lst.port, tls=False, timeout=5)
        b = await lst.accept(timeout=5)
        pending_accept = asyncio.ensure_future(lst.accept())
        pending_recv = asyncio.ensure_future(b.recv())
        pending_adopt = asyncio.ensure_future(client.adopt())
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert client.pid
        os.kill(client.pid, signal.SIGKILL)
        for fut in (pending_accept, pending_recv, pending_adopt):
            with pytest.raises(tlsport.DaemonGone, match="SIGKILL"):
                await asyncio.wait_for(fut, 3)
        assert loop.time() - t0 < 2
        with pytest.raises(tlsport.DaemonGone):
            await client.resolve()
        with pytest.raises(tlsport.DaemonGone):
            await a.send(b"x")
        with pytest.raises(tlsport.DaemonGone):
            async for _ in a:
                pass
        await client.close()

    run(main)


def test_attach_to_missing_socket(tmp_path: Any) -> None:
    async def main() -> None:
        with pytest.raises(tlsport.DaemonGone, match="cannot connect"):
            await AsyncClient.attach(str(tmp_path / "nope.sock"))

    run(main)
