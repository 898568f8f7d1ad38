"""Shared fixtures for the platform tests: a throwaway AVATAR_HOME with a real Dagster instance on it,
the sample bundle built once per session, real photos and voices derived from it, and bundle writers.

Nothing here is mocked: `home` points AVATAR_HOME and DAGSTER_HOME at a temporary folder, gives it the
code location's definitions (whose media store reads AVATAR_HOME when it is initialized, so homes share
them), and opens the SQLite `DagsterInstance` that `avatarops` would open.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

# The files that take longest under `make test` (--durations, 2 cores), heaviest first. pytest-xdist hands whole
# files to whichever worker is free in collection order (`--no-loadscope-reorder` in the Makefile), so these go
# first and no worker is left alone with a long file at the end while the others idle. Only the order changes.
SLOW_FILES_FIRST = (
    "test_cluster.py", "test_relocatable_home.py", "test_regeneration_daemon.py", "test_daemon_killed_worker.py",
    "test_face_matrix.py", "test_requests.py", "test_ranged_runs.py", "test_wav2lip_provider.py", "test_api.py",
    "test_backfill_daemon.py", "test_identity_bad_inputs.py", "test_one_automation.py", "test_events.py",
    "test_video_pipeline.py", "test_crash_recovery.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


SAMPLE_PHOTO = Path(__file__).resolve().parents[1] / "avatar_assets" / "samples" / "astronaut.jpg"
EVIDENCE = hashlib.sha256(b"consent evidence for tests").hexdigest()


# --------------------------------------------------------------------------- files and bundles


def sha256_tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file under root (what a user sent, byte for byte)."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def manifest_for(avatar_id: str, photos: list[str], voice: str | None, scopes=("likeness", "voice")) -> dict:
    return {
        "avatar_id": avatar_id,
        "creator_id": "test-studio",
        "photos": photos,
        "voice_sample": voice,
        "consent": {
            "subject": f"Test subject {avatar_id}",
            "granted_by": "test-studio",
            "granted_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat(),
            "scopes": list(scopes),
            "evidence_sha256": EVIDENCE,
        },
        "style": {"preset": "natural", "notes": ""},
        "target_platforms": ["tiktok"],
    }


def write_bundle(
    parent: Path,
    avatar_id: str,
    photos: dict[str, bytes],
    voice: bytes | None = None,
    *,
    voice_name: str = "voice/sample.wav",
    scopes=("likeness", "voice"),
    manifest: dict | None = None,
    folder: str | None = None,
) -> Path:
    """Write `<parent>/<folder or avatar_id>/` with the files and a manifest naming them.

    `manifest` replaces the generated manifest (to write broken ones); files are written either way.
    """
    bundle = parent / (folder or avatar_id)
    bundle.mkdir(parents=True, exist_ok=True)
    for relative, data in photos.items():
        (bundle / relative).parent.mkdir(parents=True, exist_ok=True)
        (bundle / relative).write_bytes(data)
    if voice is not None:
        (bundle / voice_name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / voice_name).write_bytes(voice)
    document = manifest if manifest is not None else manifest_for(
        avatar_id, list(photos), voice_name if voice is not None else None, scopes
    )
    (bundle / "manifest.json").write_text(json.dumps(document, indent=2))
    return bundle


# --------------------------------------------------------------------------- real photos


def astronaut():
    from PIL import Image

    with Image.open(SAMPLE_PHOTO) as image:
        image.load()
        return image.convert("RGB")


def encode(image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def photo_variants() -> dict[str, bytes]:
    """Real photos derived from the astronaut portrait; each name says what the pipeline must do with it."""
    from PIL import Image

    src = astronaut()
    width, height = src.size
    two = Image.new("RGB", (2 * width, height))
    two.paste(src, (0, 0))
    two.paste(src, (width, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the pixels are stored rotated 90 CCW
    sixteen = Image.fromarray((np.asarray(src.convert("L")).astype(np.uint16) * 257))
    assert sixteen.mode in {"I;16", "I"}, sixteen.mode
    original = SAMPLE_PHOTO.read_bytes()
    return {
        "good": original,
        "mirrored": encode(src.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG", quality=95),
        "cmyk": encode(src.convert("CMYK"), "JPEG", quality=95),
        "grey": encode(src.convert("L"), "JPEG", quality=95),
        "sixteen_bit": encode(sixteen, "PNG"),
        "exif_rotated": encode(src.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes()),
        "zero_byte": b"",
        "truncated": original[: len(original) // 3],
        "not_an_image": b"%PDF-1.7\n% not a photo at all\n" * 20,
        "bomb": png_declaring(30000, 30000),
        "no_face": encode(src.crop((0, 300, width, height)), "PNG"),  # the suit, no head
        "two_faces": encode(two, "JPEG", quality=95),
        "tiny_face": encode(src.resize((107, 107), Image.Resampling.LANCZOS), "PNG"),  # face ~20 px
    }


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height: decoding it would need gigabytes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- real voices


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    from avatar_assets.media.audio import encode_wav

    return encode_wav(samples.astype(np.float32), sample_rate)


def voice_variants(good_wav: bytes) -> dict[str, bytes]:
    """Voices derived from the sample's espeak speech, plus numpy signals."""
    import soundfile as sf

    from avatar_assets.media.audio import load_wav, resample

    speech = load_wav(good_wav)
    x, sr = speech.samples, speech.sample_rate
    stereo = io.BytesIO()
    sf.write(stereo, np.stack([x, 0.5 * x], axis=1), sr, format="WAV", subtype="PCM_16")
    return {
        "good": good_wav,
        "silent": wav_bytes(np.zeros(sr * 12, dtype=np.float32), sr),
        "clipped": wav_bytes(np.clip(x * 20.0, -1.0, 1.0), sr),
        "one_second": wav_bytes(x[:sr], sr),
        "eight_khz": wav_bytes(resample(x, sr, 8000), 8000),
        "stereo": stereo.getvalue(),
        "corrupt": good_wav[: len(good_wav) // 2],
    }


# --------------------------------------------------------------------------- the sample bundle


@pytest.fixture(scope="session")
def sample_bundle(tmp_path_factory) -> Path:
    """`build_sample_bundle` once per session (espeak voice + astronaut photo). Copy it, never edit it."""
    from avatar_assets.ops.demo import build_sample_bundle

    return build_sample_bundle(tmp_path_factory.mktemp("sample") / "astronaut")


@pytest.fixture(scope="session")
def sample_photo(sample_bundle: Path) -> bytes:
    return (sample_bundle / "photos" / "portrait.jpg").read_bytes()


@pytest.fixture(scope="session")
def sample_voice(sample_bundle: Path) -> bytes:
    return (sample_bundle / "voice" / "sample.wav").read_bytes()


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    return photo_variants()


@pytest.fixture(scope="session")
def voices(sample_voice: bytes) -> dict[str, bytes]:
    return voice_variants(sample_voice)


def copy_sample(sample: Path, parent: Path, avatar_id: str) -> Path:
    """The sample bundle under a new avatar id (folder and manifest)."""
    target = parent / avatar_id
    shutil.copytree(sample, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["avatar_id"] = avatar_id
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return target


# --------------------------------------------------------------------------- a home with an instance


@dataclass
class Home:
    root: Path
    instance: object
    defs: object
    store: object

    @property
    def inbox(self) -> Path:
        return self.root / "inbox" / "avatars"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def record(self, asset: str, avatar_id: str):
        from resources.records import read_record

        return read_record(self.store, asset, avatar_id)

    def process(self):
        from avatar_assets.ops.runner import process

        return process(self.defs, self.instance, echo=lambda _: None)


@functools.cache
def definitions_for(settings: tuple[tuple[str, str], ...]):
    """The code location built on the environment, which `avatar_home` has given these settings. What picks
    or sizes a resource is read then, AVATAR_HOME is not: homes with the same settings share definitions."""
    from avatar_assets.definitions import build_definitions
    from resources.wiring import build_resources

    return build_definitions(build_resources())


@contextlib.contextmanager
def avatar_home(root: Path, **env: str) -> Iterator[Home]:
    """AVATAR_HOME=root, DAGSTER_HOME=root/dagster, settle 0 s, and the definitions for `env`."""
    import dagster as dg

    from resources.wiring import store_of

    with pytest.MonkeyPatch.context() as patch:
        root.mkdir(parents=True, exist_ok=True)
        dagster_home = root / "dagster"
        dagster_home.mkdir(exist_ok=True)
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        patch.setenv("AVATAR_HOME", str(root))
        patch.setenv("DAGSTER_HOME", str(dagster_home))
        patch.setenv("AVATAR_UPLOAD_SETTLE_SECONDS", "0")
        for name in ("AVATAR_STORAGE", "AVATAR_IMAGE_PROVIDER", "AVATAR_LIPSYNC_PROVIDER", "AVATAR_TTS_PROVIDER"):  # local store, CPU defaults
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        defs = definitions_for(tuple(sorted(env.items())))
        instance = dg.DagsterInstance.get()
        try:
            with store_of(defs) as store:
                yield Home(root=root.resolve(), instance=instance, defs=defs, store=store)
        finally:
            instance.dispose()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    with avatar_home(tmp_path / "home") as value:
        yield value


def deep_update(document: dict, changes: dict) -> dict:
    merged = copy.deepcopy(document)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def env_without_homes() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in {"AVATAR_HOME", "DAGSTER_HOME", "AVATAR_STORAGE"}}


# --------------------------------------------------------------------------- S3 API server


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 API server on loopback, one per test module."""
    from tests.servers import moto_s3_server

    with moto_s3_server() as server:
        yield server


@pytest.fixture
def storage(s3_server) -> str:
    """An `AVATAR_STORAGE` in a bucket of its own, under a prefix (as a studio's would be)."""
    bucket = f"avatars-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/studio/eu"
