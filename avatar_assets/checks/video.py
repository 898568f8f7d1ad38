"""Video QA gates, one cell at a time: speech, lip sync, the rendered videos and the package."""

import json

import dagster as dg

from avatar_assets.checks.gates import partitioned_gate
from avatar_assets.contracts import (
    LipSyncRecord,
    OutputPackageRecord,
    RightsManifest,
    SceneAssetsRecord,
    SpeechRecord,
    VideoRecord,
    rendition_size,
)
from avatar_assets.video import rules
from avatar_assets.video.assets import enhanced_video, lip_sync, output_package, speech, stitched_video
from partitions import video_cells
from resources.media_store import MediaStore, sha256_bytes, sha256_file

ERROR = dg.AssetCheckSeverity.ERROR


def cell_gate(asset, description: str):
    return partitioned_gate(asset, description, video_cells)


def verdict(problems: list[str], ok: str, metadata: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not problems,
        severity=ERROR,
        description="; ".join(problems) or ok,
        metadata={**metadata, "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")},
    )


@cell_gate(speech, "Duration 0.5-2x of the words at 150 wpm, no silence over 2 s, not clipped.")
def speech_timing_and_level(speech: SpeechRecord) -> dg.AssetCheckResult:
    problems = rules.speech_problems(speech.duration_s, len(speech.words), speech.longest_silence_s, speech.clipping_fraction)
    return verdict(
        problems,
        "speech duration, pauses and level are in range",
        {
            "duration_s": speech.duration_s,
            "words": len(speech.words),
            "expected_s": len(speech.words) / rules.SPEECH_WPM * 60,
            "longest_silence_s": speech.longest_silence_s,
            "clipping_fraction": speech.clipping_fraction,
        },
    )


@cell_gate(lip_sync, "Mouth motion follows the audio within 2 frames and is still in silences.")
def mouth_follows_speech(lip_sync: LipSyncRecord) -> dg.AssetCheckResult:
    problems = rules.lip_sync_problems(lip_sync.lag_frames, lip_sync.motion_in_silence, lip_sync.motion_in_speech)
    return verdict(
        problems,
        "mouth follows the speech",
        {
            "lag_frames": lip_sync.lag_frames,
            "motion_in_silence": lip_sync.motion_in_silence,
            "motion_in_speech": lip_sync.motion_in_speech,
            "awaiting_approval": lip_sync.awaiting_approval,
        },
    )


@partitioned_gate(
    lip_sync,
    "Every avatar scene of the rendered face track still shows the uploaded person: dlib face-embedding distance "
    "of the scene's middle frame to the identity bundle's face embedding at most AVATAR_IDENTITY_MAX_DISTANCE (0.6).",
    video_cells,
    name="scene_identity_consistency",
    additional_ins={"scene_assets": dg.AssetIn("scene_assets")},
)
def scene_identity_consistency(lip_sync: LipSyncRecord, scene_assets: SceneAssetsRecord, store: MediaStore) -> dg.AssetCheckResult:
    from avatar_assets.checks.consistency import max_distance
    from avatar_assets.media.landmarks import face_distance, face_embedding, find_landmarks
    from avatar_assets.media.video import poster_frame
    from resources.records import read_record

    bundle = read_record(store, "identity_bundle", lip_sync.avatar_id)
    limit = max_distance()
    if bundle is None or bundle.face_embedding is None:
        return verdict([], "not measured: the identity bundle holds no face embedding (landmark model missing)",
                       {"measured_scenes": 0, "max_face_distance": limit})
    path = store.local_path(lip_sync.video)
    problems, distances, rows = [], [], []
    for scene in scene_assets.scenes:
        if scene.face_box is None:
            rows.append(f"| {scene.index} | {scene.shot} | b-roll | - |")
            continue
        frame = poster_frame(path, (scene.start_s + scene.end_s) / 2)
        distance = face_distance(face_embedding(frame, find_landmarks(frame, tuple(scene.face_box))), bundle.face_embedding)
        distances.append(distance)
        rows.append(f"| {scene.index} | {scene.shot} | {scene.variant} | {distance:.3f} |")
        if distance > limit:
            problems.append(f"scene {scene.index} ({scene.shot}, {scene.variant}): face distance {distance:.3f} above {limit:.2f}")
    return verdict(
        problems,
        f"{len(distances)} avatar scene(s) show the uploaded person",
        {
            "measured_scenes": len(distances),
            "face_distance": max(distances) if distances else float("nan"),
            "max_face_distance": limit,
            "scenes": dg.MetadataValue.md("| scene | shot | variant | face distance |\n|---|---|---|---|\n" + "\n".join(rows)),
        },
    )


