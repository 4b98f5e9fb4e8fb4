"""Argument checking and command building shared by the sync and asyncio APIs.

Everything here is pure: it raises :class:`TypeError` / :class:`ValueError`
for bad arguments before anything is sent, and returns command dicts.
"""

from __future__ import annotations

import base64
import math
import os
import signal
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ._locate import find_daemon
from .codec import DEFAULT_MAX_MESSAGE, Reply
from .errors import Timeout

__all__ = [
    "Active",
    "TlsOptions",
    "TLS_FIELDS",
    "Mode",
    "normalize_mode",
    "deliver_limit",
    "check_tls",
    "check_host",
    "check_port",
    "timeout_ms",
    "check_timeout",
    "check_active",
    "check_packet_size",
    "check_target",
    "check_data",
    "check_name",
    "peer_tuple",
    "check_window",
    "check_client",
    "check_grace",
    "listen_command",
    "connect_command",
    "setopts_command",
    "recv_command",
    "reply_timeout",
    "check_callback",
    "resolve_command",
    "accept_command",
    "starttls_command",
    "stoptls_command",
    "inject_ca_command",
    "tls_context_command",
    "answer_value",
    "socket_timeouts",
    "check_context_name",
    "deadline",
    "remaining",
    "spawn_argv",
    "check_path",
    "UNSET",
    "reply_body",
    "decode_data",
    "exit_description",
]

UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()
"""An argument that was not given (where ``None`` means something)."""

Active = Union[bool, str, int]
"""``True``, ``False``, ``"once"`` or an integer N >= 1."""

TlsOptions = Union[Mapping[str, Any], bool, None]
"""A dict of TLS options (protocol §4), ``False`` for plain TCP."""

Mode = Union[str, Tuple[str, int]]
"""A framing mode: ``"raw"``, ``"packet:2"``, ``("packet", 2)``, ``"asn1"``, ``"line"`` ..."""

MAX_PACKET_SIZE = 1 << 30
_ALIASES = {"onebyte": "packet:1", "twobytes": "packet:2", "fourbytes": "packet:4", "packet:0": "raw"}
_SIMPLE_MODES = {"raw", "asn1", "line"}

# The fields of the protocol's ``tls`` object (docs/protocol.md §4) -> accepted
# Python types.  The daemon rejects a field it does not define, so no other
# name is ever sent.  ``callable`` marks the options a Python callable may
# stand for (the session turns it into ``ask_password``/``verify_callback``
# and answers the daemon's questions with it); ``list`` ones are checked item
# by item (:data:`_LIST_ITEMS`).
_PATH = (str, os.PathLike)
TLS_FIELDS: Dict[str, Tuple[Any, ...]] = {
    "certfile": _PATH,
    "keyfile": _PATH,
    "cert": (str, bytes),
    "key": (str, bytes),
    "password": (str, callable),
    "password_file": _PATH,
    "ask_password": (bool,),
    "cacertfile": _PATH,
    "cacertdir": _PATH,
    "cacert": (str, bytes),
    "crlfile": _PATH,
    "verify": (int,),
    "depth": (int,),
    "ciphers": (str,),
    "ciphersuites": (str,),
    "min_version": (str,),
    "max_version": (str,),
    "server_name": (str,),
    "verify_hostname": (str, bool),  # a name, or False: no host-name check
    "verify_callback": (bool, callable),
    "callback_timeout_ms": (int,),
    "alpn": (list,),
    "sni": (list,),
    "session_reuse": (bool,),
    "ticket_keys": (list,),
    "ocsp_response_file": _PATH,
    "ocsp_status_request": (bool,),
    "dhparamfile": _PATH,
    "keylog": _PATH,
    "flags": (str,),
    "logfile": _PATH,
}

_SNI_FIELDS: Dict[str, Tuple[Any, ...]] = {
    "names": (list,),
    "certfile": _PATH,
    "keyfile": _PATH,
    "cert": (str, bytes),
    "key": (str, bytes),
    "password": (str,),
}

MAX_CONTEXT_NAME = 255
MAX_CALLBACK_TIMEOUT_MS = 600_000
MAX_HANDSHAKE_MS = 3_600_000  # also close_timeout_ms and starttls/stoptls timeout_ms
MAX_IDLE_MS = 24 * 3600 * 1000


