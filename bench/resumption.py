#!/usr/bin/env python3
"""Time per full and per resumed TLS handshake (docs/protocol.md §4.2).

The daemon connects to its own listener, one connect at a time; each figure
is the mean time from the connect command to its reply, so it covers both
ends of the handshake (they share the daemon's one thread) and the TCP
connect. Full handshakes use "session_reuse": false; resumed ones offer the
session the daemon's cache kept from the connect before.

Usage: bench/resumption.py [--count N]"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

from daemon_bench import Channel


def make_cert(d, kind):
    key, cert = os.path.join(d, f"{kind}.key"), os.path.join(d, f"{kind}.pem")
    algorithm = (["-newkey", "rsa:2048"] if kind == "rsa"
                 else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
    subprocess.run(["openssl", "req", "-x509", *algorithm, "-nodes", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def per_handshake(ch, lid, port, tls, count):
    """Mean seconds from connect to its reply, over `count` connects."""
    total = 0.0
    reused = 0
    for _ in range(count):
        ch.send({"op": "accept", "id": lid})
        start = time.perf_counter()
        r = ch.reply(ch.send({"op": "connect", "host": "127.0.0.1", "port": port, "tls": tls}))
        total += time.perf_counter() - start
        assert r["ok"], r
        reused += ch.reply(ch.send({"op": "info", "id": r["id"]}))["session_reused"]
        ch.reply(ch.send({"op": "close", "id": r["id"]}))
    return total / count, reused


def measure(cert, key, version, count):
    ch = Channel()
    try:
        r = ch.reply(ch.send({"op": "listen", "host": "127.0.0.1", "port": 0,
                              "tls": {"certfile": cert, "keyfile": key}}))
        lid, port = r["id"], r["port"]
        tls = {"cacertfile": cert, "max_version": version}
        per_handshake(ch, lid, port, tls, 1)  # a session for the cache
        time.sleep(0.1)  # its TLS 1.3 tickets arrive after the handshake
        full, full_reused = per_handshake(ch, lid, port, {**tls, "session_reuse": False}, count)
        resumed, resumed_count = per_handshake(ch, lid, port, tls, count)
        assert full_reused == 0 and resumed_count == count, (full_reused, resumed_count)
        return full, resumed
    finally:
        ch.close()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=300)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for kind, label in (("ec", "P-256"), ("rsa", "RSA-2048")):
            cert, key = make_cert(d, kind)
            for version, name in (("tlsv1.3", "TLS 1.3"), ("tlsv1.2", "TLS 1.2")):
                full, resumed = measure(cert, key, version, a.count)
                print(f"{name} {label}: full {full * 1e3:.2f} ms, resumed {resumed * 1e3:.2f} ms "
                      f"per handshake ({full / resumed:.1f}x; {a.count} each)")


if __name__ == "__main__":
    sys.exit(main())
