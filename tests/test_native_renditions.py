"""Native renditions, checked on decoded frames of one real render.

One multi_scene request for TikTok, the Instagram feed and YouTube (9:16, 1:1 and 16:9) at the tests' short
side (`AVATAR_MASTER_SHORT_SIDE=240`: every rendition at the same smaller scale as the 1080-pixel delivery
sizes). Each rendition is composed for its own frame: no row or column of a sampled frame is near-black (no
letterbox, no pillarbox), the avatar's face is inside the platform's safe area, the captions sit in the
frame's caption-safe band with the word being spoken highlighted, every rendition carries the cell's
watermark, and enhanced_video copies the pictures and levels only the audio.
"""

from __future__ import annotations

import numpy as np
import pytest

from avatar_assets.contracts import rendition_size
from tests.video_helpers import (
    FPS,
    SHORT_SIDE,
    cell,
    check_verdicts,
    decoded_frames,
    package_dir,
    record,
    submit,
    video_home,
)

pytestmark = pytest.mark.slow  # one module-scoped render of three renditions (~40 s)

AVATAR, SLUG = "native-a", "three"
SCRIPT = "Hello there, welcome to our show. This is a short test of the pipeline. Thanks for watching us today."
ASPECTS = ["9:16", "1:1", "16:9"]
GREEN = "#00FF00"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, sample_bundle):
    with video_home(tmp_path_factory.mktemp("native") / "home", sample_bundle, (AVATAR,)) as home:
        submit(home, AVATAR, SLUG, SCRIPT, route="multi_scene", platforms=["tiktok", "instagram_feed", "youtube"],
               background_prompts=["soft studio backdrop", "city at dusk", "calm ocean sunset"],
               captions={"preset": "karaoke", "highlight_colour": GREEN, "position": "auto"})
        report = home.process()
        assert report.ok, report.as_dict()
        yield home


def rec(home, asset):
    return record(home, asset, AVATAR, SLUG)


def delivered(home, aspect):
    return package_dir(home, AVATAR, SLUG) / f"video_{aspect.replace(':', 'x')}.mp4"


def test_every_platform_gets_a_rendition_composed_at_its_own_size_and_every_gate_passes(rendered):
    from avatar_assets.media.video import probe

    home = rendered
    assert all(check_verdicts(home.instance, cell(AVATAR, SLUG)).values())
    package, enhanced = rec(home, "output_package"), rec(home, "enhanced_video")
    assert [r.aspect_ratio for r in package.renditions] == ASPECTS
    for rendition in package.renditions:
        size = rendition_size(rendition.aspect_ratio, SHORT_SIDE)
        info = probe(delivered(home, rendition.aspect_ratio))
        assert (rendition.width, rendition.height) == (info.width, info.height) == size
        # Delivered as enhanced_video made it: no transcode between the composition and the package.
        assert rendition.video == enhanced.rendition(rendition.aspect_ratio).video
    scenes = rec(home, "scene_assets")
    assert scenes.renditions == {aspect: rendition_size(aspect, SHORT_SIDE) for aspect in ASPECTS}
    backgrounds = rec(home, "backgrounds")
    for aspect in ASPECTS:  # a backdrop generated for each frame, not one stretched to all of them
        assert len({ref.sha256 for ref in backgrounds.for_aspect(aspect)} & {ref.sha256 for ref in backgrounds.images}) == (
            len(backgrounds.images) if aspect == ASPECTS[0] else 0)


def test_no_row_or_column_of_any_rendition_is_near_black(rendered):
    for aspect in ASPECTS:
        frames = decoded_frames(delivered(rendered, aspect))[::5]
        assert len(frames) >= 10
        dark_rows = (frames.max(axis=(2, 3)) < 12).sum(axis=1)
        dark_columns = (frames.max(axis=(1, 3)) < 12).sum(axis=1)
        assert dark_rows.max() == 0 and dark_columns.max() == 0, (aspect, dark_rows.max(), dark_columns.max())


