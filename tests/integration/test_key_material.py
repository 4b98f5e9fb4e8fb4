"""Key material against real peers: PEM and DER, RSA, EC and Ed25519, chains
in the certificate file, inline PEM, encrypted keys and every passphrase
route (including asking the client), files that are not regular files, and
DHE suites. Each served or presented key proves itself in a real handshake
with Python's ssl, openssl s_client/s_server or gnutls-cli.

Each test writes its dialogue out: → to the daemon, ← from it."""

import os
import re
import socket
import time

from conftest import Daemon, unix_client, wait_for_path
from tls_peers import (PASSWORD, InThread, env_with, gnutls_client, openssl_client,  # noqa: F401
                       openssl_server, procs, python_client_context, python_server_context,
                       recv_exact, recv_line, tcp_listener, xpki)


def listen(client, tls, **extra):
    return client.call({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": tls, **extra})


def serve_one(client, lst, talk):
    """→ accept; `talk()` runs the peer; "ping\\n" in, "pong\\n" out."""
    aref = client.send({"op": "accept", "id": lst["id"]})
    peer = InThread(talk)
    a = client.reply(aref)
    assert a["ok"], a
    assert client.read_data(a["id"], 5) == b"ping\n"
    client.deliver(a["id"], b"pong\n")
    result = peer.result(15)
    client.closed_event(a["id"])  # every peer here closes once it has its answer
    return result


def python_peer(port, cafile):
    ctx = python_client_context(cafile)

    def talk():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"ping\n")
                return recv_exact(s, 5), s.getpeercert()["subject"]

    return talk


def openssl_peer(procs, port, cafile):
    def talk():
        p = openssl_client(procs, port, "-CAfile", cafile, "-verify_return_error",
                           "-verify_hostname", "localhost")
        p.write(b"ping\n")
        line = p.readline()
        rc, _, err = p.finish()
        assert rc == 0, err
        return line

    return talk


def gnutls_peer(procs, port, cafile, log):
    def talk():
        p = gnutls_client(procs, port, "--x509cafile", cafile, "--logfile", log)
        p.write(b"ping\n")
        line = p.readline()
        rc, _, err = p.finish()
        assert rc == 0, err
        return line

    return talk


def material_cases(x):
    """(name, tls, CA file the peers trust). Trusting only the root proves the
    intermediate came from the certificate file."""
    both = x.path("root-and-inter.pem")
    return [
        ("rsa pem chain, pkcs8 key", {"certfile": x.chain("rsa"), "keyfile": x.key("rsa")}, x.root),
        ("ec pem chain", {"certfile": x.chain("ec"), "keyfile": x.key("ec")}, x.root),
        ("ed25519 pem chain", {"certfile": x.chain("ed"), "keyfile": x.key("ed")}, x.root),
        ("rsa der cert, pkcs1 der key", {"certfile": x.path("rsa.der"),
                                         "keyfile": x.path("rsa-key.der")}, both),
        ("ec der cert, pkcs8 der key", {"certfile": x.path("ec.der"),
                                        "keyfile": x.path("ec-key.der")}, both),
        ("chain and key in one file", {"certfile": x.path("rsa-all.pem")}, x.root),
        ("inline cert and key", {"cert": x.text("ed-chain.pem"), "key": x.text("ed.key")}, x.root),
    ]


def test_every_format_and_algorithm_serves_python_openssl_and_gnutls(client, xpki, procs,
                                                                     tmp_path):
    """
    for each (format, algorithm):
      → listen tls {…}  ← ok
      peers in turn (each trusting the root only, or root and intermediate for
      a DER leaf): Python ssl, openssl s_client, gnutls-cli
      → accept ← ok;  peer "ping" → ← fromsocket;  → deliver "pong" → peer
    """
    for name, tls, cafile in material_cases(xpki):
        lst = listen(client, tls)
        assert lst["ok"], (name, lst)
        got, subject = serve_one(client, lst, python_peer(lst["port"], cafile))
        assert got == b"pong\n", name
        assert ("commonName", "localhost") in [kv for rdn in subject for kv in rdn]
        assert serve_one(client, lst, openssl_peer(procs, lst["port"], cafile)) == b"pong\n", name
        log = str(tmp_path / "gnutls.log")
        assert serve_one(client, lst, gnutls_peer(procs, lst["port"], cafile, log)) == b"pong\n", \
            (name, open(log).read()[-2000:])
        client.ok({"op": "close", "id": lst["id"]})


def test_client_certificates_in_every_format(client, xpki):
    """
    peer: a Python TLS server that requires a client certificate (CAs: root and
    intermediate) and reports the one it got
    → connect tls {cacertfile root, certfile/keyfile or cert/key: …}  ← ok
    peer ← its subject; "ping"/"pong"
    """
    srv = tcp_listener()
    sctx = python_server_context(xpki.chain("ec"), xpki.key("ec"), xpki.path("root-and-inter.pem"))
    cases = [
        {"certfile": xpki.chain("client"), "keyfile": xpki.key("client")},
        {"certfile": xpki.path("rsa.der"), "keyfile": xpki.path("rsa-key.der")},
        {"certfile": xpki.path("ec.der"), "keyfile": xpki.path("ec-enc.der"), "password": PASSWORD},
        {"cert": xpki.text("ed.pem"), "key": xpki.text("ed-enc.key"), "password": PASSWORD},
    ]
    for tls in cases:
        def server():
            conn, _ = srv.accept()
            with sctx.wrap_socket(conn, server_side=True) as s:
                s.settimeout(10)
                got = recv_exact(s, 5)
                s.sendall(b"pong\n")
                return got, dict(kv for rdn in s.getpeercert()["subject"] for kv in rdn)

        p = InThread(server)
        c = client.call({"op": "connect", "host": "localhost", "port": srv.getsockname()[1],
                         "tls": {"cacertfile": xpki.root, **tls}})
        assert c["ok"], (tls.keys(), c)
        local = client.ok({"op": "info", "id": c["id"]})["local_certificate"]
        client.deliver(c["id"], b"ping\n")
        assert client.read_data(c["id"], 5) == b"pong\n"
        got, subject = p.result()
        assert got == b"ping\n"
        assert subject["commonName"] in ("client", "localhost")
        assert local["subject"].startswith("CN=" + subject["commonName"])
        client.closed_event(c["id"])  # the server has closed
    srv.close()


# ---------------------------------------------------------------- passphrases

def passphrase_cases(x):
    return [
        ("password, pkcs8 pem", {"certfile": x.chain("rsa"), "keyfile": x.path("rsa-enc.key"),
                                 "password": PASSWORD}),
        ("password_file, traditional pem", {"certfile": x.chain("rsa"),
                                            "keyfile": x.path("rsa-trad-enc.key"),
                                            "password_file": x.path("password.txt")}),
        ("-pass pass:, pkcs8 der", {"flags": f"-cert {x.path('ec.der')} "
                                             f"-key {x.path('ec-enc.der')} -pass pass:{PASSWORD}"}),
        ("-pass file:, ed25519", {"flags": f"-cert {x.chain('ed')} -key {x.path('ed-enc.key')} "
                                           f"-pass file:{x.path('password.txt')}"}),
        ("-pass env:", {"flags": f"-cert {x.chain('rsa')} -key {x.path('rsa-enc.key')} "
                                 "-pass env:TLSPORT_TEST_KEY_PASS"}),
    ]


def test_every_passphrase_route_serves_a_handshake(xpki):
    """
    daemon started with TLSPORT_TEST_KEY_PASS in its environment
    for each route: → listen tls {…}  ← ok;  Python client: ping/pong
    """
    d = Daemon(env=env_with(TLSPORT_TEST_KEY_PASS=PASSWORD))
    try:
        client = d.client
        for name, tls in passphrase_cases(xpki):
            lst = listen(client, tls)
            assert lst["ok"], (name, lst)
            cafile = xpki.path("root-and-inter.pem")
            got, _ = serve_one(client, lst, python_peer(lst["port"], cafile))
            assert got == b"pong\n", name
    finally:
        d.stop()


def test_wrong_or_missing_passphrases_say_which(client, xpki, tmp_path):
    """
    → listen with an encrypted key and:
      a wrong password           ← bad_tls_config "wrong password for … <key file>"
      none                       ← bad_tls_config "… is encrypted and no password was given"
      a missing password_file    ← bad_tls_config naming the password file
      -pass env:UNSET            ← bad_tls_config naming the variable
      a wrong one in -pass file: ← bad_tls_config "wrong password"
    the same on connect (a client certificate) and tls_context
    """
    enc = xpki.path("rsa-enc.key")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not it\n")
    cases = [
        ({"password": "not it"}, f"wrong password for the private key in key file {enc}"),
        ({}, f"the private key in key file {enc} is encrypted and no password was given"),
        ({"password_file": str(tmp_path / "nope.txt")}, f"password file {tmp_path / 'nope.txt'}"),
    ]
    for extra, text in cases:
        tls = {"certfile": xpki.chain("rsa"), "keyfile": enc, **extra}
        for cmd in ({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": tls},
                    {"op": "connect", "host": "127.0.0.1", "port": 1, "tls": tls},
                    {"op": "tls_context", "name": "k", "tls": tls}):
            r = client.error(cmd, "bad_tls_config")
            assert text in r["error"]["message"], (cmd["op"], extra, r)
    r = client.error({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": {
        "flags": f"-cert {xpki.chain('rsa')} -key {enc} -pass env:TLSPORT_SURELY_UNSET"}},
        "bad_tls_config")
    assert "TLSPORT_SURELY_UNSET" in r["error"]["message"], r
    r = client.error({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": {
        "flags": f"-cert {xpki.chain('ed')} -key {xpki.path('ed-enc.key')} -pass file:{wrong}"}},
        "bad_tls_config")
    assert "wrong password" in r["error"]["message"] and "ed-enc.key" in r["error"]["message"], r


