"""Upload intake: decide whether a bundle in the inbox is ready, bad or still arriving.

Used by the upload sensor, `source_upload` and `avatarops upload`. The inbox is the store's
`inbox/avatars/<avatar>/` keys: in a local home a folder (a bundle settles by its change times and moves
whole), in an object store objects (a bundle is complete once its manifest and every file it names are
there). Nothing here alters or deletes a user's file: a bad bundle is set aside, whole, into quarantine
next to a `reason.json` a person can read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from avatar_assets import settings
from avatar_assets.contracts import AvatarUpload, QuarantineReason, describe_validation_error
from avatar_assets.pipeline import privacy
from avatar_assets.pipeline.quarantine import set_aside, set_aside_in_store
from resources import layout
from resources.media_store import MediaStore, StoreUnavailable

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024
MAX_PHOTO_BYTES = 50 * 1024 * 1024
MAX_VOICE_BYTES = 200 * 1024 * 1024
MAX_BUNDLE_BYTES = 400 * 1024 * 1024
MAX_VOICE_SECONDS = 600.0


@dataclass(frozen=True)
class BundleScan:
    path: Path | str  # the bundle's folder, or its key prefix in an object store
    status: Literal["pending", "ready", "bad"]
    # Newest change time of a folder. In an object store, whose sensor keeps a cursor: the manifest's
    # LastModified once a manifest is there (how long a bundle has waited for the files it names), else 0.
    fingerprint: float
    avatar_id: str
    manifest: AvatarUpload | None = None
    sha256: str | None = None
    problems: list[str] = field(default_factory=list)
    contents: dict[str, bytes] = field(default_factory=dict, repr=False)  # a stored bundle's bytes, read once


class BundleError(ValueError):
    """An upload bundle that is not there, or not valid; the message says which and why."""


def bundle_fingerprint(bundle: Path) -> float:
    """Newest change time (ctime) in the bundle.

    ctime moves on every write and rename and cannot be set by anyone (cp -p, tar -x and `touch -d`
    set mtime). mtime is not used: a future mtime would hold the bundle "settling" forever.
    """
    newest = 0.0
    for path in [bundle, *bundle.rglob("*")]:
        try:
            stat = path.lstat()
        except FileNotFoundError:
            continue
        newest = max(newest, stat.st_ctime)
    return newest


def contents_sha256(contents: dict[str, bytes]) -> str:
    """The bundle hash: manifest and referenced files, by relative path, in sorted order."""
    digest = hashlib.sha256()
    for relative in sorted(contents):
        digest.update(relative.encode() + b"\0" + hashlib.sha256(contents[relative]).digest())
    return digest.hexdigest()


def bundle_sha256(bundle: Path, manifest: AvatarUpload) -> str:
    paths = [MANIFEST, *manifest.referenced_paths()]
    return contents_sha256({path: (bundle / path).read_bytes() for path in paths})


def read_manifest(bundle: Path) -> tuple[AvatarUpload | None, list[str]]:
    """The manifest, or the reasons it cannot be one. Never raises for what a user put in the file."""
    path = bundle / MANIFEST
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            return None, [_manifest_too_big(size)]
        data = path.read_bytes()
    except OSError as error:
        return None, [f"manifest.json cannot be read: {error.strerror or error}"]
    return parse_manifest(data)


def _manifest_too_big(size: int) -> str:
    return f"manifest.json is {size} bytes, over the {MAX_MANIFEST_BYTES // 1024} KB limit"


def parse_manifest(data: bytes) -> tuple[AvatarUpload | None, list[str]]:
    """A manifest's bytes as the contract, or the reasons they are not one."""
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, ["manifest.json is not UTF-8 text"]
    except json.JSONDecodeError as error:
        return None, [f"manifest.json is not valid JSON: {error}"]
    except RecursionError:
        return None, ["manifest.json nests too deeply to be a manifest"]
    if not isinstance(document, dict):
        return None, ["manifest.json must hold a JSON object"]
    try:
        return AvatarUpload.model_validate(document), []
    except ValidationError as error:
        return None, describe_validation_error(error)


def _limits(manifest: AvatarUpload) -> dict[str, int]:
    """The byte limit of every file the manifest names."""
    limits = {path: MAX_PHOTO_BYTES for path in manifest.photos}
    if manifest.voice_sample:
        limits[manifest.voice_sample] = MAX_VOICE_BYTES
    return limits


def check_files(bundle: Path, manifest: AvatarUpload) -> list[str]:
    problems = []
    root = bundle.resolve()
    limits = _limits(manifest)
    for relative, limit in limits.items():
        path = bundle / relative
        if path.is_symlink() or root not in path.resolve().parents:
            problems.append(f"{relative}: links are not accepted; put the file itself in the bundle")
        elif not path.is_file():
            problems.append(f"{relative}: listed in the manifest but missing from the bundle")
        elif path.stat().st_size > limit:
            problems.append(f"{relative}: {path.stat().st_size} bytes, over the {limit} byte limit")
        elif relative == manifest.voice_sample:
            problems.extend(_voice_duration_problem(path, relative))
    total = sum((bundle / relative).stat().st_size for relative in limits if (bundle / relative).is_file())
    return problems + _total_problem(total)


