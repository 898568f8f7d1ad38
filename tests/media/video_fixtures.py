"""Shared inputs for the video tests: the sample avatar, a rough cut-out mask, speech-like audio with
known word timings, and small talking-head renders. Kept out of conftest.py on purpose; tests import
what they use."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from avatar_assets.media.compose import Shot, composite_shot
from avatar_assets.media.lipsync import animate_mouth

SAMPLE = Path(__file__).resolve().parents[2] / "avatar_assets" / "samples" / "astronaut.jpg"
FACE_BOX = (177, 66, 95, 95)
FPS = 25
SR = 24000


@lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
    image = cv2.cvtColor(cv2.imread(str(SAMPLE)), cv2.COLOR_BGR2RGB)
    image.setflags(write=False)
    return image


@lru_cache(maxsize=1)
def astronaut_mask() -> np.ndarray:
    """Hand-drawn silhouette (hair, neck ring, suit) standing in for the segmentation model."""
    mask = np.zeros((512, 512), np.uint8)
    cv2.ellipse(mask, (226, 100), (74, 88), 0, 0, 360, 255, -1)
    cv2.ellipse(mask, (210, 218), (96, 72), -8, 0, 360, 255, -1)
    body = np.array([(22, 330), (60, 275), (120, 240), (300, 240), (345, 280), (362, 340), (365, 512), (18, 512)])
    cv2.fillPoly(mask, [body.astype(np.int32)], 255)
    mask.setflags(write=False)
    return mask


def flat_background(size: tuple[int, int], colour: tuple[int, int, int] = (70, 90, 120)) -> np.ndarray:
    w, h = size
    return np.full((h, w, 3), colour, np.uint8)


def shot(size: tuple[int, int], kind: str = "close_up", background: np.ndarray | None = None) -> Shot:
    bg = background if background is not None else flat_background(size)
    return composite_shot(bg, astronaut(), astronaut_mask(), shot=kind, out_size=size, face_box=FACE_BOX)


def speechlike(
    duration_s: float, *, seed: int = 0, pauses: bool = True
) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Voiced syllables (harmonic buzz under a sine envelope) grouped into words; pauses between words
    are either short (bridged, < 150 ms) or long (mouth must close). Returns samples and word timings."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * SR)) / SR
    env = np.zeros_like(t)
    words = []
    pos = 0.3
    while pos < duration_s - 0.6:
        start = pos
        for _ in range(int(rng.integers(1, 4))):
            length = rng.uniform(0.14, 0.26)
            m = (t >= pos) & (t < pos + length)
            env[m] = np.sin(np.pi * (t[m] - pos) / length) * rng.uniform(0.5, 1.0)
            pos += length
        words.append((start, pos, "word"))
        pos += rng.choice([0.06, 0.1, 0.35, 0.5]) if pauses else 0.04
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.5 * t)) / SR
    buzz = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.15 * buzz * env).astype(np.float32), words


def talking_frames(base: Shot, openness: np.ndarray) -> list[np.ndarray]:
    assert base.mouth_box is not None
    return [animate_mouth(base.frame, base.mouth_box, float(o)) for o in openness]
