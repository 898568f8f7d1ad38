"""Piper-format voices at the media level: the ids a voice is given, the breaks, the durations' checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avatar_assets.media import piper
from avatar_assets.media.model_files import file_sha256
from tests.media.tiny_piper import PHONEME_ID_MAP, SAMPLE_RATE, save_tiny_piper


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> piper.PiperVoice:
    path = save_tiny_piper(tmp_path_factory.mktemp("piper") / "voice.onnx")
    return piper.PiperVoice.load(path, file_sha256(path))


def ids_of(symbols: str) -> list[int]:
    return [PHONEME_ID_MAP[s][0] for s in symbols]


@pytest.fixture
def seen(monkeypatch) -> list[list[int]]:
    """The ids of every model call, in order."""
    calls: list[list[int]] = []
    real = piper.PiperVoice.run

    def spy(self, ids, length_scale, speaker):
        calls.append(list(ids))
        return real(self, ids, length_scale, speaker)

    monkeypatch.setattr(piper.PiperVoice, "run", spy)
    return calls


def test_ids_are_bos_pad_interleaved_words_and_eos(voice, seen):
    synthesis, estimated = piper.synthesize(voice, '<speak>be <break time="250ms"/> me</speak>', length_scale=1.0)
    pad = PHONEME_ID_MAP["_"][0]

    def padded(ipa: str) -> list[int]:
        return [i for symbol in ids_of(ipa) for i in (symbol, pad)]

    # espeak-ng says "be" /bˈiː/ and "me" /mˈiː/: each symbol (stress and length marks too) then the pad.
    assert seen == [[*ids_of("^"), pad, *padded("bˈiː"), *ids_of("$")], [*ids_of("^"), pad, *padded("mˈiː"), *ids_of("$")]]
    assert not estimated
    assert [w.word for w in synthesis.words] == ["be", "me"]
    assert synthesis.words[1].start_s - synthesis.words[0].end_s >= 0.25  # the break is silence
    assert [p.phoneme for p in synthesis.phonemes] == ["b", "i", "m", "i"]  # espeak-ng mnemonics for the visemes
    assert synthesis.sample_rate == 24000


def test_words_in_one_piece_are_joined_by_the_space_phoneme(voice, seen):
    piper.synthesize(voice, "<speak>be me</speak>", length_scale=1.0)
    [ids] = seen
    assert ids.count(PHONEME_ID_MAP[" "][0]) == 1


def test_durations_that_do_not_match_the_ids_fail_the_run(voice):
    class Session:
        def get_inputs(self):
            return voice.session.get_inputs()

        def run(self, _, feeds):
            return [np.zeros((1, 1, 512), np.float32), np.ones((1, 2), np.float32)]

    broken = piper.PiperVoice(voice.path, voice.sha256, voice.config, Session(), 0.0)
    with pytest.raises(piper.VoiceFailed, match="durations output has shape"):
        broken.run([1, 0, 2], 1.0, 0)


def test_a_config_without_the_pad_is_refused(tmp_path: Path):
    path = save_tiny_piper(tmp_path / "voice.onnx")
    path.with_name("voice.onnx.json").write_text(
        '{"audio": {"sample_rate": %d}, "espeak": {"voice": "en-us"}, "phoneme_id_map": {"^": [1], "$": [2]}}' % SAMPLE_RATE
    )
    with pytest.raises(piper.VoiceUnavailable, match="phoneme_id_map has no '_'"):
        piper.PiperVoice.load(path, file_sha256(path))
