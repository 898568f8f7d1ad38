"""All five routes render real short videos end to end, through `avatarops process`'s engine.

One module-scoped home: the sample avatar's identity is built once (upload sensor), then one request per
route is dropped into the inbox and a single `process` pass renders them all (request sensor -> runs).
The tests decode what was delivered: codecs, exact sizes, durations against the speech, burned-in
captions, the mouth following the speech, faces present or absent per scene, pose variants, the
approval stop, and the rights manifest against the files next to it.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from avatar_assets.contracts import RightsManifest, rendition_size
from avatar_assets.video.assets import VIDEO_STAGES
from tests.video_helpers import (
    FPS,
    SHORT_SIDE,
    audio_rms,
    cell,
    check_verdicts,
    crop,
    decoded_frames,
    frame_at,
    luma,
    materialization_counts,
    package_dir,
    record,
    run_messages,
    runs_for,
    sha256_path,
    submit,
    video_home,
)

pytestmark = pytest.mark.slow  # every test inspects the renders of one module-scoped pass (~60 s)

AVATAR = "astro-v"
TWO_SENTENCES = "Hello there, welcome to our show. This is a short test of the pipeline."
GREEN_KARAOKE = {"preset": "karaoke", "highlight_colour": "#00FF00"}
REQUESTS = {
    # route: (slug, script, extra request fields)
    "single_scene": ("solo", "Hello there, welcome to our show. [pause 800ms] Enjoy the ride.", {}),
    "multi_scene": ("multi", TWO_SENTENCES, {"platforms": ["instagram_feed"], "captions": GREEN_KARAOKE}),
    "broll": ("cutaway", TWO_SENTENCES, {}),
    "pose": ("poses", TWO_SENTENCES, {}),
    "approval_gated": ("gated", TWO_SENTENCES, {}),
}
DELIVERED = [route for route in REQUESTS if route != "approval_gated"]
# The multi_scene request again under another slug: identical speech, backgrounds and stitched bytes.
AGAIN = ("multi-again", TWO_SENTENCES, {"captions": GREEN_KARAOKE})


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, sample_bundle):
    with video_home(tmp_path_factory.mktemp("video") / "home", sample_bundle, (AVATAR,)) as home:
        requests = {
            route: submit(home, AVATAR, slug, script, route=route, **fields)
            for route, (slug, script, fields) in REQUESTS.items()
        }
        submit(home, AVATAR, AGAIN[0], AGAIN[1], route="multi_scene", **AGAIN[2])
        report = home.process()
        yield home, report, requests


def slug_of(route: str) -> str:
    return REQUESTS[route][0]


def test_one_pass_renders_one_run_per_request_and_every_gate_passes(rendered):
    home, report, _ = rendered
    assert report.ok, report.as_dict()
    assert sorted((r.origin, r.job, r.partition) for r in report.runs) == sorted(
        ("output_request_sensor", "render_video", cell(AVATAR, slug)) for slug in [*map(slug_of, REQUESTS), AGAIN[0]]
    )
    for route in DELIVERED:
        verdicts = check_verdicts(home.instance, cell(AVATAR, slug_of(route)))
        assert verdicts == {
            "speech_timing_and_level": True, "mouth_follows_speech": True, "scene_identity_consistency": True,
            "stitched_video_plays": True, "enhanced_video_plays": True, "package_complete": True,
        }, route
    counts = materialization_counts(home.instance)
    for route in DELIVERED:
        assert [counts[(stage, cell(AVATAR, slug_of(route)))] for stage in VIDEO_STAGES] == [1] * 9, route


@pytest.mark.parametrize("route", DELIVERED)
def test_package_renditions_are_h264_aac_at_exact_size_and_last_as_long_as_the_speech(rendered, route):
    from avatar_assets.media.video import probe, read_audio

    home, _, requests = rendered
    slug = slug_of(route)
    speech = record(home, "speech", AVATAR, slug)
    folder = package_dir(home, AVATAR, slug)
    expected = requests[route].renditions()
    assert expected == (["9:16", "1:1"] if route == "multi_scene" else ["9:16"])
    for aspect in expected:
        path = folder / f"video_{aspect.replace(':', 'x')}.mp4"
        info = probe(path)
        assert (info.width, info.height) == rendition_size(aspect, SHORT_SIDE)
        assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
        assert info.fps == pytest.approx(FPS)
        frames = sum(1 for _ in decoded_frames(path, size=(64, 64), gray=True))
        audio = read_audio(path, sr=48000)
        video_s, audio_s = frames / FPS, len(audio) / 48000
        assert abs(video_s - speech.duration_s) <= 1 / FPS + 1e-6, (route, aspect, video_s, speech.duration_s)
        assert abs(audio_s - speech.duration_s) <= 1 / FPS + 1e-6, (route, aspect, audio_s, speech.duration_s)
        assert audio_rms(audio, 48000, 0, audio_s) > 0.01  # the speech is in it, not silence


def test_every_rendition_is_rendered_natively_at_the_short_side(rendered):
    """The 9:16 and 1:1 renditions of the multi_scene request are each composed for their own frame at the
    configured short side: the square one has no pillarbox (no column of a sampled frame is near-black) and
    its video stream is the stitched one, copied (enhanced_video only levels the audio)."""
    home, _, _ = rendered
    slug = slug_of("multi_scene")
    stitched, enhanced = record(home, "stitched_video", AVATAR, slug), record(home, "enhanced_video", AVATAR, slug)
    assert [(r.aspect_ratio, r.expected_size, (r.qa.width, r.qa.height)) for r in stitched.renditions] == [
        ("9:16", (SHORT_SIDE, 426), (SHORT_SIDE, 426)), ("1:1", (SHORT_SIDE, SHORT_SIDE), (SHORT_SIDE, SHORT_SIDE))]
    for rendition in enhanced.renditions:
        assert rendition.qa.loudness_lufs == pytest.approx(-16.0, abs=1.0)
        picture = decoded_frames(home.store.local_path(rendition.video), gray=True)
        assert np.array_equal(picture, decoded_frames(home.store.local_path(stitched.rendition(rendition.aspect_ratio).video), gray=True))
    square = decoded_frames(package_dir(home, AVATAR, slug) / "video_1x1.mp4")[::10]
    assert square.shape[1:] == (SHORT_SIDE, SHORT_SIDE, 3)
    assert not (square.max(axis=(1, 3)) < 12).any() and not (square.max(axis=(2, 3)) < 12).any()


def uncaptioned(home, slug, folder, aspect="9:16"):
    """The cell's `aspect` rendition encoded again exactly as stitched_video does, without its captions."""
    from avatar_assets.media.audio import load_wav
    from avatar_assets.video.renditions import rendition_jobs
    from avatar_assets.media.video import encode_renditions
    from resources.providers import Enhancer, VideoSettings

    scenes, lip = record(home, "scene_assets", AVATAR, slug), record(home, "lip_sync", AVATAR, slug)
    speech, stitched = record(home, "speech", AVATAR, slug), record(home, "stitched_video", AVATAR, slug)
    video, enhancer = VideoSettings(), Enhancer()
    job = rendition_jobs(home.store, scenes, lip, speech, folder, sharpen=enhancer.sharpen, saturation=enhancer.saturation,
                         captions=False)[aspect]
    audio = load_wav(home.store.read(speech.audio))
    encode_renditions([job], fps=lip.fps, audio=(audio.samples, audio.sample_rate), transition_s=video.transition_s,
                      watermark=bytes.fromhex(stitched.watermark), crf=video.crf, preset=video.preset)
    return decoded_frames(job.path)


