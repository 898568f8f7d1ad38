"""Identity-consistency gates on generated images: the face is still there, and still the source's.

Blocking, partitioned, ERROR severity, on `neutral_image` and `character_sheet`. They measure only
images a generative provider made (`provider.provider == "diffusers"`); classical images (and classical
fallbacks) pass without measuring, because their pixels are the source photo's own, aligned and
colour-balanced (the descriptor scores the classical neutral 0.97 against the source crop).

Measure: Haar face detection on the generated image, then the LBPH similarity of that face to the
face in the source photo (`avatar_assets.media.face_identity`; read its limits). The reference is
always the uploaded photo, so the sheet is not compared with an already drifted neutral image.
Threshold: `AVATAR_IDENTITY_MIN_SIMILARITY` (default 0.80). On the sheet, the frontal variants are
gated; three-quarter and profile views are measured and reported only (a frontal detector and a
frontal descriptor cannot judge them).
"""

from __future__ import annotations

import json
import os

import dagster as dg

from avatar_assets.contracts import (
    CharacterSheetRecord,
    NeutralImageRecord,
    SourceUploadRecord,
    ValidatedInputsRecord,
)
from avatar_assets.checks.gates import partitioned_gate
from avatar_assets.identity.assets import character_sheet, neutral_image
from partitions import avatars
from resources.media_store import MediaStore

GENERATIVE_PROVIDERS = ("diffusers",)
SOURCE_INS = {"source_upload": dg.AssetIn("source_upload"), "validated_inputs": dg.AssetIn("validated_inputs")}


def min_similarity() -> float:
    from avatar_assets.media.face_identity import DEFAULT_MIN_SIMILARITY

    raw = os.environ.get("AVATAR_IDENTITY_MIN_SIMILARITY", "").strip()
    return float(raw) if raw else DEFAULT_MIN_SIMILARITY


def consistency_gate(asset, description: str):
    """A blocking partitioned gate that also reads the source photo."""
    return partitioned_gate(asset, description, avatars, additional_ins=SOURCE_INS)


def _not_generated(provider) -> dg.AssetCheckResult:
    via = f" (fallback from {provider.fallback_from})" if provider.fallback_from else ""
    return dg.AssetCheckResult(
        passed=True,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"not generated: the {provider.provider} provider{via} keeps the source photo's own pixels",
        metadata={"generated": False, "provider": provider.provider, "fallback_from": provider.fallback_from or "none"},
    )


def _source_face(store: MediaStore, source_upload: SourceUploadRecord, validated_inputs: ValidatedInputsRecord):
    """(rgb, box) of the largest face in the chosen source photo, or (None, problem)."""
    from avatar_assets.media.faces import detect_faces
    from avatar_assets.media.images import decode_image

    photo = next((p for p in source_upload.photos if p.path == validated_inputs.best_photo), None)
    if photo is None or photo.upright is None:
        return None, f"source photo {validated_inputs.best_photo!r} is not available"
    rgb = decode_image(store.read(photo.upright))
    faces = detect_faces(rgb)
    if not faces:
        return None, f"no face found in the source photo {photo.path}"
    face = max(faces, key=lambda f: f.area)
    return (rgb, (face.x, face.y, face.w, face.h)), None


