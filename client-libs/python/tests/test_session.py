"""The sans-io session, driven with the daemon's bytes and no daemon at all.

A test plays the daemon: it reads the commands the session queued
(``data_to_send``), and feeds replies and events back as wire frames.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import Any, Dict, List, Tuple

import pytest

from tlsport import _args
from tlsport._session import (
    ASK,
    RAW_CHUNK,
    END,
    Fail,
    ListenerEntry,
    Notice,
    Resolve,
    Run,
    Session,
    SocketEntry,
    Wake,
)
from tlsport.codec import encode_deliver
from tlsport.errors import DaemonGone, NetworkError, NotOwner, ProtocolError, SocketClosed, TlsError

# docs/protocol.md §2.1 and §4, written out again here on purpose: the library
# must never send anything else (the daemon rejects unknown fields).
TIMEOUTS = {"handshake_timeout_ms", "idle_timeout_ms", "close_timeout_ms"}
SPEC_FIELDS = {
    "hello": {"name", "grace_ms"},
    "listen": {"host", "port", "mode", "backlog", "tls", "packet_size", "active", *TIMEOUTS},
    "accept": {"id", "tls", "active", *TIMEOUTS},
    "cancel": {"target"},
    "connect": {"host", "port", "mode", "tls", "timeout_ms", "packet_size", "active", *TIMEOUTS},
    "deliver": {"id", "data", "text"},
    "close": {"id"},
    "controlling_process": {"id", "to"},
    "setopts": {"id", "active", "packet_size"},
    "recv": {"id", "timeout_ms"},
    "peername": {"id"},
    "sockname": {"id"},
    "resolve": {"address"},
    "info": {"id"},
    "stop": set(),
    "tls_context": {"name", "tls"},
    "starttls": {"id", "side", "tls", "timeout_ms", *TIMEOUTS},
    "stoptls": {"id", "timeout_ms"},
    "inject_ca": {"id", "cacertfile", "cacert"},
    "ciphers": {"id"},
    "answer": {"request", "password", "accept"},
    "stats": set(),
    "reload": set(),
}
SPEC_TLS = {"certfile", "keyfile", "cert", "key", "password", "password_file", "ask_password", "cacertfile",
            "cacertdir", "cacert", "crlfile", "verify", "depth", "ciphers", "ciphersuites", "min_version",
            "max_version", "server_name", "verify_hostname", "verify_callback", "callback_timeout_ms", "alpn",
            "sni", "session_reuse", "ticket_keys", "ocsp_response_file", "ocsp_status_request", "dhparamfile",
            "keylog", "logfile", "flags"}


def control(obj: Dict[str, Any]) -> bytes:
    body = b"\x00" + json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def sent(session: Session) -> List[Any]:
    """The frames the session wants written: command dicts, or (id, bytes) for data."""
    out: List[Any] = []
    for frame in session.data_to_send():
        (n,) = struct.unpack(">I", frame[:4])
        assert len(frame) == 4 + n
        if frame[4] == 0:
            out.append(json.loads(frame[5:]))
        else:
            out.append((struct.unpack(">I", frame[5:9])[0], frame[9:]))
    return out


def feed(session: Session, *messages: Any, split: int = 0) -> List[Any]:
    """Feed replies/events (dicts) and data ((id, bytes)) as wire bytes; return the outcomes."""
    wire = b"".join(encode_deliver(*m) if isinstance(m, tuple) else control(m) for m in messages)
    pieces = [wire[i : i + split] for i in range(0, len(wire), split)] if split else [wire]
    outcomes: List[Any] = []
    for piece in pieces:
        session.receive_data(piece)
        while True:
            got = session.next_outcomes()
            if got is None:
                break
            outcomes.extend(got)
    return outcomes


def ok(ref: int, **body: Any) -> Dict[str, Any]:
    return {"ref": ref, "ok": True, **body}


def err(ref: Any, kind: str, **body: Any) -> Dict[str, Any]:
    reply = {"ok": False, "error": {"kind": kind, "message": "m"}, **body}
    if ref is not None:
        reply["ref"] = ref
    return reply


def connected(session: Session, sid: int = 5, **kw: Any) -> SocketEntry:
    """A socket made by connect (commands and replies consumed)."""
    cmd = _args.connect_command("127.0.0.1", 443, False, kw.pop("mode", "raw"), None, kw.pop("packet_size", None),
                                kw.pop("active", True))
    ref = session.call(cmd, "connect")
    sent(session)
    (outcome,) = feed(session, ok(ref, id=sid, peer={"host": "127.0.0.1", "port": 443}))
    assert isinstance(outcome, Resolve) and outcome.waiter == "connect"
    return outcome.value


# ---------------------------------------------------------------------------- calls


def test_hello_resolves_and_records_the_client() -> None:
    s = Session("worker-1")
    ref = s.call(s.hello_command(), "w")
    assert sent(s) == [{"op": "hello", "name": "worker-1", "ref": ref}]
    out = feed(s, ok(ref, client=7, version="0.1.0", protocol=1, capabilities=["json"]), split=1)
    assert out == [Resolve("w", {"client": 7, "version": "0.1.0", "protocol": 1, "capabilities": ["json"]})]
    assert (s.number, s.version, s.protocol, s.capabilities) == (7, "0.1.0", 1, ["json"])
    assert Session().hello_command() == {"op": "hello"}


def test_refs_are_distinct_and_replies_match_in_any_order() -> None:
    s = Session()
    a = s.call({"op": "resolve"}, "a")
    b = s.call({"op": "peername", "id": 3}, "b")
    c = s.call({"op": "info", "id": 3}, "c")
    assert len({a, b, c}) == 3 and [m["ref"] for m in sent(s)] == [a, b, c]
    out = feed(s, ok(c, protocol="tcp"), err(b, "not_owner"), ok(a, name="host"), ok(99))
    assert out[0] == Resolve("c", {"protocol": "tcp"})
    assert isinstance(out[1], Fail) and isinstance(out[1].error, NotOwner)
    assert out[2] == Resolve("a", "host")
    assert len(out) == 3  # a reply nobody waits for is dropped


def test_values_by_op() -> None:
    s = Session()
    refs = [s.call({"op": op, "id": 1}, op) for op in ("peername", "sockname", "recv")]
    out = feed(s, ok(refs[0], host="::1", port=1), ok(refs[1]), ok(refs[2], data="aGk="))
    assert out[0] == Resolve("peername", ("::1", 1))
    assert isinstance(out[1], Fail) and isinstance(out[1].error, ProtocolError)
    assert out[2] == Resolve("recv", b"hi")


def test_connect_makes_a_socket_in_the_credit_window() -> None:
    s = Session(window=4)
    cmd = _args.connect_command("h", 1, {"verify": 0}, "packet:2", 5, 100, True)
    ref = s.call(cmd, "w")
    (wire,) = sent(s)
    assert wire["active"] == 4 and wire["timeout_ms"] == 5000 and wire["tls"] == {"verify": 0}
    (out,) = feed(s, ok(ref, id=9, peer={"host": "10.0.0.1", "port": 1}))
    sock = out.value
    assert isinstance(sock, SocketEntry)
    assert (sock.id, sock.mode, sock.packet_size, sock.peer) == (9, "packet:2", 100, ("10.0.0.1", 1))
    assert sock.flow.active is True and sock.flow.outstanding == 4
    assert sent(s) == []  # made with active:4 already: no setopts


def test_listen_keeps_active_for_its_accepts() -> None:
    s = Session()
    cmd = _args.listen_command(0, "127.0.0.1", False, "line", None, 64, (None, None, None), False)
    ref = s.call(cmd, "l")
    (wire,) = sent(s)
    assert "active" not in wire
    (out,) = feed(s, ok(ref, id=2, port=4000))
    lst = out.value
    assert isinstance(lst, ListenerEntry) and (lst.port, lst.mode, lst.packet_size, lst.active) == (4000, "line", 64, False)
    ref = s.call({"op": "accept", "id": 2}, "a")  # no active: the listener's
    (wire,) = sent(s)
    assert wire == {"op": "accept", "id": 2, "active": False, "ref": ref}
    (out,) = feed(s, ok(ref, id=3, peer={"host": "h", "port": 2}))
    sock = out.value
    assert (sock.mode, sock.packet_size, sock.flow.active) == ("line", 64, False)
    ref = s.call(_args.accept_command(2, True, None), "b")
    assert sent(s)[0]["active"] == s.window


def test_abandoned_connect_closes_what_it_made() -> None:
    s = Session()
    ref = s.call(_args.connect_command("h", 1, False, "raw", None, None), "w")
    sent(s)
    assert s.abandon(ref) is True
    assert feed(s, ok(ref, id=4, peer=None)) == []
    assert s.abandon(ref) is False  # answered already
    (close,) = sent(s)
    assert close["op"] == "close" and close["id"] == 4
    assert feed(s, ok(close["ref"])) == []
    assert feed(s, (4, b"late")) == []  # not ours


def test_setopts_groups_frames_and_answers_on_the_last() -> None:
    s = Session(window=4)
    sock = connected(s, active=False)
    ref = s.call(_args.setopts_command(sock.id, True, 10), "w")
    frames = sent(s)
    assert [{k: v for k, v in f.items() if k != "ref"} for f in frames] == [
        {"op": "setopts", "id": 5, "active": False},
        {"op": "setopts", "id": 5, "active": 4},
        {"op": "setopts", "id": 5, "packet_size": 10},
    ]
    assert frames[-1]["ref"] == ref and sock.packet_size == 10
    assert feed(s, ok(frames[0]["ref"]), err(frames[1]["ref"], "not_owner")) == []
    (out,) = feed(s, ok(ref))
    assert isinstance(out, Fail) and isinstance(out.error, NotOwner)  # an earlier frame failed

    ref = s.call(_args.setopts_command(sock.id, "once", None), "x")
    assert [f["active"] for f in sent(s)] == ["once"]
    assert feed(s, ok(ref)) == [Resolve("x", None)]
    with pytest.raises(ValueError):
        _args.setopts_command(5, _args.UNSET, None)


# ---------------------------------------------------------------------------- data and flow


def test_data_is_queued_and_credits_follow_consumption() -> None:
    s = Session(window=4)
    sock = connected(s)
    out = feed(s, *[(5, b"%d" % i) for i in range(4)], (77, b"not ours"))
    assert out == [Wake(sock)] * 4
    assert s.buffered_bytes == 4 and not s.has_output
    assert s.next_data(sock) == b"0" and s.next_data(sock) == b"1"
    (grant,) = sent(s)  # half the window consumed: grant it again
    assert grant["op"] == "setopts" and grant["active"] == 2
    assert s.next_data(sock) == b"2" and s.next_data(sock) == b"3"
    assert s.next_data(sock) is None
    feed(s, ok(grant["ref"]))
    assert [f["active"] for f in sent(s)] == [2]


def test_credits_wait_while_the_queue_is_over_max_bytes() -> None:
    s = Session(window=4, max_bytes=10)
    sock = connected(s)
    feed(s, (5, b"a" * 20), (5, b"b" * 20), (5, b"c" * 20))
    assert s.next_data(sock) == b"a" * 20 and s.next_data(sock) == b"b" * 20
    assert sent(s) == []  # half the window is free, but 20 bytes are still queued
    assert s.next_data(sock) == b"c" * 20
    assert [f["active"] for f in sent(s)] == [3]


def test_data_callback_gets_queued_packets_first() -> None:
    s = Session()
    sock = connected(s)
    feed(s, (5, b"a"), (5, b"b"))
    cb = object()
    assert s.set_data_callback(sock, cb) == [b"a", b"b"]  # type: ignore[arg-type]
    assert feed(s, (5, b"c")) == [Run(cb, (b"c",), sock)]  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        s.next_data(sock)
    s.set_data_callback(sock, None)
    feed(s, (5, b"d"))
    assert s.next_data(sock) == b"d"


def test_passive_socket_asks_and_count_events() -> None:
    s = Session()
    sock = connected(s, active=False)
    assert s.next_data(sock) is ASK
    assert _args.recv_command(sock.id, 1.5) == {"op": "recv", "id": 5, "timeout_ms": 1500}
    ref = s.call(_args.setopts_command(5, 2, None), None)
    sent(s)
    feed(s, ok(ref))
    cb = object()
    s.set_passive_callback(sock, cb)  # type: ignore[arg-type]
    assert feed(s, {"event": "passive", "id": 5}) == [Run(cb, (), sock)]  # type: ignore[arg-type]


def test_busy_and_ready() -> None:
    s = Session()
    sock = connected(s)
    assert feed(s, {"event": "busy", "id": 5}) == [Wake(sock)] and sock.busy
    assert feed(s, {"event": "ready", "id": 5}) == [Wake(sock)] and not sock.busy


def test_deliver_frames_and_limits() -> None:
    s = Session()
    sock = connected(s, mode="packet:1")
    with pytest.raises(ValueError, match="too long"):
        s.chunks(sock, b"x" * 256)
    for chunk in s.chunks(sock, b"x" * 255):
        s.deliver(sock, chunk)
    assert sent(s) == [(5, b"x" * 255)]
    raw = connected(s, sid=6)
    assert [len(c) for c in s.chunks(raw, b"y" * 600_000)] == [262144, 262144, 75712]


# ---------------------------------------------------------------------------- closing and handoff


def test_peer_close_clean_and_broken() -> None:
    s = Session()
    sock = connected(s)
    cb = object()
    assert s.set_close_callback(sock, cb) is False  # type: ignore[arg-type]
    feed(s, (5, b"last"))
    out = feed(s, {"event": "socket_closed", "id": 5, "reason": "normal"})
    assert out == [Wake(sock), Run(cb, (None,), sock)]  # type: ignore[arg-type]
    assert s.next_data(sock) == b"last" and s.next_data(sock) is END
    assert s.set_close_callback(sock, cb) is True  # set after the close: call it now

    other = connected(s, sid=6)
    feed(s, {"event": "socket_closed", "id": 6, "reason": {"kind": "econnreset", "message": "m"}})
    with pytest.raises(NetworkError):
        s.next_data(other)
    with pytest.raises(NetworkError):
        s.check_open(other)


def test_close_reply_closes_even_when_already_gone_in_the_daemon() -> None:
    s = Session()
    sock = connected(s)
    feed(s, (5, b"unread"))
    ref = s.call({"op": "close", "id": 5}, "c")
    sent(s)
    assert feed(s, err(ref, "no_such_socket")) == [Wake(sock), Resolve("c", None)]
    assert sock.closed and sock.close_reason is None and s.buffered_bytes == 0
    with pytest.raises(SocketClosed, match="is closed"):
        s.check_open(sock)


def test_a_socket_the_daemon_forgot_is_closed_whichever_comes_first() -> None:
    """info on a socket whose peer just closed: the daemon has forgotten it
    (no_such_socket) before the library read its socket_closed event. The
    caller sees SocketClosed either way, as the guide says."""
    s = Session()
    connected(s)
    ref = s.call({"op": "info", "id": 5}, "i")
    sent(s)
    (outcome,) = feed(s, err(ref, "no_such_socket"))
    assert isinstance(outcome, Fail) and isinstance(outcome.error, SocketClosed)
    assert outcome.error.kind == "closed" and "socket 5 is closed" in str(outcome.error)
    # When the event came first, its reason is what the caller gets.
    sock = connected(s, sid=6)
    ref = s.call({"op": "info", "id": 6}, "k")
    sent(s)
    reason = {"kind": "tls", "message": "bad record mac"}
    outcomes = feed(s, {"event": "socket_closed", "id": 6, "reason": reason}, err(ref, "no_such_socket"))
    (fail,) = [o for o in outcomes if isinstance(o, Fail)]
    assert isinstance(fail.error, TlsError) and "bad record mac" in str(fail.error)
    assert sock.closed
    # A socket the library never had stays no_such_socket.
    ref = s.call({"op": "info", "id": 77}, "j")
    sent(s)
    (outcome,) = feed(s, err(ref, "no_such_socket"))
    assert isinstance(outcome, Fail) and outcome.error.kind == "no_such_socket"


def test_handoff_returns_the_unread_and_closes_quietly() -> None:
    s = Session("me")
    sock = connected(s)
    s.set_close_callback(sock, object())  # type: ignore[arg-type]
    feed(s, (5, b"unread"))
    ref = s.call({"op": "controlling_process", "id": 5, "to": "other"}, "h")
    sent(s)
    assert feed(s, ok(ref)) == [Wake(sock), Resolve("h", [b"unread"])]  # no close callback
    assert sock.closed and sock.handed_over and s.next_data(sock) is END
    with pytest.raises(SocketClosed, match="handed over"):
        s.check_open(sock)
    mine = connected(s, sid=6)
    ref = s.call({"op": "controlling_process", "id": 6, "to": "me"}, "h")
    assert feed(s, ok(ref)) == [Resolve("h", [])] and not mine.closed


def test_owned_socket_is_queued_and_restarts_its_window() -> None:
    s = Session(window=3)
    owned = {"event": "owned", "id": 8, "from": 2, "from_name": "acceptor", "mode": "line",
             "peer": {"host": "h", "port": 9}, "busy": True}
    assert feed(s, owned) == [Wake(None)]
    sock = s.pop_adopted()
    assert isinstance(sock, SocketEntry) and s.pop_adopted() is None
    assert (sock.id, sock.mode, sock.peer, sock.busy, sock.previous_owner) == (8, "line", ("h", 9), True, (2, "acceptor"))
    assert [(f["id"], f["active"]) for f in sent(s)] == [(8, False), (8, 3)]
    cb = object()
    assert s.set_adopt_callback(cb) == []  # type: ignore[arg-type]
    (out,) = feed(s, {"event": "owned", "id": 10, "from": 2, "listener": True, "sockname": {"host": "h", "port": 7}})
    assert out.callback is cb and isinstance(out.args[0], ListenerEntry) and out.args[0].port == 7


def test_hello_with_grace_waits_for_what_a_predecessor_left() -> None:
    """A named client's hello returns once every ``owned`` event that follows its
    reply is in: those from a predecessor of its name (not from itself, nor from
    other clients) make :attr:`Session.reclaimed`."""
    s = Session("w1", window=2, grace_ms=30000)
    ref = s.call(s.hello_command(), "w")
    assert sent(s) == [{"op": "hello", "name": "w1", "grace_ms": 30000, "ref": ref}]
    assert feed(s, ok(ref, client=9, name="w1", grace_ms=20000, capabilities=["grace", "stats"])) == []
    assert s.grace_ms == 20000
    [barrier] = sent(s)
    assert barrier == {"op": "stats", "ref": barrier["ref"]}
    back = {"event": "owned", "id": 4, "from": 3, "from_name": "w1", "mode": "raw", "peer": {"host": "h", "port": 1}}
    lst = {"event": "owned", "id": 5, "from": 3, "from_name": "w1", "listener": True, "sockname": {"host": "h", "port": 2}}
    other = {"event": "owned", "id": 6, "from": 2, "from_name": "acceptor", "mode": "raw"}
    assert feed(s, back, lst, other) == [Wake(None)]
    out = feed(s, err(barrier["ref"], "bad_request"))  # whatever it says
    assert out == [Resolve("w", {"client": 9, "name": "w1", "grace_ms": 20000, "capabilities": ["grace", "stats"]})]
    sock, listener = s.reclaimed
    assert isinstance(sock, SocketEntry) and sock.previous_owner == (3, "w1")
    assert isinstance(listener, ListenerEntry) and listener.port == 2
    assert s.pop_adopted().id == 6 and s.pop_adopted() is None  # type: ignore[union-attr]
    assert [(f["id"], f["active"]) for f in sent(s)] == [(4, False), (4, 2), (6, False), (6, 2)]
    assert feed(s, {"event": "owned", "id": 7, "from": 9, "from_name": "w1", "mode": "raw"}) == [Wake(None)]  # our own
    assert len(s.reclaimed) == 2


def test_sockets_of_a_listener_of_unknown_mode_are_never_split() -> None:
    """A listener handed over or given back comes without its mode: what its
    sockets send may be a packet, so it goes whole (raw data would be split)."""
    s = Session()
    feed(s, {"event": "owned", "id": 5, "from": 3, "listener": True, "sockname": {"host": "h", "port": 2}})
    lst = s.pop_adopted()
    assert isinstance(lst, ListenerEntry) and lst.mode is None
    ref = s.call(_args.accept_command(5, True, None), "a")
    sent(s)
    (made,) = feed(s, ok(ref, id=6, peer={"host": "h", "port": 9}))
    big = b"x" * (RAW_CHUNK + 1)
    assert made.value.mode is None and s.chunks(made.value, big) == [big]
    assert len(s.chunks(connected(s, 7), big)) == 2  # raw


def test_hello_without_a_name_or_grace_support_needs_no_barrier() -> None:
    for s, caps in ((Session(), ["grace", "stats"]), (Session("w"), ["json"])):
        ref = s.call(s.hello_command(), "w")
        sent(s)
        assert feed(s, ok(ref, client=1, capabilities=caps)) == [Resolve("w", {"client": 1, "capabilities": caps})]
        assert sent(s) == [] and s.grace_ms is None


def test_unsolicited_errors() -> None:
    s = Session()
    sock = connected(s)
    (notice,) = feed(s, err(None, "emsgsize", id=5))
    assert isinstance(notice, Notice) and notice.level == logging.WARNING
    with pytest.raises(NetworkError):
        s.check_open(sock)
    s.check_open(sock)  # reported once
    assert feed(s, err(None, "no_such_socket", id=99))[0].level == logging.DEBUG


def test_fail_ends_everything() -> None:
    s = Session()
    sock = connected(s)
    ref = s.call({"op": "resolve"}, "r")
    s.abandon(s.call({"op": "stop"}, "gone-already"))
    gone = DaemonGone("it died")
    out = s.fail(gone)
    assert Fail("r", gone) in out and Wake(sock) in out and out[-1] == Wake(None)
    assert len([o for o in out if isinstance(o, Fail)]) == 1
    assert sock.close_reason is gone and s.data_to_send() == []
    with pytest.raises(DaemonGone):
        s.call({"op": "resolve"}, "x")
    with pytest.raises(DaemonGone):
        s.pop_adopted()
    assert ref and s.fail(DaemonGone("again")) == [Wake(None)]


def test_bad_bytes_are_a_protocol_error() -> None:
    s = Session()
    s.receive_data(b"\x00\x00\x00\x02\x07x")
    with pytest.raises(ProtocolError, match="unknown frame type"):
        s.next_outcomes()


# ---------------------------------------------------------------------------- what is sent


def _all_commands(s: Session) -> List[Tuple[Dict[str, Any], Any]]:
    tls = {k: "x" for k in SPEC_TLS}
    tls.update(verify=2, depth=3, verify_hostname=False, callback_timeout_ms=100, alpn=["h2"], ticket_keys=["k"],
               sni=[{"names": ["a.example"], "certfile": "a.pem", "keyfile": "a.key", "password": "p"}],
               ask_password=True, verify_callback=lambda chain, result: True, password=lambda source: "p",
               session_reuse=False, ocsp_status_request=True)
    sock = connected(s, sid=40)
    lst = ListenerEntry(41, "raw", None, 1)
    s._register(lst)  # noqa: SLF001 - a listener without a listen round trip
    return [
        (s.hello_command(), None),
        (_args.listen_command(0, "::", tls, "packet:2", 5, 100, (1.5, 60, 2), "once"), None),
        (_args.accept_command(41, 3, {"flags": "-cert c.pem"}, (1, 2, 3)), None),
        ({"op": "cancel", "target": 1}, None),
        (_args.connect_command("h", 1, tls, "asn1", 2.0, 9, False, (1, 2, 3)), None),
        (_args.tls_context_command("web", tls), None),
        (_args.inject_ca_command(40, "ca.pem", None), None),
        (_args.inject_ca_command(40, None, "-----BEGIN CERTIFICATE-----\n"), None),
        ({"op": "ciphers", "id": 40}, None),
        ({"op": "answer", "request": 3, "accept": True}, None),
        ({"op": "deliver", "id": 40, "data": b"x"}, None),
        ({"op": "close", "id": 40}, None),
        ({"op": "controlling_process", "id": 40, "to": "w"}, None),
        (_args.setopts_command(40, True, 7), None),
        (_args.recv_command(sock.id, 1.0), None),
        ({"op": "peername", "id": 40}, None),
        ({"op": "sockname", "id": 41}, None),
        (_args.resolve_command("127.0.0.1"), None),
        ({"op": "info", "id": 40}, None),
        ({"op": "stop"}, None),
        (_args.starttls_command(40, "server", "web", 5, 6, 7), None),
        (_args.stoptls_command(40, 1), None),
        ({"op": "stats"}, None),
        ({"op": "reload"}, None),
    ]


def test_commands_carry_only_documented_fields() -> None:
    s = Session("n", grace_ms=1000)
    commands = _all_commands(s)
    for cmd, waiter in commands:
        s.call(cmd, waiter)
    frames = sent(s)
    assert {f["op"] for f in frames} == set(SPEC_FIELDS)
    for frame in frames:
        assert set(frame) - {"op", "ref"} <= SPEC_FIELDS[frame["op"]], frame
        if isinstance(frame.get("tls"), dict):
            assert set(frame["tls"]) <= SPEC_TLS, frame


def test_tls_is_passed_through_as_given() -> None:
    given = {"cacertfile": "ca.pem", "server_name": "", "verify_hostname": False, "logfile": "tls.log"}
    s = Session()
    s.call(_args.connect_command("h", 1, given, "raw", None, None), None)
    (frame,) = sent(s)
    assert frame["tls"] == given
    s.call(_args.connect_command("h", 1, None, "raw", None, None), None)
    assert sent(s)[0]["tls"] == {}  # the secure defaults
    with pytest.raises(ValueError, match="unknown tls option 'cafile'"):
        _args.check_tls({"cafile": "x"}, default=None)
    with pytest.raises(TypeError, match="'sni' must be list"):
        _args.check_tls({"sni": "x"}, default=None)
    with pytest.raises(ValueError, match="host name or False"):
        _args.check_tls({"verify_hostname": True}, default=None)


def test_undocumented_fields_are_refused_before_sending() -> None:
    s = Session()
    connected(s)
    with pytest.raises(ValueError, match="no field active"):
        s.call({"op": "close", "id": 1, "active": True}, None)
    with pytest.raises(ValueError, match="no field sni"):
        s.call({"op": "setopts", "id": 5, "active": True, "sni": 1}, None)
    with pytest.raises(ValueError, match="no field timeout_ms"):
        s.call({"op": "accept", "id": 5, "timeout_ms": 1}, None)
    with pytest.raises(ValueError, match="tls.cafile"):
        s.call({"op": "connect", "host": "h", "port": 1, "tls": {"cafile": "x"}}, None)
    assert sent(s) == []
    s.call({"op": "no_such_op", "x": 1}, None)  # not the protocol's: left to the daemon
    assert sent(s)[0]["op"] == "no_such_op"
