"""Who owns an avatar id: the creator who first claimed it, recorded once in the media store.

The claim is made when a bundle is accepted (`avatarops upload`, or the upload sensor for a bundle dropped
into the inbox by hand) with an exclusive create, so of two creators claiming one new id at the same time
exactly one wins, on the local filesystem and on S3 alike.
"""

from __future__ import annotations

from datetime import UTC, datetime

from avatar_assets.contracts import Ownership
from resources.layout import owner_key
from resources.media_store import MediaStore


class OwnershipError(ValueError):
    """A creator acted on an avatar id another creator owns; the message names the rule."""


def owner(store: MediaStore, avatar_id: str) -> Ownership | None:
    text = store.read_text(owner_key(avatar_id))
    return Ownership.model_validate_json(text) if text else None


def claim(store: MediaStore, avatar_id: str, creator_id: str) -> Ownership:
    """The avatar's ownership after this creator's claim; refused when another creator owns it."""
    claimed = Ownership(avatar_id=avatar_id, creator_id=creator_id, claimed_at=datetime.now(UTC))
    if store.create_text(owner_key(avatar_id), claimed.model_dump_json(indent=2)):
        return claimed
    existing = owner(store, avatar_id)
    if existing is None:  # removed between our attempt and the read: claim again
        return claim(store, avatar_id, creator_id)
    if existing.creator_id != creator_id:
        raise OwnershipError(
            f"avatar id {avatar_id!r} belongs to creator {existing.creator_id!r}; creator {creator_id!r} may not "
            "replace it (an avatar id belongs to the creator who first uploaded it: choose another avatar_id)"
        )
    return existing


def require_owner(store: MediaStore, avatar_id: str, creator_id: str | None, action: str) -> None:
    """Refuse `action` when a creator is named and does not own the avatar; no creator means the operator."""
    if creator_id is None:
        return
    existing = owner(store, avatar_id)
    if existing is None or existing.creator_id != creator_id:
        holder = f"creator {existing.creator_id!r}" if existing else "no recorded creator"
        raise OwnershipError(
            f"creator {creator_id!r} may not {action} avatar {avatar_id!r}: it belongs to {holder} "
            "(only the creator who first uploaded an avatar acts on it; omit --creator to act as the operator)"
        )
