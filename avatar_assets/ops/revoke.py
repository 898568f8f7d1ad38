"""Revoke an avatar: delete every blob and record derived from it, keep an auditable tombstone.

Order matters: the tombstone (status `revoking`) is written first, so sensors, approvals and record
writes refuse the avatar from then on; its runs are stopped (an `avatarops` process by signal, a launched
run through its launcher) and its dead runs failed; only then is everything swept, so no run can leave
orphan files behind (scratch folders and half-written files of the stopped runs included); blobs that nothing references any more
(requests, earlier package versions, a stopped run's partial output) are collected too. Blobs that another avatar's records also
reference (content addressing shares identical bytes, e.g. a background two avatars render for the
same campaign slug) are kept and listed as shared.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime

import dagster as dg

from avatar_assets import dagster_compat, settings
from avatar_assets.contracts import Tombstone
from avatar_assets.identity.ownership import owner
from avatar_assets.jobs import ASSETS
from avatar_assets.ops import run_health
from avatar_assets.ops.run_health import ACTIVE
from avatar_assets.pipeline import events, quarantine
from avatar_assets.pipeline.caching import media_refs
from avatar_assets.pipeline.tombstones import tombstone
from partitions import cell_key, run_partition, split_cell
from resources import layout
from resources.media_store import MediaStore
from resources.records import parse_record


class RevokeError(RuntimeError):
    """Revocation could not complete; the message says what to do."""


def runs_touching(instance: dg.DagsterInstance, avatar_id: str, exclude_run_id: str | None = None) -> list[dg.DagsterRun]:
    runs = instance.get_runs(dg.RunsFilter(statuses=ACTIVE))
    mine = []
    for run in runs:
        if run.run_id == exclude_run_id:
            continue
        partition = run_partition(run.tags) or ""
        if run.tags.get("avatar") == avatar_id or split_cell(partition)[0] == avatar_id:
            mine.append(run)
    return mine


def stop_runs(instance: dg.DagsterInstance, avatar_id: str, wait_s: float, exclude_run_id: str | None = None) -> None:
    """Stop every run working on the avatar: a run executing in an `avatarops` process on this host is
    stopped by signalling that process (SIGTERM, then SIGKILL); a launched run through its launcher;
    one whose process is already gone is failed. Then wait for them to be over."""
    run_health.fail_dead_runs(instance)
    for run in runs_touching(instance, avatar_id, exclude_run_id):
        if run_health.executing_process_alive(run.tags):
            run_health.stop_process(int(run.tags[run_health.PID_TAG]), run.tags[run_health.PID_STARTED_TAG])
        elif run.status != dg.DagsterRunStatus.CANCELING:
            instance.run_coordinator.cancel_run(run.run_id)
    run_health.fail_dead_runs(instance)
    deadline = time.monotonic() + wait_s
    while (left := runs_touching(instance, avatar_id, exclude_run_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        raise RevokeError(
            f"run(s) {', '.join(r.run_id for r in left)} of {avatar_id} are still running; the avatar is already "
            "refused everywhere; run revoke again once they have stopped"
        )


def _documents(store: MediaStore, prefix: str):
    for key in store.list_keys(prefix):
        if key.endswith(".json"):
            try:
                yield key, parse_record(store.read_text(key) or "")
            except (KeyError, ValueError):
                continue


def sweep(store: MediaStore, avatar_id: str) -> tuple[list[str], list[str], list[str]]:
    """Delete the avatar's records, cache entries, packages and approvals, then its unshared blobs."""
    mine, shared_with_others, keys = {}, set(), []
    for key, record in _documents(store, layout.AVATAR_RECORDS):
        cell = layout.record_cell(key)
        owner = cell[0] if cell else None
        for ref in media_refs(record):
            if owner == avatar_id:
                mine[ref.sha256] = ref
            else:
                shared_with_others.add(ref.sha256)
        if owner == avatar_id:
            keys.append(key)
    for key, record in _documents(store, layout.CACHE):
        if getattr(record, "avatar_id", None) == avatar_id:
            keys.append(key)
            mine |= {ref.sha256: ref for ref in media_refs(record)}
        else:
            shared_with_others |= {ref.sha256 for ref in media_refs(record)}
    keys += [key for prefix in layout.erased_with(avatar_id) for key in store.list_keys(prefix)]
    for key in keys:
        store.delete_key(key)
    deleted, kept = [], []
    for sha, ref in sorted(mine.items()):
        if sha in shared_with_others:
            kept.append(sha)
        else:
            store.delete(ref)
            deleted.append(sha)
    return deleted, kept, keys


