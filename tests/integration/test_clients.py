"""Several clients on one daemon: ownership, handover, a client's death,
bad input, and flow control both ways."""

import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import is_listening, Daemon, client_tls, control, data_frame, tls_listen, unix_client, wait_for_path, SANITIZED, rss_kib


def python_peer(port, ca):
    ctx = ssl.create_default_context(cafile=ca)
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")


def test_handover_mid_stream_loses_nothing(unix_daemon, pki):
    acceptor = unix_client(unix_daemon.path)
    worker = unix_client(unix_daemon.path)
    acceptor.ok({"op": "hello", "name": "acceptor"})
    worker.ok({"op": "hello", "name": "worker"})
    lst = tls_listen(acceptor, pki, mode="packet:4")
    aref = acceptor.send({"op": "accept", "id": lst["id"]})
    peer = python_peer(lst["port"], pki.ca)
    sid = acceptor.reply(aref)["id"]
    total = 20000
    stop = threading.Event()

    def stream():
        for i in range(total):
            peer.sendall(struct.pack(">I", 8) + b"%08d" % i)
        stop.set()

    t = threading.Thread(target=stream)
    t.start()
    got_a = []
    while len(got_a) < 500:  # hand over while the stream is flowing
        ev = acceptor.event(keep_seq=True)
        assert ev["event"] == "fromsocket" and ev["id"] == sid
        got_a.append(ev)
    ref = acceptor.send({"op": "controlling_process", "id": sid, "to": "worker"})
    reply = acceptor.reply(ref, keep_seq=True)
    assert reply["ok"], reply
    # Everything the old owner got came before its reply; nothing after it.
    while True:
        try:
            ev = acceptor.event(timeout=0.5, keep_seq=True)
        except AssertionError:
            break
        assert ev["_seq"] < reply["_seq"], ev
        got_a.append(ev)
    owned = worker.event()
    assert owned["event"] == "owned" and owned["id"] == sid and owned["from_name"] == "acceptor"
    assert owned["mode"] == "packet:4"
    got_b = worker.packets(sid, total - len(got_a), timeout=20)
    t.join(10)
    numbers = [int(e["data"]) for e in got_a] + [int(p) for p in got_b]
    assert numbers == list(range(total))
    # The new owner may use it; the old one may not.
    worker.deliver(sid, b"from worker")
    acceptor.error({"op": "peername", "id": sid}, "not_owner")
    acceptor.error({"op": "close", "id": sid}, "not_owner")
    peer.close()


def test_handover_errors(unix_daemon):
    a = unix_client(unix_daemon.path)
    a.ok({"op": "hello", "name": "a"})
    lst = a.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    a.error({"op": "controlling_process", "id": lst["id"], "to": "nobody"}, "no_such_client")
    a.error({"op": "controlling_process", "id": 999999, "to": "a"}, "no_such_socket")
    a.error({"op": "controlling_process", "id": lst["id"]}, "bad_request")


def test_listener_handover_and_accepts_from_new_owner(unix_daemon):
    a = unix_client(unix_daemon.path)
    b = unix_client(unix_daemon.path)
    b_no = b.ok({"op": "hello", "name": "b"})["client"]
    lst = a.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    pending = a.send({"op": "accept", "id": lst["id"]})
    a.ok({"op": "controlling_process", "id": lst["id"], "to": b_no})
    assert a.reply(pending)["error"]["kind"] == "cancelled"
    assert b.event()["event"] == "owned"
    ref = b.send({"op": "accept", "id": lst["id"]})
    s = socket.create_connection(("127.0.0.1", lst["port"]))
    assert b.reply(ref)["ok"]
    s.close()


