"""Content keys make work idempotent: same inputs + provider config + code version -> same record.

A cache entry is the record JSON stored under its content key (`resources.layout.cache_key`); it is reused
only when every blob it points at still exists, so a revoked or deleted blob forces a recompute. Generated
images (`reuse_or_generate`) are also never reused when a fallback provider made them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from avatar_assets.contracts import MediaRef, Record
from resources.layout import cache_key
from resources.media_store import MediaStore
from resources.records import dump_record, parse_record


def content_key(asset_name: str, code_version: str, parts: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"asset": asset_name, "code_version": code_version, "parts": parts},
        sort_keys=True,
        default=str,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def media_refs(value: Any) -> Iterator[MediaRef]:
    if isinstance(value, MediaRef):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from media_refs(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from media_refs(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from media_refs(item)


def cached(store: MediaStore, asset_name: str, key: str, log) -> Record | None:
    """The stored result for this content key, if every blob it points at still exists."""
    text = store.read_text(cache_key(asset_name, key))
    if text is None:
        return None
    record = parse_record(text)
    if not all(store.exists(ref) for ref in media_refs(record)):
        return None
    log.info(f"cache hit for {asset_name} (content key {key[:12]}): reused the stored result")
    return record


def remember(store: MediaStore, asset_name: str, key: str, record: Record) -> None:
    store.write_text(cache_key(asset_name, key), dump_record(record))


def reuse_or_compute(
    store: MediaStore, asset_name: str, key: str, compute: Callable[[], Record], log
) -> tuple[Record, bool]:
    record = cached(store, asset_name, key, log)
    if record is not None:
        return record, True
    record = compute()
    remember(store, asset_name, key, record)
    return record, False


def reuse_or_generate(store: MediaStore, asset_name: str, key: str, compute: Callable[[], Record], log) -> tuple[Record, bool]:
    """`reuse_or_compute`, except that a cached result made by a fallback provider is not reused."""
    _drop_fallback_result(store, asset_name, key, log)
    return reuse_or_compute(store, asset_name, key, compute, log)


def reuse_or_generate_many(
    store: MediaStore, asset_name: str, keys: Mapping[str, str], generate: Callable[[list[str]], dict[str, Record]], log
) -> dict[str, Record]:
    """`reuse_or_generate` for many partitions ({partition: content key}): the misses are generated in
    ONE call, so a generative provider batches them. `generate` may leave out partitions it could not
    make; the caller reports those."""
    records: dict[str, Record] = {}
    for partition, key in keys.items():
        _drop_fallback_result(store, asset_name, key, log)
        hit = cached(store, asset_name, key, log)
        if hit is not None:
            records[partition] = hit
    missing = [partition for partition in keys if partition not in records]
    if missing:
        for partition, record in generate(missing).items():
            remember(store, asset_name, keys[partition], record)
            records[partition] = record
    return records


def _drop_fallback_result(store: MediaStore, asset_name: str, key: str, log) -> None:
    """A fallback stands in while the configured provider is down; reusing it would keep serving the
    stand-in after the model is back. Recomputing a fallback is cheap (classical) and, being
    deterministic, gives the same record (no spurious staleness)."""
    path = cache_key(asset_name, key)
    text = store.read_text(path)
    if text is not None:
        provider = getattr(parse_record(text), "provider", None)
        if provider is not None and provider.fallback_from:
            log.info(
                f"cached {asset_name} was made by the fallback provider {provider.provider!r}: "
                f"trying {provider.fallback_from!r} again"
            )
            store.delete_key(path)
