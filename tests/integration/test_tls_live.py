"""TLS started and stopped on live connections (starttls, stoptls) against
real peers: openssl s_client and gnutls-cli speaking SMTP STARTTLS, and
Python's ssl on the other end of plaintext/TLS/plaintext streams.

Each test writes its dialogue out: → is a command to the daemon, ← what the
daemon says back, and "peer" lines are what the other end of the socket does."""

import socket
import ssl
import time

import pytest

from tls_peers import (InThread, procs, python_client_context, python_server_context,  # noqa: F401
                       recv_exact, recv_line, tcp_listener, xpki)


def plain_listener(client, mode="line"):
    return client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False, "mode": mode})


def server_tls(xpki, name="ec"):
    return {"certfile": xpki.chain(name), "keyfile": xpki.key(name)}


def events_until(client, predicate, timeout=10):
    """Events (with their arrival numbers) up to the first one `predicate` likes."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        ev = client.event(max(0.01, deadline - time.monotonic()), keep_seq=True)
        out.append(ev)
        if predicate(ev):
            return out


# ---------------------------------------------------------------- SMTP, daemon as server

def test_smtp_server_side_with_openssl_s_client(client, xpki, procs):
    """
    peer: openssl s_client -starttls smtp (-nocommands: "RCPT" and "QUIT" are
    text, not its renegotiate and quit commands)
    → listen tls:false mode line;  → accept active "once"
    → deliver "220 mail.example ESMTP"            ← fromsocket "EHLO mail.example.com"
    → deliver "250-mail.example" "250 STARTTLS"; → setopts once
    ← fromsocket "STARTTLS"
    → deliver "220 2.0.0 Ready to start TLS"; → starttls side server   ← ok
    → setopts active true
    peer (TLS): MAIL FROM / RCPT TO / QUIT   ←→ 250 / 250 / 221 through TLS
    """
    lst = plain_listener(client)
    aref = client.send({"op": "accept", "id": lst["id"], "active": "once"})
    peer = procs(["openssl", "s_client", "-starttls", "smtp", "-connect",
                  f"127.0.0.1:{lst['port']}", "-crlf", "-quiet", "-no_ign_eof", "-nocommands", "-CAfile",
                  xpki.root, "-verify_return_error", "-verify_hostname", "localhost"])
    sid = client.reply(aref)["id"]
    client.deliver(sid, b"220 mail.example ESMTP\r\n")
    assert client.packets(sid, 1) == [b"EHLO mail.example.com\r\n"]
    client.deliver(sid, b"250-mail.example\r\n250 STARTTLS\r\n")
    client.ok({"op": "setopts", "id": sid, "active": "once"})
    assert client.packets(sid, 1) == [b"STARTTLS\r\n"]
    client.deliver(sid, b"220 2.0.0 Ready to start TLS\r\n")
    client.ok({"op": "starttls", "id": sid, "side": "server", "tls": server_tls(xpki)})
    info = client.ok({"op": "info", "id": sid})
    assert info["protocol"] == "TLSv1.3" and info["mode"] == "line"
    assert info["local_certificate"]["subject"] == "CN=localhost,O=tlsport tests,C=DE"
    client.ok({"op": "setopts", "id": sid, "active": True})

    peer.write(b"MAIL FROM:<alice@example.org>\n")
    assert client.packets(sid, 1) == [b"MAIL FROM:<alice@example.org>\r\n"]
    client.deliver(sid, b"250 2.1.0 Ok\r\n")
    assert peer.read_until(b"250 2.1.0 Ok\r\n")
    peer.write(b"RCPT TO:<bob@example.org>\n")
    assert client.packets(sid, 1) == [b"RCPT TO:<bob@example.org>\r\n"]
    client.deliver(sid, b"250 2.1.5 Ok\r\n")
    assert peer.read_until(b"250 2.1.5 Ok\r\n")
    peer.write(b"QUIT\n")
    assert client.packets(sid, 1) == [b"QUIT\r\n"]
    client.deliver(sid, b"221 2.0.0 Bye\r\n")
    assert peer.read_until(b"221 2.0.0 Bye\r\n")
    client.ok({"op": "close", "id": sid})
    assert peer.finish()[0] == 0


def test_smtp_server_side_with_gnutls_cli(client, xpki, procs):
    """
    peer: gnutls-cli --starttls-proto=smtp (verifies the chain against the root
    and the name "localhost")
    → accept active "once";  → deliver "220 mail.example ESMTP"
    ← fromsocket "EHLO localhost"
    → deliver "250-mail.example" "250-PIPELINING" "250 STARTTLS"; → setopts active 1
    ← fromsocket "STARTTLS";  ← passive
    → deliver "220 Ready";  → starttls side server (the RSA certificate this time)   ← ok
    peer (TLS): MAIL FROM ←→ 250;  QUIT ←→ 221;  gnutls-cli sees the end
    """
    lst = plain_listener(client)
    aref = client.send({"op": "accept", "id": lst["id"], "active": "once"})
    peer = procs(["gnutls-cli", "--starttls-proto=smtp", "--crlf", "--x509cafile", xpki.root,
                  "-p", str(lst["port"]), "localhost"])
    sid = client.reply(aref)["id"]
    client.deliver(sid, b"220 mail.example ESMTP\r\n")
    assert client.packets(sid, 1) == [b"EHLO localhost\r\n"]
    client.deliver(sid, b"250-mail.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
    client.ok({"op": "setopts", "id": sid, "active": 1})
    assert client.packets(sid, 1) == [b"STARTTLS\r\n"]
    assert client.event() == {"event": "passive", "id": sid}
    client.deliver(sid, b"220 Ready\r\n")
    client.ok({"op": "starttls", "id": sid, "side": "server", "tls": server_tls(xpki, "rsa")})
    client.ok({"op": "setopts", "id": sid, "active": True})
    peer.read_until(b"Handshake was completed")

    peer.write(b"MAIL FROM:<alice@example.org>\n")
    assert client.packets(sid, 1) == [b"MAIL FROM:<alice@example.org>\r\n"]
    client.deliver(sid, b"250 2.1.0 Ok\r\n")
    peer.read_until(b"250 2.1.0 Ok")
    peer.write(b"QUIT\n")
    assert client.packets(sid, 1) == [b"QUIT\r\n"]
    client.deliver(sid, b"221 2.0.0 Bye\r\n")
    peer.read_until(b"221 2.0.0 Bye")
    info = client.ok({"op": "info", "id": sid})
    assert info["server_name"] == "localhost"  # gnutls-cli sent SNI
    assert info["local_certificate"]["public_key"]["type"] == "RSA"
    client.ok({"op": "close", "id": sid})
    _, out, _ = peer.finish()
    assert b"Peer has closed the GnuTLS connection" in out, out


# ---------------------------------------------------------------- SMTP, daemon as client

def python_smtp_server(srv, ctx, seen):
    """A STARTTLS server: greeting, EHLO, STARTTLS, then TLS for one command."""
    conn, _ = srv.accept()
    conn.settimeout(10)
    conn.sendall(b"220 py.example ESMTP\r\n")
    seen["ehlo"] = recv_line(conn)
    conn.sendall(b"250-py.example\r\n250 STARTTLS\r\n")
    seen["starttls"] = recv_line(conn)
    conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
    tls = ctx.wrap_socket(conn, server_side=True)
    seen["mail"] = recv_line(tls)
    tls.sendall(b"250 2.1.0 Ok\r\n")
    seen["quit"] = recv_line(tls)
    tls.sendall(b"221 Bye\r\n")
    return tls


def test_smtp_client_side_against_python_server(client, xpki):
    """
    peer: a Python STARTTLS server (plain greeting; wraps after its 220)
    → connect host "localhost" tls:false mode line active "once"
    ← fromsocket "220 py.example ESMTP"
    → deliver "EHLO client.example"; → setopts once  ← "250-py.example"
    → setopts once                                   ← "250 STARTTLS"
    → deliver "STARTTLS"; → setopts once             ← "220 2.0.0 Ready to start TLS"
    → starttls side client tls {cacertfile: root}    ← ok (SNI and host check: "localhost")
    → setopts active true; MAIL FROM ←→ 250; QUIT ←→ 221
    """
    srv = tcp_listener()
    ctx = python_server_context(xpki.chain("ec"), xpki.key("ec"))
    sni = []
    ctx.sni_callback = lambda sslobj, name, c: sni.append(name)
    seen = {}
    server = InThread(lambda: python_smtp_server(srv, ctx, seen))
    c = client.ok({"op": "connect", "host": "localhost", "port": srv.getsockname()[1],
                   "tls": False, "mode": "line", "active": "once"})
    sid = c["id"]
    assert client.packets(sid, 1) == [b"220 py.example ESMTP\r\n"]
    client.deliver(sid, b"EHLO client.example\r\n")
    client.ok({"op": "setopts", "id": sid, "active": "once"})
    assert client.packets(sid, 1) == [b"250-py.example\r\n"]
    client.ok({"op": "setopts", "id": sid, "active": "once"})
    assert client.packets(sid, 1) == [b"250 STARTTLS\r\n"]
    client.deliver(sid, b"STARTTLS\r\n")
    client.ok({"op": "setopts", "id": sid, "active": "once"})
    assert client.packets(sid, 1) == [b"220 2.0.0 Ready to start TLS\r\n"]
    assert client.ok({"op": "info", "id": sid})["protocol"] == "tcp"
    client.ok({"op": "starttls", "id": sid, "side": "client", "tls": {"cacertfile": xpki.root}})
    info = client.ok({"op": "info", "id": sid})
    assert info["server_name"] == "localhost" and sni == ["localhost"]
    assert info["verify_result"] == {"code": 0, "text": "ok"}
    assert [c["subject"] for c in info["peer_chain"]] == [
        "CN=localhost,O=tlsport tests,C=DE", "CN=Test Intermediate,OU=Mail\\, Inc.,O=tlsport tests"]
    client.ok({"op": "setopts", "id": sid, "active": True})
    client.deliver(sid, b"MAIL FROM:<carol@example.org>\r\n")
    assert client.packets(sid, 1) == [b"250 2.1.0 Ok\r\n"]
    client.deliver(sid, b"QUIT\r\n")
    assert client.packets(sid, 1) == [b"221 Bye\r\n"]
    tls = server.result()
    assert seen == {"ehlo": b"EHLO client.example\r\n", "starttls": b"STARTTLS\r\n",
                    "mail": b"MAIL FROM:<carol@example.org>\r\n", "quit": b"QUIT\r\n"}
    tls.close()
    srv.close()


def test_client_side_starttls_checks_the_connected_host_name(client, xpki):
    """
    peer: STARTTLS server whose certificate names only "client"
    → connect host "localhost" tls:false mode line active 3   ← "220 py.example ESMTP"
    → deliver "EHLO x"   ← "250-py.example" "250 STARTTLS", passive
    → deliver "STARTTLS"; → setopts once   ← "220 2.0.0 Ready to start TLS"
    → starttls side client {cacertfile: root}
    ← error kind tls (host name mismatch);  ← socket_closed kind tls
    """
    srv = tcp_listener()
    ctx = python_server_context(xpki.chain("client"), xpki.key("client"))
    server = InThread(lambda: python_smtp_server(srv, ctx, {}))
    sid = client.ok({"op": "connect", "host": "localhost", "port": srv.getsockname()[1],
                     "tls": False, "mode": "line", "active": 3})["id"]
    assert client.packets(sid, 1) == [b"220 py.example ESMTP\r\n"]
    client.deliver(sid, b"EHLO x\r\n")
    assert client.packets(sid, 2) == [b"250-py.example\r\n", b"250 STARTTLS\r\n"]
    assert client.event() == {"event": "passive", "id": sid}
    client.deliver(sid, b"STARTTLS\r\n")
    client.ok({"op": "setopts", "id": sid, "active": "once"})
    assert client.packets(sid, 1) == [b"220 2.0.0 Ready to start TLS\r\n"]
    r = client.call({"op": "starttls", "id": sid, "side": "client",
                     "tls": {"cacertfile": xpki.root}}, timeout=15)
    assert r["ok"] is False and r["error"]["kind"] == "tls", r
    assert "mismatch" in r["error"]["message"], r
    ev = client.closed_event(sid)
    assert ev["reason"]["kind"] == "tls", ev
    assert isinstance(server.outcome(), (ssl.SSLError, OSError))
    assert client.call({"op": "info", "id": sid})["error"]["kind"] == "no_such_socket"
    srv.close()


# ---------------------------------------------------------------- plaintext, TLS, plaintext

N_PLAIN, N_TLS, N_AGAIN = 300, 300, 200


def lines(tag, n):
    return [f"{tag} {i:05d} {'x' * (i % 37)}\n".encode() for i in range(1, n + 1)]


def stream_peer_tls_phase(tls):
    """Peer side while TLS is on: send ours, read the daemon's, wait for its
    close_notify, unwrap. Returns (daemon's TLS bytes, the plain socket)."""
    tls.sendall(b"".join(lines("p2d tls", N_TLS)))
    want = len(b"".join(lines("d2p tls", N_TLS)))
    got = recv_exact(tls, want)
    rest = tls.recv(100)  # b"": the daemon's close_notify
    assert rest == b"", rest
    return got, tls.unwrap()


def stream_peer_plain_again(raw):
    raw.sendall(b"".join(lines("p2d again", N_AGAIN)))
    return recv_exact(raw, len(b"".join(lines("d2p again", N_AGAIN))))


def check_stream_events(client, sid, evs, starttls_seq, stoptls_seq):
    """Every peer line once, in order; plaintext before starttls's reply,
    TLS lines between the two replies, plaintext again after stoptls's."""
    data = [e for e in evs if e["event"] == "fromsocket"]
    assert all(e["id"] == sid for e in data)
    got = [e["data"] for e in data]
    assert got == lines("p2d plain", N_PLAIN) + [b"STARTTLS\n"] + lines("p2d tls", N_TLS) + \
        lines("p2d again", N_AGAIN)
    cut1, cut2 = N_PLAIN + 1, N_PLAIN + 1 + N_TLS
    assert all(e["_seq"] < starttls_seq for e in data[:cut1])
    assert all(starttls_seq < e["_seq"] < stoptls_seq for e in data[cut1:cut2])
    assert all(e["_seq"] > stoptls_seq for e in data[cut2:])


def test_stream_plain_tls_plain_daemon_as_server(client, xpki):
    """
    peer (Python client): sends "p2d plain 1..300" and "STARTTLS" at once
    → accept tls:false mode line active 301 (the count ends on "STARTTLS")
    ← 301 fromsocket, ← passive
    → deliver "d2p plain 1..300" and at once → starttls side server   ← ok
      (what was queued before starttls leaves as plaintext first)
    peer: reads exactly the plaintext, wraps (TLS client), sends "p2d tls 1..300"
    → setopts active true; → deliver "d2p tls 1..300" and at once → stoptls
    ← fromsocket "p2d tls …" (all before the stoptls reply)   ← ok
    peer: reads the TLS lines, sees close_notify, unwrap(), sends "p2d again 1..200"
    → deliver "d2p again 1..200"                               ← the peer's lines
    """
    lst = plain_listener(client)
    aref = client.send({"op": "accept", "id": lst["id"], "active": N_PLAIN + 1})
    ctx = python_client_context(xpki.root)

    def peer():
        raw = socket.create_connection(("127.0.0.1", lst["port"]), timeout=10)
        raw.sendall(b"".join(lines("p2d plain", N_PLAIN)) + b"STARTTLS\n")
        plain = recv_exact(raw, len(b"".join(lines("d2p plain", N_PLAIN))))
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        got_tls, raw = stream_peer_tls_phase(tls)
        return plain, got_tls, stream_peer_plain_again(raw), raw

    p = InThread(peer)
    sid = client.reply(aref)["id"]
    evs = events_until(client, lambda e: e["event"] == "passive")
    for line in lines("d2p plain", N_PLAIN):
        client.deliver(sid, line)
    sref = client.send({"op": "starttls", "id": sid, "side": "server", "tls": server_tls(xpki)})
    start = client.reply(sref, keep_seq=True)
    assert start["ok"], start
    client.ok({"op": "setopts", "id": sid, "active": True})
    for line in lines("d2p tls", N_TLS):
        client.deliver(sid, line)
    stop = client.reply(client.send({"op": "stoptls", "id": sid}), keep_seq=True)
    assert stop["ok"] and stop["id"] == sid, stop
    assert client.ok({"op": "info", "id": sid})["protocol"] == "tcp"
    for line in lines("d2p again", N_AGAIN):
        client.deliver(sid, line)
    evs += events_until(client, lambda e: e.get("data", b"").startswith(b"p2d again %05d" % N_AGAIN))
    plain, got_tls, again, raw = p.result(20)
    assert plain == b"".join(lines("d2p plain", N_PLAIN))
    assert got_tls == b"".join(lines("d2p tls", N_TLS))
    assert again == b"".join(lines("d2p again", N_AGAIN))
    evs = [e for e in evs if e["event"] != "passive"]
    check_stream_events(client, sid, evs, start["_seq"], stop["_seq"])
    client.ok({"op": "close", "id": sid})
    assert raw.recv(10) == b""  # plain TCP close: no TLS record after stoptls
    raw.close()


def test_stream_plain_tls_plain_daemon_as_client(client, xpki):
    """
    peer (Python server): sends "p2d plain 1..300", reads the daemon's plain
    lines and its "STARTTLS", answers "STARTTLS" back, wraps (TLS server)
    → connect host "localhost" tls:false mode line active 301
    → deliver "d2p plain 1..300" "STARTTLS" at once
    ← 301 fromsocket (the last is the peer's "STARTTLS"), ← passive
    → starttls side client {cacertfile: root}   ← ok
    then TLS lines both ways, → stoptls ← ok, plaintext again both ways
    """
    srv = tcp_listener()
    ctx = python_server_context(xpki.chain("rsa"), xpki.key("rsa"))

    def peer():
        raw, _ = srv.accept()
        raw.settimeout(10)
        raw.sendall(b"".join(lines("p2d plain", N_PLAIN)))
        plain = recv_exact(raw, len(b"".join(lines("d2p plain", N_PLAIN)) + b"STARTTLS\n"))
        raw.sendall(b"STARTTLS\n")
        tls = ctx.wrap_socket(raw, server_side=True)
        got_tls, raw = stream_peer_tls_phase(tls)
        return plain, got_tls, stream_peer_plain_again(raw), raw

    p = InThread(peer)
    sid = client.ok({"op": "connect", "host": "localhost", "port": srv.getsockname()[1],
                     "tls": False, "mode": "line", "active": N_PLAIN + 1})["id"]
    for line in lines("d2p plain", N_PLAIN) + [b"STARTTLS\n"]:
        client.deliver(sid, line)
    evs = events_until(client, lambda e: e["event"] == "passive")
    start = client.reply(client.send({"op": "starttls", "id": sid, "side": "client",
                                      "tls": {"cacertfile": xpki.root}}), keep_seq=True)
    assert start["ok"], start
    assert client.ok({"op": "info", "id": sid})["peer_certificate"]["public_key"]["type"] == "RSA"
    client.ok({"op": "setopts", "id": sid, "active": True})
    for line in lines("d2p tls", N_TLS):
        client.deliver(sid, line)
    stop = client.reply(client.send({"op": "stoptls", "id": sid, "timeout_ms": 5000}),
                        keep_seq=True)
    assert stop["ok"], stop
    for line in lines("d2p again", N_AGAIN):
        client.deliver(sid, line)
    evs += events_until(client, lambda e: e.get("data", b"").startswith(b"p2d again %05d" % N_AGAIN))
    plain, got_tls, again, raw = p.result(20)
    assert plain == b"".join(lines("d2p plain", N_PLAIN)) + b"STARTTLS\n"
    assert got_tls == b"".join(lines("d2p tls", N_TLS))
    assert again == b"".join(lines("d2p again", N_AGAIN))
    evs = [e for e in evs if e["event"] != "passive"]
    check_stream_events(client, sid, evs, start["_seq"], stop["_seq"])
    raw.close()
    assert client.closed_event(sid)["reason"] == "normal"
    srv.close()


class BioClient:
    """A TLS client on memory BIOs over a plain socket: its ClientHello can be
    sent in the same segment as plaintext before it."""

    def __init__(self, raw, ctx, server_hostname):
        self.raw = raw
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)

    def client_hello(self):
        with pytest.raises(ssl.SSLWantReadError):
            self.obj.do_handshake()
        return self.outgoing.read()

    def _fill(self):
        data = self.raw.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    def _flush(self):
        data = self.outgoing.read()
        if data:
            self.raw.sendall(data)

    def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()

    def sendall(self, data):
        self.obj.write(data)
        self._flush()

    def recv_exact(self, n):
        out = b""
        while len(out) < n:
            try:
                out += self.obj.read(n - len(out))
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            except ssl.SSLZeroReturnError:
                break
        return out


