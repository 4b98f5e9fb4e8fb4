"""Serving TLS (docs/protocol.md §4, §4.1, §4.2, tls_context): certificates by
SNI, ALPN, client session resumption, ticket keys shared across daemons, and
named contexts, each against peers written elsewhere (openssl s_client and
s_server, gnutls-cli and gnutls-serv, Python's ssl, Erlang's ssl) and against
the daemon itself."""

import os
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from conftest import Daemon, free_port, unix_client
from serving import (Server, connect, gnutls_cli, gnutls_cli_background, info, listen, pair,
                     round_trip, s_client, s_server, spki, subject)  # noqa: F401  (spki is a fixture)


def sni_listener(client, spki, **tls):
    opts = {**spki.cert("server"),
            "sni": [{"names": ["a.example"], **spki.cert("a")},
                    {"names": ["*.b.example"], **spki.cert("wild")}]}
    opts.update(tls)
    return listen(client, opts)


def accept(client, lst, **extra):
    """An accept that leaves the socket passive, so that it outlives a peer
    that closes at once and can still be asked for info."""
    return client.send({"op": "accept", "id": lst["id"], "active": False, **extra})


# ---------------------------------------------------------------- SNI

@pytest.mark.parametrize("name,served", [
    (None, "CN=localhost"),
    ("other.example", "CN=localhost"),
    ("a.example", "CN=a.example"),
    ("A.EXAMPLE", "CN=a.example"),
    ("x.b.example", "CN=*.b.example"),
    ("b.example", "CN=localhost"),
    ("y.x.b.example", "CN=localhost"),
])
def test_sni_picks_the_certificate_between_daemons(client, spki, name, served):
    lst = sni_listener(client, spki)
    tls = {"cacertfile": spki.ca, "server_name": name or "", "verify_hostname": False}
    c, a = pair(client, lst, tls)
    ci, si = info(client, c["id"]), info(client, a["id"])
    assert subject(ci["peer_certificate"]) == served
    assert subject(si["local_certificate"]) == served
    assert ci["verify_result"]["code"] == 0
    assert ci["server_name"] == name
    assert si["server_name"] == name


def test_sni_with_openssl_s_client(client, spki):
    lst = sni_listener(client, spki)
    for args, served, name in ((["-servername", "a.example"], "CN = a.example", "a.example"),
                               (["-servername", "x.b.example"], "CN = *.b.example", "x.b.example"),
                               (["-servername", "y.x.b.example"], "CN = localhost", "y.x.b.example"),
                               (["-noservername"], "CN = localhost", None)):
        aref = accept(client, lst)
        rc, out = s_client(lst["port"], "-CAfile", spki.ca, *args)
        assert f"subject={served}\n" in out, out
        assert "Verify return code: 0 (ok)" in out, out
        a = client.reply(aref)
        assert info(client, a["id"])["server_name"] == name
        client.ok({"op": "close", "id": a["id"]})


def gnutls_to_daemon(client, lst, *args):
    """gnutls-cli to a listener of `client`, kept connected until the daemon
    has answered info and closes the socket: (info, gnutls-cli's output)."""
    aref = accept(client, lst)
    peer = gnutls_cli_background(lst["port"], *args)
    try:
        a = client.reply(aref)
        assert a["ok"], a
        si = info(client, a["id"])
        client.ok({"op": "close", "id": a["id"]})
    finally:
        rc, out = peer.finish()
    assert rc == 0, out
    return si, out


def test_sni_with_gnutls_cli(client, spki):
    lst = sni_listener(client, spki)
    for name, served in (("x.b.example", "CN=*.b.example"), ("a.example", "CN=a.example")):
        # The certificate served is valid for the name asked.
        si, out = gnutls_to_daemon(client, lst, "--x509cafile", spki.ca, "--sni-hostname", name,
                                   "--verify-hostname", name)
        assert f"subject `{served}'" in out and "The certificate is trusted" in out, out
        assert si["server_name"] == name
    # b.example is not under *.b.example: the default certificate.
    si, out = gnutls_to_daemon(client, lst, "--insecure", "--sni-hostname", "b.example")
    assert "subject `CN=localhost'" in out, out
    assert si["server_name"] == "b.example"


