"""The identity pipeline end to end on a real SQLite instance, through `avatarops process`'s engine.

One module-scoped home: two avatars (`ada-01`, `bob-02`, both the sample bundle) are uploaded and
built in one pass; the tests then inspect what that pass left, and later tests re-run parts of it.
"""

from __future__ import annotations

import base64
import io
import json
import re

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from avatar_assets.contracts import RECORD_TYPES
from avatar_assets.identity.assets import CODE_VERSION as IDENTITY_CODE_VERSION
from avatar_assets.ops.runner import CliState, execute
from avatar_assets.ops.status import collect_status
from resources.layout import media_key, record_key
from resources.media_store import sha256_bytes
from tests.conftest import avatar_home, copy_sample, sha256_tree

AVATARS = ["ada-01", "bob-02"]
ASSETS = ["source_upload", "validated_inputs", "neutral_image", "character_sheet", "voice_profile", "identity_bundle"]
CHECKS = {
    "validated_inputs": "usable_photo_and_consent",
    "neutral_image": "neutral_face_geometry",
    "voice_profile": "voice_sample_quality",
}
PREVIEW = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_bundle):
    with avatar_home(tmp_path_factory.mktemp("pipeline") / "home") as home:
        for avatar_id in AVATARS:
            copy_sample(sample_bundle, home.inbox, avatar_id)
        uploaded = {avatar_id: sha256_tree(home.inbox / avatar_id) for avatar_id in AVATARS}
        report = home.process()
        yield home, report, uploaded


def latest_materialization(home, asset: str, avatar_id: str):
    records = home.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[avatar_id]), limit=1
    ).records
    return records[0].asset_materialization if records else None


def check_evaluations(home, run_id: str) -> dict[str, object]:
    records = home.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return {
        r.event_log_entry.dagster_event.event_specific_data.check_name: r.event_log_entry.dagster_event.event_specific_data
        for r in records
    }


def run_messages(home, run_id: str) -> list[str]:
    return [entry.user_message or "" for entry in home.instance.all_logs(run_id)]


def decode_png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_one_pass_builds_every_uploaded_avatar(built):
    _, report, _ = built
    assert report.ok, report.as_dict()
    assert [(r.origin, r.job, r.partition, r.success) for r in report.runs] == [
        ("avatar_upload_sensor", "build_identity", avatar_id, True) for avatar_id in AVATARS
    ]
    assert all(r.failed_checks == [] and r.error is None for r in report.runs)


def test_runs_carry_the_run_key_and_bundle_hash(built):
    home, report, _ = built
    for outcome in report.runs:
        run = home.instance.get_run_by_id(outcome.run_id)
        sha = home.record("source_upload", outcome.partition).bundle_sha256
        assert run.tags["dagster/run_key"] == f"{outcome.partition}:{sha}"
        assert run.tags["bundle_sha256"] == sha
        assert run.tags["dagster/partition"] == outcome.partition
    assert sorted(home.instance.get_dynamic_partitions("avatars")) == AVATARS


@pytest.mark.parametrize("avatar_id", AVATARS)
def test_all_six_assets_materialized_with_content_hash_as_data_version(built, avatar_id):
    home, _, _ = built
    for asset in ASSETS:
        materialization = latest_materialization(home, asset, avatar_id)
        assert materialization is not None, asset
        record = home.record(asset, avatar_id)
        assert record is not None and record.kind == asset and record.avatar_id == avatar_id
        assert materialization.tags["dagster/data_version"] == record.content_hash()
        assert materialization.tags["dagster/code_version"] == IDENTITY_CODE_VERSION


@pytest.mark.parametrize("avatar_id", AVATARS)
def test_all_three_gates_passed_for_the_partition(built, avatar_id):
    home, report, _ = built
    [run] = [r for r in report.runs if r.partition == avatar_id]
    evaluations = check_evaluations(home, run.run_id)
    assert set(CHECKS.values()) <= set(evaluations)
    assert all(e.passed for e in evaluations.values()), {n: e.description for n, e in evaluations.items()}
    for asset, name in CHECKS.items():
        evaluation = evaluations[name]
        assert evaluation.passed, (name, evaluation.description)
        assert evaluation.asset_key == dg.AssetKey(asset)
        assert evaluation.partition == avatar_id
        assert evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert evaluation.metadata, f"{name} returns its measured numbers"
    assert evaluations["usable_photo_and_consent"].description == "1 usable photo(s)"
    assert evaluations["neutral_face_geometry"].metadata["face_count"].value == 1


