"""Audio-driven mouth animation for a still avatar, and the measurements the QA gate uses to check it.

Openness comes from the speech loudness per video frame (in dB, so quiet syllables still move the
mouth) gated by word timings when they are known; the mouth is drawn open by pulling the lower lip
down and painting the inside of the mouth. The same pixels are then measured back from the rendered
video to estimate audio/video lag.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

Box = tuple[int, int, int, int]  # x, y, w, h

# Pauses longer than this close the mouth completely; shorter ones are coarticulation.
MAX_BRIDGED_GAP_S = 0.15
# Loudness range mapped onto 0..1 openness, in dB below the loud end of the speech.
_DYNAMIC_RANGE_DB = 24.0
# Frames quieter than this (relative to the loud end, and absolute) count as silence.
_SILENCE_BELOW_PEAK_DB = 32.0
_SILENCE_FLOOR_DBFS = -55.0


def mouth_box_from_face(face_box: Box) -> Box:
    """Mouth box from a frontal face detector box: centred, half the face wide, around the lip line
    at 86 % of the box height (checked on the sample portrait)."""
    fx, fy, fw, fh = face_box
    w, h = round(0.5 * fw), round(0.26 * fh)
    cx, cy = fx + fw / 2, fy + 0.86 * fh
    return round(cx - w / 2), round(cy - h / 2), w, h


def speech_envelope(samples: np.ndarray, sr: int, fps: float, n_frames: int | None = None) -> np.ndarray:
    """RMS of the audio heard while each video frame is on screen ([i/fps, (i+1)/fps))."""
    samples = np.asarray(samples, np.float32)
    n = n_frames if n_frames is not None else int(round(len(samples) / sr * fps))
    edges = np.clip(np.round(np.arange(n + 1) * sr / fps).astype(np.int64), 0, len(samples))
    energy = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    lengths = np.maximum(np.diff(edges), 1)
    return np.sqrt((energy[edges[1:]] - energy[edges[:-1]]) / lengths).astype(np.float32)


def _word_span(word: Any) -> tuple[float, float]:
    """Words may be (start_s, end_s, ...) tuples or objects with start_s/end_s."""
    if hasattr(word, "start_s"):
        return float(word.start_s), float(word.end_s)
    return float(word[0]), float(word[1])


def _bridge_short_gaps(active: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill runs of inactive frames of at most `max_gap` frames that sit between active frames."""
    out = active.copy()
    idx = np.flatnonzero(active)
    for a, b in zip(idx[:-1], idx[1:]):
        if 1 < b - a <= max_gap + 1:
            out[a + 1:b] = True
    return out


def _speech_mask(db: np.ndarray, peak_db: float, fps: float, words: Sequence[Any] | None) -> np.ndarray:
    n = len(db)
    if words is not None:
        centres = (np.arange(n) + 0.5) / fps
        active = np.zeros(n, bool)
        for start, end in sorted(_word_span(w) for w in words):
            active |= (centres >= start) & (centres < end)
    else:
        active = (db > peak_db - _SILENCE_BELOW_PEAK_DB) & (db > _SILENCE_FLOOR_DBFS)
    return _bridge_short_gaps(active, int(np.floor(MAX_BRIDGED_GAP_S * fps + 1e-9)))


def mouth_openness(
    samples: np.ndarray, sr: int, fps: float, words: Sequence[Any] | None = None, n_frames: int | None = None
) -> np.ndarray:
    """Per-frame mouth openness 0..1: follows speech loudness, smoothed without lag, and exactly 0
    in silences and in pauses between words longer than ~150 ms.

    `words` are (start_s, end_s, ...) tuples or objects with start_s/end_s; when given they decide
    where speech is, otherwise the energy does. `n_frames` pins the length to the video's.
    """
    env = speech_envelope(samples, sr, fps, n_frames)
    if len(env) == 0:
        return env
    db = 20 * np.log10(env + 1e-9)
    voiced = db > _SILENCE_FLOOR_DBFS
    peak_db = float(np.percentile(db[voiced], 95)) if voiced.any() else _SILENCE_FLOOR_DBFS
    level = np.clip((db - (peak_db - _DYNAMIC_RANGE_DB)) / _DYNAMIC_RANGE_DB, 0.0, 1.0)
    # Symmetric smoothing: takes the frame-to-frame jitter out without delaying the mouth.
    level = gaussian_filter1d(level, sigma=max(0.5, 0.03 * fps), mode="nearest")
    mask = _speech_mask(db, peak_db, fps, words)
    return np.where(mask, np.clip(level, 0.0, 1.0), 0.0).astype(np.float32)


