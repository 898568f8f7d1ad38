"""The video QA gates catch the faults they name.

One real cell is rendered once (module scope); each test injects one fault into a copy of what that
render produced (its speech, its lip-sync track, its stitched/enhanced video, its package) and calls the
gate (the asset check function itself, invoked directly) or the rule behind it. The untouched originals
pass the same gates, so a test fails if a gate is blind to its fault or cries wolf on a good render.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from avatar_assets.checks.video import (
    enhanced_video_plays,
    mouth_follows_speech,
    package_complete,
    package_problems,
    speech_timing_and_level,
    stitched_video_plays,
)
from avatar_assets.contracts import RightsManifest
from avatar_assets.video import rules
from tests.video_helpers import FPS, decoded_frames, package_dir, record, submit, video_home

pytestmark = pytest.mark.slow  # every test inspects one real render, built once for the module (~45 s)

AVATAR, SLUG = "gate-a", "faults"
SCRIPT = "Hello there, welcome to our show. [pause 800ms] Enjoy the ride with us today."


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, sample_bundle):
    with video_home(tmp_path_factory.mktemp("gates") / "home", sample_bundle, (AVATAR,)) as home:
        submit(home, AVATAR, SLUG, SCRIPT, route="single_scene")
        report = home.process()
        assert report.ok, report.as_dict()
        yield home


def rec(home, asset):
    return record(home, asset, AVATAR, SLUG)


def failed(result, *fragments: str) -> str:
    assert result.passed is False, result.description
    for fragment in fragments:
        assert fragment in result.description, (fragment, result.description)
    return result.description


# --------------------------------------------------------------------------- speech


def speech_audio(home):
    from avatar_assets.media.audio import load_wav

    audio = load_wav(home.store.read(rec(home, "speech").audio))
    return audio.samples, audio.sample_rate


def speech_with(home, samples, sr):
    """The cell's speech record re-measured on `samples` (what the speech asset would have recorded)."""
    from avatar_assets.media.audio import clipping_fraction, longest_silence_s

    return rec(home, "speech").model_copy(update={
        "duration_s": round(len(samples) / sr, 4),
        "longest_silence_s": round(longest_silence_s(samples, sr), 3),
        "clipping_fraction": clipping_fraction(samples),
    })


def test_speech_gate_passes_the_real_speech(rendered):
    speech = rec(rendered, "speech")
    samples, sr = speech_audio(rendered)
    assert speech_timing_and_level(speech_with(rendered, samples, sr)).passed
    assert speech_timing_and_level(speech).passed, speech_timing_and_level(speech).description


def test_speech_gate_catches_a_silence_over_2_s(rendered):
    speech = rec(rendered, "speech")
    samples, sr = speech_audio(rendered)
    # Stretch the 800 ms pause into a 2.6 s hole (room-tone free digital silence).
    gap = max(zip(speech.words, speech.words[1:]), key=lambda pair: pair[1].start_s - pair[0].end_s)
    cut = int((gap[0].end_s + gap[1].start_s) / 2 * sr)
    holed = np.concatenate([samples[:cut], np.zeros(int(1.8 * sr), np.float32), samples[cut:]])
    faulty = speech_with(rendered, holed, sr)
    assert faulty.longest_silence_s > 2.0
    description = failed(speech_timing_and_level(faulty), "silence of ", "(at most 2.0 s allowed)")
    assert "clipped" not in description and "speech lasts" not in description


def test_speech_gate_catches_clipped_speech(rendered):
    samples, sr = speech_audio(rendered)
    clipped = np.clip(samples * 25.0, -1.0, 1.0)
    faulty = speech_with(rendered, clipped, sr)
    description = failed(speech_timing_and_level(faulty), "of samples clipped")
    assert "silence" not in description


def test_speech_gate_catches_speech_far_too_long_for_its_words(rendered):
    samples, sr = speech_audio(rendered)
    dragged = np.concatenate([samples] * 3)  # three times the words' worth of time, no long pause
    faulty = speech_with(rendered, dragged, sr)
    failed(speech_timing_and_level(faulty), f"speech lasts {faulty.duration_s:.2f} s for {len(faulty.words)} words")
    assert rules.speech_problems(1.0, 30, 0.1, 0.0)[0].startswith("speech lasts 1.00 s for 30 words")  # far too short


# --------------------------------------------------------------------------- lip sync


