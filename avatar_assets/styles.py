"""Style presets: what a generative image provider is asked for, keyed by `AvatarUpload.style.preset`.

A preset fixes everything that decides a generated image besides the input pixels and the model:
prompts, negative prompts, steps, guidance, img2img strengths, scheduler and seed. Providers record
the resolved values in `ProviderInfo.settings`, so the metadata and the rights manifest say exactly how
an image was made. The classical provider ignores presets (it generates nothing).

Pure data: no dagster, no torch. An unknown preset name resolves to `DEFAULT_PRESET`, and the provider
records both the requested and the used name (intake accepts any well-formed name, so refusing one here,
after the upload was taken, would fail an avatar for a typo in a cosmetic field).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

DEFAULT_PRESET = "natural"


@dataclass(frozen=True)
class SheetVariant:
    """One generated character-sheet variant.

    `init` names the classical variant of `avatar_assets.media.sheet` that seeds img2img ("base" is the
    neutral portrait itself): img2img keeps the init's pose, so the pose comes from the classical warp
    and the model only re-renders it. `strength` is "variant" or "profile" (the preset's values);
    `alias` is the name the storyboard's pose route uses for the same pose, if any.
    """

    name: str
    init: str
    prompt: str
    strength: str = "variant"
    alias: str | None = None


# Order = order on the sheet. Names follow the sheet brief; aliases keep the video pose route working.
SHEET_VARIANTS: tuple[SheetVariant, ...] = (
    SheetVariant("front", "base", "front view, looking at the camera"),
    SheetVariant("three_quarter_left", "turn_left", "three-quarter view, head turned to the left", alias="turn_left"),
    SheetVariant("three_quarter_right", "turn_right", "three-quarter view, head turned to the right", alias="turn_right"),
    SheetVariant("profile", "turn_left", "side profile view", strength="profile"),
    SheetVariant("smiling", "smile", "gentle natural smile", alias="smile"),
    SheetVariant("neutral_lighting", "base", "soft even neutral lighting, no colour cast"),
)
# Variants a frontal face detector and descriptor can judge (the identity gate measures these).
FRONTAL_VARIANTS = ("front", "smiling", "neutral_lighting")


@dataclass(frozen=True)
class StylePreset:
    name: str
    description: str
    portrait_prompt: str
    negative_prompt: str
    background_style: str
    background_negative_prompt: str
    steps: int
    guidance_scale: float
    portrait_strength: float  # neutral image: low, so the framing and the face stay the source's
    variant_strength: float  # sheet variants: enough to re-render a warped pose or expression
    profile_strength: float  # the profile moves furthest from its init
    scheduler: str | None
    seed: int

    def portrait(self) -> str:
        return f"{self.portrait_prompt}, neutral expression"

    def variant_prompt(self, variant: SheetVariant) -> str:
        return f"{self.portrait_prompt}, {variant.prompt}"

    def variant_strength_for(self, variant: SheetVariant) -> float:
        return self.profile_strength if variant.strength == "profile" else self.variant_strength

    def background(self, prompt: str) -> str:
        return f"{prompt}, {self.background_style}" if prompt.strip() else self.background_style

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_COMMON_NEGATIVE = (
    "deformed face, asymmetric eyes, extra fingers, extra limbs, blurry, lowres, jpeg artifacts, watermark, "
    "text, logo, cartoon, painting, multiple people"
)
_BACKGROUND_NEGATIVE = "people, person, face, text, watermark, logo, lowres, jpeg artifacts"

PRESETS: MappingProxyType[str, StylePreset] = MappingProxyType(
    {
        "natural": StylePreset(
            name="natural",
            description="Photographic, daylight, true-to-life colour: the default.",
            portrait_prompt="head and shoulders photo portrait of the same person, natural daylight, realistic skin texture, sharp focus",
            negative_prompt=_COMMON_NEGATIVE,
            background_style="soft natural daylight photo, shallow depth of field, out of focus",
            background_negative_prompt=_BACKGROUND_NEGATIVE,
            steps=30,
            guidance_scale=6.0,
            portrait_strength=0.3,
            variant_strength=0.45,
            profile_strength=0.6,
            scheduler="dpm++",
            seed=1001,
        ),
        "studio": StylePreset(
            name="studio",
            description="Clean studio look: softbox key light, seamless grey backdrop.",
            portrait_prompt="studio headshot of the same person, softbox key light, seamless grey backdrop, professional photo",
            negative_prompt=_COMMON_NEGATIVE + ", harsh shadows, outdoor",
            background_style="professional studio backdrop, soft gradient light, clean, out of focus",
            background_negative_prompt=_BACKGROUND_NEGATIVE,
            steps=30,
            guidance_scale=6.5,
            portrait_strength=0.3,
            variant_strength=0.45,
            profile_strength=0.6,
            scheduler="dpm++",
            seed=2002,
        ),
        "cinematic": StylePreset(
            name="cinematic",
            description="Film still: warm key, cool fill, gentle contrast.",
            portrait_prompt="cinematic film still portrait of the same person, warm key light, cool fill light, 35mm photo",
            negative_prompt=_COMMON_NEGATIVE + ", flat lighting, overexposed",
            background_style="cinematic film still, anamorphic bokeh, moody colour grade, out of focus",
            background_negative_prompt=_BACKGROUND_NEGATIVE,
            steps=35,
            guidance_scale=7.0,
            portrait_strength=0.35,
            variant_strength=0.5,
            profile_strength=0.65,
            scheduler="euler",
            seed=3003,
        ),
    }
)


def resolve_preset(name: str | None) -> tuple[StylePreset, bool]:
    """(preset, found): the named preset, or the default with found=False for an unknown or empty name."""
    if name and name in PRESETS:
        return PRESETS[name], True
    return PRESETS[DEFAULT_PRESET], False
