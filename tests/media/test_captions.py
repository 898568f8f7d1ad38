import re
from dataclasses import replace

import pysubs2
import pytest

from avatar_assets.media.captions import FONT_FAMILY, CaptionLook, Cue, caption_top, cues, to_ass, to_srt, to_vtt
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


# --------------------------------------------------------------------------- styled captions (ASS)

KARAOKE = CaptionLook(font_size=72, position="bottom", text_colour="#FFFFFF", highlight_colour="#FFD400",
                      background_box=True, word_highlight=True)
KF = re.compile(r"\{\\kf(\d+)\}")
PAUSE = re.compile(r"\{\\k(\d+)\}")


def test_ass_follows_the_style_and_the_frame():
    subs = pysubs2.SSAFile.from_string(to_ass(timed("Hello there. Bye now."), KARAOKE, (720, 1280)))
    assert (subs.info["PlayResX"], subs.info["PlayResY"], subs.info["WrapStyle"]) == ("720", "1280", "2")
    style = subs.styles["Caption"]
    assert style.fontname == FONT_FAMILY and style.bold and style.fontsize == round(72 * 720 / 1080)
    assert (style.primarycolor, style.secondarycolor) == (pysubs2.Color(255, 212, 0), pysubs2.Color(255, 255, 255))
    assert style.borderstyle == 4 and style.alignment == pysubs2.Alignment.TOP_CENTER
    assert [e.plaintext for e in subs.events] == ["Hello there.", "Bye now."]
    assert all(e.style == "Caption" for e in subs.events)
    plain = pysubs2.SSAFile.from_string(to_ass(timed("Hello there."), replace(KARAOKE, word_highlight=False,
                                                                            background_box=False), (720, 1280)))
    assert plain.styles["Caption"].primarycolor == pysubs2.Color(255, 255, 255)
    assert plain.styles["Caption"].borderstyle == 1 and "\\k" not in plain.events[0].text


def test_karaoke_tags_add_up_to_the_word_durations():
    synth = synthesize("Welcome to the studio. Today we will build an avatar that speaks clearly, with captions "
                       "that follow every word.")
    subs = pysubs2.SSAFile.from_string(to_ass(synth.words, KARAOKE, (1080, 1920)))
    kf = [int(cs) for event in subs.events for cs in KF.findall(event.text)]
    assert len(kf) == len(synth.words)
    spoken = sum(w.end_s - w.start_s for w in synth.words)
    assert abs(sum(kf) / 100 - spoken) <= 0.01 * len(synth.words)
    for event in subs.events:  # words and pauses tile each caption, to the centisecond
        tagged = sum(int(cs) for cs in KF.findall(event.text) + PAUSE.findall(event.text))
        assert tagged * 10 == event.end - event.start
    assert " ".join(e.plaintext.replace("\n", " ") for e in subs.events) == " ".join(w.word for w in synth.words)


def test_long_captions_are_wrapped_inside_the_frame_and_tags_are_not_injected():
    words = timed("Supercalifragilistic words {\\pos(0,0)} wrap onto two lines here", word_s=0.2, gap_s=0.0)
    subs = pysubs2.SSAFile.from_string(to_ass(words, KARAOKE, (360, 640), max_chars=80))
    [event] = subs.events
    assert "\\N" in event.text
    assert "\\pos" not in event.text and "(/pos(0,0))" in event.plaintext  # a word is text, never a tag
    assert "{" not in KF.sub("", PAUSE.sub("", event.text))


@pytest.mark.parametrize(("size", "bottom"), [((1080, 1920), 0.84), ((1920, 1080), 0.93), ((1080, 1080), 0.93)])
def test_caption_top_places_a_block_in_its_band(size, bottom):
    w, h = size
    block = (400, 100)
    assert caption_top(size, block, "top") == round(0.08 * h)
    assert caption_top(size, block, "bottom") == round(bottom * h) - 100
    assert caption_top(size, block, "middle") == (h - 100) // 2
    assert caption_top(size, block, "auto") == caption_top(size, block, "bottom")
    # A platform's own caption-safe band, e.g. for a rendition: the same positions inside it.
    assert caption_top(size, block, "bottom", band=(0.1, 0.7)) == round(0.7 * h) - 100
    assert caption_top(size, block, "top", band=(0.1, 0.7)) == round(0.1 * h)


def test_auto_moves_to_the_top_where_the_bottom_covers_the_mouth():
    size, block = (1080, 1920), (600, 120)
    low = caption_top(size, block, "bottom")
    mouth = (500, low + 20, 80, 40)
    assert caption_top(size, block, "auto", avoid=[mouth]) == round(0.08 * 1920)
    assert caption_top(size, block, "auto", avoid=[(10, low + 20, 80, 40)]) == low  # beside the caption: stays
    assert caption_top(size, block, "bottom", avoid=[mouth]) == low  # an explicit band is kept
    with pytest.raises(ValueError, match="left"):
        caption_top(size, block, "left")
