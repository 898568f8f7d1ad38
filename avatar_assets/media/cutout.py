"""The person cut out of a flat backdrop, and pasted back onto one.

The neutral portrait and every character-sheet variant stand on one flat backdrop colour, so a colour
key finds the person: the pose route keys a variant out to composite it into a shot, and the diffusers
provider keys a classical variant to paste the generated person back onto the backdrop.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from avatar_assets.media.faces import detect_faces
from avatar_assets.media.portrait import source_landmarks

KEY_DISTANCE = 24  # summed |R|+|G|+|B| difference from the backdrop above which a pixel is the person

RGB = tuple[int, int, int]


class Cutout(NamedTuple):
    """An image of the avatar as a shot composites it: the person mask, face box and landmarks (if any)."""

    image: np.ndarray
    mask: np.ndarray
    face_box: tuple[int, int, int, int]
    landmarks: list[list[float]] | None


def keyed_mask(rgb: np.ndarray, backdrop: RGB, *, fill_holes: bool = True) -> np.ndarray:
    """Person mask (0/255): everything that is not the flat backdrop, with specks opened away and, with
    `fill_holes`, small gaps inside the person (backdrop-coloured clothing) closed."""
    distance = np.abs(rgb.astype(np.int16) - np.asarray(backdrop, dtype=np.int16)).sum(axis=2)
    mask = np.where(distance > KEY_DISTANCE, 255, 0).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8)) if fill_holes else mask


def onto_backdrop(rgb: np.ndarray, mask: np.ndarray, backdrop: RGB) -> np.ndarray:
    """The person over the flat backdrop through a feathered mask, so no generated background survives."""
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigmaX=max(1.0, mask.shape[0] / 512))[:, :, None]
    plate = np.asarray(backdrop, dtype=np.float32)
    return np.clip(rgb.astype(np.float32) * alpha + plate * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)


def pose_cutout(variant: np.ndarray, *, with_landmarks: bool) -> Cutout | None:
    """A character-sheet variant as the avatar, keyed against its corner (variants share the neutral
    backdrop); None when no face is found on it, so the shot keeps the neutral avatar."""
    faces = detect_faces(variant)
    if not faces:
        return None
    face = faces[0]
    mask = keyed_mask(variant, tuple(variant[2, 2]), fill_holes=False)
    found = source_landmarks(variant, face) if with_landmarks else None
    return Cutout(variant, mask, (face.x, face.y, face.w, face.h), found.as_list() if found else None)
