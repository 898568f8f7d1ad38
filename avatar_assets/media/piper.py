"""Neural speech from a Piper-format ONNX voice (`voice.onnx` + `voice.onnx.json`) run with onnxruntime.

The voice's I/O signature is Piper's: inputs `input` int64 [1, T] (phoneme ids), `input_lengths` int64 [1],
`scales` float32 [3] (noise, length, noise_w) and, for multi-speaker voices, `sid` int64 [1]; output 0 is
float audio [1, 1, S] at `audio.sample_rate`. An export with a second output gives per-id durations
(any unit: they are scaled to the audio's length), and word and phoneme timings come from them; without it
they are spread evenly over the ids and the result says `estimated`.

Words are phonemised one at a time (espeak-ng in IPA mode, the phonemiser Piper voices are trained on), so
each word owns its ids and its timing; espeak would otherwise merge words such as "in the" into one IPA
word. The visemes need espeak-ng mnemonics (media.face_motion), so each IPA symbol is renamed to its
mnemonic and timed from the neural audio itself, not from espeak's own (differently paced) speech.
Importing this module imports no onnxruntime (only loading a voice does).
"""

from __future__ import annotations

import html
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avatar_assets.media.audio import resample
from avatar_assets.media.tts import (
    SAMPLE_RATE,
    PhonemeTiming,
    Synthesis,
    WordTiming,
    attach_punctuation,
    ipa_phonemes,
    spoken_tokens,
)

BOS, EOS, PAD, WORD_GAP = "^", "$", "_", " "
_STRESS, _LENGTH = "ˈˌ", "ːˑ"
_BREAK = re.compile(r"""<break\s+time\s*=\s*["'](\d+(?:\.\d+)?)(ms|s)["']\s*/>""")

# IPA symbols (one codepoint each, as Piper ids them) -> the espeak-ng mnemonic media.face_motion maps.
IPA_TO_MNEMONIC = {
    "p": "p", "b": "b", "m": "m", "f": "f", "v": "v", "a": "a", "æ": "a", "ɑ": "A", "ʌ": "V", "ɐ": "a#",
    "ɔ": "O", "ɒ": "0", "ə": "@", "ɚ": "3", "ɜ": "3", "ɛ": "E", "e": "e", "o": "o", "ʊ": "U", "u": "u",
    "i": "i", "ɪ": "I", "ᵻ": "I#", "y": "y", "w": "w", "s": "s", "z": "z", "j": "j", "ʃ": "S", "ʒ": "Z",
    "ɹ": "r", "r": "r", "ɾ": "t", "θ": "T", "ð": "D", "l": "l", "n": "n", "t": "t", "d": "d", "k": "k",
    "g": "g", "ɡ": "g", "ŋ": "N", "h": "h", "x": "x", "ʔ": "_",
}


class VoiceUnavailable(Exception):
    """The voice file or its config is missing, malformed, or not Piper's I/O signature: retrying will not help."""


class VoiceFailed(Exception):
    """The voice loaded but running it failed (a bad output, an onnxruntime error)."""


class _Audio(BaseModel):
    sample_rate: int = Field(gt=0)


class _Espeak(BaseModel):
    voice: str = Field(min_length=1)


class _Inference(BaseModel):
    noise_scale: float = 0.667
    length_scale: float = 1.0
    noise_w: float = 0.8


class PiperConfig(BaseModel):
    """The parts of a Piper `.onnx.json` this adapter reads (other keys are ignored)."""

    model_config = ConfigDict(extra="ignore")

    audio: _Audio
    espeak: _Espeak
    phoneme_id_map: dict[str, list[int]] = Field(min_length=1)
    inference: _Inference = _Inference()


@dataclass
class PiperVoice:
    """A loaded voice: its config and onnxruntime session; `load` raises VoiceUnavailable naming the problem."""

    path: Path
    sha256: str
    config: PiperConfig
    session: Any
    load_seconds: float

    @property
    def model_id(self) -> str:
        return f"{self.path.name}@{self.sha256[:12]}"

    @classmethod
    def load(cls, path: Path, sha256: str) -> PiperVoice:
        config_path = path.with_name(path.name + ".json")
        try:
            config = PiperConfig.model_validate(json.loads(config_path.read_text()))
        except (OSError, ValueError, ValidationError) as error:
            raise VoiceUnavailable(f"{config_path} is missing or not a Piper voice config: {error}") from error
        for symbol in (BOS, EOS, PAD):
            if symbol not in config.phoneme_id_map:
                raise VoiceUnavailable(f"{config_path}: phoneme_id_map has no {symbol!r}")
        import onnxruntime as ort

        started = time.perf_counter()
        try:
            session = ort.InferenceSession(str(path), providers=_providers(ort))
        except Exception as error:  # onnxruntime raises its own exception types for unreadable models
            raise VoiceUnavailable(f"{path} is not a loadable ONNX model: {error}") from error
        inputs = {i.name for i in session.get_inputs()}
        if not {"input", "input_lengths", "scales"} <= inputs:
            raise VoiceUnavailable(f"{path} has inputs {sorted(inputs)}: expected Piper's input, input_lengths, scales")
        return cls(path, sha256, config, session, load_seconds=time.perf_counter() - started)

    def ids(self, ipa: str) -> list[int]:
        """Piper's ids of one word's IPA: each known symbol then the pad; stress marks kept when the map has them."""
        table = self.config.phoneme_id_map
        out: list[int] = []
        for symbol in ipa:
            for value in table.get(symbol, []):
                out += [value, table[PAD][0]]
        return out

    def run(self, ids: list[int], length_scale: float, speaker: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(audio at the voice's rate, per-id durations or None) for one utterance."""
        inference = self.config.inference
        feeds = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray([inference.noise_scale, length_scale, inference.noise_w], dtype=np.float32),
        }
        if "sid" in {i.name for i in self.session.get_inputs()}:
            feeds["sid"] = np.asarray([speaker], dtype=np.int64)
        try:
            outputs = self.session.run(None, feeds)
        except Exception as error:  # onnxruntime's failures are its own types
            raise VoiceFailed(f"{self.model_id} failed: {error}") from error
        audio = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(audio)):
            raise VoiceFailed(f"{self.model_id} produced non-finite audio")
        durations = None
        if len(outputs) > 1:
            durations = np.asarray(outputs[1], dtype=np.float64).reshape(-1)
            if len(durations) != len(ids) or not np.all(np.isfinite(durations)) or (durations < 0).any():
                raise VoiceFailed(f"{self.model_id}: durations output has shape {np.shape(outputs[1])}, expected {len(ids)} values >= 0")
        return np.clip(audio, -1.0, 1.0), durations


