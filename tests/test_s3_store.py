"""S3 mode against a real S3 API server (moto on 127.0.0.1): the store's primitives, content addressing,
the record IO manager, and a whole identity run with `AVATAR_STORAGE=s3://bucket/prefix`."""


import hashlib
import json
import re
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from avatar_assets.contracts import Consent, MediaRef, VoiceProfileRecord
from avatar_assets.pipeline.caching import media_refs
from resources import layout
from resources.layout import media_key, record_key
from resources.media_store import LocalMediaStore, StoreUnavailable, sha256_bytes
from resources.records import RecordIOManager, parse_record
from resources.s3_store import S3MediaStore
from tests.s3_fault_proxy import S3FaultProxy
from tests.servers import IDENTITY_ASSETS, avatarops, build_sample, clean_env, upload_and_process

MEDIA_KEY = re.compile(r"^media/([0-9a-f]{2})/([0-9a-f]{64})\.[a-z0-9]{1,5}$")


@pytest.fixture
def bucket(s3_server) -> str:
    name = f"avatars-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


def make_store(s3_server, bucket: str, prefix: str, cache_dir: Path) -> S3MediaStore:
    return S3MediaStore(
        s3=S3Resource(
            endpoint_url=s3_server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ),
        bucket=bucket,
        prefix=prefix,
        cache_dir=str(cache_dir),
    )


@pytest.fixture
def store(s3_server, bucket, tmp_path) -> S3MediaStore:
    return make_store(s3_server, bucket, "tenant-a/media-store", tmp_path / "cache")


def bucket_keys(s3_server, bucket: str, prefix: str = "") -> list[str]:
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def test_put_read_exists_delete_list(store, s3_server, bucket):
    data = b"\x89PNG not really, but bytes"
    ref = store.put_bytes(data, "png", "image/png")

    digest = hashlib.sha256(data).hexdigest()
    assert ref.sha256 == digest and ref.size == len(data) and ref.media_type == "image/png"
    assert store.uri(ref) == f"s3://{bucket}/tenant-a/media-store/media/{digest[:2]}/{digest}.png"
    assert bucket_keys(s3_server, bucket) == [f"tenant-a/media-store/media/{digest[:2]}/{digest}.png"]
    assert ref.key == media_key(digest, "png")

    assert store.exists(ref) and store.exists(ref.key)
    assert store.read(ref) == data and store.read(ref.key) == data
    assert list(store.list_keys("media/")) == [media_key(digest, "png")]
    assert list(store.list_keys("records/")) == []

    store.write_text("records/avatars/a1/x.json", '{"a": 1}')
    assert store.read_text("records/avatars/a1/x.json") == '{"a": 1}'
    assert store.read_text("records/avatars/a1/missing.json") is None
    assert sorted(store.list_keys("")) == sorted([media_key(digest, "png"), "records/avatars/a1/x.json"])

    store.delete(ref)
    assert not store.exists(ref)
    store.delete_key("records/avatars/a1/x.json")
    assert store.read_text("records/avatars/a1/x.json") is None
    assert bucket_keys(s3_server, bucket) == []


def test_same_bytes_same_key_not_uploaded_twice(store, s3_server, bucket, tmp_path, monkeypatch):
    writes: list[str] = []
    original = S3MediaStore._write

    def counting_write(self, key, source):
        writes.append(key)
        return original(self, key, source)

    monkeypatch.setattr(S3MediaStore, "_write", counting_write)
    data = bytes(range(256)) * 64
    first = store.put_bytes(data, "bin", "application/octet-stream")
    head = s3_server.client().head_object(Bucket=bucket, Key=f"tenant-a/media-store/{first.key}")
    second = store.put_bytes(data, "bin", "application/octet-stream")
    path = tmp_path / "same.bin"
    path.write_bytes(data)
    third = store.put_file(path, "bin", "application/octet-stream")

    assert first == second == third
    assert writes == [first.key], "identical content must be uploaded exactly once"
    again = s3_server.client().head_object(Bucket=bucket, Key=f"tenant-a/media-store/{first.key}")
    assert again["ETag"] == head["ETag"] and again["LastModified"] == head["LastModified"]

    other = store.put_bytes(data + b"!", "bin", "application/octet-stream")
    assert other.key != first.key and len(writes) == 2
    assert len(bucket_keys(s3_server, bucket)) == 2


