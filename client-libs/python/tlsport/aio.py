"""asyncio client of tlsportd.

The same model as :mod:`tlsport.sync`, on one event loop and without threads:
:class:`AsyncClient` (made with :meth:`AsyncClient.spawn` or
:meth:`AsyncClient.attach`), :class:`AsyncSocket`, :class:`AsyncListener`.
The protocol's bookkeeping is the client's sans-io
:class:`~tlsport._session.Session`; the reader task and futures around it are
:mod:`tlsport._aio_transport`.

Example::

    import asyncio
    from tlsport.aio import AsyncClient

    async def main():
        async with await AsyncClient.spawn() as client:
            sock = await client.connect("example.org", 443, timeout=10)
            await sock.send(b"HEAD / HTTP/1.0\\r\\nHost: example.org\\r\\n\\r\\n")
            async for data in sock:
                print(data)

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, AsyncIterator, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import _args, _certs
from ._aio_transport import AioTransport, maybe_await, wait_event
from ._args import UNSET, Active, Mode, TlsOptions
from ._flow import DEFAULT_MAX_BYTES, DEFAULT_WINDOW
from ._locate import PathArg
from ._objects import ACCEPT_LOOP_ENDS, ListenerBase, SocketBase
from ._session import ASK, END, SocketEntry
from .errors import Cancelled, DaemonGone, SocketClosed, Timeout, TlsportError

__all__ = ["AsyncClient", "AsyncSocket", "AsyncListener", "spawn", "attach"]

DataCallback = Callable[[bytes], Any]
CloseCallback = Callable[[Optional[TlsportError]], Any]


class _Closing:
    """``async with`` closes (errors ignored)."""

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.close(timeout=10)  # type: ignore[attr-defined]
        except TlsportError:
            pass


class AsyncSocket(SocketBase, _Closing):
    """A TLS (or TCP) connection owned by an :class:`AsyncClient`.

    Receive with ``await sock.recv()``, ``async for data in sock``, or
    callbacks (:meth:`on_data`, :meth:`on_close`).
    """

    _client: "AsyncClient"

    def __init__(self, client: "AsyncClient", entry: SocketEntry) -> None:
        super().__init__(client, entry)
        self._changed = asyncio.Event()  # set when the session wakes this socket
        self._replay: "Optional[asyncio.Task[Any]]" = None  # on_data's delivery of queued packets

    # -- receiving ---------------------------------------------------------
    async def _next(self, timeout: Optional[float]) -> Any:
        client = self._client
        item = client._session.next_data(self._entry)
        if item is None:
            deadline = _args.deadline(timeout)
            message = f"no data on socket {self.id} within {timeout} s"
            while item is None:
                await wait_event(self._changed, deadline, message)
                item = client._session.next_data(self._entry)
        client._kick()
        if item is not ASK:
            return item
        try:  # passive: ask the daemon
            return await client._call(_args.recv_command(self.id, timeout))
        except TlsportError as err:
            return self._recv_failed(err, f"no data on socket {self.id} within {timeout} s")

    async def recv(self, timeout: Optional[float] = None) -> bytes:
        """The next packet (raw mode: chunk); ``b""`` once the peer closed cleanly.

        Raises :class:`~tlsport.errors.Timeout`, or the close reason if the
        connection broke.  With ``active=False`` it asks the daemon (``recv``).
        """
        item: bytes = await self._next(_args.check_timeout(timeout))
        return b"" if item is END else item

    def recv_buffered(self) -> List[bytes]:
        """Every packet already received and queued, without waiting (maybe none)."""
        items = self._client._session.drain(self._entry)
        self._client._kick()
        return items

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._next(None)
            if item is END:
                return
            yield item

    def on_data(self, callback: Optional[DataCallback]) -> Optional[DataCallback]:
        """Deliver every packet to ``callback(data)`` (a function, or a coroutine
        function that the reader task awaits — which pauses reading from the
        daemon meanwhile).  Queued packets are delivered first.  Callbacks may
        send; awaiting a reply there raises ``RuntimeError``."""
        client = self._client
        items = client._session.set_data_callback(self._entry, _args.check_callback(callback))
        if items:
            self._replay = client._spawn_task(self._deliver_queued(callback, items))  # type: ignore[arg-type]
        client._kick()
        return callback

    async def _deliver_queued(self, callback: DataCallback, items: List[bytes]) -> None:
        for item in items:
            await maybe_await(self._client._run_callback(callback, item))

    def on_close(self, callback: Optional[CloseCallback]) -> Optional[CloseCallback]:
        """Call ``callback(reason)`` once when the socket closes (``None`` = clean)."""
        client = self._client
        if client._session.set_close_callback(self._entry, _args.check_callback(callback)):
            result = client._run_callback(callback, self._entry.close_reason)  # type: ignore[arg-type]
            if result is not None:
                client._spawn_task(result)
        return callback

    def on_passive(self, callback: Optional[Callable[[], Any]]) -> Optional[Callable[[], Any]]:
        """Call ``callback()`` when an ``active=N`` count you set runs out."""
        self._client._session.set_passive_callback(self._entry, _args.check_callback(callback))
        return callback

    # -- sending -----------------------------------------------------------
    async def send(self, data: Union[bytes, bytearray, memoryview], *, wait: bool = False, timeout: Optional[float] = None) -> None:
        """Send ``data``.

        While the socket is *busy* (the peer reads slowly and the daemon holds
        more than its high-water mark for it) this waits until it is ready
        again, up to ``timeout`` seconds (then :class:`~tlsport.errors.Timeout`);
        other sockets are not affected; from a callback it does not wait.
        With ``wait=True`` it also waits for the daemon's acknowledgement and
        raises its error (e.g. ``emsgsize``).
        """
        payload = _args.check_data(data)
        timeout = _args.check_timeout(timeout)
        client = self._client
        chunks = client._session.chunks(self._entry, payload)
        client._session.check_open(self._entry)
        deadline = _args.deadline(timeout)
        for i, chunk in enumerate(chunks):
            while self._entry.busy and not self._entry.closed and not client._in_callback():
                busy = f"socket {self.id} stayed busy (peer not reading) for {timeout} s"
                await wait_event(self._changed, deadline, busy)  # (a callback would hold up "ready")
            client._session.check_open(self._entry)
            if wait and i == len(chunks) - 1:
                await client._call({"op": "deliver", "id": self.id, "data": chunk})
            else:
                await client._deliver(self._entry, chunk)

    sendall = send

    # -- control -----------------------------------------------------------
    async def setopts(self, *, active: Active = UNSET, packet_size: Optional[int] = None, timeout: Optional[float] = None) -> None:
        """Change the active mode (``True``, ``False``, ``"once"``, N) and/or ``packet_size``."""
        cmd = _args.setopts_command(self.id, active, packet_size)
        timeout = _args.check_timeout(timeout)
        self._client._check_open(self._entry)
        await self._client._call(cmd, timeout=timeout)

    async def controlling_process(self, to: Union[str, int], *, timeout: Optional[float] = None) -> List[bytes]:
        """Hand this socket to another client (name or number); returns the packets
        received before the handoff and not yet consumed."""
        cmd = {"op": "controlling_process", "id": self.id, "to": _args.check_target(to)}
        timeout = _args.check_timeout(timeout)
        self._client._session.check_open(self._entry)
        result: List[bytes] = await self._client._call(cmd, timeout=timeout)
        return result

    async def close(self, *, timeout: Optional[float] = None) -> None:
        """Close in order (queued data, close_notify, TCP close). Idempotent.
        From a callback, the close is sent without waiting for the reply."""
        timeout = _args.check_timeout(timeout)
        if self._entry.closed:
            return
        client = self._client
        try:
            if client._in_callback():
                await client._begin({"op": "close", "id": self.id}, waiter=False)
            else:
                await client._call({"op": "close", "id": self.id}, timeout=timeout)
        except (SocketClosed, DaemonGone):
            pass

    async def _ask(self, op: str, timeout: Optional[float]) -> Any:
        self._client._session.check_open(self._entry)
        return await self._client._call({"op": op, "id": self.id}, timeout=timeout)

    async def peername(self, *, timeout: Optional[float] = None) -> Tuple[str, int]:
        """``(host, port)`` of the peer."""
        return await self._ask("peername", timeout)  # type: ignore[no-any-return]

    async def sockname(self, *, timeout: Optional[float] = None) -> Tuple[str, int]:
        """``(host, port)`` of the local end."""
        return await self._ask("sockname", timeout)  # type: ignore[no-any-return]

    async def info(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Everything the connection can tell (see :meth:`tlsport.Socket.info`)."""
        return await self._ask("info", timeout)  # type: ignore[no-any-return]

    async def peercert(self, binary_form: bool = False, *, timeout: Optional[float] = None) -> Any:
        """The peer's certificate as ``ssl``'s ``getpeercert`` gives it (see
        :meth:`tlsport.Socket.peercert`)."""
        return _certs.peercert(await self.info(timeout=timeout), binary_form)

    async def ciphers(self, *, timeout: Optional[float] = None) -> List[str]:
        """The cipher suites this connection could use, in preference order."""
        return await self._ask("ciphers", timeout)  # type: ignore[no-any-return]

    async def inject_ca(self, cafile: Optional[str] = None, cadata: Union[str, bytes, None] = None, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Trust more CAs and verify the peer again (see :meth:`tlsport.Socket.inject_ca`)."""
        return await self._client._call(self._command("inject_ca", cafile, cadata), timeout=timeout)  # type: ignore[no-any-return]

    async def starttls(
        self,
        side: str = "client",
        *,
        tls: TlsOptions = None,
        timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        close_timeout: Optional[float] = None,
    ) -> None:
        """Run a TLS handshake on this plain connection (see :meth:`tlsport.Socket.starttls`)."""
        cmd = self._command("starttls", side, tls, timeout, idle_timeout, close_timeout)
        await self._client._call(cmd, timeout=_args.reply_timeout(timeout))

    async def stoptls(self, *, timeout: Optional[float] = None) -> None:
        """End TLS and keep the TCP connection (see :meth:`tlsport.Socket.stoptls`)."""
        await self._client._call(self._command("stoptls", timeout), timeout=_args.reply_timeout(timeout))


class AsyncListener(ListenerBase, _Closing):
    """A listening socket of an :class:`AsyncClient`."""

    _client: "AsyncClient"

    async def accept(
        self,
        timeout: Optional[float] = None,
        *,
        active: Optional[Active] = None,
        tls: TlsOptions = None,
        handshake_timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        close_timeout: Optional[float] = None,
    ) -> AsyncSocket:
        """The next connection whose handshake completed (see :meth:`tlsport.Listener.accept`)."""
        timeout = _args.check_timeout(timeout)
        cmd = self._accept_command(active, tls, (handshake_timeout, idle_timeout, close_timeout))
        client = self._client
        client._check_may_wait("accept")
        ref, fut = await client._begin(cmd)
        assert fut is not None
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)  # type: ignore[no-any-return]
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:
            if not fut.done():
                client._session.abandon(ref)  # a connection that wins the race is closed
                await self._cancel(ref)
            raise
        await self._cancel(ref)  # the connection may have won the race
        try:
            return await asyncio.wait_for(fut, 10)  # type: ignore[no-any-return]
        except asyncio.TimeoutError:
            client._session.abandon(ref)
            raise Timeout("accept was not answered after cancel") from None
        except Cancelled:
            raise Timeout(f"no connection within {timeout} s") from None

    async def _cancel(self, ref: int) -> None:
        try:
            await self._client._call({"op": "cancel", "target": ref}, timeout=10)
        except TlsportError:
            pass

    def __aiter__(self) -> AsyncIterator[AsyncSocket]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AsyncSocket]:
        while True:
            try:
                sock = await self.accept()
            except TlsportError as err:
                if err.kind in ACCEPT_LOOP_ENDS:
                    return
                raise
            yield sock

    async def sockname(self, *, timeout: Optional[float] = None) -> Tuple[str, int]:
        """``(host, port)`` listened on."""
        return await self._client._call({"op": "sockname", "id": self.id}, timeout=timeout)  # type: ignore[no-any-return]

    async def controlling_process(self, to: Union[str, int], *, timeout: Optional[float] = None) -> None:
        """Hand the listener to another client; outstanding accepts end ``cancelled``."""
        await self._client._call({"op": "controlling_process", "id": self.id, "to": _args.check_target(to)}, timeout=timeout)

    async def close(self, *, timeout: Optional[float] = None) -> None:
        """Stop listening; outstanding accepts raise :class:`~tlsport.errors.SocketClosed`."""
        if self.closed:
            return
        try:
            await self._client._call({"op": "close", "id": self.id}, timeout=timeout)
        except (SocketClosed, DaemonGone):
            pass


class AsyncClient(AioTransport):
    """One control channel to a tlsportd daemon, for asyncio.

    Make one with ``await AsyncClient.spawn()`` or ``await AsyncClient.attach(path)``;
    use ``async with client:`` or ``await client.close()``.
    """

    _socket_class = AsyncSocket
    _listener_class = AsyncListener

    @classmethod
    async def spawn(
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
    ) -> "AsyncClient":
        """Start a ``tlsportd`` child speaking over its stdin/stdout (see
        :meth:`tlsport.Client.spawn` for the arguments)."""
        name = _args.check_client(name, window, max_buffer)
        path, argv = _args.spawn_argv(daemon, unix_path, args)
        # The daemon's stdin and stdout are one end of a socket pair (see _aio_transport).
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=theirs, stdout=theirs, stderr=stderr, env=None if env is None else dict(env)
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        # The daemon listens on its Unix socket before it serves any channel: once
        # hello is answered, others can attach.
        description = f"tlsportd (pid {proc.pid}, {path})"
        client = cls(proc=proc, description=description, name=name, window=window, max_buffer=max_buffer)
        return await client._open(ours, 30.0)

    @classmethod
    async def attach(
        cls,
        path: PathArg,
        *,
        name: Optional[str] = None,
        grace: Optional[float] = None,
        timeout: Optional[float] = 10.0,
        window: int = DEFAULT_WINDOW,
        max_buffer: int = DEFAULT_MAX_BYTES,
    ) -> "AsyncClient":
        """Connect to a running daemon's Unix socket (``grace``: see
        :meth:`tlsport.Client.attach`; what a predecessor left is in :attr:`reclaimed`)."""
        spath = _args.check_path(path)
        name = _args.check_client(name, window, max_buffer)
        grace_ms = _args.check_grace(grace, name)
        timeout = _args.check_timeout(timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, spath), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            raise DaemonGone(f"cannot connect to the daemon at {spath}: {exc!r}") from exc
        except BaseException:
            sock.close()
            raise
        client = cls(description=f"the daemon at {spath}", name=name, window=window, max_buffer=max_buffer, grace_ms=grace_ms)
        return await client._open(sock, timeout)

    # -- public API ------------------------------------------------------------
    async def listen(
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
    ) -> AsyncListener:
        """Listen on ``host:port`` (see :meth:`tlsport.Client.listen`)."""
        timeouts = (handshake_timeout, idle_timeout, close_timeout)
        cmd = _args.listen_command(port, host, tls, mode, backlog, packet_size, timeouts, active)
        return await self._call(cmd, timeout=timeout)  # type: ignore[no-any-return]

    async def connect(
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
    ) -> AsyncSocket:
        """Connect and complete the TLS handshake (see :meth:`tlsport.Client.connect`)."""
        timeouts = (handshake_timeout, idle_timeout, close_timeout)
        cmd = _args.connect_command(host, port, tls, mode, timeout, packet_size, active, timeouts)
        return await self._call(cmd, timeout=_args.reply_timeout(timeout))  # type: ignore[no-any-return]

    async def tls_context(self, name: str, tls: Mapping[str, Any], *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Build TLS settings once under ``name`` (see :meth:`tlsport.Client.tls_context`)."""
        return await self._call(_args.tls_context_command(name, tls), timeout=timeout)  # type: ignore[no-any-return]

    async def resolve(self, address: Optional[str] = None, *, timeout: Optional[float] = None) -> str:
        """This host's official name, or the name of ``address``."""
        return await self._call(_args.resolve_command(address), timeout=timeout)  # type: ignore[no-any-return]

    async def adopted(self, timeout: Optional[float] = None) -> Union[AsyncSocket, AsyncListener]:
        """Wait for a socket (or listener) handed to this client (``controlling_process``)."""
        deadline = _args.deadline(_args.check_timeout(timeout))
        while True:
            entry = self._session.pop_adopted()
            if entry is not None:
                return self._public(entry)  # type: ignore[no-any-return]
            await wait_event(self._adopt_event, deadline, f"no socket was handed over within {timeout} s")

    adopt = adopted  # the name this API had first

    def on_adopt(self, callback: Optional[Callable[[Union[AsyncSocket, AsyncListener]], Any]]) -> Any:
        """Call ``callback(sock)`` for each socket handed to this client (instead of
        queueing them for :meth:`adopted`).  Already queued ones first."""
        for entry in self._session.set_adopt_callback(_args.check_callback(callback)):
            result = self._run_callback(callback, self._public(entry))  # type: ignore[arg-type]
            if result is not None:
                self._spawn_task(result)
        return callback

    async def stats(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The daemon's state and counters (see :meth:`tlsport.Client.stats`)."""
        return await self._call({"op": "stats"}, timeout=timeout)  # type: ignore[no-any-return]

    async def reload(self, *, timeout: Optional[float] = None) -> None:
        """Re-read every listener's and named context's TLS files (see :meth:`tlsport.Client.reload`)."""
        await self._call({"op": "reload"}, timeout=timeout)

    async def stop(self, *, timeout: Optional[float] = 10.0) -> None:
        """Ask the daemon to close everything and exit."""
        try:
            await self._call({"op": "stop"}, timeout=timeout)
        except DaemonGone:
            pass

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


async def spawn(daemon: Optional[PathArg] = None, **kwargs: Any) -> AsyncClient:
    """Shorthand for :meth:`AsyncClient.spawn`."""
    return await AsyncClient.spawn(daemon, **kwargs)


async def attach(path: PathArg, **kwargs: Any) -> AsyncClient:
    """Shorthand for :meth:`AsyncClient.attach`."""
    return await AsyncClient.attach(path, **kwargs)
