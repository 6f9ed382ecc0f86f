"""Extractive answers: the best-matching sentences of the retrieved passages, each cited."""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

from assistant import decision, extraction
from assistant.config import Config
from assistant.errors import InvalidQuestionError, QuestionTooLongError
from assistant.index import FORMAT_VERSION
from assistant.retrieval import Retriever, content_words, covered
from assistant.thai import language, normalise
from assistant.types import Answer, Chunk, Citation, Hit, Turn, as_turns

PHRASES = {
    "th": {
        "refusal": "ไม่พบข้อมูลนี้ในเอกสาร",
        "uncertain": "เอกสารอาจไม่ได้ระบุเรื่องนี้โดยตรง ข้อความที่ใกล้เคียงที่สุดคือ:",
        "suggest": "ลองถาม:",
        "sources": "แหล่งที่มา",
        "short": "คำตอบสั้น",
    },
    "en": {
        "refusal": "The documents do not contain this.",
        "uncertain": "The documents may not state this directly. The closest passages say:",
        "suggest": "You could ask:",
        "sources": "Sources",
        "short": "Short answer",
        "untranslated": "(No English rendering of this document yet: quoting the Thai original.)",
    },
}
ANSWER_LANGUAGES = ("auto", "th", "en")
# How many retrieved passages the answer may quote from, and how many sentences at most.
ANSWER_PASSAGES = 5
ANSWER_SENTENCES = 2
# Sentence score = cosine with the question - RANK_PENALTY per passage rank + TYPE_BONUS if the sentence
# holds a span of the kind the question asks for (a year for "when", a name for "who") + WORD_WEIGHT x the
# share of the question's content words it contains. A grid on the dev split of eval/questions.jsonl
# (passages 3 or 5, RANK_PENALTY 0–0.04, TYPE_BONUS 0.05–0.3, WORD_WEIGHT 0–0.4) raised the share of
# answerable questions whose first quoted sentence holds the answer from 0.769 (the earlier 3 passages,
# 0.01, 0.03, 0.05) to 0.885; TYPE_BONUS 0.1–0.3 with WORD_WEIGHT 0.2–0.4 all score 0.875–0.894. The
# question's words count in the document's title too: "It originated in the Cartagena Agreement" is
# the Andean Community's origin (dev answer_match 0.846 -> 0.875).
RANK_PENALTY = 0.02
TYPE_BONUS = 0.2
WORD_WEIGHT = 0.2
# A sentence gives a short answer only when it holds at least this share of the question's words.
SHORT_MIN_WORD_SHARE = 0.5
# A second sentence joins only when it scores almost as well and adds what the first lacks.
SECOND_SENTENCE_MARGIN = 0.03

_FOLLOW_UP_EN = re.compile(
    r"^\s*(and|also|what about|how about|then)\b|\b(he|she|it|its|they|them|their|his|her|hers|"
    r"this|that|these|those|there|the same)\b",
    re.IGNORECASE,
)
_FOLLOW_UP_TH = re.compile(r"^\s*(และ|แล้ว|ส่วน)|นี้|นั้น|ดังกล่าว|เขา|เธอ|พวกเขา|ทั้งสอง")


def validate(question: object, max_chars: int = 2000, what: str = "question") -> str:
    """The question (or a history turn's text), stripped; a clear error in Thai and English for
    anything that is not usable."""
    if not isinstance(question, str):
        raise InvalidQuestionError(f"ต้องเป็นข้อความ · The {what} must be text.")
    stripped = normalise(question).strip()
    if not stripped:
        raise InvalidQuestionError(f"คำถามว่างเปล่า · The {what} is empty: type a question about the documents.")
    if len(stripped) > max_chars:
        raise QuestionTooLongError(
            f"ข้อความยาวเกิน {max_chars:,} ตัวอักษร · The {what} is {len(stripped):,} "
            f"characters long; the limit is {max_chars:,}. Ask something shorter."
        )
    if any(unicodedata.category(ch) in {"Cc", "Cs"} and ch not in "\n\t" for ch in stripped):
        raise InvalidQuestionError(f"มีอักขระควบคุม · The {what} contains control characters; send plain text.")
    if not any(ch.isalnum() for ch in stripped):
        raise InvalidQuestionError(f"ไม่มีคำให้ค้นหา · The {what} has no letters or digits: ask in words.")
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


class Answering(Protocol):
    """What the web, the chats, the CLI and evaluation need of an answerer; the extractive `Answerer`
    and `llm.LLMAnswerer` both provide it."""

    config: Config

    @property
    def retriever(self) -> Retriever: ...

    def answer(self, question: str, history=(), top_k: int | None = None, answer_language: str = "auto") -> Answer: ...

    def stream(
        self, question: str, history=(), top_k: int | None = None, answer_language: str = "auto"
    ) -> Iterator[str | Answer]: ...

    def use(self, index) -> None: ...


@dataclass(frozen=True)
class Draft:
    """An answer before its decision: the quote it would show, and what the decision reads."""

    question: str
    language: str
    reply: str
    retrieval_query: str
    hits: tuple[Hit, ...]
    text: str
    citations: tuple[Citation, ...]
    short_answer: dict | None
    evidence: decision.Evidence | None  # None: nothing to quote, or an overview
    overview: bool  # an overview question or one about a name's forms: answered from its note or row
    index: object  # the index it was drafted on (a not-found reply's suggestions come from it)
    timings: dict[str, float]
    started: float
    searched: float


