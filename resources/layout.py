"""The media store's key layout: every key the platform writes, built and taken apart here only.

Keys are store-relative and the same in every store (a local home, an S3 bucket and prefix); DESIGN.md
fixes them and existing homes depend on them, so a builder here may gain a sibling but never change. What
is derived from one avatar lives under prefixes that name it, which is how revoke finds all of it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

# Blobs, `media/<sha256[:2]>/<sha256>.<ext>`: MEDIA and media_key are defined beside MediaRef, which checks
# every ref against them (contracts sit below resources), and belong to this layout all the same.
from avatar_assets.contracts import MEDIA as MEDIA
from avatar_assets.contracts import media_key as media_key
from partitions import split_cell

RECORDS = "records/"
AVATAR_RECORDS = f"{RECORDS}avatars/"
CACHE = "cache/"
TOMBSTONES = "tombstones/"
OWNERS = "owners/"
_PACKAGES = "packages/"
_APPROVALS = "approvals/avatars/"
_REQUESTS = "requests/accepted/"
APPROVAL_QUEUE = "approvals/queue/"
REGENERATION_QUEUE = "approvals/regenerations/"
TENANTS = "tenants/"
OUTBOX = "events/outbox/"
DEDUPE_MARKERS = "events/keys/"
DEAD_LETTERS = "events/dead/"
DELIVERY_STATE = "events/delivery.json"
ENDPOINT_DELIVERIES = "events/endpoints/"
INBOX_AVATARS = "inbox/avatars/"
INBOX_OUTPUTS = "inbox/outputs/"
HELD_REQUESTS = "requests/held/"
ARCHIVED_UPLOADS = "archive/uploads/"
QUARANTINE = "quarantine/"
_MOMENT = "%Y%m%dT%H%M%S%fZ"


def _json(prefix: str, name: str) -> str:
    return f"{prefix}{name}.json"


def _name(prefix: str, key: str) -> str:
    return key.removeprefix(prefix).removesuffix(".json")


def blob_sha256(key: str) -> str:
    """The content hash a blob key names."""
    return key.rsplit("/", 1)[-1].split(".", 1)[0]


# --------------------------------------------------------------------------- records (the IO manager's)


def avatar_records(avatar_id: str) -> str:
    return f"{AVATAR_RECORDS}{avatar_id}/"


def record_key(asset_name: str, partition_key: str) -> str:
    """`records/avatars/<avatar>/<asset>.json`, or `.../outputs/<slug>/<asset>.json` for a video cell."""
    avatar_id, slug = split_cell(partition_key)
    folder = avatar_records(avatar_id) + (f"outputs/{slug}/" if slug is not None else "")
    return _json(folder, asset_name)


def record_cell(key: str) -> tuple[str, str | None] | None:
    """(avatar, slug or None) of a record key; None for a key that is not one."""
    parts = key.removeprefix(AVATAR_RECORDS).split("/") if key.startswith(AVATAR_RECORDS) else []
    if len(parts) == 2:
        return parts[0], None
    if len(parts) == 4 and parts[1] == "outputs":
        return parts[0], parts[2]
    return None


# --------------------------------------------------------------------------- content-key cache


def cache_key(asset_name: str, content_key: str) -> str:
    return _json(f"{CACHE}{asset_name}/", content_key)


# --------------------------------------------------------------------------- who owns an avatar, who revoked it


def owner_key(avatar_id: str) -> str:
    return _json(OWNERS, avatar_id)


def tombstone_key(avatar_id: str) -> str:
    return _json(TOMBSTONES, avatar_id)


def tombstone_avatar(key: str) -> str:
    return _name(TOMBSTONES, key)


# --------------------------------------------------------------------------- packages and approvals


def package_folder(avatar_id: str, slug: str) -> str:
    """A cell's delivered files (its renditions, captions and rights manifest), under a key prefix."""
    return f"{avatar_packages(avatar_id)}{slug}"


def avatar_packages(avatar_id: str) -> str:
    return f"{_PACKAGES}{avatar_id}/"


def avatar_approvals(avatar_id: str) -> str:
    return f"{_APPROVALS}{avatar_id}/"


def audit_prefix(avatar_id: str, output: str | None, asset: str) -> str:
    """Where the decisions on one asset of an avatar (or of one of its cells) are kept, oldest first."""
    return f"{avatar_approvals(avatar_id)}{output or '_identity'}/{asset}/"


def audit_key(avatar_id: str, output: str | None, asset: str, approval_id: str) -> str:
    return _json(audit_prefix(avatar_id, output, asset), approval_id)


def queued_approval_key(approval_id: str) -> str:
    return _json(APPROVAL_QUEUE, approval_id)


def queued_regeneration_key(regeneration_id: str) -> str:
    return _json(REGENERATION_QUEUE, regeneration_id)


def tenant_limits_key(tenant: str) -> str:
    """A tenant's limits; named by the tenant's hash, since a tenant (a creator id) may hold any character."""
    return _json(TENANTS, hashlib.sha256(tenant.encode()).hexdigest())


def erased_with(avatar_id: str) -> tuple[str, ...]:
    """Prefixes holding only the avatar's keys, which revoke deletes whole (its records and cache entries
    are read first, for the blobs they point at)."""
    return avatar_packages(avatar_id), avatar_approvals(avatar_id), avatar_requests(avatar_id)