def test_the_avatars_face_is_inside_each_platforms_safe_area(rendered):
    from avatar_assets.media.compose import safe_area
    from avatar_assets.media.faces import detect_faces

    scenes = rec(rendered, "scene_assets").scenes
    assert [s.shot != "broll" for s in scenes] == [True] * len(scenes) and len(scenes) >= 2
    for aspect in ASPECTS:
        frames = decoded_frames(delivered(rendered, aspect))
        w, h = rendition_size(aspect, SHORT_SIDE)
        left, top, right, bottom = safe_area((w, h))
        for scene in scenes:
            framed = scene.frame(aspect)
            fx, fy, fw, fh = framed.face_box
            assert left * w - 1 <= fx and fx + fw <= right * w + 1 and top * h - 1 <= fy and fy + fh <= bottom * h + 1, (
                aspect, scene.index, framed.face_box)
            faces = detect_faces(frames[int(round((scene.start_s + scene.end_s) / 2 * FPS))])
            assert faces, (aspect, scene.index)
            cx, cy = faces[0].centre  # the face the viewer sees is where the record says, in the safe area
            assert fx <= cx <= fx + fw and fy <= cy <= fy + fh, (aspect, scene.index, faces[0], framed.face_box)


def test_captions_sit_in_each_frames_caption_safe_band_with_the_spoken_word_highlighted(rendered):
    from avatar_assets.media.captions import CaptionLook, layout_captions, safe_band
    from avatar_assets.media.tts import WordTiming

    home = rendered
    speech, scenes = rec(home, "speech"), rec(home, "scene_assets")
    look = CaptionLook(**speech.caption_style.model_dump(exclude={"preset"}))
    words = [WordTiming(w.word, w.start_s, w.end_s, 0) for w in speech.words]
    for aspect in ASPECTS:
        size = rendition_size(aspect, SHORT_SIDE)
        mouths = [tuple(s.frame(aspect).mouth_box) for s in scenes.scenes if s.frame(aspect).mouth_box]
        blocks = layout_captions(words, look, size, avoid=mouths)
        top, bottom = safe_band(size)
        for block in blocks:
            x, y, w, h = block.box
            assert round(top * size[1]) <= y and y + h <= round(bottom * size[1]), (aspect, block.box)  # whole pixels
            assert 0 <= x and x + w <= size[0]
            # position "auto": clear of the mouth in this frame wherever the band has room for it
            assert not any(x < mx + mw and mx < x + w and y < my + mh and my < y + h for mx, my, mw, mh in mouths), (
                aspect, block.box, mouths)
        frames = decoded_frames(delivered(home, aspect))
        cue = next(b for b in blocks if len(b.words) >= 3)
        x, y, w, h = cue.box
        green, white = [], []
        for word in cue.words:
            band = frames[int(round((word.start_s + word.end_s) / 2 * FPS))][y:y + h, x:x + w].astype(int)
            green.append(int(((band[..., 1] > 150) & (band[..., 0] < 120) & (band[..., 2] < 120)).sum()))
            white.append(int((band > 190).all(axis=2).sum()))
        # The highlight fills the caption word by word: more green and less white as the cue is spoken.
        assert green[0] > 0 and green == sorted(green) and green[-1] > 2 * green[0], (aspect, green)
        assert white[0] > white[-1], (aspect, white)
        # Each rendition burned its own captions: the ASS stitched_video recorded is laid out for its frame.
        ass = home.store.read(rec(home, "stitched_video").rendition(aspect).captions_ass).decode()
        assert f"PlayResX: {size[0]}" in ass and f"PlayResY: {size[1]}" in ass


def test_every_rendition_carries_the_cells_watermark(rendered):
    from avatar_assets.media.video import read_frames
    from avatar_assets.media.watermark import detect_watermark_frames

    payload = bytes.fromhex(rec(rendered, "enhanced_video").watermark)
    for aspect in ASPECTS:
        assert detect_watermark_frames(read_frames(delivered(rendered, aspect), every_nth=10)) == payload, aspect


def test_enhanced_video_copies_the_pictures_and_levels_only_the_audio(rendered):
    stitched, enhanced = rec(rendered, "stitched_video"), rec(rendered, "enhanced_video")
    for aspect in ASPECTS:
        made, levelled = stitched.rendition(aspect), enhanced.rendition(aspect)
        assert levelled.video.sha256 != made.video.sha256
        assert np.array_equal(decoded_frames(rendered.store.local_path(made.video), gray=True),
                              decoded_frames(rendered.store.local_path(levelled.video), gray=True)), aspect
        assert levelled.qa.loudness_lufs == pytest.approx(-16.0, abs=1.0)
        assert (levelled.qa.longest_black_s, levelled.qa.frame_count) == (made.qa.longest_black_s, made.qa.frame_count)
