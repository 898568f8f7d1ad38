"""Output requests: `<inbox>/outputs/<avatar_id>/<slug>.json` files, validated into `OutputRequest`s.

A request whose avatar is unknown, revoked or not yet through its identity gates is held (kept in the
inbox, with a reason a person can read in `avatarops status`), never dropped; a malformed one is moved
to quarantine with its reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from avatar_assets import settings
from avatar_assets.contracts import OutputRequest, describe_validation_error
from avatar_assets.media.partial import atomic_write_text


class RequestError(ValueError):
    """A request that cannot be rendered as written; the message names the problems."""


@dataclass(frozen=True)
class ScannedRequest:
    path: Path
    avatar_id: str
    slug: str
    raw: bytes
    request: OutputRequest | None
    problems: list[str]


def request_path(avatar_id: str, slug: str) -> Path:
    return settings.inbox_dir() / "outputs" / avatar_id / f"{slug}.json"


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


def scan_requests() -> list[ScannedRequest]:
    root = settings.inbox_dir() / "outputs"
    scanned = []
    for path in sorted(root.glob("*/*.json")) if root.is_dir() else []:
        avatar_id, slug = path.parent.name, path.stem
        raw = path.read_bytes()
        try:
            scanned.append(ScannedRequest(path, avatar_id, slug, raw, parse_request(raw, avatar_id=avatar_id, slug=slug), []))
        except RequestError as error:
            scanned.append(ScannedRequest(path, avatar_id, slug, raw, None, [str(error)]))
    return scanned


def read_request(avatar_id: str, slug: str) -> tuple[OutputRequest, bytes]:
    path = request_path(avatar_id, slug)
    if not path.is_file():
        raise RequestError(f"no output request at {path}")
    raw = path.read_bytes()
    return parse_request(raw, avatar_id=avatar_id, slug=slug), raw


def write_request(request: OutputRequest) -> Path:
    """Atomic write: the sensor never sees half a request."""
    path = request_path(request.avatar_id, request.slug)
    atomic_write_text(path, request.model_dump_json(indent=2))
    return path


def held_path(avatar_id: str, slug: str) -> Path:
    return settings.avatar_home() / "requests" / "held" / f"{avatar_id}--{slug}.json"
