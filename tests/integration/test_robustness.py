"""Hostile and random input: the daemon answers with errors, never crashes,
and keeps serving its other clients."""

import json
import random
import socket
import time

from conftest import control, data_frame, unix_client

OPS = ["hello", "listen", "accept", "cancel", "connect", "deliver", "close",
       "controlling_process", "setopts", "recv", "peername", "sockname", "resolve", "info"]
VALUES = [None, True, False, 0, -1, 1, 2, 65535, 65536, 2 ** 32, 2 ** 63 - 1, -2 ** 63, 1.5,
          "", "x", "127.0.0.1", "::1", "localhost", "once", "packet:2", "asn1", "raw",
          "\u00e9\u0000", [], [1, 2], {}, {"verify": 3}, {"certfile": 1}, {"flags": "-verify"},
          {"min_version": "sslv3"}, "a" * 300]
FIELDS = ["ref", "id", "host", "port", "mode", "tls", "to", "target", "active", "data", "text",
          "timeout_ms", "packet_size", "backlog", "name", "address", "handshake_timeout_ms"]


def random_command(rng):
    cmd = {"op": rng.choice(OPS + ["bogus", 5, None])}
    for _ in range(rng.randrange(6)):
        cmd[rng.choice(FIELDS)] = rng.choice(VALUES)
    if cmd.get("op") == "stop":
        cmd["op"] = "hello"
    return cmd


def alive(path):
    c = unix_client(path)
    r = c.ok({"op": "hello"})
    c.sock.close()
    return r["ok"]


def test_random_commands_get_answers_and_harm_no_one(unix_daemon):
    rng = random.Random(1234)
    bystander = unix_client(unix_daemon.path)
    bystander.ok({"op": "hello", "name": "bystander"})
    lst = bystander.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    c = unix_client(unix_daemon.path)
    for _ in range(1500):
        cmd = random_command(rng)
        if cmd.get("op") == "deliver" and isinstance(cmd.get("data"), str):
            cmd["data"] = cmd["data"].encode()
        try:
            c.send_raw(control(cmd) if rng.random() < 0.9 else
                       data_frame(rng.randrange(5), bytes(rng.randrange(256) for _ in range(8))))
        except (TypeError, ValueError):
            continue
    c.send_raw(control({"op": "hello", "ref": "final"}))
    assert c.reply("final", timeout=20)["ok"]
    assert alive(unix_daemon.path)
    # The bystander's listener was never touched by the other client.
    assert bystander.ok({"op": "sockname", "id": lst["id"]})["port"] == lst["port"]
    assert unix_daemon.proc.poll() is None


def test_random_bytes_on_binary_and_lines_clients(unix_daemon):
    rng = random.Random(99)
    for trial in range(60):
        s = socket.socket(socket.AF_UNIX)
        s.connect(unix_daemon.path)
        first = b"{" if trial % 2 else b"\x00"
        blob = first + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        try:
            s.sendall(blob)
            s.settimeout(0.05)
            s.recv(65536)
        except OSError:
            pass
        s.close()
    assert alive(unix_daemon.path)
    assert unix_daemon.proc.poll() is None


def test_many_clients_coming_and_going(unix_daemon):
    clients = [unix_client(unix_daemon.path) for _ in range(50)]
    for i, c in enumerate(clients):
        c.ok({"op": "hello", "name": f"c{i}"})
        c.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    for c in clients[::2]:
        c.sock.shutdown(socket.SHUT_RDWR)
        c.sock.close()
    time.sleep(0.3)
    for c in clients[1::2]:
        assert c.ok({"op": "hello"})["ok"]
    # Names of the clients that left are free again.
    n = unix_client(unix_daemon.path)
    assert n.ok({"op": "hello", "name": "c0"})["name"] == "c0"


def test_outstanding_accepts_are_capped(client):
    lst = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    for i in range(4096):
        client.send({"op": "accept", "ref": f"a{i}", "id": lst["id"]})
    client.error({"op": "accept", "id": lst["id"]}, "overloaded")
    client.ok({"op": "close", "id": lst["id"]})
    assert client.reply("a0")["error"]["kind"] == "closed"
