"""Private by default: AVATAR_HOME and the Dagster instance belong to their owner alone.

Uploads, blobs, records, quarantined bundles and the instance's run history (inline base64 face
thumbnails) all hold personal data, so no folder there is open to group or others and no file is
readable by them, whatever the umask of whoever started the process and whoever made the folders.
`make_private()` is the one place that rule lives; every entry point calls it: the `avatarops` CLI,
the code location (imported by the code server, sensors and every run worker) and `make dev`
(`python -m avatar_assets.pipeline.privacy` before the webserver and daemon, which run under `umask 077`).
Writes that keep a source's mode instead of applying the umask (a rename or copy2 of a bundle someone
dropped in the inbox) call `tighten()` on what they moved.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from avatar_assets import settings

PRIVATE_UMASK = 0o077


def instance_home() -> Path:
    """The Dagster instance folder this process uses: DAGSTER_HOME, else AVATAR_HOME/dagster."""
    return Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home()).expanduser().resolve()


def make_private() -> None:
    """Create everything from now on owner-only (umask 077), and tighten both homes as they stand."""
    os.umask(PRIVATE_UMASK)
    home, instance = settings.avatar_home(), instance_home()
    tighten(home)
    if home != instance and home not in instance.parents:
        tighten(instance)


def tighten(root: Path) -> None:
    """Drop the group and other permission bits of `root` and of everything under it.

    One scandir walk with an lstat per entry; chmod only where a bit is set. Symlinks are neither
    followed nor changed. Entries that vanish meanwhile (another process's temp files) and entries
    owned by another user (only their owner may chmod them) are skipped.
    """
    if not os.path.lexists(root) or os.path.islink(root):
        return
    _owner_only(os.fspath(root), os.lstat(root).st_mode)
    pending = [os.fspath(root)] if os.path.isdir(root) else []
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        continue
                    try:
                        mode = entry.stat(follow_symlinks=False).st_mode
                    except FileNotFoundError:
                        continue
                    _owner_only(entry.path, mode)
                    if stat.S_ISDIR(mode):
                        pending.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue


def _owner_only(path: str, mode: int) -> None:
    if mode & 0o077:
        try:
            os.chmod(path, stat.S_IMODE(mode) & 0o700)
        except (FileNotFoundError, PermissionError):
            pass


if __name__ == "__main__":
    make_private()
