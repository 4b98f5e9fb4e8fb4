"""Exceptions raised by the tlsport client library.

Every error the daemon reports, and every failure of the library itself, is a
:class:`TlsportError` with two attributes:

* ``kind`` — the protocol's short, stable error word (``"closed"``,
  ``"not_owner"``, ``"econnrefused"``, ``"tls"`` ...; see ``docs/protocol.md``
  §2.3), or one of the library's own kinds (``"daemon_gone"``,
  ``"daemon_not_found"``, ``"protocol"``);
* ``message`` — a human-readable explanation (for ``tls``, OpenSSL's reason text).

Subclasses group the kinds you are likely to handle differently::

    TlsportError
    ├── DaemonGone          the daemon died or the control channel broke ("daemon_gone")
    ├── DaemonNotFound      no tlsportd binary could be found (also a FileNotFoundError)
    ├── ProtocolError       the daemon sent something this library cannot parse
    ├── SocketClosed        the socket is closed ("closed"), or closed abnormally
    ├── Timeout             "timeout" (also a builtin TimeoutError)
    ├── Cancelled           "cancelled" (an accept cancelled, a recv cut by a handoff)
    ├── TlsError            "tls", "unsupported_protocol", "bad_tls_config"
    ├── OwnershipError      "not_owner", "no_such_socket", "no_such_client"
    │   ├── NotOwner
    │   ├── NoSuchSocket
    │   └── NoSuchClient
    ├── BadRequest          "bad_request" (the daemon rejected a command)
    ├── Overloaded          "overloaded"
    └── NetworkError        errno kinds ("econnrefused", "eaddrinuse", ...), "nxdomain"

Argument errors are never sent to the daemon: they raise :class:`TypeError` or
:class:`ValueError` at once.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
    "TlsportError",
    "DaemonGone",
    "DaemonNotFound",
    "ProtocolError",
    "SocketClosed",
    "Timeout",
    "Cancelled",
    "TlsError",
    "OwnershipError",
    "NotOwner",
    "NoSuchSocket",
    "NoSuchClient",
    "BadRequest",
    "Overloaded",
    "NetworkError",
    "error_from_kind",
    "error_from_reply",
]


class TlsportError(Exception):
    """Base class of every tlsport error; carries ``kind`` and ``message``."""

    default_kind = "error"

    def __init__(self, message: str, kind: Optional[str] = None) -> None:
        super().__init__(message)
        self.kind: str = kind if kind is not None else self.default_kind
        self.message: str = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}" if self.message else self.kind


class DaemonGone(TlsportError):
    """The daemon exited, was killed, or the control channel broke.

    Every call waiting for a reply fails with this error at once, every socket
    of the client ends with it, and every later call raises it.
    """

    default_kind = "daemon_gone"


class DaemonNotFound(TlsportError, FileNotFoundError):
    """No ``tlsportd`` executable was found (argument, ``$TLSPORTD``, build tree)."""

    default_kind = "daemon_not_found"


class ProtocolError(TlsportError):
    """The daemon sent bytes that do not follow the protocol."""

    default_kind = "protocol"


class SocketClosed(TlsportError):
    """The socket is closed: by you, by the peer, or abnormally.

    ``kind`` is ``"closed"`` for an operation on a closed socket or an end of
    input in the middle of a packet; iteration over a socket raises the
    abnormal close reasons (``econnreset``, ``tls``, ``emsgsize`` ...) as their
    own classes, and simply ends on a clean close.
    """

    default_kind = "closed"


class Timeout(TlsportError, TimeoutError):
    """An operation timed out (kind ``"timeout"``); also a builtin ``TimeoutError``."""

    default_kind = "timeout"


class Cancelled(TlsportError):
    """An outstanding operation was cancelled (kind ``"cancelled"``)."""

    default_kind = "cancelled"


class TlsError(TlsportError):
    """TLS failure: handshake or record error (``tls``, message is OpenSSL's text),
    ``unsupported_protocol`` or ``bad_tls_config``."""

    default_kind = "tls"


class OwnershipError(TlsportError):
    """The socket or client named in a command is not yours or does not exist."""


class NotOwner(OwnershipError):
    """The socket belongs to another client (kind ``"not_owner"``)."""

    default_kind = "not_owner"


class NoSuchSocket(OwnershipError):
    """No socket has this id (kind ``"no_such_socket"``)."""

    default_kind = "no_such_socket"


class NoSuchClient(OwnershipError):
    """No client has this name or number (kind ``"no_such_client"``)."""

    default_kind = "no_such_client"


class BadRequest(TlsportError):
    """The daemon rejected a command as malformed (kind ``"bad_request"``)."""

    default_kind = "bad_request"


class Overloaded(TlsportError):
    """A daemon cap on sockets or pending commands was reached (kind ``"overloaded"``)."""

    default_kind = "overloaded"


class NetworkError(TlsportError):
    """A network-level failure: an errno kind (``econnrefused``, ``eaddrinuse``,
    ``econnreset``, ``ehostunreach``, ``emsgsize`` ...) or ``nxdomain``."""

    default_kind = "network"


_BY_KIND: Dict[str, Type[TlsportError]] = {
    "closed": SocketClosed,
    "timeout": Timeout,
    "cancelled": Cancelled,
    "tls": TlsError,
    "unsupported_protocol": TlsError,
    "bad_tls_config": TlsError,
    "not_owner": NotOwner,
    "no_such_socket": NoSuchSocket,
    "no_such_client": NoSuchClient,
    "bad_request": BadRequest,
    "overloaded": Overloaded,
    "nxdomain": NetworkError,
    "daemon_gone": DaemonGone,
    "protocol": ProtocolError,
}


def error_from_kind(kind: str, message: str = "") -> TlsportError:
    """Build the exception matching a protocol error ``kind``."""
    cls = _BY_KIND.get(kind)
    if cls is None:
        cls = NetworkError if kind.startswith("e") else TlsportError
    return cls(message, kind)


def error_from_reply(body: Dict[str, Any]) -> TlsportError:
    """Build the exception for a failed reply body ``{"ok":false,"error":{...}}``
    (or a ``socket_closed`` ``reason`` object)."""
    err = body.get("error", body)
    if isinstance(err, dict):
        return error_from_kind(str(err.get("kind", "unknown")), str(err.get("message", "")))
    return TlsportError(str(err), "unknown")
