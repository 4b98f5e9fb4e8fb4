#!/usr/bin/env python3
"""Ownership handoff across processes: an acceptor hands TLS connections to workers.

One tlsportd serves several client processes over its Unix socket.  The
acceptor listens and accepts; each accepted socket is handed with
``controlling_process`` to a named worker process, which gets it as an
``owned`` event (``client.adopted()``) and serves it.  A worker that dies
takes only its own sockets with it.

Run the self-contained demo (plain TCP unless --cert/--key are given)::

    TLSPORTD=build/daemon/tlsportd python3 client-libs/python/examples/handoff.py demo
    python3 handoff.py demo --workers 3 --connections 6 --cert server.pem --key server.key --ca ca.pem

or the two halves yourself::

    python3 handoff.py acceptor --socket /tmp/tp.sock --port 4433 --workers 2 --cert server.pem --key server.key
    python3 handoff.py worker --socket /tmp/tp.sock --name worker-1

A worker echoes every line it receives and prints one JSON line per event on
its stdout (``ready``, ``adopted``, ``closed``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

import tlsport  # noqa: E402

_print_lock = threading.Lock()


def emit(**event: Any) -> None:
    with _print_lock:
        print(json.dumps(event), flush=True)


# --------------------------------------------------------------------------- worker


def serve(sock: tlsport.Socket, name: str) -> None:
    """Echo every packet back until the peer closes."""
    packets = 0
    try:
        for data in sock:
            sock.send(data)
            packets += 1
    except tlsport.TlsportError as err:
        emit(event="closed", worker=name, id=sock.id, packets=packets, error=str(err))
        return
    emit(event="closed", worker=name, id=sock.id, packets=packets)


def worker(socket_path: str, name: str) -> int:
    with tlsport.Client.attach(socket_path, name=name) as client:
        emit(event="ready", worker=name, client=client.number)
        while True:
            try:
                sock = client.adopted()
            except tlsport.DaemonGone:
                return 0
            if not isinstance(sock, tlsport.Socket):
                continue
            emit(event="adopted", worker=name, id=sock.id, peer=sock.peer, from_name=(sock.previous_owner or (0, None))[1])
            threading.Thread(target=serve, args=(sock, name), daemon=True).start()


def start_workers(socket_path: str, count: int) -> List[subprocess.Popen]:
    """Start ``count`` worker processes, wait until each is attached, and relay
    their event lines to our stdout."""
    procs = []
    for i in range(1, count + 1):
        proc = subprocess.Popen(
            [sys.executable, __file__, "worker", "--socket", socket_path, "--name", f"worker-{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if json.loads(line or "{}").get("event") != "ready":
            raise RuntimeError(f"worker did not start: {line!r}")
        print(line, end="", flush=True)
        threading.Thread(target=_relay, args=(proc.stdout,), daemon=True).start()
    return procs


def _relay(stream: Any) -> None:
    for line in stream:
        with _print_lock:
            print(line, end="", flush=True)
    stream.close()


# --------------------------------------------------------------------------- acceptor


def hand_off(sock: tlsport.Socket, to: str) -> None:
    """Hand ``sock`` to worker ``to``, losing nothing.

    The acceptor accepts with ``active=False``: it reads nothing, so what the
    client sends waits in the kernel for the worker, and there is nothing to
    forward.  (A socket that was read from would return its unread packets
    from ``controlling_process``; the old owner must deal with those.)
    """
    leftover = sock.controlling_process(to)
    assert not leftover, "a passive socket receives nothing"


def acceptor(client: tlsport.Client, port: int, tls: Any, workers: int, connections: Optional[int]) -> int:
    lst = client.listen(port, "127.0.0.1", tls=tls, mode="line", active=False)
    emit(event="listening", port=lst.port)
    n = 0
    for sock in lst:
        n += 1
        to = f"worker-{(n - 1) % workers + 1}"
        hand_off(sock, to)
        emit(event="handed_over", id=sock.id, to=to)
        if connections is not None and n >= connections:
            break
    return 0


# --------------------------------------------------------------------------- demo


def demo(args: argparse.Namespace) -> int:
    tls: Any = False
    ctx: Optional[ssl.SSLContext] = None
    if args.cert:
        tls = {"certfile": args.cert, "keyfile": args.key or args.cert}
        ctx = ssl.create_default_context(cafile=args.ca)
        if not args.ca:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tlsportd.sock")
        with tlsport.Client.spawn(unix_path=path, name="acceptor") as client:
            procs = start_workers(path, args.workers)
            try:
                lst = client.listen(0, "127.0.0.1", tls=tls, mode="line", active=False)
                results: Dict[int, List[bytes]] = {}

                def demo_client(i: int) -> None:
                    raw = socket.create_connection(("127.0.0.1", lst.port), timeout=10)
                    conn = ctx.wrap_socket(raw, server_hostname="localhost") if ctx else raw
                    f = conn.makefile("rwb")
                    answers = []
                    for k in range(args.messages):
                        f.write(b"client %d message %d\n" % (i, k))
                        f.flush()
                        answers.append(f.readline())
                    results[i] = answers
                    f.close()
                    conn.close()

                threads = [threading.Thread(target=demo_client, args=(i,)) for i in range(args.connections)]
                for t in threads:
                    t.start()
                for n in range(args.connections):
                    sock = lst.accept(timeout=10)
                    to = f"worker-{n % args.workers + 1}"
                    hand_off(sock, to)
                    emit(event="handed_over", id=sock.id, to=to)
                for t in threads:
                    t.join(10)
                ok = all(
                    results.get(i) == [b"client %d message %d\n" % (i, k) for k in range(args.messages)]
                    for i in range(args.connections)
                )
                emit(event="done", ok=ok, connections=len(results))
                return 0 if ok else 1
            finally:
                client.close()  # the daemon exits; the workers see DaemonGone and exit
                for proc in procs:
                    try:
                        proc.wait(5)
                    except subprocess.TimeoutExpired:
                        proc.kill()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="attach as a named worker and serve adopted sockets")
    w.add_argument("--socket", required=True)
    w.add_argument("--name", required=True)
    a = sub.add_parser("acceptor", help="spawn the daemon, start workers, accept and hand off")
    a.add_argument("--socket", required=True)
    a.add_argument("--port", type=int, default=0)
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--connections", type=int, default=None, help="stop after this many")
    a.add_argument("--cert")
    a.add_argument("--key")
    d = sub.add_parser("demo", help="self-contained demo")
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--connections", type=int, default=4)
    d.add_argument("--messages", type=int, default=3)
    d.add_argument("--cert")
    d.add_argument("--key")
    d.add_argument("--ca")
    args = parser.parse_args(argv)
    if args.cmd == "worker":
        return worker(args.socket, args.name)
    if args.cmd == "acceptor":
        tls: Any = {"certfile": args.cert, "keyfile": args.key or args.cert} if args.cert else False
        with tlsport.Client.spawn(unix_path=args.socket, name="acceptor") as client:
            procs = start_workers(args.socket, args.workers)
            try:
                return acceptor(client, args.port, tls, args.workers, args.connections)
            finally:
                client.close()
                for proc in procs:
                    proc.wait(5)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
