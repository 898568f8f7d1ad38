"""Human approval gates on a video cell: which stages a request gates and what is approved.

A request can require people to approve its script, storyboard, backgrounds or lip-synced video (the
`approval_gated` route always requires the last), or the whole generation before anything runs. A
render stops at each gate; an approval launches the next segment (`video.graph` knows the order).
Decisions live in the avatar's audit trail (`avatar_assets.ops.approvals` records them).
"""

from __future__ import annotations

from avatar_assets.contracts import Approval, OutputRequest
from resources.layout import audit_prefix
from resources.media_store import MediaStore

GATE_ASSET = {
    "script_approval": "script",
    "storyboard_approval": "storyboard",
    "background_approval": "backgrounds",
    "video_asset_approval": "lip_sync",
}
"""Which stage each approval job type decides on: a product rule."""
ASSET_JOB_TYPE = {asset: job for job, asset in GATE_ASSET.items()}


def gate_assets(request: OutputRequest) -> list[str]:
    return [GATE_ASSET[g] for g in request.gates() if g in GATE_ASSET]


def decisions(store: MediaStore, avatar_id: str, output: str | None, asset: str) -> list[Approval]:
    keys = sorted(store.list_keys(audit_prefix(avatar_id, output, asset)))
    return [Approval.model_validate_json(store.read_text(key) or "{}") for key in keys]


def is_approved(store: MediaStore, avatar_id: str, output: str | None, asset: str, content_hash: str) -> bool:
    """Approved when the newest decision on this exact content is an approval."""
    relevant = [d for d in decisions(store, avatar_id, output, asset) if d.content_hash == content_hash]
    return bool(relevant) and relevant[-1].decision == "approve"
