"""Capability providers, chosen by configuration. Each reports provider, model id, version and seed.

Heavy libraries (torch, resemblyzer, diffusers) are imported inside the methods that use them, so
loading the code location stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

import dagster as dg
import numpy as np

from avatar_assets.contracts import DELIVERY_SHORT_SIDE, ProviderInfo, VoiceProfileRecord, rendition_size

CLASSICAL_VERSION = "1"


@dataclass(frozen=True)
class PortraitJob:
    """One avatar's neutral portrait in a batch: the upright photo, its face, the style preset and seed."""

    rgb: np.ndarray
    face: Any
    preset: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class SheetJob:
    """One avatar's character sheet in a batch: its neutral portrait, seed and style preset."""

    portrait: Any
    seed: int
    preset: str | None = None


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
    """Neutral portrait, character sheet and backgrounds. `classical` needs no model; the diffusers
    provider (resources/diffusers/provider.py) subclasses this one. `preset` names the avatar's style
    preset (avatar_assets/styles.py): generative providers use it, the classical one ignores it."""

    provider: str = "classical"
    seed: int = 0

    def cache_parts(self, preset: str | None = None, seed: int | None = None) -> dict:
        """What decides this provider's output, for content keys (the classical output ignores presets)."""
        return self.model_dump()

    def info(self, capability: str, seed: int, **settings) -> ProviderInfo:
        return ProviderInfo(
            capability=capability,
            provider="classical",
            model_id="opencv-grabcut-align",
            version=CLASSICAL_VERSION,
            seed=seed,
            settings=settings,
        )

    def neutral_portrait(
        self, rgb: np.ndarray, face, *, size: int = 1024, preset: str | None = None, seed: int | None = None
    ):
        from avatar_assets.media.portrait import make_neutral_portrait

        return make_neutral_portrait(rgb, face, size=size), self.info("neutral_image", self.seed, size=size)

    def character_sheet(self, portrait, *, seed: int, preset: str | None = None):
        from avatar_assets.media.sheet import make_character_sheet

        return make_character_sheet(portrait, seed=seed), self.info("character_sheet", seed)

    def neutral_portraits(self, jobs: list[PortraitJob], *, size: int = 1024) -> list[tuple[Any, ProviderInfo]]:
        """Many avatars at once (a ranged run); a generative provider puts them through the model together."""
        return [self.neutral_portrait(j.rgb, j.face, size=size, preset=j.preset, seed=j.seed) for j in jobs]

    def character_sheets(self, jobs: list[SheetJob]) -> list[tuple[Any, ProviderInfo]]:
        return [self.character_sheet(j.portrait, seed=j.seed, preset=j.preset) for j in jobs]

    def backgrounds(self, prompts: list[str], size: tuple[int, int], seeds: list[int], *, preset: str | None = None):
        from avatar_assets.media.backgrounds import classical_background

        images = [classical_background(p, size[0], size[1], seed=s) for p, s in zip(prompts, seeds)]
        return images, ProviderInfo(
            capability="backgrounds", provider="classical", model_id="procedural-backdrop",
            version=CLASSICAL_VERSION, seed=seeds[0] if seeds else None, settings={"size": list(size)},
        )


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


class VideoSettings(dg.ConfigurableResource):
    """Render settings: every rendition is composed natively with `master_short_side` as its short side
    (1080: the platform sizes of `contracts.ASPECT_SIZE`; tests lower it and get every rendition smaller)."""

    master_short_side: int = DELIVERY_SHORT_SIDE
    fps: int = 25
    crf: int = 20
    # superfast's motion search with veryfast's macroblock-tree rate control (which superfast turns off and
    # which keeps a still backdrop cheap): ~15-30 % less x264 time than veryfast for ~5 % larger files.
    preset: str = "superfast"
    x264_params: str = "mbtree=1:rc-lookahead=10"
    transition_s: float = 0.25

    def master_size(self, aspect_ratio: str) -> tuple[int, int]:
        """The (w, h) of the `aspect_ratio` rendition."""
        return rendition_size(aspect_ratio, self.master_short_side)


