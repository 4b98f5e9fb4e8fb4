"""The examples of docs/python.md really run.

Every fenced block preceded by ``<!-- file: NAME -->`` is written to a scratch
directory and run there (after ``make-certs.sh``), and its output checked.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]
GUIDE = REPO / "docs" / "python.md"
PACKAGE_DIR = REPO / "client-libs" / "python"


def _blocks() -> Dict[str, str]:
    text = GUIDE.read_text(encoding="utf-8")
    pattern = re.compile(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)```", re.S)
    return {m.group(1): m.group(2) for m in pattern.finditer(text)}


BLOCKS = _blocks()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, daemon_path: str) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("guide")
    for name, code in BLOCKS.items():
        (d / name).write_text(code, encoding="utf-8")
    subprocess.run(["bash", "make-certs.sh"], cwd=d, check=True, capture_output=True, timeout=30)
    yield d


def _env(daemon_path: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["TLSPORTD"] = daemon_path
    env["PYTHONPATH"] = str(PACKAGE_DIR) + os.pathsep + env.get("PYTHONPATH", "")
    env["REPO"] = str(REPO)
    return env


def _run(workdir: Path, daemon_path: str, *argv: str) -> str:
    out = subprocess.run(list(argv), cwd=workdir, env=_env(daemon_path), capture_output=True, text=True, timeout=12)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_guide_has_the_examples() -> None:
    expected = {"make-certs.sh", "hello_tls.py", "echo_server.py", "echo_client.py", "callbacks.py", "aio_echo.py",
                "handoff_small.py", "handoff-demo.sh", "passive.py", "errors.py", "codec.py", "starttls_smtp.py",
                "tls_callbacks.py", "grace.py"}
    assert expected <= set(BLOCKS)


@pytest.mark.parametrize(
    "name, expect",
    [
        ("hello_tls.py", ["b'you said: hello\\n'", "server: peer closed", "TLS: TLSv1.3"]),
        ("callbacks.py", ["got b'ping\\n'", "b'PING\\n'", "closed, reason: None"]),
        ("aio_echo.py", ["100000 bytes echoed"]),
        ("handoff_small.py", ["acceptor read b'first\\n'", "worker read b'second\\n'", "peer read b'served by worker-1\\n'"]),
        ("passive.py", ["b'one'", "count used up", "b'two'"]),
        ("errors.py", ["NetworkError econnrefused", "ValueError:", "DaemonGone:"]),
        ("starttls_smtp.py", ["client got b'220 mail.example ESMTP\\r\\n'", "server got b'STARTTLS\\r\\n'",
                              "client got b'220 Go ahead\\r\\n'", "server got b'EHLO client.example\\r\\n' over TLSv1.3",
                              "server certificate: ((('commonName', 'localhost'),),)", "client got b'221 Bye\\r\\n'"]),
        ("tls_callbacks.py", ["passphrase asked for key file", "peer CN=localhost - OpenSSL says: unable to get local issuer",
                              "connected; verify_result kept: True"]),
        ("grace.py", ["grace: 30.0", "successor read b'still there?\\n'", "peer read b'yes\\n'"]),
        ("codec.py", ["00 00 00 17 00 7b 22 6f 70", "00 00 00 07 01 00 00 00 05 68 69", "Data(socket_id=5, data=b'ok')", "True 1"]),
    ],
)
def test_example(name: str, expect: list, workdir: Path, daemon_path: str) -> None:
    out = _run(workdir, daemon_path, sys.executable, name)
    for e in expect:
        assert e in out, out


def test_echo_server_and_client(workdir: Path, daemon_path: str) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
    s.close()
    server = subprocess.Popen([sys.executable, "echo_server.py", port], cwd=workdir, env=_env(daemon_path),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == f"echo server on port {port}"
        out = _run(workdir, daemon_path, sys.executable, "echo_client.py", port)
        assert out.splitlines()[:3] == ["b'one'", "b'two'", "b'three'"]
        assert f"peer is ('127.0.0.1', {port})" in out
    finally:
        server.kill()
        server.wait(5)
        server.stdout.close()  # type: ignore[union-attr]


def test_handoff_demo_command(workdir: Path, daemon_path: str) -> None:
    out = _run(workdir, daemon_path, "bash", "handoff-demo.sh")
    assert '"event": "done", "ok": true' in out
