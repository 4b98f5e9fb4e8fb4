"""Certificates and peers for the TLS serving tests (SNI, ALPN, sessions,
ticket keys, named contexts, CRLs, OCSP, key logs, timeouts).

The certificates come from a small CA run with `openssl ca` (so it has the
index a CRL and an OCSP responder need); the peers are programs nobody here
wrote: openssl s_client/s_server, gnutls-cli, Python's ssl, Erlang's ssl."""

from __future__ import annotations

import os
import pathlib
import subprocess
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from conftest import Client

CA_CONFIG = """\
[ ca ]
default_ca = serving
[ serving ]
dir = .
database = index.txt
new_certs_dir = newcerts
serial = serial
crlnumber = crlnumber
certificate = ca.pem
private_key = ca.key
default_md = sha256
default_days = 30
default_crl_days = 30
policy = anything
copy_extensions = none
unique_subject = no
[ anything ]
commonName = supplied
[ leaf ]
basicConstraints = CA:FALSE
subjectAltName = $ENV::SAN
[ responder ]
basicConstraints = CA:FALSE
extendedKeyUsage = OCSPSigning
"""

# name -> (common name, subjectAltName)
LEAVES = {
    "server": ("localhost", "DNS:localhost,IP:127.0.0.1"),
    "a": ("a.example", "DNS:a.example"),
    "wild": ("*.b.example", "DNS:*.b.example"),
    "client": ("client", "DNS:client"),
    "revoked_client": ("revoked-client", "DNS:revoked-client"),
    "revoked_server": ("localhost", "DNS:localhost,IP:127.0.0.1"),
}


class ServingPki:
    """Paths of the serving CA's files: `ca`, `crl`, `ocsp` (a DER response
    saying "good" for `server`), and `<leaf>_cert`/`<leaf>_key` per leaf."""

    def __init__(self, d: pathlib.Path) -> None:
        self.dir = d
        self.ca = str(d / "ca.pem")
        self.crl = str(d / "crl.pem")
        self.ocsp = str(d / "ocsp-server.der")
        for name in LEAVES:
            setattr(self, f"{name}_cert", str(d / f"{name}.pem"))
            setattr(self, f"{name}_key", str(d / f"{name}.key"))

    def cert(self, name: str) -> Dict[str, str]:
        return {"certfile": str(self.dir / f"{name}.pem"), "keyfile": str(self.dir / f"{name}.key")}


def _openssl(d: pathlib.Path, *args: str) -> None:
    env = dict(os.environ, SAN="DNS:unused")
    r = subprocess.run(["openssl", *args], cwd=d, env=env, capture_output=True, text=True)
    assert r.returncode == 0, (args, r.stdout, r.stderr)


def _ec_request(d: pathlib.Path, name: str, cn: str) -> None:
    _openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")


def _sign(d: pathlib.Path, name: str, extensions: str, san: str = "DNS:unused") -> None:
    env = dict(os.environ, SAN=san)
    r = subprocess.run(["openssl", "ca", "-batch", "-config", "ca.cnf", "-extensions", extensions,
                        "-in", f"{name}.csr", "-out", f"{name}.pem", "-notext"],
                       cwd=d, env=env, capture_output=True, text=True)
    assert r.returncode == 0, (name, r.stderr)


@pytest.fixture(scope="session")
def spki(tmp_path_factory: pytest.TempPathFactory) -> ServingPki:
    d = tmp_path_factory.mktemp("serving-pki")
    (d / "ca.cnf").write_text(CA_CONFIG)
    (d / "newcerts").mkdir()
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    (d / "crlnumber").write_text("1000\n")
    _openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "30", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=serving-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, (cn, san) in LEAVES.items():
        _ec_request(d, name, cn)
        _sign(d, name, "leaf", san)
    _ec_request(d, "responder", "ocsp-responder")
    _sign(d, "responder", "responder")
    _openssl(d, "ca", "-config", "ca.cnf", "-revoke", "revoked_client.pem")
    _openssl(d, "ca", "-config", "ca.cnf", "-revoke", "revoked_server.pem")
    _openssl(d, "ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem")
    # An OCSP response made offline: a request for the server's certificate,
    # answered from the CA's index by a delegated responder.
    _openssl(d, "ocsp", "-issuer", "ca.pem", "-cert", "server.pem", "-no_nonce",
             "-reqout", "ocsp-request.der")
    _openssl(d, "ocsp", "-index", "index.txt", "-CA", "ca.pem", "-rsigner", "responder.pem",
             "-rkey", "responder.key", "-reqin", "ocsp-request.der", "-ndays", "1",
             "-respout", "ocsp-server.der")
    return ServingPki(d)


