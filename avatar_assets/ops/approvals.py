"""Human approvals: durable decisions on one asset partition at one content hash.

An approval launches the next segment of a gated render (`avatar_assets.video.gates`), a rejection (with
a note) regenerates the gated stage with a new seed. Decisions are written twice, atomically: to the
avatar's audit trail and to a queue that the approval sensor drains.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

import dagster as dg

from avatar_assets.contracts import Approval, JobType
from avatar_assets.pipeline import tombstones
from avatar_assets.video.gates import GATE_ASSET, decisions
from partitions import partition_key, run_partition, split_cell
from resources.layout import APPROVAL_QUEUE, audit_key, queued_approval_key
from resources.media_store import MediaStore
from resources.records import read_record


class ApprovalError(ValueError):
    """A decision that cannot be recorded; the message says why."""


def current_hash(
    store: MediaStore, job_type: str, asset: str, avatar_id: str, output: str | None, run_id: str | None = None
) -> str:
    from avatar_assets.video.requests import read_request

    if job_type == "retry_from_stage":
        # The decision is about a failed run, whose failed stage usually has no record yet.
        return hashlib.sha256(f"run:{run_id}".encode()).hexdigest()
    if job_type == "full_output_generation":
        _, raw = read_request(store, avatar_id, output or "")
        return hashlib.sha256(raw).hexdigest()
    partition = partition_key(avatar_id, output)
    record = read_record(store, asset, partition)
    if record is None:
        raise ApprovalError(f"there is no {asset} for {partition} to decide on")
    return record.content_hash()


def record_decision(
    store: MediaStore,
    instance: dg.DagsterInstance,
    *,
    job_type: JobType,
    asset: str,
    avatar_id: str,
    output: str | None,
    decision: str,
    by: str,
    note: str = "",
    content_hash: str | None = None,
    run_id: str | None = None,
) -> Approval:
    if tombstones.is_revoked(store, avatar_id):
        raise ApprovalError(f"avatar {avatar_id} was revoked; nothing of it can be approved")
    if not instance.has_dynamic_partition("avatars", avatar_id):
        raise ApprovalError(f"avatar {avatar_id} does not exist")
    if decision == "reject" and not note.strip():
        raise ApprovalError("a rejection needs a note saying what to change")
    if job_type in GATE_ASSET and asset != GATE_ASSET[job_type]:
        raise ApprovalError(f"{job_type} decides on {GATE_ASSET[job_type]}, not {asset}")
    if job_type == "retry_from_stage":
        run = instance.get_run_by_id(run_id) if run_id else None
        if run is None:
            raise ApprovalError(f"retry_from_stage needs the id of a failed run of {avatar_id} (got {run_id!r})")
        if split_cell(run_partition(run.tags) or "")[0] != avatar_id:
            raise ApprovalError(f"run {run_id} is not a run of {avatar_id}")
        if run.status != dg.DagsterRunStatus.FAILURE:
            raise ApprovalError(f"run {run_id} is {run.status.value.lower()}; only a failed run is retried")
    current = current_hash(store, job_type, asset, avatar_id, output, run_id)
    if content_hash and content_hash != current:
        raise ApprovalError(
            f"{asset} of {avatar_id}/{output} changed since it was reviewed "
            f"(reviewed {content_hash[:12]}, now {current[:12]}); review the new version"
        )
    for earlier in decisions(store, avatar_id, output, asset):
        if earlier.content_hash == current and earlier.job_type == job_type and earlier.decision == decision:
            raise ApprovalError(
                f"{asset} {current[:12]} of {avatar_id}/{output} was already {decision}d "
                f"by {earlier.by} at {earlier.at:%Y-%m-%d %H:%M:%S}Z"
            )
    now = datetime.now(UTC)
    approval = Approval(
        approval_id=f"{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}",
        job_type=job_type, asset=asset, avatar_id=avatar_id, output=output, content_hash=current,
        decision=decision, by=by, at=now, note=note, run_id=run_id,
    )
    document = approval.model_dump_json(indent=2)
    store.write_text(audit_key(avatar_id, output, asset, approval.approval_id), document)
    store.write_text(queued_approval_key(approval.approval_id), document)
    return approval


def queued(store: MediaStore) -> list[Approval]:
    return [Approval.model_validate_json(store.read_text(key) or "{}") for key in sorted(store.list_keys(APPROVAL_QUEUE))]


def dequeue(store: MediaStore, approval: Approval) -> None:
    store.delete_key(queued_approval_key(approval.approval_id))


def reseed(approval: Approval) -> int:
    """A new, reproducible seed for a regeneration asked for by this decision."""
    return int(hashlib.sha256(approval.approval_id.encode()).hexdigest()[:7], 16)
