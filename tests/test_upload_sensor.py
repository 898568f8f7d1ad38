"""The upload sensor: complete bundles become runs (one per bundle hash), bad ones go to quarantine."""

from __future__ import annotations

import json
import logging
import time

import dagster as dg
import pytest

from avatar_assets.contracts import QuarantineReason
from avatar_assets.identity import intake
from avatar_assets.ops.runner import sensor_context
from sensors.uploads import UPLOAD_SENSOR, evaluate_uploads
from tests.conftest import copy_sample, manifest_for, sha256_tree, write_bundle

LOG = logging.getLogger("test_upload_sensor")


def scan(home, cursor: str | None = None, settle: float = 0.0):
    return evaluate_uploads(cursor, store=home.store, settle_seconds=settle, log=LOG)


def single_add_request(result: dg.SensorResult) -> list[str]:
    [request] = result.dynamic_partitions_requests
    assert isinstance(request, dg.AddDynamicPartitionsRequest)
    assert request.partitions_def_name == "avatars"
    return list(request.partition_keys)


def test_no_inbox_is_a_skip(home):
    assert isinstance(scan(home), dg.SkipReason)


def test_valid_bundle_becomes_one_run_and_one_partition(home, sample_bundle):
    bundle = copy_sample(sample_bundle, home.inbox, "ada-01")
    sha = intake.bundle_sha256(bundle, intake.read_manifest(bundle)[0])
    time.sleep(0.01)
    result = scan(home)
    assert isinstance(result, dg.SensorResult)
    [request] = result.run_requests
    assert request.run_key == f"ada-01:{sha}"
    assert request.partition_key == "ada-01"
    assert request.tags == {"avatar": "ada-01", "bundle_sha256": sha}
    assert single_add_request(result) == ["ada-01"]
    assert json.loads(result.cursor)["watermark"] >= intake.bundle_fingerprint(bundle)


def test_a_poisoned_manifest_is_quarantined_and_the_bundle_next_to_it_still_runs(home, sample_bundle):
    """One manifest of deeply nested brackets once stopped all intake (RecursionError on every tick)."""
    poisoned = copy_sample(sample_bundle, home.inbox, "aaa-poison")
    (poisoned / "manifest.json").write_text("[" * 30_000 + "]" * 30_000)  # 60 KB: under the size cap
    copy_sample(sample_bundle, home.inbox, "bob-02")
    time.sleep(0.01)
    result = scan(home)
    assert [r.partition_key for r in result.run_requests] == ["bob-02"]
    [entry] = list(home.quarantine.iterdir())
    assert entry.name.startswith("aaa-poison-")  # named after the inbox folder: the manifest names nothing
    reason = QuarantineReason.model_validate_json((entry / "reason.json").read_text())
    assert reason.problems == ["manifest.json nests too deeply to be a manifest"]
    assert (entry / "bundle" / "manifest.json").read_text().startswith("[[[")  # kept, unaltered


def test_real_sensor_with_instance_returns_one_sensor_result(home, sample_bundle):
    copy_sample(sample_bundle, home.inbox, "ada-01")
    copy_sample(sample_bundle, home.inbox, "bob-02")
    time.sleep(0.01)
    sensor = home.defs.resolve_sensor_def(UPLOAD_SENSOR)
    assert sensor.job_name == "build_identity"
    result = sensor(sensor_context(home.defs, home.instance, sensor, None))
    assert isinstance(result, dg.SensorResult)
    assert [r.partition_key for r in result.run_requests] == ["ada-01", "bob-02"]
    assert single_add_request(result) == ["ada-01", "bob-02"]
    assert all(r.run_key.startswith(f"{r.partition_key}:") for r in result.run_requests)

    again = sensor(sensor_context(home.defs, home.instance, sensor, result.cursor))
    assert again.run_requests == [] and again.dynamic_partitions_requests == []


def test_rescan_launches_nothing_new(home, sample_bundle):
    copy_sample(sample_bundle, home.inbox, "ada-01")
    time.sleep(0.01)
    first = scan(home)
    second = scan(home, first.cursor)
    assert second.run_requests == [] and second.dynamic_partitions_requests == []
    assert second.cursor == first.cursor
    # Without a cursor (e.g. reset) the same bundle yields the same run key, which Dagster de-duplicates.
    assert [r.run_key for r in scan(home, None).run_requests] == [r.run_key for r in first.run_requests]


