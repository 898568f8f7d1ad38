import re

import pytest

from avatar_assets.media.captions import Cue, cues, to_srt, to_vtt
from avatar_assets.media.tts import WordTiming, synthesize


def timed(text: str, word_s: float = 0.3, gap_s: float = 0.05, start_s: float = 0.0) -> list[WordTiming]:
    words, t, offset = [], start_s, 0
    for word in text.split():
        offset = text.index(word, offset)
        words.append(WordTiming(word, t, t + word_s, offset))
        offset += len(word)
        t += word_s + gap_s
    return words


def test_cues_break_at_sentence_ends():
    result = cues(timed("Hello there. How are you? Fine!"))
    assert [c.text for c in result] == ["Hello there.", "How are you?", "Fine!"]
    assert result[0] == Cue(0.0, pytest.approx(0.65), "Hello there.")
    assert all(a.end_s <= b.start_s for a, b in zip(result, result[1:]))


def test_cues_respect_max_chars():
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    result = cues(timed(text, word_s=0.1, gap_s=0.0), max_chars=20)
    assert all(len(c.text) <= 20 for c in result)
    assert " ".join(c.text for c in result) == text
    assert [c.text for c in result][:2] == ["one two three four", "five six seven eight"]


def test_cues_respect_max_duration():
    result = cues(timed("a b c d e f g h i j", word_s=0.9, gap_s=0.1), max_duration_s=2.0)
    assert [c.text for c in result] == ["a b", "c d", "e f", "g h", "i j"]
    assert all(c.end_s - c.start_s <= 2.0 for c in result)


def test_cues_split_at_long_pauses_and_keep_overlong_words():
    words = timed("before pause") + timed("after", start_s=3.0)
    assert [c.text for c in cues(words)] == ["before pause", "after"]
    long_word = "Pneumonoultramicroscopicsilicovolcanoconiosis"
    assert [c.text for c in cues(timed(f"a {long_word} b"), max_chars=20)] == ["a", long_word, "b"]
    assert cues([]) == []


def test_srt_format():
    srt = to_srt(timed("Hello there. Bye now.", word_s=0.5, gap_s=0.1234))
    assert srt == (
        "1\n00:00:00,000 --> 00:00:01,123\nHello there.\n\n"
        "2\n00:00:01,247 --> 00:00:02,370\nBye now.\n"
    )


def test_vtt_format_and_escaping():
    words = [
        WordTiming("Salt", 3723.5, 3724.0, 0),
        WordTiming("&", 3724.0, 3724.2, 5),
        WordTiming("<pepper>", 3724.2, 3725.0, 7),
    ]
    vtt = to_vtt(words)
    assert vtt == "WEBVTT\n\n01:02:03.500 --> 01:02:05.000\nSalt &amp; &lt;pepper&gt;\n"


def test_captions_from_real_synthesis():
    text = (
        "Welcome to the studio. Today we will build an avatar that speaks clearly, "
        "with captions that follow every word."
    )
    synth = synthesize(text)
    result = cues(synth.words)
    assert " ".join(c.text for c in result) == text
    assert result[0].text == "Welcome to the studio."
    for cue in result:
        assert len(cue.text) <= 42 and 0 < cue.end_s - cue.start_s <= 4.0
    assert all(a.end_s <= b.start_s for a, b in zip(result, result[1:]))
    assert result[-1].end_s <= len(synth.samples) / synth.sample_rate + 1e-6
    stamp = r"\d\d:\d\d:\d\d[,.]\d\d\d"
    assert len(re.findall(rf"{stamp} --> {stamp}", to_srt(synth.words))) == len(result)
    assert to_vtt(synth.words).startswith("WEBVTT\n\n00:00:00.")
