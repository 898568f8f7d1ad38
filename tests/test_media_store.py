"""The local media store: content-addressed blobs, atomic writes, idempotent puts, records as JSON."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from avatar_assets.contracts import MediaRef, ProviderInfo, VoiceProfileRecord
from resources.layout import media_key, record_key
from resources.media_store import LocalMediaStore, sha256_file
from resources.records import dump_record, parse_record, read_record


@pytest.fixture
def store(tmp_path: Path) -> LocalMediaStore:
    return LocalMediaStore(root=str(tmp_path / "home"))


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_put_bytes_is_content_addressed(store, tmp_path):
    data = os.urandom(5000)
    digest = hashlib.sha256(data).hexdigest()
    ref = store.put_bytes(data, "png", "image/png")
    assert ref == MediaRef(key=f"media/{digest[:2]}/{digest}.png", sha256=digest, size=5000, media_type="image/png")
    assert media_key(digest, ".png") == ref.key
    assert store.read(ref) == data and store.read(ref.key) == data
    assert store.exists(ref)
    assert all_files(tmp_path / "home") == [f"media/{digest[:2]}/{digest}.png"]
    assert store.local_path(ref) == tmp_path / "home" / "media" / digest[:2] / f"{digest}.png"
    assert store.uri(ref) == store.local_path(ref).as_uri()


def test_same_bytes_same_ref_and_no_rewrite(store, tmp_path):
    data = b"the same bytes"
    first = store.put_bytes(data, "bin", "application/octet-stream")
    path = store.local_path(first)
    stat = path.stat()
    second = store.put_bytes(data, "bin", "application/octet-stream")
    assert second == first
    again = path.stat()
    assert (again.st_ino, again.st_mtime_ns, again.st_ctime_ns) == (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns)
    assert store.put_bytes(b"other bytes", "bin", "application/octet-stream").key != first.key
    assert len(all_files(tmp_path / "home")) == 2


def test_put_file_matches_put_bytes(store, tmp_path):
    source = tmp_path / "big.wav"
    source.write_bytes(os.urandom(3 * (1 << 20) + 7))  # several copy chunks
    ref = store.put_file(source, "wav", "audio/wav")
    assert ref.sha256 == sha256_file(source) == hashlib.sha256(source.read_bytes()).hexdigest()
    assert ref.size == source.stat().st_size
    assert store.read(ref) == source.read_bytes()
    assert store.put_bytes(source.read_bytes(), "wav", "audio/wav") == ref


def test_writes_leave_no_temp_files(store, tmp_path):
    for index in range(20):
        store.put_bytes(f"blob {index}".encode(), "txt", "text/plain")
        store.write_text(f"records/avatars/a-{index}/x.json", "{}")
    files = all_files(tmp_path / "home")
    assert len(files) == 40
    assert not [f for f in files if f.endswith(".part") or "/." in f]


def test_failed_write_leaves_nothing_at_the_key(store, tmp_path):
    folder = tmp_path / "a-folder"  # opening a folder as the source fails mid-write
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        store._write("media/ab/new.bin", folder)
    assert not store._exists("media/ab/new.bin")
    assert all_files(tmp_path / "home") == []


def test_failed_overwrite_keeps_the_previous_document(store, tmp_path):
    store.write_text("records/avatars/ada/voice_profile.json", '{"old": true}')
    with pytest.raises(TypeError):
        store._write("records/avatars/ada/voice_profile.json", {"not": "bytes"})  # type: ignore[arg-type]
    assert store.read_text("records/avatars/ada/voice_profile.json") == '{"old": true}'
    assert all_files(tmp_path / "home") == ["records/avatars/ada/voice_profile.json"]


def test_concurrent_puts_of_the_same_blob_end_whole(store):
    data = os.urandom(2 << 20)
    refs, errors = [], []

    def put():
        try:
            refs.append(store.put_bytes(data, "bin", "application/octet-stream"))
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(refs)) == 1
    assert hashlib.sha256(store.read(refs[0])).hexdigest() == refs[0].sha256
    assert list(store.list_keys("media")) == [refs[0].key]


@pytest.mark.parametrize("key", ["../outside.txt", "media/../../outside.txt", "/etc/passwd"])
def test_keys_cannot_escape_the_root(store, key):
    with pytest.raises(ValueError, match="escapes the media store root"):
        store.write_text(key, "x")


@pytest.mark.parametrize("location", ["s3://bucket/media/ab/abc.png", "file:///etc/passwd"])
def test_locations_are_refused(store, location):
    """The store takes store-relative keys only: a location is never resolved as one."""
    with pytest.raises(ValueError, match="store-relative keys"):
        store.read(location)


def test_text_documents_and_listing(store):
    assert store.read_text("records/avatars/ada/source_upload.json") is None
    store.write_text("records/avatars/ada/source_upload.json", "one")
    store.write_text("records/avatars/ada/source_upload.json", "two")
    store.write_text("records/avatars/bob/source_upload.json", "three")
    assert store.read_text("records/avatars/ada/source_upload.json") == "two"
    assert list(store.list_keys("records/avatars/ada")) == ["records/avatars/ada/source_upload.json"]
    assert list(store.list_keys("records/avatars/ada/source_upload.json")) == ["records/avatars/ada/source_upload.json"]
    assert list(store.list_keys("nothing/here")) == []
    store.delete_key("records/avatars/ada/source_upload.json")
    assert store.read_text("records/avatars/ada/source_upload.json") is None


def test_records_round_trip_as_json(store, tmp_path):
    import json

    record = VoiceProfileRecord(
        avatar_id="ada-01",
        sample=None,
        problem="no voice sample was uploaded",
        metrics=None,
        embedding=None,
        consent={
            "subject": "Ada", "granted_by": "Ada", "granted_at": "2025-01-01T00:00:00Z",
            "scopes": ["likeness"], "evidence_sha256": "0" * 64,
        },
        waveform_sha256=None,
        provider=ProviderInfo(capability="speaker_embedding", provider="x", model_id="y", version="1"),
    )
    store.write_text(record_key("voice_profile", "ada-01"), dump_record(record))
    path = tmp_path / "home" / "records" / "avatars" / "ada-01" / "voice_profile.json"
    document = json.loads(path.read_text())
    assert document["kind"] == "voice_profile" and document["record"]["avatar_id"] == "ada-01"
    assert read_record(store, "voice_profile", "ada-01") == record
    assert parse_record(path.read_text()).content_hash() == record.content_hash()
    assert read_record(store, "voice_profile", "bob-02") is None
