#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses into tests/fuzz/corpus/.

The seeds are real messages: the commands of docs/protocol.md as JSON text
and as Erlang terms (term_to_binary, run by `erl`), frames and lines as a
client sends them, BER samples, SSLFlags strings. The files are committed;
run this again (from anywhere) only to change them.
"""
import base64
import json
import os
import shutil
import struct
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# The commands of docs/protocol.md §2.1, plus a few that are refused.
COMMANDS = {
    "hello": {"op": "hello", "ref": 1, "name": "worker-1"},
    "hello_bare": {"op": "hello", "ref": 1},
    "listen": {"op": "listen", "ref": 2, "host": "127.0.0.1", "port": 0, "mode": "packet:2",
               "backlog": 128, "tls": {"certfile": "c.pem", "keyfile": "k.pem"}},
    "listen_plain_line": {"op": "listen", "ref": 1, "host": "::1", "port": 0, "mode": "line",
                          "tls": False, "active": "once", "handshake_timeout_ms": 1000,
                          "packet_size": 65536},
    "accept": {"op": "accept", "ref": 3, "id": 1},
    "accept_flags": {"op": "accept", "ref": 4, "id": 1, "active": 5,
                     "tls": {"flags": "-cert c.pem -cert k.pem -verify 1"}},
    "cancel": {"op": "cancel", "ref": 9, "target": 3},
    "connect": {"op": "connect", "ref": 4, "host": "localhost", "port": 443, "mode": "raw",
                "tls": {"verify": 0}, "timeout_ms": 5000},
    "connect_tls": {"op": "connect", "ref": "c1", "host": "example.com", "port": 443,
                    "mode": "asn1", "packet_size": 1024, "active": False,
                    "tls": {"cacertfile": "ca.pem", "cacertdir": "/etc/ssl/certs",
                            "verify": 2, "depth": 4, "ciphers": "HIGH",
                            "ciphersuites": "TLS_AES_128_GCM_SHA256",
                            "min_version": "tlsv1.2", "max_version": "tlsv1.3",
                            "server_name": "", "verify_hostname": False,
                            "logfile": "conn.log", "password": "secret"}},
    "deliver": {"op": "deliver", "id": 1, "data": "aGVsbG8="},
    "deliver_text": {"op": "deliver", "id": 1, "ref": 5, "text": "GET / HTTP/1.0\r\n\r\n"},
    "close": {"op": "close", "ref": 5, "id": 1},
    "controlling_process": {"op": "controlling_process", "ref": 6, "id": 1, "to": "worker-2"},
    "controlling_process_n": {"op": "controlling_process", "ref": 6, "id": 1, "to": 7},
    "setopts": {"op": "setopts", "ref": 7, "id": 1, "active": True, "packet_size": 4096},
    "setopts_once": {"op": "setopts", "ref": 7, "id": 1, "active": "once"},
    "recv": {"op": "recv", "ref": 8, "id": 1, "timeout_ms": 5000},
    "peername": {"op": "peername", "ref": 7, "id": 1},
    "sockname": {"op": "sockname", "ref": 7, "id": 1},
    "info": {"op": "info", "ref": 9, "id": 1},
    "resolve": {"op": "resolve", "ref": 8},
    "resolve_address": {"op": "resolve", "ref": 8, "address": "127.0.0.1"},
    "stop": {"op": "stop", "ref": 10},
    "hello_grace": {"op": "hello", "ref": 1, "name": "worker-1", "grace_ms": 5000},
    "connect_timeouts": {"op": "connect", "ref": 4, "host": "::1", "port": 8443,
                         "handshake_timeout_ms": 2000, "idle_timeout_ms": 60000,
                         "close_timeout_ms": 500, "tls": "ctx-a"},
    "listen_sni": {"op": "listen", "ref": 2, "host": "0.0.0.0", "port": 0,
                   "tls": {"cert": "-----BEGIN CERTIFICATE-----\n", "key": "k",
                           "sni": [{"names": ["a.example", "*.b.example"], "certfile": "a.pem",
                                    "keyfile": "a.key", "password": "p"}],
                           "alpn": ["h2", "http/1.1"], "ticket_keys": ["t1.key", "t2.key"],
                           "ocsp_response_file": "ocsp.der", "dhparamfile": "dh.pem",
                           "crlfile": "crl.pem", "password_file": "pass.txt",
                           "session_reuse": False, "ask_password": True,
                           "verify_callback": True, "callback_timeout_ms": 3000,
                           "ocsp_status_request": True, "keylog": "keys.log"}},
    "tls_context": {"op": "tls_context", "ref": 11, "name": "ctx-a",
                    "tls": {"cacert": "-----BEGIN CERTIFICATE-----\n", "verify": 2,
                            "alpn": ["h2"]}},
    "starttls": {"op": "starttls", "ref": 12, "id": 1, "side": "client",
                 "tls": {"verify": 0}, "timeout_ms": 3000},
    "starttls_server": {"op": "starttls", "ref": 12, "id": 1, "side": "server", "tls": "ctx-a",
                        "idle_timeout_ms": 1000},
    "stoptls": {"op": "stoptls", "ref": 13, "id": 1, "timeout_ms": 1000},
    "inject_ca": {"op": "inject_ca", "ref": 14, "id": 1, "cacertfile": "ca.pem"},
    "ciphers": {"op": "ciphers", "ref": 15, "id": 1},
    "answer_password": {"op": "answer", "ref": 16, "request": 1, "password": "secret"},
    "answer_accept": {"op": "answer", "ref": 16, "request": 2, "accept": True},
    "stats": {"op": "stats", "ref": 17},
    "reload": {"op": "reload", "ref": 18},
    "bad_unknown_field": {"op": "connect", "ref": 1, "host": "h", "port": 1,
                          "tls": {"cafile": "x"}},
    "bad_sslv3": {"op": "connect", "ref": 1, "host": "h", "port": 1,
                  "tls": {"min_version": "sslv3"}},
}


def erl_term(v, key=None):
    """Erlang source for the term a client library sends for a JSON value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "undefined"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        raw = base64.b64decode(v) if key == "data" else v.encode()
        return "<<" + ",".join(str(b) for b in raw) + ">>"
    if isinstance(v, list):
        return "[" + ",".join(erl_term(x) for x in v) + "]"
    return "#{" + ",".join("'%s' => %s" % (k, erl_term(x, k)) for k, x in v.items()) + "}"


