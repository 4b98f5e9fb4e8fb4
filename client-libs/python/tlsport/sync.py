"""Synchronous (threaded) client of tlsportd.

One :class:`Client` is one control channel to a daemon: either a ``tlsportd``
child it spawned (:meth:`Client.spawn`, binary encoding on the child's
stdin/stdout) or a running daemon's Unix socket (:meth:`Client.attach`).

The protocol's bookkeeping is the client's sans-io
:class:`~tlsport._session.Session`; the threads, locks and futures around it
are :mod:`tlsport._sync_transport`.  Every public method is thread-safe.

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
import threading
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _args, _certs
from ._args import UNSET, Active, Mode, TlsOptions
from ._flow import DEFAULT_MAX_BYTES, DEFAULT_WINDOW
from ._locate import PathArg
from ._objects import ACCEPT_LOOP_ENDS, ListenerBase, SocketBase
from ._session import ASK, END, SocketEntry
from ._sync_transport import PipeChannel, SyncTransport, UnixChannel
from .errors import Cancelled, DaemonGone, SocketClosed, Timeout, TlsportError

__all__ = ["Client", "Socket", "Listener"]

DataCallback = Callable[[bytes], Any]
CloseCallback = Callable[[Optional[TlsportError]], Any]


# --------------------------------------------------------------------------
# sockets


class _Closing:
    """``with`` closes (errors ignored)."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.close(timeout=10)  # type: ignore[attr-defined]
        except TlsportError:
            pass


