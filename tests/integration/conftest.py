"""Fixtures for the daemon's integration tests: a real tlsportd child, real
certificates made with the openssl CLI, real peers (openssl s_server and
s_client, Python's ssl).  The wire codec here is written from
docs/protocol.md alone, independently of the client libraries."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import queue
import socket
import struct
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


def daemon_path() -> str:
    path = os.environ.get("TLSPORTD") or str(ROOT / "build" / "daemon" / "tlsportd")
    if not os.access(path, os.X_OK):
        pytest.exit(f"tlsportd not found at {path}: build it or set TLSPORTD", 2)
    return path


def tool_path(name: str) -> str:
    """A test program built with the daemon (tests/tools)."""
    tools = os.environ.get("TLSPORT_TEST_TOOLS") or str(ROOT / "build" / "tests" / "tools")
    path = os.path.join(tools, name)
    if not os.path.exists(path):
        pytest.exit(f"{path} not found: build the tests (or set TLSPORT_TEST_TOOLS)", 2)
    return path


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_fd_limit(wanted: int) -> None:
    """Raises this process's (and so its children's) descriptor limit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        pytest.skip(f"needs {wanted} file descriptors; the hard limit is {hard}")


# A daemon built with sanitizers (scripts/test.sh sets this for that run)
# must end every test without a report. Its memory figures are not the
# daemon's own (shadow memory, quarantine): RSS bounds are checked only in
# the plain build.
SANITIZED = bool(os.environ.get("TLSPORT_SANITIZED"))
SANITIZER_MARKS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer", b"runtime error:")


def sanitizer_reports(lines: List[bytes]) -> List[bytes]:
    if not os.environ.get("TLSPORT_SANITIZED"):
        return []
    return [line for line in lines if any(mark in line for mark in SANITIZER_MARKS)]


# ---------------------------------------------------------------- certificates

def _run(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _make_ca(d: pathlib.Path, name: str) -> None:
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_leaf(d: pathlib.Path, name: str, ca: str, cn: str, san: str) -> None:
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
         "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
    _run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
         f"{ca}.key", "-CAcreateserial", "-days", "30", "-out", f"{name}.pem",
         "-extfile", f"{name}.ext", cwd=d)


class Pki:
    """Paths of the test certificates."""

    def __init__(self, d: pathlib.Path) -> None:
        self.dir = d
        self.ca = str(d / "ca.pem")
        self.server_cert = str(d / "server.pem")
        self.server_key = str(d / "server.key")
        self.client_cert = str(d / "client.pem")
        self.client_key = str(d / "client.key")
        self.rogue_ca = str(d / "rogue.pem")
        self.rogue_cert = str(d / "rogueclient.pem")
        self.rogue_key = str(d / "rogueclient.key")
        self.encrypted_key = str(d / "server-enc.key")
        self.password = "s3cret"
        self.combined = str(d / "server-combined.pem")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "rogue")
    _make_leaf(d, "server", "ca", "localhost", "DNS:localhost,IP:127.0.0.1,IP:::1")
    _make_leaf(d, "client", "ca", "client", "DNS:client")
    _make_leaf(d, "rogueclient", "rogue", "rogue", "DNS:rogue")
    _run("openssl", "pkey", "-in", "server.key", "-aes256", "-passout", "pass:s3cret",
         "-out", "server-enc.key", cwd=d)
    (d / "server-combined.pem").write_text((d / "server.pem").read_text() + (d / "server.key").read_text())
    return Pki(d)


# ---------------------------------------------------------------- wire codec

def frame(body: bytes, header: int = 4) -> bytes:
    return len(body).to_bytes(header, "big") + body


def control(msg: Dict[str, Any], header: int = 4) -> bytes:
    return frame(b"\x00" + json.dumps(msg).encode(), header)


def data_frame(sock_id: int, data: bytes, header: int = 4) -> bytes:
    return frame(b"\x01" + struct.pack(">I", sock_id) + data, header)


