"""Face detection and photo quality metrics with OpenCV's bundled Haar cascades.

Haar cascades ship with opencv-python, run offline on CPU and need no model
download, which keeps this kernel reproducible in CI and benchmarks.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache

import cv2
import numpy as np

Point = tuple[float, float]

_CASCADE_WINDOW = 24  # training window of haarcascade_frontalface_default
_EYE_WINDOW = 20  # training window of haarcascade_eye*
_EYE_CASCADES = ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml")
_MAX_WORK_SIDE = 1600
_EYE_ROI_WIDTH = 160
_SHARPNESS_HEIGHT = 128
METRICS_VERSION = 2
"""Bumped whenever `photo_metrics` measures a photo differently: cached measurements are keyed by it."""
_detect_lock = threading.Lock()


@dataclass(frozen=True)
class Face:
    """A face box in image pixels; eyes are centres, `left_eye` is the one on the image's left."""

    x: int
    y: int
    w: int
    h: int
    left_eye: Point | None = None
    right_eye: Point | None = None

    @property
    def centre(self) -> Point:
        return (self.x + self.w / 2.0, self.y + self.h / 2.0)

    @property
    def area(self) -> int:
        return self.w * self.h

    @property
    def eye_angle_deg(self) -> float | None:
        """Positive when the right-hand eye sits lower in the image (head tilted clockwise)."""
        if self.left_eye is None or self.right_eye is None:
            return None
        dx = self.right_eye[0] - self.left_eye[0]
        dy = self.right_eye[1] - self.left_eye[1]
        return math.degrees(math.atan2(dy, dx))


@lru_cache(maxsize=None)
def _cascade(name: str) -> cv2.CascadeClassifier:
    classifier = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if classifier.empty():
        raise RuntimeError(f"OpenCV Haar cascade {name} could not be loaded")
    return classifier


def _detect(name: str, grey: np.ndarray, **kwargs: object) -> np.ndarray:
    # CascadeClassifier is not documented as thread-safe; assets may run in threads.
    with _detect_lock:
        found = _cascade(name).detectMultiScale(grey, **kwargs)
    return np.asarray(found, dtype=np.float64).reshape(-1, 4)


