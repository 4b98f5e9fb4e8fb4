"""What the sync and asyncio objects share: their state, read from the session,
and carrying out the session's outcomes.  No I/O and no waiting here."""

from __future__ import annotations

import logging
from typing import Any, Callable, ClassVar, List, Optional, Tuple

from . import _args
from ._args import Active, TlsOptions
from ._session import END, Entry, Fail, ListenerEntry, Notice, Resolve, Run, Session, SocketEntry, Wake
from .errors import DaemonGone, SocketClosed, Timeout, TlsportError

log = logging.getLogger("tlsport")

ACCEPT_LOOP_ENDS = ("closed", "not_owner", "no_such_socket", "cancelled")
"""Error kinds that end iteration over a listener quietly."""


class SocketBase:
    """The state of a :class:`tlsport.Socket` or :class:`tlsport.aio.AsyncSocket`."""

    def __init__(self, client: Any, entry: SocketEntry) -> None:
        self._client = client
        self._entry = entry
        self.id: int = entry.id
        """The daemon's socket id."""
        self.mode: Optional[str] = entry.mode
        """The framing mode (``None`` when unknown)."""
        self.peer: Optional[Tuple[str, int]] = entry.peer
        """``(host, port)`` of the peer, as reported when the socket was made."""
        self.previous_owner: Optional[Tuple[int, Optional[str]]] = entry.previous_owner
        """For an adopted socket: ``(client number, name or None)`` of the old owner."""

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<tlsport.{type(self).__name__} id={self.id} mode={self.mode} peer={self.peer} {state}>"

    @property
    def closed(self) -> bool:
        """Whether the socket is closed (by you, the peer, a handoff or the daemon)."""
        return self._entry.closed

    @property
    def close_reason(self) -> Optional[TlsportError]:
        """Why the socket closed: ``None`` while open or after a clean close, else the error."""
        return self._entry.close_reason

    @property
    def active(self) -> Active:
        """The active mode last set (``True`` by default)."""
        return self._entry.flow.active

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and queued, not yet consumed."""
        return self._entry.flow.queued_bytes

    @property
    def busy(self) -> bool:
        """Whether the daemon holds more than its high-water mark of unsent data for
        this socket (the peer reads slowly); sending waits while it is."""
        return self._entry.busy


    def _recv_failed(self, err: TlsportError, message: str) -> Any:
        """What the error of a passive socket's ``recv`` means: the end, or a timeout."""
        if isinstance(err, SocketClosed):
            return END
        if isinstance(err, Timeout):
            raise Timeout(message) from None
        raise err


class ListenerBase:
    """The state of a :class:`tlsport.Listener` or :class:`tlsport.aio.AsyncListener`."""

    def __init__(self, client: Any, entry: ListenerEntry) -> None:
        self._client = client
        self._entry = entry
        self.id: int = entry.id
        """The daemon's listener id."""
        self.active: Active = entry.active
        """The initial active mode of accepted sockets (see ``Socket.setopts``)."""
        self.port: int = entry.port
        """The port listened on (the one chosen for port 0)."""
        self.mode: Optional[str] = entry.mode
        """The framing mode of accepted sockets (``None`` when unknown)."""
        self.previous_owner: Optional[Tuple[int, Optional[str]]] = entry.previous_owner

    def __repr__(self) -> str:
        return f"<tlsport.{type(self).__name__} id={self.id} port={self.port} mode={self.mode}>"

    @property
    def closed(self) -> bool:
        """Whether the listener is closed (or handed over)."""
        return self._entry.closed

    def _accept_command(self, active: Optional[Active], tls: TlsOptions) -> Any:
        cmd = _args.accept_command(self.id, self.active if active is None else active, tls)
        self._client._session.check_open(self._entry)
        return cmd


class ClientBase:
    """What :class:`tlsport.Client` and :class:`tlsport.aio.AsyncClient` share.

    A transport provides ``_wake(entry)`` (whoever waits on it looks again) and
    ``_run_in_order(entry, callback, args)`` (run a user callback; may return an
    awaitable to await before reading on)."""

    _socket_class: ClassVar[Any]
    _listener_class: ClassVar[Any]
    _session: Session
    _closing: bool

    @property
    def number(self) -> Optional[int]:
        """This client's number (from ``hello``)."""
        return self._session.number

    @property
    def name(self) -> Optional[str]:
        """This client's name, if it has one."""
        return self._session.name

    @property
    def version(self) -> Optional[str]:
        """The daemon's version."""
        return self._session.version

    @property
    def protocol(self) -> Optional[int]:
        """The protocol version the daemon speaks."""
        return self._session.protocol

    @property
    def capabilities(self) -> List[str]:
        """The daemon's capabilities (from ``hello``)."""
        return self._session.capabilities

    @property
    def closed(self) -> bool:
        """Whether this client's control channel is closed (or the daemon gone)."""
        return self._session.gone is not None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received on all sockets of this client and not yet consumed."""
        return self._session.buffered_bytes

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<tlsport.{type(self).__name__} number={self.number} name={self.name!r} {state}>"

    def _read_error(self, exc: BaseException) -> Optional[TlsportError]:
        """Why reading the daemon's output failed (``None``: it ended as we closed)."""
        if isinstance(exc, TlsportError):  # bytes that break the protocol
            return exc
        if isinstance(exc, OSError):
            return None if self._closing else DaemonGone(f"reading from the daemon failed: {exc}")
        log.error("the tlsport reader crashed", exc_info=exc)  # a bug
        return DaemonGone(f"the tlsport reader crashed: {exc!r}")

    def _public(self, value: Any) -> Any:
        """The application's object for a session entry (made on first use)."""
        if not isinstance(value, Entry):
            return value
        if value.handle is None:
            cls = self._listener_class if isinstance(value, ListenerEntry) else self._socket_class
            value.handle = cls(self, value)
        return value.handle

    def _carry_out(self, outcomes: List[Any]) -> List[Any]:
        """Do what the session says; returns the awaitables of coroutine callbacks."""
        later: List[Any] = []
        for outcome in outcomes:
            if isinstance(outcome, (Resolve, Fail)):
                future = outcome.waiter
                if future.done():  # given up: a timeout, a cancelled task
                    continue
                if isinstance(outcome, Fail):
                    future.set_exception(outcome.error)
                else:
                    future.set_result(self._public(outcome.value))
            elif isinstance(outcome, Wake):
                self._wake(outcome.entry)
            elif isinstance(outcome, Run):
                args = tuple(self._public(a) for a in outcome.args)
                pending = self._run_in_order(outcome.entry, outcome.callback, args)
                if pending is not None:
                    later.append(pending)
            elif isinstance(outcome, Notice):
                log.log(outcome.level, "%s", outcome.text)
        return later

    def _wake(self, entry: Optional[Entry]) -> None:
        raise NotImplementedError

    def _run_in_order(self, entry: Optional[SocketEntry], callback: Callable[..., Any], args: Tuple[Any, ...]) -> Any:
        raise NotImplementedError
