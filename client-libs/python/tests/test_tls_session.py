"""The session's TLS bookkeeping without a daemon: callables taken out of the
options and asked when the daemon's questions come, data held while TLS
switches on or off, certificates in info, and the ssl-style certificate dict."""

from __future__ import annotations

import logging
import pathlib
from typing import Any, Dict

import pytest

from tlsport import Certificate, _args
from tlsport._certs import parse_dn, ssl_dict
from tlsport._session import Ask, ListenerEntry, Notice, Resolve, Session

from test_session import connected, err, feed, ok, sent

CERT = {
    "pem": "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
    "subject": "CN=localhost,O=Acme\\, Inc.,C=DE",
    "issuer": "CN=ca",
    "serial": "1a2b",
    "not_before": "2026-12-01T15:39:37Z",
    "not_after": "2026-12-14T05:00:00Z",
    "signature_algorithm": "ecdsa-with-SHA256",
    "public_key": {"type": "EC", "bits": 256},
    "san": ["DNS:localhost", "IP:127.0.0.1"],
    "sha256": "ab12",
}


def test_password_callable_becomes_ask_password_and_answers_by_ref() -> None:
    s = Session()
    asked = []
    ref = s.call(_args.listen_command(0, "127.0.0.1", {"certfile": "c", "password": asked.append}, "raw", None, None,
                                      (None, None, None)), "w")
    (frame,) = sent(s)
    assert frame["tls"] == {"certfile": "c", "ask_password": True}
    (outcome,) = feed(s, {"event": "password_needed", "request": 7, "ref": ref, "source": "key file k.pem"})
    assert isinstance(outcome, Ask) and outcome.args == ("key file k.pem",) and outcome.what == "password"
    outcome.callback(*outcome.args)
    assert asked == ["key file k.pem"]
    s.answer(outcome.request, outcome.what, "secret")
    answer = sent(s)[0]
    assert answer["op"] == "answer" and answer["request"] == 7 and answer["password"] == "secret"
    s.answer(8, "password", None)  # a callback that gave nothing: a passphrase that fails
    assert sent(s)[0]["password"] == ""


def test_ask_password_needs_a_callable_somewhere() -> None:
    s = Session()
    with pytest.raises(ValueError, match="ask_password needs a password callable"):
        s.call(_args.connect_command("h", 1, {"ask_password": True}, "raw", None, None), None)
    s.password_callback = lambda source: "pw"
    ref = s.call(_args.connect_command("h", 1, {"ask_password": True}, "raw", None, None), None)
    (outcome,) = feed(s, {"event": "password_needed", "request": 1, "ref": ref, "source": "k"})
    assert outcome.callback is s.password_callback
    with pytest.raises(ValueError, match="ask_password cannot be False"):
        _args.check_tls({"password": lambda s: "", "ask_password": False}, default=None)


def test_verify_callable_by_ref_listener_and_client() -> None:
    s = Session()
    mine, listeners, fallback = (lambda c, r: True), (lambda c, r: True), (lambda c, r: False)
    with pytest.raises(ValueError, match="verify_callback needs a callable"):
        s.call(_args.connect_command("h", 1, {"verify_callback": True}, "raw", None, None), None)
    ref = s.call(_args.connect_command("h", 1, {"verify_callback": mine}, "raw", None, None), None)
    assert sent(s)[0]["tls"] == {"verify_callback": True}
    event = {"event": "verify_peer", "request": 3, "ref": ref, "peer_chain": [CERT], "verify_result": {"code": 0, "text": "ok"}}
    (outcome,) = feed(s, event)
    chain, result = outcome.args
    assert outcome.callback is mine and outcome.what == "accept"
    assert isinstance(chain[0], Certificate) and chain[0].subject == CERT["subject"] and result["code"] == 0
    # a listener's connection: the listen's callable
    lref = s.call(_args.listen_command(0, "::", {"certfile": "c", "verify_callback": listeners}, "raw", None, None,
                                       (None, None, None)), "l")
    feed(s, ok(lref, id=9, port=1))
    (outcome,) = feed(s, {**event, "ref": None, "listener": 9})
    assert outcome.callback is listeners
    # nobody's: the client's, else refused at once
    s.verify_callback = fallback
    (outcome,) = feed(s, {**event, "ref": None, "listener": 99})
    assert outcome.callback is fallback
    s.verify_callback = None
    sent(s)
    (notice,) = feed(s, {**event, "ref": None, "listener": 99})
    assert isinstance(notice, Notice) and notice.level == logging.WARNING
    answer = sent(s)[0]
    assert answer["op"] == "answer" and answer["request"] == 3 and answer["accept"] is False


def test_context_names_bring_their_callables() -> None:
    s = Session()
    judge = lambda chain, result: True  # noqa: E731
    ref = s.call(_args.tls_context_command("web", {"cacertfile": "ca", "verify_callback": judge}), "w")
    assert sent(s)[0]["tls"] == {"cacertfile": "ca", "verify_callback": True}
    (resolve,) = feed(s, ok(ref, name="web", server=False, replaced=False))
    assert resolve.value == {"name": "web", "server": False, "replaced": False}
    cref = s.call(_args.connect_command("h", 1, "web", "raw", None, None), None)
    assert sent(s)[0]["tls"] == "web"
    (outcome,) = feed(s, {"event": "verify_peer", "request": 1, "ref": cref, "peer_chain": [], "verify_result": {}})
    assert outcome.callback is judge
    ref = s.call(_args.tls_context_command("web", {"cacertfile": "ca"}), "w")  # replaced without one
    feed(s, ok(ref, name="web", server=False, replaced=True))
    s.call(_args.connect_command("h", 1, "web", "raw", None, None), None)
    assert s._pending[max(s._pending)].hooks is None  # noqa: SLF001


