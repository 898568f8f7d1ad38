"""Uploading a bundle: validate it, claim the avatar for its creator, then put it into the store's inbox so
that the upload sensor never sees part of it: a local inbox gets the bundle by one rename; an object store
gets the photos and voice first and `manifest.json` last, which is what makes a stored bundle count."""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from avatar_assets.contracts import AvatarUpload
from avatar_assets.identity import intake, ownership
from avatar_assets.pipeline import tombstones
from resources import layout
from resources.media_store import MediaStore


class UploadError(ValueError):
    """A bundle that cannot be uploaded; the message names every problem."""


def upload_bundle(store: MediaStore, source: Path) -> str:
    """Validate, then copy into the inbox: a partial bundle is never taken by the sensor. Returns where
    the bundle now is (a path or an s3:// URI), for people."""
    manifest, problems = intake.read_manifest(source) if (source / intake.MANIFEST).is_file() else (
        None,
        [f"{source / intake.MANIFEST} not found"],
    )
    if manifest is not None:
        problems += intake.check_files(source, manifest)
    if problems or manifest is None:
        raise UploadError("bad upload bundle:\n  " + "\n  ".join(problems))
    if tombstones.is_revoked(store, manifest.avatar_id):
        raise UploadError(f"avatar {manifest.avatar_id} was revoked; a revoked avatar id cannot be uploaded again")
    try:  # before anything in the inbox moves: a foreign bundle never displaces the owner's
        ownership.claim(store, manifest.avatar_id, manifest.creator_id)
    except ownership.OwnershipError as error:
        raise UploadError(str(error)) from error
    destination = store.folder(layout.inbox_bundle(manifest.avatar_id))
    if destination is None:
        return _put_objects(store, source, manifest)
    staging = destination.parent.parent / ".incoming" / f"{manifest.avatar_id}-{uuid.uuid4().hex[:8]}"
    for relative in [intake.MANIFEST, *manifest.referenced_paths()]:
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, target)
        with open(target, "rb+") as handle:
            os.fsync(handle.fileno())
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        archive = store.folder(layout.archived_upload(manifest.avatar_id, datetime.now(UTC)))
        archive.parent.mkdir(parents=True, exist_ok=True)
        os.rename(destination, archive)
    os.rename(staging, destination)
    return str(destination)


def _put_objects(store: MediaStore, source: Path, manifest: AvatarUpload) -> str:
    """Into an object store, where nothing renames: a bundle already there is copied to its archive and
    removed (its manifest first, so what is left is never taken), then the files go in, the manifest last."""
    prefix = layout.inbox_bundle(manifest.avatar_id)
    archive = layout.archived_upload(manifest.avatar_id, datetime.now(UTC))
    previous = [item.key.removeprefix(prefix) for item in store.objects(prefix)]
    for relative in previous:
        store.copy_key(prefix + relative, archive + relative)
    for relative in sorted(previous, key=lambda name: name != intake.MANIFEST):
        store.delete_key(prefix + relative)
    for relative in [*manifest.referenced_paths(), intake.MANIFEST]:
        store.write_file(prefix + relative, source / relative)
    return store.uri(prefix)
