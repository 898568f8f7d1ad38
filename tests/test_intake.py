"""Bundle intake: when a bundle is ready, bad or still arriving, its hash, and quarantine."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from avatar_assets.contracts import QuarantineReason
from avatar_assets.identity import intake
from avatar_assets.media.partial import atomic_write_text
from tests.conftest import copy_sample, manifest_for, sha256_tree, write_bundle

FUTURE = time.time() + 10 * 365 * 24 * 3600


@pytest.fixture
def bundle(sample_bundle: Path, tmp_path: Path) -> Path:
    return copy_sample(sample_bundle, tmp_path / "inbox", "ada-01")


def settled(path: Path) -> intake.BundleScan:
    return intake.scan_bundle(path, settle_seconds=0.0, now=time.time() + 1)


def test_ready_bundle_has_manifest_and_bundle_hash(bundle: Path):
    scan = settled(bundle)
    assert scan.status == "ready", scan.problems
    assert scan.avatar_id == "ada-01" and scan.manifest.avatar_id == "ada-01"
    expected = intake.contents_sha256(
        {p: (bundle / p).read_bytes() for p in ["manifest.json", "photos/portrait.jpg", "voice/sample.wav"]}
    )
    assert scan.sha256 == expected
    assert scan.problems == []


def test_bundle_hash_covers_referenced_files_only(bundle: Path):
    before = settled(bundle).sha256
    (bundle / "consent.txt").write_text("edited notes are not part of the identity")
    (bundle / "photos" / "unlisted.jpg").write_bytes(b"not referenced")
    assert settled(bundle).sha256 == before
    photo = bundle / "photos" / "portrait.jpg"
    photo.write_bytes(photo.read_bytes() + b"\0")
    assert settled(bundle).sha256 != before


def test_bundle_hash_depends_on_paths_not_just_bytes():
    a = intake.contents_sha256({"a.jpg": b"x", "b.jpg": b"y"})
    assert a == intake.contents_sha256({"b.jpg": b"y", "a.jpg": b"x"})  # order-free
    assert a != intake.contents_sha256({"a.jpg": b"y", "b.jpg": b"x"})  # swapped contents
    assert len(a) == 64 and int(a, 16) >= 0


def test_recently_changed_bundle_is_pending(bundle: Path):
    scan = intake.scan_bundle(bundle, settle_seconds=30.0)
    assert scan.status == "pending"
    assert scan.manifest is None and scan.sha256 is None
    assert intake.settling_bundles(bundle.parent, 30.0) == [bundle]
    assert intake.settling_bundles(bundle.parent, 0.0) == []


def test_bundle_without_manifest_is_pending_not_bad(tmp_path: Path):
    bundle = tmp_path / "ada-01"
    (bundle / "photos").mkdir(parents=True)
    (bundle / "photos" / "a.jpg").write_bytes(b"still copying")
    assert settled(bundle).status == "pending"


def test_future_modification_time_does_not_hold_a_bundle_forever(bundle: Path):
    """mtime is user-settable (tar -x, cp -p, a skewed camera clock); only the change time counts."""
    os.utime(bundle / "photos" / "portrait.jpg", (FUTURE, FUTURE))
    fingerprint = intake.bundle_fingerprint(bundle)
    assert fingerprint < time.time() + 1
    assert settled(bundle).status == "ready"


def test_fingerprint_moves_when_a_file_is_rewritten(bundle: Path):
    before = intake.bundle_fingerprint(bundle)
    time.sleep(0.02)
    (bundle / "voice" / "sample.wav").write_bytes((bundle / "voice" / "sample.wav").read_bytes())
    assert intake.bundle_fingerprint(bundle) > before


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{not json", "manifest.json is not valid JSON"),
        ("[1, 2]", "manifest.json must hold a JSON object"),
        ("42", "manifest.json must hold a JSON object"),
        ("null", "manifest.json must hold a JSON object"),
        ("[" * 20_000 + "]" * 20_000, "manifest.json nests too deeply to be a manifest"),
        ("{}" + " " * (20 * 1024 * 1024), "manifest.json is 20971522 bytes, over the 64 KB limit"),
    ],
    ids=["broken", "array", "number", "null", "deep-nesting", "20-MB-of-whitespace"],
)
def test_unreadable_manifest_is_bad(bundle: Path, text: str, expected: str):
    (bundle / "manifest.json").write_text(text)
    scan = settled(bundle)
    assert scan.status == "bad"
    assert scan.problems[0].startswith(expected)


def test_non_utf8_manifest_is_bad(bundle: Path):
    (bundle / "manifest.json").write_bytes(b"\xff\xfe{\x00}")
    assert settled(bundle).problems == ["manifest.json is not UTF-8 text"]


def test_listed_file_missing_on_disk_is_named(bundle: Path):
    (bundle / "voice" / "sample.wav").unlink()
    scan = settled(bundle)
    assert scan.status == "bad"
    assert scan.problems == ["voice/sample.wav: listed in the manifest but missing from the bundle"]


def test_directory_listed_as_photo_is_missing(bundle: Path):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["photos"] = ["photos"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert settled(bundle).problems == ["photos: listed in the manifest but missing from the bundle"]


def test_symlink_out_of_the_bundle_is_refused(bundle: Path, tmp_path: Path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes((bundle / "photos" / "portrait.jpg").read_bytes())
    (bundle / "photos" / "portrait.jpg").unlink()
    (bundle / "photos" / "portrait.jpg").symlink_to(secret)
    scan = settled(bundle)
    assert scan.status == "bad"
    assert scan.problems == ["photos/portrait.jpg: links are not accepted; put the file itself in the bundle"]


def test_symlinked_folder_out_of_the_bundle_is_refused(bundle: Path, tmp_path: Path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (bundle / "photos").rename(outside / "photos")
    (bundle / "photos").symlink_to(outside / "photos")
    assert "links are not accepted" in settled(bundle).problems[0]


def test_oversized_photo_is_refused(bundle: Path, monkeypatch):
    monkeypatch.setattr(intake, "MAX_PHOTO_BYTES", 1000)
    size = (bundle / "photos" / "portrait.jpg").stat().st_size
    assert settled(bundle).problems == [f"photos/portrait.jpg: {size} bytes, over the 1000 byte limit"]


def test_voice_sample_longer_than_ten_minutes_is_refused(bundle: Path, monkeypatch):
    monkeypatch.setattr(intake, "MAX_VOICE_SECONDS", 5.0)
    problems = settled(bundle).problems
    assert len(problems) == 1 and problems[0].startswith("voice/sample.wav: ") and "over the 5 s limit" in problems[0]


def test_bundle_over_the_total_size_cap_is_refused(bundle: Path, monkeypatch):
    monkeypatch.setattr(intake, "MAX_BUNDLE_BYTES", 10_000)
    [problem] = settled(bundle).problems
    assert problem.startswith("the bundle's files add up to ") and problem.endswith("over the 10000 byte limit")


def test_any_error_reading_a_bundle_makes_it_bad_instead_of_raising(bundle: Path, monkeypatch):
    def explode(*_):
        raise ValueError("a codec the reader chokes on")

    monkeypatch.setattr(intake, "check_files", explode)
    scan = settled(bundle)
    assert scan.status == "bad" and "a codec the reader chokes on" in scan.problems[0]


def test_avatar_id_must_match_folder(bundle: Path):
    renamed = bundle.rename(bundle.parent / "someone-else")
    scan = settled(renamed)
    assert scan.status == "bad"
    assert scan.problems == ["avatar_id 'ada-01' does not match the bundle folder name 'someone-else'"]


def test_contract_problems_and_file_problems_are_reported_together(tmp_path: Path):
    document = manifest_for("ada-01", ["../outside.jpg"], None)
    document["nickname"] = "x"
    bundle = write_bundle(tmp_path, "ada-01", {}, manifest=document)
    problems = settled(bundle).problems
    assert any(p.startswith("photos.0: ") and "path traversal" in p for p in problems)
    assert "nickname: unknown field (not part of the upload contract)" in problems


def test_quarantine_moves_everything_unaltered_and_explains(bundle: Path, tmp_path: Path):
    (bundle / "notes" / "deep").mkdir(parents=True)
    (bundle / "notes" / "deep" / "extra.bin").write_bytes(os.urandom(1000))
    before = sha256_tree(bundle)
    problems = ["photos.0: something a person can fix"]
    target = intake.quarantine(bundle, problems, tmp_path / "quarantine")

    assert not bundle.exists()
    assert target.parent == tmp_path / "quarantine"
    assert target.name.startswith("ada-01-") and target.name.endswith("Z")
    assert sha256_tree(target / "bundle") == before
    reason = QuarantineReason.model_validate_json((target / "reason.json").read_text())
    assert reason.avatar_id == "ada-01"
    assert reason.problems == problems
    assert reason.original_files == before
    assert reason.bundle == str(bundle)
    assert "upload the bundle again" in reason.action
    assert not list(target.glob(".*.part"))


def test_quarantining_the_same_name_twice_keeps_both(sample_bundle: Path, tmp_path: Path):
    first = intake.quarantine(copy_sample(sample_bundle, tmp_path / "in", "ada-01"), ["one"], tmp_path / "q")
    second = intake.quarantine(copy_sample(sample_bundle, tmp_path / "in", "ada-01"), ["two"], tmp_path / "q")
    assert first != second
    assert json.loads((first / "reason.json").read_text())["problems"] == ["one"]
    assert json.loads((second / "reason.json").read_text())["problems"] == ["two"]


def test_atomic_write_text_replaces_whole_file(tmp_path: Path):
    target = tmp_path / "deep" / "state.json"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_file_hashes_match_hashlib(bundle: Path):
    hashes = intake.file_hashes(bundle)
    assert set(hashes) == {"manifest.json", "photos/portrait.jpg", "voice/sample.wav", "consent.txt"}
    assert hashes["photos/portrait.jpg"] == hashlib.sha256((bundle / "photos/portrait.jpg").read_bytes()).hexdigest()
