"""The web: the Gradio chat, a compact chat for iframes, the JSON API and the embedding page, one app."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Literal

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from assistant.answering import PHRASES, Answerer
from assistant.config import Config
from assistant.errors import AssistantError, InvalidQuestionError
from assistant.types import Answer, Turn

MAX_BODY_BYTES = 1_000_000
MAX_HISTORY_TURNS = 50

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
"""
# Thai-capable system fonts; the default theme would fetch web fonts from a CDN.
FONTS = ["Noto Sans Thai", "Loma", "Garuda", "Tlwg Typo", "system-ui", "sans-serif"]


def _text(content: str) -> str:
    """Corpus and user text for the Chatbot's Markdown: escaped, so HTML in it shows as text."""
    return escape(content, quote=False)


def citations_html(answer: Answer | None) -> str:
    """The cited passages, each a <details> that opens on the passage with its sentence highlighted."""
    if answer is None or not answer.citations:
        return '<div class="citations"></div>'
    sources = PHRASES[answer.language]["sources"]
    items = []
    for c in answer.citations:
        a, b = c.sentence_start - c.start, c.sentence_end - c.start
        passage = f"{escape(c.text[:a])}<mark>{escape(c.text[a:b])}</mark>{escape(c.text[b:])}"
        snippet = c.sentence if len(c.sentence) <= 80 else c.sentence[:80] + "…"
        items.append(
            f'<details id="cite-{c.n}" class="citation"><summary>[{c.n}] {escape(snippet)}</summary>'
            f'<div class="where">{escape(c.title)} — {escape(c.source)}, {escape(c.chunk_id)}, '
            f'chars {c.start}–{c.end}</div><p>{passage}</p></details>')
    return f'<div class="citations"><h4>{escape(sources)}</h4>{"".join(items)}</div>'


class FeedbackLog:
    """Thumbs up/down appended as JSON Lines; one writer at a time, the file survives restarts."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def append(self, liked: bool, answer: dict) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "liked": liked,
                  "question": answer["question"], "answer": answer["answer"],
                  "citations": [{k: c[k] for k in ("n", "chunk_id", "source", "start", "end")}
                                for c in answer["citations"]]}
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


def build_chat(answerer: Answerer, feedback: FeedbackLog, compact: bool = False) -> gr.Blocks:
    """The chat page; `compact` drops the page chrome for iframes and the web component."""
    def respond(message: str, shown: list, turns: list, answers: list):
        """Yields the chat as the answer grows (with an LLM), then with its citations."""
        asked = shown + [{"role": "user", "content": _text(message)}]
        written = ""
        try:
            for event in answerer.stream(message, [Turn(**t) for t in turns]):
                if isinstance(event, str):
                    written += event
                    yield "", asked + [{"role": "assistant", "content": _text(written)}], turns, answers, \
                        citations_html(None)
                    continue
                answer = event
        except AssistantError as error:
            raise gr.Error(str(error)) from None
        notice = answer.generation.get("notice")
        content = (f"_{_text(notice)}_\n\n" if notice else "") + _text(answer.answer)
        turns = turns + [{"role": "user", "content": answer.question},
                         {"role": "assistant", "content": answer.answer}]
        yield ("", asked + [{"role": "assistant", "content": content}], turns, answers + [answer.to_dict()],
               citations_html(answer))

    def rate(answers: list, data: gr.LikeData):
        index = data.index if isinstance(data.index, int) else data.index[0]
        if index % 2 == 1 and index // 2 < len(answers):  # assistant messages are the odd ones
            feedback.append(bool(data.liked), answers[index // 2])

    def clear():
        return "", [], [], [], citations_html(None)

    def ask(question: str, history: list[dict] | None = None, top_k: int | None = None) -> dict:
        """Answer a question (Thai or English) with cited passages; `history` holds earlier
        {role, content} turns. Returns the same object as `assistant ask --json`."""
        try:
            turns = [Turn(str(t["role"]), str(t["content"])) for t in (history or [])]
            return answerer.answer(question, turns, top_k=top_k).to_dict()
        except (AssistantError, KeyError, TypeError) as error:
            raise gr.Error(str(error)) from None

    with gr.Blocks(title="Latin American integration assistant") as blocks:
        if not compact:
            gr.Markdown(f"## {TITLE}\n{DESCRIPTION}")
        turns, answers = gr.State([]), gr.State([])
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                chatbot = gr.Chatbot(label="Chat", height=420 if compact else 520, elem_id="chat",
                                     feedback_options=("Like", "Dislike"), sanitize_html=True)
                with gr.Row():
                    box = gr.Textbox(placeholder="พิมพ์คำถาม… / Ask a question…", show_label=False,
                                     scale=5, elem_id="question", max_length=answerer.config.max_question_chars)
                    send = gr.Button("ถาม · Ask", variant="primary", scale=1, min_width=80, elem_id="ask")
                clear_button = gr.Button("ล้างบทสนทนา · Clear", size="sm", elem_id="clear")
                if not compact:
                    gr.Examples(EXAMPLES, inputs=box, label="ตัวอย่าง · Examples")
            with gr.Column(scale=2, min_width=280):
                cited = gr.HTML(citations_html(None), elem_id="citations")
        outputs = [box, chatbot, turns, answers, cited]
        box.submit(respond, [box, chatbot, turns, answers], outputs, api_visibility="private")
        send.click(respond, [box, chatbot, turns, answers], outputs, api_visibility="private")
        clear_button.click(clear, None, outputs, api_visibility="private")
        chatbot.clear(clear, None, outputs, api_visibility="private")  # its own trash button
        chatbot.like(rate, [answers], None, api_visibility="private")
        gr.api(ask, api_name="ask")
    return blocks


def embed_page(base: str, config: Config) -> str:
    """Copy-ready snippets for this server's URL, and a live preview."""
    compact = f"{base}compact/"
    iframe = (f'<iframe src="{compact}" title="Latin American integration assistant"\n'
              f'        style="width:100%;height:640px;border:0"></iframe>')
    component = f'<script type="module" src="{base}gradio.js"></script>\n<gradio-app src="{compact}"></gradio-app>'
    fetch = (f'const response = await fetch("{base}api/ask", {{\n'
             f'  method: "POST",\n  headers: {{"Content-Type": "application/json"}},\n'
             f'  body: JSON.stringify({{question: "บราซิลยุติการเจรจาอะไร", history: []}}),\n}});\n'
             f'const {{answer, citations}} = await response.json();')
    origins = ", ".join(config.origins) or "*"
    blocks = "".join(f"<h2>{title}</h2><pre><code>{escape(code)}</code></pre>"
                     for title, code in (("1. iframe", iframe), ("2. Web component", component),
                                         ("3. JSON API", fetch)))
    return f"""<!doctype html><html lang="th"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Embed the assistant</title><style>
body{{font-family:{", ".join(repr(f) for f in FONTS)};margin:1.5rem auto;max-width:60rem;padding:0 1rem;color:#222}}
pre{{background:#f5f5f5;padding:.8rem;overflow-x:auto;border-radius:6px}}
</style></head><body><h1>Embed the assistant in your site</h1>
<p>Allowed origins: <code>{escape(origins)}</code> (set <code>ASSISTANT_ALLOWED_ORIGINS</code>).</p>
{blocks}<h2>Preview</h2>{iframe}</body></html>"""


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=20_000)


