"""The photo rules validated_inputs runs: which photos are usable, and which one becomes the avatar."""

from __future__ import annotations

import cv2
import numpy as np

from avatar_assets.contracts import PhotoRow
from avatar_assets.identity import rules
from avatar_assets.media.faces import PhotoMetrics, photo_metrics
from avatar_assets.media.images import load_photo
from tests.conftest import SAMPLE_PHOTO


def _row(path: str, **metrics) -> PhotoRow:
    values = {"face_count": 1, "face_fraction": 0.3, "sharpness": 200.0, "exposure": 0.5, "colour_cast": 2.0} | metrics
    box = (10, 10, 50, 50) if values["face_count"] else None
    measured = PhotoMetrics(640, 480, values["face_count"], box, values["face_fraction"], values["sharpness"],
                            values["exposure"], 0.0, values["colour_cast"], 0.0)
    return rules.photo_row(path, measured)


def test_best_photo_on_real_photos() -> None:
    astronaut = load_photo(SAMPLE_PHOTO.read_bytes()).rgb
    two = np.concatenate([astronaut, astronaut], axis=1)
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 3.0)
    candidates = [np.full((200, 200, 3), 128, np.uint8), two, blurred, astronaut]
    rows = [rules.photo_row(f"photo{i}.png", photo_metrics(image)) for i, image in enumerate(candidates)]
    assert [row.usable for row in rows[:2]] == [False, False]
    assert rules.best_photo(rows) == "photo3.png"


def test_best_photo_preferences() -> None:
    best = rules.best_photo
    assert best([]) is None
    assert best([_row("a", face_count=0), _row("b", face_count=2)]) is None
    assert best([_row("a", face_fraction=0.9), _row("b", face_fraction=0.2)]) == "b"  # a face filling the frame is unusable
    assert best([_row("a", face_fraction=0.2), _row("b", face_fraction=0.4)]) == "b"
    assert best([_row("a", face_fraction=0.2, sharpness=900), _row("b", face_fraction=0.4, sharpness=100)]) == "b"
    assert best([_row("a", sharpness=30), _row("b", sharpness=400)]) == "b"
    assert best([_row("a", face_fraction=0.301, sharpness=30), _row("b", face_fraction=0.299, sharpness=400)]) == "b"
    assert best([_row("a", sharpness=10), _row("b", sharpness=30)]) == "b"  # too blurry to use
    assert best([_row("a", exposure=0.3), _row("b", exposure=0.55)]) == "b"
    assert best([_row("a", colour_cast=15), _row("b", colour_cast=1)]) == "a"  # colour cast does not count
    assert best([_row("a"), _row("b")]) == "a"
    assert best([PhotoRow(path="a", usable=False, problem="cannot decode"), _row("b")]) == "b"