def normalize_mode(mode: Mode) -> str:
    """Return the canonical protocol name of a framing mode.

    Accepts ``"raw"``, ``"packet:N"`` / ``"binary_packet:N"`` (N in 0, 1, 2, 4),
    ``("packet", N)`` / ``("binary_packet", N)``, the aliases ``"onebyte"``,
    ``"twobytes"``, ``"fourbytes"``, and ``"asn1"``, ``"line"``.
    """
    if isinstance(mode, tuple):
        if len(mode) != 2 or not isinstance(mode[0], str) or type(mode[1]) is not int:
            raise ValueError(f"mode tuple must be (name, N), not {mode!r}")
        mode = f"{mode[0]}:{mode[1]}"
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a string such as 'raw' or 'packet:2', not {type(mode).__name__}")
    m = mode.strip().lower()
    if m.startswith("{") and m.endswith("}") and "," in m:  # Erlang style {packet,2}
        name, _, n = m[1:-1].partition(",")
        m = f"{name.strip()}:{n.strip()}"
    m = _ALIASES.get(m, m)
    if m in _SIMPLE_MODES:
        return m
    name, sep, n = m.partition(":")
    if sep and name in ("packet", "binary_packet") and n in ("0", "1", "2", "4"):
        return "raw" if m == "packet:0" else m
    raise ValueError(
        f"unknown mode {mode!r}: use 'raw', 'packet:1|2|4', 'binary_packet:1|2|4', "
        "'onebyte', 'twobytes', 'fourbytes', 'asn1' or 'line'"
    )


def deliver_limit(mode: Optional[str], packet_size: Optional[int] = None) -> Optional[int]:
    """The largest payload one ``send`` may carry in ``mode`` (``None``: raw, any size,
    split by the library).  An unknown mode (``None``: the sockets of a listener
    handed over or given back, whose mode the daemon does not say) is never
    split, as it may be a packet mode; the daemon refuses what is too long."""
    cap = DEFAULT_MAX_MESSAGE - 5 - 4
    if mode in ("raw", "binary_packet:0"):
        return None
    name, _, n = (mode or "").partition(":")
    if name in ("packet", "binary_packet"):
        header = int(n)
        cap = min(cap, (1 << (8 * header)) - 1)
    if packet_size is not None:
        cap = min(cap, packet_size)
    return cap


def check_tls(tls: TlsOptions, *, default: Optional[Dict[str, Any]]) -> Union[Dict[str, Any], bool, str, None]:
    """Validate ``tls`` and return what to put in the command's ``tls`` field.

    ``False`` means plain TCP; ``None`` means ``default`` (``None``: omit the field);
    ``True`` means ``{}`` (the daemon's secure defaults); a string names a
    context made with ``tls_context``.  ``password`` and ``verify_callback``
    may be callables: they stay in the dict for the session to take out.
    """
    if tls is None:
        return None if default is None else dict(default)
    if tls is False:
        return False
    if tls is True:
        return {}
    if isinstance(tls, str):
        return check_context_name(tls)
    if not isinstance(tls, Mapping):
        raise TypeError(f"tls must be a dict of TLS options, a tls_context name or False, not {type(tls).__name__}")
    out = _check_options(tls, TLS_FIELDS, "tls option")
    if "sni" in out:
        out["sni"] = [_check_options(_mapping(e, "tls option 'sni' entries"), _SNI_FIELDS, "sni option") for e in out["sni"]]
        for entry in out["sni"]:
            if not entry.get("names") or not ("certfile" in entry or "cert" in entry):
                raise ValueError("each tls 'sni' entry needs names and certfile (or cert)")
    for key, limit in (("alpn", 255), ("ticket_keys", None)):
        for item in out.get(key, ()):
            if not isinstance(item, (str, os.PathLike)) or (key == "alpn" and not isinstance(item, str)):
                raise TypeError(f"tls option {key!r} must be a list of {'strings' if key == 'alpn' else 'paths'}")
        if key in out:
            out[key] = [os.fspath(i) for i in out[key]]
            if limit is not None and not all(0 < len(i.encode("utf-8")) <= limit for i in out[key]):
                raise ValueError(f"tls option {key!r} items must be 1 to {limit} bytes")
    if out.get("verify") not in (None, 0, 1, 2):
        raise ValueError(f"tls option 'verify' must be 0, 1 or 2, not {out['verify']!r}")
    if out.get("verify_hostname") is True:
        raise ValueError("tls option 'verify_hostname' must be a host name or False, not True")
    if out.get("depth", 0) < 0:
        raise ValueError("tls option 'depth' must be >= 0")
    if not 1 <= out.get("callback_timeout_ms", 1) <= MAX_CALLBACK_TIMEOUT_MS:
        raise ValueError(f"tls option 'callback_timeout_ms' must be in 1..{MAX_CALLBACK_TIMEOUT_MS}")
    if callable(out.get("password")) and out.get("ask_password") is False:
        raise ValueError("a password callable asks for the passphrase: ask_password cannot be False")
    return out


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be dicts, not {type(value).__name__}")
    return value


