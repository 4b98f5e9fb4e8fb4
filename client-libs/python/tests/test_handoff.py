"""Ownership handoff across processes (examples/handoff.py workers attached to one daemon)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from conftest import ssl_connect

import tlsport

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "handoff.py"


class Workers:
    """Worker processes of examples/handoff.py, attached to a daemon's Unix socket."""

    def __init__(self, socket_path: str, daemon_path: str) -> None:
        self.path = socket_path
        self.env = {**os.environ, "TLSPORTD": daemon_path}
        self.procs: Dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "worker", "--socket", self.path, "--name", name],
            stdout=subprocess.PIPE, text=True, env=self.env,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert json.loads(line)["event"] == "ready", line
        self.procs[name] = proc
        return proc

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def acceptor(daemon_path: str, tmp_path: Path) -> Iterator[tlsport.Client]:
    """The test process: spawns the daemon (stdio) with a Unix socket for the workers."""
    path = str(tmp_path / "d.sock")
    client = tlsport.Client.spawn(daemon_path, unix_path=path, name="acceptor")
    client.socket_path = path  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def workers(acceptor: tlsport.Client, daemon_path: str) -> Iterator[Workers]:
    w = Workers(acceptor.socket_path, daemon_path)  # type: ignore[attr-defined]
    try:
        yield w
    finally:
        w.close()


N_LINES = 3000
HALF = N_LINES // 2


