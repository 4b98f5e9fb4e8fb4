"""Operations: the configuration file and its checks, socket activation,
privilege drop, who may use the Unix socket, logs, and the descriptor limit.

Tests that need other users create scratch users with useradd, and so run
only as root; elsewhere they are skipped with the reason."""

from __future__ import annotations

import grp
import json
import os
import pathlib
import pty
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

import pytest

from conftest import daemon_path, sanitizer_reports, unix_client, wait_for_path

HELLO = b'{"op":"hello","ref":1}\n'
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d tlsportd\[\d+\] "

# Every configuration key, with its flag and a valid value.
KEYS = {
    "control": ("--control", "lines"),
    "packet": ("--packet", "2"),
    "terms": ("--terms", "etf"),
    "nouse_stdio": ("--nouse-stdio", None),
    "stdio": ("--stdio", None),
    "unix": ("--unix", "/tmp/x.sock"),
    "socket_mode": ("--socket-mode", "0660"),
    "allow_uids": ("--allow-uids", "0,root"),
    "allow_gids": ("--allow-gids", "0,root"),
    "user": ("--user", "root"),
    "group": ("--group", "root"),
    "max_clients": ("--max-clients", "10"),
    "max_sockets": ("--max-sockets", "1000"),
    "max_message": ("--max-message", "4096"),
    "client_buffer": ("--client-buffer", "65536"),
    "socket_buffer": ("--socket-buffer", "65536"),
    "peer_memory_budget": ("--peer-memory-budget", "16777216"),
    "handshake_timeout_ms": ("--handshake-timeout", "5000"),
    "idle_timeout_ms": ("--idle-timeout", "60000"),
    "close_timeout_ms": ("--close-timeout", "2000"),
    "max_grace_ms": ("--max-grace", "10000"),
    "stats_listen": ("--stats-listen", "127.0.0.1:9464"),
    "core_dumps": ("--core-dumps", None),
    "log_level": ("--log-level", "debug"),
    "log_destination": ("--log-destination", "stderr"),
    "log_file": ("--log-file", "/tmp/tlsportd-test.log"),
    "syslog_socket": ("--syslog-socket", "/dev/log"),
}
CONFIG_VALUES = {
    "nouse_stdio": False, "stdio": True, "packet": 2, "max_clients": 10, "max_sockets": 1000,
    "max_message": 4096, "client_buffer": 65536, "socket_buffer": 65536,
    "handshake_timeout_ms": 5000, "allow_uids": [0, "root"], "allow_gids": ["root"],
    "peer_memory_budget": 16777216, "idle_timeout_ms": 60000, "close_timeout_ms": 2000,
    "max_grace_ms": 10000, "core_dumps": True,
}


