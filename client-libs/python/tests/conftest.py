"""Shared fixtures: the daemon, test certificates, TLS peers written with Python's ssl.

Run from the repository root:

    TLSPORTD=/path/to/tlsportd PYTHONPATH=client-libs/python /usr/bin/python3 -m pytest -q client-libs/python/tests
"""

from __future__ import annotations

import faulthandler
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package, when PYTHONPATH is not set

import tlsport  # noqa: E402
from tlsport import find_daemon  # noqa: E402

TEST_TIMEOUT = 15  # seconds: a test that takes longer fails (most take well under 2 s)


# ----------------------------------------------------------------------------
# time bound on every test


class TestTimedOut(Exception):
    pass


@pytest.fixture(autouse=True)
def _time_bound(request: Any) -> Iterator[None]:
    """Fail a test that runs longer than TEST_TIMEOUT; dump every thread after 2x."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise TestTimedOut(f"test took more than {TEST_TIMEOUT} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    faulthandler.dump_traceback_later(TEST_TIMEOUT * 3, exit=True)
    try:
        yield
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------
# daemon


@pytest.fixture(scope="session")
def daemon_path() -> str:
    """The tlsportd under test: $TLSPORTD, else tlsportd on PATH, else <repo>/build/daemon/tlsportd."""
    return find_daemon()


@pytest.fixture
def client(daemon_path: str) -> Iterator[tlsport.Client]:
    """A sync client with a private daemon."""
    c = tlsport.Client.spawn(daemon_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def unix_daemon(daemon_path: str, tmp_path: Path) -> Iterator[Dict[str, Any]]:
    """A ``tlsportd --unix PATH`` started by the test (no stdio channel)."""
    path = str(tmp_path / "tlsportd.sock")
    proc = subprocess.Popen([daemon_path, "--unix", path], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:  # the socket file exists before the daemon listens on it: probe
        assert proc.poll() is None, "tlsportd --unix exited early"
        assert time.monotonic() < deadline, "tlsportd did not listen on its socket"
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
            break
        except OSError:
            time.sleep(0.01)
        finally:
            probe.close()
    try:
        yield {"path": path, "proc": proc}
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ----------------------------------------------------------------------------
# certificates


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def certs() -> Iterator[Dict[str, str]]:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate,
    made with the openssl CLI; also a second, unrelated CA."""
    with tempfile.TemporaryDirectory(prefix="tlsport-certs-") as tmp:
        d = Path(tmp)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for ca in ("ca", "other_ca"):
            _openssl(
                "req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "3",
                "-subj", f"/CN=tlsport test {ca}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=d,
            )
        leaves = {
            "server": ("/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
            "client": ("/CN=tlsport test client", "extendedKeyUsage=clientAuth\n"),
        }
        for name, (subj, ext) in leaves.items():
            (d / f"{name}.ext").write_text(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" + ext
            )
            _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=d)
            _openssl(
                "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "3", "-extfile", f"{name}.ext",
                cwd=d,
            )
        yield {
            "dir": str(d),
            "ca": str(d / "ca.pem"),
            "other_ca": str(d / "other_ca.pem"),
            "server_cert": str(d / "server.pem"),
            "server_key": str(d / "server.key"),
            "client_cert": str(d / "client.pem"),
            "client_key": str(d / "client.key"),
        }


@pytest.fixture
def server_tls(certs: Dict[str, str]) -> Dict[str, Any]:
    """tls options for a tlsportd listener."""
    return {"certfile": certs["server_cert"], "keyfile": certs["server_key"]}


@pytest.fixture
def client_tls(certs: Dict[str, str]) -> Dict[str, Any]:
    """tls options for a tlsportd connect to a server with our certificate."""
    return {"cacertfile": certs["ca"], "verify": 2}


# ----------------------------------------------------------------------------
# Python ssl peers


def ssl_server_context(certs: Dict[str, str], *, require_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs["server_cert"], certs["server_key"])
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs["ca"])
    return ctx


def ssl_client_context(certs: Dict[str, str], *, client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs["ca"])
    if client_cert:
        ctx.load_cert_chain(certs["client_cert"], certs["client_key"])
    return ctx


class PeerServer:
    """A Python ssl (or plain TCP) server on 127.0.0.1 running ``handler(conn)``
    for each connection on its own thread."""

    def __init__(self, ctx: Optional[ssl.SSLContext], handler: Callable[[socket.socket], None]) -> None:
        self.ctx = ctx
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.errors: List[BaseException] = []
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True) if self.ctx else raw
        except (ssl.SSLError, OSError) as exc:
            self.errors.append(exc)
            raw.close()
            return
        try:
            self.handler(conn)
        except BaseException as exc:  # recorded for the test to inspect
            self.errors.append(exc)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(2)
        for t in self._threads:
            t.join(5)


def echo_handler(conn: socket.socket) -> None:
    """Echo until EOF, then close cleanly (close_notify for TLS)."""
    while True:
        data = conn.recv(65536)
        if not data:
            break
        conn.sendall(data)
    if isinstance(conn, ssl.SSLSocket):
        try:
            conn.unwrap()
        except (ssl.SSLError, OSError):
            pass


@pytest.fixture
def peer_server(certs: Dict[str, str]) -> Iterator[Callable[..., PeerServer]]:
    """Factory: ``peer_server(handler, tls=True, require_client_cert=False)``."""
    servers: List[PeerServer] = []

    def make(handler: Callable[[socket.socket], None] = echo_handler, *, tls: bool = True, require_client_cert: bool = False) -> PeerServer:
        ctx = ssl_server_context(certs, require_client_cert=require_client_cert) if tls else None
        s = PeerServer(ctx, handler)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def ssl_connect(port: int, certs: Optional[Dict[str, str]], *, client_cert: bool = False, timeout: float = 10) -> socket.socket:
    """A Python ssl (certs given) or plain TCP client connection to 127.0.0.1:port."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if certs is None:
        return raw
    ctx = ssl_client_context(certs, client_cert=client_cert)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_until_eof(conn: socket.socket) -> bytes:
    buf = bytearray()
    while True:
        try:
            chunk = conn.recv(65536)
        except (ssl.SSLError, ConnectionResetError):
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)