def _providers(ort) -> list[str]:
    """CUDA when this onnxruntime build has it (onnxruntime-gpu on a GPU worker), else the CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


@dataclass(frozen=True)
class _Word:
    offset: int
    text: str
    ids: tuple[int, int]  # [first, end) into the utterance's ids
    symbols: tuple[tuple[str, int, int], ...]  # (IPA symbol, first id, end id)


def _utterances(ssml: str) -> list[tuple[list[tuple[int, str]], float]]:
    """The spoken words between <break>s, each run with the silence after it (s); other tags are dropped."""
    pieces, last = [], 0
    for match in _BREAK.finditer(ssml):
        pieces.append((last, match.start(), float(match.group(1)) / (1000.0 if match.group(2) == "ms" else 1.0)))
        last = match.end()
    pieces.append((last, len(ssml), 0.0))
    tokens = spoken_tokens(ssml, ssml=True)
    return [([t for t in tokens if start <= t[0] < stop], pause) for start, stop, pause in pieces]


def synthesize(voice: PiperVoice, ssml: str, *, length_scale: float, speaker: int = 0) -> tuple[Synthesis, bool]:
    """(speech at 24 kHz with word and phoneme timings, whether the timings are estimated) for SSML input."""
    table = voice.config.phoneme_id_map
    rate = voice.config.audio.sample_rate
    chunks: list[np.ndarray] = []
    words: list[WordTiming] = []
    phonemes: list[PhonemeTiming] = []
    estimated = False
    at = 0.0
    for tokens, pause in _utterances(ssml):
        ipa = {offset: ipa_phonemes(html.unescape(text), voice.config.espeak.voice) for offset, text in tokens}
        spoken = attach_punctuation(tokens, [0.0 if voice.ids(ipa[o]) else None for o, _ in tokens])
        ids, planned = list(table[BOS]) + list(table[PAD]), []
        for offset, text, _ in spoken:
            if planned:
                ids += voice.ids(WORD_GAP)
            first, symbols = len(ids), []
            for symbol in ipa[offset]:
                start = len(ids)
                ids += voice.ids(symbol)
                if symbol in _LENGTH and symbols:  # a length mark lengthens the phoneme before it
                    symbols[-1] = (symbols[-1][0], symbols[-1][1], len(ids))
                elif symbol not in _STRESS and len(ids) > start:  # a stress mark's ids open the next phoneme
                    symbols.append((symbol, symbols[-1][2] if symbols else first, len(ids)))
            planned.append(_Word(offset, text, (first, len(ids)), tuple(symbols)))
        ids += table[EOS]
        if planned:
            audio, durations = voice.run(ids, length_scale, speaker)
            estimated = estimated or durations is None
            weights = np.ones(len(ids)) if durations is None or durations.sum() <= 0 else durations
            edges = at + np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum() * len(audio) / rate
            words += [WordTiming(w.text, float(edges[w.ids[0]]), float(edges[w.ids[1]]), w.offset) for w in planned]
            phonemes += [
                PhonemeTiming(IPA_TO_MNEMONIC.get(symbol, symbol), float(edges[a]), float(edges[b]))
                for w in planned for symbol, a, b in w.symbols
            ]
            chunks.append(audio)
            at += len(audio) / rate
        if pause:
            chunks.append(np.zeros(int(round(pause * rate)), dtype=np.float32))
            at += len(chunks[-1]) / rate  # the silence as written, so later timings do not drift
    native = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    samples = resample(native, rate, SAMPLE_RATE)
    duration = len(samples) / SAMPLE_RATE

    def clamp(t: float) -> float:  # resampling may round the length down by a sample
        return min(t, duration)

    return Synthesis(
        samples=samples, sample_rate=SAMPLE_RATE,
        words=tuple(WordTiming(w.word, clamp(w.start_s), clamp(w.end_s), w.text_offset) for w in words),
        phonemes=tuple(PhonemeTiming(p.phoneme, clamp(p.start_s), clamp(p.end_s)) for p in phonemes if p.end_s > p.start_s),
    ), estimated
