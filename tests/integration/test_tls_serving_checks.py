"""Serving TLS, continued: revocation lists, OCSP stapling, key logs and the
per-socket timeouts (docs/protocol.md §4, "Timeouts of a socket"), against
openssl s_client/s_server, Python's ssl and plain sockets that say nothing."""

import os
import socket
import ssl
import stat
import threading
import time

import pytest

from conftest import Daemon, fd_count
from serving import connect, info, listen, pair, s_client, s_server, spki, subject  # noqa: F401


# ---------------------------------------------------------------- CRLs

def crl_listener(client, spki, **extra):
    return listen(client, {**spki.cert("server"), "verify": 2, "cacertfile": spki.ca,
                           "crlfile": spki.crl, **extra})


@pytest.mark.parametrize("version", ["tls1_3", "tls1_2"])
def test_a_revoked_client_certificate_is_refused(client, spki, version):
    lst = crl_listener(client, spki)
    aref = client.send({"op": "accept", "id": lst["id"], "active": False})
    rc, out = s_client(lst["port"], "-CAfile", spki.ca, f"-{version}",
                       "-cert", spki.revoked_client_cert, "-key", spki.revoked_client_key,
                       linger=1.5)
    assert "certificate revoked" in out, out
    assert aref not in client.replies
    # The same listener takes a client whose certificate is not revoked
    # (the CRL covers the whole chain, the CA's own certificate included).
    rc, out = s_client(lst["port"], "-CAfile", spki.ca, f"-{version}",
                       "-cert", spki.client_cert, "-key", spki.client_key)
    assert "Verify return code: 0 (ok)" in out, out
    a = client.reply(aref)
    assert a["ok"], a
    assert subject(info(client, a["id"])["peer_certificate"]) == "CN=client"


def test_a_revoked_client_certificate_is_refused_to_python_ssl(client, spki):
    lst = crl_listener(client, spki)
    aref = client.send({"op": "accept", "id": lst["id"]})
    ctx = ssl.create_default_context(cafile=spki.ca)
    ctx.load_cert_chain(spki.revoked_client_cert, spki.revoked_client_key)
    with socket.create_connection(("127.0.0.1", lst["port"]), timeout=5) as raw:
        with pytest.raises(ssl.SSLError, match="REVOKED"):
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.recv(1)  # TLS 1.3: the server's verdict comes after the handshake
    assert aref not in client.replies


def test_daemon_client_refuses_a_revoked_server(client, spki):
    revoked = s_server(spki, cert="revoked_server")
    good = s_server(spki)
    try:
        tls = {"cacertfile": spki.ca, "crlfile": spki.crl}
        r = connect(client, revoked.port, tls)
        assert r["ok"] is False and r["error"]["kind"] == "tls", r
        assert "certificate revoked" in r["error"]["message"], r
        r = connect(client, good.port, tls)
        assert r["ok"], r
        assert info(client, r["id"])["verify_result"]["code"] == 0
        # Without the CRL the revoked certificate looks fine.
        r = connect(client, revoked.port, {"cacertfile": spki.ca})
        assert r["ok"], r
    finally:
        revoked.stop()
        good.stop()


def test_a_file_without_crl_is_bad_tls_config(client, spki):
    r = client.error({"op": "listen", "host": "127.0.0.1", "port": 0,
                      "tls": {**spki.cert("server"), "crlfile": spki.ca}}, "bad_tls_config")
    assert spki.ca in r["error"]["message"], r


# ---------------------------------------------------------------- OCSP

@pytest.mark.parametrize("version", ["tls1_3", "tls1_2"])
def test_ocsp_response_stapled_to_openssl_s_client(client, spki, version):
    lst = listen(client, {**spki.cert("server"), "ocsp_response_file": spki.ocsp})
    client.send({"op": "accept", "id": lst["id"]})
    client.send({"op": "accept", "id": lst["id"]})
    rc, out = s_client(lst["port"], "-CAfile", spki.ca, f"-{version}", "-status")
    assert "OCSP Response Status: successful (0x0)" in out, out
    assert "Cert Status: good" in out, out
    # Stapled only when asked.
    rc, out = s_client(lst["port"], "-CAfile", spki.ca, f"-{version}")
    assert "OCSP Response Status" not in out and "Verify return code: 0" in out, out


def test_daemon_client_asks_for_ocsp(client, spki):
    server = s_server(spki, "-status_file", spki.ocsp)
    try:
        r = connect(client, server.port, {"cacertfile": spki.ca, "ocsp_status_request": True})
        assert r["ok"], r
        ocsp = info(client, r["id"])["ocsp"]
        assert ocsp["status"] == "successful" and ocsp["cert_status"] == "good", ocsp
        assert ocsp["this_update"] and ocsp["next_update"], ocsp
        client.ok({"op": "close", "id": r["id"]})
        r = connect(client, server.port, {"cacertfile": spki.ca})
        assert r["ok"], r
        assert info(client, r["id"])["ocsp"] is None
    finally:
        server.stop()
    # The daemon on both ends.
    lst = listen(client, {**spki.cert("server"), "ocsp_response_file": spki.ocsp})
    c, a = pair(client, lst, {"cacertfile": spki.ca, "ocsp_status_request": True})
    assert info(client, c["id"])["ocsp"]["cert_status"] == "good"
    assert info(client, a["id"]).get("ocsp") is None  # only clients report one


