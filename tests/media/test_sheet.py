from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

from avatar_assets.media.images import encode_png
from avatar_assets.media.portrait import NeutralPortrait
from avatar_assets.media.sheet import CharacterSheet, extract_palette, make_character_sheet

REQUIRED = {"close_up", "mid_shot", "mirrored", "turn_left", "turn_right", "smile", "warm_light", "cool_light"}


@pytest.fixture(scope="module")
def sheet(neutral_portrait: NeutralPortrait) -> CharacterSheet:
    return make_character_sheet(neutral_portrait, seed=0)


def _face_centre_x(sheet: CharacterSheet, name: str) -> float:
    box = sheet.geometry["variants"][name]["face_box"]  # type: ignore[index]
    return box["x"] + box["w"] / 2


def test_sheet_has_consistent_variants(sheet: CharacterSheet) -> None:
    assert REQUIRED <= set(sheet.variants)
    for name, image in sheet.variants.items():
        assert image.shape == (512, 512, 3) and image.dtype == np.uint8, name
        assert sheet.geometry["variants"][name]["face_count"] == 1, name  # type: ignore[index]


def test_sheet_is_deterministic(neutral_portrait: NeutralPortrait, sheet: CharacterSheet) -> None:
    again = make_character_sheet(neutral_portrait, seed=0)
    assert encode_png(again.sheet_rgb) == encode_png(sheet.sheet_rgb)
    other_seed = make_character_sheet(neutral_portrait, seed=1)
    assert not np.array_equal(other_seed.variants["turn_left"], sheet.variants["turn_left"])
    assert np.array_equal(other_seed.variants["mirrored"], sheet.variants["mirrored"])


def test_geometric_variants_move_the_face_as_named(neutral_portrait: NeutralPortrait, sheet: CharacterSheet) -> None:
    base = cv2.resize(neutral_portrait.rgb, (512, 512), interpolation=cv2.INTER_AREA)
    assert np.array_equal(sheet.variants["mirrored"], base[:, ::-1])
    neutral_x = _face_centre_x(sheet, "warm_light")  # relighting leaves geometry untouched
    assert _face_centre_x(sheet, "turn_left") < neutral_x - 4
    assert _face_centre_x(sheet, "turn_right") > neutral_x + 4
    boxes = sheet.geometry["variants"]  # type: ignore[assignment]
    widths = {name: boxes[name]["face_box"]["w"] for name in ("close_up", "warm_light", "mid_shot")}
    assert widths["close_up"] > 1.3 * widths["warm_light"]
    assert widths["warm_light"] > 1.15 * widths["mid_shot"]


def test_smile_only_changes_the_mouth_area(neutral_portrait: NeutralPortrait, sheet: CharacterSheet) -> None:
    base = cv2.resize(neutral_portrait.rgb, (512, 512), interpolation=cv2.INTER_AREA)
    changed = np.abs(sheet.variants["smile"].astype(int) - base).max(axis=2) > 8
    ys, xs = np.nonzero(changed)
    assert len(ys) > 200
    face = neutral_portrait.face
    assert ys.min() > (face.y + 0.5 * face.h) / 2  # below the eyes (512 px scale)
    assert xs.min() > face.x / 2 and xs.max() < (face.x + face.w) / 2


def test_lighting_variants_shift_the_subject_warm_and_cool(neutral_portrait: NeutralPortrait, sheet: CharacterSheet) -> None:
    mask = cv2.resize(neutral_portrait.mask, (512, 512), interpolation=cv2.INTER_NEAREST) > 0

    def red_over_blue(image: np.ndarray) -> float:
        pixels = image[mask].astype(float)
        return pixels[:, 0].mean() / pixels[:, 2].mean()

    base = cv2.resize(neutral_portrait.rgb, (512, 512), interpolation=cv2.INTER_AREA)
    warm, neutral, cool = (red_over_blue(image) for image in (sheet.variants["warm_light"], base, sheet.variants["cool_light"]))
    assert warm > 1.1 * neutral
    assert neutral > 1.1 * cool
    assert sheet.variants["warm_light"][5, 5].tolist() == base[5, 5].tolist()  # backdrop untouched


def test_palette_has_six_colours_shown_on_the_sheet(sheet: CharacterSheet) -> None:
    assert len(sheet.palette) == 6
    assert len(set(sheet.palette)) == 6
    assert all(re.fullmatch(r"#[0-9a-f]{6}", value) for value in sheet.palette_hex)
    strip = sheet.sheet_rgb[-120:]
    for colour in sheet.palette:
        assert np.all(strip == colour, axis=2).sum() > 1000, colour
    assert any(r > g + 60 and r > b + 60 for r, g, b in sheet.palette)  # the orange suit


def test_sheet_layout_and_geometry_are_serialisable(sheet: CharacterSheet, neutral_portrait: NeutralPortrait) -> None:
    height, width = sheet.sheet_rgb.shape[:2]
    assert width > height > 1024
    decoded = json.loads(json.dumps(sheet.geometry))
    assert decoded["variant_names"] == list(sheet.variants)
    face = neutral_portrait.face
    assert decoded["face_box"] == {"x": face.x, "y": face.y, "w": face.w, "h": face.h}
    assert decoded["eyes"]["left"][0] < decoded["eyes"]["right"][0]
    assert decoded["palette"] == sheet.palette_hex


def test_extract_palette_recovers_flat_colours_by_frequency() -> None:
    image = np.zeros((60, 60, 3), dtype=np.uint8)
    image[:, :30] = (200, 30, 30)
    image[:, 30:50] = (20, 40, 220)
    image[:, 50:] = (240, 240, 240)
    assert extract_palette(image, k=6) == [(200, 30, 30), (20, 40, 220), (240, 240, 240)]
    mask = np.zeros((60, 60), dtype=np.uint8)
    mask[:, 35:] = 255
    assert extract_palette(image, mask, k=2) == [(20, 40, 220), (240, 240, 240)]
