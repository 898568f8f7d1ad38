"""The LBPH face descriptor behind the identity-consistency gate, on the real astronaut portrait."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avatar_assets.media.face_identity import (
    BINS,
    DEFAULT_MIN_SIMILARITY,
    GRID,
    descriptor_similarity,
    face_descriptor,
    identity_similarity,
    lbp_codes,
)
from avatar_assets.media.faces import Face, detect_faces
from avatar_assets.media.portrait import NeutralPortrait, align_and_crop
from avatar_assets.media.sheet import make_character_sheet


def box(face: Face) -> tuple[int, int, int, int]:
    return (face.x, face.y, face.w, face.h)


def only_face(rgb: np.ndarray) -> Face:
    faces = detect_faces(rgb, min_size=rgb.shape[0] // 8)
    assert faces, "expected a face"
    return max(faces, key=lambda f: f.area)


@pytest.fixture(scope="module")
def aligned(astronaut_rgb: np.ndarray, astronaut_face: Face) -> np.ndarray:
    """The aligned crop of the source photo: what the classical neutral portrait is made of."""
    crop, _ = align_and_crop(astronaut_rgb, astronaut_face)
    return crop


@pytest.fixture(scope="module")
def reference(aligned: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    return aligned, box(only_face(aligned))


def score(reference, image: np.ndarray) -> float:
    rgb, ref_box = reference
    return identity_similarity(image, box(only_face(image)), rgb, ref_box)


def mirrored_and_warped(rgb: np.ndarray) -> np.ndarray:
    """Another 'face': the portrait mirrored and pushed through a strong sinusoidal warp."""
    height, width = rgb.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    flipped = np.ascontiguousarray(rgb[:, ::-1])
    return cv2.remap(
        flipped, xs + 25 * np.sin(ys / 60), ys + 25 * np.sin(xs / 45), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def test_lbp_codes_use_58_uniform_patterns_plus_one() -> None:
    rng = np.random.default_rng(0)
    codes = lbp_codes(rng.integers(0, 256, (40, 50), dtype=np.uint8))
    assert codes.shape == (38, 48)
    assert codes.min() >= 0 and codes.max() <= BINS - 1
    flat = lbp_codes(np.full((5, 5), 7, dtype=np.uint8))
    assert np.all(flat == flat[0, 0])  # all neighbours >= centre: one uniform pattern


def test_descriptor_shape_and_normalisation(reference) -> None:
    rgb, ref_box = reference
    descriptor = face_descriptor(rgb, ref_box)
    assert descriptor.shape == (GRID * GRID, BINS)
    assert np.allclose(descriptor.sum(axis=1), 1.0)


def test_same_pixels_score_one(reference) -> None:
    rgb, ref_box = reference
    assert identity_similarity(rgb, ref_box, rgb.copy(), ref_box) == pytest.approx(1.0)


def test_classical_neutral_portrait_passes(reference, neutral_portrait: NeutralPortrait) -> None:
    """The classical image is the source's pixels, colour-balanced on a new backdrop: well above the threshold."""
    assert score(reference, neutral_portrait.rgb) > 0.9 > DEFAULT_MIN_SIMILARITY


def test_same_face_edits_stay_above_threshold(reference, aligned: np.ndarray, neutral_portrait: NeutralPortrait) -> None:
    ok, jpeg = cv2.imencode(".jpg", aligned[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 30])
    assert ok
    edits = {
        "jpeg q30": cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1].copy(),
        "blur": cv2.GaussianBlur(aligned, (0, 0), 2),
        "smoothing": cv2.bilateralFilter(aligned, 9, 60, 9),
        "noise": np.clip(aligned + np.random.default_rng(0).normal(0, 8, aligned.shape), 0, 255).astype(np.uint8),
    }
    sheet = make_character_sheet(neutral_portrait)
    edits |= {f"sheet {name}": sheet.variants[name] for name in ("close_up", "smile", "warm_light", "turn_left")}
    scores = {name: score(reference, image) for name, image in edits.items()}
    assert all(value >= DEFAULT_MIN_SIMILARITY for value in scores.values()), scores


def test_a_different_face_scores_lower(reference, aligned: np.ndarray, neutral_portrait: NeutralPortrait) -> None:
    other = mirrored_and_warped(aligned)
    different = score(reference, other)
    same = score(reference, neutral_portrait.rgb)
    assert different < DEFAULT_MIN_SIMILARITY < same
    assert score(reference, np.ascontiguousarray(aligned[:, ::-1])) < same  # even the plain mirror image


def test_no_face_content_scores_far_lower(reference) -> None:
    rgb, ref_box = reference
    noise = np.random.default_rng(1).integers(0, 256, rgb.shape, dtype=np.uint8)
    assert identity_similarity(noise, ref_box, rgb, ref_box) < 0.7
    x, y, w, h = ref_box
    suit = (x, min(rgb.shape[0] - h, y + int(1.3 * h)), w, h)  # same photo, below the face
    assert identity_similarity(rgb, suit, rgb, ref_box) < 0.7


def test_bad_inputs_are_refused(reference) -> None:
    rgb, ref_box = reference
    with pytest.raises(ValueError, match="empty"):
        face_descriptor(rgb, (0, 0, 0, 10))
    with pytest.raises(ValueError, match="RGB uint8"):
        face_descriptor(rgb.astype(np.float32), ref_box)
    with pytest.raises(ValueError, match="shape"):
        descriptor_similarity(np.zeros((4, BINS)), np.zeros((9, BINS)))
