"""TLS on live connections and the TLS options, with the threaded client,
against real peers: Python's ssl and smtplib, openssl s_client/s_server,
gnutls-cli."""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import stat
import threading
from typing import Any, Dict, Iterator, List

import pytest

import tlsport
from conftest import PeerServer, echo_handler, recv_exactly, ssl_client_context, ssl_connect, ssl_server_context
from tls_peers import extra_certs, need, openssl_s_server, run_tool, smtp_client_peer, smtp_server_peer, stop_process


@pytest.fixture
def more(certs: Dict[str, str]) -> Dict[str, str]:
    return extra_certs(certs)


@pytest.fixture
def peers() -> Iterator[List[PeerServer]]:
    made: List[PeerServer] = []
    yield made
    for p in made:
        p.close()


def serve(peers: List[PeerServer], ctx: Any, handler: Any = echo_handler) -> PeerServer:
    p = PeerServer(ctx, handler)
    peers.append(p)
    return p


def in_thread(fn: Any, *args: Any) -> Dict[str, Any]:
    """Run ``fn`` on a thread; the dict gets ``value`` or ``error``, and ``thread``."""
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    box["thread"] = threading.Thread(target=run, daemon=True)
    box["thread"].start()
    return box


def result(box: Dict[str, Any], timeout: float = 10) -> Any:
    box["thread"].join(timeout)
    assert not box["thread"].is_alive(), "the peer thread hangs"
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---------------------------------------------------------------------------- STARTTLS


def smtp_server_role(conn: tlsport.Socket, tls: Any) -> List[bytes]:
    """Our side of an SMTP-style server on a passive line-mode socket."""
    heard = []
    conn.send(b"220 mail.example ESMTP\r\n")
    heard.append(conn.recv(timeout=5))  # EHLO
    conn.send(b"250-mail.example\r\n250 STARTTLS\r\n")
    heard.append(conn.recv(timeout=5))  # STARTTLS: the peer's last plaintext line
    conn.send(b"220 Go ahead\r\n")
    conn.starttls("server", tls=tls, timeout=10)
    heard.append(conn.recv(timeout=5))  # EHLO over TLS
    conn.send(b"250 mail.example\r\n")
    heard.append(conn.recv(timeout=5))  # QUIT
    conn.send(b"221 Bye\r\n")
    return heard