def test_changed_upload_gets_a_new_run_key(home, sample_bundle, photos):
    bundle = copy_sample(sample_bundle, home.inbox, "ada-01")
    time.sleep(0.01)
    first = scan(home)
    [old] = first.run_requests
    time.sleep(0.02)
    (bundle / "photos" / "portrait.jpg").write_bytes(photos["mirrored"])
    time.sleep(0.01)
    second = scan(home, first.cursor)
    [new] = second.run_requests
    assert new.partition_key == old.partition_key == "ada-01"
    assert new.run_key != old.run_key
    assert new.run_key == f"ada-01:{intake.bundle_sha256(bundle, intake.read_manifest(bundle)[0])}"


def test_same_bytes_rewritten_keep_the_run_key(home, sample_bundle):
    bundle = copy_sample(sample_bundle, home.inbox, "ada-01")
    time.sleep(0.01)
    first = scan(home)
    time.sleep(0.02)
    photo = bundle / "photos" / "portrait.jpg"
    photo.write_bytes(photo.read_bytes())
    time.sleep(0.01)
    second = scan(home, first.cursor)
    assert [r.run_key for r in second.run_requests] == [r.run_key for r in first.run_requests]


def test_settling_bundle_is_not_taken_until_it_settles(home, sample_bundle):
    copy_sample(sample_bundle, home.inbox, "ada-01")
    settling = scan(home, None, settle=60.0)
    assert settling.run_requests == [] and settling.dynamic_partitions_requests == []
    assert (home.inbox / "ada-01").is_dir()  # neither taken nor quarantined
    time.sleep(0.01)
    settled = scan(home, settling.cursor, settle=0.0)
    assert [r.partition_key for r in settled.run_requests] == ["ada-01"]


def test_settling_bundle_does_not_hide_a_ready_one(home, sample_bundle):
    copy_sample(sample_bundle, home.inbox, "aaa-ready")
    time.sleep(1.5)
    copy_sample(sample_bundle, home.inbox, "zzz-arriving")
    first = scan(home, None, settle=1.0)
    assert [r.partition_key for r in first.run_requests] == ["aaa-ready"]
    time.sleep(1.1)
    second = scan(home, first.cursor, settle=1.0)
    # The settling bundle held the watermark back. Where tightening aaa-ready's modes gave it a change time above
    # that, aaa-ready is hashed again, under the run key it already has (the daemon skips a known run key).
    again = {r.partition_key: r.run_key for r in second.run_requests}
    assert again.pop("zzz-arriving", None) is not None
    assert again.items() <= {r.partition_key: r.run_key for r in first.run_requests}.items()


