"""A home can be copied or moved: nothing persisted under AVATAR_HOME holds an absolute path.

Records name blobs by store-relative key (`media/ab/<sha>.png`) and the active MediaStore resolves them,
so a backup restored elsewhere (or another mount point in a container) keeps working, and a record's
content hash (its data version) does not depend on where the home is. Homes written before keys, whose
records hold absolute `file://` (or `s3://`) locations, are still read: the key is the location's tail.

The end-to-end tests build one finished video with the real CLI in a subprocess, `cp -a` the home
elsewhere, remove the original and drive the copy with `regenerate`, `process` and `status --json`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from pydantic import ValidationError

from avatar_assets.contracts import MediaRef, OutputPackageRecord, QuarantineReason, VoiceProfileRecord
from avatar_assets.pipeline.caching import cached, media_refs, remember
from partitions import cell_key, partition_key
from resources.media_store import LocalMediaStore
from resources import layout
from resources.layout import record_key
from resources.records import dump_record, parse_record
from tests.conftest import copy_sample, write_bundle
from tests.servers import REPO_ROOT, avatarops, clean_env

AVATAR, SLUG = "rover", "hello"
# Dagster's own instance storage (run and event-log databases, compute logs) is UI metadata: it may name
# where things were. Everything else under the home is checked.
INSTANCE_STORAGE = ("dagster/history/", "dagster/schedules/", "dagster/storage/")


# --------------------------------------------------------------------------- records written before keys


def legacy(document: dict, root: str) -> dict:
    """A record document as homes before keys wrote it: every MediaRef as an absolute `uri` under `root`,
    the package folder as an absolute location."""
    if isinstance(document, dict):
        if {"key", "sha256", "media_type"} <= document.keys():
            return {"uri": f"{root}/{document['key']}", **{k: v for k, v in document.items() if k != "key"}}
        converted = {k: legacy(v, root) for k, v in document.items()}
        if "folder" in converted and "renditions" in converted:
            converted["folder"] = f"{root}/{converted['folder']}"
        return converted
    if isinstance(document, list):
        return [legacy(item, root) for item in document]
    return document


def voice_record(store: LocalMediaStore, data: bytes) -> VoiceProfileRecord:
    sample = store.put_bytes(data, "wav", "audio/wav")
    return VoiceProfileRecord(
        avatar_id=AVATAR, sample=sample, problem=None, metrics=None, embedding=None, waveform_sha256=None,
        provider=None, consent={"subject": "s", "granted_by": "g", "granted_at": "2025-01-02T03:04:05Z",
                                "scopes": ["voice"], "evidence_sha256": "0" * 64},
    )


def test_a_record_with_an_old_file_uri_is_read_and_its_blob_found_after_the_move(tmp_path: Path):
    old, new = tmp_path / "old home", tmp_path / "mounted" / "elsewhere"  # a space: file:// percent-encodes it
    store = LocalMediaStore(root=str(old))
    record = voice_record(store, b"RIFF a voice")
    document = json.loads(dump_record(record))
    document["record"] = legacy(document["record"], old.resolve().as_uri())
    assert "%20" in document["record"]["sample"]["uri"] and "key" not in document["record"]["sample"]
    store.write_text(record_key("voice_profile", AVATAR), json.dumps(document))
    remember(store, "voice_profile", "k" * 64, parse_record(json.dumps(document)))

    new.parent.mkdir()
    shutil.move(old, new)  # the old location no longer exists
    moved = LocalMediaStore(root=str(new))
    read = parse_record(moved.read_text(record_key("voice_profile", AVATAR)) or "")

    assert read.sample.key == record.sample.key and moved.read(read.sample) == b"RIFF a voice"
    assert moved.local_path(read.sample) == new / record.sample.key
    assert read.content_hash() == record.content_hash(), "the data version does not depend on the location"
    assert "uri" not in dump_record(read) and str(old) not in dump_record(read)
    assert cached(moved, "voice_profile", "k" * 64, log=_Log()) == record, "the cache entry still hits"


def test_legacy_s3_locations_and_package_folders_become_keys():
    sha = "ab" * 32
    ref = MediaRef.model_validate(
        {"uri": f"s3://bucket/old/prefix/media/ab/{sha}.mp4", "sha256": sha, "size": 3, "media_type": "video/mp4"}
    )
    assert ref.key == f"media/ab/{sha}.mp4"
    document = {"avatar_id": AVATAR, "slug": SLUG, "renditions": [], "poster": ref.model_dump(),
                "captions_srt": ref.model_dump(), "captions_vtt": ref.model_dump(), "rights_manifest": ref.model_dump(),
                "folder": f"file:///srv/old%20home/packages/{AVATAR}/{SLUG}"}
    assert OutputPackageRecord.model_validate(document).folder == f"packages/{AVATAR}/{SLUG}"


@pytest.mark.parametrize("uri", ["file:///home/media/ab/" + "cd" * 32 + ".png", "file:///home/notes/readme.png"])
def test_a_legacy_uri_that_is_not_the_ref_s_own_blob_is_refused(uri: str):
    with pytest.raises(ValidationError, match="is not media/ab/"):
        MediaRef.model_validate({"uri": uri, "sha256": "ab" * 32, "size": 1, "media_type": "image/png"})


def test_quarantine_reasons_and_held_requests_name_places_relative_to_the_home(tmp_path: Path, monkeypatch):
    from avatar_assets.identity import intake
    from avatar_assets.video import requests
    from sensors.requests import hold, quarantine_request

    home = tmp_path / "home"
    monkeypatch.setenv("AVATAR_HOME", str(home))
    bundle = write_bundle(home / "inbox" / "avatars", AVATAR, {"photos/a.jpg": b"not a photo"})
    target = intake.quarantine(bundle, ["photos.0: not an image"], home / "quarantine")
    assert QuarantineReason.model_validate_json((target / "reason.json").read_text()).bundle == f"inbox/avatars/{AVATAR}"

    store, key = LocalMediaStore(root=str(home)), layout.inbox_request(AVATAR, SLUG)
    store.write_text(key, "{}")
    hold(store, requests.ScannedRequest(key, AVATAR, SLUG, b"{}", None, []), "identity is not built yet")
    held = home / "requests" / "held" / f"{AVATAR}--{SLUG}.json"
    assert json.loads(held.read_text())["request"] == f"inbox/outputs/{AVATAR}/{SLUG}.json"
    reason = Path(quarantine_request(store, requests.ScannedRequest(key, AVATAR, SLUG, b"{}", None, ["script: missing"])))
    assert QuarantineReason.model_validate_json((reason / "reason.json").read_text()).bundle == (
        f"inbox/outputs/{AVATAR}/{SLUG}.json"
    )


class _Log:
    def info(self, message: str) -> None:
        pass


# --------------------------------------------------------------------------- a finished home, copied


def env_for(home: Path) -> dict[str, str]:
    """The CLI on `home`, running this checkout's code (cwd packages win over any installed copy)."""
    return clean_env(
        AVATAR_HOME=home, DAGSTER_HOME=home / "dagster", AVATAR_UPLOAD_SETTLE_SECONDS="0",
        AVATAR_MASTER_SHORT_SIDE="160", PYTHONPATH=REPO_ROOT,
    )


