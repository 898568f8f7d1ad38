"""Output requests: the store's `inbox/outputs/<avatar_id>/<slug>.json` keys (a local home's inbox files,
or objects in a bucket that `avatarops request` on one host and the request sensor on another share),
validated into `OutputRequest`s.

A request whose avatar is unknown, revoked or not yet through its identity gates is held (kept in the
inbox, with a reason under `requests/held/` in the store that `avatarops status` reads on any host), never
dropped; a malformed one is moved to quarantine with its reason.

The inbox file is what a person may still change. What a run renders is the snapshot the request sensor
accepted: stored once under its sha256, named by the run's `request_sha256` tag, and made the cell's
current request. A run without the tag (automation, `regenerate`, `retry`, a launch from the UI) renders
the cell's current snapshot, so an edited inbox file changes nothing until the sensor accepts it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from avatar_assets.contracts import AcceptedRequest, OutputRequest, describe_validation_error
from resources import layout
from resources.layout import current_request_key, request_snapshot_key
from resources.media_store import MediaStore

REQUEST_TAG = "request_sha256"
"""The run tag naming the accepted request snapshot a render run is for."""


class RequestError(ValueError):
    """A request that cannot be rendered as written; the message names the problems."""


@dataclass(frozen=True)
class ScannedRequest:
    key: str  # its store key, `inbox/outputs/<avatar>/<slug>.json`
    avatar_id: str
    slug: str
    raw: bytes
    request: OutputRequest | None
    problems: list[str]


def parse_request(raw: bytes, *, avatar_id: str | None = None, slug: str | None = None) -> OutputRequest:
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(f"request is not valid UTF-8 JSON: {error}") from error
    if not isinstance(document, dict):
        raise RequestError("request must be a JSON object")
    try:
        request = OutputRequest.model_validate(document)
    except ValidationError as error:
        raise RequestError("; ".join(describe_validation_error(error))) from error
    problems = [problem] if (problem := unspeakable(request)) else []
    if avatar_id is not None and request.avatar_id != avatar_id:
        problems.append(f"avatar_id {request.avatar_id!r} does not match its folder {avatar_id!r}")
    if slug is not None and request.slug != slug:
        problems.append(f"slug {request.slug!r} does not match its file name {slug!r}")
    if problems:
        raise RequestError("; ".join(problems))
    return request


def unspeakable(request: OutputRequest) -> str | None:
    """Why the script cannot become the requested video (nothing left to say after cleaning, too many
    words, too few words for the route's scenes), found before any run is launched; None when it can."""
    from avatar_assets.media.script import ScriptError, parse_script
    from avatar_assets.media.storyboard import plan_scenes

    try:
        parsed = parse_script(request.script, pronunciations=request.pronunciations)
    except ScriptError as error:
        return f"script: {error}"
    try:
        plan_scenes(request.route, [len(sentence) for sentence in parsed.sentences], list(request.background_prompts))
    except ValueError as error:
        return f"route: {error}"
    return None


def scan_requests(store: MediaStore) -> list[ScannedRequest]:
    """Every request in the store's inbox, parsed; a key gone between listing and reading (a revoke or
    a quarantine by another host) is skipped."""
    scanned = []
    for key in sorted(store.list_keys(layout.INBOX_OUTPUTS)):
        if (cell := layout.inbox_request_cell(key)) is None:
            continue
        avatar_id, slug = cell
        try:
            raw = store.read(key)
        except FileNotFoundError:
            continue
        try:
            scanned.append(ScannedRequest(key, avatar_id, slug, raw, parse_request(raw, avatar_id=avatar_id, slug=slug), []))
        except RequestError as error:
            scanned.append(ScannedRequest(key, avatar_id, slug, raw, None, [str(error)]))
    return scanned


def read_request(store: MediaStore, avatar_id: str, slug: str) -> tuple[OutputRequest, bytes]:
    """The request as it is in the inbox now (what a person is deciding on, not what a run renders)."""
    key = layout.inbox_request(avatar_id, slug)
    try:
        raw = store.read(key)
    except FileNotFoundError:
        raise RequestError(f"no output request at {store.uri(key)}") from None
    return parse_request(raw, avatar_id=avatar_id, slug=slug), raw


def accept(store: MediaStore, request: OutputRequest, raw: bytes) -> str:
    """Store the request's bytes under their hash (once) and make them the cell's current request. The
    sensor asks again on every tick for every request in the inbox: one read when nothing changed."""
    sha = hashlib.sha256(raw).hexdigest()
    if current_sha256(store, request.avatar_id, request.slug) == sha:
        return sha  # the pointer is written after the snapshot, so the snapshot is there too
    store.create_text(request_snapshot_key(request.avatar_id, request.slug, sha), raw.decode("utf-8"))
    pointer = AcceptedRequest(avatar_id=request.avatar_id, slug=request.slug, sha256=sha, accepted_at=datetime.now(UTC))
    store.write_text(current_request_key(request.avatar_id, request.slug), pointer.model_dump_json(indent=2))
    return sha


def current_sha256(store: MediaStore, avatar_id: str, slug: str) -> str | None:
    """The hash of the cell's current accepted request (the one its renders render), None before the first."""
    current = store.read_text(current_request_key(avatar_id, slug))
    return AcceptedRequest.model_validate_json(current).sha256 if current is not None else None


def accepted_request(store: MediaStore, avatar_id: str, slug: str, sha256: str | None = None) -> tuple[OutputRequest, bytes]:
    """The accepted snapshot `sha256` names, or the cell's current one; what a render run renders."""
    if sha256 is None:
        current = store.read_text(current_request_key(avatar_id, slug))
        if current is None:
            raise RequestError(
                f"no request for {avatar_id}/{slug} has been accepted: submit one (avatarops request) and let "
                "the request sensor accept it"
            )
        sha256 = AcceptedRequest.model_validate_json(current).sha256
    text = store.read_text(request_snapshot_key(avatar_id, slug, sha256))
    if text is None:
        raise RequestError(f"accepted request {sha256[:12]} of {avatar_id}/{slug} is not in the media store")
    raw = text.encode("utf-8")
    return parse_request(raw, avatar_id=avatar_id, slug=slug), raw


def request_text(request: OutputRequest) -> str:
    """The request as `write_request` puts it in the inbox; the sensor accepts it under these bytes' sha256."""
    return request.model_dump_json(indent=2)


def request_sha256(request: OutputRequest) -> str:
    """The hash the request will be accepted under, and so the `request_sha256` tag of the runs rendering it."""
    return hashlib.sha256(request_text(request).encode("utf-8")).hexdigest()


def write_request(store: MediaStore, request: OutputRequest) -> str:
    """Put the request in the store's inbox whole (a local file renamed into place, or one S3 PUT): the
    sensor never sees half a request. Returns its key."""
    key = layout.inbox_request(request.avatar_id, request.slug)
    store.write_text(key, request_text(request))
    return key


def held_requests(store: MediaStore) -> list[dict]:
    """Every held request's note (`request`: its inbox key, and `reason`: why it waits), in name order."""
    held = []
    for key in sorted(store.list_keys(layout.HELD_REQUESTS)):
        try:
            held.append(json.loads(store.read(key)))
        except FileNotFoundError:  # released between listing and reading
            continue
    return held
