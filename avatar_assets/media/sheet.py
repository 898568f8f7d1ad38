"""Character sheet: consistent variants of one neutral portrait on a single page.

Variants use classical geometry and colour operations only, so the sheet is
deterministic and cheap; `seed` only perturbs small jitters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from avatar_assets.media.faces import Face, judged_faces
from avatar_assets.media.portrait import NeutralPortrait

VARIANT_SIZE = 512
FRONTAL = ("close_up", "mirrored", "smile", "warm_light", "cool_light")  # variants the identity gate judges
TILE = 256
MARGIN = 16
LABEL_HEIGHT = 28
PALETTE_HEIGHT = 96
SHEET_BACKGROUND = (246, 246, 246)
INK = (40, 40, 40)
_FONT = cv2.FONT_HERSHEY_SIMPLEX

RGB = tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class CharacterSheet:
    sheet_rgb: np.ndarray
    variants: dict[str, np.ndarray]
    palette: list[RGB]
    geometry: dict[str, object]

    @property
    def palette_hex(self) -> list[str]:
        return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in self.palette]


def _kmeans(
    points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Plain k-means++ / Lloyd in numpy: bit-for-bit reproducible, unlike cv2.kmeans' global RNG."""
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        distance = np.min(((points[:, None, :] - np.asarray(centres)[None]) ** 2).sum(axis=2), axis=1)
        total = distance.sum()
        index = rng.integers(len(points)) if total == 0 else rng.choice(len(points), p=distance / total)
        centres.append(points[index])
    centre_array = np.asarray(centres, dtype=np.float64)
    labels = np.zeros(len(points), dtype=np.int64)
    for _ in range(iterations):
        labels = np.argmin(((points[:, None, :] - centre_array[None]) ** 2).sum(axis=2), axis=1)
        updated = np.array(
            [points[labels == i].mean(axis=0) if np.any(labels == i) else centre_array[i] for i in range(k)]
        )
        if np.allclose(updated, centre_array):
            break
        centre_array = updated
    return centre_array, labels


def extract_palette(rgb: np.ndarray, mask: np.ndarray | None = None, k: int = 6, seed: int = 0) -> list[RGB]:
    """Dominant colours, most common first; fewer than `k` when the image has fewer distinct colours."""
    pixels = rgb.reshape(-1, 3) if mask is None else rgb[mask > 127]
    if len(pixels) == 0:
        pixels = rgb.reshape(-1, 3)
    rng = np.random.default_rng(seed)
    if len(pixels) > 20_000:
        pixels = pixels[rng.choice(len(pixels), 20_000, replace=False)]
    points = pixels.astype(np.float64)
    clusters = min(k, len(np.unique(pixels, axis=0)))
    centres, labels = _kmeans(points, clusters, rng)
    counts = np.bincount(labels, minlength=clusters)
    order = np.argsort(-counts, kind="stable")
    return [tuple(int(round(v)) for v in centres[i]) for i in order]  # type: ignore[misc]