class Answerer:
    def __init__(self, retriever: Retriever, config: Config):
        self.retriever = retriever
        self.config = config
        self.decision_model, self.decision_problem = self._load_decision(retriever.index)

    def use(self, index) -> None:
        """Answer from another loaded index from now on (a server picking up a rebuilt index).

        Each answer reads `self.retriever` once, so one in flight finishes on the index it began with.
        """
        self.decision_model, self.decision_problem = self._load_decision(index)
        self.retriever = Retriever(index, self.retriever.mode)

    def _load_decision(self, index) -> tuple[decision.Model | None, str | None]:
        """The answer-decision model for this index, or None and why (then `decision.fallback` decides)."""
        return decision.load(self.config.decision_model, FORMAT_VERSION, index.manifest.get("embed_model", ""))

    def answer(self, question: str, history=(), top_k: int | None = None, answer_language: str = "auto") -> Answer:
        """The cited answer, `answered`, `uncertain` or `not_found` (see `decision`); `answer_language`
        "auto" answers in the question's language."""
        draft = self.draft(question, history, top_k, answer_language)
        if draft.overview:
            return self._finish(draft, decision.Decision("answered", None))
        return self._finish(draft, self.decide(draft.evidence))

    def draft(self, question: str, history=(), top_k: int | None = None, answer_language: str = "auto") -> Draft:
        """Everything up to the decision: the quote the answer would show and what the decision reads."""
        started = time.perf_counter()
        retriever = self.retriever  # read once: a rebuilt index may replace it meanwhile (`use`)
        question, history, lang, reply = self._checked(question, history, answer_language)
        query = retriever.query(retrieval_query(question, history))
        embedded = time.perf_counter()
        stages = {}
        hits = retriever.search(query, top_k or self.config.top_k, timings=stages)
        searched = time.perf_counter()
        # The glossary is a source too: the rows of the names asked about may be quoted (a term of office).
        offered = [*hits[:ANSWER_PASSAGES], *retriever.glossary_rows(query.text)]
        ranked = self._rank(retriever, query, offered, question, lang, history)
        quotes, routed = _quotes(retriever, ranked, hits, question, lang)
        index = retriever.index
        text, citations, short = self._compose(index, quotes, question, reply, hits) if quotes else ("", (), None)
        return Draft(
            question=question,
            language=lang,
            reply=reply,
            retrieval_query=query.text,
            hits=tuple(hits),
            text=text,
            citations=citations,
            short_answer=short,
            evidence=None if routed or not quotes else _evidence(index, hits, ranked, quotes, lang),
            overview=routed,
            index=index,
            timings={"embed": (embedded - started) * 1e3, "search": (searched - embedded) * 1e3, **stages},
            started=started,
            searched=searched,
        )

    def _checked(self, question, history, answer_language: str) -> tuple[str, tuple[Turn, ...], str, str]:
        """The question and history as the answer reads them, the question's language and the reply's."""
        question = validate(question, self.config.max_question_chars)
        if answer_language not in ANSWER_LANGUAGES:
            raise InvalidQuestionError(f"answer_language must be one of {', '.join(ANSWER_LANGUAGES)}")
        lang = language(question)
        return question, as_turns(history), lang, lang if answer_language == "auto" else answer_language

    def decide(self, evidence: decision.Evidence | None) -> decision.Decision:
        """The decision model's verdict, or the conservative fallback without a usable model."""
        if evidence is None or self.decision_model is None:
            return decision.fallback(evidence)
        return self.decision_model.decide(evidence)

    def _finish(self, draft: Draft, decided: decision.Decision) -> Answer:
        """The reply for the decision: the quote and its short answer; the closest quotes under a caveat,
        without a short answer; or "not found" with questions the documents can answer."""
        phrases = PHRASES[draft.reply]
        if decided.status == "answered":
            text, citations, short = draft.text, draft.citations, draft.short_answer
        elif decided.status == "uncertain":
            text, citations, short = f"{phrases['uncertain']} {draft.text}", draft.citations, None
        else:
            text, citations, short = phrases["refusal"], (), None
        done = time.perf_counter()
        return Answer(
            question=draft.question,
            answer=text,
            refused=decided.status == "not_found",
            citations=citations,
            language=draft.language,
            retrieval_query=draft.retrieval_query,
            hits=draft.hits,
            answer_language=draft.reply,
            short_answer=short,
            refusal_reason=decided.reason,
            status=decided.status,
            confidence=None if decided.confidence is None else round(decided.confidence, 4),
            # Only a not-found reply suggests questions: none are looked for otherwise.
            suggestions=tuple(suggestions(draft.index, list(draft.hits), draft.question, draft.reply))
            if decided.status == "not_found"
            else (),
            timings_ms={
                **draft.timings,
                "compose": (done - draft.searched) * 1e3,
                "total": (done - draft.started) * 1e3,
            },
        )

    def stream(
        self, question: str, history=(), top_k: int | None = None, answer_language: str = "auto"
    ) -> Iterator[Answer]:
        """The same interface as the LLM answerer's: here the whole answer comes at once."""
        yield self.answer(question, history, top_k, answer_language)

    def _rank(
        self, retriever: Retriever, query, hits: list[Hit], question: str, lang: str, history: tuple[Turn, ...] = ()
    ) -> list[dict]:
        """The sentences of these passages (the retrieved ones the answer may quote, then any glossary rows)
        as candidate quotes, best first: scored by cosine, passage rank, whether they hold what the question
        asks for, and the question's words they contain (see the constants above)."""
        index = retriever.index
        reading = _reading(index, query, question, lang, history)
        candidates = {}  # (doc, start, end) -> candidate; a sentence in two passages cites the better one
        for rank, hit in enumerate(hits):
            chunk = hit.chunk
            rendering = index.rendering(chunk)
            scores = index.sentence_scores(chunk, query.vector, lang)
            for (a, b), similarity in zip(chunk.sentences, scores):
                if (chunk.doc_id, a, b) not in candidates:
                    thai = chunk.text[a - chunk.start : b - chunk.start]
                    english = rendering.sentences.get((a, b)) if rendering else None
                    candidates[chunk.doc_id, a, b] = {
                        **_scored(index, reading, hit, rank, float(similarity), thai, english, rendering, lang),
                        "span": (a, b),
                        **reading,
                    }
        return sorted(candidates.values(), key=lambda c: -c["score"])

    def _compose(self, index, chosen: list[dict], question: str, reply: str, hits: list[Hit]):
        """The answer text in the reply language, one citation per sentence, and the short answer."""
        parts, citations = [], []
        untranslated = False
        quoted = []  # (candidate, passage, span, whether the next part continues its sentence)
        for candidate in chosen:
            whole = _whole(index, candidate, hits)
            for i, (chunk, (a, b)) in enumerate(whole, start=1):
                if not any(c.doc_id == chunk.doc_id and x <= a and b <= y for _, c, (x, y), _ in quoted):
                    quoted.append((candidate, chunk, (a, b), i < len(whole) and _cut(index, chunk, b)))
        held = []  # the markers of a sentence's earlier parts, shown at its end
        for n, (candidate, chunk, (a, b), continued) in enumerate(quoted, start=1):
            translation = translation_of(index, chunk, (a, b))
            citation = citation_for(chunk, n, (a, b), candidate["score"], translation)
            citations.append(citation)
            if reply == "en" and translation and translation["sentence"]:
                sentence = translation["sentence"]
            else:  # a glossary row gives its English names itself
                untranslated = untranslated or (reply == "en" and chunk.doc_id not in index.chunks.glossary_docs)
                sentence = citation.sentence
            # A quote that still begins or ends inside a sentence says so, as quotations do.
            if not held and _piece_before(index, chunk, a):
                sentence = f"… {sentence}"
            if not continued and _cut(index, chunk, b):
                sentence = f"{sentence} …"
            held.append(f"[{n}]")
            parts.append(sentence if continued else f"{sentence} {' '.join(held)}")
            held = held if continued else []
        text = " ".join(parts)
        if untranslated:
            text = f"{PHRASES['en']['untranslated']} {text}"
        # Only the best sentence, and only when it holds most of the question's words, may give a short
        # answer: a lone name or number in a sentence about something else is not the answer (on dev,
        # taking it from the second sentence gave MERCOSUR's founding date to "When was ALBA founded?").
        # Nor when its passage does not name what the question is about: on dev, "Where was its founding
        # treaty signed?" after "What is UNASUR?" quoted MERCOSUR's founding and offered "Asunción".
        first = chosen[0]
        eligible = (
            first["typed"]
            and len(first["words"])
            >= SHORT_MIN_WORD_SHARE * len(_asked_words(first, first["words"], language(question)))
            and _names(index, first["hit"].chunk, first["about"])
        )
        # The citation of the part of the quote that holds the sentence the short answer comes from.
        own = next((c for c in citations if c.sentence_start <= first["span"][0] < c.sentence_end), citations[0])
        short = _short_answer(index, first, own, question, reply) if eligible else None
        return text, tuple(citations), short


