#!/usr/bin/env python3
"""Figures for tlsportd alone: memory per idle TLS connection, bulk receive
into one controlling client, and full TLS 1.3 handshakes per second.

Usage: bench/daemon_bench.py [--connections N] [--megabytes M] [--handshakes H]
Peers are Python's ssl on loopback; the daemon is spawned with its stdio as
the control channel (binary frames, JSON terms)."""

import argparse
import json
import os
import pathlib
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DAEMON = os.environ.get("TLSPORTD", str(ROOT / "build" / "daemon" / "tlsportd"))


def control(msg):
    body = b"\x00" + json.dumps(msg).encode()
    return struct.pack(">I", len(body)) + body


class Channel:
    """The daemon's stdio, read frame by frame."""

    def __init__(self, args=()):
        self.proc = subprocess.Popen([DAEMON, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buf = bytearray()
        self.ref = 0

    def frame(self):
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    body = bytes(self.buf[4:4 + n])
                    del self.buf[:4 + n]
                    return body
            chunk = self.proc.stdout.read1(1 << 20)
            if not chunk:
                raise EOFError("daemon exited")
            self.buf += chunk

    def send(self, msg):
        self.ref += 1
        msg["ref"] = self.ref
        self.proc.stdin.write(control(msg))
        self.proc.stdin.flush()
        return self.ref

    def reply(self, ref):
        while True:
            body = self.frame()
            if body[0] == 0:
                m = json.loads(body[1:])
                if m.get("ref") == ref:
                    return m

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=5)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def make_cert(d):
    key, cert = os.path.join(d, "k.pem"), os.path.join(d, "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def listen(ch, cert, key, mode="raw"):
    r = ch.reply(ch.send({"op": "listen", "host": "127.0.0.1", "port": 0, "mode": mode,
                          "backlog": 4096, "tls": {"certfile": cert, "keyfile": key}}))
    return r["id"], r["port"]


def idle_memory(cert, key, n):
    ch = Channel()
    lid, port = listen(ch, cert, key)
    for _ in range(n):
        ch.send({"op": "accept", "id": lid})
    time.sleep(0.2)
    base = rss_kib(ch.proc.pid)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    peers = []
    for _ in range(n):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
        s.sendall(b"x")  # one record each way, then idle
        peers.append(s)
    got = 0
    while got < n:  # n accept replies + n fromsocket events
        body = ch.frame()
        if body[0] == 1:
            got += 1
    time.sleep(0.5)
    after = rss_kib(ch.proc.pid)
    per = (after - base) / n
    for s in peers:
        s.close()
    ch.close()
    return per


def bulk_receive(cert, key, megabytes):
    ch = Channel()
    lid, port = listen(ch, cert, key)
    ref = ch.send({"op": "accept", "id": lid})
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    total = megabytes << 20
    chunk = b"\x5a" * (1 << 20)

    def sender():
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
        for _ in range(megabytes):
            s.sendall(chunk)
        s.unwrap()  # close_notify both ways: a plain close would reset the connection
        s.close()

    t = threading.Thread(target=sender)
    t.start()
    ch.reply(ref)
    received = 0
    start = time.perf_counter()
    while received < total:
        body = ch.frame()
        if body[0] == 1:
            received += len(body) - 5
    elapsed = time.perf_counter() - start
    t.join()
    ch.close()
    return total / elapsed / 1e6


def handshakes(cert, key, count):
    ch = Channel()
    lid, port = listen(ch, cert, key)
    for _ in range(count):
        ch.send({"op": "accept", "id": lid})
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    start = time.perf_counter()
    done = [0]

    def client(k):
        for _ in range(k):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
            s.close()
            done[0] += 1

    threads = [threading.Thread(target=client, args=(count // 4,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ch.close()
    return done[0] / elapsed


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--megabytes", type=int, default=512)
    p.add_argument("--handshakes", type=int, default=2000)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cert, key = make_cert(d)
        print(f"idle TLS connection: {idle_memory(cert, key, a.connections):.1f} KiB each "
              f"({a.connections} connections)")
        print(f"bulk receive into one client: {bulk_receive(cert, key, a.megabytes):.0f} MB/s")
        print(f"full TLS 1.3 handshakes (Python clients, P-256): "
              f"{handshakes(cert, key, a.handshakes):.0f}/s")


if __name__ == "__main__":
    sys.exit(main())
