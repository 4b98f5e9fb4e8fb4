"""busy/ready flow control per socket, TLS settings given with accept,
initial active modes, and the daemon's life when its port channel fails."""

import json
import os
import select
import socket
import ssl
import struct
import subprocess
import threading
import time

from conftest import Daemon, client_tls, control, daemon_path, data_frame, tls_listen


def test_busy_then_ready_and_other_sockets_unaffected(pki):
    d = Daemon(["--socket-buffer", "65536"])
    c = d.client
    try:
        lst = c.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False, "mode": "raw"})
        r1 = c.send({"op": "accept", "id": lst["id"]})
        slow = socket.create_connection(("127.0.0.1", lst["port"]))
        s1 = c.reply(r1)["id"]
        r2 = c.send({"op": "accept", "id": lst["id"]})
        fast = socket.create_connection(("127.0.0.1", lst["port"]))
        s2 = c.reply(r2)["id"]
        chunk = b"b" * 262144
        sent = 0
        busy = None
        while busy is None and sent < (64 << 20):
            c.deliver(s1, chunk)
            sent += len(chunk)
            try:
                busy = c.events.get(timeout=0.001)
                busy.pop("_seq", None)
            except Exception:
                pass
        assert busy == {"event": "busy", "id": s1}, busy
        # The client's other socket and its commands still work at once.
        c.deliver(s2, b"unaffected")
        fast.settimeout(3)
        assert fast.recv(100) == b"unaffected"
        assert c.ok({"op": "hello"})["ok"]
        # The slow peer reads everything; the socket becomes ready again.
        got = 0
        slow.settimeout(5)
        while got < sent:
            data = slow.recv(1 << 20)
            assert data
            got += len(data)
        assert got == sent
        assert c.event(timeout=5) == {"event": "ready", "id": s1}
    finally:
        d.stop()


def test_accept_with_its_own_tls_flags(client, pki):
    # The seed's shape: listen with no TLS settings, SSLFlags on each accept.
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "mode": "packet:2"})
    client.error({"op": "accept", "id": lst["id"]}, "bad_request")
    ref = client.send({"op": "accept", "id": lst["id"],
                       "tls": {"flags": f"-cert {pki.server_cert} -key {pki.server_key}"}})
    c = client.call({"op": "connect", "host": "127.0.0.1", "port": lst["port"], "mode": "packet:2",
                     "tls": client_tls(pki)})
    assert c["ok"], c
    a = client.reply(ref)
    assert a["ok"]
    client.deliver(c["id"], b"hi")
    assert client.packets(a["id"], 1) == [b"hi"]


def test_connection_after_a_cancelled_accept_waits_for_the_next_accepts_tls(client, pki):
    # TLS per accept: the kernel accept started for the first accept is still
    # under way when that accept is cancelled; the connection it brings must
    # wait for the next accept and get its TLS, never be served as plain TCP.
    flags = {"flags": f"-cert {pki.server_cert} -key {pki.server_key}"}
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "mode": "packet:2"})
    first = client.send({"op": "accept", "id": lst["id"], "tls": flags})
    assert client.call({"op": "cancel", "target": first})["ok"]
    assert client.reply(first)["error"]["kind"] == "cancelled"
    ctx = ssl.create_default_context(cafile=pki.ca)
    peer = socket.create_connection(("127.0.0.1", lst["port"]))
    time.sleep(0.3)  # the daemon has accepted it, with no accept waiting
    second = client.send({"op": "accept", "id": lst["id"], "tls": flags})
    tls = ctx.wrap_socket(peer, server_hostname="localhost", do_handshake_on_connect=False)
    tls.settimeout(5)
    tls.do_handshake()
    a = client.reply(second)
    assert a["ok"], a
    tls.sendall(b"\x00\x02hi")
    assert client.packets(a["id"], 1) == [b"hi"]
    tls.close()


def test_accept_with_own_tls_survives_failed_handshakes(client, pki):
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "handshake_timeout_ms": 300})
    ref = client.send({"op": "accept", "id": lst["id"],
                       "tls": {"certfile": pki.server_cert, "keyfile": pki.server_key,
                               "verify": 2, "cacertfile": pki.ca}})
    # A client without a certificate fails verify 2; a silent one times out.
    silent = socket.create_connection(("127.0.0.1", lst["port"]))
    time.sleep(0.5)
    bad = client.call({"op": "connect", "host": "127.0.0.1", "port": lst["port"],
                       "tls": client_tls(pki)})
    assert bad["ok"] is False or client.closed_event(bad["id"], timeout=3)
    good = client.call({"op": "connect", "host": "127.0.0.1", "port": lst["port"],
                        "tls": client_tls(pki, certfile=pki.client_cert, keyfile=pki.client_key)})
    assert good["ok"], good
    assert client.reply(ref)["ok"]
    silent.close()


