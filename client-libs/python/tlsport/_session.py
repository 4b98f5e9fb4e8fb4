"""The client side of the tlsportd protocol, as one sans-io state machine.

:class:`Session` keeps everything a client must remember between messages:
the commands waiting for a reply (by ``ref``), the sockets and listeners this
client owns, what each socket has received and not yet consumed, its flow
credits (:mod:`tlsport._flow`), the sockets handed over to it, and the user
callbacks to call.  It does no I/O, starts no thread and knows nothing of
asyncio; the sync and asyncio clients are transports around it.

Outbound, :meth:`Session.call` (a command) and :meth:`Session.deliver` (data)
queue encoded frames; :meth:`Session.data_to_send` hands them out, with the
``setopts`` credits due at that moment, in the order they were decided.  Each
command may carry a *waiter*, an object the session never looks into (the
transport's future).

Inbound, :meth:`Session.receive_data` takes the daemon's bytes and
:meth:`Session.next_outcomes` turns the next message into *outcomes*, which
the transport carries out:

* :class:`Resolve` / :class:`Fail` — the call with that waiter is done;
* :class:`Wake` — an entry's state changed (data queued, busy/ready, closed),
  or with ``None`` the client's (a socket handed over to it, the end);
* :class:`Run` — call a user callback with these arguments;
* :class:`Ask` — the daemon asks a question (a passphrase, a verdict on a
  peer's chain): call the callback and hand its result to :meth:`Session.answer`;
* :class:`Notice` — something to log.

TLS options that are Python callables (``password``, ``verify_callback``)
never reach the daemon: :meth:`Session.call` keeps them with the command (and
with the listener, or the ``tls_context`` name, it makes) and sends
``ask_password``/``verify_callback`` instead; the question events name the
command (or listener) they are for, which picks the callable.

Values of type :class:`Entry` (in results and callback arguments) stand for
sockets and listeners; a transport gives each the object the application sees
and keeps it in :attr:`Entry.handle`.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Mapping, NamedTuple, Optional, Tuple

from . import _args, _certs
from ._args import Active
from ._flow import DEFAULT_MAX_BYTES, DEFAULT_WINDOW, FlowState
from .codec import CLOSED, NEED_DATA, CodecError, Data, Decoder, Event, Reply, _Sentinel, encode_command, encode_deliver
from .errors import ProtocolError, SocketClosed, TlsportError, error_from_reply

__all__ = ["Session", "Entry", "SocketEntry", "ListenerEntry", "Hooks", "Resolve", "Fail", "Wake", "Run", "Ask", "Notice"]
__all__ += ["COMMAND_FIELDS", "END", "ASK"]

_TIMEOUTS = "handshake_timeout_ms idle_timeout_ms close_timeout_ms"
COMMAND_FIELDS: Dict[str, FrozenSet[str]] = {
    op: frozenset(fields.split())
    for op, fields in {
        "hello": "name grace_ms",
        "listen": f"host port mode backlog tls packet_size active {_TIMEOUTS}",
        "accept": f"id tls active {_TIMEOUTS}",
        "cancel": "target",
        "connect": f"host port mode tls timeout_ms packet_size active {_TIMEOUTS}",
        "deliver": "id data text",
        "close": "id",
        "controlling_process": "id to",
        "setopts": "id active packet_size",
        "recv": "id timeout_ms",
        "peername": "id",
        "sockname": "id",
        "resolve": "address",
        "info": "id",
        "stop": "",
        "tls_context": "name tls",
        "starttls": f"id side tls timeout_ms {_TIMEOUTS}",
        "stoptls": "id timeout_ms",
        "inject_ca": "id cacertfile cacert",
        "ciphers": "id",
        "answer": "request password accept",
        "stats": "",
        "reload": "",
    }.items()
}
"""The fields docs/protocol.md §2.1 defines for each command (besides ``op`` and
``ref``).  The daemon rejects any other, and so does :meth:`Session.call`."""

RAW_CHUNK = 256 * 1024
"""Raw data longer than this is delivered in pieces of this size."""

END: Any = _Sentinel("END")
"""From :meth:`Session.next_data`: no more data (a clean close, or a handoff)."""
ASK: Any = _Sentinel("ASK")
"""From :meth:`Session.next_data`: the socket is passive; ask the daemon (``recv``)."""


# ----------------------------------------------------------------------------
# entries


class Entry:
    """What the session knows of one socket or listener id."""

    __slots__ = ("id", "mode", "packet_size", "previous_owner", "closed", "close_reason", "handed_over", "handle")

    def __init__(self, sid: int, mode: Optional[str], packet_size: Optional[int]) -> None:
        self.id = sid
        self.mode = mode
        self.packet_size = packet_size
        self.previous_owner: Optional[Tuple[int, Optional[str]]] = None
        self.closed = False
        self.close_reason: Optional[TlsportError] = None
        self.handed_over = False
        self.handle: Any = None  # the transport's object for it

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}{' closed' if self.closed else ''}>"


class Hooks(NamedTuple):
    """The Python callables a command's TLS options gave (``None``: not given)."""

    password: Optional[Callable[..., Any]]
    verify: Optional[Callable[..., Any]]


