"""The one atomic file writer: label files, model files, checkpoints, reports, maps.

A temporary file in the same folder, fsync, rename, fsync of the folder:
readers (and the next run after a crash or ``kill -9``) see the old file or
the new one, never a mix. The temporary is hidden (``.NAME.XXXXXXXX.tmp``),
which LabelMe ignores and ``labelfile.remove_stale_temporaries`` cleans up.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def write_atomically(path: str | os.PathLike, payload: bytes, follow_symlinks: bool = False) -> None:
    """Write ``payload`` to ``path`` atomically; OSError when that cannot be done.

    A new file gets the permissions the umask allows (mode 0666 before it),
    as any new file does; an existing one keeps its own. With
    ``follow_symlinks``, a link is kept and the file it points to replaced,
    as an ``open(path, "w")`` would.
    """
    target = Path(os.path.realpath(path)) if follow_symlinks else Path(path)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))
        except FileNotFoundError:
            pass
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    sync_folder(target.parent)


def sync_folder(folder: Path) -> None:
    """Make a rename itself durable (POSIX); best effort elsewhere."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
