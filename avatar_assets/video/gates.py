"""Human approval gates on a video cell: which stages a request gates, what runs next, what is approved.

A request can require people to approve its script, storyboard, backgrounds or lip-synced video (the
`approval_gated` route always requires the last), or the whole generation before anything runs. A
render stops at each gate; an approval launches the next segment. Decisions live in the avatar's audit
trail (`avatar_assets.ops.approvals` records them).
"""

from __future__ import annotations

from avatar_assets.contracts import Approval, OutputRequest
from resources.layout import audit_prefix
from resources.media_store import MediaStore

VIDEO_STAGES = ["script", "storyboard", "speech", "backgrounds", "scene_assets", "lip_sync",
                "stitched_video", "enhanced_video", "output_package"]
GATE_ASSET = {
    "script_approval": "script",
    "storyboard_approval": "storyboard",
    "background_approval": "backgrounds",
    "video_asset_approval": "lip_sync",
}
ASSET_JOB_TYPE = {asset: job for job, asset in GATE_ASSET.items()}
GUARDED_BY = {"storyboard": "script", "speech": "storyboard", "backgrounds": "storyboard",
              "scene_assets": "backgrounds", "stitched_video": "lip_sync"}


def gate_assets(request: OutputRequest) -> list[str]:
    return [GATE_ASSET[g] for g in request.gates() if g in GATE_ASSET]


def next_segment(request: OutputRequest, after: str | None) -> list[str]:
    """Stages to run after `after` (None: from the start), stopping at the next gated stage, inclusive."""
    start = 0 if after is None else VIDEO_STAGES.index(after) + 1
    gates = gate_assets(request)
    segment = []
    for stage in VIDEO_STAGES[start:]:
        segment.append(stage)
        if stage in gates:
            break
    return segment


def decisions(store: MediaStore, avatar_id: str, output: str | None, asset: str) -> list[Approval]:
    keys = sorted(store.list_keys(audit_prefix(avatar_id, output, asset)))
    return [Approval.model_validate_json(store.read_text(key) or "{}") for key in keys]


def is_approved(store: MediaStore, avatar_id: str, output: str | None, asset: str, content_hash: str) -> bool:
    """Approved when the newest decision on this exact content is an approval."""
    relevant = [d for d in decisions(store, avatar_id, output, asset) if d.content_hash == content_hash]
    return bool(relevant) and relevant[-1].decision == "approve"
