"""scripts/run.sh installs only what the daemon needs; scripts/test.sh the rest."""

from __future__ import annotations

import subprocess

from conftest import ROOT


def group(name: str) -> list:
    out = subprocess.run([str(ROOT / "scripts/install-deps.sh"), "--list", name],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_run_installs_only_what_the_daemon_needs():
    run = group("run")
    assert {"cmake", "libssl-dev", "libasio-dev", "nlohmann-json3-dev"} <= set(run)
    for test_only in ("googletest", "libgtest-dev", "python3-pytest", "rebar3", "erlang-base",
                      "jq", "socat", "dpkg-dev"):
        assert test_only not in run, test_only
    assert "scripts/install-deps.sh run" in (ROOT / "scripts/run.sh").read_text()


def test_test_installs_the_rest():
    run, package, test = group("run"), group("package"), group("test")
    assert set(run) < set(package) < set(test)
    for tool in ("googletest", "python3-pytest", "rebar3", "jq", "socat", "python3-venv",
                 "python3-setuptools", "python3-wheel", "python3-pytest-timeout", "dpkg-dev"):
        assert tool in test, tool
    assert "scripts/install-deps.sh test" in (ROOT / "scripts/test.sh").read_text()
    assert "scripts/install-deps.sh package" in (ROOT / "scripts/package").read_text()


def test_license_matches_what_the_libraries_declare():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert '{licenses, ["Apache-2.0"]}' in (ROOT / "client-libs/erlang/src/tlsport.app.src").read_text()
    pyproject = (ROOT / "client-libs/python/pyproject.toml").read_text()
    assert 'license = {text = "Apache-2.0"}' in pyproject
    assert "License :: OSI Approved :: Apache Software License" in pyproject
