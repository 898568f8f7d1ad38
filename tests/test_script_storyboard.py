"""Unit tests of the script kernel (`media/script.py`) and the scene planner (`media/storyboard.py`):
normalisation, pauses, emphasis, pronunciation overrides, SSML escaping, voice choice for non-Latin
text, scene splitting per route; and the mapping of the synthesiser's word timings back onto the script.
"""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET

import pytest

from avatar_assets.media.script import (
    MAX_PAUSE_MS,
    PARAGRAPH_PAUSE_MS,
    SENTENCE_PAUSE_MS,
    ScriptError,
    estimated_duration_s,
    normalise,
    parse_script,
    ssml_with_spans,
    to_ssml,
    voice_language,
)
from avatar_assets.media.storyboard import DEFAULT_PROMPTS, POSE_VARIANTS, WORDS_PER_SCENE, plan_scenes


def displays(parsed) -> list[str]:
    return [token.display for token in parsed.tokens]


def pauses(parsed) -> dict[str, int]:
    return {token.display: token.pause_after_ms for token in parsed.tokens if token.pause_after_ms}


# --------------------------------------------------------------------------- normalisation


def test_plain_text_is_kept_word_for_word():
    parsed = parse_script("Hello there, welcome to our show.")
    assert parsed.text == "Hello there, welcome to our show."
    assert displays(parsed) == ["Hello", "there,", "welcome", "to", "our", "show."]
    assert [t.spoken for t in parsed.tokens] == displays(parsed)
    assert parsed.cleaned == [] and parsed.word_count == 6


def test_unicode_is_composed_and_whitespace_collapsed():
    text, cleaned = normalise("  Cafe\u0301   au \t lait ,  s'il vous plait !  ")
    assert text == "Café au lait, s'il vous plait!"
    assert cleaned == []


def test_markup_is_removed_and_reported():
    text, cleaned = normalise('<speak><audio src="http://x/y.mp3"/>Hi <b>there</b></speak> 3 < 4 > 2')
    assert text == "Hi there 3 4 2"
    assert cleaned == ["removed 5 markup tag(s), e.g. '<speak>'", "removed stray '<' or '>' characters"]


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x0b", "\x1b", "\x7f", "\x85"])
def test_a_control_character_between_words_separates_them(char):
    text, cleaned = normalise(f"Hello{char}world")
    assert text == "Hello world"
    assert cleaned == ["removed 1 control character(s) or emoji"]


def test_invisible_format_characters_vanish_without_splitting_words():
    text, cleaned = normalise("co\u00adoperate zero\u200bwidth")  # soft hyphen, zero-width space
    assert text == "cooperate zerowidth"
    assert cleaned == ["removed 2 control character(s) or emoji"]


def test_emoji_and_their_modifiers_leave_nothing_behind():
    text, cleaned = normalise("I ❤️ it 👍🏽 and 👨‍👩‍👧 and 1️⃣ 🇫🇷 ✨!")
    # heart + VS16, thumbs + skin tone, man ZWJ woman ZWJ girl, keycap (VS16 + U+20E3), two flag letters, sparkles
    assert text == "I it and and 1!"
    assert cleaned == ["removed 14 control character(s) or emoji"]
    assert all(ord(c) < 128 for c in text)


def test_paragraphs_are_kept_and_get_a_longer_pause():
    parsed = parse_script("First paragraph here.\r\n\r\n\r\nSecond one\nstill second.")
    assert parsed.text == "First paragraph here.\n\nSecond one\nstill second."
    assert pauses(parsed) == {"here.": PARAGRAPH_PAUSE_MS, "second.": PARAGRAPH_PAUSE_MS}
    assert [len(s) for s in parsed.sentences] == [3, 4]


def test_non_latin_text_is_kept_not_cleaned():
    for script in ["Привет, друзья! Как дела?", "Καλημέρα κόσμε.", "שלום עולם.", "नमस्ते दुनिया।", "こんにちは世界。"]:
        parsed = parse_script(script)
        assert parsed.cleaned == [] and parsed.text == script


def test_a_script_with_nothing_speakable_is_refused_with_what_was_removed():
    with pytest.raises(ScriptError, match=r"no speakable words after cleaning \(removed 2 markup tag"):
        parse_script("<speak></speak>")
    with pytest.raises(ScriptError, match="no speakable words"):
        parse_script("🎉🎉 [pause 500ms] **")