def test_client_death_closes_only_its_sockets(unix_daemon, pki):
    a = unix_client(unix_daemon.path)
    b = unix_client(unix_daemon.path)
    la = tls_listen(a, pki)
    lb = tls_listen(b, pki)
    ra = a.send({"op": "accept", "id": la["id"]})
    rb = b.send({"op": "accept", "id": lb["id"]})
    pa = python_peer(la["port"], pki.ca)
    pb = python_peer(lb["port"], pki.ca)
    a.reply(ra)
    sb = b.reply(rb)["id"]
    a.sock.shutdown(socket.SHUT_RDWR)  # the client goes away
    a.sock.close()
    pa.settimeout(3)
    assert pa.recv(10) == b""  # its peer sees an orderly close
    assert not is_listening(la["port"])  # its listener is closed too
    # b's socket still works both ways.
    pb.sendall(b"still here")
    assert b.read_data(sb, 10) == b"still here"
    b.deliver(sb, b"yes")
    pb.settimeout(3)
    assert pb.recv(3) == b"yes"


def test_cancel_accept_keeps_listener(client):
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    r1 = client.send({"op": "accept", "id": lst["id"]})
    r2 = client.send({"op": "accept", "id": lst["id"]})
    client.ok({"op": "cancel", "target": r1})
    assert client.reply(r1)["error"]["kind"] == "cancelled"
    s = socket.create_connection(("127.0.0.1", lst["port"]))
    assert client.reply(r2)["ok"]
    client.error({"op": "cancel", "target": r1}, "enoent")
    s.close()
    r3 = client.send({"op": "accept", "id": lst["id"]})
    client.ok({"op": "close", "id": lst["id"]})
    assert client.reply(r3)["error"]["kind"] == "closed"


def test_bad_input_gets_clear_errors_and_the_client_goes_on(client):
    client.send_raw(b"\x00\x00\x00\x02\x07x")  # unknown frame type
    assert "frame" in client.next_unmatched()["error"]["message"]
    client.send_raw(b"\x00\x00\x00\x05\x00{bad")  # broken JSON
    assert client.next_unmatched()["error"]["kind"] == "bad_request"
    client.send_raw(b"\x00\x00\x00\x04\x00[1]")  # not an object
    assert client.next_unmatched()["error"]["kind"] == "bad_request"
    client.send_raw(b"\x00\x00\x00\x03\x00\x83\x01")  # broken ETF
    assert client.next_unmatched()["error"]["kind"] == "bad_request"
    client.error({"op": "frobnicate"}, "bad_request")
    client.error({"port": 1}, "bad_request")
    client.error({"op": "close", "id": 4242}, "no_such_socket")
    client.error({"op": "close", "id": "x"}, "bad_request")
    client.error({"op": "connect", "host": "127.0.0.1"}, "bad_request")
    client.error({"op": "listen", "port": 0, "tls": {"certfile": 5}}, "bad_request")
    client.error({"op": "listen", "port": 0, "tls": {"certfile": "/nonexistent.pem"}}, "bad_tls_config")
    # A command is checked whole before any socket is looked up.
    client.error({"op": "setopts", "id": 1, "active": "sometimes"}, "bad_request")
    client.error({"op": "setopts", "id": 1, "active": "once"}, "no_such_socket")
    client.send_raw(data_frame(77, b"lost"))
    err = client.next_unmatched()
    assert err["error"]["kind"] == "no_such_socket" and err["id"] == 77
    assert client.ok({"op": "hello"})["protocol"] == 1


def test_lines_bad_input(unix_daemon):
    c = unix_client(unix_daemon.path, lines=True)
    assert c.ok({"op": "hello"})["ok"]  # the first byte, '{', chose lines
    c.send_raw(b"this is not json\n")
    assert c.next_unmatched()["error"]["kind"] == "bad_request"
    c.send_raw(b'{"op":"deliver","id":1,"data":"***"}\n')
    err = c.next_unmatched()
    assert err["id"] == 1 and "base64" in err["error"]["message"], err
    # With a ref, the reply is the command's, naming the socket; the message says it once.
    r = c.error({"op": "deliver", "ref": 7, "id": 1, "data": "!!"}, "bad_request")
    assert r["id"] == 1 and r["error"]["message"] == "data is not valid base64", r
    r = c.error({"op": "deliver", "ref": 8, "id": 1, "data": "aGk=", "text": "hi"}, "bad_request")
    assert r["id"] == 1 and "not both" in r["error"]["message"], r
    assert c.ok({"op": "hello"})["ok"]


