"""The neutral portrait: upright, centred, colour-balanced, on a plain backdrop.

Every later stage (character sheet, animation) assumes this framing, so the
geometry here is fixed by constants rather than tuned per photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from avatar_assets.media.faces import Face, detect_faces
from avatar_assets.media.landmarks import FaceLandmarks, LandmarksUnavailable, find_landmarks

EYE_DISTANCE_RATIO = 0.15  # distance between the eye centres / crop width: one head-and-shoulders scale
FACE_WIDTH_RATIO = 0.34  # face box width / crop width, when no landmarks are available
EYE_LINE_RATIO = 0.40  # eye line height from the top of the crop
DEFAULT_BACKDROP = (200, 203, 208)
_EYE_LEVEL_IN_BOX = 0.38  # where Haar boxes put the eyes when the eye cascade found none
_GRABCUT_SIDE = 384
_GAIN_LIMITS = (0.75, 1.33)
_GAMMA_LIMITS = (0.7, 1.4)

Matrix = tuple[tuple[float, float, float], tuple[float, float, float]]


@dataclass(frozen=True)
class AlignTransform:
    """How a source photo maps onto the aligned crop, for mapping points without re-detecting."""

    rotation_deg: float
    scale: float
    crop_box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the rotated source frame
    matrix: Matrix  # source pixel -> output pixel (2x3 affine)

    def map_point(self, point: tuple[float, float]) -> tuple[float, float]:
        (a, b, c), (d, e, f) = self.matrix
        return (a * point[0] + b * point[1] + c, d * point[0] + e * point[1] + f)

    def map_face(self, face: Face) -> Face:
        cx, cy = self.map_point(face.centre)
        w, h = face.w * self.scale, face.h * self.scale
        return Face(
            x=int(round(cx - w / 2)),
            y=int(round(cy - h / 2)),
            w=int(round(w)),
            h=int(round(h)),
            left_eye=None if face.left_eye is None else self.map_point(face.left_eye),
            right_eye=None if face.right_eye is None else self.map_point(face.right_eye),
        )


@dataclass(frozen=True, eq=False)
class NeutralPortrait:
    """`face` is re-detected on `rgb` when possible; `face_redetected` says whether it was."""

    rgb: np.ndarray
    face: Face
    mask: np.ndarray
    backdrop_rgb: tuple[int, int, int]
    rotation_deg: float
    scale: float
    crop_box: tuple[float, float, float, float]
    face_redetected: bool
    landmarks: FaceLandmarks | None = None  # measured on `rgb`; None when the landmark model is missing


def _eye_anchor(face: Face) -> tuple[tuple[float, float], float]:
    """Eye midpoint and eye-line angle; a level estimate from the box when eyes are missing."""
    angle = face.eye_angle_deg
    if angle is None or face.left_eye is None or face.right_eye is None:
        return (face.x + face.w / 2.0, face.y + _EYE_LEVEL_IN_BOX * face.h), 0.0
    mid = ((face.left_eye[0] + face.right_eye[0]) / 2.0, (face.left_eye[1] + face.right_eye[1]) / 2.0)
    return mid, angle


def align_and_crop(
    rgb: np.ndarray, face: Face, *, size: int = 1024, landmarks: FaceLandmarks | None = None
) -> tuple[np.ndarray, AlignTransform]:
    """Level the eyes, then frame head and shoulders in one affine warp (one resampling).

    With landmarks the eye centres set the angle and the eye distance sets the scale, so the eye line
    is level by construction and every face appears at the same size; without them the Haar eyes and
    box do. Edges are replicated rather than reflected where the crop leaves the photo: a reflection
    next to a face would create a second, mirrored face.
    """
    if landmarks is not None:
        (lx, ly), (rx, ry) = landmarks.left_eye, landmarks.right_eye
        (mx, my), angle = ((lx + rx) / 2.0, (ly + ry) / 2.0), landmarks.eye_angle_deg
        side = landmarks.eye_distance / EYE_DISTANCE_RATIO
    else:
        (mx, my), angle = _eye_anchor(face)
        side = face.w / FACE_WIDTH_RATIO
    x0, y0 = mx - side / 2.0, my - EYE_LINE_RATIO * side
    scale = size / side
    rotation = cv2.getRotationMatrix2D((mx, my), angle, 1.0)
    matrix = scale * (rotation - np.array([[0.0, 0.0, x0], [0.0, 0.0, y0]]))
    source, warp = rgb, matrix
    if scale < 1.0:
        # Area-average down first so the warp itself never decimates (no aliasing).
        source = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        warp = matrix.copy()
        warp[:, :2] /= scale
    aligned = cv2.warpAffine(
        source, warp, (size, size), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE
    )
    transform = AlignTransform(
        rotation_deg=float(angle),
        scale=float(scale),
        crop_box=(float(x0), float(y0), float(x0 + side), float(y0 + side)),
        matrix=tuple(tuple(float(v) for v in row) for row in matrix),  # type: ignore[arg-type]
    )
    return aligned, transform


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def normalize_colour(rgb: np.ndarray) -> np.ndarray:
    """Grey-world white balance and a gentle gamma toward mid-grey.

    The grey-world means come from the less saturated half of the unclipped
    pixels: saturated clothing (an orange suit, a flag) would otherwise be
    "corrected" into a cast of its complementary colour.
    """
    pixels = rgb.reshape(-1, 3).astype(np.float32)
    high, low = pixels.max(axis=1), pixels.min(axis=1)
    usable = (high < 250) & (low > 5)
    if np.count_nonzero(usable) < 100:
        usable = np.ones(len(pixels), dtype=bool)
    chroma = high - low
    neutralish = usable & (chroma <= np.median(chroma[usable]))
    means = pixels[neutralish].mean(axis=0)
    gains = np.clip(means.mean() / np.maximum(means, 1.0), *_GAIN_LIMITS)
    levels = np.arange(256, dtype=np.float32)
    balanced = cv2.LUT(rgb, np.clip(levels[:, None] * gains[None, :], 0, 255).astype(np.uint8).reshape(256, 1, 3))
    mean_luma = float(np.clip(_luminance(balanced).mean() / 255.0, 0.02, 0.98))
    gamma = float(np.clip(math.log(0.5) / math.log(mean_luma), *_GAMMA_LIMITS))
    tone = np.clip(255.0 * (levels / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(balanced, tone)


def _seed_mask(shape: tuple[int, int], face: Face) -> np.ndarray:
    """GrabCut seeds: definite face core, probable head and torso, definite border strip.

    The bottom edge is left undecided: in a head-and-shoulders crop the body
    runs off the bottom of the frame.
    """
    height, width = shape
    cx, cy = face.centre
    w, h = face.w, face.h
    mask = np.full(shape, cv2.GC_PR_BGD, dtype=np.uint8)
    strip = max(2, int(0.03 * width))
    mask[:strip, :] = cv2.GC_BGD
    mask[:, :strip] = cv2.GC_BGD
    mask[:, width - strip :] = cv2.GC_BGD
    torso = np.array(
        [
            (cx - 0.35 * w, face.y + 0.9 * h),
            (cx + 0.35 * w, face.y + 0.9 * h),
            (cx + 1.2 * w, face.y + 1.45 * h),
            (cx + 1.5 * w, height),
            (cx - 1.5 * w, height),
            (cx - 1.2 * w, face.y + 1.45 * h),
        ],
        dtype=np.int32,
    )
    cv2.fillPoly(mask, [torso], cv2.GC_PR_FGD)
    head_centre = (int(round(cx)), int(round(cy - 0.1 * h)))
    cv2.ellipse(mask, head_centre, (int(0.62 * w), int(0.72 * h)), 0, 0, 360, cv2.GC_PR_FGD, -1)
    cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (int(0.3 * w), int(0.38 * h)), 0, 0, 360, cv2.GC_FGD, -1)
    return mask


def _clean_foreground(foreground: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Keep the component holding the face and fill small holes in it."""
    count, labels = cv2.connectedComponents(foreground, connectivity=8)
    face_labels = np.unique(labels[(seeds == cv2.GC_FGD) & (foreground > 0)])
    face_labels = face_labels[face_labels > 0]
    person = np.isin(labels, face_labels).astype(np.uint8) if count > 1 else foreground
    background = (1 - person).astype(np.uint8)
    hole_count, holes, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    small = [i for i in range(1, hole_count) if stats[i, cv2.CC_STAT_AREA] < 0.01 * person.size]
    person[np.isin(holes, small)] = 1
    return person