class SocketEntry(Entry):
    """A connection: its received data and credits, busy state and callbacks;
    ``held`` keeps data sent while a ``starttls``/``stoptls`` runs."""

    __slots__ = ("peer", "flow", "busy", "async_error", "data_callback", "close_callback", "passive_callback", "held")

    def __init__(
        self, sid: int, mode: Optional[str], packet_size: Optional[int], flow: FlowState, peer: Optional[Tuple[str, int]]
    ) -> None:
        super().__init__(sid, mode, packet_size)
        self.peer = peer
        self.flow = flow
        self.busy = False
        self.async_error: Optional[TlsportError] = None
        self.data_callback: Optional[Callable[..., Any]] = None
        self.close_callback: Optional[Callable[..., Any]] = None
        self.passive_callback: Optional[Callable[..., Any]] = None
        self.held: Optional[List[bytes]] = None  # frames waiting for the TLS switch


class ListenerEntry(Entry):
    """A listening socket: its port, the initial active mode of what it accepts,
    and the callables of its TLS options."""

    __slots__ = ("port", "active", "hooks")

    def __init__(self, sid: int, mode: Optional[str], packet_size: Optional[int], port: int, active: Active = True) -> None:
        super().__init__(sid, mode, packet_size)
        self.port = port
        self.active = active
        self.hooks: Optional[Hooks] = None


# ----------------------------------------------------------------------------
# outcomes


class Resolve(NamedTuple):
    """The call with ``waiter`` succeeded with ``value``."""

    waiter: Any
    value: Any


class Fail(NamedTuple):
    """The call with ``waiter`` failed with ``error``."""

    waiter: Any
    error: BaseException


class Wake(NamedTuple):
    """``entry`` changed (``None``: the client's adoption queue, or its end):
    whoever waits on it should look again."""

    entry: Optional[Entry]


class Run(NamedTuple):
    """Call ``callback(*args)``; callbacks of one ``entry`` run in this order."""

    callback: Callable[..., Any]
    args: Tuple[Any, ...]
    entry: Optional[SocketEntry]


class Ask(NamedTuple):
    """Call ``callback(*args)`` and pass its result to :meth:`Session.answer`
    with ``request`` and ``what`` (``"password"`` or ``"accept"``)."""

    callback: Callable[..., Any]
    args: Tuple[Any, ...]
    request: int
    what: str


class Notice(NamedTuple):
    """A line for the log, at ``level`` (a :mod:`logging` level)."""

    level: int
    text: str


Outcome = Any  # one of the six above


class _Pending:
    """A command waiting for its reply."""

    __slots__ = ("op", "waiter", "entry", "detail", "last", "error", "hooks")

    def __init__(self, op: str, waiter: Any, entry: Optional[Entry], detail: Any = None, last: Optional["_Pending"] = None) -> None:
        self.hooks: Optional[Hooks] = None  # the callables of its TLS options
        self.op = op
        self.waiter = waiter
        self.entry = entry  # the socket or listener the command is about
        self.detail = detail  # per op: what the reply completes
        self.last = last  # of a group of frames sent for one call: the one that answers it
        self.error: Optional[TlsportError] = None  # an earlier frame of the group failed


# ----------------------------------------------------------------------------
# the session