def handshake_together(ctx, port, count):
    """`count` TLS clients that connect first, so that the daemon takes them all
    while one accept waits, then handshake at the same time."""
    raws = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    time.sleep(0.2)  # all accepted, all handshaking for the one accept
    peers = [ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
             for raw in raws]
    shakers = [threading.Thread(target=peer.do_handshake) for peer in peers]
    for t in shakers:
        t.start()
    for t in shakers:
        t.join(5)
    return peers


def test_silent_peers_do_not_hold_up_accepts_that_bring_their_own_tls(client, pki):
    """The seed's shape (TLS on each accept): peers that connect and say
    nothing do not keep a real client waiting for their handshake timeout. A
    connection whose handshake ends after its accept was served waits,
    handshaken, for the next accept with the same settings."""
    flags = {"flags": f"-cert {pki.server_cert} -key {pki.server_key}"}
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "mode": "packet:2"})
    silent = [socket.create_connection(("127.0.0.1", lst["port"])) for _ in range(5)]
    ctx = ssl.create_default_context(cafile=pki.ca)
    try:
        for _ in range(3):
            ref = client.send({"op": "accept", "id": lst["id"], "tls": flags})
            time.sleep(0.2)  # the silent peers are accepted first
            started = time.monotonic()
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", lst["port"]), timeout=5),
                                 server_hostname="localhost") as s:
                a = client.reply(ref, timeout=5)
                assert a["ok"], a
                assert time.monotonic() - started < 1.0
                s.sendall(b"\x00\x02hi")
                assert client.packets(a["id"], 1) == [b"hi"]
                client.ok({"op": "close", "id": a["id"]})
        # Two clients handshake at once for one accept: the second waits,
        # handshaken, for the next accept.
        ref = client.send({"op": "accept", "id": lst["id"], "tls": flags})
        peers = handshake_together(ctx, lst["port"], 2)
        first = client.reply(ref, timeout=5)
        assert first["ok"], first
        second = client.call({"op": "accept", "id": lst["id"], "tls": flags}, timeout=5)
        assert second["ok"], second
        seen = {}
        for i, peer in enumerate(peers):
            peer.sendall(b"\x00\x01" + str(i).encode())
            ev = client.event(timeout=5)
            assert ev["event"] == "fromsocket", ev
            seen[ev["id"]] = ev["data"]
        assert sorted(seen) == sorted([first["id"], second["id"]])
        assert sorted(seen.values()) == [b"0", b"1"]
        for peer in peers:
            peer.close()
    finally:
        for s in silent:
            s.close()


def leave_a_spare_then_serve_another(client, pki, spare_flags, other_flags, **listen):
    """Two clients handshake at once for an accept with `spare_flags`: one is
    served, the other waits as a spare. Then an accept with `other_flags` must
    get a new client's connection, not the spare. Returns the listener, the
    two accepts' replies and the spare's peers (to close)."""
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, **listen})
    ctx = ssl.create_default_context(cafile=pki.ca)
    ref = client.send({"op": "accept", "id": lst["id"], "tls": {"flags": spare_flags}})
    peers = handshake_together(ctx, lst["port"], 2)
    first = client.reply(ref, timeout=5)
    assert first["ok"], first
    other = client.send({"op": "accept", "id": lst["id"], "tls": {"flags": other_flags}})
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", lst["port"]), timeout=5),
                         server_hostname="localhost") as s:
        served = client.reply(other, timeout=5)
        assert served["ok"], served
        s.sendall(b"new")
        assert client.read_data(served["id"], 3) == b"new"
    return lst, first, served, peers


def test_a_waiting_spare_does_not_stop_accepts_with_other_settings(client, pki):
    """backlog 1: a connection handshaken for an accept that another served
    waits for an accept with its settings; an accept with other settings
    still gets new connections meanwhile."""
    flags = f"-cert {pki.server_cert} -key {pki.server_key}"
    lst, _, _, peers = leave_a_spare_then_serve_another(client, pki, flags, flags + " -verify 0",
                                                        backlog=1)
    # The spare is still there for its own settings.
    assert client.call({"op": "accept", "id": lst["id"], "tls": {"flags": flags}}, timeout=5)["ok"]
    for peer in peers:
        peer.close()