class SpeechSynthesizer(dg.ConfigurableResource):
    """espeak-ng through the espeakng-loader wheel; pitch matched to the avatar's voice profile."""

    default_voice: str = "en-us"

    def info(self, voice: str, pitch: int, rate_wpm: int) -> ProviderInfo:
        return ProviderInfo(
            capability="speech",
            provider="espeak-ng",
            model_id=voice,
            version=package_version("espeakng-loader"),
            settings={"pitch": pitch, "rate_wpm": rate_wpm},
        )

    def voice_and_pitch(self, median_f0_hz: float | None, requested_voice: str | None, pitch_shift: int):
        from avatar_assets.media.tts import pitch_for_f0, voice_for_f0

        if median_f0_hz:
            voice = requested_voice or voice_for_f0(median_f0_hz, self.default_voice)
            pitch = pitch_for_f0(median_f0_hz, voice) if "+" not in voice or voice.endswith("+f3") else 50
        else:
            voice, pitch = requested_voice or self.default_voice, 50
        return voice, int(min(99, max(0, pitch + pitch_shift)))

    def cache_parts(self) -> dict:
        """What a model provider adds to the speech content key; espeak-ng adds nothing."""
        return {}

    def synthesize(self, ssml: str, *, voice: str, pitch: int, rate_wpm: int, profile: VoiceProfileRecord | None = None):
        """(Synthesis, provider info). `profile` (embedding, reference clip) is for a cloning model; espeak-ng
        only uses the pitch already matched to it."""
        from avatar_assets.media.tts import synthesize

        return synthesize(ssml, voice=voice, rate_wpm=rate_wpm, pitch=pitch, ssml=True), self.info(voice, pitch, rate_wpm)


class LipSyncer(dg.ConfigurableResource):
    """Face animation: a landmark mesh warp driven by visemes (synthesiser phonemes) and the speech envelope,
    with blinks and idle head motion (seeded). Without the landmark model (or scene landmarks) it falls back
    to the envelope-driven mouth, and the provider info says so."""

    seed: int = 0

    def landmark_mesh_ready(self) -> bool:
        from avatar_assets.media.landmarks import landmarks_available

        return landmarks_available()

    def info(self, seed: int, *, fallback_reason: str | None = None) -> ProviderInfo:
        if fallback_reason is None:
            from avatar_assets.media.landmarks import LANDMARK_MODEL, model_version

            return ProviderInfo(
                capability="lip_sync", provider="landmark-mesh", model_id=f"{LANDMARK_MODEL}+espeak-visemes",
                version=f"{CLASSICAL_VERSION}/{model_version()}", seed=seed,
            )
        return ProviderInfo(
            capability="lip_sync", provider="envelope-mouth", model_id="audio-envelope+word-timings",
            version=CLASSICAL_VERSION, seed=seed, fallback_from="landmark-mesh", settings={"reason": fallback_reason},
        )

    def cache_parts(self) -> dict:
        """What a model provider adds to the lip-sync content key; the CPU default adds nothing."""
        return {}

    def batch_attempts(self) -> list[int | None]:
        """Batch sizes `resync` is tried at, in order, before the CPU default stands in (no model: one)."""
        return [None]

    def resync(self, frames, tracks, samples: np.ndarray, sample_rate: int, fps: float, total: int,
               base: ProviderInfo, batch_size: int | None = None):
        """(frames, provider info) after a lip-sync model; the CPU default's rendered frames are final.
        A model provider (resources/wav2lip.py) regenerates the lower faces here."""
        return frames, base

    def fallback_info(self, base: ProviderInfo, reason: str) -> ProviderInfo:
        """The record of the CPU default standing in for a model that failed mid-render."""
        return base

    def render_with_fallback(self, render: Callable[[int | None, bool], ProviderInfo],
                             warn: Callable[[str], None]) -> ProviderInfo:
        """`render(batch_size, with_model)` at each of `batch_attempts` (a model out of memory at its batch may
        pass at 1); when the model fails every attempt, once more without it: the CPU default's frames, and a
        record that says what stood in and why."""
        from avatar_assets.media.wav2lip import LipSyncFailed

        failures = []
        for batch_size in self.batch_attempts():
            try:
                return render(batch_size, True)
            except LipSyncFailed as error:
                failures.append(f"batch {batch_size}: {error}")
                warn(f"lip sync attempt at batch {batch_size} failed: {error}")
        warn("lip sync falls back to the CPU default")
        return self.fallback_info(render(None, False), "; ".join(failures))

    def controls(
        self, samples: np.ndarray, sample_rate: int, fps: float, words, phonemes, frames: int, *, seed: int, mesh: bool
    ) -> np.ndarray:
        """(frames, 8) face controls for the mesh (media.face_motion.CONTROL_NAMES); (frames,) openness without it."""
        from avatar_assets.media.face_motion import face_controls
        from avatar_assets.media.lipsync import mouth_openness

        openness = mouth_openness(samples, sample_rate, fps, words=words, n_frames=frames)
        return face_controls(openness, phonemes, fps, seed=seed) if mesh else openness


class Enhancer(dg.ConfigurableResource):
    """Sharpen and colour, loudness to a target, and an invisible watermark."""

    target_lufs: float = -16.0
    sharpen: float = 0.35
    saturation: float = 1.06

    def info(self) -> ProviderInfo:
        return ProviderInfo(
            capability="enhance", provider="classical-enhance", model_id="unsharp+saturation+bs1770",
            version=CLASSICAL_VERSION, settings=self.model_dump(),
        )
