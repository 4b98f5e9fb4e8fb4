"""TLS against real peers: openssl s_server/s_client, Python's ssl, and the daemon itself."""

import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import Daemon, OpensslServer, client_tls, free_port, tls_listen, tool_path


def connect(client, port, tls, mode="raw", host="127.0.0.1", **extra):
    return client.call({"op": "connect", "host": host, "port": port, "mode": mode, "tls": tls,
                        "timeout_ms": 5000, **extra})


def test_connect_to_openssl_s_server_www(client, pki):
    server = OpensslServer(pki, www=True)
    try:
        r = connect(client, server.port, client_tls(pki), host="localhost")
        assert r["ok"], r
        sid = r["id"]
        client.deliver(sid, b"GET / HTTP/1.0\r\n\r\n")
        body = b""
        while True:
            ev = client.event()
            if ev["event"] == "socket_closed":
                assert ev["reason"] == "normal"
                break
            body += ev["data"]
        assert body.startswith(b"HTTP/1.0 200 ok")
        assert b"Cipher" in body or b"cipher" in body
    finally:
        server.stop()


def test_secure_default_refuses_unknown_issuer(client, pki):
    server = OpensslServer(pki)
    try:
        r = connect(client, server.port, {}, host="localhost")
        assert r["ok"] is False and r["error"]["kind"] == "tls"
        assert "certificate" in r["error"]["message"]
    finally:
        server.stop()


def test_system_store_from_ssl_cert_file(pki):
    from conftest import Daemon
    import os
    env = dict(os.environ, SSL_CERT_FILE=pki.ca)
    d = Daemon(env=env)
    server = OpensslServer(pki)
    try:
        r = connect(d.client, server.port, {}, host="localhost")
        assert r["ok"], r
    finally:
        server.stop()
        d.stop()


def test_hostname_is_checked(client, pki):
    server = OpensslServer(pki)
    try:
        r = connect(client, server.port, client_tls(pki, verify_hostname="other.example"))
        assert r["ok"] is False and r["error"]["kind"] == "tls", r
        r = connect(client, server.port, client_tls(pki))  # 127.0.0.1 is in the SAN
        assert r["ok"], r
    finally:
        server.stop()


def test_accept_from_openssl_s_client(client, pki):
    lst = tls_listen(client, pki)
    ref = client.send({"op": "accept", "id": lst["id"]})
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{lst['port']}",
                             "-quiet", "-no_ign_eof", "-verify_quiet"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        acc = client.reply(ref)
        assert acc["ok"] and acc["peer"]["host"] == "127.0.0.1"
        sid = acc["id"]
        proc.stdin.write(b"hello daemon\n")
        proc.stdin.flush()
        assert client.read_data(sid, 13) == b"hello daemon\n"
        client.deliver(sid, b"hello s_client\n")
        assert proc.stdout.readline() == b"hello s_client\n"
        proc.stdin.close()
        ev = client.closed_event(sid)
        assert ev["reason"] == "normal"
    finally:
        proc.kill()
        proc.wait()


def python_tls_client(port, ca, cert=None, key=None, payload=b"ping", expect=4):
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(payload)
            got = b""
            while len(got) < expect:
                chunk = s.recv(expect - len(got))
                if not chunk:
                    break
                got += chunk
            return got, s.version()


def test_accept_from_python_ssl_and_echo(client, pki):
    lst = tls_listen(client, pki)
    ref = client.send({"op": "accept", "id": lst["id"]})
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=python_tls_client(lst["port"], pki.ca, payload=b"ping", expect=4)))
    t.start()
    acc = client.reply(ref)
    sid = acc["id"]
    assert client.read_data(sid, 4) == b"ping"
    client.deliver(sid, b"pong")
    t.join(10)
    assert result["r"][0] == b"pong"
    assert result["r"][1] == "TLSv1.3"


def test_both_ends_on_one_daemon(client, pki):
    lst = tls_listen(client, pki, mode="packet:2")
    aref = client.send({"op": "accept", "id": lst["id"]})
    c = connect(client, lst["port"], client_tls(pki), mode="packet:2")
    assert c["ok"], c
    a = client.reply(aref)
    assert a["ok"]
    client.deliver(c["id"], b"to server")
    ev = client.event()
    assert ev == {"event": "fromsocket", "id": a["id"], "data": b"to server"}
    client.deliver(a["id"], b"to client")
    ev = client.event()
    assert ev == {"event": "fromsocket", "id": c["id"], "data": b"to client"}
    info = client.ok({"op": "info", "id": c["id"]})
    assert info["protocol"] == "TLSv1.3" and info["verify_result"]["code"] == 0
    assert "localhost" in info["peer_certificate"]["subject"]
    client.ok({"op": "close", "id": c["id"]})
    assert client.closed_event(a["id"])["reason"] == "normal"


