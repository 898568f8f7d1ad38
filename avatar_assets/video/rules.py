"""Video QA thresholds and the pure rules behind the speech, lip-sync and video gates."""

from __future__ import annotations

from avatar_assets.identity.rules import MAX_CLIPPING  # speech is held to the voice sample's clipping limit

SPEECH_WPM = 150.0
SPEECH_DURATION_RATIO = (0.5, 2.0)
MAX_SILENCE_S = 2.0
MAX_LAG_FRAMES = 2
MAX_SILENT_MOTION_RATIO = 0.25  # mouth motion in silences vs in speech
# Luma levels: the mouth visibly moves while speaking. A still mouth still measures ~1.5 (the slow push-in
# zoom and encoding noise); real speech measures ~30 at 240 and at 720 px masters.
MIN_SPEECH_MOTION = 5.0
MAX_BLACK_S = 1.0
MAX_FROZEN_S = 1.0
STITCHED_LOUDNESS = (-32.0, -8.0)
TARGET_LUFS = -16.0
LOUDNESS_TOLERANCE = 1.0


def speech_problems(duration_s: float, words: int, longest_silence_s: float, clipping: float) -> list[str]:
    expected = words / SPEECH_WPM * 60
    problems = []
    low, high = SPEECH_DURATION_RATIO
    if not low * expected <= duration_s <= high * expected:
        problems.append(
            f"speech lasts {duration_s:.2f} s for {words} words; expected {low * expected:.2f}-{high * expected:.2f} s"
        )
    if longest_silence_s > MAX_SILENCE_S:
        problems.append(f"silence of {longest_silence_s:.2f} s (at most {MAX_SILENCE_S} s allowed)")
    if clipping > MAX_CLIPPING:
        problems.append(f"{clipping:.2%} of samples clipped (at most {MAX_CLIPPING:.1%})")
    return problems


def lip_sync_problems(lag_frames: int, motion_in_silence: float, motion_in_speech: float) -> list[str]:
    if motion_in_speech < MIN_SPEECH_MOTION:
        # Lag and the silence ratio are correlations of noise when the mouth does not move: not reported.
        return [f"mouth barely moves while speaking ({motion_in_speech:.2f} < {MIN_SPEECH_MOTION})"]
    problems = []
    if abs(lag_frames) > MAX_LAG_FRAMES:
        problems.append(f"mouth motion lags the audio by {lag_frames} frames (at most {MAX_LAG_FRAMES})")
    if motion_in_silence > MAX_SILENT_MOTION_RATIO * max(motion_in_speech, MIN_SPEECH_MOTION):
        problems.append(
            f"mouth moves during silences ({motion_in_silence:.2f} vs {motion_in_speech:.2f} while speaking)"
        )
    return problems


def video_problems(qa, *, expected_size, expected_fps: float, audio_duration_s: float, loudness: tuple[float, float]) -> list[str]:
    problems = []
    frame = 1.0 / expected_fps
    if (qa.width, qa.height) != tuple(expected_size):
        problems.append(f"size {qa.width}x{qa.height}, expected {expected_size[0]}x{expected_size[1]}")
    if abs(qa.fps - expected_fps) > 0.01:
        problems.append(f"{qa.fps:.3f} fps, expected {expected_fps}")
    if abs(qa.duration_s - audio_duration_s) > frame + 1e-6:
        problems.append(f"video lasts {qa.duration_s:.3f} s but the speech {audio_duration_s:.3f} s (more than 1 frame apart)")
    expected_frames = round(qa.duration_s * expected_fps)
    if abs(qa.frame_count - expected_frames) > 1:
        problems.append(f"decoded {qa.frame_count} frames, expected {expected_frames}: the file does not decode fully")
    if qa.longest_black_s > MAX_BLACK_S:
        problems.append(f"black for {qa.longest_black_s:.2f} s (at most {MAX_BLACK_S} s)")
    if qa.longest_frozen_s > MAX_FROZEN_S:
        problems.append(f"frozen for {qa.longest_frozen_s:.2f} s (at most {MAX_FROZEN_S} s)")
    if not qa.has_audio:
        problems.append("no audio track")
    elif qa.loudness_lufs is None or not loudness[0] <= qa.loudness_lufs <= loudness[1]:
        measured = "unmeasurable" if qa.loudness_lufs is None else f"{qa.loudness_lufs:.1f} LUFS"
        problems.append(f"loudness {measured}, expected {loudness[0]} to {loudness[1]} LUFS")
    return problems
