import cv2
import numpy as np
import pytest

from avatar_assets.media.compose import composite_shot, contact_sheet, cover_resize
from avatar_assets.media.lipsync import mouth_box_from_face
from tests.media.video_fixtures import FACE_BOX, astronaut, astronaut_mask, flat_background, shot

SIZES = [(1080, 1920), (1080, 1080), (1920, 1080)]


def _inside(inner, outer):
    x, y, w, h = inner
    ox, oy, ow, oh = outer
    return ox <= x and oy <= y and x + w <= ox + ow and y + h <= oy + oh


@pytest.mark.parametrize("size", SIZES)
def test_close_up_face_fills_about_a_third_of_the_height(size):
    s = shot(size, "close_up")
    w, h = size
    assert s.frame.shape == (h, w, 3)
    fx, fy, fw, fh = s.face_box
    assert fh / h == pytest.approx(0.35, abs=0.02)
    assert fx + fw / 2 == pytest.approx(w / 2, abs=2)
    assert _inside(s.mouth_box, (0, 0, w, h))


@pytest.mark.parametrize("size", SIZES)
def test_mid_shot_is_lower_centre_and_reaches_the_bottom(size):
    w, h = size
    bg = flat_background(size)
    s = shot(size, "mid", bg)
    fx, fy, fw, fh = s.face_box
    assert fh < 0.25 * h
    assert s.mouth_box[1] > fy + fh / 2  # mouth below the face centre
    # The suit (orange) reaches the bottom edge at the centre: no floating torso.
    assert np.abs(s.frame[-3, w // 2].astype(int) - bg[-3, w // 2]).sum() > 60
    # Top corners stay backdrop.
    assert np.array_equal(s.frame[2, 2], bg[2, 2])


def test_large_photo_in_a_small_frame_is_shrunk_cleanly():
    big = cv2.resize(astronaut(), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    big_mask = cv2.resize(astronaut_mask(), (2048, 2048), interpolation=cv2.INTER_NEAREST)
    big_face = tuple(v * 4 for v in FACE_BOX)
    s = composite_shot(flat_background((320, 240)), big, big_mask, shot="wide", out_size=(320, 240), face_box=big_face)
    small = shot((320, 240), "wide")
    assert s.face_box == small.face_box
    assert np.abs(np.subtract(s.mouth_box, small.mouth_box)).max() <= 1  # rounding in avatar pixels
    assert np.abs(s.frame.astype(int) - small.frame).mean() < 3


def test_mouth_box_lands_on_the_mouth():
    s = shot((640, 640), "close_up")
    x, y, w, h = s.mouth_box
    ax, ay, aw, ah = mouth_box_from_face(FACE_BOX)
    source = cv2.resize(astronaut()[ay:ay + ah, ax:ax + aw], (w, h), interpolation=cv2.INTER_LINEAR)
    # The output mouth box shows the same pixels as the avatar's mouth box, scaled.
    assert np.abs(s.frame[y:y + h, x:x + w].astype(int) - source).mean() < 10


def test_edges_are_feathered_not_cut():
    size = (640, 640)
    bg = flat_background(size, (0, 255, 0))
    s = shot(size, "mid", bg)
    green_excess = s.frame[..., 1].astype(int) - np.maximum(s.frame[..., 0], s.frame[..., 2])
    # Pure backdrop, pure avatar, and a band of partial mixes in between.
    partial = ((green_excess > 40) & (green_excess < 200)).sum()
    assert partial > 200


def test_broll_is_background_only():
    bg = np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8)
    s = composite_shot(bg, astronaut(), astronaut_mask(), shot="broll", out_size=(320, 240), face_box=FACE_BOX)
    assert s.mouth_box is None and s.face_box is None
    assert np.array_equal(s.frame, cover_resize(bg, (320, 240)))


def test_unknown_shot_is_refused():
    with pytest.raises(ValueError, match="unknown shot"):
        composite_shot(flat_background((64, 64)), astronaut(), astronaut_mask(), shot="dutch", out_size=(64, 64),
                       face_box=FACE_BOX)


def test_contact_sheet_grid_and_labels():
    frames = [shot((320, 180), k).frame for k in ("close_up", "mid", "wide")] + [shot((180, 320)).frame]
    sheet = contact_sheet(frames, ["close", "mid", "wide", "vertical"], columns=2, cell_width=200)
    assert sheet.dtype == np.uint8 and sheet.shape[2] == 3
    assert sheet.shape[1] == 2 * 200 + 3 * 8
    # Each row is as tall as its tallest thumbnail (112 px for 16:9, 356 px for 9:16) plus an 18 px label.
    assert sheet.shape[0] == 8 + (112 + 18 + 8) + (356 + 18 + 8)
    label_strip = sheet[8 + 112:8 + 112 + 18, 8:208]
    assert label_strip.max() > 200  # light text on the dark sheet