def test_client_hello_in_the_same_segment_as_the_last_plain_line(client, xpki):
    """
    peer (Python, memory BIOs): one sendall of "p2d plain 1..300", "STARTTLS"
    and its ClientHello (one that holds a "\\n" byte, which the line framing
    would otherwise take for the end of a line)
    → accept tls:false mode line active 301   ← 301 fromsocket, ← passive
    → deliver "220 go ahead"; → starttls side server   ← ok
    (the ClientHello, already read by the daemon, went to the handshake:
    nothing of it came as plaintext)
    peer: reads "220 go ahead", finishes the handshake; TLS lines both ways
    """
    lst = plain_listener(client)
    aref = client.send({"op": "accept", "id": lst["id"], "active": N_PLAIN + 1})
    ctx = python_client_context(xpki.root)

    def peer():
        raw = socket.create_connection(("127.0.0.1", lst["port"]), timeout=10)
        for _ in range(200):
            bio = BioClient(raw, ctx, "localhost")
            hello = bio.client_hello()
            if b"\n" in hello:
                break
        assert b"\n" in hello
        raw.sendall(b"".join(lines("p2d plain", N_PLAIN)) + b"STARTTLS\n" + hello)
        assert recv_exact(raw, len(b"220 go ahead\r\n")) == b"220 go ahead\r\n"
        bio.handshake()
        bio.sendall(b"".join(lines("p2d tls", 20)))
        return bio.recv_exact(len(b"".join(lines("d2p tls", 20)))), bio.obj.version(), raw

    p = InThread(peer)
    sid = client.reply(aref)["id"]
    evs = events_until(client, lambda e: e["event"] == "passive")
    assert [e["data"] for e in evs[:-1]] == lines("p2d plain", N_PLAIN) + [b"STARTTLS\n"]
    client.deliver(sid, b"220 go ahead\r\n")
    client.ok({"op": "starttls", "id": sid, "side": "server", "tls": server_tls(xpki, "ed")})
    for line in lines("d2p tls", 20):
        client.deliver(sid, line)
    client.ok({"op": "setopts", "id": sid, "active": True})
    assert client.packets(sid, 20) == lines("p2d tls", 20)
    got, version, raw = p.result()
    assert got == b"".join(lines("d2p tls", 20)) and version == "TLSv1.3"
    assert client.ok({"op": "info", "id": sid})["local_certificate"]["public_key"]["type"] == "ED25519"
    raw.close()


