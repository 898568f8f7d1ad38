"""Script text to speakable tokens: normalisation, our small markup, pronunciation overrides.

Users write plain text. Two marks are understood: `[pause 500ms]` / `[pause 1s]` (at most 1.5 s) and
`*emphasis*`. Anything that looks like HTML or SSML is removed, never passed to the synthesiser, so a
script cannot inject markup; control characters and emoji are dropped. Each removal is reported.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

MAX_PAUSE_MS = 1500
SENTENCE_PAUSE_MS = 250
PARAGRAPH_PAUSE_MS = 600

_TAG = re.compile(r"</?[A-Za-z!?][^<>]*>")
_PAUSE = re.compile(r"\[pause\s+(\d+(?:\.\d+)?)\s*(ms|s)\]", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*$")
# `*one word*` or `*several words*`: asterisks hugging text, not part of a word on either side.
_EMPHASIS = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]*?[^\s*])\*(?![\w*])")
_EMPHASIS_MARK = "\x01"  # control characters are gone by now, so this one cannot come from the user


class ScriptError(ValueError):
    """The script cannot be spoken; the message says why."""


@dataclass(frozen=True)
class ScriptToken:
    display: str
    spoken: str
    emphasis: bool = False
    pause_after_ms: int = 0


@dataclass(frozen=True)
class ParsedScript:
    text: str
    sentences: list[list[ScriptToken]]
    cleaned: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> list[ScriptToken]:
        return [token for sentence in self.sentences for token in sentence]

    @property
    def word_count(self) -> int:
        return sum(len(token.spoken.split()) for token in self.tokens)


def _is_dropped_char(char: str) -> bool:
    category = unicodedata.category(char)
    if char in "\n\t ":
        return False
    if category.startswith("C"):  # control, format, surrogate, private use, unassigned
        return True
    code = ord(char)
    # Emoji and their leftovers: variation selectors (the U+FE0F of "❤️") and the keycap mark would
    # otherwise stay behind as invisible "words" once the symbol itself is gone.
    return (category == "So" or 0x1F000 <= code <= 0x1FAFF or 0xFE00 <= code <= 0xFE0F
            or 0xE0100 <= code <= 0xE01EF or code == 0x20E3)


def _cleaned_char(char: str) -> str:
    """Dropped characters vanish; a control character (NUL, BEL, CR...) separates words like a space."""
    if not _is_dropped_char(char):
        return char
    return " " if unicodedata.category(char) == "Cc" else ""


def normalise(raw: str) -> tuple[str, list[str]]:
    cleaned = []
    text = unicodedata.normalize("NFC", raw)
    tags = _TAG.findall(text)
    if tags:
        cleaned.append(f"removed {len(tags)} markup tag(s), e.g. {tags[0][:40]!r}")
        text = _TAG.sub(" ", text)
    if "<" in text or ">" in text:
        cleaned.append("removed stray '<' or '>' characters")
        text = text.replace("<", " ").replace(">", " ")
    dropped = [c for c in text if _is_dropped_char(c)]
    if dropped:
        cleaned.append(f"removed {len(dropped)} control character(s) or emoji")
        text = "".join(_cleaned_char(c) for c in text)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    text = re.sub(r" +([.,!?;:])", r"\1", text)
    text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
    return text, cleaned


def parse_script(raw: str, *, pronunciations: dict[str, str] | None = None, max_words: int = 900) -> ParsedScript:
    text, cleaned = normalise(raw)
    overrides = {k.lower(): v for k, v in (pronunciations or {}).items()}
    sentences: list[list[ScriptToken]] = []
    current: list[ScriptToken] = []
    stray = 0
    for paragraph in text.split("\n\n"):
        pieces = _PAUSE.split(paragraph)
        # split() interleaves text, number, unit, text, ...
        for index in range(0, len(pieces), 3):
            marked = _EMPHASIS.sub(lambda m: " ".join(_EMPHASIS_MARK + w for w in m.group(1).split()), pieces[index])
            for word in marked.split():
                emphasis = word.startswith(_EMPHASIS_MARK)
                display = word.removeprefix(_EMPHASIS_MARK)
                if display.startswith("*") or display.endswith("*"):  # an unmatched mark is not read aloud
                    stray += len(display) - len(display.strip("*"))
                    display = display.strip("*")
                if not display:
                    continue
                lead, bare, trail = re.fullmatch(r"(\W*)(.*?)(\W*)", display).groups()
                spoken = f"{lead}{overrides[bare.lower()]}{trail}" if bare.lower() in overrides else display
                current.append(ScriptToken(display=display, spoken=spoken, emphasis=emphasis))
                if _SENTENCE_END.search(display):
                    current[-1] = _with_pause(current[-1], SENTENCE_PAUSE_MS)
                    sentences.append(current)
                    current = []
            if index + 2 < len(pieces):
                amount, unit = float(pieces[index + 1]), pieces[index + 2].lower()
                pause = int(amount * (1000 if unit == "s" else 1))
                if pause > MAX_PAUSE_MS:
                    cleaned.append(f"pause of {pause} ms shortened to {MAX_PAUSE_MS} ms")
                    pause = MAX_PAUSE_MS
                target = current or (sentences[-1] if sentences else None)
                if target:
                    target[-1] = _with_pause(target[-1], pause)
        if current:
            sentences.append(current)
            current = []
        if sentences:
            sentences[-1][-1] = _with_pause(sentences[-1][-1], PARAGRAPH_PAUSE_MS)
    if stray:
        cleaned.append(f"removed {stray} unmatched '*' (emphasis is *word* or *several words*)")
    parsed = ParsedScript(text=text, sentences=sentences, cleaned=cleaned)
    if not parsed.tokens:
        raise ScriptError("script has no speakable words after cleaning" + (f" ({'; '.join(cleaned)})" if cleaned else ""))
    if parsed.word_count > max_words:
        raise ScriptError(f"script has {parsed.word_count} words; the limit is {max_words}")
    return parsed


def _with_pause(token: ScriptToken, pause_ms: int) -> ScriptToken:
    return ScriptToken(token.display, token.spoken, token.emphasis, max(token.pause_after_ms, pause_ms))


def to_ssml(sentences: list[list[ScriptToken]]) -> str:
    """SSML built from escaped words: user text never reaches the synthesiser as markup."""
    return ssml_with_spans(sentences)[0]


def ssml_with_spans(sentences: list[list[ScriptToken]]) -> tuple[str, list[tuple[int, int]]]:
    """`to_ssml` and, per token, the [start, end) of its escaped spoken text in that SSML: the synthesiser
    reports word timings by text offset, which is how they are mapped back onto the script's tokens."""
    out, spans = "<speak>", []
    first = True
    for token in (t for sentence in sentences for t in sentence):
        word = escape(token.spoken)
        out += "" if first else " "
        first = False
        opening = "<emphasis>" if token.emphasis else ""
        start = len(out) + len(opening)
        out += f"{opening}{word}</emphasis>" if token.emphasis else word
        spans.append((start, start + len(word)))
        if token.pause_after_ms:
            out += f' <break time="{token.pause_after_ms}ms"/>'
    return out + "</speak>", spans