def _quotes(retriever: Retriever, ranked: list[dict], hits: list[Hit], question: str, lang: str):
    """The candidates to quote, and whether the question was routed (an overview, a name's forms), which
    is answered without a decision."""
    index = retriever.index
    if (opening := overview(retriever, question)) is not None:
        # The opening of the note about what it names, as a definition, or its glossary row and the
        # passage saying most of it.
        quotes = [_opening(index, opening, ranked, question, lang)]
        if opening.doc_id in index.chunks.glossary_docs:
            quotes += _context(index, opening, ranked)
        return quotes, True
    if (row := name_form(retriever, question)) is not None:  # a question about a name's forms: its row
        return [_opening(index, row, ranked, question, lang)], True
    if not ranked:
        return [], False
    # The quote comes from passages naming what the question is about, when any does
    # ("พันธมิตรแปซิฟิกตั้งขึ้นมาเพื่ออะไร" quoted ALBA's founding, whose "เพื่อ" read as a purpose).
    on_topic = [c for c in ranked if _names(index, c["hit"].chunk, ranked[0]["about"])]
    return _pick(index, on_topic or ranked, hits), False


def _reading(index, query, question: str, lang: str, history: tuple[Turn, ...]) -> dict:
    """What the question asks, as every candidate quote is read against it."""
    kind = extraction.expected_kind(question)
    # Never answers to the question, and each must be in a passage quoted; not so the choices it offers
    # ("Among Chile, Peru, Colombia and Mexico, which two …").
    offered = extraction.options(question, index.entities)
    asked = [forms for forms in extraction.names_in(question, index.entities) if forms not in offered]
    follow_up = query.text != question
    # A follow-up's pronoun stands for the names of the conversation's last answer ("ประเทศนั้น" after
    # "เวเนซุเอลา"): their words tell the clauses of a quote apart as the question's own names do.
    referents = set()
    if follow_up:
        last = next((t.content for t in reversed(history) if t.role == "assistant"), "")
        referents = {
            w for forms in extraction.names_in(last, index.entities) for f in forms for w in content_words(f, lang)
        }
    return {
        "kind": kind,
        "question_words": content_words(question, lang),
        "asked": asked,
        "named": {w for forms in asked for f in forms for w in content_words(f, lang)},  # the names' words
        # What the question is about, a follow-up's earlier question included ("Where was its founding
        # treaty signed?" after "What is UNASUR?" is about UNASUR).
        "about": extraction.names_in(query.text, index.entities) if follow_up else asked,
        # Only a person answers a question naming a role ("Who was Paraguay's president when …"), and only
        # one the glossary gives that role in the country asked about (`extraction.role_holders`).
        "holders": extraction.role_holders(question, index.entities),
        # A count must count what the question does ("กี่ดอลลาร์" is not answered by "2 ประเทศ").
        "unit": extraction.counted(question) if kind == "number" else None,
        "follow_up": follow_up,
        "referents": referents,
    }


