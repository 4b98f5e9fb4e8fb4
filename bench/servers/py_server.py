#!/usr/bin/env python3
"""The Python servers of scripts/bench (docs/benchmarks.md), written alike:
Python's own asyncio streams over ssl, and tlsport's asyncio API.

    py_server.py asyncio-ssl CERT KEY
    py_server.py tlsport CERT KEY          (tlsportd: $TLSPORTD or the build tree)

Two ports: echo ({packet,2}: every packet is sent back) and bulk (raw: a
9-byte request, b"D" or b"U" and a 64-bit big-endian count N; "D": N bytes
are sent, then the connection is closed; "U": N bytes are received, then
b"K" is sent). Prints "PORTS echo=E bulk=B" once listening, then serves
until killed. One task per connection."""

import asyncio
import os
import ssl
import struct
import sys

CHUNK = bytes(65536)
ACCEPTORS = 16


def request(head):
    kind, count = head[:1], struct.unpack(">Q", head[1:9])[0]
    return kind, count, head[9:]


# ------------------------------------------------------------------ asyncio + ssl

async def ssl_echo(reader, writer):
    try:
        while True:
            header = await reader.readexactly(2)
            body = await reader.readexactly((header[0] << 8) | header[1])
            writer.write(header + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def ssl_bulk(reader, writer):
    try:
        kind, count, _ = request(await reader.readexactly(9))
        if kind == b"D":
            while count > 0:
                writer.write(CHUNK[:count] if count < len(CHUNK) else CHUNK)
                count -= len(CHUNK)
                await writer.drain()
        else:
            while count > 0:
                data = await reader.read(65536)
                if not data:
                    return
                count -= len(data)
            writer.write(b"K")
            await writer.drain()
            while await reader.read(65536):
                pass
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def serve_asyncio_ssl(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    echo = await asyncio.start_server(ssl_echo, "127.0.0.1", 0, ssl=ctx, backlog=4096)
    bulk = await asyncio.start_server(ssl_bulk, "127.0.0.1", 0, ssl=ctx, backlog=4096)
    return echo.sockets[0].getsockname()[1], bulk.sockets[0].getsockname()[1]


# ------------------------------------------------------------------ tlsport

async def tlsport_echo(sock):
    try:
        async for packet in sock:
            await sock.send(packet)
    except Exception:  # noqa: BLE001 - a broken connection ends its task, as above
        pass
    finally:
        await sock.close()


async def tlsport_bulk(sock):
    try:
        head = b""
        async for data in sock:
            head += data
            if len(head) >= 9:
                break
        kind, count, rest = request(head)
        if kind == b"D":
            while count > 0:
                await sock.send(CHUNK[:count] if count < len(CHUNK) else CHUNK)
                count -= len(CHUNK)
        else:
            count -= len(rest)
            if count > 0:
                async for data in sock:
                    count -= len(data)
                    if count <= 0:
                        break
            await sock.send(b"K")
            async for _ in sock:
                pass
    except Exception:  # noqa: BLE001
        pass
    finally:
        await sock.close()


async def tlsport_acceptor(listener, handler):
    while True:
        sock = await listener.accept()
        asyncio.ensure_future(handler(sock))


async def serve_tlsport(cert, key):
    from tlsport.aio import AsyncClient
    client = await AsyncClient.spawn()
    tls = {"certfile": cert, "keyfile": key}
    echo = await client.listen(0, "127.0.0.1", tls=tls, mode="packet:2", backlog=4096)
    bulk = await client.listen(0, "127.0.0.1", tls=tls, mode="raw", backlog=4096)
    for listener, handler in ((echo, tlsport_echo), (bulk, tlsport_bulk)):
        for _ in range(ACCEPTORS):
            asyncio.ensure_future(tlsport_acceptor(listener, handler))
    return echo.port, bulk.port


async def main(lib, cert, key):
    serve = serve_tlsport if lib == "tlsport" else serve_asyncio_ssl
    echo, bulk = await serve(cert, key)
    print(f"PORTS echo={echo} bulk={bulk}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("asyncio-ssl", "tlsport"):
        sys.exit(__doc__)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "client-libs", "python"))
    asyncio.run(main(*sys.argv[1:]))
