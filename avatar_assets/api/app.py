"""The job API's routes (FastAPI). Each one checks who calls (`auth`), reads or writes through the same
functions the CLI uses (uploads, requests, revoke, status) and answers JSON, or a problem document."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from avatar_assets import settings
from avatar_assets.api import quotas, tokens, webhooks
from avatar_assets.api.auth import Caller, require
from avatar_assets.api.bundles import FILES_PART, MANIFEST_PART, ReceivedBundle, check_content_length, receive_bundle
from avatar_assets.api.idempotency import HEADER as IDEMPOTENCY_HEADER
from avatar_assets.api.idempotency import answer_once
from avatar_assets.api.models import (
    ActionQuota,
    ApprovalDecision,
    ApprovalRecorded,
    AvatarAccepted,
    AvatarRevoked,
    AvatarStatus,
    EventPage,
    QuotaStatus,
    RegenerateRequest,
    RegenerationQueued,
    RenderAccepted,
    RenderStatus,
    StoredFile,
    TokenCreated,
    TokenRequest,
)
from avatar_assets.api.problems import PROBLEM_MEDIA_TYPE, ApiProblem, declared
from avatar_assets.contracts import LifecycleEvent, MediaRef
from avatar_assets.identity import intake, ownership
from avatar_assets.ops import approvals, regeneration, render_cap, revoke, status
from avatar_assets.ops.runner import run_failure
from avatar_assets.ops.uploads import UploadError, upload_bundle
from avatar_assets.pipeline import events, quarantine, tombstones
from avatar_assets.video import gates, requests
from partitions import PARTITION_KEY_PATTERN, cell_key
from resources.layout import outbox_key
from resources.records import read_record
from resources.media_store import MediaStore

log = logging.getLogger("avatarops.api")
MAX_RENDER_REQUEST_BYTES = 256 * 1024
_RENDER_ID_PREFIX = "rnd_"


@dataclass(frozen=True)
class ApiContext:
    """What the routes work with: the loaded Definitions, the Dagster instance, their media store, the API state."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    store: MediaStore
    sessions: sessionmaker[Session]


def context_of(request: Request) -> ApiContext:
    return request.app.state.api


router = APIRouter(prefix="/v1")
IdempotencyKey = Header(None, alias=IDEMPOTENCY_HEADER, description="Same key, same request: the same answer, once.")


