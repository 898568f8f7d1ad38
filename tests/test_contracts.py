"""The upload contract refuses bad manifests with a message that names the field and the problem; so does an
output request's caption style."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from avatar_assets.contracts import (
    CAPTION_PRESETS,
    AvatarUpload,
    CaptionStyle,
    OutputRequest,
    QuarantineReason,
    describe_validation_error,
)
from avatar_assets.video.requests import RequestError, parse_request
from tests.conftest import deep_update, manifest_for

GOOD = manifest_for("ada-01", ["photos/a.jpg", "photos/b.png"], "voice/v.wav")


def problems_of(document: dict) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        AvatarUpload.model_validate(document)
    return describe_validation_error(caught.value)


def test_good_manifest_round_trips():
    upload = AvatarUpload.model_validate(GOOD)
    assert upload.avatar_id == "ada-01"
    assert upload.referenced_paths() == ["photos/a.jpg", "photos/b.png", "voice/v.wav"]
    assert upload.consent.scopes == ["likeness", "voice"]
    assert AvatarUpload.model_validate_json(upload.model_dump_json()) == upload


@pytest.mark.parametrize("field", ["avatar_id", "creator_id", "photos", "consent"])
def test_missing_required_field_is_named(field):
    document = dict(GOOD)
    del document[field]
    assert problems_of(document) == [f"{field}: required field is missing"]


def test_missing_consent_detail_names_the_nested_field():
    document = deep_update(GOOD, {})
    del document["consent"]["evidence_sha256"]
    assert problems_of(document) == ["consent.evidence_sha256: required field is missing"]


@pytest.mark.parametrize(
    "changes, where",
    [
        ({"favourite_colour": "blue"}, "favourite_colour"),
        ({"consent": {"expires": "never"}}, "consent.expires"),
        ({"style": {"lut": "teal-orange"}}, "style.lut"),
    ],
)
def test_unknown_fields_are_refused_by_name(changes, where):
    assert problems_of(deep_update(GOOD, changes)) == [
        f"{where}: unknown field (not part of the upload contract)"
    ]


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "photos/../../secret.jpg", "..", "photos/../../../x/../y.jpg"]
)
def test_path_traversal_is_refused(path):
    problems = problems_of(deep_update(GOOD, {"photos": ["photos/a.jpg", path]}))
    assert len(problems) == 1
    assert problems[0].startswith("photos.1: ")
    assert "leaves the bundle (path traversal)" in problems[0]
    assert repr(path) in problems[0]


def test_traversal_in_voice_sample_is_named():
    problems = problems_of(deep_update(GOOD, {"voice_sample": "../other/voice.wav"}))
    assert problems == ["voice_sample: path '../other/voice.wav' leaves the bundle (path traversal)"]


@pytest.mark.parametrize("path", ["/etc/passwd", "C:/photos/a.jpg"])
def test_absolute_paths_are_refused(path):
    problems = problems_of(deep_update(GOOD, {"photos": [path]}))
    assert problems == [f"photos.0: path {path!r} is absolute; paths must be relative to the bundle"]


@pytest.mark.parametrize("path", ["", "photos\\a.jpg", "photos/a\x00.jpg"])
def test_empty_backslash_or_nul_paths_are_refused(path):
    problems = problems_of(deep_update(GOOD, {"photos": [path]}))
    assert len(problems) == 1 and problems[0].startswith("photos.0: path ")
    assert "empty or contains a NUL or backslash" in problems[0]


def test_dot_segments_are_normalised_and_any_dotdot_is_refused():
    upload = AvatarUpload.model_validate(deep_update(GOOD, {"photos": ["./photos/./a.jpg"]}))
    assert upload.photos == ["photos/a.jpg"]
    # Even a ".." that would stay inside the bundle is refused: simpler to explain, nothing to exploit.
    assert "path traversal" in problems_of(deep_update(GOOD, {"photos": ["photos/x/../a.jpg"]}))[0]


@pytest.mark.parametrize("avatar_id", ["team/ada", "Ada", "ADA-01", "-ada", "a", "a" * 64, "ada_01", "ada 01", ""])
def test_bad_avatar_ids_are_refused(avatar_id):
    problems = problems_of(deep_update(GOOD, {"avatar_id": avatar_id}))
    assert len(problems) == 1
    assert problems[0].startswith("avatar_id: ")
    assert "pattern" in problems[0] and "^[a-z0-9][a-z0-9-]{1,62}$" in problems[0]


@pytest.mark.parametrize("avatar_id", ["ab", "a" * 63, "0-ada", "ada-01"])
def test_good_avatar_ids_are_accepted(avatar_id):
    assert AvatarUpload.model_validate(deep_update(GOOD, {"avatar_id": avatar_id})).avatar_id == avatar_id


def test_unknown_consent_scope_is_refused_by_name():
    problems = problems_of(deep_update(GOOD, {"consent": {"scopes": ["likeness", "everything"]}}))
    assert len(problems) == 1 and problems[0].startswith("consent.scopes.1: ")
    assert "'likeness'" in problems[0] and "'voice'" in problems[0]


def test_consent_without_voice_scope_is_valid_contract():
    """Scopes are judged by the QA gates (which name them), not refused at intake."""
    upload = AvatarUpload.model_validate(deep_update(GOOD, {"consent": {"scopes": ["likeness"]}}))
    assert upload.consent.scopes == ["likeness"]


def test_bad_evidence_hash_and_date_are_named():
    problems = problems_of(deep_update(GOOD, {"consent": {"evidence_sha256": "abc", "granted_at": "yesterday"}}))
    assert sorted(p.split(":")[0] for p in problems) == ["consent.evidence_sha256", "consent.granted_at"]


def test_photos_must_be_a_non_empty_list():
    assert problems_of(deep_update(GOOD, {"photos": []}))[0].startswith("photos: ")
    assert problems_of(deep_update(GOOD, {"photos": "photos/a.jpg"}))[0].startswith("photos: ")


def test_unknown_platform_is_named():
    problems = problems_of(deep_update(GOOD, {"target_platforms": ["myspace"]}))
    assert len(problems) == 1 and problems[0].startswith("target_platforms.0: ")


def test_several_problems_are_all_reported():
    document = deep_update(GOOD, {"avatar_id": "Bad/Id", "photos": ["/etc/passwd"], "extra": 1})
    del document["consent"]
    problems = problems_of(document)
    fields = sorted(p.split(":")[0] for p in problems)
    assert fields == ["avatar_id", "consent", "extra", "photos.0"]


def test_manifest_is_frozen():
    upload = AvatarUpload.model_validate(GOOD)
    with pytest.raises(ValidationError):
        upload.avatar_id = "other"  # type: ignore[misc]


def test_quarantine_reason_tells_a_person_what_to_do():
    reason = QuarantineReason(
        avatar_id="ada-01",
        bundle="/inbox/avatars/ada-01",
        quarantined_at="2025-01-01T00:00:00Z",
        problems=["photos.0: required field is missing"],
        original_files={"manifest.json": "0" * 64},
    )
    assert "upload the bundle again" in reason.action


# --------------------------------------------------------------------------- caption styles in output requests


def request_with(**fields) -> bytes:
    return json.dumps({"avatar_id": "ada-01", "slug": "promo", "script": "Hello there.", **fields}).encode()


def test_a_request_without_a_caption_style_gets_the_classic_preset():
    request = parse_request(request_with())
    assert request.captions == CaptionStyle(preset="classic")
    assert request.captions.model_dump(exclude={"preset"}) == CAPTION_PRESETS["classic"]


def test_a_preset_fills_what_the_request_leaves_out():
    style = parse_request(request_with(captions={"preset": "karaoke", "font_size": 90, "highlight_colour": "#00ff88"})).captions
    assert style.model_dump() == {**CAPTION_PRESETS["karaoke"], "preset": "karaoke", "font_size": 90,
                                  "highlight_colour": "#00FF88"}
    assert OutputRequest.model_validate_json(parse_request(request_with(captions=style.model_dump())).model_dump_json()).captions == style


@pytest.mark.parametrize(
    "captions, message",
    [
        ({"preset": "neon"}, "captions.preset: Input should be 'classic', 'karaoke' or 'minimal'"),
        ({"text_colour": "red"}, "captions.text_colour: 'red' is not a colour: write it as #RRGGBB"),
        ({"highlight_colour": "#12345G"}, "captions.highlight_colour: '#12345G' is not a colour"),
        ({"font_size": 500}, "captions.font_size: Input should be less than or equal to 160"),
        ({"font_size": 8}, "captions.font_size: Input should be greater than or equal to 24"),
        ({"position": "left"}, "captions.position: Input should be 'auto', 'top', 'middle' or 'bottom'"),
        ({"word_highlight": "sometimes"}, "captions.word_highlight: Input should be a valid boolean"),
        ({"glow": True}, "captions.glow: unknown field"),
        ("karaoke", "captions: Input should be a valid dictionary or instance of CaptionStyle"),
    ],
)
def test_a_bad_caption_style_is_refused_naming_the_field(captions, message):
    with pytest.raises(RequestError) as caught:
        parse_request(request_with(captions=captions))
    assert message in str(caught.value), str(caught.value)
    assert len(str(caught.value).split("; ")) == 1  # one problem, one sentence: no noise from the preset
