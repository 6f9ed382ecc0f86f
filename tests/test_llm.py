"""LLM answers against scripted servers that speak the real OpenAI and Ollama protocols on loopback."""

import socket
import time

import pytest
from llm_servers import OllamaHandler, OpenAIHandler, Scripted

from assistant.config import Config
from assistant.errors import AssistantError
from assistant.llm import LLMAnswerer, check_markers
from assistant.types import Answer, Turn

QUESTION = "บริษัท Brescia ของเปรูเป็นเจ้าของอะไร"
GOOD = "บริษัท Brescia ของเปรูเป็นเจ้าของบริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี [1]"


@pytest.fixture(params=["openai", "ollama"])
def server(request):
    handler = OpenAIHandler if request.param == "openai" else OllamaHandler
    s = Scripted(handler)
    s.kind = request.param
    yield s
    s.close()


def llm_answerer(answerer, config, kind, url, timeout=5.0):
    base = url + "/v1" if kind == "openai" else url
    cfg = config.with_(llm=kind, llm_base_url=base, llm_model="scripted", llm_timeout_s=timeout)
    return LLMAnswerer(answerer, cfg)


def run(llm, question=QUESTION, history=()):
    events = list(llm.stream(question, history))
    assert isinstance(events[-1], Answer) and all(isinstance(e, str) for e in events[:-1])
    return events[:-1], events[-1]


def test_streamed_answer_is_verified_and_cited(answerer, config, server):
    server.script = [("text", GOOD)]
    deltas, answer = run(llm_answerer(answerer, config, server.kind, server.url))
    assert len(deltas) > 1 and "".join(deltas) == GOOD  # tokens reach the caller as they come
    assert answer.answer == GOOD and not answer.refused
    assert answer.generation["status"] == "verified" and answer.generation["mode"] == server.kind
    assert [c.n for c in answer.citations] == [1]
    assert "Brescia" in answer.citations[0].text
    prompt = server.requests[-1]["body"]["messages"]
    assert "[1] (" in prompt[-1]["content"] and "[2] (" in prompt[-1]["content"]  # numbered passages
    assert QUESTION in prompt[-1]["content"] and "Thai" in prompt[0]["content"]


def test_invented_citation_is_removed(answerer, config, server):
    server.script = [("text", "บริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี [1] และอื่น ๆ [9].")]
    _, answer = run(llm_answerer(answerer, config, server.kind, server.url))
    assert "[9]" not in answer.answer and "[1]" in answer.answer
    assert answer.generation["status"] == "verified" and answer.generation["removed_markers"] == [9]
    assert [c.n for c in answer.citations] == [1]


def test_answer_without_valid_citation_is_replaced_by_the_extractive_one(answerer, config, server):
    server.script = [("text", "Brescia owns a cement company [7].")]
    _, answer = run(llm_answerer(answerer, config, server.kind, server.url))
    extractive = answerer.answer(QUESTION)
    assert answer.answer == extractive.answer and answer.citations == extractive.citations
    assert answer.generation["status"] == "fallback" and answer.generation["reason"] == "no valid citation"
    assert answer.generation["removed_markers"] == [7] and answer.generation["notice"]


def test_llm_refusal_is_a_refusal(answerer, config, server):
    server.script = [("text", "ไม่พบข้อมูลนี้ในเอกสาร")]
    _, answer = run(llm_answerer(answerer, config, server.kind, server.url))
    assert answer.refused and answer.citations == () and answer.answer == "ไม่พบข้อมูลนี้ในเอกสาร"


def test_unanswerable_question_is_refused_without_calling_the_llm(answerer, config, server):
    _, answer = run(llm_answerer(answerer, config, server.kind, server.url), "สูตรต้มยำกุ้งมีอะไรบ้าง")
    assert answer.refused and server.requests == []


@pytest.mark.parametrize(
    "reply, reason",
    [
        (("status", 500), "HTTP 500"),
        (("garbage",), None),
        (("text", ""), "empty response"),
        (("hang", 4), "timed out"),
    ],
)
def test_faults_fall_back_within_the_timeout(answerer, config, server, reply, reason):
    server.script = [reply]
    started = time.monotonic()
    _, answer = run(llm_answerer(answerer, config, server.kind, server.url, timeout=1.0))
    assert time.monotonic() - started < 3.5
    assert answer.generation["status"] == "fallback" and answer.generation["notice"]
    if reason:
        assert answer.generation["reason"] == reason
    assert answer.answer == answerer.answer(QUESTION).answer and answer.citations


def test_connection_refused_falls_back(answerer, config):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    for kind in ("openai", "ollama"):
        _, answer = run(llm_answerer(answerer, config, kind, f"http://127.0.0.1:{port}", timeout=1.0))
        assert answer.generation["status"] == "fallback" and answer.generation["reason"] == "cannot connect"
        assert "โมเดลภาษา" in answer.generation["notice"]


def test_follow_up_is_condensed_by_the_llm(answerer, config, server):
    server.script = [("text", "บริษัท Brescia ของเปรูเป็นเจ้าของบริษัทอะไรในชิลี"), ("text", GOOD)]
    history = [Turn("user", "บริษัท Brescia มาจากประเทศใด"), Turn("assistant", "เปรู")]
    _, answer = run(llm_answerer(answerer, config, server.kind, server.url), "และบริษัทนี้เป็นเจ้าของอะไร", history)
    condense = server.requests[0]["body"]["messages"][-1]["content"]
    assert "Human: บริษัท Brescia มาจากประเทศใด" in condense and "และบริษัทนี้เป็นเจ้าของอะไร" in condense
    assert answer.retrieval_query == "บริษัท Brescia ของเปรูเป็นเจ้าของบริษัทอะไรในชิลี"
    assert answer.question == "และบริษัทนี้เป็นเจ้าของอะไร"
    assert answer.generation["status"] == "verified"


def test_check_markers():
    assert check_markers("a [1] b [3] c [2].", 2) == ("a [1] b c [2].", [1, 2], [3])
    assert check_markers("no markers", 3) == ("no markers", [], [])


def test_llm_settings_are_validated_and_the_key_stays_hidden():
    with pytest.raises(AssistantError, match="extractive, openai or ollama"):
        Config(llm="gpt")
    with pytest.raises(AssistantError, match="ASSISTANT_LLM_MODEL"):
        Config(llm="ollama")
    config = Config.from_env(
        {"ASSISTANT_LLM": "openai", "ASSISTANT_LLM_MODEL": "m", "ASSISTANT_LLM_API_KEY": "sk-secret-123"}
    )
    assert config.llm_api_key == "sk-secret-123" and "sk-secret" not in repr(config)