def _check_options(options: Mapping[str, Any], fields: Dict[str, Tuple[Any, ...]], what: str) -> Dict[str, Any]:
    """Names known, values of the right type (paths as strings, PEM bytes as text)."""
    out: Dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} names must be strings, not {key!r}")
        types = fields.get(key)
        if types is None:
            raise ValueError(f"unknown {what} {key!r}; known: {', '.join(sorted(fields))}")
        if value is None:
            continue
        if callable in types and callable(value):
            out[key] = value
            continue
        plain = tuple(t for t in types if t is not callable)
        if isinstance(value, bool) and bool not in plain or not isinstance(value, plain):
            raise TypeError(f"{what} {key!r} must be {_names(types)}, not {type(value).__name__}")
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, bytes):
            value = value.decode("ascii")
        out[key] = list(value) if isinstance(value, list) else value
    return out


def check_context_name(name: Any) -> str:
    """A ``tls_context`` name: 1 to 255 bytes."""
    if not isinstance(name, str):
        raise TypeError(f"a tls_context name must be a string, not {type(name).__name__}")
    if not 0 < len(name.encode("utf-8")) <= MAX_CONTEXT_NAME:
        raise ValueError(f"a tls_context name must be 1 to {MAX_CONTEXT_NAME} bytes")
    return name


def _names(types: Tuple[Any, ...]) -> str:
    names = {os.PathLike: "a path", callable: "a callable", bytes: "bytes (PEM)"}
    return " or ".join(names.get(t, getattr(t, "__name__", str(t))) for t in types)


def socket_timeouts(cmd: Dict[str, Any], handshake: Any, idle: Any, close: Any) -> Dict[str, Any]:
    """Add a socket's timeouts (seconds, ``None``: the daemon's default) to ``cmd``.

    Each is more than 0 and at most what the daemon takes (an hour; a day for
    ``idle_timeout``), or ``math.inf`` for that longest: 0 would mean "at once",
    not "never", so it is refused as the daemon refuses it.
    """
    for name, value, maximum in (
        ("handshake_timeout", handshake, MAX_HANDSHAKE_MS),
        ("idle_timeout", idle, MAX_IDLE_MS),
        ("close_timeout", close, MAX_HANDSHAKE_MS),
    ):
        seconds = check_timeout(value, name)
        if seconds is None:
            continue
        if seconds <= 0 or (seconds > maximum / 1000 and not math.isinf(seconds)):
            raise ValueError(f"{name} must be more than 0 and at most {maximum // 1000} s, not {value}")
        cmd[f"{name}_ms"] = max(1, timeout_ms(seconds, maximum) or 1)
    return cmd


def check_host(host: Any, what: str = "host") -> str:
    """A host must be a non-empty string (an address or a name)."""
    if not isinstance(host, str):
        raise TypeError(f"{what} must be a string, not {type(host).__name__}")
    if not host or "\x00" in host:
        raise ValueError(f"{what} must be a non-empty string")
    return host


def check_port(port: Any, *, allow_zero: bool) -> int:
    """A port must be an int in 1..65535 (0 too for listen)."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port must be in {low}..65535, not {port}")
    return port


def check_timeout(timeout: Any, what: str = "timeout") -> Optional[float]:
    """``None`` (wait forever) or a number of seconds >= 0."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, not {type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{what} must be >= 0, not {timeout}")
    return float(timeout)


