"""A worker for test_grace.py, run as its own process.

It attaches to the daemon's Unix socket under a name with a grace period,
listens (TLS, line mode), serves one line of the first connection
("w1:" + the line), then waits until its stdin closes or it is killed.
Each step is a JSON line on stdout.

    grace_worker.py SOCKET NAME CERTFILE KEYFILE
"""

from __future__ import annotations

import json
import sys

import tlsport


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    path, name, certfile, keyfile = sys.argv[1:5]
    client = tlsport.attach(path, name=name, grace=30)
    lst = client.listen(0, "127.0.0.1", tls={"certfile": certfile, "keyfile": keyfile}, mode="line", timeout=10)
    say(event="listening", port=lst.port, client=client.number, grace=client.grace)
    sock = lst.accept(timeout=30)
    line = sock.recv(timeout=30)
    sock.send(b"w1:" + line)
    say(event="served", line=line.decode())
    sys.stdin.read()  # until the test closes our stdin (or kills us)
    client.close()


if __name__ == "__main__":
    main()
