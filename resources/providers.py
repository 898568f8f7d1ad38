"""Capability providers, chosen by configuration. Each reports provider, model id, version and seed.

Heavy libraries (torch, resemblyzer, diffusers) are imported inside the methods that use them, so
loading the code location stays light.
"""

from __future__ import annotations

from importlib.metadata import version as package_version

import dagster as dg
import numpy as np

from avatar_assets.contracts import ProviderInfo

CLASSICAL_VERSION = "1"


class FaceAnalyzer(dg.ConfigurableResource):
    """Face detection and photo metrics: OpenCV Haar cascades, offline and deterministic."""

    def info(self) -> ProviderInfo:
        import cv2

        return ProviderInfo(
            capability="face_analysis",
            provider="opencv-haar",
            model_id="haarcascade_frontalface_default+haarcascade_eye",
            version=cv2.__version__,
        )


class ImageGenerator(dg.ConfigurableResource):
    """Neutral portrait and character sheet. `classical` needs no model; see issue-5 for diffusers."""

    provider: str = "classical"
    seed: int = 0

    def info(self, capability: str, seed: int, **settings) -> ProviderInfo:
        return ProviderInfo(
            capability=capability,
            provider="classical",
            model_id="opencv-grabcut-align",
            version=CLASSICAL_VERSION,
            seed=seed,
            settings=settings,
        )

    def neutral_portrait(self, rgb: np.ndarray, face, *, size: int = 1024):
        from avatar_assets.media.portrait import make_neutral_portrait

        return make_neutral_portrait(rgb, face, size=size), self.info("neutral_image", self.seed, size=size)

    def character_sheet(self, portrait, *, seed: int):
        from avatar_assets.media.sheet import make_character_sheet

        return make_character_sheet(portrait, seed=seed), self.info("character_sheet", seed)


class SpeakerEncoder(dg.ConfigurableResource):
    """Speaker embedding with resemblyzer (its weights ship in the wheel: no download)."""

    def info(self) -> ProviderInfo:
        return ProviderInfo(
            capability="speaker_embedding",
            provider="resemblyzer",
            model_id="resemblyzer-ge2e-256",
            version=package_version("resemblyzer"),
        )

    def embed(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        from avatar_assets.media.voice import speaker_embedding

        return speaker_embedding(samples, sample_rate)