def _total_problem(total: int) -> list[str]:
    if total > MAX_BUNDLE_BYTES:
        return [f"the bundle's files add up to {total} bytes, over the {MAX_BUNDLE_BYTES} byte limit"]
    return []


def _voice_duration_problem(sample: Path | bytes, relative: str) -> list[str]:
    """A voice sample (a file, or a stored one's bytes) longer than 10 minutes is refused before anyone
    decodes it (its header says so)."""
    import soundfile

    try:
        seconds = soundfile.info(io.BytesIO(sample) if isinstance(sample, bytes) else str(sample)).duration
    except Exception:  # an unreadable file is the voice gate's to explain, with the decoder's words
        return []
    if seconds > MAX_VOICE_SECONDS:
        return [f"{relative}: {seconds:.0f} s of audio, over the {MAX_VOICE_SECONDS:.0f} s limit"]
    return []


def scan_bundle(bundle: Path, *, settle_seconds: float = 2.0, now: float | None = None) -> BundleScan:
    """Whether a bundle is pending, ready or bad. Whatever is wrong with one bundle makes it bad (with the
    reason), never an exception that would stop the sensor from taking the bundles next to it."""
    now = time.time() if now is None else now
    fingerprint = bundle_fingerprint(bundle)
    name = bundle.name
    if not (bundle / MANIFEST).is_file() or now - fingerprint < settle_seconds:
        return BundleScan(bundle, "pending", fingerprint, name)
    # A hand-dropped bundle keeps the dropper's modes while it stays in the inbox. It is tightened once it has
    # settled and before it is judged, and its change time read again: chmod moves it, and a fingerprint from
    # before would make the bundle look changed on the next tick, to be hashed again.
    privacy.tighten(bundle)
    fingerprint = bundle_fingerprint(bundle)
    try:
        return _judge(bundle, fingerprint, name)
    except Exception as error:  # noqa: BLE001 - one poisoned bundle must not stop intake
        return BundleScan(bundle, "bad", fingerprint, name, problems=[f"the bundle could not be read: {error!r}"[:500]])


def _judge(bundle: Path, fingerprint: float, name: str) -> BundleScan:
    manifest, problems = read_manifest(bundle)
    if manifest is not None:
        if manifest.avatar_id != name:
            problems.append(
                f"avatar_id {manifest.avatar_id!r} does not match the bundle folder name {name!r}"
            )
        problems.extend(check_files(bundle, manifest))
    if problems or manifest is None:
        return BundleScan(bundle, "bad", fingerprint, name, manifest, problems=problems)
    return BundleScan(bundle, "ready", fingerprint, name, manifest, bundle_sha256(bundle, manifest))