def timeout_ms(timeout: Optional[float], maximum: int = 24 * 3600 * 1000) -> Optional[int]:
    """Seconds (already checked) to whole milliseconds for the protocol, capped."""
    if timeout is None:
        return None
    if math.isinf(timeout):
        return maximum
    return min(maximum, int(math.ceil(timeout * 1000)))


def check_active(active: Any) -> Active:
    """``True``, ``False``, ``"once"`` or an int N >= 1."""
    if isinstance(active, bool):
        return active
    if active == "once":
        return "once"
    if isinstance(active, int):
        if not 1 <= active <= 2**31 - 1:
            raise ValueError(f"active=N needs 1 <= N < 2**31, not {active}")
        return active
    raise ValueError(f"active must be True, False, 'once' or an int >= 1, not {active!r}")


def check_packet_size(packet_size: Any) -> Optional[int]:
    """``None`` or an int in 1..2**30."""
    if packet_size is None:
        return None
    if isinstance(packet_size, bool) or not isinstance(packet_size, int):
        raise TypeError(f"packet_size must be an int, not {type(packet_size).__name__}")
    if not 1 <= packet_size <= MAX_PACKET_SIZE:
        raise ValueError(f"packet_size must be in 1..{MAX_PACKET_SIZE}, not {packet_size}")
    return packet_size


def check_target(to: Any) -> Union[str, int]:
    """A client name (non-empty string) or number (int >= 1)."""
    if isinstance(to, bool):
        raise TypeError("to must be a client name (str) or number (int), not bool")
    if isinstance(to, int):
        if not 1 <= to < 2**32:
            raise ValueError(f"client number out of range: {to}")
        return to
    if isinstance(to, str):
        if not to:
            raise ValueError("client name must not be empty")
        return to
    raise TypeError(f"to must be a client name (str) or number (int), not {type(to).__name__}")


def check_name(name: Any) -> Optional[str]:
    """A client name: ``None`` or a non-empty string of at most 255 UTF-8 bytes."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, not {type(name).__name__}")
    if not name or len(name.encode("utf-8")) > 255:
        raise ValueError("name must be 1 to 255 bytes long")
    return name


def check_data(data: Any) -> bytes:
    """Data to send must be bytes-like (``str`` is refused: encode it yourself)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        raise TypeError("data must be bytes, not str (use data.encode())")
    raise TypeError(f"data must be bytes-like, not {type(data).__name__}")


def peer_tuple(obj: Any) -> Optional[Tuple[str, int]]:
    """``{"host": H, "port": P}`` -> ``(H, P)``; anything else -> ``None``."""
    if isinstance(obj, dict) and "host" in obj and "port" in obj:
        return (str(obj["host"]), int(obj["port"]))
    return None


def check_client(name: Any, window: Any, max_buffer: Any) -> Optional[str]:
    """The arguments every client constructor takes; returns the name."""
    name = check_name(name)
    check_window(window, max_buffer)
    return name


MAX_GRACE_MS = 24 * 3600 * 1000


def check_grace(grace: Any, name: Optional[str]) -> Optional[int]:
    """``hello``'s ``grace_ms`` for a grace period of ``grace`` seconds
    (``None``: none); it needs a name, by which a successor finds the sockets."""
    seconds = check_timeout(grace, "grace")
    if seconds is None:
        return None
    if name is None:
        raise ValueError("grace needs a name: a successor finds the sockets by it")
    return timeout_ms(seconds, MAX_GRACE_MS)


def check_window(window: Any, max_buffer: Any) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, not {window!r}")
    if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
        raise ValueError(f"max_buffer must be an int >= 1, not {max_buffer!r}")


def listen_command(
    port: Any,
    host: Any,
    tls: TlsOptions,
    mode: Mode,
    backlog: Any,
    packet_size: Any,
    timeouts: "Tuple[Any, Any, Any]",
    active: Any = True,
) -> Dict[str, Any]:
    """A ``listen`` command; ``active`` (the initial mode of accepted sockets) is kept
    by the session, which sends it with every accept.  ``timeouts`` are the
    accepted sockets' (handshake, idle, close) timeouts in seconds."""
    cmd: Dict[str, Any] = {
        "op": "listen",
        "host": check_host(host),
        "port": check_port(port, allow_zero=True),
        "mode": normalize_mode(mode),
    }
    tls_value = check_tls(tls, default=None)
    if tls_value is not None:  # None: every accept brings its own tls
        cmd["tls"] = tls_value
    if backlog is not None:
        if isinstance(backlog, bool) or not isinstance(backlog, int):
            raise TypeError("backlog must be an int")
        if not 1 <= backlog <= 65535:
            raise ValueError("backlog must be in 1..65535")
        cmd["backlog"] = backlog
    return _socket_options(cmd, packet_size, timeouts, active)