# ---------------------------------------------------------------- ALPN

def alpn_listener(client, spki):
    return listen(client, {**spki.cert("server"), "alpn": ["h2", "http/1.1"]})


def test_alpn_server_preference_wins_with_openssl_s_client(client, spki):
    lst = alpn_listener(client, spki)
    aref = accept(client, lst)
    rc, out = s_client(lst["port"], "-CAfile", spki.ca, "-alpn", "http/1.1,h2")
    assert "ALPN protocol: h2" in out, out
    a = client.reply(aref)
    assert info(client, a["id"])["alpn"] == "h2"
    # Only http/1.1 in common: that one.
    aref = accept(client, lst)
    rc, out = s_client(lst["port"], "-CAfile", spki.ca, "-alpn", "spdy/3,http/1.1")
    assert "ALPN protocol: http/1.1" in out, out
    assert info(client, client.reply(aref)["id"])["alpn"] == "http/1.1"


def test_alpn_with_gnutls_cli_and_python_ssl(client, spki):
    lst = alpn_listener(client, spki)
    si, out = gnutls_to_daemon(client, lst, "--x509cafile", spki.ca, "--alpn", "http/1.1",
                               "--alpn", "h2")
    assert "Application protocol: h2" in out, out
    assert si["alpn"] == "h2"

    aref = accept(client, lst)
    ctx = ssl.create_default_context(cafile=spki.ca)
    ctx.set_alpn_protocols(["http/1.1", "h2"])
    with socket.create_connection(("127.0.0.1", lst["port"]), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == "h2"
            a = client.reply(aref)
            assert info(client, a["id"])["alpn"] == "h2"


def test_alpn_without_overlap_fails_with_no_application_protocol(client, spki):
    lst = alpn_listener(client, spki)
    aref = accept(client, lst)
    rc, out = s_client(lst["port"], "-CAfile", spki.ca, "-alpn", "spdy/3")
    assert rc != 0 and "no application protocol" in out, out
    rc, out = gnutls_cli(lst["port"], "--x509cafile", spki.ca, "--alpn", "spdy/3")
    assert rc != 0, out
    assert "No supported application protocol could be negotiated" in out, out
    ctx = ssl.create_default_context(cafile=spki.ca)
    ctx.set_alpn_protocols(["spdy/3"])
    with socket.create_connection(("127.0.0.1", lst["port"]), timeout=5) as raw:
        with pytest.raises(ssl.SSLError, match="(?i)no.application.protocol"):
            ctx.wrap_socket(raw, server_hostname="localhost")
    c = connect(client, lst["port"], {"cacertfile": spki.ca, "alpn": ["spdy/3"]})
    assert c["ok"] is False and c["error"]["kind"] == "tls", c
    assert "no application protocol" in c["error"]["message"], c
    # None of them reached the accept: the next good client does.
    c = connect(client, lst["port"], {"cacertfile": spki.ca, "alpn": ["h2"]})
    assert c["ok"], c
    a = client.reply(aref)
    assert info(client, a["id"])["alpn"] == "h2"


def test_alpn_client_without_alpn_gets_none(client, spki):
    lst = alpn_listener(client, spki)
    aref = accept(client, lst)
    rc, out = s_client(lst["port"], "-CAfile", spki.ca)
    assert "No ALPN negotiated" in out, out
    assert info(client, client.reply(aref)["id"])["alpn"] is None
    # And a server without ALPN answers none to a client that offers some.
    plain = listen(client, spki.cert("server"))
    c, a = pair(client, plain, {"cacertfile": spki.ca, "alpn": ["h2"]})
    assert info(client, c["id"])["alpn"] is None
    assert info(client, a["id"])["alpn"] is None


def test_alpn_daemon_client_against_openssl_s_server(client, spki):
    server = s_server(spki, "-alpn", "h2,http/1.1")
    try:
        c = connect(client, server.port, {"cacertfile": spki.ca, "alpn": ["http/1.1", "h2"]})
        assert c["ok"], c
        assert info(client, c["id"])["alpn"] == "h2"
        client.ok({"op": "close", "id": c["id"]})
        c = connect(client, server.port, {"cacertfile": spki.ca, "alpn": ["spdy/3", "http/1.1"]})
        assert c["ok"], c
        assert info(client, c["id"])["alpn"] == "http/1.1"
        client.ok({"op": "close", "id": c["id"]})
        c = connect(client, server.port, {"cacertfile": spki.ca})
        assert c["ok"], c
        assert info(client, c["id"])["alpn"] is None
    finally:
        server.stop()


ERLANG_ALPN_CLIENT = """
{ok, _} = application:ensure_all_started(ssl),
[Port, Ca] = init:get_plain_arguments(),
Opts = [binary, {active, false}, {verify, verify_peer}, {cacertfile, Ca},
        {server_name_indication, "localhost"},
        {alpn_advertised_protocols, [<<"h2">>, <<"http/1.1">>]}],
case ssl:connect("127.0.0.1", list_to_integer(Port), Opts, 5000) of
    {ok, S} ->
        {ok, P} = ssl:negotiated_protocol(S),
        {ok, [{protocol, V}]} = ssl:connection_information(S, [protocol]),
        io:format("negotiated ~s ~p~n", [P, V]),
        ssl:send(S, <<"bye">>),
        ssl:close(S);
    Error ->
        io:format("failed ~p~n", [Error])
end,
halt().
"""


@pytest.mark.parametrize("preference,chosen", [(["h2", "http/1.1"], "h2"),
                                               (["http/1.1", "h2"], "http/1.1")])
def test_alpn_erlang_ssl_client(client, spki, preference, chosen):
    """Erlang/OTP's ssl offers h2 then http/1.1; the listener's preference decides."""
    lst = listen(client, {**spki.cert("server"), "alpn": preference})
    aref = accept(client, lst)  # passive: the socket outlives the peer's close
    r = subprocess.run(
        ["erl", "-noshell", "-eval", ERLANG_ALPN_CLIENT, "-extra", str(lst["port"]), spki.ca],
        capture_output=True, text=True, timeout=30)
    assert f"negotiated {chosen} 'tlsv1.3'" in r.stdout, (r.stdout, r.stderr)
    a = client.reply(aref)
    assert info(client, a["id"])["alpn"] == chosen
    client.ok({"op": "setopts", "id": a["id"], "active": True})
    assert client.read_data(a["id"], 3) == b"bye"


# ---------------------------------------------------------------- client sessions

def resumed(client, lst, tls, **extra):
    """One connect to our own listener, with bytes both ways (so that a TLS 1.3
    ticket has arrived), then closed: (client side reused, server side reused)."""
    c, a = pair(client, lst, tls, **extra)
    round_trip(client, c["id"], a["id"])
    ci, si = info(client, c["id"]), info(client, a["id"])
    client.ok({"op": "close", "id": c["id"]})
    assert client.closed_event(a["id"])["reason"] == "normal"
    assert ci["session_reused"] == si["session_reused"], (ci, si)
    return ci["session_reused"], ci["protocol"]


@pytest.mark.parametrize("version", ["tlsv1.3", "tlsv1.2"])
def test_second_connect_resumes_the_session(client, spki, version):
    lst = listen(client, spki.cert("server"))
    tls = {"cacertfile": spki.ca, "max_version": version}
    expected = {"tlsv1.3": "TLSv1.3", "tlsv1.2": "TLSv1.2"}[version]
    assert resumed(client, lst, tls) == (False, expected)
    assert resumed(client, lst, tls) == (True, expected)
    assert resumed(client, lst, tls) == (True, expected)


def test_session_reuse_false_is_never_resumed(client, spki):
    lst = listen(client, spki.cert("server"))
    tls = {"cacertfile": spki.ca}
    assert resumed(client, lst, tls)[0] is False
    assert resumed(client, lst, {**tls, "session_reuse": False})[0] is False
    assert resumed(client, lst, {**tls, "session_reuse": False})[0] is False
    assert resumed(client, lst, tls)[0] is True


def test_session_reuse_false_first_does_not_stop_later_resumption(client, spki):
    """Connects with and without session_reuse share one client context: the
    first one's choice must not decide for the others."""
    lst = listen(client, spki.cert("server"))
    tls = {"cacertfile": spki.ca}
    assert resumed(client, lst, {**tls, "session_reuse": False})[0] is False
    assert resumed(client, lst, tls)[0] is False
    assert resumed(client, lst, tls)[0] is True


def test_different_settings_or_places_are_not_resumed(client, spki):
    lst = listen(client, {**spki.cert("server"), "alpn": ["h2"]})
    other = listen(client, spki.cert("server"))
    base = {"cacertfile": spki.ca}
    assert resumed(client, lst, base)[0] is False
    assert resumed(client, lst, base)[0] is True
    for variant in ({"ciphersuites": "TLS_CHACHA20_POLY1305_SHA256"},
                    {"alpn": ["h2"]},
                    {"server_name": "localhost"},
                    {"verify_hostname": "localhost"},
                    {"min_version": "tlsv1.3"}):
        assert resumed(client, lst, {**base, **variant})[0] is False, variant
        assert resumed(client, lst, {**base, **variant})[0] is True, variant
    # The same settings towards another port: a place of its own.
    assert resumed(client, other, base)[0] is False
    # A different host name for the same listener ("localhost" resolves to it).
    assert resumed(client, lst, base, host="localhost")[0] is False
    assert resumed(client, lst, base)[0] is True


def gnutls_serv(spki, *extra):
    port = free_port()
    return Server(["gnutls-serv", "--port", str(port), "--x509certfile", spki.server_cert,
                   "--x509keyfile", spki.server_key, "--echo", "--quiet", *extra], port)


@pytest.mark.parametrize("peer", ["openssl", "gnutls"])
@pytest.mark.parametrize("version", ["tlsv1.3", "tlsv1.2"])
def test_daemon_client_resumes_with_other_servers(client, spki, peer, version):
    server = s_server(spki) if peer == "openssl" else gnutls_serv(spki)
    tls = {"cacertfile": spki.ca, "max_version": version}
    try:
        seen = []
        for _ in range(3):
            c = connect(client, server.port, tls, mode="line")
            assert c["ok"], c
            # An answer from the server: its tickets came before it.
            if peer == "openssl":
                server.proc.stdin.write(b"hello\n")
                server.proc.stdin.flush()
            else:
                client.deliver(c["id"], b"hello\n")
            assert client.packets(c["id"], 1) == [b"hello\n"]
            seen.append(info(client, c["id"])["session_reused"])
            client.ok({"op": "close", "id": c["id"]})
        assert seen == [False, True, True]
    finally:
        server.stop()


def test_python_ssl_client_resumes_with_a_listener(client, spki):
    lst = listen(client, spki.cert("server"))
    ctx = ssl.create_default_context(cafile=spki.ca)
    session = None
    for expected in (False, True):
        aref = client.send({"op": "accept", "id": lst["id"]})
        with socket.create_connection(("127.0.0.1", lst["port"]), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                a = client.reply(aref)
                client.deliver(a["id"], b"x")
                assert s.recv(1) == b"x"  # the TLS 1.3 tickets came first
                assert s.session_reused is expected
                assert info(client, a["id"])["session_reused"] is expected
                session = s.session


# ---------------------------------------------------------------- ticket keys

@pytest.fixture
def ticket_keys(tmp_path):
    """Three 80-byte key files made by `openssl rand 80`."""
    paths = []
    for name in ("k1", "k2", "k3"):
        path = tmp_path / name
        subprocess.run(["openssl", "rand", "-out", str(path), "80"], check=True)
        paths.append(str(path))
    return paths


def s_client_session(client, lst, spki, tmp_path, version, sess_in=None, save=None):
    """One s_client handshake with a listener of `client`, offering the
    session in `sess_in`: True when it was resumed. With `save`, the session
    is written to tmp_path/save (waiting for a TLS 1.3 ticket)."""
    aref = client.send({"op": "accept", "id": lst["id"], "active": False})
    args = ["-CAfile", spki.ca, f"-{version}"]
    hold = None
    if save:
        hold = str(tmp_path / save)
        args += ["-sess_out", hold]
    if sess_in:
        args += ["-sess_in", str(tmp_path / sess_in)]
    rc, out = s_client(lst["port"], *args, hold=hold)
    proto = {"tls1_2": "TLSv1.2", "tls1_3": "TLSv1.3"}[version]
    assert f"Reused, {proto}" in out or f"New, {proto}" in out, out
    if save:
        assert os.path.getsize(hold) > 0, out
    a = client.reply(aref)
    client.ok({"op": "close", "id": a["id"]})
    return f"Reused, {proto}" in out


def python_session(client, lst, ctx, session=None):
    """One Python ssl handshake with a listener of `client`, offering
    `session`: (resumed, the session to offer next time)."""
    aref = client.send({"op": "accept", "id": lst["id"]})
    with socket.create_connection(("127.0.0.1", lst["port"]), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            a = client.reply(aref)
            client.deliver(a["id"], b"x")
            assert s.recv(1) == b"x"  # the TLS 1.3 tickets came first
            reused = s.session_reused
            assert info(client, a["id"])["session_reused"] is reused
            return reused, s.session


def keyed_listener(client, spki, keys):
    return listen(client, {**spki.cert("server"), "ticket_keys": keys})


@pytest.mark.parametrize("version", ["tls1_3", "tls1_2"])
def test_two_daemons_with_one_ticket_key_resume_each_others_sessions(
        client, spki, tmp_path, ticket_keys, version):
    other = Daemon()
    try:
        a = keyed_listener(client, spki, ticket_keys[:1])
        b = keyed_listener(other.client, spki, ticket_keys[:1])
        assert not s_client_session(client, a, spki, tmp_path, version, save="a.pem")
        assert s_client_session(other.client, b, spki, tmp_path, version, sess_in="a.pem")
        assert not s_client_session(other.client, b, spki, tmp_path, version, save="b.pem")
        assert s_client_session(client, a, spki, tmp_path, version, sess_in="b.pem")
    finally:
        other.stop()


@pytest.mark.parametrize("version", ["tls1_3", "tls1_2"])
def test_ticket_key_rotation(client, spki, tmp_path, ticket_keys, version):
    """B has the new key first and the old one after it: it resumes A's
    old-key sessions, and the ticket it gives back is under the new key."""
    old, new = ticket_keys[0], ticket_keys[1]
    other = Daemon()
    try:
        a = keyed_listener(client, spki, [old])
        b = keyed_listener(other.client, spki, [new, old])
        new_only = keyed_listener(client, spki, [new])
        assert not s_client_session(client, a, spki, tmp_path, version, save="a.pem")
        assert s_client_session(other.client, b, spki, tmp_path, version, sess_in="a.pem")
        assert not s_client_session(client, new_only, spki, tmp_path, version, sess_in="a.pem")
        # The renewed ticket (s_client does not save a resumed TLS 1.2
        # session: Python's ssl shows it).
        ctx = ssl.create_default_context(cafile=spki.ca)
        ctx.minimum_version = ctx.maximum_version = {
            "tls1_2": ssl.TLSVersion.TLSv1_2, "tls1_3": ssl.TLSVersion.TLSv1_3}[version]
        reused, from_a = python_session(client, a, ctx)
        assert not reused
        reused, from_b = python_session(other.client, b, ctx, from_a)
        assert reused
        assert python_session(client, new_only, ctx, from_b)[0] is True
    finally:
        other.stop()


@pytest.mark.parametrize("version", ["tls1_3", "tls1_2"])
def test_different_ticket_keys_do_not_resume(client, spki, tmp_path, ticket_keys, version):
    a = keyed_listener(client, spki, ticket_keys[:1])
    b = keyed_listener(client, spki, ticket_keys[1:2])
    assert not s_client_session(client, a, spki, tmp_path, version, save="a.pem")
    assert not s_client_session(client, b, spki, tmp_path, version, sess_in="a.pem")
    assert s_client_session(client, a, spki, tmp_path, version, sess_in="a.pem")
    # Without ticket_keys, each listener has keys of its own.
    c = listen(client, spki.cert("server"))
    d = listen(client, spki.cert("server"))
    assert not s_client_session(client, c, spki, tmp_path, version, save="c.pem")
    assert not s_client_session(client, d, spki, tmp_path, version, sess_in="c.pem")
    assert s_client_session(client, c, spki, tmp_path, version, sess_in="c.pem")


@pytest.mark.parametrize("version", ["tls1_3", "tls1_2"])
def test_shared_ticket_keys_do_not_carry_a_session_past_client_authentication(
        client, spki, ticket_keys, version):
    """Listener A asks for no client certificate, B requires one; both hold
    the same ticket key. A session from A is not resumed on B: B sees the
    client's certificate (a full handshake), and a client without one is
    refused. Where only the ticket keys differ (a rotation), it resumes."""
    a = keyed_listener(client, spki, ticket_keys[:1])
    b = listen(client, {**spki.cert("server"), "ticket_keys": ticket_keys[:1], "verify": 2,
                        "cacertfile": spki.ca})
    rotated = keyed_listener(client, spki, [ticket_keys[1], ticket_keys[0]])
    tls_version = {"tls1_2": ssl.TLSVersion.TLSv1_2, "tls1_3": ssl.TLSVersion.TLSv1_3}[version]
    contexts = []
    for cert in (True, False):
        ctx = ssl.create_default_context(cafile=spki.ca)
        ctx.minimum_version = ctx.maximum_version = tls_version
        if cert:
            ctx.load_cert_chain(spki.client_cert, spki.client_key)
        contexts.append(ctx)
    with_cert, without_cert = contexts

    reused, from_a = python_session(client, a, with_cert)
    assert not reused
    aref = client.send({"op": "accept", "id": b["id"], "active": False})
    with socket.create_connection(("127.0.0.1", b["port"]), timeout=5) as raw:
        with with_cert.wrap_socket(raw, server_hostname="localhost", session=from_a) as s:
            accepted = client.reply(aref)
            assert not s.session_reused
            seen = info(client, accepted["id"])
            assert seen["session_reused"] is False
            assert subject(seen["peer_certificate"]) == "CN=client"

    reused, bare_from_a = python_session(client, a, without_cert)
    aref = client.send({"op": "accept", "id": b["id"], "active": False})
    with socket.create_connection(("127.0.0.1", b["port"]), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with without_cert.wrap_socket(raw, server_hostname="localhost",
                                          session=bare_from_a) as s:
                s.recv(1)  # TLS 1.3: the refusal comes after the client's flight
    assert aref not in client.replies

    assert python_session(client, rotated, with_cert, from_a)[0] is True


def test_a_reload_that_changes_the_crl_ends_resumption(client, spki, ticket_keys, tmp_path):
    """The same ticket keys before and after a reload: a session resumes across
    it while the CA and CRL files are the same, and not once the CRL file changed
    (so a client revoked meanwhile is checked again, not let in on its ticket)."""
    crl = tmp_path / "crl.pem"
    shutil.copy(spki.crl, crl)
    lst = listen(client, {**spki.cert("server"), "ticket_keys": ticket_keys[:1], "verify": 2,
                          "cacertfile": spki.ca, "crlfile": str(crl)})
    ctx = ssl.create_default_context(cafile=spki.ca)
    ctx.load_cert_chain(spki.client_cert, spki.client_key)
    reused, session = python_session(client, lst, ctx)
    assert not reused
    client.ok({"op": "reload"})
    reused, session = python_session(client, lst, ctx, session)
    assert reused  # nothing changed
    # The same CRL in DER: other bytes, so the listener's trust is new.
    subprocess.run(["openssl", "crl", "-in", spki.crl, "-outform", "DER", "-out", str(crl)],
                   check=True, capture_output=True)
    client.ok({"op": "reload"})
    reused, session = python_session(client, lst, ctx, session)
    assert not reused
    assert python_session(client, lst, ctx, session)[0] is True


def test_a_ticket_key_file_of_the_wrong_size_is_refused(client, spki, tmp_path, ticket_keys):
    short = tmp_path / "short"
    short.write_bytes(os.urandom(48))
    for keys in ([str(short)], [ticket_keys[0], str(short)]):
        r = client.error({"op": "listen", "host": "127.0.0.1", "port": 0,
                          "tls": {**spki.cert("server"), "ticket_keys": keys}}, "bad_tls_config")
        assert str(short) in r["error"]["message"], r
    missing = str(tmp_path / "missing")
    r = client.error({"op": "listen", "host": "127.0.0.1", "port": 0,
                      "tls": {**spki.cert("server"), "ticket_keys": [missing]}}, "bad_tls_config")
    assert missing in r["error"]["message"], r


# ---------------------------------------------------------------- named contexts

def peer_subject(port, ca):
    """The subject of the certificate a server on `port` shows Python's ssl."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as s:
            return dict(x[0] for x in s.getpeercert()["subject"])["commonName"]


def test_named_context_in_listen_and_connect(client, spki):
    r = client.ok({"op": "tls_context", "name": "web",
                   "tls": {**spki.cert("server"), "alpn": ["h2"]}})
    assert (r["name"], r["server"], r["replaced"]) == ("web", True, False)
    r = client.ok({"op": "tls_context", "name": "out",
                   "tls": {"cacertfile": spki.ca, "alpn": ["h2"]}})
    assert (r["name"], r["server"], r["replaced"]) == ("out", False, False)
    lst = listen(client, "web")
    c, a = pair(client, lst, "out")
    ci, si = info(client, c["id"]), info(client, a["id"])
    assert ci["verify_result"]["code"] == 0 and ci["alpn"] == "h2"
    assert subject(si["local_certificate"]) == "CN=localhost"
    # A peer from elsewhere sees the context's certificate and ALPN.
    aref = client.send({"op": "accept", "id": lst["id"], "active": False})
    rc, out = s_client(lst["port"], "-CAfile", spki.ca, "-alpn", "http/1.1,h2")
    assert "subject=CN = localhost" in out and "ALPN protocol: h2" in out, out
    client.reply(aref)
    # A context with a certificate serves connects too (it is the client's).
    verifying = listen(client, {**spki.cert("server"), "verify": 2, "cacertfile": spki.ca})
    client.ok({"op": "tls_context", "name": "me",
               "tls": {**spki.cert("client"), "cacertfile": spki.ca}})
    c, a = pair(client, verifying, "me")
    assert subject(info(client, a["id"])["peer_certificate"]) == "CN=client"


def test_named_context_in_accept_and_starttls(client, spki):
    client.ok({"op": "tls_context", "name": "srv", "tls": spki.cert("server")})
    client.ok({"op": "tls_context", "name": "cli", "tls": {"cacertfile": spki.ca}})
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0})  # tls per accept
    aref = client.send({"op": "accept", "id": lst["id"], "tls": "srv"})
    assert peer_subject(lst["port"], spki.ca) == "localhost"
    assert client.reply(aref)["ok"]
    plain = listen(client, False)
    aref = client.send({"op": "accept", "id": plain["id"]})
    c = connect(client, plain["port"], False)
    a = client.reply(aref)
    sref = client.send({"op": "starttls", "id": a["id"], "side": "server", "tls": "srv"})
    r = client.ok({"op": "starttls", "id": c["id"], "side": "client", "tls": "cli"})
    assert client.reply(sref)["ok"]
    assert info(client, c["id"])["verify_result"]["code"] == 0


def test_named_context_errors_belong_to_tls_context(client, spki, tmp_path):
    missing = str(tmp_path / "missing.pem")
    for tls, words in (({"certfile": missing, "keyfile": spki.server_key}, missing),
                       ({**spki.cert("server"), "ciphers": "NO-SUCH-CIPHER"}, "NO-SUCH-CIPHER"),
                       ({"certfile": spki.server_cert, "keyfile": spki.a_key}, "does not match"),
                       ({"cacertfile": missing}, missing),
                       ({"cacertfile": spki.ca, "keylog": str(tmp_path)}, str(tmp_path))):
        r = client.error({"op": "tls_context", "name": "bad", "tls": tls}, "bad_tls_config")
        assert words in r["error"]["message"], r
    # Nothing was defined: the name is unknown everywhere.
    for cmd in ({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": "bad"},
                {"op": "connect", "host": "127.0.0.1", "port": 1, "tls": "bad"}):
        r = client.error(cmd, "bad_request")
        assert "bad" in r["error"]["message"], r
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0})
    client.error({"op": "accept", "id": lst["id"], "tls": "nope"}, "bad_request")
    plain = listen(client, False)
    aref = client.send({"op": "accept", "id": plain["id"]})
    c = connect(client, plain["port"], False)
    client.reply(aref)
    client.error({"op": "starttls", "id": c["id"], "side": "client", "tls": "nope"}, "bad_request")
    # A bad redefinition leaves the old definition in place.
    client.ok({"op": "tls_context", "name": "web", "tls": spki.cert("server")})
    client.error({"op": "tls_context", "name": "web", "tls": {"certfile": missing}},
                 "bad_tls_config")
    lst = listen(client, "web")
    client.send({"op": "accept", "id": lst["id"]})
    assert peer_subject(lst["port"], spki.ca) == "localhost"


def test_a_named_context_without_certificate_cannot_listen(client, spki):
    r = client.ok({"op": "tls_context", "name": "client-only", "tls": {"cacertfile": spki.ca}})
    assert r["server"] is False
    r = client.error({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": "client-only"},
                     "bad_tls_config")
    assert "client-only" in r["error"]["message"], r
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0})
    client.error({"op": "accept", "id": lst["id"], "tls": "client-only"}, "bad_tls_config")


def test_redefining_a_context_changes_new_sockets_only(client, spki):
    client.ok({"op": "tls_context", "name": "web", "tls": spki.cert("server")})
    old = listen(client, "web")
    r = client.ok({"op": "tls_context", "name": "web", "tls": spki.cert("a")})
    assert r["replaced"] is True
    new = listen(client, "web")
    for lst in (old, new):
        for _ in range(2):
            client.send({"op": "accept", "id": lst["id"]})
    assert peer_subject(old["port"], spki.ca) == "localhost"
    assert peer_subject(new["port"], spki.ca) == "a.example"
    # Both again: the old listener still has its own certificate.
    assert peer_subject(old["port"], spki.ca) == "localhost"
    assert peer_subject(new["port"], spki.ca) == "a.example"


def test_named_contexts_are_shared_by_every_client(unix_daemon, spki):
    first, second = unix_client(unix_daemon.path), unix_client(unix_daemon.path)
    try:
        first.ok({"op": "tls_context", "name": "shared", "tls": spki.cert("a")})
        lst = listen(second, "shared")
        second.send({"op": "accept", "id": lst["id"]})
        assert peer_subject(lst["port"], spki.ca) == "a.example"
    finally:
        first.sock.close()
        second.sock.close()
