"""`avatarops demo`: the bundled sample avatar from upload to finished artifacts.

The photo is NASA's public-domain portrait of astronaut Eileen Collins (as shipped by scikit-image as
`astronaut`). The voice sample is synthesised here with espeak-ng: no recording of a person is bundled.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

import dagster as dg
import numpy as np

from avatar_assets import settings
from resources.media_store import MediaStore

DEMO_AVATAR = "astronaut"
VOICE_TEXT = (
    "Hello, and welcome aboard. I am the demo avatar of this platform. "
    "My photo is a public domain portrait, and this voice was synthesised for the demo, "
    "so nobody's real voice is cloned here. Every picture and sound you will see is built "
    "step by step as a Dagster asset, checked by quality gates, and packaged with its rights."
)
DEMO_SLUG = "welcome"
DEMO_SCRIPT = (
    "Hi! I'm the demo avatar, built from one public domain photo and a synthetic voice. "
    "Everything you see was made step by step, as Dagster assets with quality gates. [pause 400ms] "
    "First my identity, then this video: a script, a storyboard, speech, backgrounds and lip sync. "
    "Finally it is stitched, *enhanced*, and packaged for every platform, with a rights manifest."
)
CONSENT_TEXT = (
    "Demo consent record: the portrait is a public-domain NASA photograph; the voice is synthetic. "
    "Scopes granted for demonstration: likeness, voice.\n"
)


def build_sample_bundle(target: Path, avatar_id: str = DEMO_AVATAR) -> Path:
    from avatar_assets.media.audio import encode_wav
    from avatar_assets.media.tts import synthesize

    if target.exists():
        shutil.rmtree(target)
    (target / "photos").mkdir(parents=True)
    (target / "voice").mkdir()
    photo = files("avatar_assets") / "samples" / "astronaut.jpg"
    (target / "photos" / "portrait.jpg").write_bytes(photo.read_bytes())
    speech = synthesize(VOICE_TEXT, voice="en-us", rate_wpm=150, pitch=45)
    room_tone = np.random.default_rng(7).normal(0, 10 ** (-55 / 20), speech.samples.shape).astype(np.float32)
    (target / "voice" / "sample.wav").write_bytes(encode_wav(speech.samples + room_tone, speech.sample_rate))
    (target / "consent.txt").write_text(CONSENT_TEXT)
    manifest = {
        "avatar_id": avatar_id,
        "creator_id": "demo-studio",
        "photos": ["photos/portrait.jpg"],
        "voice_sample": "voice/sample.wav",
        "consent": {
            "subject": "Demo avatar (public-domain portrait, synthetic voice)",
            "granted_by": "demo-studio",
            "granted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "scopes": ["likeness", "voice"],
            "evidence_sha256": hashlib.sha256(CONSENT_TEXT.encode()).hexdigest(),
        },
        "style": {"preset": "natural", "notes": "bundled demo"},
        "target_platforms": ["tiktok", "youtube", "instagram_feed"],
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return target


def run_demo(instance: dg.DagsterInstance, defs: dg.Definitions, store: MediaStore, echo=print) -> int:
    from avatar_assets.contracts import CaptionStyle, OutputRequest
    from avatar_assets.ops.runner import process
    from avatar_assets.ops.uploads import upload_bundle
    from avatar_assets.video.requests import write_request
    from partitions import cell_key
    from resources.layout import record_key
    from resources.records import read_record

    sample = build_sample_bundle(settings.avatar_home() / "samples" / DEMO_AVATAR)
    echo(f"sample bundle: {sample}")
    echo(f"uploaded to {upload_bundle(store, sample)}")
    write_request(
        store,
        OutputRequest(
            avatar_id=DEMO_AVATAR,
            slug=DEMO_SLUG,
            route="multi_scene",
            script=DEMO_SCRIPT,
            background_prompts=["soft studio backdrop", "city at dusk", "calm ocean sunset"],
            platforms=["tiktok", "instagram_feed", "youtube"],
            captions=CaptionStyle(preset="karaoke"),
        ),
    )
    echo(f"requested a multi_scene video: {DEMO_AVATAR}/{DEMO_SLUG}")
    report = process(defs, instance, echo=echo)
    for run in report.runs:
        for reason in [*run.failed_checks, *([run.error] if run.error else [])]:
            echo(f"  problem in {run.job} [{run.partition}]: {reason}")
    neutral = read_record(store, "neutral_image", DEMO_AVATAR)
    sheet = read_record(store, "character_sheet", DEMO_AVATAR)
    voice = read_record(store, "voice_profile", DEMO_AVATAR)
    package = read_record(store, "output_package", cell_key(DEMO_AVATAR, DEMO_SLUG))
    if not report.ok or None in (neutral, sheet, voice, package):
        echo("demo did not finish: see the problems above, or `avatarops status`")
        return 1
    folder = store.local_path(package.folder)
    echo("")
    echo(f"neutral image:   {store.local_path(neutral.image)}")
    echo(f"character sheet: {store.local_path(sheet.sheet)}")
    echo(f"voice profile:   {store.local_path(record_key('voice_profile', DEMO_AVATAR))}")
    for rendition in package.renditions:
        echo(f"video {rendition.aspect_ratio:5}:   {folder / ('video_' + rendition.aspect_ratio.replace(':', 'x') + '.mp4')}")
    echo(f"captions:        {folder / 'captions.ass'} (karaoke style, burned in), .srt, .vtt")
    echo(f"rights manifest: {folder / 'rights_manifest.json'}")
    echo("open the Dagster UI on these runs with: make dev")
    return 0
