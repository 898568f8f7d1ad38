import re
import threading

import numpy as np
import pytest

from avatar_assets.media.audio import LoadedAudio, frame_energy_db, integrated_lufs, normalize_loudness
from avatar_assets.media.tts import (
    SAMPLE_RATE,
    Synthesis,
    native_sample_rate,
    pitch_for_f0,
    synthesize,
    voice_for_f0,
)
from avatar_assets.media.voice import analyse_voice

SENTENCES = "Hello world, this is a test. The second sentence follows here!"
FIFTY_WORDS = " ".join(
    (
        "The quick brown fox jumps over the lazy dog while the small cat watches from a sunny window. "
        "Every morning the baker opens his shop, and people line up for fresh bread and warm coffee. "
        "Later in the day, children play in the park until their parents call them home for dinner tonight."
    ).split()[:50]
)


def rms_db(samples: np.ndarray, sr: int, start_s: float, end_s: float) -> float:
    part = samples[int(start_s * sr) : int(end_s * sr)].astype(np.float64)
    return 10 * np.log10(np.mean(part**2) + 1e-12)


def test_native_rate_and_output_format():
    assert native_sample_rate() == 22050
    synth = synthesize(SENTENCES)
    assert isinstance(synth, Synthesis)
    assert synth.sample_rate == SAMPLE_RATE == 24000
    assert synth.samples.dtype == np.float32 and synth.samples.ndim == 1
    assert np.max(np.abs(synth.samples)) <= 1.0
    assert 2.0 < len(synth.samples) / synth.sample_rate < 6.0


def test_word_timings_are_monotonic_and_match_the_text():
    synth = synthesize(SENTENCES)
    duration = len(synth.samples) / synth.sample_rate
    assert [w.word for w in synth.words] == SENTENCES.split()
    assert [w.text_offset for w in synth.words] == [m.start() for m in re.finditer(r"\S+", SENTENCES)]
    for word, following in zip(synth.words, synth.words[1:]):
        assert 0 <= word.start_s < word.end_s <= following.start_s
    assert synth.words[-1].end_s <= duration + 1e-6
    # Each word span holds speech: well above the level of the whole clip's quietest frames.
    for word in synth.words:
        assert rms_db(synth.samples, synth.sample_rate, word.start_s, word.end_s) > -40


def test_numbers_punctuation_and_unicode_map_to_input_words():
    text = "Café naïve — 123 apples, e.g. state-of-the-art!"
    synth = synthesize(text)
    words = [w.word for w in synth.words]
    assert " ".join(words) == text  # the bare dash rides along with its neighbour
    assert words[:2] == ["Café", "naïve —"]
    three_digits = synth.words[2]
    assert three_digits.word == "123" and three_digits.end_s - three_digits.start_s > 0.6  # "one hundred..."
    starts = [w.start_s for w in synth.words]
    assert starts == sorted(starts)


def test_ssml_break_is_a_gap_in_timings_and_in_the_audio():
    text = 'Hello <break time="1s"/> world, <emphasis>really</emphasis> fine.'
    synth = synthesize(text, ssml=True)
    assert [w.word for w in synth.words] == ["Hello", "world,", "really", "fine."]
    assert [w.text_offset for w in synth.words] == [text.index(w) for w in ("Hello", "world", "really", "fine")]
    hello, world = synth.words[0], synth.words[1]
    gap = world.start_s - hello.end_s
    assert gap >= 0.8
    sr = synth.sample_rate
    speech_level = rms_db(synth.samples, sr, hello.start_s, hello.end_s)
    assert rms_db(synth.samples, sr, hello.end_s + 0.05, world.start_s - 0.05) < speech_level - 40


def test_ssml_break_shorter_than_one_second():
    plain = synthesize("One two")
    with_break = synthesize('One <break time="500ms"/> two', ssml=True)
    gap_plain = plain.words[1].start_s - plain.words[0].end_s
    gap_break = with_break.words[1].start_s - with_break.words[0].end_s
    assert gap_break - gap_plain == pytest.approx(0.5, abs=0.15)


def test_ssml_entities_and_speak_wrapper():
    text = "<speak>Salt &amp; pepper. <break time='300ms'/>Done.</speak>"
    synth = synthesize(text, ssml=True)
    assert " ".join(w.word for w in synth.words) == "Salt & pepper. Done."


def test_fifty_words_get_one_timing_each():
    """(Their synthesis speed is `python -m bench --only kernels`' figure, not a timed assertion.)"""
    assert len(FIFTY_WORDS.split()) == 50
    synth = synthesize(FIFTY_WORDS)
    # One timing per word, although espeak voices "in the" as a single word.
    assert [w.word for w in synth.words] == FIFTY_WORDS.split()


def test_rate_changes_duration():
    slow = synthesize(FIFTY_WORDS, rate_wpm=120)
    fast = synthesize(FIFTY_WORDS, rate_wpm=240)
    assert len(slow.samples) > 1.6 * len(fast.samples)


def test_empty_text_gives_no_words():
    synth = synthesize("")
    assert synth.words == ()


@pytest.mark.parametrize(
    "kwargs",
    [{"voice": "no-such-voice"}, {"pitch": 120}, {"pitch_range": -1}, {"rate_wpm": 20}],
)
def test_invalid_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        synthesize("hello", **kwargs)


def test_concurrent_calls_are_serialised():
    expected = synthesize(SENTENCES)
    results: list = []

    def work() -> None:
        results.append(synthesize(SENTENCES))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for synth in results:
        # espeak-ng's output length varies by a few samples between runs, so compare loosely.
        assert len(synth.samples) == pytest.approx(len(expected.samples), rel=0.01)
        assert [w.word for w in synth.words] == SENTENCES.split()
        for got, want in zip(synth.words, expected.words):
            assert got.start_s == pytest.approx(want.start_s, abs=0.02)


@pytest.mark.parametrize("target", [90.0, 110.0, 140.0, 170.0, 200.0, 250.0])
def test_pitch_for_f0_lands_within_15_percent(target):
    text = "Please call Stella. Ask her to bring these things with her from the store."
    voice = voice_for_f0(target)
    synth = synthesize(text, voice=voice, pitch=pitch_for_f0(target, voice))
    audio = LoadedAudio(synth.samples, synth.sample_rate, 1, synth.sample_rate, "FLOAT", 0.0)
    assert analyse_voice(audio).median_f0_hz == pytest.approx(target, rel=0.15)


def test_pitch_for_f0_is_monotonic_and_clamped():
    pitches = [pitch_for_f0(f) for f in (60, 80, 100, 120, 150, 170, 400)]
    assert pitches == sorted(pitches)
    assert pitches[0] == 0 and pitches[-1] == 99
    assert voice_for_f0(120) == "en-us" and voice_for_f0(220, "en") == "en+f3"
    with pytest.raises(ValueError):
        pitch_for_f0(120, "en-us+m3")


def test_espeak_speech_normalises_to_target_loudness():
    synth = synthesize(FIFTY_WORDS)
    for target in (-23.0, -16.0):
        out = normalize_loudness(synth.samples, synth.sample_rate, target_lufs=target)
        assert integrated_lufs(out, synth.sample_rate) == pytest.approx(target, abs=0.5)
        assert frame_energy_db(out, synth.sample_rate).max() < 0
