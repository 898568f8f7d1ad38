"""Shot framing: place the cut-out avatar over a backdrop the way a camera operator would.

Framing is driven by the face box so any portrait crop lands the same way: the face height sets the
scale per shot type and the body is never left floating above the bottom edge. The mouth box travels
with the placement because lip sync draws on the composed frame.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal, Protocol

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
    placement: Placement | None = None  # where the avatar image landed (None for b-roll)


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


def safe_area(size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Where a face may go, as fractions of the frame (left, top, right, bottom): vertical video keeps clear
    of the header, the right-hand buttons and the description that platforms lay over it; square and
    landscape frames keep a title-safe margin."""
    w, h = size
    return (0.06, 0.08, 0.86, 0.84) if h > w else (0.05, 0.05, 0.95, 0.95)


@dataclass(frozen=True)
class Placement:
    """Avatar pixel p lands on output pixel p * scale + (dx, dy)."""

    scale: float
    dx: float
    dy: float

    def box(self, box: Box, size: tuple[int, int]) -> Box | None:
        return _transform_box(box, self.scale, self.dx, self.dy, size)

    def points(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, np.float64) * self.scale + np.array([self.dx, self.dy])


class Placed(Protocol):
    """A `Placement` or its record (`contracts.Placement`): all an overlay reads."""

    scale: float
    dx: float
    dy: float


def frame_avatar(face_box: Box, avatar_size: tuple[int, int], shot: str, out_size: tuple[int, int]) -> Placement:
    """Where the avatar (an image of `avatar_size`, face at `face_box`) goes in an `out_size` frame for `shot`:
    the face height sets the scale, the face centre goes where the framing says, the body reaches the
    bottom edge instead of floating, and the face stays inside `safe_area(out_size)`."""
    if shot not in FRAMINGS:
        raise ValueError(f"unknown shot {shot!r}; expected one of {[*FRAMINGS, 'broll']}")
    framing = FRAMINGS[shot]
    w, h = out_size
    left, top, right, bottom = safe_area(out_size)
    fx, fy, fw, fh = face_box
    ah = avatar_size[1]
    scale = framing.face_height * h / fh
    below = ah - (fy + fh)  # avatar pixels under the face: enough of them keep the face above the safe bottom
    if below > 0:
        scale = max(scale, (1 - bottom) * h / below)
    scale = min(scale, (right - left) * w / fw, (bottom - top) * h / fh)
    dx = framing.face_x * w - (fx + fw / 2) * scale
    dy = framing.face_y * h - (fy + fh / 2) * scale
    dy = max(dy, h - ah * scale)  # the body reaches the bottom edge instead of floating
    dx = min(max(dx, left * w - fx * scale), right * w - (fx + fw) * scale)
    dy = min(max(dy, top * h - fy * scale), bottom * h - (fy + fh) * scale)
    return Placement(scale, dx, dy)


def soft_alpha(mask: np.ndarray) -> np.ndarray:
    """The cut-out's alpha at avatar resolution: eroded then blurred (no halo of the old backdrop, a soft
    edge that scales), and faded towards the image's left and right edges, where a person cut by the photo's
    frame would otherwise end in a hard vertical line inside a wider frame."""
    mask = mask if mask.ndim == 2 else mask[..., 0]
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=1.2, borderType=cv2.BORDER_REPLICATE)
    width = mask.shape[1]
    fade = max(1.0, 0.06 * width)
    ramp = np.clip(np.minimum(np.arange(width), width - 1 - np.arange(width)) / fade, 0.0, 1.0)
    return (mask.astype(np.float32) * ramp[None, :].astype(np.float32)).astype(np.uint8)


class ScaledLayer:
    """The current layer frame's blocks as scaled for the overlays that share this: renditions that show the
    avatar at the same scale (1:1 and 16:9 share their short side, so mostly their framing) resize it once,
    whichever of their threads asks first."""

    def __init__(self) -> None:
        self.layer: np.ndarray | None = None
        self.blocks: dict[tuple, list] = {}  # key -> [its lock, the block once made]
        self.lock = threading.Lock()

    def block(self, layer: np.ndarray, crop: tuple[int, int, int, int], scaled: tuple[int, int], interpolation: int):
        key = (crop, scaled, interpolation)
        with self.lock:
            if layer is not self.layer:  # held, so a new frame can never be mistaken for it
                self.layer, self.blocks = layer, {}
            entry = self.blocks.setdefault(key, [threading.Lock(), None])
        with entry[0]:  # other blocks are made meanwhile; the same block waits for the one making it
            if entry[1] is None:
                x0, y0, x1, y1 = crop
                entry[1] = cv2.resize(layer[y0:y1, x0:x1], scaled, interpolation=interpolation)
            return entry[1]


