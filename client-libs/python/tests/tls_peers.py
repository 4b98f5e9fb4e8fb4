"""Peers and files for the TLS feature tests: more certificates, SMTP-style
STARTTLS dialogues written with Python's socket and ssl, and the openssl and
gnutls command-line tools as peers."""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import _openssl


def extra_certs(certs: Dict[str, str]) -> Dict[str, str]:
    """Beside the ``certs`` fixture's: an encrypted copy of the server key
    (passphrase ``secret``), a certificate for ``alt.example``, ticket keys."""
    d = Path(certs["dir"])
    files = {"enc_key": "server-enc.key", "password_file": "password.txt", "alt_cert": "alt.pem", "alt_key": "alt.key",
             "ticket_key": "ticket.key", "other_ticket_key": "ticket2.key"}
    out = {key: str(d / name) for key, name in files.items()}
    if not Path(out["alt_cert"]).exists():
        _openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:secret", "-out", "server-enc.key", cwd=d)
        (d / "password.txt").write_text("secret\n")
        (d / "alt.ext").write_text("subjectAltName=DNS:alt.example\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl("req", *ec, "-keyout", "alt.key", "-out", "alt.csr", "-subj", "/CN=alt.example", cwd=d)
        _openssl("x509", "-req", "-in", "alt.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "alt.pem", "-days", "3", "-extfile", "alt.ext", cwd=d)
        (d / "ticket.key").write_bytes(os.urandom(80))
        (d / "ticket2.key").write_bytes(os.urandom(80))
    return out


# ----------------------------------------------------------------------------
# SMTP-style STARTTLS, the peer's side, with Python's socket and ssl


def _readline(conn: socket.socket) -> bytes:
    line = bytearray()
    while not line.endswith(b"\n"):
        c = conn.recv(1)
        if not c:
            break
        line += c
    return bytes(line)


def smtp_server_peer(ctx: ssl.SSLContext, transcript: List[bytes]):  # type: ignore[no-untyped-def]
    """A handler for PeerServer(None, ...): an SMTP-style server that upgrades
    with ``ctx`` on STARTTLS, answers EHLO and QUIT over TLS, and then waits for
    the client to end TLS."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"220 peer.example ESMTP\r\n")
        transcript.append(_readline(conn))  # EHLO
        conn.sendall(b"250-peer.example\r\n250 STARTTLS\r\n")
        transcript.append(_readline(conn))  # STARTTLS
        conn.sendall(b"220 Go ahead\r\n")
        tls = ctx.wrap_socket(conn, server_side=True)
        transcript.append(_readline(tls))  # EHLO again
        tls.sendall(b"250 peer.example\r\n")
        transcript.append(_readline(tls))  # QUIT
        tls.sendall(b"221 Bye\r\n")
        try:
            tls.recv(1)  # the client's close_notify (stoptls or close) comes first
            tls.unwrap().recv(100)  # then plaintext, until the client closes
        except (ssl.SSLError, OSError):
            pass

    return handler


def smtp_client_peer(port: int, ctx: ssl.SSLContext) -> List[bytes]:
    """An SMTP-style client: greeting, EHLO, STARTTLS, then EHLO and QUIT over TLS."""
    replies: List[bytes] = []
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    replies.append(_readline(raw))
    raw.sendall(b"EHLO client.example\r\n")
    while True:
        line = _readline(raw)
        replies.append(line)
        if line[3:4] != b"-":
            break
    raw.sendall(b"STARTTLS\r\n")
    replies.append(_readline(raw))
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(b"EHLO client.example\r\n")
    replies.append(_readline(tls))
    tls.sendall(b"QUIT\r\n")
    replies.append(_readline(tls))
    tls.close()
    return replies


# ----------------------------------------------------------------------------
# command-line peers


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def openssl_s_server(args: List[str], timeout: float = 10) -> "Tuple[subprocess.Popen[bytes], int]":
    """Start ``openssl s_server`` on a free port of 127.0.0.1; return it and its
    port once it listens (it says ``ACCEPT 127.0.0.1:PORT``)."""
    proc = subprocess.Popen(["openssl", "s_server", "-accept", "127.0.0.1:0", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                for line in buf.split(b"\n")[:-1]:
                    if line.startswith(b"ACCEPT "):
                        return proc, int(line.rsplit(b":", 1)[1])
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError(f"openssl s_server did not listen within {timeout} s: {buf!r}")
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise AssertionError(f"openssl s_server exited early: {buf!r}")
                buf += chunk
    except BaseException:
        stop_process(proc)
        raise


def stop_process(proc: "subprocess.Popen[bytes]") -> None:
    """Kill and reap ``proc``; close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            f.close()


def run_tool(argv: List[str], stdin: bytes = b"", timeout: float = 10) -> str:
    out = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
    return out.stdout.decode("utf-8", "replace") + out.stderr.decode("utf-8", "replace")
