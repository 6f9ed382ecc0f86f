"""Extractive answers: the best-matching sentences of the retrieved passages, each cited."""

from __future__ import annotations

import re
import time
import unicodedata
from typing import Iterator

import numpy as np

from assistant.config import Config
from assistant.errors import InvalidQuestionError
from assistant.retrieval import Retriever
from assistant.thai import language
from assistant.types import Answer, Citation, Hit, Turn

PHRASES = {
    "th": {"refusal": "ไม่พบข้อมูลนี้ในเอกสาร", "sources": "แหล่งที่มา"},
    "en": {"refusal": "The documents do not contain this.", "sources": "Sources"},
}
# How many retrieved passages the answer may quote from, and how many sentences at most.
ANSWER_PASSAGES = 3
ANSWER_SENTENCES = 2
# A second sentence joins the answer only when it scores almost as well as the best one.
SECOND_SENTENCE_MARGIN = 0.03
# A sentence from a lower-ranked passage must beat a top-passage sentence by this much per rank.
RANK_PENALTY = 0.01

_FOLLOW_UP_EN = re.compile(
    r"^\s*(and|also|what about|how about|then)\b|\b(he|she|it|its|they|them|their|his|her|hers|"
    r"this|that|these|those|there|the same)\b", re.IGNORECASE)
_FOLLOW_UP_TH = re.compile(r"^\s*(และ|แล้ว|ส่วน)|นี้|นั้น|ดังกล่าว|เขา|เธอ|พวกเขา|ทั้งสอง")


def validate(question: object, max_chars: int = 2000) -> str:
    """The question, stripped; a clear error for anything that is not a usable question."""
    if not isinstance(question, str):
        raise InvalidQuestionError("The question must be text.")
    stripped = question.strip()
    if not stripped:
        raise InvalidQuestionError("The question is empty: type a question about the documents.")
    if len(stripped) > max_chars:
        raise InvalidQuestionError(f"The question is {len(stripped):,} characters long; the limit is "
                                   f"{max_chars:,}. Ask something shorter.")
    if any(unicodedata.category(ch) in {"Cc", "Cs"} and ch not in "\n\t" for ch in stripped):
        raise InvalidQuestionError("The question contains control characters; send plain text.")
    return stripped


def is_follow_up(question: str) -> bool:
    return bool(_FOLLOW_UP_TH.search(question) or _FOLLOW_UP_EN.search(question))


def retrieval_query(question: str, history: tuple[Turn, ...] | list[Turn] = ()) -> str:
    """The text to retrieve with: a follow-up carries the previous user question along.

    Without an LLM to rewrite the question, the previous question supplies the names a pronoun
    ("he", "บริษัทนี้") stands for.
    """
    previous = [t.content for t in history if t.role == "user" and t.content.strip()]
    if previous and is_follow_up(question):
        return f"{previous[-1]} {question}"
    return question


class Answerer:
    def __init__(self, retriever: Retriever, config: Config):
        self.retriever = retriever
        self.config = config

    def answer(self, question: str, history=(), top_k: int | None = None) -> Answer:
        started = time.perf_counter()
        question = validate(question, self.config.max_question_chars)
        history = tuple(t if isinstance(t, Turn) else Turn(**t) for t in history)
        lang = language(question)
        text = retrieval_query(question, history)
        query = self.retriever.query(text)
        embedded = time.perf_counter()
        stages = {}
        hits = self.retriever.search(query, top_k or self.config.top_k, timings=stages)
        searched = time.perf_counter()
        best = max((h.dense_score for h in hits), default=0.0)
        threshold = self.config.refusal_threshold_th if lang == "th" else self.config.refusal_threshold_en
        if not hits or best < threshold:
            answer_text, citations = PHRASES[lang]["refusal"], ()
        else:
            answer_text, citations = self._compose(query.vector, hits)
        done = time.perf_counter()
        return Answer(
            question=question, answer=answer_text, refused=not citations, citations=citations,
            language=lang, retrieval_query=text, hits=tuple(hits),
            timings_ms={"embed": (embedded - started) * 1e3, "search": (searched - embedded) * 1e3,
                        **stages, "compose": (done - searched) * 1e3, "total": (done - started) * 1e3},
        )

    def stream(self, question: str, history=(), top_k: int | None = None) -> Iterator[Answer]:
        """The same interface as the LLM answerer's: here the whole answer comes at once."""
        yield self.answer(question, history, top_k)

    def _compose(self, vector: np.ndarray, hits: list[Hit]) -> tuple[str, tuple[Citation, ...]]:
        index = self.retriever.index
        candidates = {}  # sentence span -> (score, hit); a sentence in two passages cites the better one
        for rank, hit in enumerate(hits[:ANSWER_PASSAGES]):
            for (a, b), similarity in zip(hit.chunk.sentences, index.sentence_scores(hit.chunk, vector)):
                key = (hit.chunk.doc_id, a, b)
                if key not in candidates:
                    candidates[key] = (float(similarity) - RANK_PENALTY * rank, hit)
        ranked = sorted(candidates.items(), key=lambda kv: -kv[1][0])
        chosen = [ranked[0]]
        for key, (score, hit) in ranked[1:]:
            if len(chosen) >= ANSWER_SENTENCES or score < ranked[0][1][0] - SECOND_SENTENCE_MARGIN:
                break
            chosen.append((key, (score, hit)))
        # One citation per sentence, so each marker names exactly the span it quotes.
        parts, citations = [], []
        for n, ((doc_id, a, b), (score, hit)) in enumerate(chosen, start=1):
            chunk = hit.chunk
            citation = Citation(
                n=n, chunk_id=chunk.chunk_id, source=chunk.source, title=chunk.title, text=chunk.text,
                start=chunk.start, end=chunk.end, sentence_start=a, sentence_end=b, score=round(score, 4),
            )
            citations.append(citation)
            parts.append(f"{citation.sentence} [{n}]")
        return " ".join(parts), tuple(citations)
