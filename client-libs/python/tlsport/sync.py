"""Synchronous (threaded) client of tlsportd.

One :class:`Client` is one control channel to a daemon: either a ``tlsportd``
child it spawned (:meth:`Client.spawn`, binary encoding on the child's
stdin/stdout) or a running daemon's Unix socket (:meth:`Client.attach`).

A reader thread per client reads the daemon's output, resolves pending calls
by ``ref`` and puts each socket's data in that socket's bounded queue; a small
flow thread sends the ``setopts`` credits that keep those queues bounded (see
:mod:`tlsport._flow`).  Every public method is thread-safe.

Example::

    import tlsport

    with tlsport.Client.spawn() as client:
        sock = client.connect("example.org", 443, tls={}, timeout=10)
        sock.send(b"GET / HTTP/1.0\\r\\nHost: example.org\\r\\n\\r\\n")
        for data in sock:
            print(data)
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import socket as _socket
import subprocess
import threading
import time
from collections import deque
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

from . import _args
from ._args import Active, Mode, TlsOptions
from ._listener import ListenerBase
from ._flow import DEFAULT_MAX_BYTES, DEFAULT_WINDOW, FlowState, Tag
from ._locate import PathArg, find_daemon
from .codec import CodecError, Data, Decoder, Event, Reply, encode_command, encode_deliver
from .errors import (
    DaemonGone,
    ProtocolError,
    SocketClosed,
    Timeout,
    TlsportError,
    error_from_reply,
)

__all__ = ["Client", "Socket", "Listener"]

log = logging.getLogger("tlsport")

_RAW_CHUNK = 256 * 1024
_READ_SIZE = 256 * 1024
_T = TypeVar("_T")
_UNSET: Any = object()
_END: Any = object()
_callback_state = threading.local()  # .depth > 0 while a user callback runs

DataCallback = Callable[[bytes], Any]
CloseCallback = Callable[[Optional[TlsportError]], Any]


# --------------------------------------------------------------------------
# channels


def _endpoint(reply: Reply) -> Tuple[str, int]:
    ep = _args.peer_tuple(reply.body)
    if ep is None:
        raise ProtocolError(f"reply without host and port: {reply.body!r}")
    return ep


class _PipeChannel:
    """A spawned tlsportd speaking on its stdin/stdout."""

    def __init__(self, proc: "subprocess.Popen[bytes]", path: str) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.path = path
        self._in = proc.stdin.fileno()
        self._out = proc.stdout.fileno()

    def read(self, n: int) -> bytes:
        return os.read(self._out, n)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._in, view)
            view = view[written:]

    def shutdown_write(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass

    def force_close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def finish(self) -> None:
        # In port mode the daemon exits within a second of its stdin's EOF.
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass

    def gone_message(self) -> str:
        try:
            code: Optional[int] = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        return f"tlsportd (pid {self.proc.pid}, {self.path}) {_args.exit_description(code)}"


class _UnixChannel:
    """A connection to a daemon's Unix socket."""

    def __init__(self, sock: _socket.socket, path: str) -> None:
        self.sock = sock
        self.path = path

    def read(self, n: int) -> bytes:
        return self.sock.recv(n)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        # A full shutdown: nothing the daemon still sends matters once we close,
        # and the daemon closes our sockets as soon as it sees the connection end.
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    def force_close(self) -> None:
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    def finish(self) -> None:
        self.sock.close()

    def gone_message(self) -> str:
        return f"the daemon closed the Unix socket {self.path}"


_Channel = Union[_PipeChannel, _UnixChannel]


class _Pending:
    __slots__ = ("future", "transform")

    def __init__(
        self,
        future: Optional["concurrent.futures.Future[Any]"],
        transform: Optional[Callable[[Reply], Any]],
    ) -> None:
        self.future = future
        self.transform = transform


# --------------------------------------------------------------------------
# sockets