def animate_mouth(frame: np.ndarray, mouth_box: Box, openness: float) -> np.ndarray:
    """Open the mouth by `openness` (0..1): the lower lip and chin are pulled down and the gap is
    painted as a dark mouth interior with a hint of teeth. Openness 0 returns the frame unchanged."""
    out = frame.copy()
    if openness <= 0:
        return out
    openness = min(float(openness), 1.0)
    fh, fw = frame.shape[:2]
    x, y, w, h = mouth_box
    lip_y = y + h / 2
    drop = openness * 0.5 * h  # gap height in pixels at full openness
    # Region touched: a little wider than the box, from the lip line down past the chin.
    x0, x1 = max(0, int(x - 0.15 * w)), min(fw, int(np.ceil(x + 1.15 * w)))
    y0, y1 = max(0, int(lip_y - 0.25 * h)), min(fh, int(np.ceil(y + h + 1.2 * h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    roi = frame[y0:y1, x0:x1]
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    cx = x + w / 2
    across = np.clip(1 - ((xx - cx) / (0.65 * w)) ** 2, 0, 1) ** 1.5
    below = np.clip(1 - (yy - lip_y) / (y1 - lip_y), 0, 1)
    shift = np.where(yy >= lip_y, drop * across * below, 0).astype(np.float32)
    warped = cv2.remap(roi, xx - x0, yy - y0 - shift, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    # Inside of the mouth: a lens shape filling the gap (pointed at the corners), teeth at the top,
    # dark throat in the middle, a hint of tongue at the bottom.
    rx, ry = 0.4 * w * (0.8 + 0.2 * openness), drop / 2 + 0.5
    ey = lip_y + drop / 2 - 0.5
    half_h = ry * np.clip(1 - ((xx - cx) / rx) ** 2, 0, 1) ** 0.6
    inner = (np.clip(half_h - np.abs(yy - ey) + 0.5, 0, 1) * np.clip(half_h, 0, 1))[..., None]  # ~1 px soft edge
    v = np.clip((yy - (ey - ry)) / (2 * ry), 0, 1)[..., None]  # 0 at the top of the gap, 1 at the bottom
    teeth = np.clip(1 - v / 0.22, 0, 1) * min(1.0, openness * 1.5)
    tongue = np.clip((v - 0.65) / 0.35, 0, 1)
    colour = (np.array([40, 12, 16], np.float32) * (1 - teeth - tongue)
              + np.array([200, 192, 184], np.float32) * teeth + np.array([120, 48, 56], np.float32) * tongue)
    blended = warped.astype(np.float32) * (1 - inner * 0.95) + colour * inner * 0.95
    out[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out


def mouth_motion(frames: Iterable[np.ndarray], mouth_box: Box, rest_from: np.ndarray | None = None) -> np.ndarray:
    """Per-frame deviation of the mouth region from its rest pose, in luma levels.

    The rest pose is the per-pixel median of the frames `rest_from` marks (the silences, when the caller
    knows them from the word timings), else the per-pixel bright end over the clip (an open mouth is
    darker than a closed one). Either way the signal tracks openness rather than frame-to-frame change
    and can be correlated with the speech envelope.
    """
    x, y, w, h = mouth_box
    crops = []
    for frame in frames:  # RGB, or luma as `video.read_frames(gray=True)` decodes it (3x less to pipe)
        region = np.ascontiguousarray(frame[max(0, y):y + h, max(0, x):x + w])
        crops.append((region if region.ndim == 2 else cv2.cvtColor(region, cv2.COLOR_RGB2GRAY)).astype(np.float32))
    if not crops:
        return np.zeros(0, np.float32)
    stack = np.stack(crops)
    if rest_from is not None and np.any(rest_from):
        rest = np.median(stack[np.asarray(rest_from, bool)], axis=0)
    else:
        rest = np.percentile(stack, 90, axis=0)
    return np.abs(stack - rest).mean(axis=(1, 2)).astype(np.float32)


def estimate_lag_frames(openness_signal: np.ndarray, audio_envelope: np.ndarray, max_lag: int = 10) -> int:
    """Lag (frames) of the mouth behind the audio by normalised cross-correlation; positive means the
    mouth moves late, negative early."""
    a = np.asarray(openness_signal, np.float64)
    b = np.asarray(audio_envelope, np.float64)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    best_lag, best = 0, -np.inf
    for lag in range(-max_lag, max_lag + 1):
        # openness[i] is compared with envelope[i - lag]
        x = a[max(lag, 0):n + min(lag, 0)]
        y = b[max(-lag, 0):n - max(lag, 0)]
        if len(x) < 3:
            continue
        x, y = x - x.mean(), y - y.mean()
        denom = np.sqrt((x * x).sum() * (y * y).sum())
        score = (x * y).sum() / denom if denom > 0 else -np.inf
        if score > best or (score == best and abs(lag) < abs(best_lag)):
            best, best_lag = score, lag
    return best_lag