def caption_boxes(speech, size, scenes, aspect="9:16"):
    """(cue, caption box) for each cue as the stitcher places it in the `aspect` rendition (in the request's
    style, clear of the avatars' mouths in that frame)."""
    from avatar_assets.media.captions import CaptionLook, Cue, layout_captions
    from avatar_assets.media.tts import WordTiming

    blocks = layout_captions([WordTiming(w.word, w.start_s, w.end_s, 0) for w in speech.words],
                             CaptionLook(**speech.caption_style.model_dump(exclude={"preset"})), size,
                             avoid=[tuple(s.frame(aspect).mouth_box) for s in scenes.scenes if s.frame(aspect).mouth_box])
    return [(Cue(b.start_s, b.end_s, " ".join(w.word for w in b.words)), b.box) for b in blocks]


def test_captions_are_burned_in_where_and_when_the_cues_say(rendered, tmp_path):
    """The stitched video against the same rendition encoded without captions: the caption box differs at
    each cue's midpoint and the rest of the frame does not; after the last word nothing differs."""
    home, _, _ = rendered
    slug = slug_of("single_scene")
    stitched = record(home, "stitched_video", AVATAR, slug)
    speech = record(home, "speech", AVATAR, slug)
    with_captions = decoded_frames(home.store.local_path(stitched.video))
    without = uncaptioned(home, slug, tmp_path)
    size = (with_captions.shape[2], with_captions.shape[1])
    boxes = caption_boxes(speech, size, record(home, "scene_assets", AVATAR, slug))
    assert len(boxes) >= 2 and " ".join(c.text for c, _ in boxes) == " ".join(w.word for w in speech.words)
    for cue, box in boxes:
        i = int(round((cue.start_s + cue.end_s) / 2 * FPS))
        diff = np.abs(luma(with_captions[i]) - luma(without[i]))
        inside = crop(diff, box)
        outside = diff.copy()
        x, y, w, h = box
        outside[y:y + h, x:x + w] = np.nan
        assert inside.mean() > 15, (cue, inside.mean())
        assert np.nanmean(outside) < 2.0, (cue, np.nanmean(outside))
        # White caption text on a darkened box: both much brighter and much darker pixels than without.
        region = crop(luma(with_captions[i]), box)
        assert (region > 225).mean() > 0.03 and (region < 50).mean() > 0.2
    tail = int(speech.duration_s * FPS) - 2
    assert tail / FPS > boxes[-1][0].end_s + 0.05
    assert np.abs(luma(with_captions[tail]) - luma(without[tail])).mean() < 2.0


