"""Quarantine: what a user sent and the platform cannot take is set aside, unaltered, beside a `reason.json`
that a person can read. Uploads and output requests share the one `QuarantineReason` schema, this writer
and this reader.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import ValidationError

from avatar_assets import settings
from avatar_assets.contracts import QuarantineReason
from avatar_assets.media.partial import atomic_write_text
from avatar_assets.pipeline import privacy
from resources import layout
from resources.media_store import MediaStore

REASON = "reason.json"


def set_aside(root: Path, name: str, reason: QuarantineReason, move_into: Callable[[Path], None]) -> Path:
    """`root/<name>-<time>/`, holding what `move_into` moves there and the reason beside it."""
    target = root / f"{name}-{layout.moment(reason.quarantined_at)}"
    target.mkdir(parents=True)
    move_into(target)
    privacy.tighten(target)  # a rename or a copy keeps the modes of files dropped into the inbox
    atomic_write_text(target / REASON, reason.model_dump_json(indent=2))
    return target


def set_aside_in_store(store: MediaStore, prefix: str, reason: QuarantineReason, remove_first: str) -> str:
    """In an object store, where nothing renames: set every object under `prefix` aside under
    `quarantine/<avatar>-<time>/bundle/`, `remove_first` (the name that makes the rest count) deleted before
    the others. Returns the entry's key prefix."""
    target = layout.quarantine_entry(reason.avatar_id, reason.quarantined_at)
    sizes = {item.key: item.size for item in store.objects(prefix)}
    copies = {key: f"{target}bundle/{key.removeprefix(prefix)}" for key in sizes}
    return _copy_aside(store, target, sizes, copies, reason, first=prefix + remove_first)


def set_key_aside_in_store(store: MediaStore, key: str, name: str, reason: QuarantineReason) -> str:
    """One object (an output request) set aside as `quarantine/<name>-<time>/<its file name>`, the layout a
    local home gets by renaming the file into its entry. Returns the entry's key prefix; FileNotFoundError
    when the key has already left (as a rename of a file that is gone)."""
    target = layout.quarantine_entry(name, reason.quarantined_at)
    sizes = {item.key: item.size for item in store.objects(key) if item.key == key}
    if not sizes:
        raise FileNotFoundError(f"{store.uri(key)} is not there")
    return _copy_aside(store, target, sizes, {key: target + key.rsplit("/", 1)[-1]}, reason, first=key)


def _copy_aside(store: MediaStore, target: str, sizes: dict[str, int], copies: dict[str, str],
                reason: QuarantineReason, first: str) -> str:
    """Copy each original to its key in `target`, check every copy is there whole, write the reason beside
    them, and only then delete the originals (`first` first): a failure on the way leaves them in place."""
    for source, copy in copies.items():
        store.copy_key(source, copy)
    copied = {item.key: item.size for item in store.objects(target)}
    if any(copied.get(copies[source]) != size for source, size in sizes.items()):
        raise RuntimeError(f"copy to {target} did not verify; the originals are left in place")
    store.write_text(f"{target}{REASON}", reason.model_dump_json(indent=2))
    for source in sorted(sizes, key=lambda key: key != first):
        store.delete_key(source)
    return target


def entry(reason_file: Path) -> dict:
    """What a quarantine entry says. Entries written before requests shared the schema (they held a
    `request` and `problems`), or edited by hand, are still listed and found by revoke, never a crash."""
    try:
        text = reason_file.read_text()
    except OSError:
        text = None
    return _described(text, reason_file.parent.name, str(reason_file))


def _described(text: str | None, name: str, where: str) -> dict:
    try:
        reason = QuarantineReason.model_validate_json(text or "")
        return {"kind": reason.kind, "avatar_id": reason.avatar_id, "slug": reason.slug, "problems": reason.problems}
    except (ValidationError, ValueError):
        try:
            document = json.loads(text or "")
        except ValueError:
            document = {}
        document = document if isinstance(document, dict) else {}
        return {
            "kind": "output_request" if "request" in document else "upload",
            "avatar_id": str(document.get("avatar_id") or name),
            "slug": None,
            "problems": [str(p) for p in document.get("problems", [])] if isinstance(document.get("problems"), list)
            else [f"{where} could not be read as a quarantine reason"],
        }


def entries() -> Iterator[tuple[Path, dict]]:
    """Every quarantined folder of the home with what its reason says, in name order."""
    root = settings.quarantine_dir()
    for reason_file in sorted(root.glob(f"*/{REASON}")) if root.is_dir() else []:
        yield reason_file.parent, entry(reason_file)


def stored_entries(store: MediaStore) -> Iterator[tuple[str, dict]]:
    """An object store's quarantine entries (what the sensors of any host set aside) by URI, in name
    order; none where the store is the home's folders, which `entries` lists."""
    for prefix, described in stored_entry_keys(store):
        yield store.uri(prefix), described


def stored_entry_keys(store: MediaStore) -> Iterator[tuple[str, dict]]:
    """`stored_entries` by key prefix, which revoke deletes."""
    if store.folder(layout.QUARANTINE) is not None:
        return
    for key in sorted(store.list_keys(layout.QUARANTINE)):
        name, _, rest = key.removeprefix(layout.QUARANTINE).partition("/")
        if rest == REASON:
            yield f"{layout.QUARANTINE}{name}/", _described(store.read_text(key), name, store.uri(key))