def test_too_many_words_are_refused():
    with pytest.raises(ScriptError, match="script has 901 words; the limit is 900"):
        parse_script("word " * 901)
    assert parse_script("word " * 900).word_count == 900


# --------------------------------------------------------------------------- pauses


def test_sentence_ends_get_a_short_pause():
    parsed = parse_script("One. Two! Three? Four… Five")
    assert pauses(parsed) == {"One.": SENTENCE_PAUSE_MS, "Two!": SENTENCE_PAUSE_MS, "Three?": SENTENCE_PAUSE_MS,
                              "Four…": SENTENCE_PAUSE_MS, "Five": PARAGRAPH_PAUSE_MS}
    assert [displays_ for displays_ in ([t.display for t in s] for s in parsed.sentences)] == [
        ["One."], ["Two!"], ["Three?"], ["Four…"], ["Five"]]


@pytest.mark.parametrize("mark, ms", [("[pause 500ms]", 500), ("[pause 1s]", 1000), ("[PAUSE 1.2s]", 1200),
                                      ("[pause 0.3 s]", 300), ("[pause 80ms]", 80)])
def test_pause_marks_become_breaks_after_the_previous_word(mark, ms):
    parsed = parse_script(f"Wait for it {mark} now go")
    assert displays(parsed) == ["Wait", "for", "it", "now", "go"]
    assert parsed.tokens[2].pause_after_ms == ms
    assert f'it <break time="{ms}ms"/> now' in to_ssml(parsed.sentences)
    assert "pause" not in to_ssml(parsed.sentences)


def test_long_pauses_are_capped_and_reported():
    parsed = parse_script("Wait [pause 60s] done.")
    assert parsed.tokens[0].pause_after_ms == MAX_PAUSE_MS
    assert parsed.cleaned == [f"pause of 60000 ms shortened to {MAX_PAUSE_MS} ms"]


def test_a_pause_after_a_sentence_end_keeps_the_longer_one():
    parsed = parse_script("Done. [pause 100ms] Next. [pause 900ms] Last words.")
    assert pauses(parsed) == {"Done.": SENTENCE_PAUSE_MS, "Next.": 900, "words.": PARAGRAPH_PAUSE_MS}


def test_estimated_duration_counts_words_and_pauses():
    parsed = parse_script("One two three. [pause 1s] Four five six.")
    assert estimated_duration_s(parsed, 150) == pytest.approx(6 / 150 * 60 + 1.0 + 0.6)


# --------------------------------------------------------------------------- emphasis


def test_single_and_multi_word_emphasis():
    parsed = parse_script("This is *very important* news, *truly*, and *this*.")
    flagged = [(t.display, t.emphasis) for t in parsed.tokens]
    assert flagged == [("This", False), ("is", False), ("very", True), ("important", True), ("news,", False),
                       ("truly,", True), ("and", False), ("this.", True)]
    ssml = to_ssml(parsed.sentences)
    assert "<emphasis>very</emphasis> <emphasis>important</emphasis>" in ssml and "*" not in ssml
    assert parsed.cleaned == []


def test_unmatched_asterisks_are_not_read_aloud():
    parsed = parse_script("Say *unclosed please, ok ** done, 5*3 stays.")
    assert displays(parsed) == ["Say", "unclosed", "please,", "ok", "done,", "5*3", "stays."]
    assert not any(t.emphasis for t in parsed.tokens)
    assert parsed.cleaned == ["removed 3 unmatched '*' (emphasis is *word* or *several words*)"]


# --------------------------------------------------------------------------- pronunciations


def test_pronunciation_overrides_change_what_is_said_not_what_is_shown():
    parsed = parse_script("Dagster runs on SQL, says dagster.", pronunciations={"Dagster": "dag stir", "sql": "sequel"})
    assert displays(parsed) == ["Dagster", "runs", "on", "SQL,", "says", "dagster."]
    assert [t.spoken for t in parsed.tokens] == ["dag stir", "runs", "on", "sequel,", "says", "dag stir."]
    assert parsed.word_count == 8  # words as spoken
    assert "dag stir runs on sequel," in to_ssml(parsed.sentences)