def file_hashes(bundle: Path) -> dict[str, str]:
    hashes = {}
    for path in sorted(bundle.rglob("*")):
        if path.is_file() and not path.is_symlink():
            hashes[path.relative_to(bundle).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def quarantine(bundle: Path, problems: list[str], quarantine_root: Path) -> Path:
    """Move the whole bundle, unaltered, to `quarantine/<name>-<time>/bundle` and explain why."""
    hashes = file_hashes(bundle)
    reason = QuarantineReason(
        avatar_id=bundle.name,
        bundle=settings.home_relative(bundle),
        quarantined_at=datetime.now(UTC),
        problems=problems,
        original_files=hashes,
    )

    def move_into(target: Path) -> None:
        try:
            os.rename(bundle, target / "bundle")
        except OSError:
            shutil.copytree(bundle, target / "bundle", symlinks=True, copy_function=shutil.copy2)
            if file_hashes(target / "bundle") != hashes:
                raise RuntimeError(f"copy of {bundle} to quarantine did not verify; original left in place")
            shutil.rmtree(bundle)

    return set_aside(quarantine_root, bundle.name, reason, move_into)


def settling_bundles(avatars_root: Path, settle_seconds: float) -> list[Path]:
    """Bundles with a manifest that changed too recently to be taken yet."""
    if not avatars_root.is_dir():
        return []
    now = time.time()
    return [
        bundle
        for bundle in avatars_root.iterdir()
        if bundle.is_dir()
        and (bundle / MANIFEST).is_file()
        and now - bundle_fingerprint(bundle) < settle_seconds
    ]


# --------------------------------------------------------------------------- bundles in an object store


def scan_stored_bundle(store: MediaStore, avatar_id: str) -> BundleScan:
    """A bundle in an object store: pending until its manifest and every file the manifest names are
    there (the uploader writes the manifest last), then ready or bad. As with a folder, whatever is wrong
    with one bundle makes it bad, never an exception that stops intake of the others. A pending bundle with a
    manifest names the files it still waits for in `problems`."""
    prefix = layout.inbox_bundle(avatar_id)
    try:
        listed = {item.key.removeprefix(prefix): item for item in store.objects(prefix)}
        sizes = {relative: item.size for relative, item in listed.items()}
        if MANIFEST not in sizes:
            return BundleScan(prefix, "pending", 0.0, avatar_id)
        written = listed[MANIFEST].last_modified.timestamp()
        if sizes[MANIFEST] > MAX_MANIFEST_BYTES:
            return BundleScan(prefix, "bad", written, avatar_id, problems=[_manifest_too_big(sizes[MANIFEST])])
        manifest_bytes = store.read(prefix + MANIFEST)
        manifest, problems = parse_manifest(manifest_bytes)
        if manifest is None:
            return BundleScan(prefix, "bad", written, avatar_id, problems=problems)
        if missing := [relative for relative in manifest.referenced_paths() if relative not in sizes]:
            return BundleScan(prefix, "pending", written, avatar_id, manifest,
                              problems=[f"{relative}: named in the manifest, not uploaded" for relative in missing])
        if manifest.avatar_id != avatar_id:
            problems.append(f"avatar_id {manifest.avatar_id!r} does not match the bundle folder name {avatar_id!r}")
        limits = _limits(manifest)
        problems += [f"{relative}: {sizes[relative]} bytes, over the {limit} byte limit"
                     for relative, limit in limits.items() if sizes[relative] > limit]
        problems += _total_problem(sum(sizes[relative] for relative in limits))
        if problems:
            return BundleScan(prefix, "bad", written, avatar_id, manifest, problems=problems)
        contents = {MANIFEST: manifest_bytes, **{relative: store.read(prefix + relative) for relative in limits}}
        if manifest.voice_sample:
            problems += _voice_duration_problem(contents[manifest.voice_sample], manifest.voice_sample)
        if problems:
            return BundleScan(prefix, "bad", written, avatar_id, manifest, problems=problems)
        return BundleScan(prefix, "ready", written, avatar_id, manifest, contents_sha256(contents), contents=contents)
    except FileNotFoundError:  # a key left between listing and reading (a re-upload or revoke under way)
        return BundleScan(prefix, "pending", 0.0, avatar_id)
    except StoreUnavailable:  # says nothing about the bundle: the tick fails and its cursor is kept
        raise
    except Exception as error:  # noqa: BLE001 - one poisoned bundle must not stop intake
        return BundleScan(prefix, "bad", 0.0, avatar_id, problems=[f"the bundle could not be read: {error!r}"[:500]])


def quarantine_stored(store: MediaStore, avatar_id: str, problems: list[str]) -> str:
    """Set a bundle in an object store aside, unaltered, under `quarantine/<name>-<time>/bundle/`."""
    prefix = layout.inbox_bundle(avatar_id)
    reason = QuarantineReason(
        avatar_id=avatar_id,
        bundle=prefix.rstrip("/"),
        quarantined_at=datetime.now(UTC),
        problems=problems,
        original_files={item.key.removeprefix(prefix): hashlib.sha256(store.read(item.key)).hexdigest()
                        for item in store.objects(prefix)},
    )
    return set_aside_in_store(store, prefix, reason, remove_first=MANIFEST)


def read_bundle(store: MediaStore, avatar_id: str) -> tuple[AvatarUpload, dict[str, bytes]]:
    """The avatar's bundle as it is in the inbox now, through whichever store holds it: its manifest and
    the bytes of the manifest and of every file it names. Raises BundleError saying what is wrong."""
    folder = store.folder(layout.inbox_bundle(avatar_id))
    if folder is None:
        scan = scan_stored_bundle(store, avatar_id)
        if scan.status == "pending":
            waiting_for = f": {'; '.join(scan.problems)}" if scan.problems else ""
            raise BundleError(f"no complete upload bundle for {avatar_id} at {store.uri(scan.path)}{waiting_for}")
        if scan.status == "bad":
            raise BundleError(f"upload bundle {store.uri(scan.path)} is not valid: {'; '.join(scan.problems)}")
        return scan.manifest, scan.contents
    if not (folder / MANIFEST).is_file():
        raise BundleError(f"no upload bundle for {avatar_id} at {folder}")
    manifest, problems = read_manifest(folder)
    problems += check_files(folder, manifest) if manifest else []
    if problems or manifest is None:
        raise BundleError(f"upload bundle {folder} is not valid: {'; '.join(problems)}")
    try:
        return manifest, {path: (folder / path).read_bytes() for path in [MANIFEST, *manifest.referenced_paths()]}
    except OSError as error:  # removed or replaced between the check above and this read
        raise BundleError(f"upload bundle {folder} changed while it was read: {error.strerror or error}: "
                          f"{Path(error.filename or '').name}; upload it again") from error
