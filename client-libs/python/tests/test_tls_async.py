"""TLS on live connections and the TLS callbacks with the asyncio client."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest

import tlsport
from conftest import PeerServer, ssl_client_context, ssl_connect, ssl_server_context
from tls_peers import extra_certs, smtp_client_peer, smtp_server_peer
from tlsport.aio import AsyncClient, AsyncSocket


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 12))


async def spawn(daemon_path: str) -> AsyncClient:
    return await AsyncClient.spawn(daemon_path)


def test_starttls_server_role(daemon_path: str, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    async def main() -> List[bytes]:
        async with await spawn(daemon_path) as client:
            listener = await client.listen(0, "127.0.0.1", tls=False, mode="line", active=False)
            peer = asyncio.get_running_loop().run_in_executor(None, smtp_client_peer, listener.port, ssl_client_context(certs))
            conn = await listener.accept(timeout=5)
            await conn.send(b"220 mail.example ESMTP\r\n")
            assert (await conn.recv(timeout=5)).startswith(b"EHLO")
            await conn.send(b"250-mail.example\r\n250 STARTTLS\r\n")
            assert await conn.recv(timeout=5) == b"STARTTLS\r\n"
            await conn.send(b"220 Go ahead\r\n")
            await conn.starttls("server", tls=server_tls, timeout=10)
            await conn.setopts(active=True)  # from now on the library's window
            assert (await conn.recv(timeout=5)).startswith(b"EHLO")
            await conn.send(b"250 mail.example\r\n")
            assert await conn.recv(timeout=5) == b"QUIT\r\n"
            await conn.send(b"221 Bye\r\n")
            replies: List[bytes] = await peer
            await conn.close()
            return replies

    replies = run(main())
    assert replies[-2:] == [b"250 mail.example\r\n", b"221 Bye\r\n"]


def test_starttls_client_role_and_stoptls(daemon_path: str, certs: Dict[str, str]) -> None:
    transcript: List[bytes] = []
    peer = PeerServer(None, smtp_server_peer(ssl_server_context(certs), transcript))

    async def main() -> None:
        async with await spawn(daemon_path) as client:
            await client.tls_context("to-peer", {"cacertfile": certs["ca"]})
            sock = await client.connect("localhost", peer.port, tls=False, mode="line", timeout=5)
            assert (await sock.recv(timeout=5)).startswith(b"220")
            await sock.send(b"EHLO me\r\n")
            while not (await sock.recv(timeout=5)).startswith(b"250 "):
                pass
            await sock.send(b"STARTTLS\r\n")
            assert (await sock.recv(timeout=5)).startswith(b"220")
            await sock.starttls(tls="to-peer", timeout=10)
            info = await sock.info()
            assert info["peer_certificate"].subject == "CN=localhost"
            assert (await sock.peercert())["subject"] == ((("commonName", "localhost"),),)
            assert info["cipher"] in await sock.ciphers()
            await sock.send(b"EHLO me\r\n")
            assert await sock.recv(timeout=5) == b"250 peer.example\r\n"
            await sock.send(b"QUIT\r\n")
            assert await sock.recv(timeout=5) == b"221 Bye\r\n"
            await sock.stoptls(timeout=5)  # the peer unwraps after 221
            assert (await sock.info())["protocol"] == "tcp"
            await sock.send(b"plain bye\r\n")

    try:
        run(main())
    finally:
        peer.close()
    assert transcript[-1] == b"QUIT\r\n" and not peer.errors, peer.errors


def test_async_callbacks(daemon_path: str, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    more = extra_certs(certs)
    calls: List[str] = []

    async def getkey(source: str) -> str:
        await asyncio.sleep(0.01)  # reading from the daemon goes on meanwhile
        calls.append("password")
        return "secret"

    async def judge(chain: List[tlsport.Certificate], verdict: Dict[str, Any]) -> bool:
        await asyncio.sleep(0.01)
        calls.append(chain[0].subject)
        return True

    def sync_judge(chain: List[tlsport.Certificate], verdict: Dict[str, Any]) -> bool:
        calls.append("sync " + chain[0].subject)
        return False

    async def main() -> None:
        async with await spawn(daemon_path) as client:
            tls = {"certfile": certs["server_cert"], "keyfile": more["enc_key"], "password": getkey,
                   "cacertfile": certs["ca"], "verify": 2, "verify_callback": judge}
            listener = await client.listen(0, "127.0.0.1", tls=tls)
            loop = asyncio.get_running_loop()
            peer = loop.run_in_executor(None, lambda: ssl_connect(listener.port, certs, client_cert=True))
            conn: AsyncSocket = await listener.accept(timeout=5)
            theirs = await peer
            assert (await conn.peercert())["subject"] == ((("commonName", "tlsport test client"),),)  # before it leaves
            theirs.close()
            accepting = asyncio.ensure_future(listener.accept(timeout=10))  # the daemon handshakes for it
            with pytest.raises(tlsport.TlsError):
                await client.connect("localhost", listener.port, timeout=5,
                                     tls={"cacertfile": certs["other_ca"], "verify_callback": sync_judge})
            client.on_verify(judge)
            sock = await client.connect("localhost", listener.port, timeout=5,
                                        tls={"cacertfile": certs["other_ca"], "verify_callback": True,
                                             "certfile": certs["client_cert"], "keyfile": certs["client_key"]})
            assert (await sock.info())["verify_result"]["code"] != 0
            await accepting

    run(main())
    assert calls[0] == "password" and "CN=tlsport test client" in calls and "sync CN=localhost" in calls
    assert calls.count("CN=localhost") == 1


def test_inject_ca_and_timeouts(daemon_path: str, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    async def main() -> None:
        async with await spawn(daemon_path) as client:
            listener = await client.listen(0, "127.0.0.1", tls=server_tls, idle_timeout=1.0)
            accepting = asyncio.ensure_future(listener.accept(timeout=5))
            sock = await client.connect("localhost", listener.port, tls={"cacertfile": certs["other_ca"], "verify": 0}, timeout=5)
            conn = await accepting
            assert (await sock.inject_ca(cadata=open(certs["ca"], "rb").read()))["code"] == 0
            with pytest.raises(tlsport.TlsportError) as info:
                await conn.recv(timeout=5)
            assert info.value.kind == "timeout"

    run(main())