def cli(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = avatarops(*args, env=env_for(home), timeout=timeout)
    assert done.returncode == 0, f"avatarops {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-6000:]}"
    return done


@pytest.fixture(scope="module")
def finished_home(tmp_path_factory, sample_bundle: Path) -> Path:
    """One avatar with one finished video, built through the CLI; copy it, never change it."""
    base = tmp_path_factory.mktemp("reloc")
    home = base / "home"
    bundle = copy_sample(sample_bundle, base / "bundles", AVATAR)
    cli(home, "upload", str(bundle))
    cli(home, "process")
    (base / "script.txt").write_text("Hello there.")
    cli(home, "request", AVATAR, SLUG, "--script", str(base / "script.txt"))
    cli(home, "process")
    assert (home / "packages" / AVATAR / SLUG / "rights_manifest.json").is_file()
    return home


def copied(home: Path, target: Path) -> Path:
    """`cp -a` of the home to `target`; the copy is what a restore from backup looks like."""
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(home), str(target)], check=True)
    return target


def persisted_files(home: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(home.rglob("*")):
        relative = path.relative_to(home).as_posix()
        if path.is_file() and not relative.startswith(INSTANCE_STORAGE):
            yield relative, path.read_bytes()


def files_naming(home: Path, root: Path) -> list[str]:
    """Persisted files (outside Dagster's instance storage) that hold `root` as a path or a file URI."""
    needles = {str(root).encode(), root.as_uri().encode()}
    return [relative for relative, data in persisted_files(home) if any(n in data for n in needles)]


def data_versions_match_records(home: Path) -> list[str]:
    """Assets whose stored record's content hash is not the data version Dagster recorded for it."""
    store = LocalMediaStore(root=str(home))
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    mismatches = []
    try:
        for key in store.list_keys(layout.AVATAR_RECORDS):
            avatar_id, slug = layout.record_cell(key)
            asset = key.rsplit("/", 1)[-1].removesuffix(".json")
            partition = partition_key(avatar_id, slug)
            latest = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
            ).records
            recorded = latest[0].asset_materialization.tags.get("dagster/data_version") if latest else None
            if recorded != parse_record(store.read_text(key) or "").content_hash():
                mismatches.append(f"{asset}[{partition}]")
    finally:
        instance.dispose()
    return mismatches


