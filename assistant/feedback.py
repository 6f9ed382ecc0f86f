"""Visitors' feedback: a signed proof of each served answer, one vote per answer kept in a JSON Lines log
(the embedded default) or PostgreSQL, and the reader `assistant feedback` lists and exports from."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
import unicodedata
import uuid
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from assistant.errors import FeedbackTokenError, FeedbackUnavailableError, InvalidQuestionError

log = logging.getLogger(__name__)

MAX_COMMENT_CHARS = 500
_THAI = re.compile(r"[\u0e00-\u0e7f]")
# An answer can be rated for this long after it was given; older tokens are refused.
TOKEN_MAX_AGE_S = 7 * 86_400
# A token holds the question (≤ 2,000 characters), the answer (≤ 4,000) and up to 10 citation references,
# compressed: ~1 KB for a typical answer, well under this.
MAX_TOKEN_CHARS = 24_000
UNAVAILABLE = (
    "บันทึกความคิดเห็นไม่ได้ในขณะนี้ โปรดลองใหม่ภายหลัง · Feedback cannot be saved right now; "
    "nothing was recorded. Please try again later."
)
FORGED = "ไม่พบคำตอบที่ให้คะแนน · This rating names no answer this service gave (forged, damaged or expired token)."


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


def printable(text: str) -> str:
    """Text for a terminal listing: line breaks, control and format characters (bidi overrides such as
    U+202E, zero-width marks) shown as escapes, so a comment cannot forge lines or reorder the screen."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\\":
            out.append("\\\\")
        elif unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


# --- proof of a served answer ------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """What an answer token proves this service answered: the rating is stored with it."""

    id: str
    issued: float
    question: str
    answer: str
    citations: tuple[dict, ...] = ()


class Signer:
    """Answer tokens signed with HMAC-SHA256. Replicas that share the key (ASSISTANT_SECRET_KEY) accept each
    other's tokens, so a rating needs no memory of the answers a process gave; without a key each process
    makes a random one (its tokens die with it, and other replicas refuse them)."""

    def __init__(self, key: str | bytes = ""):
        if not key:
            key = secrets.token_bytes(32)
        self.key = key.encode() if isinstance(key, str) else key

    def sign(self, answer: dict, now: float | None = None) -> str:
        payload = {
            "id": uuid.uuid4().hex,
            "t": int(time.time() if now is None else now),
            "q": answer["question"][:2000],
            "a": answer["answer"][:4000],
            "c": [{k: c[k] for k in ("n", "chunk_id", "source", "start", "end")} for c in answer["citations"][:10]],
        }
        body = _b64(zlib.compress(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(), 6))
        return f"v1.{body}.{self._mac(body)}"

    def verify(self, token: str, now: float | None = None) -> Served:
        """The answer a token stands for; FeedbackTokenError when it was not made with this key, is
        damaged or older than TOKEN_MAX_AGE_S."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise FeedbackTokenError(FORGED)
        version, body, mac = token.split(".")
        if version != "v1" or not hmac.compare_digest(mac, self._mac(body)):
            raise FeedbackTokenError(FORGED)
        try:
            data = json.loads(zlib.decompress(_unb64(body), bufsize=MAX_TOKEN_CHARS))
            served = Served(
                str(data["id"]), float(data["t"]), str(data["q"]), str(data["a"]), tuple(dict(c) for c in data["c"])
            )
        except (ValueError, KeyError, TypeError, zlib.error):
            raise FeedbackTokenError(FORGED) from None
        if not 0 <= (time.time() if now is None else now) - served.issued <= TOKEN_MAX_AGE_S:
            raise FeedbackTokenError(FORGED)
        return served

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- stores ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vote:
    """A thumb on one answer; `comment` None keeps the comment already stored for that answer."""

    served: Served
    liked: bool
    comment: str | None = None


@dataclass(frozen=True)
class Entry:
    """One rated answer as it stands: its latest vote, with the visitor's comment (if any)."""

    time: datetime
    liked: bool
    answer_id: str | None
    question: str
    answer: str
    comment: str = ""
    votes: int = 1  # how many times it was rated (a changed mind, a replayed token)