def _scored(
    index, reading: dict, hit: Hit, rank: int, similarity: float, thai: str, english, rendering, lang: str
) -> dict:
    """One sentence as a candidate quote (`english` its sentence of the passage's `rendering`): whether it
    holds a span of the kind asked for, the question's words it holds, and its score."""
    kind, words, asked = reading["kind"], reading["question_words"], reading["asked"]

    def holds(**how) -> bool:  # whether the Thai sentence or its English has a fitting span
        return any(extraction.spans(t, kind, index.entities, asked, **how) for t in (thai, english) if t)

    typed = kind in extraction.TYPED_KINDS and holds(loose=True)
    # A role question strictly (a person holding the role), a count counting what was asked.
    plain = reading["holders"] is None and reading["unit"] is None
    fits = typed and (plain or holds(holders=reading["holders"], unit=reading["unit"]))
    held = covered(words, lang, f"{hit.chunk.title} {thai}", english and f"{rendering.title} {english}")
    score = (
        similarity - RANK_PENALTY * rank + TYPE_BONUS * fits + WORD_WEIGHT * (len(held) / len(words) if words else 0.0)
    )
    return {
        "hit": hit,
        "rank": rank,
        "similarity": similarity,
        "score": score,
        "typed": typed,
        "fits": fits,
        "words": held,
        "thai": thai,
        "english": english,
    }


def _pick(index, ranked: list[dict], hits: list[Hit]) -> list[dict]:
    """The sentences to quote from ranked candidates: the best, and a second only when it adds something."""
    if not ranked:
        return []
    kind = ranked[0]["kind"]
    chosen = [ranked[0]]
    for candidate in ranked[1:]:
        if len(chosen) >= ANSWER_SENTENCES or candidate["score"] < ranked[0]["score"] - SECOND_SENTENCE_MARGIN:
            break
        adds = candidate["words"] - chosen[0]["words"] or (candidate["typed"] and not chosen[0]["typed"])
        if adds:
            chosen.append(candidate)
    # The sentence holding what was asked for leads, even when the other is closer to the question.
    chosen.sort(key=lambda c: not c["typed"])
    if kind not in extraction.SHORT_KINDS:
        chosen[0] = _run_on(index, _run_back(index, chosen[0], hits[:ANSWER_PASSAGES]))
        chosen[1:] = [c for c in chosen[1:] if not _inside(c, chosen[0])]
    return chosen


def _names(index, chunk, names) -> bool:
    """Whether a passage (with its document's title, in Thai and English) names each of these names."""
    titled = _titled(index, chunk).lower()
    return all(any(f.lower() in titled for f in forms) for forms in names)


def citation_for(chunk, n: int, span: tuple[int, int], score: float, translation: dict | None = None) -> Citation:
    """Citation n: the passage and, inside it, the quoted sentence's span."""
    return Citation(
        n=n,
        chunk_id=chunk.chunk_id,
        source=chunk.source,
        title=chunk.title,
        text=chunk.text,
        start=chunk.start,
        end=chunk.end,
        sentence_start=span[0],
        sentence_end=span[1],
        score=round(score, 4),
        translation=translation,
    )


def translation_of(index, chunk, span: tuple[int, int]) -> dict | None:
    """A citation's `translation`: the English of its sentence (or sentences) and of its passage, or
    None without a rendering."""
    rendering = index.rendering(chunk)
    if rendering is None:
        return None
    quoted = [s for s in chunk.sentences if span[0] <= s[0] and s[1] <= span[1]]
    return {
        "lang": "en",
        "sentence": rendering.passage(quoted) if quoted else None,
        "text": rendering.passage(chunk.sentences),
    }


_ENDS = (".", "?", "!", ".)", '."', ":")


def _cut(index, chunk, end: int) -> bool:
    """Whether the chunker cut a sentence at this offset: its English rendering ends mid-sentence
    ("…led by President Hugo" | "Chávez, …"; 19 of the 67 rendered sentences end that way)."""
    rendering = index.rendering(chunk)
    english = rendering.ends.get(end) if rendering else None
    return bool(english) and not english.rstrip().endswith(_ENDS)


def _whole(index, candidate: dict, hits: list[Hit]) -> list[tuple]:
    """The quote as (passage, span) parts, widened to whole sentences where the chunker cut one (`_cut`).

    At its end: one part when a passage holds the quote and the rest of its sentence (its own, another
    retrieved one, or the next one of its document); else the rest comes as a second part, the quote's
    last piece with it, from a passage that holds them. At its start ("and which has led some Peruvian
    politicians …" continues "…the maritime boundary dispute,"): the piece before it leads, from its own
    passage or the one before. The scoring and the short answer keep the cut."""
    chunk, (a, b) = candidate["hit"].chunk, candidate["span"]

    def passages():  # the next passage of the document only when no other will do
        yield chunk
        yield from (h.chunk for h in hits)
        yield index.chunks.neighbour(chunk, 1)

    def run_on(start: int) -> tuple | None:
        for other in passages():
            if other is None or other.doc_id != chunk.doc_id or not other.start <= start < b <= other.end:
                continue
            end = b
            for s in (s for s in other.sentences if s[0] >= b):
                if not _cut(index, chunk, end):
                    break
                end = s[1]
            if end > b:
                return other, (start, end)
        return None

    parts = [(chunk, (a, b))]
    if _cut(index, chunk, b):
        last = [s for s in chunk.sentences if a < s[0] and s[1] == b]
        if whole := run_on(a):
            parts = [whole]
        elif last and (tail := run_on(last[0][0])):
            parts = [(chunk, (a, max(s[1] for s in chunk.sentences if s[1] <= last[0][0]))), tail]
    first, (a, b) = parts[0]
    if before := _piece_before(index, first, a):
        other, (x, _) = before
        parts[:1] = [(first, (x, b))] if other is first else [before, parts[0]]
    return parts


