"""The store's key layout is what existing homes hold (DESIGN.md "Storage"): every builder is pinned here,
and every parser takes back what its builder made."""

from partitions import cell_key, partition_key, split_cell
from resources import layout

SHA = "ab" + "0" * 62


def test_cell_keys_read_avatar_bar_slug():
    assert cell_key("ada-01", "launch") == "ada-01|launch"
    assert partition_key("ada-01", "launch") == "ada-01|launch" and partition_key("ada-01", None) == "ada-01"
    assert split_cell(cell_key("ada-01", "launch")) == ("ada-01", "launch")
    assert split_cell("ada-01") == ("ada-01", None)


def test_record_layout_per_avatar():
    assert layout.avatar_records("ada-01") == "records/avatars/ada-01/"
    assert layout.record_key("neutral_image", "ada-01") == "records/avatars/ada-01/neutral_image.json"
    cell = cell_key("ada-01", "launch")
    assert layout.record_key("speech", cell) == "records/avatars/ada-01/outputs/launch/speech.json"
    assert layout.record_key("speech", "ada-01|launch") == "records/avatars/ada-01/outputs/launch/speech.json"


def test_every_other_key_is_where_existing_homes_keep_it():
    assert layout.media_key(SHA, ".png") == f"media/ab/{SHA}.png"
    assert layout.cache_key("speech", "k1") == "cache/speech/k1.json"
    assert layout.owner_key("ada") == "owners/ada.json"
    assert layout.tombstone_key("ada") == "tombstones/ada.json"
    assert layout.package_folder("ada", "launch") == "packages/ada/launch"
    assert layout.erased_with("ada") == ("packages/ada/", "approvals/avatars/ada/", "requests/accepted/ada/")
    assert layout.audit_key("ada", None, "neutral_image", "a1") == "approvals/avatars/ada/_identity/neutral_image/a1.json"
    assert layout.audit_key("ada", "launch", "lip_sync", "a1") == "approvals/avatars/ada/launch/lip_sync/a1.json"
    assert layout.queued_approval_key("a1") == "approvals/queue/a1.json"
    assert layout.request_snapshot_key("ada", "launch", SHA) == f"requests/accepted/ada/launch/{SHA}.json"
    assert layout.current_request_key("ada", "launch") == "requests/accepted/ada/launch/current.json"
    assert layout.outbox_key("e1") == "events/outbox/e1.json"
    assert layout.dead_letter_key("e1") == "events/dead/e1.json"
    assert layout.dedupe_marker_key("d1") == "events/keys/d1"
    assert layout.DELIVERY_STATE == "events/delivery.json"


def test_parsers_take_back_what_builders_made():
    assert layout.record_cell(layout.record_key("speech", cell_key("ada", "launch"))) == ("ada", "launch")
    assert layout.record_cell(layout.record_key("neutral_image", "ada")) == ("ada", None)
    for key in (layout.cache_key("speech", "k1"), layout.package_folder("ada", "launch"), "records/avatars/x.json"):
        assert layout.record_cell(key) is None, key
    assert layout.blob_sha256(layout.media_key(SHA, "png")) == SHA
    assert layout.tombstone_avatar(layout.tombstone_key("ada")) == "ada"
    assert layout.outbox_event_id(layout.outbox_key("e1")) == "e1"
    assert layout.dead_letter_id(layout.dead_letter_key("e1")) == "e1"


def test_the_inbox_and_what_is_set_aside_from_it():
    from datetime import UTC, datetime

    at = datetime(2026, 12, 6, 5, 4, 3, 21, tzinfo=UTC)
    assert layout.inbox_bundle("ada") == "inbox/avatars/ada/"
    assert layout.inbox_bundle_of("inbox/avatars/ada/photos/p.jpg") == "ada"
    assert layout.inbox_bundle_of("inbox/avatars/ada") is None and layout.inbox_bundle_of("records/x/y") is None
    assert layout.archived_upload("ada", at) == "archive/uploads/ada-20261206T050403000021Z/"
    assert layout.quarantine_entry("ada", at) == "quarantine/ada-20261206T050403000021Z/"
    assert layout.set_aside_avatar(layout.archived_upload("ada-01", at) + "manifest.json") == "ada-01"
    assert layout.set_aside_avatar(layout.quarantine_entry("ada", at) + "reason.json") == "ada"
    assert layout.set_aside_avatar("quarantine/ada-01/reason.json") is None


def test_output_requests_and_their_held_notes():
    """The keys a local home has always kept them at (`inbox/outputs/...`, `requests/held/...`)."""
    assert layout.inbox_request("ada", "promo") == "inbox/outputs/ada/promo.json"
    assert layout.inbox_request_cell(layout.inbox_request("ada-01", "promo")) == ("ada-01", "promo")
    for other in ("inbox/outputs/ada/promo.txt", "inbox/outputs/ada/x/promo.json", "inbox/outputs/promo.json",
                  "inbox/avatars/ada/manifest.json"):
        assert layout.inbox_request_cell(other) is None
    assert layout.held_request_key("ada", "promo") == "requests/held/ada--promo.json"
    assert layout.held_request_name(layout.held_request_key("ada", "promo")) == "ada/promo"
    assert layout.held_request_key("ada", "promo").startswith(layout.held_requests_of("ada"))
    assert not layout.held_request_key("ada-01", "promo").startswith(layout.held_requests_of("ada"))