def _socket_options(cmd: Dict[str, Any], packet_size: Any, timeouts: "Tuple[Any, Any, Any]", active: Any) -> Dict[str, Any]:
    """The options ``listen`` and ``connect`` share: packet size, timeouts, active mode."""
    ps = check_packet_size(packet_size)
    if ps is not None:
        cmd["packet_size"] = ps
    socket_timeouts(cmd, *timeouts)
    cmd["active"] = check_active(active)
    return cmd


def connect_command(
    host: Any,
    port: Any,
    tls: TlsOptions,
    mode: Mode,
    timeout: Any,
    packet_size: Any,
    active: Any = True,
    timeouts: "Tuple[Any, Any, Any]" = (None, None, None),
) -> Dict[str, Any]:
    """A ``connect`` command; ``active`` is the library's mode (the session turns
    ``True`` into its credit window); ``timeouts`` as for :func:`listen_command`."""
    cmd: Dict[str, Any] = {
        "op": "connect",
        "host": check_host(host),
        "port": check_port(port, allow_zero=False),
        "mode": normalize_mode(mode),
        "tls": check_tls(tls, default={}),
    }
    t = check_timeout(timeout)
    if t is not None:
        cmd["timeout_ms"] = max(1, timeout_ms(t) or 1)
    return _socket_options(cmd, packet_size, timeouts, active)


def setopts_command(sid: int, active: Any, packet_size: Any) -> Dict[str, Any]:
    """A ``setopts`` command with the library's ``active`` mode (``UNSET``: unchanged)."""
    cmd: Dict[str, Any] = {"op": "setopts", "id": sid}
    if active is not UNSET:
        cmd["active"] = check_active(active)
    ps = check_packet_size(packet_size)
    if ps is not None:
        cmd["packet_size"] = ps
    if len(cmd) == 2:
        raise ValueError("setopts needs active= and/or packet_size=")
    return cmd


def recv_command(sid: int, timeout: Optional[float]) -> Dict[str, Any]:
    """A ``recv`` (passive socket) that the daemon answers within ``timeout``."""
    cmd: Dict[str, Any] = {"op": "recv", "id": sid}
    ms = timeout_ms(timeout)
    if ms is not None:
        cmd["timeout_ms"] = ms
    return cmd


def reply_timeout(timeout: Optional[float]) -> Optional[float]:
    """How long to wait for a connect's reply: the daemon answers within its
    ``timeout_ms``; the margin covers the channel."""
    return None if timeout is None else timeout + 10.0


def check_callback(callback: Any) -> Any:
    """``None`` or something callable."""
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable")
    return callback


def resolve_command(address: Any) -> Dict[str, Any]:
    cmd: Dict[str, Any] = {"op": "resolve"}
    if address is not None:
        cmd["address"] = check_host(address, "address")
    return cmd


def accept_command(
    lid: int, active: Any, tls: TlsOptions, timeouts: "Tuple[Any, Any, Any]" = (None, None, None)
) -> Dict[str, Any]:
    """An ``accept`` command; ``active`` is the library's mode for the new socket;
    ``timeouts`` override the listener's (see :func:`listen_command`)."""
    cmd: Dict[str, Any] = {"op": "accept", "id": lid, "active": check_active(active)}
    tls_value = check_tls(tls, default=None)
    if tls_value is not None:
        cmd["tls"] = tls_value
    return socket_timeouts(cmd, *timeouts)