def video_verdict(record: VideoRecord, loudness: tuple[float, float]) -> dg.AssetCheckResult:
    """Every rendition on its own: each is a separately composed and encoded video."""
    problems = [
        problem if len(record.renditions) == 1 else f"{rendition.aspect_ratio}: {problem}"
        for rendition in record.renditions
        for problem in rules.video_problems(
            rendition.qa, expected_size=rendition.expected_size, expected_fps=record.expected_fps,
            audio_duration_s=record.audio_duration_s, loudness=loudness,
        )
    ]
    metadata = {**record.qa.model_dump(), "renditions": len(record.renditions)}
    for rendition in record.renditions[1:]:
        metadata |= {f"{rendition.aspect_ratio} {name}": value for name, value in rendition.qa.model_dump().items()}
    return verdict(problems, f"{record.stage} decodes fully and is in range ({len(record.renditions)} renditions)",
                   metadata)


@cell_gate(stitched_video, "Decodes fully; duration = audio +-1 frame; fps and size; no black/frozen run over 1 s; audio.")
def stitched_video_plays(stitched_video: VideoRecord) -> dg.AssetCheckResult:
    return video_verdict(stitched_video, rules.STITCHED_LOUDNESS)


@cell_gate(enhanced_video, "As the stitched gate, and loudness at -16 LUFS +-1.")
def enhanced_video_plays(enhanced_video: VideoRecord) -> dg.AssetCheckResult:
    target = (rules.TARGET_LUFS - rules.LOUDNESS_TOLERANCE, rules.TARGET_LUFS + rules.LOUDNESS_TOLERANCE)
    return video_verdict(enhanced_video, target)


def package_problems(store: MediaStore, package: OutputPackageRecord) -> tuple[list[str], dict]:
    from avatar_assets.media.video import probe

    problems, sizes = [], {}
    for rendition in package.renditions:
        if not store.exists(rendition.video):
            problems.append(f"{rendition.aspect_ratio} rendition is missing")
            continue
        path = store.local_path(rendition.video)
        info = probe(path)
        sizes[rendition.aspect_ratio] = f"{info.width}x{info.height}"
        width, height = rendition_size(rendition.aspect_ratio, package.short_side)
        if (info.width, info.height) != (width, height) or (rendition.width, rendition.height) != (width, height):
            problems.append(f"{rendition.aspect_ratio} is {info.width}x{info.height}, not {width}x{height}")
        if info.video_codec != "h264" or info.audio_codec != "aac":
            problems.append(f"{rendition.aspect_ratio} is {info.video_codec}/{info.audio_codec}, not h264/aac")
        if sha256_file(path) != rendition.video.sha256:
            problems.append(f"{rendition.aspect_ratio} file hash does not match the record")
    try:
        manifest = RightsManifest.model_validate(json.loads(store.read(package.rights_manifest)))
    except Exception as error:  # any parse or validation failure is the finding
        return [*problems, f"rights manifest does not validate: {error}"], sizes
    files = {f"video_{r.aspect_ratio.replace(':', 'x')}.mp4": r.video for r in package.renditions}
    files |= {"poster.png": package.poster, "captions.srt": package.captions_srt, "captions.vtt": package.captions_vtt}
    for name, ref in files.items():
        if manifest.outputs.get(name) != ref.sha256:
            problems.append(f"rights manifest hash for {name} does not match the file")
        elif store.exists(ref) and sha256_file(store.local_path(ref)) != ref.sha256:
            problems.append(f"{name} content does not match its hash")
    return problems + delivered_folder_problems(store, package, manifest), sizes


def delivered_folder_problems(store: MediaStore, package: OutputPackageRecord, manifest: RightsManifest) -> list[str]:
    """The package folder is what is delivered: each file there must be the one the manifest hashes,
    its rights_manifest.json the recorded one, and nothing else may lie in it."""
    problems = []
    folder = package.folder
    for name, sha in manifest.outputs.items():
        key = f"{folder}/{name}"
        if not store.exists(key):
            problems.append(f"package folder is missing {name}")
        elif sha256_bytes(store.read(key)) != sha:  # read, not local_path: folder keys are mutable
            problems.append(f"package file {name} does not match its rights-manifest hash (modified after packaging)")
    manifest_key = f"{folder}/rights_manifest.json"
    if not store.exists(manifest_key):
        problems.append("package folder is missing rights_manifest.json")
    elif store.read(manifest_key) != store.read(package.rights_manifest):
        problems.append("rights_manifest.json in the package folder differs from the recorded rights manifest")
    expected = {*manifest.outputs, "rights_manifest.json"}
    stray = sorted(k.removeprefix(f"{folder}/") for k in store.list_keys(f"{folder}/") if k.removeprefix(f"{folder}/") not in expected)
    if stray:
        problems.append(f"package folder holds files the rights manifest does not list: {', '.join(stray)}")
    return problems


@cell_gate(output_package, "Every bundle present at exact size, H.264/AAC; the rights manifest validates and its hashes match.")
def package_complete(output_package: OutputPackageRecord, store: MediaStore) -> dg.AssetCheckResult:
    problems, sizes = package_problems(store, output_package)
    return verdict(problems, "all renditions present; manifest hashes match", {"renditions": json.dumps(sizes)})


VIDEO_CHECKS = [
    speech_timing_and_level, mouth_follows_speech, scene_identity_consistency, stitched_video_plays,
    enhanced_video_plays, package_complete,
]
