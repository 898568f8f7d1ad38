"""The inbox in S3 (a cluster with no shared disk): `avatarops upload` writes a bundle's objects with the
manifest last, the upload sensor of another process (another AVATAR_HOME) lists them with a LastModified
cursor, takes each complete bundle once and quarantines a bad one, `source_upload` reads the bundle from the
bucket, and revoke removes it. Against a real S3 API server (moto on 127.0.0.1)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import dagster as dg
import pytest

from avatar_assets.contracts import QuarantineReason
from avatar_assets.identity import intake
from avatar_assets.ops import revoke
from avatar_assets.ops.runner import execute
from avatar_assets.ops.uploads import upload_bundle
from avatar_assets.pipeline import quarantine
from resources import layout
from resources.media_store import StoreUnavailable
from resources.s3_store import S3MediaStore
from sensors.uploads import evaluate_uploads
from tests.conftest import avatar_home, copy_sample
from tests.servers import avatarops, clean_env

LOG = logging.getLogger("test_s3_inbox")


@pytest.fixture
def home(s3_server, storage, tmp_path):
    """A home (the daemon's, say) whose store is the bucket: its own AVATAR_HOME, nothing shared on disk."""
    with avatar_home(tmp_path / "daemon-home", AVATAR_STORAGE=storage, **s3_server.env) as value:
        assert isinstance(value.store, S3MediaStore)
        yield value


def tick(home, cursor: str | None = None) -> dg.SensorResult:
    result = evaluate_uploads(cursor, store=home.store, settle_seconds=0.0, log=LOG)
    assert isinstance(result, dg.SensorResult)
    return result


def put_bundle(store, bundle: Path, *, skip: tuple[str, ...] = ()) -> None:
    """Objects for every file of a local bundle folder, the manifest last (as the uploader writes them)."""
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    for relative in sorted(files, key=lambda name: name == intake.MANIFEST):
        if relative not in skip:
            store.write_file(layout.inbox_bundle(bundle.name) + relative, bundle / relative)


def inbox_keys(store, avatar_id: str) -> list[str]:
    return sorted(store.list_keys(layout.inbox_bundle(avatar_id)))


def test_avatarops_upload_puts_the_bundle_in_the_bucket(s3_server, storage, sample_bundle, tmp_path, home):
    uploader_home = tmp_path / "uploader-home"
    env = clean_env(AVATAR_HOME=uploader_home, AVATAR_STORAGE=storage, **s3_server.env)
    bundle = copy_sample(sample_bundle, tmp_path / "src", "ada-01")

    uploaded = avatarops("upload", str(bundle), env=env, timeout=120)

    assert uploaded.returncode == 0, uploaded.stderr
    prefix = layout.inbox_bundle("ada-01")
    assert f"{storage}/{prefix}" in uploaded.stdout
    assert inbox_keys(home.store, "ada-01") == [
        prefix + name for name in ("manifest.json", "photos/portrait.jpg", "voice/sample.wav")
    ]
    for name in ("manifest.json", "photos/portrait.jpg", "voice/sample.wav"):
        assert home.store.read(prefix + name) == (bundle / name).read_bytes()
    assert not (uploader_home / "inbox").exists()  # nothing of the bundle on the uploader's disk
    # The sensor of another home takes it.
    [request] = tick(home).run_requests
    assert request.partition_key == "ada-01"


def test_upload_writes_the_manifest_last_and_archives_what_it_replaces(home, sample_bundle, tmp_path, monkeypatch):
    written = []
    original = S3MediaStore._write
    monkeypatch.setattr(S3MediaStore, "_write", lambda self, key, source: (written.append(key), original(self, key, source)))
    bundle = copy_sample(sample_bundle, tmp_path / "src", "ada-01")
    upload_bundle(home.store, bundle)
    inbox_writes = [key for key in written if key.startswith(layout.INBOX_AVATARS)]
    assert inbox_writes[-1] == layout.inbox_bundle("ada-01") + intake.MANIFEST and len(inbox_writes) == 3

    first = home.store.read(layout.inbox_bundle("ada-01") + "photos/portrait.jpg")
    (bundle / "photos" / "portrait.jpg").write_bytes(b"not the same photo")
    upload_bundle(home.store, bundle)
    [archived] = {key.rsplit("/", 2)[0] for key in home.store.list_keys(layout.ARCHIVED_UPLOADS) if key.endswith(".jpg")}
    assert layout.set_aside_avatar(archived + "/") == "ada-01"
    assert home.store.read(f"{archived}/photos/portrait.jpg") == first
    assert home.store.read(layout.inbox_bundle("ada-01") + "photos/portrait.jpg") == b"not the same photo"


def test_a_complete_bundle_is_taken_once_across_ticks(home, sample_bundle, tmp_path):
    put_bundle(home.store, copy_sample(sample_bundle, tmp_path, "ada-01"))
    first = tick(home)
    [request] = first.run_requests
    _, contents = intake.read_bundle(home.store, "ada-01")
    assert request.run_key == f"ada-01:{intake.contents_sha256(contents)}"
    assert [r.partition_key for r in first.run_requests] == ["ada-01"]
    assert first.dynamic_partitions_requests[0].partition_keys == ["ada-01"]

    second = tick(home, first.cursor)
    assert second.run_requests == [] and second.dynamic_partitions_requests == []
    assert tick(home, second.cursor).run_requests == []
    # Without a cursor the same bundle yields the same run key, which Dagster de-duplicates.
    assert [r.run_key for r in tick(home).run_requests] == [request.run_key]


def test_a_bundle_written_in_the_second_the_cursor_stopped_at_is_still_taken(home, sample_bundle, tmp_path):
    """S3 times are whole seconds and the listing filter is strictly-after: listing from the cursor's own
    time would miss an object written later in that second."""
    put_bundle(home.store, copy_sample(sample_bundle, tmp_path, "ada-01"))
    first = tick(home)
    put_bundle(home.store, copy_sample(sample_bundle, tmp_path, "bob-02"))  # within the same second, usually
    second = tick(home, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["bob-02"]
    assert tick(home, second.cursor).run_requests == []


def test_a_manifest_naming_a_file_not_yet_uploaded_waits_for_it(home, sample_bundle, tmp_path):
    bundle = copy_sample(sample_bundle, tmp_path, "ada-01")
    put_bundle(home.store, bundle, skip=("voice/sample.wav",))
    first = tick(home)
    assert first.run_requests == []
    assert list(home.store.list_keys(layout.QUARANTINE)) == []  # arriving, not bad
    home.store.write_file(layout.inbox_bundle("ada-01") + "voice/sample.wav", bundle / "voice" / "sample.wav")
    second = tick(home, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["ada-01"]


def test_a_manifest_whose_files_never_arrive_is_quarantined_after_the_limit_saying_which(home, sample_bundle, tmp_path):
    put_bundle(home.store, copy_sample(sample_bundle, tmp_path, "ada-01"), skip=("voice/sample.wav",))
    put_bundle(home.store, copy_sample(sample_bundle, tmp_path, "bob-02"))
    first = evaluate_uploads(None, store=home.store, settle_seconds=0.0, log=LOG, incomplete_seconds=3.0)
    assert [r.partition_key for r in first.run_requests] == ["bob-02"]
    assert list(home.store.list_keys(layout.QUARANTINE)) == []  # still within the limit: arriving, not bad
    with pytest.raises(intake.BundleError, match="voice/sample.wav: named in the manifest, not uploaded"):
        intake.read_bundle(home.store, "ada-01")  # what source_upload would say meanwhile

    time.sleep(3.5)  # nothing of ada-01 is new after this: the cursor itself brings it back
    second = evaluate_uploads(first.cursor, store=home.store, settle_seconds=0.0, log=LOG, incomplete_seconds=3.0)
    assert second.run_requests == []
    assert inbox_keys(home.store, "ada-01") == [] and inbox_keys(home.store, "bob-02") != []
    [reason_key] = [key for key in home.store.list_keys(layout.QUARANTINE) if key.endswith("/reason.json")]
    reason = QuarantineReason.model_validate_json(home.store.read_text(reason_key))
    assert reason.avatar_id == "ada-01"
    assert reason.problems[0] == "voice/sample.wav: named in the manifest, not uploaded"
    assert "still missing (limit 3 s)" in reason.problems[1]
    assert set(reason.original_files) == {"manifest.json", "consent.txt", "photos/portrait.jpg"}
    assert json.loads(second.cursor)["waiting"] == {}


def test_a_changed_upload_gets_a_new_run_key(home, sample_bundle, tmp_path):
    bundle = copy_sample(sample_bundle, tmp_path / "src", "ada-01")
    upload_bundle(home.store, bundle)
    first = tick(home)
    (bundle / "photos" / "portrait.jpg").write_bytes((bundle / "photos" / "portrait.jpg").read_bytes() + b"\0")
    upload_bundle(home.store, bundle)
    second = tick(home, first.cursor)
    [old], [new] = first.run_requests, second.run_requests
    assert new.partition_key == "ada-01" and new.run_key != old.run_key


def test_the_sensor_survives_keys_that_left_the_inbox(home, sample_bundle, tmp_path):
    put_bundle(home.store, copy_sample(sample_bundle, tmp_path, "ada-01"))
    first = tick(home)
    assert any(key.startswith(layout.inbox_bundle("ada-01")) for key, _ in json.loads(first.cursor)["seen"])
    revoke.remove_inputs(home.store, "ada-01")  # the keys the cursor names are gone
    put_bundle(home.store, copy_sample(sample_bundle, tmp_path, "bob-02"))
    second = tick(home, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["bob-02"]


def test_a_store_that_does_not_answer_fails_the_tick_and_quarantines_nothing(home, sample_bundle, tmp_path, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    put_bundle(home.store, copy_sample(sample_bundle, tmp_path, "ada-01"))

    def unreachable(**_):
        raise EndpointConnectionError(endpoint_url="http://s3.example")

    with monkeypatch.context() as patch:
        patch.setattr(home.store.client, "get_object", unreachable)
        with pytest.raises(StoreUnavailable):
            tick(home)
    assert list(home.store.list_keys(layout.QUARANTINE)) == []
    assert [r.partition_key for r in tick(home).run_requests] == ["ada-01"]


def test_a_malformed_manifest_is_quarantined_and_the_bundle_next_to_it_still_taken(home, sample_bundle, tmp_path):
    poisoned = copy_sample(sample_bundle, tmp_path, "aaa-poison")
    (poisoned / "manifest.json").write_text("{not json")
    put_bundle(home.store, poisoned)
    put_bundle(home.store, copy_sample(sample_bundle, tmp_path, "bob-02"))

    result = tick(home)

    assert [r.partition_key for r in result.run_requests] == ["bob-02"]
    assert inbox_keys(home.store, "aaa-poison") == []
    [reason_key] = [key for key in home.store.list_keys(layout.QUARANTINE) if key.endswith("/reason.json")]
    assert layout.set_aside_avatar(reason_key) == "aaa-poison"
    reason = QuarantineReason.model_validate_json(home.store.read_text(reason_key))
    assert reason.bundle == "inbox/avatars/aaa-poison"
    assert reason.problems[0].startswith("manifest.json is not valid JSON")
    entry = reason_key.removesuffix("reason.json")
    assert home.store.read_text(f"{entry}bundle/manifest.json") == "{not json"  # kept, unaltered
    assert set(reason.original_files) == {"manifest.json", "consent.txt", "photos/portrait.jpg", "voice/sample.wav"}
    assert tick(home, result.cursor).run_requests == []
    [(where, listed)] = list(quarantine.stored_entries(home.store))  # what `avatarops status` shows
    assert where == home.store.uri(entry) and listed["avatar_id"] == "aaa-poison"
    assert listed["problems"] == reason.problems


def test_upload_in_one_home_is_built_by_process_in_another(s3_server, storage, sample_bundle, tmp_path):
    """No shared disk: the uploader and `avatarops process` (sensors and runs) each have their own home."""
    uploader = clean_env(AVATAR_HOME=tmp_path / "uploader-home", AVATAR_STORAGE=storage, **s3_server.env)
    worker = clean_env(AVATAR_HOME=tmp_path / "worker-home", AVATAR_STORAGE=storage,
                       AVATAR_UPLOAD_SETTLE_SECONDS="0", **s3_server.env)
    uploaded = avatarops("upload", str(copy_sample(sample_bundle, tmp_path / "src", "ada-01")), env=uploader)
    assert uploaded.returncode == 0, uploaded.stderr
    with avatar_home(tmp_path / "third-home", AVATAR_STORAGE=storage, **s3_server.env) as other:
        other.store.write_text(layout.inbox_bundle("bad-02") + intake.MANIFEST, "[]")

    processed = avatarops("process", "--json", env=worker, timeout=600)

    assert processed.returncode == 1, processed.stderr[-4000:]  # 1: something was quarantined
    report = json.loads(processed.stdout[processed.stdout.find("{"):])
    [run] = [r for r in report["runs"] if r["job"] == "build_identity"]
    assert run["partition"] == "ada-01" and run["success"], json.dumps(report, indent=2)
    [quarantined] = report["quarantined"]
    assert quarantined["path"].startswith(f"{storage}/quarantine/bad-02-")
    assert quarantined["problems"] == ["manifest.json must hold a JSON object"]
    assert not (tmp_path / "worker-home" / "inbox").exists() and not (tmp_path / "uploader-home" / "inbox").exists()


def test_a_bundle_whose_manifest_names_another_avatar_is_quarantined(home, sample_bundle, tmp_path):
    bundle = copy_sample(sample_bundle, tmp_path, "ada-01")
    document = json.loads((bundle / "manifest.json").read_text())
    document["avatar_id"] = "someone-else"
    (bundle / "manifest.json").write_text(json.dumps(document))
    put_bundle(home.store, bundle)
    assert tick(home).run_requests == []
    [reason_key] = [key for key in home.store.list_keys(layout.QUARANTINE) if key.endswith("/reason.json")]
    assert json.loads(home.store.read_text(reason_key))["problems"] == [
        "avatar_id 'someone-else' does not match the bundle folder name 'ada-01'"
    ]


def test_source_upload_reads_the_bundle_from_the_bucket_in_another_home(
    s3_server, storage, sample_bundle, tmp_path, home
):
    env = clean_env(AVATAR_HOME=tmp_path / "uploader-home", AVATAR_STORAGE=storage, **s3_server.env)
    uploaded = avatarops("upload", str(copy_sample(sample_bundle, tmp_path / "src", "ada-01")), env=env, timeout=120)
    assert uploaded.returncode == 0, uploaded.stderr
    [request] = tick(home).run_requests
    home.instance.add_dynamic_partitions("avatars", ["ada-01"])

    outcome = execute(
        home.defs, home.instance, job_name=None, asset_keys=[dg.AssetKey("source_upload")],
        partition_key="ada-01", tags=request.tags, origin="test",
    )

    assert outcome.success, outcome.error
    record = home.record("source_upload", "ada-01")
    assert record.bundle_sha256 == request.tags["bundle_sha256"]
    assert [photo.path for photo in record.photos] == ["photos/portrait.jpg"] and record.voice is not None
    assert home.store.read(record.voice.original) == (sample_bundle / "voice" / "sample.wav").read_bytes()
    assert not (home.root / "inbox").exists()


def test_source_upload_without_a_complete_bundle_in_the_bucket_says_why(home, sample_bundle, tmp_path):
    put_bundle(home.store, copy_sample(sample_bundle, tmp_path, "ada-01"), skip=("voice/sample.wav",))
    home.instance.add_dynamic_partitions("avatars", ["ada-01"])
    outcome = execute(
        home.defs, home.instance, job_name=None, asset_keys=[dg.AssetKey("source_upload")],
        partition_key="ada-01", tags={}, origin="test",
    )
    assert not outcome.success
    assert "no complete upload bundle for ada-01 at s3://" in outcome.error


def test_revoke_removes_the_avatars_inbox_archive_and_quarantine_keys_only(home, sample_bundle, tmp_path):
    bundle = copy_sample(sample_bundle, tmp_path / "src", "ada")
    upload_bundle(home.store, bundle)
    upload_bundle(home.store, bundle)  # archives the first
    neighbour = copy_sample(sample_bundle, tmp_path / "src", "ada-01")
    upload_bundle(home.store, neighbour)
    upload_bundle(home.store, neighbour)
    intake.quarantine_stored(home.store, "ada-01", ["another reason"])
    upload_bundle(home.store, neighbour)
    intake.quarantine_stored(home.store, "ada", ["a reason"])
    assert any(layout.set_aside_avatar(key) == "ada" for key in home.store.list_keys(layout.ARCHIVED_UPLOADS))

    revoke.remove_inputs(home.store, "ada")

    assert inbox_keys(home.store, "ada") == []
    for prefix in (layout.ARCHIVED_UPLOADS, layout.QUARANTINE):
        assert {layout.set_aside_avatar(key) for key in home.store.list_keys(prefix)} == {"ada-01"}
    assert inbox_keys(home.store, "ada-01")
