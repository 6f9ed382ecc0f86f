"""`assistant bench`: the synthetic corpus, the recall measure, the vector cache, and a quick run."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import CORPUS, Interrupted

from assistant import bench, chunking, corpus, embedding, index


def test_synthetic_corpus_is_reproducible_thai_of_passage_length(config, tmp_path):
    first = bench.synthetic_corpus(config, tmp_path / "a", 300)
    second = bench.synthetic_corpus(config, tmp_path / "b", 300)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
    loaded = corpus.load(first)
    chunks = chunking.split(loaded.documents, index.chunk_params(config))
    assert 290 <= len(chunks) <= 310  # the real corpus's passages plus one per synthetic paragraph
    real_words = {w for d in corpus.load(config.corpus_dir).documents for w in d.text.split()}
    synthetic = [c for c in chunks if c.source.startswith("synthetic-")]
    assert all(set(c.text.split()) <= real_words for c in synthetic)
    assert all(config.chunk_min_chars <= len(c.text) <= config.chunk_max_chars for c in synthetic)


def test_recall_counts_ties_and_misses():
    import faiss

    vectors = np.eye(4, dtype=np.float32)
    vectors[3] = vectors[2]  # rows 2 and 3 tie for any query
    exact = faiss.IndexFlatIP(4)
    exact.add(vectors)
    query = np.array([[0, 0.1, 1, 0]], dtype=np.float32)
    assert bench.recall(exact, exact, query, 2) == 1.0

    class HalfWrong:  # an "approximate" index that finds row 3 (tied with 2) and misses with row 0
        def search(self, q, k):
            return np.zeros((1, k), np.float32), np.array([[3, 0]])

    assert bench.recall(exact, HalfWrong(), query, 2) == 0.5


@pytest.fixture()
def one_document(tmp_path):
    """A corpus of one document and its English rendering: a cold build embeds an eighth of the corpus."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("alba.md", "alba.en.yaml"):
        shutil.copy(CORPUS / name, folder / name)
    return folder


def test_vector_cache_spares_reembedding_and_never_serves_queries(config, one_document, tmp_path, embed_model):
    cfg = config.with_(corpus_dir=one_document, index_dir=tmp_path / "index", cache_dir=tmp_path / "cache")
    first = index.build(cfg, embed_model, progress=False)
    assert first.english is not None  # the English side's vectors are cached too
    assert embedding.cache_path(cfg).is_file()
    assert embed_model.embeddings_cache is None  # queries are never looked up by text
    # Everything is cached: a model that cannot embed passages builds the same index.
    second = index.build(cfg, Interrupted(embed_dim=384), progress=False)
    a, b = first.vector_store._faiss_index, second.vector_store._faiss_index
    assert np.array_equal(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal))
    assert np.array_equal(np.asarray(first.sentence_vectors), np.asarray(second.sentence_vectors))
    with pytest.raises(KeyboardInterrupt):  # without the cache it must embed
        index.build(cfg.with_(vector_cache=False), Interrupted(embed_dim=384), progress=False)


def test_damaged_vector_cache_only_costs_time(config, one_document, tmp_path, embed_model):
    cfg = config.with_(corpus_dir=one_document, index_dir=tmp_path / "index", cache_dir=tmp_path / "cache")
    embedding.cache_path(cfg).parent.mkdir(parents=True)
    embedding.cache_path(cfg).write_bytes(b"not a database" * 100)
    with pytest.warns(UserWarning, match="unusable"):
        built = index.build(cfg, embed_model, progress=False)
    assert len(built.chunks) == built.manifest["chunks"] > 0


