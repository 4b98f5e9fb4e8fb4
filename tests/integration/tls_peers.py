"""Certificates and peers for the tests of TLS on live connections, of what
info tells and of key material: a PKI with an intermediate CA and RSA, EC and
Ed25519 leaves (made with the openssl CLI), and functions that run real peers
(Python's ssl, openssl s_client/s_server, gnutls-cli/gnutls-serv)."""

from __future__ import annotations

import os
import pathlib
import re
import socket
import ssl
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import pytest

from conftest import free_port, is_listening

PASSWORD = "s3cret-phrase"


def run(*args: str, cwd: pathlib.Path, input: Optional[bytes] = None) -> bytes:
    return subprocess.run(args, cwd=cwd, check=True, input=input, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL).stdout


class XPki:
    """Root CA -> intermediate CA -> leaves; an unrelated root with its own leaf.

    For each leaf `name`: `name.pem` (the certificate), `name.key` (PKCS#8 PEM),
    `name-chain.pem` (leaf then intermediate)."""

    def __init__(self, d: pathlib.Path) -> None:
        self.dir = d

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def text(self, name: str) -> str:
        return (self.dir / name).read_text()

    @property
    def root(self) -> str:
        return self.path("root.pem")

    @property
    def inter(self) -> str:
        return self.path("inter.pem")

    @property
    def other_root(self) -> str:
        return self.path("otherroot.pem")

    def cert(self, name: str) -> str:
        return self.path(f"{name}.pem")

    def key(self, name: str) -> str:
        return self.path(f"{name}.key")

    def chain(self, name: str) -> str:
        return self.path(f"{name}-chain.pem")


def _ca(d: pathlib.Path, name: str, subject: str, issuer: Optional[str], serial: str) -> None:
    run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
        "-out", f"{name}.key", cwd=d)
    ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n" \
          "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    (d / f"{name}.ext").write_text(ext)
    if issuer is None:
        run("openssl", "req", "-x509", "-key", f"{name}.key", "-subj", subject, "-days", "30",
            "-set_serial", serial, "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", f"{name}.pem", cwd=d)
        return
    run("openssl", "req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr",
        cwd=d)
    run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey",
        f"{issuer}.key", "-set_serial", serial, "-days", "30", "-extfile", f"{name}.ext",
        "-out", f"{name}.pem", cwd=d)


def _leaf(d: pathlib.Path, name: str, algorithm: List[str], subject: str, san: str,
          issuer: str, serial: str) -> None:
    run("openssl", "genpkey", *algorithm, "-out", f"{name}.key", cwd=d)
    run("openssl", "req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr",
        cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
    run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey",
        f"{issuer}.key", "-set_serial", serial, "-days", "30", "-extfile", f"{name}.ext",
        "-out", f"{name}.pem", cwd=d)
    (d / f"{name}-chain.pem").write_text((d / f"{name}.pem").read_text() +
                                         (d / f"{issuer}.pem").read_text())


RSA = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
EC = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
ED25519 = ["-algorithm", "ED25519"]
LOCAL_SAN = "DNS:localhost,IP:127.0.0.1,email:postmaster@example.com"


@pytest.fixture(scope="session")
def xpki(tmp_path_factory: pytest.TempPathFactory) -> XPki:
    d = tmp_path_factory.mktemp("xpki")
    _ca(d, "root", "/O=tlsport tests/CN=Test Root", None, "0x01")
    _ca(d, "inter", "/O=tlsport tests/OU=Mail, Inc./CN=Test Intermediate", "root", "0x0a0b")
    _ca(d, "otherroot", "/CN=Other Root", None, "0x02")
    # A serial with its top bit set, and one that starts with a zero nibble.
    _leaf(d, "ec", EC, "/C=DE/O=tlsport tests/CN=localhost", LOCAL_SAN, "inter",
          "0x8f1e2d3c4b5a69788796a5b4c3d2e1f0")
    _leaf(d, "rsa", RSA, "/CN=localhost", "DNS:localhost,IP:127.0.0.1", "inter", "0x0c01")
    _leaf(d, "ed", ED25519, "/CN=localhost", "DNS:localhost,IP:127.0.0.1", "inter", "0x0d01")
    _leaf(d, "client", EC, "/O=tlsport tests/CN=client", "DNS:client", "inter", "0x0e01")
    _leaf(d, "stranger", EC, "/CN=localhost", "DNS:localhost,IP:127.0.0.1", "otherroot", "0x0f01")
    # DER forms: the certificate, an RSA key (PKCS#1) and an EC key (PKCS#8).
    run("openssl", "x509", "-in", "rsa.pem", "-outform", "DER", "-out", "rsa.der", cwd=d)
    run("openssl", "rsa", "-in", "rsa.key", "-outform", "DER", "-traditional", "-out",
        "rsa-key.der", cwd=d)
    run("openssl", "x509", "-in", "ec.pem", "-outform", "DER", "-out", "ec.der", cwd=d)
    run("openssl", "pkey", "-in", "ec.key", "-outform", "DER", "-out", "ec-key.der", cwd=d)
    run("openssl", "x509", "-in", "otherroot.pem", "-outform", "DER", "-out", "otherroot.der",
        cwd=d)
    # Encrypted keys: PKCS#8 PEM, traditional ("Proc-Type: 4,ENCRYPTED") PEM, PKCS#8 DER.
    run("openssl", "pkey", "-in", "rsa.key", "-aes256", "-passout", f"pass:{PASSWORD}",
        "-out", "rsa-enc.key", cwd=d)
    run("openssl", "rsa", "-in", "rsa.key", "-aes128", "-traditional", "-passout",
        f"pass:{PASSWORD}", "-out", "rsa-trad-enc.key", cwd=d)
    run("openssl", "pkcs8", "-topk8", "-in", "ec.key", "-v2", "aes256", "-outform", "DER",
        "-passout", f"pass:{PASSWORD}", "-out", "ec-enc.der", cwd=d)
    run("openssl", "pkey", "-in", "ed.key", "-aes256", "-passout", f"pass:{PASSWORD}",
        "-out", "ed-enc.key", cwd=d)
    (d / "root-and-inter.pem").write_text((d / "root.pem").read_text() + (d / "inter.pem").read_text())
    (d / "password.txt").write_text(PASSWORD + "\nsecond line is not the password\n")
    # The RSA leaf, its intermediate and its key in one file.
    (d / "rsa-all.pem").write_text((d / "rsa-chain.pem").read_text() + (d / "rsa.key").read_text())
    run("openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe3072",
        "-out", "ffdhe3072.pem", cwd=d)
    return XPki(d)


