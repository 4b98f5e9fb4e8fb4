"""Finding the ``tlsportd`` executable."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List, Optional, Union

from .errors import DaemonNotFound

__all__ = ["find_daemon", "build_tree_daemon"]

PathArg = Union[str, "os.PathLike[str]"]


def build_tree_daemon() -> Path:
    """Where a source checkout builds the daemon: ``<repo>/build/daemon/tlsportd``,
    with ``<repo>`` found from this package's location (``client-libs/python/tlsport``)."""
    return Path(__file__).resolve().parents[3] / "build" / "daemon" / "tlsportd"


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_daemon(daemon: Optional[PathArg] = None) -> str:
    """Return the path of the ``tlsportd`` executable to run.

    Looked up in this order:

    1. the ``daemon`` argument, when given (it must exist);
    2. the environment variable ``TLSPORTD``, when set and not empty (it must exist);
    3. ``tlsportd`` on ``PATH`` (an installed daemon);
    4. the build tree of the source checkout this package lives in
       (``<repo>/build/daemon/tlsportd``).

    Raises :class:`~tlsport.errors.DaemonNotFound` (also a ``FileNotFoundError``)
    naming every place it looked.
    """
    tried: List[str] = []
    if daemon is not None:
        if not isinstance(daemon, (str, os.PathLike)):
            raise TypeError(f"daemon must be a path, not {type(daemon).__name__}")
        path = Path(os.fspath(daemon))
        if _usable(path):
            return str(path)
        raise DaemonNotFound(f"tlsportd not found or not executable: {path} (daemon argument)")
    env = os.environ.get("TLSPORTD")
    if env:
        path = Path(env)
        if _usable(path):
            return str(path)
        raise DaemonNotFound(f"tlsportd not found or not executable: {path} (from $TLSPORTD)")
    tried.append("$TLSPORTD (not set)")
    installed = shutil.which("tlsportd")
    if installed:
        return installed
    tried.append("tlsportd on PATH")
    here = Path(__file__).resolve().parent
    if here.parent.name == "python" and here.parent.parent.name == "client-libs":
        path = build_tree_daemon()
        if _usable(path):
            return str(path)
        tried.append(f"the build tree {path}")
    else:
        tried.append("no build tree (an installed package)")
    raise DaemonNotFound(
        "cannot find tlsportd; pass daemon=PATH, set TLSPORTD=/path/to/tlsportd, "
        "install it on PATH, or build it (scripts/build.sh). Looked in: " + ", ".join(tried)
    )