class Proc:
    """A process whose stderr is collected line by line."""

    def __init__(self, cmd: List[str], **kw) -> None:
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.DEVNULL)
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, **kw)
        self.lines: List[bytes] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def text(self) -> str:
        return b"".join(self.lines).decode(errors="replace")

    def wait_for(self, needle: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if time.monotonic() > deadline or (self.proc.poll() is not None and not self._reader.is_alive()):
                raise AssertionError(f"{needle!r} not in stderr: {self.text()!r}")
            time.sleep(0.02)
        return self.text()

    def finish(self, sig: Optional[int] = signal.SIGTERM, timeout: float = 10) -> int:
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(5)
        reports = sanitizer_reports(self.lines)
        assert not reports, self.text()[-4000:]
        return rc


def run(args: List[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([daemon_path(), *args], capture_output=True, text=True, timeout=20, **kw)


def hello_over(path: str) -> Dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(HELLO)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            assert chunk, "the daemon closed the connection"
            data += chunk
        return json.loads(data)


def refused(path: str) -> bool:
    """True when the daemon closes the connection without answering."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        try:
            s.sendall(HELLO)
            return s.recv(4096) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


@pytest.fixture
def shared_dir():
    """A directory every user may enter (pytest's tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="tlsport-ops-", dir="/tmp")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- config and --check

def write(path: pathlib.Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_check_accepts_a_good_config(tmp_path):
    conf = write(tmp_path / "ok.json", json.dumps({"unix": "run/d.sock", "log_level": "info"}))
    out = run(["--check", "--config", conf])
    assert out.returncode == 0 and out.stdout.strip() == f"{conf}: ok", out


def test_check_accepts_every_key_and_every_flag(tmp_path):
    conf = {k: CONFIG_VALUES.get(k, v[1]) for k, v in KEYS.items()}
    out = run(["--check", "--config", write(tmp_path / "all.json", json.dumps(conf))])
    assert out.returncode == 0, out.stderr
    flags: List[str] = []
    for flag, value in KEYS.values():
        flags += [flag] if value is None else [flag, value]
    out = run(["--check", *flags, "--log-syslog", "--no-stdio", "--no-core-dumps"])
    assert out.returncode == 0, out.stderr


def test_every_key_has_a_flag_in_help():
    text = run(["--help"]).stdout
    for key, (flag, _) in KEYS.items():
        assert re.search(rf"^  {re.escape(flag)}\b", text, re.M), (key, flag)


@pytest.mark.parametrize("text,needle", [
    ('{\n  "unix": "a.sock",\n  "max_sockets": 10,\n}\n', ":4:1: JSON syntax error"),
    ('{\n  "unix": "a.sock"\n  "log_level": "info"\n}', ":3:13: JSON syntax error"),
    ('[1, 2]', ": the configuration must be a JSON object"),
    ('{"unix": "a.sock", "max_sockets": 0}', ': key "max_sockets": must be an integer 1..10000000, not 0'),
    ('{"unix": "a.sock", "max_sockets": "lots"}', ': key "max_sockets": must be an integer'),
    ('{"unix": "a.sock", "packet": 3}', ': key "packet": must be 1, 2 or 4, not 3'),
    ('{"unix": "a.sock", "socket_mode": 660}', ': key "socket_mode": must be an octal mode as a string'),
    ('{"unix": "a.sock", "socket_mode": "0066"}', ': key "socket_mode": must let the daemon'),
    ('{"unix": "a.sock", "stdio": "yes"}', ': key "stdio": must be true or false'),
    ('{"unix": "a.sock", "log_level": "loud"}', ': key "log_level": must be debug, info'),
    ('{"unix": "a.sock", "log_destination": "email"}', ': key "log_destination": must be stderr, file or syslog'),
    ('{"unix": "a.sock", "user": "no-such-user-xyz"}', ': key "user": no user no-such-user-xyz'),
    ('{"unix": "a.sock", "allow_gids": ["no-such-group-xyz"]}', ': key "allow_gids": no group no-such-group-xyz'),
    ('{"unix": "a.sock", "allow_uids": "root"}', ': key "allow_uids": must be a list'),
    ('{"unix": "a.sock", "unix": "b.sock"}', ': key "unix" is given twice'),
    ('{"unix": "a.sock", "colour": "blue"}', ': key "colour": not a setting'),
    ('{"unix": "a.sock", "contexts": {}}', ': key "contexts": reserved for named TLS contexts'),
    ('{"unix": "a.sock", "stats": {}}', ': key "stats": not a setting; did you mean "stats_listen"?'),
    ('{"unix": "a.sock", "control": "xml"}', ': key "control": must be binary, lines (raw), packet:N'),
    ('{"unix": "a.sock", "idle_timeout_ms": -1}', ': key "idle_timeout_ms": must be an integer 0..86400000 ms'),
    ('{"unix": "a.sock", "close_timeout_ms": 0}', ': key "close_timeout_ms": must be an integer 1..3600000 ms'),
    ('{"unix": "a.sock", "max_grace_ms": "long"}', ': key "max_grace_ms": must be an integer 0..86400000 ms'),
    ('{"unix": "a.sock", "peer_memory_budget": 1024}', ': key "peer_memory_budget": must be an integer 1048576..'),
    ('{"unix": "a.sock", "stats_listen": 9464}', ': key "stats_listen": must be ADDRESS:PORT'),
    ('{"unix": "a.sock", "stats_listen": "127.0.0.1:99999"}', ': key "stats_listen": must be ADDRESS:PORT'),
    ('{"unix": "a.sock", "stats_listen": "127.0.0.1:port"}', ': key "stats_listen": must be ADDRESS:PORT'),
    ('{"unix": "a.sock", "stats_listen": "localhost:9464"}', ': key "stats_listen": must be ADDRESS:PORT'),
    ('{"unix": "a.sock", "core_dumps": "yes"}', ': key "core_dumps": must be true or false'),
    ('{"unix": "' + "d/" * 60 + 'a.sock"}', ': key "unix": too long for a Unix socket'),
    ('{"stdio": false}', "nothing to serve"),
    ('{"unix": "a.sock", "log_destination": "file"}', "no log_file is given"),
])
def test_check_names_file_key_and_problem(tmp_path, text, needle):
    conf = write(tmp_path / "bad.json", text)
    for args in (["--check", "--config", conf], ["--config", conf]):
        out = run(args)
        assert out.returncode == 2, (args, out)
        assert needle in out.stderr, (needle, out.stderr)
        if needle.startswith(":"):
            assert out.stderr.startswith(f"tlsportd: {conf}{needle}"), out.stderr


def test_missing_config_is_named(tmp_path):
    out = run(["--check", "--config", str(tmp_path / "none.json")])
    assert out.returncode == 2 and f"{tmp_path}/none.json: cannot read: No such file" in out.stderr


def test_flag_errors_name_the_flag():
    out = run(["--check", "--max-sockets", "0"])
    assert out.returncode == 2 and "--max-sockets: must be an integer 1..10000000, not 0" in out.stderr
    out = run(["--check", "--user", "no-such-user-xyz"])
    assert out.returncode == 2 and "--user: no user no-such-user-xyz" in out.stderr


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    confdir = tmp_path / "etc"
    confdir.mkdir()
    (tmp_path / "run").mkdir()
    conf = write(confdir / "d.json", json.dumps(
        {"unix": "../run/d.sock", "log_file": "d.log", "log_level": "info"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = Proc([daemon_path(), "--config", conf], cwd=elsewhere)
    try:
        wait_for_path(str(tmp_path / "run" / "d.sock"))
        assert hello_over(str(tmp_path / "run" / "d.sock"))["ok"] is True
    finally:
        assert p.finish() == 0
    assert "serving clients on " + str(tmp_path / "run" / "d.sock") in (confdir / "d.log").read_text()
    assert not list(elsewhere.iterdir())


def test_flags_override_keys(tmp_path):
    conf = write(tmp_path / "d.json", json.dumps(
        {"unix": str(tmp_path / "from-config.sock"), "log_level": "none", "socket_mode": "0600"}))
    sock = str(tmp_path / "from-flag.sock")
    p = Proc([daemon_path(), "--config", conf, "--unix", sock, "--log-level", "info",
              "--socket-mode", "0660"])
    try:
        p.wait_for("serving clients on " + sock)
        assert not os.path.exists(tmp_path / "from-config.sock")
        assert os.stat(sock).st_mode & 0o777 == 0o660
    finally:
        assert p.finish() == 0


def test_max_clients(tmp_path):
    sock = str(tmp_path / "d.sock")
    p = Proc([daemon_path(), "--unix", sock, "--max-clients", "1"])
    try:
        wait_for_path(sock)
        first = unix_client(sock, lines=True)
        first.ok({"op": "hello"})
        assert refused(sock)
        first.ok({"op": "hello"})
        first.sock.shutdown(socket.SHUT_RDWR)
        first.sock.close()
        deadline = time.monotonic() + 5  # the daemon lets a leaving client drain a moment
        while refused(sock):
            assert time.monotonic() < deadline, "the freed place was not given out"
            time.sleep(0.1)
        assert hello_over(sock)["ok"] is True
    finally:
        assert p.finish() == 0


# ---------------------------------------------------------------- descriptor limit

def limits_of(pid: int) -> List[str]:
    with open(f"/proc/{pid}/limits") as f:
        return [line for line in f if line.startswith("Max open files")]


def test_fd_limit_raised_and_max_sockets_beyond_it_reported(tmp_path):
    sock = str(tmp_path / "d.sock")
    p = Proc(["prlimit", "--nofile=64:4096", daemon_path(), "--unix", sock, "--max-sockets", "5000"])
    try:
        wait_for_path(sock)
        assert limits_of(p.proc.pid)[0].split()[3:5] == ["4096", "4096"]
        p.wait_for("max_sockets 5000 is more than the descriptor limit allows (hard limit 4096")
    finally:
        assert p.finish() == 0
    out = subprocess.run(["prlimit", "--nofile=64:4096", daemon_path(), "--check", "--max-sockets",
                          "5000"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and "warning: max_sockets 5000 is more than" in out.stderr
    # Within the limit (or the default, not asked for): no warning.
    out = subprocess.run(["prlimit", "--nofile=64:4096", daemon_path(), "--check", "--max-sockets",
                          "100"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr


# ---------------------------------------------------------------- logs

def test_log_lines_have_time_and_level_on_stderr(tmp_path):
    sock = str(tmp_path / "d.sock")
    p = Proc([daemon_path(), "--unix", sock, "--log-level", "info"])
    try:
        p.wait_for("serving clients")
    finally:
        assert p.finish() == 0
    first = p.lines[0].decode()
    assert re.match(STAMP + r"info: serving clients on " + re.escape(sock) + r"\n$", first), first


def test_log_lines_end_in_crlf_on_a_terminal(tmp_path):
    sock = str(tmp_path / "d.sock")
    master, slave = pty.openpty()
    proc = subprocess.Popen([daemon_path(), "--unix", sock, "--log-level", "info"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    try:
        wait_for_path(sock)
        out = b""
        while b"\n" not in out:
            out += os.read(master, 4096)
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(master)
    # The terminal's own ONLCR would turn "\n" into "\r\n" too; the daemon's "\r\n" shows as "\r\r\n".
    assert out.rstrip(b"\n").endswith(b"\r\r") or b"\r\n" in out, out


def test_log_under_the_journal_passes_the_level(tmp_path):
    sock = str(tmp_path / "d.sock")
    r, w = os.pipe()
    st = os.fstat(w)
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    proc = subprocess.Popen([daemon_path(), "--unix", sock, "--log-level", "info"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=w, env=env)
    os.close(w)
    try:
        wait_for_path(sock)
    finally:
        proc.terminate()
        proc.wait(10)
    with os.fdopen(r, "rb") as f:
        lines = f.read().decode().splitlines()
    assert lines[0] == f"<6>info: serving clients on {sock}", lines


def test_log_file(tmp_path):
    sock = str(tmp_path / "d.sock")
    log = tmp_path / "logs" / "tlsportd.log"
    log.parent.mkdir()
    log.write_text("an older line\n")
    p = Proc([daemon_path(), "--unix", sock, "--log-level", "info", "--log-file", str(log)])
    try:
        wait_for_path(sock)
        hello_over(sock)
    finally:
        assert p.finish() == 0
    lines = log.read_text().splitlines()
    assert lines[0] == "an older line"
    assert all(re.match(STAMP + r"(debug|info|warning|error): ", line) for line in lines[1:]), lines
    assert any("client 1 connected" in line for line in lines) and "signal 15" in lines[-1]
    assert os.stat(log).st_mode & 0o777 == 0o640 or lines[0] == "an older line"
    assert b"serving" not in b"".join(p.lines)


def test_log_file_that_cannot_be_opened(tmp_path):
    out = run(["--unix", str(tmp_path / "d.sock"), "--log-file", str(tmp_path / "no" / "dir.log")])
    assert out.returncode == 1 and "cannot open log file" in out.stderr and "dir.log" in out.stderr


def test_log_syslog(tmp_path):
    sock = str(tmp_path / "d.sock")
    logsock = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(logsock)
        syslog.settimeout(5)
        conf = write(tmp_path / "d.json", json.dumps({
            "unix": "d.sock", "log_destination": "syslog", "syslog_socket": "log",
            "log_level": "info"}))
        p = Proc([daemon_path(), "--config", conf])
        try:
            first = syslog.recv(2048).decode()
        finally:
            assert p.finish() == 0
        last = b""
        try:
            while True:
                last = syslog.recv(2048)
        except socket.timeout:
            pass
    # <facility daemon (3) * 8 + severity info (6)>, then as syslog(3) writes it.
    assert re.match(r"<30>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d tlsportd\[\d+\]: info: serving "
                    r"clients on " + re.escape(sock) + "$", first), first
    assert last.startswith(b"<30>") and b"signal 15" in last
    assert p.lines == []


def test_log_syslog_flag_and_unreachable_syslog(tmp_path):
    out = run(["--unix", str(tmp_path / "d.sock"), "--log-syslog", "--syslog-socket",
               str(tmp_path / "nothing")])
    assert out.returncode == 1 and "cannot reach syslog at " + str(tmp_path / "nothing") in out.stderr


# ---------------------------------------------------------------- socket activation

def activated(tmp_path: pathlib.Path, *args: str, count: int = 1, kind: str = "unix", **kw):
    """Starts the daemon as systemd would: listening sockets from fd 3, LISTEN_FDS, LISTEN_PID."""
    socks = []
    for i in range(count):
        if kind == "unix":
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(tmp_path / f"activated{i}.sock"))
        else:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
        s.listen()
        socks.append(s)
    moves = " ".join(f"{3 + i}<&{s.fileno()}" for i, s in enumerate(socks))
    script = f'exec {moves}; LISTEN_PID=$$ LISTEN_FDS={count} exec "$@"'
    p = Proc(["bash", "-c", script, "bash", daemon_path(), *args],
             pass_fds=[s.fileno() for s in socks], **kw)
    for s in socks:
        s.close()
    return p


def test_socket_activation(tmp_path):
    sock = str(tmp_path / "activated0.sock")
    p = activated(tmp_path, "--log-level", "info")
    try:
        p.wait_for("(from systemd)")
        assert hello_over(sock)["ok"] is True
        assert hello_over(sock)["client"] == 2
        time.sleep(0.3)
        assert p.proc.poll() is None  # stdin (/dev/null) is not a control channel
    finally:
        assert p.finish() == 0
    assert os.path.exists(sock)  # the file is the socket unit's


def test_socket_activation_with_a_config_and_stdio(tmp_path):
    conf = write(tmp_path / "d.json", json.dumps({"unix": "/run/never-made.sock", "stdio": True,
                                                  "control": "lines"}))
    sock = str(tmp_path / "activated0.sock")
    p = activated(tmp_path, "--config", conf, "--log-level", "info", stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE)
    p.wait_for("(from systemd)")
    assert hello_over(sock)["ok"] is True
    p.proc.stdin.write(HELLO)
    p.proc.stdin.flush()
    assert json.loads(p.proc.stdout.readline())["ok"] is True
    # stdio is a control channel: the end of its input stops the daemon.
    p.proc.stdin.close()
    assert p.finish(sig=None) == 0
    assert not os.path.exists("/run/never-made.sock")


@pytest.mark.parametrize("count,kind,needle", [
    (2, "unix", "systemd passed 2 sockets"),
    (1, "tcp", "not a listening Unix stream socket"),
])
def test_socket_activation_refuses_what_it_cannot_serve(tmp_path, count, kind, needle):
    p = activated(tmp_path, count=count, kind=kind)
    assert p.finish(sig=None) == 1
    assert needle in p.text()


def test_socket_activation_with_systemd_socket_activate(tmp_path):
    tool = shutil.which("systemd-socket-activate")
    if not tool:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    sock = str(tmp_path / "sa.sock")
    p = Proc([tool, "-l", sock, daemon_path(), "--log-level", "info"])
    try:
        wait_for_path(sock)
        assert hello_over(sock)["ok"] is True
        p.wait_for("(from systemd)")
    finally:
        assert p.finish() == 0


def test_no_activation_for_another_pid(tmp_path):
    """LISTEN_PID of another process: the variables are not for this daemon."""
    env = {**os.environ, "LISTEN_PID": "1", "LISTEN_FDS": "1"}
    out = subprocess.run([daemon_path(), "--check"], env=env, capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0 and out.stdout.strip() == "settings: ok"


# ---------------------------------------------------------------- users (root only)

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: creates scratch users with useradd")


class Scratch:
    """Users and groups made for one test, removed after it."""

    def __init__(self) -> None:
        self.users: List[str] = []
        self.groups: List[str] = []
        self.tag = f"tp{os.getpid() % 100000}"

    def group(self, name: str) -> int:
        name = f"{self.tag}{name}"
        subprocess.run(["groupadd", "--system", name], check=True)
        self.groups.append(name)
        return grp.getgrnam(name).gr_gid

    def user(self, name: str, groups: List[str] = ()) -> pwd.struct_passwd:
        name = f"{self.tag}{name}"
        args = ["useradd", "--system", "--user-group", "--no-create-home",
                "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"]
        if groups:
            args += ["--groups", ",".join(f"{self.tag}{g}" for g in groups)]
        subprocess.run([*args, name], check=True)
        self.users.append(name)
        return pwd.getpwnam(name)

    def remove(self) -> None:
        for u in self.users:
            subprocess.run(["userdel", u], check=False)
        for g in self.groups:
            subprocess.run(["groupdel", g], check=False)


@pytest.fixture
def scratch():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates scratch users with useradd")
    if not shutil.which("useradd"):
        pytest.skip("useradd is not installed (Debian package passwd)")
    s = Scratch()
    yield s
    s.remove()


def dropping_env() -> Dict[str, str]:
    """The environment of a daemon that drops root. The kernel makes such a
    process undumpable, and LeakSanitizer's end-of-run check cannot inspect an
    undumpable process: under the sanitizers it is off for these daemons
    (AddressSanitizer and UBSan stay on)."""
    env = dict(os.environ)
    if os.environ.get("TLSPORT_SANITIZED"):
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    return env


def ids_of(pid: int) -> Dict[str, List[int]]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                out[key] = [int(x) for x in value.split()]
    return out


CLIENT = ("import json, socket, sys\n"
          "s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])\n"
          "try:\n"
          "    s.sendall(b'{\"op\":\"hello\",\"ref\":1}\\n'); reply = s.recv(4096)\n"
          "except (ConnectionResetError, BrokenPipeError):\n"
          "    reply = b''\n"
          "print(json.dumps(json.loads(reply or b'null')))\n")


def hello_as(path: str, user: int, group: int, extra: List[int] = ()) -> Optional[Dict]:
    """hello from a client process of this uid, gid and supplementary groups; None if refused."""
    out = subprocess.run([sys.executable, "-c", CLIENT, path], user=user, group=group,
                         extra_groups=list(extra), capture_output=True, text=True, timeout=20,
                         cwd="/")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_privilege_drop_after_binding(scratch, shared_dir):
    u = scratch.user("drop")
    sock = str(shared_dir / "d.sock")
    p = Proc([daemon_path(), "--unix", sock, "--user", u.pw_name, "--log-level", "info"],
             env=dropping_env())
    try:
        p.wait_for("running as uid")
        ids = ids_of(p.proc.pid)
        assert ids["Uid"] == [u.pw_uid] * 4 and ids["Gid"] == [u.pw_gid] * 4, ids
        assert ids["Groups"] == [u.pw_gid], ids
        st = os.stat(sock)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (u.pw_uid, u.pw_gid, 0o600)
        assert hello_as(sock, u.pw_uid, u.pw_gid)["ok"] is True
        assert refused(sock)  # root is another user now
    finally:
        assert p.finish() == 0
    assert "refused a Unix-socket client of uid 0" in p.text()


def test_privilege_drop_from_the_config_with_a_group(scratch, shared_dir):
    u = scratch.user("cfg")
    g = scratch.group("grp")
    conf = write(shared_dir / "d.json", json.dumps({
        "unix": "d.sock", "user": u.pw_name, "group": f"{scratch.tag}grp", "allow_uids": ["root"],
        "log_level": "info"}))
    p = Proc([daemon_path(), "--config", conf], env=dropping_env())
    try:
        p.wait_for("running as uid")
        ids = ids_of(p.proc.pid)
        assert ids["Uid"] == [u.pw_uid] * 4 and ids["Gid"] == [g] * 4 and ids["Groups"] == [g], ids
        assert hello_over(str(shared_dir / "d.sock"))["ok"] is True  # root: in allow_uids
    finally:
        assert p.finish() == 0


def test_user_switch_needs_root(scratch, shared_dir):
    u = scratch.user("plain")
    os.chown(shared_dir, u.pw_uid, u.pw_gid)
    out = subprocess.run([daemon_path(), "--unix", str(shared_dir / "d.sock"), "--user", "root"],
                         user=u.pw_uid, group=u.pw_gid, extra_groups=[], capture_output=True,
                         text=True, timeout=20, cwd="/", stdin=subprocess.DEVNULL)
    assert out.returncode == 1 and "not started as root" in out.stderr, out.stderr
    # Already that user (as under systemd's User=): nothing to do.
    p = Proc([daemon_path(), "--unix", str(shared_dir / "e.sock"), "--user", u.pw_name],
             user=u.pw_uid, group=u.pw_gid, extra_groups=[], cwd="/")
    try:
        wait_for_path(str(shared_dir / "e.sock"))
        assert p.proc.poll() is None
    finally:
        assert p.finish() == 0


def test_allowed_uids_and_gids(scratch, shared_dir):
    team = scratch.group("team")
    owner = scratch.user("own")
    listed = scratch.user("lst")
    member = scratch.user("mem", groups=["team"])
    stranger = scratch.user("str")
    sock = str(shared_dir / "d.sock")
    p = Proc([daemon_path(), "--unix", sock, "--socket-mode", "0666", "--user", owner.pw_name,
              "--allow-uids", listed.pw_name, "--allow-gids", f"{scratch.tag}team"],
             env=dropping_env())
    try:
        wait_for_path(sock)
        time.sleep(0.1)
        assert hello_as(sock, owner.pw_uid, owner.pw_gid)["ok"] is True
        assert hello_as(sock, listed.pw_uid, listed.pw_gid)["ok"] is True
        # In the group as a supplementary group (SO_PEERGROUPS), and as the primary one.
        assert hello_as(sock, member.pw_uid, member.pw_gid, [team])["ok"] is True
        assert hello_as(sock, stranger.pw_uid, team)["ok"] is True
        assert hello_as(sock, stranger.pw_uid, stranger.pw_gid) is None
        assert hello_as(sock, member.pw_uid, member.pw_gid, []) is None
    finally:
        assert p.finish() == 0
    assert f"refused a Unix-socket client of uid {stranger.pw_uid}" in p.text()