def test_records_are_json_under_records_avatars(built):
    home, _, _ = built
    for avatar_id in AVATARS:
        folder = home.root / "records" / "avatars" / avatar_id
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{a}.json" for a in ASSETS)
        for asset in ASSETS:
            document = json.loads((folder / f"{asset}.json").read_text())
            assert document["kind"] == asset
            assert RECORD_TYPES[asset].model_validate(document["record"]) == home.record(asset, avatar_id)


def test_neutral_image_is_a_1024_png_with_one_face(built):
    from avatar_assets.media.faces import detect_faces

    home, _, _ = built
    record = home.record("neutral_image", "ada-01")
    data = home.store.read(record.image)
    assert sha256_bytes(data) == record.image.sha256 and len(data) == record.image.size
    assert record.image.media_type == "image/png"
    assert record.image.key == media_key(record.image.sha256, "png")
    image = decode_png(data)
    assert image.size == (1024, 1024) and image.mode == "RGB"
    faces = detect_faces(np.asarray(image))
    assert len(faces) == 1
    assert record.face_count == 1 and record.source_photo == "photos/portrait.jpg"
    assert decode_png(home.store.read(record.mask)).size == (1024, 1024)
    assert record.provider.provider == "classical" and record.provider.seed == 0


def test_character_sheet_png_and_geometry_json(built):
    home, _, _ = built
    record = home.record("character_sheet", "ada-01")
    sheet = decode_png(home.store.read(record.sheet))
    assert sheet.width > 1024 or sheet.height > 1024
    geometry = json.loads(home.store.read(record.geometry))
    assert geometry["size"] == [1024, 1024]
    assert set(geometry["variant_names"]) == set(record.variants)
    box = geometry["face_box"]
    assert 0 < box["w"] < 1024 and 0 < box["h"] < 1024
    for ref in record.variants.values():
        assert decode_png(home.store.read(ref)).size[0] > 0
    assert all(re.fullmatch(r"#[0-9a-f]{6}", colour) for colour in record.palette)


def test_voice_profile_has_a_256_d_embedding_and_metrics(built):
    home, _, _ = built
    record = home.record("voice_profile", "ada-01")
    assert record.problem is None
    embedding = np.load(io.BytesIO(home.store.read(record.embedding)))
    assert embedding.shape == (256,) and embedding.dtype == np.float32
    assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-3
    metrics = record.metrics
    assert metrics.sample_rate == 24000 and metrics.channels == 1
    assert 15 < metrics.duration_s < 40 and metrics.speech_s >= 8
    assert metrics.snr_db >= 15 and metrics.clipping_fraction <= 0.001
    assert record.consent.scopes == ["likeness", "voice"]
    assert record.provider.provider == "resemblyzer"
    # Same voice, same embedding, for the other avatar.
    other = np.load(io.BytesIO(home.store.read(home.record("voice_profile", "bob-02").embedding)))
    assert float(embedding @ other) > 0.999


@pytest.mark.parametrize("asset", ["source_upload", "neutral_image", "character_sheet"])
def test_thumbnails_are_in_materialization_metadata(built, asset):
    home, _, _ = built
    metadata = latest_materialization(home, asset, "ada-01").metadata
    preview = metadata["preview"]
    assert isinstance(preview, dg.MarkdownMetadataValue)
    [encoded] = PREVIEW.findall(preview.value)
    thumbnail = decode_png(base64.b64decode(encoded))
    assert 16 <= max(thumbnail.size) <= 512
    assert len(preview.value) < 100_000
    assert metadata["record"].value.endswith(f"/{record_key(asset, 'ada-01')}")


def test_upload_is_snapshotted_and_left_unmodified(built):
    home, _, uploaded = built
    for avatar_id in AVATARS:
        assert sha256_tree(home.inbox / avatar_id) == uploaded[avatar_id]
        record = home.record("source_upload", avatar_id)
        [photo] = record.photos
        assert photo.original.sha256 == uploaded[avatar_id]["photos/portrait.jpg"]
        assert home.store.read(photo.original) == (home.inbox / avatar_id / photo.path).read_bytes()
        assert record.voice.original.sha256 == uploaded[avatar_id]["voice/sample.wav"]
        assert record.manifest_ref.sha256 == uploaded[avatar_id]["manifest.json"]
        assert (photo.width, photo.height, photo.original_mode) == (512, 512, "RGB")


