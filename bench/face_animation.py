"""Face animation and face analysis, kernel only (no Dagster).

Subject: the landmark mesh warp (`face_motion.build_rig` + `FaceRig.render`: visemes, blinks, idle
motion) over a close-up keyframe of the 720x1280 master, driven by espeak speech. Baseline, same run,
same keyframe and speech: the envelope mouth it replaces (`lipsync.animate_mouth` + the push-in zoom,
through `talking_head.render_frames` without landmarks). Both render into memory; the ratio is mesh
fps over baseline fps. Also measured per face (the astronaut and Grace Hopper portraits): the 68
landmarks inside a known face box and the 128-d embedding.
"""

from __future__ import annotations

from typing import Any

from bench import common
from bench.common import median, ratio, say

NAME = "face_animation"
SIZE = (720, 1280)
FPS = 25
TEXT = (
    "Hi! I'm the demo avatar, built from one public domain photo and a synthetic voice. "
    "Everything you see was made step by step, as Dagster assets with quality gates."
)


def parameters(quick: bool) -> dict[str, Any]:
    return {"size": list(SIZE), "fps": FPS, "repeats": 1 if quick else 5, "shot": "close_up",
            "faces": ["astronaut", "grace_hopper"], "face_repeats": 2 if quick else 10}


def _portraits() -> dict[str, Any]:
    from importlib.resources import files

    import matplotlib.cbook

    from avatar_assets.media.images import load_photo

    grace = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return {
        "astronaut": load_photo((files("avatar_assets") / "samples" / "astronaut.jpg").read_bytes()).rgb,
        "grace_hopper": load_photo(open(grace, "rb").read()).rgb,
    }


def run(opts) -> dict[str, Any]:
    import numpy as np

    from avatar_assets.media.compose import composite_shot
    from avatar_assets.media.face_motion import face_controls
    from avatar_assets.media.faces import detect_faces
    from avatar_assets.media.landmarks import face_embedding, find_landmarks
    from avatar_assets.media.lipsync import mouth_openness
    from avatar_assets.media.portrait import make_neutral_portrait
    from avatar_assets.media.talking_head import SceneTrack, render_frames
    from avatar_assets.media.tts import synthesize

    params = parameters(opts.quick)
    photos = _portraits()
    landmark_ms, embedding_ms = {}, {}
    for name, rgb in photos.items():
        face = detect_faces(rgb)[0]
        box = (face.x, face.y, face.w, face.h)
        find_landmarks(rgb, box)  # first call loads the models
        lm_s = [common.timed(lambda: find_landmarks(rgb, box))[0] for _ in range(params["face_repeats"])]
        points = find_landmarks(rgb, box)
        emb_s = [common.timed(lambda: face_embedding(rgb, points))[0] for _ in range(params["face_repeats"])]
        landmark_ms[name], embedding_ms[name] = 1000 * median(lm_s), 1000 * median(emb_s)
        say(f"{name}: landmarks {landmark_ms[name]:.1f} ms, embedding {embedding_ms[name]:.1f} ms")

    photo = photos["astronaut"]
    portrait = make_neutral_portrait(photo, detect_faces(photo)[0])
    face = portrait.face
    shot = composite_shot(np.full((SIZE[1], SIZE[0], 3), (90, 120, 160), np.uint8), portrait.rgb, portrait.mask,
                          shot="close_up", out_size=SIZE, face_box=(face.x, face.y, face.w, face.h),
                          landmarks=portrait.landmarks.points)
    speech = synthesize(TEXT, rate_wpm=150)
    n = round(len(speech.samples) / speech.sample_rate * FPS)
    openness = mouth_openness(speech.samples, speech.sample_rate, FPS, words=speech.words, n_frames=n)
    controls = face_controls(openness, speech.phonemes, FPS, seed=0)
    mesh = SceneTrack(0.0, n / FPS, shot.frame, shot.mouth_box, shot.landmarks)
    envelope = SceneTrack(0.0, n / FPS, shot.frame, shot.mouth_box, None)
    renderers = {"landmark_mesh": lambda: sum(1 for _ in render_frames([mesh], controls, FPS)),
                 "envelope_mouth": lambda: sum(1 for _ in render_frames([envelope], openness, FPS))}
    seconds: dict[str, list[float]] = {name: [] for name in renderers}
    names = list(renderers)
    for rep in range(params["repeats"]):
        for name in names[rep % 2:] + names[:rep % 2]:
            elapsed, frames = common.timed(renderers[name])
            assert frames == n
            seconds[name].append(elapsed)
            say(f"repeat {rep + 1}: {name} {n / elapsed:.1f} fps")
    fps = {name: n / median(values) for name, values in seconds.items()}
    speed = ratio(fps["landmark_mesh"], fps["envelope_mouth"])
    return {
        "parameters": params,
        "figures": {
            "frames": n, "fps": fps, "seconds": seconds, "mesh_vs_envelope_fps_ratio": speed,
            "landmarks_ms": landmark_ms, "embedding_ms": embedding_ms,
        },
        "targets": {},
        "baseline": "the envelope mouth (animate_mouth + push-in) on the same keyframe and speech, same run",
    }


def summary(result: dict[str, Any]) -> list[str]:
    f, p = result["figures"], result["parameters"]
    return [
        (f"{f['frames']} frames at {p['size'][0]}x{p['size'][1]} ({p['shot']}), medians of {p['repeats']}: "
         f"landmark mesh {f['fps']['landmark_mesh']:.1f} fps vs envelope mouth {f['fps']['envelope_mouth']:.1f} fps "
         f"-> ratio **{f['mesh_vs_envelope_fps_ratio']:.2f}**"),
        "per face: " + "; ".join(
            f"{name} landmarks {f['landmarks_ms'][name]:.1f} ms, embedding {f['embedding_ms'][name]:.1f} ms"
            for name in f["landmarks_ms"]
        ),
    ]
