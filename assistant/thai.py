"""Thai text handling: script detection, word and sentence segmentation with exact offsets."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_THAI = re.compile(r"[\u0E00-\u0E7F]")
# Zero-width and BOM characters carry no meaning in Thai text but split words for every tokenizer.
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
_WORDISH = re.compile(r"[\w\u0E00-\u0E7F]")


def has_thai(text: str) -> bool:
    return bool(_THAI.search(text))


def language(text: str) -> str:
    """'th' when the text contains Thai script, else 'en'."""
    return "th" if has_thai(text) else "en"


def normalise(text: str) -> str:
    """NFC, zero-width characters removed, Windows line ends folded."""
    text = unicodedata.normalize("NFC", text).translate(_ZERO_WIDTH)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def words(text: str) -> list[str]:
    """Words by pythainlp's dictionary-based `newmm` (whitespace kept, so pieces re-join to `text`)."""
    from pythainlp.tokenize import word_tokenize

    return word_tokenize(text, custom_dict=_dictionary(), engine="newmm", keep_whitespace=True)


class WordSet:
    """pythainlp's default word list in the shape `newmm` asks of its dictionary (`prefixes`).

    pythainlp's own `Trie` of its 62k words takes ~0.65 s to build in Python, on every process's
    first question (a quarter of a cold `assistant ask`); this set takes 25 ms. Lookups cost about
    twice the trie's (tokens are identical: tests/test_thai.py), a fraction of a millisecond per
    question.
    """

    def __init__(self, words):
        self._words: set[str] = set()
        self._longest: dict[str, int] = {}  # longest word by first character, to bound the lookups
        for word in words:
            word = word.strip()  # as Trie.add does
            if word:
                self._words.add(word)
                self._longest[word[0]] = max(len(word), self._longest.get(word[0], 0))

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: str) -> bool:
        return word in self._words

    def __iter__(self):
        return iter(self._words)

    def prefixes(self, text: str, start: int = 0) -> list[str]:
        """The words that start `text[start:]`, shortest first (as `Trie.prefixes`)."""
        longest = self._longest.get(text[start]) if start < len(text) else None
        if longest is None:
            return []
        found = self._words
        return [
            text[start:end] for end in range(start + 1, min(len(text), start + longest) + 1) if text[start:end] in found
        ]


@lru_cache(maxsize=1)
def _dictionary() -> WordSet:
    from pythainlp.corpus import thai_words

    return WordSet(thai_words())


def word_boundaries(text: str) -> set[int]:
    """Offsets in `text` where a newmm word starts or ends."""
    bounds, pos = {0}, 0
    for w in words(text):
        pos += len(w)
        bounds.add(pos)
    return bounds


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from pythainlp.corpus import thai_stopwords

    english = {
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "to",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "what",
        "which",
        "who",
        "whom",
        "when",
        "where",
        "why",
        "how",
        "does",
        "do",
        "did",
        "with",
        "for",
        "by",
        "from",
        "that",
        "this",
        "it",
        "its",
        "as",
        "at",
        "be",
        "has",
        "have",
        "had",
        "about",
        # The particle of "set up", "came up with", "ended up": a word no quote saying "founded" holds.
        # On dev it had withheld four right short answers; dropping it lost none.
        "up",
        "according",
        "document",
        "text",
    }
    return frozenset(thai_stopwords()) | english


def lexical_tokens(text: str) -> list[str]:
    """Tokens for BM25: newmm words, Latin lower-cased, punctuation and stop words dropped."""
    stop = _stopwords()
    out = []
    for w in words(normalise(text)):
        w = w.strip().lower()
        if w and _WORDISH.search(w) and w not in stop:
            out.append(w)
    return out


# Number words as digits: the renderings write "4 member countries" where a question says "four".
# "one" stays a word ("one of the members").
_NUMBERS = {
    w: str(n)
    for n, w in enumerate(
        "two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen".split(), start=2
    )
}
_LATIN_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")


@lru_cache(maxsize=1)
def _english_lemmas():
    """Dictionary forms before stemming: Snowball leaves irregular forms apart ("withdrew" and
    "withdraw", "took" and "take"). simplemma's memory-frugal backend: 6 MB and 165 ms to load here,
    against 24 MB and 280 ms for the default one."""
    from functools import partial

    from simplemma import lemmatize

    return partial(lemmatize, lang="en", low_memory=True)