def verify_case(client, pki, level, cert, key, cafile=None):
    """Runs one server-side verify check; returns (accepted, python client outcome)."""
    tls = {"verify": level, "cacertfile": cafile or pki.ca}
    lst = tls_listen(client, pki, **tls)
    ref = client.send({"op": "accept", "id": lst["id"]})
    outcome = {}

    def run():
        try:
            outcome["got"] = python_tls_client(lst["port"], pki.ca, cert, key, b"x", 1)[0]
        except (ssl.SSLError, OSError) as e:
            outcome["error"] = e

    t = threading.Thread(target=run)
    t.start()
    accepted, info = None, None
    try:
        accepted = client.reply(ref, timeout=3)
        info = client.ok({"op": "info", "id": accepted["id"]})
        client.deliver(accepted["id"], b"y")
    except AssertionError:
        accepted = None
    t.join(10)
    client.call({"op": "close", "id": lst["id"]})
    return accepted, info, outcome


@pytest.mark.parametrize("level,who,accepted", [
    (0, "good", True), (0, "rogue", True), (0, "none", True),
    (1, "good", True), (1, "rogue", True), (1, "none", True),
    (2, "good", True), (2, "rogue", False), (2, "none", False),
])
def test_server_verify_levels(client, pki, level, who, accepted):
    cert, key = {"good": (pki.client_cert, pki.client_key),
                 "rogue": (pki.rogue_cert, pki.rogue_key),
                 "none": (None, None)}[who]
    acc, info, outcome = verify_case(client, pki, level, cert, key)
    assert (acc is not None) == accepted, (acc, outcome)
    if accepted:
        assert outcome.get("got") == b"y", outcome
        if level >= 1 and who == "good":
            assert info["peer_certificate"]["subject"] == "CN=client"
        if level == 0:
            assert info["peer_certificate"] is None
    else:
        assert "error" in outcome or outcome.get("got") in (b"", None), outcome


def test_client_verify_level_1_accepts_unknown_issuer_only(client, pki):
    server = OpensslServer(pki)
    try:
        # Unknown issuer (no CA given): level 1 connects, level 2 refuses.
        r1 = connect(client, server.port, {"verify": 1, "cacertfile": pki.rogue_ca})
        assert r1["ok"], r1
        client.ok({"op": "close", "id": r1["id"]})  # s_server serves one client at a time
        r2 = connect(client, server.port, {"verify": 2, "cacertfile": pki.rogue_ca})
        assert not r2["ok"] and r2["error"]["kind"] == "tls"
        # A host-name mismatch is not an unknown issuer: level 1 refuses it.
        r3 = connect(client, server.port, {"verify": 1, "cacertfile": pki.ca,
                                           "verify_hostname": "wrong.example"})
        assert not r3["ok"], r3
    finally:
        server.stop()


def test_encrypted_key_with_password(client, pki):
    lst = client.call({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": {
        "certfile": pki.server_cert, "keyfile": pki.encrypted_key, "password": pki.password}})
    assert lst["ok"], lst
    bad = client.call({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": {
        "certfile": pki.server_cert, "keyfile": pki.encrypted_key, "password": "wrong"}})
    assert bad["ok"] is False and bad["error"]["kind"] == "bad_tls_config", bad
    none = client.call({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": {
        "certfile": pki.server_cert, "keyfile": pki.encrypted_key}})
    assert none["ok"] is False and none["error"]["kind"] == "bad_tls_config"


def test_seed_flags_string(client, pki):
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "mode": "packet:2",
                     "tls": {"flags": f"-cert {pki.combined}"}})
    aref = client.send({"op": "accept", "id": lst["id"]})
    # The seed's client example passes the key as a second -cert; -verify 0 is the default.
    c = connect(client, lst["port"], {"flags": f"-cert {pki.client_cert} -cert {pki.client_key}"},
                mode="packet:2")
    assert c["ok"], c
    assert client.reply(aref)["ok"]
    bad = connect(client, lst["port"], {"flags": "-bogus 1"})
    assert bad["ok"] is False and bad["error"]["kind"] == "bad_request"


def test_old_protocols_are_unsupported(client, pki):
    for v in ("sslv3", "tlsv1", "tlsv1.1"):
        r = client.call({"op": "listen", "host": "127.0.0.1", "port": 0,
                         "tls": {"certfile": pki.server_cert, "keyfile": pki.server_key,
                                 "min_version": v}})
        assert r["ok"] is False and r["error"]["kind"] == "unsupported_protocol", r


