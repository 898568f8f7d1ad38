"""Shared real-pixel fixtures: the NASA astronaut portrait and what the pipeline makes of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avatar_assets.media.faces import Face, detect_faces
from avatar_assets.media.images import load_photo
from avatar_assets.media.portrait import NeutralPortrait, make_neutral_portrait

SAMPLE = Path(__file__).resolve().parents[2] / "avatar_assets" / "samples" / "astronaut.jpg"


@pytest.fixture(scope="session")
def astronaut_bytes() -> bytes:
    return SAMPLE.read_bytes()


@pytest.fixture(scope="session")
def astronaut_rgb(astronaut_bytes: bytes) -> np.ndarray:
    rgb = load_photo(astronaut_bytes).rgb
    rgb.flags.writeable = False  # shared across tests: nobody may edit it in place
    return rgb


@pytest.fixture(scope="session")
def astronaut_face(astronaut_rgb: np.ndarray) -> Face:
    faces = detect_faces(astronaut_rgb)
    assert len(faces) == 1
    return faces[0]


@pytest.fixture(scope="session")
def neutral_portrait(astronaut_rgb: np.ndarray, astronaut_face: Face) -> NeutralPortrait:
    return make_neutral_portrait(astronaut_rgb, astronaut_face)