# Writing systems the default (English) voice can only spell letter by letter, and the espeak-ng voice
# that reads them. Keyed by the first word of the Unicode character name.
SCRIPT_VOICES = {
    "CYRILLIC": "ru", "GREEK": "el", "ARABIC": "ar", "HEBREW": "he", "DEVANAGARI": "hi", "BENGALI": "bn",
    "TAMIL": "ta", "THAI": "th", "GEORGIAN": "ka", "ARMENIAN": "hy", "HANGUL": "ko", "HIRAGANA": "ja",
    "KATAKANA": "ja", "CJK": "cmn",
}


def voice_language(text: str) -> str | None:
    """The espeak-ng voice for a script written mostly (more than half its letters) in a non-Latin
    writing system that voice reads; None for Latin text and for writing systems without a voice."""
    counts: dict[str, int] = {}
    letters = 0
    for char in text:
        if not unicodedata.category(char).startswith("L"):
            continue
        letters += 1
        system = unicodedata.name(char, "").split(" ")[0]
        if system in SCRIPT_VOICES:
            counts[SCRIPT_VOICES[system]] = counts.get(SCRIPT_VOICES[system], 0) + 1
    if not counts or sum(counts.values()) * 2 <= letters:
        return None
    if counts.get("ja") and "cmn" in counts:  # kanji inside Japanese text
        counts["ja"] += counts.pop("cmn")
    return max(counts, key=counts.get)


def estimated_duration_s(parsed: ParsedScript, wpm: float = 150.0) -> float:
    pauses = sum(token.pause_after_ms for token in parsed.tokens) / 1000
    return parsed.word_count / wpm * 60 + pauses
