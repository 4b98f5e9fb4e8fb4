"""What a TLS connection tells (info, ciphers), trust added afterwards
(inject_ca) and the owner judging the peer's chain (verify_callback), checked
against real peers (openssl s_server/s_client, gnutls-serv/gnutls-cli,
Python's ssl) and against the openssl CLI's own view of the same certificates.

Each test writes its dialogue out: → to the daemon, ← from it."""

import socket
import ssl
import time

from tls_peers import (InThread, assert_cert_matches, cipher_line, gnutls_client,  # noqa: F401
                       gnutls_server, openssl_server, openssl_verify, procs,
                       python_client_context, python_server_context, recv_exact, recv_line,
                       s_client_verdict, tcp_listener, xpki)


def connect(client, port, tls, host="localhost", **extra):
    return client.call({"op": "connect", "host": host, "port": port, "tls": tls,
                        "timeout_ms": 8000, **extra})


def listen(client, tls, **extra):
    return client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": tls, **extra})


def check_cipher_facts(info):
    """cipher, bits, alg_bits and cipher_description against `openssl ciphers -v`."""
    line = cipher_line(info["cipher"])
    assert " ".join(info["cipher_description"].split()) == line
    enc_bits = int(line.split("Enc=")[1].split("(")[1].split(")")[0])
    assert info["bits"] == enc_bits and info["alg_bits"] == enc_bits
    assert info["protocol"] in line


# ---------------------------------------------------------------- info

def test_info_of_a_client_against_openssl_s_server_with_an_intermediate(client, xpki, procs):
    """
    peer: openssl s_server -cert ec.pem -cert_chain inter.pem
    → connect host localhost tls {cacertfile: root}        ← ok
    → info   ← TLSv1.3; peer_chain [leaf, intermediate], each as `openssl x509`
               sees it; local_certificate null; verify_result ok
    → ciphers ← contains info's cipher
    """
    server = openssl_server(procs, xpki.cert("ec"), xpki.key("ec"), "-cert_chain", xpki.inter)
    c = connect(client, server.port, {"cacertfile": xpki.root})
    assert c["ok"], c
    info = client.ok({"op": "info", "id": c["id"]})
    assert info["protocol"] == "TLSv1.3" and info["mode"] == "raw"
    check_cipher_facts(info)
    assert info["session_reused"] is False and info["alpn"] is None
    assert info["server_name"] == "localhost"
    assert info["verify_result"] == {"code": 0, "text": "ok"}
    assert info["peer"]["port"] == server.port and info["sockname"]["host"] == "127.0.0.1"
    assert len(info["peer_chain"]) == 2
    assert_cert_matches(info["peer_chain"][0], xpki.cert("ec"))
    assert_cert_matches(info["peer_chain"][1], xpki.inter)
    assert info["peer_certificate"] == info["peer_chain"][0]
    assert info["local_certificate"] is None and info["ocsp"] is None
    # Spelled out once, as protocol.md shows a certificate.
    leaf = info["peer_certificate"]
    assert leaf["subject"] == "CN=localhost,O=tlsport tests,C=DE"
    assert leaf["issuer"] == "CN=Test Intermediate,OU=Mail\\, Inc.,O=tlsport tests"
    assert leaf["serial"] == "8F1E2D3C4B5A69788796A5B4C3D2E1F0"
    assert leaf["san"] == ["DNS:localhost", "IP:127.0.0.1", "email:postmaster@example.com"]
    assert leaf["public_key"] == {"type": "EC", "bits": 256}
    assert leaf["signature_algorithm"] == "sha256WithRSAEncryption"
    assert info["peer_chain"][1]["serial"] == "0A0B"
    ciphers = client.ok({"op": "ciphers", "id": c["id"]})["ciphers"]
    assert info["cipher"] in ciphers and ciphers[:3] == [
        "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"]


