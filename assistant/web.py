"""The web: the Gradio chat, a compact chat for iframes, the JSON API and the embedding page, one app."""

from __future__ import annotations

import asyncio
import functools
import hmac
import inspect
import ipaddress
import json
import logging
import re
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Literal

import gradio as gr
import numpy as np
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from assistant import corpus, decision, index
from assistant.answering import ANSWER_LANGUAGES, PHRASES, Answering, validate
from assistant.config import Config
from assistant.errors import (
    AssistantError,
    FeedbackTokenError,
    FeedbackUnavailableError,
    InvalidQuestionError,
    QuestionTooLongError,
)
from assistant.feedback import MAX_COMMENT_CHARS, MAX_TOKEN_CHARS, Signer, Store, Vote, open_store, validate_comment
from assistant.metrics import Metered, Metrics, build_id
from assistant.types import Answer, Turn, as_turns

log = logging.getLogger(__name__)

MAX_HISTORY_TURNS = 50
# Messages a visitor's browser keeps of one conversation (sessionStorage), so a reload shows it again.
MAX_SHOWN_MESSAGES = 40
WIDGET_JS = Path(__file__).parent / "static" / "widget.js"
_CITE = re.compile(r"\[(\d{1,3})\]")
MAX_TURN_CHARS = 20_000
# Gradio's own file routes: the app takes no uploads, so nothing may be stored through them.
_UPLOAD = re.compile(r"(^|/)gradio_api/upload")
# Gradio's HTTP routes that run a function (the public one is `ask`): past the rate limit they answer
# 429 with Retry-After before the body is read (they answered 500, or an error in the event stream).
_GRADIO_CALL = re.compile(r"(^|/)gradio_api/(call|run|api)/")
_GRADIO_EVENT = re.compile(r"(^|/)gradio_api/(queue/join|call/|run/|api/)")
# JSON items ("{", "[" and ",") in a chat event's body: Gradio copies every item of its data several
# times before any function runs (a 12,000-message chat, 0.95 MB, cost 0.2 s of CPU to be ignored);
# a kept conversation of 40 messages holds a few thousand.
MAX_EVENT_ITEMS = 20_000
# A client that has not sent a whole request head within this many seconds is disconnected (idle
# sockets were held open indefinitely: 3,000 of them in a probe).
HEADER_TIMEOUT_S = 10.0
RATE_LIMITED = "ถามถี่เกินไป โปรดรอสักครู่ · Too many questions: please wait a moment and ask again."
FEEDBACK_LIMITED = "ให้คะแนนถี่เกินไป โปรดรอสักครู่ · Too many ratings: please wait a moment."
# What a visitor sees when something fails inside the server: never the exception's text (it named
# folders: "[Errno 21] Is a directory: '/…/fbdir'").
SERVER_ERROR = "ขออภัย ระบบขัดข้อง โปรดลองอีกครั้ง · Sorry, something went wrong on the server: please try again."
FEEDBACK_FAILED = "บันทึกความคิดเห็นไม่ได้ในขณะนี้ · Your feedback could not be saved just now."
# The conversation a visitor's tab hands back on reload, characters: 40 messages of this server's HTML
# with their citations took 14,500 (20 English answers); a forged 0.9 MB one was echoed back whole.
MAX_SAVED_CHARS = 200_000
# Chat sessions (their conversation state) kept in memory per chat page; the oldest go first.
MAX_SESSIONS = 2000

TITLE = "ผู้ช่วยค้นคว้า: การรวมกลุ่มในภูมิภาคลาตินอเมริกา · Latin American integration assistant"
# One line on the first screen; the rest of the description opens on demand (a phone shows the input and
# the suggested questions above the fold).
TAGLINE = "ถามเป็นภาษาไทยหรืออังกฤษ ทุกคำตอบยกข้อความจากเอกสาร · Ask in Thai or English; every answer quotes the documents."
DESCRIPTION = (
    "เอกสารเรื่องการรวมกลุ่มในภูมิภาคของลาตินอเมริกา (MERCOSUR, ประชาคมแอนเดียน, UNASUR, ALBA, "
    "พันธมิตรแปซิฟิก) พร้อมหมายเหตุ กด [n] ในคำตอบเพื่อเปิดข้อความที่อ้างอิง · The document on regional "
    "integration in Latin America (MERCOSUR, the Andean Community, UNASUR, ALBA, the Pacific Alliance) and its "
    "notes. Press [n] in an answer to open the passage it quotes; each answer keeps its own sources."
)
EXAMPLES = [
    "บราซิลยุติการเจรจาอะไร",
    "บริษัท Brescia ของเปรูเป็นเจ้าของอะไร",
    "Which party is Peru's current president close to?",
    "How far is Bogotá from Santiago?",
]
# Colours are fixed pairs, not theme variables, so each one's contrast is known in light and dark mode:
# #1a1a1a on #ffe58a is 14.6:1 (a footnote mark in it, #5b4500, 8:1); the muted source label (#4d5562 on white
# 7.6:1, #c4cad3 on #0b0f19 11.6:1).
CSS = """
.answer p{margin:.2rem 0 .5rem;line-height:1.7}
.answer mark,.sources mark{background:#ffe58a;color:#1a1a1a;padding:0 .1rem;border-radius:2px}
.answer .caveat{border-left:4px solid #b35c00;background:#fff4e5;color:#1a1a1a;padding:.4rem .6rem;border-radius:4px}
.answer .notfound{border-left:4px solid #4d5562;background:#f1f3f5;color:#1a1a1a;padding:.4rem .6rem;border-radius:4px}
.answer .try{margin:.4rem 0 0;display:flex;flex-wrap:wrap;gap:.4rem;align-items:center}
.answer button.suggest{border:1px solid #1f5fbf;color:#1f5fbf;background:transparent;border-radius:999px;
  padding:.25rem .7rem;cursor:pointer;font:inherit;text-align:left}
.dark .answer button.suggest{border-color:#8ab4f8;color:#8ab4f8}
.answer sup.fn{font-size:.7em;color:#4d5562;font-weight:400;vertical-align:super;text-decoration:none}
.dark .answer sup.fn{color:#c4cad3}
.answer mark sup.fn,.dark .answer mark sup.fn{color:#5b4500}
.answer a.cite{color:#1f5fbf;text-decoration:underline;cursor:pointer;font-weight:700;white-space:nowrap}
.dark .answer a.cite{color:#8ab4f8}
.answer details.sources{border-top:1px solid var(--border-color-primary);margin-top:.6rem;padding-top:.3rem}
.answer details.sources>summary{cursor:pointer;font-weight:600}
.answer details.citation{border:1px solid var(--border-color-primary);border-radius:8px;padding:.3rem .6rem;
  margin:.4rem 0}
.answer details.citation[open]{border-color:#1f5fbf}
.answer details.citation>summary{cursor:pointer}
.answer .where{color:#4d5562;font-size:.9em}
.dark .answer .where{color:#c4cad3}
.answer .quote p{white-space:pre-wrap}
.answer details.english{border:0;padding:0;margin:.2rem 0}
.answer a.back{color:#1f5fbf;font-size:.9em}
.dark .answer a.back{color:#8ab4f8}
#saved{display:none !important}
footer .show-api,footer a{color:#4d5562 !important} .dark footer .show-api,.dark footer a{color:#c4cad3 !important}
#about{font-size:.95em} #about summary{cursor:pointer}
#storage-note{font-size:.9em;color:#4d5562;margin:.2rem 0} .dark #storage-note{color:#c4cad3}
#offline{border-left:4px solid #b3261e;background:#fdecea;color:#1a1a1a;padding:.4rem .6rem;border-radius:4px;
  margin:.3rem 0}
#title{font-size:1.45rem;line-height:1.3;margin:.1rem 0 .2rem}
#tagline{margin:0 0 .2rem}
#chat{height:clamp(300px,calc(100dvh - 290px),640px) !important}
#chat.compact{height:max(220px,calc(100dvh - 250px)) !important}
.gradio-container:has(#chat.compact) .main{padding:8px 10px !important}
.gradio-container:has(#chat.compact) #controls{flex-direction:column;gap:6px}
.gradio-container:has(#chat.compact) #controls [data-testid=block-info]{position:absolute;width:1px;height:1px;
  overflow:hidden;clip-path:inset(50%)}
@media (max-width:640px){#title{font-size:1.05rem} #tagline{font-size:.85rem} #about{font-size:.85rem}
  #chat{height:max(300px,calc(100dvh - 300px)) !important}}
:focus-visible{outline:3px solid #1f5fbf !important;outline-offset:2px}
.dark :focus-visible{outline-color:#8ab4f8 !important}
"""
# Thai-capable system fonts; the default theme would fetch web fonts from a CDN.
FONTS = ["Noto Sans Thai", "Loma", "Garuda", "Tlwg Typo", "system-ui", "sans-serif"]
_THAI = re.compile(r"[\u0e00-\u0e7f]")
# The document's own footnote marks, "ALBA(4)": a bracketed number right after a word.
_FOOTNOTE = re.compile(r"(?<=[^\s(>])\((\d{1,2})\)")
OUTCOME = {
    "uncertain": "ไม่แน่ใจนัก: ข้อความด้านล่างใกล้เคียงที่สุดที่พบ โปรดตรวจสอบ · "
    "Not certain: these are the closest passages found, please check them.",
    "not_found": "ไม่พบคำตอบในเอกสาร · Not found in the documents.",
    "try": "ลองถาม · Try asking:",
    "sources": "แหล่งที่มา · Sources",
    "back": "↑ กลับไปที่คำตอบ · Back to the answer",
    "original": "ต้นฉบับภาษาไทย · Thai original",
}


def _lang_of(text: str) -> str:
    return "th" if _THAI.search(text) else "en"


def _html(text: str) -> str:
    """Untrusted text (questions, corpus passages, LLM output) as inert HTML for the chat.

    The Chatbot renders no Markdown (images in `![x](url)` would load from anywhere, links would be
    live), so this escaped text is all it shows; line breaks are the only markup added.
    """
    return escape(text, quote=False).replace("\n", "<br>")


def _footnotes(html: str) -> str:
    """Escaped text with the document's footnote marks set apart from citation links [n]."""
    return _FOOTNOTE.sub(r'<sup class="fn" title="เชิงอรรถ · footnote">(\1)</sup>', html)


def _marked(text: str, a: int, b: int) -> str:
    """Escaped text with text[a:b] highlighted."""
    return _footnotes(f"{escape(text[:a])}<mark>{escape(text[a:b])}</mark>{escape(text[b:])}")


def status_of(answer: dict) -> str:
    """answered, uncertain or not_found: the answer's own `status`, else a refusal is not_found."""
    status = answer.get("status")
    if status in decision.STATUSES:
        return status
    return "not_found" if answer.get("refused") else "answered"


class Places:
    """Readable places for citations ("Note (4): ALBA · paragraph 2"), read from the served index: the
    document's title in the reply's language and the passage's paragraph. File names and character
    offsets stay in the API and in the label's tooltip."""

    def __init__(self, answerer: Answering | None = None):
        self.answerer = answerer
        self._index, self._docs = None, {}

    def __call__(self, c: dict, reply: str) -> str:
        doc_id, _, number = str(c.get("chunk_id", "")).rpartition("#")
        title, paragraph = str(c.get("title", "")), None
        idx = getattr(getattr(self.answerer, "retriever", None), "index", None)
        if idx is not None:
            if idx is not self._index:  # a swapped-in index: its own documents
                self._index, self._docs = idx, {d["doc_id"]: i for i, d in enumerate(idx.chunks.documents)}
            position = self._docs.get(doc_id)
            if position is not None and number.isdigit():
                arrays = idx.chunks.arrays
                rows = np.flatnonzero((arrays["doc"] == position) & (arrays["number"] == int(number)))
                paragraph = int(arrays["paragraph"][rows[0]]) if len(rows) else None
            rendering = idx.english.renderings.get(doc_id) if reply == "en" and idx.english is not None else None
            if rendering is not None and rendering.title:
                title = rendering.title
        label = _short_title(title)
        if paragraph is not None:
            label += f" · {'paragraph' if reply == 'en' else 'ย่อหน้า'} {paragraph}"
        return label


