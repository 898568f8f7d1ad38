"""Output requests in S3 (a cluster with no shared disk): `avatarops request` on one host puts the request in
the bucket, the request sensor of another host (another AVATAR_HOME) renders it, quarantines a malformed
one in the bucket and notes why a held one waits where `avatarops status` on any host reads it; revoke
removes the avatar's requests. Against a real S3 API server (moto on 127.0.0.1)."""

from __future__ import annotations

import json
import logging

import pytest

from avatar_assets.contracts import OutputRequest, QuarantineReason
from avatar_assets.ops import revoke
from avatar_assets.pipeline import quarantine
from avatar_assets.video import requests
from partitions import cell_key
from resources import layout
from resources.media_store import StoreUnavailable
from resources.s3_store import S3MediaStore
from sensors import requests as request_sensor
from tests.conftest import avatar_home, copy_sample
from tests.servers import avatarops, clean_env

LOG = logging.getLogger("test_s3_requests")
SCRIPT = "Hello from the bucket. This request crossed hosts without a shared disk."


@pytest.fixture
def home(s3_server, storage, tmp_path):
    """The daemon's home, say: its own AVATAR_HOME, its store the bucket."""
    with avatar_home(tmp_path / "daemon-home", AVATAR_STORAGE=storage, **s3_server.env) as value:
        assert isinstance(value.store, S3MediaStore)
        yield value


def request_of(avatar_id: str, slug: str) -> OutputRequest:
    return OutputRequest(avatar_id=avatar_id, slug=slug, script=SCRIPT)


def test_avatarops_request_puts_the_request_in_the_bucket(s3_server, storage, tmp_path, home):
    requester = tmp_path / "requester-home"
    script = tmp_path / "script.txt"
    script.write_text(SCRIPT)
    env = clean_env(AVATAR_HOME=requester, AVATAR_STORAGE=storage, **s3_server.env)

    made = avatarops("request", "ada-01", "promo", "--script", str(script), env=env, timeout=120)

    assert made.returncode == 0, made.stderr
    key = layout.inbox_request("ada-01", "promo")
    assert f"{storage}/{key}" in made.stdout
    request, _ = requests.read_request(home.store, "ada-01", "promo")  # another home reads it
    assert (request.avatar_id, request.slug, request.script) == ("ada-01", "promo", SCRIPT)
    assert not (requester / "inbox").exists()


def test_a_malformed_request_is_quarantined_in_the_bucket_and_the_good_one_next_to_it_accepted(home, monkeypatch):
    monkeypatch.setattr(request_sensor, "identity_blocker", lambda *_: None)  # an identity that passed its gates
    bad = layout.inbox_request("aaa-poison", "broken")
    home.store.write_text(bad, "{not json")
    requests.write_request(home.store, request_of("bob-02", "promo"))

    result = request_sensor.evaluate_requests(home.instance, home.store, LOG)

    [run] = result.run_requests
    assert run.partition_key == cell_key("bob-02", "promo")
    accepted, _ = requests.accepted_request(home.store, "bob-02", "promo", run.tags[requests.REQUEST_TAG])
    assert accepted.script == SCRIPT
    assert not home.store.exists(bad)
    [reason_key] = [key for key in home.store.list_keys(layout.QUARANTINE) if key.endswith("/reason.json")]
    entry = reason_key.removesuffix("reason.json")
    assert entry.startswith(f"{layout.QUARANTINE}output-aaa-poison-broken-")
    assert home.store.read_text(f"{entry}broken.json") == "{not json"  # kept, unaltered
    reason = QuarantineReason.model_validate_json(home.store.read_text(reason_key))
    assert (reason.kind, reason.avatar_id, reason.slug, reason.bundle) == ("output_request", "aaa-poison", "broken", bad)
    assert reason.problems[0].startswith("request is not valid UTF-8 JSON")
    [(where, listed)] = list(quarantine.stored_entries(home.store))  # what `avatarops status` shows
    assert where == home.store.uri(entry) and (listed["kind"], listed["slug"]) == ("output_request", "broken")
    # The next tick asks for the good one again (the run key de-duplicates) and finds nothing else.
    assert [r.run_key for r in request_sensor.evaluate_requests(home.instance, home.store, LOG).run_requests] == [run.run_key]


def test_a_request_gone_before_it_is_set_aside_leaves_no_empty_quarantine_entry(home):
    key = layout.inbox_request("ada-01", "broken")
    scanned = requests.ScannedRequest(key, "ada-01", "broken", b"[]", None, ["request must be a JSON object"])
    with pytest.raises(FileNotFoundError):
        request_sensor.quarantine_request(home.store, scanned)
    assert list(home.store.list_keys(layout.QUARANTINE)) == []


