"""Output-request sensor: a valid request for a ready avatar becomes one render of its cell.

Idempotent by `run_key = "<avatar>|<slug>:<request sha256>"`: a duplicate submission launches nothing,
a changed request re-renders that cell only. Requests for avatars that are unknown, revoked or not
through their identity gates are held with a reason and launched once the identity is ready; so are
requests beyond their tenant's cap on renders in flight (`avatar_assets.ops.render_cap`), until one ends.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import dagster as dg

from avatar_assets import settings
from avatar_assets.checks.consistency import CONSISTENCY_CHECKS
from avatar_assets.checks.identity import IDENTITY_CHECKS
from avatar_assets.contracts import QuarantineReason
from avatar_assets.dagster_compat import latest_check_evaluations
from avatar_assets.identity.assets import IDENTITY_ASSETS
from avatar_assets.ops import render_cap
from avatar_assets.pipeline import events, tombstones
from avatar_assets.pipeline.quarantine import set_aside, set_key_aside_in_store
from avatar_assets.video import gates, requests
from avatar_assets.video.assets import VIDEO_STAGES
from avatar_assets.video.graph import next_segment
from partitions import cell_key, outputs
from resources import layout
from resources.layout import held_request_key
from resources.media_store import MediaStore

REQUEST_SENSOR = "output_request_sensor"
_IDENTITY_CHECK_SPECS = [spec for checks in (*IDENTITY_CHECKS, *CONSISTENCY_CHECKS) for spec in checks.check_specs]
IDENTITY_GATED = {
    asset.key.to_user_string(): blocking
    for asset in IDENTITY_ASSETS
    if (blocking := [spec.name for spec in _IDENTITY_CHECK_SPECS if spec.blocking and spec.asset_key == asset.key])
}
"""Every blocking check on an identity asset, by asset in graph order, read from the checks: a render waits
for them all."""


def identity_blocker(instance: dg.DagsterInstance, store: MediaStore, avatar_id: str) -> str | None:
    """Why an avatar cannot be rendered yet, or None when its identity exists and passed its gates."""
    if tombstones.is_revoked(store, avatar_id):
        return f"avatar {avatar_id} was revoked; new requests are refused"
    if not instance.has_dynamic_partition("avatars", avatar_id):
        return f"avatar {avatar_id} does not exist (no upload has been taken for it)"
    # Failed gates first: an identity that failed one is never built, and "not built yet" would hide why.
    keys = [dg.AssetCheckKey(dg.AssetKey(asset), check) for asset, checks in IDENTITY_GATED.items() for check in checks]
    for key, entry in latest_check_evaluations(instance, keys, avatar_id).items():
        evaluated = entry is not None and entry.dagster_event is not None and entry.dagster_event.event_type == (
            dg.DagsterEventType.ASSET_CHECK_EVALUATION)  # not a planned (still running) one
        latest = entry.dagster_event.event_specific_data if evaluated else None
        if latest is not None and not latest.passed and latest.severity == dg.AssetCheckSeverity.ERROR:
            asset, check = key.asset_key.to_user_string(), key.name
            return f"identity of {avatar_id} is blocked by {asset}:{check}: {latest.description}"
    built = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("identity_bundle"), asset_partitions=[avatar_id]), limit=1
    ).records
    if not built:
        return f"identity of {avatar_id} is not built yet"
    return None


def quarantine_request(store: MediaStore, scanned: requests.ScannedRequest) -> str:
    """Set a malformed request aside with its reason: renamed into the home's quarantine folder, or in an
    object store copied beside its reason and only then deleted from the inbox. Returns where it went."""
    reason = QuarantineReason(
        kind="output_request",
        avatar_id=scanned.avatar_id,
        slug=scanned.slug,
        bundle=scanned.key,
        quarantined_at=datetime.now(UTC),
        problems=scanned.problems,
        original_files={f"{scanned.slug}.json": hashlib.sha256(scanned.raw).hexdigest()},
        action="Fix the problems listed, then submit the request again (avatarops request ...).",
    )
    name = f"output-{scanned.avatar_id}-{scanned.slug}"
    inbox = store.folder(layout.INBOX_OUTPUTS)
    if inbox is None:
        return store.uri(set_key_aside_in_store(store, scanned.key, name, reason))
    path = inbox / scanned.key.removeprefix(layout.INBOX_OUTPUTS)
    return str(set_aside(settings.quarantine_dir(), name, reason, lambda target: path.rename(target / path.name)))


def hold(store: MediaStore, scanned: requests.ScannedRequest, reason: str) -> None:
    """Note why the request waits, where `avatarops status` on any host reads it; rewritten only when the
    reason changes."""
    key = held_request_key(scanned.avatar_id, scanned.slug)
    current = store.read_text(key)
    if current is None or json.loads(current).get("reason") != reason:
        store.write_text(key, json.dumps({"request": scanned.key, "reason": reason}, indent=2))


def evaluate_requests(instance: dg.DagsterInstance, store: MediaStore, log) -> dg.SensorResult:
    run_requests, new_slugs = [], []
    in_flight = render_cap.InFlight(instance, store)
    known_slugs = set(instance.get_dynamic_partitions("outputs"))
    for scanned in requests.scan_requests(store):
        if scanned.request is None:
            try:
                where = quarantine_request(store, scanned)
            except FileNotFoundError:  # gone since the listing (a revoke): nothing left to set aside
                continue
            log.warning(f"quarantined request {store.uri(scanned.key)}: {'; '.join(scanned.problems)} -> {where}")
            continue
        blocker = identity_blocker(instance, store, scanned.avatar_id)
        if blocker:
            hold(store, scanned, blocker)
            log.info(f"holding {scanned.avatar_id}/{scanned.slug}: {blocker}")
            continue
        if scanned.slug not in known_slugs and scanned.slug not in new_slugs:
            new_slugs.append(scanned.slug)
        sha = hashlib.sha256(scanned.raw).hexdigest()
        cell = cell_key(scanned.avatar_id, scanned.slug)
        events.emit(
            store, "accepted", avatar_id=scanned.avatar_id, output=scanned.slug, asset="script",
            dedupe_key=f"{cell}:{sha}", route=scanned.request.route,
        )
        if "full_output_generation" in scanned.request.gates() and not gates.is_approved(
            store, scanned.avatar_id, scanned.slug, "script", sha
        ):
            hold(store, scanned, f"waiting for approval: full_output_generation of request {sha[:12]} "
                          f"(avatarops approve script --avatar {scanned.avatar_id} --output {scanned.slug} "
                          "--job-type full_output_generation)")
            continue
        if requests.current_sha256(store, scanned.avatar_id, scanned.slug) != sha:  # a render not yet started
            capped = in_flight.refusal(scanned.avatar_id)
            if capped:
                hold(store, scanned, capped)
                log.info(f"holding {scanned.avatar_id}/{scanned.slug}: {capped}")
                continue
            in_flight.take(scanned.avatar_id)
        store.delete_key(held_request_key(scanned.avatar_id, scanned.slug))
        requests.accept(store, scanned.request, scanned.raw)
        segment = next_segment(VIDEO_STAGES, scanned.request, None)
        run_requests.append(
            dg.RunRequest(
                run_key=f"{cell}:{sha}",
                partition_key=cell,
                # Named even for the whole job: automation ignores an upstream update by a run that selected
                # the asset too (`executed_with_root_target`), so no tick takes this render's own progress for a
                # change and launches a second one (tests/test_one_automation.py).
                asset_selection=[dg.AssetKey(stage) for stage in segment],
                tags={"avatar": scanned.avatar_id, "output": scanned.slug, requests.REQUEST_TAG: sha,
                      "route": scanned.request.route},
            )
        )
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[outputs.build_add_request(new_slugs)] if new_slugs else [],
    )


def build_request_sensor(video_job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name=REQUEST_SENSOR,
        job=video_job,
        minimum_interval_seconds=settings.sensor_interval_seconds(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Renders output requests for avatars whose identity passed its gates; holds the rest.",
    )
    def output_request_sensor(context: dg.SensorEvaluationContext, store: MediaStore):
        return evaluate_requests(context.instance, store, context.log)

    return output_request_sensor