def _short_title(title: str) -> str:
    """A note's title to its name ("Note (4): ALBA, the Bolivarian…" -> "Note (4): ALBA"); others capped."""
    note = re.match(r"^(.{0,24}\(\d{1,2}\):\s*[^\s,]+)", title)
    if note:
        return note[1]
    return title if len(title) <= 48 else title[:47].rstrip() + "…"


def citation_html(c: dict, reply: str, key: str, place: str) -> str:
    """One cited passage, a <details> that opens on the passage with its sentence highlighted, and a way
    back to the answer. An English answer shows the English first and the Thai original beneath."""
    text, start = str(c["text"]), int(c["start"])
    a, b = int(c["sentence_start"]) - start, int(c["sentence_end"]) - start
    thai = f'<p lang="th">{_marked(text, a, b)}</p>'
    english = ""
    t = c.get("translation") or {}
    if t.get("text") and t.get("sentence"):
        at = t["text"].find(t["sentence"])
        inner = _marked(t["text"], at, at + len(t["sentence"])) if at >= 0 else _footnotes(escape(t["text"]))
        english = f'<p lang="en">{inner}</p>'
    if reply == "en" and english:
        body = f'{english}<div class="where" lang="th">{escape(OUTCOME["original"])}</div>{thai}'
    elif english:
        body = f'{thai}<details class="english"><summary lang="en">English</summary>{english}</details>'
    else:
        body = thai
    internal = f"{c.get('source', '')} · {c.get('chunk_id', '')} · chars {c['start']}–{c['end']}"
    n = int(c["n"])
    return (
        f'<details id="cite-{key}-{n}" class="citation"><summary><span class="n">[{n}]</span> '
        f'<span class="label" title="{escape(internal)}">{escape(place)}</span></summary>'
        f'<div class="quote">{body}</div>'
        f'<a class="back" href="#answer-{key}">{escape(OUTCOME["back"])}</a></details>'
    )


def answer_html(answer: dict, key: str, places: Places | None = None) -> str:
    """One chat message from an answer's data (`Answer.to_dict()`, live or restored): its outcome, the
    short answer, the cited text with links [n] to its own sources, which follow it in the message.
    Everything from the answer is escaped; `key` makes its ids unique in the conversation."""
    places = places or Places()
    reply = answer.get("answer_language") or answer.get("language") or "th"
    reply = reply if reply in ("th", "en") else "th"
    status = status_of(answer)
    citations = [c for c in answer.get("citations") or [] if isinstance(c, dict)]
    head = ""
    if status == "uncertain":
        head += f'<p class="caveat" role="note">{escape(OUTCOME["uncertain"])}</p>'
    notice = (answer.get("generation") or {}).get("notice")
    if notice:
        head += f"<p><em>{_html(str(notice))}</em></p>"
    body = _html(str(answer.get("answer", "")))
    short = answer.get("short_answer")
    if short and status != "not_found" and short.get("text"):
        head += f'<p class="short"><strong>{escape(PHRASES[reply]["short"])}: {_html(short["text"])}</strong></p>'
        marked = _html(short["text"])
        if marked in body:
            body = body.replace(marked, f"<mark>{marked}</mark>", 1)
    body = _footnotes(body)
    # After escaping, so the only links in a message are these, to the answer's own citations.
    numbers = {int(c["n"]) for c in citations}
    body = _CITE.sub(
        lambda m: f'<a href="#cite-{key}-{m[1]}" class="cite">[{m[1]}]</a>' if int(m[1]) in numbers else m[0], body
    )
    parts = [head, f'<p class="text">{body}</p>']
    if status == "not_found":
        suggestions = [s for s in answer.get("suggestions") or [] if isinstance(s, str) and s.strip()]
        if not suggestions:  # answers from before the answerer suggested: the examples in the reply's language
            suggestions = [q for q in EXAMPLES if _lang_of(q) == reply] or EXAMPLES
        buttons = "".join(
            f'<button type="button" class="suggest" lang="{_lang_of(s)}">{escape(s[:200])}</button>'
            for s in suggestions[:4]
        )
        parts.insert(0, f'<p class="notfound" role="note">{escape(OUTCOME["not_found"])}</p>')
        parts.append(f'<div class="try"><span>{escape(OUTCOME["try"])}</span>{buttons}</div>')
    if citations:
        items = "".join(citation_html(c, reply, key, places(c, reply)) for c in citations)
        parts.append(
            f'<details class="sources" id="sources-{key}"><summary>{escape(OUTCOME["sources"])} '
            f"({len(citations)})</summary>{items}</details>"
        )
    return f'<div class="answer {status}" lang="{reply}" id="answer-{key}">{"".join(parts)}</div>'


def question_html(text: str) -> str:
    return f'<div lang="{_lang_of(text)}">{_html(text)}</div>'


def networks(proxies: list[str]) -> list:
    """Trusted proxies as networks (an address is a network of one)."""
    try:
        return [ipaddress.ip_network(p, strict=False) for p in proxies]
    except ValueError as error:
        raise AssistantError(
            f"ASSISTANT_TRUSTED_PROXIES: {error}; use addresses or networks, comma-separated"
        ) from None


def _within(address: str | None, trusted: list) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in n for n in trusted)


def client_address(peer: str | None, forwarded: str | None, trusted: list) -> str:
    """The client's address: the connection's own, unless it comes from a trusted proxy; then the
    right-most X-Forwarded-For address that is not a proxy (the left part is the client's to forge).
    A header with anything but addresses in it is ignored whole."""
    peer = peer or "unknown"
    if not forwarded or not _within(peer, trusted):
        return peer
    try:
        chain = [ipaddress.ip_address(a.strip()) for a in forwarded.split(",")]
    except ValueError:
        return peer
    for address in reversed(chain):
        if not any(address in n for n in trusted):
            return str(address)
    return str(chain[0])


class LimitStorage:
    """Where rate limits count: this process's memory, or Redis shared by the replicas.

    Redis unreachable fails open: requests pass uncounted (a visitor never gets a 500 for it), one
    warning a minute is logged, `problem` says so for health, and Redis is tried again after RETRY_S
    (so a stopped Redis adds no delay to each request).
    """

    RETRY_S = 2.0
    WARN_EVERY_S = 60.0

    def __init__(self, uri: str = "memory://"):
        from limits.storage import storage_from_string

        self.shared = not uri.startswith("memory://")
        # Loopback or a LAN: a Redis that has not answered in half a second is treated as down.
        options = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5} if self.shared else {}
        self.storage = storage_from_string(uri, **options)
        self.kind = uri.split("://")[0]
        self.problem: str | None = None
        self._down_until = 0.0
        self._warned = -self.WARN_EVERY_S

    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self, error: Exception) -> None:
        now = time.monotonic()
        self._down_until = now + self.RETRY_S
        self.problem = "The rate-limit store is unreachable: limits are not enforced until it is back."
        if now - self._warned >= self.WARN_EVERY_S:
            self._warned = now
            log.warning("%s (%s: %s)", self.problem, type(error).__name__, str(error).splitlines()[0][:200])

    def check(self) -> str | None:
        """Ping a shared store (run off the event loop); memory is always there."""
        if self.shared:
            try:
                if not self.storage.check():
                    raise ConnectionError("no answer to PING")
                self.problem, self._down_until = None, 0.0
            except Exception as error:  # redis raises its own kinds; any of them means unreachable
                self.failed(error)
        return self.problem


class RateLimit:
    """Requests per client address (`name` keeps questions and ratings apart), by the `limits` library's
    moving window in a LimitStorage; `off` lets all through."""

    def __init__(self, rate: str, proxies: list[str], storage: LimitStorage | None = None, name: str = "ask"):
        from limits import parse, strategies

        self.item = None if rate.strip().lower() in {"off", ""} else parse(rate)
        self.storage = storage or LimitStorage()
        self.limiter = strategies.MovingWindowRateLimiter(self.storage.storage)
        self.proxies = networks(proxies)
        self.name = name
        self.limited = None  # a counter of refusals (metrics), set by create_app

    def client(self, host: str | None, forwarded: str | None) -> str:
        """The client's address (see `client_address`)."""
        return client_address(host, forwarded, self.proxies)

    def retry_after(self, client: str) -> int | None:
        """None when the client may go on now (and counts the request), else seconds to wait."""
        if self.item is None or not self.storage.usable():
            return None
        try:
            if self.limiter.hit(self.item, self.name, client):
                self.storage.problem = None
                return None
            reset, _ = self.limiter.get_window_stats(self.item, self.name, client)
        except Exception as error:  # a shared store that went away: fail open (see LimitStorage)
            self.storage.failed(error)
            return None
        if self.limited is not None:
            self.limited.inc()
        return max(1, int(reset - datetime.now(UTC).timestamp()) + 1)

    def wait(self, client: str) -> int | None:
        """Like `retry_after`, without counting: None when the client may go on now."""
        if self.item is None or not self.storage.usable():
            return None
        try:
            if self.limiter.test(self.item, self.name, client):
                return None
            reset, _ = self.limiter.get_window_stats(self.item, self.name, client)
        except Exception as error:  # as in retry_after
            self.storage.failed(error)
            return None
        if self.limited is not None:
            self.limited.inc()
        return max(1, int(reset - datetime.now(UTC).timestamp()) + 1)

    def request_client(self, request) -> str:
        return self.client(request.client.host if request.client else None, request.headers.get("x-forwarded-for"))


def event_rate(config: Config) -> str:
    """The rate for chat events other than questions: ASSISTANT_EVENT_RATE_LIMIT, else twice the
    question rate (a visitor's page loads and ratings come with their questions)."""
    if config.event_rate_limit.strip():
        return config.event_rate_limit
    if config.rate_limit.strip().lower() in {"off", ""}:
        return "off"
    from limits import parse

    item = parse(config.rate_limit)
    return f"{item.amount * 2} per {item.multiples} {item.GRANULARITY.name}"


LABELS = {
    "th": {
        "greeting": "สวัสดี ถามเรื่องการรวมกลุ่มในภูมิภาคลาตินอเมริกาเป็นภาษาไทยหรืออังกฤษได้เลย "
        "ทุกคำตอบยกข้อความจากเอกสาร ลองถามคำถามเหล่านี้:",
        "placeholder": "พิมพ์คำถาม…",
        "ask": "ถาม",
        "new": "บทสนทนาใหม่",
        "language": "ภาษาของคำตอบ",
        "comment": f"ความคิดเห็น (ไม่บังคับ ไม่เกิน {MAX_COMMENT_CHARS} ตัวอักษร)",
        "send": "ส่งความคิดเห็น",
        "thanks": "ขอบคุณสำหรับความคิดเห็น",
    },
    "en": {
        "greeting": "Hello! Ask about regional integration in Latin America, in English or Thai. Every "
        "answer quotes the documents. Try one of these:",
        "placeholder": "Ask a question…",
        "ask": "Ask",
        "new": "New conversation",
        "language": "Answer language",
        "comment": f"Comment (optional, up to {MAX_COMMENT_CHARS} characters)",
        "send": "Send comment",
        "thanks": "Thank you for the feedback.",
    },
}
INPUT_LABEL = "ถามคำถาม · Ask a question"
# Shown by the page's script: where the server cannot be reached, or storage is blocked.
CLIENT_TEXTS = {
    "offline": "ติดต่อเซิร์ฟเวอร์ไม่ได้ คำถามของคุณยังอยู่ในช่องพิมพ์ โปรดลองส่งอีกครั้ง · "
    "Cannot reach the server. Your question is still in the box: please send it again.",
    "error": "เกิดข้อผิดพลาด คำถามของคุณยังอยู่ในช่องพิมพ์ · Something went wrong. Your question is still in the box.",
    "unsaved": "เบราว์เซอร์ไม่อนุญาตให้เก็บบทสนทนา จะหายไปเมื่อโหลดหน้าใหม่ · "
    "This browser blocks storage here: the conversation will not survive a reload.",
    "sources": OUTCOME["sources"],
    "copied": "คัดลอกแล้ว · Copied",
}


