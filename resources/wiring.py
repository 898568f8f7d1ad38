"""Resources for the current environment: local by default, S3 when AVATAR_STORAGE=s3://bucket/prefix."""

from __future__ import annotations

import os
from urllib.parse import urlparse

import dagster as dg
from dagster_aws.s3 import S3Resource

from avatar_assets import settings
from resources.media_store import LocalMediaStore, MediaStore, S3MediaStore
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
    return S3MediaStore(
        s3=S3Resource(
            endpoint_url=dg.EnvVar("AVATAR_S3_ENDPOINT_URL").get_value(),
            region_name=dg.EnvVar("AWS_REGION").get_value() or "us-east-1",
        ),
        bucket=parsed.netloc,
        prefix=parsed.path.strip("/"),
        cache_dir=str(settings.avatar_home() / "s3-cache"),
    )


def build_resources() -> dict:
    store = media_store()
    return {
        "store": store,
        "records": RecordIOManager(store=store),
        "faces": FaceAnalyzer(),
        "images": ImageGenerator(),
        "speaker": SpeakerEncoder(),
        "tts": SpeechSynthesizer(),
        "lipsync": LipSyncer(),
        "enhancer": Enhancer(),
        "video": VideoSettings(
            master_short_side=int(os.environ.get("AVATAR_MASTER_SHORT_SIDE", "720")),
            fps=int(os.environ.get("AVATAR_FPS", "25")),
        ),
    }
