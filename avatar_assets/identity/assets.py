"""Identity assets. Thin wiring: load records, call a media function or provider, store, describe."""


import io
import json
import warnings

import dagster as dg
import numpy as np

from avatar_assets.contracts import (
    CharacterSheetRecord,
    IdentityBundleRecord,
    IdentityPart,
    NeutralImageRecord,
    PhotoRow,
    SourcePhoto,
    SourceUploadRecord,
    SourceVoice,
    ValidatedInputsRecord,
    VoiceMetricsModel,
    VoiceProfileRecord,
)
from avatar_assets.identity import intake, rules
from avatar_assets.identity.face_reference import reference_face
from avatar_assets.pipeline.caching import content_key, media_refs, reuse_or_compute, reuse_or_generate_many
from avatar_assets.pipeline.lifecycle import (
    PROVIDER_RETRIES,
    accepts_partition_ranges,
    emits_lifecycle,
    partition_keys,
    per_partition,
    recorded,
    recorded_partitions,
    seed_override,
)
from partitions import avatars, refresh_existing
from resources.media_store import MediaStore, sha256_bytes
from resources.providers import FaceAnalyzer, ImageGenerator, PortraitJob, SheetJob, SpeakerEncoder

GROUP = "identity"
CODE_VERSION = "2"
IMAGE_BATCH_PARTITIONS = 8
IMAGE_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=IMAGE_BATCH_PARTITIONS)
"""A backfill of the model-backed images runs 8 avatars per run: one model load, batched generation."""
PHOTO_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
VOICE_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "oga": "audio/ogg", "mp3": "audio/mpeg"}