def test_put_file_and_local_path(store, s3_server, bucket, tmp_path):
    source = tmp_path / "clip.wav"
    source.write_bytes(b"RIFF" + bytes(4096))
    ref = store.put_file(source, "wav", "audio/wav")
    assert ref.sha256 == sha256_bytes(source.read_bytes()) and ref.size == source.stat().st_size

    local = store.local_path(ref)
    assert local.is_file() and local.read_bytes() == source.read_bytes()
    assert local.is_relative_to(tmp_path / "cache")
    assert not list(local.parent.glob("*.part")), "the download is renamed into place, no partial file left"

    # A content-addressed blob never changes, so the cached copy is served without another download.
    s3_server.client().delete_object(Bucket=bucket, Key=f"tenant-a/media-store/{ref.key}")
    assert store.local_path(ref) == local and local.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("kms_key_id", [None, "alias/avatar-media"])
def test_every_write_is_encrypted_at_rest(kms_key_id, s3_server, bucket, tmp_path):
    """Every way the store writes an object asks S3 for server-side encryption: SSE-S3 by default,
    SSE-KMS with the configured key (AVATAR_S3_KMS_KEY_ID), whatever the bucket's default says."""
    store = make_store(s3_server, bucket, "sse", tmp_path / "cache").model_copy(update={"kms_key_id": kms_key_id})
    source = tmp_path / "clip.wav"
    source.write_bytes(b"RIFF" + bytes(2048))
    blob = store.put_bytes(b"encrypted", "txt", "text/plain")
    store.put_file(source, "wav", "audio/wav")
    store.copy_to(blob, "packages/one/readme.txt")
    store.write_text("records/one.json", "{}")
    assert store.create_text("claims/one", "mine")
    store.copy_key("records/one.json", "archive/one.json")

    client = s3_server.client()
    keys = bucket_keys(s3_server, bucket, "sse/")
    assert len(keys) == 6, keys
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        assert head.get("ServerSideEncryption") == ("aws:kms" if kms_key_id else "AES256"), key
        if kms_key_id:
            assert kms_key_id in head.get("SSEKMSKeyId", ""), key


def test_prefixes_are_isolated(s3_server, bucket, tmp_path):
    tenant_a = make_store(s3_server, bucket, "tenant-a", tmp_path / "a")
    tenant_b = make_store(s3_server, bucket, "/tenant-b/", tmp_path / "b")
    no_prefix = make_store(s3_server, bucket, "", tmp_path / "c")
    ref_a = tenant_a.put_bytes(b"a", "txt", "text/plain")
    ref_b = tenant_b.put_bytes(b"b", "txt", "text/plain")

    assert tenant_b.uri(ref_b).startswith(f"s3://{bucket}/tenant-b/media/")
    assert list(tenant_a.list_keys("media/")) == [ref_a.key]
    assert list(tenant_b.list_keys("media/")) == [ref_b.key]
    assert sorted(no_prefix.list_keys("tenant-")) == sorted([f"tenant-a/{ref_a.key}", f"tenant-b/{ref_b.key}"])
    assert not tenant_a.exists(ref_b), "a key resolves under the store's own prefix only"
    with pytest.raises(ValueError, match="store-relative keys"):
        tenant_a.read("file:///etc/passwd")


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_backends_agree_on_keys_and_uris(backend, s3_server, bucket, tmp_path):
    """Same contract on both stores; the local root has a space, which its file:// URIs percent-encode."""
    if backend == "local":
        store = LocalMediaStore(root=str(tmp_path / "avatar home"))
    else:
        store = make_store(s3_server, bucket, "avatar home", tmp_path / "cache dir")
    data = b"same contract"
    ref = store.put_bytes(data, "txt", "text/plain")
    key = media_key(sha256_bytes(data), "txt")

    assert ref.key == key and store.uri(ref).endswith(key)
    assert store.read(ref) == data and store.exists(key)
    assert list(store.list_keys("media/")) == [key]
    assert store.local_path(ref).read_bytes() == data
    store.delete(ref)
    assert not store.exists(ref)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_create_text_is_a_claim_exactly_one_concurrent_writer_wins(backend, s3_server, bucket, tmp_path):
    """Ownership claims rely on it: of many writers creating one key at once, one gets True, the key holds
    that writer's complete text, and no partial file is ever left or listed."""
    from concurrent.futures import ThreadPoolExecutor

    if backend == "local":
        store = LocalMediaStore(root=str(tmp_path / "home"))
    else:
        store = make_store(s3_server, bucket, "claims", tmp_path / "cache")
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda n: store.create_text("owners/ava.json", f"writer {n}"), range(8)))
    assert won.count(True) == 1
    assert store.read_text("owners/ava.json") == f"writer {won.index(True)}"
    assert list(store.list_keys("owners/")) == ["owners/ava.json"]
    assert store.create_text("owners/ava.json", "late") is False
    if backend == "local":
        assert [p.name for p in (tmp_path / "home" / "owners").iterdir()] == ["ava.json"]


