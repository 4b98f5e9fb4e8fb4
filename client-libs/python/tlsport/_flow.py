"""Per-socket receive queue and flow control, shared by the sync and asyncio APIs.

Pure bookkeeping, no I/O and no locking (the callers lock).

With ``active=True`` (the default) the library does *not* leave the daemon in
``active:true`` mode, which would push data as fast as the peer sends it.
Instead it runs a credit window of ``window`` events: the daemon is put in
``active:N`` mode, every ``fromsocket`` uses one credit, and more credits are
granted only when the application has consumed data.  When the application
stops reading, the credits run out, the daemon stops reading that socket
(it sends a ``passive`` event), the kernel buffers fill and TCP slows the
peer down.  Memory held by the library for a socket is therefore bounded by
about ``window`` packets (raw mode: chunks of at most 64 KiB), and no credit is
granted while more than ``max_bytes`` are queued.

A socket the library accepts or connects is created with ``active: N`` in the
``accept``/``connect`` command itself, so the window holds from the first byte.
A socket handed over by another client may be in any mode: the window is
restarted with ``setopts active:false`` followed by ``setopts active:N``; after
the reply to the second, the daemon's count is exactly N whatever it was
before.  Events that arrive before that reply were sent under the old mode and
are not counted.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

from ._args import Active

__all__ = ["FlowState", "DEFAULT_WINDOW", "DEFAULT_MAX_BYTES"]

DEFAULT_WINDOW = 16  # a grant (a setopts and its reply) every 8 packets: 1 MiB of raw chunks ahead at most
DEFAULT_MAX_BYTES = 1 << 20

Tag = Tuple[str, int]
"""What the reply to a setopts completes: ``("sync", generation)`` or ``("grant", n)``."""
SetoptsCommand = Tuple[Dict[str, Any], Optional[Tag]]
"""A setopts body (without op/id/ref) and the tag to hand to :meth:`FlowState.acked`
when its reply arrives."""


class FlowState:
    """Queue of received packets plus the credit accounting of one socket."""

    __slots__ = (
        "window",
        "max_bytes",
        "active",
        "queue",
        "queued_bytes",
        "outstanding",
        "syncing",
        "generation",
        "restart_requested",
        "user_command",
        "unacked",
    )

    def __init__(self, window: int = DEFAULT_WINDOW, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self.max_bytes = max_bytes
        self.active: Active = True
        self.queue: Deque[bytes] = deque()
        self.queued_bytes = 0
        self.outstanding = 0  # credits the daemon holds (managed mode, after sync)
        self.syncing = False  # a restart is in flight
        self.generation = 0
        self.restart_requested = True  # an adopted socket starts with a restart
        self.user_command: Optional[Dict[str, Any]] = None
        self.unacked = 0  # credits granted whose setopts reply has not come back

    # -- state ---------------------------------------------------------
    @property
    def managed(self) -> bool:
        """Whether the library runs the credit window (``active=True``)."""
        return self.active is True

    # -- events from the daemon ----------------------------------------
    def push(self, data: bytes) -> None:
        """A ``fromsocket`` arrived and is queued for the application."""
        self.count_event()
        self.queue.append(data)
        self.queued_bytes += len(data)

    def count_event(self) -> None:
        """A ``fromsocket`` arrived (queued or handed to a callback)."""
        if self.managed and not self.syncing and self.outstanding > 0:
            self.outstanding -= 1

    def on_passive(self) -> None:
        """The daemon's count ran out.

        Replies and events come in the order the daemon produced them, so the
        grants not yet acknowledged were applied after this event: the daemon
        now holds exactly those credits.
        """
        if self.managed and not self.syncing:
            self.outstanding = self.unacked

    def acked(self, tag: Optional[Tag]) -> None:
        """The reply to a setopts the library sent arrived."""
        if tag is None:
            return
        kind, value = tag
        if kind == "grant":
            self.unacked = max(0, self.unacked - value)
        elif kind == "sync" and value == self.generation and self.syncing:
            # The restart's active:N is in force: the daemon holds exactly N.
            self.syncing = False
            self.outstanding = self.window
            self.unacked = 0

    # -- application side ------------------------------------------------
    def pop(self) -> bytes:
        """Take the oldest queued packet (the queue must not be empty)."""
        data = self.queue.popleft()
        self.queued_bytes -= len(data)
        return data

    def drain(self) -> List[bytes]:
        """Take every queued packet."""
        items = list(self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        return items

    def set_active(self, active: Active) -> None:
        """The application chose an active mode; ``True`` (re)starts the window."""
        self.active = active
        self.syncing = False
        self.outstanding = 0
        self.unacked = 0
        self.restart_requested = active is True
        self.user_command = None if active is True else {"active": active}

    def created_with(self, active: Active) -> None:
        """The socket was made by an accept/connect that carried
        ``active`` = :meth:`initial_active` of ``active``: no restart is needed."""
        self.active = active
        self.restart_requested = False
        self.syncing = False
        self.user_command = None
        self.outstanding = self.window if active is True else 0
        self.unacked = 0

    def initial_active(self, active: Active) -> Active:
        """What to put in an accept/connect's ``active`` for the mode ``active``:
        the library's window for ``True``, the mode itself otherwise."""
        return self.window if active is True else active

    def request_restart(self) -> None:
        """Restart the window (new socket, adopted socket)."""
        if self.managed:
            self.restart_requested = True

    # -- what to send ----------------------------------------------------
    def take_commands(self) -> List[SetoptsCommand]:
        """The setopts commands to send now (possibly none)."""
        out: List[SetoptsCommand] = []
        if self.user_command is not None:
            out.append((self.user_command, None))
            self.user_command = None
        if not self.managed:
            return out
        if self.restart_requested:
            self.restart_requested = False
            self.syncing = True
            self.generation += 1
            self.outstanding = 0
            out.append(({"active": False}, None))
            out.append(({"active": self.window}, ("sync", self.generation)))
            return out
        if self.syncing:
            return out
        held = len(self.queue) + self.outstanding
        if held <= self.window // 2 and self.queued_bytes < self.max_bytes:
            grant = self.window - held
            if grant > 0:
                self.outstanding += grant
                self.unacked += grant
                out.append(({"active": grant}, ("grant", grant)))
        return out

    def wants_flush(self) -> bool:
        """Whether :meth:`take_commands` would return something now."""
        if self.user_command is not None or (self.managed and self.restart_requested):
            return True
        if not self.managed or self.syncing:
            return False
        held = len(self.queue) + self.outstanding
        return held <= self.window // 2 and self.queued_bytes < self.max_bytes and held < self.window

