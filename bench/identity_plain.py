"""The identity build without Dagster: the same `media/` functions in a plain loop, one process.

`python -m bench.identity_plain --json-out OUT BUNDLE...` is the baseline of the `identity` benchmark.
Per bundle it does the media work the identity assets do (decode, metrics, face, neutral portrait,
character sheet, voice analysis and speaker embedding) and the same PNG encodes, on arrays in memory:
no media store, no records, no QA gates, no Dagster. It writes its own timings (imports, per stage).
`--with-gates` adds the identity gates' own measurements (`checks/consistency.py`: the uploaded face's
landmarks and embedding; faces, embedding and LBPH of the neutral image and of the sheet's frontal
variants), the media work the Dagster pass does and the plain loop otherwise leaves out.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse
import io
import json
from pathlib import Path


def build_identity(bundle: Path, timings: dict[str, float], with_gates: bool = False) -> dict:
    """One avatar: what source_upload, validated_inputs, neutral_image, character_sheet and
    voice_profile compute, stage by stage (stage names are the asset names)."""
    import numpy as np

    from avatar_assets.media.audio import load_wav
    from avatar_assets.media.faces import detect_faces, photo_metrics
    from avatar_assets.media.images import encode_png, load_photo
    from avatar_assets.media.portrait import make_neutral_portrait
    from avatar_assets.media.sheet import make_character_sheet
    from avatar_assets.media.voice import analyse_voice, speaker_embedding

    def stage(name: str, fn):
        started = time.perf_counter()
        value = fn()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
        return value

    manifest = json.loads((bundle / "manifest.json").read_text())

    def source_upload():
        photo = load_photo((bundle / manifest["photos"][0]).read_bytes())
        encode_png(photo.rgb)  # the upright copy the upload stores
        return photo.rgb, (bundle / manifest["voice_sample"]).read_bytes()

    rgb, voice_bytes = stage("source_upload", source_upload)
    metrics = stage("validated_inputs", lambda: photo_metrics(rgb))

    def neutral_image():
        face = detect_faces(rgb)[0]
        portrait = make_neutral_portrait(rgb, face)
        encode_png(np.dstack([portrait.mask] * 3))
        encode_png(portrait.rgb)
        detect_faces(portrait.rgb)  # the recorded face_count
        return portrait

    portrait = stage("neutral_image", neutral_image)

    def character_sheet():
        sheet = make_character_sheet(portrait, seed=0)
        encode_png(sheet.sheet_rgb)
        for variant in sheet.variants.values():
            encode_png(variant)
        return sheet

    sheet = stage("character_sheet", character_sheet)

    def voice_profile():
        loaded = load_wav(voice_bytes)
        voice = analyse_voice(loaded)
        embedding = speaker_embedding(loaded.samples, loaded.sample_rate)
        np.save(io.BytesIO(), embedding.astype(np.float32))
        return voice, embedding

    voice, _ = stage("voice_profile", voice_profile)
    if with_gates:
        stage("identity_gates", lambda: identity_gates(rgb, metrics.face_box, portrait, sheet))
    return {
        "avatar_id": manifest["avatar_id"],
        "face_count": metrics.face_count,
        "variants": len(sheet.variants),
        "median_f0_hz": voice.median_f0_hz,
    }


def identity_gates(photo, photo_box, portrait, sheet) -> list[float]:
    """The two identity-consistency gates' measurements on the same pixels (already in memory here, where
    the gates decode the stored PNGs): face distances of the neutral image and each frontal variant."""
    from avatar_assets.media.face_identity import identity_similarity
    from avatar_assets.media.faces import judged_faces
    from avatar_assets.media.landmarks import face_distance, face_embedding, find_landmarks

    reference = face_embedding(photo, find_landmarks(photo, photo_box))
    face = portrait.face
    judged_faces(portrait.rgb)  # the neutral gate's face count (the sheet records its variants')
    neutral_box = (face.x, face.y, face.w, face.h)
    subjects = [(portrait.rgb, neutral_box, portrait.landmarks)]
    for name in sheet.geometry["frontal"]:
        found = sheet.geometry["variants"][name]["face_box"]
        if found is not None:
            box = (found["x"], found["y"], found["w"], found["h"])
            subjects.append((sheet.variants[name], box, None))
    distances = []
    for rgb, box, landmarks in subjects:
        points = landmarks if landmarks is not None else find_landmarks(rgb, box)
        distances.append(face_distance(face_embedding(rgb, points), reference))
        identity_similarity(rgb, box, photo, photo_box)
    return distances


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", type=Path, required=True)
    parser.add_argument("--with-gates", action="store_true", help="also make the identity gates' measurements")
    parser.add_argument("bundles", nargs="+", type=Path)
    args = parser.parse_args(argv)

    import_started = time.perf_counter()
    import avatar_assets.media.audio
    import avatar_assets.media.faces
    import avatar_assets.media.images
    import avatar_assets.media.portrait
    import avatar_assets.media.sheet
    import avatar_assets.media.voice  # noqa: F401

    import_s = time.perf_counter() - import_started
    per_bundle = []
    for bundle in args.bundles:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        summary = build_identity(bundle, timings, with_gates=args.with_gates)
        per_bundle.append({**summary, "total_s": time.perf_counter() - started, "stages": timings})
    args.json_out.write_text(
        json.dumps(
            {
                "import_s": import_s,
                "compute_s": sum(b["total_s"] for b in per_bundle),
                "in_process_s": time.perf_counter() - _STARTED,
                "bundles": per_bundle,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