def test_an_ocsp_response_file_that_is_not_one_is_bad_tls_config(client, spki):
    r = client.error({"op": "listen", "host": "127.0.0.1", "port": 0,
                      "tls": {**spki.cert("server"), "ocsp_response_file": spki.ca}},
                     "bad_tls_config")
    assert spki.ca in r["error"]["message"], r


# ---------------------------------------------------------------- key log

def key_lines(path):
    """The key-log lines of a file (openssl's own files start with a comment)."""
    with open(path) as f:
        return {line.strip() for line in f if line.strip() and not line.startswith("#")}


def test_keylog_of_a_tls13_listener_matches_s_clients(client, spki, tmp_path):
    ours, theirs = tmp_path / "daemon.keys", tmp_path / "s_client.keys"
    lst = listen(client, {**spki.cert("server"), "keylog": str(ours)})
    aref = client.send({"op": "accept", "id": lst["id"], "active": False})
    rc, out = s_client(lst["port"], "-CAfile", spki.ca, "-tls1_3", "-keylogfile", str(theirs))
    assert "Verify return code: 0 (ok)" in out, out
    client.reply(aref)
    assert stat.S_IMODE(os.stat(ours).st_mode) == 0o600
    lines = key_lines(ours)
    labels = {line.split()[0] for line in lines}
    assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
            "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"} <= labels
    assert lines == key_lines(theirs)
    # A second connection appends to the file.
    aref = client.send({"op": "accept", "id": lst["id"], "active": False})
    s_client(lst["port"], "-CAfile", spki.ca, "-tls1_3")
    client.reply(aref)
    assert len(key_lines(ours)) == 2 * len(lines)


def test_keylog_of_a_tls12_client_has_client_random(client, spki, tmp_path):
    ours, theirs = tmp_path / "daemon.keys", tmp_path / "s_server.keys"
    server = s_server(spki, "-tls1_2", "-keylogfile", str(theirs))
    try:
        r = connect(client, server.port, {"cacertfile": spki.ca, "keylog": str(ours)})
        assert r["ok"], r
        assert info(client, r["id"])["protocol"] == "TLSv1.2"
        client.ok({"op": "close", "id": r["id"]})
    finally:
        server.stop()
    assert stat.S_IMODE(os.stat(ours).st_mode) == 0o600
    lines = key_lines(ours)
    assert len(lines) == 1 and next(iter(lines)).startswith("CLIENT_RANDOM "), lines
    assert lines <= key_lines(theirs)


def test_a_keylog_that_is_a_directory_is_bad_tls_config(client, spki, tmp_path):
    r = client.error({"op": "listen", "host": "127.0.0.1", "port": 0,
                      "tls": {**spki.cert("server"), "keylog": str(tmp_path)}}, "bad_tls_config")
    assert str(tmp_path) in r["error"]["message"], r
    r = client.error({"op": "connect", "host": "127.0.0.1", "port": 1,
                      "tls": {"cacertfile": spki.ca, "keylog": str(tmp_path)}}, "bad_tls_config")
    assert str(tmp_path) in r["error"]["message"], r


# ---------------------------------------------------------------- timeouts

def python_peer(port, ca, rcvbuf=None):
    """A finished TLS handshake from Python's ssl; the socket is returned. A
    TCP close without close_notify is an error to it (SSLEOFError)."""
    raw = socket.socket()
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(5)
    raw.connect(("127.0.0.1", port))
    return ssl.create_default_context(cafile=ca).wrap_socket(
        raw, server_hostname="localhost", suppress_ragged_eofs=False)


def test_idle_timeout_closes_an_idle_socket_not_a_busy_one(client, spki):
    lst = listen(client, spki.cert("server"), idle_timeout_ms=400)
    aref = client.send({"op": "accept", "id": lst["id"]})
    idle = python_peer(lst["port"], spki.ca)
    idle_id = client.reply(aref)["id"]
    aref = client.send({"op": "accept", "id": lst["id"]})
    busy = python_peer(lst["port"], spki.ca)
    busy_id = client.reply(aref)["id"]
    start = time.monotonic()
    stop = threading.Event()

    def talk():
        while not stop.wait(0.1):
            busy.sendall(b".")

    talker = threading.Thread(target=talk)
    talker.start()
    closed = {}
    try:
        while time.monotonic() - start < 1.5:
            try:
                ev = client.event(timeout=0.1)
            except AssertionError:
                continue
            if ev["event"] == "socket_closed":
                closed[ev["id"]] = (ev["reason"], time.monotonic() - start)
    finally:
        stop.set()
        talker.join()
    assert list(closed) == [idle_id], closed
    reason, after = closed[idle_id]
    assert reason["kind"] == "timeout", reason
    assert 0.3 < after < 1.2, after
    assert idle.recv(10) == b""  # told with close_notify, not a bare TCP close
    # Once the busy one goes quiet, its turn comes.
    ev = client.closed_event(busy_id, timeout=3)
    assert ev["reason"]["kind"] == "timeout"
    idle.close()
    busy.close()


