"""`cmake --install`: what goes where, and that what is installed works: the
daemon, its configuration, the manual page, the systemd units, the guides."""

from __future__ import annotations

import grp
import gzip
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import BUILD, FLAGS, KEYS, RESERVED, ROOT, hello_over, serve, stop


def install(destdir: pathlib.Path) -> subprocess.CompletedProcess:
    out = subprocess.run(["cmake", "--install", str(BUILD)],
                         env={**os.environ, "DESTDIR": str(destdir)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.fixture(scope="module")
def destdir(tmp_path_factory) -> pathlib.Path:
    """The build tree installed under a scratch DESTDIR."""
    dest = tmp_path_factory.mktemp("destdir")
    install(dest)
    return dest


@pytest.fixture(scope="module")
def staged(destdir) -> pathlib.Path:
    """The installation prefix inside the DESTDIR."""
    cache = (BUILD / "CMakeCache.txt").read_text()
    prefix = re.search(r"^CMAKE_INSTALL_PREFIX:PATH=(.*)$", cache, re.M).group(1)
    return destdir / prefix.lstrip("/")


def sysconf(staged: pathlib.Path) -> pathlib.Path:
    # <prefix>/etc, or /etc for the prefix /usr.
    return staged / "etc" if not str(staged).endswith("/usr") else staged.parent / "etc"


def test_files_in_their_places(staged):
    for rel in ("bin/tlsportd", "share/man/man8/tlsportd.8.gz", "share/doc/tlsport/README.md",
                "share/doc/tlsport/LICENSE", "share/doc/tlsport/operations.md",
                "share/doc/tlsport/protocol.md", "share/doc/tlsport/erlang.md",
                "share/doc/tlsport/python.md", "share/doc/tlsport/shell.md",
                "lib/systemd/system/tlsportd.service", "lib/systemd/system/tlsportd.socket",
                "lib/sysusers.d/tlsport.conf"):
        assert (staged / rel).is_file(), rel
    assert os.access(staged / "bin/tlsportd", os.X_OK)
    assert (sysconf(staged) / "tlsport" / "tlsportd.json").is_file()


def test_an_edited_config_is_kept(destdir, staged):
    conf = sysconf(staged) / "tlsport" / "tlsportd.json"
    original = conf.read_text()
    conf.write_text(original.replace('"info"', '"debug"'))
    out = install(destdir)
    assert "Kept: " in out.stdout, out.stdout
    assert '"debug"' in conf.read_text()
    conf.write_text(original)


def test_installed_daemon_serves(staged, tmp_path):
    binary = str(staged / "bin/tlsportd")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout.startswith("tlsportd ")
    proc = serve(binary, str(tmp_path / "d.sock"))
    try:
        assert hello_over(str(tmp_path / "d.sock"))["ok"] is True
    finally:
        stop(proc)


def test_installed_config_is_valid(staged):
    conf = sysconf(staged) / "tlsport" / "tlsportd.json"
    out = subprocess.run([str(staged / "bin/tlsportd"), "--check", "--config", str(conf)],
                         capture_output=True, text=True, timeout=10)
    try:
        grp.getgrnam("tlsport")
    except KeyError:
        # The group comes with the package or systemd-sysusers; the error says what is missing.
        assert out.returncode == 2 and 'key "allow_gids": no group tlsport' in out.stderr, out.stderr
        return
    assert out.returncode == 0 and out.stdout.strip() == f"{conf}: ok", out.stderr


def man_text(staged) -> str:
    source = gzip.decompress((staged / "share/man/man8/tlsportd.8.gz").read_bytes()).decode()
    assert not re.search(r"@[A-Z_]+@", source), "an unconfigured @VARIABLE@ in the manual"
    out = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=source,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    out = subprocess.run(["groff", "-man", "-Tascii", "-P", "-cbou"], input=source,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    return out.stdout


def test_man_page(staged):
    if not shutil.which("groff"):
        pytest.skip("groff is not installed (Debian package groff-base)")
    text = man_text(staged)
    for section in ("NAME", "SYNOPSIS", "OPTIONS", "CONFIGURATION", "SOCKET ACTIVATION",
                    "LOGGING", "SIGNALS", "EXIT STATUS", "ENVIRONMENT", "FILES"):
        assert re.search(rf"^{section}$", text, re.M), section
    flat = re.sub(r"\s+", " ", text).replace("\u2010", "-")
    for flag in FLAGS:
        assert flag in flat, flag
    for key in KEYS + RESERVED + ["SIGTERM", "SIGHUP", "SIGINT"]:
        assert key in flat, key


def test_every_flag_of_help_is_documented(staged):
    help_text = subprocess.run([str(staged / "bin/tlsportd"), "--help"], capture_output=True,
                               text=True, timeout=10).stdout
    flags = set(re.findall(r"^\s+(--[a-z-]+)", help_text, re.M))
    assert flags == set(FLAGS), flags ^ set(FLAGS)
    ops = (ROOT / "docs" / "operations.md").read_text()
    for flag in FLAGS:
        if flag not in ("--help", "--version", "--config", "--check"):
            assert f"`{flag}" in ops or f"{flag}`" in ops, flag
    for key in KEYS + RESERVED:
        assert f"`{key}`" in ops, key


def units(staged, tmp_path) -> pathlib.Path:
    """The units, with ExecStart pointing at the staged daemon, for systemd-analyze."""
    d = tmp_path / "units"
    d.mkdir()
    for name in ("tlsportd.service", "tlsportd.socket"):
        text = (staged / "lib/systemd/system" / name).read_text()
        text = re.sub(r"(Exec\w+=)\S+/bin/tlsportd", rf"\g<1>{staged}/bin/tlsportd", text)
        (d / name).write_text(text)
    return d


def test_units(staged, tmp_path):
    service = (staged / "lib/systemd/system/tlsportd.service").read_text()
    socket_unit = (staged / "lib/systemd/system/tlsportd.socket").read_text()
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only",
                 "PrivateTmp=yes", "PrivateDevices=yes", "User=tlsport", "RestrictNamespaces=yes",
                 "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "SystemCallFilter=@system-service",
                 "Requires=tlsportd.socket", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert re.search(rf"^{re.escape(line)}$", service, re.M), line
    assert "@" not in service.replace("@system-service", "").replace("@privileged", "")
    for line in ("ListenStream=/run/tlsport/tlsportd.sock", "SocketMode=0660", "SocketGroup=tlsport"):
        assert re.search(rf"^{re.escape(line)}$", socket_unit, re.M), line
    m = re.search(r"^ExecStart=(\S+) --config (\S+)$", service, re.M)
    assert m and m.group(2).endswith("/tlsport/tlsportd.json"), service
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    d = units(staged, tmp_path)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", "./tlsportd.socket",
                          "./tlsportd.service"], cwd=d, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "./tlsportd.service"],
                         cwd=d, capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for tlsportd.service: ([\d.]+)", out.stdout)
    assert m and float(m.group(1)) <= 2.5, out.stdout[-2000:]


def test_sysusers_file(staged):
    text = (staged / "lib/sysusers.d/tlsport.conf").read_text()
    assert re.search(r"^u tlsport ", text, re.M)
