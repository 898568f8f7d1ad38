"""Seamless talking-face animation on the CPU: a landmark mesh warp driven by visemes and the speech
envelope, with an inner-mouth fill, natural blinks and a subtle idle head motion.

The face is a triangle mesh over dlib's 68 landmarks inside a fixed ring of points around the head.
Every motion (jaw drop, lip spread and rounding, each eyelid, head shift and roll) moves some landmarks
and never the ring, so the displacement field is continuous and exactly zero at the ring: the warped face
blends into the untouched frame with no edge. The field is linear in the motions, so each motion's field
is computed once per keyframe; a frame costs one weighted sum of the fields at half resolution (they
are piecewise linear, so nothing is lost), one upscale and one remap of the image.

Controls are per-frame arrays (`CONTROL_NAMES`); `face_controls` derives them from the speech (phoneme
events for visemes, the envelope for loudness, word timings for silences) and a seed (blinks, idle motion).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

CONTROL_NAMES = ("jaw", "spread", "round", "blink_left", "blink_right", "head_x", "head_y", "head_roll")
JAW, SPREAD, ROUND, BLINK_L, BLINK_R, HEAD_X, HEAD_Y, HEAD_ROLL = range(len(CONTROL_NAMES))

JAW_DROP = 0.26  # lower-lip travel at full openness, in mouth widths
SPREAD_AMOUNT = 0.07  # lip-corner travel outward, in mouth widths
ROUND_AMOUNT = 0.13  # lip-corner travel inward
HEAD_SHIFT = 0.018  # idle head shift amplitude, in eye distances
HEAD_ROLL_DEG = 0.7  # idle head roll amplitude
BLINK_INTERVAL_S = (2.0, 6.0)
BLINK_CLOSE_S, BLINK_OPEN_S = 0.07, 0.12

# Viseme targets per espeak-ng phoneme mnemonic (stress and length marks stripped): jaw, spread, round.
_OPEN, _MID, _CLOSE = 1.0, 0.65, 0.35
_VISEMES: dict[str, tuple[float, float, float]] = {
    **{p: (0.0, 0.0, 0.0) for p in ("p", "b", "m")},  # lips pressed
    **{p: (0.12, 0.2, 0.0) for p in ("f", "v")},  # lower lip to the teeth
    **{p: (_OPEN, 0.2, 0.0) for p in ("a", "A", "aI", "aU", "{", "V", "a#", "A@", "a@")},
    **{p: (_OPEN * 0.9, 0.0, 0.6) for p in ("O", "0", "OI", "O@")},
    **{p: (_MID, 0.1, 0.0) for p in ("@", "3", "@L", "@2", "@5", "e@", "E")},
    **{p: (_MID, 0.7, 0.0) for p in ("e", "eI", "E2")},
    **{p: (_MID, 0.0, 0.8) for p in ("oU", "o", "U@")},
    **{p: (_CLOSE, 1.0, 0.0) for p in ("i", "I", "i@", "I2", "I#", "y")},
    **{p: (_CLOSE, 0.0, 1.0) for p in ("u", "U", "u@")},
    **{p: (0.15, 0.0, 1.0) for p in ("w",)},
    **{p: (0.2, 0.6, 0.0) for p in ("s", "z", "j")},
    **{p: (0.25, 0.0, 0.6) for p in ("S", "Z", "tS", "dZ", "r", "r-")},
    **{p: (0.3, 0.2, 0.0) for p in ("T", "D", "l", "n", "t", "d")},
    **{p: (0.4, 0.1, 0.0) for p in ("k", "g", "N", "h", "x")},
}
_DEFAULT_VISEME = (0.3, 0.1, 0.0)
_SILENT = {"_", "_:", "_!", "_|", ""}


def viseme(phoneme: str) -> tuple[float, float, float]:
    name = phoneme.strip().lstrip("',%=").rstrip(":;")
    if name in _SILENT:
        return (0.0, 0.0, 0.0)
    return _VISEMES.get(name, _VISEMES.get(name[:1], _DEFAULT_VISEME))


def _span(item: Any) -> tuple[str, float, float]:
    if hasattr(item, "start_s"):
        return str(getattr(item, "phoneme", "")), float(item.start_s), float(item.end_s)
    return str(item[0]), float(item[1]), float(item[2])


def viseme_track(phonemes: Sequence[Any], fps: float, n_frames: int) -> np.ndarray:
    """(n_frames, 3) jaw/spread/round targets from timed phonemes, smoothed for coarticulation."""
    track = np.zeros((n_frames, 3), np.float32)
    centres = (np.arange(n_frames) + 0.5) / fps
    for item in phonemes:
        phoneme, start, end = _span(item)
        track[(centres >= start) & (centres < end)] = viseme(phoneme)
    return gaussian_filter1d(track, sigma=max(0.5, 0.025 * fps), axis=0, mode="nearest")


def blink_track(duration_s: float, fps: float, n_frames: int, seed: int) -> np.ndarray:
    """Eyelid closure 0..1 per frame: a blink every 2-6 s (seeded), closing fast and opening slower."""
    rng = np.random.default_rng(seed)
    times = (np.arange(n_frames) + 0.5) / fps
    closure = np.zeros(n_frames, np.float32)
    start = float(rng.uniform(0.6, 2.0))
    while start < duration_s:
        since = times - start
        closing = np.clip(since / BLINK_CLOSE_S, 0, 1)
        opening = np.clip(1 - (since - BLINK_CLOSE_S) / BLINK_OPEN_S, 0, 1)
        closure = np.maximum(closure, np.where(since < 0, 0, np.where(since < BLINK_CLOSE_S, closing, opening)))
        start += float(rng.uniform(*BLINK_INTERVAL_S))
    return closure


def idle_track(n_frames: int, fps: float, seed: int) -> np.ndarray:
    """(n_frames, 3) head shift x, y (eye distances) and roll (radians): slow sums of seeded sines."""
    rng = np.random.default_rng(seed + 1)
    t = np.arange(n_frames) / fps
    out = np.zeros((n_frames, 3), np.float32)
    amplitudes = (HEAD_SHIFT, HEAD_SHIFT * 0.6, np.radians(HEAD_ROLL_DEG))
    for column, amplitude in enumerate(amplitudes):
        periods = rng.uniform(3.0, 8.0, size=2)
        phases = rng.uniform(0, 2 * np.pi, size=2)
        wave = sum(np.sin(2 * np.pi * t / p + ph) for p, ph in zip(periods, phases)) / 2
        out[:, column] = amplitude * wave
    return out


def face_controls(
    openness: np.ndarray, phonemes: Sequence[Any] | None, fps: float, *, seed: int = 0
) -> np.ndarray:
    """(n_frames, 8) controls in `CONTROL_NAMES` order.

    `openness` (0..1, exactly 0 in silences: `lipsync.mouth_openness`) scales the viseme shapes, so the
    mouth is closed and still whenever nobody speaks; without phonemes the jaw follows the envelope alone.
    """
    n = len(openness)
    controls = np.zeros((n, len(CONTROL_NAMES)), np.float32)
    speaking = np.clip(openness / 0.15, 0, 1)
    if phonemes:
        shapes = viseme_track(phonemes, fps, n)
        controls[:, JAW] = openness * (0.25 + 0.75 * shapes[:, 0])
        controls[:, SPREAD] = speaking * shapes[:, 1]
        controls[:, ROUND] = speaking * shapes[:, 2]
    else:
        controls[:, JAW] = openness
    blinks = blink_track(n / fps, fps, n, seed)
    controls[:, BLINK_L] = controls[:, BLINK_R] = blinks
    controls[:, HEAD_X:] = idle_track(n, fps, seed)
    return controls


# --------------------------------------------------------------------------- the mesh warp


def _ring(points: np.ndarray, frame_shape: tuple[int, int]) -> np.ndarray:
    """Fixed points around the head: an ellipse well outside the face, reaching down the neck."""
    centre = points[27:36].mean(axis=0)  # the nose
    width = np.ptp(points[:17, 0])
    height = np.ptp(points[:, 1])
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    rx, ry = 0.9 * width, 0.95 * height
    ring = np.stack([centre[0] + rx * np.cos(angles), centre[1] + ry * np.sin(angles)], axis=1)
    ring[:, 1] += np.where(np.sin(angles) > 0, 0.25 * height * np.sin(angles), 0)  # room for the jaw to drop
    h, w = frame_shape
    return np.clip(ring, [0, 0], [w - 1, h - 1])


def _motion_vectors(points: np.ndarray) -> np.ndarray:
    """(controls, 68, 2) landmark displacement of each control at 1.0, in pixels."""
    eye_l, eye_r = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    across = (eye_r - eye_l) / max(np.linalg.norm(eye_r - eye_l), 1e-6)
    down = np.array([-across[1], across[0]])
    mouth_w = np.linalg.norm(points[54] - points[48])
    eye_d = np.linalg.norm(eye_r - eye_l)
    mouth_centre = points[48:60].mean(axis=0)
    vectors = np.zeros((len(CONTROL_NAMES), 68, 2))

    drop = JAW_DROP * mouth_w * down
    for index, weight in {8: 1.0, 7: 0.92, 9: 0.92, 6: 0.75, 10: 0.75, 5: 0.5, 11: 0.5, 4: 0.22, 12: 0.22, 3: 0.06, 13: 0.06}.items():
        vectors[JAW, index] = weight * drop
    for index, weight in {57: 1.0, 66: 1.0, 56: 0.95, 58: 0.95, 65: 0.92, 67: 0.92, 55: 0.8, 59: 0.8,
                          60: 0.42, 64: 0.42, 48: 0.35, 54: 0.35}.items():  # a rounded opening, not a V
        vectors[JAW, index] = weight * drop
    for index in (61, 62, 63):
        vectors[JAW, index] = -0.06 * drop  # the upper lip lifts a little
    for index in (50, 51, 52):
        vectors[JAW, index] = -0.03 * drop

    for control, amount in ((SPREAD, SPREAD_AMOUNT), (ROUND, -ROUND_AMOUNT)):
        for index, weight in {48: 1.0, 60: 1.0, 54: 1.0, 64: 1.0, 49: 0.5, 53: 0.5, 59: 0.5, 55: 0.5}.items():
            side = np.sign(np.dot(points[index] - mouth_centre, across))
            vectors[control, index] = weight * amount * mouth_w * side * across
    for index in (50, 51, 52, 56, 57, 58, 61, 62, 63, 65, 66, 67):  # rounding pushes the lips out: taller
        outward = np.sign(np.dot(points[index] - mouth_centre, down))
        vectors[ROUND, index] += 0.05 * mouth_w * outward * down

    for control, upper, lower in ((BLINK_L, (37, 38), (41, 40)), (BLINK_R, (43, 44), (47, 46))):
        for u, low in zip(upper, lower):
            vectors[control, u] = 0.95 * (points[low] - points[u])

    vectors[HEAD_X, :] = eye_d * across
    vectors[HEAD_Y, :] = eye_d * down
    pivot = points[30]
    offset = points - pivot
    vectors[HEAD_ROLL] = np.stack([-offset[:, 1], offset[:, 0]], axis=1)  # d/dθ of a rotation about the nose tip
    return vectors


def _barycentric_fields(vertices: np.ndarray, triangles: np.ndarray, values: np.ndarray,
                        origin: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Piecewise-linear interpolation of per-vertex `values` (K, V, 2) over a (h, w) grid: (K, h, w, 2)."""
    w, h = size
    local = vertices - np.array(origin, np.float64)
    index = np.full((h, w), -1, np.int32)
    for t, tri in enumerate(triangles):
        cv2.fillConvexPoly(index, np.round(local[tri] * 16).astype(np.int32), t, lineType=cv2.LINE_8, shift=4)
    ys, xs = np.nonzero(index >= 0)
    tri = triangles[index[ys, xs]]
    a, b, c = local[tri[:, 0]], local[tri[:, 1]], local[tri[:, 2]]
    v0, v1 = b - a, c - a
    p = np.stack([xs, ys], axis=1) - a
    det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
    det = np.where(np.abs(det) < 1e-9, 1e-9, det)
    l1 = (p[:, 0] * v1[:, 1] - p[:, 1] * v1[:, 0]) / det
    l2 = (v0[:, 0] * p[:, 1] - v0[:, 1] * p[:, 0]) / det
    weights = np.clip(np.stack([1 - l1 - l2, l1, l2], axis=1), 0, 1)
    weights /= weights.sum(axis=1, keepdims=True)
    fields = np.zeros((values.shape[0], h, w, 2), np.float32)
    for k in range(values.shape[0]):
        fields[k, ys, xs] = np.einsum("nj,njc->nc", weights, values[k][tri])
    return fields