def test_starttls_server_role_python_ssl_peer(client: tlsport.Client, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    listener = client.listen(0, "127.0.0.1", tls=False, mode="line", active=False)
    peer = in_thread(smtp_client_peer, listener.port, ssl_client_context(certs))
    conn = listener.accept(timeout=5)
    heard = smtp_server_role(conn, server_tls)
    assert heard == [b"EHLO client.example\r\n", b"STARTTLS\r\n", b"EHLO client.example\r\n", b"QUIT\r\n"]
    assert conn.info()["protocol"].startswith("TLSv1.")
    replies = result(peer)
    assert replies[0].startswith(b"220 mail.example") and replies[-1] == b"221 Bye\r\n"
    conn.close()


def test_starttls_server_role_smtplib(client: tlsport.Client, certs: Dict[str, str]) -> None:
    client.tls_context("mail", {"certfile": certs["server_cert"], "keyfile": certs["server_key"]})
    listener = client.listen(0, "127.0.0.1", tls=False, mode="line", active=False)

    def smtplib_client() -> Any:
        with smtplib.SMTP("127.0.0.1", listener.port, local_hostname="client.example", timeout=10) as smtp:
            smtp.starttls(context=ssl_client_context(certs))
            smtp.ehlo()
            return smtp.sock.version()  # type: ignore[union-attr]

    peer = in_thread(smtplib_client)
    conn = listener.accept(timeout=5)
    heard = smtp_server_role(conn, "mail")  # a named context
    assert heard[1] == b"STARTTLS\r\n" and heard[2].startswith(b"ehlo client.example")
    assert result(peer).startswith("TLSv1.")


def test_starttls_server_role_openssl_s_client(client: tlsport.Client, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    need("openssl")
    listener = client.listen(0, "127.0.0.1", tls=False, mode="line", active=False)
    argv = ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{listener.port}", "-CAfile", certs["ca"],
            "-verify_return_error", "-crlf", "-ign_eof"]
    peer = in_thread(run_tool, argv, b"EHLO again\nQUIT\n")
    conn = listener.accept(timeout=5)
    conn.send(b"220 mail.example ESMTP\r\n")
    assert conn.recv(timeout=5).upper().startswith(b"EHLO")
    conn.send(b"250-mail.example\r\n250 STARTTLS\r\n")
    assert conn.recv(timeout=5) == b"STARTTLS\r\n"
    conn.send(b"220 Go ahead\r\n")
    conn.starttls("server", tls=server_tls, timeout=10)
    assert conn.recv(timeout=5) == b"EHLO again\r\n"
    conn.send(b"250 mail.example\r\n")
    assert conn.recv(timeout=5) == b"QUIT\r\n"
    conn.send(b"221 Bye\r\n")
    conn.close()
    out = result(peer)
    assert "Verify return code: 0 (ok)" in out and "221 Bye" in out, out


def test_starttls_server_role_gnutls_cli(client: tlsport.Client, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    need("gnutls-cli")
    listener = client.listen(0, "127.0.0.1", tls=False, mode="line", active=False)
    argv = ["gnutls-cli", "--starttls-proto=smtp", "--x509cafile", certs["ca"], "-p", str(listener.port), "--crlf", "127.0.0.1"]
    peer = in_thread(run_tool, argv, b"QUIT\n")
    conn = listener.accept(timeout=5)
    conn.send(b"220 mail.example ESMTP\r\n")
    assert conn.recv(timeout=5).upper().startswith(b"EHLO")
    conn.send(b"250-mail.example\r\n250 STARTTLS\r\n")
    assert conn.recv(timeout=5).upper() == b"STARTTLS\r\n"
    conn.send(b"220 Go ahead\r\n")
    conn.starttls("server", tls=server_tls, timeout=10)
    assert conn.recv(timeout=5) == b"QUIT\r\n"
    conn.send(b"221 Bye\r\n")
    conn.close()
    out = result(peer)
    assert "Handshake was completed" in out, out


def test_starttls_client_role(client: tlsport.Client, certs: Dict[str, str], peers: List[PeerServer]) -> None:
    transcript: List[bytes] = []
    peer = serve(peers, None, smtp_server_peer(ssl_server_context(certs), transcript))
    sock = client.connect("localhost", peer.port, tls=False, mode="line", timeout=5)
    assert sock.info()["protocol"] == "tcp"
    assert sock.recv(timeout=5).startswith(b"220 peer.example")
    sock.send(b"EHLO client.example\r\n")
    assert sock.recv(timeout=5) == b"250-peer.example\r\n"
    assert sock.recv(timeout=5) == b"250 STARTTLS\r\n"
    sock.send(b"STARTTLS\r\n")
    assert sock.recv(timeout=5) == b"220 Go ahead\r\n"
    sock.starttls("client", tls={"cacertfile": certs["ca"]}, timeout=10)  # checks "localhost"
    sock.send(b"EHLO client.example\r\n")
    assert sock.recv(timeout=5) == b"250 peer.example\r\n"
    sock.send(b"QUIT\r\n")
    assert sock.recv(timeout=5) == b"221 Bye\r\n"
    assert sock.peercert()["subject"] == ((("commonName", "localhost"),),)
    sock.close()
    peer.close()
    assert transcript == [b"EHLO client.example\r\n", b"STARTTLS\r\n", b"EHLO client.example\r\n", b"QUIT\r\n"]
    assert not peer.errors, peer.errors


def wait_closed(sock: Any, timeout: float = 5) -> None:
    closed = threading.Event()
    sock.on_close(lambda reason: closed.set())
    assert closed.wait(timeout), "the socket did not close"


def test_starttls_failure_closes_the_socket(client: tlsport.Client, certs: Dict[str, str], peers: List[PeerServer]) -> None:
    def handler(conn: socket.socket) -> None:
        conn.sendall(b"220 hello\r\n")
        ssl_server_context(certs).wrap_socket(conn, server_side=True)

    peer = serve(peers, None, handler)
    sock = client.connect("localhost", peer.port, tls=False, mode="line", timeout=5)
    sock.recv(timeout=5)
    # the peer's certificate is not from other_ca: the handshake fails
    with pytest.raises(tlsport.TlsError):
        sock.starttls("client", tls={"cacertfile": certs["other_ca"]}, timeout=5)
    wait_closed(sock)
    with pytest.raises(tlsport.TlsportError):
        sock.send(b"x")


def test_starttls_times_out_on_a_silent_peer(client: tlsport.Client, peers: List[PeerServer]) -> None:
    silent = threading.Event()
    peer = serve(peers, None, lambda conn: silent.wait(5))
    sock = client.connect("127.0.0.1", peer.port, tls=False, timeout=5)
    with pytest.raises(tlsport.TlsportError) as info:
        sock.starttls("client", tls={"verify": 0}, timeout=0.3)
    assert info.value.kind == "timeout"
    silent.set()


def test_stoptls_then_plaintext_then_tls_again(client: tlsport.Client, certs: Dict[str, str], peers: List[PeerServer]) -> None:
    def handler(conn: ssl.SSLSocket) -> None:
        assert conn.recv(100) == b"STOP\n"
        conn.sendall(b"OK\n")
        assert conn.recv(100) == b""  # our close_notify
        raw = conn.unwrap()
        raw.sendall(b"plain hello\n")
        assert recv_exactly(raw, 10) == b"plain bye\n"  # not a byte more: the ClientHello follows
        again = ssl_server_context(certs).wrap_socket(raw, server_side=True)
        again.sendall(b"tls again\n")
        again.recv(100)

    peer = serve(peers, ssl_server_context(certs), handler)
    sock = client.connect("localhost", peer.port, tls={"cacertfile": certs["ca"]}, mode="line", timeout=5)
    sock.send(b"STOP\n")
    assert sock.recv(timeout=5) == b"OK\n"
    sock.stoptls(timeout=5)
    assert sock.info()["protocol"] == "tcp"
    assert sock.recv(timeout=5) == b"plain hello\n"
    sock.send(b"plain bye\n")
    sock.starttls(tls={"cacertfile": certs["ca"]}, timeout=5)
    assert sock.recv(timeout=5) == b"tls again\n"
    sock.close()
    peer.close()
    assert not peer.errors, peer.errors


# ---------------------------------------------------------------------------- info and certificates


def test_info_and_peercert_match_pythons_ssl(client: tlsport.Client, certs: Dict[str, str], peers: List[PeerServer]) -> None:
    peer = serve(peers, ssl_server_context(certs))
    sock = client.connect("localhost", peer.port, tls={"cacertfile": certs["ca"]}, timeout=5)
    info = sock.info()
    assert info["protocol"] == "TLSv1.3" and info["cipher"] in sock.ciphers()
    assert info["bits"] > 0 and info["alg_bits"] > 0 and info["cipher"] in info["cipher_description"]
    assert info["verify_result"] == {"code": 0, "text": "ok"}
    assert info["session_reused"] is False and info["alpn"] is None and info["server_name"] == "localhost"
    assert info["local_certificate"] is None and info["ocsp"] is None
    cert = info["peer_certificate"]
    assert isinstance(cert, tlsport.Certificate) and cert.subject == "CN=localhost" and "CN=tlsport test ca" in cert.issuer
    assert cert.san == ["DNS:localhost", "IP:127.0.0.1"] and cert.public_key == {"type": "EC", "bits": 256}
    assert info["peer_chain"][0] == cert
    with ssl_connect(peer.port, certs) as theirs:
        assert sock.peercert() == theirs.getpeercert()
        assert sock.peercert(binary_form=True) == theirs.getpeercert(True) == cert.der
    sock.close()


def test_server_side_info_names_the_client(client: tlsport.Client, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    listener = client.listen(0, "127.0.0.1", tls={**server_tls, "cacertfile": certs["ca"], "verify": 2})
    peer = in_thread(lambda: ssl_connect(listener.port, certs, client_cert=True))
    conn = listener.accept(timeout=5)
    info = conn.info()
    assert info["peer_certificate"].subject == "CN=tlsport test client"
    assert info["local_certificate"].subject == "CN=localhost"
    assert conn.peercert()["subject"] == ((("commonName", "tlsport test client"),),)
    result(peer).close()


def test_plain_socket_has_no_peercert(client: tlsport.Client) -> None:
    listener = client.listen(0, "127.0.0.1", tls=False)
    sock = client.connect("127.0.0.1", listener.port, tls=False, timeout=5)
    assert sock.info()["protocol"] == "tcp"
    assert sock.peercert() is None and sock.peercert(True) is None


def test_inject_ca_judges_again(client: tlsport.Client, certs: Dict[str, str], peers: List[PeerServer]) -> None:
    peer = serve(peers, ssl_server_context(certs))
    sock = client.connect("localhost", peer.port, tls={"cacertfile": certs["other_ca"], "verify": 0}, timeout=5)
    assert sock.info()["verify_result"]["code"] != 0
    assert sock.inject_ca(cadata=open(certs["other_ca"]).read())["code"] != 0
    assert sock.inject_ca(cafile=certs["ca"]) == {"code": 0, "text": "ok"}
    assert sock.info()["verify_result"]["code"] == 0
    sock.close()  # (the echo peer ends with it)


# ---------------------------------------------------------------------------- passwords


def test_password_callable_for_an_encrypted_key(client: tlsport.Client, certs: Dict[str, str], more: Dict[str, str]) -> None:
    asked: List[str] = []

    def getkey(source: str) -> str:
        asked.append(source)
        return "secret"

    listener = client.listen(0, "127.0.0.1", tls={"certfile": certs["server_cert"], "keyfile": more["enc_key"], "password": getkey})
    assert len(asked) == 1 and "server-enc.key" in asked[0]
    peer = in_thread(ssl_connect, listener.port, certs)
    listener.accept(timeout=5)
    result(peer).close()


def test_client_level_password_and_wrong_ones(client: tlsport.Client, certs: Dict[str, str], more: Dict[str, str]) -> None:
    tls = {"certfile": certs["server_cert"], "keyfile": more["enc_key"], "ask_password": True}
    with pytest.raises(ValueError, match="ask_password needs a password callable"):
        client.listen(0, "127.0.0.1", tls=tls)
    answers = iter(["wrong", None])
    client.on_password(lambda source: next(answers))
    with pytest.raises(tlsport.TlsError, match="password") as info:
        client.listen(0, "127.0.0.1", tls=tls)
    assert info.value.kind == "bad_tls_config"
    with pytest.raises(tlsport.TlsError):
        client.listen(0, "127.0.0.1", tls=tls)  # None: no passphrase
    client.on_password(None)
    client.listen(0, "127.0.0.1", tls={**tls, "ask_password": None, "password_file": more["password_file"]})
    with pytest.raises(tlsport.TlsError, match="encrypted"):
        client.listen(0, "127.0.0.1", tls={**tls, "ask_password": None})


def test_password_callable_in_a_context(client: tlsport.Client, certs: Dict[str, str], more: Dict[str, str]) -> None:
    made = client.tls_context("enc", {"certfile": certs["server_cert"], "keyfile": more["enc_key"], "password": lambda s: b"secret"})
    assert made == {"name": "enc", "server": True, "replaced": False}
    listener = client.listen(0, "127.0.0.1", tls="enc")
    peer = in_thread(ssl_connect, listener.port, certs)
    listener.accept(timeout=5)
    result(peer).close()


def test_inline_key_and_certificate(client: tlsport.Client, certs: Dict[str, str]) -> None:
    pem = {k: open(certs[f"server_{k}"]).read() for k in ("cert", "key")}
    listener = client.listen(0, "127.0.0.1", tls={"cert": pem["cert"], "key": pem["key"].encode()})
    accepted = in_thread(listener.accept, 5)  # the daemon handshakes for an accept
    sock = client.connect("localhost", listener.port, tls={"cacert": open(certs["ca"]).read()}, timeout=5)
    assert sock.info()["verify_result"]["code"] == 0
    assert result(accepted).info()["local_certificate"].subject == "CN=localhost"


# ---------------------------------------------------------------------------- verify callbacks


def test_verify_callback_overrules_openssl(client: tlsport.Client, certs: Dict[str, str], peers: List[PeerServer]) -> None:
    peer = serve(peers, ssl_server_context(certs))
    seen: List[Any] = []

    def judge(chain: List[tlsport.Certificate], verdict: Dict[str, Any]) -> bool:
        seen.append((chain, verdict, threading.current_thread().name))
        return True

    tls = {"cacertfile": certs["other_ca"], "verify_callback": judge}
    sock = client.connect("localhost", peer.port, tls=tls, timeout=5)
    (chain, verdict, thread), = seen
    assert chain[0].subject == "CN=localhost" and verdict["code"] != 0 and thread == "tlsport-reader"
    assert sock.info()["verify_result"]["code"] == verdict["code"]  # OpenSSL's verdict is kept
    sock.close()  # (the echo peer ends with it)
    tls["session_reuse"] = False  # (a resumed session is not judged again)
    with pytest.raises(tlsport.TlsError):
        client.connect("localhost", peer.port, tls={**tls, "verify_callback": lambda chain, verdict: False}, timeout=5)
    with pytest.raises(tlsport.TlsError):  # a callback that raises refuses
        client.connect("localhost", peer.port, tls={**tls, "verify_callback": lambda chain, verdict: 1 / 0}, timeout=5)


def test_verify_callback_on_a_server(client: tlsport.Client, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    subjects: List[str] = []
    client.on_verify(lambda chain, verdict: subjects.append(chain[0].subject) or verdict["code"] == 0)
    tls = {**server_tls, "cacertfile": certs["ca"], "verify": 2, "verify_callback": True}
    listener = client.listen(0, "127.0.0.1", tls=tls)
    peer = in_thread(lambda: ssl_connect(listener.port, certs, client_cert=True))
    conn = listener.accept(timeout=5)
    theirs = result(peer)
    assert subjects == ["CN=tlsport test client"]
    assert conn.peercert()["subject"] == ((("commonName", "tlsport test client"),),)  # before the peer leaves
    theirs.close()
    # refused: the listener's own callable wins over the client's
    listener = client.listen(0, "127.0.0.1", tls={**tls, "verify_callback": lambda chain, verdict: False})
    peer = in_thread(lambda: ssl_connect(listener.port, certs, client_cert=True).recv(10))
    with pytest.raises(tlsport.Timeout):
        listener.accept(timeout=1)
    try:
        assert result(peer) == b""  # dropped
    except (ssl.SSLError, OSError):
        pass


# ---------------------------------------------------------------------------- SNI, ALPN, sessions


def test_sni_picks_the_certificate(client: tlsport.Client, certs: Dict[str, str], server_tls: Dict[str, Any], more: Dict[str, str]) -> None:
    sni = [{"names": ["alt.example", "*.alt.example"], "certfile": more["alt_cert"], "keyfile": more["alt_key"]}]
    listener = client.listen(0, "127.0.0.1", tls={**server_tls, "sni": sni})
    ctx = ssl_client_context(certs)
    for name, expect in (("alt.example", "alt.example"), ("localhost", "localhost")):
        raw = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
        peer = in_thread(ctx.wrap_socket, raw, False, True, True, name)
        conn = listener.accept(timeout=5)
        theirs = result(peer)
        assert theirs.getpeercert()["subject"] == ((("commonName", expect),),)
        assert conn.info()["server_name"] == name
        theirs.close()
        conn.close()
    # our own client sends the name; the host check follows it
    accepted = in_thread(listener.accept, 5)
    sock = client.connect("127.0.0.1", listener.port, tls={"cacertfile": certs["ca"], "server_name": "www.alt.example",
                                                           "verify_hostname": "alt.example"}, timeout=5)
    assert sock.info()["peer_certificate"].subject == "CN=alt.example"
    assert result(accepted).info()["server_name"] == "www.alt.example"
    need("openssl")
    out = run_tool(["openssl", "s_client", "-connect", f"127.0.0.1:{listener.port}", "-servername", "alt.example",
                    "-CAfile", certs["ca"]])
    assert "CN = alt.example" in out and "Verify return code: 0 (ok)" in out, out


def test_alpn_both_ways(client: tlsport.Client, certs: Dict[str, str], server_tls: Dict[str, Any], more: Dict[str, str]) -> None:
    listener = client.listen(0, "127.0.0.1", tls={**server_tls, "alpn": ["h2", "http/1.1"]})
    ctx = ssl_client_context(certs)
    ctx.set_alpn_protocols(["http/1.1", "h2"])
    peer = in_thread(lambda: ctx.wrap_socket(socket.create_connection(("127.0.0.1", listener.port)), server_hostname="localhost"))
    conn = listener.accept(timeout=5)
    theirs = result(peer)
    assert conn.info()["alpn"] == "h2" == theirs.selected_alpn_protocol()  # the server's preference
    theirs.close()
    need("openssl")
    server, port = openssl_s_server(["-cert", certs["server_cert"], "-key", certs["server_key"],
                                      "-alpn", "spdy/3,http/1.1", "-naccept", "1"])
    try:
        sock = client.connect("localhost", port, tls={"cacertfile": certs["ca"], "alpn": ["http/1.1"]}, timeout=5)
        assert sock.info()["alpn"] == "http/1.1"
        sock.close()
    finally:
        stop_process(server)


def test_client_session_reuse(client: tlsport.Client, certs: Dict[str, str], peers: List[PeerServer]) -> None:
    peer = serve(peers, ssl_server_context(certs))
    tls: Dict[str, Any] = {"cacertfile": certs["ca"]}
    reused = []
    for extra in ({}, {}, {"session_reuse": False}):
        sock = client.connect("localhost", peer.port, tls={**tls, **extra}, timeout=5)
        sock.send(b"ping")
        assert sock.recv(timeout=5) == b"ping"  # the tickets came before it
        reused.append(sock.info()["session_reused"])
        sock.close()
    assert reused == [False, True, False]


def test_server_tickets_resume_with_gnutls_cli(client: tlsport.Client, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    need("gnutls-cli")
    listener = client.listen(0, "127.0.0.1", tls=server_tls)
    box = in_thread(run_tool, ["gnutls-cli", "--x509cafile", certs["ca"], "-p", str(listener.port), "--resume", "127.0.0.1"],
                    b"", 15)
    for _ in range(2):
        conn = listener.accept(timeout=10)
        conn.close()
    out = result(box, 15)
    assert "This is a resumed session" in out, out


def test_ticket_keys_are_shared_by_listeners(client: tlsport.Client, certs: Dict[str, str], server_tls: Dict[str, Any],
                                             more: Dict[str, str]) -> None:
    def listener(keys: List[str]) -> tlsport.Listener:
        lst = client.listen(0, "127.0.0.1", tls={**server_tls, "ticket_keys": keys})
        threading.Thread(target=lambda: [s.on_data(s.send) for s in lst], daemon=True).start()
        return lst

    a, b = listener([more["ticket_key"]]), listener([more["other_ticket_key"], more["ticket_key"]])
    c = listener([more["other_ticket_key"]])
    ctx = ssl_client_context(certs)

    def visit(port: int, session: Any = None) -> Any:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost", session=session) as s:
            s.sendall(b"x")
            s.recv(1)
            return s.session, s.session_reused

    session, _ = visit(a.port)
    assert visit(b.port, session)[1] is True  # b decrypts with its second key
    assert visit(c.port, session)[1] is False


# ---------------------------------------------------------------------------- the rest


def test_named_contexts(client: tlsport.Client, certs: Dict[str, str], server_tls: Dict[str, Any]) -> None:
    assert client.tls_context("srv", server_tls) == {"name": "srv", "server": True, "replaced": False}
    assert client.tls_context("cli", {"cacertfile": certs["ca"]})["server"] is False
    assert client.tls_context("cli", {"cacertfile": certs["ca"], "alpn": ["x"]})["replaced"] is True
    listener = client.listen(0, "127.0.0.1", tls="srv")
    accepted = in_thread(listener.accept, 5)
    sock = client.connect("localhost", listener.port, tls="cli", timeout=5)
    assert sock.info()["verify_result"]["code"] == 0
    assert result(accepted).info()["alpn"] is None  # "x" offered, none served
    with pytest.raises(tlsport.TlsError):
        client.listen(0, "127.0.0.1", tls="cli")  # no certificate: it cannot serve
    with pytest.raises(tlsport.BadRequest):
        client.connect("localhost", listener.port, tls="nobody", timeout=5)
    with pytest.raises(tlsport.TlsError):
        client.tls_context("broken", {"certfile": "/nonexistent.pem"})


def test_idle_timeout_closes(client: tlsport.Client, certs: Dict[str, str], peers: List[PeerServer]) -> None:
    peer = serve(peers, ssl_server_context(certs))
    sock = client.connect("localhost", peer.port, tls={"cacertfile": certs["ca"]}, timeout=5, idle_timeout=0.3,
                          handshake_timeout=5, close_timeout=1)
    with pytest.raises(tlsport.TlsportError) as info:
        sock.recv(timeout=5)
    assert info.value.kind == "timeout" and sock.closed
    listener = client.listen(0, "127.0.0.1", tls=False, idle_timeout=0.3, close_timeout=1)
    plain = client.connect("127.0.0.1", listener.port, tls=False, timeout=5)
    conn = listener.accept(timeout=5, idle_timeout=60)  # the accept's own wins
    with pytest.raises(tlsport.Timeout):
        conn.recv(timeout=0.6)
    assert not conn.closed
    plain.close()


def test_keylog_file(client: tlsport.Client, certs: Dict[str, str], tmp_path: Any, peers: List[PeerServer]) -> None:
    peer = serve(peers, ssl_server_context(certs))
    keylog = tmp_path / "keys.log"
    sock = client.connect("localhost", peer.port, tls={"cacertfile": certs["ca"], "keylog": keylog}, timeout=5)
    sock.close()
    assert "CLIENT_TRAFFIC_SECRET_0" in keylog.read_text()
    assert stat.S_IMODE(os.stat(keylog).st_mode) == 0o600
