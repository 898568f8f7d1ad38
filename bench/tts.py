"""Speech synthesis, kernel only (no Dagster): the real-time factor (synthesis seconds per second of speech)
of a tiny random-weight Piper-format voice run by onnxruntime on CPU, against espeak-ng on the same SSML.

The tiny voice (tests/media/tiny_piper.py) has Piper's I/O signature but a few thousand parameters, so its
figure is the adapter's own cost (per-word IPA phonemisation, ids, onnxruntime call, resampling to 24 kHz),
not a real voice's: a real Piper voice's network costs more and is measured where one is supplied.
"""

from __future__ import annotations

from typing import Any

from bench import common
from bench.common import median, ratio, say

NAME = "tts"
TEXT = ("Hi! I'm the demo avatar. Today I will tell you how a neural voice reads a script, word by word, "
        "and how its timings drive the captions and the mouth.")


def parameters(quick: bool, gpu: bool) -> dict[str, Any]:
    return {"repeats": 1 if quick else 5, "words": len(TEXT.split()), "device": "cpu",
            "voice": "tiny random-weight Piper-format voice (durations output)"}


def run(opts) -> dict[str, Any]:
    from avatar_assets.media import piper, tts
    from avatar_assets.media.script import parse_script, to_ssml
    from avatar_assets.media.model_files import file_sha256
    from tests.media.tiny_piper import save_tiny_piper

    params = parameters(opts.quick, getattr(opts, "gpu", False))
    ssml = to_ssml(parse_script(TEXT).sentences)  # what the script asset hands the speech asset
    with common.workdir("tts", keep=getattr(opts, "keep", False)) as tmp:
        path = save_tiny_piper(tmp / "voice.onnx")
        voice = piper.PiperVoice.load(path, file_sha256(path))
        piper.synthesize(voice, ssml, length_scale=1.0)  # warm-up: espeak-ng and onnxruntime initialised
        tts.synthesize(ssml, ssml=True)
        seconds: dict[str, list[float]] = {"onnx": [], "espeak-ng": []}
        spoken: dict[str, float] = {}
        for rep in range(params["repeats"]):
            took, (neural, _) = common.timed(lambda: piper.synthesize(voice, ssml, length_scale=1.0))
            seconds["onnx"].append(took)
            spoken["onnx"] = len(neural.samples) / neural.sample_rate
            took, classic = common.timed(lambda: tts.synthesize(ssml, ssml=True))
            seconds["espeak-ng"].append(took)
            spoken["espeak-ng"] = len(classic.samples) / classic.sample_rate
            say(f"repeat {rep + 1}: onnx {seconds['onnx'][-1]:.3f} s, espeak-ng {seconds['espeak-ng'][-1]:.3f} s")
    rtf = {name: median(values) / spoken[name] for name, values in seconds.items()}
    return {
        "parameters": params,
        "figures": {"rtf": rtf, "seconds": seconds, "speech_s": spoken, "load_s": voice.load_seconds,
                    "onnx_vs_espeak": ratio(rtf["onnx"], rtf["espeak-ng"])},
        "targets": {},
        "baseline": "espeak-ng (the CPU default) on the same SSML, same run",
    }


def summary(result: dict[str, Any]) -> list[str]:
    f, p = result["figures"], result["parameters"]
    return [
        (f"{p['words']} words on CPU, medians of {p['repeats']}: real-time factor onnx (tiny voice) "
         f"**{f['rtf']['onnx']:.4f}** ({f['speech_s']['onnx']:.1f} s of speech), espeak-ng "
         f"**{f['rtf']['espeak-ng']:.4f}** ({f['speech_s']['espeak-ng']:.1f} s); voice load {f['load_s']:.2f} s"),
    ]