@dataclass(frozen=True, eq=False)
class FaceRig:
    """One keyframe ready to animate: the region that moves and each control's displacement field."""

    keyframe: np.ndarray
    points: np.ndarray  # (68, 2) landmarks in keyframe pixels
    vectors: np.ndarray  # (controls, 68, 2) landmark motion per control
    origin: tuple[int, int]
    size: tuple[int, int]  # (w, h) of the region
    fields: np.ndarray  # (controls, h/2, w/2, 2): displacement in pixels at every other pixel of the region
    grid: np.ndarray  # (h, w, 2) keyframe pixel coordinates of the region
    half_grid: np.ndarray  # (h/2, w/2, 2) region coordinates of the fields' sample points
    mouth_colour: np.ndarray
    teeth_colour: np.ndarray
    scratch: dict = field(default_factory=dict, repr=False)

    @property
    def region(self) -> tuple[int, int, int, int]:
        x, y = self.origin
        return x, y, self.size[0], self.size[1]

    def moved_points(self, control: np.ndarray) -> np.ndarray:
        return self.points + np.tensordot(control, self.vectors, axes=1)

    def render(self, control: np.ndarray) -> np.ndarray:
        """The keyframe with the face moved by one frame's controls."""
        control = np.asarray(control, np.float32)
        out = self.keyframe.copy()
        if not np.any(control):
            return out
        x, y, w, h = self.region
        # Over all the fields, zeros included: selecting the active ones would copy them every frame. einsum, not
        # tensordot: tensordot is a BLAS call, whose threads spin on the cores the other render threads need
        # (it nearly doubled the lip-sync render's CPU time on 2 cores).
        displacement = np.einsum("k,k...->...", control, self.fields)
        # Backward map with one fixed-point step: source = p - D(p - D(p)), accurate where the field bends.
        first = (self.half_grid - displacement) / 2.0
        refined = cv2.remap(displacement, first, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        # Full-size buffers are reused from frame to frame (fresh ones cost page faults on every frame), one
        # set per thread: frames are rendered side by side (talking_head.render_frames).
        thread = threading.get_ident()
        up = self.scratch.setdefault((thread, "up"), np.empty((h, w, 2), np.float32))
        source = self.scratch.setdefault((thread, "source"), np.empty((h, w, 2), np.float32))
        cv2.resize(refined, (w, h), dst=up, interpolation=cv2.INTER_LINEAR)
        cv2.subtract(self.grid, up, dst=source)
        region = cv2.remap(self.keyframe, source, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        region = self._fill_mouth(region, self.moved_points(control) - np.array([x, y]), float(control[JAW]))
        out[y:y + h, x:x + w] = region
        return out

    def _fill_mouth(self, region: np.ndarray, points: np.ndarray, jaw: float) -> np.ndarray:
        """Paint the opening between the moved inner lips: dark mouth, upper teeth, soft 1 px edge."""
        inner = _smooth_closed(points[60:68])
        gap = np.linalg.norm(points[66] - points[62])
        if jaw <= 0.02 or gap < 1.0:
            return region
        x0, y0 = np.floor(inner.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(inner.max(axis=0)).astype(int) + 3
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, region.shape[1]), min(y1, region.shape[0])
        if x1 - x0 < 2 or y1 - y0 < 2:
            return region
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round((inner - [x0, y0]) * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.7)[..., None]
        # Teeth under the upper lip, fading into the dark of the mouth.
        upper = np.interp(np.arange(x0, x1), points[[60, 61, 62, 63, 64], 0], points[[60, 61, 62, 63, 64], 1])
        rows = np.arange(y0, y1)[:, None] - upper[None, :]
        band = max(min(0.45 * gap, 0.15 * np.linalg.norm(points[64] - points[60])), 1.0)
        teeth = np.clip(1.0 - rows / band, 0, 1)[..., None] * min(1.0, jaw * 1.5)
        colour = self.mouth_colour * (1 - teeth) + self.teeth_colour * teeth
        patch = region[y0:y1, x0:x1].astype(np.float32)
        region[y0:y1, x0:x1] = np.clip(patch * (1 - alpha) + colour * alpha + 0.5, 0, 255).astype(np.uint8)
        return region


def build_rig(keyframe: np.ndarray, landmarks: np.ndarray) -> FaceRig:
    """Triangulate the landmarks inside their fixed ring and precompute every control's field."""
    from scipy.spatial import Delaunay

    points = np.asarray(landmarks, np.float64)
    ring = _ring(points, keyframe.shape[:2])
    vertices = np.concatenate([points, ring])
    triangles = Delaunay(vertices).simplices
    vectors = _motion_vectors(points)
    values = np.concatenate([vectors, np.zeros((len(CONTROL_NAMES), len(ring), 2))], axis=1)
    x0, y0 = np.floor(ring.min(axis=0)).astype(int)
    x1, y1 = np.ceil(ring.max(axis=0)).astype(int) + 1
    size = (int(x1 - x0), int(y1 - y0))
    # Sampled at every other pixel of the region: (vertices - origin) / 2 on a half-size grid.
    half = ((size[0] + 1) // 2, (size[1] + 1) // 2)
    fields = _barycentric_fields((vertices - [x0, y0]) / 2.0, triangles, values, (0, 0), half)
    gy, gx = np.mgrid[0:size[1], 0:size[0]].astype(np.float32)
    grid = np.stack([gx, gy], axis=-1)
    lips = keyframe[_inside(points[48:60], keyframe.shape[:2])]
    lip_colour = lips.reshape(-1, 3).mean(axis=0) if lips.size else np.array([150, 90, 90], np.float32)
    return FaceRig(
        keyframe=keyframe,
        points=points,
        vectors=vectors,
        origin=(int(x0), int(y0)),
        size=size,
        fields=np.ascontiguousarray(fields),
        grid=grid + np.array([x0, y0], np.float32),
        half_grid=np.ascontiguousarray(grid[::2, ::2]),
        mouth_colour=(0.32 * lip_colour).astype(np.float32),
        teeth_colour=np.array([214, 208, 198], np.float32) * 0.85,
    )


def _smooth_closed(polygon: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Chaikin corner cutting: the 8 inner-lip points become a rounded outline."""
    for _ in range(rounds):
        following = np.roll(polygon, -1, axis=0)
        polygon = np.stack([0.75 * polygon + 0.25 * following, 0.25 * polygon + 0.75 * following], axis=1).reshape(-1, 2)
    return polygon


def _inside(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    return mask.astype(bool)