# ---------------------------------------------------------------- refusals and failures

def test_starttls_on_tls_and_stoptls_on_plain_are_bad_requests(client, xpki):
    """
    → starttls on a TLS connection        ← bad_request (it speaks TLS already)
    → stoptls on a plain connection       ← bad_request; both sockets live on
    """
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": server_tls(xpki)})
    aref = client.send({"op": "accept", "id": lst["id"]})
    c = client.ok({"op": "connect", "host": "127.0.0.1", "port": lst["port"],
                   "tls": {"cacertfile": xpki.root}})
    a = client.reply(aref)
    for sid, side in ((c["id"], "client"), (a["id"], "server")):
        r = client.error({"op": "starttls", "id": sid, "side": side, "tls": server_tls(xpki)},
                         "bad_request")
        assert "TLS already" in r["error"]["message"]
    plst = plain_listener(client, mode="raw")
    aref = client.send({"op": "accept", "id": plst["id"]})
    pc = client.ok({"op": "connect", "host": "127.0.0.1", "port": plst["port"], "tls": False})
    client.reply(aref)
    client.error({"op": "stoptls", "id": pc["id"]}, "bad_request")
    client.deliver(c["id"], b"still fine")
    assert client.read_data(a["id"], 10) == b"still fine"


def test_deliver_during_starttls_is_refused_and_a_silent_peer_times_out(client, xpki):
    """
    peer: connects, says "STARTTLS", then nothing (no ClientHello)
    → starttls side server timeout_ms 600
    → deliver (ref) while the handshake waits   ← bad_request with the socket's id
    ← starttls: error kind timeout;  ← socket_closed kind timeout
    """
    lst = plain_listener(client)
    aref = client.send({"op": "accept", "id": lst["id"], "active": "once"})
    raw = socket.create_connection(("127.0.0.1", lst["port"]))
    raw.sendall(b"STARTTLS\n")
    sid = client.reply(aref)["id"]
    assert client.packets(sid, 1) == [b"STARTTLS\n"]
    sref = client.send({"op": "starttls", "id": sid, "side": "server", "tls": server_tls(xpki),
                        "timeout_ms": 600})
    d = client.call({"op": "deliver", "ref": "early", "id": sid, "text": "too early"})
    assert d["ok"] is False and d["error"]["kind"] == "bad_request" and d["id"] == sid, d
    start = time.monotonic()
    r = client.reply(sref, keep_seq=True)
    assert r["ok"] is False and r["error"]["kind"] == "timeout", r
    assert 0.3 < time.monotonic() - start < 3
    ev = client.event(keep_seq=True)
    assert ev["event"] == "socket_closed" and ev["id"] == sid and ev["_seq"] > r["_seq"], ev
    assert ev["reason"]["kind"] == "timeout"
    raw.settimeout(5)
    assert raw.recv(100) == b""  # "too early" was never sent
    raw.close()


