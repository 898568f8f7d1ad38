"""Speech synthesis with espeak-ng over ctypes, with per-word timings for captions and lip sync."""

from __future__ import annotations

import bisect
import ctypes
import html
import os
import re
import threading
from dataclasses import dataclass

import numpy as np

from avatar_assets.media.audio import frame_energy_db, resample

SAMPLE_RATE = 24000

# espeak-ng's speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_SSML = 0x10
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_INITIALIZE_PHONEME_EVENTS = 0x0001
_RATE, _PITCH, _RANGE = 1, 3, 4
_EE_OK = 0
_PHONEMES_IPA = 0x02

# Median F0 (Hz) of espeak-ng speech at pitch 0, 10, ..., 90, 99 (default pitch_range 50), measured
# with voice.yin_f0 on a read paragraph. The default (male) voice tops out near 170 Hz, so higher
# targets use the f3 (female) variant, whose range starts near 150 Hz.
_PITCH_STEPS = np.array([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99])
_MEASURED_F0 = {
    "": np.array([70.7, 76.1, 81.1, 87.4, 94.6, 103.5, 113.0, 125.6, 138.8, 154.2, 170.3]),
    "f3": np.array([152.2, 161.5, 171.2, 183.2, 197.0, 213.2, 231.5, 253.8, 278.4, 307.9, 337.1]),
}
_FEMALE_VARIANT_ABOVE_HZ = 165.0  # a common male/female boundary, inside both variants' ranges

_AUDIBLE_BELOW_PEAK_DB = 40.0  # frames this far under the loudest frame count as silence
_TIMING_FRAME_MS = 5
_TAG = re.compile(r"<[^>]*>")
_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True)
class WordTiming:
    """One word of the input text and when it is heard; text_offset indexes the input string."""

    word: str
    start_s: float
    end_s: float
    text_offset: int


@dataclass(frozen=True)
class PhonemeTiming:
    """One phoneme as espeak-ng names it (its ASCII mnemonic, e.g. "aI") and when it is heard."""

    phoneme: str
    start_s: float
    end_s: float


@dataclass(frozen=True, eq=False)
class Synthesis:
    """Synthesised speech (float32 mono at 24 kHz), the timing of each input word and of each phoneme."""

    samples: np.ndarray
    sample_rate: int
    words: tuple[WordTiming, ...]
    phonemes: tuple[PhonemeTiming, ...] = ()


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, in characters of the input text (tags included)
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of this synthesis
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_void_p),  # union of int / const char* / char[8]
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Engine:
    """The process-wide espeak-ng instance: the C library keeps global state, so one engine and one lock."""

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        # speak_lib.h: `path` is the directory that *contains* espeak-ng-data.
        data_parent = os.path.dirname(espeakng_loader.get_data_path().rstrip(os.sep))
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent.encode(), _INITIALIZE_DONT_EXIT | _INITIALIZE_PHONEME_EVENTS
        )
        if rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise (data at {data_parent})")
        self.lib = lib
        self.native_rate = int(rate)
        self._chunks: list[bytes] = []
        self._word_events: list[tuple[int, int]] = []
        self._phoneme_events: list[tuple[str, int]] = []
        self._callback = _SynthCallback(self._on_synth)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav: ctypes.Array, n_samples: int, events: ctypes.Array) -> int:
        if wav and n_samples > 0:
            self._chunks.append(ctypes.string_at(wav, n_samples * 2))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_WORD:
                self._word_events.append((events[i].text_position - 1, events[i].audio_position))
            elif events[i].type == _EVENT_PHONEME:  # the mnemonic is the char[8] member of the id union
                raw = ctypes.string_at(ctypes.addressof(events[i]) + _Event.id.offset, 8).split(b"\0")[0]
                self._phoneme_events.append((raw.decode("ascii", "replace"), events[i].audio_position))
            i += 1
        return 0

    def synth(
        self, text: str, flags: int, voice: str, rate_wpm: int, pitch: int, pitch_range: int
    ) -> tuple[np.ndarray, list[tuple[int, int]], list[tuple[str, int]]]:
        """Run one synthesis: native-rate int16 samples, (0-based char offset, ms) word events and
        (phoneme, ms) phoneme events."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"unknown espeak-ng voice: {voice!r}")
        for parameter, value in ((_RATE, rate_wpm), (_PITCH, pitch), (_RANGE, pitch_range)):
            self.lib.espeak_SetParameter(parameter, value, 0)
        self._chunks, self._word_events, self._phoneme_events = [], [], []
        data = text.encode("utf-8")
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
        self.lib.espeak_Synchronize()
        if status != _EE_OK:
            raise RuntimeError(f"espeak-ng synthesis failed with status {status}")
        return np.frombuffer(b"".join(self._chunks), dtype=np.int16), self._word_events, self._phoneme_events

    def ipa(self, text: str, voice: str) -> str:
        """`text` in IPA (espeak_TextToPhonemes, one clause per call), clauses joined by spaces."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"unknown espeak-ng voice: {voice!r}")
        buffer = ctypes.create_string_buffer(text.encode("utf-8"))
        pointer = ctypes.c_char_p(ctypes.addressof(buffer))
        clauses = []
        while pointer.value:
            clauses.append((self.lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA) or b"").decode())
        return " ".join(c for c in clauses if c)


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def _get_engine() -> _Engine:
    """Initialise espeak-ng on first use (call with _engine_lock held)."""
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def spoken_tokens(text: str, ssml: bool) -> list[tuple[int, str]]:
    """Whitespace-separated words with their offsets; SSML tags separate words and are not words."""
    spoken = _TAG.sub(lambda m: " " * len(m.group()), text) if ssml else text
    return [
        (m.start(), html.unescape(m.group()) if ssml else m.group())
        for m in _TOKEN.finditer(spoken)
    ]


