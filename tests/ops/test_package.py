"""scripts/package: the Debian package, unpacked into a scratch root, and the
daemon in it run from there."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import ROOT, hello_over, serve, stop


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> pathlib.Path:
    build_dir = os.environ.get("TLSPORT_PACKAGE_DIR", str(ROOT / "build-pkg"))
    out = subprocess.run([str(ROOT / "scripts" / "package")], cwd="/",
                         env={**os.environ, "BUILD_DIR": build_dir},
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = out.stdout.split()
    assert len(lines) == 1 and lines[0].endswith(".deb"), out.stdout
    return pathlib.Path(lines[0])


@pytest.fixture(scope="module")
def root(deb, tmp_path_factory) -> pathlib.Path:
    r = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg", "-x", str(deb), str(r)], check=True, timeout=60)
    return r


def field(deb: pathlib.Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_control_fields(deb):
    assert field(deb, "Package") == "tlsport"
    version = re.search(r'project\(tlsport VERSION (\S+)', (ROOT / "CMakeLists.txt").read_text()).group(1)
    assert field(deb, "Version") == version
    depends = field(deb, "Depends")
    assert "libssl3" in depends and "adduser" in depends and "libc6" in depends, depends
    contents = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True,
                              check=True).stdout
    listing = subprocess.run(["tar", "-t"], input=contents, capture_output=True, check=True).stdout
    for name in (b"./conffiles", b"./postinst", b"./prerm", b"./postrm", b"./md5sums"):
        assert name in listing.split(), listing
    conffiles = subprocess.run(["tar", "-xO", "./conffiles"], input=contents, capture_output=True,
                               check=True).stdout.decode()
    assert conffiles.split() == ["/etc/tlsport/tlsportd.json"]


def test_maintainer_scripts_are_valid_sh(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "ctrl")], check=True)
    for name in ("postinst", "prerm", "postrm"):
        script = tmp_path / "ctrl" / name
        assert os.access(script, os.X_OK)
        subprocess.run(["sh", "-n", str(script)], check=True)


def test_layout(root):
    for rel in ("usr/bin/tlsportd", "etc/tlsport/tlsportd.json", "usr/share/man/man8/tlsportd.8.gz",
                "usr/share/doc/tlsport/copyright", "usr/share/doc/tlsport/operations.md",
                "usr/lib/systemd/system/tlsportd.service", "usr/lib/systemd/system/tlsportd.socket",
                "usr/lib/sysusers.d/tlsport.conf"):
        assert (root / rel).is_file(), rel
    service = (root / "usr/lib/systemd/system/tlsportd.service").read_text()
    assert "ExecStart=/usr/bin/tlsportd --config /etc/tlsport/tlsportd.json" in service


def test_binary_is_stripped(root):
    binary = root / "usr/bin/tlsportd"
    sections = subprocess.run(["readelf", "-S", "-W", str(binary)], capture_output=True, text=True,
                              check=True).stdout
    assert ".symtab" not in sections and ".debug_info" not in sections
    if shutil.which("file"):
        assert "stripped" in subprocess.run(["file", str(binary)], capture_output=True,
                                            text=True).stdout.split(",")[-1]


def test_installed_daemon_answers_hello(root, tmp_path):
    binary = str(root / "usr/bin/tlsportd")
    sock = str(tmp_path / "pkg.sock")
    proc = serve(binary, sock, "--log-level", "info")
    try:
        reply = hello_over(sock)
        assert reply["ok"] is True and reply["protocol"] == 1
    finally:
        stop(proc)


def test_installed_daemon_with_its_config(root, tmp_path):
    """The packaged configuration, with the socket moved into a scratch directory."""
    binary = str(root / "usr/bin/tlsportd")
    conf = (root / "etc/tlsport/tlsportd.json").read_text()
    sock = str(tmp_path / "svc.sock")
    conf = conf.replace("/run/tlsport/tlsportd.sock", sock).replace('["tlsport"]', "[]")
    (tmp_path / "c.json").write_text(conf)
    out = subprocess.run([binary, "--check", "--config", str(tmp_path / "c.json")],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    proc = subprocess.Popen([binary, "--config", str(tmp_path / "c.json")],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        from conftest import wait_for_socket
        wait_for_socket(sock, proc=proc)
        assert os.stat(sock).st_mode & 0o777 == 0o660
        assert hello_over(sock)["ok"] is True
    finally:
        stop(proc)
