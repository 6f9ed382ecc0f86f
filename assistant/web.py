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
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Literal

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from assistant import corpus, index
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
# Tags and attributes this server's chat messages and citations use: a restored conversation keeps
# these and nothing else (nh3, the Rust `ammonia` sanitiser).
_MESSAGE_TAGS = {"br", "mark", "strong", "em", "a"}
_CITED_TAGS = {"div", "h4", "details", "summary", "p", "mark"}
_CITE_ID = re.compile(r"cite-\d{1,3}")

TITLE = "ผู้ช่วยค้นคว้า: การรวมกลุ่มในภูมิภาคลาตินอเมริกา · Latin American integration assistant"
DESCRIPTION = (
    "ถามเป็นภาษาไทยหรืออังกฤษเกี่ยวกับเอกสารเรื่องการรวมกลุ่มในภูมิภาคของลาตินอเมริกา "
    "(MERCOSUR, ประชาคมแอนเดียน, UNASUR, ALBA, พันธมิตรแปซิฟิก) "
    "ทุกคำตอบยกข้อความจากเอกสารและอ้างอิงแหล่งที่มา [n] — Ask in Thai or English; every answer quotes "
    "the documents and cites its passages [n]. Open a citation to see the passage."
)
EXAMPLES = [
    "บราซิลยุติการเจรจาอะไร",
    "บริษัท Brescia ของเปรูเป็นเจ้าของอะไร",
    "Which party is Peru's current president close to?",
    "How far is Bogotá from Santiago?",
]
CSS = """
.citations details{border:1px solid var(--border-color-primary);border-radius:8px;padding:.4rem .6rem;margin:.4rem 0}
.citations summary{cursor:pointer;font-weight:600}
.citations mark{background:#ffe58a;color:inherit;padding:0 .1rem}
.citations .where{color:var(--body-text-color-subdued);font-size:.85em}
.citations p{white-space:pre-wrap;line-height:1.7}
.citations .original{color:var(--body-text-color-subdued);font-size:.85em;margin-top:.4rem}
.citations details.english{border:0;padding:0;margin:.2rem 0}
.citations details:target,.citations details[open]{border-color:var(--color-accent)}
#saved{display:none !important}
#chat a.cite{color:var(--link-text-color);text-decoration:underline;cursor:pointer;font-weight:600}
"""
# Thai-capable system fonts; the default theme would fetch web fonts from a CDN.
FONTS = ["Noto Sans Thai", "Loma", "Garuda", "Tlwg Typo", "system-ui", "sans-serif"]


def _html(text: str) -> str:
    """Untrusted text (questions, corpus passages, LLM output) as inert HTML for the chat.

    The Chatbot renders no Markdown (images in `![x](url)` would load from anywhere, links would be
    live), so this escaped text is all it shows; line breaks are the only markup added.
    """
    return escape(text, quote=False).replace("\n", "<br>")


def _marked(text: str, a: int, b: int) -> str:
    """Escaped text with text[a:b] highlighted."""
    return f"{escape(text[:a])}<mark>{escape(text[a:b])}</mark>{escape(text[b:])}"


def citations_html(answer: Answer | None) -> str:
    """The cited passages, each a <details> that opens on the passage with its sentence highlighted.

    For an English answer the English rendering comes first and the Thai original beneath it; a Thai
    answer offers the English rendering on demand.
    """
    if answer is None or not answer.citations:
        return '<div class="citations"></div>'
    reply = answer.answer_language or answer.language
    items = []
    for c in answer.citations:
        a, b = c.sentence_start - c.start, c.sentence_end - c.start
        thai = f'<p lang="th">{_marked(c.text, a, b)}</p>'
        english = ""
        if c.translation and c.translation.get("text") and c.translation.get("sentence"):
            text, sentence = c.translation["text"], c.translation["sentence"]
            at = text.find(sentence)
            english = f'<p lang="en">{_marked(text, at, at + len(sentence)) if at >= 0 else escape(text)}</p>'
        shown = c.translation["sentence"] if reply == "en" and english else c.sentence
        snippet = shown if len(shown) <= 80 else shown[:80] + "…"
        where = (
            f'<div class="where">{escape(c.title)} — {escape(c.source)}, {escape(c.chunk_id)}, '
            f"chars {c.start}–{c.end}</div>"
        )
        if reply == "en" and english:
            body = f'{english}<div class="original">ต้นฉบับภาษาไทย · Thai original</div>{thai}'
        elif english:
            body = f'{thai}<details class="english"><summary>English</summary>{english}</details>'
        else:
            body = thai
        items.append(
            f'<details id="cite-{c.n}" class="citation"><summary>[{c.n}] {escape(snippet)}</summary>'
            f"{where}{body}</details>"
        )
    return f'<div class="citations"><h4>{escape(PHRASES[reply]["sources"])}</h4>{"".join(items)}</div>'


