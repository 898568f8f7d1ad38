"""A tiny random-weight voice with Piper's I/O signature, exported with torch.onnx the way Piper exports
its voices, and its `.onnx.json`. Each phoneme id becomes (id % 3 + 1) x length_scale frames of HOP samples
of noise at a level set by the id (the pad's is low), so the audio's length follows the ids; the durations variant also returns those frame counts as
a second output. Nothing is downloaded; the speech it makes is noise."""

from __future__ import annotations

import json
from pathlib import Path

HOP = 512
SAMPLE_RATE = 22050
SPECIAL = ["_", "^", "$", " ", "!", "'", "(", ")", ",", "-", ".", ":", ";", "?"]
IPA = list("abcdefhijklmnopqrstuvwxyzæçðøħŋœǀǁǂǃɐɑɒɓɔɕɖɗɘəɚɛɜɞɟɠɡɢɣɤɥɦɧɨɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾʀʁʂʃʄʈʉʊʋʌʍʎʏʐʑʒʔʕʘʙʛʜʝʟʡʢʲˈˌːˑ˞βθχᵻⱱ")
PHONEME_ID_MAP = {symbol: [i] for i, symbol in enumerate(SPECIAL + IPA)}


def save_tiny_piper(path: Path, *, durations: bool = True, symbols: int | None = None, seed: int = 0) -> Path:
    """Write `path` (.onnx) and `path.json`; `symbols` smaller than the map makes a voice that raises at run time
    (its embedding cannot look up the higher ids)."""
    import torch

    torch.manual_seed(seed)

    class TinyVoice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(symbols or len(PHONEME_ID_MAP), 8)
            self.frames = torch.nn.Linear(8, HOP)

        def forward(self, input, input_lengths, scales):  # noqa: A002 - Piper's input names
            noise, length, noise_w = scales[0], scales[1], scales[2]
            level = 0.02 + 0.3 * (input[0] % 5).float().unsqueeze(1) / 4  # loud and quiet ids, as a VAD expects of speech
            frames = torch.tanh(self.frames(self.embedding(input[0]))) * level * (input_lengths[0] > 0).float()
            frames = frames * (1.0 + 0.0 * noise * noise_w)
            counts = torch.clamp(torch.round((input[0] % 3 + 1).float() * length), min=1).long()
            audio = torch.repeat_interleave(frames, counts, dim=0).reshape(1, 1, -1)
            return (audio, counts.float().reshape(1, -1)) if durations else audio

    outputs = ["output", "durations"] if durations else ["output"]
    axes = {"input": {1: "phonemes"}, "output": {2: "samples"}, **({"durations": {1: "phonemes"}} if durations else {})}
    example = (torch.tensor([[1, 3, 0, 3, 2]]), torch.tensor([5]), torch.tensor([0.667, 1.0, 0.8]))
    torch.onnx.export(TinyVoice().eval(), example, str(path), input_names=["input", "input_lengths", "scales"],
                      output_names=outputs, dynamic_axes=axes, dynamo=False, opset_version=17)
    config = {"audio": {"sample_rate": SAMPLE_RATE, "quality": "x_low"}, "espeak": {"voice": "en-us"},
              "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
              "phoneme_type": "espeak", "phoneme_id_map": PHONEME_ID_MAP, "num_symbols": len(PHONEME_ID_MAP),
              "num_speakers": 1}
    path.with_name(path.name + ".json").write_text(json.dumps(config, ensure_ascii=False))
    return path