# ---------------------------------------------------------------- openssl facts

def x509_facts(path: str) -> Dict[str, Any]:
    """What `openssl x509` says of a certificate, in info's terms."""
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-subject", "-issuer",
                          "-serial", "-fingerprint", "-sha256", "-startdate", "-enddate",
                          "-nameopt", "RFC2253", "-ext", "subjectAltName", "-text"],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    facts: Dict[str, Any] = {}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("subject="):
            facts["subject"] = line[len("subject="):]
        elif line.startswith("issuer="):
            facts["issuer"] = line[len("issuer="):]
        elif line.startswith("serial="):
            facts["serial"] = line[len("serial="):]
        elif line.startswith("sha256 Fingerprint="):
            facts["sha256"] = line.split("=", 1)[1].replace(":", "").lower()
        elif line.startswith("notBefore="):
            facts["not_before"] = _iso(line.split("=", 1)[1])
        elif line.startswith("notAfter="):
            facts["not_after"] = _iso(line.split("=", 1)[1])
        elif line.startswith("X509v3 Subject Alternative Name"):
            names = lines[i + 1].strip().split(", ")
            facts["san"] = [n.replace("IP Address:", "IP:") for n in names]
        elif "Public Key Algorithm:" in line:
            algo = line.split(":", 1)[1].strip()
            facts["key_type"] = {"rsaEncryption": "RSA", "id-ecPublicKey": "EC",
                                 "ED25519": "ED25519"}[algo]
        elif "Public-Key: (" in line:
            facts["key_bits"] = int(line.split("(")[1].split()[0])
        elif line.strip().startswith("Signature Algorithm:") and "signature_algorithm" not in facts:
            facts["signature_algorithm"] = line.split(":", 1)[1].strip()
    facts.setdefault("san", [])
    facts["pem"] = pathlib.Path(path).read_text().split("-----END CERTIFICATE-----")[0] + \
        "-----END CERTIFICATE-----\n"
    return facts


def openssl_verify(cafile: str, cert: str, untrusted: Optional[str] = None) -> Dict[str, Any]:
    """`openssl verify`'s first error: {"code", "depth", "text"} (code 0 when it verifies)."""
    args = ["openssl", "verify", "-CAfile", cafile]
    if untrusted:
        args += ["-untrusted", untrusted]
    out = subprocess.run(args + [cert], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True).stdout
    m = re.search(r"error (\d+) at (\d+) depth lookup: (.*)", out)
    if m is None:
        assert out.strip().endswith(": OK"), out
        return {"code": 0, "text": "ok"}
    return {"code": int(m.group(1)), "depth": int(m.group(2)), "text": m.group(3).strip()}


def s_client_verdict(port: int, cafile: str) -> Dict[str, Any]:
    """What `openssl s_client` (which goes on through verify errors) says of a
    server: its "Verify return code" and the depth of the first error."""
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
                          cafile], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=10).stdout
    m = re.search(r"Verify return code: (\d+) \((.*)\)", out)
    assert m, out
    if m.group(1) == "0":
        return {"code": 0, "text": "ok"}
    first = re.search(r"depth=(\d+) .*\nverify error:", out)
    assert first, out
    return {"code": int(m.group(1)), "text": m.group(2), "depth": int(first.group(1))}


