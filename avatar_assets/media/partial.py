"""Partial files of atomic writes, named after their writer so that a dead writer's leftovers can be found.

Every atomic write (media blobs, records, rendered video) goes to `.<target>.<host>.<pid>-<random>.part`
beside its target and is renamed over it when complete. A writer killed with SIGKILL leaves that file
behind; it may hold a face or a voice, so whoever finds the writer dead removes it (`sweep_dead_writers`).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

PART_SUFFIX = ".part"
_WRITER = re.compile(r"\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)-[^.]*\.part")


def host_label() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def make_part_file(target: Path, suffix: str = "") -> Path:
    """An empty, private, uniquely named partial file beside `target` (same filesystem, so the final
    rename is atomic). `suffix` keeps an extension a writer needs (ffmpeg picks the container by it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.{host_label()}.{os.getpid()}-", suffix=f"{PART_SUFFIX}{suffix}"
    )
    os.close(fd)
    return Path(name)


def writer_of(path: Path) -> tuple[str, int] | None:
    """(host, pid) of the process that was writing this partial file; None for another kind of file."""
    found = _WRITER.search(path.name)
    return (found["host"], int(found["pid"])) if found else None


def sweep_dead_writers(root: Path, is_alive: Callable[[int], bool]) -> list[Path]:
    """Remove partial files under `root` that this host's dead processes left; return what was removed."""
    removed = []
    host = host_label()
    for path in root.rglob(f"*{PART_SUFFIX}*"):
        writer = writer_of(path)
        if writer is None or writer[0] != host or is_alive(writer[1]) or not path.is_file():
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
