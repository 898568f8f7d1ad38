"""The platform's resources, the one place that builds them: local store by default, S3 when
AVATAR_STORAGE=s3://bucket/prefix.

The local store's root is `dg.EnvVar("AVATAR_HOME")`, read when the store is initialized (a run, a sensor
tick, `store_of` outside Dagster), so one loaded code location serves whatever home a process is given.
What picks or sizes a resource (AVATAR_STORAGE, AVATAR_IMAGE_PROVIDER, AVATAR_LIPSYNC_PROVIDER,
AVATAR_TTS_PROVIDER, the render size) is read when the
code location loads, where a value it cannot use fails the load with a ConfigurationError naming it."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from urllib.parse import urlparse

import dagster as dg

from avatar_assets import settings
from avatar_assets.contracts import DELIVERY_SHORT_SIDE
from resources.media_store import LocalMediaStore, MediaStore
from resources.providers import (
    Enhancer,
    FaceAnalyzer,
    ImageGenerator,
    LipSyncer,
    SpeakerEncoder,
    SpeechSynthesizer,
    VideoSettings,
)
from resources.records import RecordIOManager


S3_MAX_ATTEMPTS = 8
"""botocore's standard retry mode backs a 5xx off from 50 ms, doubling with jitter: 8 retries ride out an S3
hiccup of about 6 s on average (13 s at most) inside one request (S3Resource's default, 5, about one
second). What outlasts them fails the stage with StoreUnavailable naming the key, and the stage's
RetryPolicy tries it again."""


def media_store() -> MediaStore:
    url = settings.storage_url()
    if not url:
        return LocalMediaStore(root=dg.EnvVar("AVATAR_HOME"))
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise settings.ConfigurationError(f"AVATAR_STORAGE={url!r}: expected s3://bucket/prefix or nothing")
    from dagster_aws.s3 import S3Resource

    from resources.s3_store import S3MediaStore

    return S3MediaStore(
        s3=S3Resource(
            # An empty AVATAR_S3_ENDPOINT_URL (a blank line in an env file) means AWS itself, not "".
            endpoint_url=os.environ.get("AVATAR_S3_ENDPOINT_URL", "").strip() or None,
            region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            max_attempts=S3_MAX_ATTEMPTS,
        ),
        bucket=parsed.netloc,
        prefix=parsed.path.strip("/"),
        cache_dir=str(settings.avatar_home() / "s3-cache"),
        kms_key_id=os.environ.get("AVATAR_S3_KMS_KEY_ID", "").strip() or None,
    )


def image_generator() -> ImageGenerator:
    """`AVATAR_IMAGE_PROVIDER`: `classical` (default, no model) or `diffusers` (local weights; the
    AVATAR_DIFFUSERS_* variables are read by DiffusersImageGenerator.from_env, see docs/diffusers.md).
    The diffusers provider is imported only when chosen; neither imports torch at load."""
    provider = os.environ.get("AVATAR_IMAGE_PROVIDER", "").strip() or "classical"
    if provider == "classical":
        return ImageGenerator()
    if provider == "diffusers":
        from resources.diffusers.provider import DiffusersImageGenerator

        try:
            return DiffusersImageGenerator.from_env()
        except ValueError as error:
            raise settings.ConfigurationError(str(error)) from error
    raise settings.ConfigurationError(f"AVATAR_IMAGE_PROVIDER={provider!r}: expected 'classical' or 'diffusers'")


def lip_syncer() -> LipSyncer:
    """`AVATAR_LIPSYNC_PROVIDER`: `landmark-mesh` (default, CPU, no model) or `wav2lip` (a local checkpoint;
    the AVATAR_LIPSYNC_* variables are read by Wav2LipSyncer.from_env). Neither imports torch at load."""
    provider = os.environ.get("AVATAR_LIPSYNC_PROVIDER", "").strip() or "landmark-mesh"
    if provider == "landmark-mesh":
        return LipSyncer()
    if provider == "wav2lip":
        from resources.wav2lip import Wav2LipSyncer

        return Wav2LipSyncer.from_env()
    raise settings.ConfigurationError(f"AVATAR_LIPSYNC_PROVIDER={provider!r}: expected 'landmark-mesh' or 'wav2lip'")


def speech_synthesizer() -> SpeechSynthesizer:
    """`AVATAR_TTS_PROVIDER`: `espeak-ng` (default, CPU, no model) or `onnx` (a local Piper-format voice; the
    AVATAR_TTS_* variables are read by OnnxSpeechSynthesizer.from_env). Neither imports onnxruntime at load."""
    provider = os.environ.get("AVATAR_TTS_PROVIDER", "").strip() or "espeak-ng"
    if provider == "espeak-ng":
        return SpeechSynthesizer()
    if provider == "onnx":
        from resources.onnx_tts import OnnxSpeechSynthesizer

        return OnnxSpeechSynthesizer.from_env()
    raise settings.ConfigurationError(f"AVATAR_TTS_PROVIDER={provider!r}: expected 'espeak-ng' or 'onnx'")


def store_of(defs: dg.Definitions) -> AbstractContextManager[MediaStore]:
    """The store `defs` gives runs and sensors, set up for code outside a run (the CLI, tests, benches) for
    the length of a `with` block, as Dagster sets it up for a run."""
    return defs.resources["store"].process_config_and_initialize_cm()


def build_resources() -> dict:
    store = media_store()
    return {
        "store": store,
        "records": RecordIOManager(store=store),
        "faces": FaceAnalyzer(),
        "images": image_generator(),
        "speaker": SpeakerEncoder(),
        "tts": speech_synthesizer(),
        "lipsync": lip_syncer(),
        "enhancer": Enhancer(),
        "video": VideoSettings(
            master_short_side=settings.whole_number("AVATAR_MASTER_SHORT_SIDE", DELIVERY_SHORT_SIDE, minimum=16),
            fps=settings.whole_number("AVATAR_FPS", 25, minimum=1),
        ),
    }
