"""Content-addressed media storage. Media bytes never pass through a pickling IO manager.

Blobs live at `media/<sha256[:2]>/<sha256>.<ext>` and are written atomically: a local write goes to a
temp file that is fsynced and renamed; an S3 write is a single put of a complete object. Keys under
`records/` and `cache/` hold small JSON documents that are overwritten atomically the same way.

Everything persisted names things by store-relative key; only the store knows where a key lives (a path
under its root, an object under its bucket and prefix), so a home can be copied or moved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dagster as dg

from avatar_assets.contracts import MediaRef
from avatar_assets.media.partial import PART_SUFFIX, create_atomically, replace_atomically, writer_of
from resources.layout import media_key

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class StoreUnavailable(RuntimeError):
    """The store did not answer (a network or service error): what was asked may work on a later try, so
    it says nothing about the key or the bytes asked for."""


@dataclass(frozen=True)
class StoredObject:
    """One object of an object store's listing: its store-relative key, size, LastModified time and ETag
    (which changes when the object is written with other bytes)."""

    key: str
    size: int
    last_modified: datetime
    etag: str


class MediaStore(dg.ConfigurableResource):
    """Backend-neutral store. Subclasses implement the primitives on keys, and where a key lives."""

    def _write(self, key: str, source: bytes | Path) -> None:
        raise NotImplementedError

    def _read(self, key: str) -> bytes:
        raise NotImplementedError

    def _exists(self, key: str) -> bool:
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError

    def list_keys(self, prefix: str) -> Iterator[str]:
        raise NotImplementedError

    def _uri(self, key: str) -> str:
        raise NotImplementedError

    def _local_path(self, key: str) -> Path:
        raise NotImplementedError

    def folder(self, prefix: str) -> Path | None:
        """The local folder a key prefix is, where the store keeps keys as files; None in an object store.
        What needs folder semantics (an atomic rename of a whole bundle, change times) asks here."""
        return None

    def objects(self, prefix: str, since: datetime | None = None) -> list[StoredObject]:
        """An object store's keys under `prefix` with their sizes and times, oldest first; with `since`,
        only those modified strictly after it."""
        raise NotImplementedError

    @staticmethod
    def _key(ref: MediaRef | str) -> str:
        """A ref's key, or a key; a location (an old absolute path or URI) is refused, never resolved."""
        key = ref.key if isinstance(ref, MediaRef) else ref
        if key.startswith("/") or "://" in key:
            raise ValueError(f"{key!r} is a location; the store takes store-relative keys (media/ab/<sha>.png)")
        return key

    def uri(self, ref: MediaRef | str) -> str:
        """Where a key lives now (file:// or s3://), for UI metadata and people only: never persist it."""
        return self._uri(self._key(ref))

    def local_path(self, ref: MediaRef | str) -> Path:
        """A readable local file for a blob (a cached download for remote stores)."""
        return self._local_path(self._key(ref))

    # ---------------------------------------------------------------- content-addressed media

    def put_bytes(self, data: bytes, ext: str, media_type: str) -> MediaRef:
        digest = sha256_bytes(data)
        key = media_key(digest, ext)
        if not self._exists(key):
            self._write(key, data)
        return MediaRef(key=key, sha256=digest, size=len(data), media_type=media_type)

    def put_file(self, path: Path, ext: str, media_type: str) -> MediaRef:
        digest = sha256_file(path)
        key = media_key(digest, ext)
        if not self._exists(key):
            self._write(key, path)
        return MediaRef(key=key, sha256=digest, size=path.stat().st_size, media_type=media_type)

    def read(self, ref: MediaRef | str) -> bytes:
        return self._read(self._key(ref))

    def exists(self, ref: MediaRef | str) -> bool:
        return self._exists(self._key(ref))

    def delete(self, ref: MediaRef | str) -> None:
        self._delete(self._key(ref))

    def copy_to(self, ref: MediaRef, key: str) -> None:
        """Publish a blob under a readable key (e.g. a package folder)."""
        self._write(self._key(key), self.local_path(ref))

    # ---------------------------------------------------------------- keyed documents

    def write_text(self, key: str, text: str) -> None:
        self._write(key, text.encode())

    def write_file(self, key: str, path: Path) -> None:
        """A local file's bytes under `key`, whole (an upload's photo or voice sample)."""
        self._write(self._key(key), path)

    def read_text(self, key: str) -> str | None:
        return self._read(key).decode() if self._exists(key) else None

    def delete_key(self, key: str) -> None:
        self._delete(key)

    def copy_key(self, source: str, target: str) -> None:
        """Copy one key's bytes to another key (an archive or quarantine copy); the source stays."""
        self._write(self._key(target), self._read(self._key(source)))

    def create_text(self, key: str, text: str) -> bool:
        """Write `key` only if it does not exist, atomically against every other writer (a claim):
        True when this call created it, False when it was already there."""
        return self._create(key, text.encode())

    def _create(self, key: str, data: bytes) -> bool:
        raise NotImplementedError


class LocalMediaStore(MediaStore):
    """Filesystem store rooted at `root` (AVATAR_HOME by default)."""

    root: str

    @property
    def _root(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if self._root not in path.parents:
            raise ValueError(f"key {key!r} escapes the media store root")
        return path

    def _write(self, key: str, source: bytes | Path) -> None:
        replace_atomically(self._path(key), source)

    def _create(self, key: str, data: bytes) -> bool:
        return create_atomically(self._path(key), data)

    def _read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_keys(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix) if prefix else self._root
        if base.is_file():
            yield prefix
            return
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and writer_of(path) is None and not path.name.endswith(PART_SUFFIX):
                yield path.relative_to(self._root).as_posix()

    def _uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def _local_path(self, key: str) -> Path:
        return self._path(key)

    def folder(self, prefix: str) -> Path | None:
        return self._path(prefix)
