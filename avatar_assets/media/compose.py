"""Shot framing: place the cut-out avatar over a backdrop the way a camera operator would.

Framing is driven by the face box so any portrait crop lands the same way: the face height sets the
scale per shot type and the body is never left floating above the bottom edge. The mouth box travels
with the placement because lip sync draws on the composed frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageDraw

from avatar_assets.media.landmarks import FaceLandmarks
from avatar_assets.media.lipsync import Box, mouth_box_from_face
from avatar_assets.media.video import load_font

ShotType = Literal["close_up", "mid", "wide", "broll"]


@dataclass(frozen=True)
class Framing:
    """Face height as a fraction of frame height, and where the face centre goes (fractions)."""

    face_height: float
    face_x: float
    face_y: float


FRAMINGS: dict[str, Framing] = {
    "close_up": Framing(0.35, 0.5, 0.40),
    "mid": Framing(0.17, 0.5, 0.36),
    "wide": Framing(0.09, 0.5, 0.55),
}


@dataclass(frozen=True)
class Shot:
    """A composed frame plus where the avatar's face and mouth ended up (None for b-roll)."""

    frame: np.ndarray
    mouth_box: Box | None
    face_box: Box | None
    landmarks: np.ndarray | None = None  # (68, 2) in output pixels, when the avatar's were given


def cover_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale to fill `size` (w, h) and centre-crop the overflow."""
    w, h = size
    ih, iw = image.shape[:2]
    s = max(w / iw, h / ih)
    nw, nh = max(w, round(iw * s)), max(h, round(ih * s))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    return np.ascontiguousarray(resized[y0:y0 + h, x0:x0 + w])


def exact_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale to exactly `size` (w, h): area averaging when shrinking, cubic when growing."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    shrinking = size[0] < image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def _transform_box(box: Box, scale: float, dx: float, dy: float, size: tuple[int, int]) -> Box | None:
    """Map a box into the output and clip it to the frame; None if nothing of it is visible."""
    x, y, w, h = box
    x0, y0 = max(0, round(x * scale + dx)), max(0, round(y * scale + dy))
    x1, y1 = min(size[0], round((x + w) * scale + dx)), min(size[1], round((y + h) * scale + dy))
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def composite_shot(
    background: np.ndarray,
    avatar_rgb: np.ndarray,
    avatar_mask: np.ndarray,
    *,
    shot: ShotType,
    out_size: tuple[int, int],
    face_box: Box,
    mouth_box: Box | None = None,
    landmarks: np.ndarray | None = None,
) -> Shot:
    """Frame the avatar (mask 0/255, feathered here) over `background` for `shot`.

    `face_box` and the optional `mouth_box` (default: derived from the face) are in avatar image
    coordinates, as are the optional 68 `landmarks` (which then place the mouth box); the returned boxes
    and landmarks are in output coordinates. `broll` is the backdrop alone.
    """
    w, h = out_size
    bg = cover_resize(background, out_size)
    if shot == "broll":
        return Shot(bg, None, None)
    if shot not in FRAMINGS:
        raise ValueError(f"unknown shot {shot!r}; expected one of {[*FRAMINGS, 'broll']}")
    if avatar_mask.shape[:2] != avatar_rgb.shape[:2]:
        raise ValueError("avatar mask and image sizes differ")
    framing = FRAMINGS[shot]
    fx, fy, fw, fh = face_box
    ah, aw = avatar_rgb.shape[:2]
    scale = framing.face_height * h / fh
    dx = framing.face_x * w - (fx + fw / 2) * scale
    dy = framing.face_y * h - (fy + fh / 2) * scale
    dy = max(dy, h - ah * scale)  # the body reaches the bottom edge instead of floating

    # Erode then blur at avatar resolution: no halo of the old backdrop, and a soft edge that scales.
    mask = avatar_mask if avatar_mask.ndim == 2 else avatar_mask[..., 0]
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=1.2, borderType=cv2.BORDER_REPLICATE)
    person_src, sx, sy = avatar_rgb, scale, scale
    if scale < 1:  # warpAffine has no area filter: shrink first so small shots of big photos do not alias
        nw, nh = max(1, round(aw * scale)), max(1, round(ah * scale))
        person_src = cv2.resize(avatar_rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = scale * aw / nw, scale * ah / nh
    m = np.array([[sx, 0, dx], [0, sy, dy]], np.float32)
    person = cv2.warpAffine(person_src, m, out_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, m, out_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = alpha.astype(np.float32) / 255.0
    frame = cv2.blendLinear(person, bg, a, 1.0 - a)
    placed = None if landmarks is None else np.asarray(landmarks, np.float64) * scale + np.array([dx, dy])
    if mouth_box is not None:
        mouth = _transform_box(mouth_box, scale, dx, dy, out_size)
    elif placed is not None:
        mouth = _transform_box(FaceLandmarks(placed).mouth_box, 1.0, 0.0, 0.0, out_size)
    else:
        mouth = _transform_box(mouth_box_from_face(face_box), scale, dx, dy, out_size)
    return Shot(
        frame=frame,
        mouth_box=mouth,
        face_box=_transform_box(face_box, scale, dx, dy, out_size),
        landmarks=placed,
    )


def contact_sheet(
    frames: list[np.ndarray], labels: list[str], columns: int = 4, cell_width: int = 320
) -> np.ndarray:
    """Storyboard grid: each frame scaled to `cell_width` with its label underneath."""
    if len(frames) != len(labels):
        raise ValueError("one label per frame")
    if not frames:
        raise ValueError("contact_sheet needs at least one frame")
    thumbs = [cv2.resize(f, (cell_width, max(1, round(f.shape[0] * cell_width / f.shape[1]))),
                         interpolation=cv2.INTER_AREA) for f in frames]
    columns = max(1, min(columns, len(frames)))
    label_h = max(18, cell_width // 12)
    gap = 8
    # Each row is as tall as its tallest thumbnail, so mixed aspect ratios do not waste space.
    row_h = [max(t.shape[0] for t in thumbs[r:r + columns]) for r in range(0, len(thumbs), columns)]
    sheet = Image.new("RGB", (columns * (cell_width + gap) + gap, sum(row_h) + len(row_h) * (label_h + gap) + gap),
                      (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    font = load_font(max(10, label_h * 2 // 3))
    row_y = np.cumsum([gap] + [h + label_h + gap for h in row_h])
    for i, (thumb, label) in enumerate(zip(thumbs, labels)):
        row = i // columns
        x, y, cell_h = gap + (i % columns) * (cell_width + gap), int(row_y[row]), row_h[row]
        sheet.paste(Image.fromarray(thumb), (x, y + (cell_h - thumb.shape[0]) // 2))
        draw.text((x + 4, y + cell_h + label_h // 2), label, font=font, fill=(235, 235, 235), anchor="lm")
    return np.asarray(sheet)