def _piece_before(index, chunk, start: int) -> tuple | None:
    """The piece of a sentence before `start` when the chunker cut the sentence there, as (passage, span):
    from this passage, else the one before it; None where a sentence begins."""
    other, before = chunk, [s for s in chunk.sentences if s[1] <= start]
    if not before:  # `start` opens its passage: the piece is in the one before
        other = index.chunks.neighbour(chunk, -1)
        before = [s for s in other.sentences if s[1] <= start] if other else []
    if before and start - before[-1][1] <= 2 and _cut(index, other, before[-1][1]):
        return other, before[-1]
    return None


def _run_on(index, candidate: dict) -> dict:
    """The candidate with the next sentence of its passage joined on. pythainlp's crfcut often ends a
    "sentence" mid-clause, and the answer to a why, how or what question runs on into the next one
    ("…ความคืบหน้า" | "น้อยมาก"). On dev, for the 42 such questions answered, the quote held the answer
    for 34 with the sentence alone and for 38 with the next one joined (the previous one added none).

    A whole sentence is not joined by one the chunker cut: that one runs on into the next passage, which
    becomes a second citation holding something else ("…from Mexico to Chile" took "However, some
    private-sector groups …", cited from the passage after). On dev: citation precision 0.835 -> 0.852,
    9 citations fixed; one answer lost ("How did ALBA come into being?", whose founding sentence had run
    on by chance). A quote that is itself cut still takes the next piece: it is the same sentence."""
    hit, (a, b) = candidate["hit"], candidate["span"]
    following = [s for s in hit.chunk.sentences if s[0] >= b]
    if not following or (not _cut(index, hit.chunk, b) and _cut(index, hit.chunk, following[0][1])):
        return candidate
    return _spanning(index, candidate, hit, (a, following[0][1]))


def _spanning(index, candidate: dict, hit: Hit, span: tuple[int, int]) -> dict:
    """The candidate quoting another span of a passage: its Thai, and its English when every sentence in
    it has a rendering."""
    chunk, (a, b) = hit.chunk, span
    rendering = index.rendering(chunk)
    quoted = [s for s in chunk.sentences if a <= s[0] and s[1] <= b]
    return {
        **candidate,
        "hit": hit,
        "span": span,
        "thai": chunk.text[a - chunk.start : b - chunk.start],
        "english": rendering.passage(quoted) if rendering else None,
    }


# Words that open a Thai clause continuing the one before: crfcut cut "[cause] | ทำให้ [effect]".
_CONTINUES = re.compile(r"\s*(?:ทำให้|ซึ่ง|โดย|จึง|และ|แต่|เพราะ|เนื่องจาก)")


def _run_back(index, candidate: dict, hits: list[Hit]) -> dict:
    """The candidate with the sentence before it joined on, when it opens by continuing that one; from
    another retrieved passage holding both if its own starts with it ("อะไรทำให้…มีทิศทางที่แตกต่างไป"
    asks for the cause, which the sentence before "ทำให้การรวมกลุ่ม…แตกต่างไปจากเดิม" gives)."""
    if not _CONTINUES.match(candidate["thai"]):
        return candidate
    (a, b), doc = candidate["span"], candidate["hit"].chunk.doc_id
    for hit in [candidate["hit"], *hits]:
        chunk = hit.chunk
        before = [s for s in chunk.sentences if s[1] <= a]
        if chunk.doc_id != doc or not before or (a, b) not in chunk.sentences:
            continue
        return _spanning(index, candidate, hit, (before[-1][0], b))
    return candidate


def _with_previous(index, candidate: dict, lang: str) -> set[str]:
    """The question's words that a candidate's sentence holds, or the sentence before it in its passage."""
    chunk, (a, _) = candidate["hit"].chunk, candidate["span"]
    before = [s for s in chunk.sentences if s[1] <= a]
    if not before:
        return candidate["words"]
    start, end = before[-1]
    rendering = index.rendering(chunk)
    english = rendering.sentences.get(before[-1]) if rendering else None
    thai = chunk.text[start - chunk.start : end - chunk.start]
    return candidate["words"] | covered(candidate["question_words"], lang, thai, english)


def _inside(candidate: dict, other: dict) -> bool:
    """Whether a candidate's sentence lies inside another's quoted span of the same document."""
    (a, b), (x, y) = candidate["span"], other["span"]
    return candidate["hit"].chunk.doc_id == other["hit"].chunk.doc_id and x <= a and b <= y


def _titled(index, chunk) -> str:
    """A passage with its document's title, in Thai and, where rendered, in English."""
    rendering = index.rendering(chunk)
    english = f"{rendering.title} {rendering.passage(chunk.sentences) or ''}" if rendering else ""
    return f"{chunk.title} {chunk.text} {english}"


def _short_answer(index, candidate: dict, citation: Citation, question: str, reply: str) -> dict | None:
    """The one span of the quoted sentence that answers a date/number/name question, else None (never a
    guess). Offsets are into the source document; an English answer shows the English of that span."""
    kind = candidate["kind"]
    if kind not in extraction.SHORT_KINDS:
        return None
    thai, base = candidate["thai"], candidate["span"][0]
    holders = candidate["holders"]

    def fitting(text: str) -> list[tuple[int, int]]:
        found = extraction.spans(
            text, kind, index.entities, candidate["asked"], holders=holders, unit=candidate["unit"]
        )
        return _anchored(found, text, candidate, question, index.entities)

    found = fitting(thai)
    if reply != "en" or not candidate["english"]:
        if len(found) != 1:
            return None
        (a, b), shown = found[0], thai[found[0][0] : found[0][1]]
    else:
        english = candidate["english"]
        english_found = fitting(english)
        if len(english_found) != 1:
            return None
        shown = english[english_found[0][0] : english_found[0][1]]
        counterpart = _counterpart(shown, kind, thai, found, index.entities)
        if counterpart is None:
            return None
        a, b = counterpart
    return {"text": shown.strip(), "citation": citation.n, "start": base + a, "end": base + b}