def test_pronunciation_values_are_escaped_never_markup():
    parsed = parse_script("Call ACME now.", pronunciations={"acme": '<audio src="x"/> & co'})
    ssml = to_ssml(parsed.sentences)
    assert "<audio" not in ssml and "&lt;audio src=\"x\"/&gt; &amp; co" in ssml
    ET.fromstring(ssml)  # still well-formed XML


# --------------------------------------------------------------------------- SSML


def test_ssml_escapes_user_text_and_is_well_formed():
    parsed = parse_script('Tom & Jerry say "5 is > 4" & \'quote\'.')
    ssml = to_ssml(parsed.sentences)
    root = ET.fromstring(ssml)
    assert root.tag == "speak"
    assert {element.tag for element in root.iter()} <= {"speak", "emphasis", "break"}
    assert "Tom &amp; Jerry" in ssml
    assert "".join(root.itertext()).split() == [t.spoken for t in parsed.tokens]


def test_ssml_spans_point_at_each_token_in_the_ssml():
    parsed = parse_script("A & *b c* [pause 500ms] <i>d</i> e. Next paragraph?\n\nYes!",
                          pronunciations={"e": "eee"})
    ssml, spans = ssml_with_spans(parsed.sentences)
    assert ssml == to_ssml(parsed.sentences)
    assert len(spans) == len(parsed.tokens)
    from xml.sax.saxutils import escape

    for token, (start, end) in zip(parsed.tokens, spans):
        assert ssml[start:end] == escape(token.spoken)
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)


# --------------------------------------------------------------------------- voice for the writing system


@pytest.mark.parametrize("text, voice", [
    ("Hello there, nice to meet you.", None),
    ("Café déjà vu, naïve façade.", None),
    ("Привет, друзья! Как дела?", "ru"),
    ("Καλημέρα κόσμε.", "el"),
    ("مرحبا بالعالم", "ar"),
    ("नमस्ते दुनिया", "hi"),
    ("こんにちは世界", "ja"),
    ("你好世界", "cmn"),
    ("안녕하세요", "ko"),
    ("Hello from Moscow, Привет!", None),  # mostly Latin: the English voice copes with one word
    ("12345 !!!", None),
])
def test_voice_language_follows_the_dominant_writing_system(text, voice):
    assert voice_language(text) == voice


# --------------------------------------------------------------------------- word timings back onto the script


@pytest.mark.parametrize("script", [
    "Hello — world, how are you?",
    "Tom & Jerry say hi.",
    "It costs 100% or $3.50 today.",
    "Wait... what?! Really - yes.",
    "Dagster is *really* great.",
])
def test_every_script_word_gets_a_timing_in_order(script):
    """espeak folds some tokens ("&", "—") into the word before; the mapping by text offset still gives
    each display word its own timing, in order, so captions never lose or shift a word."""
    from avatar_assets.contracts import Token
    from avatar_assets.media.timings import display_timings
    from avatar_assets.media.tts import synthesize

    parsed = parse_script(script, pronunciations={"dagster": "dag stir"})
    ssml, spans = ssml_with_spans(parsed.sentences)
    synthesis = synthesize(ssml, ssml=True)
    tokens = [Token(**vars(t)) for t in parsed.tokens]
    words = display_timings(tokens, synthesis.words, spans)
    assert [w.word for w in words] == displays(parsed)
    starts = [w.start_s for w in words]
    assert starts == sorted(starts)
    assert all(w.end_s > w.start_s for w in words)
    assert words[-1].end_s <= len(synthesis.samples) / synthesis.sample_rate + 1e-6
    assert words[-1].end_s - words[-1].start_s > 0.1  # the last word is a real word, not a leftover


# --------------------------------------------------------------------------- storyboard


def check_tiling(scenes, total: int) -> None:
    assert [s.index for s in scenes] == list(range(len(scenes)))
    assert scenes[0].tokens[0] == 0 and scenes[-1].tokens[1] == total
    for a, b in zip(scenes, scenes[1:]):
        assert a.tokens[1] == b.tokens[0]
    assert all(s.tokens[1] > s.tokens[0] for s in scenes)


def test_single_scene_is_one_mid_shot_of_the_neutral_avatar():
    [scene] = plan_scenes("single_scene", [30, 40, 50], [])
    assert (scene.tokens, scene.shot, scene.variant, scene.background_prompt) == ((0, 120), "mid", "neutral", DEFAULT_PROMPTS[0])