def identity_asset(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # backfill_policy, on the model-backed images
        asset = dg.asset(
            partitions_def=avatars,
            group_name=GROUP,
            io_manager_key="records",
            code_version=CODE_VERSION,
            retry_policy=PROVIDER_RETRIES,
            **kwargs,
        )
    if "backfill_policy" in kwargs:  # ranged runs hand over {avatar: record} dicts
        return lambda fn: asset(accepts_partition_ranges(emits_lifecycle(fn)))
    return lambda fn: asset(emits_lifecycle(fn))


def _extension(name: str) -> str:
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return suffix if suffix.isalnum() and len(suffix) <= 5 else "bin"


@identity_asset(description="Immutable snapshot of the upload bundle in the media store, with hashes.")
def source_upload(context: dg.AssetExecutionContext, store: MediaStore) -> dg.Output[SourceUploadRecord]:
    from avatar_assets.media.images import PhotoError, encode_png, load_photo, thumbnail_markdown

    avatar_id = context.partition_key
    try:
        manifest, contents = intake.read_bundle(store, avatar_id)
    except intake.BundleError as error:
        raise dg.Failure(str(error), allow_retries=False) from error
    bundle_sha = intake.contents_sha256(contents)
    expected = context.run.tags.get("bundle_sha256")
    if expected and expected != bundle_sha:
        context.log.warning(f"bundle changed since the sensor saw it ({expected[:12]} -> {bundle_sha[:12]})")

    manifest_ref = store.put_bytes(contents[intake.MANIFEST], "json", "application/json")
    photos, previews = [], []
    for path in manifest.photos:
        data = contents[path]
        ext = _extension(path)
        original = store.put_bytes(data, ext, PHOTO_TYPES.get(ext, "application/octet-stream"))
        try:
            loaded = load_photo(data)
        except PhotoError as error:
            photos.append(SourcePhoto(path=path, original=original, problem=str(error)))
            context.log.warning(f"{path}: {error}")
            continue
        upright = store.put_bytes(encode_png(loaded.rgb), "png", "image/png")
        photos.append(
            SourcePhoto(
                path=path,
                original=original,
                upright=upright,
                width=loaded.rgb.shape[1],
                height=loaded.rgb.shape[0],
                original_mode=loaded.original_mode,
                exif_orientation=loaded.exif_orientation,
            )
        )
        previews.append(thumbnail_markdown(loaded.rgb, max_side=128, alt=path))
    voice = None
    if manifest.voice_sample:
        data = contents[manifest.voice_sample]
        voice = SourceVoice(
            path=manifest.voice_sample,
            original=store.put_bytes(
                data, _extension(manifest.voice_sample),
                VOICE_TYPES.get(_extension(manifest.voice_sample), "application/octet-stream"),
            ),
        )
    record = SourceUploadRecord(
        avatar_id=avatar_id,
        bundle_sha256=bundle_sha,
        manifest=manifest,
        manifest_ref=manifest_ref,
        photos=photos,
        voice=voice,
    )
    return recorded(
        record,
        {
            "bundle_sha256": bundle_sha,
            "photos": len(photos),
            "undecodable_photos": sum(1 for p in photos if p.problem),
            "voice_sample": manifest.voice_sample or "none",
            "consent_scopes": ", ".join(manifest.consent.scopes) or "none",
            "preview": dg.MetadataValue.md(" ".join(previews) or "_no decodable photo_"),
        },
    )


@identity_asset(
    description="Per-photo metrics (faces, sharpness, exposure, colour cast) and the chosen source photo.",
    automation_condition=refresh_existing,
)
def validated_inputs(
    context: dg.AssetExecutionContext, store: MediaStore, faces: FaceAnalyzer, source_upload: SourceUploadRecord
) -> dg.Output[ValidatedInputsRecord]:
    from avatar_assets.media.faces import METRICS_VERSION, photo_metrics
    from avatar_assets.media.images import decode_image

    def compute() -> ValidatedInputsRecord:
        rows = []
        for index, photo in enumerate(source_upload.photos, start=1):
            context.log.info(f"measuring photo {index}/{len(source_upload.photos)}: {photo.path}")
            if photo.problem or photo.upright is None:
                rows.append(PhotoRow(path=photo.path, usable=False, problem=photo.problem))
                continue
            rows.append(rules.photo_row(photo.path, photo_metrics(decode_image(store.read(photo.upright)))))
        import pandas as pd  # not at definitions load: every run launch pays for imports

        table = pd.DataFrame([row.model_dump() for row in rows])
        table_ref = store.put_bytes(table.to_csv(index=False).encode(), "csv", "text/csv")
        return ValidatedInputsRecord(
            avatar_id=source_upload.avatar_id,
            rows=rows,
            table=table_ref,
            best_photo=rules.best_photo(rows),
            consent_scopes=list(source_upload.manifest.consent.scopes),
        )

    key = content_key("validated_inputs", CODE_VERSION, {"upload": source_upload.content_hash(), "faces": faces.info().model_dump(),
                                                         "metrics": METRICS_VERSION})
    record, _ = reuse_or_compute(store, "validated_inputs", key, compute, context.log)
    usable = [row for row in record.rows if row.usable]
    return recorded(
        record,
        {
            "photos": len(record.rows),
            "usable_photos": len(usable),
            "best_photo": record.best_photo or "none",
            "problems": dg.MetadataValue.md(
                "\n".join(f"- `{r.path}`: {r.problem}" for r in record.rows if r.problem) or "none"
            ),
            "photo_table": dg.MetadataValue.md(photo_table_markdown(record.rows)),
        },
    )


def photo_table_markdown(rows: list[PhotoRow]) -> str:
    header = "| photo | usable | faces | face % | sharpness | exposure | cast | problem |\n|---|---|---|---|---|---|---|---|"
    lines = [
        f"| `{r.path}` | {'yes' if r.usable else 'no'} | {r.face_count if r.face_count is not None else '-'} | "
        f"{(r.face_fraction or 0) * 100:.0f} | {r.sharpness or 0:.0f} | {r.exposure or 0:.2f} | "
        f"{r.colour_cast or 0:.1f} | {r.problem or ''} |"
        for r in rows
    ]
    return "\n".join([header, *lines])


@identity_asset(
    description="Best photo aligned by the eyes, 1024 px head-and-shoulders crop, neutral backdrop.",
    automation_condition=refresh_existing,
    pool="gpu",  # always, whichever provider: the graph must not change shape with an env var (docs/diffusers.md)
    backfill_policy=IMAGE_BACKFILL,
)
def neutral_image(
    context: dg.AssetExecutionContext,
    store: MediaStore,
    images: ImageGenerator,
    source_upload: SourceUploadRecord,
    validated_inputs: ValidatedInputsRecord,
) -> dg.Output[NeutralImageRecord]:
    from avatar_assets.media.faces import detect_faces
    from avatar_assets.media.images import decode_image, thumbnail_markdown

    keys = partition_keys(context)
    uploads, validated = per_partition(source_upload, keys), per_partition(validated_inputs, keys)
    seed = seed_override(context, images.seed)
    problems: dict[str, str] = {}
    photos, content_keys = {}, {}
    for avatar_id in keys:
        best = validated[avatar_id].best_photo
        if best is None:
            problems[avatar_id] = f"{avatar_id} has no usable photo; see validated_inputs"
            continue
        photos[avatar_id] = next(p for p in uploads[avatar_id].photos if p.path == best)
        preset = uploads[avatar_id].manifest.style.preset
        content_keys[avatar_id] = content_key(
            "neutral_image", CODE_VERSION,
            {"photo": photos[avatar_id].upright.sha256, "provider": images.cache_parts(preset, seed)},
        )

    def generate(missing: list[str]) -> dict[str, NeutralImageRecord]:
        jobs = {}
        for avatar_id in missing:
            photo = photos[avatar_id]
            rgb = decode_image(store.read(photo.upright))
            found = detect_faces(rgb)
            if not found:
                problems[avatar_id] = f"no face found again in {photo.path}"
                continue
            context.log.info(f"{avatar_id}: aligning {photo.path} ({rgb.shape[1]}x{rgb.shape[0]})")
            jobs[avatar_id] = PortraitJob(rgb, found[0], uploads[avatar_id].manifest.style.preset, seed)
        made = images.neutral_portraits(list(jobs.values()))
        return {
            avatar_id: _neutral_record(store, avatar_id, photos[avatar_id].path, portrait, provider)
            for avatar_id, (portrait, provider) in zip(jobs, made, strict=True)
        }

    made = reuse_or_generate_many(store, "neutral_image", content_keys, generate, context.log)
    if problems:  # what was made is cached, so the run after the fix reuses it
        raise dg.Failure("; ".join(problems[k] for k in keys if k in problems), allow_retries=False)
    records, metadata = {}, {}
    for avatar_id in keys:
        # The cache is keyed by content, so a hit may come from another avatar that uploaded the same photo.
        record = made[avatar_id].model_copy(update={"avatar_id": avatar_id, "source_photo": photos[avatar_id].path})
        records[avatar_id] = record
        metadata[avatar_id] = {
            "image": dg.MetadataValue.path(store.uri(record.image)),
            "preview": dg.MetadataValue.md(thumbnail_markdown(decode_image(store.read(record.image)), alt="neutral image")),
            "source_photo": record.source_photo,
            "face_count": record.face_count,
            "centre_offset": record.centre_offset if record.centre_offset is not None else -1.0,
            "eye_angle_deg": record.eye_angle_deg if record.eye_angle_deg is not None else 0.0,
            "provider": record.provider.provider,
            "model_id": record.provider.model_id,
            "fallback_from": record.provider.fallback_from or "none",
            "seed": record.provider.seed if record.provider.seed is not None else 0,
        }
    return recorded_partitions(context, records, metadata)


def _neutral_record(store: MediaStore, avatar_id: str, source_photo: str, portrait, provider) -> NeutralImageRecord:
    from avatar_assets.media.faces import detect_faces
    from avatar_assets.media.images import encode_png

    face = portrait.face
    landmarks = portrait.landmarks
    # The gate judges the eye line the landmarks measure on the result (the Haar eyes are too coarse).
    eye_angle = landmarks.eye_angle_deg if landmarks is not None else (face.eye_angle_deg if face else None)
    return NeutralImageRecord(
        avatar_id=avatar_id,
        image=store.put_bytes(encode_png(portrait.rgb), "png", "image/png"),
        mask=store.put_bytes(encode_png(np.dstack([portrait.mask] * 3)), "png", "image/png"),
        source_photo=source_photo,
        face_box=(face.x, face.y, face.w, face.h) if face else None,
        left_eye=face.left_eye if face else None,
        right_eye=face.right_eye if face else None,
        face_count=len(detect_faces(portrait.rgb)),
        centre_offset=_centre_offset(face, portrait.rgb.shape) if face else None,
        eye_angle_deg=eye_angle,
        provider=provider,
        landmarks=landmarks.as_list() if landmarks is not None else None,
    )


def _finite_or_none(value):
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _centre_offset(face, shape) -> float:
    height, width = shape[:2]
    cx, cy = face.centre
    return float(max(abs(cx - width / 2) / width, abs(cy - height / 2) / height))


def stored_portrait(store: MediaStore, record: NeutralImageRecord):
    """The neutral portrait as media functions expect it, rebuilt from its stored image and geometry."""
    from avatar_assets.media.faces import Face
    from avatar_assets.media.images import decode_image
    from avatar_assets.media.landmarks import FaceLandmarks
    from avatar_assets.media.portrait import NeutralPortrait

    rgb = decode_image(store.read(record.image))
    box = record.face_box or (0, 0, rgb.shape[1], rgb.shape[0])
    return NeutralPortrait(
        rgb=rgb,
        face=Face(*box, left_eye=record.left_eye, right_eye=record.right_eye),
        mask=decode_image(store.read(record.mask))[..., 0],
        backdrop_rgb=tuple(int(v) for v in rgb[2, 2]),
        rotation_deg=0.0,
        scale=1.0,
        crop_box=(0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0])),
        face_redetected=record.face_box is not None,
        landmarks=FaceLandmarks.from_list(record.landmarks) if record.landmarks else None,
    )