def test_requested_caption_style_highlights_the_word_being_spoken(rendered):
    """The multi_scene request asks for karaoke captions with a green highlight: in the stitched frames the
    green covers more of the caption word by word, the words still to come stay white, and the package's
    captions.ass (the file that was burned in) carries the style, the master's size and per-word \\kf tags."""
    import re

    import pysubs2

    home, _, _ = rendered
    slug = slug_of("multi_scene")
    stitched, speech = record(home, "stitched_video", AVATAR, slug), record(home, "speech", AVATAR, slug)
    assert speech.caption_style.word_highlight and speech.caption_style.highlight_colour == "#00FF00"
    frames = decoded_frames(home.store.local_path(stitched.video))
    cue, (x, y, w, h) = caption_boxes(speech, tuple(stitched.expected_size), record(home, "scene_assets", AVATAR, slug))[0]
    spoken = [word for word in speech.words if cue.start_s <= word.start_s < cue.end_s]
    assert len(spoken) >= 3
    green, white = [], []
    for word in spoken:
        band = frames[int(round((word.start_s + word.end_s) / 2 * FPS))][y:y + h, x:x + w].astype(int)
        green.append(int(((band[..., 1] > 150) & (band[..., 0] < 120) & (band[..., 2] < 120)).sum()))
        white.append(int((band > 190).all(axis=2).sum()))
    assert green[0] > 0 and green == sorted(green) and green[-1] > 2 * green[0], green
    assert white[0] > white[-1] and white[0] > 0, white
    folder = package_dir(home, AVATAR, slug)
    subs = pysubs2.SSAFile.from_string((folder / "captions.ass").read_text())
    assert (int(subs.info["PlayResX"]), int(subs.info["PlayResY"])) == tuple(stitched.expected_size)
    assert subs.styles["Caption"].primarycolor == pysubs2.Color(0, 255, 0)
    kf = [int(cs) for event in subs.events for cs in re.findall(r"\{\\kf(\d+)\}", event.text)]
    assert len(kf) == len(speech.words)
    assert abs(sum(kf) / 100 - sum(w.end_s - w.start_s for w in speech.words)) <= 0.01 * len(kf)
    package = record(home, "output_package", AVATAR, slug)
    assert package.captions_ass == stitched.captions_ass
    assert sha256_path(folder / "captions.ass") == stitched.captions_ass.sha256


