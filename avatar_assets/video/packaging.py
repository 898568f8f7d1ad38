"""The delivered package of one cell: an MP4 per platform size, a poster, captions (SRT, WebVTT and the styled
ASS that was burned in) and the rights manifest.

The files are copied under stable names into `packages/<avatar>/<slug>/` of the media store, so a person
or an upload finds the finished video in one folder; the manifest accounts for every stage and the
consent it was made under.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from avatar_assets.contracts import (
    PLATFORM_ASPECT,
    BackgroundsRecord,
    IdentityBundleRecord,
    LipSyncRecord,
    OutputPackageRecord,
    Rendition,
    RightsManifest,
    SceneAssetsRecord,
    ScriptRecord,
    SourceUploadRecord,
    SpeechRecord,
    StageProvenance,
    StoryboardRecord,
    VideoRecord,
)
from avatar_assets.media.images import decode_image, encode_png
from avatar_assets.media.video import poster_frame
from resources.layout import package_folder
from resources.media_store import MediaStore


@dataclass(frozen=True)
class PackageSources:
    """The records a package is made from: the video it delivers and every stage its manifest accounts for."""

    script: ScriptRecord
    storyboard: StoryboardRecord
    speech: SpeechRecord
    backgrounds: BackgroundsRecord
    scene_assets: SceneAssetsRecord
    lip_sync: LipSyncRecord
    stitched_video: VideoRecord
    enhanced_video: VideoRecord
    source_upload: SourceUploadRecord
    identity_bundle: IdentityBundleRecord


def build_package(
    store: MediaStore, sources: PackageSources, log
) -> tuple[OutputPackageRecord, np.ndarray]:
    """The package record and its poster frame. A re-render that drops a file (the request changed)
    does not leave the old one in the folder."""
    script, speech = sources.script, sources.speech
    folder = package_folder(script.avatar_id, script.slug)
    renditions = _renditions(store, script, sources.enhanced_video, folder, log)
    first = sources.enhanced_video.renditions[0]
    if first.poster is not None:  # decoded once by stitched_video, whose pictures enhanced_video copies
        poster, poster_rgb = first.poster, decode_image(store.read(first.poster))
    else:
        poster_rgb = poster_frame(store.local_path(first.video), first.qa.duration_s / 3)
        poster = store.put_bytes(encode_png(poster_rgb), "png", "image/png")
    store.copy_to(poster, f"{folder}/poster.png")
    store.copy_to(speech.captions_srt, f"{folder}/captions.srt")
    store.copy_to(speech.captions_vtt, f"{folder}/captions.vtt")
    captions_ass = sources.stitched_video.captions_ass
    if captions_ass is None:
        raise ValueError("the stitched video names no captions.ass: re-materialize stitched_video")
    store.copy_to(captions_ass, f"{folder}/captions.ass")
    outputs = {
        **{_rendition_name(r.aspect_ratio): r.video.sha256 for r in renditions},
        "poster.png": poster.sha256,
        "captions.srt": speech.captions_srt.sha256,
        "captions.vtt": speech.captions_vtt.sha256,
        "captions.ass": captions_ass.sha256,
    }
    manifest = rights_manifest(sources, outputs)
    manifest_ref = store.put_bytes(manifest.model_dump_json(indent=2).encode(), "json", "application/json")
    store.copy_to(manifest_ref, f"{folder}/rights_manifest.json")
    keep = {f"{folder}/{name}" for name in [*manifest.outputs, "rights_manifest.json"]}
    for stale in [key for key in store.list_keys(f"{folder}/") if key not in keep]:
        log.info(f"removing {stale}: no longer part of the package")
        store.delete_key(stale)
    record = OutputPackageRecord(
        avatar_id=script.avatar_id, slug=script.slug, renditions=renditions, poster=poster,
        captions_srt=speech.captions_srt, captions_vtt=speech.captions_vtt, captions_ass=captions_ass, rights_manifest=manifest_ref,
        folder=folder, short_side=min(sources.enhanced_video.expected_size),  # what was rendered, not today's setting
    )
    return record, poster_rgb


def _rendition_name(aspect: str) -> str:
    return f"video_{aspect.replace(':', 'x')}.mp4"


def _renditions(store: MediaStore, script: ScriptRecord, enhanced: VideoRecord, folder: str, log) -> list[Rendition]:
    """One MP4 per requested aspect ratio, each composed natively for its own frame by stitched_video and
    levelled by enhanced_video: delivered as they are, never transcoded (so each keeps its own watermark)."""
    request = script.request
    renditions = []
    for aspect in request.renditions():
        made = enhanced.rendition(aspect)
        width, height = made.expected_size
        log.info(f"packaging {aspect} at {width}x{height}")
        store.copy_to(made.video, f"{folder}/{_rendition_name(aspect)}")
        platforms = [p for p in request.platforms if PLATFORM_ASPECT[p] == aspect]
        renditions.append(Rendition(aspect_ratio=aspect, platforms=platforms, width=width, height=height, video=made.video))
    return renditions


def rights_manifest(sources: PackageSources, outputs: dict[str, str]) -> RightsManifest:
    """What the video was made from (the upload's files, the request), under which consent, by which
    providers and prompts at every stage, and the hash of every delivered file."""
    s = sources
    upload = s.source_upload
    return RightsManifest(
        avatar_id=s.script.avatar_id,
        slug=s.script.slug,
        created_at=datetime.now(UTC),
        creator_id=upload.manifest.creator_id,
        consent=s.identity_bundle.consent,
        source_bundle_sha256=upload.bundle_sha256,
        source_files={p.path: p.original.sha256 for p in upload.photos}
        | ({upload.voice.path: upload.voice.original.sha256} if upload.voice else {}),
        request_sha256=s.script.request_sha256,
        stages=[
            *[StageProvenance(asset=part.asset, record_sha256=part.record_hash, providers=part.providers)
              for part in s.identity_bundle.parts],
            StageProvenance(asset="script", record_sha256=s.script.content_hash(), providers=[]),
            StageProvenance(asset="storyboard", record_sha256=s.storyboard.content_hash(), providers=[],
                            prompts=[scene.background_prompt for scene in s.storyboard.scenes]),
            StageProvenance(asset="speech", record_sha256=s.speech.content_hash(), providers=[s.speech.provider]),
            StageProvenance(asset="backgrounds", record_sha256=s.backgrounds.content_hash(),
                            providers=[s.backgrounds.provider], prompts=s.backgrounds.prompts),
            StageProvenance(asset="scene_assets", record_sha256=s.scene_assets.content_hash(), providers=[]),
            StageProvenance(asset="lip_sync", record_sha256=s.lip_sync.content_hash(), providers=[s.lip_sync.provider]),
            StageProvenance(asset="stitched_video", record_sha256=s.stitched_video.content_hash(),
                            providers=[s.stitched_video.provider]),
            StageProvenance(asset="enhanced_video", record_sha256=s.enhanced_video.content_hash(),
                            providers=[s.enhanced_video.provider]),
        ],
        outputs=outputs,
    )
