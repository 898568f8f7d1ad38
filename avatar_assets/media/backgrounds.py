"""Model-free scene backdrops: a prompt picks a palette and a layout, a seed places the details.

The avatar sits in front of these, so they are kept soft (gradients, out-of-focus shapes, bokeh)
like a shallow depth-of-field photo, and cheap enough to render per scene at full HD.
"""

from __future__ import annotations

import colorsys
import re
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

# Everything is drawn at this long side and upscaled: the look is blurred anyway, so detail
# beyond it is never visible, and it keeps a 1920x1080 render well under 100 ms.
_WORK_LONG_SIDE = 480

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Palette:
    """Colours and layout of one backdrop family."""

    top: RGB
    middle: RGB
    bottom: RGB
    accents: tuple[RGB, ...]
    layout: str  # bokeh | horizon | waves | trees | windows | spotlight | skyline | stars
    bokeh: int = 14


PALETTES: dict[str, Palette] = {
    "sunset": Palette((58, 36, 96), (236, 112, 72), (250, 190, 110),
                      ((255, 200, 120), (255, 140, 90), (255, 230, 170)), "horizon"),
    "beach": Palette((96, 170, 228), (178, 222, 240), (236, 214, 170),
                     ((255, 255, 240), (255, 236, 200), (200, 240, 255)), "waves", 8),
    "ocean": Palette((14, 50, 98), (28, 110, 160), (64, 170, 196),
                     ((170, 235, 255), (120, 210, 240), (220, 250, 255)), "waves", 10),
    "forest": Palette((42, 70, 40), (78, 120, 60), (30, 52, 30),
                      ((210, 230, 140), (160, 210, 110), (250, 240, 170)), "trees", 18),
    "office": Palette((214, 218, 222), (196, 194, 188), (150, 140, 128),
                      ((255, 252, 240), (230, 236, 240), (250, 240, 220)), "windows", 10),
    "studio": Palette((34, 36, 44), (64, 66, 78), (22, 22, 28),
                      ((120, 130, 160), (160, 150, 190), (200, 200, 220)), "spotlight", 6),
    "night": Palette((6, 10, 30), (20, 30, 70), (10, 14, 36),
                     ((255, 220, 150), (140, 180, 255), (255, 255, 255)), "stars", 16),
    "city": Palette((30, 40, 80), (110, 90, 130), (240, 150, 90),
                    ((255, 210, 120), (255, 120, 90), (140, 200, 255)), "skyline", 22),
    "space": Palette((2, 2, 10), (20, 10, 40), (6, 4, 18),
                     ((200, 120, 255), (90, 140, 255), (255, 150, 200)), "stars", 6),
    "mountain": Palette((120, 160, 210), (200, 214, 230), (90, 110, 120),
                        ((255, 255, 255), (230, 240, 250), (200, 220, 240)), "horizon", 6),
    "desert": Palette((120, 170, 220), (240, 210, 160), (206, 150, 90),
                      ((255, 240, 200), (255, 220, 160), (250, 200, 140)), "horizon", 6),
    "snow": Palette((180, 200, 224), (226, 234, 244), (246, 248, 252),
                    ((255, 255, 255), (220, 236, 255), (240, 246, 255)), "bokeh", 28),
    "autumn": Palette((150, 80, 40), (210, 130, 50), (90, 50, 30),
                      ((255, 190, 90), (240, 120, 50), (255, 220, 140)), "trees", 20),
    "garden": Palette((140, 190, 110), (190, 220, 140), (70, 120, 60),
                      ((255, 170, 200), (255, 240, 150), (250, 250, 250)), "bokeh", 22),
    "cafe": Palette((70, 44, 30), (140, 96, 64), (50, 32, 24),
                    ((255, 200, 120), (255, 170, 90), (255, 230, 180)), "bokeh", 24),
    "library": Palette((60, 40, 30), (110, 76, 50), (40, 28, 22),
                       ((230, 180, 110), (180, 120, 70), (255, 220, 160)), "windows", 12),
    "neon": Palette((20, 6, 40), (60, 10, 90), (10, 20, 50),
                    ((255, 60, 200), (60, 220, 255), (180, 90, 255)), "skyline", 26),
    "tech": Palette((10, 24, 48), (20, 60, 110), (8, 16, 32),
                    ((80, 200, 255), (120, 255, 220), (160, 160, 255)), "bokeh", 20),
    "classroom": Palette((226, 220, 200), (200, 190, 160), (120, 100, 80),
                         ((255, 250, 230), (240, 230, 200), (255, 255, 255)), "windows", 8),
    "medical": Palette((220, 236, 240), (196, 222, 230), (150, 186, 200),
                       ((255, 255, 255), (210, 240, 250), (230, 250, 255)), "windows", 8),
    "sky": Palette((70, 130, 210), (150, 196, 240), (220, 236, 250),
                   ((255, 255, 255), (240, 248, 255), (220, 235, 255)), "bokeh", 10),
}

