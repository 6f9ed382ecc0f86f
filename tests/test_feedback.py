"""The feedback log: bounded comments, rotation, and the `assistant feedback` command reading it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.errors import InvalidQuestionError
from assistant.feedback import MAX_COMMENT_CHARS, FeedbackLog, read, validate_comment

ANSWER = {
    "id": "a1",
    "question": "บราซิลยุติการเจรจาอะไร",
    "answer": "FTAA [1]",
    "citations": [{"n": 1, "chunk_id": "c#5", "source": "s.txt", "start": 0, "end": 10, "text": "x"}],
}


@pytest.mark.parametrize(
    "text, message",
    [
        ("ก" * (MAX_COMMENT_CHARS + 1), "the limit is 500"),
        ("bad \u001b[31m colour", "control characters"),
    ],
)
def test_bad_comments_are_refused(text, message):
    with pytest.raises(InvalidQuestionError, match=message):
        validate_comment(text)


def test_comments_are_trimmed_and_optional():
    assert validate_comment("  ดีมาก\n") == "ดีมาก" and validate_comment(None) == ""
    assert validate_comment("ก" * MAX_COMMENT_CHARS) == "ก" * MAX_COMMENT_CHARS


def test_log_rotates_past_its_size(tmp_path):
    log = FeedbackLog(tmp_path / "feedback.jsonl", max_bytes=2_000)
    for n in range(20):
        log.append(n % 2 == 0, {**ANSWER, "id": f"a{n}"})
        log.comment({**ANSWER, "id": f"a{n}"}, n % 2 == 0, "ควรมีรายละเอียดมากกว่านี้")
    current, older = tmp_path / "feedback.jsonl", tmp_path / "feedback.jsonl.1"
    assert older.exists() and current.stat().st_size <= 2_000 and older.stat().st_size <= 2_000
    assert not (tmp_path / "feedback.jsonl.2").exists()  # one older file, no more
    entries, skipped = read(current)
    assert skipped == 0 and entries and entries[-1].answer_id == "a19"
    assert entries[-1].comment == "ควรมีรายละเอียดมากกว่านี้"
    assert [e.time for e in entries] == sorted(e.time for e in entries)


@pytest.fixture()
def log_file(tmp_path):
    path = tmp_path / "feedback.jsonl"
    lines = [
        {
            "time": "2026-10-30T09:00:00+00:00",
            "liked": False,
            "answer_id": "old",
            "question": "ALBA ก่อตั้งเมื่อใด",
            "answer": "…",
            "citations": [],
        },
        {
            "time": "2026-11-02T10:00:00+00:00",
            "liked": True,
            "answer_id": "up",
            "question": "บราซิลยุติการเจรจาอะไร",
            "answer": "FTAA",
            "citations": [],
        },
        "{not json",
        {
            "time": "2026-11-03T10:00:00+00:00",
            "liked": False,
            "answer_id": "down",
            "question": "How far is  Bogotá from Santiago?",
            "answer": "…",
            "citations": [],
        },
        {"time": "2026-11-03T10:00:05+00:00", "liked": False, "answer_id": "down", "comment": "give kilometres"},
        {"time": "yesterday", "liked": False, "question": "x"},
        {"time": "2026-11-04T10:00:00+00:00", "liked": "no", "question": "x"},
        {
            "time": "2026-11-05T10:00:00+00:00",
            "liked": False,
            "answer_id": "again",
            "question": "How far is Bogotá from Santiago?",
            "answer": "…",
            "citations": [],
        },
    ]
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n" for line in lines)
        + '{"time": "2026-11-06T1',
        encoding="utf-8",
    )  # a cut-off write
    return path


def test_feedback_lists_entries_and_skips_malformed_lines(log_file):
    result = CliRunner().invoke(cli, ["feedback", "--file", str(log_file)])
    assert result.exit_code == 0, result.output
    assert "Skipped 4 malformed lines" in result.stderr
    listed = result.stdout.splitlines()
    assert len([line for line in listed if not line.startswith("    ")]) == 4
    assert "👍  บราซิลยุติการเจรจาอะไร" in result.stdout and "    comment: give kilometres" in result.stdout
    assert "4 entries (3 thumbs down)." in result.stderr


def test_feedback_down_since(log_file):
    result = CliRunner().invoke(cli, ["feedback", "--file", str(log_file), "--down", "--since", "2026-11-01", "--json"])
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["answer_id"] for e in entries] == ["down", "again"]
    assert entries[0]["comment"] == "give kilometres" and not entries[0]["liked"]


def test_feedback_export_writes_draft_evaluation_lines(log_file, tmp_path):
    out = tmp_path / "drafts" / "feedback.jsonl"
    result = CliRunner().invoke(cli, ["feedback", "--file", str(log_file), "--export", str(out)])
    assert result.exit_code == 0, result.output
    assert "Wrote 2 draft questions" in result.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(d["lang"], d["question"]) for d in lines] == [
        ("th", "ALBA ก่อตั้งเมื่อใด"),
        ("en", "How far is Bogotá from Santiago?"),
    ]
    assert all(
        d["id"].startswith("fb-") and d["answers"] == [] and d["evidence"] == [] and d["source"] == "feedback"
        for d in lines
    )
    assert lines[1]["comment"] == "give kilometres"
    from assistant.evaluation import load_questions

    loaded = load_questions(out)  # a person completes them; the evaluation loader already reads them
    assert len(loaded.questions) == 2 and not loaded.skipped


def test_feedback_on_a_missing_file_lists_nothing(tmp_path):
    result = CliRunner().invoke(cli, ["feedback", "--file", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 0 and "0 entries" in result.stderr
