"""The `assistant` command as a user runs it: a real subprocess, real model and index."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def run(args, env_extra=None, input_text=None, timeout=300):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True,
                          env=env, input=input_text, timeout=timeout)


@pytest.fixture(scope="module")
def env(built_index, config):
    return {"ASSISTANT_INDEX_DIR": str(config.index_dir), "ASSISTANT_CORPUS_DIR": str(config.corpus_dir)}


def test_ask_json_prints_exactly_one_object(env):
    result = run(["ask", "บริษัท Brescia ของเปรูเป็นเจ้าของอะไร", "--json", "--top-k", "3"], env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["refused"] is False
    assert "บริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี" in data["answer"]
    assert data["citations"][0]["n"] == 1 and "Brescia" in data["citations"][0]["text"]
    assert set(data["timings_ms"]) >= {"embed", "search", "total"}


def test_ask_plain_text_has_sources_in_question_language(env):
    result = run(["ask", "Which Peruvian company owns the largest cement company in Chile?"], env)
    assert result.returncode == 0, result.stderr
    assert "[1]" in result.stdout and "Sources:" in result.stdout and "Brescia" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["ask", ""], "empty"),
    (["ask", "   "], "empty"),
    (["ask", "ก" * 2001], "limit is 2,000"),
    (["ask", "ชิลี\x07"], "control characters"),
    (["ask", "ชิลี", "--bogus"], "No such option"),
    (["ask", "ชิลี", "--top-k", "0"], "Invalid value"),
])
def test_bad_input_gives_a_message_not_a_traceback(env, args, message):
    result = run(args, env)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_chat_follows_up_and_survives_a_bad_question(env):
    result = run(["chat"], env, input_text="บริษัท Brescia มาจากประเทศใด\n\x01\nและบริษัทนี้เป็นเจ้าของอะไร\n/exit\n")
    assert result.returncode == 0, result.stderr
    assert "control characters" in result.stderr
    assert result.stdout.count("[1]") >= 2 and "บริษัทปูนซีเมนต์" in result.stdout


def test_index_command_builds_and_reports_skipped_files(corpus_copy, tmp_path):
    (corpus_copy / "broken.txt").write_bytes(b"\xff\xfe\xfa not utf-8")
    result = run(["index", "--corpus", str(corpus_copy), "--index", str(tmp_path / "idx")])
    assert result.returncode == 0, result.stderr
    assert "Indexed" in result.stdout
    assert "broken.txt" in result.stderr and "not valid UTF-8" in result.stderr
    assert (tmp_path / "idx" / "manifest.json").is_file()


def test_stale_index_with_rebuild_disabled_says_what_to_do(corpus_copy, tmp_path, embed_model, config):
    from assistant import index

    cfg = config.with_(corpus_dir=corpus_copy, index_dir=tmp_path / "idx")
    index.build(cfg, embed_model, progress=False)
    (corpus_copy / "new.txt").write_text("ข้อความใหม่", encoding="utf-8")
    result = run(["ask", "ชิลี"], {"ASSISTANT_INDEX_DIR": str(cfg.index_dir), "ASSISTANT_CORPUS_DIR": str(corpus_copy),
                                  "ASSISTANT_AUTO_REBUILD": "false"})
    assert result.returncode == 1
    assert "run `assistant index`" in result.stderr and "Traceback" not in result.stderr


def test_eval_command_writes_json(env, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join([
        json.dumps({"id": "a", "lang": "th", "question": "บราซิลยุติการเจรจาอะไร", "answers": ["FTAA"],
                    "evidence": ["บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา"], "answerable": True}),
        json.dumps({"id": "b", "lang": "en", "question": "Who won the 2022 FIFA World Cup?", "answers": [],
                    "evidence": [], "answerable": False}),
        "not json",
    ]), encoding="utf-8")
    out = tmp_path / "out.json"
    result = run(["eval", str(questions), "--json", str(out)], env)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["n"] == 2 and data["skipped"] == 1
    assert data["overall"]["hit@1"] == 1.0 and data["overall"]["refusal_recall"] == 1.0
    assert [q["id"] for q in data["questions"]] == ["a", "b"]
    assert "| hit@1 |" in result.stdout


def test_eval_compare_and_report(env, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in [
        {"id": "a", "lang": "th", "question": "บราซิลยุติการเจรจาอะไร", "answers": ["FTAA"],
         "evidence": ["บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา"], "answerable": True},
        {"id": "b", "lang": "en", "question": "Where is LAN Chile's South American hub?", "answers": ["กรุงลิมา"],
         "evidence": ["อยู่ที่กรุงลิมาของเปรู"], "answerable": True},
        {"id": "c", "lang": "en", "question": "Who won the 2022 FIFA World Cup?", "answerable": False},
    ]), encoding="utf-8")
    out, report = tmp_path / "out.json", tmp_path / "report.html"
    result = run(["eval", str(questions), "--compare", "--json", str(out), "--report", str(report)], env)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert set(data) >= {"n", "skipped", "config", "overall", "by_lang", "questions", "compare"}
    assert list(data["compare"]) == ["hybrid (this pipeline)", "dense only", "BM25 only", "llama-index defaults",
                                     "hybrid, int8 embedding precision"]
    assert data["compare"]["hybrid, int8 embedding precision"]["overall"]["answer_match"] is not None
    baseline = data["compare"]["llama-index defaults"]["overall"]
    assert baseline["hit@5"] is not None and baseline["answer_match"] is None
    assert set(data["overall"]) == {"hit@1", "hit@3", "hit@5", "mrr", "ndcg@5", "answer_match",
                                    "citation_precision", "refusal_precision", "refusal_recall",
                                    "latency_p50_ms", "latency_p95_ms"}
    assert set(data["questions"][0]) == {"id", "hit_rank", "answer_ok", "refused", "citations_ok", "latency_ms"}
    html = report.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 4  # per language + configurations overall, th, en
    assert "llama-index defaults" in html and "<h2>Failed questions" in html
    assert "| llama-index defaults |" in result.stdout


def test_chat_streams_llm_answers_and_says_which_mode(env):
    from llm_servers import OllamaHandler, Scripted

    llm = Scripted(OllamaHandler)
    llm.script = [("text", "บริษัท Brescia ของเปรูเป็นเจ้าของบริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี [1]"), ("status", 500)]
    try:
        result = run(["chat"], {**env, "ASSISTANT_LLM": "ollama", "ASSISTANT_LLM_BASE_URL": llm.url,
                                "ASSISTANT_LLM_MODEL": "scripted", "ASSISTANT_LLM_TIMEOUT_S": "5"},
                     input_text="บริษัท Brescia ของเปรูเป็นเจ้าของอะไร\nบราซิลยุติการเจรจาอะไร\n/exit\n")
    finally:
        llm.close()
    assert result.returncode == 0, result.stderr
    assert "Answers: ollama LLM scripted" in result.stdout
    assert "บริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี [1]" in result.stdout
    assert "HTTP 500" in result.stdout and "FTAA" in result.stdout  # the second answer fell back, with notice


# What the sentence-transformers route loads; the default model, once materialised, needs none of it.
TORCH_STACK = {"torch", "transformers", "sentence_transformers", "tokenizers"}


def imported_modules(stderr: str) -> set[str]:
    """Every module a process imported, from its PYTHONPROFILEIMPORTTIME report."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args, stdin", [
    (["ask", "บราซิลยุติการเจรจาอะไร"], None),
    (["chat"], "บราซิลยุติการเจรจาอะไร\n/exit\n"),
    (["eval", "eval/questions.jsonl"], None),
])
def test_default_model_runs_without_torch(env, args, stdin):
    from tests.conftest import ROOT

    if args[0] == "eval":
        args = ["eval", str(ROOT / "eval" / "questions.jsonl")]
    result = run(args, {**env, "PYTHONPROFILEIMPORTTIME": "1"}, stdin)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "onnxruntime" in modules and "assistant.embedding" in modules  # the report is complete
    assert not modules & TORCH_STACK
