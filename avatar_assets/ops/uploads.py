"""Uploading a bundle: validate it, claim the avatar for its creator, then move it into the inbox whole."""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from avatar_assets import settings
from avatar_assets.identity import intake, ownership
from avatar_assets.pipeline import tombstones
from resources.media_store import MediaStore


class UploadError(ValueError):
    """A bundle that cannot be uploaded; the message names every problem."""


def upload_bundle(store: MediaStore, source: Path) -> Path:
    """Validate, then copy into the inbox atomically: a partial bundle is never visible to the sensor."""
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
    avatars_dir = settings.inbox_dir() / "avatars"
    staging = settings.inbox_dir() / ".incoming" / f"{manifest.avatar_id}-{uuid.uuid4().hex[:8]}"
    for relative in [intake.MANIFEST, *manifest.referenced_paths()]:
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, target)
        with open(target, "rb+") as handle:
            os.fsync(handle.fileno())
    avatars_dir.mkdir(parents=True, exist_ok=True)
    destination = avatars_dir / manifest.avatar_id
    if destination.exists():
        archive = settings.avatar_home() / "archive" / "uploads"
        archive.mkdir(parents=True, exist_ok=True)
        os.rename(destination, archive / f"{manifest.avatar_id}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}")
    os.rename(staging, destination)
    return destination