def test_version_and_cipher_limits(client, pki):
    lst = tls_listen(client, pki, max_version="tlsv1.2", ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    aref = client.send({"op": "accept", "id": lst["id"]})
    c = connect(client, lst["port"], client_tls(pki))
    assert c["ok"], c
    client.reply(aref)
    info = client.ok({"op": "info", "id": c["id"]})
    assert info["protocol"] == "TLSv1.2" and info["cipher"] == "ECDHE-RSA-AES128-GCM-SHA256"
    c2 = connect(client, lst["port"], client_tls(pki, min_version="tlsv1.3"))
    assert c2["ok"] is False and c2["error"]["kind"] == "tls"


def test_plain_tcp_client_on_tls_listener_times_out_and_blocks_nothing(client, pki):
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "handshake_timeout_ms": 500,
                     "tls": {"certfile": pki.server_cert, "keyfile": pki.server_key}})
    aref = client.send({"op": "accept", "id": lst["id"]})
    silent = socket.create_connection(("127.0.0.1", lst["port"]))
    time.sleep(0.1)
    # A real TLS client gets through while the silent one waits.
    c = connect(client, lst["port"], client_tls(pki))
    assert c["ok"], c
    assert client.reply(aref)["ok"]
    silent.settimeout(3)
    start = time.monotonic()
    assert silent.recv(10) == b""  # the daemon dropped it after the handshake timeout
    assert time.monotonic() - start < 2.5
    # A plain-text request is refused at once.
    talker = socket.create_connection(("127.0.0.1", lst["port"]))
    talker.sendall(b"GET / HTTP/1.0\r\n\r\n")
    talker.settimeout(3)
    try:
        data = talker.recv(100)
    except ConnectionResetError:
        data = b""
    assert not data.startswith(b"HTTP")


def test_plain_tcp_both_ways(client):
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False, "mode": "line"})
    aref = client.send({"op": "accept", "id": lst["id"]})
    s = socket.create_connection(("127.0.0.1", lst["port"]))
    a = client.reply(aref)
    s.sendall(b"one\ntwo\nthr")
    assert client.packets(a["id"], 2) == [b"one\n", b"two\n"]
    s.sendall(b"ee\n")
    assert client.packets(a["id"], 1) == [b"three\n"]
    s.close()


def test_ipv6_listen_and_connect(client, pki):
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    lst = client.ok({"op": "listen", "host": "::1", "port": 0,
                     "tls": {"certfile": pki.server_cert, "keyfile": pki.server_key}})
    aref = client.send({"op": "accept", "id": lst["id"]})
    c = connect(client, lst["port"], client_tls(pki), host="::1")
    assert c["ok"], c
    a = client.reply(aref)
    assert a["peer"]["host"] == "::1"
    assert client.ok({"op": "peername", "id": c["id"]})["host"] == "::1"


def test_connect_errors(client, pki):
    r = connect(client, free_port(), client_tls(pki))
    assert r["ok"] is False and r["error"]["kind"] == "econnrefused"
    r = connect(client, 443, client_tls(pki), host="no-such-host.invalid")
    assert r["ok"] is False and r["error"]["kind"] in ("nxdomain", "timeout"), r


def test_cacertdir_ciphersuites_and_depth(client, pki, tmp_path):
    import shutil
    cadir = tmp_path / "cadir"
    cadir.mkdir()
    shutil.copy(pki.ca, cadir / "ca.pem")
    subprocess.run(["openssl", "rehash", str(cadir)], check=True)
    lst = tls_listen(client, pki, ciphersuites="TLS_CHACHA20_POLY1305_SHA256")
    aref = client.send({"op": "accept", "id": lst["id"]})
    c = connect(client, lst["port"], {"cacertdir": str(cadir), "depth": 2})
    assert c["ok"], c
    client.reply(aref)
    assert client.ok({"op": "info", "id": c["id"]})["cipher"] == "TLS_CHACHA20_POLY1305_SHA256"
    # A directory without the issuer refuses the server.
    empty = tmp_path / "empty"
    empty.mkdir()
    aref = client.send({"op": "accept", "id": lst["id"]})
    bad = connect(client, lst["port"], {"cacertdir": str(empty)})
    assert bad["ok"] is False and bad["error"]["kind"] == "tls", bad
    client.call({"op": "cancel", "target": aref})