@pytest.mark.slow
def test_a_copied_home_regenerates_processes_and_reports(finished_home: Path, tmp_path: Path):
    home = copied(finished_home, tmp_path / "restored" / "home")
    assert files_naming(home, finished_home) == [], "a finished home names its own location"
    away = finished_home.with_name("home-away")
    finished_home.rename(away)  # nothing may still resolve through the original's path
    try:
        assert data_versions_match_records(home) == [], "the move made assets look changed"
        assert "nothing to do" in cli(home, "process").stdout
        regenerated = cli(home, "regenerate", "character_sheet", "--avatar", AVATAR, "--seed", "7").stdout
        assert f"ok character_sheet [{AVATAR}]" in regenerated and f"[{AVATAR}|{SLUG}] ok" in regenerated, regenerated
        cli(home, "process")
        status = json.loads(cli(home, "status", "--json").stdout)
        assert status["home"] == str(home.resolve()) and status["avatars"][AVATAR]["state"] == "ready", status

        package = parse_record(LocalMediaStore(root=str(home)).read_text(record_key("output_package", cell_key(AVATAR, SLUG))) or "")
        assert package.folder == layout.package_folder(AVATAR, SLUG)
        assert all((home / ref.key).is_file() for ref in media_refs(package))
        assert files_naming(home, finished_home) == [] and files_naming(home, home) == []
    finally:
        away.rename(finished_home)


@pytest.mark.slow
def test_an_old_home_with_file_uris_still_works_after_a_move(finished_home: Path, tmp_path: Path):
    """Rewrite a finished home's records and cache entries as homes before keys wrote them (absolute
    `file://` locations), move it, and drive it: the old records are read through the active store."""
    old = copied(finished_home, tmp_path / "old" / "home")
    store = LocalMediaStore(root=str(old))
    for prefix in (layout.RECORDS, layout.CACHE):
        for key in store.list_keys(prefix):
            document = json.loads(store.read_text(key) or "")
            document["record"] = legacy(document["record"], old.resolve().as_uri())
            store.write_text(key, json.dumps(document, indent=2))
    assert len(files_naming(old, old)) > 10
    home = tmp_path / "moved" / "home"
    home.parent.mkdir()
    old.rename(home)

    assert data_versions_match_records(home) == [], "a legacy record hashes as its key form"
    regenerated = cli(home, "regenerate", "enhanced_video", "--avatar", AVATAR, "--output", SLUG).stdout
    assert f"ok enhanced_video [{AVATAR}|{SLUG}]" in regenerated, regenerated
    cli(home, "process")
    status = json.loads(cli(home, "status", "--json").stdout)
    assert status["avatars"][AVATAR]["state"] == "ready", status
    rewritten = files_naming(home, old)
    assert record_key("output_package", cell_key(AVATAR, SLUG)) not in rewritten, "written anew, by key"
    assert all(name.startswith((layout.RECORDS, layout.CACHE)) for name in rewritten), rewritten