# Words people actually write, mapped onto the families above.
_SYNONYMS: dict[str, str] = {
    "sunrise": "sunset", "dusk": "sunset", "dawn": "sunset", "golden": "sunset",
    "sand": "beach", "tropical": "beach", "island": "beach", "coast": "beach", "seaside": "beach",
    "sea": "ocean", "underwater": "ocean", "water": "ocean", "lake": "ocean",
    "woods": "forest", "jungle": "forest", "nature": "forest", "park": "forest", "trees": "forest",
    "workplace": "office", "corporate": "office", "business": "office", "meeting": "office", "desk": "office",
    "podcast": "studio", "stage": "studio", "interview": "studio", "dark": "studio", "news": "studio",
    "evening": "night", "moon": "night", "midnight": "night", "stars": "night",
    "urban": "city", "street": "city", "downtown": "city", "skyline": "city",
    "galaxy": "space", "cosmos": "space", "nebula": "space", "astronaut": "space", "planet": "space",
    "mountains": "mountain", "alps": "mountain", "hills": "mountain",
    "dunes": "desert", "savanna": "desert",
    "winter": "snow", "christmas": "snow", "ice": "snow",
    "fall": "autumn", "leaves": "autumn",
    "flowers": "garden", "spring": "garden", "floral": "garden",
    "coffee": "cafe", "restaurant": "cafe", "bar": "cafe", "cozy": "cafe",
    "books": "library", "study": "library",
    "cyberpunk": "neon", "synthwave": "neon", "club": "neon",
    "technology": "tech", "digital": "tech", "data": "tech", "ai": "tech", "startup": "tech",
    "school": "classroom", "university": "classroom", "lecture": "classroom",
    "hospital": "medical", "clinic": "medical", "health": "medical", "doctor": "medical",
    "clouds": "sky", "outdoor": "sky", "outdoors": "sky",
}

_LAYOUTS = ("bokeh", "horizon", "waves", "trees", "windows", "spotlight", "skyline", "stars")


def palette_for_prompt(prompt: str) -> Palette:
    """First known keyword wins; otherwise the prompt's words are hashed into a palette of their own."""
    words = re.findall(r"[a-z]+", prompt.lower())
    for word in words:
        if word in PALETTES:
            return PALETTES[word]
        if word in _SYNONYMS:
            return PALETTES[_SYNONYMS[word]]
    return _hashed_palette(" ".join(words))


def _hashed_palette(text: str) -> Palette:
    """Unknown prompts still get a stable, harmonious palette: analogous hues around a hashed base."""
    h = zlib.crc32(text.encode())
    hue = (h & 0xFFFF) / 0xFFFF
    dark = (h >> 16) & 1

    def rgb(hh: float, s: float, v: float) -> RGB:
        r, g, b = colorsys.hsv_to_rgb(hh % 1.0, s, v)
        return (round(r * 255), round(g * 255), round(b * 255))

    base_v = 0.35 if dark else 0.8
    return Palette(
        top=rgb(hue, 0.55, base_v * 0.8),
        middle=rgb(hue + 0.05, 0.45, base_v),
        bottom=rgb(hue + 0.1, 0.6, base_v * 0.6),
        accents=(rgb(hue + 0.5, 0.3, 1.0), rgb(hue + 0.08, 0.25, 1.0), rgb(hue - 0.08, 0.35, 0.95)),
        layout=_LAYOUTS[(h >> 17) % len(_LAYOUTS)],
        bokeh=10 + (h >> 20) % 14,
    )


