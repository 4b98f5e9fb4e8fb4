"""The README's quick start, run from the README's own text: the daemon block
(scripts/run.sh) in the background, then the hello and the HTTPS fetch
blocks, as a reader pastes them into another terminal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest

from conftest import ROOT, doc_blocks, wait_for_socket

SOCK = ROOT / "run" / "tlsportd.sock"


def live(path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
        return True
    except OSError:
        return False


def paste(block: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs a block in bash, from the repository root, in its own process group."""
    proc = subprocess.Popen(["bash", "-c", block], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the block did not finish in {timeout} s:\n{out}\n{err}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind (s_server, socat)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(block, proc.returncode, out, err)


@pytest.fixture(scope="module")
def readme_daemon():
    blocks = doc_blocks(ROOT / "README.md", "readme-demo")
    assert set(blocks) == {"daemon", "hello", "fetch"}, blocks.keys()
    if live(SOCK):
        pytest.skip(f"a daemon already serves {SOCK} (stop your scripts/run.sh first)")
    proc = subprocess.Popen(["bash", "-c", blocks["daemon"]], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        # scripts/run.sh checks packages and builds (incremental) before serving.
        wait_for_socket(str(SOCK), timeout=600, proc=proc)
        yield blocks
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not SOCK.exists(), "the daemon left its socket behind"


def test_hello(readme_daemon):
    out = paste(readme_daemon["hello"])
    assert out.returncode == 0, out.stderr
    assert '"ok":true' in out.stdout and '"protocol":1' in out.stdout, out.stdout


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_fetch_every_time(readme_daemon, attempt):
    """Pasted again and again: no race with s_server's start, no socket id assumed."""
    out = paste(readme_daemon["fetch"])
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert '"ok":true' in lines[0] and '"ref":1' in lines[0], lines[0]
    assert "HTTP/1.0 200 ok" in out.stdout, out.stdout
    assert '"event":"socket_closed"' in lines[-1], lines[-1]