def test_ask_password_listen_answer_timeout_and_wrong_answer(client, xpki, procs, tmp_path):
    """
    → listen {keyfile rsa-enc.key, ask_password true} (ref L)
    ← password_needed ref L, source "key file …rsa-enc.key"
    (→ hello meanwhile ← ok: the daemon goes on)
    → answer password  ← ok;  ← listen ok;  gnutls-cli: ping/pong
    → listen … callback_timeout_ms 300 (ref T) ← password_needed; no answer ← timeout
    → listen … (ref W) ← password_needed; → answer "wrong" ← ok; ← bad_tls_config
      "wrong password" (no second question)
    → answer with no open question ← bad_request
    """
    enc = xpki.path("rsa-enc.key")
    tls = {"certfile": xpki.chain("rsa"), "keyfile": enc, "ask_password": True}
    ref = client.send({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": tls})
    ev = client.event()
    assert ev["event"] == "password_needed" and ev["ref"] == ref, ev
    assert ev["source"] == f"key file {enc}"
    assert client.ok({"op": "hello"})["protocol"] == 1
    assert ref not in client.replies
    client.ok({"op": "answer", "request": ev["request"], "password": PASSWORD})
    lst = client.reply(ref)
    assert lst["ok"], lst
    log = str(tmp_path / "gnutls.log")
    assert serve_one(client, lst, gnutls_peer(procs, lst["port"], xpki.root, log)) == b"pong\n"

    start = time.monotonic()
    ref = client.send({"op": "listen", "host": "127.0.0.1", "port": 0,
                       "tls": {**tls, "callback_timeout_ms": 300}})
    ev = client.event()
    assert ev["event"] == "password_needed"
    r = client.reply(ref)
    assert r["ok"] is False and r["error"]["kind"] == "timeout", r
    assert time.monotonic() - start < 3
    client.error({"op": "answer", "request": ev["request"], "password": PASSWORD}, "bad_request")

    ref = client.send({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": tls})
    ev = client.event()
    client.ok({"op": "answer", "request": ev["request"], "password": "wrong"})
    r = client.reply(ref)
    assert r["ok"] is False and r["error"]["kind"] == "bad_tls_config", r
    assert "wrong password" in r["error"]["message"]
    assert client.events.empty()
    client.error({"op": "answer", "request": 12345, "password": "x"}, "bad_request")


def test_ask_password_for_a_client_certificate_and_a_tls_context(client, xpki, procs):
    """
    peer: openssl s_server -Verify 1 (a client certificate is required)
    → connect {certfile ec.der, keyfile ec-enc.der, ask_password true} (ref C)
    ← password_needed ref C, source "key file …ec-enc.der";  → answer  ← connect ok
    → tls_context "asked" {…ed-enc.key, ask_password} ← password_needed; → answer
    ← ok server true; → listen tls "asked"; s_client: ping/pong
    """
    server = openssl_server(procs, xpki.cert("ec"), xpki.key("ec"), "-cert_chain", xpki.inter,
                            "-Verify", "1", "-CAfile", xpki.path("root-and-inter.pem"),
                            "-verify_return_error")
    ref = client.send({"op": "connect", "host": "localhost", "port": server.port, "tls": {
        "cacertfile": xpki.root, "certfile": xpki.path("ec.der"),
        "keyfile": xpki.path("ec-enc.der"), "ask_password": True}})
    ev = client.event()
    assert ev["event"] == "password_needed" and ev["ref"] == ref, ev
    assert ev["source"] == f"key file {xpki.path('ec-enc.der')}"
    client.ok({"op": "answer", "request": ev["request"], "password": PASSWORD})
    c = client.reply(ref)
    assert c["ok"], c
    client.deliver(c["id"], b"from a client certificate\n")
    assert server.readline() == b"from a client certificate\n"

    ref = client.send({"op": "tls_context", "name": "asked", "tls": {
        "certfile": xpki.chain("ed"), "keyfile": xpki.path("ed-enc.key"), "ask_password": True}})
    ev = client.event()
    assert ev["event"] == "password_needed" and ev["ref"] == ref
    client.ok({"op": "answer", "request": ev["request"], "password": PASSWORD})
    r = client.reply(ref)
    assert r["ok"] and r["server"] is True, r
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": "asked"})
    assert serve_one(client, lst, openssl_peer(procs, lst["port"], xpki.root)) == b"pong\n"


# ---------------------------------------------------------------- not regular files

def test_fifo_and_other_special_files_are_refused_at_once(xpki, tmp_path):
    """
    daemon on a Unix socket, two clients A and B
    A → listen {certfile: a FIFO nobody writes}  ← at once: bad_tls_config naming
    it ("… is a FIFO, not a regular file"); B's commands, sent right after, are
    answered meanwhile (B → connect to its own listener ← ok; data flows)
    A → keyfile FIFO, cacertfile a directory, certfile /dev/zero, dhparamfile,
    password_file a FIFO, inject_ca cacertfile FIFO, starttls certfile FIFO
    ← each bad_tls_config naming the file
    """
    fifo = str(tmp_path / "cert.fifo")
    os.mkfifo(fifo)
    path = str(tmp_path / "d.sock")
    d = Daemon(["--unix", path], stdio=False)
    try:
        wait_for_path(path)
        a, b = unix_client(path), unix_client(path)
        b_lst = b.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": {
            "certfile": xpki.chain("ec"), "keyfile": xpki.key("ec")}})
        start = time.monotonic()
        aref = a.send({"op": "listen", "host": "127.0.0.1", "port": 0,
                       "tls": {"certfile": fifo, "keyfile": xpki.key("ec")}})
        bacc = b.send({"op": "accept", "id": b_lst["id"]})
        bc = b.call({"op": "connect", "host": "localhost", "port": b_lst["port"],
                     "tls": {"cacertfile": xpki.root}})
        r = a.reply(aref, timeout=5)
        assert time.monotonic() - start < 2
        assert r["ok"] is False and r["error"]["kind"] == "bad_tls_config", r
        assert fifo in r["error"]["message"] and "FIFO" in r["error"]["message"], r
        assert bc["ok"], bc
        bs = b.reply(bacc)["id"]
        b.deliver(bc["id"], b"served meanwhile")
        assert b.read_data(bs, 16) == b"served meanwhile"

        ec = {"certfile": xpki.chain("ec"), "keyfile": xpki.key("ec")}
        cases = [
            ({"certfile": xpki.chain("ec"), "keyfile": fifo}, fifo, "FIFO"),
            ({**ec, "cacertfile": str(tmp_path)}, str(tmp_path), "directory"),
            ({"certfile": "/dev/zero", "keyfile": xpki.key("ec")}, "/dev/zero", "device"),
            ({**ec, "dhparamfile": fifo}, fifo, "FIFO"),
            ({"certfile": xpki.chain("rsa"), "keyfile": xpki.path("rsa-enc.key"),
              "password_file": fifo}, fifo, "FIFO"),
        ]
        for tls, name, what in cases:
            r = a.error({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": tls},
                        "bad_tls_config", timeout=5)
            assert name in r["error"]["message"] and what in r["error"]["message"], r

        plain = a.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
        pacc = a.send({"op": "accept", "id": plain["id"]})
        raw = socket.create_connection(("127.0.0.1", plain["port"]))
        sid = a.reply(pacc)["id"]
        r = a.error({"op": "starttls", "id": sid, "side": "server",
                     "tls": {"certfile": fifo, "keyfile": xpki.key("ec")}}, "bad_tls_config")
        assert fifo in r["error"]["message"], r
        a.deliver(sid, b"still plain\n")  # a refused starttls leaves the socket as it was
        raw.settimeout(5)
        assert recv_line(raw) == b"still plain\n"
        tc = b.call({"op": "inject_ca", "id": bc["id"], "cacertfile": fifo})
        assert tc["ok"] is False and tc["error"]["kind"] == "bad_tls_config", tc
        assert fifo in tc["error"]["message"]
        raw.close()
    finally:
        d.proc.terminate()
        d.proc.wait(10)
        d.check_sanitizers()


# ---------------------------------------------------------------- DHE

def test_dhe_suites_with_openssl_and_gnutls_default_and_dhparamfile(client, xpki, procs, tmp_path):
    """
    → listen {rsa chain}                      (automatic DH: 2048 bits for RSA 2048)
    → listen {rsa chain, dhparamfile ffdhe3072.pem}
    peer: openssl s_client -cipher DHE-RSA-AES128-GCM-SHA256 -tls1_2 -brief
      ← "Server Temp Key: DH, 2048 bits" / "DH, 3072 bits"
    peer: gnutls-cli --priority …:+DHE-RSA, TLS 1.2 ← "(DHE-CUSTOM2048)" / 3072
    → info ← cipher DHE-RSA-AES128-GCM-SHA256 (openssl) / a DHE-RSA suite (gnutls)
    → listen {dhparamfile: a certificate} ← bad_tls_config
    """
    for extra, bits in (({}, 2048), ({"dhparamfile": xpki.path("ffdhe3072.pem")}, 3072)):
        lst = listen(client, {"certfile": xpki.chain("rsa"), "keyfile": xpki.key("rsa"), **extra})
        assert lst["ok"], lst
        aref = client.send({"op": "accept", "id": lst["id"]})
        s = procs(["openssl", "s_client", "-connect", f"127.0.0.1:{lst['port']}", "-brief",
                   "-cipher", "DHE-RSA-AES128-GCM-SHA256", "-tls1_2", "-CAfile", xpki.root,
                   "-verify_return_error"])
        a = client.reply(aref)
        assert a["ok"], a
        info = client.ok({"op": "info", "id": a["id"]})
        assert info["cipher"] == "DHE-RSA-AES128-GCM-SHA256" and info["protocol"] == "TLSv1.2"
        client.ok({"op": "close", "id": a["id"]})
        rc, _, err = s.finish()
        assert f"Server Temp Key: DH, {bits} bits".encode() in err, err

        aref = client.send({"op": "accept", "id": lst["id"]})
        log = tmp_path / f"gnutls-{bits}.log"
        g = gnutls_client(procs, lst["port"], "--x509cafile", xpki.root, "--logfile", str(log),
                          "--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+DHE-RSA")
        a = client.reply(aref)
        assert a["ok"], a
        assert client.ok({"op": "info", "id": a["id"]})["cipher"].startswith("DHE-RSA-")
        client.deliver(a["id"], b"dhe\n")
        assert g.readline() == b"dhe\n"
        g.finish()
        # gnutls names the group when it knows it (ffdhe3072), else "CUSTOM".
        assert re.search(rf"\(DHE-(CUSTOM|FFDHE){bits}\)", log.read_text()), \
            log.read_text()[-1500:]
    r = listen(client, {"certfile": xpki.chain("rsa"), "keyfile": xpki.key("rsa"),
                        "dhparamfile": xpki.root})
    assert r["ok"] is False and r["error"]["kind"] == "bad_tls_config", r
    assert xpki.root in r["error"]["message"]