def lip_sync_with(home, controls: np.ndarray, tmp: Path):
    """Render the cell's talking head driven by `controls`, encode it, and measure it as the asset does."""
    from avatar_assets.media.audio import load_wav
    from avatar_assets.media.talking_head import lip_sync_measurements, render_frames
    from avatar_assets.media.video import encode_frames, read_frames
    from avatar_assets.video.assets import scene_tracks

    scenes, speech, lip = rec(home, "scene_assets"), rec(home, "speech"), rec(home, "lip_sync")
    audio = load_wav(home.store.read(speech.audio))
    path = tmp / "lip.mp4"
    tracks = scene_tracks(home.store, scenes)
    encode_frames(render_frames(tracks, controls, lip.fps), fps=lip.fps,
                  size=tuple(scenes.layer_size), audio=(audio.samples, audio.sample_rate), path=path)
    lag, silence, speaking = lip_sync_measurements(read_frames(path), tracks, speech.words, audio.samples,
                                                   audio.sample_rate, lip.fps, lip.frames)
    return lip.model_copy(update={"lag_frames": lag, "motion_in_silence": silence, "motion_in_speech": speaking})


def real_controls(home) -> np.ndarray:
    """The per-frame face controls the lip-sync asset rendered with: (frames, 8), the jaw in column JAW."""
    controls = np.load(home.store.local_path(rec(home, "lip_sync").openness))
    assert controls.ndim == 2
    return controls


def test_lip_sync_gate_passes_the_real_track(rendered, tmp_path):
    lip = rec(rendered, "lip_sync")
    assert mouth_follows_speech(lip).passed, mouth_follows_speech(lip).description
    remeasured = lip_sync_with(rendered, real_controls(rendered), tmp_path)
    assert remeasured.lag_frames == 0
    assert mouth_follows_speech(remeasured).passed, mouth_follows_speech(remeasured).description


def test_lip_sync_gate_catches_a_mouth_4_frames_late(rendered, tmp_path):
    controls = real_controls(rendered)
    pad = np.zeros((4, controls.shape[1]), np.float32)
    late = np.concatenate([pad, controls[:-4]])
    faulty = lip_sync_with(rendered, late, tmp_path)
    assert faulty.lag_frames == 4
    failed(mouth_follows_speech(faulty), "mouth motion lags the audio by 4 frames (at most 2)")
    early = lip_sync_with(rendered, np.concatenate([controls[4:], pad]), tmp_path)
    assert early.lag_frames == -4
    failed(mouth_follows_speech(early), "lags the audio by -4 frames")


def test_lip_sync_gate_catches_a_mouth_moving_in_silence(rendered, tmp_path):
    from avatar_assets.media.face_motion import JAW

    speech = rec(rendered, "speech")
    controls = real_controls(rendered)
    centres = (np.arange(len(controls)) + 0.5) / FPS
    near_words = np.zeros(len(controls), bool)
    for word in speech.words:
        near_words |= (centres >= word.start_s - 0.1) & (centres < word.end_s + 0.1)
    assert (~near_words).sum() >= 10 and (controls[~near_words, JAW] == 0).all()
    chatter = controls.copy()
    chatter[~near_words, JAW] = 0.35 + 0.35 * np.sin(np.arange((~near_words).sum()) * 1.3)  # mumbling in the pauses
    faulty = lip_sync_with(rendered, chatter, tmp_path)
    failed(mouth_follows_speech(faulty), "mouth moves during silences")


def test_lip_sync_gate_catches_a_mouth_that_never_moves(rendered, tmp_path):
    faulty = lip_sync_with(rendered, np.zeros_like(real_controls(rendered)), tmp_path)
    assert failed(mouth_follows_speech(faulty), "mouth barely moves while speaking (").count(";") == 0



# --------------------------------------------------------------------------- stitched and enhanced video


def video_variant(home, stage: str, tmp: Path, *, frames=None, audio="same", size=None, gain: float = 1.0):
    """Re-encode the cell's `stage` video with a fault and return its record re-measured as the asset does."""
    from avatar_assets.contracts import VideoQAModel
    from avatar_assets.media.video import encode_frames, read_audio
    from avatar_assets.media.video_qa import analyse_video

    original = rec(home, stage)
    source = home.store.local_path(original.video)
    pictures = decoded_frames(source) if frames is None else frames
    if size is not None:
        import cv2

        pictures = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in pictures])
    sound = None if audio is None else ((read_audio(source, sr=48000) * gain).astype(np.float32), 48000)
    path = tmp / f"{stage}-variant.mp4"
    # Lossless (x264 at CRF 0): repeated or black frames decode exactly as they were written, so what the gate
    # measures is the fault itself, not how the encoder refines the first frames of a still run.
    encode_frames(pictures, fps=original.expected_fps, size=(pictures.shape[2], pictures.shape[1]), audio=sound,
                  path=path, crf=0)
    measured = analyse_video(path, expected_fps=original.expected_fps, expected_size=tuple(original.expected_size))
    qa_model = VideoQAModel.model_validate(measured, from_attributes=True)
    first, *others = original.renditions
    return original.model_copy(update={"renditions": [first.model_copy(update={"qa": qa_model}), *others]})


