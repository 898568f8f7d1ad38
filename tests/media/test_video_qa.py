import numpy as np
import pytest

from avatar_assets.media.lipsync import mouth_openness
from avatar_assets.media.video import encode_frames, poster_frame
from avatar_assets.media.video_qa import analyse_video
from tests.media.video_fixtures import FPS, SR, shot, speechlike, talking_frames

SIZE = (320, 240)


def _drifting(n, seed=0):
    """Content that always moves a little (a slow pan over noise), so nothing in it is frozen."""
    rng = np.random.default_rng(seed)
    big = np.repeat(np.repeat(rng.integers(30, 220, (60, 120, 3), dtype=np.uint8), 8, 0), 8, 1)
    return [np.ascontiguousarray(big[40:280, 2 * i:2 * i + 320]) for i in range(n)]


def _encode(tmp_path, frames, audio=True, name="v.mp4"):
    samples = speechlike(len(frames) / FPS, seed=1)[0] if audio else None
    return encode_frames(frames, fps=FPS, size=SIZE, audio=(samples, SR) if audio else None,
                         path=tmp_path / name).path


def test_clean_video_passes_with_the_right_facts(tmp_path):
    path = _encode(tmp_path, _drifting(75))
    qa = analyse_video(path, expected_fps=FPS, expected_size=SIZE)
    assert qa.passed, qa.issues
    assert (qa.width, qa.height, qa.fps, qa.frame_count) == (320, 240, 25.0, 75)
    assert qa.duration_s == pytest.approx(3.0)
    assert qa.audio_duration_s == pytest.approx(qa.duration_s, abs=1 / FPS)
    assert qa.video_codec == "h264" and qa.audio_codec == "aac"
    assert qa.longest_black_s == 0 and qa.longest_frozen_s < 0.2
    assert -40 < qa.loudness_lufs < -10
    assert len(qa.frames) == 75 and set(qa.frames[1]) == {"frame", "time_s", "mean_luma", "mean_diff", "max_diff"}
    assert np.isnan(qa.frames[0]["max_diff"]) and qa.frames[5]["max_diff"] > 0


@pytest.mark.parametrize("at_s", [1.0, 1.02, 0.0, 99.0])
def test_the_poster_comes_from_the_same_decode_as_the_scan(tmp_path, at_s):
    """stitched_video's poster is kept from its gate's decode: the very frame `poster_frame` picks (clamped into
    the video), and the scan is the one made without it; the scratch file it passed through is gone."""
    path = _encode(tmp_path, _drifting(75))
    alone = analyse_video(path, expected_fps=FPS)
    qa = analyse_video(path, expected_fps=FPS, poster_at_s=at_s, threads=1)
    assert alone.poster is None and qa.poster.shape == (240, 320, 3)
    assert np.array_equal(qa.poster, poster_frame(path, at_s))
    assert qa.frames[1:] == alone.frames[1:] and qa.issues == alone.issues
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_a_truncated_video_asked_for_a_poster_fails_as_the_poster_alone_does(tmp_path):
    """Its header promises frames its data lacks, so the poster's frame is missing from the shared decode (where
    ffmpeg fails the empty still): the error is then `poster_frame`'s own, naming the time, not ffmpeg's."""
    path = _encode(tmp_path, _drifting(75))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert analyse_video(path, expected_fps=FPS).frame_count < 75
    with pytest.raises(ValueError, match=r"no frame decoded at 1\.0s") as alone:
        poster_frame(path, 2.8)
    with pytest.raises(ValueError, match=r"no frame decoded at 1\.0s") as shared:
        analyse_video(path, expected_fps=FPS, poster_at_s=2.8)
    assert str(shared.value) == str(alone.value)


def test_injected_black_is_found(tmp_path):
    frames = _drifting(100)
    black = np.zeros_like(frames[0])
    frames[30:30 + int(1.5 * FPS)] = [black] * int(1.5 * FPS)
    qa = analyse_video(_encode(tmp_path, frames))
    assert qa.longest_black_s == pytest.approx(1.5, abs=1 / FPS)
    assert any("black" in i for i in qa.issues)
    assert qa.frames[40]["mean_luma"] < 0.02


def test_injected_freeze_is_found(tmp_path):
    frames = _drifting(100)
    frozen = int(1.5 * FPS)
    frames[40:40 + frozen] = [frames[40]] * frozen
    qa = analyse_video(_encode(tmp_path, frames))
    assert qa.longest_frozen_s == pytest.approx(1.5, abs=1.5 / FPS)
    assert any("frozen" in i for i in qa.issues)


def test_static_talking_head_with_moving_mouth_is_not_frozen(tmp_path):
    samples, words = speechlike(4.0, seed=2, pauses=False)
    base = shot(SIZE, "mid")  # smallest mouth of the talking shots
    frames = talking_frames(base, mouth_openness(samples, SR, FPS, words))
    path = encode_frames(frames, fps=FPS, size=SIZE, audio=(samples, SR), path=tmp_path / "talk.mp4").path
    qa = analyse_video(path)
    assert qa.longest_frozen_s < 0.5, qa.longest_frozen_s
    # ...while the same image without mouth motion is frozen end to end.
    still = encode_frames([base.frame] * 100, fps=FPS, size=SIZE, audio=(samples, SR), path=tmp_path / "still.mp4")
    assert analyse_video(still.path).longest_frozen_s == pytest.approx(4.0, abs=1 / FPS)


def test_expectation_mismatches_and_missing_audio_are_reported(tmp_path):
    qa = analyse_video(_encode(tmp_path, _drifting(30), audio=False), expected_fps=30, expected_size=(1080, 1920))
    assert not qa.passed
    text = " ".join(qa.issues)
    assert "fps 25 != expected 30" in text and "320x240 != expected 1080x1920" in text and "no audio" in text
    assert qa.loudness_lufs is None and qa.audio_duration_s is None


def test_loudness_tracks_level(tmp_path):
    t = np.arange(int(2.0 * SR)) / SR
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    frames = _drifting(50)
    quiet = encode_frames(frames, fps=FPS, size=SIZE, audio=(0.05 * tone, SR), path=tmp_path / "q.mp4")
    loud = encode_frames(frames, fps=FPS, size=SIZE, audio=(0.2 * tone, SR), path=tmp_path / "l.mp4")
    lq, ll = analyse_video(quiet.path).loudness_lufs, analyse_video(loud.path).loudness_lufs
    assert ll - lq == pytest.approx(20 * np.log10(4), abs=0.5)
