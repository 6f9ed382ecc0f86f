"""Visitors' feedback: the bounded, rotated JSON Lines log the web writes and the CLI reads."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from assistant.errors import InvalidQuestionError

MAX_COMMENT_CHARS = 500
_THAI = re.compile(r"[\u0e00-\u0e7f]")


def validate_comment(text: str | None) -> str:
    """A visitor's comment on an answer, trimmed; empty is allowed (the comment is optional)."""
    text = (text or "").strip()
    if len(text) > MAX_COMMENT_CHARS:
        raise InvalidQuestionError(
            f"The comment is {len(text):,} characters; the limit is {MAX_COMMENT_CHARS}. "
            f"· ความคิดเห็นยาวเกิน {MAX_COMMENT_CHARS} ตัวอักษร"
        )
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text):
        raise InvalidQuestionError("The comment contains control characters. · ความคิดเห็นมีอักขระควบคุม")
    return text


class FeedbackLog:
    """Thumbs up/down (and optional comments on them) appended as JSON Lines; one writer at a time,
    rotated past a size (one older file kept as `.1`), the file survives restarts."""

    def __init__(self, path: Path, max_bytes: int):
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def append(self, liked: bool, answer: dict, comment: str = "") -> None:
        record = {
            "time": _now(),
            "liked": liked,
            "answer_id": answer.get("id"),
            "question": answer["question"][:2000],
            "answer": answer["answer"][:4000],
            "citations": [
                {k: c[k] for k in ("n", "chunk_id", "source", "start", "end")} for c in answer["citations"][:10]
            ],
        }
        if comment:
            record["comment"] = validate_comment(comment)
        self._write(record)

    def comment(self, answer: dict, liked: bool, text: str) -> None:
        """A comment written after the thumb: its own line, bound to the rated answer's id."""
        self._write({"time": _now(), "liked": liked, "answer_id": answer.get("id"), "comment": validate_comment(text)})

    def _write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_file() and self.path.stat().st_size + len(line.encode()) > self.max_bytes:
                self.path.replace(self.path.with_name(self.path.name + ".1"))
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)


@dataclass(frozen=True)
class Entry:
    """One rated answer, with the comment the visitor added (if any)."""

    time: datetime
    liked: bool
    answer_id: str | None
    question: str
    answer: str
    comment: str = ""


def read(path: Path) -> tuple[list[Entry], int]:
    """The rated answers in the log (the rotated `.1` file first, oldest first) and the number of lines
    skipped because they were not feedback records (truncated writes, hand edits)."""
    entries: list[Entry] = []
    comments: dict[str, str] = {}
    skipped = 0
    for file in (path.with_name(path.name + ".1"), path):
        if not file.is_file():
            continue
        with file.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    time = datetime.fromisoformat(record["time"])
                    if time.tzinfo is None:
                        time = time.replace(tzinfo=UTC)
                    liked = record["liked"]
                    if not isinstance(liked, bool):
                        raise ValueError(liked)
                    if "question" not in record:  # a comment line, attached to its rating below
                        comments[str(record["answer_id"])] = str(record["comment"])
                        continue
                    entries.append(
                        Entry(
                            time,
                            liked,
                            record.get("answer_id"),
                            str(record["question"]),
                            str(record.get("answer", "")),
                            str(record.get("comment", "")),
                        )
                    )
                except (ValueError, KeyError, TypeError, AttributeError):
                    skipped += 1
    entries = [
        Entry(e.time, e.liked, e.answer_id, e.question, e.answer, e.comment or comments.get(str(e.answer_id), ""))
        for e in entries
    ]
    return entries, skipped


def drafts(entries: list[Entry]) -> list[dict]:
    """Thumbs-down questions as draft evaluation lines (eval/questions.jsonl's shape), one per distinct
    question, for a person to fill in `answers` and `evidence`."""
    seen, lines = set(), []
    for e in entries:
        key = " ".join(e.question.split())
        if e.liked or key in seen:
            continue
        seen.add(key)
        line = {
            "id": "fb-" + hashlib.sha1(key.encode()).hexdigest()[:10],
            "lang": "th" if _THAI.search(key) else "en",
            "question": key,
            "answers": [],
            "evidence": [],
            "source": "feedback",
        }
        if e.comment:
            line["comment"] = e.comment
        lines.append(line)
    return lines


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