def test_broken_framing_disconnects_only_that_client(unix_daemon):
    good = unix_client(unix_daemon.path)
    bad = unix_client(unix_daemon.path)
    good.ok({"op": "hello"})
    bad.send_raw(b"\x7f\xff\xff\xff\x00")  # a 2 GiB frame: framing is lost
    err = bad.next_unmatched()
    assert err["error"]["kind"] == "emsgsize"
    deadline = time.monotonic() + 3
    while not bad.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bad.closed
    assert good.ok({"op": "hello"})["ok"]


def test_slow_client_stops_reading_the_peer(tmp_path, pki):
    """A client that reads its events slowly: the daemon stops reading the
    peer, the peer's sends block, memory stays bounded, nothing is lost."""
    path = str(tmp_path / "d.sock")
    d = Daemon(["--unix", path, "--client-buffer", "65536"], stdio=False)
    try:
        wait_for_path(path)
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        from conftest import Client, FrameReader, decode_body
        c = Client(s.sendall)
        reader = FrameReader()
        s.sendall(control({"op": "listen", "ref": 1, "host": "127.0.0.1", "port": 0, "mode": "raw",
                           "tls": {"certfile": pki.server_cert, "keyfile": pki.server_key}}))
        s.sendall(b"")
        msgs = []
        while not msgs:
            msgs = [decode_body(b) for b in reader.feed(s.recv(65536))]
        port = msgs[0]["port"]
        s.sendall(control({"op": "accept", "ref": 2, "id": msgs[0]["id"]}))
        peer = python_peer(port, pki.ca)
        total = 64 << 20
        sent = [0]
        chunk = bytes(i % 256 for i in range(65536))

        def send_all():
            try:
                while sent[0] < total:
                    peer.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass

        t = threading.Thread(target=send_all, daemon=True)
        t.start()
        time.sleep(1.5)  # the client reads nothing meanwhile
        stalled_at = sent[0]
        assert stalled_at < total / 2, "the peer was not slowed down"
        assert SANITIZED or rss_kib(d.proc.pid) < 40 * 1024
        # Now read everything and check it.
        received = 0
        s.settimeout(10)
        while received < total:
            for body in reader.feed(s.recv(1 << 20)):
                m = decode_body(body)
                if m.get("event") == "fromsocket":
                    data = m["data"]
                    expect = bytes((received + i) % 256 for i in range(min(len(data), 16)))
                    assert data[:16] == expect
                    received += len(data)
        assert received == total
        t.join(10)
        peer.close()
    finally:
        d.proc.terminate()
        d.proc.wait(timeout=5)


def test_slow_peer_bounds_what_waits_for_it(pki):
    """A peer that does not read: the daemon stops taking the client's
    commands once the socket's buffer is full; nothing is dropped."""
    d = Daemon(["--socket-buffer", "65536"])
    c = d.client
    try:
        lst = tls_listen(c, pki)
        aref = c.send({"op": "accept", "id": lst["id"]})
        peer = python_peer(lst["port"], pki.ca)
        sid = c.reply(aref)["id"]
        total = 64 << 20
        chunk = b"\xab" * 65536
        written = [0]

        def produce():
            try:
                while written[0] < total:
                    d.proc.stdin.write(data_frame(sid, chunk))
                    written[0] += len(chunk)
                d.proc.stdin.flush()
            except (OSError, ValueError):
                pass

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        time.sleep(1.5)
        assert written[0] < total / 2, "the client was not slowed down"
        assert SANITIZED or rss_kib(d.proc.pid) < 40 * 1024
        got = 0
        peer.settimeout(10)
        while got < total:
            data = peer.recv(1 << 20)
            assert data and data == b"\xab" * len(data)
            got += len(data)
        t.join(10)
        assert got == total
        peer.close()
    finally:
        d.stop()