class Socket:
    """A TLS (or TCP) connection owned by this client.

    Receive with :meth:`recv`, by iterating (``for data in sock``), or with
    callbacks (:meth:`on_data`, :meth:`on_close`).  Each item is one
    ``fromsocket`` event: a whole packet in ``packet:N``/``asn1``/``line``
    modes, a chunk in ``raw`` mode.
    """

    def __init__(
        self,
        client: "Client",
        sid: int,
        mode: Optional[str],
        peer: Optional[Tuple[str, int]],
        *,
        packet_size: Optional[int] = None,
        previous_owner: Optional[Tuple[int, Optional[str]]] = None,
    ) -> None:
        self._client = client
        self.id: int = sid
        """The daemon's socket id."""
        self.mode: Optional[str] = mode
        """The framing mode (``None`` when unknown)."""
        self.peer: Optional[Tuple[str, int]] = peer
        """``(host, port)`` of the peer, as reported when the socket was made."""
        self.previous_owner = previous_owner
        """For an adopted socket: ``(client number, name or None)`` of the old owner."""
        self._packet_size = packet_size
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._cb_lock = threading.RLock()
        self._flow = FlowState(client._window, client._max_bytes)
        self._closed = False
        self._close_reason: Optional[TlsportError] = None
        self._handed_over = False
        self._async_error: Optional[TlsportError] = None
        self._data_cb: Optional[DataCallback] = None
        self._close_cb: Optional[CloseCallback] = None
        self._passive_cb: Optional[Callable[[], Any]] = None
        self._busy = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<tlsport.Socket id={self.id} mode={self.mode} peer={self.peer} {state}>"

    # -- properties ------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether the socket is closed (by you, the peer, a handoff or the daemon)."""
        return self._closed

    @property
    def close_reason(self) -> Optional[TlsportError]:
        """Why the socket closed: ``None`` while open or after a clean close, else the error."""
        return self._close_reason

    @property
    def active(self) -> Active:
        """The active mode last set (``True`` by default)."""
        return self._flow.active

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and queued, not yet consumed."""
        with self._lock:
            return self._flow.queued_bytes

    # -- reader-thread side ----------------------------------------------
    def _feed(self, data: bytes) -> None:
        with self._cb_lock:
            with self._lock:
                if self._closed:
                    return
                cb = self._data_cb
                if cb is None:
                    self._flow.push(data)
                    self._cond.notify()
                else:
                    self._flow.count_event()
                flush = self._flow.wants_flush()
            if cb is not None:
                self._client._run_callback(cb, data)
        if flush:
            self._client._schedule_flow(self)

    def _on_passive(self) -> None:
        with self._lock:
            self._flow.on_passive()
            flush = self._flow.wants_flush()
            cb = self._passive_cb if not self._flow.managed else None
        if cb is not None:
            self._client._run_callback(cb)
        if flush:
            self._client._schedule_flow(self)

    def _set_busy(self, busy: bool) -> None:
        with self._lock:
            self._busy = busy
            if not busy:
                self._cond.notify_all()

    def _acked(self, tag: Optional[Tag]) -> None:
        with self._lock:
            self._flow.acked(tag)
            flush = self._flow.wants_flush()
        if flush:
            self._client._schedule_flow(self)

    def _on_closed(self, reason: Optional[TlsportError], *, handed_over: bool = False) -> None:
        with self._cb_lock:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                self._close_reason = reason
                self._handed_over = handed_over
                self._cond.notify_all()
                cb = self._close_cb
            if cb is not None and not handed_over:
                self._client._run_callback(cb, reason)

    def _on_async_error(self, error: TlsportError) -> None:
        log.warning("socket %d: %s", self.id, error)
        with self._lock:
            if self._async_error is None:
                self._async_error = error

    # -- receiving -------------------------------------------------------
    def _next(self, timeout: Optional[float]) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._data_cb is not None:
                raise RuntimeError("this socket delivers data to an on_data callback")
            while True:
                if self._flow.queue:
                    data = self._flow.pop()
                    flush = self._flow.wants_flush()
                    break
                if self._closed:
                    if self._close_reason is None or self._handed_over:
                        return _END
                    raise self._close_reason
                if self._flow.active is False:
                    flush = False
                    data = _UNSET
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Timeout(f"no data on socket {self.id} within {timeout} s")
                self._cond.wait(remaining)
        if flush:
            self._client._schedule_flow(self)
        if data is _UNSET:
            return self._passive_recv(timeout)
        return data

    def _passive_recv(self, timeout: Optional[float]) -> Any:
        cmd: Dict[str, Any] = {"op": "recv", "id": self.id}
        ms = _args.timeout_ms(timeout)
        if ms is not None:
            cmd["timeout_ms"] = ms
        try:
            return self._client._call(cmd, lambda r: _args.decode_data(r.body))
        except SocketClosed:
            return _END
        except Timeout:
            raise Timeout(f"no data on socket {self.id} within {timeout} s") from None

    def recv(self, timeout: Optional[float] = None) -> bytes:
        """Return the next packet (raw mode: the next chunk).

        Returns ``b""`` once the peer closed cleanly (in ``packet``/``line``
        modes an empty packet is ``b""`` too: check :attr:`closed`, or iterate).
        Raises :class:`~tlsport.errors.Timeout` after ``timeout`` seconds, or
        the close reason (e.g. :class:`~tlsport.errors.TlsError`,
        :class:`~tlsport.errors.NetworkError`) if the connection broke.
        With ``active=False`` it asks the daemon for the next packet (protocol
        ``recv``).
        """
        timeout = _args.check_timeout(timeout)
        item: bytes = self._next(timeout)
        return b"" if item is _END else item

    def recv_buffered(self) -> List[bytes]:
        """Return every packet already received and queued, without waiting (maybe none).

        Useful before a handoff: after ``setopts(active=False)`` nothing more
        arrives, so this is everything the old owner must deal with.
        """
        with self._lock:
            items = self._flow.drain()
            flush = self._flow.wants_flush()
        if flush:
            self._client._schedule_flow(self)
        return items

    def __iter__(self) -> Iterator[bytes]:
        """Yield packets until the peer closes (raise the close reason if it broke)."""
        while True:
            item = self._next(None)
            if item is _END:
                return
            yield item

    def on_data(self, callback: Optional[DataCallback]) -> Optional[DataCallback]:
        """Deliver every packet to ``callback(data)`` instead of the queue.

        Packets already queued are delivered first, in order.  Callbacks run
        on the client's reader thread: keep them short; they may call
        :meth:`send` but not methods that wait for a reply (those raise
        ``RuntimeError``; :meth:`close` is then sent without waiting).  While a
        callback runs, nothing else is read from the daemon, which slows every
        socket of this client down.  ``None`` goes back to queueing.
        Usable as a decorator.
        """
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        with self._cb_lock:
            with self._lock:
                self._data_cb = callback
                items = self._flow.drain() if callback is not None else []
                flush = self._flow.wants_flush()
            if callback is not None:
                for item in items:
                    self._client._run_callback(callback, item)
        if flush:
            self._client._schedule_flow(self)
        return callback

    def on_close(self, callback: Optional[CloseCallback]) -> Optional[CloseCallback]:
        """Call ``callback(reason)`` once when the socket closes (``reason`` is ``None``
        for a clean close, else the error).  Called at once if already closed."""
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        with self._cb_lock:
            with self._lock:
                self._close_cb = callback
                done = self._closed and not self._handed_over
                reason = self._close_reason
            if done and callback is not None:
                self._client._run_callback(callback, reason)
        return callback

    def on_passive(self, callback: Optional[Callable[[], Any]]) -> Optional[Callable[[], Any]]:
        """Call ``callback()`` when an ``active=N`` count you set runs out."""
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        self._passive_cb = callback
        return callback

    # -- sending ---------------------------------------------------------
    def _check_open(self) -> None:
        if self._async_error is not None:
            with self._lock:
                err, self._async_error = self._async_error, None
            if err is not None:
                raise err
        if self._closed:
            if self._handed_over:
                raise SocketClosed(f"socket {self.id} was handed over to another client")
            if self._close_reason is not None:
                raise self._close_reason
            raise SocketClosed(f"socket {self.id} is closed")

    def send(
        self,
        data: Union[bytes, bytearray, memoryview],
        *,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> None:
        """Send ``data`` to the peer (the mode's framing header is added by the daemon).

        The daemon queues the data and writes it as the peer reads.  When the
        peer is slow the daemon marks the socket *busy*; this call then waits
        until it is ready again (other sockets are not affected), which is the
        signal to slow down — up to ``timeout`` seconds, then
        :class:`~tlsport.errors.Timeout` (data not yet sent is dropped; raw
        data is sent in pieces, some may have left).  From a callback it does
        not wait.  With ``wait=True`` it also waits until the daemon has
        queued the data and raises its error, if any (e.g. ``emsgsize``).  A
        too-long packet for the mode raises :class:`ValueError` before
        anything is sent.
        """
        payload = _args.check_data(data)
        timeout = _args.check_timeout(timeout)
        limit = _args.deliver_limit(self.mode, self._packet_size)
        if limit is not None and len(payload) > limit:
            raise ValueError(
                f"packet of {len(payload)} bytes is too long for mode {self.mode} (at most {limit})"
            )
        self._check_open()
        if limit is None and len(payload) > _RAW_CHUNK:
            chunks = [payload[i : i + _RAW_CHUNK] for i in range(0, len(payload), _RAW_CHUNK)]
        else:
            chunks = [payload]
        deadline = None if timeout is None else time.monotonic() + timeout
        may_wait = not self._client._in_callback()
        for i, chunk in enumerate(chunks):
            if may_wait:
                self._wait_ready(deadline, timeout)
            if wait and i == len(chunks) - 1:
                self._client._call({"op": "deliver", "id": self.id, "data": chunk})
            else:
                self._client._write([encode_deliver(self.id, chunk)])

    def _wait_ready(self, deadline: Optional[float], timeout: Optional[float]) -> None:
        with self._lock:
            while self._busy and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Timeout(f"socket {self.id} stayed busy (peer not reading) for {timeout} s")
                self._cond.wait(remaining)
        self._check_open()

    @property
    def busy(self) -> bool:
        """Whether the daemon holds more than its high-water mark of unsent data for
        this socket (the peer reads slowly); :meth:`send` waits while it is."""
        return self._busy

    sendall = send

    # -- control ---------------------------------------------------------
    def setopts(
        self,
        *,
        active: Active = _UNSET,
        packet_size: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> None:
        """Change the active mode and/or the packet size cap.

        ``active=True`` (default): data is pushed to the queue with a bounded
        credit window; ``False``: nothing is read from the peer until
        :meth:`recv`; ``"once"``: one packet, then as ``False``; ``N``: N
        packets (adding to what is left), then as ``False`` (see :meth:`on_passive`).
        """
        if active is not _UNSET:
            active = _args.check_active(active)
        packet_size = _args.check_packet_size(packet_size)
        timeout = _args.check_timeout(timeout)
        if active is _UNSET and packet_size is None:
            raise ValueError("setopts needs active= and/or packet_size=")
        self._check_open()
        extra: Dict[str, Any] = {}
        if packet_size is not None:
            extra["packet_size"] = packet_size
        futures = self._client._flush_flow(self, new_active=active, extra=extra, wait=True)
        if packet_size is not None:
            self._packet_size = packet_size
        self._client._wait_all(futures, timeout)

    def controlling_process(self, to: Union[str, int], *, timeout: Optional[float] = None) -> List[bytes]:
        """Hand this socket to another client (by name or number).

        Returns the packets received before the handoff that were not yet
        consumed (forward them if they matter: the new owner gets everything
        after).  The socket object is then closed for this client.
        """
        target = _args.check_target(to)
        timeout = _args.check_timeout(timeout)
        self._check_open()
        client = self._client

        def done(reply: Reply) -> None:
            if target in (client.number, client.name):
                return
            client._forget(self.id)
            self._on_closed(None, handed_over=True)

        client._call({"op": "controlling_process", "id": self.id, "to": target}, done, timeout=timeout)
        with self._lock:
            return self._flow.drain()

    def close(self, *, timeout: Optional[float] = None) -> None:
        """Close the connection in order (queued data, close_notify, TCP close).

        Idempotent.  Data still queued is discarded.  From a callback, the
        close is sent without waiting for the reply.
        """
        timeout = _args.check_timeout(timeout)
        with self._lock:
            if self._closed:
                return
        client = self._client

        def done(reply: Reply) -> None:
            client._forget(self.id)
            self._on_closed(None)
            with self._lock:
                self._flow.drain()

        if client._in_callback():  # cannot wait for the reply here
            client._send_command({"op": "close", "id": self.id}, done)
            return
        try:
            client._call({"op": "close", "id": self.id}, done, timeout=timeout)
        except (SocketClosed, DaemonGone):
            pass
        except (TlsportError,) as err:
            if err.kind != "no_such_socket":
                raise
            done(Reply(None, True, {}))

    def peername(self, *, timeout: Optional[float] = None) -> Tuple[str, int]:
        """``(host, port)`` of the peer."""
        self._check_open()
        return self._client._call(
            {"op": "peername", "id": self.id}, _endpoint, timeout=timeout
        )

    def sockname(self, *, timeout: Optional[float] = None) -> Tuple[str, int]:
        """``(host, port)`` of the local end."""
        self._check_open()
        return self._client._call(
            {"op": "sockname", "id": self.id}, _endpoint, timeout=timeout
        )

    def info(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """TLS details: ``protocol``, ``cipher``, ``bits``, ``peer_certificate``, ``verify_result``."""
        self._check_open()
        return self._client._call({"op": "info", "id": self.id}, _args.reply_body, timeout=timeout)

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.close(timeout=10)
        except TlsportError:
            pass


class Listener(ListenerBase):
    """A listening socket; :meth:`accept` returns :class:`Socket` objects."""

    _socket_class = Socket

    def accept(
        self,
        timeout: Optional[float] = None,
        *,
        active: Optional[Active] = None,
        tls: TlsOptions = None,
    ) -> Socket:
        """Wait for the next connection whose TLS handshake completed.

        ``active`` overrides the listener's initial active mode for this
        socket (``False``: nothing is read until you ask, e.g. before handing
        it over); ``tls`` gives this connection its own TLS settings (needed
        when the listener has none).  Raises :class:`~tlsport.errors.Timeout`
        after ``timeout`` seconds (the daemon-side accept is cancelled; a
        connection that won the race is returned),
        :class:`~tlsport.errors.SocketClosed` when the listener closes.
        """
        timeout = _args.check_timeout(timeout)
        mode: Active = self.active if active is None else _args.check_active(active)
        tls_value = _args.check_tls(tls, default=None)
        if self._closed:
            raise SocketClosed(f"listener {self.id} is closed")
        client = self._client
        cmd: Dict[str, Any] = {"op": "accept", "id": self.id, "active": client._initial_active(mode)}
        if tls_value is not None:
            cmd["tls"] = tls_value
        if client._in_callback():
            raise RuntimeError("accept() cannot be called from a tlsport callback")
        ref, fut = client._send_command(cmd, self._socket_maker(mode))
        sock: Socket
        try:
            sock = fut.result(timeout)
            return sock
        except concurrent.futures.TimeoutError:
            pass
        # Cancel the daemon-side accept; the connection may have won the race.
        try:
            client._call({"op": "cancel", "target": ref}, timeout=10)
        except TlsportError:
            pass
        try:
            sock = fut.result(10)
            return sock
        except concurrent.futures.TimeoutError:
            raise Timeout("accept was not answered after cancel") from None
        except TlsportError as err:
            if err.kind == "cancelled":
                raise Timeout(f"no connection within {timeout} s") from None
            raise

    def __iter__(self) -> Iterator[Socket]:
        """Accept connections until the listener closes."""
        while True:
            try:
                yield self.accept()
            except SocketClosed:
                return
            except TlsportError as err:
                if err.kind in ("closed", "not_owner", "no_such_socket", "cancelled"):
                    return
                raise

    def sockname(self, *, timeout: Optional[float] = None) -> Tuple[str, int]:
        """``(host, port)`` listened on."""
        return self._client._call(
            {"op": "sockname", "id": self.id}, _endpoint, timeout=timeout
        )

    def controlling_process(self, to: Union[str, int], *, timeout: Optional[float] = None) -> None:
        """Hand the listener to another client; outstanding accepts end ``cancelled``."""
        target = _args.check_target(to)
        client = self._client

        def done(reply: Reply) -> None:
            if target in (client.number, client.name):
                return
            client._forget(self.id)
            self._closed = True

        client._call({"op": "controlling_process", "id": self.id, "to": target}, done, timeout=timeout)

    def close(self, *, timeout: Optional[float] = None) -> None:
        """Stop listening; outstanding accepts raise :class:`~tlsport.errors.SocketClosed`."""
        if self._closed:
            return
        client = self._client

        def done(reply: Reply) -> None:
            client._forget(self.id)
            self._closed = True

        try:
            client._call({"op": "close", "id": self.id}, done, timeout=timeout)
        except (SocketClosed, DaemonGone):
            self._closed = True

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.close(timeout=10)
        except TlsportError:
            pass


# --------------------------------------------------------------------------
# client


class Client:
    """One control channel to a tlsportd daemon.

    Make one with :meth:`spawn` (start a private daemon as a child process)
    or :meth:`attach` (connect to a daemon's Unix socket).  Closing the client
    (or leaving its ``with`` block) closes every socket it owns; a spawned
    daemon then exits.

    ``window`` and ``max_buffer`` bound what is buffered per socket (see
    :mod:`tlsport._flow`): at most about ``window`` packets, and no more data is
    requested from the daemon while ``max_buffer`` bytes are queued.
    """

    def __init__(
        self,
        channel: _Channel,
        *,
        name: Optional[str] = None,
        window: int = DEFAULT_WINDOW,
        max_buffer: int = DEFAULT_MAX_BYTES,
        hello_timeout: Optional[float] = 30.0,
    ) -> None:
        self._chan = channel
        self._window = window
        self._max_bytes = max_buffer
        self._decoder = Decoder()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._refs = itertools.count(1)
        self._pending: Dict[Any, _Pending] = {}
        self._objects: Dict[int, Union[Socket, Listener]] = {}
        self._gone: Optional[TlsportError] = None
        self._closing = False
        self._adopted: Deque[Union[Socket, Listener]] = deque()
        self._adopt_cond = threading.Condition(self._lock)
        self._adopt_cb: Optional[Callable[[Union[Socket, Listener]], Any]] = None
        self._flow_cond = threading.Condition(threading.Lock())
        self._flow_due: Dict[int, Socket] = {}
        self._flow_stop = False
        self.number: Optional[int] = None
        """This client's number (from ``hello``)."""
        self.name: Optional[str] = name
        """This client's name, if it has one."""
        self.version: Optional[str] = None
        """The daemon's version."""
        self.protocol: Optional[int] = None
        """The protocol version the daemon speaks."""
        self.capabilities: List[str] = []
        """The daemon's capabilities (from ``hello``)."""
        self._reader = threading.Thread(target=self._read_loop, name="tlsport-reader", daemon=True)
        self._flow_thread = threading.Thread(target=self._flow_loop, name="tlsport-flow", daemon=True)
        self._reader.start()
        self._flow_thread.start()
        try:
            hello: Dict[str, Any] = {"op": "hello"}
            if name is not None:
                hello["name"] = name
            reply = self._call(hello, _args.reply_body, timeout=hello_timeout)
        except BaseException:
            self.close()
            raise
        self.number = reply.get("client")
        self.version = reply.get("version")
        self.protocol = reply.get("protocol")
        self.capabilities = list(reply.get("capabilities", []))

    # -- construction ------------------------------------------------------
    @classmethod
    def spawn(
        cls,
        daemon: Optional[PathArg] = None,
        *,
        name: Optional[str] = None,
        unix_path: Optional[PathArg] = None,
        args: Sequence[str] = (),
        env: Optional[Mapping[str, str]] = None,
        stderr: Any = None,
        window: int = DEFAULT_WINDOW,
        max_buffer: int = DEFAULT_MAX_BYTES,
    ) -> "Client":
        """Start a ``tlsportd`` child and talk to it over its stdin/stdout.

        ``daemon`` is the executable (default: ``$TLSPORTD``, then the build
        tree, see :func:`tlsport.find_daemon`).  With ``unix_path`` the daemon
        also serves that Unix socket, so that other processes can
        :meth:`attach` to it (e.g. workers receiving handed-over sockets).
        ``args`` are extra command-line options (e.g. ``["--log-level", "info"]``);
        ``stderr`` is passed to :class:`subprocess.Popen` (default: inherited).
        The daemon exits when this client closes (or this process dies).
        """
        name = _args.check_name(name)
        _args.check_window(window, max_buffer)
        if isinstance(args, (str, bytes)) or not all(isinstance(a, str) for a in args):
            raise TypeError("args must be a sequence of strings")
        path = find_daemon(daemon)
        argv = [path]
        if unix_path is not None:
            argv += ["--unix", os.fspath(unix_path), "--stdio"]
        argv += list(args)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=None if env is None else dict(env),
            bufsize=0,
        )
        # The daemon listens on its Unix socket before it serves any channel: once
        # hello is answered, others can attach.
        return cls(_PipeChannel(proc, path), name=name, window=window, max_buffer=max_buffer)

    @classmethod
    def attach(
        cls,
        path: PathArg,
        *,
        name: Optional[str] = None,
        timeout: Optional[float] = 10.0,
        window: int = DEFAULT_WINDOW,
        max_buffer: int = DEFAULT_MAX_BYTES,
    ) -> "Client":
        """Connect to a running daemon's Unix socket (``tlsportd --unix PATH``)."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a path, not {type(path).__name__}")
        name = _args.check_name(name)
        _args.check_window(window, max_buffer)
        timeout = _args.check_timeout(timeout)
        spath = os.fspath(path)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(spath)
            sock.settimeout(None)
        except OSError as exc:
            sock.close()
            raise DaemonGone(f"cannot connect to the daemon at {spath}: {exc}") from exc
        return cls(_UnixChannel(sock, spath), name=name, window=window, max_buffer=max_buffer, hello_timeout=timeout)

    # -- plumbing ----------------------------------------------------------
    def _on_reader_thread(self) -> bool:
        return threading.current_thread() is self._reader

    def _in_callback(self) -> bool:
        return self._on_reader_thread() or getattr(_callback_state, "depth", 0) > 0

    def _run_callback(self, cb: Callable[..., Any], *args: Any) -> None:
        _callback_state.depth = getattr(_callback_state, "depth", 0) + 1
        try:
            cb(*args)
        except Exception:  # a user callback must not kill the reader
            log.exception("tlsport callback %r raised", cb)
        finally:
            _callback_state.depth -= 1

    def _write(self, frames: Sequence[bytes]) -> None:
        if self._gone is not None:
            raise self._gone
        try:
            with self._write_lock:
                for frame in frames:
                    self._chan.write(frame)
        except OSError as exc:
            raise self._write_failed(exc) from exc

    def _write_failed(self, exc: OSError) -> TlsportError:
        """The error for a failed write: the daemon is gone, and the reader, which sees
        its end of output at once, knows how it ended."""
        if not self._on_reader_thread():
            self._reader.join(2.0)
        return self._gone or DaemonGone(f"writing to the daemon failed: {exc}")

    def _register(self, transform: Optional[Callable[[Reply], Any]], future: bool = True) -> Tuple[int, Optional["concurrent.futures.Future[Any]"]]:
        fut: Optional["concurrent.futures.Future[Any]"] = concurrent.futures.Future() if future else None
        with self._lock:
            if self._gone is not None:
                raise self._gone
            ref = next(self._refs)
            self._pending[ref] = _Pending(fut, transform)
        return ref, fut

    def _unregister(self, ref: int) -> None:
        with self._lock:
            self._pending.pop(ref, None)

    def _send_command(
        self,
        cmd: Dict[str, Any],
        transform: Optional[Callable[[Reply], Any]] = None,
        frames_before: Sequence[bytes] = (),
    ) -> Tuple[int, "concurrent.futures.Future[Any]"]:
        ref, fut = self._register(transform)
        assert fut is not None
        try:
            frame = encode_command({**cmd, "ref": ref})
            self._write([*frames_before, frame])
        except BaseException:
            self._unregister(ref)
            raise
        return ref, fut

    def _call(
        self,
        cmd: Dict[str, Any],
        transform: Optional[Callable[[Reply], _T]] = None,
        *,
        timeout: Optional[float] = None,
        frames_before: Sequence[bytes] = (),
    ) -> _T:
        """Send a command and return its (transformed) reply."""
        if self._in_callback():
            raise RuntimeError(
                f"{cmd.get('op')}() waits for a reply and cannot be called from a tlsport callback"
            )
        timeout = _args.check_timeout(timeout)
        ref, fut = self._send_command(cmd, transform, frames_before)
        try:
            result: _T = fut.result(timeout)
            return result
        except concurrent.futures.TimeoutError:
            self._unregister(ref)
            raise Timeout(f"no reply to {cmd.get('op')} within {timeout} s") from None

    def _wait_all(self, futures: Sequence["concurrent.futures.Future[Any]"], timeout: Optional[float]) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for fut in futures:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                fut.result(remaining)
            except concurrent.futures.TimeoutError:
                raise Timeout(f"no reply within {timeout} s") from None

    def _initial_active(self, active: Active) -> Active:
        """The ``active`` of an accept/connect: the library's window for ``True``."""
        return self._window if active is True else active

    def _register_socket(self, obj: Union[Socket, Listener]) -> None:
        with self._lock:
            self._objects[obj.id] = obj
        if isinstance(obj, Socket):
            self._schedule_flow(obj)

    def _forget(self, sid: int) -> None:
        with self._lock:
            self._objects.pop(sid, None)
        with self._flow_cond:
            self._flow_due.pop(sid, None)

    # -- flow control ------------------------------------------------------
    def _schedule_flow(self, sock: Socket) -> None:
        with self._flow_cond:
            self._flow_due[sock.id] = sock
            self._flow_cond.notify()

    def _flow_loop(self) -> None:
        while True:
            with self._flow_cond:
                while not self._flow_due and not self._flow_stop:
                    self._flow_cond.wait()
                if self._flow_stop:
                    return
                due = list(self._flow_due.values())
                self._flow_due.clear()
            for sock in due:
                try:
                    self._flush_flow(sock)
                except TlsportError:
                    pass
                except Exception:
                    log.exception("tlsport flow control failed")

    def _flush_flow(
        self,
        sock: Socket,
        *,
        new_active: Any = _UNSET,
        extra: Optional[Dict[str, Any]] = None,
        wait: bool = False,
    ) -> List["concurrent.futures.Future[Any]"]:
        """Send the setopts a socket's flow state calls for (and a user change).

        The write lock is taken before the socket lock so that setopts leave
        in the order in which they were decided.
        """
        futures: List["concurrent.futures.Future[Any]"] = []
        with self._write_lock:
            frames: List[bytes] = []
            refs: List[int] = []
            with sock._lock:
                if sock._closed:
                    if wait:
                        raise SocketClosed(f"socket {sock.id} is closed")
                    return futures
                if new_active is not _UNSET:
                    sock._flow.set_active(new_active)
                cmds = sock._flow.take_commands()
                if extra:
                    cmds.append((dict(extra), None))
                for body, tag in cmds:
                    hook = _ack_hook(sock, tag) if tag is not None else None
                    ref, fut = self._register(hook, future=wait)
                    refs.append(ref)
                    if fut is not None:
                        futures.append(fut)
                    frames.append(encode_command({"op": "setopts", "id": sock.id, "ref": ref, **body}))
            if self._gone is not None:
                raise self._gone
            try:
                for frame in frames:
                    self._chan.write(frame)
            except OSError as exc:
                for ref in refs:
                    self._unregister(ref)
                raise self._write_failed(exc) from exc
        return futures

    @property
    def buffered_bytes(self) -> int:
        """Bytes received on all sockets of this client and not yet consumed."""
        with self._lock:
            objs = list(self._objects.values())
        return sum(o.buffered_bytes for o in objs if isinstance(o, Socket))

    # -- reading -----------------------------------------------------------
    def _read_loop(self) -> None:
        error: Optional[TlsportError] = None
        try:
            while True:
                data = self._chan.read(_READ_SIZE)
                if not data:
                    break
                self._decoder.receive_data(data)
                for msg in self._decoder:
                    self._dispatch(msg)
        except CodecError as exc:
            error = ProtocolError(f"bad data from the daemon: {exc}")
        except OSError as exc:
            if not self._closing:
                error = DaemonGone(f"reading from the daemon failed: {exc}")
        except BaseException as exc:  # pragma: no cover - a bug; never hang the callers
            log.exception("tlsport reader thread crashed")
            error = DaemonGone(f"the tlsport reader thread crashed: {exc!r}")
        if error is None:
            if self._closing:
                error = SocketClosed("the client was closed")
            else:
                error = DaemonGone(self._chan.gone_message())
        self._fail_all(error)
        if self._closing:
            self._chan.finish()

    def _fail_all(self, error: TlsportError) -> None:
        with self._lock:
            if self._gone is None:
                self._gone = error
            pending = list(self._pending.values())
            self._pending.clear()
            objs = list(self._objects.values())
            self._objects.clear()
            self._adopt_cond.notify_all()
        with self._flow_cond:
            self._flow_stop = True
            self._flow_cond.notify()
        for p in pending:
            if p.future is not None and not p.future.done():
                p.future.set_exception(error)
        for obj in objs:
            obj._on_closed(error)

    def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, Data):
            with self._lock:
                obj = self._objects.get(msg.socket_id)
            if isinstance(obj, Socket):
                obj._feed(msg.data)
            return
        if isinstance(msg, Reply):
            self._on_reply(msg)
            return
        if isinstance(msg, Event):
            self._on_event(msg)

    def _on_reply(self, reply: Reply) -> None:
        if reply.ref is None:
            if not reply.ok:
                err = error_from_reply(reply.body)
                sid = reply.body.get("id")
                with self._lock:
                    obj = self._objects.get(sid) if isinstance(sid, int) else None
                if isinstance(obj, Socket):
                    obj._on_async_error(err)
                elif isinstance(sid, int):  # a deliver that raced with the socket's close
                    log.debug("tlsportd: %s", err)
                else:
                    log.warning("tlsportd: %s", err)
            return
        with self._lock:
            pending = self._pending.pop(reply.ref, None)
        if pending is None:
            return
        fut = pending.future
        if not reply.ok:
            if fut is not None:
                fut.set_exception(error_from_reply(reply.body))
            return
        try:
            result = pending.transform(reply) if pending.transform is not None else _args.reply_body(reply)
        except Exception as exc:
            if fut is not None:
                fut.set_exception(exc)
            else:
                log.exception("tlsport reply handler failed")
            return
        if fut is not None:
            fut.set_result(result)

    def _on_event(self, event: Event) -> None:
        name, sid = event.name, event.socket_id
        if name == "owned" and sid is not None:
            self._on_owned(event)
            return
        with self._lock:
            obj = self._objects.get(sid) if sid is not None else None
            if name == "socket_closed" and obj is not None:
                del self._objects[sid]  # type: ignore[arg-type]
        if obj is None:
            return
        if name == "socket_closed":
            reason = event.body.get("reason")
            err = None if reason == "normal" else error_from_reply({"error": reason})
            obj._on_closed(err)
        elif name == "passive" and isinstance(obj, Socket):
            obj._on_passive()
        elif name in ("busy", "ready") and isinstance(obj, Socket):
            obj._set_busy(name == "busy")

    def _on_owned(self, event: Event) -> None:
        body = event.body
        sid = int(body["id"])
        prev = (int(body.get("from", 0)), body.get("from_name"))
        obj: Union[Socket, Listener]
        if body.get("listener"):
            sockname = _args.peer_tuple(body.get("sockname"))
            obj = Listener(self, sid, sockname[1] if sockname else 0, None, previous_owner=prev)
        else:
            mode = body.get("mode")
            obj = Socket(
                self,
                sid,
                mode if isinstance(mode, str) else None,
                _args.peer_tuple(body.get("peer")),
                previous_owner=prev,
            )
            obj._busy = bool(body.get("busy"))
        self._register_socket(obj)
        cb = self._adopt_cb
        if cb is not None:
            self._run_callback(cb, obj)
            return
        with self._lock:
            self._adopted.append(obj)
            self._adopt_cond.notify()

    # -- public API ----------------------------------------------------------
    def listen(
        self,
        port: int = 0,
        host: str = "0.0.0.0",
        *,
        tls: TlsOptions,
        mode: Mode = "raw",
        active: Active = True,
        backlog: Optional[int] = None,
        packet_size: Optional[int] = None,
        handshake_timeout: Optional[float] = None,
        timeout: Optional[float] = None,
    ) -> Listener:
        """Listen on ``host:port`` (port 0: any free port, see :attr:`Listener.port`).

        ``tls`` is required: a dict of TLS options (a server needs
        ``certfile``/``keyfile``), ``False`` for plain TCP, or ``None`` when
        every :meth:`Listener.accept` brings its own ``tls``.  ``mode`` is the
        framing of accepted sockets, ``active`` their initial active mode
        (see :meth:`Socket.setopts`).
        """
        cmd = _args.listen_command(port, host, tls, mode, backlog, packet_size, handshake_timeout)
        active = _args.check_active(active)
        norm = cmd["mode"]

        def make(reply: Reply) -> Listener:
            lst = Listener(
                self, int(reply.body["id"]), int(reply.body["port"]), norm, packet_size=packet_size, active=active
            )
            self._register_socket(lst)
            return lst

        return self._call(cmd, make, timeout=timeout)

    def connect(
        self,
        host: str,
        port: int,
        *,
        tls: TlsOptions = None,
        mode: Mode = "raw",
        active: Active = True,
        timeout: Optional[float] = None,
        packet_size: Optional[int] = None,
    ) -> Socket:
        """Connect to ``host:port`` and complete the TLS handshake.

        ``tls`` defaults to ``{}``: TLS >= 1.2, the peer verified against the
        system trust store and its host name checked.  ``tls=False`` is plain
        TCP.  ``timeout`` (seconds, default 30 in the daemon) covers
        resolution, connection and handshake.  ``active`` is the socket's
        initial active mode (see :meth:`Socket.setopts`).
        """
        cmd = _args.connect_command(host, port, tls, mode, timeout, packet_size)
        active = _args.check_active(active)
        cmd["active"] = self._initial_active(active)
        norm = cmd["mode"]

        def make(reply: Reply) -> Socket:
            sock = Socket(self, int(reply.body["id"]), norm, _args.peer_tuple(reply.body.get("peer")), packet_size=packet_size)
            sock._flow.created_with(active)
            self._register_socket(sock)
            return sock

        # The daemon always answers within timeout_ms; the margin covers the channel.
        limit = None if timeout is None else timeout + 10.0
        return self._call(cmd, make, timeout=limit)

    def resolve(self, address: Optional[str] = None, *, timeout: Optional[float] = None) -> str:
        """This host's official name, or the name of ``address`` (an IP address)."""
        cmd: Dict[str, Any] = {"op": "resolve"}
        if address is not None:
            cmd["address"] = _args.check_host(address, "address")
        return self._call(cmd, lambda r: str(r.body.get("name")), timeout=timeout)

    def adopted(self, timeout: Optional[float] = None) -> Union[Socket, Listener]:
        """Wait for a socket (or listener) handed to this client by ``controlling_process``."""
        timeout = _args.check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._adopted:
                if self._gone is not None:
                    raise self._gone
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Timeout(f"no socket was handed over within {timeout} s")
                self._adopt_cond.wait(remaining)
            return self._adopted.popleft()

    def on_adopt(self, callback: Optional[Callable[[Union[Socket, Listener]], Any]]) -> Any:
        """Call ``callback(sock)`` on the reader thread for each socket handed to this
        client (instead of queueing them for :meth:`adopted`).  Already queued ones first."""
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        with self._lock:
            self._adopt_cb = callback
            items = list(self._adopted) if callback is not None else []
            if callback is not None:
                self._adopted.clear()
        for obj in items:
            self._run_callback(callback, obj)  # type: ignore[arg-type]
        return callback

    def stop(self, *, timeout: Optional[float] = 10.0) -> None:
        """Ask the daemon to close every socket and exit (``stop``)."""
        try:
            self._call({"op": "stop"}, timeout=timeout)
        except DaemonGone:
            pass

    @property
    def closed(self) -> bool:
        """Whether this client's control channel is closed (or the daemon gone)."""
        return self._gone is not None

    def close(self) -> None:
        """Close the control channel: the daemon closes every socket this client owns
        (and a spawned daemon exits).  Pending calls fail with SocketClosed."""
        if self._closing:
            return
        self._closing = True
        self._chan.shutdown_write()
        if not self._on_reader_thread():
            self._reader.join(5.0)
            if self._reader.is_alive():
                self._chan.force_close()
                self._reader.join(5.0)
        if self._gone is None:
            self._fail_all(SocketClosed("the client was closed"))
        if threading.current_thread() is not self._flow_thread:
            self._flow_thread.join(5.0)
        if not self._reader.is_alive():
            self._chan.finish()

    @property
    def pid(self) -> Optional[int]:
        """The spawned daemon's process id (``None`` when attached)."""
        return self._chan.proc.pid if isinstance(self._chan, _PipeChannel) else None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<tlsport.Client number={self.number} name={self.name!r} {'closed' if self.closed else 'open'}>"


def _ack_hook(sock: Socket, tag: Tag) -> Callable[[Reply], None]:
    def hook(reply: Reply) -> None:
        sock._acked(tag)

    return hook
