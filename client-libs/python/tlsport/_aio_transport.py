"""The asyncio transport of :class:`tlsport.aio.AsyncClient`.

:class:`AioTransport` drives the client's sans-io
:class:`~tlsport._session.Session` over a stream pair (a spawned daemon's
stdin/stdout, or a Unix socket).  A reader task feeds the session the
daemon's output and carries out what it says: it settles futures, wakes the
tasks waiting on a socket, and runs callbacks, awaiting those that are
coroutines (which pauses reading).  What the session wants sent is written at
once: asyncio writes do not block.

The channel is always a stream socket (a spawned daemon gets one end of a
socket pair as its stdin and stdout) read with a :class:`asyncio.BufferedProtocol`
into one reused buffer: asyncio's own reads allocate 256 KiB per read, which
glibc serves with mmap and munmap unless the process happened to raise its
mmap threshold first (measured: the library's bulk throughput fell from about
270 to about 105 MB/s in the processes where it had not).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple, TypeVar

from . import _args
from ._flow import DEFAULT_MAX_BYTES, DEFAULT_WINDOW
from ._objects import ClientBase
from ._session import Entry, Session, SocketEntry
from .errors import DaemonGone, SocketClosed, Timeout, TlsportError

__all__ = ["AioTransport", "maybe_await", "wait_event"]

log = logging.getLogger("tlsport")

_READ_SIZE = 256 * 1024
_PAUSE_AT = 1 << 20  # undecoded bytes at which reading pauses while callbacks run
_WRITE_AT = 64 * 1024  # delivered bytes written at once rather than at the end of the turn
_Client = TypeVar("_Client", bound="AioTransport")


async def maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


async def wait_event(event: asyncio.Event, deadline: Optional[float], message: str) -> None:
    """Wait until ``event`` is set again (raise :class:`Timeout` with ``message`` at ``deadline``)."""
    event.clear()
    if deadline is None:
        await event.wait()
        return
    try:
        await asyncio.wait_for(event.wait(), _args.remaining(deadline, message))
    except asyncio.TimeoutError:
        raise Timeout(message) from None


class Channel(asyncio.BufferedProtocol):
    """The control channel's socket: what arrives goes straight into the
    session's decoder, the reader task is woken, and reading pauses while that
    task is busy (running callbacks) with more than ``_PAUSE_AT`` undecoded."""

    def __init__(self, session: Session, half_close: bool) -> None:
        self._session = session
        self._half_close = half_close  # a spawned daemon: close only our writing side first
        self._buffer = memoryview(bytearray(_READ_SIZE))
        self._transport: Optional[asyncio.Transport] = None
        self._fresh = False  # bytes arrived since the reader last looked
        self._ended = False
        self._paused = False
        self._waiter: "Optional[asyncio.Future[None]]" = None
        self._write_paused = False
        self._drain_waiters: "list[asyncio.Future[None]]" = []
        self.lost: Optional[Exception] = None
        self.closed: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()

    # -- asyncio's side -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._session.receive_data(self._buffer[:nbytes])  # copied into the decoder
        self._fresh = True
        if self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(None)
        elif self._session.buffered_input > _PAUSE_AT and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True

    def eof_received(self) -> bool:
        self._end()
        return False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.lost = exc or ConnectionResetError("the control channel was closed")
        self._end()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(self.lost)
        self._drain_waiters.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    def _end(self) -> None:
        self._ended = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- the client's side ---------------------------------------------------------
    async def arrived(self) -> bool:
        """Wait until bytes arrive (``True``) or the channel ends (``False``)."""
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        if not self._fresh and not self._ended:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        fresh, self._fresh = self._fresh, False
        return fresh

    def write(self, frames: "list[bytes]") -> None:
        if self._transport is None or self.lost is not None:
            raise ConnectionResetError("the control channel was closed")
        self._transport.writelines(frames)

    async def drain(self) -> None:
        """Wait while the socket's send buffer is over its high-water mark."""
        if self.lost is not None:
            raise self.lost
        if self._write_paused:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def finish_writing(self) -> None:
        """We are done: a spawned daemon sees the end of its stdin and we read what
        it still says until it exits; an attached channel is simply closed."""
        if self._transport is None:
            return
        if self._half_close and self.lost is None:
            try:
                self._transport.write_eof()
                return
            except (OSError, RuntimeError):
                pass
        self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_channel(session: Session, sock: socket.socket, half_close: bool) -> Channel:
    """Serve the connected stream socket ``sock`` as ``session``'s channel."""
    channel = Channel(session, half_close)
    await asyncio.get_running_loop().connect_accepted_socket(lambda: channel, sock)
    return channel


