"""English renderings of corpus documents: one English sentence per source sentence, keyed by its span."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from assistant.errors import CorpusError
from assistant.types import Document

# `alba.md` is rendered in `alba.en.yaml`, `x.th.txt` in `x.th.en.yaml`, beside the document.
SUFFIX = ".en.yaml"


@dataclass(frozen=True)
class Rendering:
    """A document's English rendering: its title and each source sentence's (start, end) -> English."""

    doc_id: str
    title: str
    sentences: dict[tuple[int, int], str]

    @cached_property
    def ends(self) -> dict[int, str]:
        """Each sentence's English by the offset where its source sentence ends."""
        return {end: english for (_, end), english in self.sentences.items()}

    def passage(self, spans) -> str | None:
        """The English of consecutive source sentences, or None when one of them has no rendering."""
        parts = [self.sentences.get(tuple(span)) for span in spans]
        return " ".join(parts) if all(parts) else None


def path_for(document_path: Path) -> Path:
    return document_path.with_suffix(SUFFIX)


def fingerprint(document: Document) -> str:
    """What a rendering records as the version of the source it renders: SHA-256 of the document text."""
    return hashlib.sha256(document.text.encode("utf-8")).hexdigest()


def load(corpus_dir: Path, documents) -> tuple[dict[str, Rendering], tuple[CorpusError, ...]]:
    """The usable renderings by doc_id, and a problem for each one that is malformed or stale.

    A stale rendering (its source changed since it was written) is reported and not used until fixed;
    a document without a rendering is simply Thai-only.
    """
    renderings, problems = {}, []
    for doc in documents:
        path = path_for(corpus_dir / doc.source)
        if doc.is_glossary or not path.is_file() or path.is_symlink():
            continue
        name = path.relative_to(corpus_dir).as_posix()
        try:
            renderings[doc.doc_id] = _read(path, name, doc)
        except CorpusError as error:
            problems.append(error)
    return renderings, tuple(problems)


def _read(path: Path, name: str, doc: Document) -> Rendering:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise CorpusError(name, f"unreadable English rendering ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
        raise CorpusError(name, "an English rendering needs `source_sha256` and a list of `sentences`")
    if data.get("source_sha256") != fingerprint(doc):
        raise CorpusError(
            name,
            f"stale English rendering: {doc.source} changed since it was written; "
            "update the sentences and `source_sha256`, it is not used until then",
        )
    sentences = {}
    for number, entry in enumerate(data["sentences"], start=1):
        span = entry.get("span") if isinstance(entry, dict) else None
        english = entry.get("en") if isinstance(entry, dict) else None
        if (
            not isinstance(span, list)
            or len(span) != 2
            or not all(isinstance(x, int) for x in span)
            or not isinstance(english, str)
            or not english.strip()
        ):
            raise CorpusError(name, f"sentence {number} needs `span: [start, end]` and a non-empty `en`")
        a, b = span
        if not 0 <= a < b <= len(doc.text) or doc.text[a:b] != entry.get("th"):
            raise CorpusError(name, f"sentence {number}: span {a}–{b} is not its `th` text in {doc.source}")
        sentences[(a, b)] = " ".join(english.split())
    return Rendering(doc.doc_id, str(data.get("title") or doc.meta.get("title_en") or doc.title), sentences)


def coverage(rendering: Rendering, spans) -> list[tuple[int, int]]:
    """The sentence spans (as the chunker cut them) that the rendering lacks: any makes it unusable."""
    return [tuple(s) for s in spans if tuple(s) not in rendering.sentences]
