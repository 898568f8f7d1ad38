"""68 face landmarks and a 128-d identity embedding with dlib, offline.

The models ship inside the `face_recognition_models` package (no download at run time):
`shape_predictor_68_face_landmarks.dat` (iBUG 300-W layout; its training data is licensed for
non-commercial use only, see the README's licence table) and `dlib_face_recognition_resnet_model_v1.dat`
(a ResNet whose embeddings put two photos of one person closer than 0.6 in Euclidean distance: the
library's documented same-person threshold, 99.38 % on LFW).

Detection itself stays with the Haar cascades in `faces.py`: landmarks are fitted inside a known face
box, on a crop scaled so the face is about 160 px wide, which keeps a 1024 px portrait at a few ms.
Point indices follow the 68-point layout: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47 (36-41 is
the eye on the image's left), outer lips 48-59, inner lips 60-67.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

LANDMARK_MODEL = "dlib-shape_predictor_68_face_landmarks"
SAME_PERSON_MAX_DISTANCE = 0.6  # dlib's documented threshold for its 128-d embeddings
_WORK_FACE_WIDTH = 160.0
_dlib_lock = threading.Lock()  # dlib's objects are not documented as thread-safe

Box = tuple[int, int, int, int]

LEFT_EYE = slice(36, 42)  # the eye on the image's left
RIGHT_EYE = slice(42, 48)
OUTER_LIPS = slice(48, 60)


class LandmarksUnavailable(RuntimeError):
    """dlib or the face_recognition_models package is missing: callers fall back and say so."""


@lru_cache(maxsize=1)
def _models():
    try:
        import dlib
        with warnings.catch_warnings():  # the package's __init__ imports pkg_resources
            warnings.simplefilter("ignore")
            import face_recognition_models as models
    except ImportError as error:
        raise LandmarksUnavailable(f"landmark model not installed ({error.name}): pip install dlib-bin face_recognition_models") from error
    return (
        dlib,
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(models.pose_predictor_model_location()),
        dlib.face_recognition_model_v1(models.face_recognition_model_location()),
    )


def landmarks_available() -> bool:
    try:
        _models()
    except LandmarksUnavailable:
        return False
    return True


def model_version() -> str:
    dlib = _models()[0]
    return f"dlib-{dlib.__version__}"


@dataclass(frozen=True, eq=False)
class FaceLandmarks:
    """68 (x, y) points in image pixels."""

    points: np.ndarray

    @property
    def left_eye(self) -> tuple[float, float]:
        x, y = self.points[LEFT_EYE].mean(axis=0)
        return float(x), float(y)

    @property
    def right_eye(self) -> tuple[float, float]:
        x, y = self.points[RIGHT_EYE].mean(axis=0)
        return float(x), float(y)

    @property
    def eye_distance(self) -> float:
        return float(math.dist(self.left_eye, self.right_eye))

    @property
    def eye_angle_deg(self) -> float:
        """Positive when the right-hand eye sits lower in the image, as `faces.Face.eye_angle_deg`."""
        (lx, ly), (rx, ry) = self.left_eye, self.right_eye
        return math.degrees(math.atan2(ry - ly, rx - lx))

    @property
    def box(self) -> Box:
        x0, y0 = self.points.min(axis=0)
        x1, y1 = self.points.max(axis=0)
        return int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0))

    @property
    def mouth_box(self) -> Box:
        """The outer lips with a margin for the jaw drop and the lip corners' travel."""
        x0, y0 = self.points[OUTER_LIPS].min(axis=0)
        x1, y1 = self.points[OUTER_LIPS].max(axis=0)
        w, h = x1 - x0, y1 - y0
        return int(round(x0 - 0.1 * w)), int(round(y0 - 0.1 * h)), int(round(1.2 * w)), int(round(h + 0.55 * w))

    def transformed(self, matrix: np.ndarray) -> FaceLandmarks:
        """The points under a 2x3 affine map (an alignment or a shot placement)."""
        m = np.asarray(matrix, dtype=np.float64)
        return FaceLandmarks(self.points @ m[:, :2].T + m[:, 2])

    def as_list(self) -> list[tuple[float, float]]:
        return [(round(float(x), 2), round(float(y), 2)) for x, y in self.points]

    @classmethod
    def from_list(cls, points) -> FaceLandmarks:
        array = np.asarray(points, dtype=np.float64)
        if array.shape != (68, 2):
            raise ValueError(f"expected 68 (x, y) landmarks, got shape {array.shape}")
        return cls(array)


def _crop_around(rgb: np.ndarray, box: Box) -> tuple[np.ndarray, float, float, float]:
    """A crop 2.4 face widths across, scaled so the face is ~160 px wide: (crop, scale, x0, y0)."""
    x, y, w, h = box
    side = 2.4 * max(w, h)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    x1, y1 = min(rgb.shape[1], int(cx + side / 2)), min(rgb.shape[0], int(cy + side / 2))
    scale = _WORK_FACE_WIDTH / max(w, 1)
    region = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(region, None, fx=scale, fy=scale, interpolation=interpolation), scale, float(x0), float(y0)


def find_landmarks(rgb: np.ndarray, box: Box) -> FaceLandmarks:
    """Landmarks of the face in `box` (from `faces.detect_faces`).

    dlib's own detector is run on the crop first because the predictor was trained on its boxes; when
    it sees no face there (a tilted or small face), the given box seeds the predictor instead.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    dlib, detector, predictor, _ = _models()
    crop, scale, x0, y0 = _crop_around(rgb, box)
    x, y, w, h = box
    expected = np.array([(x + w / 2 - x0) * scale, (y + h / 2 - y0) * scale])
    with _dlib_lock:
        found = list(detector(crop, 0))
        near = [r for r in found if np.hypot(r.center().x - expected[0], r.center().y - expected[1]) < 0.4 * w * scale]
        if near:
            rect = min(near, key=lambda r: np.hypot(r.center().x - expected[0], r.center().y - expected[1]))
        else:
            rect = dlib.rectangle(
                int((x - x0) * scale), int((y - y0) * scale), int((x + w - x0) * scale), int((y + h - y0) * scale)
            )
        shape = predictor(crop, rect)
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    return FaceLandmarks(points / scale + np.array([x0, y0]))


def face_embedding(rgb: np.ndarray, landmarks: FaceLandmarks) -> np.ndarray:
    """The 128-d dlib embedding of one face (float32, unit-free; compare with `face_distance`)."""
    dlib, _, _, encoder = _models()
    x, y, w, h = landmarks.box
    crop, scale, x0, y0 = _crop_around(rgb, (x, y, w, h))
    local = (landmarks.points - np.array([x0, y0])) * scale
    rect = dlib.rectangle(*(int(v) for v in (local[:, 0].min(), local[:, 1].min(), local[:, 0].max(), local[:, 1].max())))
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(px)), int(round(py))) for px, py in local])
    with _dlib_lock:
        descriptor = encoder.compute_face_descriptor(crop, shape)
    return np.asarray(descriptor, dtype=np.float32)


def face_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two embeddings: below `SAME_PERSON_MAX_DISTANCE` means the same person."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in shape: {a.shape} vs {b.shape}")
    return float(np.linalg.norm(a - b))