# --------------------------------------------------------------------------- accepted output requests


def avatar_requests(avatar_id: str) -> str:
    return f"{_REQUESTS}{avatar_id}/"


def request_snapshot_key(avatar_id: str, slug: str, sha256: str) -> str:
    """An accepted request's bytes, stored once under their hash."""
    return _json(f"{avatar_requests(avatar_id)}{slug}/", sha256)


def current_request_key(avatar_id: str, slug: str) -> str:
    """Which accepted snapshot is the cell's current request."""
    return _json(f"{avatar_requests(avatar_id)}{slug}/", "current")


# --------------------------------------------------------------------------- lifecycle events


def outbox_key(event_id: str) -> str:
    return _json(OUTBOX, event_id)


def outbox_event_id(key: str) -> str:
    return _name(OUTBOX, key)


def dead_letter_key(event_id: str, dead_letters: str = DEAD_LETTERS) -> str:
    return _json(dead_letters, event_id)


def dead_letter_id(key: str, dead_letters: str = DEAD_LETTERS) -> str:
    return _name(dead_letters, key)


def endpoint_delivery(endpoint_id: str) -> tuple[str, str]:
    """A tenant's webhook endpoint's own delivery state key and dead-letter folder (the job API registers them):
    `events/endpoints/<id>/delivery.json` and `events/endpoints/<id>/dead/`."""
    return f"{ENDPOINT_DELIVERIES}{endpoint_id}/delivery.json", f"{ENDPOINT_DELIVERIES}{endpoint_id}/dead/"


def delivery_endpoint(key: str) -> str:
    """The endpoint id of a key under ENDPOINT_DELIVERIES."""
    return key.removeprefix(ENDPOINT_DELIVERIES).split("/", 1)[0]


def dedupe_marker_key(digest: str) -> str:
    """A marker (no suffix) holding the id of the one event written for a dedupe key's digest."""
    return f"{DEDUPE_MARKERS}{digest}"


# --------------------------------------------------------------------------- what users send: the inbox


def moment(at: datetime) -> str:
    """The time in an archived upload's or a quarantine entry's name (`<name>-<moment>`), sortable."""
    return f"{at:{_MOMENT}}"


def inbox_bundle(avatar_id: str) -> str:
    """`inbox/avatars/<avatar>/`: an upload bundle (manifest.json, photos, voice), which the uploader and the
    upload sensor share through the store (a local home's inbox folder, or objects on S3)."""
    return f"{INBOX_AVATARS}{avatar_id}/"


def inbox_bundle_of(key: str) -> str | None:
    """The bundle folder name of a key inside an inbox bundle; None for any other key."""
    name, _, rest = key.removeprefix(INBOX_AVATARS).partition("/") if key.startswith(INBOX_AVATARS) else ("", "", "")
    return name if name and rest else None


def inbox_requests(avatar_id: str) -> str:
    """`inbox/outputs/<avatar>/`: the avatar's output requests, which `avatarops request` and the request
    sensor share through the store."""
    return f"{INBOX_OUTPUTS}{avatar_id}/"


def inbox_request(avatar_id: str, slug: str) -> str:
    return _json(inbox_requests(avatar_id), slug)


def inbox_request_cell(key: str) -> tuple[str, str] | None:
    """(avatar, slug) of an output request's key; None for any other key (deeper, or not JSON)."""
    parts = key.removeprefix(INBOX_OUTPUTS).split("/") if key.startswith(INBOX_OUTPUTS) else []
    if len(parts) == 2 and parts[0] and parts[1].endswith(".json") and parts[1] != ".json":
        return parts[0], parts[1].removesuffix(".json")
    return None


def held_request_key(avatar_id: str, slug: str) -> str:
    """Why a request waits (`requests/held/<avatar>--<slug>.json`), for `avatarops status` on any host."""
    return _json(HELD_REQUESTS, f"{avatar_id}--{slug}")


def held_request_name(key: str) -> str:
    """`<avatar>/<slug>` of a held note's key, as status shows it."""
    return _name(HELD_REQUESTS, key).replace("--", "/")


def held_requests_of(avatar_id: str) -> str:
    """The key prefix of the avatar's held notes (`ada--`, never `ada-01--`)."""
    return f"{HELD_REQUESTS}{avatar_id}--"


def archived_upload(avatar_id: str, at: datetime) -> str:
    """Where a bundle replaced by a re-upload is kept: `archive/uploads/<avatar>-<moment>/`."""
    return f"{ARCHIVED_UPLOADS}{avatar_id}-{moment(at)}/"


def quarantine_entry(name: str, at: datetime) -> str:
    """`quarantine/<name>-<moment>/`: what was set aside, and its reason.json beside it."""
    return f"{QUARANTINE}{name}-{moment(at)}/"


def set_aside_avatar(key: str) -> str | None:
    """The name an archived upload or quarantine entry was set aside under (for uploads, the avatar id);
    None for any other key. The moment is matched whole, so `ada` never claims `ada-01`'s entries."""
    for prefix in (ARCHIVED_UPLOADS, QUARANTINE):
        match = re.match(rf"{prefix}(?P<name>[^/]+)-\d{{8}}T\d{{12}}Z/", key)
        if match:
            return match["name"]
    return None
