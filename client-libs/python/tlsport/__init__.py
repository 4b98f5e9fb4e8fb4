"""tlsport — Python client of the ``tlsportd`` TLS socket daemon.

``tlsportd`` owns TLS sockets on behalf of its clients; this package is such a
client, in the standard library only.

* :mod:`tlsport.sync` — the threaded API: :class:`Client`, :class:`Socket`,
  :class:`Listener` (re-exported here);
* :mod:`tlsport.aio` — the asyncio API: :class:`~tlsport.aio.AsyncClient` ...;
* :mod:`tlsport.codec` — the sans-io wire codec both are built on, and
  ``tlsport._session`` the sans-io protocol state both drive (their
  transports are ``tlsport._sync_transport`` and ``tlsport._aio_transport``);
* :mod:`tlsport.errors` — the exception hierarchy (re-exported here).

Quick start::

    import tlsport

    with tlsport.spawn() as client:                      # start a private tlsportd
        sock = client.connect("example.org", 443, timeout=10)
        sock.send(b"HEAD / HTTP/1.0\\r\\nHost: example.org\\r\\n\\r\\n")
        print(b"".join(sock))

See ``docs/python.md`` for the guide.
"""

from __future__ import annotations

from typing import Any

from ._certs import Certificate
from ._locate import find_daemon
from .errors import (
    BadRequest,
    Cancelled,
    DaemonGone,
    DaemonNotFound,
    NetworkError,
    NoSuchClient,
    NoSuchSocket,
    NotOwner,
    Overloaded,
    OwnershipError,
    ProtocolError,
    SocketClosed,
    Timeout,
    TlsError,
    TlsportError,
)
from .sync import Client, Listener, Socket

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Socket",
    "Listener",
    "spawn",
    "attach",
    "find_daemon",
    "Certificate",
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
]


def spawn(daemon: Any = None, **kwargs: Any) -> Client:
    """Start a private ``tlsportd`` child; shorthand for :meth:`Client.spawn`."""
    return Client.spawn(daemon, **kwargs)


def attach(path: Any, **kwargs: Any) -> Client:
    """Attach to a daemon's Unix socket; shorthand for :meth:`Client.attach`."""
    return Client.attach(path, **kwargs)