def test_captions_survive_into_the_delivered_package(rendered, tmp_path):
    home, _, _ = rendered
    slug = slug_of("single_scene")
    speech = record(home, "speech", AVATAR, slug)
    delivered = package_dir(home, AVATAR, slug) / "video_9x16.mp4"
    without = uncaptioned(home, slug, tmp_path)
    cue, band = caption_boxes(speech, (without.shape[2], without.shape[1]), record(home, "scene_assets", AVATAR, slug))[0]
    t = (cue.start_s + cue.end_s) / 2
    shipped, plain = frame_at(delivered, t), without[int(round(t * FPS))]
    diff = np.abs(luma(shipped) - luma(plain))
    elsewhere = np.delete(diff, np.s_[max(0, band[1] - 40): band[1] + band[3] + 40], axis=0)
    assert crop(diff, band).mean() > 4 * elsewhere.mean()
    assert crop(diff, band).mean() > 15
    # The sidecar captions say the same words.
    srt = (package_dir(home, AVATAR, slug) / "captions.srt").read_text()
    vtt = (package_dir(home, AVATAR, slug) / "captions.vtt").read_text()
    assert vtt.startswith("WEBVTT") and "-->" in srt
    for word in speech.words:
        assert word.word in srt and word.word in vtt


def test_lip_motion_follows_the_speech_in_the_delivered_video(rendered):
    """Mouth region of the delivered 9:16 file: it moves while words are spoken and is still in the
    pauses (the 800 ms pause and the tail), and its opening tracks the lip-sync openness."""
    home, _, _ = rendered
    slug = slug_of("single_scene")
    scenes = record(home, "scene_assets", AVATAR, slug)
    lip, speech = record(home, "lip_sync", AVATAR, slug), record(home, "speech", AVATAR, slug)
    [scene] = scenes.scenes
    assert scene.mouth_box is not None
    from avatar_assets.media.face_motion import JAW, ROUND

    controls = np.load(home.store.local_path(lip.openness))
    assert controls.ndim == 2 and lip.provider.provider == "landmark-mesh"
    mouth_controls, openness = controls[:, JAW:ROUND + 1], controls[:, JAW]
    delivered = package_dir(home, AVATAR, slug) / "video_9x16.mp4"
    frames = decoded_frames(delivered, gray=True)
    mouth = scene.frame("9:16").mouth_box  # in the rendition's pixels: the package file is the rendition
    crops = np.stack([crop(f, mouth).astype(np.float32) for f in frames])
    n = min(len(crops), len(openness))
    crops, openness = crops[:n], openness[:n]

    centres = (np.arange(n) + 0.5) / FPS
    in_word = np.zeros(n, bool)
    for word in speech.words:
        in_word |= (centres >= word.start_s) & (centres < word.end_s)
    # Silence: no word within 0.2 s either side (coarticulation and smoothing stay out).
    near_word = np.zeros(n, bool)
    for word in speech.words:
        near_word |= (centres >= word.start_s - 0.2) & (centres < word.end_s + 0.2)
    silent = ~near_word
    assert silent.sum() >= 8 and (mouth_controls[:n][silent] == 0).all()
    rest = np.median(crops[silent], axis=0)
    change = np.abs(crops - rest).mean(axis=(1, 2))
    speaking = in_word & (openness > 0.3)
    assert speaking.sum() >= 10
    assert change[speaking].mean() > 6 * max(change[silent].mean(), 0.5), (change[speaking].mean(), change[silent].mean())
    assert np.corrcoef(change, openness)[0, 1] > 0.6
    # The 800 ms pause in the middle of the script is one of the still stretches.
    gap = [b.start_s - a.end_s for a, b in zip(speech.words, speech.words[1:])]
    k = int(np.argmax(gap))
    assert gap[k] > 0.6
    middle = (centres > speech.words[k].end_s + 0.2) & (centres < speech.words[k + 1].start_s - 0.2)
    assert middle.sum() >= 3 and change[middle].max() < 0.25 * change[speaking].mean()