def answer_html(answer: Answer) -> str:
    """The chat message: the short answer first (when there is one), then the cited answer with the
    short answer highlighted in it; everything from the answer is escaped."""
    reply = answer.answer_language or answer.language
    notice = answer.generation.get("notice")
    head = f"<em>{_html(notice)}</em><br><br>" if notice else ""
    body = _html(answer.answer)
    short = answer.short_answer
    if short:
        label = PHRASES[reply]["short"]
        head += f"<strong>{escape(label)}: {_html(short['text'])}</strong><br><br>"
        marked = _html(short["text"])
        if marked in body:
            body = body.replace(marked, f"<mark>{marked}</mark>", 1)
    # After escaping, so the only links in a message are these, to the answer's own citations.
    numbers = {c.n for c in answer.citations}
    body = _CITE.sub(
        lambda m: f'<a href="#cite-{m[1]}" class="cite">[{m[1]}]</a>' if int(m[1]) in numbers else m[0], body
    )
    return head + body


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
        "ทุกคำตอบยกข้อความจากเอกสาร กด [n] เพื่อดูข้อความที่อ้างอิง",
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
        "answer quotes the documents: press [n] to see the passage.",
        "placeholder": "Ask a question…",
        "ask": "Ask",
        "new": "New conversation",
        "language": "Answer language",
        "comment": f"Comment (optional, up to {MAX_COMMENT_CHARS} characters)",
        "send": "Send comment",
        "thanks": "Thank you for the feedback.",
    },
}


def _label(key: str, lang: str | None) -> str:
    """One language's label, or both ("ไทย · English") when the page did not ask for one."""
    return LABELS[lang][key] if lang in LABELS else f"{LABELS['th'][key]} · {LABELS['en'][key]}"


# Runs once in every chat page (full, compact, web component). Citation markers are links to
# `#cite-n`: a click opens that passage instead of navigating. Inside a frame, Esc asks the embedding
# widget to close (key presses in a cross-origin frame never reach the host page).
CLIENT_JS = """() => {
  document.addEventListener("click", (event) => {
    const link = event.composedPath().find((el) => el instanceof Element && el.matches("a.cite"));
    if (!link) return;
    event.preventDefault();
    const id = (link.getAttribute("href") || "").slice(1);
    if (!/^cite-[0-9]+$/.test(id)) return;
    const root = link.getRootNode();
    const target = (root.getElementById && root.getElementById(id)) || document.getElementById(id);
    if (!target) return;
    target.open = true;
    target.scrollIntoView({block: "nearest"});
    const summary = target.querySelector("summary");
    if (summary) summary.focus({preventScroll: true});
  }, true);
  if (window.parent !== window) {
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") window.parent.postMessage({assistant: "close"}, "*");
    });
  }
}"""
# The conversation lives in the visitor's tab (sessionStorage, one key per chat page), not on the
# server: gr.BrowserState would keep it in localStorage, i.e. for ever and across tabs.
_STORE_KEY = '"assistant:conversation:" + location.pathname'
SAVE_JS = f"""(saved) => {{
  try {{ if (saved) sessionStorage.setItem({_STORE_KEY}, saved); else sessionStorage.removeItem({_STORE_KEY}); }}
  catch (e) {{}}
  return [];
}}"""
FORGET_JS = f"""() => {{ try {{ sessionStorage.removeItem({_STORE_KEY}); }} catch (e) {{}} return []; }}"""
LOAD_JS = f"""() => {{
  try {{ return [sessionStorage.getItem({_STORE_KEY}) || ""]; }} catch (e) {{ return [""]; }}
}}"""