def _to_grey(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _best_pair(boxes: np.ndarray, roi_w: float) -> tuple[Point | None, Point | None]:
    """Most plausible left/right pair: similar size, level, sensibly spaced, one per half."""
    centres = [(x + w / 2.0, y + h / 2.0, w) for x, y, w, h in boxes]
    half = roi_w / 2.0
    lefts = [c for c in centres if c[0] < half]
    rights = [c for c in centres if c[0] >= half]
    best: tuple[float, Point, Point] | None = None
    for lx, ly, lw in lefts:
        for rx, ry, rw in rights:
            spacing = (rx - lx) / roi_w
            if not 0.2 <= spacing <= 0.7 or abs(ry - ly) > 0.25 * roi_w:
                continue
            size_mismatch = abs(math.log(lw / rw))
            off_centre = abs((lx + rx) / 2 - half) / roi_w
            score = size_mismatch + abs(ry - ly) / roi_w + abs(spacing - 0.42) + off_centre
            if best is None or score < best[0]:
                best = (score, (lx, ly), (rx, ry))
    if best is not None:
        return best[1], best[2]
    biggest = max(centres, key=lambda c: c[2], default=None)
    if biggest is None:
        return None, None
    point = (biggest[0], biggest[1])
    return (point, None) if biggest[0] < half else (None, point)


def _find_eyes(grey: np.ndarray, x: int, y: int, w: int, h: int) -> tuple[Point | None, Point | None]:
    top, bottom = y + int(0.12 * h), y + int(0.58 * h)
    roi = grey[max(top, 0) : bottom, max(x, 0) : x + w]
    if roi.size == 0:
        return None, None
    scale = _EYE_ROI_WIDTH / roi.shape[1]
    resized = cv2.resize(roi, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    left = right = None
    for cascade in _EYE_CASCADES:  # the eyeglasses cascade is only a fallback: it is slower and looser
        found = _detect(cascade, resized, scaleFactor=1.1, minNeighbors=3, minSize=(_EYE_WINDOW,) * 2, maxSize=(80, 80))
        pair = _best_pair(found, resized.shape[1])
        if pair[0] is not None and pair[1] is not None:
            left, right = pair
            break
        left, right = left or pair[0], right or pair[1]
    origin = (max(x, 0), max(top, 0))

    def to_image(point: Point | None) -> Point | None:
        return None if point is None else (origin[0] + point[0] / scale, origin[1] + point[1] / scale)

    return to_image(left), to_image(right)


def _suppress_overlaps(boxes: np.ndarray) -> np.ndarray:
    """Drop boxes mostly inside a larger one (the cascade sometimes nests a second hit)."""
    order = np.argsort(-(boxes[:, 2] * boxes[:, 3]))
    kept: list[np.ndarray] = []
    for box in boxes[order]:
        x, y, w, h = box
        inside = False
        for kx, ky, kw, kh in kept:
            ix = max(0.0, min(x + w, kx + kw) - max(x, kx))
            iy = max(0.0, min(y + h, ky + kh) - max(y, ky))
            if ix * iy > 0.5 * w * h:
                inside = True
                break
        if not inside:
            kept.append(box)
    return np.asarray(kept).reshape(-1, 4)


def _confirmed(work: np.ndarray, box: np.ndarray) -> bool:
    """Second opinion from the alt2 cascade around a hit.

    The default cascade alone, run at the upscaled resolution small faces
    need, fires on textures such as helmet reflections; alt2 rarely agrees
    with those while it does confirm real faces of every size.
    """
    x, y, w, h = box
    margin = 0.5 * w
    x0, y0 = int(max(x - margin, 0)), int(max(y - margin, 0))
    x1, y1 = int(min(x + w + margin, work.shape[1])), int(min(y + h + margin, work.shape[0]))
    scale = max(1.0, 48.0 / w)
    region = cv2.resize(work[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    side = w * scale
    found = _detect(
        "haarcascade_frontalface_alt2.xml",
        region,
        scaleFactor=1.05,
        minNeighbors=4,
        minSize=(int(0.6 * side), int(0.6 * side)),
        maxSize=(int(1.6 * side), int(1.6 * side)),
    )
    centre = np.array([(x - x0 + w / 2) * scale, (y - y0 + h / 2) * scale])
    return any(np.hypot(*(np.array([fx + fw / 2, fy + fh / 2]) - centre)) < 0.35 * side for fx, fy, fw, fh in found)


def _cascade_pass(grey: np.ndarray, scale: float, max_size: int | None = None) -> np.ndarray:
    """Confirmed face boxes found at one working scale, in original pixels."""
    work = grey if scale == 1 else cv2.resize(
        grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    limits = {} if max_size is None else {"maxSize": (max_size, max_size)}
    boxes = _detect(
        "haarcascade_frontalface_default.xml",
        work,
        scaleFactor=1.1,
        minNeighbors=5,
        minSize=(_CASCADE_WINDOW, _CASCADE_WINDOW),
        **limits,
    )
    return np.asarray([box for box in boxes if _confirmed(work, box)]).reshape(-1, 4) / scale


def detect_faces(rgb: np.ndarray, *, min_size: int = 16) -> list[Face]:
    """Frontal faces, largest first.

    Faces down to `min_size` pixels are reported so the QA layer, not the
    detector, decides what is too small. The cascade cannot see faces below
    its 24 px window, so a second pass on an upscaled copy looks for those
    only: upscaling the whole search invites false hits on larger textures.
    Very large photos are searched at most 1600 px on the long side.
    """
    grey = _to_grey(rgb)
    long_side = max(grey.shape)
    base = min(1.0, _MAX_WORK_SIDE / long_side, _CASCADE_WINDOW / max(min_size, 1))
    boxes = [_cascade_pass(grey, base)]
    upscale = min(_CASCADE_WINDOW / max(min_size, 1), _MAX_WORK_SIDE / long_side)
    if upscale > base:
        # Up to just above the base pass's smallest face, so both passes overlap a little.
        boxes.append(_cascade_pass(grey, upscale, max_size=int(math.ceil(1.2 * _CASCADE_WINDOW * upscale / base))))
    faces = []
    for bx, by, bw, bh in _suppress_overlaps(np.concatenate(boxes)):
        x, y, w, h = (int(round(v)) for v in (bx, by, bw, bh))
        left, right = _find_eyes(grey, x, y, w, h)
        faces.append(Face(x, y, w, h, left, right))
    return sorted(faces, key=lambda face: face.area, reverse=True)


def judged_faces(rgb: np.ndarray) -> list[Face]:
    """`detect_faces` as the identity measurements run it: faces down to an eighth of the short side.

    The character sheet records this detection for each variant and the identity gate reuses it, so both
    must call it the same way: this function is that one way.
    """
    return detect_faces(rgb, min_size=max(16, min(rgb.shape[:2]) // 8))


def people(faces: list[Face]) -> list[Face]:
    """The faces of `detect_faces` (largest first) that show a person: the largest, and every other one in
    which an eye was found or that is at least half its height.

    The cascade's smallest window also fires on JPEG artefacts and textures: the sample portrait saved at
    quality 84 shows a 24 px "face" without eyes in a corner beside its 95 px one, and was refused for two
    faces. A real face shows its eyes down to 19 px (the astronaut pasted small beside herself), and a
    second face of comparable size counts whatever its eyes.
    """
    if not faces:
        return []
    main = faces[0]
    return [main, *[face for face in faces[1:]
                     if face.left_eye is not None or face.right_eye is not None or face.h >= main.h / 2]]


@dataclass(frozen=True)
class PhotoMetrics:
    """Quality numbers for one photo.

    `face_count` counts the faces that show a person (`people`). `face_fraction` is the largest face box's
    height over the image height: a linear measure matches how framing guides are written ("the face fills
    a third of the frame") better than an area ratio.
    """

    width: int
    height: int
    face_count: int
    face_box: tuple[int, int, int, int] | None
    face_fraction: float
    sharpness: float
    exposure: float
    clipped_fraction: float
    colour_cast: float
    eye_angle_deg: float | None

    def as_row(self) -> dict[str, object]:
        row = asdict(self)
        box = row.pop("face_box")
        for key, value in zip(("face_x", "face_y", "face_w", "face_h"), box or (None,) * 4):
            row[key] = value
        return row


def _sharpness(grey: np.ndarray) -> float:
    """Laplacian variance over the grey variance (x1000), at a fixed height of 128 px.

    The fixed height makes small and large photos comparable (an upscaled photo is not blurrier); the
    ratio makes the measure ignore contrast, so a dimmed or re-lit copy of a sharp photo stays sharp.
    Measured on the astronaut face: 112 as shot, 64 at 400 px, 143 dimmed x0.7, 3.5 blurred (sigma 2).
    """
    scale = _SHARPNESS_HEIGHT / grey.shape[0]
    resized = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    resized = resized.astype(np.float64)
    return float(1000.0 * cv2.Laplacian(resized, cv2.CV_64F).var() / max(resized.var(), 1e-6))


def colour_cast(rgb: np.ndarray) -> float:
    """Distance of the mean (a*, b*) from neutral grey; ~0 for a neutral photo."""
    scale = min(1.0, 512 / max(rgb.shape[:2]))
    small = rgb if scale == 1 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    return float(math.hypot(lab[:, :, 1].mean(), lab[:, :, 2].mean()))


def photo_metrics(rgb: np.ndarray) -> PhotoMetrics:
    grey = _to_grey(rgb)
    height, width = grey.shape
    faces = people(detect_faces(rgb))
    face = faces[0] if faces else None
    if face is not None:
        x0, y0 = max(face.x, 0), max(face.y, 0)
        region = grey[y0 : face.y + face.h, x0 : face.x + face.w]
    else:
        region = grey
    return PhotoMetrics(
        width=width,
        height=height,
        face_count=len(faces),
        face_box=None if face is None else (face.x, face.y, face.w, face.h),
        face_fraction=0.0 if face is None else face.h / height,
        sharpness=_sharpness(region if region.size else grey),
        exposure=float(grey.mean() / 255.0),
        clipped_fraction=float(np.count_nonzero((grey == 0) | (grey == 255)) / grey.size),
        colour_cast=colour_cast(rgb),
        eye_angle_deg=None if face is None else face.eye_angle_deg,
    )