def test_broll_scenes_show_no_face_while_the_speech_continues(rendered):
    from avatar_assets.media.faces import detect_faces
    from avatar_assets.media.video import read_audio

    home, _, _ = rendered
    slug = slug_of("broll")
    scenes = record(home, "scene_assets", AVATAR, slug).scenes
    speech = record(home, "speech", AVATAR, slug)
    assert [s.shot for s in scenes] == ["mid", "broll"]
    delivered = package_dir(home, AVATAR, slug) / "video_9x16.mp4"
    # Faces are looked for in the lip-sync track (the delivered frames before captions are burned in)
    # and, for b-roll, in the package.
    track = home.store.local_path(record(home, "lip_sync", AVATAR, slug).video)
    audio = read_audio(delivered, sr=24000)
    for scene in scenes:
        middle = (scene.start_s + scene.end_s) / 2
        faces = detect_faces(frame_at(track, middle))
        spoken = [w for w in speech.words if scene.start_s <= w.start_s < scene.end_s]
        assert len(spoken) >= 3, scene  # words are spoken in every scene, b-roll included
        assert audio_rms(audio, 24000, spoken[0].start_s, spoken[-1].end_s) > 0.02
        if scene.shot == "broll":
            assert scene.mouth_box is None and scene.face_box is None
            assert faces == [], (scene.index, faces)
            for t in np.linspace(scene.start_s + 0.2, scene.end_s - 0.2, 5):
                assert detect_faces(frame_at(delivered, t)) == [], (scene.index, t)
        else:
            assert len(faces) == 1, (scene.index, faces)
            # The detected face is where the scene says the avatar's face is.
            fx, fy, fw, fh = scene.face_box
            cx, cy = faces[0].centre
            assert fx <= cx <= fx + fw and fy <= cy <= fy + fh


def test_avatar_scenes_of_every_route_show_a_face(rendered):
    from avatar_assets.media.faces import detect_faces

    home, _, _ = rendered
    for route in ["single_scene", "multi_scene", "pose"]:
        slug = slug_of(route)
        track = home.store.local_path(record(home, "lip_sync", AVATAR, slug).video)
        scenes = record(home, "scene_assets", AVATAR, slug).scenes
        assert len(scenes) == (1 if route == "single_scene" else 2)
        for scene in scenes:
            assert scene.shot != "broll"
            assert len(detect_faces(frame_at(track, (scene.start_s + scene.end_s) / 2))) == 1, (route, scene.index)


