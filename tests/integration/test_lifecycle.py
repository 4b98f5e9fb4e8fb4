"""Command line, control channels and the daemon's life."""

import json
import os
import socket
import subprocess
import time

from conftest import client_tls, is_listening, tls_listen, Daemon, FrameReader, control, daemon_path, decode_body, unix_client, wait_for_path


def test_help_and_version():
    out = subprocess.run([daemon_path(), "--help"], capture_output=True, text=True, timeout=5)
    assert out.returncode == 0 and "--unix" in out.stdout and "--packet" in out.stdout
    out = subprocess.run([daemon_path(), "--version"], capture_output=True, text=True, timeout=5)
    assert out.returncode == 0 and out.stdout.startswith("tlsportd ")


def test_bad_flags_are_refused_clearly():
    for args, needle in ((["--bogus"], "unknown option --bogus"),
                         (["--packet", "3"], "--packet: must be 1, 2 or 4"),
                         (["--packet"], "needs a value"),
                         (["--control", "xml"], "--control: must be binary, lines (raw)")):
        out = subprocess.run([daemon_path(), *args], capture_output=True, text=True, timeout=5)
        assert out.returncode != 0, args
        assert needle in out.stderr, (args, out.stderr)


def test_hello_binary_json(client):
    r = client.ok({"op": "hello", "name": "w1"})
    assert r["protocol"] == 1 and r["name"] == "w1" and isinstance(r["client"], int)
    assert "binary" in r["capabilities"]


def test_hello_lines():
    d = Daemon(lines=True)
    try:
        r = d.client.ok({"op": "hello", "ref": "a"})
        assert r["ref"] == "a" and r["version"]
    finally:
        d.stop()


def test_hello_worked_example_bytes():
    """docs/protocol.md §6.2: the exact bytes of hello, and of a reply frame."""
    d = Daemon()
    try:
        d.proc.stdin.write(bytes.fromhex("00000017 00") + b'{"op":"hello","ref":1}')
        d.proc.stdin.flush()
        assert d.client.reply(1)["ok"] is True
        assert d.client.raw_log[0][4] == 0  # a CONTROL frame
    finally:
        d.stop()