def test_half_closed_client_still_gets_its_replies(unix_daemon, pki):
    """`printf … | socat - UNIX-CONNECT:…` shuts down its sending side at
    once: the reply to a slow command must still reach it."""
    lst_owner = unix_client(unix_daemon.path)
    lst = lst_owner.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    s = socket.socket(socket.AF_UNIX)
    s.connect(unix_daemon.path)
    s.sendall(b'{"op":"connect","ref":1,"host":"localhost","port":%d,"tls":false}\n' % lst["port"])
    s.shutdown(socket.SHUT_WR)
    time.sleep(0.3)
    accept = lst_owner.send({"op": "accept", "id": lst["id"]})
    accepted = lst_owner.reply(accept)
    assert accepted["ok"]
    s.settimeout(5)
    line = s.makefile("rb").readline()
    assert b'"ok":true' in line and b'"ref":1' in line
    s.close()
    # Once it is gone entirely, its socket is closed: the accepted end sees it.
    assert lst_owner.closed_event(accepted["id"], timeout=5)["reason"] == "normal"


def test_deliver_to_a_listener_is_no_such_socket(client):
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    r = client.call({"op": "deliver", "ref": "d", "id": lst["id"], "text": "x"})
    assert r["ok"] is False and r["error"]["kind"] == "no_such_socket" and r["id"] == lst["id"]
    client.send_raw(data_frame(lst["id"], b"x"))
    err = client.next_unmatched()
    assert err["error"]["kind"] == "no_such_socket" and err["id"] == lst["id"]


def test_a_waiting_recv_is_answered_before_socket_closed(client):
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    aref = client.send({"op": "accept", "id": lst["id"], "active": False})
    peer = socket.create_connection(("127.0.0.1", lst["port"]))
    sid = client.reply(aref)["id"]
    rref = client.send({"op": "recv", "id": sid, "timeout_ms": 5000})
    time.sleep(0.1)
    peer.close()
    ev = client.event(keep_seq=True)
    assert ev["event"] == "socket_closed" and ev["id"] == sid, ev
    reply = client.reply(rref, keep_seq=True)
    assert reply["error"]["kind"] == "closed"
    assert reply["_seq"] < ev["_seq"], (reply, ev)


def test_a_worker_killed_between_two_reads_is_succeeded_with_nothing_lost(unix_daemon):
    """A named worker with a grace period reads a numbered stream one line at
    a time and is killed with SIGKILL between two reads; a new worker under the
    same name gets the listener and the connection back and the stream goes
    on: across the two workers' logs every number appears once, in order.
    (Killed during a read, a worker loses what it had received and not yet
    handled, as protocol.md says; this test kills it between reads.)"""
    import signal
    worker = os.path.join(os.path.dirname(__file__), "workers", "line_worker.py")
    first = subprocess.Popen([sys.executable, worker, unix_daemon.path, "first", "300"],
                             stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    second = None
    try:
        port = int(first.stdout.readline().split()[1])
        peer = socket.create_connection(("127.0.0.1", port))
        total = 2000
        writer = threading.Thread(
            target=lambda: peer.sendall(b"".join(b"%d\n" % i for i in range(1, total + 1))),
            daemon=True)
        writer.start()
        seen = [int(first.stdout.readline()) for _ in range(300)]
        assert first.stdout.readline() == "paused\n"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(5)
        second = subprocess.Popen([sys.executable, worker, unix_daemon.path, "second"],
                                  stdout=subprocess.PIPE, text=True)
        assert second.stdout.readline().startswith("owned")
        while len(seen) < total:
            line = second.stdout.readline()
            assert line and not line.startswith("end"), (line, len(seen))
            seen.append(int(line))
        assert seen == list(range(1, total + 1))
        peer.close()
        assert second.stdout.readline().startswith("end")
        second.wait(5)
    finally:
        for proc in (first, second):
            if proc and proc.poll() is None:
                proc.kill()


def test_without_a_successor_kept_sockets_close_when_the_grace_period_ends(unix_daemon):
    a = unix_client(unix_daemon.path)
    a.ok({"op": "hello", "name": "w2", "grace_ms": 300})
    lst = a.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    a.sock.shutdown(socket.SHUT_RDWR)
    a.sock.close()
    time.sleep(0.1)
    assert is_listening(lst["port"])  # kept
    time.sleep(0.6)
    assert not is_listening(lst["port"])  # closed once the grace period ended
    b = unix_client(unix_daemon.path)
    r = b.ok({"op": "hello", "name": "w2"})
    assert "grace_ms" not in r
    with pytest.raises(AssertionError):
        b.event(timeout=0.3)  # nothing to give back