def _text(content) -> str:
    """A chat message's text: Gradio hands messages back with their content as a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _kept_attribute(tag: str, name: str, value: str) -> str | None:
    """The attribute values this server writes, and no others."""
    allowed = {
        "class": {"citations", "where", "original", "citation", "english", "cite"},
        "lang": {"th", "en"},
    }
    if name in allowed:
        return value if value in allowed[name] else None
    if name == "id":
        return value if _CITE_ID.fullmatch(value) else None
    if name == "href":
        return value if value.startswith("#") and _CITE_ID.fullmatch(value[1:]) else None
    return None


def sanitised(html: str, cited: bool = False) -> str:
    """HTML the visitor's tab kept (a chat message, or the citations when `cited`), reduced by nh3 to
    the tags and attribute values this server writes: what comes back from sessionStorage is the
    client's to change."""
    import nh3

    tags = _CITED_TAGS if cited else _MESSAGE_TAGS
    attributes = {"*": {"class"}, "details": {"id"}, "p": {"lang"}} if cited else {"a": {"href", "class"}}
    return nh3.clean(html, tags=tags, attributes=attributes, attribute_filter=_kept_attribute, link_rel=None)


def _restored(saved: str, history_turns: int) -> tuple[list, list, str]:
    """The chat, its turns and citations as the visitor's browser kept them; anything damaged, forged
    or too large starts a fresh conversation, and the kept HTML is sanitised again (see `sanitised`)."""
    if not isinstance(saved, str) or len(saved) > MAX_SAVED_CHARS:
        return [], [], citations_html(None)
    try:
        data = json.loads(saved) if saved else {}
        messages = [
            {"role": m["role"], "content": sanitised(m["content"])}
            for m in data.get("messages", [])[-MAX_SHOWN_MESSAGES:]
            if m["role"] in ("user", "assistant") and isinstance(m["content"], str)
        ]
        turns = [Message.model_validate(t).model_dump() for t in data.get("turns", [])]
        cited = data.get("cited")
        cited = sanitised(cited, cited=True) if isinstance(cited, str) else ""
        if not cited.startswith('<div class="citations">'):
            cited = citations_html(None)
        return messages, turns[-history_turns:] if history_turns else [], cited
    except (ValueError, TypeError, KeyError, AttributeError, ValidationError):
        return [], [], citations_html(None)


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


