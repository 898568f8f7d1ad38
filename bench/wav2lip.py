"""Wav2Lip lip sync, kernel only (no Dagster): frames per second of `media.wav2lip.sync_frames` at batch 1
and 16 over a 1024x1024 neutral portrait (crop from its landmarks, mel window, model, feathered
paste-back), with a random-weight checkpoint of the full public architecture (36.3 M parameters).

Random weights cost what trained ones cost, so the figures hold for a real checkpoint on the same
device; on CPU unless `--gpu` (GPU figures belong to the GPU benchmarks). The mel of the whole speech is
timed apart: it is computed once per video, not per frame.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from bench import common
from bench.common import median, ratio, say

NAME = "wav2lip"
FPS = 25
BATCHES = (1, 16)
TEXT = "Hi! I'm the demo avatar, and my mouth is painted by a lip-sync model from the speech."


def parameters(quick: bool, gpu: bool) -> dict[str, Any]:
    return {"frames": 16 if quick else 64, "batches": list(BATCHES), "fps": FPS, "repeats": 1 if quick else 3,
            "device": "cuda" if gpu else "cpu", "portrait_side": 1024, "weights": "random (full-size architecture)"}


def run(opts) -> dict[str, Any]:
    import numpy as np

    from avatar_assets.media.faces import detect_faces
    from avatar_assets.media.images import load_photo
    from avatar_assets.media.portrait import make_neutral_portrait
    from avatar_assets.media.tts import synthesize
    from avatar_assets.media.wav2lip import FaceTarget, Wav2LipModel, face_crop_box, mel_windows, melspectrogram, sync_frames
    from tests.media.tiny_wav2lip import save_random_wav2lip

    params = parameters(opts.quick, getattr(opts, "gpu", False))
    photo = load_photo((files("avatar_assets") / "samples" / "astronaut.jpg").read_bytes()).rgb
    portrait = make_neutral_portrait(photo, detect_faces(photo)[0])
    side = portrait.rgb.shape[1], portrait.rgb.shape[0]
    target = FaceTarget(face_crop_box(portrait.landmarks.points, side), portrait.rgb)
    speech = synthesize(TEXT, rate_wpm=150)
    mel_s, mel = common.timed(lambda: melspectrogram(speech.samples, speech.sample_rate))
    n = params["frames"]
    windows = mel_windows(mel, FPS, n)
    with common.workdir("wav2lip", keep=getattr(opts, "keep", False)) as tmp:
        model = Wav2LipModel(save_random_wav2lip(tmp / "wav2lip.pth"), device=params["device"]).load()
    frames = [portrait.rgb] * n
    sync_frames(model, frames[:2], [target] * 2, windows, batch_size=2).__next__()  # warm-up
    seconds: dict[str, list[float]] = {str(b): [] for b in BATCHES}
    for rep in range(params["repeats"]):
        for batch in BATCHES:
            elapsed, count = common.timed(
                lambda b=batch: sum(1 for _ in sync_frames(model, frames, [target] * n, windows, batch_size=b))
            )
            assert count == n
            seconds[str(batch)].append(elapsed)
            say(f"repeat {rep + 1}: batch {batch} {n / elapsed:.1f} frames/s")
    fps = {batch: n / median(values) for batch, values in seconds.items()}
    return {
        "parameters": params,
        "figures": {
            "fps": fps, "seconds": seconds, "batch16_vs_batch1": ratio(fps["16"], fps["1"]),
            "mel_s": mel_s, "speech_s": len(speech.samples) / speech.sample_rate,
            "load_s": model.load_seconds, "crop_side": target.box[2], "device": model.device,
        },
        "targets": {},
        "baseline": "batch 1 on the same model, frames and device, same run",
    }


def summary(result: dict[str, Any]) -> list[str]:
    f, p = result["figures"], result["parameters"]
    return [
        (f"{p['frames']} frames of a {p['portrait_side']}px portrait ({f['crop_side']}px face crop) on {f['device']}, "
         f"medians of {p['repeats']}: batch 1 {f['fps']['1']:.1f} frames/s, batch 16 {f['fps']['16']:.1f} frames/s "
         f"-> ratio **{f['batch16_vs_batch1']:.2f}**"),
        f"mel of {f['speech_s']:.1f} s of speech: {f['mel_s']:.2f} s (once per video); checkpoint load {f['load_s']:.2f} s",
    ]