def _fingerprint(*parts: object) -> str:
    """The request as an Idempotency-Key compares it: what the route parsed, as canonical JSON, hashed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def _idempotent(sessions: sessionmaker[Session], caller: Caller, key: str | None, fingerprint: str,
                      work: Callable[[], Response]) -> Response:
    """`work()` answers (in a worker thread: it touches the store and the instance), once per key and tenant."""
    return await answer_once(sessions, caller.tenant, key, fingerprint, lambda: run_in_threadpool(work))


# --------------------------------------------------------------------------- avatars

_UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": [MANIFEST_PART, FILES_PART],
        "properties": {
            MANIFEST_PART: {"type": "string", "description": "the manifest JSON (AvatarUpload); creator_id must be "
                                                             "the token's tenant"},
            FILES_PART: {"type": "array", "items": {"type": "string", "format": "binary"},
                         "description": "one part per file the manifest names; its filename is the manifest's path"},
        },
    }}},
}


@router.post(
    "/avatars", status_code=202, response_model=AvatarAccepted, openapi_extra={"requestBody": _UPLOAD_BODY},
    responses=declared(401, 403, 409, 410, 413, 415, 422, 429),
    summary="Upload an avatar bundle (manifest, photos, voice); processed by the upload sensor",
)
async def upload_avatar(request: Request, caller: Caller = Depends(require("avatars:write")),
                        idempotency_key: str | None = IdempotencyKey):
    context = context_of(request)
    check_content_length(request.headers)
    staging = settings.api_home() / "uploads" / uuid.uuid4().hex
    staging.mkdir(parents=True)
    try:
        received = await receive_bundle(request.headers.get("content-type", ""), request.stream(), staging)
        return await _idempotent(context.sessions, caller, idempotency_key, received.request_sha256(),
                                 lambda: _accept_upload(context, caller, received))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _accept_upload(context: ApiContext, caller: Caller, received: ReceivedBundle) -> JSONResponse:
    manifest = received.parsed()
    if manifest.creator_id != caller.tenant:
        raise ApiProblem("creator-mismatch", f"the manifest's creator_id is {manifest.creator_id!r}; this token "
                                             f"uploads for tenant {caller.tenant!r} only")
    named, sent = set(manifest.referenced_paths()), set(received.files)
    problems = [f"the manifest names {path!r}, which was not sent" for path in sorted(named - sent)]
    problems += [f"file {path!r} was sent but the manifest does not name it" for path in sorted(sent - named)]
    if problems:
        raise ApiProblem("invalid-bundle", "; ".join(problems), problems)
    avatar_id = manifest.avatar_id
    _refuse_foreign_id(context.store, avatar_id, caller)
    if tombstones.is_revoked(context.store, avatar_id):
        raise ApiProblem("avatar-revoked", f"avatar {avatar_id} was revoked; a revoked avatar id cannot be uploaded again")
    quotas.take(context.sessions, caller.tenant, "upload")
    (received.staging / intake.MANIFEST).write_bytes(received.manifest_bytes)
    try:
        upload_bundle(context.store, received.staging)
    except UploadError as error:
        _refuse_foreign_id(context.store, avatar_id, caller)  # claimed by another tenant meanwhile
        problems = [line.strip() for line in str(error).splitlines()[1:]] or [str(error)]
        raise ApiProblem("invalid-bundle", "; ".join(problems), problems) from None
    accepted = AvatarAccepted(avatar_id=avatar_id, status_url=f"/v1/avatars/{avatar_id}")
    return JSONResponse(accepted.model_dump(mode="json"), status_code=202)


def _refuse_foreign_id(store: MediaStore, avatar_id: str, caller: Caller) -> None:
    holder = ownership.owner(store, avatar_id)
    if holder is not None and holder.creator_id != caller.tenant:
        raise ApiProblem("avatar-id-taken", f"avatar id {avatar_id!r} belongs to another tenant; choose another "
                                            "avatar_id (ids are global, so this answer says the id exists)")


def owned_avatar(context: ApiContext, caller: Caller, avatar_id: str) -> str:
    """The avatar id when the caller's tenant owns it (410 when revoked); 404 for everything else."""
    holder = ownership.owner(context.store, avatar_id) if PARTITION_KEY_PATTERN.match(avatar_id) else None
    if holder is None or holder.creator_id != caller.tenant:
        raise ApiProblem("not-found", f"no avatar {avatar_id!r}")
    stone = tombstones.tombstone(context.store, avatar_id)
    if stone is not None:
        raise ApiProblem("avatar-revoked", f"avatar {avatar_id} was {stone.status} at "
                                           f"{stone.revoked_at:%Y-%m-%d %H:%M} UTC: {stone.reason}")
    return avatar_id


@router.get("/avatars/{avatar_id}", response_model=AvatarStatus, responses=declared(401, 403, 404, 410),
            summary="Where an avatar stands: identity stages, gate verdicts and numbers, its outputs")
def get_avatar(avatar_id: str, request: Request, caller: Caller = Depends(require("renders:read", "avatars:write"))):
    context = context_of(request)
    owned_avatar(context, caller, avatar_id)
    if not context.instance.has_dynamic_partition("avatars", avatar_id):
        listed = [*quarantine.entries(), *quarantine.stored_entries(context.store)]
        problems = [problem for _, entry in listed if entry["avatar_id"] == avatar_id and entry["kind"] == "upload"
                    for problem in entry["problems"]]
        return AvatarStatus(avatar_id=avatar_id, state="quarantined" if problems else "accepted", problems=problems)
    entry = status.avatar_status(context.defs.resolve_asset_graph(), context.instance, context.store, avatar_id)
    return AvatarStatus(
        avatar_id=avatar_id, state=entry["state"], identity_run=entry["identity"], stages=entry["assets"],
        gates=entry["gates"], blocked_by=entry["blocked_by"], outputs=entry["outputs"],
        images=_identity_images(context.store, avatar_id),
    )


def _identity_images(store: MediaStore, avatar_id: str) -> list[StoredFile]:
    return [stored_file(store, f"/v1/avatars/{avatar_id}/images/{name}", name, ref)
            for name, ref in _image_refs(store, avatar_id)]