def _label(key: str, lang: str | None) -> str:
    """One language's label, or both ("ไทย · English") when the page did not ask for one."""
    return LABELS[lang][key] if lang in LABELS else f"{LABELS['th'][key]} · {LABELS['en'][key]}"


# Runs once in every chat page (full, compact, web component). It owns what Gradio's Chatbot does not:
# - [n] opens that answer's own passage in place (its Sources block, then the citation), and the passage's
#   "Back to the answer" returns to the [n] pressed; a not-found reply's suggestions ask their question;
# - "Copy message" copies plain text with the sources listed (Gradio's copies the message's HTML);
# - the messages' aria-labels (Gradio puts the raw HTML there) are removed: their text is read instead;
# - a lost connection or an error shows a bilingual line above the input, which keeps the question;
# - inside the widget's frame: Esc, Tab past either end and the conversation's storage go to widget.js,
#   which runs in the host page (a third-party frame may not use sessionStorage).
CLIENT_JS = """() => {
  const TEXTS = __TEXTS__;
  const params = new URLSearchParams(location.search);
  if (window.gradio_config) document.documentElement.lang = params.get("lang") === "en" ? "en" : "th";
  const framed = window.parent !== window;
  const roots = () => [document, ...[...document.querySelectorAll("gradio-app")]
    .map((a) => a.shadowRoot).filter(Boolean)];
  const find = (selector) => {
    for (const r of roots()) { const e = r.querySelector(selector); if (e) return e; }
    return null;
  };
  const lastCite = new Map();

  function ask(question) {
    const box = find("#question textarea");
    if (!box) return;
    box.value = question;
    box.dispatchEvent(new Event("input", {bubbles: true}));
    setTimeout(() => { const b = find("#ask"); if (b) b.click(); }, 50);
  }

  function plain(message) {
    const answer = message.querySelector(".answer");
    if (!answer) return message.innerText.trim();
    const lines = [];
    for (const sel of [".caveat", ".notfound", ".short", ".text"]) {
      const e = answer.querySelector(":scope > " + sel);
      if (e) lines.push(e.textContent.trim());
    }
    const cites = answer.querySelectorAll("details.citation");
    if (cites.length) {
      lines.push("", TEXTS.sources + ":");
      for (const c of cites) {
        // textContent: a closed passage's text is not rendered, so it has no innerText.
        const n = c.querySelector("summary .n").textContent.trim();
        const label = c.querySelector("summary .label");
        const quote = c.querySelector(".quote p mark");
        lines.push(n + " " + label.textContent.trim() + " (" + label.title + ")" +
          (quote ? ": \\u201c" + quote.textContent.trim() + "\\u201d" : ""));
      }
    }
    return lines.join("\\n");
  }

  async function copy(text, button) {
    try { await navigator.clipboard.writeText(text); }
    catch (e) {
      const t = document.createElement("textarea");
      t.value = text; document.body.appendChild(t); t.select();
      try { document.execCommand("copy"); } finally { t.remove(); }
    }
    if (button) { button.title = TEXTS.copied; setTimeout(() => { button.title = "Copy message"; }, 1500); }
  }

  function note(id, text) {
    let line = find("#" + id);
    if (!text) { if (line) line.remove(); return; }
    const row = find("#question");
    if (!row) return;
    const anchor = row.closest(".row") || row;
    if (!line) {
      line = document.createElement("p");
      line.id = id;
      line.setAttribute("role", id === "offline" ? "alert" : "status");
      anchor.parentNode.insertBefore(line, anchor);
    }
    line.textContent = text;
  }
  window.__assistantNote = note;

  // The question being asked, put back in the box when the request fails: Gradio then reloads the page
  // to reconnect, and the box comes back empty. window.name outlives that reload, also in a third-party
  // frame (where storage is refused); only on our own pages, not a host page's (web component).
  const KEPT = "assistant:pending:";
  const own = !!window.gradio_config;
  let pending = "", askedAt = 0, keeping = 0;
  const answers = () => roots().reduce((n, r) => n + r.querySelectorAll(".answer").length, 0);
  try {
    if (own && window.name.startsWith(KEPT)) {
      const kept = JSON.parse(window.name.slice(KEPT.length));
      pending = String(kept.q || "");
      askedAt = Number(kept.n) || 0;
    }
  } catch (e) { pending = ""; }
  function remember() {
    if (own) window.name = pending ? KEPT + JSON.stringify({q: pending, n: askedAt}) : "";
  }
  function asking() {
    note("offline", "");
    const box = find("#question textarea");
    pending = box ? box.value : "";
    askedAt = answers();
    remember();
  }
  function keep() {
    const until = Date.now() + 20000;
    clearInterval(keeping);
    keeping = setInterval(() => {
      if (!pending || Date.now() > until) { clearInterval(keeping); return; }
      const box = find("#question textarea");
      if (box && !box.value) box.value = pending;
      // Again and again: a page still starting up may not have heard the first one.
      if (box && box.value === pending) box.dispatchEvent(new Event("input", {bubbles: true}));
    }, 300);
  }
  if (pending) keep();
  document.addEventListener("input", (event) => {  // what the visitor types is what is kept
    const box = event.composedPath().find((el) => el instanceof Element && el.matches("#question textarea"));
    if (box && event.isTrusted && pending) { pending = box.value; remember(); }
  }, true);
  document.addEventListener("keydown", (event) => {
    const box = event.composedPath().find((el) => el instanceof Element && el.matches("#question textarea"));
    if (box && event.key === "Enter" && !event.shiftKey) asking();
  }, true);

  document.addEventListener("click", (event) => {
    const path = event.composedPath().filter((el) => el instanceof Element);
    const copyButton = path.find((el) => el.matches("button[aria-label='Copy message']"));
    if (copyButton) {
      let row = copyButton.closest(".message-buttons");
      let message = null;
      for (let e = row && row.previousElementSibling; e && !message; e = e.previousElementSibling) {
        message = e.matches(".message-row") ? e.querySelector(".message-content") : null;
      }
      if (!message) return;
      event.preventDefault();
      event.stopImmediatePropagation();
      copy(plain(message), copyButton);
      return;
    }
    const suggest = path.find((el) => el.matches(".answer button.suggest"));
    if (suggest) { event.preventDefault(); ask(suggest.innerText.trim()); return; }
    if (path.find((el) => el.matches("#ask"))) asking();
    const link = path.find((el) => el.matches(".answer a.cite, .answer a.back"));
    if (!link) return;
    event.preventDefault();
    const id = (link.getAttribute("href") || "").slice(1);
    if (!/^(cite|answer)-[0-9a-f]+(-[0-9]+)?$/.test(id)) return;
    const root = link.getRootNode();
    const target = (root.getElementById && root.getElementById(id)) || document.getElementById(id);
    if (!target) return;
    if (link.matches(".back")) {
      const back = lastCite.get(id) || target.querySelector("a.cite") || target;
      back.scrollIntoView({block: "center"});
      setTimeout(() => back.scrollIntoView({block: "nearest"}), 150);
      back.focus({preventScroll: true});
      return;
    }
    const answer = link.closest(".answer");
    if (answer) lastCite.set(answer.id, link);
    for (let d = target; d; d = d.parentElement && d.parentElement.closest("details")) d.open = true;
    // Again once the chat has grown: its autoscroll follows the bottom when a passage opens there.
    target.scrollIntoView({block: "nearest"});
    for (const ms of [150, 500]) setTimeout(() => target.scrollIntoView({block: "nearest"}), ms);
    const summary = target.querySelector("summary");
    if (summary) summary.focus({preventScroll: true});
  }, true);

  // Gradio labels each message with its raw HTML; without the label its text is read.
  const unlabel = () => {
    if (pending && answers() > askedAt) { pending = ""; remember(); }  // answered: nothing left to keep
    for (const r of roots()) {
      for (const m of r.querySelectorAll("[data-testid=bot][aria-label], [data-testid=user][aria-label]")) {
        m.removeAttribute("aria-label");
      }
      // The suggested questions are buttons in a "list" without list items: a list they are not.
      for (const e of r.querySelectorAll("#chat .examples[role=list]")) e.removeAttribute("role");
      for (const t of r.querySelectorAll(".toast-body:not([data-seen])")) {
        t.setAttribute("data-seen", "1");
        // The toast's title ("Error") and close mark (×) are lines of their own.
        const raw = t.innerText || "";
        if (!/error|lost|connection|failed/i.test(raw + " " + t.className)) continue;
        const text = raw.split("\\n").filter((l) => !/^\\s*(error|\\u00d7)?\\s*$/i.test(l)).join(" ");
        const thai = /[\\u0e00-\\u0e7f]/.test(text);
        const lost = /connection|lost|network|fetch|reconnect/i.test(text);
        note("offline", lost ? TEXTS.offline : thai ? text.trim() : TEXTS.error);
        keep();
      }
    }
  };
  new MutationObserver(unlabel).observe(document.body, {subtree: true, childList: true, attributes: true,
    attributeFilter: ["aria-label"]});
  unlabel();

  if (framed) {
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") window.parent.postMessage({assistant: "close"}, "*");
    });
  }
  if (framed && params.get("embed") === "widget") {
    // Focus stays in the widget's dialog: Tab past the last stop (or Shift+Tab past the first) reaches a
    // sentinel, which hands focus back to the panel's close button in the host page.
    const sentinel = (forward) => {
      const s = document.createElement("span");
      s.tabIndex = 0;
      s.className = "sentinel";
      s.style.cssText = "position:fixed;width:1px;height:1px;overflow:hidden;clip-path:inset(50%)";
      s.addEventListener("focus", () => window.parent.postMessage({assistant: "tab-out", forward}, "*"));
      return s;
    };
    document.body.prepend(sentinel(false));
    document.body.append(sentinel(true));
    window.addEventListener("message", (event) => {
      if (event.source !== window.parent || !event.data || event.data.assistant !== "focus") return;
      const target = find(event.data.where === "last" ? "#clear" : "#question textarea");
      if (target) target.focus();
    });
  }
}""".replace("__TEXTS__", json.dumps(CLIENT_TEXTS, ensure_ascii=False))
# The conversation lives in the visitor's tab (sessionStorage, one key per chat page), not on the
# server: gr.BrowserState would keep it in localStorage, i.e. for ever and across tabs. Inside the widget
# it lives in the host page's sessionStorage, through widget.js: a third-party frame's storage throws.
_STORE_KEY = '"assistant:conversation:" + location.pathname'
_WIDGET = 'window.parent !== window && new URLSearchParams(location.search).get("embed") === "widget"'
SAVE_JS = f"""(saved) => {{
  if ({_WIDGET}) {{ window.parent.postMessage({{assistant: "save", value: saved || ""}}, "*"); return []; }}
  try {{ if (saved) sessionStorage.setItem({_STORE_KEY}, saved); else sessionStorage.removeItem({_STORE_KEY}); }}
  catch (e) {{}}
  return [];
}}"""
FORGET_JS = f"""() => {{
  if ({_WIDGET}) {{ window.parent.postMessage({{assistant: "save", value: ""}}, "*"); return []; }}
  try {{ sessionStorage.removeItem({_STORE_KEY}); }} catch (e) {{}}
  return [];
}}"""
LOAD_JS = f"""async () => {{
  const say = (text) => {{ const f = () => window.__assistantNote ? window.__assistantNote("storage-note", text)
    : setTimeout(f, 200); f(); }};
  if ({_WIDGET}) {{
    const value = await new Promise((resolve) => {{
      const timer = setTimeout(() => resolve(null), 2000);
      window.addEventListener("message", function heard(event) {{
        if (event.source !== window.parent || !event.data || event.data.assistant !== "stored") return;
        clearTimeout(timer);
        window.removeEventListener("message", heard);
        resolve(event.data.blocked ? null : String(event.data.value || ""));
      }});
      window.parent.postMessage({{assistant: "load"}}, "*");
    }});
    if (value === null) say({json.dumps(CLIENT_TEXTS["unsaved"], ensure_ascii=False)});
    return [value || ""];
  }}
  try {{ return [sessionStorage.getItem({_STORE_KEY}) || ""]; }}
  catch (e) {{ say({json.dumps(CLIENT_TEXTS["unsaved"], ensure_ascii=False)}); return [""]; }}
}}"""