class FrameReader:
    """Splits a byte stream into frames of a given header size."""

    def __init__(self, header: int = 4) -> None:
        self.header = header
        self.buf = bytearray()

    def feed(self, data: bytes) -> List[bytes]:
        self.buf += data
        out = []
        while len(self.buf) >= self.header:
            n = int.from_bytes(self.buf[: self.header], "big")
            if len(self.buf) < self.header + n:
                break
            out.append(bytes(self.buf[self.header : self.header + n]))
            del self.buf[: self.header + n]
        return out


def decode_body(body: bytes) -> Dict[str, Any]:
    if body[0] == 1:
        (sock_id,) = struct.unpack(">I", body[1:5])
        return {"event": "fromsocket", "id": sock_id, "data": body[5:]}
    assert body[0] == 0, body
    msg = json.loads(body[1:])
    if isinstance(msg.get("data"), str):
        msg["data"] = base64.b64decode(msg["data"])
    return msg


# ---------------------------------------------------------------- clients

class Client:
    """One control channel to a daemon (binary frames with JSON terms, or lines)."""

    def __init__(self, write, lines: bool = False, header: int = 4) -> None:
        self._write = write
        self.lines = lines
        self.header = header
        self.replies: Dict[Any, Dict[str, Any]] = {}
        self.unmatched: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.events: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.cond = threading.Condition()
        self.closed = False
        self.next_ref = 1
        self.raw_log: List[bytes] = []
        self.seq = 0  # arrival order of every message, across replies and events

    # reader side
    def dispatch(self, msg: Dict[str, Any]) -> None:
        with self.cond:
            self.seq += 1
            msg["_seq"] = self.seq
            if "event" in msg:
                self.events.put(msg)
            elif "ref" in msg:
                self.replies[msg["ref"]] = msg
            else:
                self.unmatched.put(msg)
            self.cond.notify_all()

    def reader_loop(self, read) -> None:
        reader = FrameReader(self.header)
        pending = b""
        while True:
            try:
                chunk = read(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            self.raw_log.append(chunk)
            if self.lines:
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        msg = json.loads(line)
                        if isinstance(msg.get("data"), str):
                            msg["data"] = base64.b64decode(msg["data"])
                        self.dispatch(msg)
            else:
                for body in reader.feed(chunk):
                    self.dispatch(decode_body(body))
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # writer side
    def send_raw(self, data: bytes) -> None:
        self._write(data)

    def send(self, msg: Dict[str, Any]) -> Any:
        msg = dict(msg)
        if "ref" not in msg and msg.get("op") != "deliver":
            msg["ref"] = self.next_ref
            self.next_ref += 1
        if self.lines:
            if isinstance(msg.get("data"), (bytes, bytearray)):
                msg["data"] = base64.b64encode(msg["data"]).decode()
            self._write(json.dumps(msg).encode() + b"\n")
        else:
            if isinstance(msg.get("data"), (bytes, bytearray)):
                msg["data"] = base64.b64encode(msg["data"]).decode()
            self._write(control(msg, self.header))
        return msg.get("ref")

    def reply(self, ref: Any, timeout: float = TIMEOUT, keep_seq: bool = False) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while ref not in self.replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError(f"no reply to ref {ref!r} (closed={self.closed})")
                self.cond.wait(left)
            msg = self.replies.pop(ref)
            msg.pop("_seq", None) if not keep_seq else None
            return msg

    def call(self, msg: Dict[str, Any], timeout: float = TIMEOUT) -> Dict[str, Any]:
        return self.reply(self.send(msg), timeout)

    def ok(self, msg: Dict[str, Any], timeout: float = TIMEOUT) -> Dict[str, Any]:
        r = self.call(msg, timeout)
        assert r["ok"] is True, r
        return r

    def error(self, msg: Dict[str, Any], kind: str, timeout: float = TIMEOUT) -> Dict[str, Any]:
        r = self.call(msg, timeout)
        assert r["ok"] is False and r["error"]["kind"] == kind, r
        return r

    def deliver(self, sock_id: int, data: bytes) -> None:
        if self.lines:
            self.send({"op": "deliver", "id": sock_id, "data": data})
        else:
            self._write(data_frame(sock_id, data, self.header))

    def event(self, timeout: float = TIMEOUT, keep_seq: bool = False) -> Dict[str, Any]:
        try:
            ev = self.events.get(timeout=timeout)
            if not keep_seq:
                ev.pop("_seq", None)
            return ev
        except queue.Empty:
            raise AssertionError("no event within timeout") from None

    def next_unmatched(self, timeout: float = TIMEOUT) -> Dict[str, Any]:
        try:
            msg = self.unmatched.get(timeout=timeout)
            msg.pop("_seq", None)
            return msg
        except queue.Empty:
            raise AssertionError("no unmatched reply within timeout") from None

    def read_data(self, sock_id: int, size: int, timeout: float = TIMEOUT) -> bytes:
        """Collects fromsocket data of one socket until `size` bytes arrived."""
        out = b""
        deadline = time.monotonic() + timeout
        while len(out) < size:
            ev = self.event(max(0.01, deadline - time.monotonic()))
            assert ev.get("id") == sock_id, ev
            assert ev["event"] == "fromsocket", ev
            out += ev["data"]
        return out

    def packets(self, sock_id: int, count: int, timeout: float = TIMEOUT) -> List[bytes]:
        out = []
        for _ in range(count):
            ev = self.event(timeout)
            assert ev["event"] == "fromsocket" and ev["id"] == sock_id, ev
            out.append(ev["data"])
        return out

    def closed_event(self, sock_id: int, timeout: float = TIMEOUT) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            ev = self.event(max(0.01, deadline - time.monotonic()))
            if ev["event"] == "socket_closed" and ev["id"] == sock_id:
                return ev


class Daemon:
    """A tlsportd child; its stdio is a control channel unless stdio=False."""

    def __init__(self, args: List[str] = (), stdio: bool = True, lines: bool = False,
                 header: int = 4, env: Optional[Dict[str, str]] = None) -> None:
        cmd = [daemon_path(), *args]
        if lines:
            cmd += ["--control", "lines"]
        if header != 4:
            cmd += ["--packet", str(header)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.stderr_lines: List[bytes] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.client: Optional[Client] = None
        if stdio:
            self.client = Client(self._write_stdin, lines=lines, header=header)
            threading.Thread(target=self.client.reader_loop,
                             args=(self.proc.stdout.read1,), daemon=True).start()

    def _drain_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def _write_stdin(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.check_sanitizers()

    def check_sanitizers(self) -> None:
        time.sleep(0.05)  # the stderr reader takes the last lines
        reports = sanitizer_reports(self.stderr_lines)
        assert not reports, b"".join(self.stderr_lines).decode(errors="replace")[-4000:]


def unix_client(path: str, lines: bool = False) -> Client:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    c = Client(s.sendall, lines=lines)
    c.sock = s  # type: ignore[attr-defined]
    threading.Thread(target=c.reader_loop, args=(s.recv,), daemon=True).start()
    return c


def wait_for_path(path: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.02)


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


@pytest.fixture
def client(daemon: Daemon) -> Client:
    assert daemon.client is not None
    return daemon.client


@pytest.fixture
def unix_daemon(tmp_path: pathlib.Path):
    path = str(tmp_path / "tlsportd.sock")
    d = Daemon(["--unix", path], stdio=False)
    wait_for_path(path)
    d.path = path  # type: ignore[attr-defined]
    yield d
    d.proc.terminate()
    try:
        d.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        d.proc.kill()
    d.check_sanitizers()


def is_listening(port: int) -> bool:
    """True when some socket listens on this TCP port (from /proc/net/tcp{,6})."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:
            pass
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpensslServer:
    """`openssl s_server` on a free loopback port."""

    def __init__(self, pki: Pki, *extra: str, www: bool = False) -> None:
        self.port = free_port()
        args = ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-cert",
                pki.server_cert, "-key", pki.server_key, *extra]
        args += ["-www"] if www else ["-quiet"]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def tls_listen(client: Client, pki: Pki, mode: str = "raw", **tls: Any) -> Dict[str, Any]:
    opts = {"certfile": pki.server_cert, "keyfile": pki.server_key}
    opts.update(tls)
    return client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "mode": mode, "tls": opts})


def client_tls(pki: Pki, **extra: Any) -> Dict[str, Any]:
    opts: Dict[str, Any] = {"cacertfile": pki.ca}
    opts.update(extra)
    return opts
