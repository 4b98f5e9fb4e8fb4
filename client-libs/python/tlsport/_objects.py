"""What the sync and asyncio objects share: their state, read from the session,
and carrying out the session's outcomes.  No I/O and no waiting here."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable, ClassVar, ContextManager, Dict, List, Optional, Tuple

from . import _args
from ._args import Active, TlsOptions
from ._session import END, Ask, Entry, Fail, ListenerEntry, Notice, Resolve, Run, Session, SocketEntry, Wake
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


    def _command(self, op: str, *args: Any) -> Dict[str, Any]:
        """The ``starttls``, ``stoptls`` or ``inject_ca`` command for this socket
        (arguments checked, the socket still open)."""
        build = {"starttls": _args.starttls_command, "stoptls": _args.stoptls_command, "inject_ca": _args.inject_ca_command}[op]
        cmd = build(self.id, *args)
        self._client._check_open(self._entry)
        return cmd

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

    def _accept_command(self, active: Optional[Active], tls: TlsOptions, timeouts: Tuple[Any, Any, Any]) -> Any:
        cmd = _args.accept_command(self.id, self.active if active is None else active, tls, timeouts)
        self._client._check_open(self._entry)
        return cmd


class ClientBase:
    """What :class:`tlsport.Client` and :class:`tlsport.aio.AsyncClient` share.

    A transport provides ``_wake(entry)`` (whoever waits on it looks again),
    ``_run_in_order(entry, callback, args)`` (run a user callback; may return an
    awaitable to await before reading on), ``_answer_later(ask, awaitable)``
    (answer a question once a coroutine callback is done) and
    ``_session_lock`` (held while the session is touched)."""

    _socket_class: ClassVar[Any]
    _listener_class: ClassVar[Any]
    _session: Session
    _session_lock: ContextManager[Any]
    _closing: bool

    def on_password(self, callback: Optional[Callable[[str], Any]]) -> Any:
        """Answer the daemon's passphrase questions with ``callback(source)``
        (``source`` names the key, e.g. ``"key file server.key"``; it returns
        the passphrase) for every command whose TLS options have
        ``"ask_password": True`` and no ``password`` callable of their own.
        ``None`` removes it.  Usable as a decorator."""
        with self._session_lock:
            self._session.password_callback = _args.check_callback(callback)
        return callback

    def on_verify(self, callback: Optional[Callable[[List[Any], Dict[str, Any]], Any]]) -> Any:
        """Judge peers with ``callback(peer_chain, verify_result)`` (a list of
        :class:`~tlsport.Certificate`, leaf first, and OpenSSL's verdict
        ``{"code", "text", "depth"}``; true accepts) for every socket whose TLS
        options have ``"verify_callback": True`` and no callable of their own.
        ``None`` removes it.  Usable as a decorator."""
        with self._session_lock:
            self._session.verify_callback = _args.check_callback(callback)
        return callback

    def _check_open(self, entry: Entry) -> None:
        with self._session_lock:
            self._session.check_open(entry)

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
    def grace(self) -> Optional[float]:
        """The grace period in force, in seconds (``None``: none): how long the
        daemon keeps this client's sockets for a successor of the same name
        once its channel ends, however it ends (a crash, or :meth:`close`)."""
        ms = self._session.grace_ms
        return None if ms is None else ms / 1000

    @property
    def reclaimed(self) -> List[Any]:
        """The sockets and listeners a predecessor of the same name left with a
        grace period, given back to this client when it said hello (complete
        once the client is made; empty when there were none).  Data the
        predecessor had not taken arrives on them first, in order."""
        with self._session_lock:
            return [self._public(e) for e in self._session.reclaimed]

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
            elif isinstance(outcome, Ask):
                self._ask(outcome)
            elif isinstance(outcome, Notice):
                log.log(outcome.level, "%s", outcome.text)
        return later

    def _ask(self, ask: Ask) -> None:
        """Call a question's callback and answer with what it returns (an
        exception answers no: ``""`` for a passphrase, a refusal for a peer)."""
        try:
            value = ask.callback(*ask.args)
        except Exception:
            log.exception("tlsport %s callback %r raised", ask.what, ask.callback)
            value = None
        if inspect.isawaitable(value):
            self._answer_later(ask, value)
        else:
            self._answer(ask, value)

    def _answer(self, ask: Ask, value: Any) -> None:
        with self._session_lock:
            self._session.answer(ask.request, ask.what, value)
        self._kick()

    def _answer_later(self, ask: Ask, awaitable: Any) -> None:
        raise NotImplementedError

    def _kick(self) -> None:
        raise NotImplementedError

    def _wake(self, entry: Optional[Entry]) -> None:
        raise NotImplementedError

    def _run_in_order(self, entry: Optional[SocketEntry], callback: Callable[..., Any], args: Tuple[Any, ...]) -> Any:
        raise NotImplementedError