def _anchored(found: list[tuple[int, int]], text: str, candidate: dict, question: str, entities) -> list:
    """Of several dates or numbers in a sentence, the one whose clause best holds the question's words,
    when exactly one does ("When did Chile withdraw?" in "Venezuela joined in 1973 and withdrew in 2006,
    while Chile withdrew in 1976": 1976). A span's clause is the text between the span before it and
    itself. Names are left alone: several names are a list ("Bolivia, Colombia, Ecuador and Peru").

    - Words every clause holds tell none apart ("ปี" in "ปีไหน").
    - A clause that names nobody takes the name before it as its subject ("เวเนซุเอลาเข้าร่วมในปี 1973
      และถอนตัวในปี 2006": Venezuela withdrew in 2006).
    - A word of a name counts half: the verb tells the clauses apart. "When did Venezuela leave?"
      meets neither "joined" nor "withdrew", and Venezuela is the subject of both first clauses: a tie,
      so no short answer rather than 1973.
    """
    if len(found) < 2:
        return found
    if candidate["kind"] in extraction.ENTITY_KINDS:
        return _anchored_name(found, text, candidate, question, entities)
    # A follow-up's "ประเทศนั้น", "it" stands for a name of the conversation, which counts as if asked.
    lang = language(question)
    words = candidate["question_words"] | candidate["referents"]
    named = candidate["named"] | candidate["referents"]
    ends = [0] + [b for _, b in found[:-1]]
    clauses, subject = [], set()
    for e, (a, _) in zip(ends, found):
        clause = text[e:a]
        held = covered(words, lang, clause, clause)
        if extraction.names_in(clause, entities):
            subject = held & named
        clauses.append(held | subject)
    common = set.intersection(*clauses)
    clauses = [c - common for c in clauses]
    scores = [sum(0.5 if w in named else 1.0 for w in c) for c in clauses]
    best = max(scores)
    return [found[scores.index(best)]] if best and scores.count(best) == 1 else found


# Between two names of one list: "Bolivia, Colombia, Ecuador and Peru", "ชิลี เปรู และเม็กซิโก", "Chile,
# Peru and Colombia, together with Mexico"; a name and its other form in brackets ("LAN Chile") too.
_LISTED = re.compile(
    r"[\s,;:()/–-]*(?:and|or|together with|as well as|along with|และ|หรือ|รวมทั้ง|รวมถึง|กับ)?[\s,;:()/–-]*",
    re.IGNORECASE,
)


# The nouns that say what kind of name is asked for ("ประเทศใด", "Which company"): every candidate is one,
# so they tell none apart (on dev, "ประเทศ" elsewhere in the sentence picked Peru as the winner of a war
# the document does not say the outcome of).
_KIND_NOUNS = (
    "ประเทศ บริษัท สายการบิน องค์กร องค์การ กลุ่ม เมือง กรุง พรรค country countries nation company companies "
    "firm airline organisation organization group city capital party"
)


# The nouns that ask for a date ("What date …", "ปีไหน"): a date answers them, as a name answers the above.
_DATE_NOUNS = "ปี วันที่ วัน เดือน date year day month"


@lru_cache(maxsize=4)
def _nouns(nouns: str, lang: str) -> frozenset[str]:
    """The content words of `_KIND_NOUNS` or `_DATE_NOUNS` in a language (newmm or the English stemmer,
    read once)."""
    return frozenset(content_words(nouns, lang))


def _asked_words(candidate: dict, held: set[str], lang: str) -> set[str]:
    """The question's words a quote is measured against. The noun of the kind asked for ("เมืองไหน", "which
    country", "what date") is answered by a name or a date: it counts when the quote says it, not against
    it when it does not ("ALBA ตั้งขึ้นที่เมืองไหน" is answered by "…ที่กรุงฮาวานา"; on dev "What date was
    ALBA actually set up?" was refused for want of "date")."""
    kind, words = candidate["kind"], candidate["question_words"]
    nouns = _KIND_NOUNS if kind in extraction.ENTITY_KINDS else _DATE_NOUNS if kind == "date" else None
    return words - (_nouns(nouns, lang) - held) if nouns else words


def _anchored_name(found: list[tuple[int, int]], text: str, candidate: dict, question: str, entities) -> list:
    """Of several names in a sentence, the one standing next to the question's words, when exactly one
    does and it is not part of a list ("Which country wants to join APEC?" in "Chile, Peru and Mexico
    are members of APEC, which Colombia wants to join": Colombia). A name's neighbourhood is the text
    after it, up to the next name, when the question asks for a subject; the text before it, back to the
    name before, for a Thai question ending in its question word; else whichever of the two holds more
    of the question's words. Words every neighbourhood holds, the question's own names and the nouns of
    the kind asked for tell nothing apart. A list of names is one unit: when the best unit is a list, or
    two units tie, there is no short answer; nor for a question asking for several."""
    if extraction.asks_for_several(question):
        return found
    units = [[found[0]]]
    for a, b in found[1:]:
        gap = text[units[-1][-1][1] : a]
        # ", and" after a single name joins clauses ("Chile, and Ecuador lies …"); after a list, it ends
        # the list ("Colombia, Ecuador, and Peru").
        if _LISTED.fullmatch(gap) and not (len(units[-1]) == 1 and re.fullmatch(r",\s*and\s+", gap)):
            units[-1].append((a, b))
        else:
            units.append([(a, b)])
    if len(units) < 2:
        return found
    words, lang = candidate["question_words"], language(question)
    named = candidate["named"] | _nouns(_KIND_NOUNS, lang)
    starts = [u[0][0] for u in units[1:]] + [len(text)]  # where the next unit starts
    ends = [0] + [u[-1][1] for u in units]  # where the previous unit ends
    sides = []
    for i, unit in enumerate(units):
        before, after = text[ends[i] : unit[0][0]], text[unit[-1][1] : starts[i]]
        sides.append([covered(words, lang, t, t) for t in (before, after)])
    if extraction.asks_for_subject(question):
        sides = [[after] for _, after in sides]
    elif lang == "th":  # "…อยู่ในประเทศอะไร": the name follows the words it answers
        sides = [[before] for before, _ in sides]
    common = set.intersection(*(set().union(*pair) for pair in sides))
    scores = [max(len(side - common - named) for side in pair) for pair in sides]
    best = max(scores)
    if not best or scores.count(best) != 1:
        return found
    unit = units[scores.index(best)]
    rows = {entities.row(text[a:b]) for a, b in unit}
    if len(rows) != 1 or None in rows:
        return found
    # The name as the glossary gives it first ("LAN Chile" rather than "national airline" beside it).
    thai, english, _ = entities[rows.pop()]
    first = {thai[0].lower(), english[0].lower()} if english else {thai[0].lower()}
    return [next((s for s in unit if text[s[0] : s[1]].lower() in first), unit[0])]


