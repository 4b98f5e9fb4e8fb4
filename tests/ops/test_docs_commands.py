"""The install and dependency commands the guides give, run as written:
docs/python.md's install into a fresh venv on Debian's Python without network,
and docs/erlang.md's rebar3 dependency in a scratch project."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import ROOT, daemon_path, doc_blocks

# Debian's own tools first: the guide is for stock Debian 12.
DEBIAN_PATH = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_python_install_line(tmp_path):
    block = doc_blocks(ROOT / "docs/python.md", "install")["python"]
    lines = block.strip().splitlines()
    # The first line installs Debian packages; the test command has installed them.
    assert lines[0].startswith("sudo apt-get install ")
    for pkg in lines[0].split()[3:]:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                                text=True).stdout
        assert "install ok installed" in status, f"{pkg} is not installed"
    # From a copy of the source (pip builds in the tree it is given).
    shutil.copytree(ROOT / "client-libs/python", tmp_path / "client-libs/python",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": DEBIAN_PATH, "HOME": str(home), "LANG": "C.UTF-8",
           # No network and no index: make any attempt to reach one fail at once.
           "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull,
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(lines[1:])], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    python = home / ".venvs/tlsport/bin/python"
    program = ("import tlsport\n"
               "with tlsport.Client.spawn() as c:\n"
               "    print(c.listen(0, '127.0.0.1', tls=False).port)\n")
    out = subprocess.run([str(python), "-c", program], cwd=tmp_path,
                         env={**env, "TLSPORTD": daemon_path()}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and int(out.stdout) > 0, out.stderr
    # The package came from the venv, not from the source tree.
    where = subprocess.run([str(python), "-c", "import tlsport; print(tlsport.__file__)"],
                           cwd="/", env=env, capture_output=True, text=True, check=True).stdout
    assert str(home / ".venvs/tlsport/lib") in where, where


def test_erlang_dependency_snippet(tmp_path):
    if not shutil.which("rebar3"):
        pytest.skip("rebar3 is not installed")
    blocks = doc_blocks(ROOT / "docs/erlang.md", "dependency")
    app = tmp_path / "myapp"
    (app / "src").mkdir(parents=True)
    (app / "rebar.config").write_text(blocks["rebar.config"])
    (app / "src/myapp.app.src").write_text(blocks["src/myapp.app.src"])
    # A copy of the library: the test leaves the source tree's _build alone.
    src = tmp_path / "tlsport"
    shutil.copytree(ROOT / "client-libs/erlang", src / "client-libs/erlang",
                    ignore=shutil.ignore_patterns("_build"))
    env = {**os.environ, "TLSPORT_SRC": str(src), "HOME": str(tmp_path)}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", blocks["shell"]], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(["rebar3", "compile"], cwd=app, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    ebin = app / "_build/default/checkouts/tlsport/ebin"
    assert (ebin / "tlsport.app").is_file() and (ebin / "ssl_socket.beam").is_file()
    # The application starts with its dependency and talks to a daemon.
    script = ("{ok, Apps} = application:ensure_all_started(myapp),"
              "true = lists:member(tlsport, Apps),"
              "{_, Port} = ssl_socket:listen('STREAM', 'AF_INET', 0, raw),"
              "io:format(\"port ~p~n\", [Port]), halt().")
    out = subprocess.run(["erl", "-noshell", "-pa", str(ebin), "-pa",
                          str(app / "_build/default/lib/myapp/ebin"), "-eval", script],
                         cwd=app, env={**env, "TLSPORTD": daemon_path()}, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("port "), out.stdout + out.stderr
