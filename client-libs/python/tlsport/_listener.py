"""State and bookkeeping shared by the sync and asyncio listeners."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional, Tuple

from . import _args
from ._args import Active
from .codec import Reply
from .errors import TlsportError


class ListenerBase:
    """What :class:`tlsport.Listener` and :class:`tlsport.AsyncListener` share;
    each subclass names the socket class its accepts make."""

    _socket_class: ClassVar[Any]

    def __init__(
        self,
        client: Any,
        sid: int,
        port: int,
        mode: Optional[str],
        *,
        packet_size: Optional[int] = None,
        previous_owner: Optional[Tuple[int, Optional[str]]] = None,
        active: Active = True,
    ) -> None:
        self._client = client
        self.id: int = sid
        """The daemon's listener id."""
        self.active: Active = active
        """The initial active mode of accepted sockets (see ``Socket.setopts``)."""
        self.port: int = port
        """The port listened on (the one chosen for port 0)."""
        self.mode = mode
        """The framing mode of accepted sockets (``None`` when unknown)."""
        self.previous_owner = previous_owner
        self._packet_size = packet_size
        self._closed = False

    def __repr__(self) -> str:
        return f"<tlsport.{type(self).__name__} id={self.id} port={self.port} mode={self.mode}>"

    @property
    def closed(self) -> bool:
        """Whether the listener is closed (or handed over)."""
        return self._closed

    def _on_closed(self, reason: Optional[TlsportError], *, handed_over: bool = False) -> None:
        self._closed = True

    def _socket_maker(self, active: Active) -> Callable[[Reply], Any]:
        """Turns an accept reply into a registered socket of the right class."""

        def make(reply: Reply) -> Any:
            body = reply.body
            sock = self._socket_class(
                self._client,
                int(body["id"]),
                self.mode,
                _args.peer_tuple(body.get("peer")),
                packet_size=self._packet_size,
            )
            sock._flow.created_with(active)
            self._client._register_socket(sock)
            return sock

        return make