def test_info_of_a_client_against_gnutls_serv_over_tls12(client, xpki, procs):
    """
    peer: gnutls-serv --echo with ec-chain.pem (leaf, intermediate)
    → connect tls {cacertfile: root, max_version: tlsv1.2}   ← ok
    → info   ← TLSv1.2, an ECDSA suite described as openssl describes it,
               peer_chain [leaf, intermediate]
    → ciphers ← TLS 1.2 suites only, the current one among them; echo works
    """
    server = gnutls_server(procs, xpki.chain("ec"), xpki.key("ec"))
    c = connect(client, server.port, {"cacertfile": xpki.root, "max_version": "tlsv1.2"})
    assert c["ok"], c
    info = client.ok({"op": "info", "id": c["id"]})
    assert info["protocol"] == "TLSv1.2" and "ECDSA" in info["cipher"], info["cipher"]
    check_cipher_facts(info)
    assert len(info["peer_chain"]) == 2
    assert_cert_matches(info["peer_chain"][0], xpki.cert("ec"))
    assert_cert_matches(info["peer_chain"][1], xpki.inter)
    ciphers = client.ok({"op": "ciphers", "id": c["id"]})["ciphers"]
    assert info["cipher"] in ciphers
    assert not any(name.startswith("TLS_") for name in ciphers), ciphers
    client.deliver(c["id"], b"echo me\n")
    assert client.read_data(c["id"], 8) == b"echo me\n"