class Store(ABC):
    """Where votes go: one vote per answer (the latest wins), enforced by the store itself so any
    number of replicas may write."""

    problem: str | None = None  # why the store cannot take votes now, for health

    @abstractmethod
    def record(self, vote: Vote) -> None:
        """Store the vote durably before returning; FeedbackUnavailableError when it could not be."""

    @abstractmethod
    def entries(self) -> tuple[list[Entry], int]:
        """Every rated answer (oldest latest vote first) and the number of unreadable records skipped."""

    def check(self) -> str | None:
        """Whether the store can take votes (a cheap probe for health); the problem in words, or None."""
        return self.problem

    def close(self) -> None:  # noqa: B027 - only a store with connections has something to close
        pass


class JsonlStore(Store):
    """Votes appended as JSON Lines, every change a new line; the reader resolves each answer's latest.

    Past `max_bytes` the file is rotated to `.1` (older ones move up to `.keep`); when all `keep` older
    files exist, new votes are refused rather than anything deleted (a flood of fake ratings once pushed
    real ones out). One writer at a time, across processes too (an advisory lock beside the file)."""

    def __init__(self, path: Path, max_bytes: int, keep: int = 9):
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        """The log's files, oldest first."""
        return [self.path.with_name(f"{self.path.name}.{n}") for n in range(self.keep, 0, -1)] + [self.path]

    def record(self, vote: Vote) -> None:
        s = vote.served
        line = {
            "time": _now(),
            "liked": vote.liked,
            "answer_id": s.id,
            "question": s.question,
            "answer": s.answer,
            "citations": list(s.citations),
        }
        if vote.comment is not None:
            line["comment"] = validate_comment(vote.comment)
        self._write(line)

    def _write(self, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    if self.path.is_file() and self.path.stat().st_size + len(data) > self.max_bytes:
                        self._rotate()
                    with self.path.open("ab") as f:
                        f.write(data)
                        f.flush()
            except OSError as error:
                self.problem = f"The feedback log cannot be written ({error.strerror or error})."
                log.error("%s", self.problem)
                raise FeedbackUnavailableError(UNAVAILABLE) from None
        self.problem = None

    def _rotate(self) -> None:
        older = self.files()[:-1]
        if not older or older[0].exists():
            self.problem = (
                f"The feedback log is full ({self.keep + 1} files of {self.max_bytes / 1e6:g} MB): export it "
                "(`assistant feedback --json`), move the numbered files away, or raise ASSISTANT_FEEDBACK_KEEP_FILES."
            )
            log.error("%s", self.problem)
            raise FeedbackUnavailableError(UNAVAILABLE)
        for newer, target in zip(older[1:], older[:-1]):  # .keep-1 -> .keep, ..., .1 -> .2
            if newer.exists():
                newer.replace(target)
        self.path.replace(older[-1])

    def entries(self) -> tuple[list[Entry], int]:
        return read(self.path, self.keep)

    def check(self) -> str | None:
        # A full log is full until the operator moves the oldest file away.
        if self.problem and "full" in self.problem and not self.files()[0].exists():
            self.problem = None
        return self.problem


def read(path: Path, keep: int = 9) -> tuple[list[Entry], int]:
    """The rated answers in a JSON Lines log and its rotated files, each answer once with its latest vote
    and latest comment, ordered by that vote's time; and the number of lines skipped because they were not
    feedback records (truncated writes, hand edits)."""
    latest: dict[str, Entry] = {}
    loose: list[Entry] = []  # ratings from before answer ids
    skipped = 0
    files = [path.with_name(f"{path.name}.{n}") for n in range(max(keep, 1), 0, -1)] + [path]
    for file in files:
        if not file.is_file():
            continue
        with file.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    when = datetime.fromisoformat(record["time"])
                    if when.tzinfo is None:
                        when = when.replace(tzinfo=UTC)
                    liked = record["liked"]
                    if not isinstance(liked, bool):
                        raise ValueError(liked)
                    key = record.get("answer_id")
                    comment = record.get("comment")
                    before = latest.get(str(key)) if key is not None else None
                    if "question" not in record:  # a comment line, bound to its rating
                        if before is None:
                            raise KeyError("comment for an unknown answer")
                        latest[str(key)] = Entry(
                            before.time, before.liked, before.answer_id, before.question, before.answer,
                            str(record["comment"]), before.votes,
                        )  # fmt: skip
                        continue
                    entry = Entry(
                        when,
                        liked,
                        None if key is None else str(key),
                        str(record["question"]),
                        str(record.get("answer", "")),
                        str(comment) if comment is not None else (before.comment if before else ""),
                        before.votes + 1 if before else 1,
                    )
                    if key is None:
                        loose.append(entry)
                    else:
                        latest.pop(str(key), None)  # re-inserted: the order follows the latest vote
                        latest[str(key)] = entry
                except (ValueError, KeyError, TypeError, AttributeError):
                    skipped += 1
    entries = sorted([*loose, *latest.values()], key=lambda e: e.time)
    return entries, skipped


# Each version's statements, applied in order inside one transaction under an advisory lock, so replicas
# starting together migrate once. A version is never edited once released: add the next one.
MIGRATIONS = {
    1: (
        """CREATE TABLE assistant_feedback (
            answer_id text PRIMARY KEY,
            first_time timestamptz NOT NULL DEFAULT now(),
            time timestamptz NOT NULL DEFAULT now(),
            liked boolean NOT NULL,
            question text NOT NULL,
            answer text NOT NULL,
            citations jsonb NOT NULL DEFAULT '[]',
            comment text NOT NULL DEFAULT '',
            votes integer NOT NULL DEFAULT 1
        )""",
        "CREATE INDEX assistant_feedback_time ON assistant_feedback (time)",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)
_UPSERT = """
INSERT INTO assistant_feedback AS f (answer_id, liked, question, answer, citations, comment)
VALUES (%(id)s, %(liked)s, %(question)s, %(answer)s, %(citations)s, coalesce(%(comment)s, ''))
ON CONFLICT (answer_id) DO UPDATE SET
    time = clock_timestamp(),
    liked = excluded.liked,
    comment = CASE WHEN %(comment)s::text IS NULL THEN f.comment ELSE excluded.comment END,
    votes = f.votes + 1
"""


class PostgresStore(Store):
    """Votes in one PostgreSQL table (`assistant_feedback`, one row per answer: the primary key makes the
    latest vote win), through a small connection pool. The table is created or migrated on start; when
    the database is down the server still starts and answers, and each vote is refused with
    UNAVAILABLE until it is back (a vote is acknowledged only after its commit)."""

    def __init__(self, url: str, timeout_s: float = 3.0, pool_size: int = 4):
        from psycopg_pool import ConnectionPool

        self.url = url
        self._warned = -60.0
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=timeout_s,
            check=ConnectionPool.check_connection,  # a connection broken by a database restart is replaced
            kwargs={"connect_timeout": max(1, int(timeout_s)), "application_name": "assistant"},
            reconnect_timeout=timeout_s,
            name="feedback",
        )
        # The pool logs every failed reconnection (nine in three seconds of an outage); this store logs
        # one line per failure it reports instead.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        self.pool.open(wait=False)
        self._migrated = False
        try:
            self._migrate()
        except FeedbackUnavailableError:
            pass  # logged; retried on the next vote or check

    def _connection(self):
        return self.pool.connection()

    def _failed(self, error: Exception) -> FeedbackUnavailableError:
        # The URL may hold a password: the log names the error's kind and PostgreSQL's words only.
        self.problem = f"The feedback database is unavailable ({type(error).__name__})."
        if time.monotonic() - self._warned >= 60:  # health probes it every few seconds: one line a minute
            self._warned = time.monotonic()
            log.warning("%s %s", self.problem, str(error).splitlines()[0] if str(error) else "")
        return FeedbackUnavailableError(UNAVAILABLE)

    def _migrate(self) -> None:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('assistant_feedback_schema'))")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS assistant_schema (component text PRIMARY KEY, version integer NOT NULL)"
                )
                row = conn.execute("SELECT version FROM assistant_schema WHERE component = 'feedback'").fetchone()
                version = row[0] if row else 0
                if version > SCHEMA_VERSION:
                    self.problem = (
                        f"The feedback table is at schema version {version}, newer than this program's "
                        f"{SCHEMA_VERSION}: upgrade the assistant."
                    )
                    raise FeedbackUnavailableError(UNAVAILABLE)
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[step]:
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO assistant_schema VALUES ('feedback', %s) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (SCHEMA_VERSION,),
                )
        except (psycopg.Error, PoolTimeout, OSError) as error:
            raise self._failed(error) from None
        self._migrated, self.problem = True, None

    def record(self, vote: Vote) -> None:
        import psycopg
        from psycopg.types.json import Jsonb
        from psycopg_pool import PoolTimeout

        if not self._migrated:
            self._migrate()
        s = vote.served
        comment = None if vote.comment is None else validate_comment(vote.comment)
        try:
            with self._connection() as conn:
                conn.execute(
                    _UPSERT,
                    {
                        "id": s.id,
                        "liked": vote.liked,
                        "question": s.question,
                        "answer": s.answer,
                        "citations": Jsonb(list(s.citations)),
                        "comment": comment,
                    },
                )
        except (psycopg.Error, PoolTimeout, OSError) as error:
            raise self._failed(error) from None
        self.problem = None

    def entries(self) -> tuple[list[Entry], int]:
        import psycopg
        from psycopg_pool import PoolTimeout

        if not self._migrated:
            self._migrate()
        try:
            with self._connection() as conn:
                rows = conn.execute(
                    "SELECT time, liked, answer_id, question, answer, comment, votes FROM assistant_feedback "
                    "ORDER BY time, answer_id"
                ).fetchall()
        except (psycopg.Error, PoolTimeout, OSError) as error:
            raise self._failed(error) from None
        return [Entry(*row) for row in rows], 0

    def check(self) -> str | None:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            if not self._migrated:
                self._migrate()
            with self._connection() as conn:
                conn.execute("SELECT 1")
            self.problem = None
        except FeedbackUnavailableError:
            pass
        except (psycopg.Error, PoolTimeout, OSError) as error:
            self._failed(error)
        return self.problem

    def close(self) -> None:
        self.pool.close()