def test_wiring_builds_the_s3_store_from_the_environment(s3_server, bucket, tmp_path, monkeypatch):
    from resources import wiring

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AVATAR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AVATAR_STORAGE", f"s3://{bucket}/team/eu/")
    store = wiring.media_store()
    assert isinstance(store, S3MediaStore)
    assert (store.bucket, store.prefix) == (bucket, "team/eu")
    assert store.s3.endpoint_url == s3_server.endpoint_url
    assert Path(store.cache_dir) == tmp_path / "home" / "s3-cache"
    ref = store.put_bytes(b"wired", "txt", "text/plain")
    assert store.uri(ref).startswith(f"s3://{bucket}/team/eu/media/") and store.read(ref) == b"wired"
    resources = wiring.build_resources()
    assert isinstance(resources["records"], RecordIOManager) and isinstance(resources["records"].store, S3MediaStore)

    # Production: no endpoint (an empty line in an env file counts as none), region from the standard variables.
    monkeypatch.setenv("AVATAR_S3_ENDPOINT_URL", "")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    store = wiring.media_store()
    assert store.s3.endpoint_url is None and store.s3.region_name == "eu-west-1"
    assert store.kms_key_id is None
    monkeypatch.setenv("AVATAR_S3_KMS_KEY_ID", "alias/avatar-media")
    assert wiring.media_store().kms_key_id == "alias/avatar-media"

    monkeypatch.setenv("AVATAR_STORAGE", "gs://elsewhere/x")
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        wiring.media_store()
    monkeypatch.delenv("AVATAR_STORAGE")
    assert isinstance(wiring.media_store(), LocalMediaStore)


def test_one_loaded_code_location_serves_any_home(tmp_path, monkeypatch):
    """The local store's root is dg.EnvVar("AVATAR_HOME"): read when the store is initialized, not at load."""
    from avatar_assets.definitions import build_definitions
    from resources.wiring import build_resources, store_of

    monkeypatch.delenv("AVATAR_STORAGE", raising=False)
    defs = build_definitions(build_resources())
    for name in ("first", "second"):
        monkeypatch.setenv("AVATAR_HOME", str(tmp_path / name))
        with store_of(defs) as store:
            store.write_text("records/where.json", name)
        assert (tmp_path / name / "records" / "where.json").read_text() == name


def test_a_storage_setting_it_cannot_use_stops_the_cli_with_the_reason(tmp_path):
    result = avatarops("status", env=clean_env(AVATAR_HOME=tmp_path / "home", AVATAR_STORAGE="gs://elsewhere/x"))
    assert result.returncode == 2, result.stderr
    assert "error: AVATAR_STORAGE='gs://elsewhere/x': expected s3://bucket/prefix or nothing" in result.stderr
    assert "Traceback" not in result.stderr


def _consent() -> Consent:
    return Consent(
        subject="test subject",
        granted_by="tester",
        granted_at="2025-01-01T00:00:00Z",
        scopes=["voice"],
        evidence_sha256="0" * 64,
    )


def test_records_through_the_io_manager(store, s3_server, bucket):
    partitions = dg.StaticPartitionsDefinition(["ava-1", "ava-2"])

    @dg.asset(partitions_def=partitions, io_manager_key="records")
    def upstream_profile(context: dg.AssetExecutionContext) -> VoiceProfileRecord:
        sample = store.put_bytes(f"voice of {context.partition_key}".encode(), "wav", "audio/wav")
        return VoiceProfileRecord(
            avatar_id=context.partition_key, sample=sample, problem=None, metrics=None,
            embedding=None, consent=_consent(), waveform_sha256=None, provider=None,
        )

    @dg.asset(partitions_def=partitions, io_manager_key="records")
    def downstream_profile(upstream_profile: VoiceProfileRecord) -> VoiceProfileRecord:
        assert isinstance(upstream_profile, VoiceProfileRecord)
        assert store.read(upstream_profile.sample) == f"voice of {upstream_profile.avatar_id}".encode()
        return upstream_profile.model_copy(update={"problem": "checked"})

    result = dg.materialize(
        [upstream_profile, downstream_profile],
        partition_key="ava-2",
        resources={"records": RecordIOManager(store=store)},
    )
    assert result.success

    prefix = "tenant-a/media-store/"
    keys = bucket_keys(s3_server, bucket, prefix + "records/")
    assert keys == [
        f"{prefix}records/avatars/ava-2/downstream_profile.json",
        f"{prefix}records/avatars/ava-2/upstream_profile.json",
    ]
    stored = parse_record(store.read_text(record_key("downstream_profile", "ava-2")))
    assert isinstance(stored, VoiceProfileRecord) and stored.problem == "checked"
    document = json.loads(store.read_text(record_key("upstream_profile", "ava-2")))
    assert document["kind"] == "voice_profile" and document["record"]["avatar_id"] == "ava-2"

    materialization = result.asset_materializations_for_node("upstream_profile")[0]
    assert materialization.metadata["record"].value == f"s3://{bucket}/{prefix}records/avatars/ava-2/upstream_profile.json"


