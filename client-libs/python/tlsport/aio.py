"""asyncio client of tlsportd.

The same model as :mod:`tlsport.sync`, on one event loop and without threads:
:class:`AsyncClient` (made with :meth:`AsyncClient.spawn` or
:meth:`AsyncClient.attach`), :class:`AsyncSocket`, :class:`AsyncListener`.
A reader task resolves pending calls by ``ref`` and fills each socket's
bounded queue; flow-control credits are written from that task without
waiting.

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
import inspect
import itertools
import logging
import os
import time
from collections import deque
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Deque,
    Dict,
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

__all__ = ["AsyncClient", "AsyncSocket", "AsyncListener", "spawn", "attach"]

log = logging.getLogger("tlsport")

_RAW_CHUNK = 256 * 1024
_READ_SIZE = 256 * 1024
_T = TypeVar("_T")
_UNSET: Any = object()
_END: Any = object()

DataCallback = Callable[[bytes], Any]
CloseCallback = Callable[[Optional[TlsportError]], Any]


def _endpoint(reply: Reply) -> Tuple[str, int]:
    ep = _args.peer_tuple(reply.body)
    if ep is None:
        raise ProtocolError(f"reply without host and port: {reply.body!r}")
    return ep


class _Pending:
    __slots__ = ("future", "transform")

    def __init__(self, future: Optional["asyncio.Future[Any]"], transform: Optional[Callable[[Reply], Any]]) -> None:
        self.future = future
        self.transform = transform


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


class AsyncSocket:
    """A TLS (or TCP) connection owned by an :class:`AsyncClient`.

    Receive with ``await sock.recv()``, ``async for data in sock``, or
    callbacks (:meth:`on_data`, :meth:`on_close`).
    """

    def __init__(
        self,
        client: "AsyncClient",
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
        """``(host, port)`` of the peer."""
        self.previous_owner = previous_owner
        """For an adopted socket: ``(client number, name or None)`` of the old owner."""
        self._packet_size = packet_size
        self._flow = FlowState(client._window, client._max_bytes)
        self._wakeup = asyncio.Event()
        self._closed = False
        self._close_reason: Optional[TlsportError] = None
        self._handed_over = False
        self._async_error: Optional[TlsportError] = None
        self._data_cb: Optional[DataCallback] = None
        self._close_cb: Optional[CloseCallback] = None
        self._passive_cb: Optional[Callable[[], Any]] = None
        self._busy = False
        self._ready = asyncio.Event()
        self._ready.set()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<tlsport.AsyncSocket id={self.id} mode={self.mode} peer={self.peer} {state}>"

    @property
    def closed(self) -> bool:
        """Whether the socket is closed (by you, the peer, a handoff or the daemon)."""
        return self._closed

    @property
    def close_reason(self) -> Optional[TlsportError]:
        """``None`` while open or after a clean close, else the error."""
        return self._close_reason

    @property
    def active(self) -> Active:
        """The active mode last set (``True`` by default)."""
        return self._flow.active

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and queued, not yet consumed."""
        return self._flow.queued_bytes

    # -- reader side -------------------------------------------------------
    def _feed(self, data: bytes) -> Any:
        if self._closed:
            return None
        cb = self._data_cb
        result = None
        if cb is None:
            self._flow.push(data)
            self._wakeup.set()
        else:
            self._flow.count_event()
            result = self._client._run_callback(cb, data)
        self._client._flush_flow(self)
        return result

    def _on_passive(self) -> Any:
        self._flow.on_passive()
        self._client._flush_flow(self)
        if self._passive_cb is not None and not self._flow.managed:
            return self._client._run_callback(self._passive_cb)
        return None

    def _acked(self, tag: Optional[Tag]) -> None:
        self._flow.acked(tag)
        self._client._flush_flow(self)

    def _on_closed(self, reason: Optional[TlsportError], *, handed_over: bool = False) -> Any:
        if self._closed:
            return None
        self._closed = True
        self._close_reason = reason
        self._handed_over = handed_over
        self._wakeup.set()
        self._ready.set()
        if self._close_cb is not None and not handed_over:
            return self._client._run_callback(self._close_cb, reason)
        return None

    def _on_async_error(self, error: TlsportError) -> None:
        log.warning("socket %d: %s", self.id, error)
        if self._async_error is None:
            self._async_error = error

    # -- receiving ---------------------------------------------------------
    async def _next(self, timeout: Optional[float]) -> Any:
        if self._data_cb is not None:
            raise RuntimeError("this socket delivers data to an on_data callback")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._flow.queue:
                data = self._flow.pop()
                self._client._flush_flow(self)
                return data
            if self._closed:
                if self._close_reason is None or self._handed_over:
                    return _END
                raise self._close_reason
            if self._flow.active is False:
                return await self._passive_recv(timeout)
            self._wakeup.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise Timeout(f"no data on socket {self.id} within {timeout} s")
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                raise Timeout(f"no data on socket {self.id} within {timeout} s") from None

    async def _passive_recv(self, timeout: Optional[float]) -> Any:
        cmd: Dict[str, Any] = {"op": "recv", "id": self.id}
        ms = _args.timeout_ms(timeout)
        if ms is not None:
            cmd["timeout_ms"] = ms
        try:
            return await self._client._call(cmd, lambda r: _args.decode_data(r.body))
        except SocketClosed:
            return _END
        except Timeout:
            raise Timeout(f"no data on socket {self.id} within {timeout} s") from None

    async def recv(self, timeout: Optional[float] = None) -> bytes:
        """The next packet (raw mode: chunk); ``b""`` once the peer closed cleanly.

        Raises :class:`~tlsport.errors.Timeout`, or the close reason if the
        connection broke.  With ``active=False`` it asks the daemon (``recv``).
        """
        timeout = _args.check_timeout(timeout)
        item: bytes = await self._next(timeout)
        return b"" if item is _END else item

    def recv_buffered(self) -> List[bytes]:
        """Every packet already received and queued, without waiting (maybe none)."""
        items = self._flow.drain()
        self._client._flush_flow(self)
        return items

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._next(None)
            if item is _END:
                return
            yield item

    def on_data(self, callback: Optional[DataCallback]) -> Optional[DataCallback]:
        """Deliver every packet to ``callback(data)`` (a function, or a coroutine
        function that the reader task awaits — which pauses reading from the
        daemon meanwhile).  Queued packets are delivered first."""
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        self._data_cb = callback
        if callback is not None:
            items = self._flow.drain()
            if items:
                self._client._spawn_task(self._replay(callback, items))
        self._client._flush_flow(self)
        return callback

    async def _replay(self, callback: DataCallback, items: List[bytes]) -> None:
        for item in items:
            await _maybe_await(self._client._run_callback(callback, item))

    def on_close(self, callback: Optional[CloseCallback]) -> Optional[CloseCallback]:
        """Call ``callback(reason)`` once when the socket closes (``None`` = clean)."""
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        self._close_cb = callback
        if callback is not None and self._closed and not self._handed_over:
            result = self._client._run_callback(callback, self._close_reason)
            if inspect.isawaitable(result):
                self._client._spawn_task(_maybe_await(result))
        return callback

    def on_passive(self, callback: Optional[Callable[[], Any]]) -> Optional[Callable[[], Any]]:
        """Call ``callback()`` when an ``active=N`` count you set runs out."""
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        self._passive_cb = callback
        return callback

    # -- sending -----------------------------------------------------------
    def _check_open(self) -> None:
        if self._async_error is not None:
            err, self._async_error = self._async_error, None
            raise err
        if self._closed:
            if self._handed_over:
                raise SocketClosed(f"socket {self.id} was handed over to another client")
            if self._close_reason is not None:
                raise self._close_reason
            raise SocketClosed(f"socket {self.id} is closed")

    async def send(
        self,
        data: Union[bytes, bytearray, memoryview],
        *,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> None:
        """Send ``data``.

        While the socket is *busy* (the peer reads slowly and the daemon holds
        more than its high-water mark for it) this waits until it is ready
        again, up to ``timeout`` seconds (then :class:`~tlsport.errors.Timeout`);
        other sockets are not affected.  With ``wait=True`` it also waits for
        the daemon's acknowledgement and raises its error (e.g. ``emsgsize``).
        """
        payload = _args.check_data(data)
        timeout = _args.check_timeout(timeout)
        limit = _args.deliver_limit(self.mode, self._packet_size)
        if limit is not None and len(payload) > limit:
            raise ValueError(f"packet of {len(payload)} bytes is too long for mode {self.mode} (at most {limit})")
        self._check_open()
        if limit is None and len(payload) > _RAW_CHUNK:
            chunks = [payload[i : i + _RAW_CHUNK] for i in range(0, len(payload), _RAW_CHUNK)]
        else:
            chunks = [payload]
        deadline = None if timeout is None else time.monotonic() + timeout
        for i, chunk in enumerate(chunks):
            await self._wait_ready(deadline, timeout)
            if wait and i == len(chunks) - 1:
                await self._client._call({"op": "deliver", "id": self.id, "data": chunk})
            else:
                await self._client._write([encode_deliver(self.id, chunk)])

    async def _wait_ready(self, deadline: Optional[float], timeout: Optional[float]) -> None:
        while self._busy and not self._closed:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise Timeout(f"socket {self.id} stayed busy (peer not reading) for {timeout} s")
            try:
                await asyncio.wait_for(self._ready.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        self._check_open()

    @property
    def busy(self) -> bool:
        """Whether the daemon holds too much unsent data for this socket (slow peer)."""
        return self._busy

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        if busy:
            self._ready.clear()
        else:
            self._ready.set()

    # -- control -----------------------------------------------------------
    async def setopts(
        self,
        *,
        active: Active = _UNSET,
        packet_size: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> None:
        """Change the active mode (``True``, ``False``, ``"once"``, N) and/or ``packet_size``."""
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
        await self._client._drain()
        try:
            await asyncio.wait_for(asyncio.gather(*futures), timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"no reply to setopts within {timeout} s") from None

    async def controlling_process(self, to: Union[str, int], *, timeout: Optional[float] = None) -> List[bytes]:
        """Hand this socket to another client (name or number); returns the packets
        received before the handoff and not yet consumed."""
        target = _args.check_target(to)
        timeout = _args.check_timeout(timeout)
        self._check_open()
        client = self._client

        def done(reply: Reply) -> None:
            if target in (client.number, client.name):
                return
            client._forget(self.id)
            self._on_closed(None, handed_over=True)

        await client._call({"op": "controlling_process", "id": self.id, "to": target}, done, timeout=timeout)
        return self._flow.drain()

    async def close(self, *, timeout: Optional[float] = None) -> None:
        """Close in order (queued data, close_notify, TCP close). Idempotent."""
        timeout = _args.check_timeout(timeout)
        if self._closed:
            return
        client = self._client

        def done(reply: Reply) -> None:
            client._forget(self.id)
            self._on_closed(None)
            self._flow.drain()

        try:
            await client._call({"op": "close", "id": self.id}, done, timeout=timeout)
        except (SocketClosed, DaemonGone):
            pass
        except TlsportError as err:
            if err.kind != "no_such_socket":
                raise
            done(Reply(None, True, {}))

    async def peername(self, *, timeout: Optional[float] = None) -> Tuple[str, int]:
        """``(host, port)`` of the peer."""
        self._check_open()
        return await self._client._call({"op": "peername", "id": self.id}, _endpoint, timeout=timeout)

    async def sockname(self, *, timeout: Optional[float] = None) -> Tuple[str, int]:
        """``(host, port)`` of the local end."""
        self._check_open()
        return await self._client._call({"op": "sockname", "id": self.id}, _endpoint, timeout=timeout)

    async def info(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """TLS details (``protocol``, ``cipher``, ``peer_certificate`` ...)."""
        self._check_open()
        return await self._client._call({"op": "info", "id": self.id}, _args.reply_body, timeout=timeout)

    async def __aenter__(self) -> "AsyncSocket":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.close(timeout=10)
        except TlsportError:
            pass


class AsyncListener(ListenerBase):
    """A listening socket of an :class:`AsyncClient`."""

    _socket_class = AsyncSocket

    async def accept(
        self,
        timeout: Optional[float] = None,
        *,
        active: Optional[Active] = None,
        tls: TlsOptions = None,
    ) -> AsyncSocket:
        """The next connection whose handshake completed (see :meth:`tlsport.Listener.accept`)."""
        timeout = _args.check_timeout(timeout)
        mode: Active = self.active if active is None else _args.check_active(active)
        tls_value = _args.check_tls(tls, default=None)
        if self._closed:
            raise SocketClosed(f"listener {self.id} is closed")
        client = self._client
        cmd: Dict[str, Any] = {"op": "accept", "id": self.id, "active": client._initial_active(mode)}
        if tls_value is not None:
            cmd["tls"] = tls_value
        ref, fut = await client._send_command(cmd, self._socket_maker(mode))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:
            if not fut.done():
                await self._cancel(ref)
            raise
        await self._cancel(ref)
        try:
            return await asyncio.wait_for(fut, 10)
        except asyncio.TimeoutError:
            raise Timeout("accept was not answered after cancel") from None
        except TlsportError as err:
            if err.kind == "cancelled":
                raise Timeout(f"no connection within {timeout} s") from None
            raise

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
                if err.kind in ("closed", "not_owner", "no_such_socket", "cancelled"):
                    return
                raise
            yield sock

    async def sockname(self, *, timeout: Optional[float] = None) -> Tuple[str, int]:
        """``(host, port)`` listened on."""
        return await self._client._call({"op": "sockname", "id": self.id}, _endpoint, timeout=timeout)

    async def controlling_process(self, to: Union[str, int], *, timeout: Optional[float] = None) -> None:
        """Hand the listener to another client."""
        target = _args.check_target(to)
        client = self._client

        def done(reply: Reply) -> None:
            if target in (client.number, client.name):
                return
            client._forget(self.id)
            self._closed = True

        await client._call({"op": "controlling_process", "id": self.id, "to": target}, done, timeout=timeout)

    async def close(self, *, timeout: Optional[float] = None) -> None:
        """Stop listening; outstanding accepts raise :class:`~tlsport.errors.SocketClosed`."""
        if self._closed:
            return
        client = self._client

        def done(reply: Reply) -> None:
            client._forget(self.id)
            self._closed = True

        try:
            await client._call({"op": "close", "id": self.id}, done, timeout=timeout)
        except (SocketClosed, DaemonGone):
            self._closed = True

    async def __aenter__(self) -> "AsyncListener":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.close(timeout=10)
        except TlsportError:
            pass


class AsyncClient:
    """One control channel to a tlsportd daemon, for asyncio.

    Make one with ``await AsyncClient.spawn()`` or ``await AsyncClient.attach(path)``;
    use ``async with client:`` or ``await client.close()``.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        proc: Optional[asyncio.subprocess.Process] = None,
        description: str = "tlsportd",
        name: Optional[str] = None,
        window: int = DEFAULT_WINDOW,
        max_buffer: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._proc = proc
        self._description = description
        self._window = window
        self._max_bytes = max_buffer
        self._decoder = Decoder()
        self._refs = itertools.count(1)
        self._pending: Dict[Any, _Pending] = {}
        self._objects: Dict[int, Union[AsyncSocket, AsyncListener]] = {}
        self._gone: Optional[TlsportError] = None
        self._closing = False
        self._adopted: Deque[Union[AsyncSocket, AsyncListener]] = deque()
        self._adopt_event = asyncio.Event()
        self._adopt_cb: Optional[Callable[[Union[AsyncSocket, AsyncListener]], Any]] = None
        self._drain_lock = asyncio.Lock()
        self._tasks: "set[asyncio.Task[Any]]" = set()
        self._read_task: Optional["asyncio.Task[None]"] = None
        self.number: Optional[int] = None
        """This client's number (from ``hello``)."""
        self.name: Optional[str] = name
        """This client's name, if any."""
        self.version: Optional[str] = None
        """The daemon's version."""
        self.protocol: Optional[int] = None
        """The protocol version."""
        self.capabilities: List[str] = []
        """The daemon's capabilities."""

    async def _start(self, hello_timeout: Optional[float]) -> "AsyncClient":
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())
        try:
            hello: Dict[str, Any] = {"op": "hello"}
            if self.name is not None:
                hello["name"] = self.name
            reply = await self._call(hello, _args.reply_body, timeout=hello_timeout)
        except BaseException:
            await self.close()
            raise
        self.number = reply.get("client")
        self.version = reply.get("version")
        self.protocol = reply.get("protocol")
        self.capabilities = list(reply.get("capabilities", []))
        return self

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
        name = _args.check_name(name)
        _args.check_window(window, max_buffer)
        if isinstance(args, (str, bytes)) or not all(isinstance(a, str) for a in args):
            raise TypeError("args must be a sequence of strings")
        path = find_daemon(daemon)
        argv = [path]
        if unix_path is not None:
            argv += ["--unix", os.fspath(unix_path), "--stdio"]
        argv += list(args)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=None if env is None else dict(env),
        )
        assert proc.stdout is not None and proc.stdin is not None
        # The daemon listens on its Unix socket before it serves any channel: once
        # hello is answered, others can attach.
        client = cls(
            proc.stdout,
            proc.stdin,
            proc=proc,
            description=f"tlsportd (pid {proc.pid}, {path})",
            name=name,
            window=window,
            max_buffer=max_buffer,
        )
        return await client._start(30.0)

    @classmethod
    async def attach(
        cls,
        path: PathArg,
        *,
        name: Optional[str] = None,
        timeout: Optional[float] = 10.0,
        window: int = DEFAULT_WINDOW,
        max_buffer: int = DEFAULT_MAX_BYTES,
    ) -> "AsyncClient":
        """Connect to a running daemon's Unix socket."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a path, not {type(path).__name__}")
        name = _args.check_name(name)
        _args.check_window(window, max_buffer)
        timeout = _args.check_timeout(timeout)
        spath = os.fspath(path)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(spath), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise DaemonGone(f"cannot connect to the daemon at {spath}: {exc!r}") from exc
        client = cls(reader, writer, description=f"the daemon at {spath}", name=name, window=window, max_buffer=max_buffer)
        return await client._start(timeout)

    # -- plumbing ------------------------------------------------------------
    def _spawn_task(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _run_callback(self, cb: Callable[..., Any], *args: Any) -> Any:
        try:
            result = cb(*args)
        except Exception:
            log.exception("tlsport callback %r raised", cb)
            return None
        if inspect.isawaitable(result):
            return self._guard(result)
        return None

    async def _guard(self, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except Exception:
            log.exception("tlsport callback raised")

    def _write_now(self, frames: Sequence[bytes]) -> None:
        if self._gone is not None:
            raise self._gone
        try:
            for frame in frames:
                self._writer.write(frame)
        except (OSError, RuntimeError) as exc:
            raise DaemonGone(f"writing to the daemon failed: {exc}") from exc

    async def _drain(self) -> None:
        async with self._drain_lock:
            try:
                await self._writer.drain()
            except (OSError, RuntimeError) as exc:
                # The reader task sees the end of output at once and knows how it ended.
                task = self._read_task
                if task is not None and task is not asyncio.current_task():
                    try:
                        await asyncio.wait_for(asyncio.shield(task), 2)
                    except (asyncio.TimeoutError, Exception):
                        pass
                raise self._gone or DaemonGone(f"writing to the daemon failed: {exc}") from exc

    async def _write(self, frames: Sequence[bytes]) -> None:
        self._write_now(frames)
        await self._drain()

    def _register(self, transform: Optional[Callable[[Reply], Any]], future: bool = True) -> Tuple[int, Optional["asyncio.Future[Any]"]]:
        if self._gone is not None:
            raise self._gone
        fut = asyncio.get_running_loop().create_future() if future else None
        ref = next(self._refs)
        self._pending[ref] = _Pending(fut, transform)
        return ref, fut

    async def _send_command(
        self,
        cmd: Dict[str, Any],
        transform: Optional[Callable[[Reply], Any]] = None,
        frames_before: Sequence[bytes] = (),
    ) -> Tuple[int, "asyncio.Future[Any]"]:
        ref, fut = self._register(transform)
        assert fut is not None
        try:
            frame = encode_command({**cmd, "ref": ref})
            self._write_now([*frames_before, frame])
        except BaseException:
            self._pending.pop(ref, None)
            raise
        await self._drain()
        return ref, fut

    async def _call(
        self,
        cmd: Dict[str, Any],
        transform: Optional[Callable[[Reply], _T]] = None,
        *,
        timeout: Optional[float] = None,
        frames_before: Sequence[bytes] = (),
    ) -> _T:
        timeout = _args.check_timeout(timeout)
        ref, fut = await self._send_command(cmd, transform, frames_before)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self._pending.pop(ref, None)
            raise Timeout(f"no reply to {cmd.get('op')} within {timeout} s") from None

    def _initial_active(self, active: Active) -> Active:
        return self._window if active is True else active

    def _register_socket(self, obj: Union[AsyncSocket, AsyncListener]) -> None:
        self._objects[obj.id] = obj
        if isinstance(obj, AsyncSocket):
            self._flush_flow(obj)

    def _forget(self, sid: int) -> None:
        self._objects.pop(sid, None)

    def _flush_flow(
        self,
        sock: AsyncSocket,
        *,
        new_active: Any = _UNSET,
        extra: Optional[Dict[str, Any]] = None,
        wait: bool = False,
    ) -> List["asyncio.Future[Any]"]:
        """Write the setopts the socket's flow state calls for (no waiting)."""
        futures: List["asyncio.Future[Any]"] = []
        if sock._closed or self._gone is not None:
            if wait:
                raise self._gone or SocketClosed(f"socket {sock.id} is closed")
            return futures
        if new_active is not _UNSET:
            sock._flow.set_active(new_active)
        elif not extra and not sock._flow.wants_flush():
            return futures
        cmds = sock._flow.take_commands()
        if extra:
            cmds.append((dict(extra), None))
        frames = []
        for body, tag in cmds:
            hook = _ack_hook(sock, tag) if tag is not None else None
            ref, fut = self._register(hook, future=wait)
            if fut is not None:
                futures.append(fut)
            frames.append(encode_command({"op": "setopts", "id": sock.id, "ref": ref, **body}))
        self._write_now(frames)
        return futures

    @property
    def buffered_bytes(self) -> int:
        """Bytes received on all sockets and not yet consumed."""
        return sum(o.buffered_bytes for o in self._objects.values() if isinstance(o, AsyncSocket))

    # -- reading -------------------------------------------------------------
    async def _read_loop(self) -> None:
        error: Optional[TlsportError] = None
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    break
                self._decoder.receive_data(data)
                for msg in self._decoder:
                    pending = self._dispatch(msg)
                    if pending is not None:
                        await pending
        except CodecError as exc:
            error = ProtocolError(f"bad data from the daemon: {exc}")
        except OSError as exc:
            if not self._closing:
                error = DaemonGone(f"reading from the daemon failed: {exc}")
        except asyncio.CancelledError:
            error = SocketClosed("the client was closed")
        except BaseException as exc:  # pragma: no cover
            log.exception("tlsport reader task crashed")
            error = DaemonGone(f"the tlsport reader task crashed: {exc!r}")
        if error is None:
            if self._closing:
                error = SocketClosed("the client was closed")
            else:
                code: Optional[int] = None
                if self._proc is not None:
                    try:
                        code = await asyncio.wait_for(self._proc.wait(), 1.0)
                    except asyncio.TimeoutError:
                        code = None
                    error = DaemonGone(f"{self._description} {_args.exit_description(code)}")
                else:
                    error = DaemonGone(f"{self._description} closed the connection")
        self._fail_all(error)

    def _fail_all(self, error: TlsportError) -> None:
        if self._gone is None:
            self._gone = error
        pending = list(self._pending.values())
        self._pending.clear()
        objs = list(self._objects.values())
        self._objects.clear()
        self._adopt_event.set()
        for p in pending:
            if p.future is not None and not p.future.done():
                p.future.set_exception(error)
        for obj in objs:
            result = obj._on_closed(error)
            if inspect.isawaitable(result):
                self._spawn_task(result)

    def _dispatch(self, msg: Any) -> Any:
        if isinstance(msg, Data):
            obj = self._objects.get(msg.socket_id)
            if isinstance(obj, AsyncSocket):
                return obj._feed(msg.data)
            return None
        if isinstance(msg, Reply):
            self._on_reply(msg)
            return None
        if isinstance(msg, Event):
            return self._on_event(msg)
        return None

    def _on_reply(self, reply: Reply) -> None:
        if reply.ref is None:
            if not reply.ok:
                err = error_from_reply(reply.body)
                sid = reply.body.get("id")
                obj = self._objects.get(sid) if isinstance(sid, int) else None
                if isinstance(obj, AsyncSocket):
                    obj._on_async_error(err)
                elif isinstance(sid, int):  # a deliver that raced with the socket's close
                    log.debug("tlsportd: %s", err)
                else:
                    log.warning("tlsportd: %s", err)
            return
        pending = self._pending.pop(reply.ref, None)
        if pending is None:
            return
        fut = pending.future
        if fut is not None and fut.done():  # cancelled by a timeout
            fut = None
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

    def _on_event(self, event: Event) -> Any:
        name, sid = event.name, event.socket_id
        if name == "owned" and sid is not None:
            return self._on_owned(event)
        obj = self._objects.get(sid) if sid is not None else None
        if obj is None:
            return None
        if name == "socket_closed":
            del self._objects[sid]  # type: ignore[arg-type]
            reason = event.body.get("reason")
            err = None if reason == "normal" else error_from_reply({"error": reason})
            return obj._on_closed(err)
        if name == "passive" and isinstance(obj, AsyncSocket):
            return obj._on_passive()
        if name in ("busy", "ready") and isinstance(obj, AsyncSocket):
            obj._set_busy(name == "busy")
        return None

    def _on_owned(self, event: Event) -> Any:
        body = event.body
        sid = int(body["id"])
        prev = (int(body.get("from", 0)), body.get("from_name"))
        obj: Union[AsyncSocket, AsyncListener]
        if body.get("listener"):
            sockname = _args.peer_tuple(body.get("sockname"))
            obj = AsyncListener(self, sid, sockname[1] if sockname else 0, None, previous_owner=prev)
        else:
            mode = body.get("mode")
            obj = AsyncSocket(self, sid, mode if isinstance(mode, str) else None, _args.peer_tuple(body.get("peer")), previous_owner=prev)
            obj._set_busy(bool(body.get("busy")))
        self._register_socket(obj)
        if self._adopt_cb is not None:
            return self._run_callback(self._adopt_cb, obj)
        self._adopted.append(obj)
        self._adopt_event.set()
        return None

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
        timeout: Optional[float] = None,
    ) -> AsyncListener:
        """Listen on ``host:port`` (see :meth:`tlsport.Client.listen`)."""
        cmd = _args.listen_command(port, host, tls, mode, backlog, packet_size, handshake_timeout)
        active = _args.check_active(active)
        norm = cmd["mode"]

        def make(reply: Reply) -> AsyncListener:
            lst = AsyncListener(
                self, int(reply.body["id"]), int(reply.body["port"]), norm, packet_size=packet_size, active=active
            )
            self._register_socket(lst)
            return lst

        return await self._call(cmd, make, timeout=timeout)

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
    ) -> AsyncSocket:
        """Connect and complete the TLS handshake (see :meth:`tlsport.Client.connect`)."""
        cmd = _args.connect_command(host, port, tls, mode, timeout, packet_size)
        active = _args.check_active(active)
        cmd["active"] = self._initial_active(active)
        norm = cmd["mode"]

        def make(reply: Reply) -> AsyncSocket:
            sock = AsyncSocket(self, int(reply.body["id"]), norm, _args.peer_tuple(reply.body.get("peer")), packet_size=packet_size)
            sock._flow.created_with(active)
            self._register_socket(sock)
            return sock

        limit = None if timeout is None else timeout + 10.0
        return await self._call(cmd, make, timeout=limit)

    async def resolve(self, address: Optional[str] = None, *, timeout: Optional[float] = None) -> str:
        """This host's official name, or the name of ``address``."""
        cmd: Dict[str, Any] = {"op": "resolve"}
        if address is not None:
            cmd["address"] = _args.check_host(address, "address")
        return await self._call(cmd, lambda r: str(r.body.get("name")), timeout=timeout)

    async def adopt(self, timeout: Optional[float] = None) -> Union[AsyncSocket, AsyncListener]:
        """Wait for a socket (or listener) handed to this client."""
        timeout = _args.check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._adopted:
            if self._gone is not None:
                raise self._gone
            self._adopt_event.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise Timeout(f"no socket was handed over within {timeout} s")
            try:
                await asyncio.wait_for(self._adopt_event.wait(), remaining)
            except asyncio.TimeoutError:
                raise Timeout(f"no socket was handed over within {timeout} s") from None
        return self._adopted.popleft()

    def on_adopt(self, callback: Optional[Callable[[Union[AsyncSocket, AsyncListener]], Any]]) -> Any:
        """Call ``callback(sock)`` for each socket handed to this client."""
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        self._adopt_cb = callback
        if callback is not None:
            while self._adopted:
                result = self._run_callback(callback, self._adopted.popleft())
                if result is not None:
                    self._spawn_task(result)
        return callback

    async def stop(self, *, timeout: Optional[float] = 10.0) -> None:
        """Ask the daemon to close everything and exit."""
        try:
            await self._call({"op": "stop"}, timeout=timeout)
        except DaemonGone:
            pass

    @property
    def closed(self) -> bool:
        """Whether the control channel is closed (or the daemon gone)."""
        return self._gone is not None

    @property
    def pid(self) -> Optional[int]:
        """The spawned daemon's pid (``None`` when attached)."""
        return self._proc.pid if self._proc is not None else None

    async def close(self) -> None:
        """Close the control channel (the daemon closes this client's sockets;
        a spawned daemon exits)."""
        if self._closing:
            return
        self._closing = True
        try:
            self._writer.close()
        except (OSError, RuntimeError):
            pass
        if self._read_task is not None and self._read_task is not asyncio.current_task():
            try:
                await asyncio.wait_for(asyncio.shield(self._read_task), 5)
            except (asyncio.TimeoutError, Exception):
                self._read_task.cancel()
        if self._gone is None:
            self._fail_all(SocketClosed("the client was closed"))
        if self._proc is not None:
            try:  # in port mode the daemon exits within a second of its stdin's EOF
                await asyncio.wait_for(self._proc.wait(), 2)
            except asyncio.TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        else:
            try:
                await asyncio.wait_for(self._writer.wait_closed(), 5)
            except (OSError, asyncio.TimeoutError, RuntimeError):
                pass

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<tlsport.AsyncClient number={self.number} name={self.name!r} {'closed' if self.closed else 'open'}>"


def _ack_hook(sock: AsyncSocket, tag: Tag) -> Callable[[Reply], None]:
    def hook(reply: Reply) -> None:
        sock._acked(tag)

    return hook


async def spawn(daemon: Optional[PathArg] = None, **kwargs: Any) -> AsyncClient:
    """Shorthand for :meth:`AsyncClient.spawn`."""
    return await AsyncClient.spawn(daemon, **kwargs)


async def attach(path: PathArg, **kwargs: Any) -> AsyncClient:
    """Shorthand for :meth:`AsyncClient.attach`."""
    return await AsyncClient.attach(path, **kwargs)
