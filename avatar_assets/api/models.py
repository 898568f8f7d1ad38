"""The JSON the job API answers with: one Pydantic model per response, published in the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from avatar_assets.contracts import JobType, LifecycleEvent, Sha256

RenderState = Literal["accepted", "held", "queued", "running", "waiting_approval", "blocked", "failed", "crashed", "done"]


class StoredFile(BaseModel):
    """A file the platform made: where the API serves it, and where it is in the media store."""

    name: str
    url: str = Field(description="where this API serves the file (same token), range requests allowed")
    uri: str = Field(description="where the file is in the platform's media store (file:// or s3://)")
    sha256: str
    size: int
    media_type: str


class AvatarAccepted(BaseModel):
    avatar_id: str
    status_url: str


class RunInfo(BaseModel):
    """A Dagster run as `avatarops status` describes it: its state, the stage it is in or stopped at, and why."""

    run_id: str | None
    state: str
    stage: str | None
    reason: str | None


class GateVerdict(BaseModel):
    passed: bool
    severity: str
    description: str | None
    numbers: dict[str, float] = Field(default_factory=dict, description="what the gate measured")


class OutputCell(BaseModel):
    stages: list[str] = Field(description="video stages materialized for this output")
    run_id: str | None
    state: str
    stage: str | None
    reason: str | None


class AvatarStatus(BaseModel):
    """`accepted`: uploaded, not yet taken by the upload sensor; `quarantined`: the sensor set the bundle aside
    (`problems` says why); `building`/`ready`: the identity stages' progress."""

    avatar_id: str
    state: Literal["accepted", "quarantined", "building", "ready"]
    identity_run: RunInfo | None = None
    stages: dict[str, datetime | None] = Field(default_factory=dict, description="identity stage -> last materialized")
    gates: dict[str, GateVerdict] = Field(default_factory=dict, description="`asset:check` -> newest verdict")
    blocked_by: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    outputs: dict[str, OutputCell] = Field(default_factory=dict)
    images: list[StoredFile] = Field(default_factory=list, description="the neutral image and character sheet, "
                                                                        "once made")


class AvatarRevoked(BaseModel):
    avatar_id: str
    state: Literal["revoked"]
    deleted_blobs: int
    deleted_records: int


class RenderAccepted(BaseModel):
    render_id: str
    status_url: str


class RenderStatus(BaseModel):
    render_id: str
    avatar_id: str
    slug: str
    route: str
    state: RenderState
    stage: str | None = Field(description="the stage running, or where the render stopped")
    run_id: str | None
    progress_percent: float
    eta_seconds: float | None = Field(description="remaining stages times the mean stage time so far")
    error: str | None = Field(description="why the render stopped (the gate's or the error's words) or is held")
    package: list[StoredFile] | None = Field(description="the packaged renditions, poster, captions and rights "
                                                          "manifest, once done")


class ApprovalDecision(BaseModel):
    """A person's decision on a gated stage of the render (the seven job types of `avatarops approve`)."""

    model_config = ConfigDict(extra="forbid")

    job_type: JobType
    decision: Literal["approve", "reject"]
    note: str = Field(default="", max_length=2000, description="required to reject: what should change")
    asset: str | None = Field(default=None, description="the stage decided on; default: the job type's stage")
    content_hash: Sha256 | None = Field(default=None, description="the content reviewed; refused if it changed")
    run_id: str | None = Field(default=None, max_length=64, description="the failed run, for retry_from_stage")
    by: str = Field(default="", max_length=200, description="who decided (recorded with the tenant)")


class ApprovalRecorded(BaseModel):
    approval_id: str
    job_type: str
    asset: str
    decision: str
    content_hash: str


class RegenerateRequest(BaseModel):
    """Re-materialize one asset partition of the avatar; what follows it is refreshed after it."""

    model_config = ConfigDict(extra="forbid")

    asset: str = Field(max_length=80, description="an identity stage (neutral_image, ...) or, with `output`, "
                                                  "a video stage")
    output: str | None = Field(default=None, max_length=63, description="the output slug, for a video stage")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="a new seed; default: the configured one")


class RegenerationQueued(BaseModel):
    regeneration_id: str
    avatar_id: str
    asset: str
    output: str | None
    seed: int | None
    status_url: str = Field(description="the avatar's status, whose stages show the regenerated asset")


class ActionQuota(BaseModel):
    burst: int = Field(description="actions allowed at once")
    per_hour: float = Field(description="how fast the bucket refills")
    available: float = Field(description="actions the tenant may take now")


class QuotaStatus(BaseModel):
    """The tenant's limits (set by the operator with `avatarops quotas`) and how much of them is used."""

    tenant: str
    actions: dict[str, ActionQuota]
    render_cap: int = Field(description="renders in flight at once; beyond it renders wait as `queued`")
    renders_in_flight: int


class TokenRequest(BaseModel):
    """A new token for the caller's own tenant."""

    model_config = ConfigDict(extra="forbid")

    scopes: list[str] = Field(min_length=1, description="avatars:write, renders:write, renders:read, admin")
    expires: str = Field(default="90d", max_length=8, description="<n>d, <n>h or <n>m")


class TokenCreated(BaseModel):
    token: str = Field(description="the bearer token; shown only now, only its hash is kept")
    token_id: str
    scopes: list[str]
    expires_at: datetime


class EventPage(BaseModel):
    """The tenant's lifecycle events after `after`, oldest first; pass `next_after` to read on."""

    events: list[LifecycleEvent]
    next_after: str | None = Field(description="the last event id of this page; None when there were none")