@lru_cache(maxsize=1)
def _english_stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def english_tokens(text: str) -> list[str]:
    """Tokens for the English BM25 over the renderings: words lower-cased, stop words dropped, number
    words as digits, dictionary forms (simplemma) then Snowball stems ("withdrew" -> "withdraw",
    "negotiations", "negotiating" -> "negoti"), so an English question meets English text halfway."""
    return list(_english_tokens(text))


# Answering reads the same renderings' sentences question after question (0.2 ms each).
@lru_cache(maxsize=8192)
def _english_tokens(text: str) -> tuple[str, ...]:
    stop = _stopwords()
    # Accents folded, so "Bogotá", "Asunción" and "Chávez" meet "Bogota", "Asuncion" and "Chavez".
    folded = "".join(
        ch for ch in unicodedata.normalize("NFKD", normalise(text).lower()) if not unicodedata.combining(ch)
    )
    lemma = _english_lemmas()
    # lower() again: the dictionary capitalises names ("venezuela" -> "Venezuela").
    words = [lemma(_NUMBERS.get(w, w)).lower() for w in _LATIN_WORD.findall(folded) if w not in stop]
    # Stop words again as dictionary forms: "being" is no stop word, but its lemma "be" is.
    return tuple(_english_stemmer().stemWords([w for w in words if w not in stop]))


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans of text[start:end] by pythainlp's `crfcut`, as offsets into `text`.

    Spans are trimmed of surrounding whitespace and cover every non-space character.
    """
    from pythainlp.tokenize import sent_tokenize

    end = len(text) if end is None else end
    segment = text[start:end]
    spans, cursor = [], 0
    for sentence in sent_tokenize(segment, engine="crfcut"):
        sentence = sentence.strip()
        if not sentence:
            continue
        found = segment.find(sentence, cursor)
        if found < 0:  # the engine altered the text; keep the rest as one sentence
            break
        if found > cursor and segment[cursor:found].strip() and spans:
            # Text the engine skipped joins the previous sentence rather than getting lost.
            spans[-1] = (spans[-1][0], found)
        spans.append((found, found + len(sentence)))
        cursor = found + len(sentence)
    if segment[cursor:].strip():
        rest = len(segment) - len(segment[cursor:].lstrip())
        spans.append((rest, len(segment.rstrip())))
    return [(start + a, start + b) for a, b in _join_broken(segment, _trim(segment, spans))]


# crfcut ends sentences at the dot of an abbreviation ("ค.ศ. 1991") and inside parentheses.
_ABBREVIATION_END = re.compile(r"(?:^|[\s(])(?:[\u0E01-\u0E2E]{1,2}\.){1,3}$")


def _join_broken(segment: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out:
            prev = segment[out[-1][0] : out[-1][1]]
            if _ABBREVIATION_END.search(prev) or prev.count("(") > prev.count(")"):
                out[-1] = (out[-1][0], b)
                continue
        out.append((a, b))
    return out


def strip_span(text: str, a: int, b: int) -> tuple[int, int]:
    """The span text[a:b] without its leading and trailing white space."""
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def _trim(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in (strip_span(text, *span) for span in spans) if a < b]


def split_long(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """Cut text[start:end] into pieces of at most `max_chars`, only at newmm word boundaries.

    Prefers a space near the limit; a single word longer than the limit stays whole.
    """
    if end - start <= max_chars:
        return [(start, end)]
    bounds = sorted(b + start for b in word_boundaries(text[start:end]))
    pieces, a = [], start
    while end - a > max_chars:
        candidates = [b for b in bounds if a < b <= a + max_chars]
        if not candidates:
            cut = next(b for b in bounds if b > a)  # over-long word: keep it whole
        else:
            spaces = [b for b in candidates if text[b - 1].isspace() and b - a >= max_chars // 2]
            cut = spaces[-1] if spaces else candidates[-1]
        pieces.append((a, cut))
        a = cut
    pieces.append((a, end))
    return _trim(text, pieces)
