"""Approval sensor: turns recorded human decisions into runs.

An approval of a gated stage launches the next segment of the cell; a rejection (always with a note)
regenerates that stage with a new seed; an approved background regeneration or retry launches it. A
decision stays queued until its run exists (run key `approval:<id>`), so a daemon crash loses none.
Regenerations queued through the job API are launched the same way (run key `regenerate:<id>`).
"""

from __future__ import annotations

import dagster as dg

from avatar_assets import settings
from avatar_assets.contracts import Approval
from avatar_assets.dagster_compat import RUN_KEY_TAG
from avatar_assets.ops import approvals, regeneration
from avatar_assets.pipeline import tombstones
from avatar_assets.pipeline.lifecycle import SEED_TAG
from avatar_assets.video import gates
from avatar_assets.video.assets import VIDEO_STAGES
from avatar_assets.video.graph import next_segment
from partitions import partition_key, run_partition
from resources.media_store import MediaStore
from resources.records import read_record

APPROVAL_SENSOR = "approval_sensor"


def _run_exists(instance: dg.DagsterInstance, run_key: str) -> bool:
    return bool(instance.get_run_ids(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))


def _retry_selection(instance: dg.DagsterInstance, run_id: str) -> tuple[list[dg.AssetKey], str | None, str]:
    """The failed run's selected assets that it did not materialize: resume from the failed stage."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise approvals.ApprovalError(f"run {run_id} does not exist")
    done = {
        record.event_log_entry.dagster_event.asset_key
        for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    }
    planned = {
        record.event_log_entry.dagster_event.asset_key
        for record in instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        ).records
    }
    return sorted(planned - done, key=lambda k: k.to_user_string()), run_partition(run.tags), run.job_name


def plan(instance: dg.DagsterInstance, store: MediaStore, approval: Approval, log) -> dg.RunRequest | None:
    run_key = f"approval:{approval.approval_id}"
    tags = {"avatar": approval.avatar_id, "approval_id": approval.approval_id, "approved_by": approval.by}
    partition = partition_key(approval.avatar_id, approval.output)
    if approval.job_type == "retry_from_stage":
        if approval.decision != "approve":
            return None
        keys, run_partition, job_name = _retry_selection(instance, approval.run_id or "")
        if not keys:
            log.info(f"run {approval.run_id} has nothing left to retry")
            return None
        return dg.RunRequest(run_key=run_key, job_name=job_name, partition_key=run_partition, asset_selection=keys, tags=tags)
    if approval.job_type == "background_regeneration" or approval.decision == "reject":
        if approval.job_type == "full_output_generation":
            return None
        seed = approvals.reseed(approval)
        log.info(f"regenerating {approval.asset} of {partition} with seed {seed} ({approval.job_type}, {approval.decision})")
        return dg.RunRequest(
            run_key=run_key, job_name="render_video" if approval.output else "build_identity",
            partition_key=partition, asset_selection=[dg.AssetKey(approval.asset)], tags={**tags, SEED_TAG: str(seed)},
        )
    if approval.job_type not in gates.GATE_ASSET:
        return None
    current = read_record(store, approval.asset, str(partition))
    if current is None or current.content_hash() != approval.content_hash:
        log.warning(f"approval {approval.approval_id} is for a version of {approval.asset} that no longer exists")
        return None
    script = read_record(store, "script", str(partition))
    segment = next_segment(VIDEO_STAGES, script.request, approval.asset)
    if not segment:
        return None
    return dg.RunRequest(
        run_key=run_key, job_name="render_video", partition_key=partition,
        asset_selection=[dg.AssetKey(stage) for stage in segment], tags=tags,
    )


def evaluate_approvals(instance: dg.DagsterInstance, store: MediaStore, log) -> dg.SensorResult:
    run_requests = []
    for approval in approvals.queued(store):
        run_key = f"approval:{approval.approval_id}"
        if _run_exists(instance, run_key) or tombstones.is_revoked(store, approval.avatar_id):
            approvals.dequeue(store, approval)
            continue
        try:
            request = plan(instance, store, approval, log)
        except approvals.ApprovalError as error:
            log.warning(f"approval {approval.approval_id}: {error}")
            request = None
        if request is None:
            approvals.dequeue(store, approval)
        else:
            run_requests.append(request)
    for queued in regeneration.queued(store):
        request = regeneration.run_request(queued)
        if _run_exists(instance, request.run_key) or tombstones.is_revoked(store, queued.avatar_id):
            regeneration.dequeue(store, queued)
            continue
        log.info(f"regenerating {queued.asset} of {request.partition_key} for {queued.by}")
        run_requests.append(request)
    return dg.SensorResult(run_requests=run_requests)


def build_approval_sensor(jobs: list) -> dg.SensorDefinition:
    @dg.sensor(
        name=APPROVAL_SENSOR,
        jobs=jobs,
        minimum_interval_seconds=settings.sensor_interval_seconds(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Resumes gated renders on approval; regenerates a rejected stage with a new seed, and what "
        "the job API asked to regenerate.",
    )
    def approval_sensor(context: dg.SensorEvaluationContext, store: MediaStore):
        return evaluate_approvals(context.instance, store, context.log)

    return approval_sensor