def test_failed_starttls_handshake_gives_tls_error_then_socket_closed(client, xpki):
    """
    peer: "STARTTLS", then plain text instead of a ClientHello
    → starttls side server   ← error kind tls;  ← socket_closed kind tls
    """
    lst = plain_listener(client)
    aref = client.send({"op": "accept", "id": lst["id"], "active": "once"})
    raw = socket.create_connection(("127.0.0.1", lst["port"]))
    raw.sendall(b"STARTTLS\n")
    sid = client.reply(aref)["id"]
    assert client.packets(sid, 1) == [b"STARTTLS\n"]
    raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
    r = client.reply(client.send({"op": "starttls", "id": sid, "side": "server",
                                  "tls": server_tls(xpki)}), keep_seq=True)
    assert r["ok"] is False and r["error"]["kind"] == "tls" and r["error"]["message"], r
    ev = client.event(keep_seq=True)
    assert ev["event"] == "socket_closed" and ev["id"] == sid and ev["_seq"] > r["_seq"], ev
    assert ev["reason"]["kind"] == "tls"
    raw.close()


def tls_pair_with_python_client(client, xpki):
    """A plain accepted socket upgraded to TLS with a Python client: (id, ssl socket)."""
    lst = plain_listener(client, mode="raw")
    aref = client.send({"op": "accept", "id": lst["id"], "active": False})
    raw = socket.create_connection(("127.0.0.1", lst["port"]), timeout=10)
    sid = client.reply(aref)["id"]
    peer = InThread(lambda: python_client_context(xpki.root).wrap_socket(
        raw, server_hostname="localhost"))
    client.ok({"op": "starttls", "id": sid, "side": "server", "tls": server_tls(xpki)})
    return sid, peer.result()