@identity_asset(
    description="Neutral image plus consistent variants and a palette strip, with face geometry JSON.",
    automation_condition=refresh_existing,
    pool="gpu",
    backfill_policy=IMAGE_BACKFILL,
)
def character_sheet(
    context: dg.AssetExecutionContext, store: MediaStore, images: ImageGenerator, neutral_image: NeutralImageRecord
) -> dg.Output[CharacterSheetRecord]:
    from avatar_assets.media.images import decode_image, encode_png, thumbnail_markdown

    keys = partition_keys(context)
    neutrals = per_partition(neutral_image, keys)
    seed = seed_override(context, images.seed)
    # Generative providers record the avatar's preset on its neutral image.
    presets = {avatar_id: neutrals[avatar_id].provider.settings.get("preset") for avatar_id in keys}
    content_keys = {
        avatar_id: content_key(
            "character_sheet", CODE_VERSION,
            {"neutral": neutrals[avatar_id].image.sha256, "provider": images.cache_parts(presets[avatar_id], seed), "seed": seed},
        )
        for avatar_id in keys
    }

    def generate(missing: list[str]) -> dict[str, CharacterSheetRecord]:
        jobs = [SheetJob(stored_portrait(store, neutrals[a]), seed, presets[a]) for a in missing]
        made = images.character_sheets(jobs)
        records = {}
        for avatar_id, (sheet, provider) in zip(missing, made, strict=True):
            context.log.info(f"{avatar_id}: rendered {len(sheet.variants)} variants")
            records[avatar_id] = CharacterSheetRecord(
                avatar_id=avatar_id,
                sheet=store.put_bytes(encode_png(sheet.sheet_rgb), "png", "image/png"),
                geometry=store.put_bytes(json.dumps(sheet.geometry, indent=2).encode(), "json", "application/json"),
                variants={
                    name: store.put_bytes(encode_png(rgb), "png", "image/png") for name, rgb in sheet.variants.items()
                },
                palette=list(sheet.palette_hex),
                provider=provider,
            )
        return records

    made = reuse_or_generate_many(store, "character_sheet", content_keys, generate, context.log)
    records, metadata = {}, {}
    for avatar_id in keys:
        record = made[avatar_id].model_copy(update={"avatar_id": avatar_id})  # a hit may be another avatar's
        records[avatar_id] = record
        metadata[avatar_id] = {
            "sheet": dg.MetadataValue.path(store.uri(record.sheet)),
            "preview": dg.MetadataValue.md(
                thumbnail_markdown(decode_image(store.read(record.sheet)), max_side=320, alt="character sheet")
            ),
            "variants": ", ".join(record.variants),
            "palette": " ".join(record.palette),
        }
    return recorded_partitions(context, records, metadata)