def test_a_store_that_does_not_answer_fails_the_tick_and_quarantines_nothing(home, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    home.store.write_text(layout.inbox_request("ada-01", "promo"), "{not json")

    def unreachable(**_):
        raise EndpointConnectionError(endpoint_url="http://s3.example")

    monkeypatch.setattr(home.store.client, "get_object", unreachable)
    with pytest.raises(StoreUnavailable):
        request_sensor.evaluate_requests(home.instance, home.store, LOG)
    assert list(home.store.list_keys(layout.QUARANTINE)) == []


def test_a_held_request_shows_in_status_from_another_home(s3_server, storage, tmp_path, home):
    requests.write_request(home.store, request_of("nobody-yet", "promo"))

    assert request_sensor.evaluate_requests(home.instance, home.store, LOG).run_requests == []

    env = clean_env(AVATAR_HOME=tmp_path / "operator-home", AVATAR_STORAGE=storage, **s3_server.env)
    status = avatarops("status", "--json", env=env, timeout=120)
    assert status.returncode == 0, status.stderr
    [held] = json.loads(status.stdout[status.stdout.find("{"):])["held"]
    assert held["request"] == layout.inbox_request("nobody-yet", "promo")
    assert "avatar nobody-yet does not exist" in held["reason"]
    assert not (tmp_path / "operator-home" / "requests").exists() and not (home.root / "requests").exists()


def test_revoke_removes_the_avatars_requests_held_notes_and_quarantined_requests_only(home):
    for avatar_id in ("ada", "ada-01"):
        requests.write_request(home.store, request_of(avatar_id, "promo"))
        home.store.write_text(layout.inbox_request(avatar_id, "broken"), "[]")
    request_sensor.evaluate_requests(home.instance, home.store, LOG)  # holds both promos, sets both broken aside
    assert [layout.held_request_name(key) for key in home.store.list_keys(layout.HELD_REQUESTS)] == [
        "ada/promo", "ada-01/promo"]

    revoke.remove_inputs(home.store, "ada")

    assert list(home.store.list_keys(layout.inbox_requests("ada"))) == []
    assert [layout.held_request_name(key) for key in home.store.list_keys(layout.HELD_REQUESTS)] == ["ada-01/promo"]
    assert [entry["avatar_id"] for _, entry in quarantine.stored_entry_keys(home.store)] == ["ada-01"]
    assert [layout.inbox_request_cell(key) for key in home.store.list_keys(layout.INBOX_OUTPUTS)] == [("ada-01", "promo")]


@pytest.mark.slow  # builds an identity and renders a video
def test_a_request_made_in_one_home_is_rendered_by_process_in_another(s3_server, storage, sample_bundle, tmp_path):
    """No shared disk: the uploader and requester, and `avatarops process` (sensors and runs), each have
    their own home. The request waits, held, until the identity it needs is built in the same process."""
    requester = clean_env(AVATAR_HOME=tmp_path / "requester-home", AVATAR_STORAGE=storage, **s3_server.env)
    worker = clean_env(AVATAR_HOME=tmp_path / "worker-home", AVATAR_STORAGE=storage,
                       AVATAR_UPLOAD_SETTLE_SECONDS="0", **s3_server.env)
    uploaded = avatarops("upload", str(copy_sample(sample_bundle, tmp_path / "src", "ada-01")), env=requester)
    assert uploaded.returncode == 0, uploaded.stderr
    script = tmp_path / "script.txt"
    script.write_text(SCRIPT)
    made = avatarops("request", "ada-01", "promo", "--script", str(script), env=requester, timeout=120)
    assert made.returncode == 0, made.stderr

    processed = avatarops("process", "--json", env=worker, timeout=900)

    assert processed.returncode == 0, processed.stderr[-4000:]
    report = json.loads(processed.stdout[processed.stdout.find("{"):])
    [render] = [r for r in report["runs"] if r["partition"] == str(cell_key("ada-01", "promo"))]
    assert render["success"], json.dumps(report, indent=2)
    with avatar_home(tmp_path / "reader-home", AVATAR_STORAGE=storage, **s3_server.env) as reader:
        assert reader.record("output_package", str(cell_key("ada-01", "promo"))) is not None
        assert list(reader.store.list_keys(layout.HELD_REQUESTS)) == []  # released once it was accepted
    for name in ("requester-home", "worker-home"):
        assert not (tmp_path / name / "inbox").exists() and not (tmp_path / name / "requests").exists()
