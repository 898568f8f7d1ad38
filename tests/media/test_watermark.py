import cv2
import numpy as np
import pytest

from avatar_assets.media.backgrounds import classical_background
from avatar_assets.media.lipsync import mouth_openness
from avatar_assets.media.video import encode_frames, ken_burns, read_frames, to_i420
from avatar_assets.media.watermark import (
    detect_watermark,
    detect_watermark_frames,
    embed_watermark,
    luma_marks,
)
from tests.media.video_fixtures import FPS, SR, astronaut, shot, speechlike, talking_frames

PAYLOAD = b"av\x00\x01r7"


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("payload", [b"x", b"12345678", PAYLOAD])
def test_roundtrip_in_memory_and_invisible(payload):
    frame = shot((640, 360), "mid", classical_background("office", 640, 360, seed=1)).frame
    marked = embed_watermark(frame, payload)
    assert marked.shape == frame.shape and marked.dtype == np.uint8
    assert _psnr(frame, marked) > 38
    assert detect_watermark(marked) == payload


def test_unmarked_frames_and_wrong_keys_give_none():
    for seed in range(5):
        assert detect_watermark(classical_background("city", 320, 240, seed=seed)) is None
    marked = embed_watermark(astronaut(), PAYLOAD, key=1234)
    assert detect_watermark(marked) is None
    assert detect_watermark(marked, key=1234) == PAYLOAD


def test_payload_and_frame_limits():
    with pytest.raises(ValueError):
        embed_watermark(astronaut(), b"123456789")
    with pytest.raises(ValueError):
        embed_watermark(astronaut(), b"")
    with pytest.raises(ValueError, match="too small"):
        embed_watermark(np.zeros((40, 40, 3), np.uint8), b"a")



def test_survives_h264_at_crf_20(tmp_path):
    size = (640, 360)
    samples, words = speechlike(2.0, seed=3)
    base = shot(size, "mid", classical_background("studio", *size, seed=2))
    frames = [embed_watermark(f, PAYLOAD) for f in talking_frames(base, mouth_openness(samples, SR, FPS, words))]
    result = encode_frames(frames, fps=FPS, size=size, audio=(samples, SR), path=tmp_path / "wm.mp4", crf=20)
    decoded = list(read_frames(result.path))
    found = [detect_watermark(f) for f in decoded]
    assert sum(p == PAYLOAD for p in found) >= 0.9 * len(decoded)
    assert all(p in (PAYLOAD, None) for p in found)  # never a wrong payload


def test_whole_clip_detection_survives_motion(tmp_path):
    """A zooming, panning shot defeats motion compensation's help; summing frames still decodes it."""
    size = (320, 240)
    frame_at = ken_burns(astronaut(), size, 2.0, zoom=(1.0, 1.3), pan=(0.1, 0.05))
    frames = [embed_watermark(frame_at(i / FPS), PAYLOAD) for i in range(50)]
    result = encode_frames(frames, fps=FPS, size=size, audio=None, path=tmp_path / "kb.mp4")
    assert detect_watermark_frames(read_frames(result.path)) == PAYLOAD


def test_luma_marks_put_embed_watermarks_mark_on_the_y_plane():
    """The stitcher marks the I420 picture it hands x264: its Y plane must carry what embed_watermark puts in
    RGB (within the rounding of the 219/255 scale), and decode back to the payload."""
    frame = shot((640, 360), "mid", classical_background("office", 640, 360, seed=2)).frame
    frame[:20] = 255  # saturates upwards
    frame[20:40] = 0  # and downwards
    marked = to_i420(frame, luma_marks(PAYLOAD, 360, 640))
    assert np.array_equal(marked[360:], to_i420(frame)[360:])  # chroma untouched
    embedded = embed_watermark(frame, PAYLOAD)
    difference = marked[:360].astype(np.int16) - to_i420(embedded)[:360]
    # Wherever no channel clipped in RGB (Y keeps room above 235 and below 16, so the mark survives there too)
    unclipped = ((frame >= 16) & (frame <= 239)).all(axis=2)  # the mark moves a level by less than 16
    assert unclipped.mean() > 0.8
    assert np.abs(difference[unclipped]).max() <= 2 and np.abs(difference).mean() < 0.5
    assert detect_watermark(cv2.cvtColor(marked, cv2.COLOR_YUV2RGB_I420)) == PAYLOAD
    with pytest.raises(ValueError, match="payload"):
        luma_marks(b"", 360, 640)