def _written_at(store: MediaStore, key: str) -> float | None:
    """When a blob was stored (local mtime, S3 LastModified); None when the store cannot say."""
    from resources.media_store import LocalMediaStore

    if isinstance(store, LocalMediaStore):
        return store._path(key).stat().st_mtime
    client, bucket = getattr(store, "client", None), getattr(store, "bucket", None)
    if client is not None and bucket is not None:
        return client.head_object(Bucket=bucket, Key=store._object(key))["LastModified"].timestamp()
    return None


def collect_unreferenced(store: MediaStore, instance: dg.DagsterInstance, exclude_run_id: str | None = None) -> list[str]:
    """Delete blobs that no record or cache entry references any more; return their hashes.

    Such blobs are what no sweep by reference can find: the raw request a script stage stored, the
    renditions and manifests of a package that was rebuilt, what a stopped run wrote before its record.
    They still hold the likeness, so revocation removes them. A run that is still going (another
    avatar's) may have written a blob whose record is not written yet: blobs newer than the oldest
    active run are left alone.
    """
    referenced = set()
    for prefix in (layout.RECORDS, layout.CACHE):
        for _, record in _documents(store, prefix):
            referenced |= {ref.key for ref in media_refs(record)}
    starts = [
        record.create_timestamp.timestamp()
        for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE))
        if record.dagster_run.run_id != exclude_run_id
    ]
    cutoff = min(starts) - 5.0 if starts else None
    deleted = []
    for key in sorted(set(store.list_keys(layout.MEDIA)) - referenced):
        if cutoff is not None:
            written = _written_at(store, key)
            if written is None or written >= cutoff:
                continue
        store.delete_key(key)
        deleted.append(layout.blob_sha256(key))
    return deleted


def remove_inputs(store: MediaStore, avatar_id: str) -> None:
    """The upload, its archived and quarantined copies and its requests carry the likeness and voice too:
    revocation removes them, from the store's inbox (an object store's too) and from the local home."""
    held = [key for key in store.list_keys(layout.HELD_REQUESTS) if key.startswith(layout.held_requests_of(avatar_id))]
    for key in [*store.list_keys(layout.inbox_bundle(avatar_id)), *store.list_keys(layout.inbox_requests(avatar_id)), *held]:
        store.delete_key(key)
    for prefix in (layout.ARCHIVED_UPLOADS, layout.QUARANTINE):
        for key in [key for key in store.list_keys(prefix) if layout.set_aside_avatar(key) == avatar_id]:
            store.delete_key(key)
    for entry_prefix in [prefix for prefix, entry in quarantine.stored_entry_keys(store) if entry["avatar_id"] == avatar_id]:
        for key in list(store.list_keys(entry_prefix)):  # its quarantined requests, named output-<avatar>-<slug>
            store.delete_key(key)
    inbox = settings.inbox_dir()
    shutil.rmtree(inbox / "avatars" / avatar_id, ignore_errors=True)
    shutil.rmtree(inbox / "outputs" / avatar_id, ignore_errors=True)
    for path in (settings.avatar_home() / "archive" / "uploads").glob(f"{avatar_id}-*"):
        shutil.rmtree(path, ignore_errors=True)
    for folder, entry in list(quarantine.entries()):
        if entry["avatar_id"] == avatar_id:
            shutil.rmtree(folder, ignore_errors=True)


