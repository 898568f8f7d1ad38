import numpy as np
import pytest

from avatar_assets.media.lipsync import (
    animate_mouth,
    estimate_lag_frames,
    mouth_box_from_face,
    mouth_motion,
    mouth_openness,
    speech_envelope,
)
from avatar_assets.media.video import encode_frames, read_audio, read_frames
from tests.media.video_fixtures import FACE_BOX, FPS, SR, astronaut, shot, speechlike, talking_frames


def _long_gaps(words, min_gap=0.2):
    return [(a[1], b[0]) for a, b in zip(words, words[1:]) if b[0] - a[1] >= min_gap]


def _frames_inside(start, end):
    """Frames whose whole display interval lies inside [start, end)."""
    return range(int(np.ceil(start * FPS)), int(np.floor(end * FPS)))


def test_mouth_box_matches_the_sample_portrait():
    x, y, w, h = mouth_box_from_face(FACE_BOX)
    rx0, ry0, rx1, ry1 = 205, 140, 255, 165  # measured by eye on the sample
    ix = max(0, min(x + w, rx1) - max(x, rx0))
    iy = max(0, min(y + h, ry1) - max(y, ry0))
    union = w * h + (rx1 - rx0) * (ry1 - ry0) - ix * iy
    assert ix * iy / union > 0.5


@pytest.mark.parametrize("use_words", [True, False])
def test_openness_is_zero_in_silence_and_follows_speech(use_words):
    samples, words = speechlike(6.0, seed=1)
    op = mouth_openness(samples, SR, FPS, words if use_words else None)
    assert len(op) == 6 * FPS and op.dtype == np.float32
    assert op.min() >= 0 and op.max() <= 1 and op.max() > 0.8
    assert np.all(op[_frames_inside(0, words[0][0])] == 0)  # lead-in silence
    assert np.all(op[_frames_inside(words[-1][1], 6.0)] == 0)  # tail
    gaps = _long_gaps(words)
    assert gaps
    for start, end in gaps:
        assert np.all(op[_frames_inside(start, end)] == 0), (start, end)
    speaking = np.concatenate([list(_frames_inside(a, b)) for a, b, _ in words])
    assert (op[speaking] > 0).mean() > 0.8


def test_short_pauses_do_not_snap_the_mouth_shut():
    words = [(0.2, 0.6, "a"), (0.68, 1.2, "b")]  # 80 ms pause
    t = np.arange(int(1.5 * SR)) / SR
    env = ((t >= 0.2) & (t < 0.6)) | ((t >= 0.68) & (t < 1.2))
    samples = (0.2 * np.sin(2 * np.pi * 150 * t) * env).astype(np.float32)
    op = mouth_openness(samples, SR, FPS, words)
    pause = op[int(0.6 * FPS):int(0.68 * FPS) + 1]
    assert pause.max() > 0  # not forced to zero inside a short pause


def test_louder_speech_opens_wider():
    t = np.arange(2 * SR) / SR
    syllables = np.sin(np.pi * ((t * 4) % 1)) * (t > 0.2) * (t < 1.8)
    loud_then_quiet = np.where(t < 1.0, 1.0, 0.15) * syllables * np.sin(2 * np.pi * 150 * t)
    op = mouth_openness(loud_then_quiet.astype(np.float32), SR, FPS)
    assert op[6:24].mean() > op[26:44].mean() + 0.2


def test_animate_mouth_zero_is_identity_and_opening_darkens_only_the_mouth():
    frame = astronaut()
    box = mouth_box_from_face(FACE_BOX)
    assert np.array_equal(animate_mouth(frame, box, 0.0), frame)
    x, y, w, h = box
    darkness = []
    for o in (0.0, 0.3, 0.6, 1.0):
        out = animate_mouth(frame, box, o)
        darkness.append(255 - out[y:y + h, x:x + w].mean())
        changed = np.argwhere(np.any(out != frame, axis=2))
        if o > 0:
            # Everything that changed is in the mouth/chin area around the box.
            assert changed[:, 0].min() >= y and changed[:, 0].max() <= y + 2.5 * h
            assert changed[:, 1].min() >= x - 0.2 * w and changed[:, 1].max() <= x + 1.2 * w
    assert darkness == sorted(darkness) and darkness[-1] > darkness[0] + 15


def test_mouth_motion_tracks_openness():
    base = shot((320, 240))
    rng = np.random.default_rng(0)
    op = np.clip(np.convolve(rng.random(80), np.ones(3) / 3, "same"), 0, 1)
    op[::7] = 0
    motion = mouth_motion(talking_frames(base, op), base.mouth_box)
    assert np.corrcoef(op, motion)[0, 1] > 0.9


@pytest.mark.parametrize("shift", [3, -2, 0])
def test_lag_estimate_recovers_a_known_shift(shift):
    samples, words = speechlike(8.0, seed=2)
    env = speech_envelope(samples, SR, FPS)
    op = mouth_openness(samples, SR, FPS, words)
    shifted = np.roll(op, shift)
    if shift > 0:
        shifted[:shift] = 0
    elif shift < 0:
        shifted[shift:] = 0
    assert estimate_lag_frames(shifted, env, max_lag=10) == shift


def test_lag_and_closed_mouth_measured_back_from_an_encoded_video(tmp_path):
    """The QA path: render with the mouth 3 frames late, encode, decode, measure."""
    samples, words = speechlike(4.0, seed=3)
    op = mouth_openness(samples, SR, FPS, words)
    late = np.concatenate([np.zeros(3, np.float32), op[:-3]])
    base = shot((320, 240))
    result = encode_frames(talking_frames(base, late), fps=FPS, size=(320, 240), audio=(samples, SR),
                           path=tmp_path / "talk.mp4")
    decoded = list(read_frames(result.path))
    motion = mouth_motion(decoded, base.mouth_box)
    env = speech_envelope(read_audio(result.path, sr=SR), SR, FPS, n_frames=len(decoded))
    assert estimate_lag_frames(motion, env) == 3
    # In long pauses the decoded mouth is at rest: motion is at compression-noise level.
    quiet = [i for s, e in _long_gaps(words) for i in _frames_inside(s + 0.12 + 3 / FPS, e)]
    assert quiet and motion[quiet].max() < 0.25 * motion.max()