def _scaled_face(face: Face, factor: float) -> Face:
    def point(p: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if p is None else (p[0] * factor, p[1] * factor)

    return Face(
        int(round(face.x * factor)),
        int(round(face.y * factor)),
        int(round(face.w * factor)),
        int(round(face.h * factor)),
        point(face.left_eye),
        point(face.right_eye),
    )


def _crop(rgb: np.ndarray, centre: tuple[float, float], side: float, backdrop: RGB) -> np.ndarray:
    """Square crop resized to the variant size, padded with the backdrop outside the frame."""
    scale = VARIANT_SIZE / side
    matrix = np.array(
        [[scale, 0.0, VARIANT_SIZE / 2 - centre[0] * scale], [0.0, scale, VARIANT_SIZE / 2 - centre[1] * scale]]
    )
    flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    if scale < 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        matrix[:, :2] /= scale
        flags = cv2.INTER_LINEAR
    return cv2.warpAffine(
        rgb, matrix, (VARIANT_SIZE, VARIANT_SIZE), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=backdrop
    )


def _mid_shot(rgb: np.ndarray, mask: np.ndarray, backdrop: RGB) -> np.ndarray:
    """Portrait shrunk onto the backdrop, bottom-aligned; replicated edges carry the torso to the frame sides."""
    scale = 0.7
    offset_x = VARIANT_SIZE * (1 - scale) / 2
    matrix = np.array([[scale, 0.0, offset_x], [0.0, scale, VARIANT_SIZE * (1 - scale)]])
    size = (VARIANT_SIZE, VARIANT_SIZE)
    small = cv2.warpAffine(rgb, matrix, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    alpha = alpha.astype(np.float32)[:, :, None] / 255.0
    plate = np.asarray(backdrop, dtype=np.float32)
    return np.clip(small * alpha + plate * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)


def _head_weight(shape: tuple[int, int], face: Face) -> np.ndarray:
    """Soft ellipse over the head so warps leave the shoulders in place."""
    weight = np.zeros(shape, dtype=np.float32)
    cx, cy = face.centre
    cv2.ellipse(weight, (int(cx), int(cy - 0.1 * face.h)), (int(0.85 * face.w), int(1.0 * face.h)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(weight, (0, 0), sigmaX=0.18 * face.w)[:, :, None]


def _turn(rgb: np.ndarray, face: Face, direction: int, amount: float) -> np.ndarray:
    """Yaw imitation: the far half of the face shrinks and features slide toward the turn.

    The homography is faded out with a soft head mask as a displacement
    field, so the head deforms continuously instead of being cross-faded
    (which leaves a ghost outline of the hair).
    """
    x0, y0, x1, y1 = face.x, face.y, face.x + face.w, face.y + face.h
    shrink = amount * face.h
    shift = direction * 0.35 * amount * face.w
    source = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    if direction < 0:  # turning toward the image's left: the left edge recedes
        target = [[x0 + shift, y0 + shrink], [x1 + shift, y0], [x1 + shift, y1], [x0 + shift, y1 - shrink]]
    else:
        target = [[x0 + shift, y0], [x1 + shift, y0 + shrink], [x1 + shift, y1 - shrink], [x0 + shift, y1]]
    inverse = cv2.getPerspectiveTransform(np.float32(target), source)
    height, width = rgb.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    grid = np.stack([xs, ys], axis=2).reshape(-1, 1, 2)
    sampled = cv2.perspectiveTransform(grid, inverse).reshape(height, width, 2)
    weight = _head_weight((height, width), face)
    map_x = xs + weight[:, :, 0] * (sampled[:, :, 0] - xs)
    map_y = ys + weight[:, :, 0] * (sampled[:, :, 1] - ys)
    return cv2.remap(rgb, map_x, map_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def _smile(rgb: np.ndarray, face: Face, amount: float) -> np.ndarray:
    """Lift and widen the mouth corners with two local Gaussian displacement bumps."""
    height, width = rgb.shape[:2]
    cx = face.x + face.w / 2
    mouth_y = face.y + 0.78 * face.h
    radius = 0.08 * face.w
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x, map_y = xs.copy(), ys.copy()
    for side in (-1, 1):
        corner_x = cx + side * 0.2 * face.w
        distance2 = ((xs - corner_x) ** 2 + (ys - mouth_y) ** 2) / radius**2
        # Cut at 3 sigma so the eyes and the face outline never move.
        bump = np.where(distance2 < 9.0, np.exp(-distance2 / 2), 0.0).astype(np.float32)
        map_y += amount * face.h * bump
        map_x -= side * 0.4 * amount * face.w * bump
    return cv2.remap(rgb, map_x, map_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def _relight(rgb: np.ndarray, mask: np.ndarray, gains: tuple[float, float, float], key_from_left: bool) -> np.ndarray:
    """Tinted key light falling across the subject; the backdrop is left alone."""
    width = rgb.shape[1]
    ramp = np.linspace(1.12, 0.9, width, dtype=np.float32)
    if not key_from_left:
        ramp = ramp[::-1]
    lit = rgb.astype(np.float32) * np.asarray(gains, dtype=np.float32) * ramp[None, :, None]
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigmaX=2.0)[:, :, None]
    return np.clip(lit * alpha + rgb * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)


def _variants(portrait: NeutralPortrait, rng: np.random.Generator) -> dict[str, np.ndarray]:
    backdrop = portrait.backdrop_rgb
    factor = VARIANT_SIZE / portrait.rgb.shape[0]
    base = cv2.resize(portrait.rgb, (VARIANT_SIZE, VARIANT_SIZE), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(portrait.mask, (VARIANT_SIZE, VARIANT_SIZE), interpolation=cv2.INTER_AREA)
    face = _scaled_face(portrait.face, factor)
    fcx, fcy = portrait.face.centre
    yaw = 0.09 + float(rng.uniform(-0.01, 0.01))
    return {
        "close_up": _crop(portrait.rgb, (fcx, fcy + 0.05 * portrait.face.h), 1.8 * portrait.face.h, backdrop),
        "mid_shot": _mid_shot(base, mask, backdrop),
        "mirrored": np.ascontiguousarray(base[:, ::-1]),
        "turn_left": _turn(base, face, -1, yaw),
        "turn_right": _turn(base, face, 1, yaw),
        "smile": _smile(base, face, 0.035 + float(rng.uniform(-0.005, 0.005))),
        "warm_light": _relight(base, mask, (1.08, 1.0, 0.86), key_from_left=True),
        "cool_light": _relight(base, mask, (0.9, 0.98, 1.1), key_from_left=False),
    }


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    """Tile with a caption bar underneath (cv2 Hershey font: no font files needed)."""
    bar = np.full((LABEL_HEIGHT, tile.shape[1], 3), SHEET_BACKGROUND, dtype=np.uint8)
    cv2.putText(bar, text, (6, LABEL_HEIGHT - 9), _FONT, 0.55, INK, 1, cv2.LINE_AA)
    return np.vstack([tile, bar])


def _palette_strip(palette: list[RGB], width: int) -> np.ndarray:
    strip = np.full((PALETTE_HEIGHT, width, 3), SHEET_BACKGROUND, dtype=np.uint8)
    swatch = (width - MARGIN * (len(palette) + 1)) // max(len(palette), 1)
    for i, colour in enumerate(palette):
        x = MARGIN + i * (swatch + MARGIN)
        strip[0 : PALETTE_HEIGHT - LABEL_HEIGHT, x : x + swatch] = colour
        hex_text = "#{:02x}{:02x}{:02x}".format(*colour)
        cv2.putText(strip, hex_text, (x + 4, PALETTE_HEIGHT - 9), _FONT, 0.55, INK, 1, cv2.LINE_AA)
    return strip


def layout_sheet(neutral: np.ndarray, variants: dict[str, np.ndarray], palette: list[RGB]) -> np.ndarray:
    """Neutral large on the left, variants in a two-column labelled grid, palette strip below."""
    tiles = [
        _label(cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA), name) for name, image in variants.items()
    ]
    columns = 2
    rows = math.ceil(len(tiles) / columns)
    cell_h = TILE + LABEL_HEIGHT
    grid_h = rows * cell_h + (rows - 1) * MARGIN
    hero_side = grid_h - LABEL_HEIGHT
    hero = _label(cv2.resize(neutral, (hero_side, hero_side), interpolation=cv2.INTER_AREA), "neutral")
    width = MARGIN * 3 + hero_side + columns * TILE + (columns - 1) * MARGIN
    height = MARGIN * 3 + grid_h + PALETTE_HEIGHT
    sheet = np.full((height, width, 3), SHEET_BACKGROUND, dtype=np.uint8)
    sheet[MARGIN : MARGIN + grid_h, MARGIN : MARGIN + hero_side] = hero
    grid_x = MARGIN * 2 + hero_side
    for i, tile in enumerate(tiles):
        row, column = divmod(i, columns)
        y = MARGIN + row * (cell_h + MARGIN)
        x = grid_x + column * (TILE + MARGIN)
        sheet[y : y + cell_h, x : x + TILE] = tile
    strip_y = MARGIN * 2 + grid_h
    sheet[strip_y : strip_y + PALETTE_HEIGHT, MARGIN : width - MARGIN] = _palette_strip(palette, width - 2 * MARGIN)
    return sheet


def _box(face: Face | None) -> dict[str, int] | None:
    return None if face is None else {"x": face.x, "y": face.y, "w": face.w, "h": face.h}


def _eye(point: tuple[float, float] | None) -> list[float] | None:
    return None if point is None else [round(float(point[0]), 2), round(float(point[1]), 2)]


def make_character_sheet(portrait: NeutralPortrait, *, seed: int = 0) -> CharacterSheet:
    rng = np.random.default_rng(seed)
    variants = _variants(portrait, rng)
    palette = extract_palette(portrait.rgb, portrait.mask, k=6, seed=seed)
    per_variant = {}
    for name, image in variants.items():
        found = judged_faces(image)  # the identity gate reuses this detection
        per_variant[name] = {"face_box": _box(found[0] if found else None), "face_count": len(found)}
    geometry: dict[str, object] = {
        "size": [int(portrait.rgb.shape[1]), int(portrait.rgb.shape[0])],
        "face_box": _box(portrait.face),
        "eyes": {"left": _eye(portrait.face.left_eye), "right": _eye(portrait.face.right_eye)},
        "variant_names": list(variants),
        "frontal": [name for name in variants if name in FRONTAL],
        "variant_size": VARIANT_SIZE,
        "variants": per_variant,
        "palette": [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in palette],
        "seed": seed,
    }
    return CharacterSheet(
        sheet_rgb=layout_sheet(portrait.rgb, variants, palette),
        variants=variants,
        palette=palette,
        geometry=geometry,
    )