class KeptShort(BaseModel):
    text: str = Field(max_length=500)


class KeptTranslation(BaseModel):
    text: str = Field(max_length=5_000)
    sentence: str = Field(max_length=2_000)


class KeptCitation(BaseModel):
    n: int = Field(ge=1, le=999)
    chunk_id: str = Field(max_length=300)
    source: str = Field(max_length=300)
    title: str = Field(max_length=500)
    text: str = Field(max_length=5_000)
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    sentence_start: int = Field(ge=0)
    sentence_end: int = Field(ge=0)
    translation: KeptTranslation | None = None


class KeptGeneration(BaseModel):
    notice: str | None = Field(default=None, max_length=1_000)


class KeptAnswer(BaseModel):
    """The part of an answer a visitor's tab keeps to show it again; rendered like a new one (escaped)."""

    question: str = Field(max_length=MAX_TURN_CHARS)
    answer: str = Field(max_length=MAX_TURN_CHARS)
    refused: bool = False
    language: Literal["th", "en"] = "th"
    answer_language: Literal["th", "en"] = "th"
    short_answer: KeptShort | None = None
    status: Literal["answered", "uncertain", "not_found"] | None = None
    suggestions: list[str] = Field(default_factory=list, max_length=4)
    citations: list[KeptCitation] = Field(default_factory=list, max_length=20)
    generation: KeptGeneration = Field(default_factory=KeptGeneration)


class KeptMessage(BaseModel):
    role: Literal["user", "assistant"]
    text: str | None = Field(default=None, max_length=MAX_TURN_CHARS)
    key: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    token: str | None = Field(default=None, max_length=MAX_TOKEN_CHARS)
    answer: KeptAnswer | None = None
    vote: Literal["Like", "Dislike"] | None = None


def kept_answer(answer: dict) -> dict:
    """What the tab keeps of a new answer: the fields `answer_html` reads, nothing else."""
    trimmed = {
        **answer,
        "suggestions": list(answer.get("suggestions") or [])[:4],
        "citations": list(answer.get("citations") or [])[:20],
    }
    return KeptAnswer.model_validate(trimmed).model_dump(exclude_none=True)


def _restored(saved: str, history_turns: int) -> tuple[list[dict], list[dict]]:
    """The conversation (structured messages) and its turns as the visitor's tab kept them; anything
    damaged or forged starts a fresh conversation. Messages are rebuilt from data and rendered escaped,
    as new ones are: no HTML from the tab is shown."""
    if not isinstance(saved, str) or len(saved) > MAX_SAVED_CHARS:
        return [], []
    try:
        data = json.loads(saved) if saved else {}
        messages = [KeptMessage.model_validate(m).model_dump(exclude_none=True) for m in data.get("messages", [])]
        if any(
            (m["role"] == "user") != ("text" in m) or (m["role"] == "assistant") != ("answer" in m and "key" in m)
            for m in messages
        ):
            raise ValueError("a message without its content")
        turns = [Message.model_validate(t).model_dump() for t in data.get("turns", [])]
        return messages[-MAX_SHOWN_MESSAGES:], turns[-history_turns:] if history_turns else []
    except (ValueError, TypeError, KeyError, AttributeError, ValidationError):
        return [], []


class Ratings:
    """Feedback as the web takes it: each answer carries a signed token (no process remembers what it
    answered), a rating brings it back to any replica, and the store keeps one vote per answer."""

    def __init__(self, signer: Signer, store: Store, limit: RateLimit, metrics: Metrics):
        self.signer, self.store, self.limit, self.metrics = signer, store, limit, metrics

    def issue(self, answer: Answer) -> str:
        """An answer given (counted for the metrics) and the token a rating of it must bring back."""
        self.metrics.observe(answer)
        return self.signer.sign(answer.to_dict())

    def rate(self, token: str, liked: bool, comment: str | None, client: str) -> str:
        """Store a vote for the answer `token` proves; the answer's id. Raises FeedbackTokenError,
        FeedbackUnavailableError, InvalidQuestionError (a bad comment) or RateLimited."""
        vote = "up" if liked else "down"
        wait = self.limit.retry_after(client)
        if wait is not None:
            self.metrics.votes.labels(vote, "limited").inc()
            raise RateLimited(wait)
        try:
            served = self.signer.verify(token)
        except FeedbackTokenError:
            self.metrics.votes.labels(vote, "forged").inc()
            raise
        try:
            self.store.record(Vote(served, liked, comment))
        except AssistantError:
            self.metrics.votes.labels(vote, "unavailable").inc()
            raise
        self.metrics.votes.labels(vote, "saved").inc()
        return served.id


class RateLimited(AssistantError):
    def __init__(self, wait: int):
        super().__init__(FEEDBACK_LIMITED)
        self.wait = wait


def bounded_turns(history, keep: int, chars: int) -> tuple[Turn, ...]:
    """The latest `keep` turns, cut to `chars` characters in all, the latest kept first (a long turn keeps
    its beginning): the answerer's work must not grow with what a client sends."""
    kept, budget = [], chars
    for turn in reversed(as_turns(history, keep=keep)):
        if budget <= 0:
            break
        kept.append(Turn(turn.role, turn.content[:budget]))
        budget -= len(kept[-1].content)
    return tuple(reversed(kept))


