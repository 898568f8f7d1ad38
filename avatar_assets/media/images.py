"""Safe decoding and encoding of user photos.

Uploads are untrusted: every failure becomes a `PhotoError` whose message is
shown to users (quarantine reasons, QA gates), and oversized images are
refused from their header before any pixel is decoded.
"""

from __future__ import annotations

import base64
import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_EXIF_ORIENTATION_TAG = 0x0112
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


class PhotoError(ValueError):
    """A photo we refuse; the message is meant for end users."""


@dataclass(frozen=True, eq=False)
class LoadedPhoto:
    """An upright RGB photo plus what it looked like on disk (for audit trails)."""

    rgb: np.ndarray
    original_mode: str
    original_size: tuple[int, int]
    exif_orientation: int
    format: str


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.1f} MP"


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """Header size without PIL's bomb check, which hides the size we want to report."""
    Image.init()
    prefix = data[:16]
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        if accept is not None:
            accepted = accept(prefix)
            if not accepted or isinstance(accepted, str):
                continue
        try:
            return factory(io.BytesIO(data), "").size
        except Exception:  # noqa: BLE001 - any plugin failure just means "not this format"
            continue
    return None


def _bomb_message(width: int, height: int, max_pixels: int) -> str:
    return (
        f"image declares {width}x{height} = {_megapixels(width * height)}, "
        f"over the {_megapixels(max_pixels)} limit"
    )


def _open_lazily(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        size = _declared_size(data)
        if size is None:
            raise PhotoError(f"image is too large to decode safely: {exc}") from exc
        limit = max_pixels if size[0] * size[1] > max_pixels else Image.MAX_IMAGE_PIXELS or max_pixels
        raise PhotoError(_bomb_message(*size, limit)) from exc
    except UnidentifiedImageError as exc:
        raise PhotoError(f"not an image: unrecognised file format (starts with {data[:8]!r})") from exc
    except _DECODE_ERRORS as exc:
        raise PhotoError(f"truncated or corrupt image: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise PhotoError(f"truncated or corrupt image: declared size {width}x{height}")
    if width * height > max_pixels:
        raise PhotoError(_bomb_message(width, height, max_pixels))
    return image


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Collapse every supported mode to 8-bit RGB without clipping deep images."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode in {"I", "F"}:
        values = np.asarray(image, dtype=np.float64)
        # 32-bit "I"/"F" images come from 16-bit sources in practice; only rescale if they exceed 8 bits.
        full_scale = 65535.0 if (mode in _SIXTEEN_BIT_MODES or values.max(initial=0) > 255) else 255.0
        grey = np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P" and image.has_transparency_data:
        image = image.convert("RGBA")
    elif mode in _ALPHA_MODES:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        rgba = np.asarray(image, dtype=np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        over_white = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(over_white), 0, 255).astype(np.uint8)
    try:
        return np.array(image.convert("RGB"), dtype=np.uint8)
    except ValueError as exc:
        raise PhotoError(f"unsupported colour mode {mode}") from exc


def _upright(image: Image.Image) -> tuple[Image.Image, int]:
    """Apply EXIF orientation; a broken EXIF block is ignored rather than refusing a good photo."""
    try:
        orientation = int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
        return ImageOps.exif_transpose(image), orientation if 1 <= orientation <= 8 else 1
    except (*_DECODE_ERRORS, TypeError, KeyError):
        return image, 1


def load_photo(data: bytes, *, max_pixels: int = 40_000_000) -> LoadedPhoto:
    """Decode an untrusted upload into an upright RGB uint8 array or raise `PhotoError`."""
    if not data:
        raise PhotoError("file is empty (0 bytes)")
    image = _open_lazily(data, max_pixels)
    original_mode, original_size, fmt = image.mode, image.size, image.format or "unknown"
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        raise PhotoError(f"truncated or corrupt image: {exc}") from exc
    upright, orientation = _upright(image)
    return LoadedPhoto(
        rgb=np.ascontiguousarray(_to_rgb_array(upright)),
        original_mode=original_mode,
        original_size=original_size,
        exif_orientation=orientation,
        format=fmt,
    )


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless and byte-deterministic, so it can be hashed for caching and tests. zlib level 1: a
    1080x1920 backdrop encodes in a quarter of the default level's time (0.11 s against 0.46 s) for a
    file ~60 % larger, and a render writes a dozen such images."""
    _check_rgb(rgb)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    _check_rgb(rgb)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """For blobs we wrote ourselves; untrusted uploads go through `load_photo`."""
    with Image.open(io.BytesIO(data)) as image:
        return np.array(image.convert("RGB"), dtype=np.uint8)


def thumbnail_markdown(rgb: np.ndarray, *, max_side: int = 192, alt: str = "thumbnail") -> str:
    """Inline preview for the Dagster UI; palette-quantised so metadata stays a few tens of KB. Octree, not
    median cut: 1.4 against 24 ms for a 192 px neutral image, 12.6 against 16.2 KB, 39.1 against 40.4 dB."""
    _check_rgb(rgb)
    image = Image.fromarray(rgb)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    safe_alt = alt.replace("[", "(").replace("]", ")")
    return f"![{safe_alt}](data:image/png;base64,{encoded})"
