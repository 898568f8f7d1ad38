from __future__ import annotations

import base64
import io
import re
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatar_assets.media.faces import detect_faces
from avatar_assets.media.images import (
    PhotoError,
    decode_image,
    encode_jpeg,
    encode_png,
    load_photo,
    thumbnail_markdown,
)


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR is patched to claim another size (CRC fixed up)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
    png = bytearray(buffer.getvalue())
    assert png[12:16] == b"IHDR"
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def _save(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_loads_astronaut_as_rgb_uint8(astronaut_bytes: bytes) -> None:
    photo = load_photo(astronaut_bytes)
    assert photo.rgb.shape == (512, 512, 3)
    assert photo.rgb.dtype == np.uint8
    assert photo.rgb.flags.writeable
    assert (photo.format, photo.original_mode, photo.original_size, photo.exif_orientation) == ("JPEG", "RGB", (512, 512), 1)


def test_refuses_empty_file() -> None:
    with pytest.raises(PhotoError, match=r"^file is empty \(0 bytes\)$"):
        load_photo(b"")


def test_refuses_truncated_jpeg(astronaut_bytes: bytes) -> None:
    with pytest.raises(PhotoError, match=r"^truncated or corrupt image: "):
        load_photo(astronaut_bytes[: len(astronaut_bytes) // 2])


def test_refuses_truncated_png(astronaut_rgb: np.ndarray) -> None:
    png = encode_png(astronaut_rgb)
    with pytest.raises(PhotoError, match=r"^truncated or corrupt image: "):
        load_photo(png[: len(png) // 2])


def test_refuses_text_file_named_jpg(tmp_path: Path) -> None:
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is my holiday photo, honest\n")
    with pytest.raises(PhotoError, match=r"^not an image: ") as caught:
        load_photo(fake.read_bytes())
    assert "this is" in str(caught.value)  # names what the file starts with


def test_refuses_decompression_bomb_from_header_alone() -> None:
    bomb = _png_declaring(30000, 30000)
    tracemalloc.start()
    try:
        with pytest.raises(PhotoError) as caught:
            load_photo(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(caught.value) == "image declares 30000x30000 = 900.0 MP, over the 40.0 MP limit"
    assert peak < 5_000_000  # refused from the header: decoding would need 2.7 GB


def test_refuses_photo_over_callers_limit(astronaut_bytes: bytes) -> None:
    with pytest.raises(PhotoError, match=re.escape("image declares 512x512 = 0.3 MP, over the 0.1 MP limit")):
        load_photo(astronaut_bytes, max_pixels=100_000)


@pytest.mark.parametrize("side", [10_000, 20_000], ids=["pil-warning", "pil-error"])
def test_pils_own_bomb_check_becomes_photo_error(side: int) -> None:
    # A caller limit above PIL's lets PIL's DecompressionBombWarning/Error fire first.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PhotoError, match=rf"^image declares {side}x{side} = .* MP, over the 89\.5 MP limit$"):
            load_photo(_png_declaring(side, side), max_pixels=10**12)


def test_converts_cmyk_jpeg(astronaut_rgb: np.ndarray) -> None:
    cmyk = _save(Image.fromarray(astronaut_rgb).convert("CMYK"), "JPEG", quality=95)
    photo = load_photo(cmyk)
    assert photo.original_mode == "CMYK"
    assert photo.rgb.shape == (512, 512, 3)
    assert np.abs(photo.rgb.astype(int) - astronaut_rgb).mean() < 6


def test_scales_16_bit_png_instead_of_clipping() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (16, 1))
    photo = load_photo(_save(Image.fromarray(ramp), "PNG"))
    assert photo.original_mode.startswith("I")
    row = photo.rgb[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert abs(row[128] - 128) <= 1
    assert np.all(np.diff(row) >= 0)
    assert (photo.rgb == 255).mean() < 0.01  # clipping would make almost everything white
    assert np.array_equal(photo.rgb[:, :, 0], photo.rgb[:, :, 2])


def test_greyscale_becomes_three_equal_channels(astronaut_rgb: np.ndarray) -> None:
    grey = Image.fromarray(astronaut_rgb).convert("L")
    photo = load_photo(_save(grey, "PNG"))
    assert photo.original_mode == "L"
    assert photo.rgb.shape == (512, 512, 3)
    assert np.array_equal(photo.rgb[:, :, 0], np.asarray(grey))
    assert np.array_equal(photo.rgb[:, :, 0], photo.rgb[:, :, 1])


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_flattened_over_white(mode: str) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[0] = (200, 0, 0, 255)  # opaque red
    rgba[1] = (0, 0, 0, 0)  # fully transparent
    rgba[2] = (0, 0, 0, 128)  # half-transparent black
    rgba[3] = (0, 0, 0, 0)
    image = Image.fromarray(rgba)
    if mode == "LA":
        image = image.convert("LA")
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
        image.info["transparency"] = image.getpixel((0, 1))
    photo = load_photo(_save(image, "PNG"))
    assert photo.original_mode == mode
    assert photo.rgb[1].tolist() == [[255, 255, 255]] * 4
    if mode == "RGBA":
        assert photo.rgb[0, 0].tolist() == [200, 0, 0]
        assert abs(int(photo.rgb[2, 0, 0]) - 127) <= 1


@pytest.mark.parametrize(("orientation", "stored_as"), [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_exif_rotated_photo_is_made_upright(
    astronaut_rgb: np.ndarray, astronaut_bytes: bytes, orientation: int, stored_as: Image.Transpose
) -> None:
    sideways = Image.fromarray(astronaut_rgb).transpose(stored_as)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(sideways, "JPEG", quality=95, exif=exif.tobytes())
    assert detect_faces(decode_image(data)) == []  # the raw pixels really are sideways

    photo = load_photo(data)
    assert photo.exif_orientation == orientation
    faces = detect_faces(photo.rgb)
    assert len(faces) == 1
    assert abs(faces[0].x - 178) <= 8 and abs(faces[0].y - 67) <= 8


def test_png_round_trip_is_lossless_and_deterministic(astronaut_rgb: np.ndarray) -> None:
    png = encode_png(astronaut_rgb)
    assert png == encode_png(astronaut_rgb.copy())
    assert np.array_equal(decode_image(png), astronaut_rgb)


def test_jpeg_round_trip_is_close(astronaut_rgb: np.ndarray) -> None:
    jpeg = encode_jpeg(astronaut_rgb, quality=90)
    assert jpeg[:2] == b"\xff\xd8"
    assert np.abs(decode_image(jpeg).astype(int) - astronaut_rgb).mean() < 4


def test_encoders_reject_non_rgb_arrays() -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_png(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_jpeg(np.zeros((4, 4, 3), dtype=np.float32))


def test_thumbnail_markdown_is_small_inline_png(astronaut_rgb: np.ndarray) -> None:
    markdown = thumbnail_markdown(astronaut_rgb, alt="astronaut [front]")
    match = re.fullmatch(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match is not None
    assert match.group(1) == "astronaut (front)"
    assert len(markdown) < 60_000
    thumbnail = Image.open(io.BytesIO(base64.b64decode(match.group(2))))
    assert thumbnail.format == "PNG"
    assert max(thumbnail.size) == 192
