"""Writing files so a crash never leaves half of one, and naming a file's exact content.

Every save in the project (models, cards, prediction files, caches, batch records, CSVs) goes
through :func:`atomic_write`: the content is written to a temporary file beside the target and
renamed over it only when complete, so a reader sees the old file or the new one, never a part.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_write", "file_sha256", "default_file_mode"]


def default_file_mode() -> int:
    """What ``open(path, "w")`` would give under the current umask (0644 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    ``suffix`` is the temporary file's ending, for writers that insist on one (Keras wants
    ``.keras``, NumPy appends ``.npz`` otherwise). The file gets the permissions a plain write
    would (``mkstemp`` alone makes them 0600).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".partial{suffix}")
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        os.chmod(partial, default_file_mode())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    """A file's hash: every model card records its data's and its own, so results name exact files."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