def test_turning_sni_off_keeps_the_host_name_check(client, pki):
    """A server whose certificate names only "client": with SNI off, the daemon
    still checks the certificate against the host it connects to."""
    lst = tls_listen(client, pki, certfile=pki.client_cert, keyfile=pki.client_key)
    for tls, accepted in (({"server_name": ""}, False),
                          ({}, False),
                          ({"server_name": "", "verify_hostname": False}, True),
                          ({"server_name": "", "verify_hostname": "client"}, True),
                          ({"server_name": "client"}, True)):
        aref = client.send({"op": "accept", "id": lst["id"]})
        r = connect(client, lst["port"], client_tls(pki, **tls))
        assert r["ok"] is accepted, (tls, r)
        if accepted:
            client.reply(aref)
            client.ok({"op": "close", "id": r["id"]})
        else:
            assert r["error"]["kind"] == "tls" and "mismatch" in r["error"]["message"], r
            client.ok({"op": "cancel", "target": aref})
            client.reply(aref)


def test_key_update_while_the_send_buffer_is_full(client, pki):
    """The peer asks for a KeyUpdate while the daemon cannot write to it (its
    send buffer full): the daemon's read then waits for writability at the
    same time as its write. Once the peer reads, every byte arrives both ways."""
    total = 6 << 20
    lst = tls_listen(client, pki)
    aref = client.send({"op": "accept", "id": lst["id"]})
    peer = subprocess.Popen([tool_path("keyupdate_peer"), "127.0.0.1", str(lst["port"]), str(total)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout.readline().strip() == "ready"
        sid = client.reply(aref)["id"]
        payload = bytes(i % 251 for i in range(total))
        writer = threading.Thread(
            target=lambda: [client.deliver(sid, payload[i:i + 65536])
                            for i in range(0, total, 65536)], daemon=True)
        writer.start()
        ev = client.event(timeout=20)
        assert ev == {"event": "busy", "id": sid}, ev
        time.sleep(0.5)  # the daemon's socket buffers are full now
        peer.stdin.write("go\n")
        peer.stdin.flush()
        assert peer.stdout.readline().strip() == "sent"
        time.sleep(0.5)  # the daemon has read the KeyUpdate and waits to answer it
        peer.stdin.write("read\n")
        peer.stdin.flush()
        assert peer.stdout.readline().strip() == f"got {total} ok"
        writer.join(20)
        got = b""
        deadline = time.monotonic() + 10
        while b"bye\n" not in got:
            ev = client.event(max(0.01, deadline - time.monotonic()))
            if ev["event"] == "fromsocket":
                got += ev["data"]
        assert got == b"after-keyupdate\nbye\n"
        client.ok({"op": "close", "id": sid})
        assert peer.stdout.readline().strip() == "closed"
    finally:
        peer.kill()
        peer.wait()


def test_a_tls_listener_never_serves_plain_tcp_when_ssl_new_fails(pki, tmp_path):
    flag = tmp_path / "fail"
    env = dict(os.environ, LD_PRELOAD=tool_path("fail_ssl_new.so"), TLSPORT_FAIL_SSL_NEW=str(flag))
    d = Daemon(env=env)
    try:
        client = d.client
        lst = tls_listen(client, pki, mode="line")
        aref = client.send({"op": "accept", "id": lst["id"]})
        flag.touch()
        raw = socket.create_connection(("127.0.0.1", lst["port"]))
        raw.sendall(b"plain text\n")
        raw.settimeout(5)
        try:
            assert raw.recv(100) == b""  # closed at once, nothing said
        except ConnectionResetError:
            pass  # closed with our bytes unread: a reset, still nothing said
        raw.close()
        with pytest.raises((ssl.SSLError, OSError)):
            python_tls_client(lst["port"], pki.ca)
        r = connect(client, lst["port"], client_tls(pki))
        assert r["ok"] is False and r["error"]["kind"] == "tls", r
        assert aref not in client.replies  # the accept waits on
        flag.unlink()
        assert python_tls_client(lst["port"], pki.ca, payload=b"ping\n", expect=0)[0] == b""
        assert client.reply(aref)["ok"] is True
        assert any(b"connection refused" in line for line in d.stderr_lines), d.stderr_lines
    finally:
        d.stop()


def test_a_server_that_closes_without_a_word_gives_closed(client):
    """A server that reads the ClientHello and closes (no alert): the connect
    fails with kind closed, not an unclassified error."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        conn.recv(4096)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    r = connect(client, server.getsockname()[1], {"verify": 0})
    server.close()
    assert r["ok"] is False and r["error"]["kind"] == "closed", r
    assert r["error"]["message"], r
