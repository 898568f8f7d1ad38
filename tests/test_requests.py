"""Output requests from people: what `avatarops request` refuses (exit 2, a message naming the problem),
what is cleaned and still rendered, and how the request sensor holds, de-duplicates and re-renders.

One module-scoped home with one built avatar (`req-a`); every render is real (small master size) and goes
through `avatarops process`'s engine: request sensor -> runs -> automation on a real SQLite instance.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest

from avatar_assets.contracts import QuarantineReason, RightsManifest, Tombstone
from avatar_assets.video.assets import VIDEO_STAGES
from tests.conftest import copy_sample
from tests.video_helpers import (
    cell,
    check_verdicts,
    materialization_counts,
    package_dir,
    record,
    runs_for,
    sha256_path,
    video_home,
)

AVATAR = "req-a"
AVATAROPS = Path(sys.executable).parent / "avatarops"
GATES = {"speech_timing_and_level", "mouth_follows_speech", "scene_identity_consistency", "stitched_video_plays",
         "enhanced_video_plays", "package_complete"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, sample_bundle):
    """The module's home: `req-a` built once; tests using it render real videos (hence `slow`)."""
    with video_home(tmp_path_factory.mktemp("requests") / "home", sample_bundle, (AVATAR,)) as value:
        yield value


def avatarops(home_root: Path, *args: str, script: str | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real `avatarops` entry point against `home_root`, the script written to a UTF-8 file."""
    argv = [str(AVATAROPS), *args]
    if script is not None:
        path = (tmp or home_root) / f"script-{hashlib.sha256(script.encode()).hexdigest()[:12]}.txt"
        path.write_text(script, encoding="utf-8")
        argv += ["--script", str(path)]
    env = {k: v for k, v in os.environ.items() if k not in {"DAGSTER_HOME", "AVATAR_STORAGE"}}
    env["AVATAR_HOME"] = str(home_root)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def request_file(home_root: Path, avatar_id: str, slug: str) -> Path:
    return home_root / "inbox" / "outputs" / avatar_id / f"{slug}.json"


def held_reason(home_root: Path, avatar_id: str, slug: str) -> str | None:
    path = home_root / "requests" / "held" / f"{avatar_id}--{slug}.json"
    return json.loads(path.read_text())["reason"] if path.exists() else None


# --------------------------------------------------------------------------- refused by the CLI

REFUSED = {
    # name: (avatar, slug, script, extra CLI options, what the message must say)
    "empty script": (AVATAR, "empty", "", [], "script: script is empty"),
    "blank script": (AVATAR, "blank", " \n\t \n", [], "script: script is empty"),
    "markup and emoji only": (AVATAR, "nothing", "<speak><audio src='x.mp3'/></speak> 👋🚀", [],
                              "script: script has no speakable words after cleaning"),
    "100 000-character script": (AVATAR, "huge", "word " * 20_000, [], "script: String should have at most 5000 characters"),
    "too many words": (AVATAR, "wordy", "a " * 1000, [], "script: script has 1000 words; the limit is 900"),
    "unknown route": (AVATAR, "route", "Hello there.", ["--route", "slideshow"], "route: Input should be 'single_scene'"),
    "one word for two scenes": (AVATAR, "short", "Hello.", ["--route", "multi_scene"],
                                "route: route multi_scene needs at least 2 scenes"),
    "unsupported platform": (AVATAR, "platform", "Hello there.", ["--platforms", "tiktok,myspace"], "platforms.1: Input should be"),
    "empty aspect ratio list": (AVATAR, "aspect", "Hello there.", ["--aspect", ""], "aspect_ratios: List should have at least 1 item"),
    "unknown aspect ratio": (AVATAR, "aspect", "Hello there.", ["--aspect", "4:3"], "aspect_ratios.0: Input should be"),
    "slug with slashes": (AVATAR, "promo/../../escape", "Hello there.", [], "slug: String should match pattern"),
    "slug with a folder": (AVATAR, "campaign/promo", "Hello there.", [], "slug: String should match pattern"),
    "avatar id with slashes": ("../req-a", "promo", "Hello there.", [], "avatar_id: String should match pattern"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_cli_refuses_a_bad_request_with_exit_2_and_a_message_naming_it(case, tmp_path):
    avatar_id, slug, script, options, message = REFUSED[case]
    root = tmp_path / "home"
    root.mkdir()
    result = avatarops(root, "request", avatar_id, slug, *options, script=script, tmp=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: bad output request: ")
    assert message in result.stderr, result.stderr
    assert len(result.stderr) < 2000  # a message for a person, not a traceback
    assert "Traceback" not in result.stderr
    assert not (root / "inbox").exists()  # nothing written, nowhere (no path built from the bad slug)
    assert sorted(p.name for p in root.iterdir()) == []


def test_a_bad_request_dropped_into_the_inbox_is_quarantined_with_its_reason(home):
    before = materialization_counts(home.instance)
    documents = {
        "no-route": {"avatar_id": AVATAR, "slug": "no-route", "script": "Hello there.", "route": "slideshow"},
        "slashed": {"avatar_id": AVATAR, "slug": "a/b", "script": "Hello there."},
        "mute": {"avatar_id": AVATAR, "slug": "mute", "script": "   "},
        "not-json": "{this is not json",
    }
    paths = {}
    for stem, document in documents.items():
        path = request_file(home.root, AVATAR, stem)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document if isinstance(document, str) else json.dumps(document))
        paths[stem] = (path, hashlib.sha256(path.read_bytes()).hexdigest())
    report = home.process()
    assert report.runs == []
    reasons = {}
    for folder in (home.root / "quarantine").glob(f"output-{AVATAR}-*"):
        reason = QuarantineReason.model_validate_json((folder / "reason.json").read_text())  # the uploads' schema
        assert reason.kind == "output_request" and reason.avatar_id == AVATAR
        [kept] = [p for p in folder.iterdir() if p.name != "reason.json"]
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == reason.original_files[kept.name]  # the user's bytes, untouched
        reasons[kept.stem] = " ".join(reason.problems)
    assert set(reasons) == set(documents)
    assert "route: Input should be 'single_scene'" in reasons["no-route"]
    assert "slug: String should match pattern" in reasons["slashed"]
    assert "script: script is empty" in reasons["mute"]
    assert "not valid UTF-8 JSON" in reasons["not-json"]
    for path, _ in paths.values():
        assert not path.exists()  # moved to quarantine (with its reason), never deleted
    assert materialization_counts(home.instance) == before

    # `avatarops status` once raised KeyError: 'avatar_id' here; it reads requests and uploads alike, and an
    # entry in the request-only shape of older versions is still listed.
    from avatar_assets.ops.status import collect_status, format_status

    legacy = home.root / "quarantine" / f"output-{AVATAR}-old-20250101T000000000000Z"
    legacy.mkdir()
    (legacy / "reason.json").write_text(json.dumps({"request": "/inbox/outputs/x/old.json", "problems": ["old problem"]}))
    listed = collect_status(home.defs, home.instance, home.store)["quarantined"]
    assert {item["kind"] for item in listed} == {"output_request"} and len(listed) == len(documents) + 1
    assert {item["slug"] for item in listed if item["slug"]} == set(documents)
    assert "old problem" in format_status(collect_status(home.defs, home.instance, home.store))
    assert not {"no-route", "slashed", "mute", "not-json", "a/b"} & set(home.instance.get_dynamic_partitions("outputs"))


# --------------------------------------------------------------------------- cleaned, not refused

CLEANED = {
    "control": "Hello\x00there,\x07 welcome\x0b to our\x7f show.\r\nSee you\x1f soon.",
    "injection": ('<speak><audio src="https://evil.example/x.mp3"/>Hello there, <break time="60s"/>welcome '
                  '<prosody rate="x-slow">to our show.</prosody></speak> <script>alert(1)</script>See you soon.'),
    "emoji": "Hello 👋🏽 friends! I ❤️ this show 🚀✨. See you 👨‍👩‍👧 soon.",
    "cyrillic": "Привет, друзья! Добро пожаловать на наше шоу.",
}


@pytest.fixture(scope="module")
def cleaned(studio, tmp_path_factory):
    home = studio
    tmp = tmp_path_factory.mktemp("scripts")
    for slug, script in CLEANED.items():
        result = avatarops(home.root, "request", AVATAR, slug, script=script, tmp=tmp)
        assert result.returncode == 0, result.stderr
        assert f"requested {AVATAR}/{slug} (single_scene)" in result.stdout
    report = home.process()
    assert report.ok, report.as_dict()
    assert sorted(r.partition for r in report.runs) == sorted(cell(AVATAR, slug) for slug in CLEANED)
    return report


def rendered_cleanly(home, slug: str):
    """The cell rendered, every gate passed, and the package's captions are the cleaned words."""
    assert check_verdicts(home.instance, cell(AVATAR, slug)) == dict.fromkeys(GATES, True)
    script = record(home, "script", AVATAR, slug)
    speech = record(home, "speech", AVATAR, slug)
    folder = package_dir(home, AVATAR, slug)
    manifest = RightsManifest.model_validate_json((folder / "rights_manifest.json").read_text())
    assert all(sha256_path(folder / name) == sha for name, sha in manifest.outputs.items())
    assert [w.word for w in speech.words] == script.text.split()  # one caption word per script word, in order
    srt = (folder / "captions.srt").read_text()
    assert "<" not in srt and ">" not in srt.replace("-->", "")
    return script, speech, srt


@pytest.mark.slow
def test_control_characters_are_removed_and_separate_words(studio, cleaned):
    home = studio
    script, speech, srt = rendered_cleanly(home, "control")
    # NUL, BEL, VT, DEL and US (the CLI reads the file in text mode, so its CRLF is already a newline).
    assert script.cleaned == ["removed 5 control character(s) or emoji"]
    assert script.text == "Hello there, welcome to our show.\nSee you soon."
    assert not any(unicodedata.category(c) == "Cc" and c != "\n" for c in script.text)
    assert "Hello there, welcome to our show." in srt and "See you soon." in srt
    assert script.request.script == CLEANED["control"].replace("\r\n", "\n")  # the request is kept as sent


@pytest.mark.slow
def test_html_and_ssml_injection_is_stripped_never_passed_to_the_synthesiser(studio, cleaned):
    home = studio
    script, speech, _ = rendered_cleanly(home, "injection")
    assert script.cleaned == ["removed 8 markup tag(s), e.g. '<speak>'"]
    assert script.text == "Hello there, welcome to our show. alert(1) See you soon."
    for smuggled in ["audio", "src", "evil", "60s", "prosody", "x-slow", "script>"]:
        assert smuggled not in script.ssml
    # The only markup the synthesiser sees is ours: the envelope and our own breaks.
    body = script.ssml.removeprefix("<speak>").removesuffix("</speak>")
    assert body.replace('<break time="250ms"/>', "").replace('<break time="600ms"/>', "").count("<") == 0
    assert speech.longest_silence_s < 2.0 and speech.duration_s < 6  # no 60 s break was honoured


@pytest.mark.slow
def test_emoji_are_removed_and_leave_no_invisible_words_behind(studio, cleaned):
    home = studio
    script, speech, srt = rendered_cleanly(home, "emoji")
    assert script.text == "Hello friends! I this show. See you soon."
    [note] = script.cleaned
    assert note.startswith("removed ") and note.endswith(" control character(s) or emoji")
    assert int(note.split()[1]) >= 9
    for char in script.text:
        assert unicodedata.category(char) not in {"So", "Mn", "Cf"} and ord(char) < 0x2000, repr(char)
    assert script.word_count == len(speech.words) == 8


@pytest.mark.slow
def test_non_latin_text_is_kept_and_spoken_by_a_voice_that_reads_it(studio, cleaned):
    home = studio
    script, speech, srt = rendered_cleanly(home, "cyrillic")
    assert script.cleaned == [] and script.text == CLEANED["cyrillic"]
    assert "Привет, друзья!" in srt and "Добро пожаловать на наше шоу." in srt
    assert speech.provider.model_id.split("+")[0] == "ru"  # the English voice would spell it letter by letter
    expected = len(speech.words) / 150 * 60
    assert 0.5 * expected <= speech.duration_s <= 2 * expected


# --------------------------------------------------------------------------- held, then run


@pytest.mark.slow
def test_request_for_an_avatar_that_does_not_exist_is_held_then_runs_once_it_is_built(studio, sample_bundle, tmp_path):
    home = studio
    newcomer, slug = "req-new", "hello"
    result = avatarops(home.root, "request", newcomer, slug, script="Hello there, nice to meet you.", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    raw = request_file(home.root, newcomer, slug).read_bytes()

    report = home.process()
    assert [r for r in report.runs if newcomer in r.partition] == []
    reason = held_reason(home.root, newcomer, slug)
    assert reason == f"avatar {newcomer} does not exist (no upload has been taken for it)"
    assert request_file(home.root, newcomer, slug).read_bytes() == raw  # kept, untouched
    assert not home.instance.has_dynamic_partition("outputs", slug)

    copy_sample(sample_bundle, home.inbox, newcomer)
    report = home.process()
    assert report.ok, report.as_dict()
    assert [(r.origin, r.partition) for r in report.runs] == [
        ("avatar_upload_sensor", newcomer), ("output_request_sensor", cell(newcomer, slug))
    ]
    assert held_reason(home.root, newcomer, slug) is None
    assert check_verdicts(home.instance, cell(newcomer, slug)) == dict.fromkeys(GATES, True)
    manifest = RightsManifest.model_validate_json((package_dir(home, newcomer, slug) / "rights_manifest.json").read_text())
    assert manifest.request_sha256 == hashlib.sha256(raw).hexdigest()
    assert home.process().runs == []  # and only once


@pytest.mark.slow
def test_request_for_an_avatar_whose_identity_failed_a_gate_is_held_with_the_gate_s_reason(
    studio, sample_bundle, voices, tmp_path
):
    home = studio
    mute, slug = "req-mute", "hello"
    bundle = copy_sample(sample_bundle, tmp_path, mute)
    (bundle / "voice" / "sample.wav").write_bytes(voices["silent"])
    copy_sample(bundle, home.inbox, mute)
    result = avatarops(home.root, "request", mute, slug, script="Hello there, nice to meet you.", tmp=tmp_path)
    assert result.returncode == 0, result.stderr

    report = home.process()
    assert [(r.origin, r.partition) for r in report.runs] == [("avatar_upload_sensor", mute)]
    assert any("voice_sample_quality" in failure for failure in report.runs[0].failed_checks)
    reason = held_reason(home.root, mute, slug)
    assert reason is not None and reason.startswith(f"identity of {mute} is blocked by voice_profile:voice_sample_quality: ")
    assert "speech" in reason  # the gate's own words: what is wrong with the voice
    assert not home.instance.has_dynamic_partition("outputs", slug) or not runs_for(home.instance, cell(mute, slug))
    assert home.process().runs == []  # held, not retried into a failing render


@pytest.mark.slow
def test_request_for_a_revoked_avatar_is_held_with_a_revoked_reason(studio, tmp_path):
    home = studio
    gone, slug = "req-gone", "farewell"
    tombstone = Tombstone(avatar_id=gone, status="revoked", revoked_at=datetime.now(UTC), by="tests", reason="consent withdrawn")
    (home.root / "tombstones").mkdir(exist_ok=True)
    (home.root / "tombstones" / f"{gone}.json").write_text(tombstone.model_dump_json())
    result = avatarops(home.root, "request", gone, slug, script="Goodbye everybody.", tmp=tmp_path)
    assert result.returncode == 2 and f"avatar {gone} was revoked" in result.stderr and "consent withdrawn" in result.stderr
    assert not request_file(home.root, gone, slug).exists()  # refused when it is made
    # A request file dropped by hand (no CLI to refuse it) is held by the sensor with the revocation.
    from avatar_assets.contracts import OutputRequest
    from avatar_assets.video.requests import write_request

    write_request(home.store, OutputRequest(avatar_id=gone, slug=slug, script="Goodbye everybody."))
    before = materialization_counts(home.instance)
    report = home.process()
    assert [r for r in report.runs if gone in r.partition] == []
    reason = held_reason(home.root, gone, slug)
    assert reason is not None and "revoked" in reason and gone in reason
    assert request_file(home.root, gone, slug).exists()
    assert not home.instance.has_dynamic_partition("outputs", slug)
    assert materialization_counts(home.instance) == before
    home.process()
    assert held_reason(home.root, gone, slug) == reason  # still held on every pass, never launched


# --------------------------------------------------------------------------- idempotence and change


SLUG_TWICE = "twice"
TWICE_ARGS = ["request", AVATAR, SLUG_TWICE, "--route", "single_scene", "--aspect", "9:16,1:1"]
TWICE_SCRIPT = "Hello again, this is said once."


@pytest.fixture(scope="module")
def submitted_twice(studio, tmp_path_factory):
    """The same request submitted twice before a pass, then one pass: (request bytes, report)."""
    tmp = tmp_path_factory.mktemp("twice")
    first = avatarops(studio.root, *TWICE_ARGS, script=TWICE_SCRIPT, tmp=tmp)
    raw = request_file(studio.root, AVATAR, SLUG_TWICE).read_bytes()
    second = avatarops(studio.root, *TWICE_ARGS, script=TWICE_SCRIPT, tmp=tmp)
    assert first.returncode == second.returncode == 0
    assert request_file(studio.root, AVATAR, SLUG_TWICE).read_bytes() == raw  # the same bytes: the same run key
    return raw, studio.process()


@pytest.mark.slow
def test_duplicate_request_submitted_twice_renders_once(studio, submitted_twice, tmp_path):
    home, (raw, report) = studio, submitted_twice
    assert report.ok, report.as_dict()
    assert [r.partition for r in report.runs] == [cell(AVATAR, SLUG_TWICE)]
    sha = hashlib.sha256(raw).hexdigest()
    [run] = runs_for(home.instance, cell(AVATAR, SLUG_TWICE))
    assert run.tags["dagster/run_key"] == f"{AVATAR}|{SLUG_TWICE}:{sha}"

    third = avatarops(home.root, *TWICE_ARGS, script=TWICE_SCRIPT, tmp=tmp_path)
    assert third.returncode == 0
    again = home.process()
    assert again.runs == []
    assert f"run key {AVATAR}|{SLUG_TWICE}:{sha} already launched" in " ".join(again.skipped)
    assert len(runs_for(home.instance, cell(AVATAR, SLUG_TWICE))) == 1
    counts = materialization_counts(home.instance)
    assert [counts[(stage, cell(AVATAR, SLUG_TWICE))] for stage in VIDEO_STAGES] == [1] * 9


@pytest.mark.slow
def test_changed_request_rerenders_that_cell_only(studio, submitted_twice, tmp_path):
    home, slug = studio, SLUG_TWICE
    folder = package_dir(home, AVATAR, slug)
    assert (folder / "video_1x1.mp4").exists()
    old_captions = (folder / "captions.srt").read_text()

    before = materialization_counts(home.instance)
    changed = avatarops(home.root, "request", AVATAR, slug, "--aspect", "9:16",
                        script="A changed promo script, with new words.", tmp=tmp_path)
    assert changed.returncode == 0, changed.stderr
    raw = request_file(home.root, AVATAR, slug).read_bytes()
    report = home.process()
    assert report.ok, report.as_dict()
    assert [(r.origin, r.partition) for r in report.runs] == [("output_request_sensor", cell(AVATAR, slug))]

    after = materialization_counts(home.instance)
    grown = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    assert grown == {(stage, cell(AVATAR, slug)): 1 for stage in VIDEO_STAGES}  # nothing of any other cell

    manifest = RightsManifest.model_validate_json((folder / "rights_manifest.json").read_text())
    assert manifest.request_sha256 == hashlib.sha256(raw).hexdigest()
    new_captions = (folder / "captions.srt").read_text()
    assert new_captions != old_captions and "changed promo script" in new_captions
    # The 1:1 rendition is no longer asked for: it is gone from the manifest and from the folder.
    assert set(manifest.outputs) == {"video_9x16.mp4", "poster.png", "captions.srt", "captions.vtt", "captions.ass"}
    assert {p.name for p in folder.iterdir()} == {*manifest.outputs, "rights_manifest.json"}
    assert check_verdicts(home.instance, cell(AVATAR, slug)) == dict.fromkeys(GATES, True)


# --------------------------------------------------------------------------- the tenant's render cap


@pytest.mark.slow
def test_a_render_beyond_the_tenant_s_cap_is_queued_until_one_in_flight_ends(studio, tmp_path):
    """`req-a` belongs to `demo-studio` (the sample's creator), capped at one render in flight. While a render of its other cell runs
    (on a worker: a started run in the instance), a new request waits as `queued` with the cap's reason, not
    an error; once that run ends, the next pass renders it. Operator avatars (no owner) are never capped."""
    import dagster as dg

    from avatar_assets.dagster_compat import PARTITION_NAME_TAG
    from avatar_assets.ops import render_cap, status

    home, slug = studio, "capped"
    assert avatarops(home.root, "quotas", "render-cap", "--tenant", "demo-studio", "--renders", "1").returncode == 0
    assert avatarops(home.root, "quotas", "render-cap", "--tenant", "demo-studio", "--renders", "0").returncode == 2
    listed = avatarops(home.root, "quotas", "list", "--tenant", "demo-studio").stdout
    assert "demo-studio renders in flight: at most 1 (own)" in listed
    elsewhere = dg.DagsterRun(job_name="render_video", run_id="f" * 36, status=dg.DagsterRunStatus.STARTED,
                              tags={PARTITION_NAME_TAG: cell(AVATAR, "elsewhere"), "avatar": AVATAR})
    home.instance.add_run(elsewhere)
    try:
        result = avatarops(home.root, "request", AVATAR, slug, script="Hello, I waited my turn.", tmp=tmp_path)
        assert result.returncode == 0, result.stderr
        sha = hashlib.sha256(request_file(home.root, AVATAR, slug).read_bytes()).hexdigest()
        assert home.process().runs == []
        reason = held_reason(home.root, AVATAR, slug)
        assert reason == ("tenant render cap: tenant 'demo-studio' has 1 renders in flight, its cap is 1; this render "
                          "starts when one of them finishes")
        assert status.render_status(home.instance, home.store, AVATAR, slug, sha)["state"] == "queued"
    finally:
        home.instance.report_run_canceled(home.instance.get_run_by_id(elsewhere.run_id))
    report = home.process()
    assert report.ok, report.as_dict()
    assert [(r.origin, r.partition) for r in report.runs] == [("output_request_sensor", cell(AVATAR, slug))]
    assert held_reason(home.root, AVATAR, slug) is None
    assert status.render_status(home.instance, home.store, AVATAR, slug, sha)["state"] == "done"
    assert render_cap.cap_of(home.store, "somebody-else") == 8  # the default, AVATAR_TENANT_RENDER_CAP