@pytest.mark.slow  # not alongside: its soak needs every client answered in 10 s, which other work beside it broke
def test_quick_benchmark_runs_end_to_end(tmp_path):
    """The smoke test CI runs: every section measured, no HTTP errors (timings are not asserted).

    It runs the quick plan at its smallest useful size: 10 answerable questions instead of 30 and a
    synthetic corpus of 200 passages instead of 500 (about half the test's time went to embedding the
    500). Every section still runs on the same code path, so a section that breaks, goes missing or
    errors still fails here; 200 passages are still more than the 100 of the recall@100 check."""
    from helpers import ROOT

    answerable = [
        line
        for line in (ROOT / "eval" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line).get("answerable")
    ]
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(answerable[:10]) + "\n", encoding="utf-8")
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "assistant", "bench", "--quick", "--build-passages", "200"]
        + ["--questions", str(questions), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
    )  # ~2 min on 2 quiet cores
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["cold_start"]["seconds_median"] > 0 and result["cold_start_torch"]["seconds_median"] > 0
    assert set(result["embedding"]) == {"exact", "int8", bench.TORCH}
    assert [b["questions"] for b in result["batching"]] == [1, 8, 32]
    assert set(result["quality"]) == {"exact", "int8"} and result["quality"]["exact"]["hit@1"] > 0.5
    assert [b["corpus"] for b in result["build"]] == ["corpus", "synthetic 200"]
    assert all(b["passages"] > 0 and b["passages_per_s"] > 0 for b in result["build"])
    rows = {(r["corpus"], r["search"], r.get("embedding", "exact")): r for r in result["latency"]}
    assert set(rows) == {
        ("corpus", "flat", "exact"),
        ("corpus", "flat", bench.TORCH),
        ("corpus", "flat", "int8"),
        ("synthetic 200", "flat", "exact"),
        ("synthetic 200", "hnsw", "exact"),
    }
    assert all(r["questions"] == 10 and r["p95_ms"] >= r["p50_ms"] > 0 for r in rows.values())
    assert set(rows[("corpus", "flat", "exact")]["stages_p50_ms"]) == set(bench.STAGES)
    assert rows[("corpus", "flat", "exact")]["llama_index_default"]["p50_ms"] > 0
    hnsw = rows[("synthetic 200", "hnsw", "exact")]
    assert 0.9 <= hnsw["recall_at_100"] <= 1 and 0.9 <= hnsw["recall_at_10"] <= 1
    ours, torch = result["http"]
    assert torch["embedding"] == bench.TORCH and "embedding" not in ours
    for http in (ours, torch):
        assert [r["clients"] for r in http["runs"]] == [1, 8, 32]
        each = bench.QUICK.requests_each
        assert all(r["errors"] == 0 and r["requests"] == each * r["clients"] > 0 for r in http["runs"])
        assert http["peak_rss_mb"] > 100
    soak = result["soak"]
    assert soak["clients"] == 64 and soak["requests"] >= 64 and soak["errors"] == 0
    assert soak["peak_rss_mb"] >= ours["peak_rss_mb"]
    assert 0 < soak["rss_before_mb"] and soak["rss_after_mb"] <= soak["peak_rss_mb"]
    components = [c["component"] for c in result["memory"]]
    assert components[0] == "interpreter" and any(c.startswith("tokenizer") for c in components)
    assert all(c["rss_mb"] > 0 for c in result["memory"])
    assert "| HTTP /api/ask |" in run.stdout and "default ÷ ours" in run.stdout
    assert "| soak on the corpus |" in run.stdout


def test_benchmark_tables_in_the_docs_are_the_committed_results(tmp_path):
    from click.testing import CliRunner
    from helpers import ROOT

    from assistant.cli import cli

    result = CliRunner().invoke(cli, ["bench-table", str(ROOT / "docs" / "bench.json")])
    assert result.exit_code == 0, result.output
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert result.stdout.strip() in page  # regenerate with `assistant bench-table docs/bench.json`
    headline = CliRunner().invoke(cli, ["bench-table", "--headline", str(ROOT / "docs" / "bench.json")])
    assert headline.exit_code == 0, headline.output
    assert headline.stdout.startswith("| benchmark | ONNX Runtime (default) | torch |")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert headline.stdout.strip() in readme  # regenerate with `assistant bench-table --headline docs/bench.json`
    broken = tmp_path / "bench.json"
    broken.write_bytes(b"\xff\xfe not json")
    failed = CliRunner().invoke(cli, ["bench-table", str(broken)])
    assert failed.exit_code != 0 and "not a benchmark results file" in failed.output
