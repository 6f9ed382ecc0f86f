"""Thai-aware chunking: crfcut sentences grouped into overlapping passages inside one paragraph."""

from __future__ import annotations

import re
from dataclasses import dataclass

from assistant.thai import has_thai, sentence_spans, split_long, strip_span
from assistant.types import Chunk, Document

_BLANK_LINES = re.compile(r"\n[ \t]*\n")
# Bump when the chunking code changes what it produces: an index built by older code is then stale.
# 3: the glossary's rows that state a fact (a role, a term of office, a capital) are passages too.
# 4: every row is: a name's Thai and English forms are a fact too ("How do you write Guyana in Thai?").
CHUNKER_VERSION = 4


@dataclass(frozen=True)
class ChunkParams:
    """How passages are cut; the values come from `Config` (`index.chunk_params`), their one source."""

    min_chars: int
    max_chars: int
    overlap_sentences: int

    def as_dict(self) -> dict:
        return {
            "min_chars": self.min_chars,
            "max_chars": self.max_chars,
            "overlap_sentences": self.overlap_sentences,
            "version": CHUNKER_VERSION,
        }


def paragraphs(doc: Document) -> list[tuple[int, int]]:
    """Paragraph spans: one per line in .txt, blank-line separated blocks in Markdown.

    A Markdown block made only of headings joins the block after it, so no passage is a bare title.
    """
    separator = _BLANK_LINES if doc.source.endswith(".md") else re.compile(r"\n")
    spans, pos = [], 0
    for match in list(separator.finditer(doc.text)) + [None]:
        end = match.start() if match else len(doc.text)
        if doc.text[pos:end].strip():
            spans.append(strip_span(doc.text, pos, end))
        pos = match.end() if match else pos
    merged: list[tuple[int, int]] = []
    pending = None
    for a, b in spans:
        if pending is not None:
            a, pending = pending, None
        block = doc.text[a:b]
        if doc.source.endswith(".md") and all(
            line.lstrip().startswith("#") for line in block.splitlines() if line.strip()
        ):
            pending = a
            continue
        merged.append((a, b))
    if pending is not None:
        merged.append(strip_span(doc.text, pending, len(doc.text)))
    return merged


def sentences(doc: Document, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """Sentence spans of one paragraph: crfcut per line, over-long sentences cut at word boundaries."""
    spans = []
    pos = start
    for line in doc.text[start:end].split("\n"):
        a, b = strip_span(doc.text, pos, pos + len(line))
        pos += len(line) + 1
        if a == b:
            continue
        for s, e in sentence_spans(doc.text, a, b):
            spans.extend(split_long(doc.text, s, e, max_chars))
    return spans


def split(documents, params: ChunkParams) -> list[Chunk]:
    """Chunks of every document, in document order, the glossary's rows last; never across documents or
    paragraphs."""
    chunks, rows = [], []
    for doc in documents:
        if doc.is_glossary:
            rows.extend(_glossary_chunks(doc))
            continue
        number = 0
        for paragraph, (p_start, p_end) in enumerate(paragraphs(doc), start=1):
            spans = sentences(doc, p_start, p_end, params.max_chars)
            for group in _groups(spans, params):
                number += 1
                chunks.append(_passage(doc, number, paragraph, group))
    # The glossary's rows last: the lexical index holds the documents' passages only (`index.build`).
    return chunks + rows


def _glossary_chunks(doc: Document) -> list[Chunk]:
    """One passage per glossary row: "ประธานาธิบดีซานโตส, ซานโตส | Juan Manuel Santos, Santos |
    ประธานาธิบดีของโคลอมเบียในเวลาที่เอกสารเขียน (ดำรงตำแหน่ง ค.ศ. 2010-2018)", the names and the note (the
    kind column is the glossary's own bookkeeping). The header row is not one."""
    chunks, pos, header = [], 0, True
    for number, line in enumerate(doc.text.split("\n")):
        start, pos = pos, pos + len(line) + 1
        pipes = [start + i for i, ch in enumerate(line) if ch == "|"]
        if not line.startswith("|") or len(pipes) < 4 or set(line) <= set("|-: "):
            continue
        if header or not has_thai(doc.text[start : pipes[1]]):
            header = False  # the table's first row names its columns
            continue
        chunks.append(_passage(doc, len(chunks) + 1, number, [strip_span(doc.text, pipes[0] + 1, pipes[3])]))
    return chunks


def _passage(doc: Document, number: int, paragraph: int, sentences: list[tuple[int, int]]) -> Chunk:
    """Passage `number` of a document: these sentences, from the first's start to the last's end."""
    a, b = sentences[0][0], sentences[-1][1]
    return Chunk(
        chunk_id=f"{doc.doc_id}#{number}",
        doc_id=doc.doc_id,
        source=doc.source,
        title=doc.title,
        paragraph=paragraph,
        start=a,
        end=b,
        text=doc.text[a:b],
        sentences=tuple(sentences),
    )


def _groups(spans: list[tuple[int, int]], params: ChunkParams) -> list[list[tuple[int, int]]]:
    """Consecutive sentences up to about max_chars, each group overlapping the previous one.

    Every group adds at least one sentence the previous group did not have, so no chunk is a
    subset of its neighbour.
    """
    groups, i, fresh = [], 0, 0  # fresh: the first sentence no group holds yet
    while i < len(spans):
        j = max(i + 1, fresh + 1)
        while (
            j < len(spans)
            and spans[j - 1][1] - spans[i][0] < params.min_chars
            and spans[j][1] - spans[i][0] <= params.max_chars
        ):
            j += 1
        groups.append(spans[i:j])
        fresh = j
        if j >= len(spans):
            break
        i = max(i + 1, j - params.overlap_sentences)
        if spans[j][1] - spans[i][0] > params.max_chars:
            i = j  # the overlap would leave no room for the next sentence
    return groups