def test_identity_bundle_points_at_every_part(built):
    home, _, _ = built
    record = home.record("identity_bundle", "ada-01")
    assert [part.asset for part in record.parts] == [a for a in ASSETS if a != "identity_bundle"]
    for part in record.parts:
        assert part.record_hash == home.record(part.asset, "ada-01").content_hash()
        assert all(home.store.exists(ref) for ref in part.media.values())
    assert record.bundle_sha256 == home.record("source_upload", "ada-01").bundle_sha256
    assert record.consent.scopes == ["likeness", "voice"]


def test_status_reports_both_avatars_ready(built):
    home, _, _ = built
    status = collect_status(home.defs, home.instance, home.store)
    assert set(status["avatars"]) == set(AVATARS)
    for entry in status["avatars"].values():
        assert entry["state"] == "ready" and entry["blocked_by"] == []
        assert all(entry["assets"][asset] for asset in ASSETS)
        assert {f"{a}:{c}" for a, c in CHECKS.items()} <= set(entry["gates"])
        assert all(v["passed"] for v in entry["gates"].values())
    assert status["quarantined"] == []


def test_second_process_does_nothing(built):
    home, _, _ = built
    again = home.process()
    assert again.runs == [] and again.ok
    # Even with the sensor cursor forgotten, the run keys stop a second launch of the same bundles.
    state_file = CliState.of_home().path
    state = json.loads(state_file.read_text())
    state["sensors"] = {}
    state_file.write_text(json.dumps(state))
    forgotten = home.process()
    assert forgotten.runs == []
    assert sorted(forgotten.skipped) == sorted(
        f"avatar_upload_sensor: run key {a}:{home.record('source_upload', a).bundle_sha256} already launched"
        for a in AVATARS
    )


def test_rematerializing_with_unchanged_inputs_is_a_cache_hit(built):
    home, _, _ = built
    records = {asset: home.record(asset, "bob-02") for asset in ASSETS}
    blobs = sorted((home.root / "media").rglob("*"))
    mtimes = {path: path.stat().st_mtime_ns for path in blobs}
    outcome = execute(
        home.defs, home.instance, job_name="build_identity", asset_keys=None,
        partition_key="bob-02", tags={}, origin="test",
    )
    assert outcome.success and outcome.failed_checks == []
    messages = run_messages(home, outcome.run_id)
    for asset in ["validated_inputs", "neutral_image", "character_sheet", "voice_profile"]:
        assert any(m.startswith(f"cache hit for {asset} ") for m in messages), asset
    for asset in ASSETS:
        assert home.record(asset, "bob-02") == records[asset]
    assert sorted((home.root / "media").rglob("*")) == blobs
    assert {path: path.stat().st_mtime_ns for path in blobs} == mtimes


def test_rematerializing_neutral_image_refreshes_exactly_that_avatar_downstream(built):
    home, _, _ = built
    home.process()  # settle anything the previous test left for automation
    before = {a: latest_materialization(home, "character_sheet", a).tags for a in AVATARS}
    outcome = execute(
        home.defs, home.instance, job_name=None, asset_keys=[dg.AssetKey("neutral_image")],
        partition_key="ada-01", tags={}, origin="test",
    )
    assert outcome.success
    assert check_evaluations(home, outcome.run_id)["neutral_face_geometry"].passed
    report = home.process()
    assert [(r.origin, r.partition, r.success) for r in report.runs] == [("automation", "ada-01", True)]
    run = home.instance.get_run_by_id(report.runs[0].run_id)
    assert run.asset_selection == {dg.AssetKey("character_sheet"), dg.AssetKey("identity_bundle")}
    assert latest_materialization(home, "character_sheet", "bob-02").tags == before["bob-02"]
    assert home.process().runs == []


def test_a_run_without_its_bundle_fails_at_source_upload_saying_why(home):
    home.instance.add_dynamic_partitions("avatars", ["ghost-1"])
    outcome = execute(
        home.defs, home.instance, job_name="build_identity", asset_keys=None,
        partition_key="ghost-1", tags={}, origin="test",
    )
    assert not outcome.success and outcome.failed_checks == []
    assert outcome.error.startswith("source_upload: ")
    assert f"no upload bundle for ghost-1 at {home.inbox / 'ghost-1'}" in outcome.error
    assert latest_materialization(home, "source_upload", "ghost-1") is None