@identity_asset(
    description="Speaker embedding, pitch, rate, loudness and SNR of the voice sample, with its consent.",
    automation_condition=refresh_existing,
)
def voice_profile(
    context: dg.AssetExecutionContext, store: MediaStore, speaker: SpeakerEncoder, source_upload: SourceUploadRecord
) -> dg.Output[VoiceProfileRecord]:
    from avatar_assets.media.audio import AudioError, load_wav
    from avatar_assets.media.voice import analyse_voice

    consent = source_upload.manifest.consent

    def compute() -> VoiceProfileRecord:
        voice = source_upload.voice
        if voice is None:
            return VoiceProfileRecord(
                avatar_id=source_upload.avatar_id, sample=None, problem="no voice sample was uploaded",
                metrics=None, embedding=None, consent=consent, waveform_sha256=None, provider=None,
            )
        try:
            loaded = load_wav(store.read(voice.original))
        except AudioError as error:
            return VoiceProfileRecord(
                avatar_id=source_upload.avatar_id, sample=voice.original, problem=f"{voice.path}: {error}",
                metrics=None, embedding=None, consent=consent, waveform_sha256=None, provider=None,
            )
        context.log.info(f"analysing {loaded.duration_s:.1f} s of audio at {loaded.original_sample_rate} Hz")
        metrics = analyse_voice(loaded)
        # -inf (silence) is "unmeasurable": None, as the JSON record stores it, so the hash is stable.
        measured = VoiceMetricsModel(
            **{k: _finite_or_none(getattr(metrics, k)) for k in VoiceMetricsModel.model_fields}
        )
        try:
            embedding = speaker.embed(loaded.samples, loaded.sample_rate)
        except AudioError as error:
            # Readable audio without speech (e.g. silence) is a gate failure that explains itself.
            return VoiceProfileRecord(
                avatar_id=source_upload.avatar_id, sample=voice.original, problem=f"{voice.path}: {error}",
                metrics=measured, embedding=None, consent=consent, waveform_sha256=None, provider=speaker.info(),
            )
        buffer = io.BytesIO()
        np.save(buffer, embedding.astype(np.float32))
        return VoiceProfileRecord(
            avatar_id=source_upload.avatar_id,
            sample=voice.original,
            problem=None,
            metrics=measured,
            embedding=store.put_bytes(buffer.getvalue(), "npy", "application/x-npy"),
            consent=consent,
            waveform_sha256=sha256_bytes(loaded.samples.astype(np.float32).tobytes()),
            provider=speaker.info(),
        )

    key = content_key("voice_profile", CODE_VERSION, {"upload": source_upload.content_hash()})
    record, _ = reuse_or_compute(store, "voice_profile", key, compute, context.log)
    metadata: dict = {"problem": record.problem or "none", "consent_scopes": ", ".join(consent.scopes) or "none"}
    if record.metrics:
        metadata |= {
            name: float(value) if value is not None else float("nan")
            for name, value in record.metrics.model_dump().items()
        }
    return recorded(record, metadata)