def _counterpart(english: str, kind: str, thai: str, thai_spans, entities) -> tuple[int, int] | None:
    """The span of the Thai sentence that an English short answer renders, or None when unsure."""
    if kind in extraction.ENTITY_KINDS:
        row = entities.row(english)
        if row is None:
            return None
        # The Thai form, else the name as the Thai text writes it in Latin script ("นาย Alan Garcia Perez").
        for forms in entities[row][:2]:
            spans = [s for s in thai_spans if thai[s[0] : s[1]].lower() in {f.lower() for f in forms}]
            if spans:
                return spans[0] if len(spans) == 1 else None
        return None
    numbers = set(extraction.digits(english))
    numbers |= {str(int(n) + 543) for n in numbers if len(n) == 4}  # a CE year in English, BE in Thai
    spans = [s for s in thai_spans if numbers & set(extraction.digits(thai[s[0] : s[1]]))]
    return spans[0] if len(spans) == 1 else None


def _evidence(index, hits: list[Hit], ranked: list[dict], chosen: list[dict], lang: str) -> decision.Evidence:
    """What the decision model reads: the signals the pipeline computed on its way to the quote."""
    first = chosen[0]
    words, kind, names = first["question_words"], first["kind"], first["asked"]
    # With the sentence before each (crfcut often leaves the subject there).
    around = [_with_previous(index, c, lang) for c in chosen]
    dense = sorted((h.dense_score for h in hits), reverse=True)
    texts = " ".join(_titled(index, c["hit"].chunk) for c in chosen).lower()
    missing = [forms for forms in names if not any(f.lower() in texts for f in forms)]
    # What the question says of its names, against the quote's own words less those most passages hold.
    said = words - first["named"]
    quoted = {w for c in chosen for w in c["words"] if not index.common(w, english=lang == "en")}
    sentence = " ".join(f"{c['thai']} {c['english'] or ''}" for c in chosen).lower()
    signals = {
        "english": float(lang == "en"),
        "follow_up": float(first["follow_up"]),
        "dense_best": dense[0],
        "dense_margin": dense[0] - dense[1] if len(dense) > 1 else 0.0,
        "rerank_margin": hits[0].score - hits[1].score if len(hits) > 1 else 0.0,
        "lexical_top": float(hits[0].lexical_rank is not None),
        "quote_similarity": first["similarity"],
        "quote_score": first["score"],
        # A glossary row is offered beside the retrieved passages, not below them.
        "quote_rank": 0.0 if first["hit"].chunk.doc_id in index.chunks.glossary_docs else float(first["rank"]),
        "score_margin": ranked[0]["score"] - ranked[1]["score"] if len(ranked) > 1 else 0.0,
        "word_share": len(first["words"]) / len(words) if words else 0.0,
        "word_share_around": len(set().union(*around)) / len(words) if words else 0.0,
        "words": math.log1p(len(words)),
        "names_asked": float(len(names)),
        "names_missing": len(missing) / len(names) if names else 0.0,
        "on_topic": float(_names(index, first["hit"].chunk, first["about"])),
        "kind_date": float(kind == "date"),
        "kind_number": float(kind in ("number", "distance")),
        "kind_name": float(kind in extraction.ENTITY_KINDS),
        "kind_reason": float(kind == "reason"),
        "kind_open": float(kind not in extraction.TYPED_KINDS),
        "fits": float(first["fits"]),
        "fits_any": float(any(c["fits"] for c in chosen)),
        "said_share": len(said & quoted) / len(said) if said else 1.0,
        "names_in_quote": sum(any(f.lower() in sentence for f in forms) for forms in names) / len(names)
        if names
        else 1.0,
        "similarity_gap": max(c["similarity"] for c in ranked) - first["similarity"],
        "quote_glossary": float(first["hit"].chunk.doc_id in index.chunks.glossary_docs),
    }
    return decision.Evidence(signals)


# How many questions a "not found" reply suggests.
SUGGESTIONS = 3


def suggestions(index, hits: list[Hit], question: str, reply: str) -> list[str]:
    """Questions the documents can answer, about the organisations the passages nearest this question
    name: each has a note of its own, whose opening an overview question quotes (`overview`)."""
    out = []
    # Then those the documents' titles name: the nearest passages may be glossary rows of places and
    # terms that name none ("สูตรต้มยำกุ้งมีอะไรบ้าง").
    texts = [*(f"{hit.chunk.title} {hit.chunk.text}" for hit in hits), *(d["title"] for d in index.chunks.documents)]
    for text in texts:
        for _, _, row in index.entities.find(text):
            thai, english, kind = index.entities[row]
            if kind != "organisation" or _about(index, (*thai, *english)) is None:
                continue
            asked = f"{thai[0]} คืออะไร" if reply == "th" or not english else f"What is {english[0]}?"
            if asked not in out and asked.lower() != question.lower():
                out.append(asked)
            if len(out) == SUGGESTIONS:
                return out
    return out


