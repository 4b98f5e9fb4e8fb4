"""The threaded transport of :class:`tlsport.Client`.

A channel carries the bytes: a spawned daemon's stdin/stdout
(:class:`PipeChannel`) or a daemon's Unix socket (:class:`UnixChannel`), with
blocking reads and writes.  :class:`SyncTransport` drives the client's sans-io
:class:`~tlsport._session.Session` over it.  A reader thread feeds the session
the daemon's output and carries out what it says: it settles the futures of
waiting calls, wakes the threads waiting on a socket, and runs callbacks.  A
writer thread sends what the session wants sent unasked (the ``setopts``
credits that keep each socket's queue bounded, see :mod:`tlsport._flow`), so
that the reader never waits for a write.  The session is only touched under
the client's lock.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import socket as _socket
import subprocess
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from . import _args
from ._flow import DEFAULT_MAX_BYTES, DEFAULT_WINDOW
from ._objects import ClientBase
from ._session import Entry, Session, SocketEntry
from .errors import DaemonGone, SocketClosed, Timeout, TlsportError

__all__ = ["PipeChannel", "UnixChannel", "Channel", "SyncTransport"]

log = logging.getLogger("tlsport")

_READ_SIZE = 256 * 1024
_callback_state = threading.local()  # .depth > 0 while a user callback runs


class PipeChannel:
    """A spawned tlsportd speaking on its stdin/stdout."""

    @classmethod
    def start(cls, path: str, argv: List[str], env: Optional[Mapping[str, str]], stderr: Any) -> "PipeChannel":
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=None if env is None else dict(env), bufsize=0
        )
        return cls(proc, path)

    def __init__(self, proc: "subprocess.Popen[bytes]", path: str) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.path = path
        self._in = proc.stdin.fileno()
        self._out = proc.stdout.fileno()

    def read_into(self, buffer: memoryview) -> int:
        return os.readv(self._out, [buffer])

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


class UnixChannel:
    """A connection to a daemon's Unix socket."""

    @classmethod
    def connect(cls, path: str, timeout: Optional[float]) -> "UnixChannel":
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.settimeout(None)
        except OSError as exc:
            sock.close()
            raise DaemonGone(f"cannot connect to the daemon at {path}: {exc}") from exc
        return cls(sock, path)

    def __init__(self, sock: _socket.socket, path: str) -> None:
        self.sock = sock
        self.path = path

    def read_into(self, buffer: memoryview) -> int:
        return self.sock.recv_into(buffer)

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


Channel = Union[PipeChannel, UnixChannel]