def _image_refs(store: MediaStore, avatar_id: str) -> list[tuple[str, MediaRef]]:
    neutral, sheet = read_record(store, "neutral_image", avatar_id), read_record(store, "character_sheet", avatar_id)
    refs = [("neutral_image", neutral.image)] if neutral else []
    return refs + ([("character_sheet", sheet.sheet)] if sheet else [])


def stored_file(store: MediaStore, url: str, name: str, ref: MediaRef) -> StoredFile:
    return StoredFile(name=name, url=url, uri=store.uri(ref.key), sha256=ref.sha256, size=ref.size,
                      media_type=ref.media_type)


def serve_file(store: MediaStore, refs: list[tuple[str, MediaRef]], name: str, what: str) -> FileResponse:
    """One of `refs` by name, from the media store (a cached download from S3): range requests work, so a
    player can seek; the sha256 is its ETag."""
    ref = dict(refs).get(name)
    if ref is None:
        raise ApiProblem("not-found", f"no {what} {name!r}; there are: {', '.join(n for n, _ in refs) or 'none yet'}")
    return FileResponse(store.local_path(ref), media_type=ref.media_type, filename=name,
                        headers={"ETag": f'"{ref.sha256}"', "Cache-Control": "private, max-age=3600"})


_FILE = {200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
               "description": "the file's bytes, with its media type (video/mp4, image/png, text/vtt, ...)"}}


@router.get("/avatars/{avatar_id}/images/{name}", response_class=FileResponse,
            responses={**_FILE, **declared(401, 403, 404, 410)},
            summary="The avatar's neutral image or character sheet (names as GET /avatars/{id} lists them)")
def get_avatar_image(avatar_id: str, name: str, request: Request,
                     caller: Caller = Depends(require("renders:read", "avatars:write"))):
    context = context_of(request)
    owned_avatar(context, caller, avatar_id)
    return serve_file(context.store, _image_refs(context.store, avatar_id), name, "image")


@router.delete("/avatars/{avatar_id}", status_code=202, response_model=AvatarRevoked,
               responses=declared(401, 403, 404, 410),
               summary="Revoke an avatar: stop its runs, delete everything derived from it, keep a tombstone")
def delete_avatar(avatar_id: str, request: Request, caller: Caller = Depends(require("avatars:write"))):
    context = context_of(request)
    owned_avatar(context, caller, avatar_id)
    try:
        stone = revoke.revoke(context.instance, context.store, avatar_id, by=f"tenant {caller.tenant} "
                              f"(token {caller.token_id})", reason="revoked through the job API", wait_s=30.0)
    except revoke.RevokeError as error:
        raise ApiProblem("invalid-request", str(error)) from None
    return AvatarRevoked(avatar_id=avatar_id, state="revoked", deleted_blobs=len(stone.deleted_blobs),
                         deleted_records=len(stone.deleted_records))


@router.post("/avatars/{avatar_id}/regenerate", status_code=202, response_model=RegenerationQueued,
             responses=declared(401, 403, 404, 410, 422, 429),
             summary="Regenerate one asset of the avatar (optionally with a new seed); what follows it is refreshed")
async def regenerate_asset(avatar_id: str, body: RegenerateRequest, request: Request,
                           caller: Caller = Depends(require("avatars:write")),
                           idempotency_key: str | None = IdempotencyKey):
    context = context_of(request)
    return await _idempotent(context.sessions, caller, idempotency_key,
                             _fingerprint(avatar_id, body.model_dump(mode="json")),
                             lambda: _queue_regeneration(context, caller, avatar_id, body))


def _queue_regeneration(context: ApiContext, caller: Caller, avatar_id: str, body: RegenerateRequest) -> JSONResponse:
    owned_avatar(context, caller, avatar_id)  # 410 once revoked
    try:
        regeneration.target(context.defs.resolve_asset_graph(), context.instance, body.asset, avatar_id, body.output)
    except regeneration.RegenerationError as error:
        raise ApiProblem("invalid-regeneration", str(error)) from None
    quotas.take(context.sessions, caller.tenant, "regenerate")
    queued = regeneration.queue(context.store, asset=body.asset, avatar_id=avatar_id, output=body.output,
                                seed=body.seed, by=f"tenant {caller.tenant} (token {caller.token_id})")
    answer = RegenerationQueued(regeneration_id=queued.regeneration_id, avatar_id=avatar_id, asset=queued.asset,
                                output=queued.output, seed=queued.seed, status_url=f"/v1/avatars/{avatar_id}")
    return JSONResponse(answer.model_dump(mode="json"), status_code=202)


