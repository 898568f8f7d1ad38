"""`POST /v1/avatars`: a multipart body read as it streams, into a private staging folder, then handed to the
same `upload_bundle` that `avatarops upload` runs (validate, claim, photos and voice first, manifest last).

Limits are enforced while reading, so an oversize body is refused (413) before the rest of it arrives:
the Content-Length against the whole bundle's limit, and every part against its own. Part filenames are
the paths the manifest uses, checked with the manifest's own path rule before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import TypeAdapter, ValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from avatar_assets.api.problems import ApiProblem
from avatar_assets.contracts import AvatarUpload, BundlePath
from avatar_assets.identity import intake

MANIFEST_PART = "manifest"
FILES_PART = "files"
MAX_PART_BYTES = max(intake.MAX_PHOTO_BYTES, intake.MAX_VOICE_BYTES)
MAX_BODY_BYTES = intake.MAX_MANIFEST_BYTES + intake.MAX_BUNDLE_BYTES + 64 * 1024  # plus the multipart framing
_BUNDLE_PATH = TypeAdapter(BundlePath)


@dataclass
class ReceivedBundle:
    """What a multipart upload held: the manifest's bytes and every file part, written under `staging`."""

    staging: Path
    manifest_bytes: bytes | None = None
    files: dict[str, str] = field(default_factory=dict)  # bundle path -> sha256

    def parsed(self) -> AvatarUpload:
        """The manifest, or a 422 naming every problem (the same words `avatarops upload` prints)."""
        if self.manifest_bytes is None:
            raise ApiProblem("invalid-request", f"no {MANIFEST_PART!r} part: send the manifest JSON as a part named "
                                                f"{MANIFEST_PART!r}")
        manifest, problems = intake.parse_manifest(self.manifest_bytes)
        if manifest is None:
            raise ApiProblem("invalid-manifest", "; ".join(problems), problems)
        return manifest

    def request_sha256(self) -> str:
        """The parsed request, for Idempotency-Key: the canonical manifest JSON and each part's name and hash
        (never the raw body: every client draws a new multipart boundary)."""
        try:
            manifest = json.dumps(json.loads(self.manifest_bytes or b"null"), sort_keys=True, separators=(",", ":"))
        except ValueError:  # not JSON: compared as sent
            manifest = (self.manifest_bytes or b"").decode("utf-8", "replace")
        return hashlib.sha256(json.dumps([manifest, sorted(self.files.items())]).encode()).hexdigest()


def check_content_length(headers, limit: int = MAX_BODY_BYTES, what: str = "an upload") -> None:
    """413 from the declared Content-Length alone, before any of the body is read."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiProblem("payload-too-large", f"the body is {declared} bytes; {what} may be at most {limit}")


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise ApiProblem("unsupported-media-type",
                         f"Content-Type {content_type or '(none)'!r}: an upload is multipart/form-data with a "
                         f"{MANIFEST_PART!r} part and one {FILES_PART!r} part per file")
    return options[b"boundary"]


async def receive_bundle(content_type: str, body: AsyncIterator[bytes], staging: Path) -> ReceivedBundle:
    """Read the multipart body into `staging`; any 4xx is raised as soon as the part that causes it is seen."""
    receiver = _Receiver(staging)
    parser = MultipartParser(boundary_of(content_type), receiver.callbacks())
    total = 0
    try:
        async for chunk in body:
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                raise ApiProblem("payload-too-large", f"the body is over the upload limit of {MAX_BODY_BYTES} bytes")
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as error:
        raise ApiProblem("invalid-request", f"the multipart body cannot be parsed: {error}") from None
    finally:
        receiver.close()
    if receiver.open_part:
        raise ApiProblem("invalid-request", "the multipart body ends inside a part")
    return receiver.bundle


class _Receiver:
    """The multipart parser's callbacks: headers per part, then its bytes to memory (manifest) or a file."""

    def __init__(self, staging: Path):
        self.bundle = ReceivedBundle(staging)
        self.open_part = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._path: str | None = None
        self._limit = 0
        self._size = 0
        self._manifest = bytearray()
        self._file = None
        self._digest = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin, "on_header_field": self._field, "on_header_value": self._value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
            "on_part_data": self._data, "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self.open_part, self._headers, self._size = True, {}, 0

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == MANIFEST_PART:
            if self.bundle.manifest_bytes is not None or self._manifest:
                raise ApiProblem("invalid-request", f"more than one {MANIFEST_PART!r} part")
            self._name, self._limit, self._manifest = MANIFEST_PART, intake.MAX_MANIFEST_BYTES, bytearray()
            return
        if name != FILES_PART:
            raise ApiProblem("invalid-request", f"unknown part {name!r}: an upload has one {MANIFEST_PART!r} part and "
                                                f"{FILES_PART!r} parts")
        self._name, self._limit, self._path = FILES_PART, MAX_PART_BYTES, self._safe_path(options.get(b"filename"))
        target = self.bundle.staging / self._path
        target.parent.mkdir(parents=True, exist_ok=True)
        self._file, self._digest = open(target, "xb"), hashlib.sha256()

    def _safe_path(self, raw: bytes | None) -> str:
        """The part's filename as a bundle path: relative, inside the bundle, no NUL, sent once."""
        try:
            text = (raw or b"").decode("utf-8")
            path = _BUNDLE_PATH.validate_python(text)
        except (UnicodeDecodeError, ValidationError) as error:
            reason = error.errors()[0]["msg"] if isinstance(error, ValidationError) else "it is not UTF-8"
            raise ApiProblem("invalid-request", f"file part filename {raw!r} is not a bundle path: {reason}") from None
        if path == intake.MANIFEST:
            raise ApiProblem("invalid-request", f"the manifest travels in the {MANIFEST_PART!r} part, not as a file")
        if path in self.bundle.files:
            raise ApiProblem("invalid-request", f"file {path!r} was sent twice")
        return path

    def _data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._size > self._limit:
            what = "the manifest" if self._name == MANIFEST_PART else f"file {self._path!r}"
            raise ApiProblem("payload-too-large", f"{what} is over its limit of {self._limit} bytes")
        if self._name == MANIFEST_PART:
            self._manifest += data[start:end]
        elif self._file is not None:
            self._file.write(data[start:end])
            self._digest.update(data[start:end])

    def _end(self) -> None:
        if self._name == MANIFEST_PART:
            self.bundle.manifest_bytes = bytes(self._manifest)
        elif self._file is not None:
            self._file.close()
            self.bundle.files[self._path] = self._digest.hexdigest()
            self._file = None
        self.open_part, self._name, self._path = False, None, None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
