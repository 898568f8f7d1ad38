"""Media kernels the pipeline calls on every upload, each timed against a baseline in the same run.

These were once wall-clock assertions in the test suite, which a loaded CI machine fails at random; the
tests now keep the behaviour that makes each kernel fast (a bounded working size, a header-only refusal),
and the seconds live here:

- neutral portrait of the sample photo against GrabCut on the 1024 px aligned crop that background
  replacement is given, the cost its 384 px working copy avoids;
- voice analysis of 30 s of speech-like audio, as a real-time factor;
- espeak-ng synthesis of fifty words, as a real-time factor;
- `import avatar_assets.definitions` in a fresh interpreter, against `import dagster` alone.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from bench import common
from bench.common import median, ratio, say

NAME = "kernels"


def parameters(quick: bool, gpu: bool) -> dict[str, Any]:
    return {"repeats": 1 if quick else 5, "voice_s": 30.0}


def _import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=common.REPO_ROOT,
                         timeout=300, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(opts) -> dict[str, Any]:
    from importlib.resources import files

    import cv2
    import numpy as np

    from avatar_assets.media.audio import load_wav
    from avatar_assets.media.faces import detect_faces
    from avatar_assets.media.images import load_photo
    from avatar_assets.media.portrait import make_neutral_portrait
    from avatar_assets.media.tts import synthesize
    from avatar_assets.media.voice import analyse_voice
    from tests.media.audio_fixtures import speech_like, wav_bytes
    from tests.media.test_tts import FIFTY_WORDS  # the tests' text, whose synthesis they no longer time

    params = parameters(opts.quick, getattr(opts, "gpu", False))
    rgb = load_photo((files("avatar_assets") / "samples" / "astronaut.jpg").read_bytes()).rgb
    face = detect_faces(rgb)[0]
    voice = load_wav(wav_bytes(speech_like(16000, params["voice_s"], snr_db=25), 16000))

    side = 1024  # make_neutral_portrait's output size, at which replace_background gets the aligned crop
    crop = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)
    scale = side / rgb.shape[1]

    def full_size_grabcut() -> None:
        labels = np.full(crop.shape[:2], cv2.GC_PR_BGD, np.uint8)
        labels[round(face.y * scale):round((face.y + face.h) * scale),
               round(face.x * scale):round((face.x + face.w) * scale)] = cv2.GC_FGD
        cv2.setRNGSeed(0)
        cv2.grabCut(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), labels, None, np.zeros((1, 65)), np.zeros((1, 65)), 3,
                    cv2.GC_INIT_WITH_MASK)

    make_neutral_portrait(rgb, face), analyse_voice(voice), synthesize("warm up")  # first-call imports
    seconds: dict[str, list[float]] = {k: [] for k in ("portrait", "grabcut_full", "voice", "tts", "definitions",
                                                       "dagster")}
    speech_s = 0.0
    for rep in range(params["repeats"]):
        seconds["portrait"].append(common.timed(lambda: make_neutral_portrait(rgb, face))[0])
        seconds["grabcut_full"].append(common.timed(full_size_grabcut)[0])
        seconds["voice"].append(common.timed(lambda: analyse_voice(voice))[0])
        took, synth = common.timed(lambda: synthesize(FIFTY_WORDS))
        seconds["tts"].append(took)
        speech_s = len(synth.samples) / synth.sample_rate
        seconds["definitions"].append(_import_seconds("avatar_assets.definitions"))
        seconds["dagster"].append(_import_seconds("dagster"))
        say(f"repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in seconds.items()))
    med = {k: median(v) for k, v in seconds.items()}
    return {
        "parameters": {**params, "photo": f"{rgb.shape[1]}x{rgb.shape[0]}", "words": len(FIFTY_WORDS.split())},
        "figures": {
            "median_s": med, "seconds": seconds, "speech_s": speech_s,
            "portrait_vs_full_grabcut": ratio(med["portrait"], med["grabcut_full"]),
            "voice_rtf": med["voice"] / params["voice_s"],
            "tts_rtf": med["tts"] / speech_s,
            "definitions_vs_dagster_import": ratio(med["definitions"], med["dagster"]),
        },
        "targets": {
            "portrait_vs_full_grabcut": {"value": ratio(med["portrait"], med["grabcut_full"]), "op": "<", "limit": 0.5,
                                         "met": med["portrait"] < 0.5 * med["grabcut_full"]},
            "voice_rtf": {"value": med["voice"] / params["voice_s"], "op": "<", "limit": 1 / 60,
                          "met": med["voice"] / params["voice_s"] < 1 / 60},
            "tts_rtf": {"value": med["tts"] / speech_s, "op": "<", "limit": 0.05, "met": med["tts"] / speech_s < 0.05},
        },
        "baseline": "GrabCut on the 1024 px crop of the same photo, the audio's own length, `import dagster` alone; same run",
    }


def summary(result: dict[str, Any]) -> list[str]:
    f, p = result["figures"], result["parameters"]
    m = f["median_s"]
    return [
        f"medians of {p['repeats']} on the {p['photo']} sample photo and {p['voice_s']:.0f} s of speech-like audio:",
        (f"neutral portrait {m['portrait']:.2f} s against GrabCut at 1024 px {m['grabcut_full']:.2f} s "
         f"(**{f['portrait_vs_full_grabcut']:.2f}x**)"),
        f"voice analysis {m['voice']:.3f} s: real-time factor **{f['voice_rtf']:.4f}**",
        f"espeak-ng, {p['words']} words: {m['tts']:.3f} s for {f['speech_s']:.1f} s of speech (RTF **{f['tts_rtf']:.4f}**)",
        (f"import avatar_assets.definitions {m['definitions']:.2f} s against import dagster {m['dagster']:.2f} s "
         f"(**{f['definitions_vs_dagster_import']:.2f}x**)"),
    ]