# --------------------------------------------------------------------------- renders


def render_id(avatar_id: str, slug: str, sha256: str) -> str:
    """Opaque to clients: the avatar, the output slug and the hash of the request the render is for."""
    return _RENDER_ID_PREFIX + base64.urlsafe_b64encode(f"{avatar_id}/{slug}/{sha256}".encode()).decode().rstrip("=")


def parse_render_id(value: str) -> tuple[str, str, str] | None:
    if not value.startswith(_RENDER_ID_PREFIX):
        return None
    encoded = value.removeprefix(_RENDER_ID_PREFIX)
    try:
        parts = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode().split("/")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if len(parts) != 3 or not all(PARTITION_KEY_PATTERN.match(part) for part in parts[:2]) or len(parts[2]) != 64:
        return None
    return parts[0], parts[1], parts[2]


@router.post(
    "/avatars/{avatar_id}/renders", status_code=202, response_model=RenderAccepted,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/OutputRequest"}}}}},
    responses=declared(401, 403, 404, 410, 413, 415, 422, 429),
    summary="Request a video of the avatar (an OutputRequest); the request sensor turns it into runs",
)
async def request_render(avatar_id: str, request: Request, caller: Caller = Depends(require("renders:write")),
                         idempotency_key: str | None = IdempotencyKey):
    context = context_of(request)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise ApiProblem("unsupported-media-type", "a render request is application/json (an OutputRequest)")
    check_content_length(request.headers, MAX_RENDER_REQUEST_BYTES, "a render request")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_RENDER_REQUEST_BYTES:
            raise ApiProblem("payload-too-large", f"a render request may be at most {MAX_RENDER_REQUEST_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiProblem("invalid-render-request", f"the body is not valid UTF-8 JSON: {error}") from None
    if not isinstance(document, dict):
        raise ApiProblem("invalid-render-request", "the body must be a JSON object (an OutputRequest)")
    document.setdefault("avatar_id", avatar_id)
    return await _idempotent(context.sessions, caller, idempotency_key, _fingerprint(avatar_id, document),
                             lambda: _accept_render(context, caller, avatar_id, document))


def _accept_render(context: ApiContext, caller: Caller, avatar_id: str, document: dict) -> JSONResponse:
    owned_avatar(context, caller, avatar_id)
    try:
        parsed = requests.parse_request(json.dumps(document).encode(), avatar_id=avatar_id)
    except requests.RequestError as error:
        raise ApiProblem("invalid-render-request", str(error), str(error).split("; ")) from None
    quotas.take(context.sessions, caller.tenant, "render")
    requests.write_request(context.store, parsed)
    rid = render_id(avatar_id, parsed.slug, requests.request_sha256(parsed))
    return JSONResponse(RenderAccepted(render_id=rid, status_url=f"/v1/renders/{rid}").model_dump(mode="json"),
                        status_code=202)


@router.get("/renders/{render_id}", response_model=RenderStatus, responses=declared(401, 403, 404, 410),
            summary="Where a render stands: stage, progress, ETA, errors, and the package once done")
def get_render(render_id: str, request: Request, caller: Caller = Depends(require("renders:read", "renders:write"))):
    context = context_of(request)
    avatar_id, slug, sha256 = owned_render(context, caller, render_id)
    route = _route_of(context.store, avatar_id, slug, sha256)
    if route is None:
        raise ApiProblem("not-found", f"no render {render_id!r} (its request was replaced before it was accepted)")
    entry = status.render_status(context.instance, context.store, avatar_id, slug, sha256)
    package = entry["package"]
    files = None
    if package is not None:
        files = [stored_file(context.store, f"/v1/renders/{render_id}/files/{name}", name, ref)
                 for name, ref in _package_refs(package)]
    return RenderStatus(
        render_id=render_id, avatar_id=avatar_id, slug=slug, route=route, state=entry["state"], stage=entry["stage"],
        run_id=entry["run_id"], progress_percent=entry["progress_percent"], eta_seconds=entry["eta_seconds"],
        error=entry["reason"], package=files,
    )


def _package_refs(package) -> list[tuple[str, MediaRef]]:
    captions = [("captions.srt", package.captions_srt), ("captions.vtt", package.captions_vtt)]
    captions += [("captions.ass", package.captions_ass)] if package.captions_ass else []
    return [(f"{r.aspect_ratio.replace(':', 'x')}.mp4", r.video) for r in package.renditions] + [
        ("poster", package.poster), *captions, ("rights_manifest.json", package.rights_manifest)]


@router.get("/renders/{render_id}/files/{name}", response_class=FileResponse,
            responses={**_FILE, **declared(401, 403, 404, 410)},
            summary="A file of the render's package (names as GET /renders/{id} lists them), once done")
def get_render_file(render_id: str, name: str, request: Request,
                    caller: Caller = Depends(require("renders:read", "renders:write"))):
    context = context_of(request)
    avatar_id, slug, sha256 = owned_render(context, caller, render_id)
    package = status.render_status(context.instance, context.store, avatar_id, slug, sha256)["package"]
    return serve_file(context.store, _package_refs(package) if package else [], name, "package file")


def _route_of(store: MediaStore, avatar_id: str, slug: str, sha256: str) -> str | None:
    """The route of the request the render is for: its accepted snapshot, or the inbox file while it waits."""
    try:
        return requests.accepted_request(store, avatar_id, slug, sha256)[0].route
    except requests.RequestError:
        pass
    try:
        waiting, _ = requests.read_request(store, avatar_id, slug)
    except requests.RequestError:
        return None
    return waiting.route if requests.request_sha256(waiting) == sha256 else None


def owned_render(context: ApiContext, caller: Caller, render_id: str) -> tuple[str, str, str]:
    """(avatar, slug, request hash) of a render of the caller's tenant; 404 otherwise, 410 once revoked."""
    cell = parse_render_id(render_id)
    if cell is None:
        raise ApiProblem("not-found", f"no render {render_id!r}")
    owned_avatar(context, caller, cell[0])
    return cell


DECIDED_ASSET = {**gates.GATE_ASSET, "full_output_generation": "script", "background_regeneration": "backgrounds"}
"""The stage a job type decides on when the decision does not name one (retry_from_stage names its failed stage)."""


@router.post("/renders/{render_id}/approvals", status_code=202, response_model=ApprovalRecorded,
             responses=declared(401, 403, 404, 410, 422),
             summary="Approve or reject a gated stage of the render; the approval sensor acts on it")
async def decide(render_id: str, decision: ApprovalDecision, request: Request,
                 caller: Caller = Depends(require("renders:write")), idempotency_key: str | None = IdempotencyKey):
    context = context_of(request)
    return await _idempotent(context.sessions, caller, idempotency_key,
                             _fingerprint("approvals", render_id, decision.model_dump(mode="json")),
                             lambda: _decide(context, caller, render_id, decision))


def _decide(context: ApiContext, caller: Caller, render_id: str, decision: ApprovalDecision) -> JSONResponse:
    avatar_id, slug, _ = owned_render(context, caller, render_id)
    asset = decision.asset or DECIDED_ASSET.get(decision.job_type)
    if asset is None:
        raise ApiProblem("invalid-approval", f"say which asset this {decision.job_type} decision is about")
    return _recorded(_record(context, caller, decision.job_type, asset, avatar_id, slug, decision.decision,
                             decision.by, decision.note, decision.content_hash, decision.run_id))


@router.post("/renders/{render_id}/retry", status_code=202, response_model=ApprovalRecorded,
             responses=declared(401, 403, 404, 409, 410, 422),
             summary="Retry the render's failed run from its failed stage (recorded as a retry_from_stage approval)")
async def retry_render(render_id: str, request: Request, caller: Caller = Depends(require("renders:write")),
                       idempotency_key: str | None = IdempotencyKey):
    context = context_of(request)
    return await _idempotent(context.sessions, caller, idempotency_key, _fingerprint("retry", render_id),
                             lambda: _retry(context, caller, render_id))


def _retry(context: ApiContext, caller: Caller, render_id: str) -> JSONResponse:
    avatar_id, slug, sha256 = owned_render(context, caller, render_id)
    runs = status.render_runs(context.instance, cell_key(avatar_id, slug), sha256)
    if not runs or runs[0].status != dg.DagsterRunStatus.FAILURE:
        raise ApiProblem("nothing-to-retry", "the render's newest run has not failed; only a failed render is retried")
    stage, _ = run_failure(context.instance, runs[0].run_id)
    return _recorded(_record(context, caller, "retry_from_stage", stage or "output_package", avatar_id, slug,
                             "approve", "", "retry through the job API", None, runs[0].run_id))


def _recorded(approval) -> JSONResponse:
    answer = ApprovalRecorded(approval_id=approval.approval_id, job_type=approval.job_type, asset=approval.asset,
                              decision=approval.decision, content_hash=approval.content_hash)
    return JSONResponse(answer.model_dump(mode="json"), status_code=202)


def _record(context: ApiContext, caller: Caller, job_type, asset, avatar_id, slug, decision, by, note, content_hash,
            run_id):
    try:
        return approvals.record_decision(
            context.store, context.instance, job_type=job_type, asset=asset, avatar_id=avatar_id, output=slug,
            decision=decision, by=f"{by or 'api'} (tenant {caller.tenant})", note=note, content_hash=content_hash,
            run_id=run_id,
        )
    except approvals.ApprovalError as error:
        raise ApiProblem("invalid-approval", str(error)) from None


# --------------------------------------------------------------------------- events


@router.get("/events", response_model=EventPage, responses=declared(401, 403, 422),
            summary="The tenant's lifecycle events after an event id, for replay")
def list_events(request: Request, after: str | None = Query(None, max_length=80, description="an event id"),
                limit: int = Query(100, ge=1, le=500), caller: Caller = Depends(require("renders:read"))):
    context = context_of(request)
    owners: dict[str, bool] = {}
    page: list[LifecycleEvent] = []
    for event_id in events.pending_ids(context.store, after):
        text = context.store.read_text(outbox_key(event_id))
        if text is None:  # forgotten (a revoke) since the listing
            continue
        event = LifecycleEvent.model_validate_json(text)
        if event.avatar_id not in owners:
            holder = ownership.owner(context.store, event.avatar_id)
            owners[event.avatar_id] = holder is not None and holder.creator_id == caller.tenant
        if owners[event.avatar_id]:
            page.append(event)
            if len(page) == limit:
                break
    return EventPage(events=page, next_after=page[-1].event_id if page else None)


# --------------------------------------------------------------------------- webhooks


@router.post("/webhooks", status_code=201, response_model=webhooks.EndpointCreated,
             responses=declared(401, 403, 422),
             summary="Register a webhook endpoint for the tenant's events; the signing secret is shown only now")
async def register_webhook(endpoint: webhooks.EndpointRequest, request: Request,
                           caller: Caller = Depends(require("admin")), idempotency_key: str | None = IdempotencyKey):
    sessions = context_of(request).sessions

    def register() -> JSONResponse:
        created = webhooks.register(sessions, caller.tenant, endpoint)
        return JSONResponse(created.model_dump(mode="json"), status_code=201)

    return await _idempotent(sessions, caller, idempotency_key, _fingerprint("webhooks", endpoint.model_dump(mode="json")),
                             register)


@router.get("/webhooks", response_model=list[webhooks.Endpoint], responses=declared(401, 403),
            summary="The tenant's webhook endpoints (never their secrets)")
def list_webhooks(request: Request, caller: Caller = Depends(require("admin"))):
    return webhooks.endpoints_of(context_of(request).sessions, caller.tenant)


@router.delete("/webhooks/{endpoint_id}", status_code=204, responses=declared(401, 403, 404),
               summary="Stop delivering to a webhook endpoint")
def remove_webhook(endpoint_id: str, request: Request, caller: Caller = Depends(require("admin"))):
    webhooks.remove(context_of(request).sessions, caller.tenant, endpoint_id)
    return Response(status_code=204)


# --------------------------------------------------------------------------- the tenant's quotas and tokens


@router.get("/quotas", response_model=QuotaStatus, responses=declared(401, 403),
            summary="The tenant's quotas and render cap (set by the operator) and how much of them is used")
def get_quotas(request: Request, caller: Caller = Depends(require("admin"))):
    context = context_of(request)
    actions = {
        action: ActionQuota(**quotas.limit_of(context.sessions, caller.tenant, action).model_dump(),
                            available=round(quotas.available(context.sessions, caller.tenant, action), 3))
        for action in quotas.ACTIONS
    }
    in_flight = render_cap.InFlight(context.instance, context.store)
    return QuotaStatus(tenant=caller.tenant, actions=actions, render_cap=render_cap.cap_of(context.store, caller.tenant),
                       renders_in_flight=in_flight.counts[caller.tenant])


@router.get("/tokens", response_model=list[tokens.TokenInfo], responses=declared(401, 403),
            summary="The tenant's tokens (never their secrets)")
def list_tokens(request: Request, caller: Caller = Depends(require("admin"))):
    return tokens.list_tokens(context_of(request).sessions, caller.tenant)


@router.post("/tokens", status_code=201, response_model=TokenCreated, responses=declared(401, 403, 422),
             summary="A new token of the tenant; the token is shown only in this answer")
def create_token(body: TokenRequest, request: Request, caller: Caller = Depends(require("admin")),
                 idempotency_key: str | None = Header(None, alias=IDEMPOTENCY_HEADER, include_in_schema=False)):
    if idempotency_key is not None:
        raise ApiProblem("invalid-request", f"{IDEMPOTENCY_HEADER} is not taken here: a replay would have to keep the "
                                            "new token, of which only a hash is stored; list the tokens to see "
                                            "whether one was made")
    try:
        scopes, lifetime = tokens.parse_scopes(",".join(body.scopes)), tokens.parse_expiry(body.expires)
    except tokens.TokenError as error:
        raise ApiProblem("invalid-token-request", str(error)) from None
    token, info = tokens.create_token(context_of(request).sessions, caller.tenant, scopes, lifetime)
    return TokenCreated(token=token, token_id=info.token_id, scopes=info.scopes, expires_at=info.expires_at)


@router.delete("/tokens/{token_id}", status_code=204, responses=declared(401, 403, 404),
               summary="Revoke one of the tenant's tokens: every request with it answers 401 from now on")
def revoke_token(token_id: str, request: Request, caller: Caller = Depends(require("admin"))):
    try:
        tokens.revoke_token(context_of(request).sessions, token_id, tenant=caller.tenant)
    except tokens.TokenError:
        raise ApiProblem("not-found", f"no token {token_id!r}") from None
    return Response(status_code=204)


# --------------------------------------------------------------------------- the app


def create_app(context: ApiContext | None) -> FastAPI:
    """The ASGI app; `context` None builds it only for its OpenAPI schema."""
    @contextlib.asynccontextmanager
    async def deliver_webhooks(_app: FastAPI):
        deliverers = webhooks.Deliverers(context.sessions, context.store) if context is not None else None
        if deliverers is not None:
            deliverers.start()
        try:
            yield
        finally:
            if deliverers is not None:
                deliverers.stop()

    app = FastAPI(title="avatarops job API", version="1", openapi_url="/v1/openapi.json", docs_url=None,
                  redoc_url=None, lifespan=deliver_webhooks,
                  summary="Upload avatars, request renders and follow them; errors are RFC 9457 problem details.")
    app.state.api = context
    app.include_router(router)

    @app.exception_handler(ApiProblem)
    async def _problem(_request: Request, problem: ApiProblem):
        return problem.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError):
        errors = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()]
        return ApiProblem("invalid-request", "; ".join(errors), errors).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException):
        if error.status_code in (404, 405):
            return ApiProblem("not-found" if error.status_code == 404 else "method-not-allowed", str(error.detail)).response()
        # FastAPI's own 400 (a body that is not JSON): an invalid request like any other, one status for it.
        return ApiProblem("invalid-request", str(error.detail)).response()

    @app.exception_handler(Exception)
    async def _crash(_request: Request, error: Exception):
        log.exception("unhandled error", exc_info=error)
        return ApiProblem("internal-error", f"{type(error).__name__}; the server log has the details").response()

    @app.get("/openapi.json", include_in_schema=False)
    async def _schema():
        return JSONResponse(app.openapi())

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_media_types(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi
    return app


def _problem_media_types(schema: dict) -> dict:
    """Error answers are application/problem+json: say so in the schema (FastAPI files every model as JSON), and
    publish the OutputRequest model the render operation takes."""
    from avatar_assets.contracts import OutputRequest

    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if int(code) >= 400 and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    definitions = OutputRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(definitions.pop("$defs", {}))
    components["OutputRequest"] = definitions
    return schema


def openapi_document() -> dict:
    """The published schema (docs/openapi.json)."""
    return create_app(None).openapi()


if __name__ == "__main__":  # python -m avatar_assets.api.app > docs/openapi.json
    print(json.dumps(openapi_document(), indent=2, sort_keys=True))