def _opening(index, chunk: Chunk, ranked: list[dict], question: str, lang: str) -> dict:
    """A candidate quoting the first sentence of a passage (the sentence defining what its note is about)."""
    span = chunk.sentences[0]
    rendering = index.rendering(chunk)
    hit = Hit(chunk=chunk, score=0.0, dense_score=0.0, dense_rank=None, lexical_rank=None)
    template = ranked[0] if ranked else {"question_words": set(), "asked": [], "named": set(), "about": []}
    return {
        **template,
        "hit": hit,
        "span": span,
        "rank": 0,
        "similarity": 0.0,
        "score": 0.0,
        "typed": False,
        "fits": False,
        "words": set(),
        "kind": None,
        "holders": None,
        "unit": None,
        "follow_up": False,
        "thai": chunk.text[span[0] - chunk.start : span[1] - chunk.start],
        "english": rendering.sentences.get(span) if rendering else None,
    }


def _context(index, row: Chunk, ranked: list[dict]) -> list[dict]:
    """The best-ranked sentence of the documents naming what a glossary row names (a row defines a name in a
    few words; the documents say what it did), or none."""
    thai, english, _ = index.entities[index.entities.find(row.text)[0][2]]
    forms = [f.lower() for f in (*thai, *english) if len(f) > 2]
    for candidate in ranked:
        text = f"{candidate['thai']} {candidate['english'] or ''}".lower()
        if candidate["hit"].chunk.doc_id not in index.chunks.glossary_docs and any(f in text for f in forms):
            return [candidate]
    return []


def _about(index, forms: tuple[str, ...]):
    """The first passage of the document whose title names one of these forms (a note about it), or None."""
    wanted = [f.lower() for f in forms if len(f) > 2]
    for position, doc in enumerate(index.chunks.documents):
        if any(f in doc["title"].lower() for f in wanted):
            rows = np.flatnonzero(index.chunks.arrays["doc"] == position)
            return index.chunks[int(rows[0])] if len(rows) else None
    return None


# "Tell me about X", "What is X?", "Give me an overview of X", "เล่าเรื่อง X ให้ฟังหน่อย", "X คืออะไร": the
# words around a name that ask for an overview of it, stripped from both ends until only the name is left.
_OVERVIEW_BEFORE = re.compile(
    r"^(?:(?:can you |could you |please )?(?:tell me (?:more )?about|give me an overview of|an overview of|"
    r"describe|explain|what (?:is|are|was|were)|what's|who (?:is|are|was|were))\b|"
    r"(?:ช่วย)?(?:เล่า(?:เรื่อง|ให้ฟัง)?(?:ของ|เกี่ยวกับ)?|อธิบาย(?:เรื่อง|เกี่ยวกับ)?|ข้อมูล(?:เกี่ยวกับ)?|รู้จัก))"
    r"\s*(?:the\s+)?",
    re.IGNORECASE,
)
_OVERVIEW_AFTER = re.compile(
    r"\s*(?:คือ(?:องค์กร|องค์การ|กลุ่ม|บริษัท)?อะไร|คืออะไร|เป็น(?:องค์กร|องค์การ|บริษัท)?อะไร|(?:คือ|เป็น)ใคร|ให้ฟัง|หน่อย|ครับ|ค่ะ|คะ|นะ|"
    r"บ้าง|โดยย่อ|[?!.。\s])+$",
    re.IGNORECASE,
)


def overview(retriever: Retriever, question: str) -> Chunk | None:
    """The passage an overview question is answered from: the opening of the note about the organisation it
    names, else the glossary's row of the name (a person, a treaty, a company). None when the question is
    not one (more than a name is asked) or neither exists."""
    index = retriever.index
    rest, before = question.strip(), None
    while rest != before:
        before, rest = rest, _OVERVIEW_AFTER.sub("", _OVERVIEW_BEFORE.sub("", rest)).strip()
    if rest == question.strip().rstrip("?!. "):
        return None  # nothing asked for an overview
    found = index.entities.find(rest)
    if len(found) != 1 or found[0][:2] != (0, len(rest)):
        return None
    thai, english, kind = index.entities[found[0][2]]
    if kind == "organisation" and (note := _about(index, (*thai, *english))) is not None:
        return note
    # A row with a note defines its name; a country's ("ประเทศ") does not, the documents say more of it.
    row = retriever.glossary_row(found[0][2]) if kind != "country" else None
    return row if row is not None and row.text.split("|")[-1].strip() else None


# "What is Santos's full name?", "How do you write Guyana in Thai?", "What does APEC stand for?", "Humala
# ภาษาไทยเขียนว่าอะไร": a question about a name's forms, which its glossary row gives (Thai, English, note).
_NAME_FORM = re.compile(
    r"\b(?:full name|first name|spell(?:ed|t)?|written|write|in thai|in english|thai name|english name|"
    r"stand for|short for|abbreviation)\b|ชื่อเต็ม|ชื่อต้น|สะกด|เขียนว่า|ภาษาอังกฤษ|ภาษาไทย|ย่อมาจาก",
    re.IGNORECASE,
)


def name_form(retriever: Retriever, question: str) -> Chunk | None:
    """The glossary row of the one name a question about a name's forms asks about, or None."""
    if not _NAME_FORM.search(question):
        return None
    rows = {row for _, _, row in retriever.index.entities.find(question)}
    own = [chunk for row in rows if (chunk := retriever.glossary_row(row)) is not None]
    return own[0] if len(own) == 1 else None