def build_chat(
    answerer: Answering, ratings: Ratings, limit: RateLimit, compact: bool = False, events: RateLimit | None = None
) -> gr.Blocks:
    """The chat page; `compact` drops the page chrome for iframes, the widget and the web component.
    Questions count against `limit`, every other event against `events`."""
    history_turns = answerer.config.history_turns
    history_chars = answerer.config.history_chars
    events = events or limit

    def saving(shown: list, turns: list, cited: str) -> str:
        return json.dumps({"messages": shown[-MAX_SHOWN_MESSAGES:], "turns": turns, "cited": cited}, ensure_ascii=False)

    def check(request: gr.Request | None, limiter: RateLimit) -> None:
        if request is None:
            return
        client = limiter.client(request.client.host if request.client else None, request.headers.get("x-forwarded-for"))
        if limiter.retry_after(client) is not None:
            raise _refuse(RATE_LIMITED)

    @visitor_errors
    def respond(message: str, shown: list, turns: list, answers: dict, reply: str, request: gr.Request):
        """Yields the chat as the answer grows (with an LLM), then with its citations. The chat so far is
        this session's (`shown`, kept on the server), not what the browser sends: a forged 12,000-message
        chat cost 1.4 s of CPU to read and echo back."""
        check(request, limit)
        try:
            question_cost(answerer, message)
        except AssistantError as error:
            raise _refuse(str(error)) from None
        shown = [{"role": m["role"], "content": _text(m["content"])} for m in shown or []]
        # The chat keeps its latest MAX_SHOWN_MESSAGES; feedback records follow their messages' places.
        dropped = max(0, len(shown) + 2 - MAX_SHOWN_MESSAGES)
        if dropped:
            shown = shown[dropped:]
            answers = {i - dropped: r for i, r in answers.items() if isinstance(i, int) and i >= dropped}
        asked = shown + [{"role": "user", "content": _html(message)}]
        written = ""
        earlier = bounded_turns(turns or [], history_turns, history_chars)
        try:
            reply = reply if reply in ANSWER_LANGUAGES else "auto"
            for event in answerer.stream(message, earlier, answer_language=reply):
                if isinstance(event, str):
                    written += event
                    partial = asked + [{"role": "assistant", "content": _html(written)}]
                    yield (
                        "",
                        partial,
                        gr.skip(),
                        turns,
                        answers,
                        citations_html(None),
                        gr.skip(),
                    )
                    continue
                answer = event
        except AssistantError as error:
            raise _refuse(str(error)) from None
        content = answer_html(answer)
        turns = (
            (turns + [{"role": "user", "content": answer.question}, {"role": "assistant", "content": answer.answer}])[
                -history_turns:
            ]
            if history_turns
            else []
        )
        # The session's answers by the message's place in the chat, each with its signed token: a rating
        # can only name one of these (restored messages have none), and the token is what the store checks.
        record = {"token": ratings.issue(answer), "liked": None}
        chat = asked + [{"role": "assistant", "content": content}]
        cited = citations_html(answer)
        yield "", chat, chat, turns, {**answers, len(asked): record}, cited, saving(chat, turns, cited)

    @visitor_errors
    def rate(answers: dict, data: gr.LikeData, request: gr.Request):
        """A rating of an answer this session was given (a changed mind replaces it); anything else is
        ignored. A rating opens the optional comment box for that answer."""
        check(request, events)
        index = data.index if isinstance(data.index, int) else (data.index or [None])[0]
        record = answers.get(index) if isinstance(index, int) else None
        if record is None or data.liked not in (True, False):
            return answers, None, gr.update(visible=False), ""
        try:
            ratings.rate(record["token"], bool(data.liked), None, limit.request_client(request))
        except RateLimited:
            raise _refuse(FEEDBACK_LIMITED) from None
        except (FeedbackUnavailableError, OSError) as error:
            log.error("feedback could not be written: %s", error)
            raise _refuse(FEEDBACK_FAILED) from None
        except AssistantError as error:
            raise _refuse(str(error)) from None
        return ({**answers, index: {**record, "liked": bool(data.liked)}}, index, gr.update(visible=True), "")

    @visitor_errors
    def comment(text: str, answers: dict, pending: int | None, request: gr.Request):
        """The comment on the answer just rated: once, bounded, validated."""
        check(request, events)
        record = answers.get(pending) if isinstance(pending, int) else None
        if record is None or record.get("liked") is None or record.get("commented"):
            return answers, None, gr.update(visible=False), ""
        try:
            text = validate_comment(text)
            if text:
                ratings.rate(record["token"], record["liked"], text, limit.request_client(request))
        except RateLimited:
            raise _refuse(FEEDBACK_LIMITED) from None
        except (FeedbackUnavailableError, OSError) as error:
            log.error("feedback could not be written: %s", error)
            raise _refuse(FEEDBACK_FAILED) from None
        except AssistantError as error:
            raise _refuse(str(error)) from None
        if text:
            gr.Info(_label("thanks", None))
        return {**answers, pending: {**record, "commented": True}}, None, gr.update(visible=False), ""

    @visitor_errors
    def clear(request: gr.Request):
        check(request, events)
        return "", [], [], [], {}, citations_html(None), "", None, gr.update(visible=False)

    @visitor_errors
    def restore(saved: str, request: gr.Request):
        """A reloaded page: the conversation the browser kept, and the page's language (`?lang=en`)."""
        check(request, events)
        query = request.query_params if request is not None else {}
        lang = query.get("lang") if query.get("lang") in LABELS else None
        shown, turns, cited = _restored(saved, history_turns)
        greets = compact and query.get("embed") != "widget"  # the widget shows its own greeting
        labels = (
            gr.update(value=_label("greeting", lang), visible=True) if greets else gr.update(),
            gr.update(placeholder=_label("placeholder", lang)),
            gr.update(value=_label("ask", lang)),
            gr.update(value=_label("new", lang)),
            gr.update(value=lang or "auto", label=_label("language", lang)),
            gr.update(placeholder=_label("comment", lang)),
            gr.update(value=_label("send", lang)),
        )
        return (shown, shown, turns, cited) + labels

    def ask(
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
        check(request, limit)
        try:
            answer = answer_request(answerer, parsed)
        except AssistantError as error:
            raise _refuse(str(error)) from None
        return {**answer.to_dict(), "feedback_token": ratings.issue(answer)}

    with gr.Blocks(title="Latin American integration assistant", delete_cache=(3600, 3600)) as blocks:
        if not compact:
            gr.Markdown(f"## {TITLE}\n{DESCRIPTION}")
        greeting = gr.Markdown("", elem_id="greeting", visible=False)
        turns, answers, pending = gr.State([]), gr.State({}), gr.State(None)
        shown = gr.State([])  # the chat as this server sent it (the Chatbot's copy is the browser's)
        # What the browser keeps of the conversation (JSON), written to sessionStorage when it changes;
        # mounted so its value reaches the page's script, but not displayed nor read out (CSS above).
        saved = gr.Textbox("", visible="hidden", elem_id="saved", show_label=False)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                # No Markdown, no LaTeX: every message is escaped text (see `_html`).
                chatbot = gr.Chatbot(
                    label="Chat",
                    height=420 if compact else 520,
                    elem_id="chat",
                    feedback_options=("Like", "Dislike"),
                    sanitize_html=True,
                    render_markdown=False,
                    latex_delimiters=[],
                    allow_tags=False,
                )
                with gr.Row(visible=False, elem_id="feedback-comment") as comment_row:
                    comment_box = gr.Textbox(
                        placeholder=_label("comment", None),
                        show_label=False,
                        scale=5,
                        max_length=MAX_COMMENT_CHARS,
                        elem_id="comment",
                    )
                    comment_send = gr.Button(
                        _label("send", None), size="sm", scale=1, min_width=80, elem_id="send-comment"
                    )
                with gr.Row():
                    box = gr.Textbox(
                        placeholder=_label("placeholder", None),
                        show_label=False,
                        scale=5,
                        elem_id="question",
                        max_length=answerer.config.max_question_chars,
                    )
                    send = gr.Button(_label("ask", None), variant="primary", scale=1, min_width=80, elem_id="ask")
                with gr.Row():
                    reply = gr.Radio(
                        [("อัตโนมัติ · Auto", "auto"), ("ไทย", "th"), ("English", "en")],
                        value="auto",
                        label=_label("language", None),
                        elem_id="answer-language",
                        scale=3,
                    )
                    clear_button = gr.Button(_label("new", None), size="sm", elem_id="clear", scale=1)
                if not compact:
                    gr.Examples(EXAMPLES, inputs=box, label="ตัวอย่าง · Examples")
            with gr.Column(scale=2, min_width=280):
                cited = gr.HTML(citations_html(None), elem_id="citations")
        outputs = [box, chatbot, shown, turns, answers, cited, saved]
        inputs = [box, shown, turns, answers, reply]
        box.submit(respond, inputs, outputs, api_visibility="private")
        send.click(respond, inputs, outputs, api_visibility="private")
        cleared = outputs + [pending, comment_row]
        # A restored page holds "" in `saved` already, so clearing it changes nothing: forget explicitly.
        clear_button.click(clear, None, cleared, api_visibility="private", js=FORGET_JS)
        chatbot.clear(clear, None, cleared, api_visibility="private", js=FORGET_JS)  # its own trash button
        chatbot.like(rate, [answers], [answers, pending, comment_row, comment_box], api_visibility="private")
        for event in (comment_box.submit, comment_send.click):
            event(
                comment,
                [comment_box, answers, pending],
                [answers, pending, comment_row, comment_box],
                api_visibility="private",
                show_progress="hidden",
            )
        saved.change(None, [saved], None, js=SAVE_JS)
        blocks.load(
            restore,
            [saved],
            [chatbot, shown, turns, cited, greeting, box, send, clear_button, reply, comment_box, comment_send],
            js=LOAD_JS,
            api_visibility="private",
        )
        gr.api(visitor_errors(ask), api_name="ask")
    # Questions run side by side, so a slow LLM call holds up only its own visitor; the waiting line is
    # bounded, and so are the sessions whose state is kept.
    blocks.queue(default_concurrency_limit=answerer.config.chat_concurrency, max_size=answerer.config.queue_size)
    blocks.state_session_capacity = MAX_SESSIONS
    return blocks


# The widget's options: (attribute, default, what it does). widget.js checks each value again.
WIDGET_OPTIONS = (
    ("data-title", "ผู้ช่วยค้นคว้า / Research assistant", "The panel's heading and the frame's title."),
    ("data-lang", "th", "th or en: the widget's labels and greeting, the chat's labels and the answers' language."),
    ("data-position", "bottom-right", "bottom-right or bottom-left."),
    ("data-color", "#1f6feb", "Any CSS color, for the button and the panel's header."),
    ("data-greeting", "(per language)", "A short line shown above the chat (300 characters at most)."),
    ("data-open", "false", "true to start with the panel open."),
    ("data-height", "600", "The panel's height in pixels (320–1000) on wide screens; phones get the full screen."),
)
_PREVIEW_CHOICES = {"lang": ("th", "en"), "position": ("bottom-right", "bottom-left"), "open": ("false", "true")}


def embed_page(base: str, config: Config, query: dict | None = None) -> str:
    """Copy-ready snippets for this server's URL, the widget first, and a live preview of the widget
    with the options chosen in the form (sent back here as query parameters)."""
    query = query or {}
    chosen = {"lang": "th", "position": "bottom-right", "open": "false"}
    for key, allowed in _PREVIEW_CHOICES.items():
        if query.get(key) in allowed:
            chosen[key] = query[key]
    for key, size in (("title", 80), ("color", 40), ("greeting", 300)):
        if query.get(key, "").strip():
            chosen[key] = query[key].strip()[:size]
    attributes = "".join(f'\n        data-{k}="{escape(v)}"' for k, v in chosen.items())
    widget = f'<script src="{base}widget.js"{attributes}\n        defer></script>'
    compact = f"{base}compact/"
    iframe = (
        f'<iframe src="{compact}" title="Latin American integration assistant"\n'
        f'        style="width:100%;height:640px;border:0"></iframe>'
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
        f"<h2>{title}</h2><pre><code>{escape(code)}</code></pre>"
        for title, code in (("2. iframe", iframe), ("3. Web component", component), ("4. JSON API", fetch))
    )
    return f"""<!doctype html><html lang="th"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Embed the assistant</title><style>
body{{font-family:{", ".join(repr(f) for f in FONTS)};margin:1.5rem auto;max-width:60rem;padding:0 1rem;color:#222}}
pre{{background:#f5f5f5;padding:.8rem;overflow-x:auto;border-radius:6px}}
table{{border-collapse:collapse}} td{{border-top:1px solid #ddd;padding:.3rem .5rem;vertical-align:top}}
form label{{display:inline-block;margin:.2rem .8rem .2rem 0}}
</style></head><body><h1>Embed the assistant in your site</h1>
<p>Allowed origins: <code>{escape(origins)}</code> (set <code>ASSISTANT_ALLOWED_ORIGINS</code>).
Each visitor may ask <code>{escape(config.rate_limit)}</code> questions (<code>ASSISTANT_RATE_LIMIT</code>);
a conversation stays in the visitor's tab and the last {config.history_turns} messages go with each question
(<code>ASSISTANT_HISTORY_TURNS</code>).</p>
<h2>1. Widget: one tag</h2><p>A chat button in the corner of any page that opens the chat in a panel
(full screen on phones; Esc closes it). The preview on this page is that widget, with these options:</p>
<form method="get" action="embed">{form} <button>Preview</button></form>
<pre><code id="widget-snippet">{escape(widget)}</code></pre>
<table><tr><td><b>Attribute</b></td><td><b>Default</b></td><td><b>Effect</b></td></tr>{options}</table>
{blocks}<h2>Preview of the iframe</h2>{iframe}
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
            self.answerer.use(loaded)
            self.disk, self.problem, self.corpus_state = loaded.disk, None, None  # re-check staleness
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
            self.corpus_state = corpus_state
            try:
                self.corpus_missing = not corpus.files(self.config.corpus_dir)
                self.stale = corpus.content_hash(self.config.corpus_dir) != current.manifest["corpus_hash"]
            except (AssistantError, OSError):
                self.corpus_missing, self.stale = True, True
            if self.corpus_missing:
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

    async def watch_shared() -> None:
        while True:
            await asyncio.sleep(SHARED_CHECK_S)
            for check in (storage.check, store.check):
                try:
                    await asyncio.to_thread(check)
                except Exception:
                    log.exception("shared store check failed")

    pages: list[gr.Blocks] = []
    unread = UnreadResults(pages, config.unread_result_s)

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

    # /docs is served from this server's copy of Swagger UI (the swagger-ui-bundle package), not from a
    # CDN; ReDoc has no packaged copy, so /redoc is off.
    app = FastAPI(
        title="Latin American integration assistant",
        version="0.1.0",
        lifespan=lifespan,
        description="Answers in Thai or English with cited passages of the documents.",
        docs_url=None,
        redoc_url=None,
    )
    origins = config.origins or ["*"]
    app.add_middleware(
        CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"]
    )
    hosts = config.hosts or ["*"]
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=[h.strip("[]") for h in hosts])
    ancestors = "*" if "*" in origins else " ".join(["'self'", *origins])
    app.add_middleware(Metered, metrics=metrics)
    limit = RateLimit(config.rate_limit, config.proxies, storage, "ask")
    limit.limited = metrics.rate_limited.labels("ask")
    events = RateLimit(event_rate(config), config.proxies, storage, "event")
    events.limited = metrics.rate_limited.labels("event")
    feedback_limit = RateLimit(config.feedback_rate_limit, config.proxies, storage, "feedback")
    feedback_limit.limited = metrics.rate_limited.labels("feedback")
    ratings = Ratings(Signer(config.secret_key), store, feedback_limit, metrics)
    if (config.feedback_url or storage.shared) and not config.secret_key:
        log.warning(
            "Shared stores are set but ASSISTANT_SECRET_KEY is not: this process signs answers with a key of "
            "its own, so other replicas will refuse ratings of its answers. Give every replica the same key."
        )
    app.add_middleware(
        Guard, limit=config.max_body_bytes, ancestors=ancestors, trusted=networks(config.proxies), questions=limit
    )
    if config.api_docs:
        _self_hosted_docs(app)

    @app.exception_handler(AssistantError)
    async def assistant_error(request: Request, error: AssistantError) -> JSONResponse:
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

    theme = gr.themes.Default(font=FONTS, font_mono=["ui-monospace", "monospace"])
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
    from uvicorn.protocols.http.h11_impl import H11Protocol

    config = config or Config()
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
            http=Deadlines,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
            proxy_headers=False,  # uvicorn trusted X-Forwarded-For from 127.0.0.1; the Guard decides
            limit_concurrency=connection_limit(config),
            backlog=config.backlog,
        )
    )
    server.run()