def visitor_errors(fn):
    """A chat event whose failures reach the visitor as one bilingual line (SERVER_ERROR), never as the
    exception's text; the traceback goes to the server's log. `gr.Error`s (messages meant for the
    visitor) pass through."""

    def failed(error: Exception) -> gr.Error:
        log.error("chat event %s failed: %s", fn.__name__, type(error).__name__, exc_info=error)
        return gr.Error(SERVER_ERROR, print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def streamed(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as error:
                raise failed(error) from None

        return streamed

    @functools.wraps(fn)
    def called(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:
            raise failed(error) from None

    return called


def _refuse(message: str) -> gr.Error:
    """A message for the visitor, without a traceback in the log."""
    return gr.Error(message, print_exception=False)


def _rate(ratings: Ratings, token: str, liked: bool, comment: str | None, client: str) -> None:
    """Record a chat vote (with its comment); why it could not be, in words the visitor can act on."""
    try:
        ratings.rate(token, liked, comment, client)
    except RateLimited:
        raise _refuse(FEEDBACK_LIMITED) from None
    except (FeedbackUnavailableError, OSError) as error:
        log.error("feedback could not be written: %s", error)
        raise _refuse(FEEDBACK_FAILED) from None
    except AssistantError as error:
        raise _refuse(str(error)) from None


def build_chat(
    answerer: Answering, ratings: Ratings, limit: RateLimit, compact: bool = False, events: RateLimit | None = None
) -> gr.Blocks:
    """The chat page; `compact` drops the page chrome for iframes, the widget and the web component.
    Questions count against `limit`, every other event against `events`."""
    chat = ChatEvents(answerer, ratings, limit, events or limit, compact)
    with gr.Blocks(title="Latin American integration assistant", delete_cache=(3600, 3600)) as blocks:
        page = _chat_layout(compact, answerer.config.max_question_chars)
        _wire(blocks, page, chat)
        gr.api(chat.ask, api_name="ask")
    # Questions run side by side, so a slow LLM call holds up only its own visitor; the waiting line is
    # bounded, and so are the sessions whose state is kept.
    blocks.queue(default_concurrency_limit=answerer.config.chat_concurrency, max_size=answerer.config.queue_size)
    blocks.state_session_capacity = MAX_SESSIONS
    return blocks


@dataclass(frozen=True)
class _ChatPage:
    """The chat page's components, and the session state its events read and write."""

    chatbot: gr.Chatbot
    box: gr.Textbox
    send: gr.Button
    comment_row: gr.Row
    comment_box: gr.Textbox
    comment_send: gr.Button
    reply: gr.Radio
    clear: gr.Button
    saved: gr.Textbox
    kept: gr.State
    turns: gr.State
    answers: gr.State
    pending: gr.State


def _chat_layout(compact: bool, max_question_chars: int) -> _ChatPage:
    """The page top to bottom: the heading (not in the compact chat), the chat, the question, the comment
    box of a vote, the answer language and a new conversation."""
    if not compact:
        gr.HTML(
            f'<h1 id="title">{escape(TITLE)}</h1><p id="tagline">{escape(TAGLINE)}</p>'
            f'<details id="about"><summary>เกี่ยวกับ · About</summary><p>{escape(DESCRIPTION)}</p></details>',
            elem_id="head",
        )
    kept, turns, answers, pending = gr.State([]), gr.State([]), gr.State({}), gr.State(None)
    # What the browser keeps of the conversation (JSON), written to storage when it changes; mounted
    # so its value reaches the page's script, but not displayed nor read out (CSS above).
    saved = gr.Textbox("", visible="hidden", elem_id="saved", show_label=False)
    # No Markdown, no LaTeX: every message is escaped text (see `_html`). Each answer carries its own
    # sources; the greeting and suggested questions fill the empty chat.
    chatbot = gr.Chatbot(
        label="Chat",
        show_label=False,
        elem_id="chat",
        elem_classes=["compact"] if compact else None,
        feedback_options=("Like", "Dislike"),
        sanitize_html=True,
        render_markdown=False,
        latex_delimiters=[],
        allow_tags=False,
        buttons=["copy"],
        placeholder=_label("greeting", None),
        examples=[{"text": q} for q in EXAMPLES],
    )
    with gr.Row(equal_height=True):
        box = gr.Textbox(
            label=INPUT_LABEL,
            placeholder=_label("placeholder", None),
            show_label=False,
            scale=5,
            elem_id="question",
            max_length=max_question_chars,
        )
        send = gr.Button(_label("ask", None), variant="primary", scale=1, min_width=80, elem_id="ask")
    # Below the input, so opening it never pushes the question box down.
    with gr.Row(visible=False, elem_id="feedback-comment") as comment_row:
        comment_box = gr.Textbox(
            label=_label("comment", None),
            placeholder=_label("comment", None),
            show_label=False,
            scale=5,
            max_length=MAX_COMMENT_CHARS,
            elem_id="comment",
        )
        comment_send = gr.Button(_label("send", None), size="sm", scale=1, min_width=80, elem_id="send-comment")
    with gr.Row(elem_id="controls"):
        reply = gr.Radio(
            [("อัตโนมัติ · Auto", "auto"), ("ไทย", "th"), ("English", "en")],
            value="auto",
            label=_label("language", None),
            elem_id="answer-language",
            scale=3,
        )
        clear = gr.Button(_label("new", None), size="sm", elem_id="clear", scale=1)
    return _ChatPage(
        chatbot, box, send, comment_row, comment_box, comment_send, reply, clear, saved, kept, turns, answers, pending
    )


def _wire(blocks: gr.Blocks, page: _ChatPage, chat: ChatEvents) -> None:
    """The page's events, in the order Gradio numbers them: asking, clearing, voting and commenting,
    saving and restoring the conversation."""
    # Each handler is taken once: Gradio's concurrency limit is per function object, and every `chat.respond`
    # is a new bound method (the three ways of asking would each get a limit of their own).
    respond, clear, comment = chat.respond, chat.clear, chat.comment
    outputs = [page.box, page.chatbot, page.kept, page.turns, page.answers, page.saved]
    inputs = [page.box, page.kept, page.turns, page.answers, page.reply]
    page.box.submit(respond, inputs, outputs, api_visibility="private")
    page.send.click(respond, inputs, outputs, api_visibility="private")
    page.chatbot.example_select(chat.example, None, page.box, api_visibility="private", queue=False).then(
        respond, inputs, outputs, api_visibility="private"
    )
    cleared = outputs + [page.pending, page.comment_row]
    # A restored page holds "" in `saved` already, so clearing it changes nothing: forget explicitly.
    page.clear.click(clear, None, cleared, api_visibility="private", js=FORGET_JS)
    page.chatbot.clear(clear, None, cleared, api_visibility="private", js=FORGET_JS)  # its own trash button
    # A vote changes what the tab keeps too: the thumb comes back after a reload.
    page.chatbot.like(
        chat.rate,
        [page.kept, page.turns, page.answers],
        [page.kept, page.answers, page.pending, page.comment_row, page.comment_box, page.saved],
        api_visibility="private",
    )
    for event in (page.comment_box.submit, page.comment_send.click):
        event(
            comment,
            [page.comment_box, page.answers, page.pending],
            [page.answers, page.pending, page.comment_row, page.comment_box],
            api_visibility="private",
            show_progress="hidden",
        )
    page.saved.change(None, [page.saved], None, js=SAVE_JS)
    # The components `_labels` puts in the page's language, after the conversation.
    labelled = [page.box, page.send, page.clear, page.reply, page.comment_box, page.comment_send]
    blocks.load(
        chat.restore,
        [page.saved],
        [page.chatbot, page.kept, page.turns, page.answers, *labelled],
        js=LOAD_JS,
        api_visibility="private",
    )


class ChatEvents:
    """What one chat page does when a visitor asks, votes, comments, clears or reloads. The chat so far is
    the session's (`kept`, on the server), not what the browser sends: a forged 12,000-message chat cost
    1.4 s of CPU to read and echo back."""

    def __init__(self, answerer: Answering, ratings: Ratings, limit: RateLimit, events: RateLimit, compact: bool):
        self.answerer, self.ratings, self.limit, self.events, self.compact = answerer, ratings, limit, events, compact
        self.places = Places(answerer)
        self.history_turns, self.history_chars = answerer.config.history_turns, answerer.config.history_chars

    @visitor_errors
    def respond(self, message: str, kept: list, turns: list, answers: dict, reply: str, request: gr.Request):
        """Yields the chat as the answer grows (with an LLM), then the answer with its own sources."""
        _check(request, self.limit)
        try:
            question_cost(self.answerer, message)
        except AssistantError as error:
            raise _refuse(str(error)) from None
        kept, answers = _room_for_two(list(kept or []), answers)
        asked = kept + [{"role": "user", "text": message}]
        written = ""
        earlier = bounded_turns(turns or [], self.history_turns, self.history_chars)
        try:
            reply = reply if reply in ANSWER_LANGUAGES else "auto"
            for event in self.answerer.stream(message, earlier, answer_language=reply):
                if isinstance(event, str):
                    written += event
                    partial = self._shown(asked) + [{"role": "assistant", "content": f"<div>{_html(written)}</div>"}]
                    yield "", partial, kept, turns, answers, gr.skip()
                    continue
                answer = event
        except AssistantError as error:
            raise _refuse(str(error)) from None
        data = answer.to_dict()
        key = uuid.uuid4().hex
        exchange = [{"role": "user", "content": answer.question}, {"role": "assistant", "content": answer.answer}]
        turns = (turns + exchange)[-self.history_turns :] if self.history_turns else []
        # The session's answers by the message's place in the chat, each with its signed token: a rating
        # can only name one of these, and the token is what the store checks. The tab keeps the token with
        # the answer, so a restored answer can be rated too (the token proves this server gave it).
        record = {"token": self.ratings.issue(answer), "liked": None}
        # The whole conversation stays on the page; the tab keeps its latest MAX_SHOWN_MESSAGES.
        kept = asked + [{"role": "assistant", "key": key, "token": record["token"], "answer": kept_answer(data)}]
        kept[-1]["html"] = answer_html(data, key, self.places)
        yield "", self._shown(kept), kept, turns, {**answers, len(kept) - 1: record}, _saving(kept, turns)

    @visitor_errors
    def rate(self, kept: list, turns: list, answers: dict, data: gr.LikeData, request: gr.Request):
        """A vote on an answer this server gave (its token): each vote is sent as given and the store keeps
        the latest; taking a vote back sends nothing. A vote opens the optional comment box for that answer."""
        _check(request, self.events)
        index = data.index if isinstance(data.index, int) else (data.index or [None])[0]
        record = answers.get(index) if isinstance(index, int) else None
        if record is None or not (0 <= index < len(kept)) or kept[index]["role"] != "assistant":
            return kept, answers, None, gr.update(visible=False), "", gr.skip()
        vote = {True: "Like", False: "Dislike"}.get(data.liked) if isinstance(data.liked, bool) else None
        changed = {k: v for k, v in kept[index].items() if k != "vote"} | ({"vote": vote} if vote else {})
        kept = [*kept[:index], changed, *kept[index + 1 :]]
        if vote is None:
            return kept, answers, None, gr.update(visible=False), "", _saving(kept, turns)
        _rate(self.ratings, record["token"], vote == "Like", None, self.limit.request_client(request))
        answers = {**answers, index: {**record, "liked": vote == "Like"}}
        return kept, answers, index, gr.update(visible=True), "", _saving(kept, turns)

    @visitor_errors
    def comment(self, text: str, answers: dict, pending: int | None, request: gr.Request):
        """The comment on the answer just rated: once, bounded, validated."""
        _check(request, self.events)
        record = answers.get(pending) if isinstance(pending, int) else None
        if record is None or record.get("liked") is None or record.get("commented"):
            return answers, None, gr.update(visible=False), ""
        try:
            text = validate_comment(text)
        except AssistantError as error:
            raise _refuse(str(error)) from None
        if text:
            _rate(self.ratings, record["token"], record["liked"], text, self.limit.request_client(request))
            gr.Info(_label("thanks", None))
        return {**answers, pending: {**record, "commented": True}}, None, gr.update(visible=False), ""

    @visitor_errors
    def clear(self, request: gr.Request):
        _check(request, self.events)
        return "", [], [], [], {}, "", None, gr.update(visible=False)

    @visitor_errors
    def restore(self, saved: str, request: gr.Request):
        """A reloaded page: the conversation the browser kept, and the page's language (`?lang=en`)."""
        _check(request, self.events)
        query = request.query_params if request is not None else {}
        lang = query.get("lang") if query.get("lang") in LABELS else None
        kept, turns = _restored(saved, self.history_turns)
        for m in kept:
            if m["role"] == "assistant":
                m["html"] = answer_html(m["answer"], m["key"], self.places)
        widget = self.compact and query.get("embed") == "widget"  # the widget shows its own greeting
        chat = gr.update(
            value=self._shown(kept),
            feedback_value=[m.get("vote") for m in kept if m["role"] == "assistant"],
            placeholder=OUTCOME["try"] if widget else _label("greeting", lang),
        )
        return (chat, kept, turns, _indexed(kept)) + _labels(lang)

    @staticmethod
    def example(data: gr.SelectData) -> str:
        value = data.value
        return str(value.get("text", "")) if isinstance(value, dict) else str(value or "")

    @visitor_errors
    def ask(
        self,
        question: str,
        history: list[dict] | None = None,
        top_k: int | None = None,
        answer_language: str = "auto",
        request: gr.Request = None,
    ) -> dict:
        """Answer a question (Thai or English) with cited passages; `history` holds earlier
        {role, content} turns; `answer_language` is auto (the question's), th or en. Returns the same
        object as `assistant ask --json`."""
        try:
            parsed = AskRequest.model_validate(
                {
                    "question": question,
                    "history": history or [],
                    "top_k": top_k,
                    "answer_language": answer_language or "auto",
                }
            )
        except ValidationError as error:
            raise _refuse(_validation_message(error)) from None
        _check(request, self.limit)
        try:
            answer = answer_request(self.answerer, parsed)
        except AssistantError as error:
            raise _refuse(str(error)) from None
        return {**answer.to_dict(), "feedback_token": self.ratings.issue(answer)}

    def _shown(self, kept: list[dict]) -> list[dict]:
        return [
            {"role": "user", "content": question_html(m["text"])}
            if m["role"] == "user"
            else {"role": "assistant", "content": m.get("html") or answer_html(m["answer"], m["key"], self.places)}
            for m in kept
        ]


def _check(request: gr.Request | None, limiter: RateLimit) -> None:
    if request is None:
        return
    client = limiter.client(request.client.host if request.client else None, request.headers.get("x-forwarded-for"))
    if limiter.retry_after(client) is not None:
        raise _refuse(RATE_LIMITED)


def _room_for_two(kept: list[dict], answers: dict) -> tuple[list[dict], dict]:
    """Room for a question and its answer: the chat keeps its latest MAX_SHOWN_MESSAGES, and the feedback
    records follow their messages' places."""
    dropped = max(0, len(kept) + 2 - MAX_SHOWN_MESSAGES)
    if not dropped:
        return kept, answers
    return kept[dropped:], {i - dropped: r for i, r in answers.items() if isinstance(i, int) and i >= dropped}


def _saving(kept: list[dict], turns: list) -> str:
    messages = [{k: v for k, v in m.items() if k != "html"} for m in kept[-MAX_SHOWN_MESSAGES:]]
    return json.dumps({"v": 2, "messages": messages, "turns": turns}, ensure_ascii=False)


def _labels(lang: str | None) -> tuple:
    """The input's, the buttons' and the comment box's labels in the page's language."""
    return (
        gr.update(placeholder=_label("placeholder", lang)),
        gr.update(value=_label("ask", lang)),
        gr.update(value=_label("new", lang)),
        gr.update(value=lang or "auto", label=_label("language", lang)),
        gr.update(placeholder=_label("comment", lang)),
        gr.update(value=_label("send", lang)),
    )


def _indexed(kept: list[dict]) -> dict[int, dict]:
    """The session's answers by place in the chat, from the tokens the tab kept with them: the token is
    checked when a rating uses it, so a forged or altered one rates nothing."""
    return {
        i: {"token": m["token"], "liked": None}
        for i, m in enumerate(kept)
        if m["role"] == "assistant" and isinstance(m.get("token"), str)
    }


# The widget's options: (attribute, default, what it does). widget.js checks each value again.
WIDGET_OPTIONS = (
    ("data-title", "ผู้ช่วยค้นคว้า · Research assistant", "The panel's heading and the frame's title."),
    (
        "data-lang",
        "auto",
        "auto: labels in both languages, each answer in its question's language; th or en: the labels, the "
        "greeting and the answers in that language.",
    ),
    ("data-position", "bottom-right", "bottom-right or bottom-left."),
    ("data-color", "#1f6feb", "Any CSS color, for the button and the panel's header."),
    ("data-greeting", "(per language)", "A short line shown above the chat (300 characters at most)."),
    ("data-open", "false", "true to start with the panel open."),
    ("data-height", "600", "The panel's height in pixels (320–1000) on wide screens; phones get the full screen."),
)
_PREVIEW_CHOICES = {
    "lang": ("auto", "th", "en"),
    "position": ("bottom-right", "bottom-left"),
    "open": ("false", "true"),
}


# The compact chat sizes itself to its frame (CSS above); at this height the chat, the input and its
# controls show whole at widths from 320 px up.
IFRAME_HEIGHT = 600
COPY_JS = """document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const code = document.getElementById(button.getAttribute("aria-controls"));
  try { await navigator.clipboard.writeText(code.textContent); }
  catch (e) { const r = document.createRange(); r.selectNodeContents(code); getSelection().removeAllRanges();
    getSelection().addRange(r); document.execCommand("copy"); }
  button.textContent = "คัดลอกแล้ว · Copied";
  setTimeout(() => { button.textContent = "คัดลอก · Copy"; }, 2000);
});"""


def _copy_button(key: str) -> str:
    return f'<button type="button" class="copy" aria-controls="{key}-snippet">คัดลอก · Copy</button>'


def embed_page(base: str, config: Config, query: dict | None = None) -> str:
    """Copy-ready snippets for this server's URL, the widget first, and a live preview of the widget
    with the options chosen in the form (sent back here as query parameters)."""
    query = query or {}
    chosen = {"lang": "auto", "position": "bottom-right", "open": "false"}
    for key, allowed in _PREVIEW_CHOICES.items():
        if query.get(key) in allowed:
            chosen[key] = query[key]
    for key, size in (("title", 80), ("color", 40), ("greeting", 300)):
        if query.get(key, "").strip():
            chosen[key] = query[key].strip()[:size]
    # The snippet names only what differs from the defaults, so the one-line default is short.
    defaults = {"lang": "auto", "position": "bottom-right", "open": "false"}
    attributes = "".join(f'\n        data-{k}="{escape(v)}"' for k, v in chosen.items() if defaults.get(k) != v)
    widget = f'<script src="{base}widget.js"{attributes}\n        defer></script>'
    compact = f"{base}compact/"
    iframe = (
        f'<iframe src="{compact}" title="Latin American integration assistant"\n'
        f'        style="width:100%;height:{IFRAME_HEIGHT}px;border:0"></iframe>'
    )
    component = f'<script type="module" src="{base}gradio.js"></script>\n<gradio-app src="{compact}"></gradio-app>'
    fetch = (
        f'const response = await fetch("{base}api/ask", {{\n'
        f'  method: "POST",\n  headers: {{"Content-Type": "application/json"}},\n'
        f'  body: JSON.stringify({{question: "บราซิลยุติการเจรจาอะไร", history: []}}),\n}});\n'
        f"const {{answer, citations}} = await response.json();"
    )
    origins = ", ".join(config.origins) or "*"
    options = "".join(
        f"<tr><td><code>{escape(name)}</code></td><td><code>{escape(default)}</code></td><td>{escape(what)}</td></tr>"
        for name, default, what in WIDGET_OPTIONS
    )

    def field(key: str, label: str) -> str:
        if key in _PREVIEW_CHOICES:
            choices = "".join(
                f"<option{' selected' if chosen[key] == c else ''}>{c}</option>" for c in _PREVIEW_CHOICES[key]
            )
            return f'<label>{label} <select name="{key}">{choices}</select></label>'
        return f'<label>{label} <input name="{key}" value="{escape(chosen.get(key, ""))}"></label>'

    form = "".join(field(k, k) for k in ("title", "lang", "position", "color", "greeting", "open"))
    blocks = "".join(
        f'<h2>{title}</h2><pre><code id="{key}-snippet">{escape(code)}</code></pre>{_copy_button(key)}'
        for key, title, code in (
            ("iframe", "2. iframe", iframe),
            ("component", "3. Web component", component),
            ("api", "4. JSON API", fetch),
        )
    )
    return f"""<!doctype html><html lang="th"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Embed the assistant</title><style>
body{{font-family:{", ".join(repr(f) for f in FONTS)};margin:1.5rem auto;max-width:60rem;padding:0 1rem;color:#222}}
pre{{background:#f5f5f5;padding:.8rem;overflow-x:auto;border-radius:6px}}
table{{border-collapse:collapse}}
td,th{{border-top:1px solid #ddd;padding:.3rem .5rem;vertical-align:top;text-align:left}}
form label{{display:inline-block;margin:.2rem .8rem .2rem 0}}
button.copy{{font:inherit;padding:.2rem .7rem;border:1px solid #1f5fbf;color:#1f5fbf;background:#fff;border-radius:6px;
  cursor:pointer}}
:focus-visible{{outline:3px solid #1f5fbf;outline-offset:2px}}
</style></head><body><h1>Embed the assistant in your site</h1>
<p>Allowed origins: <code>{escape(origins)}</code> (set <code>ASSISTANT_ALLOWED_ORIGINS</code>).
Each visitor may ask <code>{escape(config.rate_limit)}</code> questions (<code>ASSISTANT_RATE_LIMIT</code>);
a conversation stays in the visitor's tab and the last {config.history_turns} messages go with each question
(<code>ASSISTANT_HISTORY_TURNS</code>).</p>
<h2>1. Widget: one tag</h2><p>A chat button in the corner of any page that opens the chat in a panel
(full screen on phones; Esc closes it). The preview on this page is that widget, with these options:</p>
<form method="get" action="embed">{form} <button>Preview</button></form>
<pre><code id="widget-snippet">{escape(widget)}</code></pre>{_copy_button("widget")}
<table><tr><th>Attribute</th><th>Default</th><th>Effect</th></tr>{options}</table>
{blocks}<h2>Preview of the iframe</h2>{iframe}
<script>{COPY_JS}</script>
{widget}</body></html>"""


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str

    @field_validator("content")
    @classmethod
    def _content(cls, value: str) -> str:
        try:
            return validate(value, MAX_TURN_CHARS, what="history turn")
        except InvalidQuestionError as error:
            raise ValueError(str(error)) from None


class Turned(BaseModel):
    """A history turn as sent: its text is checked (`validate`) only if it is kept (`answer_request`);
    checking 50 turns of 19,000 characters took 100 ms of CPU."""

    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_TURN_CHARS)


class AskRequest(BaseModel):
    """One question with its conversation: the same checks for `/api/ask` and Gradio's `/ask`."""

    question: str = Field(description="The question, in Thai or English.")
    history: list[Turned] = Field(
        default_factory=list,
        max_length=MAX_HISTORY_TURNS,
        description="Earlier turns of the conversation, oldest first.",
    )
    top_k: int | None = Field(default=None, ge=1, le=50, description="Passages to retrieve.")
    answer_language: Literal["auto", "th", "en"] = Field(
        default="auto", description="The answer's language: auto (the question's), th or en."
    )


def answer_request(answerer: Answering, request: AskRequest) -> Answer:
    """The answer to an API question; only the latest ASSISTANT_HISTORY_TURNS messages, within
    ASSISTANT_HISTORY_CHARS, reach the answerer, as in the chat."""
    question_cost(answerer, request.question)
    turns = bounded_turns(
        (m.model_dump() for m in request.history), answerer.config.history_turns, answerer.config.history_chars
    )
    turns = tuple(Turn(t.role, validate(t.content, MAX_TURN_CHARS, what="history turn")) for t in turns)
    return answerer.answer(request.question, turns, top_k=request.top_k, answer_language=request.answer_language)


def question_cost(answerer: Answering, question: str) -> None:
    """Refuses a question whose work would be out of proportion: over ASSISTANT_MAX_QUESTION_CHARS, or
    (with a model that can count them) over ASSISTANT_MAX_QUESTION_TOKENS of the model's tokens. A
    2,000-character question of random Thai letters cost 0.5 s of CPU against 30 ms for a typical one."""
    config = answerer.config
    validate(question, config.max_question_chars)
    count = getattr(getattr(answerer.retriever.index, "embed_model", None), "tokens", None)
    if callable(count) and count(question) - count("") > config.max_question_tokens:  # "" : prompt, markers
        raise QuestionTooLongError(
            f"คำถามยาวเกินไป · The question is too long: {config.max_question_tokens} of the model's tokens at "
            "most (about 250 characters of Thai words). Ask something shorter."
        )


def _validation_message(error: ValidationError) -> str:
    """Pydantic's errors as one line a person can read: where, then what."""
    parts = []
    for e in error.errors()[:3]:
        where = ".".join(str(x) for x in e["loc"])
        parts.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


class Guard:
    """Pure ASGI middleware in front of every route, Gradio's included.

    - Request bodies are counted as they arrive, chunked or not, and cut off at `limit` bytes with a 413
      (a Content-Length check alone let a 300 MB chunked body through).
    - Gradio's upload route is refused: the app takes no files, and uploads were kept and served back.
    - Responses say which sites may frame the chat.
    - The client's address is the connection's, or from X-Forwarded-For when the connection comes from a
      trusted proxy (`client_address`); everything after this sees that address.
    - Gradio's HTTP routes that run a function answer 429 with Retry-After past the question rate.
    """

    def __init__(
        self, app, limit: int, ancestors: str, trusted: list | None = None, questions: RateLimit | None = None
    ):
        self.app, self.limit, self.ancestors = app, limit, ancestors.encode()
        self.trusted, self.questions = trusted or [], questions

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        peer = scope.get("client")
        if self.trusted and peer and _within(peer[0], self.trusted):
            forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
            scope = {**scope, "client": (client_address(peer[0], forwarded, self.trusted), peer[1])}
            proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").strip().lower()
            if proto in ("http", "https") and scope["type"] == "http":
                scope["scheme"] = proto
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if _UPLOAD.search(scope["path"]):
            return await _reply(send, 404, "This server accepts no uploads.")
        if self.questions is not None and scope["method"] == "POST" and _GRADIO_CALL.search(scope["path"]):
            wait = self.questions.wait(scope["client"][0] if scope.get("client") else "unknown")
            if wait is not None:
                return await _reply(send, 429, RATE_LIMITED, [(b"retry-after", str(wait).encode())])
        length = headers.get(b"content-length", b"").decode("latin-1").strip()
        if length and (not length.isdigit() or int(length) > self.limit):
            return await _reply(send, 413, f"Request body over {self.limit:,} bytes.")
        received, items, started = 0, 0, False
        event = scope["method"] == "POST" and _GRADIO_EVENT.search(scope["path"]) is not None

        async def counted():
            nonlocal received, items
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                received += len(body)
                if received > self.limit:
                    raise _TooLarge(self.limit)
                if event:
                    items += body.count(b"{") + body.count(b"[") + body.count(b",")
                    if items > MAX_EVENT_ITEMS:
                        raise _TooLarge(self.limit, f"Request body with over {MAX_EVENT_ITEMS:,} JSON items.")
            return message

        async def sending(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", []),
                        (b"content-security-policy", b"frame-ancestors " + self.ancestors),
                    ],
                }
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except _TooLarge as error:
            if not started:
                await _reply(send, 413, error.detail)


class _TooLarge(HTTPException):
    """Raised from `receive` past the limit; an HTTPException, so frameworks that wrap body errors
    (FastAPI turns others into a 400) let it through as the 413 it is."""

    def __init__(self, limit: int, detail: str | None = None):
        super().__init__(413, detail or f"Request body over {limit:,} bytes.")


async def _reply(send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class UnreadResults:
    """Drops chat results nobody reads, with their session's state.

    Gradio keeps an event's output until the session's event stream (`/queue/data`) takes it; a client
    that never opens the stream leaves it there for ever (1,200 forged page loads, each echoing 0.9 MB:
    534 MB -> 1,947 MB). A stream that is open takes each message within milliseconds, so a message still
    first in line after `after_s` seconds has no reader.
    """

    def __init__(self, pages: list[gr.Blocks], after_s: float):
        self.pages, self.after_s = pages, after_s
        self.waiting: dict[tuple[int, str], tuple[object, float]] = {}

    def sweep(self, now: float | None = None) -> int:
        """Drop the sessions whose first message waited `after_s`; returns how many."""
        now = time.monotonic() if now is None else now
        waiting, dropped = {}, 0
        for n, blocks in enumerate(self.pages):
            queue = blocks._queue
            for session, messages in list(queue.pending_messages_per_session.items()):
                pending = getattr(messages, "_queue", None)  # asyncio.Queue's deque
                if not pending:
                    continue
                head, key = pending[0], (n, session)
                first = self.waiting.get(key)
                if first is None or first[0] is not head:
                    waiting[key] = (head, now)
                elif now - first[1] < self.after_s:
                    waiting[key] = first
                else:
                    queue.pending_messages_per_session.pop(session, None)
                    queue.pending_event_ids_session.pop(session, None)
                    holder = blocks.state_holder
                    with holder.lock:
                        holder.session_data.pop(session, None)
                        holder.time_last_used.pop(session, None)
                    dropped += 1
        self.waiting = waiting
        return dropped

    async def run(self) -> None:
        idle = 0
        while True:
            await asyncio.sleep(min(2.0, self.after_s / 2))
            try:
                dropped = self.sweep()
            except Exception:  # Gradio's internals may change; the sweep must not stop the server
                log.exception("sweeping unread chat results failed")
                dropped = 0
            idle = 0 if dropped else idle + 1
            if dropped or idle == 5:
                _release_memory()


def _large_blocks_from_the_system() -> None:
    """Large blocks (request bodies, a chat's output) come from and go back to the system at once.
    glibc otherwise raises its mmap threshold after the first large block is freed, and later ones
    come from heaps that keep their pages: after 1,200 events of 0.9 MB arriving faster than they were
    answered, RSS stayed 134 MB higher with nothing left holding them."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD, glibc's default, now fixed
    except (OSError, AttributeError):  # not glibc
        pass


def _release_memory() -> None:
    """Hands memory Python has freed back to the system. glibc keeps freed blocks of its heaps (after
    dropping 400 unread 0.9 MB events, RSS stayed 211 MB higher with nothing left holding them)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


class IndexMonitor:
    """Keeps the served index current and honest, checked every `reload_interval_s` off the event loop.

    - A new manifest (an index published by `assistant index` or a folder renamed into place) is loaded
      and verified while the old index keeps answering, then swapped in; one that fails to load is
      reported and the old one stays.
    - Files changed on disk under the loaded index (edited, truncated) are re-verified and reported:
      the server keeps answering from memory, and health says the folder needs a rebuild.
    - A corpus that changed since the build is reported as stale.
    """

    def __init__(self, answerer: Answering, config: Config):
        self.answerer, self.config = answerer, config
        self.folder = config.index_dir
        self.manifest_state = _stat(self.folder / index.MANIFEST)
        self.disk = answerer.retriever.index.disk
        self.corpus_state = None
        self.problem: str | None = None
        self.stale = False
        self.manifest_missing = False
        self.corpus_missing = False

    @property
    def problems(self) -> list[str]:
        """What is wrong, for the public health check: without folder paths."""
        found = [
            "The index's manifest is missing: run `assistant index` (answers still come from the copy loaded at start)."
            if self.manifest_missing
            else None,
            _public(self.problem) if self.problem else None,
            "The corpus folder is missing or holds no documents: restore it, then run `assistant index`."
            if self.corpus_missing
            else None,
            "The corpus changed since the index was built: run `assistant index`."
            if self.stale and not self.corpus_missing
            else None,
        ]
        return [p for p in found if p]

    @property
    def failing(self) -> bool:
        return bool(self.problem or self.manifest_missing or self.corpus_missing)

    def check(self) -> None:
        current = self.answerer.retriever.index
        state = _stat(self.folder / index.MANIFEST)
        if state is None and not self.manifest_missing:
            log.warning("The index manifest %s is missing.", self.folder / index.MANIFEST)
        self.manifest_missing = state is None
        if state is not None and state != self.manifest_state:
            self.manifest_state = state
            try:
                loaded = index.load(self.config, current.embed_model)
            except AssistantError as error:
                self.problem = (
                    f"A new index could not be loaded ({error}); still serving the one built at "
                    f"{current.manifest['built_at']}."
                )
                log.warning(self.problem)
                return
            # Staleness is judged for the new index before it answers, so health never pairs the new
            # index with the old one's verdict.
            self._check_corpus(loaded.manifest, index.disk_state(self.config.corpus_dir))
            self.answerer.use(loaded)
            self.disk, self.problem = loaded.disk, None
            log.warning(
                "Now serving the index built at %s (%d passages).",
                loaded.manifest["built_at"],
                loaded.manifest["chunks"],
            )
            current = loaded
        disk = index.disk_state(self.folder)
        if disk != self.disk:
            self.disk = disk
            try:
                index.verify(self.folder, current.manifest)
                self.problem = None
            except AssistantError as error:
                self.problem = f"{error} (answers still come from the copy loaded at start)"
                log.warning(self.problem)
        corpus_state = index.disk_state(self.config.corpus_dir)
        if corpus_state != self.corpus_state:
            self._check_corpus(current.manifest, corpus_state)

    def _check_corpus(self, manifest: dict, state) -> None:
        """Whether the corpus folder (found in `state`, `index.disk_state`) still holds what the index of
        `manifest` was built from."""
        self.corpus_state = state
        try:
            missing = not corpus.files(self.config.corpus_dir)
            stale = corpus.content_hash(self.config.corpus_dir) != manifest["corpus_hash"]
        except (AssistantError, OSError):
            missing, stale = True, True
        self.corpus_missing, self.stale = missing, stale
        if missing:
            log.warning("The corpus folder %s is missing or holds no documents.", self.config.corpus_dir)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # the monitor must outlive any surprise on disk
                log.exception("index check failed")


_PATH = re.compile(r"(?<![\w.-])(?:[A-Za-z]:)?(?:[\\/][^\s'\"()\\/]+)+[\\/]?")


def _public(text: str) -> str:
    """A message without the server's folder paths (health is public): each path becomes its last part."""
    return _PATH.sub(lambda m: m[0].rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or "/", text)


def _stat(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class FeedbackRequest(BaseModel):
    """A rating of one answer, from any replica: the token that answer came with."""

    token: str = Field(max_length=MAX_TOKEN_CHARS, description="The answer's `feedback_token`.")
    liked: bool = Field(description="true for thumbs up, false for thumbs down.")
    comment: str | None = Field(
        default=None, max_length=MAX_COMMENT_CHARS * 4, description="Optional; null keeps an earlier comment."
    )


# How often the shared stores (Redis, PostgreSQL) are probed for health, seconds.
SHARED_CHECK_S = 2.0


def create_app(answerer: Answering, config: Config, load_seconds: dict[str, float] | None = None) -> FastAPI:
    """One FastAPI app: `/` chat, `/compact/` iframe chat, `/api/*` JSON, `/embed`, `/widget.js`, `/gradio.js`,
    `/docs`, and `/metrics` when ASSISTANT_METRICS allows it."""
    monitor = IndexMonitor(answerer, config)
    metrics = Metrics(lambda: answerer.retriever.index.manifest, load_seconds)
    storage = LimitStorage(config.rate_limit_storage)
    store = open_store(config)
    pages: list[gr.Blocks] = []
    # /docs is served from this server's copy of Swagger UI (the swagger-ui-bundle package), not from a
    # CDN; ReDoc has no packaged copy, so /redoc is off.
    app = FastAPI(
        title="Latin American integration assistant",
        version="0.1.0",
        lifespan=_lifespan(monitor, storage, store, UnreadResults(pages, config.unread_result_s)),
        description="Answers in Thai or English with cited passages of the documents.",
        docs_url=None,
        redoc_url=None,
    )
    limit = _counted(config.rate_limit, "ask", config, storage, metrics)
    events = _counted(event_rate(config), "event", config, storage, metrics)
    ratings = _ratings(config, store, storage, metrics)
    _guard(app, config, metrics, limit)
    if config.api_docs:
        _self_hosted_docs(app)
    app.add_exception_handler(AssistantError, _assistant_error)
    _api_routes(app, answerer, config, monitor, storage, store, limit, ratings)
    _other_routes(app, config, metrics)
    return _mount_chats(app, answerer, ratings, limit, events, pages)


def _mount_chats(
    app: FastAPI, answerer: Answering, ratings: Ratings, limit: RateLimit, events: RateLimit, pages: list[gr.Blocks]
) -> FastAPI:
    """The compact chat at /compact and the full one at /, each added to `pages`."""
    theme = _theme()
    for path, compact in (("/compact", True), ("/", False)):  # the more specific mount first
        pages.append(build_chat(answerer, ratings, limit, compact=compact, events=events))
        app = gr.mount_gradio_app(
            app,
            pages[-1],
            path=path,
            show_error=False,  # an unexpected exception's text never reaches the page (see visitor_errors)
            theme=theme,
            css=CSS,
            js=CLIENT_JS,
            footer_links=["api"] if not compact else [],
            max_file_size=0,
        )
    return app


def _lifespan(monitor: IndexMonitor, storage: LimitStorage, store: Store, unread: UnreadResults):
    """The server's background work while it runs: the index monitor, the shared stores' checks and
    dropping unread chat results."""

    async def watch_shared() -> None:
        while True:
            await asyncio.sleep(SHARED_CHECK_S)
            for check in (storage.check, store.check):
                try:
                    await asyncio.to_thread(check)
                except Exception:
                    log.exception("shared store check failed")

    @asynccontextmanager
    async def lifespan(app):
        tasks = [
            asyncio.create_task(monitor.run()),
            asyncio.create_task(watch_shared()),
            asyncio.create_task(unread.run()),
        ]
        yield
        for task in tasks:
            task.cancel()
        store.close()

    return lifespan


def _counted(rate: str, name: str, config: Config, storage: LimitStorage, metrics: Metrics) -> RateLimit:
    """A rate limit whose refusals the metrics count under `name`."""
    limit = RateLimit(rate, config.proxies, storage, name)
    limit.limited = metrics.rate_limited.labels(name)
    return limit


def _ratings(config: Config, store: Store, storage: LimitStorage, metrics: Metrics) -> Ratings:
    if (config.feedback_url or storage.shared) and not config.secret_key:
        log.warning(
            "Shared stores are set but ASSISTANT_SECRET_KEY is not: this process signs answers with a key of "
            "its own, so other replicas will refuse ratings of its answers. Give every replica the same key."
        )
    feedback_limit = _counted(config.feedback_rate_limit, "feedback", config, storage, metrics)
    return Ratings(Signer(config.secret_key), store, feedback_limit, metrics)


def _guard(app: FastAPI, config: Config, metrics: Metrics, questions: RateLimit) -> None:
    """The middleware every request passes: CORS, the allowed host names, the metrics and the Guard."""
    origins = config.origins or ["*"]
    app.add_middleware(
        CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"]
    )
    hosts = config.hosts or ["*"]
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=[h.strip("[]") for h in hosts])
    ancestors = "*" if "*" in origins else " ".join(["'self'", *origins])
    app.add_middleware(Metered, metrics=metrics)
    app.add_middleware(
        Guard, limit=config.max_body_bytes, ancestors=ancestors, trusted=networks(config.proxies), questions=questions
    )


async def _assistant_error(request: Request, error: AssistantError) -> JSONResponse:
    """The library's errors as HTTP: the caller's fault (4xx) or the server's state (503)."""
    if isinstance(error, RateLimited):
        return JSONResponse({"detail": str(error)}, status_code=429, headers={"Retry-After": str(error.wait)})
    status = (
        413
        if isinstance(error, QuestionTooLongError)
        else 422
        if isinstance(error, InvalidQuestionError)
        else 403
        if isinstance(error, FeedbackTokenError)
        else 503
    )
    return JSONResponse({"detail": str(error)}, status_code=status)


def _api_routes(
    app: FastAPI,
    answerer: Answering,
    config: Config,
    monitor: IndexMonitor,
    storage: LimitStorage,
    store: Store,
    limit: RateLimit,
    ratings: Ratings,
) -> None:
    """/api/health, /api/ask and /api/feedback."""

    @app.get("/api/health")
    async def health() -> JSONResponse:
        """Whether the server can answer, without waiting behind questions (it runs on the event loop)."""
        manifest = answerer.retriever.index.manifest
        # Degraded: answers work, a shared store does not (limits unenforced, or ratings refused).
        # Degraded too: no usable answer-decision model, so answers are only uncertain or not found.
        decision_problem = getattr(getattr(answerer, "extractive", answerer), "decision_problem", None)
        degraded = storage.problem or store.problem or decision_problem
        status = "error" if monitor.failing else "stale" if monitor.stale else "degraded" if degraded else "ok"
        problems = monitor.problems + [_public(p) for p in (storage.problem, store.problem, decision_problem) if p]
        body = {
            "status": status,
            "problems": problems,
            "index": {
                "chunks": manifest["chunks"],
                "model": manifest["embed_model"],
                "built_at": manifest["built_at"],
                "build_id": build_id(manifest),
            },
            "rate_limits": {"storage": storage.kind, "ok": storage.problem is None},
            "feedback": {"store": type(store).__name__.removesuffix("Store").lower(), "ok": store.problem is None},
            "llm": {"mode": config.llm, "model": config.llm_model or None},
            "decision": {"model": "fallback" if decision_problem else "learned", "ok": decision_problem is None},
        }
        return JSONResponse(body, status_code=503 if monitor.failing else 200)

    @app.post("/api/ask", response_model=dict)  # the answer's schema; a rate-limited 429 is a JSONResponse
    def ask(body: AskRequest, request: Request) -> dict | JSONResponse:
        """Answer a question with cited passages: the same object as `assistant ask --json`."""
        wait = limit.retry_after(limit.request_client(request))
        if wait is not None:
            return JSONResponse({"detail": RATE_LIMITED}, status_code=429, headers={"Retry-After": str(wait)})
        answer = answer_request(answerer, body)
        return {**answer.to_dict(), "feedback_token": ratings.issue(answer)}

    @app.post("/api/feedback")
    def give_feedback(body: FeedbackRequest, request: Request) -> dict:
        """Rate an answer (thumbs up or down, an optional comment) by the `feedback_token` it came with,
        on any replica. Rating the same answer again replaces the vote (the latest wins). 403: the token
        is forged, damaged or expired; 429: too many ratings; 503: the store is down, nothing was saved."""
        answer_id = ratings.rate(body.token, body.liked, body.comment, limit.request_client(request))
        return {"saved": True, "answer_id": answer_id, "liked": body.liked}


def _other_routes(app: FastAPI, config: Config, metrics: Metrics) -> None:
    """/metrics, /embed, the scripts other sites load, and the other methods of /api/ask."""

    @app.get("/metrics", include_in_schema=False)
    def metrics_route(request: Request) -> Response:
        # For the operator's scraper only: off by default, never to a browser on another site (a
        # cross-origin fetch carries Origin), and with a token set, only with that bearer token.
        setting = config.metrics.strip()
        if setting.lower() in {"", "off"}:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        if request.headers.get("origin") or request.headers.get("sec-fetch-site") in {"cross-site", "same-site"}:
            return JSONResponse({"detail": "Metrics are not served to web pages."}, status_code=403)
        if setting.lower() != "on":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {setting}".encode()):
                return JSONResponse(
                    {"detail": "Metrics need the bearer token set in ASSISTANT_METRICS."},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        body, media_type = metrics.render()
        return Response(body, media_type=media_type, headers={"Cache-Control": "no-store"})

    @app.get("/embed", response_class=HTMLResponse)
    def embed(request: Request) -> str:
        return embed_page(str(request.base_url), config, dict(request.query_params))

    @app.get("/widget.js", include_in_schema=False)
    def widget() -> FileResponse:
        # A classic script other sites load with one tag; CORS (per ASSISTANT_ALLOWED_ORIGINS) comes from
        # the middleware. Short caching, so a new version reaches pages within minutes.
        return FileResponse(WIDGET_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=300"})

    gradio_js = Path(gr.__file__).parent / "templates" / "frontend" / "gradio.js"

    @app.get("/gradio.js", include_in_schema=False)
    def web_component() -> FileResponse:
        # Shipped in the gradio package but not served by it; other sites load it from here.
        return FileResponse(gradio_js, media_type="text/javascript")

    @app.api_route("/api/ask", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def ask_other_methods() -> JSONResponse:
        # Without this the chat mounted at / answers 404, as if the API did not exist.
        return JSONResponse(
            {"detail": 'Send questions with POST (JSON: {"question": "..."}).'},
            status_code=405,
            headers={"Allow": "POST"},
        )


def _theme() -> gr.themes.Base:
    # Blue, not the default orange: white on orange-500 is 2.8:1, on blue-600 5.2:1.
    return gr.themes.Default(primary_hue="blue", font=FONTS, font_mono=["ui-monospace", "monospace"]).set(
        button_primary_background_fill="#1f5fbf",  # white on it: 6.2:1
        button_primary_background_fill_hover="#174a96",
        button_primary_background_fill_dark="#1f5fbf",
        button_primary_background_fill_hover_dark="#174a96",
        button_primary_text_color="#ffffff",
        button_primary_text_color_dark="#ffffff",
    )


def _self_hosted_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the swagger-ui-bundle package's files, served here (FastAPI's
    self-hosting recipe): no request leaves for a CDN, and the page works offline."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from starlette.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} – API",
            swagger_js_url=root + "/docs-assets/swagger-ui-bundle.js",
            swagger_css_url=root + "/docs-assets/swagger-ui.css",
            swagger_favicon_url=root + "/docs-assets/favicon-32x32.png",
        )


class LogBudget:
    """A log stream (stderr) that no client can use to fill the disk.

    Within each minute, a line seen `repeats` times already (digits aside) is dropped, and so is anything
    past `per_minute` characters; the next minute starts with a count of what was dropped. A probe's
    1,100 connections past the open-file limit made asyncio's accept loop write 370 MB in 25 s, and each
    bad `fn_index` logged a 4.4 KB traceback.
    """

    def __init__(self, stream, per_minute: int = 64_000, repeats: int = 3, clock=time.monotonic):
        self.stream, self.per_minute, self.repeats, self.clock = stream, per_minute, repeats, clock
        self.lock = threading.Lock()
        self.started, self.used, self.dropped, self.seen, self.partial = clock(), 0, 0, {}, ""

    def write(self, text: str) -> int:
        with self.lock:
            now = self.clock()
            if now - self.started >= 60:
                if self.dropped:
                    self.stream.write(f"[{self.dropped} log lines dropped in the last minute: repeated or too many]\n")
                self.started, self.used, self.dropped, self.seen = now, 0, 0, {}
            lines = (self.partial + text).split("\n")
            self.partial = lines.pop()[:10_000]
            for line in lines:
                key = re.sub(r"\d+", "#", line)[:200]
                count = self.seen.get(key, 0) + 1
                if len(self.seen) < 10_000:
                    self.seen[key] = count
                if count > self.repeats or self.used + len(line) + 1 > self.per_minute:
                    self.dropped += 1
                    continue
                self.used += len(line) + 1
                self.stream.write(line + "\n")
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):  # fileno, isatty, encoding: the real stream's
        return getattr(self.stream, name)


# Open files the server needs besides its connections (model, index, logs, Gradio's temp files).
FILES_RESERVED = 100


def connection_limit(config: Config) -> int:
    """ASSISTANT_MAX_CONNECTIONS, lowered to fit the process's open-file limit (each connection is a
    file): past it uvicorn answers 503 instead of the accept loop failing."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return config.max_connections
    return max(8, min(config.max_connections, soft - FILES_RESERVED))


def serve(app: FastAPI, host: str, port: int, config: Config | None = None) -> None:
    """Run the app with uvicorn's h11 server: deadlines for each request's head and body, a cap on
    connections (per client too), X-Forwarded-For left to the app (`Guard`), and a log budget."""
    import uvicorn

    config = config or Config()
    _large_blocks_from_the_system()
    sys.stderr = LogBudget(sys.stderr)
    sys.stdout = LogBudget(sys.stdout)
    # Open event streams (Gradio's queue) would otherwise hold a stopping server indefinitely.
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            http=_deadlines(config),
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
            proxy_headers=False,  # uvicorn trusted X-Forwarded-For from 127.0.0.1; the Guard decides
            limit_concurrency=connection_limit(config),
            backlog=config.backlog,
        )
    )
    server.run()


def _deadlines(config: Config) -> type:
    """uvicorn's h11 protocol with the deadlines and the per-client cap of `config` (uvicorn is imported
    only to serve)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    trusted = networks(config.proxies)
    body_timeout, per_client = config.body_timeout_s, config.max_connections_per_client
    open_by_client: dict[str, int] = {}

    class Deadlines(H11Protocol):
        """Closes a connection whose request head is not complete within HEADER_TIMEOUT_S, or whose body
        is not complete within ASSISTANT_BODY_TIMEOUT_S of its head, and one that would take its client
        past ASSISTANT_MAX_CONNECTIONS_PER_CLIENT.

        uvicorn only times out idle keep-alive connections after a response; a client that connects and
        sends nothing, or a few bytes at a time, was held open forever (1 byte of body every 2 s too).
        Behind a reverse proxy, set its own timeouts too (nginx: client_header_timeout, client_body_timeout).
        """

        def connection_made(self, transport):
            super().connection_made(transport)
            self._timed_cycle, self._body_deadline, self._counted = None, None, None
            self._head_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self.timeout_keep_alive_handler)
            address = self.client[0] if self.client else None
            if address and not _within(address, trusted):
                self._counted = address
                open_by_client[address] = open_by_client.get(address, 0) + 1
                if open_by_client[address] > per_client:
                    log.warning("Refused a connection from %s: it holds %d already.", address, per_client)
                    transport.abort()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                if self._head_deadline is None:  # the next request on a kept-alive connection
                    self._head_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self.timeout_keep_alive_handler)
                return
            if cycle is not self._timed_cycle:  # a new request's head is complete
                self._timed_cycle = cycle
                self._cancel_head()
                if cycle.more_body:
                    self._body_deadline = self.loop.call_later(body_timeout, self._body_late, cycle)
            if not cycle.more_body and self._body_deadline is not None:
                self._body_deadline.cancel()
                self._body_deadline = None

        def _cancel_head(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _body_late(self, cycle) -> None:
            if self.cycle is cycle and cycle.more_body and not self.transport.is_closing():
                self.transport.close()

        def connection_lost(self, exc):
            self._cancel_head()
            if self._body_deadline is not None:
                self._body_deadline.cancel()
            if self._counted is not None:
                left = open_by_client.pop(self._counted, 1) - 1
                if left > 0:
                    open_by_client[self._counted] = left
                self._counted = None
            super().connection_lost(exc)

    return Deadlines