@pytest.mark.parametrize("route", ["multi_scene", "broll", "pose", "approval_gated"])
def test_multi_scene_routes_have_at_least_two_scenes(route):
    scenes = plan_scenes(route, [3, 4], ["one", "two", "three"])
    assert len(scenes) == 2
    assert [s.tokens for s in scenes] == [(0, 3), (3, 7)]  # on the sentence boundary
    assert [s.background_prompt for s in scenes] == ["one", "two"]
    with pytest.raises(ValueError, match=f"route {route} needs at least 2 scenes"):
        plan_scenes(route, [1], [])
    with pytest.raises(ValueError, match="at least one word"):
        plan_scenes(route, [], [])


def test_scene_count_grows_with_the_words():
    lengths = [11] * 10  # 110 words
    scenes = plan_scenes("multi_scene", lengths, [])
    assert len(scenes) == 110 // WORDS_PER_SCENE
    check_tiling(scenes, 110)
    assert all(s.tokens[0] % 11 == 0 for s in scenes)  # cuts on sentence starts
    assert [s.shot for s in scenes] == ["mid", "close_up"] * 2 + ["mid"]
    assert [s.background_prompt for s in scenes] == [*DEFAULT_PROMPTS, DEFAULT_PROMPTS[0]]


def test_broll_alternates_avatar_and_cutaway():
    scenes = plan_scenes("broll", [10] * 9, ["studio", "city"])
    assert [s.shot for s in scenes] == ["mid", "broll", "mid", "broll", "mid"]
    assert [s.background_prompt for s in scenes] == ["studio", "city", "studio", "city", "studio"]
    assert {s.variant for s in scenes} == {"neutral"}


def test_pose_route_cycles_through_character_sheet_variants():
    scenes = plan_scenes("pose", [10] * 14, [])
    assert len(scenes) == 7
    assert [s.variant for s in scenes] == [*POSE_VARIANTS, *POSE_VARIANTS[:2]]
    assert "broll" not in {s.shot for s in scenes}
    assert {s.variant for s in plan_scenes("multi_scene", [10] * 14, [])} == {"neutral"}


def test_one_long_sentence_is_split_evenly_inside_it():
    scenes = plan_scenes("multi_scene", [50], [])
    assert [s.tokens for s in scenes] == [(0, 17), (17, 33), (33, 50)]


def test_short_sentences_before_a_long_one_do_not_exhaust_the_cut_points():
    # Greedy nearest-boundary picking used to take the last boundary for the second scene and crash on
    # the third ("min() arg is an empty sequence").
    lengths = [1, 1, 1, 57, 10]
    scenes = plan_scenes("multi_scene", lengths, [])
    assert len(scenes) == 4
    check_tiling(scenes, 70)
    boundaries = {0, 1, 2, 3, 60}
    assert {s.tokens[0] for s in scenes} <= boundaries


def test_any_sentence_lengths_tile_the_script():
    rng = random.Random(7)
    for _ in range(500):
        lengths = [rng.choice([1, 1, 2, 3, 5, 8, 13, 30, 60]) for _ in range(rng.randint(1, 12))]
        total = sum(lengths)
        for route in ["single_scene", "multi_scene", "broll", "pose", "approval_gated"]:
            if route != "single_scene" and total < 2:
                continue
            scenes = plan_scenes(route, lengths, [])
            check_tiling(scenes, total)
            expected = 1 if route == "single_scene" else min(total, max(2, -(-total // WORDS_PER_SCENE)))
            assert len(scenes) == expected, (route, lengths)
            starts = [0]
            for length in lengths[:-1]:
                starts.append(starts[-1] + length)
            if len(starts) >= len(scenes):
                assert {s.tokens[0] for s in scenes} <= set(starts), (route, lengths)


def test_the_text_of_each_scene_is_its_words():
    parsed = parse_script("One two three. Four five six seven. Eight.")
    scenes = plan_scenes("multi_scene", [len(s) for s in parsed.sentences], [])
    words = [t.display for t in parsed.tokens]
    texts = [" ".join(words[s.tokens[0]:s.tokens[1]]) for s in scenes]
    assert " ".join(texts) == "One two three. Four five six seven. Eight."
    assert re.fullmatch(r"One two three\.", texts[0])