def _word_starts(tokens: list[tuple[int, str]], events: list[tuple[int, int]]) -> list[float | None]:
    """First word event inside (or right after) each token; espeak may emit several per token ("123")."""
    starts: list[float | None] = [None] * len(tokens)
    offsets = [offset for offset, _ in tokens]
    for position, ms in events:
        i = bisect.bisect_right(offsets, position) - 1
        if i < 0 or position >= offsets[i] + len(tokens[i][1]):
            i += 1  # event points at whitespace or a tag: it belongs to the next word
        if i < len(tokens) and starts[i] is None:
            starts[i] = ms / 1000.0
    return starts


def attach_punctuation(
    tokens: list[tuple[int, str]], starts: list[float | None]
) -> list[tuple[int, str, float | None]]:
    """Join unspoken punctuation-only tokens ("—") to the word before them (or after, at the start)."""
    words: list[tuple[int, str, float | None]] = []
    pending: tuple[int, str] | None = None
    for (offset, text), start in zip(tokens, starts):
        if start is None and not any(c.isalnum() for c in text):
            if words:
                words[-1] = (words[-1][0], f"{words[-1][1]} {text}", words[-1][2])
            else:
                pending = (pending[0], f"{pending[1]} {text}") if pending else (offset, text)
            continue
        if pending:
            offset, text, pending = pending[0], f"{pending[1]} {text}", None
        words.append((offset, text, start))
    return words


def _audible_span(audible: np.ndarray, frame_s: float, start: float, stop: float) -> tuple[float, float]:
    """The part of [start, stop) that is not silence; the whole span if all of it is."""
    first, last = int(start / frame_s), int(np.ceil(stop / frame_s))
    heard = np.flatnonzero(audible[first:last])
    if len(heard) == 0:
        return start, stop
    return max(start, (first + heard[0]) * frame_s), min(stop, (first + heard[-1] + 1) * frame_s)


def _word_timings(
    tokens: list[tuple[int, str]], starts: list[float | None], audio: np.ndarray, sr: int, duration_s: float
) -> tuple[WordTiming, ...]:
    """Turn word events into one timing per spoken input word.

    `duration_s` is the length of the delivered (resampled) audio, which no word may outlast.
    A word runs from its event to the next event, trimmed to its audible part, so pauses and
    <break>s show up as gaps. espeak sometimes voices several words as one ("in the"): words
    without an event of their own share the span of the word before, split by character count.
    """
    words = attach_punctuation(tokens, starts)
    groups: list[list[tuple[int, str]]] = []
    group_starts: list[float | None] = []
    for offset, text, start in words:
        if start is not None or not groups:
            groups.append([])
            group_starts.append(start)
        groups[-1].append((offset, text))
    if group_starts and group_starts[0] is None:  # words before the first event join its group
        leading = groups.pop(0)
        group_starts.pop(0)
        if groups:
            groups[0][:0] = leading
    if not groups:
        return ()
    frame_s = _TIMING_FRAME_MS / 1000.0
    energy = frame_energy_db(audio, sr, _TIMING_FRAME_MS)
    audible = energy > max(energy.max(initial=-120.0) - _AUDIBLE_BELOW_PEAK_DB, -60.0)
    starts_s = np.minimum(np.maximum.accumulate(group_starts), duration_s)
    timings = []
    for group, start, stop in zip(groups, starts_s, [*starts_s[1:], duration_s]):
        begin, end = _audible_span(audible, frame_s, float(start), float(stop))
        edges = begin + (end - begin) * np.cumsum([0, *(len(text) for _, text in group)]) / sum(
            len(text) for _, text in group
        )
        timings += [
            WordTiming(word=text, start_s=float(a), end_s=float(b), text_offset=offset)
            for (offset, text), a, b in zip(group, edges[:-1], edges[1:])
        ]
    return tuple(timings)