def test_identity_run_with_s3_storage(s3_server, tmp_path):
    bucket = f"avatar-prod-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    prefix = "studio/eu"
    home = tmp_path / "home"
    env = clean_env(
        AVATAR_HOME=home,
        AVATAR_STORAGE=f"s3://{bucket}/{prefix}",
        AVATAR_UPLOAD_SETTLE_SECONDS="0",
        **s3_server.env,
    )
    bundle = build_sample(tmp_path / "bundle" / "astronaut")

    report = upload_and_process(bundle, env=env)

    assert report["ok"], json.dumps(report, indent=2)
    runs = [r for r in report["runs"] if r["job"] == "build_identity" and r["partition"] == "astronaut"]
    assert runs and runs[0]["success"] and not runs[0]["failed_checks"], json.dumps(report, indent=2)

    client = s3_server.client()
    keys = bucket_keys(s3_server, bucket)
    assert keys and all(key.startswith(f"{prefix}/") for key in keys), keys
    relative = [key[len(prefix) + 1 :] for key in keys]

    # Every blob is content addressed: its name is the sha256 of the bytes in it.
    blobs = [key for key in relative if key.startswith(layout.MEDIA)]
    assert len(blobs) >= 6, relative
    for key in blobs:
        match = MEDIA_KEY.match(key)
        assert match, f"{key} is not media/<sha[:2]>/<sha>.<ext>"
        body = client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == match.group(2) and match.group(1) == match.group(2)[:2]

    # One record per identity asset, each pointing at blobs that are in the bucket.
    for asset in IDENTITY_ASSETS:
        key = record_key(asset, "astronaut")
        assert key in relative, f"{key} missing from the bucket: {relative}"
        body = client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read().decode()
        record = parse_record(body)
        refs: list[MediaRef] = list(media_refs(record))
        for ref in refs:
            assert ref.key in blobs, ref.key
    assert any(key.startswith(layout.CACHE) for key in relative), "content-key cache entries live in the store too"

    # Nothing went to the local media or record folders.
    assert not (home / "media").exists() or not any((home / "media").rglob("*"))
    assert not (home / "records").exists() or not any((home / "records").rglob("*"))

    # The instance (local SQLite here) points at the S3 records.
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    try:
        for asset in IDENTITY_ASSETS:
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            assert event is not None and event.dagster_event.partition == "astronaut"
            metadata = event.asset_materialization.metadata
            assert metadata["record"].value == f"s3://{bucket}/{prefix}/records/avatars/astronaut/{asset}.json"
    finally:
        instance.dispose()


def test_s3_answering_500_is_retried_and_a_put_outlasting_the_retries_names_its_key(s3_server, bucket, tmp_path):
    """Through a proxy answering puts with S3's 500 InternalError: a few failed puts of a record are retried
    by botocore; a multipart upload whose parts keep failing, and a record put that keeps failing, raise
    StoreUnavailable naming the key, with nothing half-written in the bucket and the previous record whole."""
    proxy = S3FaultProxy(s3_server.endpoint_url)
    try:
        store = S3MediaStore(
            s3=S3Resource(endpoint_url=proxy.url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing", max_attempts=3),
            bucket=bucket, prefix="p", cache_dir=str(tmp_path / "cache"),
        )
        store.write_text("records/x.json", "old")
        proxy.fail_puts(r"records/x\.json$", count=2)
        store.write_text("records/x.json", "new")
        assert len(proxy.failed) == 2 and store.read_text("records/x.json") == "new"

        big = tmp_path / "big.bin"
        big.write_bytes(bytes(range(256)) * (9 * 4096))  # 9 MiB: boto3 uploads it in parts
        proxy.fail_puts(r"/media/")
        with pytest.raises(StoreUnavailable, match=re.escape(f"s3://{bucket}/p/media/")):
            store.put_file(big, "bin", "application/octet-stream")
        assert any("partNumber=" in path for path in proxy.failed), proxy.failed
        assert [k for k in bucket_keys(s3_server, bucket) if "/media/" in k] == []
        assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

        proxy.fail_puts(r"records/x\.json$")
        with pytest.raises(StoreUnavailable, match=re.escape(f"writing s3://{bucket}/p/records/x.json")):
            store.write_text("records/x.json", "newer")
        assert store.read_text("records/x.json") == "new"
    finally:
        proxy.close()