def test_info_of_accepted_connections_rsa_ec_ed25519(client, xpki):
    """
    → listen tls {certfile: <name>-chain.pem, keyfile, verify 2, cacertfile root,
                  alpn [h2, http/1.1]}   for name in rsa, ec, ed
    peer: Python client with client-chain.pem, SNI localhost, ALPN [http/1.1]
    → accept ← ok;  → info ← local_certificate = the leaf, peer_chain [client,
      intermediate], server_name localhost, alpn http/1.1
    """
    for name, key_type, bits in (("rsa", "RSA", 2048), ("ec", "EC", 256), ("ed", "ED25519", 256)):
        lst = listen(client, {"certfile": xpki.chain(name), "keyfile": xpki.key(name),
                              "verify": 2, "cacertfile": xpki.root, "alpn": ["h2", "http/1.1"]})
        aref = client.send({"op": "accept", "id": lst["id"]})
        ctx = python_client_context(xpki.root, xpki.chain("client"), xpki.key("client"))
        ctx.set_alpn_protocols(["http/1.1"])

        def peer():
            with socket.create_connection(("127.0.0.1", lst["port"]), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(b"hi")
                    return recv_exact(s, 2)

        p = InThread(peer)
        sid = client.reply(aref)["id"]
        assert client.read_data(sid, 2) == b"hi"
        info = client.ok({"op": "info", "id": sid})
        assert_cert_matches(info["local_certificate"], xpki.cert(name))
        assert info["local_certificate"]["public_key"] == {"type": key_type, "bits": bits}
        assert len(info["peer_chain"]) == 2
        assert_cert_matches(info["peer_chain"][0], xpki.cert("client"))
        assert_cert_matches(info["peer_chain"][1], xpki.inter)
        assert info["peer_certificate"]["subject"] == "CN=client,O=tlsport tests"
        assert info["server_name"] == "localhost" and info["alpn"] == "http/1.1"
        assert info["verify_result"]["code"] == 0 and "ocsp" not in info
        check_cipher_facts(info)
        client.deliver(sid, b"ok")
        assert p.result() == b"ok"
        client.closed_event(sid)  # the peer has closed
        client.ok({"op": "close", "id": lst["id"]})


def test_verify_result_depth_at_verify_1_matches_openssl(client, xpki, procs):
    """
    peer 1: s_server sends its leaf without the intermediate; we trust the root
    → connect verify 1 {cacertfile: root}  ← ok (unknown issuer is tolerated at 1)
    → info ← verify_result as openssl s_client reports it (which also goes on
      after the error): its verify return code, depth 0 (the first error's,
      as `openssl verify -CAfile root ec.pem` finds it)
    peer 2: s_server sends leaf and intermediate; we trust an unrelated root
    → connect verify 1 {cacertfile: otherroot}  ← ok;  → info ← depth 1
    At verify 2 both are refused (kind tls), naming the first error.
    """
    cases = (([], openssl_verify(xpki.root, xpki.cert("ec")), xpki.root),
             (["-cert_chain", xpki.inter],
              openssl_verify(xpki.other_root, xpki.cert("ec"), xpki.inter), xpki.other_root))
    for (extra, first, ca), depth in zip(cases, (0, 1)):
        assert first["code"] == 20 and first["depth"] == depth, first
        server = openssl_server(procs, xpki.cert("ec"), xpki.key("ec"), *extra)
        expected = s_client_verdict(server.port, ca)
        assert expected["depth"] == depth, expected
        c = connect(client, server.port, {"verify": 1, "cacertfile": ca})
        assert c["ok"], c
        info = client.ok({"op": "info", "id": c["id"]})
        assert info["verify_result"] == expected, (info["verify_result"], expected)
        assert len(info["peer_chain"]) == 1 + len(extra) // 2
        client.ok({"op": "close", "id": c["id"]})
        r = connect(client, server.port, {"verify": 2, "cacertfile": ca})
        assert r["ok"] is False and r["error"]["kind"] == "tls", r
        assert first["text"] in r["error"]["message"], r


def test_ciphers_follow_the_connection_settings(client, xpki):
    """
    → listen tls {ec, max_version tlsv1.2, ciphers "ECDHE-ECDSA-AES128-GCM-SHA256:
                  ECDHE-ECDSA-CHACHA20-POLY1305"}
    → connect tls {cacertfile root, ciphers "ECDHE-ECDSA-CHACHA20-POLY1305:
                   ECDHE-ECDSA-AES256-GCM-SHA384", max_version tlsv1.2}  ← ok
    → ciphers on the client ← exactly its list, in its order; info.cipher among them
    → ciphers / inject_ca on a plain socket ← bad_request
    """
    lst = listen(client, {"certfile": xpki.chain("ec"), "keyfile": xpki.key("ec"),
                          "max_version": "tlsv1.2",
                          "ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"})
    aref = client.send({"op": "accept", "id": lst["id"]})
    c = connect(client, lst["port"], {"cacertfile": xpki.root, "max_version": "tlsv1.2",
                                      "ciphers": "ECDHE-ECDSA-CHACHA20-POLY1305:"
                                                 "ECDHE-ECDSA-AES256-GCM-SHA384"})
    assert c["ok"], c
    a = client.reply(aref)
    info = client.ok({"op": "info", "id": c["id"]})
    assert info["cipher"] == "ECDHE-ECDSA-CHACHA20-POLY1305"
    check_cipher_facts(info)
    assert client.ok({"op": "ciphers", "id": c["id"]})["ciphers"] == [
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES256-GCM-SHA384"]
    server_side = client.ok({"op": "ciphers", "id": a["id"]})["ciphers"]
    assert server_side == ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"]
    plst = listen(client, False)
    aref = client.send({"op": "accept", "id": plst["id"]})
    p = client.ok({"op": "connect", "host": "127.0.0.1", "port": plst["port"], "tls": False})
    client.reply(aref)
    client.error({"op": "ciphers", "id": p["id"]}, "bad_request")
    client.error({"op": "inject_ca", "id": p["id"], "cacertfile": xpki.root}, "bad_request")
    assert client.ok({"op": "info", "id": p["id"]})["protocol"] == "tcp"


# ---------------------------------------------------------------- inject_ca

def test_inject_ca_against_openssl_and_gnutls_servers(client, xpki, procs):
    """
    peer: a server whose certificate an unknown CA ("Other Root") signed
    → connect verify 0 (no CA)  ← ok;  → info ← verify_result code 20, depth 0
    → inject_ca cacertfile root.pem        ← ok, still code 20 (wrong CA)
    → inject_ca cacertfile otherroot.pem   ← ok, code 0;  → info ← code 0
    again with inline cacert (PEM text) and with a DER file; gnutls-serv too
    """
    servers = [openssl_server(procs, xpki.cert("stranger"), xpki.key("stranger")),
               gnutls_server(procs, xpki.cert("stranger"), xpki.key("stranger")),
               gnutls_server(procs, xpki.cert("stranger"), xpki.key("stranger"))]
    ways = [{"cacertfile": xpki.other_root}, {"cacert": xpki.text("otherroot.pem")},
            {"cacertfile": xpki.path("otherroot.der")}]
    for server, way in zip(servers, ways):
        c = connect(client, server.port, {"verify": 0})
        assert c["ok"], c
        before = client.ok({"op": "info", "id": c["id"]})["verify_result"]
        assert before == openssl_verify(xpki.root, xpki.cert("stranger")), before
        r = client.ok({"op": "inject_ca", "id": c["id"], "cacertfile": xpki.root})
        assert r["verify_result"]["code"] == 20, r
        r = client.ok({"op": "inject_ca", "id": c["id"], **way})
        assert r["verify_result"] == {"code": 0, "text": "ok"}, (way, r)
        assert client.ok({"op": "info", "id": c["id"]})["verify_result"]["code"] == 0
        client.deliver(c["id"], b"still open\n")  # inject_ca never closes the connection
        if server is not servers[0]:
            assert client.read_data(c["id"], 11) == b"still open\n"  # gnutls-serv echoes
        client.ok({"op": "close", "id": c["id"]})
    r = client.call({"op": "inject_ca", "id": 999999, "cacertfile": xpki.root})
    assert r["error"]["kind"] == "no_such_socket"


def test_inject_ca_on_the_server_side(client, xpki):
    """
    → listen verify 1 {cacertfile root}; peer: Python client with the
      stranger's certificate (unknown issuer: accepted at verify 1)
    → info ← an unknown-issuer code, depth 0;  → inject_ca cacert (Other Root) ← code 0
    A peer without a certificate: → inject_ca ← bad_request
    """
    lst = listen(client, {"certfile": xpki.chain("ec"), "keyfile": xpki.key("ec"), "verify": 1,
                          "cacertfile": xpki.root})
    for cert in ("stranger", None):
        aref = client.send({"op": "accept", "id": lst["id"]})
        ctx = python_client_context(xpki.root, cert and xpki.cert(cert), cert and xpki.key(cert))

        def peer():
            with socket.create_connection(("127.0.0.1", lst["port"]), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    return recv_exact(s, 1)

        p = InThread(peer)
        sid = client.reply(aref)["id"]
        if cert:
            before = client.ok({"op": "info", "id": sid})["verify_result"]
            assert before["code"] != 0 and before["depth"] == 0, before
            r = client.ok({"op": "inject_ca", "id": sid, "cacert": xpki.text("otherroot.pem")})
            assert r["verify_result"] == {"code": 0, "text": "ok"}
        else:
            client.error({"op": "inject_ca", "id": sid, "cacertfile": xpki.other_root},
                         "bad_request")
        client.deliver(sid, b"!")
        assert p.result() == b"!"


# ---------------------------------------------------------------- verify callback

def verify_event(client, timeout=10):
    ev = client.event(timeout)
    assert ev["event"] == "verify_peer", ev
    return ev


def test_client_verify_callback_against_openssl_s_server(client, xpki, procs):
    """
    peer: s_server with the EC leaf and the intermediate
    → connect {cacertfile root, verify_callback true} (ref R)
    ← verify_peer ref R, peer_chain [leaf, intermediate], verify_result code 0
    → answer accept true   ← ok;  ← connect ok
    → connect … (ref R2) ← verify_peer;  → answer accept false  ← connect error tls
    """
    server = openssl_server(procs, xpki.cert("ec"), xpki.key("ec"), "-cert_chain", xpki.inter)
    # Without resumption: a resumed session's chain is what the session kept.
    tls = {"cacertfile": xpki.root, "verify_callback": True, "session_reuse": False}
    ref = client.send({"op": "connect", "host": "localhost", "port": server.port, "tls": tls})
    ev = verify_event(client)
    assert ev["ref"] == ref and ev["verify_result"] == {"code": 0, "text": "ok"}
    assert len(ev["peer_chain"]) == 2
    assert_cert_matches(ev["peer_chain"][0], xpki.cert("ec"))
    assert_cert_matches(ev["peer_chain"][1], xpki.inter)
    assert ref not in client.replies  # the handshake waits for the verdict
    client.ok({"op": "answer", "request": ev["request"], "accept": True})
    c = client.reply(ref)
    assert c["ok"], c
    client.deliver(c["id"], b"through\n")
    assert server.readline() == b"through\n"
    client.ok({"op": "close", "id": c["id"]})

    ref = client.send({"op": "connect", "host": "localhost", "port": server.port, "tls": tls})
    ev = verify_event(client)
    client.ok({"op": "answer", "request": ev["request"], "accept": False})
    r = client.reply(ref)
    assert r["ok"] is False and r["error"]["kind"] == "tls", r
    # The question is closed: a second answer is refused.
    client.error({"op": "answer", "request": ev["request"], "accept": True}, "bad_request")


def test_client_verify_callback_accepts_what_openssl_refused_and_times_out(client, xpki, procs):
    """
    peer: gnutls-serv with the stranger's certificate (unknown issuer)
    → connect {cacertfile root, verify_callback true, callback_timeout_ms 5000}
    ← verify_peer code 20 depth 0;  → answer accept true  ← connect ok
    → info ← verify_result keeps code 20
    → connect … callback_timeout_ms 300 ← verify_peer; no answer  ← connect error
    """
    server = gnutls_server(procs, xpki.cert("stranger"), xpki.key("stranger"))
    tls = {"cacertfile": xpki.root, "verify_callback": True, "callback_timeout_ms": 5000,
           "session_reuse": False}  # fresh chains only (the depth is not kept)
    ref = client.send({"op": "connect", "host": "localhost", "port": server.port, "tls": tls})
    ev = verify_event(client)
    expected = openssl_verify(xpki.root, xpki.cert("stranger"))
    assert ev["verify_result"] == expected, ev["verify_result"]
    client.ok({"op": "answer", "request": ev["request"], "accept": True})
    c = client.reply(ref)
    assert c["ok"], c
    assert client.ok({"op": "info", "id": c["id"]})["verify_result"] == expected
    client.deliver(c["id"], b"echo\n")
    assert client.read_data(c["id"], 5) == b"echo\n"

    start = time.monotonic()
    ref = client.send({"op": "connect", "host": "localhost", "port": server.port,
                       "tls": {**tls, "callback_timeout_ms": 300}})
    ev = verify_event(client)
    r = client.reply(ref)
    assert r["ok"] is False and r["error"]["kind"] == "tls", r
    assert time.monotonic() - start < 3
    client.error({"op": "answer", "request": ev["request"], "accept": True}, "bad_request")


def test_client_verify_callback_judges_resumed_sessions_too(client, xpki, procs):
    """A resumed session skips OpenSSL's check of the chain; the judge is still
    asked, about the chain the session keeps, so that a session one judge (or
    another client) accepted does not pass another unseen.
    peer: gnutls-serv --echo with the stranger's certificate (it resumes)
    → connect {verify_callback true} ← verify_peer; → answer accept true ← ok
    → connect again ← verify_peer (same chain); → answer accept true ← ok, resumed
    → connect again ← verify_peer; → answer accept false ← connect error tls
    """
    server = gnutls_server(procs, xpki.cert("stranger"), xpki.key("stranger"))
    tls = {"cacertfile": xpki.root, "verify_callback": True, "max_version": "tlsv1.3"}
    expected = {k: v for k, v in openssl_verify(xpki.root, xpki.cert("stranger")).items()
                if k != "depth"}
    for accept, resumed in ((True, False), (True, True), (False, True)):
        ref = client.send({"op": "connect", "host": "localhost", "port": server.port, "tls": tls})
        ev = verify_event(client)
        assert ev["ref"] == ref, ev
        # OpenSSL's verdict as the session keeps it (the failing depth is not kept).
        assert ev["verify_result"] == (dict(expected, depth=0) if not resumed else expected), ev
        assert len(ev["peer_chain"]) == 1
        assert_cert_matches(ev["peer_chain"][0], xpki.cert("stranger"))
        assert ref not in client.replies  # the connect waits for the verdict
        client.ok({"op": "answer", "request": ev["request"], "accept": accept})
        r = client.reply(ref)
        if not accept:
            assert r["ok"] is False and r["error"]["kind"] == "tls", r
            assert "verify callback" in r["error"]["message"], r
            break
        assert r["ok"], r
        # An echo: the session's ticket came before it.
        client.deliver(r["id"], b"echo\n")
        assert client.read_data(r["id"], 5) == b"echo\n"
        assert client.ok({"op": "info", "id": r["id"]})["session_reused"] is resumed
        client.ok({"op": "close", "id": r["id"]})


def test_other_connections_go_on_while_a_client_verdict_waits(client, xpki, procs):
    """
    → connect A {verify_callback true} to s_server   ← verify_peer (unanswered)
    meanwhile: → listen; → accept; → connect B to it  ← both ok; data both ways
    → answer A accept true   ← connect A ok
    """
    server = openssl_server(procs, xpki.cert("ec"), xpki.key("ec"), "-cert_chain", xpki.inter)
    aref_a = client.send({"op": "connect", "host": "localhost", "port": server.port,
                          "tls": {"cacertfile": xpki.root, "verify_callback": True}})
    ev = verify_event(client)
    lst = listen(client, {"certfile": xpki.chain("rsa"), "keyfile": xpki.key("rsa")})
    acc = client.send({"op": "accept", "id": lst["id"]})
    b = connect(client, lst["port"], {"cacertfile": xpki.root})
    assert b["ok"], b
    bs = client.reply(acc)["id"]
    client.deliver(b["id"], b"meanwhile")
    assert client.read_data(bs, 9) == b"meanwhile"
    assert aref_a not in client.replies
    client.ok({"op": "answer", "request": ev["request"], "accept": True})
    assert client.reply(aref_a)["ok"]


def python_tls_peer(port, cafile, cert=None, key=None):
    """A Python client that sends "ping" and reads 4 bytes (or the error)."""
    ctx = python_client_context(cafile, cert, key)

    def run():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"ping")
                return recv_exact(s, 4)

    return InThread(run)


def test_server_verify_callback_python_and_gnutls_clients(client, xpki, procs):
    """
    → listen {ec, verify 1, cacertfile root, verify_callback true, callback_timeout_ms 400}
    → accept (ref A)
    peer 1 (Python, client-chain.pem): ← verify_peer listener L, peer_chain
      [client, intermediate], code 0;  → answer accept false  (peer 1 refused)
    peer 2 (gnutls-cli, client cert): ← verify_peer;  no answer: timeout rejects
    peer 3 (Python):  ← verify_peer;  → answer accept true  ← accept A ok; "ping"/"pong"
    """
    lst = listen(client, {"certfile": xpki.chain("ec"), "keyfile": xpki.key("ec"), "verify": 1,
                          "cacertfile": xpki.root, "verify_callback": True,
                          "callback_timeout_ms": 400})
    aref = client.send({"op": "accept", "id": lst["id"]})
    p1 = python_tls_peer(lst["port"], xpki.root, xpki.chain("client"), xpki.key("client"))
    ev = verify_event(client)
    assert ev["listener"] == lst["id"] and "ref" not in ev
    assert ev["verify_result"] == {"code": 0, "text": "ok"}
    assert_cert_matches(ev["peer_chain"][0], xpki.cert("client"))
    assert_cert_matches(ev["peer_chain"][1], xpki.inter)
    client.ok({"op": "answer", "request": ev["request"], "accept": False})
    out = p1.outcome()
    assert isinstance(out, (ssl.SSLError, OSError)) or out == b"", out
    assert aref not in client.replies

    g = gnutls_client(procs, lst["port"], "--x509cafile", xpki.root, "--x509certfile",
                      xpki.chain("client"), "--x509keyfile", xpki.key("client"))
    ev = verify_event(client)
    assert ev["peer_chain"][0]["subject"] == "CN=client,O=tlsport tests"
    # Unanswered past callback_timeout_ms: the daemon rejects and closes the
    # connection, and gnutls-cli (its input still open) ends with it.
    g.proc.wait(timeout=5)
    _, out, _ = g.finish()
    assert b"Peer has closed" in out or b"rror" in out, out
    client.error({"op": "answer", "request": ev["request"], "accept": True}, "bad_request")
    assert aref not in client.replies

    p3 = python_tls_peer(lst["port"], xpki.root, xpki.chain("client"), xpki.key("client"))
    ev = verify_event(client)
    client.ok({"op": "answer", "request": ev["request"], "accept": True})
    a = client.reply(aref)
    assert a["ok"], a
    assert client.read_data(a["id"], 4) == b"ping"
    client.deliver(a["id"], b"pong")
    assert p3.result() == b"pong"


def test_server_verdict_waits_while_other_connections_complete(client, xpki, procs):
    """
    → listen L1 {verify_callback true}; → accept (own tls with verify_callback, ref A)
    peer: s_client with a client certificate  ← verify_peer listener L1, ref A
    meanwhile: → listen L2; Python client ↔ accept on L2: ok, data both ways
    → answer accept true   ← accept A ok
    """
    lst = listen(client, None)  # no tls: every accept brings its own
    own = {"certfile": xpki.chain("rsa"), "keyfile": xpki.key("rsa"), "verify": 2,
           "cacertfile": xpki.root, "verify_callback": True}
    aref = client.send({"op": "accept", "id": lst["id"], "tls": own})
    s_client = procs(["openssl", "s_client", "-connect", f"127.0.0.1:{lst['port']}", "-quiet",
                      "-no_ign_eof", "-cert", xpki.cert("client"), "-key", xpki.key("client"),
                      "-cert_chain", xpki.inter, "-CAfile", xpki.root])
    ev = verify_event(client)
    assert ev["listener"] == lst["id"] and ev["ref"] == aref
    assert [c["subject"] for c in ev["peer_chain"]] == [
        "CN=client,O=tlsport tests", "CN=Test Intermediate,OU=Mail\\, Inc.,O=tlsport tests"]
    other = listen(client, {"certfile": xpki.chain("ec"), "keyfile": xpki.key("ec")})
    oref = client.send({"op": "accept", "id": other["id"]})
    p = python_tls_peer(other["port"], xpki.root)
    o = client.reply(oref)
    assert client.read_data(o["id"], 4) == b"ping"
    client.deliver(o["id"], b"pong")
    assert p.result() == b"pong"
    assert aref not in client.replies
    client.ok({"op": "answer", "request": ev["request"], "accept": True})
    a = client.reply(aref)
    assert a["ok"], a
    client.deliver(a["id"], b"hello s_client\n")
    assert s_client.readline() == b"hello s_client\n"


def test_verify_callback_on_starttls_both_sides(client, xpki):
    """
    client side — peer: Python STARTTLS server (EC leaf + intermediate)
    → connect tls:false; "220" ← ; → starttls side client {verify_callback true} (ref S)
    ← verify_peer ref S code 0;  → answer accept true  ← starttls ok
    server side — peer: Python client with a client certificate
    → accept tls:false; → starttls side server {verify 2, cacertfile root,
      verify_callback true} (ref T)  ← verify_peer ref T, id, peer_chain [client, inter]
    nothing from the peer reaches us before the verdict
    → answer accept true  ← starttls ok;  then the peer's data
    """
    srv = tcp_listener()
    sctx = python_server_context(xpki.chain("ec"), xpki.key("ec"))

    def server():
        conn, _ = srv.accept()
        conn.settimeout(10)
        conn.sendall(b"220 go\r\n")
        tls = sctx.wrap_socket(conn, server_side=True)
        tls.sendall(b"over tls\r\n")
        return recv_line(tls)

    s = InThread(server)
    sid = client.ok({"op": "connect", "host": "localhost", "port": srv.getsockname()[1],
                     "tls": False, "mode": "line", "active": "once"})["id"]
    assert client.packets(sid, 1) == [b"220 go\r\n"]
    sref = client.send({"op": "starttls", "id": sid, "side": "client",
                        "tls": {"cacertfile": xpki.root, "verify_callback": True}})
    ev = verify_event(client)
    assert ev["ref"] == sref and ev["verify_result"]["code"] == 0
    assert_cert_matches(ev["peer_chain"][0], xpki.cert("ec"))
    assert_cert_matches(ev["peer_chain"][1], xpki.inter)
    client.ok({"op": "answer", "request": ev["request"], "accept": True})
    assert client.reply(sref)["ok"]
    client.ok({"op": "setopts", "id": sid, "active": True})
    assert client.packets(sid, 1) == [b"over tls\r\n"]
    client.deliver(sid, b"thanks\r\n")
    assert s.result() == b"thanks\r\n"
    client.closed_event(sid)  # the server has closed
    srv.close()

    lst = listen(client, False, mode="line")
    aref = client.send({"op": "accept", "id": lst["id"], "active": "once"})
    cctx = python_client_context(xpki.root, xpki.chain("client"), xpki.key("client"))

    def peer():
        raw = socket.create_connection(("127.0.0.1", lst["port"]), timeout=10)
        raw.sendall(b"STARTTLS\r\n")
        assert recv_line(raw) == b"220 go\r\n"
        tls = cctx.wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"early client data\r\n")
        return recv_line(tls)

    p = InThread(peer)
    sid = client.reply(aref)["id"]
    assert client.packets(sid, 1) == [b"STARTTLS\r\n"]
    client.deliver(sid, b"220 go\r\n")
    tref = client.send({"op": "starttls", "id": sid, "side": "server",
                        "tls": {"certfile": xpki.chain("rsa"), "keyfile": xpki.key("rsa"),
                                "verify": 2, "cacertfile": xpki.root, "verify_callback": True}})
    # Active only once the socket is handshaking: the ClientHello (sent when
    # the peer reads "220 go") is never read as plaintext.
    client.ok({"op": "setopts", "id": sid, "active": True})
    ev = verify_event(client)
    assert ev["ref"] == tref and ev["id"] == sid
    assert [c["subject"] for c in ev["peer_chain"]] == [
        "CN=client,O=tlsport tests", "CN=Test Intermediate,OU=Mail\\, Inc.,O=tlsport tests"]
    time.sleep(0.3)  # the peer's data is there by now; it must wait for the verdict
    assert client.events.empty(), list(client.events.queue)
    d = client.call({"op": "deliver", "ref": "early", "id": sid, "text": "before verdict\r\n"})
    assert d["ok"] is False and d["error"]["kind"] == "bad_request", d
    client.ok({"op": "answer", "request": ev["request"], "accept": True})
    assert client.reply(tref)["ok"]
    assert client.packets(sid, 1) == [b"early client data\r\n"]
    client.deliver(sid, b"welcome\r\n")
    assert p.result() == b"welcome\r\n"


def test_starttls_server_verdict_reject_closes(client, xpki):
    """
    → starttls side server {verify_callback true} (ref T)  ← verify_peer
    → answer accept false   ← starttls error kind tls;  ← socket_closed
    """
    lst = listen(client, False, mode="line")
    aref = client.send({"op": "accept", "id": lst["id"], "active": False})
    cctx = python_client_context(xpki.root, xpki.chain("client"), xpki.key("client"))

    def peer():
        raw = socket.create_connection(("127.0.0.1", lst["port"]), timeout=10)
        tls = cctx.wrap_socket(raw, server_hostname="localhost")
        return tls.recv(10)

    p = InThread(peer)
    sid = client.reply(aref)["id"]
    tref = client.send({"op": "starttls", "id": sid, "side": "server",
                        "tls": {"certfile": xpki.chain("rsa"), "keyfile": xpki.key("rsa"),
                                "verify": 1, "cacertfile": xpki.root, "verify_callback": True}})
    ev = verify_event(client)
    client.ok({"op": "answer", "request": ev["request"], "accept": False})
    r = client.reply(tref)
    assert r["ok"] is False and r["error"]["kind"] == "tls", r
    assert client.closed_event(sid)["reason"]["kind"] == "tls"
    out = p.outcome()
    assert out == b"" or isinstance(out, (ssl.SSLError, OSError)), out