# ---------------------------------------------------------------- daemon side

def listen(client: Client, tls: Any, **extra: Any) -> Dict[str, Any]:
    return client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": tls, **extra})


def connect(client: Client, port: int, tls: Any, host: str = "127.0.0.1",
            **extra: Any) -> Dict[str, Any]:
    msg = {"op": "connect", "host": host, "port": port, "tls": tls, "timeout_ms": 5000}
    msg.update(extra)
    return client.call(msg, timeout=max(10.0, msg["timeout_ms"] / 1000 + 5))


def info(client: Client, sock_id: int) -> Dict[str, Any]:
    return client.ok({"op": "info", "id": sock_id})


def subject(cert: Optional[Dict[str, Any]]) -> Optional[str]:
    return None if cert is None else cert["subject"]


def round_trip(client: Client, a: int, b: int) -> None:
    """Bytes both ways between two daemon sockets: whatever the server sent
    after its handshake (TLS 1.3 tickets) has reached the client."""
    client.deliver(a, b"ping")
    assert client.read_data(b, 4) == b"ping"
    client.deliver(b, b"pong")
    assert client.read_data(a, 4) == b"pong"


def pair(client: Client, listener: Dict[str, Any], tls: Any,
         **extra: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """A connect to one of our own listeners: (connect reply, accept reply)."""
    aref = client.send({"op": "accept", "id": listener["id"]})
    c = connect(client, listener["port"], tls, **extra)
    assert c["ok"], c
    a = client.reply(aref)
    assert a["ok"], a
    return c, a


# ---------------------------------------------------------------- peers

def run(args: Sequence[str], stdin: bytes = b"", timeout: float = 10) -> Tuple[int, str]:
    """Runs a peer program to its end: (exit status, stdout and stderr)."""
    r = subprocess.run(list(args), input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace")


def s_client(port: int, *args: str, stdin: bytes = b"", hold: Optional[str] = None,
             linger: float = 0, timeout: float = 10) -> Tuple[int, str]:
    """`openssl s_client` to 127.0.0.1:port. Its stdin is closed at once (it
    then closes after the handshake); with `hold`, once that file exists and
    is not empty (s_client writes -sess_out when a TLS 1.3 ticket arrives,
    after the handshake); with `linger`, after that many seconds (to hear
    what a TLS 1.3 server says after the handshake). Either way, sooner if
    s_client ends by itself."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args]
    if hold is None and not linger:
        return run(cmd, stdin, timeout)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    start = time.monotonic()
    deadline = start + (linger or timeout)
    while proc.poll() is None and time.monotonic() < deadline:
        if hold is not None and os.path.exists(hold) and os.path.getsize(hold) > 0:
            break
        time.sleep(0.02)
    try:
        out, _ = proc.communicate(stdin, timeout=max(1.0, start + timeout - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, out.decode(errors="replace")


def gnutls_cli(port: int, *args: str, timeout: float = 10) -> Tuple[int, str]:
    """gnutls-cli to 127.0.0.1:port, its stdin closed at once. After the
    handshake it sends close_notify and waits a while for the server's."""
    return run(["gnutls-cli", "--port", str(port), *args, "127.0.0.1"], b"", timeout)


class Background:
    """A peer program left running (stdin open) while the daemon's side is
    looked at; finish() closes its stdin and collects what it printed."""

    def __init__(self, args: Sequence[str]) -> None:
        self.proc = subprocess.Popen(list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)

    def finish(self, timeout: float = 10) -> Tuple[int, str]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return self.proc.returncode, out.decode(errors="replace")


def gnutls_cli_background(port: int, *args: str) -> Background:
    return Background(["gnutls-cli", "--port", str(port), *args, "127.0.0.1"])


class Server:
    """A server program on a free loopback port, stopped by stop()."""

    def __init__(self, args: List[str], port: int) -> None:
        import socket
        self.port = port
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise AssertionError(f"{args[0]} did not start: {self.output()}")
                time.sleep(0.05)

    def output(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stdout.read().decode(errors="replace")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        return self.output()


def s_server(spki: ServingPki, *extra: str, cert: str = "server") -> Server:
    from conftest import free_port
    port = free_port()
    return Server(["openssl", "s_server", "-accept", f"127.0.0.1:{port}",
                   "-cert", str(spki.dir / f"{cert}.pem"), "-key", str(spki.dir / f"{cert}.key"),
                   "-quiet", *extra], port)