class AioTransport(ClientBase):
    """A client's streams, reader task and futures (see the module's documentation)."""

    def __init__(
        self,
        *,
        proc: Optional[asyncio.subprocess.Process] = None,
        description: str = "tlsportd",
        name: Optional[str] = None,
        window: int = DEFAULT_WINDOW,
        max_buffer: int = DEFAULT_MAX_BYTES,
        grace_ms: Optional[int] = None,
    ) -> None:
        self._proc = proc
        self._description = description
        self._session = Session(name, window=window, max_bytes=max_buffer, grace_ms=grace_ms)
        self._session_lock = contextlib.nullcontext()  # one task at a time touches it
        self._channel: Optional[Channel] = None
        self._write_due = False  # _write_out is scheduled
        self._unwritten = 0  # bytes delivered since the last write
        self._closing = False
        self._adopt_event = asyncio.Event()
        self._tasks: "set[asyncio.Task[Any]]" = set()
        self._read_task: "Optional[asyncio.Task[None]]" = None

    async def _open(self: _Client, sock: socket.socket, hello_timeout: Optional[float]) -> _Client:
        try:
            self._channel = await open_channel(self._session, sock, half_close=self._proc is not None)
        except BaseException:
            sock.close()
            await self.close()
            raise
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())
        try:
            await self._call(self._session.hello_command(), timeout=hello_timeout)
        except BaseException:
            await self.close()
            raise
        return self

    def _spawn_task(self, coro: Awaitable[Any]) -> "asyncio.Task[Any]":
        """Run callbacks (``coro``) in a task of their own."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _in_callback(self) -> bool:
        """Whether this runs in a callback: in the reader task (which then reads
        nothing) or in a task that runs callbacks the reader may wait for."""
        task = asyncio.current_task()
        return task is not None and (task is self._read_task or task in self._tasks)

    def _check_may_wait(self, op: Any) -> None:
        if self._in_callback():
            raise RuntimeError(f"{op}() waits for a reply and cannot be awaited in a tlsport callback")

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

    def _run_in_order(self, entry: Optional[SocketEntry], callback: Callable[..., Any], args: Tuple[Any, ...]) -> Any:
        replay = getattr(entry.handle, "_replay", None) if entry is not None else None
        if replay is not None and not replay.done():  # on_data is still delivering queued packets
            return self._after(replay, callback, args)
        return self._run_callback(callback, *args)

    async def _after(self, first: "asyncio.Task[Any]", callback: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        await asyncio.wait({first})
        await maybe_await(self._run_callback(callback, *args))

    def _answer_later(self, ask: Any, awaitable: Awaitable[Any]) -> None:
        """A coroutine callback runs in a task of its own: reading goes on meanwhile."""

        async def answer() -> None:
            try:
                value = await awaitable
            except Exception:
                log.exception("tlsport %s callback %r raised", ask.what, ask.callback)
                value = None
            self._answer(ask, value)

        self._spawn_task(answer())

    def _wake(self, entry: Optional[Entry]) -> None:
        event = self._adopt_event if entry is None else getattr(entry.handle, "_changed", None)
        if event is not None:
            event.set()

    def _flush(self, size: int = 0) -> None:
        """Have what the session queued written once the running callbacks and
        tasks of this turn of the event loop are done: the sends of many tasks
        woken by one read from the daemon then leave in one system call. Past
        ``_WRITE_AT`` bytes (``size``: what was just queued) it is written at
        once, so a sender that never yields still meets the socket's flow control."""
        channel = self._channel
        if channel is None or channel.lost is not None:
            raise DaemonGone(f"writing to the daemon failed: {channel.lost if channel else 'not open'}")
        self._unwritten += size
        if self._unwritten >= _WRITE_AT:
            self._write_out()
        elif not self._write_due:
            self._write_due = True
            asyncio.get_running_loop().call_soon(self._write_out)

    def _write_out(self) -> None:
        self._write_due = False
        self._unwritten = 0
        frames = self._session.data_to_send()
        if frames and self._channel is not None:
            try:
                self._channel.write(frames)
            except (OSError, RuntimeError):
                pass  # the reader task sees the end and fails what waits

    def _kick(self) -> None:
        """Send what the session wants sent unasked (flow credits)."""
        if self._session.has_output:
            try:
                self._flush()
            except TlsportError:
                pass  # the reader sees the end

    async def _drain(self) -> None:
        try:
            assert self._channel is not None
            await self._channel.drain()
        except (OSError, RuntimeError) as exc:
            # The reader task sees the end of output at once and knows how it ended.
            task = self._read_task
            if task is not None and task is not asyncio.current_task():
                try:
                    await asyncio.wait_for(asyncio.shield(task), 2)
                except (asyncio.TimeoutError, Exception):
                    pass
            raise self._session.gone or DaemonGone(f"writing to the daemon failed: {exc}") from exc

    async def _begin(self, cmd: Dict[str, Any], waiter: bool = True) -> "Tuple[int, Optional[asyncio.Future[Any]]]":
        """Send a command; returns its ref and the future of its outcome (``None``
        when nobody waits)."""
        fut = asyncio.get_running_loop().create_future() if waiter else None
        ref = self._session.call(cmd, fut)
        self._flush()
        await self._drain()
        return ref, fut

    async def _call(self, cmd: Dict[str, Any], *, timeout: Optional[float] = None) -> Any:
        """Send a command and wait for its value (see :meth:`Session.call`)."""
        self._check_may_wait(cmd.get("op"))
        timeout = _args.check_timeout(timeout)
        ref, fut = await self._begin(cmd)
        try:
            return await asyncio.wait_for(fut, timeout)  # type: ignore[arg-type]
        except asyncio.TimeoutError:
            self._session.abandon(ref)
            raise Timeout(f"no reply to {cmd.get('op')} within {timeout} s") from None
        except asyncio.CancelledError:
            self._session.abandon(ref)
            raise

    async def _deliver(self, entry: SocketEntry, chunk: bytes) -> None:
        self._session.deliver(entry, chunk)
        self._flush(len(chunk))
        await self._drain()

    async def _read_loop(self) -> None:
        error: Optional[TlsportError] = None
        channel = self._channel
        assert channel is not None
        try:
            while await channel.arrived():
                while True:
                    outcomes = self._session.next_outcomes()
                    if outcomes is None:
                        break
                    for pending in self._carry_out(outcomes):
                        await pending
                    self._kick()
        except asyncio.CancelledError:
            error = SocketClosed("the client was closed")
        except BaseException as exc:  # never hang the callers
            error = self._read_error(exc)
        if error is None:
            error = SocketClosed("the client was closed") if self._closing else DaemonGone(await self._gone_message())
        self._fail_all(error)

    async def _gone_message(self) -> str:
        if self._proc is None:
            return f"{self._description} closed the connection"
        try:
            code: Optional[int] = await asyncio.wait_for(self._proc.wait(), 1.0)
        except asyncio.TimeoutError:
            code = None
        return f"{self._description} {_args.exit_description(code)}"

    def _fail_all(self, error: TlsportError) -> None:
        for pending in self._carry_out(self._session.fail(error)):
            self._spawn_task(pending)

    @property
    def pid(self) -> Optional[int]:
        """The spawned daemon's pid (``None`` when attached)."""
        return self._proc.pid if self._proc is not None else None

    async def close(self) -> None:
        """Close the control channel (the daemon closes this client's sockets, or
        with a grace period keeps them for a successor; a spawned daemon exits)."""
        if self._closing:
            return
        self._closing = True
        if self._channel is not None:
            if self._write_due:
                self._write_out()
            self._channel.finish_writing()
        if self._read_task is not None and self._read_task is not asyncio.current_task():
            try:
                await asyncio.wait_for(asyncio.shield(self._read_task), 5)
            except (asyncio.TimeoutError, Exception):
                self._read_task.cancel()
        if self._session.gone is None:
            self._fail_all(SocketClosed("the client was closed"))
        if self._proc is not None:
            try:  # in port mode the daemon exits within a second of its stdin's EOF
                await asyncio.wait_for(self._proc.wait(), 2)
            except asyncio.TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._channel is not None:
            self._channel.abort()
            try:
                await asyncio.wait_for(asyncio.shield(self._channel.closed), 5)
            except asyncio.TimeoutError:
                pass
