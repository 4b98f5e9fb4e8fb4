"""Daemon bugs found while building the Python client, as reproductions.

They drive the daemon with the sans-io codec directly, so that the library is
not involved.  Open bugs are marked xfail(strict=False): they pass once the
daemon is fixed; fixed ones stay as regression tests.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from typing import Any, List

import pytest

from tlsport.codec import NEED_DATA, Data, Decoder, Reply, encode_command


class Raw:
    """A tlsportd child driven frame by frame."""

    def __init__(self, daemon_path: str) -> None:
        self.proc = subprocess.Popen([daemon_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.dec = Decoder()

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read(self, timeout: float = 3.0) -> Any:
        """The next message, or None at end of output or after timeout."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            msg = self.dec.next_event()
            if msg is not NEED_DATA:
                return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.dec.receive_data(chunk)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass


def test_accept_from_ready_queue_keeps_pipelined_commands(daemon_path: str) -> None:
    """Regression: an accept served from an already-handshaken connection used to read
    that socket inline (Listener::serve_ready -> Connection::open -> read_some) into the
    shared read buffer that ControlClient::process was still decoding, clobbering the
    frames after the accept (the client was disconnected with emsgsize).  Fixed in the
    daemon (open() now posts the first read)."""
    d = Raw(daemon_path)
    peers: List[socket.socket] = []
    try:
        d.write(encode_command({"op": "listen", "ref": 1, "host": "127.0.0.1", "port": 0, "tls": False}))
        port = d.read().body["port"]
        d.write(encode_command({"op": "accept", "ref": 2, "id": 1}))
        for _ in range(2):  # both peers send at once; the second waits in the ready queue
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"A" * 4000)
            peers.append(s)
        time.sleep(0.3)
        # One write: an accept served at once from the ready queue, then more commands.
        d.write(
            encode_command({"op": "accept", "ref": 3, "id": 1})
            + b"".join(encode_command({"op": "resolve", "ref": 10 + i, "address": "127.0.0.1"}) for i in range(5))
        )
        answered = set()
        while True:
            msg = d.read()
            if msg is None:
                break
            if isinstance(msg, Reply):
                assert msg.ok, msg.body
                answered.add(msg.ref)
            else:
                assert isinstance(msg, Data)
            if answered >= {2, 3, 10, 11, 12, 13, 14}:
                break
        assert answered >= {2, 3, 10, 11, 12, 13, 14}
    finally:
        for s in peers:
            s.close()
        d.close()


def test_port_mode_exits_after_fatal_framing_error(daemon_path: str) -> None:
    """Regression: in port mode, after disconnecting its stdio client for a broken framing
    (emsgsize) the daemon used to run forever (it had closed stdin itself, so never saw
    EOF), leaving an orphan behind every client that sent garbage."""
    d = Raw(daemon_path)
    try:
        d.write(b"\x7f\xff\xff\xff")  # a frame header announcing ~2 GiB
        msg = d.read()
        assert isinstance(msg, Reply) and msg.error_kind == "emsgsize"
        assert d.read() is None  # the daemon closed the channel
        assert d.proc.stdin is not None
        d.proc.stdin.close()
        d.proc.wait(2)  # port mode: it must exit once its control channel is gone
    finally:
        d.close()


def test_unix_client_half_close_keeps_its_sockets_until_it_hangs_up(unix_daemon: Any) -> None:
    """docs/protocol.md §1: a client that only shuts down its sending side has
    not left (its replies and events still reach it); it leaves when it closes."""
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(unix_daemon["path"])
        s.sendall(encode_command({"op": "listen", "ref": 1, "host": "127.0.0.1", "port": 0, "tls": False}))
        dec = Decoder()
        s.settimeout(3)
        while True:
            msg = dec.next_event()
            if msg is not NEED_DATA:
                break
            dec.receive_data(s.recv(4096))
        port = msg.body["port"]
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.3)
        peer = socket.create_connection(("127.0.0.1", port), timeout=1)  # still listening
        peer.close()
    finally:
        s.close()
    deadline = time.monotonic() + 3
    while _listening(port):
        assert time.monotonic() < deadline, "the listener outlived its client"
        time.sleep(0.05)


def _listening(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False