def starttls_command(sid: int, side: Any, tls: TlsOptions, timeout: Any, idle_timeout: Any, close_timeout: Any) -> Dict[str, Any]:
    """A ``starttls``: ``side`` is the end of the handshake we are; ``timeout``
    bounds the handshake, ``idle_timeout``/``close_timeout`` apply afterwards."""
    if side not in ("client", "server"):
        raise ValueError(f"side must be 'client' or 'server', not {side!r}")
    cmd: Dict[str, Any] = {"op": "starttls", "id": sid, "side": side}
    tls_value = check_tls(tls, default=None)
    if tls_value is False:
        raise ValueError("starttls needs TLS settings (a dict or a tls_context name), not False")
    if tls_value is not None:
        cmd["tls"] = tls_value
    t = check_timeout(timeout)
    if t is not None:
        cmd["timeout_ms"] = max(1, timeout_ms(t, MAX_HANDSHAKE_MS) or 1)
    return socket_timeouts(cmd, None, idle_timeout, close_timeout)


def stoptls_command(sid: int, timeout: Any) -> Dict[str, Any]:
    """A ``stoptls``; ``timeout`` bounds the wait for the peer's close_notify."""
    cmd: Dict[str, Any] = {"op": "stoptls", "id": sid}
    t = check_timeout(timeout)
    if t is not None:
        cmd["timeout_ms"] = max(1, timeout_ms(t, MAX_HANDSHAKE_MS) or 1)
    return cmd


def inject_ca_command(sid: int, cafile: Any, cadata: Any) -> Dict[str, Any]:
    """An ``inject_ca`` with a CA file or PEM text (exactly one)."""
    if (cafile is None) == (cadata is None):
        raise ValueError("inject_ca needs one of cafile and cadata")
    if cafile is not None:
        return {"op": "inject_ca", "id": sid, "cacertfile": check_path(cafile)}
    if isinstance(cadata, (bytes, bytearray)):
        cadata = bytes(cadata).decode("ascii")
    if not isinstance(cadata, str) or "-----BEGIN CERTIFICATE-----" not in cadata:
        raise ValueError("cadata must be PEM text (str or bytes) with at least one certificate")
    return {"op": "inject_ca", "id": sid, "cacert": cadata}


def tls_context_command(name: Any, tls: Any) -> Dict[str, Any]:
    """A ``tls_context`` naming TLS settings (a dict) for later ``tls=name``."""
    if not isinstance(tls, Mapping):
        raise TypeError(f"tls_context needs a dict of TLS options, not {type(tls).__name__}")
    return {"op": "tls_context", "name": check_context_name(name), "tls": check_tls(tls, default=None)}


def answer_value(what: str, value: Any) -> Dict[str, Any]:
    """The ``answer`` field for a callback's result: a passphrase (``str``, or
    ``bytes`` in UTF-8; anything else answers ``""``, which fails the command),
    or a verdict (true accepts)."""
    if what != "password":
        return {"accept": bool(value)}
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    return {"password": value if isinstance(value, str) else ""}


def deadline(timeout: Optional[float]) -> Optional[float]:
    """The ``time.monotonic()`` by which a wait of ``timeout`` seconds ends."""
    return None if timeout is None else time.monotonic() + timeout


def remaining(deadline: Optional[float], message: str) -> Optional[float]:
    """Seconds left until ``deadline``; raises :class:`Timeout` with ``message`` once none are."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout(message)
    return left


def spawn_argv(daemon: Any, unix_path: Any, args: Any) -> Tuple[str, List[str]]:
    """The daemon's path and command line for ``spawn``."""
    if isinstance(args, (str, bytes)) or not all(isinstance(a, str) for a in args):
        raise TypeError("args must be a sequence of strings")
    path = find_daemon(daemon)
    argv = [path]
    if unix_path is not None:
        argv += ["--unix", os.fspath(unix_path), "--stdio"]
    return path, argv + list(args)


def check_path(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a path, not {type(path).__name__}")
    return os.fspath(path)


def reply_body(reply: Reply) -> Dict[str, Any]:
    """A successful reply's fields without ``ok`` and ``ref``."""
    return {k: v for k, v in reply.body.items() if k not in ("ok", "ref")}


def decode_data(body: Mapping[str, Any]) -> bytes:
    """The bytes of a JSON ``data`` (base64) or ``text`` field."""
    if "data" in body:
        return base64.b64decode(body["data"])
    return str(body.get("text", "")).encode("utf-8")


def exit_description(code: Optional[int]) -> str:
    """How a daemon process ended, in words."""
    if code is None:
        return "closed its output"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