def test_idle_timeout_from_the_daemon_flag_on_a_connect(spki):
    d = Daemon(["--idle-timeout", "300"])
    server = s_server(spki)
    try:
        r = connect(d.client, server.port, {"cacertfile": spki.ca})
        assert r["ok"], r
        start = time.monotonic()
        ev = d.client.closed_event(r["id"], timeout=3)
        assert ev["reason"]["kind"] == "timeout", ev
        assert 0.2 < time.monotonic() - start < 1.5
        # A connect's own idle_timeout_ms overrides the flag.
        r = connect(d.client, server.port, {"cacertfile": spki.ca}, idle_timeout_ms=60000)
        assert r["ok"], r
        with pytest.raises(AssertionError):
            d.client.closed_event(r["id"], timeout=0.8)
    finally:
        server.stop()
        d.stop()


@pytest.mark.parametrize("how", ["field", "flag"])
def test_close_timeout_bounds_a_close_against_a_peer_that_never_answers(spki, how):
    """The peer finished its handshake, then neither reads nor closes: the
    daemon's queued data cannot leave and no close comes back. The socket's
    descriptor is released after close_timeout_ms, not later."""
    d = Daemon(["--close-timeout", "1000"] if how == "flag" else [])
    try:
        client = d.client
        extra = {"close_timeout_ms": 1000} if how == "field" else {}
        lst = listen(client, spki.cert("server"), **extra)
        aref = client.send({"op": "accept", "id": lst["id"]})
        peer = python_peer(lst["port"], spki.ca, rcvbuf=4096)
        sid = client.reply(aref)["id"]
        client.ok({"op": "close", "id": lst["id"]})
        # Until the daemon's own queue for the socket passes its mark (the
        # kernels' buffers take a few MiB first): then data waits in it.
        chunk = b"x" * 65536
        for _ in range(256):
            client.deliver(sid, chunk)
            try:
                ev = client.event(timeout=0.01)
                break
            except AssertionError:
                continue
        else:
            ev = client.event(timeout=5)
        assert ev == {"event": "busy", "id": sid}
        before = fd_count(d.proc.pid)
        client.ok({"op": "close", "id": sid})
        start = time.monotonic()
        time.sleep(0.4)
        assert fd_count(d.proc.pid) == before  # still trying
        while fd_count(d.proc.pid) >= before:
            assert time.monotonic() - start < 4, "descriptor held past the close timeout"
            time.sleep(0.02)
        assert 0.9 < time.monotonic() - start < 3
        peer.close()
    finally:
        d.stop()


def silent_server():
    """A TCP server that accepts and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server


@pytest.mark.parametrize("how", ["field", "flag"])
def test_handshake_timeout_on_connect(spki, how):
    d = Daemon(["--handshake-timeout", "300"] if how == "flag" else [])
    server = silent_server()
    try:
        extra = {"handshake_timeout_ms": 300} if how == "field" else {}
        start = time.monotonic()
        r = connect(d.client, server.getsockname()[1], {"cacertfile": spki.ca},
                    timeout_ms=10000, **extra)
        elapsed = time.monotonic() - start
        assert r["ok"] is False and r["error"]["kind"] == "timeout", r
        assert "handshake" in r["error"]["message"], r
        assert 0.25 < elapsed < 2, elapsed
    finally:
        server.close()
        d.stop()


def test_handshake_timeout_on_accept(client, spki):
    """An accept bringing its own TLS settings (and so its own handshake)
    bounds that handshake; a silent client is dropped and the accept waits on
    for a real one."""
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0})
    aref = client.send({"op": "accept", "id": lst["id"], "tls": spki.cert("server"),
                        "handshake_timeout_ms": 300})
    silent = socket.create_connection(("127.0.0.1", lst["port"]))
    silent.settimeout(5)
    start = time.monotonic()
    assert silent.recv(10) == b""
    assert 0.25 < time.monotonic() - start < 2
    silent.close()
    assert aref not in client.replies
    peer = python_peer(lst["port"], spki.ca)
    assert client.reply(aref)["ok"]
    peer.close()


def test_handshake_timeout_of_a_listener_from_the_daemon_flag(spki):
    d = Daemon(["--handshake-timeout", "300"])
    try:
        lst = listen(d.client, spki.cert("server"))
        d.client.send({"op": "accept", "id": lst["id"]})
        silent = socket.create_connection(("127.0.0.1", lst["port"]))
        silent.settimeout(5)
        start = time.monotonic()
        assert silent.recv(10) == b""
        assert 0.25 < time.monotonic() - start < 2
        silent.close()
    finally:
        d.stop()
