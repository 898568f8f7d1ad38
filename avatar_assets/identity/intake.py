"""Upload intake: decide whether a bundle in the inbox is ready, bad or still arriving.

Used by the upload sensor and by `avatarops upload`. Nothing here alters or deletes a user's file:
a bad bundle is renamed, whole, into quarantine next to a `reason.json` a person can read.
"""

from __future__ import annotations

import hashlib
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
from avatar_assets.pipeline.quarantine import set_aside

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024
MAX_PHOTO_BYTES = 50 * 1024 * 1024
MAX_VOICE_BYTES = 200 * 1024 * 1024
MAX_BUNDLE_BYTES = 400 * 1024 * 1024
MAX_VOICE_SECONDS = 600.0


@dataclass(frozen=True)
class BundleScan:
    path: Path
    status: Literal["pending", "ready", "bad"]
    fingerprint: float
    avatar_id: str
    manifest: AvatarUpload | None = None
    sha256: str | None = None
    problems: list[str] = field(default_factory=list)


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
            return None, [f"manifest.json is {size} bytes, over the {MAX_MANIFEST_BYTES // 1024} KB limit"]
        document = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return None, ["manifest.json is not UTF-8 text"]
    except json.JSONDecodeError as error:
        return None, [f"manifest.json is not valid JSON: {error}"]
    except RecursionError:
        return None, ["manifest.json nests too deeply to be a manifest"]
    except OSError as error:
        return None, [f"manifest.json cannot be read: {error.strerror or error}"]
    if not isinstance(document, dict):
        return None, ["manifest.json must hold a JSON object"]
    try:
        return AvatarUpload.model_validate(document), []
    except ValidationError as error:
        return None, describe_validation_error(error)


def check_files(bundle: Path, manifest: AvatarUpload) -> list[str]:
    problems = []
    root = bundle.resolve()
    limits = {path: MAX_PHOTO_BYTES for path in manifest.photos}
    if manifest.voice_sample:
        limits[manifest.voice_sample] = MAX_VOICE_BYTES
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
    if total > MAX_BUNDLE_BYTES:
        problems.append(f"the bundle's files add up to {total} bytes, over the {MAX_BUNDLE_BYTES} byte limit")
    return problems


def _voice_duration_problem(path: Path, relative: str) -> list[str]:
    """A voice sample longer than 10 minutes is refused before anyone decodes it (its header says so)."""
    import soundfile

    try:
        seconds = soundfile.info(str(path)).duration
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