def test_video_gates_pass_the_real_videos(rendered, tmp_path):
    for stage, gate in [("stitched_video", stitched_video_plays), ("enhanced_video", enhanced_video_plays)]:
        assert gate(rec(rendered, stage)).passed, gate(rec(rendered, stage)).description
    reencoded = video_variant(rendered, "enhanced_video", tmp_path)
    assert enhanced_video_plays(reencoded).passed, enhanced_video_plays(reencoded).description


def test_video_gate_catches_a_black_run_of_1_5_s(rendered, tmp_path):
    frames = decoded_frames(rendered.store.local_path(rec(rendered, "stitched_video").video))
    frames[5:5 + round(1.5 * FPS) + 1] = 0  # 38 frames: 1.52 s
    faulty = video_variant(rendered, "stitched_video", tmp_path, frames=frames)
    assert faulty.qa.longest_black_s == pytest.approx(1.52, abs=0.05)
    failed(stitched_video_plays(faulty), f"black for {faulty.qa.longest_black_s:.2f} s (at most 1.0 s)")


def test_video_gate_catches_a_frozen_run_of_1_5_s(rendered, tmp_path):
    frames = decoded_frames(rendered.store.local_path(rec(rendered, "stitched_video").video))
    start = 10
    frames[start:start + round(1.5 * FPS) + 1] = frames[start]  # 38 identical frames: 1.52 s
    faulty = video_variant(rendered, "stitched_video", tmp_path, frames=frames)
    # The variant is lossless, so the 38 repeats measure as such; a neighbouring frame in which nothing moves yet
    # (the idle motion and the captions' steps are small) may join them.
    assert round(faulty.qa.longest_frozen_s * FPS) in (38, 39), faulty.qa.longest_frozen_s
    description = failed(stitched_video_plays(faulty), f"frozen for {faulty.qa.longest_frozen_s:.2f} s (at most 1.0 s)")
    assert "black" not in description


def test_video_gate_catches_missing_audio(rendered, tmp_path):
    faulty = video_variant(rendered, "enhanced_video", tmp_path, audio=None)
    assert faulty.qa.has_audio is False
    failed(enhanced_video_plays(faulty), "no audio track")


def test_video_gate_catches_the_wrong_size(rendered, tmp_path):
    faulty = video_variant(rendered, "stitched_video", tmp_path, size=(256, 448))
    failed(stitched_video_plays(faulty), "size 256x448, expected 240x426")


def test_enhanced_gate_catches_the_wrong_loudness(rendered, tmp_path):
    quiet = video_variant(rendered, "enhanced_video", tmp_path, gain=0.1)  # -20 dB
    assert quiet.qa.loudness_lufs == pytest.approx(-36.0, abs=1.5)
    failed(enhanced_video_plays(quiet), f"loudness {quiet.qa.loudness_lufs:.1f} LUFS, expected -17.0 to -15.0 LUFS")
    # The stitched gate's wider window still refuses a whisper.
    whisper = video_variant(rendered, "stitched_video", tmp_path, gain=0.02)
    failed(stitched_video_plays(whisper), "expected -32.0 to -8.0 LUFS")


def test_video_gate_catches_video_shorter_than_its_speech(rendered, tmp_path):
    frames = decoded_frames(rendered.store.local_path(rec(rendered, "stitched_video").video))[:-6]
    faulty = video_variant(rendered, "stitched_video", tmp_path, frames=frames)
    failed(stitched_video_plays(faulty), "video lasts", "(more than 1 frame apart)")


# --------------------------------------------------------------------------- the package


@pytest.fixture
def package(rendered):
    """The cell's package record; every file of its folder is restored after the test."""
    folder = package_dir(rendered, AVATAR, SLUG)
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    yield rec(rendered, "output_package")
    for path in folder.iterdir():
        if path.name not in saved:
            path.unlink()
    for name, data in saved.items():
        (folder / name).write_bytes(data)


def test_package_gate_passes_the_real_package(rendered, package):
    assert package_problems(rendered.store, package) == ([], {"9:16": "240x426"})
    # The sizes are judged against what was rendered (the storyboard's renditions), not against today's
    # AVATAR_MASTER_SHORT_SIDE, which a later package-only refresh may see changed.
    assert package.short_side == min(rec(rendered, "enhanced_video").expected_size) == 240
    assert package_complete(package, rendered.store).passed


def test_package_gate_catches_a_tampered_delivered_file(rendered, package):
    folder = package_dir(rendered, AVATAR, SLUG)
    (folder / "captions.srt").write_text((folder / "captions.srt").read_text().replace("Hello", "Goodbye"))
    problems, _ = package_problems(rendered.store, package)
    assert problems == ["package file captions.srt does not match its rights-manifest hash (modified after packaging)"]
    failed(package_complete(package, rendered.store), "captions.srt does not match its rights-manifest hash")


