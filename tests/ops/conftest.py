"""Shared helpers of the operations tests: the built daemon, the repository,
blocks of commands taken from the docs, and a daemon's Unix socket.

These tests exercise what an operator or a library user does: install, package,
read the manual, paste the README's and the guides' commands."""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import time
from typing import Dict

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("TLSPORT_BUILD_DIR", ROOT / "build"))

# The flags of --help and the configuration keys (docs are checked against them).
FLAGS = [
    "--config", "--check", "--control", "--packet", "--terms", "--nouse-stdio", "--stdio",
    "--no-stdio", "--unix", "--socket-mode", "--allow-uids", "--allow-gids", "--user",
    "--group", "--max-clients", "--max-sockets", "--max-message", "--client-buffer",
    "--socket-buffer", "--peer-memory-budget", "--handshake-timeout", "--idle-timeout",
    "--close-timeout", "--max-grace", "--stats-listen", "--core-dumps", "--no-core-dumps",
    "--log-level", "--log-destination",
    "--log-file", "--log-syslog", "--syslog-socket", "--help", "--version",
]
KEYS = [
    "control", "packet", "terms", "nouse_stdio", "stdio", "unix", "socket_mode", "allow_uids",
    "allow_gids", "user", "group", "max_clients", "max_sockets", "max_message",
    "client_buffer", "socket_buffer", "peer_memory_budget", "handshake_timeout_ms",
    "idle_timeout_ms", "close_timeout_ms", "max_grace_ms", "stats_listen", "core_dumps",
    "log_level", "log_destination", "log_file", "syslog_socket",
]
RESERVED = ["contexts"]


def daemon_path() -> str:
    path = os.environ.get("TLSPORTD") or str(BUILD / "daemon" / "tlsportd")
    if not os.access(path, os.X_OK):
        pytest.exit(f"tlsportd not found at {path}: build it or set TLSPORTD", 2)
    return path


def doc_blocks(path: pathlib.Path, tag: str) -> Dict[str, str]:
    """The fenced blocks of a Markdown file marked `<!-- TAG: NAME -->`, by NAME."""
    text = path.read_text()
    pattern = re.compile(r"<!-- " + re.escape(tag) + r": (\S+) -->\n```[a-z]*\n(.*?)```", re.S)
    return {name: body for name, body in pattern.findall(text)}


def wait_for_socket(path: str, timeout: float = 10.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the daemon exited ({proc.returncode}) before serving {path}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing serves {path}")
            time.sleep(0.05)


def hello_over(path: str) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b'{"op":"hello","ref":1}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            assert chunk, "the daemon closed the connection"
            data += chunk
        return json.loads(data)


def serve(binary: str, sock: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([binary, "--unix", sock, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_socket(sock, proc=proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