def test_hello_etf_gets_etf_reply():
    """An Erlang client sends term_to_binary(#{op => hello, ref => 1}); replies come back in ETF."""
    proc = subprocess.Popen([daemon_path()], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        term = bytes.fromhex("8374000000026400026f7064000568656c6c6f6400037265666101")
        proc.stdin.write((len(term) + 1).to_bytes(4, "big") + b"\x00" + term)
        proc.stdin.flush()
        header = proc.stdout.read(4)
        body = proc.stdout.read(int.from_bytes(header, "big"))
        assert body[:3] == bytes([0, 131, 116])  # CONTROL, ETF version, map
        assert b"version" in body and b"capabilities" in body
    finally:
        proc.stdin.close()
        proc.wait(timeout=3)


def test_packet_1_and_2_headers():
    for header in (1, 2):
        d = Daemon(header=header)
        try:
            r = d.client.ok({"op": "hello"})
            assert r["protocol"] == 1
        finally:
            d.stop()


def test_stdin_eof_ends_daemon_within_a_second(pki):
    d = Daemon()
    d.client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    start = time.monotonic()
    d.proc.stdin.close()
    d.proc.wait(timeout=3)
    assert time.monotonic() - start < 1.0
    assert d.proc.returncode == 0


def test_commands_waiting_on_the_network_are_answered_when_input_ends():
    """`printf '<connect>\n<resolve>\n' | tlsportd --control lines`: each command
    gets its reply before the daemon exits, even though the network has not
    answered yet (here a server that never speaks)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    commands = [{"op": "connect", "ref": 1, "host": "127.0.0.1", "port": port,
                 "tls": {"verify": 0}},
                {"op": "resolve", "ref": 2, "address": "127.0.0.1"}]
    try:
        listen = json.dumps({"op": "listen", "ref": 3, "host": "127.0.0.1", "port": 0,
                             "tls": False})
        text = "".join(json.dumps(c) + "\n" for c in commands) + listen + "\n"
        out = subprocess.run([daemon_path(), "--control", "lines"], input=text.encode(),
                             capture_output=True, timeout=5)
    finally:
        silent.close()
    assert out.returncode == 0, out.stderr
    replies = {}
    for line in out.stdout.decode().splitlines():
        message = json.loads(line)
        assert "ref" in message, message
        assert message["ref"] not in replies, ("two replies", message)
        replies[message["ref"]] = message
    assert set(replies) == {1, 2, 3}, out.stdout
    # The TLS handshake could not have finished: the server says nothing.
    stopping = {"kind": "closed", "message": "the daemon is stopping"}
    assert replies[1]["ok"] is False and replies[1]["error"] == stopping
    # The lookup of 127.0.0.1 may or may not have come back first (with a
    # name, or none where this host has no name for it).
    assert (replies[2]["ok"] is True or replies[2]["error"] == stopping
            or replies[2]["error"]["kind"] == "enoent"), replies[2]
    assert replies[3]["ok"] is True


def test_a_waiting_recv_is_answered_when_the_daemon_stops(client, daemon, pki):
    lst = tls_listen(client, pki)
    aref = client.send({"op": "accept", "id": lst["id"], "active": False})
    client.ok({"op": "connect", "host": "127.0.0.1", "port": lst["port"],
               "tls": client_tls(pki)})
    accepted = client.reply(aref)
    rref = client.send({"op": "recv", "id": accepted["id"], "timeout_ms": 60000})
    client.ok({"op": "stop"})
    assert client.reply(rref)["error"] == {"kind": "closed", "message": "the socket closed"}
    daemon.proc.wait(timeout=3)


def test_stop_closes_everything_and_exits(client, daemon):
    r = client.ok({"op": "listen", "host": "127.0.0.1", "port": 0, "tls": False})
    client.ok({"op": "stop"})
    daemon.proc.wait(timeout=3)
    assert not is_listening(r["port"])  # its listener is closed too


def test_nouse_stdio_uses_fds_3_and_4():
    r_cmd, w_cmd = os.pipe()
    r_out, w_out = os.pipe()
    # In the child: fd 3 = command pipe (read end), fd 4 = reply pipe (write end).
    proc = subprocess.Popen(
        [daemon_path(), "--nouse-stdio"],
        pass_fds=(3, 4), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        preexec_fn=lambda: (os.dup2(r_cmd, 3), os.dup2(w_out, 4)))
    os.close(r_cmd)
    os.close(w_out)
    try:
        os.write(w_cmd, control({"op": "hello", "ref": 7}))
        reader = FrameReader()
        frames = []
        deadline = time.monotonic() + 5
        while not frames and time.monotonic() < deadline:
            frames = reader.feed(os.read(r_out, 65536))
        msg = decode_body(frames[0])
        assert msg["ref"] == 7 and msg["ok"] is True
        os.close(w_cmd)
        proc.wait(timeout=3)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(r_out)


def test_unix_socket_is_private_and_serves_both_encodings(unix_daemon):
    mode = os.stat(unix_daemon.path).st_mode & 0o777
    assert mode == 0o600
    binary = unix_client(unix_daemon.path)
    lines = unix_client(unix_daemon.path, lines=True)
    a = binary.ok({"op": "hello", "name": "bin"})
    b = lines.ok({"op": "hello", "name": "txt"})
    assert a["client"] != b["client"]
    lines.error({"op": "hello", "name": "bin"}, "eaddrinuse")


def test_unix_socket_refuses_other_users(unix_daemon):
    if os.getuid() != 0:
        import pytest
        pytest.skip("needs root to connect as another uid")
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(3)
            try:
                s.connect(unix_daemon.path)
            except PermissionError:
                os._exit(0)  # the 0600 mode already keeps it out
            s.sendall(b'{"op":"hello","ref":1}\n')
            data = s.recv(100)
            os._exit(0 if data == b"" else 1)
        except Exception:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_unix_socket_refuses_other_users_even_with_open_mode():
    """With the file mode opened up, the peer-uid check alone refuses."""
    if os.getuid() != 0:
        import pytest
        pytest.skip("needs root to connect as another uid")
    import tempfile
    public = tempfile.mkdtemp(prefix="tlsport-uid-")
    os.chmod(public, 0o777)
    path = os.path.join(public, "d.sock")
    d = Daemon(["--unix", path], stdio=False)
    try:
        wait_for_path(path)
        os.chmod(path, 0o777)
        pid = os.fork()
        if pid == 0:
            try:
                os.setuid(65534)
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(3)
                s.connect(path)
                s.sendall(b'{"op":"hello","ref":1}\n')
                data = s.recv(100)
                os._exit(0 if data == b"" else 1)
            except (ConnectionResetError, BrokenPipeError):
                os._exit(0)
            except Exception:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
    finally:
        d.proc.terminate()
        d.proc.wait(timeout=3)


def test_second_daemon_on_same_unix_socket_is_refused(unix_daemon):
    out = subprocess.run([daemon_path(), "--unix", unix_daemon.path], capture_output=True,
                         text=True, timeout=5)
    assert out.returncode != 0 and "another daemon" in out.stderr


def test_epipe_on_output_ends_daemon_like_eof():
    proc = subprocess.Popen([daemon_path()], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdout.close()  # nobody reads the daemon's output any more
    proc.stdin.write(control({"op": "hello", "ref": 1}))
    proc.stdin.flush()
    proc.wait(timeout=3)
    assert proc.returncode == 0
    proc.stdin.close()


def test_sighup_does_not_end_the_daemon(client, daemon):
    import signal
    assert client.ok({"op": "hello"})["ok"]  # up and running, signal handlers in place
    daemon.proc.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    assert client.ok({"op": "hello"})["ok"]
    assert daemon.proc.poll() is None


def _octets(body: bytes) -> bytes:
    """A BER OCTET STRING (definite length) around `body`."""
    n = len(body)
    if n < 0x80:
        return b"\x04" + bytes([n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x04" + bytes([0x80 | len(size)]) + size + body


def _read_octet_strings(stream, count):
    """Reads `count` primitive OCTET STRINGs from a binary stream."""
    out = []
    for _ in range(count):
        assert stream.read(1) == b"\x04"
        first = stream.read(1)[0]
        n = first if first < 0x80 else int.from_bytes(stream.read(first & 0x7F), "big")
        out.append(stream.read(n))
    return out


def test_control_channel_in_asn1_ber():
    """--control asn1: each message is one OCTET STRING (definite or
    indefinite, in segments) holding a binary frame body."""
    proc = subprocess.Popen([daemon_path(), "--control", "asn1"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        hello = b"\x00" + json.dumps({"op": "hello", "ref": 1}).encode()
        listen = b"\x00" + json.dumps({"op": "listen", "ref": 2, "host": "127.0.0.1", "port": 0,
                                       "tls": False}).encode()
        # hello in definite form, listen as an indefinite constructed string of two segments.
        proc.stdin.write(_octets(hello) + b"\x24\x80" + _octets(listen[:7]) + _octets(listen[7:])
                         + b"\x00\x00")
        proc.stdin.flush()
        replies = [json.loads(b[1:]) for b in _read_octet_strings(proc.stdout, 2)]
        assert replies[0]["ok"] and replies[0]["ref"] == 1
        lst = replies[1]
        accept = b"\x00" + json.dumps({"op": "accept", "ref": 3, "id": lst["id"]}).encode()
        proc.stdin.write(_octets(accept))
        proc.stdin.flush()
        peer = socket.create_connection(("127.0.0.1", lst["port"]))
        sid = json.loads(_read_octet_strings(proc.stdout, 1)[0][1:])["id"]
        peer.sendall(b"over tcp")
        data = _read_octet_strings(proc.stdout, 1)[0]
        assert data[0] == 1 and int.from_bytes(data[1:5], "big") == sid and data[5:] == b"over tcp"
        proc.stdin.write(_octets(b"\x01" + sid.to_bytes(4, "big") + b"back"))  # deliver
        proc.stdin.flush()
        peer.settimeout(5)
        assert peer.recv(10) == b"back"
        # A deliver in segments: the bytes sent are the segments joined.
        frame = b"\x01" + sid.to_bytes(4, "big") + b"joined from three segments"
        proc.stdin.write(b"\x24\x80" + _octets(frame[:3]) + _octets(frame[3:12])
                         + _octets(frame[12:]) + b"\x00\x00")
        proc.stdin.flush()
        got = b""
        while len(got) < len(frame) - 5:
            chunk = peer.recv(100)
            assert chunk, got
            got += chunk
        assert got == frame[5:]
        peer.close()
    finally:
        proc.stdin.close()
        proc.wait(5)


def test_control_framings_by_their_design_card_names():
    """binary_packet:2 is the binary encoding with 2-byte headers; raw is lines."""
    d = Daemon(["--control", "binary_packet:2"], header=2)
    try:
        assert d.client.ok({"op": "hello"})["protocol"] == 1
    finally:
        d.stop()
    out = subprocess.run([daemon_path(), "--control", "raw"], input=b'{"op":"hello","ref":5}\n',
                         capture_output=True, timeout=5).stdout
    assert json.loads(out.splitlines()[0])["ref"] == 5