def test_cursor_stays_small_with_many_bundles(home, sample_photo):
    for index in range(50):
        write_bundle(home.inbox, f"avatar-{index:03d}", {"photos/a.jpg": sample_photo})
    time.sleep(0.01)
    first = scan(home)
    assert len(first.run_requests) == 50
    assert single_add_request(first) == [f"avatar-{i:03d}" for i in range(50)]
    assert len(first.cursor.encode()) < 100
    time.sleep(0.02)
    write_bundle(home.inbox, "avatar-new", {"photos/a.jpg": sample_photo})
    time.sleep(0.01)
    second = scan(home, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["avatar-new"]
    assert len(second.cursor.encode()) < 100


def test_hidden_folders_and_stray_files_are_ignored(home, sample_photo):
    home.inbox.mkdir(parents=True)
    (home.inbox / "README.txt").write_text("not a bundle")
    write_bundle(home.inbox, "ada-01", {"photos/a.jpg": sample_photo}, folder=".staging")
    time.sleep(0.01)
    result = scan(home)
    assert result.run_requests == []
    assert (home.inbox / ".staging").is_dir() and not home.quarantine.exists()


BAD_BUNDLES = {
    # folder: (manifest edit, files to write, expected words in reason.json)
    "missing-fields": (lambda m: m.pop("creator_id"), True, "creator_id: required field is missing"),
    "unknown-fields": (lambda m: m.update(nickname="x"), True, "nickname: unknown field"),
    "traversal": (lambda m: m.update(photos=["../../etc/passwd"]), True, "photos.0: path '../../etc/passwd' leaves the bundle"),
    "absolute": (lambda m: m.update(photos=["/etc/passwd"]), True, "photos.0: path '/etc/passwd' is absolute"),
    "Bad-Id": (lambda m: None, True, "avatar_id: String should match pattern"),
    "photo-not-there": (lambda m: None, False, "photos/a.jpg: listed in the manifest but missing from the bundle"),
    "no-consent": (lambda m: m.pop("consent"), True, "consent: required field is missing"),
    "wrong-folder": (lambda m: m.update(avatar_id="other-name"), True, "does not match the bundle folder name 'wrong-folder'"),
}


def test_bad_bundles_are_quarantined_whole_and_good_ones_still_launch(home, sample_photo, sample_voice, caplog):
    before = {}
    for folder, (edit, with_files, _) in BAD_BUNDLES.items():
        manifest = manifest_for(folder, ["photos/a.jpg"], "voice/v.wav")
        edit(manifest)
        files = {"photos/a.jpg": sample_photo} if with_files else {}
        bundle = write_bundle(home.inbox, folder, files, sample_voice, voice_name="voice/v.wav", manifest=manifest)
        (bundle / "notes.txt").write_text("unlisted files are kept too")
        before[folder] = sha256_tree(bundle)
    (home.inbox / "not-json").mkdir()
    (home.inbox / "not-json" / "manifest.json").write_text("{'single': 'quotes'}")
    before["not-json"] = sha256_tree(home.inbox / "not-json")
    write_bundle(home.inbox, "good-one", {"photos/a.jpg": sample_photo}, sample_voice)
    write_bundle(home.inbox, "zz-good-two", {"photos/a.jpg": sample_photo})
    time.sleep(0.01)

    with caplog.at_level(logging.WARNING, logger=LOG.name):
        result = scan(home)

    assert [r.partition_key for r in result.run_requests] == ["good-one", "zz-good-two"]
    assert single_add_request(result) == ["good-one", "zz-good-two"]
    assert sorted(p.name for p in home.inbox.iterdir()) == ["good-one", "zz-good-two"]
    expected_words = {folder: words for folder, (_, _, words) in BAD_BUNDLES.items()}
    expected_words["not-json"] = "manifest.json is not valid JSON"
    for folder, words in expected_words.items():
        [target] = [p for p in home.quarantine.iterdir() if p.name.startswith(f"{folder}-20")]
        reason = QuarantineReason.model_validate_json((target / "reason.json").read_text())
        assert any(words in problem for problem in reason.problems), (folder, reason.problems)
        assert sha256_tree(target / "bundle") == before[folder] == reason.original_files
        assert reason.avatar_id == folder
        assert any(folder in record.getMessage() for record in caplog.records)
    assert len(list(home.quarantine.iterdir())) == len(expected_words)

    # Quarantined bundles are gone from the inbox: a re-scan neither launches nor quarantines again.
    again = scan(home, result.cursor)
    assert again.run_requests == [] and len(list(home.quarantine.iterdir())) == len(expected_words)


@pytest.mark.parametrize("settle", [0.0, 60.0])
def test_bundle_without_manifest_is_never_quarantined(home, sample_photo, settle):
    (home.inbox / "half-copied" / "photos").mkdir(parents=True)
    (home.inbox / "half-copied" / "photos" / "a.jpg").write_bytes(sample_photo)
    time.sleep(0.01)
    result = scan(home, None, settle=settle)
    assert result.run_requests == []
    assert (home.inbox / "half-copied").is_dir() and not home.quarantine.exists()


def test_folder_without_manifest_does_not_hold_the_cursor_back(home, sample_bundle, sample_photo):
    (home.inbox / "half-copied" / "photos").mkdir(parents=True)
    (home.inbox / "half-copied" / "photos" / "a.jpg").write_bytes(sample_photo)
    time.sleep(0.02)
    copy_sample(sample_bundle, home.inbox, "ada-01")
    time.sleep(0.01)
    first = scan(home)
    assert [r.partition_key for r in first.run_requests] == ["ada-01"]
    # The next tick re-scans (and re-hashes) nothing that was handled.
    assert scan(home, first.cursor).run_requests == []
    # When the manifest finally arrives, the folder is picked up.
    time.sleep(0.02)
    (home.inbox / "half-copied" / "manifest.json").write_text(
        json.dumps(manifest_for("half-copied", ["photos/a.jpg"], None))
    )
    time.sleep(0.01)
    assert [r.partition_key for r in scan(home, first.cursor).run_requests] == ["half-copied"]