def cipher_line(name: str) -> str:
    """`openssl ciphers -v`'s description of one cipher, spaces squeezed."""
    out = subprocess.run(["openssl", "ciphers", "-v", "ALL"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    for line in out.splitlines():
        if line.split()[0] == name:
            return " ".join(line.split())
    raise AssertionError(f"openssl ciphers knows no {name}")


def _iso(text: str) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(text, "%b %d %H:%M:%S %Y GMT"))


def assert_cert_matches(cert: Dict[str, Any], path: str) -> None:
    """A CERT object of info against `openssl x509` for the same certificate."""
    facts = x509_facts(path)
    assert cert["pem"] == facts["pem"]
    for field in ("subject", "issuer", "serial", "sha256", "not_before", "not_after", "san",
                  "signature_algorithm"):
        assert cert[field] == facts[field], (field, cert[field], facts[field])
    assert cert["public_key"]["type"] == facts["key_type"]
    if "key_bits" in facts:
        assert cert["public_key"]["bits"] == facts["key_bits"]
    else:
        # openssl prints no size for Ed25519; OpenSSL 3's EVP_PKEY_get_bits
        # gives the key's length, 256.
        assert cert["public_key"]["bits"] == 256


# ---------------------------------------------------------------- peers

def wait_listening(port: int, proc: Optional[subprocess.Popen] = None, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not is_listening(port):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {port}")
        time.sleep(0.02)


class Proc:
    """A peer program; stopped (killed) by the test's `procs` fixture."""

    def __init__(self, args: List[str], listen_port: Optional[int] = None, text: bool = False) -> None:
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=text)
        self.port = listen_port
        if listen_port is not None:
            wait_listening(listen_port, self.proc)

    def write(self, data) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def readline(self, timeout: float = 10):
        """A line of stdout (a reader thread keeps a timeout honest)."""
        box: List[Any] = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        assert box, f"no line from {self.proc.args[0]} within {timeout}s"
        return box[0]

    def read_until(self, needle, timeout: float = 10):
        got = b"" if isinstance(needle, bytes) else ""
        deadline = time.monotonic() + timeout
        while needle not in got:
            line = self.readline(max(0.1, deadline - time.monotonic()))
            assert line, f"{self.proc.args[0]} ended before {needle!r}; got {got!r}"
            got += line
        return got

    def finish(self, timeout: float = 10):
        """Closes stdin, waits for the exit; (returncode, stdout, stderr)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, out, err

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


@pytest.fixture
def procs():
    started: List[Proc] = []

    def start(*args, **kwargs) -> Proc:
        p = Proc(*args, **kwargs)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def openssl_server(procs, cert: str, key: str, *extra: str) -> Proc:
    """`openssl s_server` (one client at a time; -quiet: bytes both ways through stdio)."""
    port = free_port()
    return procs(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", cert, "-key",
                  key, "-quiet", *extra], listen_port=port)


def gnutls_server(procs, certfile: str, keyfile: str, *extra: str) -> Proc:
    """`gnutls-serv --echo` on a free port."""
    port = free_port()
    return procs(["gnutls-serv", "--echo", "-p", str(port), "--x509certfile", certfile,
                  "--x509keyfile", keyfile, *extra], listen_port=port)


def gnutls_client(procs, port: int, *extra: str, host: str = "localhost") -> Proc:
    return procs(["gnutls-cli", "-p", str(port), host, *extra])


def openssl_client(procs, port: int, *extra: str) -> Proc:
    return procs(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
                  "-no_ign_eof", *extra])


def python_client_context(cafile: Optional[str], cert: Optional[str] = None,
                          key: Optional[str] = None, password: Optional[str] = None) -> ssl.SSLContext:
    if cafile is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=cafile)
    if cert:
        ctx.load_cert_chain(cert, key, password)
    return ctx


def python_server_context(cert: str, key: str, cafile: Optional[str] = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if cafile:
        ctx.load_verify_locations(cafile)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class InThread:
    """Runs `fn` in a thread; result() gives its value or raises its exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn) -> None:
        try:
            self.value = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e

    def result(self, timeout: float = 10) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the peer thread did not finish"
        if self.error is not None:
            raise self.error
        return self.value

    def outcome(self, timeout: float = 10) -> Any:
        """The value, or the exception it raised (for peers expected to fail)."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the peer thread did not finish"
        return self.error if self.error is not None else self.value


def python_tls_exchange(port: int, ctx: ssl.SSLContext, send: bytes, expect: int,
                        server_hostname: str = "localhost") -> Dict[str, Any]:
    """Connects, sends `send`, reads `expect` bytes; what the handshake gave."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as s:
            s.sendall(send)
            got = recv_exact(s, expect)
            return {"got": got, "version": s.version(), "cipher": s.cipher()[0]}


def recv_exact(s, n: int) -> bytes:
    """Exactly n bytes (fewer only at EOF)."""
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def recv_line(s) -> bytes:
    """One line, read a byte at a time so that nothing after it is taken."""
    out = b""
    while not out.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            break
        out += b
    return out


def tcp_listener() -> socket.socket:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(10)
    return srv


def env_with(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
