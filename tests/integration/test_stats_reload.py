"""What an operator sees and does: the stats command and /metrics, a log line
per connection, and reloading certificates under live listeners."""

import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

from conftest import Daemon, free_port, tls_listen


def _tls_roundtrip(port, ca, payload=b"ping"):
    ctx = ssl.create_default_context(cafile=ca)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                         server_hostname="localhost") as s:
        s.sendall(payload)
        return s.getpeercert()


def test_stats_count_what_happened(client, pki):
    lst = tls_listen(client, pki)
    ref = client.send({"op": "accept", "id": lst["id"]})
    ctx = ssl.create_default_context(cafile=pki.ca)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", lst["port"])),
                         server_hostname="localhost") as s:
        sid = client.reply(ref)["id"]
        s.sendall(b"hello")
        assert client.read_data(sid, 5) == b"hello"
        client.deliver(sid, b"world!")
        assert s.recv(6) == b"world!"
        stats = client.ok({"op": "stats"})
        assert stats["connections"]["open"] == 1
        assert stats["listeners"] == 1 and stats["clients"] == 1
        assert stats["bytes"] == {"in": 5, "out": 6}
        assert stats["packets"] == {"in": 1, "out": 1}
        assert stats["handshakes"]["done"] >= 1 and stats["connections_opened"] == 1
        assert stats["memory"]["rss_bytes"] > 1 << 20
    bad = socket.create_connection(("127.0.0.1", lst["port"]))
    bad.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not TLS
    bad.settimeout(5)
    try:
        bad.recv(100)
    except OSError:
        pass
    bad.close()
    deadline = time.monotonic() + 5
    while client.ok({"op": "stats"})["handshakes"]["failed"].get("tls", 0) < 1:
        assert time.monotonic() < deadline, client.ok({"op": "stats"})
        time.sleep(0.05)


def test_metrics_endpoint_speaks_prometheus_to_a_real_http_client(pki):
    port = free_port()
    d = Daemon(["--stats-listen", f"127.0.0.1:{port}"])
    try:
        tls_listen(d.client, pki)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "# TYPE tlsport_connections gauge" in body
        assert 'tlsport_connections{state="open"} 0' in body
        assert "tlsport_listeners 1" in body
        assert "tlsport_resident_memory_bytes" in body
        if shutil.which("curl"):
            out = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/metrics"],
                                 capture_output=True, text=True, timeout=5).stdout
            assert "tlsport_handshakes_total" in out
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
            raise AssertionError("404 expected")
        except urllib.error.HTTPError as e:
            assert e.code == 404
    finally:
        d.stop()


def test_a_log_line_per_connection_tells_how_it_ended(pki):
    d = Daemon(["--log-level", "info"])
    try:
        c = d.client
        lst = c.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
        ref = c.send({"op": "accept", "id": lst["id"]})
        peer = socket.create_connection(("127.0.0.1", lst["port"]))
        sid = c.reply(ref)["id"]
        peer.sendall(b"abc")
        assert c.read_data(sid, 3) == b"abc"
        peer.close()
        c.closed_event(sid)
        tls = tls_listen(c, pki)
        ref = c.send({"op": "accept", "id": tls["id"]})
        _tls_roundtrip(tls["port"], pki.ca)
        tid = c.reply(ref)["id"]
        c.closed_event(tid)
        time.sleep(0.2)
        text = b"".join(d.stderr_lines).decode()
        opened = [l for l in text.splitlines() if f"socket {sid} opened" in l]
        closed = [l for l in text.splitlines() if f"socket {sid} closed" in l]
        assert opened and "peer 127.0.0.1:" in opened[0] and "tcp" in opened[0], text
        assert closed and "3 bytes in" in closed[0], text
        # A plain peer that hangs up sent no close_notify, and the log says so.
        assert "peer closed the connection" in closed[0] and "close_notify" not in closed[0]
        tls_closed = [l for l in text.splitlines() if f"socket {tid} closed" in l]
        assert tls_closed and "TLSv1.3" in tls_closed[0], text
    finally:
        d.stop()


def _subject_cn(cert):
    return dict(x[0] for x in cert["subject"])["commonName"]


def test_reload_and_sighup_renew_certificates_of_live_listeners(pki, tmp_path):
    """Swap the files, reload: new connections get the new certificate, a live
    connection goes on; a bad file refuses the reload and the old one stays."""
    cert, key = tmp_path / "served.pem", tmp_path / "served.key"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    d = Daemon()
    try:
        c = d.client
        lst = c.ok({"op": "listen", "host": "127.0.0.1", "port": 0,
                    "tls": {"certfile": str(cert), "keyfile": str(key)}})
        port = lst["port"]
        ref = c.send({"op": "accept", "id": lst["id"]})
        ctx = ssl.create_default_context(cafile=pki.ca)
        live = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                               server_hostname="localhost")
        sid = c.reply(ref)["id"]
        assert _subject_cn(live.getpeercert()) == "localhost"
        # Another certificate for localhost, from the same CA.
        subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(tmp_path / "new.csr"), "-subj", "/CN=renewed"],
                       check=True, capture_output=True)
        (tmp_path / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        subprocess.run(["openssl", "x509", "-req", "-in", str(tmp_path / "new.csr"), "-CA", pki.ca,
                        "-CAkey", str(pathlib.Path(pki.ca).with_suffix(".key")),
                        "-CAcreateserial", "-days", "2", "-out", str(cert),
                        "-extfile", str(tmp_path / "ext")], check=True, capture_output=True)
        assert _subject_cn(_tls_roundtrip(port, pki.ca)) == "localhost"  # not yet
        os.kill(d.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while _subject_cn(_tls_roundtrip(port, pki.ca)) != "renewed":
            assert time.monotonic() < deadline, "SIGHUP did not renew the certificate"
            time.sleep(0.05)
        live.sendall(b"still here")  # the live connection was not touched
        assert c.read_data(sid, 10) == b"still here"
        # A broken file: reload is refused, the renewed certificate stays.
        cert.write_text("not a certificate\n")
        r = c.error({"op": "reload"}, "bad_tls_config")
        assert "listener" in r["error"]["message"] and str(cert) in r["error"]["message"], r
        assert _subject_cn(_tls_roundtrip(port, pki.ca)) == "renewed"
        live.close()
    finally:
        d.stop()