def measure(rgb, source, expected_box=None) -> dict:
    """Face count, the chosen face box and its similarity to the source face (None when no face)."""
    from avatar_assets.media.face_identity import identity_similarity
    from avatar_assets.media.faces import detect_faces

    faces = detect_faces(rgb, min_size=max(16, min(rgb.shape[:2]) // 8))
    if not faces:
        return {"face_count": 0, "face_box": None, "similarity": None}
    if expected_box is not None:
        ex, ey = expected_box[0] + expected_box[2] / 2, expected_box[1] + expected_box[3] / 2
        face = min(faces, key=lambda f: (f.centre[0] - ex) ** 2 + (f.centre[1] - ey) ** 2)
    else:
        face = max(faces, key=lambda f: f.area)
    box = (face.x, face.y, face.w, face.h)
    source_rgb, source_box = source
    return {"face_count": len(faces), "face_box": box, "similarity": identity_similarity(rgb, box, source_rgb, source_box)}


def _reference(store: MediaStore, provider, source_upload: SourceUploadRecord, validated_inputs: ValidatedInputsRecord):
    """What both gates start from: (early verdict or None, threshold, metadata, source face)."""
    from avatar_assets.media.face_identity import DESCRIPTOR_NAME

    if provider.provider not in GENERATIVE_PROVIDERS:
        return _not_generated(provider), None, None, None
    threshold = min_similarity()
    metadata = {
        "generated": True, "provider": provider.provider, "model_id": provider.model_id, "seed": provider.seed or 0,
        "threshold": threshold, "descriptor": DESCRIPTOR_NAME,
    }
    source, problem = _source_face(store, source_upload, validated_inputs)
    if source is None:
        failed = dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description=problem, metadata=metadata)
        return failed, threshold, metadata, None
    return None, threshold, metadata, source


@consistency_gate(
    neutral_image,
    "Generated neutral image: a face is present and its LBPH similarity to the source photo's face is above "
    "AVATAR_IDENTITY_MIN_SIMILARITY (default 0.80). Classical images pass: their pixels are the source's.",
)
def neutral_identity_consistency(
    store: MediaStore,
    neutral_image: NeutralImageRecord,
    source_upload: SourceUploadRecord,
    validated_inputs: ValidatedInputsRecord,
) -> dg.AssetCheckResult:
    from avatar_assets.media.images import decode_image

    verdict, threshold, metadata, source = _reference(store, neutral_image.provider, source_upload, validated_inputs)
    if verdict is not None:
        return verdict
    measured = measure(decode_image(store.read(neutral_image.image)), source, neutral_image.face_box)
    similarity = measured["similarity"]
    if similarity is None:
        problems = ["no face found in the generated neutral image: the model lost the face (identity cannot be checked)"]
    elif similarity < threshold:
        problems = [f"identity similarity {similarity:.3f} to the source face is below {threshold:.2f}: the model changed the face"]
    else:
        problems = []
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or f"same face as the source (similarity {similarity:.3f} >= {threshold:.2f})",
        metadata={
            **metadata,
            "face_found": similarity is not None,
            "face_count": measured["face_count"],
            "similarity": similarity if similarity is not None else 0.0,
        },
    )


@consistency_gate(
    character_sheet,
    "Generated character sheet: every frontal variant (front, smiling, neutral lighting) shows a face whose LBPH "
    "similarity to the source photo's face is above the threshold; turned variants are measured and reported.",
)
def sheet_identity_consistency(
    store: MediaStore,
    character_sheet: CharacterSheetRecord,
    source_upload: SourceUploadRecord,
    validated_inputs: ValidatedInputsRecord,
) -> dg.AssetCheckResult:
    from avatar_assets.media.images import decode_image
    from avatar_assets.styles import FRONTAL_VARIANTS

    verdict, threshold, metadata, source = _reference(store, character_sheet.provider, source_upload, validated_inputs)
    if verdict is not None:
        return verdict
    geometry = json.loads(store.read(character_sheet.geometry))
    generated = geometry.get("generated") or [name for name in character_sheet.variants if name in FRONTAL_VARIANTS]
    gated = [name for name in geometry.get("frontal", FRONTAL_VARIANTS) if name in generated]
    problems, rows = [], []
    if not gated:
        problems.append("the sheet has none of the frontal variants the gate judges")
    for name in generated:
        measured = measure(decode_image(store.read(character_sheet.variants[name])), source)
        similarity = measured["similarity"]
        judged = name in gated
        if judged and similarity is None:
            problems.append(f"{name}: no face found")
        elif judged and similarity < threshold:
            problems.append(f"{name}: similarity {similarity:.3f} below {threshold:.2f}")
        shown = f"{similarity:.3f}" if similarity is not None else "no face"
        rows.append(f"| {name} | {'gated' if judged else 'reported'} | {measured['face_count']} | {shown} |")
    scores = [row for row in rows if "gated" in row]
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or f"{len(scores)} frontal variant(s) keep the source face",
        metadata={
            **metadata,
            "variants_gated": len(gated),
            "failures": len(problems),
            "variants": dg.MetadataValue.md(
                "| variant | role | faces | similarity |\n|---|---|---|---|\n" + "\n".join(rows)
            ),
        },
    )


CONSISTENCY_CHECKS = [neutral_identity_consistency, sheet_identity_consistency]
