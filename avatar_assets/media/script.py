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
    return category == "So" or 0x1F000 <= ord(char) <= 0x1FAFF


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
        text = "".join(c for c in text if not _is_dropped_char(c))
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([.,!?;:])", r"\1", text)
    text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
    return text, cleaned


def parse_script(raw: str, *, pronunciations: dict[str, str] | None = None, max_words: int = 900) -> ParsedScript:
    text, cleaned = normalise(raw)
    overrides = {k.lower(): v for k, v in (pronunciations or {}).items()}
    sentences: list[list[ScriptToken]] = []
    current: list[ScriptToken] = []
    for paragraph in text.split("\n\n"):
        pieces = _PAUSE.split(paragraph)
        # split() interleaves text, number, unit, text, ...
        for index in range(0, len(pieces), 3):
            for word in pieces[index].split():
                emphasis = word.startswith("*") and word.rstrip(".,;:!?\"')").endswith("*") and len(word) > 2
                display = word.replace("*", "") if emphasis else word
                if not display.strip("*"):
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
    parts = []
    for token in (t for sentence in sentences for t in sentence):
        word = escape(token.spoken)
        parts.append(f"<emphasis>{word}</emphasis>" if token.emphasis else word)
        if token.pause_after_ms:
            parts.append(f'<break time="{token.pause_after_ms}ms"/>')
    return "<speak>" + " ".join(parts) + "</speak>"


def estimated_duration_s(parsed: ParsedScript, wpm: float = 150.0) -> float:
    pauses = sum(token.pause_after_ms for token in parsed.tokens) / 1000
    return parsed.word_count / wpm * 60 + pauses