class AvatarOverlay:
    """The avatar layer of one scene placed into one output frame. Everything that does not change from
    frame to frame is done once: which part of the layer is visible, its alpha at output size, and which
    output pixels are fully the person, partly (the feathered edge) or not at all. A frame is then one
    resize of the visible part of the layer (shared with the overlays given the same `scaled`), one masked
    copy and a blend of the edge pixels only."""

    def __init__(self, mask: np.ndarray, placement: Placed, out_size: tuple[int, int],
                 scaled: ScaledLayer | None = None) -> None:
        alpha = soft_alpha(mask)
        self.shared = scaled or ScaledLayer()
        self.last_made: tuple[np.ndarray, np.ndarray] | None = None  # (out, background) of the last frame
        self.rect = None
        ys, xs = np.nonzero(alpha)
        if not len(xs):  # nothing of the person: the frame is the backdrop
            return
        s, dx, dy = placement.scale, placement.dx, placement.dy
        w, h = out_size
        lh, lw = alpha.shape
        # The layer's pixels that land in the frame (and hold some of the person), one pixel of margin.
        x0 = max(0, int(xs.min()) - 1, int(np.floor(-dx / s)) - 1)
        y0 = max(0, int(ys.min()) - 1, int(np.floor(-dy / s)) - 1)
        x1 = min(lw, int(xs.max()) + 2, int(np.ceil((w - dx) / s)) + 1)
        y1 = min(lh, int(ys.max()) + 2, int(np.ceil((h - dy) / s)) + 1)
        if x1 <= x0 or y1 <= y0:
            return
        # That block scaled to whole output pixels at a whole-pixel origin (within half a pixel of the placement).
        ox, oy = round(x0 * s + dx), round(y0 * s + dy)
        self.scaled = (max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s)))
        # Area averaging only where bilinear would skip pixels: down to half size bilinear reads every source
        # pixel, at a seventh of INTER_AREA's cost for the fractional scales framing gives.
        self.interpolation = cv2.INTER_AREA if s < 0.5 else cv2.INTER_LINEAR
        self.crop = (x0, y0, x1, y1)
        rx0, ry0 = max(0, ox), max(0, oy)
        rx1, ry1 = min(w, ox + self.scaled[0]), min(h, oy + self.scaled[1])
        if rx1 <= rx0 or ry1 <= ry0:
            return
        self.rect = (rx0, ry0, rx1, ry1)
        self.window = (slice(ry0 - oy, ry1 - oy), slice(rx0 - ox, rx1 - ox))  # of the scaled block
        a = cv2.resize(alpha[y0:y1, x0:x1], self.scaled, interpolation=self.interpolation)[self.window]
        a = a.astype(np.float32) / 255.0
        self.opaque = (a >= 254.5 / 255).astype(np.uint8)
        ey, ex = np.nonzero((a > 0.5 / 255) & (a < 254.5 / 255))
        self.weight = a[ey, ex][:, None]
        # The feathered edge as flat pixel indices into the frame and into the scaled block (a take is half
        # the cost of indexing a view with coordinate arrays).
        self.edge_in_frame = (ry0 + ey) * w + (rx0 + ex)
        self.edge_in_block = (ry0 - oy + ey) * self.scaled[0] + (rx0 - ox + ex)

    def over(self, background: np.ndarray, layer: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """`layer` (avatar pixels, the mask's size) over a copy of `background` (output size), made in `out`
        when given: a frame loop that reuses one buffer skips a fresh page-faulting allocation per frame, and
        when the buffer already holds this backdrop from the last frame (nobody writes to a returned frame)
        only the avatar's rectangle is redrawn."""
        if out is None:
            frame = background.copy()
        else:
            if not out.flags.c_contiguous:
                raise ValueError("over() needs a C-contiguous out buffer")
            frame = out
            if self.rect is None or self.last_made is None or self.last_made[0] is not out \
                    or self.last_made[1] is not background:
                np.copyto(frame, background)
                self.last_made = (out, background)
        if self.rect is None:
            return frame
        rx0, ry0, rx1, ry1 = self.rect
        if out is not None:
            frame[ry0:ry1, rx0:rx1] = background[ry0:ry1, rx0:rx1]
        block = self.shared.block(layer, self.crop, self.scaled, self.interpolation)
        pixels = frame.reshape(-1, 3)
        edge_bg = pixels.take(self.edge_in_frame, axis=0).astype(np.float32)
        cv2.copyTo(block[self.window], self.opaque, frame[ry0:ry1, rx0:rx1])
        edge_fg = block.reshape(-1, 3).take(self.edge_in_block, axis=0)
        pixels[self.edge_in_frame] = (edge_bg + (edge_fg - edge_bg) * self.weight + 0.5).astype(np.uint8)
        return frame


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
    """Frame the avatar (mask 0/255, feathered here) over `background` for `shot` (`frame_avatar`).

    `face_box` and the optional `mouth_box` (default: derived from the face) are in avatar image
    coordinates, as are the optional 68 `landmarks` (which then place the mouth box); the returned boxes
    and landmarks are in output coordinates. `broll` is the backdrop alone.
    """
    bg = cover_resize(background, out_size)
    if shot == "broll":
        return Shot(bg, None, None)
    if avatar_mask.shape[:2] != avatar_rgb.shape[:2]:
        raise ValueError("avatar mask and image sizes differ")
    placement = frame_avatar(face_box, (avatar_rgb.shape[1], avatar_rgb.shape[0]), shot, out_size)
    frame = AvatarOverlay(avatar_mask, placement, out_size).over(bg, avatar_rgb)
    placed = None if landmarks is None else placement.points(landmarks)
    if mouth_box is not None:
        mouth = placement.box(mouth_box, out_size)
    elif placed is not None:
        mouth = _transform_box(FaceLandmarks(placed).mouth_box, 1.0, 0.0, 0.0, out_size)
    else:
        mouth = placement.box(mouth_box_from_face(face_box), out_size)
    return Shot(frame=frame, mouth_box=mouth, face_box=placement.box(face_box, out_size), landmarks=placed,
                placement=placement)


@dataclass(frozen=True)
class Avatar:
    """A cut-out avatar: image, 0/255 mask, face box and optional 68 landmarks, all in its own pixels."""

    rgb: np.ndarray
    mask: np.ndarray
    face_box: Box
    landmarks: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def fit_avatar(avatar: Avatar, canvas: tuple[int, int]) -> Avatar:
    """`avatar` scaled to fit a `canvas` (w, h) image, bottom-centred so the body stays on the bottom edge;
    the margin repeats the edge pixels under a zero mask. Every scene's avatar (a pose variant is its own
    image) is drawn on one canvas, the avatar layer that lip sync renders once for all renditions."""
    cw, ch = canvas
    aw, ah = avatar.size
    scale = min(cw / aw, ch / ah)
    nw, nh = min(cw, max(1, round(aw * scale))), min(ch, max(1, round(ah * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    rgb = cv2.resize(avatar.rgb, (nw, nh), interpolation=interpolation) if (nw, nh) != (aw, ah) else avatar.rgb
    mask = avatar.mask if avatar.mask.ndim == 2 else avatar.mask[..., 0]
    mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR) if (nw, nh) != (aw, ah) else mask
    left, top = (cw - nw) // 2, ch - nh
    rgb = cv2.copyMakeBorder(rgb, top, 0, left, cw - nw - left, cv2.BORDER_REPLICATE)
    mask = cv2.copyMakeBorder(mask, top, 0, left, cw - nw - left, cv2.BORDER_CONSTANT, value=0)
    sx, sy = nw / aw, nh / ah
    fx, fy, fw, fh = avatar.face_box
    face = (round(fx * sx + left), round(fy * sy + top), max(1, round(fw * sx)), max(1, round(fh * sy)))
    points = None if avatar.landmarks is None else np.asarray(avatar.landmarks, np.float64) * [sx, sy] + [left, top]
    return Avatar(np.ascontiguousarray(rgb), np.ascontiguousarray(mask), face, points)


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