class Session:
    """One control channel's protocol state (see the module's documentation)."""

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        window: int = DEFAULT_WINDOW,
        max_bytes: int = DEFAULT_MAX_BYTES,
        grace_ms: Optional[int] = None,
    ) -> None:
        self.name = name
        """This client's name (sent with ``hello``)."""
        self.grace_ms = grace_ms
        """The grace period asked for with ``hello``; after its reply, the one in force
        (``None``: none, the daemon closes this client's sockets when it leaves)."""
        self.reclaimed: List[Entry] = []
        """The sockets and listeners kept for this name after a predecessor's
        channel ended, given back at ``hello`` (protocol: "Surviving a crash")."""
        self.number: Optional[int] = None
        self.version: Optional[str] = None
        self.protocol: Optional[int] = None
        self.capabilities: List[str] = []
        self.window = window
        self.max_bytes = max_bytes
        self.gone: Optional[TlsportError] = None
        """Why the channel ended; every later call raises it."""
        self.adopt_callback: Optional[Callable[..., Any]] = None
        self.password_callback: Optional[Callable[..., Any]] = None
        """Answers ``password_needed`` for commands that gave no callable of their own."""
        self.verify_callback: Optional[Callable[..., Any]] = None
        """Judges ``verify_peer`` for sockets whose TLS options gave no callable."""
        self._contexts: Dict[str, Hooks] = {}  # tls_context names -> their callables
        self._adopted: Deque[Entry] = deque()
        self._decoder = Decoder()
        self._refs = itertools.count(1)
        self._pending: Dict[Any, _Pending] = {}
        self._entries: Dict[int, Entry] = {}
        self._due: Dict[int, SocketEntry] = {}  # sockets whose flow may want a setopts
        self._out: List[bytes] = []

    # -- outbound --------------------------------------------------------------
    def hello_command(self) -> Dict[str, Any]:
        cmd: Dict[str, Any] = {"op": "hello"}
        if self.name is not None:
            cmd["name"] = self.name
        if self.grace_ms is not None:
            cmd["grace_ms"] = self.grace_ms
        return cmd

    def call(self, command: Mapping[str, Any], waiter: Any = None) -> int:
        """Queue a command and return its ref; ``waiter`` gets its outcome.

        ``active`` in ``listen``/``connect``/``accept``/``setopts`` is the
        library's mode (``True``: the credit window), turned into what the
        daemon needs.  A field the protocol does not define raises
        :class:`ValueError`; after the end, :attr:`gone` is raised.
        """
        if self.gone is not None:
            raise self.gone
        cmd = dict(command)
        _check_fields(cmd)
        op = cmd.get("op")
        hooks = self._take_hooks(cmd)
        sid = cmd.get("id")
        entry = self._entries.get(sid) if isinstance(sid, int) and not isinstance(sid, bool) else None
        detail: Any = None
        if op == "setopts" and isinstance(entry, SocketEntry):
            return self._setopts(entry, cmd, waiter)
        if op in ("starttls", "stoptls") and isinstance(entry, SocketEntry):
            pending = _Pending(str(op), waiter, entry)
            pending.hooks = hooks
            ref = self._send(cmd, pending)
            if entry.held is None:
                entry.held = []  # data sent until the reply follows the switch
            return ref
        if op == "tls_context":
            detail = cmd["name"]
        elif op == "listen":
            detail = (cmd.get("mode"), cmd.get("packet_size"), cmd.pop("active", True))
        elif op in ("connect", "accept"):
            listener = entry if isinstance(entry, ListenerEntry) else None
            active = cmd.get("active", listener.active if listener is not None else True)
            if listener is not None:
                detail = (listener.mode, listener.packet_size, active)
            else:
                detail = (cmd.get("mode"), cmd.get("packet_size"), active)
            cmd["active"] = self.window if active is True else active
        elif op == "controlling_process":
            detail = cmd.get("to")
        pending = _Pending(str(op), waiter, entry, detail)
        pending.hooks = hooks
        return self._send(cmd, pending)

    def _take_hooks(self, cmd: Dict[str, Any]) -> Optional[Hooks]:
        """Take the callables out of ``cmd``'s ``tls`` (the daemon gets
        ``ask_password``/``verify_callback`` instead); a context name brings
        the callables it was defined with."""
        tls = cmd.get("tls")
        if isinstance(tls, str):
            return self._contexts.get(tls)
        if not isinstance(tls, Mapping):
            return None
        tls = cmd["tls"] = dict(tls)
        password, verify = tls.get("password"), tls.get("verify_callback")
        hooks = Hooks(password if callable(password) else None, verify if callable(verify) else None)
        if hooks.password is not None:
            del tls["password"]
            tls["ask_password"] = True
        if hooks.verify is not None:
            tls["verify_callback"] = True
        if tls.get("ask_password") is True and hooks.password is None and self.password_callback is None:
            raise ValueError("ask_password needs a password callable: tls={'password': fn} or the client's on_password(fn)")
        if cmd.get("op") != "tls_context" and tls.get("verify_callback") is True:
            if hooks.verify is None and self.verify_callback is None:
                raise ValueError("verify_callback needs a callable: tls={'verify_callback': fn} or the client's on_verify(fn)")
        return hooks if hooks != (None, None) else None

    def deliver(self, entry: SocketEntry, data: bytes) -> None:
        """Queue raw data for ``entry`` (a DATA frame, no reply): one of :meth:`chunks`.
        While a ``starttls``/``stoptls`` runs, it waits for the switch."""
        if self.gone is not None:
            raise self.gone
        self._emit(entry, encode_deliver(entry.id, data))

    def _emit(self, entry: Optional[Entry], frame: bytes) -> None:
        held = entry.held if isinstance(entry, SocketEntry) else None
        (self._out if held is None else held).append(frame)

    def answer(self, request: int, what: str, value: Any) -> None:
        """Answer the daemon's question ``request`` (see :class:`Ask`) with a
        callback's result: the passphrase, or whether the peer is accepted."""
        if self.gone is None:
            self._send({"op": "answer", "request": request, **_args.answer_value(what, value)}, _Pending("answer", None, None, request))

    def chunks(self, entry: SocketEntry, data: bytes) -> List[bytes]:
        """``data`` as the pieces to deliver; a packet too long for the mode raises ``ValueError``."""
        limit = _args.deliver_limit(entry.mode, entry.packet_size)
        if limit is not None and len(data) > limit:
            raise ValueError(f"packet of {len(data)} bytes is too long for mode {entry.mode} (at most {limit})")
        if limit is None and len(data) > RAW_CHUNK:
            return [data[i : i + RAW_CHUNK] for i in range(0, len(data), RAW_CHUNK)]
        return [data]

    def abandon(self, ref: Any) -> bool:
        """Nobody waits for ``ref`` any more; its reply still takes effect (a socket it
        makes is closed at once).  ``False``: too late, its outcome is already out."""
        pending = self._pending.get(ref)
        if pending is not None:
            pending.waiter = None
        return pending is not None

    @property
    def has_output(self) -> bool:
        """Whether :meth:`data_to_send` may return something."""
        return bool(self._out or self._due)

    def data_to_send(self) -> List[bytes]:
        """The frames to write now, in order (the credits due are decided here)."""
        if self.gone is not None:
            self._out, self._due = [], {}
            return []
        for entry in list(self._due.values()):
            for body, tag in entry.flow.take_commands():
                self._send({"op": "setopts", "id": entry.id, **body}, _Pending("setopts", None, entry, tag))
        self._due.clear()
        out, self._out = self._out, []
        return out

    def _setopts(self, entry: SocketEntry, cmd: Dict[str, Any], waiter: Any) -> int:
        if entry.closed:
            raise SocketClosed(f"socket {entry.id} is closed")
        if "active" in cmd:
            entry.flow.set_active(cmd["active"])
        bodies = entry.flow.take_commands()
        self._due.pop(entry.id, None)
        if "packet_size" in cmd:
            entry.packet_size = cmd["packet_size"]
            bodies.append(({"packet_size": cmd["packet_size"]}, None))
        if not bodies:
            raise ValueError("setopts needs active and/or packet_size")
        last = _Pending("setopts", waiter, entry, bodies[-1][1])
        for body, tag in bodies[:-1]:
            self._send({"op": "setopts", "id": entry.id, **body}, _Pending("setopts", None, entry, tag, last))
        return self._send({"op": "setopts", "id": entry.id, **bodies[-1][0]}, last)

    def _send(self, cmd: Dict[str, Any], pending: _Pending) -> int:
        ref = next(self._refs)
        cmd["ref"] = ref
        _check_fields(cmd)
        frame = encode_command(cmd)
        if pending.op == "deliver":
            self._emit(pending.entry, frame)
        else:
            self._out.append(frame)
        self._pending[ref] = pending
        return ref

    # -- inbound ---------------------------------------------------------------
    def receive_data(self, data: "bytes | memoryview") -> None:
        """Bytes read from the daemon (``b""``: end of input); copied, so a
        reused read buffer may be passed."""
        self._decoder.receive_data(data)

    @property
    def buffered_input(self) -> int:
        """Bytes received from the daemon and not yet decoded."""
        return self._decoder.buffered

    def next_outcomes(self) -> Optional[List[Outcome]]:
        """What the next complete message means, or ``None`` when more bytes are needed.

        Raises :class:`~tlsport.errors.ProtocolError` for bytes that break the protocol."""
        try:
            message = self._decoder.next_event()
        except CodecError as exc:
            raise ProtocolError(f"bad data from the daemon: {exc}") from None
        if message is NEED_DATA or message is CLOSED:
            return None
        return self.handle(message)

    def handle(self, message: Any) -> List[Outcome]:
        """The outcomes of one decoded message (a :class:`~tlsport.codec.Reply`,
        :class:`~tlsport.codec.Event` or :class:`~tlsport.codec.Data`)."""
        if isinstance(message, Data):
            return self._on_data(message)
        if isinstance(message, Reply):
            return self._on_reply(message)
        if isinstance(message, Event):
            return self._on_event(message)
        return []

    def fail(self, error: TlsportError) -> List[Outcome]:
        """The channel ended: every waiting call fails and every entry closes with ``error``."""
        if self.gone is None:
            self.gone = error
        out: List[Outcome] = [Fail(p.waiter, error) for p in self._pending.values() if p.waiter is not None]
        self._pending.clear()
        for entry in list(self._entries.values()):
            self._close(entry, error, out)
        self._out, self._due = [], {}
        out.append(Wake(None))
        return out

    def _on_data(self, message: Data) -> List[Outcome]:
        entry = self._entries.get(message.socket_id)
        if not isinstance(entry, SocketEntry):
            return []
        callback = entry.data_callback
        if callback is None:
            entry.flow.push(message.data)
            out: List[Outcome] = [Wake(entry)]
        else:
            entry.flow.count_event()
            out = [Run(callback, (message.data,), entry)]
        self._mark(entry)
        return out

    def _on_reply(self, reply: Reply) -> List[Outcome]:
        if reply.ref is None:
            return [] if reply.ok else self._unsolicited(reply)
        pending = self._pending.pop(reply.ref, None)
        if pending is None:
            return []
        if pending.op == "reclaim":  # whatever it says, every owned event of hello came first
            return [] if pending.waiter is None else [Resolve(pending.waiter, pending.detail)]
        out: List[Outcome] = []
        if pending.op in ("starttls", "stoptls") and isinstance(pending.entry, SocketEntry):
            held, pending.entry.held = pending.entry.held or [], None
            if reply.ok:  # on failure the socket closes: what was held goes nowhere
                self._out.extend(held)
        elif pending.op == "answer" and not reply.ok:
            return [Notice(logging.WARNING, f"answer to question {pending.detail} not taken: {error_from_reply(reply.body)}")]
        value: Any = None
        error: Optional[TlsportError] = None
        if reply.ok or (pending.op == "close" and reply.error_kind in ("no_such_socket", "closed")):
            try:
                value = self._complete(pending, reply, out)
            except TlsportError as exc:
                error = exc
            except (KeyError, TypeError, ValueError) as exc:
                error = ProtocolError(f"bad reply to {pending.op}: {exc!r}")
        elif reply.error_kind == "no_such_socket" and isinstance(pending.entry, SocketEntry):
            # The daemon forgot a socket of ours: it closed. Its socket_closed
            # event came first (then its reason is known) or is on the way.
            error = self._why_closed(pending.entry)
        else:
            error = error_from_reply(reply.body)
        if pending.last is not None:  # an earlier frame of a group: the last one answers
            if pending.last.error is None:
                pending.last.error = error
            return out
        error = error or pending.error
        if pending.waiter is not None:
            out.append(Fail(pending.waiter, error) if error is not None else Resolve(pending.waiter, value))
        return out

    def _complete(self, pending: _Pending, reply: Reply, out: List[Outcome]) -> Any:
        """Apply a successful reply; return the call's value."""
        op, body, entry = pending.op, reply.body, pending.entry
        if op in ("listen", "connect", "accept"):
            return self._made(pending, int(body["id"]), body)
        if op == "recv":
            return _args.decode_data(body)
        if op in ("peername", "sockname"):
            endpoint = _args.peer_tuple(body)
            if endpoint is None:
                raise ProtocolError(f"reply without host and port: {body!r}")
            return endpoint
        if op == "resolve":
            return str(body.get("name"))
        if op == "info":
            return _certs.with_certificates(_args.reply_body(reply))
        if op == "ciphers":
            return [str(c) for c in body.get("ciphers", [])]
        if op == "inject_ca":
            return dict(body.get("verify_result") or {})
        if op == "tls_context":
            if pending.hooks is not None:
                self._contexts[pending.detail] = pending.hooks
            else:
                self._contexts.pop(pending.detail, None)
        if op == "hello":
            self._hello(pending, reply)
        if op not in ("close", "controlling_process", "setopts", "deliver", "starttls", "stoptls", "answer"):
            return _args.reply_body(reply)
        if op == "close" and entry is not None:
            self._close(entry, None, out)
            if isinstance(entry, SocketEntry):
                entry.flow.drain()
        elif op == "controlling_process" and entry is not None:
            if pending.detail not in (self.number, self.name):
                self._close(entry, None, out, handed_over=True)
            return entry.flow.drain() if isinstance(entry, SocketEntry) else None
        elif op == "setopts" and isinstance(entry, SocketEntry):
            entry.flow.acked(pending.detail)
            self._mark(entry)
        return None

    def _hello(self, pending: _Pending, reply: Reply) -> None:
        """Learn who we are.  A named client may be given back the sockets of a
        predecessor that had a grace period: the daemon sends their ``owned``
        events right after this reply, and says nothing of how many there are.
        So the call waits for the reply to one more command (``stats``, answered
        at once): by then :attr:`reclaimed` holds them all."""
        body = reply.body
        self.number = body.get("client")
        self.version = body.get("version")
        self.protocol = body.get("protocol")
        self.capabilities = list(body.get("capabilities", []))
        grace = body.get("grace_ms")
        self.grace_ms = grace if isinstance(grace, int) and not isinstance(grace, bool) and grace > 0 else None
        if self.name is not None and "grace" in self.capabilities and "stats" in self.capabilities:
            self._send({"op": "stats"}, _Pending("reclaim", pending.waiter, None, _args.reply_body(reply)))
            pending.waiter = None

    def _made(self, pending: _Pending, sid: int, body: Dict[str, Any]) -> Optional[Entry]:
        """A listen, connect or accept succeeded: the new entry."""
        if pending.waiter is None:  # nobody wants it any more
            self._send({"op": "close", "id": sid}, _Pending("close", None, None))
            return None
        mode, packet_size, active = pending.detail
        if pending.op == "listen":
            made: Entry = ListenerEntry(sid, mode, packet_size, int(body["port"]), active)
            made.hooks = pending.hooks
        else:
            made = SocketEntry(sid, mode, packet_size, self._flow(), _args.peer_tuple(body.get("peer")))
            made.flow.created_with(active)
        self._register(made)
        return made

    def _unsolicited(self, reply: Reply) -> List[Outcome]:
        """An error without a ref: a malformed frame, or a deliver that failed."""
        err = error_from_reply(reply.body)
        sid = reply.body.get("id")
        entry = self._entries.get(sid) if isinstance(sid, int) else None
        if isinstance(entry, SocketEntry):
            if entry.async_error is None:
                entry.async_error = err  # raised by the socket's next call
            return [Notice(logging.WARNING, f"socket {entry.id}: {err}")]
        if isinstance(sid, int):  # a deliver that raced with the socket's close
            return [Notice(logging.DEBUG, f"tlsportd: {err}")]
        return [Notice(logging.WARNING, f"tlsportd: {err}")]

    def _on_event(self, event: Event) -> List[Outcome]:
        name, sid = event.name, event.socket_id
        if name == "owned" and sid is not None:
            return self._owned(event.body)
        if name in ("password_needed", "verify_peer"):
            return self._question(name, event.body)
        entry = self._entries.get(sid) if sid is not None else None
        out: List[Outcome] = []
        if entry is None:
            return out
        if name == "socket_closed":
            reason = event.body.get("reason")
            self._close(entry, None if reason == "normal" else error_from_reply({"error": reason}), out)
        elif name == "passive" and isinstance(entry, SocketEntry):
            entry.flow.on_passive()
            self._mark(entry)
            if not entry.flow.managed and entry.passive_callback is not None:
                out.append(Run(entry.passive_callback, (), entry))
        elif name in ("busy", "ready") and isinstance(entry, SocketEntry):
            entry.busy = name == "busy"
            out.append(Wake(entry))
        return out

    def _question(self, name: str, body: Dict[str, Any]) -> List[Outcome]:
        """``password_needed`` or ``verify_peer``: the callable of the command
        (or listener) it is for, else the client's, answers it."""
        request = body.get("request")
        if not isinstance(request, int) or isinstance(request, bool):
            return [Notice(logging.WARNING, f"tlsportd: {name} without a request number")]
        pending = self._pending.get(body.get("ref"))
        hooks = pending.hooks if pending is not None else None
        if name == "password_needed":
            what, args = "password", (str(body.get("source", "")),)
            callback = (hooks.password if hooks else None) or self.password_callback
        else:
            what, args = "accept", (_certs.chain(body.get("peer_chain")), dict(body.get("verify_result") or {}))
            listener = self._entries.get(body.get("listener"))  # type: ignore[arg-type]
            if (hooks is None or hooks.verify is None) and isinstance(listener, ListenerEntry):
                hooks = listener.hooks
            callback = (hooks.verify if hooks else None) or self.verify_callback
        if callback is None:
            self.answer(request, what, None)
            return [Notice(logging.WARNING, f"tlsportd asked {name} and no callback answers it: refused")]
        return [Ask(callback, args, request, what)]

    def _owned(self, body: Dict[str, Any]) -> List[Outcome]:
        """A socket or listener handed to this client (``controlling_process``),
        or given back from a predecessor of the same name (its ``from_name`` is
        ours, its ``from`` another client's number)."""
        sid = int(body["id"])
        entry: Entry
        if body.get("listener"):
            sockname = _args.peer_tuple(body.get("sockname"))
            entry = ListenerEntry(sid, None, None, sockname[1] if sockname else 0)
        else:
            mode = body.get("mode")
            entry = SocketEntry(sid, mode if isinstance(mode, str) else None, None, self._flow(), _args.peer_tuple(body.get("peer")))
            entry.busy = bool(body.get("busy"))
        entry.previous_owner = (int(body.get("from", 0)), body.get("from_name"))
        self._register(entry)  # its credit window restarts (FlowState starts so)
        from_number, from_name = entry.previous_owner
        if self.name is not None and from_name == self.name and from_number != self.number:
            self.reclaimed.append(entry)  # before hello's call returns: nobody waits for it
            return []
        if self.adopt_callback is not None:
            return [Run(self.adopt_callback, (entry,), None)]
        self._adopted.append(entry)
        return [Wake(None)]

    def _flow(self) -> FlowState:
        return FlowState(self.window, self.max_bytes)

    def _register(self, entry: Entry) -> None:
        self._entries[entry.id] = entry
        if isinstance(entry, SocketEntry):
            self._mark(entry)

    def _mark(self, entry: SocketEntry) -> None:
        if not entry.closed and entry.flow.wants_flush():
            self._due[entry.id] = entry

    def _close(self, entry: Entry, reason: Optional[TlsportError], out: List[Outcome], *, handed_over: bool = False) -> None:
        if entry.closed:
            return
        entry.closed = True
        entry.close_reason = reason
        entry.handed_over = handed_over
        if self._entries.get(entry.id) is entry:
            del self._entries[entry.id]
        self._due.pop(entry.id, None)
        out.append(Wake(entry))
        if isinstance(entry, SocketEntry) and not handed_over and entry.close_callback is not None:
            out.append(Run(entry.close_callback, (reason,), entry))

    # -- the application's side ----------------------------------------------
    def check_open(self, entry: Entry) -> None:
        """Raise why ``entry`` cannot be used: a failed deliver not yet reported, or its close."""
        if isinstance(entry, SocketEntry) and entry.async_error is not None:
            err, entry.async_error = entry.async_error, None
            raise err
        if entry.closed:
            raise self._why_closed(entry)

    @staticmethod
    def _why_closed(entry: Entry) -> TlsportError:
        """The error for using a closed ``entry``: how it broke, else that it is closed."""
        what = "listener" if isinstance(entry, ListenerEntry) else "socket"
        if entry.handed_over:
            return SocketClosed(f"{what} {entry.id} was handed over to another client")
        if entry.close_reason is not None:
            return entry.close_reason
        return SocketClosed(f"{what} {entry.id} is closed")

    def next_data(self, entry: SocketEntry) -> Any:
        """The next queued packet, :data:`END`, :data:`ASK`, or ``None`` (wait for a
        :class:`Wake`); raises the close reason of a broken connection."""
        if entry.data_callback is not None:
            raise RuntimeError("this socket delivers data to an on_data callback")
        if entry.flow.queue:
            data = entry.flow.pop()
            self._mark(entry)
            return data
        if entry.closed:
            if entry.close_reason is None or entry.handed_over:
                return END
            raise entry.close_reason
        return ASK if entry.flow.active is False else None

    def drain(self, entry: SocketEntry) -> List[bytes]:
        """Take every queued packet."""
        items = entry.flow.drain()
        self._mark(entry)
        return items

    def set_data_callback(self, entry: SocketEntry, callback: Optional[Callable[..., Any]]) -> List[bytes]:
        """Send ``entry``'s data to ``callback`` (``None``: queue it); returns the
        packets already queued, for the callback, in order, before any new one."""
        entry.data_callback = callback
        items = entry.flow.drain() if callback is not None else []
        self._mark(entry)
        return items

    def set_close_callback(self, entry: SocketEntry, callback: Optional[Callable[..., Any]]) -> bool:
        """Whether ``callback`` is to be called at once (the socket already closed)."""
        entry.close_callback = callback
        return callback is not None and entry.closed and not entry.handed_over

    def set_passive_callback(self, entry: SocketEntry, callback: Optional[Callable[..., Any]]) -> None:
        """Call ``callback()`` when an ``active=N`` count the application set runs out."""
        entry.passive_callback = callback

    def set_adopt_callback(self, callback: Optional[Callable[..., Any]]) -> List[Entry]:
        """Hand adopted entries to ``callback``; returns those already queued, for it."""
        self.adopt_callback = callback
        if callback is None:
            return []
        items = list(self._adopted)
        self._adopted.clear()
        return items

    def pop_adopted(self) -> Optional[Entry]:
        """The oldest entry handed over and not yet taken; raises :attr:`gone` when
        there is none and will be none."""
        if self._adopted:
            return self._adopted.popleft()
        if self.gone is not None:
            raise self.gone
        return None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received on every socket and not yet consumed."""
        return sum(e.flow.queued_bytes for e in list(self._entries.values()) if isinstance(e, SocketEntry))


def _check_fields(cmd: Mapping[str, Any]) -> None:
    fields = COMMAND_FIELDS.get(cmd.get("op"))  # type: ignore[arg-type]
    if fields is None:
        return  # not an op of the protocol: the daemon answers bad_request
    unknown = set(cmd) - fields - {"op", "ref"}
    tls = cmd.get("tls")
    if isinstance(tls, Mapping):
        unknown |= {f"tls.{k}" for k in tls if k not in _args.TLS_FIELDS}
    if unknown:
        raise ValueError(f"{cmd['op']} has no field {', '.join(sorted(unknown))} (docs/protocol.md)")