def test_burned_captions_leave_the_mouth_visible(rendered):
    from avatar_assets.media.faces import detect_faces

    home, _, _ = rendered
    for route in ["single_scene", "multi_scene", "pose"]:
        slug = slug_of(route)
        speech = record(home, "speech", AVATAR, slug)
        scenes = record(home, "scene_assets", AVATAR, slug)
        for aspect, size in scenes.renditions.items():
            boxes = caption_boxes(speech, size, scenes, aspect)
            for scene in scenes.scenes:
                mx, my, mw, mh = scene.frame(aspect).mouth_box
                for cue, (x, y, w, h) in boxes:
                    if cue.end_s <= scene.start_s or cue.start_s >= scene.end_s:
                        continue
                    overlap = max(0, min(mx + mw, x + w) - max(mx, x)) * max(0, min(my + mh, y + h) - max(my, y))
                    assert overlap == 0, (route, aspect, scene.index, scene.shot, (mx, my, mw, mh), (x, y, w, h))
        delivered = package_dir(home, AVATAR, slug) / "video_9x16.mp4"
        for scene in scenes.scenes:
            assert detect_faces(frame_at(delivered, (scene.start_s + scene.end_s) / 2)), (route, scene.index)


def test_pose_route_uses_different_character_sheet_variants(rendered):
    from avatar_assets.media.images import decode_image

    home, _, _ = rendered
    board = record(home, "storyboard", AVATAR, slug_of("pose"))
    variants = [s.variant for s in board.scenes]
    assert len(set(variants)) == len(variants) == 2 and variants[0] == "neutral"
    sheet = record(home, "character_sheet", AVATAR)
    assert variants[1] in sheet.variants
    posed = record(home, "scene_assets", AVATAR, slug_of("pose")).scenes
    plain = record(home, "scene_assets", AVATAR, slug_of("multi_scene")).scenes
    assert [s.variant for s in posed] == variants and [s.variant for s in plain] == ["neutral", "neutral"]
    assert [s.shot for s in posed] == [s.shot for s in plain]
    # Same script, shots and backgrounds: the neutral scene is the same picture, the posed one is not
    # (a variant whose face cannot be found would silently fall back to the neutral portrait).
    assert posed[0].keyframe.sha256 == plain[0].keyframe.sha256
    a, b = decode_image(home.store.read(posed[1].keyframe)), decode_image(home.store.read(plain[1].keyframe))
    face = plain[1].face_box
    assert crop(np.abs(luma(a) - luma(b)), face).mean() > 8
    assert posed[1].face_box is not None and posed[1].mouth_box is not None


def test_approval_gated_run_stops_after_lip_sync_and_says_it_waits(rendered):
    home, report, _ = rendered
    partition = cell(AVATAR, slug_of("approval_gated"))
    lip = record(home, "lip_sync", AVATAR, slug_of("approval_gated"))
    assert lip.awaiting_approval is True
    counts = materialization_counts(home.instance)
    done = [stage for stage in VIDEO_STAGES if counts[(stage, partition)]]
    assert done == VIDEO_STAGES[: VIDEO_STAGES.index("lip_sync") + 1]
    assert record(home, "stitched_video", AVATAR, slug_of("approval_gated")) is None
    assert not package_dir(home, AVATAR, slug_of("approval_gated")).exists()
    assert check_verdicts(home.instance, partition) == {
        "speech_timing_and_level": True, "mouth_follows_speech": True, "scene_identity_consistency": True,
    }
    [run] = runs_for(home.instance, partition)
    assert any("approval" in message for message in run_messages(home.instance, run.run_id))
    # Other routes do not wait for anybody.
    assert record(home, "lip_sync", AVATAR, slug_of("multi_scene")).awaiting_approval is False