class Socket(SocketBase, _Closing):
    """A TLS (or TCP) connection owned by this client.

    Receive with :meth:`recv`, by iterating (``for data in sock``), or with
    callbacks (:meth:`on_data`, :meth:`on_close`).  Each item is one
    ``fromsocket`` event: a whole packet in ``packet:N``/``asn1``/``line``
    modes, a chunk in ``raw`` mode.
    """

    _client: "Client"

    def __init__(self, client: "Client", entry: SocketEntry) -> None:
        super().__init__(client, entry)
        self._cond = threading.Condition(client._lock)  # waits on the session's state
        self._cb_lock = threading.RLock()  # this socket's callbacks run one at a time, in order

    # -- receiving -------------------------------------------------------
    def _next(self, timeout: Optional[float]) -> Any:
        client = self._client
        deadline = _args.deadline(timeout)
        message = f"no data on socket {self.id} within {timeout} s"
        with client._lock:
            while True:
                item = client._session.next_data(self._entry)
                if item is not None:
                    break
                self._cond.wait(_args.remaining(deadline, message))
        client._kick()
        if item is not ASK:
            return item
        try:  # passive: ask the daemon
            return client._call(_args.recv_command(self.id, timeout))
        except TlsportError as err:
            return self._recv_failed(err, message)

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
        item: bytes = self._next(_args.check_timeout(timeout))
        return b"" if item is END else item

    def recv_buffered(self) -> List[bytes]:
        """Return every packet already received and queued, without waiting (maybe none).

        Useful before a handoff: after ``setopts(active=False)`` nothing more
        arrives, so this is everything the old owner must deal with.
        """
        with self._client._lock:
            items = self._client._session.drain(self._entry)
        self._client._kick()
        return items

    def __iter__(self) -> Iterator[bytes]:
        """Yield packets until the peer closes (raise the close reason if it broke)."""
        while True:
            item = self._next(None)
            if item is END:
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
        client = self._client
        with self._cb_lock:
            with client._lock:
                items = client._session.set_data_callback(self._entry, _args.check_callback(callback))
            for item in items:
                client._run_callback(callback, item)  # type: ignore[arg-type]
        client._kick()
        return callback

    def on_close(self, callback: Optional[CloseCallback]) -> Optional[CloseCallback]:
        """Call ``callback(reason)`` once when the socket closes (``reason`` is ``None``
        for a clean close, else the error).  Called at once if already closed."""
        client = self._client
        with self._cb_lock:
            with client._lock:
                now = client._session.set_close_callback(self._entry, _args.check_callback(callback))
            if now:
                client._run_callback(callback, self._entry.close_reason)  # type: ignore[arg-type]
        return callback

    def on_passive(self, callback: Optional[Callable[[], Any]]) -> Optional[Callable[[], Any]]:
        """Call ``callback()`` when an ``active=N`` count you set runs out."""
        with self._client._lock:
            self._client._session.set_passive_callback(self._entry, _args.check_callback(callback))
        return callback

    # -- sending ---------------------------------------------------------
    def _check_open(self) -> None:
        self._client._check_open(self._entry)

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
        client = self._client
        chunks = client._session.chunks(self._entry, payload)
        self._check_open()
        deadline = _args.deadline(timeout)
        may_wait = not client._in_callback()
        for i, chunk in enumerate(chunks):
            if may_wait:
                self._wait_ready(deadline, f"socket {self.id} stayed busy (peer not reading) for {timeout} s")
            if wait and i == len(chunks) - 1:
                client._call({"op": "deliver", "id": self.id, "data": chunk})
            else:
                client._deliver(self._entry, chunk)

    def _wait_ready(self, deadline: Optional[float], message: str) -> None:
        with self._client._lock:
            while self._entry.busy and not self._entry.closed:
                self._cond.wait(_args.remaining(deadline, message))
            self._client._session.check_open(self._entry)

    sendall = send

    # -- control ---------------------------------------------------------
    def setopts(
        self,
        *,
        active: Active = UNSET,
        packet_size: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> None:
        """Change the active mode and/or the packet size cap.

        ``active=True`` (default): data is pushed to the queue with a bounded
        credit window; ``False``: nothing is read from the peer until
        :meth:`recv`; ``"once"``: one packet, then as ``False``; ``N``: N
        packets (adding to what is left), then as ``False`` (see :meth:`on_passive`).
        """
        cmd = _args.setopts_command(self.id, active, packet_size)
        timeout = _args.check_timeout(timeout)
        self._check_open()
        self._client._call(cmd, timeout=timeout)

    def controlling_process(self, to: Union[str, int], *, timeout: Optional[float] = None) -> List[bytes]:
        """Hand this socket to another client (by name or number).

        Returns the packets received before the handoff that were not yet
        consumed (forward them if they matter: the new owner gets everything
        after).  The socket object is then closed for this client.
        """
        cmd = {"op": "controlling_process", "id": self.id, "to": _args.check_target(to)}
        timeout = _args.check_timeout(timeout)
        self._check_open()
        result: List[bytes] = self._client._call(cmd, timeout=timeout)
        return result

    def close(self, *, timeout: Optional[float] = None) -> None:
        """Close the connection in order (queued data, close_notify, TCP close).

        Idempotent.  Data still queued is discarded.  From a callback, the
        close is sent without waiting for the reply.
        """
        timeout = _args.check_timeout(timeout)
        if self._entry.closed:
            return
        client = self._client
        try:
            if client._in_callback():  # cannot wait for the reply here
                client._begin({"op": "close", "id": self.id}, waiter=False)
            else:
                client._call({"op": "close", "id": self.id}, timeout=timeout)
        except (SocketClosed, DaemonGone):
            pass

    def _ask(self, op: str, timeout: Optional[float]) -> Any:
        self._check_open()
        return self._client._call({"op": op, "id": self.id}, timeout=timeout)

    def peername(self, *, timeout: Optional[float] = None) -> Tuple[str, int]:
        """``(host, port)`` of the peer."""
        return self._ask("peername", timeout)  # type: ignore[no-any-return]

    def sockname(self, *, timeout: Optional[float] = None) -> Tuple[str, int]:
        """``(host, port)`` of the local end."""
        return self._ask("sockname", timeout)  # type: ignore[no-any-return]

    def info(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Everything the connection can tell (docs/protocol.md, ``info``):
        ``protocol`` (``"tcp"`` for plain TCP), ``cipher``, ``bits``,
        ``alg_bits``, ``cipher_description``, ``session_reused``, ``alpn``,
        ``server_name``, ``verify_result``, ``ocsp``, ``peer``, ``sockname``,
        ``mode``; ``peer_certificate``, ``local_certificate`` (a
        :class:`~tlsport.Certificate` or ``None``) and ``peer_chain`` (a list)."""
        return self._ask("info", timeout)  # type: ignore[no-any-return]

    def peercert(self, binary_form: bool = False, *, timeout: Optional[float] = None) -> Any:
        """The peer's certificate as :meth:`ssl.SSLSocket.getpeercert` gives it: a
        dict (``subject``, ``issuer``, ``version``, ``serialNumber``,
        ``notBefore``, ``notAfter``, ``subjectAltName``), or with
        ``binary_form=True`` its DER bytes; ``None`` when the peer sent none."""
        return _certs.peercert(self.info(timeout=timeout), binary_form)

    def ciphers(self, *, timeout: Optional[float] = None) -> List[str]:
        """The cipher suites this connection could use, in preference order."""
        return self._ask("ciphers", timeout)  # type: ignore[no-any-return]

    def inject_ca(self, cafile: Optional[str] = None, cadata: Union[str, bytes, None] = None, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Trust more CAs on this connection (a PEM or DER file, or PEM text) and
        verify the peer's chain again; returns the new ``verify_result``
        (``{"code": 0, "text": "ok"}`` when it verifies now).  The connection
        stays open whatever the result; :meth:`info` reports it from then on."""
        return self._client._call(self._command("inject_ca", cafile, cadata), timeout=timeout)  # type: ignore[no-any-return]

    def starttls(
        self,
        side: str = "client",
        *,
        tls: TlsOptions = None,
        timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        close_timeout: Optional[float] = None,
    ) -> None:
        """Run a TLS handshake on this plain connection (``side``: which end we
        are) and return once it is done; the socket keeps its id, framing and
        active mode.  ``tls`` as for :meth:`Client.connect` (``None``: secure
        defaults; a client checks the host it connected to), or a
        :meth:`Client.tls_context` name.  ``timeout`` bounds the handshake;
        ``idle_timeout``/``close_timeout`` apply from then on.

        Read the peer's last plaintext message with ``active=False`` (or
        ``"once"``) before, so that no TLS byte is read as plaintext.  Data
        sent while the handshake runs waits until it is done.  On failure
        (:class:`~tlsport.errors.TlsError`, :class:`~tlsport.errors.Timeout`)
        the socket is closed."""
        cmd = self._command("starttls", side, tls, timeout, idle_timeout, close_timeout)
        self._client._call(cmd, timeout=_args.reply_timeout(timeout))

    def stoptls(self, *, timeout: Optional[float] = None) -> None:
        """End TLS and keep the TCP connection: queued data is written,
        close_notify exchanged, then the socket carries plaintext.  ``timeout``
        bounds the wait for the peer's close_notify (default: the close
        timeout); a peer that does not answer, or closes, ends the socket."""
        self._client._call(self._command("stoptls", timeout), timeout=_args.reply_timeout(timeout))


class Listener(ListenerBase, _Closing):
    """A listening socket; :meth:`accept` returns :class:`Socket` objects."""

    _client: "Client"

    def accept(
        self,
        timeout: Optional[float] = None,
        *,
        active: Optional[Active] = None,
        tls: TlsOptions = None,
        handshake_timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        close_timeout: Optional[float] = None,
    ) -> Socket:
        """Wait for the next connection whose TLS handshake completed.

        ``active`` overrides the listener's initial active mode for this
        socket (``False``: nothing is read until you ask, e.g. before handing
        it over); ``tls`` gives this connection its own TLS settings (needed
        when the listener has none); the timeouts override the listener's
        (see :meth:`Client.listen`).  Raises :class:`~tlsport.errors.Timeout`
        after ``timeout`` seconds (the daemon-side accept is cancelled; a
        connection that won the race is returned),
        :class:`~tlsport.errors.SocketClosed` when the listener closes.
        """
        timeout = _args.check_timeout(timeout)
        cmd = self._accept_command(active, tls, (handshake_timeout, idle_timeout, close_timeout))
        client = self._client
        if client._in_callback():
            raise RuntimeError("accept() cannot be called from a tlsport callback")
        ref, fut = client._begin(cmd)
        assert fut is not None
        try:
            return fut.result(timeout)  # type: ignore[no-any-return]
        except concurrent.futures.TimeoutError:
            pass
        try:  # cancel the daemon-side accept; the connection may have won the race
            client._call({"op": "cancel", "target": ref}, timeout=10)
        except TlsportError:
            pass
        try:
            return fut.result(10)  # type: ignore[no-any-return]
        except concurrent.futures.TimeoutError:
            client._abandon(ref)
            raise Timeout("accept was not answered after cancel") from None
        except Cancelled:
            raise Timeout(f"no connection within {timeout} s") from None

    def __iter__(self) -> Iterator[Socket]:
        """Accept connections until the listener closes."""
        while True:
            try:
                yield self.accept()
            except TlsportError as err:
                if err.kind in ACCEPT_LOOP_ENDS:
                    return
                raise

    def sockname(self, *, timeout: Optional[float] = None) -> Tuple[str, int]:
        """``(host, port)`` listened on."""
        return self._client._call({"op": "sockname", "id": self.id}, timeout=timeout)  # type: ignore[no-any-return]

    def controlling_process(self, to: Union[str, int], *, timeout: Optional[float] = None) -> None:
        """Hand the listener to another client; outstanding accepts end ``cancelled``."""
        cmd = {"op": "controlling_process", "id": self.id, "to": _args.check_target(to)}
        self._client._call(cmd, timeout=timeout)

    def close(self, *, timeout: Optional[float] = None) -> None:
        """Stop listening; outstanding accepts raise :class:`~tlsport.errors.SocketClosed`."""
        if self.closed:
            return
        try:
            self._client._call({"op": "close", "id": self.id}, timeout=timeout)
        except (SocketClosed, DaemonGone):
            pass


# --------------------------------------------------------------------------
# client


class Client(SyncTransport):
    """One control channel to a tlsportd daemon.

    Make one with :meth:`spawn` (start a private daemon as a child process)
    or :meth:`attach` (connect to a daemon's Unix socket).  Closing the client
    (or leaving its ``with`` block) closes every socket it owns; a spawned
    daemon then exits.

    ``window`` and ``max_buffer`` bound what is buffered per socket (see
    :mod:`tlsport._flow`): at most about ``window`` packets, and no more data is
    requested from the daemon while ``max_buffer`` bytes are queued.
    """

    _socket_class = Socket
    _listener_class = Listener

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
        name = _args.check_client(name, window, max_buffer)
        path, argv = _args.spawn_argv(daemon, unix_path, args)
        # The daemon listens on its Unix socket before it serves any channel: once
        # hello is answered, others can attach.
        return cls(PipeChannel.start(path, argv, env, stderr), name=name, window=window, max_buffer=max_buffer)

    @classmethod
    def attach(
        cls,
        path: PathArg,
        *,
        name: Optional[str] = None,
        grace: Optional[float] = None,
        timeout: Optional[float] = 10.0,
        window: int = DEFAULT_WINDOW,
        max_buffer: int = DEFAULT_MAX_BYTES,
    ) -> "Client":
        """Connect to a running daemon's Unix socket (``tlsportd --unix PATH``).

        With ``grace`` (seconds; needs a ``name``) the daemon keeps this
        client's sockets and listeners when its channel ends, for a successor
        that attaches with the same name within that time (the daemon caps it,
        see :attr:`grace`).  A client attaching under a name whose predecessor
        left sockets finds them in :attr:`reclaimed`.  The name is taken until
        the daemon has seen the predecessor's channel end: a successor started
        at once may get :class:`~tlsport.errors.NetworkError` ``eaddrinuse``
        and should try again.
        """
        spath = _args.check_path(path)
        name = _args.check_client(name, window, max_buffer)
        grace_ms = _args.check_grace(grace, name)
        timeout = _args.check_timeout(timeout)
        channel = UnixChannel.connect(spath, timeout)
        return cls(channel, name=name, window=window, max_buffer=max_buffer, hello_timeout=timeout, grace_ms=grace_ms)

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
        idle_timeout: Optional[float] = None,
        close_timeout: Optional[float] = None,
        timeout: Optional[float] = None,
    ) -> Listener:
        """Listen on ``host:port`` (port 0: any free port, see :attr:`Listener.port`).

        ``tls`` is required: a dict of TLS options (a server needs
        ``certfile``/``keyfile``), a :meth:`tls_context` name, ``False`` for
        plain TCP, or ``None`` when every :meth:`Listener.accept` brings its
        own ``tls``.  ``mode`` is the framing of accepted sockets, ``active``
        their initial active mode (see :meth:`Socket.setopts`), and the
        timeouts (seconds) theirs: the handshake's, how long a socket may be
        idle before it closes with kind ``timeout``, how long an orderly close
        may take (``None``: the daemon's defaults, 30 s, none, 5 s).
        """
        timeouts = (handshake_timeout, idle_timeout, close_timeout)
        cmd = _args.listen_command(port, host, tls, mode, backlog, packet_size, timeouts, active)
        return self._call(cmd, timeout=timeout)  # type: ignore[no-any-return]

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
        handshake_timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        close_timeout: Optional[float] = None,
    ) -> Socket:
        """Connect to ``host:port`` and complete the TLS handshake.

        ``tls`` defaults to ``{}``: TLS >= 1.2, the peer verified against the
        system trust store and its host name checked.  ``tls=False`` is plain
        TCP (which :meth:`Socket.starttls` may upgrade); a string names a
        :meth:`tls_context`.  ``timeout`` (seconds, default 30 in the daemon)
        covers resolution, connection and handshake; ``handshake_timeout``
        the handshake within it, ``idle_timeout`` and ``close_timeout`` as for
        :meth:`listen`.  ``active`` is the socket's initial active mode (see
        :meth:`Socket.setopts`).
        """
        timeouts = (handshake_timeout, idle_timeout, close_timeout)
        cmd = _args.connect_command(host, port, tls, mode, timeout, packet_size, active, timeouts)
        # The daemon always answers within timeout_ms; the margin covers the channel.
        return self._call(cmd, timeout=_args.reply_timeout(timeout))  # type: ignore[no-any-return]

    def tls_context(self, name: str, tls: Mapping[str, Any], *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Build TLS settings once under ``name``, for ``tls=name`` in :meth:`listen`,
        :meth:`connect`, :meth:`Listener.accept` and :meth:`Socket.starttls`.

        Returns ``{"name", "server", "replaced"}``: ``server`` is false when
        the settings have no certificate (then only clients may use them).
        Errors in the settings (files, keys, passphrases) are raised here.
        Names are shared by every client of the daemon; defining one again
        replaces it for sockets made from then on.  A ``verify_callback``
        callable given here judges the sockets this client makes with it.
        """
        return self._call(_args.tls_context_command(name, tls), timeout=timeout)  # type: ignore[no-any-return]

    def resolve(self, address: Optional[str] = None, *, timeout: Optional[float] = None) -> str:
        """This host's official name, or the name of ``address`` (an IP address)."""
        return self._call(_args.resolve_command(address), timeout=timeout)  # type: ignore[no-any-return]

    def adopted(self, timeout: Optional[float] = None) -> Union[Socket, Listener]:
        """Wait for a socket (or listener) handed to this client by ``controlling_process``."""
        deadline = _args.deadline(_args.check_timeout(timeout))
        with self._lock:
            while True:
                entry = self._session.pop_adopted()
                if entry is not None:
                    return self._public(entry)  # type: ignore[no-any-return]
                self._adopt_cond.wait(_args.remaining(deadline, f"no socket was handed over within {timeout} s"))

    def on_adopt(self, callback: Optional[Callable[[Union[Socket, Listener]], Any]]) -> Any:
        """Call ``callback(sock)`` on the reader thread for each socket handed to this
        client (instead of queueing them for :meth:`adopted`).  Already queued ones first."""
        with self._lock:
            entries = self._session.set_adopt_callback(_args.check_callback(callback))
        for entry in entries:
            self._run_callback(callback, self._public(entry))  # type: ignore[arg-type]
        return callback

    def stats(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The daemon's state and counters since it started (docs/protocol.md,
        ``stats``): ``connections``, ``listeners``, ``clients``, ``bytes``,
        ``handshakes``, ``queues``, ``tls``, ``memory`` ..."""
        return self._call({"op": "stats"}, timeout=timeout)  # type: ignore[no-any-return]

    def reload(self, *, timeout: Optional[float] = None) -> None:
        """Have every listener and named context read its TLS files again (new
        connections get the new material, live ones keep theirs).  If one file is
        bad nothing changes and :class:`~tlsport.errors.TlsError` kind
        ``bad_tls_config`` names it."""
        self._call({"op": "reload"}, timeout=timeout)

    def stop(self, *, timeout: Optional[float] = 10.0) -> None:
        """Ask the daemon to close every socket and exit (``stop``)."""
        try:
            self._call({"op": "stop"}, timeout=timeout)
        except DaemonGone:
            pass

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