def _streaming_peer(port: int, certs: Dict[str, str], state: Dict[str, Any], second_half: threading.Event) -> None:
    """Send lines 0..HALF-1; when told (just before the handoff), the rest in bursts,
    then END; read the echoes until END."""
    try:
        conn = ssl_connect(port, certs)
        state["port"] = conn.getsockname()[1]
        conn.sendall(b"".join(b"%d\n" % i for i in range(HALF)))
        state["sent"] = HALF
        second_half.wait(10)
        for batch in range(HALF, N_LINES, 100):
            conn.sendall(b"".join(b"%d\n" % i for i in range(batch, batch + 100)))
            state["sent"] = batch + 100
            time.sleep(0.01)
        conn.sendall(b"END\n")
        buf = b""
        while not buf.endswith(b"END\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            buf += chunk
        state["echoed"] = buf.split(b"\n")[:-1]
        conn.unwrap()
        conn.close()
    except BaseException as exc:
        state["error"] = exc


@pytest.mark.parametrize("connections", [1, 4])
def test_stream_in_flight_crosses_handoff(
    connections: int, acceptor: tlsport.Client, workers: Workers, certs: Dict[str, str], server_tls: Dict[str, Any]
) -> None:
    """Nothing is lost, duplicated or reordered when a socket changes owner mid-stream,
    with several streams handed over at once (handoff under load).

    Each peer has sent half its stream when the acceptor, having consumed only 400
    lines, hands the socket over; the peer sends the second half while the handoff
    happens.  The acceptor's lines (consumed + returned by controlling_process) and
    the worker's (echoed back to the peer) must make up the stream exactly."""
    workers.start("worker-1")
    workers.start("worker-2")
    lst = acceptor.listen(0, "127.0.0.1", tls=server_tls, mode="line")
    states: List[Dict[str, Any]] = [{"sent": 0} for _ in range(connections)]
    go = [threading.Event() for _ in range(connections)]
    peers = []
    for st, ev in zip(states, go):  # every peer connects at once and streams at once
        p = threading.Thread(target=_streaming_peer, args=(lst.port, certs, st, ev), daemon=True)
        p.start()
        peers.append(p)
    socks = [lst.accept(timeout=5) for _ in range(connections)]
    kept: Dict[int, List[bytes]] = {s.id: [] for s in socks}
    for s in socks:
        while len(kept[s.id]) < 400:
            kept[s.id].append(s.recv(timeout=5))
    # The acceptor accepted these sockets itself, so it cannot know which peer is
    # which: release every peer's second half, then hand the sockets over at once.
    for ev in go:
        ev.set()
    sent_at_handoff = []
    for i, s in enumerate(socks):
        sent_at_handoff.append(sum(st["sent"] for st in states))
        leftover = s.controlling_process(f"worker-{i % 2 + 1}", timeout=5)
        kept[s.id].extend(leftover)
        assert s.closed
    for p in peers:
        p.join(10)
    expected = [b"%d" % i for i in range(N_LINES)]
    by_port = {st["port"]: st for st in states}
    for s in socks:  # accepts come in handshake order: match sockets and peers by port
        assert s.peer is not None
        st = by_port[s.peer[1]]
        assert "error" not in st, st.get("error")
        old_owner = [line.rstrip(b"\n") for line in kept[s.id]]
        new_owner = st["echoed"][:-1]  # everything the worker received, echoed, before END
        assert st["echoed"][-1] == b"END"
        assert old_owner + new_owner == expected, (len(old_owner), len(new_owner))
        # Lines the peer sent before the handoff and the acceptor never read went to the worker.
        assert len(old_owner) < HALF and int(new_owner[0]) < HALF
    assert sent_at_handoff[0] < connections * N_LINES, "the peers had finished before the handoff"


def _pingpong(conn: ssl.SSLSocket, text: bytes) -> bytes:
    conn.sendall(text)
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(1024)
        if not chunk:
            return buf
        buf += chunk
    return buf


def test_killed_worker_takes_only_its_own_sockets(
    acceptor: tlsport.Client, workers: Workers, certs: Dict[str, str], server_tls: Dict[str, Any]
) -> None:
    for i in (1, 2, 3):
        workers.start(f"worker-{i}")
    lst = acceptor.listen(0, "127.0.0.1", tls=server_tls, mode="line")
    conns: List[Optional[ssl.SSLSocket]] = [None] * 6

    def connect(i: int) -> None:
        conns[i] = ssl_connect(lst.port, certs)

    threads = [threading.Thread(target=connect, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    owner: Dict[int, str] = {}
    for _ in range(6):
        s = lst.accept(timeout=5)
        port = s.peer[1] if s.peer else 0
        name = f"worker-{len(owner) % 3 + 1}"
        s.setopts(active=False)
        assert s.controlling_process(name) == []
        owner[port] = name
    for t in threads:
        t.join(5)
    by_worker: Dict[str, List[ssl.SSLSocket]] = {"worker-1": [], "worker-2": [], "worker-3": []}
    for c in conns:
        assert c is not None
        by_worker[owner[c.getsockname()[1]]].append(c)
    for name, cs in by_worker.items():
        assert len(cs) == 2
        for c in cs:
            assert _pingpong(c, b"hello\n") == b"hello\n"

    os.kill(workers.procs["worker-2"].pid, signal.SIGKILL)
    workers.procs["worker-2"].wait(5)

    for c in by_worker["worker-2"]:  # the daemon closes the dead worker's sockets
        c.settimeout(5)
        try:
            assert c.recv(10) == b""
        except (ssl.SSLError, ConnectionResetError):
            pass
    for name in ("worker-1", "worker-3"):  # the others keep working
        for c in by_worker[name]:
            for k in range(3):
                assert _pingpong(c, b"still %d\n" % k) == b"still %d\n" % k
    # The dead worker's name is free again, and new handoffs work.
    workers.start("worker-2")
    newconn: List[ssl.SSLSocket] = []
    t = threading.Thread(target=lambda: newconn.append(ssl_connect(lst.port, certs)))
    t.start()
    s = lst.accept(timeout=5)
    s.controlling_process("worker-2")
    t.join(5)
    assert _pingpong(newconn[0], b"new\n") == b"new\n"
    for c in conns + newconn:
        if c is not None:
            c.close()


def test_handoff_example_demo_runs(daemon_path: str, certs: Dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "demo", "--workers", "2", "--connections", "4",
         "--cert", certs["server_cert"], "--key", certs["server_key"], "--ca", certs["ca"]],
        capture_output=True, text=True, timeout=12, env={**os.environ, "TLSPORTD": daemon_path},
    )
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert {"event": "done", "ok": True, "connections": 4} in events
    assert sum(e["event"] == "adopted" for e in events) == 4