@pytest.mark.parametrize("route", DELIVERED)
def test_rights_manifest_validates_and_its_hashes_match_the_files(rendered, route):
    home, _, requests = rendered
    slug = slug_of(route)
    folder = package_dir(home, AVATAR, slug)
    manifest = RightsManifest.model_validate(json.loads((folder / "rights_manifest.json").read_text()))
    videos = {f"video_{a.replace(':', 'x')}.mp4" for a in requests[route].renditions()}
    assert set(manifest.outputs) == videos | {"poster.png", "captions.srt", "captions.vtt", "captions.ass"}
    assert {p.name for p in folder.iterdir()} == set(manifest.outputs) | {"rights_manifest.json"}
    for name, sha in manifest.outputs.items():
        assert sha256_path(folder / name) == sha, name
    raw = (home.root / "inbox" / "outputs" / AVATAR / f"{slug}.json").read_bytes()
    assert manifest.request_sha256 == hashlib.sha256(raw).hexdigest()
    assert (manifest.avatar_id, manifest.slug) == (AVATAR, slug)
    upload = record(home, "source_upload", AVATAR)
    assert manifest.source_bundle_sha256 == upload.bundle_sha256
    assert manifest.consent == upload.manifest.consent and manifest.creator_id == upload.manifest.creator_id
    assert set(manifest.source_files) == {"photos/portrait.jpg", "voice/sample.wav"}
    stages = [s.asset for s in manifest.stages]
    assert stages[-8:] == VIDEO_STAGES[:-1] and "identity_bundle" not in stages[-8:]
    providers = {p.capability for s in manifest.stages for p in s.providers}
    assert {"speech", "backgrounds", "lip_sync", "enhance", "stitch"} <= providers
    # The package record names the same files.
    package = record(home, "output_package", AVATAR, slug)
    assert {f"video_{r.aspect_ratio.replace(':', 'x')}.mp4": r.video.sha256 for r in package.renditions} == {
        k: v for k, v in manifest.outputs.items() if k.startswith("video_")
    }


def test_every_video_record_names_its_own_cell(rendered):
    """Content-addressed reuse shares bytes between cells, never identity: each record says whose it is."""
    home, _, _ = rendered
    for route in REQUESTS:
        slug = slug_of(route)
        for stage in VIDEO_STAGES:
            found = record(home, stage, AVATAR, slug)
            if found is None:
                assert route == "approval_gated" and stage in VIDEO_STAGES[6:]
                continue
            assert (found.avatar_id, found.slug) == (AVATAR, slug), (route, stage, found.avatar_id, found.slug)


@pytest.mark.parametrize("route", DELIVERED)
def test_every_rendition_carries_the_cells_watermark(rendered, route):
    """Decoded frames of each packaged rendition (each composed and marked at its own size) give back the
    payload the cell's videos are marked with."""
    from avatar_assets.media.video import read_frames
    from avatar_assets.media.watermark import detect_watermark_frames

    home, _, requests = rendered
    slug = slug_of(route)
    payload = bytes.fromhex(record(home, "enhanced_video", AVATAR, slug).watermark)
    for aspect in requests[route].renditions():
        path = package_dir(home, AVATAR, slug) / f"video_{aspect.replace(':', 'x')}.mp4"
        assert detect_watermark_frames(read_frames(path, every_nth=10)) == payload, (route, aspect)


def test_a_second_slug_with_the_same_script_reuses_bytes_but_gets_its_own_watermark(rendered):
    from avatar_assets.media.watermark import detect_watermark_frames

    home, _, _ = rendered
    first, second = slug_of("multi_scene"), AGAIN[0]
    for stage in VIDEO_STAGES:
        found = record(home, stage, AVATAR, second)
        assert (found.avatar_id, found.slug) == (AVATAR, second), (stage, found.avatar_id, found.slug)
    assert record(home, "speech", AVATAR, second).audio == record(home, "speech", AVATAR, first).audio
    assert record(home, "backgrounds", AVATAR, second).images == record(home, "backgrounds", AVATAR, first).images
    marks = {}
    for slug in (first, second):
        enhanced = record(home, "enhanced_video", AVATAR, slug)
        assert enhanced.watermark == hashlib.sha256(cell(AVATAR, slug).encode()).digest()[:8].hex()
        marks[slug] = detect_watermark_frames(decoded_frames(home.store.local_path(enhanced.video)))
        assert marks[slug] == bytes.fromhex(enhanced.watermark), slug
    assert marks[first] != marks[second]