def open_store(config) -> Store:
    """The store a configuration names: PostgreSQL for ASSISTANT_FEEDBACK_URL, else the JSON Lines log."""
    if config.feedback_url:
        return PostgresStore(config.feedback_url)
    return JsonlStore(config.feedback_path, int(config.feedback_max_mb * 1_000_000), config.feedback_keep_files)


@dataclass(frozen=True)
class _Draft:
    question: str
    comments: list[str] = field(default_factory=list)


def drafts(entries: list[Entry]) -> list[dict]:
    """Thumbs-down questions as draft evaluation lines (eval/questions.jsonl's shape), one per distinct
    question with every comment its ratings carried, for a person to fill in `answers` and `evidence`."""
    found: dict[str, _Draft] = {}
    for e in entries:
        key = " ".join(e.question.split())
        if e.liked:
            continue
        draft = found.setdefault(key, _Draft(key))
        if e.comment and e.comment not in draft.comments:
            draft.comments.append(e.comment)
    lines = []
    for key, draft in found.items():
        line = {
            "id": "fb-" + hashlib.sha1(key.encode()).hexdigest()[:10],
            "lang": "th" if _THAI.search(key) else "en",
            "question": key,
            "answers": [],
            "evidence": [],
            "source": "feedback",
        }
        if draft.comments:
            line["comments"] = draft.comments
        lines.append(line)
    return lines


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
