"""The answering pipeline opened once, the terminal chat's conversation, and answers as plain text."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from assistant import embedding, index
from assistant.answering import PHRASES, Answerer, Answering
from assistant.config import Config
from assistant.retrieval import Retriever
from assistant.types import Answer, Turn


def open_assistant(config: Config, progress: bool = True, embed_model=None) -> Answering:
    """Load the model (unless given one) and the index (building or rebuilding it as needed) once, and
    answer over them (see `pipeline`)."""
    embed_model = embed_model or embedding.load(config)
    return pipeline(index.open_index(config, embed_model, progress=progress), config)


def pipeline(loaded: index.Index, config: Config) -> Answering:
    """The answerer over an index in memory; with an LLM configured, answers are written by it on top
    of the same retrieval."""
    answerer = Answerer(Retriever(loaded), config)
    if config.llm == "extractive":
        return answerer
    from assistant.llm import LLMAnswerer

    return LLMAnswerer(answerer, config)


@dataclass
class Conversation:
    """The terminal chat's turns so far (the web chat's live in the visitor's browser)."""

    answerer: Answering
    turns: list[Turn] = field(default_factory=list)
    answer_language: str = "auto"  # "auto" answers in each question's language

    def stream(self, question: str) -> Iterator[str | Answer]:
        """Text as it is written (with an LLM), then the final Answer, which joins the conversation."""
        for event in self.answerer.stream(question, tuple(self.turns), answer_language=self.answer_language):
            if isinstance(event, Answer):
                self.turns += [Turn("user", event.question), Turn("assistant", event.answer)]
            yield event

    def clear(self) -> None:
        self.turns.clear()


def render(answer: Answer) -> str:
    """Plain text: the answer, then each citation with its source and position; a not-found reply's
    suggested questions."""
    reply = answer.answer_language or answer.language
    notice = answer.generation.get("notice")
    short = answer.short_answer
    lines = (
        ([f"{PHRASES[reply]['short']}: {short['text']}"] if short else [])
        + ([f"({notice})"] if notice else [])
        + [answer.answer]
    )
    if answer.citations:
        lines += ["", PHRASES[reply]["sources"] + ":"]
        for c in answer.citations:
            lines.append(f"[{c.n}] {c.title} — {c.source}, {c.chunk_id}, chars {c.sentence_start}–{c.sentence_end}")
            english = (c.translation or {}).get("sentence")
            if reply == "en" and english:
                lines.append(f"    {english}")
                lines.append(f"    (th) {c.sentence}")
            else:
                lines.append(f"    {c.sentence}")
    if answer.suggestions:
        lines += ["", PHRASES[reply]["suggest"]] + [f"  - {s}" for s in answer.suggestions]
    return "\n".join(lines)