def synthesize(
    text: str,
    *,
    voice: str = "en-us",
    rate_wpm: int = 160,
    pitch: int = 50,
    pitch_range: int = 50,
    ssml: bool = False,
) -> Synthesis:
    """Speak `text` with espeak-ng; with ssml=True, tags such as <break time="500ms"/> and <emphasis> apply.

    Voices are espeak-ng names, optionally with a variant ("en-us", "en", "en-us+f3"); an unknown
    voice or out-of-range parameter raises ValueError.
    """
    if not 80 <= rate_wpm <= 450:
        raise ValueError(f"rate_wpm must be 80-450, got {rate_wpm}")
    for name, value in (("pitch", pitch), ("pitch_range", pitch_range)):
        if not 0 <= value <= 99:
            raise ValueError(f"{name} must be 0-99, got {value}")
    flags = _CHARS_UTF8 | (_SSML if ssml else 0)
    with _engine_lock:
        engine = _get_engine()
        pcm, events, phoneme_events = engine.synth(text, flags, voice, rate_wpm, pitch, pitch_range)
    audio = pcm.astype(np.float32) / 32768.0
    samples = resample(audio, engine.native_rate, SAMPLE_RATE)
    tokens = spoken_tokens(text, ssml)
    words = _word_timings(
        tokens, _word_starts(tokens, events), audio, engine.native_rate, len(samples) / SAMPLE_RATE
    )
    return Synthesis(
        samples=samples, sample_rate=SAMPLE_RATE, words=words,
        phonemes=_phoneme_timings(phoneme_events, len(samples) / SAMPLE_RATE),
    )


def _phoneme_timings(events: list[tuple[str, int]], duration_s: float) -> tuple[PhonemeTiming, ...]:
    """Each phoneme lasts until the next one starts; pauses are espeak's own "_" phonemes."""
    starts = [min(ms / 1000.0, duration_s) for _, ms in events]
    return tuple(
        PhonemeTiming(phoneme, start, end)
        for (phoneme, _), start, end in zip(events, starts, [*starts[1:], duration_s])
        if end > start
    )


def ipa_phonemes(text: str, voice: str = "en-us") -> str:
    """`text` as espeak-ng's IPA (stress marks included), the phonemes Piper voices are trained on."""
    with _engine_lock:
        return _get_engine().ipa(text, voice)


def native_sample_rate() -> int:
    """espeak-ng's own output rate (reported by espeak_Initialize), before resampling to 24 kHz."""
    with _engine_lock:
        return _get_engine().native_rate


def voice_for_f0(median_f0_hz: float, language: str = "en-us") -> str:
    """The espeak-ng voice whose pitch range covers a target median F0: default voice, or its f3 variant."""
    return f"{language}+f3" if median_f0_hz > _FEMALE_VARIANT_ABOVE_HZ else language


def pitch_for_f0(median_f0_hz: float, voice: str = "en-us") -> int:
    """espeak-ng pitch (0-99) whose speech has the given median F0, from measured calibration.

    Interpolates log-F0 over the measured table for the voice's variant (none or "+f3") and
    clamps to 0-99 outside its range; pitch_range is assumed to stay at its default of 50.
    """
    variant = voice.partition("+")[2]
    if variant not in _MEASURED_F0:
        raise ValueError(f"no pitch calibration for voice {voice!r}; use a base voice or its +f3 variant")
    if median_f0_hz <= 0:
        raise ValueError(f"median F0 must be positive, got {median_f0_hz}")
    pitch = np.interp(np.log(median_f0_hz), np.log(_MEASURED_F0[variant]), _PITCH_STEPS)
    return int(round(float(pitch)))