class AskRequest(BaseModel):
    question: str = Field(description="The question, in Thai or English.")
    history: list[Message] = Field(default_factory=list, max_length=MAX_HISTORY_TURNS,
                                   description="Earlier turns of the conversation, oldest first.")
    top_k: int | None = Field(default=None, ge=1, le=50, description="Passages to retrieve.")


def create_app(answerer: Answerer, config: Config) -> FastAPI:
    """One FastAPI app: `/` chat, `/compact/` iframe chat, `/api/*` JSON, `/embed`, `/gradio.js`, `/docs`."""
    app = FastAPI(title="Latin American integration assistant", version="0.1.0",
                  description="Answers in Thai or English with cited passages of the documents.")
    origins = config.origins or ["*"]
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["*"])
    ancestors = "*" if "*" in origins else " ".join(["'self'", *origins])

    @app.middleware("http")
    async def guard(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"Request body over {MAX_BODY_BYTES:,} bytes."}, status_code=413)
        response = await call_next(request)
        # Which sites may show the chat in a frame.
        response.headers["Content-Security-Policy"] = f"frame-ancestors {ancestors}"
        return response

    manifest = answerer.retriever.index.manifest

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "index": {"chunks": manifest["chunks"], "model": manifest["embed_model"],
                                          "built_at": manifest["built_at"]},
                "llm": {"mode": config.llm, "model": config.llm_model or None}}

    @app.post("/api/ask")
    def ask(request: AskRequest) -> dict:
        """Answer a question with cited passages: the same object as `assistant ask --json`."""
        if len(request.question.strip()) > config.max_question_chars:
            return JSONResponse({"detail": f"The question is longer than {config.max_question_chars:,} "
                                           "characters."}, status_code=413)
        try:
            turns = [Turn(m.role, m.content) for m in request.history]
            return answerer.answer(request.question, turns, top_k=request.top_k).to_dict()
        except InvalidQuestionError as error:
            return JSONResponse({"detail": str(error)}, status_code=422)

    @app.get("/embed", response_class=HTMLResponse)
    def embed(request: Request) -> str:
        return embed_page(str(request.base_url), config)

    gradio_js = Path(gr.__file__).parent / "templates" / "frontend" / "gradio.js"

    @app.get("/gradio.js", include_in_schema=False)
    def web_component() -> FileResponse:
        # Shipped in the gradio package but not served by it; other sites load it from here.
        return FileResponse(gradio_js, media_type="text/javascript")

    feedback = FeedbackLog(config.feedback_path)
    theme = gr.themes.Default(font=FONTS, font_mono=["ui-monospace", "monospace"])
    for path, compact in (("/compact", True), ("/", False)):  # the more specific mount first
        app = gr.mount_gradio_app(app, build_chat(answerer, feedback, compact=compact), path=path,
                                  theme=theme, css=CSS, footer_links=["api"] if not compact else [])
    return app
