from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest

from avatar_assets.media.faces import Face, colour_cast, detect_faces, people, photo_metrics


def _paste_scaled(rgb: np.ndarray, face_height: float, canvas_shape: tuple[int, int]) -> np.ndarray:
    """The astronaut shrunk so her face is about `face_height` px, centred on a grey canvas."""
    scale = face_height / 93.0
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((*canvas_shape, 3), 128, dtype=np.uint8)
    h, w = small.shape[:2]
    y0, x0 = (canvas_shape[0] - h) // 2, (canvas_shape[1] - w) // 2
    canvas[y0 : y0 + h, x0 : x0 + w] = small
    return canvas


def test_face_properties() -> None:
    face = Face(10, 20, 30, 40, left_eye=(15.0, 30.0), right_eye=(25.0, 40.0))
    assert face.centre == (25.0, 40.0)
    assert face.area == 1200
    assert face.eye_angle_deg == pytest.approx(45.0)
    assert Face(0, 0, 5, 5, left_eye=(1.0, 1.0)).eye_angle_deg is None


def test_finds_the_astronaut_and_her_eyes(astronaut_face: Face) -> None:
    face = astronaut_face
    assert abs(face.x - 177) <= 8 and abs(face.y - 66) <= 8 and abs(face.w - 95) <= 10
    assert face.left_eye is not None and face.right_eye is not None
    assert math.dist(face.left_eye, (202.0, 101.0)) < 6
    assert math.dist(face.right_eye, (246.5, 103.5)) < 6
    assert face.eye_angle_deg is not None and 1.0 < face.eye_angle_deg < 6.0


def test_no_face_in_flat_or_noise_images() -> None:
    flat = np.full((480, 640, 3), 128, dtype=np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detect_faces(flat) == []
    assert detect_faces(noise) == []
    metrics = photo_metrics(noise)
    assert (metrics.face_count, metrics.face_box, metrics.face_fraction, metrics.eye_angle_deg) == (0, None, 0.0, None)


def test_two_faces_sorted_largest_first(astronaut_rgb: np.ndarray) -> None:
    smaller = cv2.resize(astronaut_rgb, (358, 358), interpolation=cv2.INTER_AREA)
    right = np.full_like(astronaut_rgb, 128)
    right[:358, :358] = smaller
    pair = np.concatenate([right, astronaut_rgb], axis=1)
    faces = detect_faces(pair)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].x > 512 > faces[1].x  # the full-size astronaut is on the right
    assert photo_metrics(pair).face_count == 2


def test_an_eyeless_speck_beside_the_face_is_not_a_second_person() -> None:
    """The sample portrait saved as JPEG at quality 84 (a common export setting): the cascade's smallest
    window fires on an artefact, a box without eyes far smaller than the face; the photo has one person."""
    from io import BytesIO

    from PIL import Image

    from tests.conftest import SAMPLE_PHOTO

    buffer = BytesIO()
    Image.open(SAMPLE_PHOTO).convert("RGB").save(buffer, format="JPEG", quality=84)
    rgb = np.asarray(Image.open(buffer).convert("RGB"))
    found = detect_faces(rgb)
    assert len(found) > 1  # the artefact is still detected: what `people` must leave out
    assert all(f.left_eye is None and f.right_eye is None and f.h < found[0].h / 2 for f in found[1:])
    assert people(found) == found[:1] and photo_metrics(rgb).face_count == 1


@pytest.mark.parametrize("side", [100, 260])
def test_a_small_real_face_beside_the_subject_is_still_a_second_person(astronaut_rgb: np.ndarray, side: int) -> None:
    """A bystander a fifth or half the subject's size still shows eyes, so the photo has two people."""
    canvas = np.full((512, 512 + side, 3), 128, np.uint8)
    canvas[:, :512] = astronaut_rgb
    canvas[512 - side:, 512:] = cv2.resize(astronaut_rgb, (side, side), interpolation=cv2.INTER_AREA)
    assert photo_metrics(canvas).face_count == 2


def test_tiny_face_is_reported_as_tiny(astronaut_rgb: np.ndarray) -> None:
    canvas = _paste_scaled(astronaut_rgb, 20, (480, 640))
    faces = detect_faces(canvas)
    assert len(faces) <= 1
    if faces:
        assert faces[0].h <= 26
    metrics = photo_metrics(canvas)
    assert metrics.face_count == 0 or metrics.face_fraction < 0.05


def test_face_fraction_is_linear_in_face_height(astronaut_rgb: np.ndarray) -> None:
    metrics = photo_metrics(astronaut_rgb)
    assert metrics.face_count == 1
    assert metrics.face_box is not None
    assert metrics.face_fraction == pytest.approx(metrics.face_box[3] / 512)
    assert 0.16 < metrics.face_fraction < 0.21


def test_sharpness_drops_with_blur_but_not_with_upscaling(astronaut_rgb: np.ndarray) -> None:
    sharp = photo_metrics(astronaut_rgb).sharpness
    blurred = photo_metrics(cv2.GaussianBlur(astronaut_rgb, (0, 0), 2.0)).sharpness
    upscaled = photo_metrics(cv2.resize(astronaut_rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)).sharpness
    assert blurred < 0.3 * sharp
    assert 0.6 < upscaled / sharp < 1.6  # raw Laplacian variance would drop ~10x


def test_exposure_and_clipping(astronaut_rgb: np.ndarray) -> None:
    half = np.zeros((100, 100, 3), dtype=np.uint8)
    half[:, 50:] = 255
    assert photo_metrics(half).clipped_fraction == 1.0
    assert photo_metrics(half).exposure == pytest.approx(0.5)
    mid = photo_metrics(np.full((100, 100, 3), 128, dtype=np.uint8))
    assert mid.clipped_fraction == 0.0 and mid.exposure == pytest.approx(128 / 255)
    dark = photo_metrics((astronaut_rgb * 0.4).astype(np.uint8)).exposure
    assert dark < 0.5 * photo_metrics(astronaut_rgb).exposure


def test_colour_cast_is_zero_for_neutral_and_grows_with_tint(astronaut_rgb: np.ndarray) -> None:
    assert colour_cast(np.full((64, 64, 3), 90, dtype=np.uint8)) < 0.5
    grey = np.repeat(cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    tinted = np.clip(grey * np.array([1.2, 1.0, 0.8]), 0, 255).astype(np.uint8)
    assert photo_metrics(grey).colour_cast < 0.5
    assert photo_metrics(tinted).colour_cast > 10


def test_metrics_rows_build_a_table(astronaut_rgb: np.ndarray) -> None:
    rows = [photo_metrics(astronaut_rgb).as_row(), photo_metrics(np.full((64, 80, 3), 128, np.uint8)).as_row()]
    table = pd.DataFrame(rows)
    assert {"width", "height", "face_count", "face_x", "face_h", "sharpness", "colour_cast"} <= set(table.columns)
    assert table.loc[0, "face_x"] == pytest.approx(178, abs=8)
    assert table.loc[1, "width"] == 80 and pd.isna(table.loc[1, "face_x"])
