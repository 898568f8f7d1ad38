"""Tombstones: a revoked avatar's auditable record, and the one question everything asks of it."""

from __future__ import annotations

from avatar_assets.contracts import Tombstone
from resources.layout import tombstone_key
from resources.media_store import MediaStore


def tombstone(store: MediaStore, avatar_id: str) -> Tombstone | None:
    text = store.read_text(tombstone_key(avatar_id))
    return Tombstone.model_validate_json(text) if text else None


def is_revoked(store: MediaStore, avatar_id: str) -> bool:
    return tombstone(store, avatar_id) is not None
