"""Corpus loading: .txt and .md files with metadata, normalised, each problem reported per file."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from assistant.errors import CorpusError, EmptyCorpusError
from assistant.thai import has_thai, normalise
from assistant.types import Document

SUFFIXES = (".txt", ".md")
SIDECAR = ".meta.yaml"  # metadata for a file that must stay byte-identical, e.g. x.th.txt -> x.th.meta.yaml
MAX_FILE_BYTES = 20_000_000
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.DOTALL)
_TABLE_ROW = re.compile(r"^\|(.+)\|\s*$")


@dataclass(frozen=True)
class Corpus:
    documents: tuple
    problems: tuple  # CorpusError per file that could not be used


def files(corpus_dir: Path) -> list[Path]:
    """The files that make up the corpus, in a stable order; symbolic links are left out (see `links`)."""
    if not corpus_dir.is_dir():
        raise EmptyCorpusError(f"Corpus directory {corpus_dir} does not exist.")
    return sorted(
        p for p in corpus_dir.rglob("*") if p.suffix in SUFFIXES and p.is_file() and not _linked(p, corpus_dir)
    )


def links(corpus_dir: Path) -> list[Path]:
    """Symbolic links in the corpus folder: never followed, so a link to a system file is not indexed."""
    return sorted(
        p
        for p in corpus_dir.rglob("*")
        if p.is_symlink() and (p.suffix in SUFFIXES or p.name.endswith(SIDECAR) or p.is_dir())
    )


def _linked(path: Path, corpus_dir: Path) -> bool:
    """Whether the path or a folder between it and the corpus folder is a symbolic link."""
    while path != corpus_dir:
        if path.is_symlink():
            return True
        path = path.parent
    return False


def content_hash(corpus_dir: Path) -> str:
    """Hash of every corpus file's name and bytes (sidecars and English renderings, every `.yaml`, too):
    the index is stale when it changes."""
    digest = hashlib.sha256()
    paths = files(corpus_dir) + [p for p in corpus_dir.rglob("*.yaml") if not _linked(p, corpus_dir)]
    for path in sorted(paths):
        digest.update(path.relative_to(corpus_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def load(corpus_dir: Path) -> Corpus:
    """Every readable document; unreadable files become problems, not failures."""
    documents, problems = [], []
    for link in links(corpus_dir):
        problems.append(
            CorpusError(
                link.relative_to(corpus_dir).as_posix(),
                "symbolic link, skipped: copy the file into the corpus folder instead",
            )
        )
    for path in files(corpus_dir):
        try:
            documents.append(read(path, corpus_dir))
        except CorpusError as error:
            problems.append(error)
    if not documents:
        detail = "; ".join(str(p) for p in problems) or "no .txt or .md files"
        raise EmptyCorpusError(f"No usable document in {corpus_dir}: {detail}")
    return Corpus(tuple(documents), tuple(problems))


def read(path: Path, corpus_dir: Path) -> Document:
    name = path.relative_to(corpus_dir).as_posix()
    raw = path.read_bytes()
    if len(raw) > MAX_FILE_BYTES:
        raise CorpusError(name, f"file is larger than {MAX_FILE_BYTES // 1_000_000} MB")
    if b"\0" in raw:
        raise CorpusError(name, "binary file (contains NUL bytes), expected UTF-8 text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CorpusError(name, f"not valid UTF-8 (byte {error.start}); save it as UTF-8") from None
    text = normalise(text)
    meta, text = _front_matter(name, text)
    sidecar = path.with_suffix(SIDECAR)
    if sidecar.is_file() and not sidecar.is_symlink():
        meta = {**_yaml(name, sidecar.read_text(encoding="utf-8")), **meta}
    if not text.strip():
        raise CorpusError(name, "empty file")
    title = str(meta.get("title") or _first_heading(text) or path.stem)
    return Document(
        doc_id=path.stem if path.parent == corpus_dir else name.rsplit(".", 1)[0],
        source=name,
        title=normalise(title),
        text=text,
        meta=meta,
    )


def _front_matter(name: str, text: str) -> tuple[dict, str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    return _yaml(name, match.group(1)), text[match.end() :]


def _yaml(name: str, text: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise CorpusError(name, f"malformed front matter: {error}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise CorpusError(name, "front matter must be a mapping of keys to values")
    return data


def _first_heading(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return None


def glossary_rows(documents) -> list[tuple[tuple[str, ...], tuple[str, ...], str, str]]:
    """(Thai forms, English forms, kind, note) for each table row of the `role: glossary` documents.

    `kind` is the fourth column (country, city, place, company, person, organisation, event, term), or "term";
    `note` the third ("ประธานาธิบดีของเวเนซุเอลา"), or "".
    """
    rows = []
    for doc in documents:
        if not doc.is_glossary:
            continue
        lines = doc.text.splitlines()
        for line, after in zip(lines, lines[1:] + [""]):
            row = _TABLE_ROW.match(line.strip())
            if not row or set(after.strip()) <= set("|-: ") and after.strip():
                continue  # not a row, or the header row above the |---| separator
            cells = [c.strip() for c in row.group(1).split("|")]
            if len(cells) < 2 or not has_thai(cells[0]) or has_thai(cells[1]):
                continue
            thai = tuple(t.strip() for t in cells[0].split(",") if t.strip())
            latin = tuple(t.strip() for t in cells[1].split(",") if t.strip().strip("-"))
            kind = cells[3].strip().lower() if len(cells) > 3 and cells[3].strip() else "term"
            rows.append((thai, latin, kind, cells[2].strip() if len(cells) > 2 else ""))
    return rows


def glossary(documents) -> dict[str, tuple[str, ...]]:
    """Latin name (lower-case) -> its Thai forms, from the glossary rows.

    Lets an English question reach Thai passages through the lexical retriever.
    """
    terms: dict[str, set[str]] = {}
    for thai, latin, *_ in glossary_rows(documents):
        for name in latin:
            terms.setdefault(name.lower(), set()).update(thai)
    return {k: tuple(sorted(v)) for k, v in sorted(terms.items())}
