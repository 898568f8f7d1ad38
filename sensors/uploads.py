"""Upload sensor: a complete, valid bundle in the inbox (`inbox/avatars/` of the store) becomes an
identity run; a bad one is quarantined with its reason, and never stops intake of the others.

In a local home the cursor holds one number, a watermark of bundle change times, so it stays small however
many avatars there are. In an object store it holds the newest LastModified seen and the objects seen
within a second of it: the listing starts one second before it, because the filter is strictly-after and
S3 times are whole seconds, so objects written later in that second are still found (`since_key` is never
used: it raises once that key has left the inbox). Either way Dagster's run-key de-duplication
(`<avatar_id>:<bundle sha256>`) guarantees that a re-scan never launches twice, while a changed upload (new
hash) launches again.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import dagster as dg
from pydantic import BaseModel

from avatar_assets import settings
from avatar_assets.identity import intake, ownership
from avatar_assets.identity.assets import IDENTITY_ASSETS
from avatar_assets.pipeline import events, tombstones
from partitions import avatars
from resources import layout
from resources.media_store import MediaStore

UPLOAD_SENSOR = "avatar_upload_sensor"
_SECOND = timedelta(seconds=1)
IDENTITY_KEYS = [asset.key for asset in IDENTITY_ASSETS]


class StoredInboxCursor(BaseModel):
    """How far an object store's inbox was read: the newest LastModified seen, and the objects (key, ETag)
    seen within the second up to it, which the next listing, starting a second earlier, returns again."""

    last_modified: datetime | None = None
    seen: list[tuple[str, str]] = []
    # Bundles whose manifest names files not uploaded yet, by the manifest's LastModified: scanned again once
    # they have waited AVATAR_INCOMPLETE_UPLOAD_SECONDS, even if nothing of theirs is listed new by then.
    waiting: dict[str, float] = {}


def _watermark(cursor: str | None) -> float:
    return float(json.loads(cursor)["watermark"]) if cursor else 0.0


def _quarantine(scan: intake.BundleScan, problems: list[str], store: MediaStore, log) -> None:
    """Quarantine one bad bundle; a bundle that cannot be set aside is logged and left, and intake goes on."""
    try:
        if isinstance(scan.path, str):
            target = store.uri(intake.quarantine_stored(store, scan.avatar_id, problems))
        else:
            target = intake.quarantine(scan.path, problems, settings.quarantine_dir())
    except Exception as error:  # noqa: BLE001 - a disk or S3 error leaves this bundle, never stops intake
        log.error(f"could not quarantine {scan.avatar_id} ({'; '.join(problems)}): {error}; it stays in the inbox")
        return
    log.warning(f"quarantined {scan.avatar_id}: {'; '.join(problems)} -> {target}")


def _take(scan: intake.BundleScan, store: MediaStore, log) -> dg.RunRequest | None:
    """The run for a ready or bad bundle: None when it is quarantined instead."""
    if scan.status == "bad":
        _quarantine(scan, scan.problems, store, log)
        return None
    if tombstones.is_revoked(store, scan.avatar_id):
        _quarantine(scan, [f"avatar {scan.avatar_id} was revoked; a revoked avatar id cannot be uploaded again"], store, log)
        return None
    try:
        ownership.claim(store, scan.avatar_id, scan.manifest.creator_id)
    except ownership.OwnershipError as error:
        _quarantine(scan, [str(error)], store, log)
        return None
    events.emit(
        store, "accepted", avatar_id=scan.avatar_id, asset="source_upload",
        dedupe_key=f"{scan.avatar_id}:{scan.sha256}", bundle_sha256=scan.sha256,
    )
    return dg.RunRequest(
        run_key=f"{scan.avatar_id}:{scan.sha256}",
        partition_key=scan.avatar_id,
        asset_selection=IDENTITY_KEYS,  # named, as a render's are (sensors/requests.py says why)
        tags={"avatar": scan.avatar_id, "bundle_sha256": scan.sha256},
    )


def _result(run_requests: list[dg.RunRequest], cursor: str) -> dg.SensorResult:
    new_avatars = [request.partition_key for request in run_requests]
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[avatars.build_add_request(new_avatars)] if new_avatars else [],
        cursor=cursor,
    )


def evaluate_uploads(
    cursor: str | None, *, store: MediaStore, settle_seconds: float, log, incomplete_seconds: float | None = None
) -> dg.SensorResult | dg.SkipReason:
    root = store.folder(layout.INBOX_AVATARS)
    if root is None:
        if incomplete_seconds is None:
            incomplete_seconds = settings.incomplete_upload_seconds()
        return _evaluate_stored(cursor, store=store, incomplete_seconds=incomplete_seconds, log=log)
    if not root.is_dir():
        return dg.SkipReason(f"no inbox at {root}")
    watermark = _watermark(cursor)
    newest_handled, oldest_pending = watermark, None
    run_requests = []
    for bundle in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if intake.bundle_fingerprint(bundle) <= watermark:
            continue
        scan = intake.scan_bundle(bundle, settle_seconds=settle_seconds)
        if scan.status == "pending":
            # A folder without a manifest need not hold the watermark back (which would re-hash every
            # newer bundle on every tick until someone removes it): writing its manifest later moves
            # its change time past the watermark. A settling bundle with a manifest must hold it.
            if (bundle / intake.MANIFEST).is_file():
                oldest_pending = min(oldest_pending or scan.fingerprint, scan.fingerprint)
            continue
        newest_handled = max(newest_handled, scan.fingerprint)
        if request := _take(scan, store, log):
            run_requests.append(request)
    if oldest_pending is not None:
        newest_handled = min(newest_handled, oldest_pending - 1e-6)
    return _result(run_requests, json.dumps({"watermark": newest_handled}))


def _evaluate_stored(cursor: str | None, *, store: MediaStore, incomplete_seconds: float, log) -> dg.SensorResult:
    """The inbox in an object store: every bundle with an object new since the cursor is scanned whole. A
    bundle still arriving is left: the object that completes it (its manifest, or the last file the
    manifest names) is new on a later tick. One whose manifest names files that have not arrived within
    `incomplete_seconds` of it is quarantined, saying which."""
    state = StoredInboxCursor.model_validate_json(cursor) if cursor else StoredInboxCursor()
    since = state.last_modified - _SECOND if state.last_modified else None
    listed = store.objects(layout.INBOX_AVATARS, since)
    seen, now = set(state.seen), time.time()
    touched = {layout.inbox_bundle_of(item.key) for item in listed if (item.key, item.etag) not in seen} - {None}
    overdue = {avatar_id for avatar_id, written in state.waiting.items() if now - written >= incomplete_seconds}
    waiting = {avatar_id: written for avatar_id, written in state.waiting.items() if avatar_id not in touched | overdue}
    run_requests = []
    for avatar_id in sorted(touched | overdue):
        scan = intake.scan_stored_bundle(store, avatar_id)
        if scan.status == "pending":
            if scan.problems and now - scan.fingerprint >= incomplete_seconds:
                _quarantine(scan, [*scan.problems, f"the manifest was uploaded {now - scan.fingerprint:.0f} s ago and "
                                   f"the files it names are still missing (limit {incomplete_seconds:.0f} s)"], store, log)
            elif scan.problems:
                waiting[avatar_id] = scan.fingerprint
        elif request := _take(scan, store, log):
            run_requests.append(request)
    newest = max([item.last_modified for item in listed], default=state.last_modified)
    state = StoredInboxCursor(
        last_modified=newest,
        seen=sorted((item.key, item.etag) for item in listed if newest and item.last_modified > newest - _SECOND),
        waiting=waiting,
    )
    return _result(run_requests, state.model_dump_json())


def build_upload_sensor(identity_job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name=UPLOAD_SENSOR,
        job=identity_job,
        minimum_interval_seconds=settings.sensor_interval_seconds(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Takes complete upload bundles from the inbox; quarantines bad ones with a reason.",
    )
    def avatar_upload_sensor(context: dg.SensorEvaluationContext, store: MediaStore):
        return evaluate_uploads(
            context.cursor, store=store, settle_seconds=settings.upload_settle_seconds(), log=context.log
        )

    return avatar_upload_sensor