def runs_of_avatar(instance: dg.DagsterInstance, avatar_id: str, exclude_run_id: str | None = None) -> list[str]:
    """Every run that worked on the avatar: its identity runs, its cells' runs, decisions tagged with it."""
    run_ids = []
    for run in instance.get_runs():
        if run.run_id == exclude_run_id:
            continue
        partition = run_partition(run.tags) or ""
        if run.tags.get("avatar") == avatar_id or split_cell(partition)[0] == avatar_id:
            run_ids.append(run.run_id)
    return run_ids


def forget_partitions(instance: dg.DagsterInstance, avatar_id: str, exclude_run_id: str | None = None) -> None:
    """Wipe the avatar's materializations (their metadata holds thumbnails) and its partition keys.

    Open-source event logs (SQLite, Postgres) do not implement partition wipes (dagster 1.13 raises
    NotImplementedError; dagster issue #14749), so the avatar's runs are deleted with their events:
    materializations, check evaluations and logs, all of which can carry its likeness. What run deletion
    leaves in the event-log tables (its events in ranged runs, cached asset rows, check executions) is
    deleted by SQL in `dagster_compat`, which a contract test runs on SQLite and Postgres.
    """
    cells = [cell_key(avatar_id, slug) for slug in instance.get_dynamic_partitions("outputs")]
    keys = []
    for asset in ASSETS:
        if asset.partitions_def is None:
            continue
        keys += asset.keys
        partitions = [avatar_id] if isinstance(asset.partitions_def, dg.DynamicPartitionsDefinition) else cells
        for key in asset.keys:
            try:
                instance.wipe_asset_partitions(key, partitions)
            except NotImplementedError:
                pass
    run_ids = runs_of_avatar(instance, avatar_id, exclude_run_id)
    for run_id in run_ids:
        instance.delete_run(run_id)
    dagster_compat.forget_partition_in_ranged_runs(instance, keys, avatar_id)
    dagster_compat.forget_cached_asset_rows(instance, keys, run_ids)
    if instance.has_dynamic_partition("avatars", avatar_id):
        instance.delete_dynamic_partition("avatars", avatar_id)


def revoke(
    instance: dg.DagsterInstance,
    store: MediaStore,
    avatar_id: str,
    *,
    by: str,
    reason: str,
    wait_s: float = 120.0,
    exclude_run_id: str | None = None,
) -> Tombstone:
    if not reason.strip():
        raise RevokeError("a revocation needs a reason")
    previous = tombstone(store, avatar_id)
    # An uploaded bundle the upload sensor has not taken yet is an avatar too: its owner record says so.
    if previous is None and not instance.has_dynamic_partition("avatars", avatar_id) and owner(store, avatar_id) is None:
        raise RevokeError(f"avatar {avatar_id} does not exist")
    if previous is not None and previous.status == "revoked":
        return previous
    started = Tombstone(avatar_id=avatar_id, status="revoking", revoked_at=datetime.now(UTC), by=by, reason=reason)
    store.write_text(layout.tombstone_key(avatar_id), started.model_dump_json(indent=2))
    stop_runs(instance, avatar_id, wait_s, exclude_run_id)
    run_health.reap(instance, sweep_partials=True)  # the stopped runs' scratch and half-written files
    deleted, kept, keys = sweep(store, avatar_id)
    deleted += [sha for sha in collect_unreferenced(store, instance, exclude_run_id) if sha not in deleted]
    remove_inputs(store, avatar_id)
    events.forget_avatar(store, avatar_id)
    forget_partitions(instance, avatar_id, exclude_run_id)
    slugs = sorted({cell[1] for cell in map(layout.record_cell, keys) if cell and cell[1]})
    done = started.model_copy(
        update={"status": "revoked", "deleted_blobs": deleted, "kept_shared_blobs": kept,
                "deleted_records": keys, "outputs": slugs}
    )
    store.write_text(layout.tombstone_key(avatar_id), done.model_dump_json(indent=2))
    # The one event that stays: receivers learn to forget the avatar too. It carries its id and nothing else.
    events.emit(store, "revoked", avatar_id=avatar_id, dedupe_key=f"revoked:{avatar_id}")
    return done