@identity_asset(
    description="The reusable avatar identity: one record pointing at every identity artifact and its hash.",
    automation_condition=refresh_existing,
)
def identity_bundle(
    context: dg.AssetExecutionContext,
    store: MediaStore,
    source_upload: SourceUploadRecord,
    validated_inputs: ValidatedInputsRecord,
    neutral_image: NeutralImageRecord,
    character_sheet: CharacterSheetRecord,
    voice_profile: VoiceProfileRecord,
) -> dg.Output[IdentityBundleRecord]:
    parts = [
        IdentityPart(
            asset=record.kind,
            record_hash=record.content_hash(),
            media={f"{index}": ref for index, ref in enumerate(media_refs(record))},
            providers=[p for p in [getattr(record, "provider", None)] if p is not None],
        )
        for record in (source_upload, validated_inputs, neutral_image, character_sheet, voice_profile)
    ]
    reference, problem = reference_face(store, source_upload, validated_inputs)
    if reference is None or reference.embedding is None:
        context.log.warning(f"no face embedding for {source_upload.avatar_id}: {problem or 'landmark model missing'}")
    record = IdentityBundleRecord(
        avatar_id=source_upload.avatar_id,
        bundle_sha256=source_upload.bundle_sha256,
        consent=source_upload.manifest.consent,
        parts=parts,
        face_embedding=None if reference is None or reference.embedding is None
        else [round(float(v), 6) for v in reference.embedding],
    )
    return recorded(
        record,
        {
            "neutral_image": dg.MetadataValue.path(store.uri(neutral_image.image)),
            "character_sheet": dg.MetadataValue.path(store.uri(character_sheet.sheet)),
            "voice_profile": voice_profile.problem or "ok",
            "parts": len(parts),
            "face_embedding": "stored" if record.face_embedding else "missing",
        },
    )


IDENTITY_ASSETS = [source_upload, validated_inputs, neutral_image, character_sheet, voice_profile, identity_bundle]
