import cv2
import numpy as np
import pytest

from avatar_assets.media.enhance import FrameEnhancer, enhance_frame
from avatar_assets.media.video import encode_frames, read_frames
from tests.media.video_fixtures import FPS, astronaut


def _talking_layer(tmp_path, size=(250, 182), n=24):
    """A decoded H.264 clip where, as in a lip-sync layer, a patch moves and the rest holds still; the size is not
    a multiple of the tile, and the patch reaches the frame's edges."""
    w, h = size
    base = cv2.resize(astronaut(), size, interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        f = base.copy()
        x, y = (i * 11) % (w - 30), (i * 5) % (h - 20)
        f[y:y + 20, x:x + 30] = (255 - 9 * i) % 256
        if i % 6 == 0:
            f[:3, :] = 40  # the top edge
            f[:, -2:] = 220  # the right edge
        frames.append(f)
    path = tmp_path / "layer.mp4"
    encode_frames(frames, fps=FPS, size=size, audio=None, path=path, preset="ultrafast")
    return list(read_frames(path))


@pytest.mark.parametrize("tile", [16, 32, 64])
def test_frame_enhancer_equals_enhancing_every_frame_in_full(tmp_path, tile):
    frames = _talking_layer(tmp_path)
    enhancer = FrameEnhancer(sharpen=0.35, saturation=1.06, tile=tile)
    for index, frame in enumerate(frames):
        assert np.array_equal(enhancer(frame), enhance_frame(frame, sharpen=0.35, saturation=1.06)), index


def test_frame_enhancer_returns_a_new_read_only_frame_each_call_and_follows_a_size_change(tmp_path):
    frames = _talking_layer(tmp_path)
    enhancer = FrameEnhancer()
    first = enhancer(frames[0])
    second = enhancer(frames[0])
    assert second is not first and np.array_equal(second, first)
    with pytest.raises(ValueError):  # the next frame is made from it: a reader cannot scribble on it
        second[:] = 0
    assert np.array_equal(enhancer(frames[1]), enhance_frame(frames[1]))
    other = np.ascontiguousarray(astronaut()[:48, :64])
    assert np.array_equal(enhancer(other), enhance_frame(other))
    assert np.array_equal(enhancer(frames[2]), enhance_frame(frames[2]))