def replace_background(
    rgb: np.ndarray,
    face: Face,
    *,
    backdrop: tuple[int, int, int] = DEFAULT_BACKDROP,
    iterations: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the person out with GrabCut and composite over a flat backdrop.

    GrabCut runs on a copy at most 384 px wide (it is far too slow at 1024 px);
    the mask is upscaled and feathered, which also hides its blockiness.
    """
    height, width = rgb.shape[:2]
    work_scale = min(1.0, _GRABCUT_SIDE / max(height, width))
    small = cv2.resize(rgb, None, fx=work_scale, fy=work_scale, interpolation=cv2.INTER_AREA)
    small_face = Face(
        int(round(face.x * work_scale)),
        int(round(face.y * work_scale)),
        max(1, int(round(face.w * work_scale))),
        max(1, int(round(face.h * work_scale))),
    )
    seeds = _seed_mask(small.shape[:2], small_face)
    labels = seeds.copy()
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    # GrabCut's GMM initialisation draws from OpenCV's global RNG: pin it so the same photo gives the
    # same bytes in any process, however many portraits were made before (content keys rely on it).
    cv2.setRNGSeed(0)
    cv2.grabCut(bgr, labels, None, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK)
    foreground = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.uint8)
    person = _clean_foreground(foreground, seeds).astype(np.float32)
    alpha = cv2.resize(person, (width, height), interpolation=cv2.INTER_LINEAR)
    feather = max(1.0, 1.2 / work_scale)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=feather)[:, :, None]
    plate = np.array(backdrop, dtype=np.float32)
    composite = rgb.astype(np.float32) * alpha + plate * (1.0 - alpha)
    mask = np.where(alpha[:, :, 0] >= 0.5, 255, 0).astype(np.uint8)
    return np.clip(composite + 0.5, 0, 255).astype(np.uint8), mask


def nearest_face(found: list[Face], expected: Face) -> Face | None:
    """The found face closest to where `expected` is, within half its width: the same face after an edit."""
    ex, ey = expected.centre
    close = [f for f in found if math.hypot(f.centre[0] - ex, f.centre[1] - ey) < 0.5 * expected.w]
    return min(close, key=lambda f: math.hypot(f.centre[0] - ex, f.centre[1] - ey), default=None)


def source_landmarks(rgb: np.ndarray, face: Face) -> FaceLandmarks | None:
    """Landmarks of a detected face, or None when the landmark model is not installed."""
    try:
        return find_landmarks(rgb, (face.x, face.y, face.w, face.h))
    except LandmarksUnavailable:
        return None


def make_neutral_portrait(rgb: np.ndarray, face: Face, *, size: int = 1024) -> NeutralPortrait:
    """The neutral portrait; its landmarks are measured again on the result, as the QA gate does."""
    landmarks = source_landmarks(rgb, face)
    aligned, transform = align_and_crop(rgb, face, size=size, landmarks=landmarks)
    if landmarks is not None:
        # Landmarks fitted on the upright face are more exact than on a tilted one: measure again on the
        # aligned crop, carry them back into the photo and align once more from the original pixels.
        upright = source_landmarks(aligned, transform.map_face(face))
        inverse = cv2.invertAffineTransform(np.asarray(transform.matrix, np.float64))
        landmarks = upright.transformed(inverse)
        aligned, transform = align_and_crop(rgb, face, size=size, landmarks=landmarks)
    expected = transform.map_face(face)
    balanced = normalize_colour(aligned)
    composite, mask = replace_background(balanced, expected)
    redetected = nearest_face(detect_faces(composite, min_size=size // 8), expected)
    found = redetected or expected
    return NeutralPortrait(
        rgb=composite,
        face=found,
        mask=mask,
        backdrop_rgb=DEFAULT_BACKDROP,
        rotation_deg=transform.rotation_deg,
        scale=transform.scale,
        crop_box=transform.crop_box,
        face_redetected=redetected is not None,
        landmarks=None if landmarks is None else source_landmarks(composite, found),
    )
