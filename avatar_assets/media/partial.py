"""Partial files of atomic writes, named after their writer so that a dead writer's leftovers can be found.

Every atomic write (media blobs, records, rendered video) goes to `.<target>.<host>.<pid>-<random>.part`
beside its target and is renamed over it when complete. A writer killed with SIGKILL leaves that file
behind; it may hold a face or a voice, so whoever finds the writer dead removes it (`sweep_dead_writers`).
"""

from __future__ import annotations

import os
import re
import shutil
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


def _write_part(target: Path, source: bytes | Path) -> Path:
    """`source` (bytes, or a file's bytes) in a new fsynced partial file beside `target`; none is left if
    writing fails."""
    part = make_part_file(target)
    try:
        with open(part, "wb") as handle:
            if isinstance(source, Path):
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, handle, 1 << 20)
            else:
                handle.write(source)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return part


def replace_atomically(target: Path, source: bytes | Path) -> None:
    """Write `target` whole or not at all: readers see the old file or the new one, never a partial one."""
    part = _write_part(target, source)
    try:
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def create_atomically(target: Path, data: bytes) -> bool:
    """Create `target` only if it does not exist, complete or not at all (a hard link refuses an existing
    name): True when this call created it."""
    part = _write_part(target, data)
    try:
        os.link(part, target)
        return True
    except FileExistsError:
        return False
    finally:
        part.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    replace_atomically(path, text.encode("utf-8"))


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
