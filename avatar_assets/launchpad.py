"""Small jobs that people launch from the Dagster UI's launchpad: decide on an approval, revoke an avatar."""

import dagster as dg

from avatar_assets.ops import approvals, revoke
from resources.media_store import MediaStore


class ApprovalConfig(dg.Config):
    job_type: str = "video_asset_approval"
    asset: str = "lip_sync"
    avatar_id: str
    output: str = ""
    decision: str = "approve"
    by: str
    note: str = ""
    content_hash: str = ""
    run_id: str = ""


@dg.op(description="Records a human decision (approve or reject with a note) on one asset partition.")
def record_approval(context: dg.OpExecutionContext, config: ApprovalConfig, store: MediaStore) -> None:
    try:
        approval = approvals.record_decision(
            store, context.instance, job_type=config.job_type, asset=config.asset, avatar_id=config.avatar_id,
            output=config.output or None, decision=config.decision, by=config.by, note=config.note,
            content_hash=config.content_hash or None, run_id=config.run_id or None,
        )
    except approvals.ApprovalError as error:
        raise dg.Failure(str(error), allow_retries=False) from error
    context.add_output_metadata({"approval_id": approval.approval_id, "content_hash": approval.content_hash})
    context.log.info(f"{approval.decision} recorded as {approval.approval_id}; the approval sensor acts on it")


@dg.job(description="Approve or reject a gated stage; the approval sensor resumes or regenerates it.")
def approval_decision():
    record_approval()


class RevokeConfig(dg.Config):
    avatar_id: str
    by: str
    reason: str


@dg.op(description="Deletes everything derived from an avatar and keeps an auditable tombstone.")
def revoke_avatar_op(context: dg.OpExecutionContext, config: RevokeConfig, store: MediaStore) -> None:
    try:
        stone = revoke.revoke(context.instance, store, config.avatar_id, by=config.by, reason=config.reason,
                              wait_s=0, exclude_run_id=context.run_id)
    except revoke.RevokeError as error:
        raise dg.Failure(str(error), allow_retries=False) from error
    context.log.info(f"revoked {stone.avatar_id}: {len(stone.deleted_blobs)} blobs deleted, tombstone kept")


@dg.job(description="Revoke an avatar: delete its media, records and partitions; refuse new requests for it.")
def revoke_avatar():
    revoke_avatar_op()


OPERATION_JOBS = [approval_decision, revoke_avatar]