def term_to_binary(terms):
    """{name: Erlang source} -> {name: external term}, through erl."""
    with tempfile.TemporaryDirectory() as tmp:
        lines = []
        for name, src in terms.items():
            opts = "[{minor_version,2}]" if name.endswith("_utf8") else "[]"
            path = os.path.join(tmp, name)
            lines.append('ok = file:write_file("%s", term_to_binary(%s, %s))' % (path, src, opts))
        script = ", ".join(lines) + ", halt()."
        subprocess.run(["erl", "-noshell", "-eval", script], check=True)
        return {name: open(os.path.join(tmp, name), "rb").read() for name in terms}


def frame(body, n):
    return len(body).to_bytes(n, "big") + body


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def der_certificate():
    with tempfile.TemporaryDirectory() as tmp:
        key, crt = os.path.join(tmp, "k.pem"), os.path.join(tmp, "c.der")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=seed", "-days", "1",
                        "-keyout", key, "-outform", "DER", "-out", crt],
                       check=True, capture_output=True)
        return open(crt, "rb").read()


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    etf_terms = {name: erl_term(c) for name, c in COMMANDS.items()}
    etf_terms.update({"hello_utf8": erl_term(COMMANDS["hello"]),
                      "connect_tls_utf8": erl_term(COMMANDS["connect_tls"])})
    extra = {
        "tuple_list_string": '{ok, [1, 2, 300, -5, 70000, -70000], "text", []}',
        "bigs": "[18446744073709551615, -9223372036854775808, 4294967296, 1 bsl 70]",
        "floats": "[1.5, -0.0, 1.0e300, 2.2250738585072014e-308]",
        "map_keys": '#{<<"bin">> => 1, "str" => 2, atom => nil, null => [a, b]}',
        "nested": "#{a => #{b => #{c => [#{d => {e, f}}]}}}",
        "latin1_atom_utf8": "['\\x{e9}t\\x{e9}', <<255,0>>]",
    }
    etf_terms.update(extra)
    etf = term_to_binary(etf_terms)
    # FLOAT_EXT (old text floats), as minor_version 0 writes them.
    etf["floats_v0"] = term_to_binary_v0("[1.5, -2.25e-10]")

    # command: JSON text and ETF terms of every command.
    for name, c in COMMANDS.items():
        write("command", name + ".json", json.dumps(c, separators=(",", ":")))
        write("command", name + ".etf", etf[name])
    write("command", "hello_utf8.etf", etf["hello_utf8"])
    write("command", "connect_tls_utf8.etf", etf["connect_tls_utf8"])

    # etf: commands and other terms.
    for name, data in etf.items():
        write("etf", name + ".etf", data)
    # The 27 bytes of docs/protocol.md §6.3.
    doc_etf = bytes.fromhex("8374000000026400026f7064000568656c6c6f640003726566 6101".replace(" ", ""))
    write("etf", "doc_hello.etf", doc_etf)

    # control_decoder: [encoding][cap index][split hi][split lo] stream.
    # encoding: 0 binary/1, 1 binary/2, 2 binary/4, 3 lines (+4: stop after each;
    # +128 with 3: asn1).
    # caps: 1 2 5 6 16 64 255 256 300 4096 65535 1M (indices 0..11).
    j = lambda name: json.dumps(COMMANDS[name], separators=(",", ":")).encode()
    control = lambda body: b"\x00" + body
    data_frame = b"\x01" + struct.pack(">I", 5) + b"hi"
    for n, enc in ((4, 2), (2, 1), (1, 0)):
        stream = b"".join(frame(b, n) for b in (
            control(j("hello")), data_frame, control(etf["accept"]), control(j("deliver")),
            control(etf["deliver_text"]), b"", b"\x07junk", control(b"[1]")))
        write("control_decoder", "binary%d" % n, bytes([enc, 11, 0, 9]) + stream)
        write("control_decoder", "binary%d_stops" % n, bytes([enc + 4, 9, 0, 40]) + stream)
    write("control_decoder", "doc_binary4",
          bytes([2, 9, 0, 3]) + bytes.fromhex("00000017007b226f70223a2268656c6c6f222c22726566223a317d"
                                              "000000070100000005" "6869"))
    write("control_decoder", "doc_etf4", bytes([2, 9, 0, 30]) + frame(control(doc_etf), 4))
    lines = b"\n".join(j(name) for name in ("hello", "connect", "deliver", "deliver_text",
                                             "setopts")) + b"\r\n\n  \n{\"op\":1\nnot json\n"
    write("control_decoder", "lines", bytes([3, 11, 0, 50]) + lines)
    write("control_decoder", "lines_small_cap", bytes([7, 5, 0, 5]) + lines)
    write("control_decoder", "over_cap", bytes([2, 4, 0, 2]) + frame(control(j("hello")), 4))
    # asn1 (encoding 3 with the top bit: 131, 135 with stops): each body in an
    # OCTET STRING, definite, long-form and indefinite (segments); one SEQUENCE.
    def octets(body):
        n = len(body)
        head = bytes([n]) if n < 128 else b"\x82" + struct.pack(">H", n)
        return b"\x04" + head + body
    hello = control(j("hello"))
    asn1 = b"".join((octets(hello), octets(data_frame), octets(control(etf["accept"])),
                     octets(control(j("listen_sni"))),
                     b"\x24\x80" + octets(hello[:7]) + octets(hello[7:]) + b"\x00\x00",
                     octets(b""), octets(b"\x07junk"), bytes.fromhex("3003020105")))
    write("control_decoder", "asn1", bytes([131, 11, 0, 9]) + asn1)
    write("control_decoder", "asn1_stops", bytes([135, 9, 0, 40]) + asn1)

    # deframer: [mode+flow][cap index][split hi][split lo][repeat] stream.
    # mode: 0 raw, 1 packet:1, 2 packet:2, 3 packet:4, 4 asn1, 5 line; +6 per flow style.
    # caps: 1 2 3 4 5 7 8 16 100 255 256 1000 4096 65535 65536 70000 99999 600000 1M 64M 1G.
    payloads = [b"hello", b"", b"world!", bytes(range(40))]
    for n, mode in ((1, 1), (2, 2), (4, 3)):
        stream = b"".join(frame(p, n) for p in payloads)
        write("deframer", "packet%d" % n, bytes([mode, 12, 0, 7, 0]) + stream)
        write("deframer", "packet%d_stops" % n, bytes([mode + 6, 7, 0, 3, 1]) + stream)
        write("deframer", "packet%d_over_cap" % n, bytes([mode + 12, 5, 0, 1, 0]) + stream)
    # A long packet arriving in many reads, under a large cap.
    write("deframer", "packet4_long", bytes([3, 17, 0, 4, 250]) +
          struct.pack(">I", 590000) + bytes(range(256)) * 9)
    write("deframer", "packet2_long", bytes([2, 15, 0, 2, 40]) + b"\xff\xf0" + b"x" * 2000)
    cert = der_certificate()
    ber = [
        bytes.fromhex("3007020105040268 69".replace(" ", "")),   # SEQUENCE {INTEGER 5, "hi"}
        bytes.fromhex("30800201050000"),                          # indefinite length
        bytes.fromhex("3080308004016100000000"),                  # nested indefinite
        bytes.fromhex("1f810000"),                                # high tag number 128
        bytes.fromhex("0482010000") + bytes(256)[:256],           # long-form length
        bytes.fromhex("6380040161040162" "0000"),                 # constructed string
        bytes.fromhex("0500"),                                    # NULL
    ]
    write("deframer", "asn1", bytes([4, 12, 0, 5, 0]) + b"".join(ber))
    write("deframer", "asn1_stops", bytes([10, 12, 0, 20, 0]) + b"".join(ber))
    write("deframer", "asn1_certificate", bytes([4, 12, 1, 0, 0]) + cert)
    write("deframer", "asn1_small_cap", bytes([16, 7, 0, 3, 0]) + b"".join(ber))
    write("deframer", "asn1_bad", bytes([4, 12, 0, 1, 0]) + bytes.fromhex("3080 0001".replace(" ", "")))
    write("deframer", "asn1_deep", bytes([4, 12, 0, 30, 0]) + bytes.fromhex("3080") * 70)
    text = b"hello\nworld\r\n\n" + b"a longer line of text than the cap\n" + b"partial"
    write("deframer", "line", bytes([5, 12, 0, 8, 0]) + text)
    write("deframer", "line_stops", bytes([11, 7, 0, 8, 2]) + text)
    write("deframer", "line_small_cap", bytes([17, 7, 0, 3, 0]) + text)
    write("deframer", "raw", bytes([0, 3, 0, 4, 3]) + b"raw bytes as they come")

    # base64
    for i, s in enumerate(["aGVsbG8=", "SFRUUC8xLjAgMjAwIG9rDQo=", "", "QQ", "QUI=", "QUJD",
                           "////+A==", "a", "QQ==QQ==", "A===", "aGk\n"]):
        write("base64", "b%02d" % i, s)

    # ssl_flags
    for i, s in enumerate(["-cert c.pem", "-cert c.pem -cert k.pem -verify 1",
                           "-cert c.pem -key k.pem -cacert ca.pem -verify 2 -cipher ALL:!aNULL "
                           "-log /tmp/socket.log", "  -verify\t0  ", "-verify 3", "-bogus x",
                           "-cert", ""]):
        write("ssl_flags", "f%02d" % i, s)


def term_to_binary_v0(src):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t")
        script = 'ok = file:write_file("%s", term_to_binary(%s, [{minor_version,0}])), halt().' % (
            path, src)
        subprocess.run(["erl", "-noshell", "-eval", script], check=True)
        return open(path, "rb").read()


if __name__ == "__main__":
    main()
