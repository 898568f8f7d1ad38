"""Resources for the current environment: local by default, S3 when AVATAR_STORAGE=s3://bucket/prefix."""

from __future__ import annotations

import os
from urllib.parse import urlparse


from avatar_assets import settings
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


def media_store() -> MediaStore:
    url = settings.storage_url()
    if not url:
        return LocalMediaStore(root=str(settings.avatar_home()))
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"AVATAR_STORAGE={url!r}: expected s3://bucket/prefix or nothing")
    from dagster_aws.s3 import S3Resource

    from resources.s3_store import S3MediaStore

    return S3MediaStore(
        s3=S3Resource(
            # An empty AVATAR_S3_ENDPOINT_URL (a blank line in an env file) means AWS itself, not "".
            endpoint_url=os.environ.get("AVATAR_S3_ENDPOINT_URL", "").strip() or None,
            region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        ),
        bucket=parsed.netloc,
        prefix=parsed.path.strip("/"),
        cache_dir=str(settings.avatar_home() / "s3-cache"),
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

        return DiffusersImageGenerator.from_env()
    raise ValueError(f"AVATAR_IMAGE_PROVIDER={provider!r}: expected 'classical' or 'diffusers'")


def build_resources() -> dict:
    store = media_store()
    return {
        "store": store,
        "records": RecordIOManager(store=store),
        "faces": FaceAnalyzer(),
        "images": image_generator(),
        "speaker": SpeakerEncoder(),
        "tts": SpeechSynthesizer(),
        "lipsync": LipSyncer(),
        "enhancer": Enhancer(),
        "video": VideoSettings(
            master_short_side=int(os.environ.get("AVATAR_MASTER_SHORT_SIDE", "720")),
            fps=int(os.environ.get("AVATAR_FPS", "25")),
        ),
    }
