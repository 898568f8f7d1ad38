"""Upload sensor: a complete, valid bundle in `<inbox>/avatars/` becomes an identity run.

The cursor holds one number, a watermark of bundle change times, so it stays small however many
avatars there are; Dagster's run-key de-duplication (`<avatar_id>:<bundle sha256>`) guarantees that a
re-scan never launches twice, while a changed upload (new hash) launches again.
"""

from __future__ import annotations

import json

import dagster as dg

from avatar_assets import settings
from avatar_assets.identity import intake, ownership
from avatar_assets.pipeline import events, privacy, tombstones
from partitions import avatars
from resources.media_store import MediaStore

UPLOAD_SENSOR = "avatar_upload_sensor"


def _watermark(cursor: str | None) -> float:
    return float(json.loads(cursor)["watermark"]) if cursor else 0.0


def _quarantine(bundle, problems: list[str], log) -> None:
    """Quarantine one bad bundle; a bundle that cannot be moved is logged and left, and intake goes on."""
    try:
        target = intake.quarantine(bundle, problems, settings.quarantine_dir())
    except (OSError, RuntimeError) as error:
        log.error(f"could not quarantine {bundle.name} ({'; '.join(problems)}): {error}; it stays in the inbox")
        return
    log.warning(f"quarantined {bundle.name}: {'; '.join(problems)} -> {target}")


def evaluate_uploads(
    cursor: str | None, *, store: MediaStore, settle_seconds: float, log
) -> dg.SensorResult | dg.SkipReason:
    root = settings.inbox_dir() / "avatars"
    if not root.is_dir():
        return dg.SkipReason(f"no inbox at {root}")
    watermark = _watermark(cursor)
    newest_handled, oldest_pending = watermark, None
    run_requests, new_avatars = [], []
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
        if scan.status == "bad":
            _quarantine(bundle, scan.problems, log)
            continue
        if tombstones.is_revoked(store, scan.avatar_id):
            _quarantine(bundle, [f"avatar {scan.avatar_id} was revoked; a revoked avatar id cannot be uploaded again"], log)
            continue
        try:
            ownership.claim(store, scan.avatar_id, scan.manifest.creator_id)
        except ownership.OwnershipError as error:
            _quarantine(bundle, [str(error)], log)
            continue
        privacy.tighten(bundle)  # a hand-dropped bundle keeps the dropper's modes while it stays in the inbox
        new_avatars.append(scan.avatar_id)
        events.emit(
            store, "accepted", avatar_id=scan.avatar_id, asset="source_upload",
            dedupe_key=f"{scan.avatar_id}:{scan.sha256}", bundle_sha256=scan.sha256,
        )
        run_requests.append(
            dg.RunRequest(
                run_key=f"{scan.avatar_id}:{scan.sha256}",
                partition_key=scan.avatar_id,
                tags={"avatar": scan.avatar_id, "bundle_sha256": scan.sha256},
            )
        )
    if oldest_pending is not None:
        newest_handled = min(newest_handled, oldest_pending - 1e-6)
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[avatars.build_add_request(new_avatars)] if new_avatars else [],
        cursor=json.dumps({"watermark": newest_handled}),
    )


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
