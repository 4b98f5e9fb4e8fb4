"""The asyncio transport of :class:`tlsport.aio.AsyncClient`.

:class:`AioTransport` drives the client's sans-io
:class:`~tlsport._session.Session` over a stream pair (a spawned daemon's
stdin/stdout, or a Unix socket).  A reader task feeds the session the
daemon's output and carries out what it says: it settles futures, wakes the
tasks waiting on a socket, and runs callbacks, awaiting those that are
coroutines (which pauses reading).  What the session wants sent is written at
once: asyncio writes do not block.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple, TypeVar

from . import _args
from ._flow import DEFAULT_MAX_BYTES, DEFAULT_WINDOW
from ._objects import ClientBase
from ._session import Entry, Session, SocketEntry
from .errors import DaemonGone, SocketClosed, Timeout, TlsportError

__all__ = ["AioTransport", "maybe_await", "wait_event"]

log = logging.getLogger("tlsport")

_READ_SIZE = 256 * 1024
_Client = TypeVar("_Client", bound="AioTransport")


async def maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


async def wait_event(event: asyncio.Event, deadline: Optional[float], message: str) -> None:
    """Wait until ``event`` is set again (raise :class:`Timeout` with ``message`` at ``deadline``)."""
    event.clear()
    try:
        await asyncio.wait_for(event.wait(), _args.remaining(deadline, message))
    except asyncio.TimeoutError:
        raise Timeout(message) from None


class AioTransport(ClientBase):
    """A client's streams, reader task and futures (see the module's documentation)."""

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
        grace_ms: Optional[int] = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._proc = proc
        self._description = description
        self._session = Session(name, window=window, max_bytes=max_buffer, grace_ms=grace_ms)
        self._session_lock = contextlib.nullcontext()  # one task at a time touches it
        self._closing = False
        self._adopt_event = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        self._tasks: "set[asyncio.Task[Any]]" = set()
        self._read_task: "Optional[asyncio.Task[None]]" = None

    async def _open(self: _Client, hello_timeout: Optional[float]) -> _Client:
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

    def _flush(self) -> None:
        """Write what the session queued (asyncio writes do not block)."""
        frames = self._session.data_to_send()
        if frames:
            try:
                self._writer.writelines(frames)
            except (OSError, RuntimeError) as exc:
                raise DaemonGone(f"writing to the daemon failed: {exc}") from exc

    def _kick(self) -> None:
        """Send what the session wants sent unasked (flow credits)."""
        if self._session.has_output:
            try:
                self._flush()
            except TlsportError:
                pass  # the reader sees the end

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
        self._flush()
        await self._drain()

    async def _read_loop(self) -> None:
        error: Optional[TlsportError] = None
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    break
                self._session.receive_data(data)
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
        try:
            self._writer.close()
        except (OSError, RuntimeError):
            pass
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
        else:
            try:
                await asyncio.wait_for(self._writer.wait_closed(), 5)
            except (OSError, asyncio.TimeoutError, RuntimeError):
                pass