def test_data_sent_during_starttls_waits_for_the_switch() -> None:
    s = Session()
    sock = connected(s)
    s.deliver(sock, b"before")
    ref = s.call(_args.starttls_command(sock.id, "server", {"certfile": "c"}, None, None, None), "w")
    s.deliver(sock, b"during")
    wref = s.call({"op": "deliver", "id": sock.id, "data": b"during2"}, "d")
    frames = sent(s)
    assert frames[0] == (sock.id, b"before") and frames[1]["op"] == "starttls" and len(frames) == 2
    feed(s, ok(ref, id=sock.id))
    frames = sent(s)
    assert frames[0] == (sock.id, b"during") and frames[1]["op"] == "deliver" and frames[1]["ref"] == wref
    # a failed switch: the socket closes and what was held goes nowhere
    ref = s.call(_args.stoptls_command(sock.id, 1.0), "w")
    s.deliver(sock, b"lost")
    sent(s)
    feed(s, err(ref, "timeout"))
    assert sent(s) == []


def test_info_certificates_and_ciphers() -> None:
    s = Session()
    sock = connected(s)
    ref = s.call({"op": "info", "id": sock.id}, "w")
    (outcome,) = feed(s, ok(ref, protocol="TLSv1.3", peer_certificate=CERT, peer_chain=[CERT, CERT], local_certificate=None))
    assert isinstance(outcome, Resolve)
    info: Dict[str, Any] = outcome.value
    assert isinstance(info["peer_certificate"], Certificate) and info["local_certificate"] is None
    assert [c.sha256 for c in info["peer_chain"]] == ["ab12", "ab12"]
    ref = s.call({"op": "ciphers", "id": sock.id}, "w")
    assert feed(s, ok(ref, ciphers=["A", "B"]))[0].value == ["A", "B"]
    ref = s.call(_args.inject_ca_command(sock.id, None, b"-----BEGIN CERTIFICATE-----\n"), "w")
    assert feed(s, ok(ref, verify_result={"code": 0, "text": "ok"}))[0].value == {"code": 0, "text": "ok"}


def test_late_answer_is_logged() -> None:
    s = Session()
    s.answer(4, "accept", True)
    (frame,) = sent(s)
    (notice,) = feed(s, err(frame["ref"], "bad_request"))
    assert isinstance(notice, Notice) and "question 4" in notice.text


def test_certificate_as_ssl_dict() -> None:
    cert = Certificate(CERT)
    d = ssl_dict(cert)
    assert d["subject"] == ((("countryName", "DE"),), (("organizationName", "Acme, Inc."),), (("commonName", "localhost"),))
    assert d["issuer"] == ((("commonName", "ca"),),)
    assert d["serialNumber"] == "1A2B"
    assert d["notBefore"] == "Dec  1 15:39:37 2026 GMT" and d["notAfter"] == "Dec 14 05:00:00 2026 GMT"
    assert d["subjectAltName"] == (("DNS", "localhost"), ("IP Address", "127.0.0.1"))
    assert cert.not_valid_after is not None and cert.not_valid_after.year == 2026
    assert parse_dn("CN=a+UID=b,DC=x\\2Cy,O=caf\\C3\\A9") == (
        (("organizationName", "café"),), (("domainComponent", "x,y"),), (("commonName", "a"), ("userId", "b")))


def test_tls_option_checks() -> None:
    with pytest.raises(TypeError, match="'alpn' must be a list of strings"):
        _args.check_tls({"alpn": [b"h2"]}, default=None)
    with pytest.raises(ValueError, match="needs names and certfile"):
        _args.check_tls({"sni": [{"names": ["a"]}]}, default=None)
    with pytest.raises(ValueError, match="unknown sni option"):
        _args.check_tls({"sni": [{"names": ["a"], "certfile": "c", "verify": 1}]}, default=None)
    with pytest.raises(ValueError, match="callback_timeout_ms"):
        _args.check_tls({"callback_timeout_ms": 0}, default=None)
    with pytest.raises(ValueError, match="starttls needs TLS settings"):
        _args.starttls_command(1, "client", False, None, None, None)
    with pytest.raises(ValueError, match="side must be"):
        _args.starttls_command(1, "both", None, None, None, None)
    with pytest.raises(ValueError, match="one of cafile and cadata"):
        _args.inject_ca_command(1, None, None)
    assert _args.check_tls({"cert": b"PEM", "ticket_keys": [pathlib.Path("k")]}, default=None) == {"cert": "PEM", "ticket_keys": ["k"]}
    assert _args.check_tls("web", default=None) == "web"
    cmd = _args.connect_command("h", 1, None, "raw", None, None, True, (0.0001, 90, None))
    assert cmd["handshake_timeout_ms"] == 1 and cmd["idle_timeout_ms"] == 90000 and "close_timeout_ms" not in cmd


def test_listener_keeps_its_callables() -> None:
    s = Session()
    judge = lambda chain, result: True  # noqa: E731
    ref = s.call(_args.listen_command(0, "::", {"certfile": "c", "verify_callback": judge}, "raw", None, None, (None, None, None)), "w")
    (outcome,) = feed(s, ok(ref, id=3, port=5))
    assert isinstance(outcome.value, ListenerEntry) and outcome.value.hooks.verify is judge