def test_stoptls_times_out_when_the_peer_does_not_answer(client, xpki):
    """
    peer: TLS, then reads nothing (never answers close_notify)
    → stoptls timeout_ms 400   ← error kind timeout;  ← socket_closed kind timeout
    """
    sid, tls = tls_pair_with_python_client(client, xpki)
    start = time.monotonic()
    r = client.reply(client.send({"op": "stoptls", "id": sid, "timeout_ms": 400}), keep_seq=True)
    assert r["ok"] is False and r["error"]["kind"] == "timeout", r
    assert 0.3 < time.monotonic() - start < 3
    ev = client.event(keep_seq=True)
    assert ev["event"] == "socket_closed" and ev["id"] == sid and ev["_seq"] > r["_seq"], ev
    tls.close()


def test_stoptls_when_the_peer_closes_tcp_instead(client, xpki):
    """
    peer: TLS; on the daemon's close_notify it closes TCP (no close_notify back)
    → stoptls   ← error (kind closed);  ← socket_closed
    """
    sid, tls = tls_pair_with_python_client(client, xpki)

    def peer():
        assert tls.recv(10) == b""
        socket.socket(fileno=tls.detach()).close()  # TCP FIN, no close_notify

    p = InThread(peer)
    r = client.reply(client.send({"op": "stoptls", "id": sid, "timeout_ms": 5000}), keep_seq=True)
    p.result()
    assert r["ok"] is False and r["error"]["kind"] == "closed", r
    ev = client.event(keep_seq=True)
    assert ev["event"] == "socket_closed" and ev["id"] == sid and ev["_seq"] > r["_seq"], ev