class SyncTransport(ClientBase):
    """A client's channel, threads, lock and futures (see the module's documentation)."""

    def __init__(
        self,
        channel: Channel,
        *,
        name: Optional[str] = None,
        window: int = DEFAULT_WINDOW,
        max_buffer: int = DEFAULT_MAX_BYTES,
        hello_timeout: Optional[float] = 30.0,
        grace_ms: Optional[int] = None,
    ) -> None:
        self._chan = channel
        self._session = Session(name, window=window, max_bytes=max_buffer, grace_ms=grace_ms)
        self._lock = threading.Lock()  # the session's
        self._session_lock = self._lock
        self._write_lock = threading.Lock()  # frames leave in the order the session queued them
        self._adopt_cond = threading.Condition(self._lock)
        self._out_cond = threading.Condition(threading.Lock())
        self._out_due = False
        self._out_stop = False
        self._closing = False
        self._reader = threading.Thread(target=self._read_loop, name="tlsport-reader", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="tlsport-writer", daemon=True)
        self._reader.start()
        self._writer.start()
        try:
            self._call(self._session.hello_command(), timeout=hello_timeout)
        except BaseException:
            self.close()
            raise

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

    def _run_in_order(self, entry: Optional[SocketEntry], callback: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        sock = entry.handle if entry is not None else None
        if sock is None:
            self._run_callback(callback, *args)
            return
        with sock._cb_lock:
            self._run_callback(callback, *args)

    def _answer_later(self, ask: Any, awaitable: Any) -> None:
        log.error("tlsport %s callback %r returned an awaitable: the threaded client needs a plain function", ask.what, ask.callback)
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()
        self._answer(ask, None)

    def _wake(self, entry: Optional[Entry]) -> None:
        cond = self._adopt_cond if entry is None else getattr(entry.handle, "_cond", None)
        if cond is not None:
            with self._lock:
                cond.notify_all()

    def _begin(self, cmd: Dict[str, Any], waiter: bool = True) -> Tuple[int, "Optional[concurrent.futures.Future[Any]]"]:
        """Send a command; returns its ref and the future of its outcome (``None``
        when nobody waits)."""
        fut: "Optional[concurrent.futures.Future[Any]]" = concurrent.futures.Future() if waiter else None
        with self._lock:
            ref = self._session.call(cmd, fut)
        self._flush()
        return ref, fut

    def _call(self, cmd: Dict[str, Any], *, timeout: Optional[float] = None) -> Any:
        """Send a command and wait for its value (see :meth:`Session.call`)."""
        if self._in_callback():
            raise RuntimeError(f"{cmd.get('op')}() waits for a reply and cannot be called from a tlsport callback")
        timeout = _args.check_timeout(timeout)
        ref, fut = self._begin(cmd)
        assert fut is not None
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            if self._abandon(ref):
                raise Timeout(f"no reply to {cmd.get('op')} within {timeout} s") from None
        return fut.result()  # the reply came as we gave up: it is being set

    def _abandon(self, ref: int) -> bool:
        with self._lock:
            return self._session.abandon(ref)

    def _deliver(self, entry: SocketEntry, chunk: bytes) -> None:
        with self._lock:
            self._session.deliver(entry, chunk)
        self._flush()

    def _flush(self) -> None:
        """Write what the session queued.  The write lock is taken first, so that
        frames leave in the order in which the session decided them."""
        try:
            with self._write_lock:
                with self._lock:
                    frames = self._session.data_to_send()
                for frame in frames:
                    self._chan.write(frame)
        except OSError as exc:
            # The reader sees the end of the daemon's output at once and knows how it ended.
            if not self._on_reader_thread():
                self._reader.join(2.0)
            raise self._session.gone or DaemonGone(f"writing to the daemon failed: {exc}") from exc

    def _kick(self) -> None:
        """Have the writer thread send what the session wants sent unasked."""
        if self._session.has_output:
            with self._out_cond:
                self._out_due = True
                self._out_cond.notify()

    def _write_loop(self) -> None:
        while True:
            with self._out_cond:
                while not self._out_due and not self._out_stop:
                    self._out_cond.wait()
                if self._out_stop:
                    return
                self._out_due = False
            try:
                self._flush()
            except TlsportError:
                pass
            except Exception:
                log.exception("tlsport flow control failed")

    def _read_loop(self) -> None:
        error: Optional[TlsportError] = None
        # One reused buffer: a fresh 256 KiB bytes object per read is served by
        # mmap and munmap in glibc (see _aio_transport).
        buffer = memoryview(bytearray(_READ_SIZE))
        try:
            while True:
                n = self._chan.read_into(buffer)
                if not n:
                    break
                with self._lock:
                    self._session.receive_data(buffer[:n])
                while True:
                    with self._lock:
                        outcomes = self._session.next_outcomes()
                    if outcomes is None:
                        break
                    self._carry_out(outcomes)
                self._kick()
        except BaseException as exc:  # never hang the callers
            error = self._read_error(exc)
        if error is None:
            error = SocketClosed("the client was closed") if self._closing else DaemonGone(self._chan.gone_message())
        self._fail_all(error)
        if self._closing:
            self._chan.finish()

    def _fail_all(self, error: TlsportError) -> None:
        with self._lock:
            outcomes = self._session.fail(error)
        with self._out_cond:
            self._out_stop = True
            self._out_cond.notify()
        self._carry_out(outcomes)

    def close(self) -> None:
        """Close the control channel: the daemon closes every socket this client owns
        (and a spawned daemon exits).  Pending calls fail with SocketClosed.  With
        a grace period the daemon keeps the sockets for a successor instead (close
        them first to end them)."""
        if self._closing:
            return
        self._closing = True
        self._chan.shutdown_write()
        if not self._on_reader_thread():
            self._reader.join(5.0)
            if self._reader.is_alive():
                self._chan.force_close()
                self._reader.join(5.0)
        if self._session.gone is None:
            self._fail_all(SocketClosed("the client was closed"))
        if threading.current_thread() is not self._writer:
            self._writer.join(5.0)
        if not self._reader.is_alive():
            self._chan.finish()

    @property
    def pid(self) -> Optional[int]:
        """The spawned daemon's process id (``None`` when attached)."""
        return self._chan.proc.pid if isinstance(self._chan, PipeChannel) else None