def test_package_gate_catches_a_tampered_delivered_video(rendered, package):
    video = package_dir(rendered, AVATAR, SLUG) / "video_9x16.mp4"
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF
    video.write_bytes(bytes(data))
    problems, _ = package_problems(rendered.store, package)
    assert "package file video_9x16.mp4 does not match its rights-manifest hash (modified after packaging)" in problems


def test_package_gate_catches_a_missing_or_extra_delivered_file(rendered, package):
    folder = package_dir(rendered, AVATAR, SLUG)
    (folder / "poster.png").unlink()
    (folder / "video_16x9.mp4").write_bytes(b"left over from an older request")
    problems, _ = package_problems(rendered.store, package)
    assert "package folder is missing poster.png" in problems
    assert "package folder holds files the rights manifest does not list: video_16x9.mp4" in problems


def test_package_gate_catches_a_tampered_manifest_hash(rendered, package):
    store = rendered.store
    manifest = RightsManifest.model_validate_json(store.read(package.rights_manifest))
    forged = manifest.model_copy(update={"outputs": {**manifest.outputs, "poster.png": "0" * 64}})
    forged_ref = store.put_bytes(forged.model_dump_json(indent=2).encode(), "json", "application/json")
    problems, _ = package_problems(store, package.model_copy(update={"rights_manifest": forged_ref}))
    assert "rights manifest hash for poster.png does not match the file" in problems
    assert "rights_manifest.json in the package folder differs from the recorded rights manifest" in problems


def test_package_gate_catches_an_edited_delivered_manifest(rendered, package):
    path = package_dir(rendered, AVATAR, SLUG) / "rights_manifest.json"
    document = json.loads(path.read_text())
    document["consent"]["scopes"] = ["likeness", "voice", "everything"]
    path.write_text(json.dumps(document, indent=2))
    problems, _ = package_problems(rendered.store, package)
    assert problems == ["rights_manifest.json in the package folder differs from the recorded rights manifest"]


def test_package_gate_catches_a_manifest_that_does_not_validate(rendered, package):
    store = rendered.store
    broken = store.put_bytes(json.dumps({"avatar_id": AVATAR, "slug": SLUG}).encode(), "json", "application/json")
    problems, _ = package_problems(store, package.model_copy(update={"rights_manifest": broken}))
    assert any(p.startswith("rights manifest does not validate:") and "consent" in p for p in problems), problems


def rendition_variant(home, package, tmp: Path, *ffmpeg_args: str, name: str):
    """The package record with its 9:16 rendition replaced by the enhanced video re-encoded with `ffmpeg_args`."""
    from avatar_assets.media.video import FFMPEG

    source = home.store.local_path(rec(home, "enhanced_video").video)
    path = tmp / name
    subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-t", "1", *ffmpeg_args,
                    str(path)], check=True)
    ref = home.store.put_file(path, "mp4", "video/mp4")
    [rendition] = package.renditions
    return package.model_copy(update={"renditions": [rendition.model_copy(update={"video": ref})]})


def test_package_gate_catches_a_rendition_of_the_wrong_size(rendered, package, tmp_path):
    faulty = rendition_variant(rendered, package, tmp_path, "-vf", "scale=240:422", "-c:v", "libx264", "-preset", "ultrafast",
                               "-c:a", "aac", name="small.mp4")
    problems, sizes = package_problems(rendered.store, faulty)
    assert sizes == {"9:16": "240x422"}
    assert "9:16 is 240x422, not 240x426" in problems


def test_package_gate_catches_a_rendition_that_is_not_h264_aac(rendered, package, tmp_path):
    faulty = rendition_variant(rendered, package, tmp_path, "-vf", "scale=240:426", "-c:v", "mpeg4", "-c:a", "mp3",
                               name="mpeg4.mp4")
    problems, _ = package_problems(rendered.store, faulty)
    assert "9:16 is mpeg4/mp3, not h264/aac" in problems
    silent = rendition_variant(rendered, package, tmp_path, "-vf", "scale=240:426", "-c:v", "libx264", "-preset", "ultrafast",
                               "-an", name="silent.mp4")
    assert "9:16 is h264/None, not h264/aac" in package_problems(rendered.store, silent)[0]


def test_package_gate_catches_a_tampered_stored_rendition(rendered, package, tmp_path):
    blob = rendered.store.local_path(package.renditions[0].video)
    backup = tmp_path / "blob"
    shutil.copyfile(blob, backup)
    try:
        with open(blob, "r+b") as handle:
            handle.seek(blob.stat().st_size // 2)
            byte = handle.read(1)
            handle.seek(-1, 1)
            handle.write(bytes([byte[0] ^ 0xFF]))
        problems, _ = package_problems(rendered.store, package)
        assert "9:16 file hash does not match the record" in problems
    finally:
        shutil.copyfile(backup, blob)
    assert package_problems(rendered.store, package)[0] == []
