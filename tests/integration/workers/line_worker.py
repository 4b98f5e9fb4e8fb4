"""A worker for the grace-period test, speaking the lines encoding over the
daemon's Unix socket: attaches as "w1" with a grace period; the first run
opens a listener and accepts one peer, a later run gets them back. It reads
the peer's numbered lines one at a time (active "once") and prints each
number on stdout as it handles it. With a third argument N it stops after
handling number N, between two reads, and prints "paused"."""

import base64
import json
import socket
import sys

path, first = sys.argv[1], sys.argv[2] == "first"
pause_after = int(sys.argv[3]) if len(sys.argv) > 3 else None
s = socket.socket(socket.AF_UNIX)
s.connect(path)
f = s.makefile("rwb", buffering=0)


def send(msg):
    f.write(json.dumps(msg).encode() + b"\n")


def next_message():
    return json.loads(f.readline())


send({"op": "hello", "ref": 1, "name": "w1", "grace_ms": 20000})
hello = next_message()
assert hello["ok"] and hello["grace_ms"] == 20000, hello
if first:
    send({"op": "listen", "ref": 2, "host": "127.0.0.1", "port": 0, "mode": "line", "tls": False})
    lst = next_message()
    print("port", lst["port"], flush=True)
    send({"op": "accept", "ref": 3, "id": lst["id"], "active": False})
    sid = next_message()["id"]
else:
    owned = [next_message(), next_message()]
    sid = next(m["id"] for m in owned if m["event"] == "owned" and not m.get("listener"))
    print("owned", " ".join(sorted(str(m["id"]) for m in owned)), flush=True)
while True:
    send({"op": "setopts", "ref": "s", "id": sid, "active": "once"})
    msg = next_message()
    while msg.get("ref") == "s":
        msg = next_message()
    if msg.get("event") != "fromsocket":
        print("end", json.dumps(msg), flush=True)
        break
    number = base64.b64decode(msg["data"]).decode().strip()
    print(number, flush=True)
    if pause_after is not None and int(number) == pause_after:
        print("paused", flush=True)
        sys.stdin.read()  # holds here until killed