def test_a_spare_goes_only_to_an_accept_with_the_same_log_file(client, pki, tmp_path):
    """-log is part of an accept's settings: a connection handshaken (and
    logging) for one accept's file is not handed to an accept with another."""
    flags = f"-cert {pki.server_cert} -key {pki.server_key}"
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    lst, first, b, peers = leave_a_spare_then_serve_another(
        client, pki, f"{flags} -log {log_a}", f"{flags} -log {log_b}")
    third = client.call({"op": "accept", "id": lst["id"], "tls": {"flags": f"{flags} -log {log_a}"}},
                        timeout=5)
    assert third["ok"], third
    a_text, b_text = log_a.read_text(), log_b.read_text()
    for accepted, text in ((first, a_text), (third, a_text), (b, b_text)):
        assert f"socket {accepted['id']}: connected" in text, (accepted, text)
    assert f"socket {b['id']}:" not in a_text
    assert f"socket {third['id']}:" not in b_text
    for peer in peers:
        peer.close()


def test_initial_active_false_on_accept_and_connect(client, pki):
    lst = tls_listen(client, pki, mode="packet:2")
    ref = client.send({"op": "accept", "id": lst["id"], "active": False})
    c = client.call({"op": "connect", "host": "127.0.0.1", "port": lst["port"], "mode": "packet:2",
                     "tls": client_tls(pki), "active": "once"})
    a = client.reply(ref)
    client.deliver(c["id"], b"waits")
    client.deliver(a["id"], b"one")
    client.deliver(a["id"], b"two")
    assert client.packets(c["id"], 1) == [b"one"]  # once: one packet, then passive
    try:
        ev = client.event(timeout=0.3)
        raise AssertionError(f"unexpected event {ev}")
    except AssertionError as e:
        assert "no event" in str(e)
    assert client.ok({"op": "recv", "id": a["id"], "timeout_ms": 2000})["data"] == b"waits"
    assert client.ok({"op": "recv", "id": c["id"], "timeout_ms": 2000})["data"] == b"two"


def test_commands_after_close_in_the_same_write_are_not_lost(client, daemon):
    """close drains the socket; the commands read with it must survive."""
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    ref = client.send({"op": "accept", "id": lst["id"], "active": False})
    peer = socket.create_connection(("127.0.0.1", lst["port"]))
    sid = client.reply(ref)["id"]
    peer.sendall(b"x" * 1000)  # waits unread in the daemon's kernel buffer
    time.sleep(0.2)
    daemon.proc.stdin.write(control({"op": "close", "ref": "c", "id": sid}) +
                            control({"op": "hello", "ref": "h"}))
    daemon.proc.stdin.flush()
    assert client.reply("c")["ok"]
    assert client.reply("h")["ok"]
    peer.close()


def test_port_daemon_exits_when_its_framing_breaks():
    proc = subprocess.Popen([daemon_path()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    proc.stdin.write(b"\x7f\xff\xff\xff\x00")
    proc.stdin.flush()
    proc.wait(timeout=3)
    proc.stdin.close()


FLOODER = r"""
import json, socket, struct, subprocess, sys, time
daemon = subprocess.Popen([sys.argv[1], "--socket-buffer", "65536"], stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL)
print(daemon.pid, flush=True)
def control(m):
    b = b"\x00" + json.dumps(m).encode()
    return struct.pack(">I", len(b)) + b
daemon.stdin.write(control({"op": "listen", "ref": 1, "host": "127.0.0.1", "port": int(sys.argv[2]),
                            "tls": False}))
daemon.stdin.write(control({"op": "accept", "ref": 2, "id": 1}))
daemon.stdin.flush()
time.sleep(0.5)
chunk = b"\x01" + struct.pack(">I", 2) + b"z" * 65536
while True:  # socket 2 is the accepted one; its peer never reads
    daemon.stdin.write(struct.pack(">I", len(chunk)) + chunk)
"""


def test_paused_port_daemon_still_exits_when_its_node_goes(tmp_path):
    """A port client that ignores busy is paused; when the program that spawned
    the daemon dies (closing the pipe), the daemon must still exit."""
    from conftest import free_port
    port = free_port()
    script = tmp_path / "flooder.py"
    script.write_text(FLOODER)
    node = subprocess.Popen(["/usr/bin/python3", str(script), daemon_path(), str(port)],
                            stdout=subprocess.PIPE)
    daemon_pid = int(node.stdout.readline())
    time.sleep(0.3)
    peer = socket.create_connection(("127.0.0.1", port))  # never reads
    time.sleep(1.5)
    assert os.path.exists(f"/proc/{daemon_pid}")
    node.kill()  # the "node" dies while its channel is paused
    node.wait()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(daemon_pid, os.WNOHANG)
        except ChildProcessError:
            pid = daemon_pid  # not our child: check /proc instead
        state = open(f"/proc/{daemon_pid}/stat").read().split()[2] if os.path.exists(f"/proc/{daemon_pid}") else "X"
        if state in ("Z", "X"):
            break
        time.sleep(0.05)
    else:
        os.kill(daemon_pid, 9)
        raise AssertionError("the paused daemon outlived its node")
    peer.close()