def classical_background(prompt: str, width: int, height: int, *, seed: int) -> np.ndarray:
    """Deterministic RGB backdrop for `prompt`: same prompt, size and seed give identical bytes."""
    if width < 2 or height < 2:
        raise ValueError(f"background size must be at least 2x2, got {width}x{height}")
    palette = palette_for_prompt(prompt)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(prompt.encode())])
    scale = _WORK_LONG_SIDE / max(width, height)
    ww, wh = max(8, round(width * scale)), max(8, round(height * scale))

    img = _gradient(palette, ww, wh, rng)
    _LAYOUT_PAINTERS[palette.layout](img, palette, rng)
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=max(1.0, ww / 320))
    _bokeh(img, palette, rng, palette.bokeh)
    _vignette(img)

    out = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    # A fixed ±1 dither tile stops 8-bit banding in the gradient without per-pixel RNG cost.
    tile = rng.integers(-1, 2, size=(64, 64, 1), dtype=np.int16).astype(np.float32)
    reps = (-(-height // 64), -(-width // 64), 1)
    out += np.tile(tile, reps)[:height, :width]
    return np.clip(out, 0, 255).astype(np.uint8)


def _gradient(p: Palette, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Three-stop vertical gradient with a seeded middle position so seeds differ even in flat areas."""
    mid = rng.uniform(0.4, 0.65)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    top, middle, bottom = (np.asarray(c, np.float32) for c in (p.top, p.middle, p.bottom))
    upper = np.clip(y / mid, 0, 1)
    lower = np.clip((y - mid) / (1 - mid), 0, 1)
    col = np.where(y <= mid, top + (middle - top) * upper, middle + (bottom - middle) * lower)
    return np.ascontiguousarray(np.broadcast_to(col[:, None, :], (h, w, 3)))


def _blend_shape(img: np.ndarray, mask: np.ndarray, color: RGB | np.ndarray, alpha: float) -> None:
    """Alpha-blend a colour through a 0..1 mask, in place."""
    a = (mask * alpha)[..., None]
    img *= 1 - a
    img += a * np.asarray(color, np.float32)


def _horizon(img: np.ndarray, p: Palette, rng: np.random.Generator) -> None:
    """Glowing horizon band plus a distant ridge line."""
    h, w = img.shape[:2]
    hy = rng.uniform(0.55, 0.7) * h
    y = np.arange(h, dtype=np.float32)[:, None]
    glow = np.exp(-(((y - hy) / (0.08 * h)) ** 2)) * np.ones((1, w), np.float32)
    _blend_shape(img, glow, p.accents[0], 0.55)
    mask = np.zeros((h, w), np.float32)
    xs = np.linspace(0, w, 9)
    ys = hy + rng.uniform(-0.08, 0.02, size=xs.size) * h
    poly = np.array([[0, h], *zip(xs, ys), [w, h]], np.int32)
    cv2.fillPoly(mask, [poly], 1.0)
    _blend_shape(img, mask, np.asarray(p.bottom, np.float32) * 0.7, 0.8)


def _waves(img: np.ndarray, p: Palette, rng: np.random.Generator) -> None:
    """Soft horizontal light bands, like a sea surface seen out of focus."""
    h, w = img.shape[:2]
    hy = rng.uniform(0.45, 0.6)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= h
    phase = rng.uniform(0, 2 * np.pi)
    bands = 0.5 + 0.5 * np.sin(yy * rng.uniform(40, 70) + np.sin(xx / w * 6 + phase) * 1.5)
    mask = bands * np.clip((yy - hy) / 0.1, 0, 1) * np.clip((0.92 - yy) / 0.2, 0, 1)
    _blend_shape(img, mask, p.accents[0], 0.3)


def _trees(img: np.ndarray, p: Palette, rng: np.random.Generator) -> None:
    """Out-of-focus trunks and canopies in two depth layers."""
    h, w = img.shape[:2]
    for depth, alpha in ((0.6, 0.35), (1.0, 0.6)):
        mask = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(4, 8))):
            x = int(rng.uniform(0, w))
            tw = int(rng.uniform(0.02, 0.05) * w * depth) + 1
            cv2.rectangle(mask, (x - tw, int(h * 0.3)), (x + tw, h), 1.0, -1)
            cv2.circle(mask, (x, int(h * rng.uniform(0.1, 0.35))), int(rng.uniform(0.1, 0.2) * w * depth), 1.0, -1)
        _blend_shape(img, cv2.GaussianBlur(mask, (0, 0), 6 / depth), np.asarray(p.bottom, np.float32) * 0.8, alpha)


def _windows(img: np.ndarray, p: Palette, rng: np.random.Generator) -> None:
    """Bright blurred window panes and a desk line, the typical interior backdrop."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.float32)
    cols = int(rng.integers(2, 5))
    x0 = rng.uniform(0.0, 0.3) * w
    pane_w = rng.uniform(0.12, 0.2) * w
    for i in range(cols):
        x = int(x0 + i * pane_w * 1.15)
        cv2.rectangle(mask, (x, int(0.12 * h)), (int(x + pane_w), int(0.6 * h)), 1.0, -1)
    _blend_shape(img, cv2.GaussianBlur(mask, (0, 0), 4), p.accents[0], 0.6)
    desk = np.zeros((h, w), np.float32)
    desk[int(rng.uniform(0.72, 0.8) * h):] = 1.0
    _blend_shape(img, cv2.GaussianBlur(desk, (0, 0), 3), np.asarray(p.bottom, np.float32) * 0.85, 0.7)


def _spotlight(img: np.ndarray, p: Palette, rng: np.random.Generator) -> None:
    """One soft light pool behind the subject, as on a studio paper backdrop."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.3, 0.5) * h
    r = rng.uniform(0.35, 0.5) * max(w, h)
    mask = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r)))
    _blend_shape(img, mask, p.accents[int(rng.integers(len(p.accents)))], 0.45)


def _skyline(img: np.ndarray, p: Palette, rng: np.random.Generator) -> None:
    """Blurred building silhouettes with lit windows."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.float32)
    lights = np.zeros((h, w), np.float32)
    x = 0
    while x < w:
        bw = int(rng.uniform(0.05, 0.12) * w) + 2
        top = int(rng.uniform(0.35, 0.7) * h)
        cv2.rectangle(mask, (x, top), (x + bw, h), 1.0, -1)
        for _ in range(int(rng.integers(3, 10))):
            lx, ly = int(rng.uniform(x, x + bw)), int(rng.uniform(top, h))
            cv2.rectangle(lights, (lx, ly), (lx + 2, ly + 2), 1.0, -1)
        x += bw + int(rng.integers(0, 4))
    _blend_shape(img, cv2.GaussianBlur(mask, (0, 0), 2), np.asarray(p.top, np.float32) * 0.6, 0.85)
    _blend_shape(img, cv2.GaussianBlur(lights, (0, 0), 1.2), p.accents[0], 0.9)


def _stars(img: np.ndarray, p: Palette, rng: np.random.Generator) -> None:
    """Sparse stars and a faint nebula cloud."""
    h, w = img.shape[:2]
    cloud = cv2.GaussianBlur(rng.random((max(2, h // 16), max(2, w // 16))).astype(np.float32), (0, 0), 1.5)
    cloud = cv2.resize(cloud, (w, h), interpolation=cv2.INTER_CUBIC)
    cloud = np.clip((cloud - cloud.mean()) * 3, 0, 1)
    _blend_shape(img, cloud, p.accents[int(rng.integers(len(p.accents)))], 0.35)
    n = int(w * h / 400)
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    bright = rng.uniform(0.3, 1.0, n).astype(np.float32)[:, None]
    img[ys, xs] = img[ys, xs] * (1 - bright) + 255 * bright


_LAYOUT_PAINTERS = {
    "bokeh": lambda img, p, rng: None,  # the bokeh pass below is the whole look
    "horizon": _horizon,
    "waves": _waves,
    "trees": _trees,
    "windows": _windows,
    "spotlight": _spotlight,
    "skyline": _skyline,
    "stars": _stars,
}


def _bokeh(img: np.ndarray, p: Palette, rng: np.random.Generator, count: int) -> None:
    """Out-of-focus light discs with a slightly brighter rim, blended additively on small ROIs."""
    h, w = img.shape[:2]
    for _ in range(count):
        r = rng.uniform(0.015, 0.07) * max(w, h)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h * 0.85)
        color = np.asarray(p.accents[int(rng.integers(len(p.accents)))], np.float32)
        alpha = rng.uniform(0.08, 0.3)
        x0, x1 = max(0, int(cx - r - 2)), min(w, int(cx + r + 3))
        y0, y1 = max(0, int(cy - r - 2)), min(h, int(cy + r + 3))
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / r
        disc = np.clip((1 - d) * r / 1.5, 0, 1) * (0.8 + 0.2 * np.clip(d, 0, 1) ** 4)
        roi = img[y0:y1, x0:x1]
        a = (disc * alpha)[..., None]
        roi += a * (color - roi * 0.5)


def _vignette(img: np.ndarray) -> None:
    """Darker corners draw the eye to the centre where the presenter stands."""
    h, w = img.shape[:2]
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    img *= (1 - 0.22 * np.clip(xx * xx + yy * yy - 0.3, 0, None))[..., None]
