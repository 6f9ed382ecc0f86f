"""Small immutable records that cross stage boundaries."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One corpus file after normalisation; offsets elsewhere index into `text`."""

    doc_id: str
    source: str
    title: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_glossary(self) -> bool:
        """Front matter `role: glossary`: name pairs that feed the retriever instead of the answers."""
        return self.meta.get("role") == "glossary"


@dataclass(frozen=True)
class Chunk:
    """A passage of a document: `text == document.text[start:end]`."""

    chunk_id: str
    doc_id: str
    source: str
    title: str
    paragraph: int
    start: int
    end: int
    text: str
    # Sentence spans as (start, end) offsets into the document text.
    sentences: tuple[tuple[int, int], ...]
    # Each sentence's row in the index's sentence vectors (empty before indexing).
    sentence_rows: tuple[int, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its fused score and the per-retriever ranks behind it."""

    chunk: Chunk
    score: float
    dense_score: float
    dense_rank: int | None
    lexical_rank: int | None


@dataclass(frozen=True)
class Citation:
    """Citation `[n]`: the passage and the cited sentence, both as document offsets."""

    n: int
    chunk_id: str
    source: str
    title: str
    text: str
    start: int
    end: int
    sentence_start: int
    sentence_end: int
    score: float
    # The English rendering: {"lang": "en", "sentence": the quoted sentence's, "text": the passage's}, or
    # None when the document has none.
    translation: dict | None = None

    @property
    def sentence(self) -> str:
        """The quoted sentence, cut from the passage text."""
        return self.text[self.sentence_start - self.start : self.sentence_end - self.start]


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str


def as_turns(history, keep: int | None = None) -> tuple[Turn, ...]:
    """Conversation history as turns, from `Turn`s or mappings with "role" and "content" (JSON, the web
    chat's state); with `keep`, only the latest `keep` of them (0: none)."""
    history = list(history)
    if keep is not None:
        history = history[-keep:] if keep else []
    return tuple(t if isinstance(t, Turn) else Turn(t["role"], t["content"]) for t in history)


@dataclass(frozen=True)
class Answer:
    question: str
    answer: str
    refused: bool
    citations: tuple[Citation, ...]
    language: str
    retrieval_query: str
    hits: tuple[Hit, ...] = field(default=(), compare=False)
    timings_ms: dict[str, float] = field(default_factory=dict, compare=False)
    # How the text was made: {"mode": "extractive"} or, with an LLM, also "status" ("verified",
    # "fallback" or "refused"), "removed_markers" and a user-facing "notice" when it fell back.
    generation: dict = field(default_factory=lambda: {"mode": "extractive"}, compare=False)
    answer_language: str = ""  # the language the answer is written in ("th" or "en")
    # {"text", "citation", "start", "end"}: the one span of the first quoted sentence that answers a
    # date, number, distance or name question (offsets into the source document), or None.
    short_answer: dict | None = None
    refusal_reason: str | None = None  # for `uncertain` and `not_found`: why, in words
    # "answered" (the quote answers), "uncertain" (the closest quotes, under a caveat) or "not_found".
    status: str = "answered"
    # The calibrated probability that the shown quote answers the question (None without a decision model).
    confidence: float | None = None
    suggestions: tuple[str, ...] = ()  # with `not_found`: questions the documents can answer

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape shared by `assistant ask --json` and the HTTP API."""
        return {
            "question": self.question,
            "answer": self.answer,
            "status": self.status,
            "confidence": self.confidence,
            "refused": self.refused,
            "suggestions": list(self.suggestions),
            "language": self.language,
            "answer_language": self.answer_language or self.language,
            "short_answer": self.short_answer,
            "refusal_reason": self.refusal_reason,
            "citations": [asdict(c) for c in self.citations],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "generation": self.generation,
        }
