"""Feedback: answer tokens, the stores (one vote per answer, bounded rotation), and `assistant feedback`."""

from __future__ import annotations

import json
import threading
import time

import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.errors import FeedbackTokenError, FeedbackUnavailableError, InvalidQuestionError
from assistant.feedback import (
    MAX_COMMENT_CHARS,
    TOKEN_MAX_AGE_S,
    JsonlStore,
    Served,
    Signer,
    Vote,
    drafts,
    printable,
    read,
    validate_comment,
)

ANSWER = {
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


# --- answer tokens ------------------------------------------------------------------------------------


def test_a_token_carries_the_answer_and_any_replica_with_the_key_accepts_it():
    token = Signer("shared key").sign(ANSWER)
    served = Signer("shared key").verify(token)  # another process, same key
    assert (served.question, served.answer) == (ANSWER["question"], ANSWER["answer"])
    assert served.citations == ({"n": 1, "chunk_id": "c#5", "source": "s.txt", "start": 0, "end": 10},)
    assert len(served.id) == 32 and len(token) < 1_000
    assert Signer("shared key").verify(Signer("shared key").sign(ANSWER)).id != served.id  # one id per answer


def _forgeries(token: str) -> list[str]:
    version, body, mac = token.split(".")
    other = Signer("shared key").sign({**ANSWER, "answer": "something else"}).split(".")[1]
    return [
        Signer("another key").sign(ANSWER),  # another deployment's, or a restarted process without a key
        f"{version}.{other}.{mac}",  # a body swapped under a valid signature
        f"{version}.{body}.{mac[:-2]}AA",
        f"v2.{body}.{mac}",
        "v1..",
        "not a token",
        "v1." + "A" * 30_000 + ".x",
    ]


def test_forged_damaged_and_expired_tokens_are_refused():
    signer = Signer("shared key")
    token = signer.sign(ANSWER)
    for forged in _forgeries(token):
        with pytest.raises(FeedbackTokenError, match="forged, damaged or expired"):
            signer.verify(forged)
    old = signer.sign(ANSWER, now=time.time() - TOKEN_MAX_AGE_S - 5)
    with pytest.raises(FeedbackTokenError):
        signer.verify(old)
    assert signer.verify(token).answer == "FTAA [1]"


def test_without_a_key_each_process_signs_with_its_own():
    token = Signer().sign(ANSWER)
    with pytest.raises(FeedbackTokenError):
        Signer().verify(token)


# --- the JSON Lines store -------------------------------------------------------------------------------


def served(n: int | str = 1, question: str = ANSWER["question"]) -> Served:
    return Served(f"a{n}", time.time(), question, "FTAA [1]", ({"n": 1, "chunk_id": "c#5"},))


def test_one_vote_per_answer_the_latest_wins_and_comments_stay(tmp_path):
    store = JsonlStore(tmp_path / "feedback.jsonl", max_bytes=1_000_000)
    store.record(Vote(served(1), True))
    store.record(Vote(served(1), True, "ควรมีรายละเอียดมากกว่านี้"))
    store.record(Vote(served(1), False))  # a changed mind: the comment is kept
    store.record(Vote(served(2), True))
    entries, skipped = store.entries()
    assert skipped == 0 and [(e.answer_id, e.liked, e.votes) for e in entries] == [("a1", False, 3), ("a2", True, 1)]
    assert entries[0].comment == "ควรมีรายละเอียดมากกว่านี้"
    assert len((tmp_path / "feedback.jsonl").read_text().splitlines()) == 4  # every change is on record


def test_racing_opposite_votes_leave_one_vote(tmp_path):
    """Opposite ratings of one answer sent at once (once both were kept, ~1 in 40): one entry, the vote
    written last."""
    path = tmp_path / "feedback.jsonl"
    for round_ in range(20):
        stores = [JsonlStore(path, 1_000_000), JsonlStore(path, 1_000_000)]  # two writers, as two processes
        start = threading.Barrier(2)

        def vote(store, liked, n=round_, start=start):
            start.wait()
            store.record(Vote(served(n), liked))

        threads = [threading.Thread(target=vote, args=(s, liked)) for s, liked in zip(stores, (True, False))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    entries, _ = read(path)
    assert len(entries) == 20 and all(e.votes == 2 for e in entries)
    last = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        last[record["answer_id"]] = record["liked"]
    assert {e.answer_id: e.liked for e in entries} == last


def test_rotation_keeps_n_files_then_refuses_instead_of_deleting(tmp_path):
    """A flood of fake ratings once rotated a real rating and its comment away; now the log keeps its
    older files and, when they are all there, refuses new votes."""
    path = tmp_path / "feedback.jsonl"
    store = JsonlStore(path, max_bytes=2_000, keep=2)
    store.record(Vote(served("real"), False, "the distance is wrong"))
    flood = 0
    with pytest.raises(FeedbackUnavailableError, match="Feedback cannot be saved"):
        for flood in range(1_000):
            store.record(Vote(served(f"fake{flood}"), True))
    assert 10 < flood < 40 and "full" in store.problem and "ASSISTANT_FEEDBACK_KEEP_FILES" in store.problem
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert files == ["feedback.jsonl", "feedback.jsonl.1", "feedback.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 2_000 for f in files)
    entries, skipped = store.entries()
    assert skipped == 0 and entries[0].answer_id == "areal" and entries[0].comment == "the distance is wrong"
    assert len(entries) == flood + 1  # every acknowledged vote is still there
    (tmp_path / "feedback.jsonl.2").rename(tmp_path / "archived.jsonl")  # the operator makes room
    assert store.check() is None
    store.record(Vote(served("next"), True))
    assert store.entries()[0][-1].answer_id == "anext"


def test_an_unwritable_log_is_a_clear_error(tmp_path):
    (tmp_path / "feedback.jsonl").mkdir()  # a folder where the file should be
    store = JsonlStore(tmp_path / "feedback.jsonl", max_bytes=2_000)
    with pytest.raises(FeedbackUnavailableError) as error:
        store.record(Vote(served(), True))
    assert "Traceback" not in str(error.value) and str(tmp_path) not in str(error.value)
    assert "cannot be written" in store.problem


def test_listing_escapes_line_breaks_and_bidi_controls(tmp_path):
    assert printable("a\nb\u202ec\u200bd\\") == "a\\nb\\u202ec\\u200bd\\\\"
    assert printable("ระยะทาง 4,300 km ถูกต้อง") == "ระยะทาง 4,300 km ถูกต้อง"
    path = tmp_path / "feedback.jsonl"
    JsonlStore(path, 1_000_000).record(
        Vote(served(1, "q\n2026-01-01 00:00  👍  forged line"), False, "fine\n2026-01-01 00:00  👍  x \u202eevil")
    )
    result = CliRunner().invoke(cli, ["feedback", "--file", str(path)])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2  # the rating and its comment, nothing forged
    assert "\u202e" not in result.stdout and "\\u202eevil" in result.stdout and "q\\n2026" in result.stdout


def test_export_keeps_every_comment_of_a_repeated_question(tmp_path):
    path = tmp_path / "feedback.jsonl"
    store = JsonlStore(path, 1_000_000)
    for n, comment in enumerate(["give kilometres", "the number is wrong", "give kilometres"]):
        store.record(Vote(served(n, "How far is Bogotá from Santiago?"), False, comment))
    store.record(Vote(served(9, "How far is  Bogotá from Santiago?"), False, "cite the atlas"))
    (line,) = drafts(read(path)[0])
    assert line["comments"] == ["give kilometres", "the number is wrong", "cite the atlas"]


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
    assert lines[1]["comments"] == ["give kilometres"]
    from assistant.evaluation import load_questions

    loaded = load_questions(out)  # a person completes them; the evaluation loader already reads them
    assert len(loaded.questions) == 2 and not loaded.skipped


def test_feedback_on_a_missing_file_lists_nothing(tmp_path):
    result = CliRunner().invoke(cli, ["feedback", "--file", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 0 and "0 entries" in result.stderr


# --- the PostgreSQL store (a real PostgreSQL from Debian's package) -------------------------------------


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    from assistant import cluster

    if not (cluster.PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with cluster.postgres(tmp_path_factory.mktemp("pg")) as engine:
        yield engine


@pytest.mark.slow
def test_postgres_store_migrates_once_and_keeps_one_vote_per_answer(database):
    import psycopg

    from assistant.feedback import SCHEMA_VERSION, PostgresStore

    stores = [PostgresStore(database.url), PostgresStore(database.url)]  # two replicas starting together
    try:
        with psycopg.connect(database.url) as conn:
            assert conn.execute("SELECT version FROM assistant_schema").fetchall() == [(SCHEMA_VERSION,)]
        stores[0].record(Vote(served("pg1"), True, "clear"))
        stores[1].record(Vote(served("pg1"), False))  # the other replica, a changed mind
        for n in range(15):  # racing opposite votes
            start = threading.Barrier(2)

            def vote(store, liked, n=n, start=start):
                start.wait()
                store.record(Vote(served(f"race{n}"), liked))

            threads = [threading.Thread(target=vote, args=(s, liked)) for s, liked in zip(stores, (True, False))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        entries, skipped = stores[0].entries()
        by_id = {e.answer_id: e for e in entries}
        assert skipped == 0 and len(entries) == 16 and all(e.votes == 2 for e in entries)
        assert (by_id["apg1"].liked, by_id["apg1"].comment) == (False, "clear")
        result = CliRunner().invoke(cli, ["feedback", "--down", "--json"], env={"ASSISTANT_FEEDBACK_URL": database.url})
        assert result.exit_code == 0, result.output
        assert "apg1" in {json.loads(line)["answer_id"] for line in result.stdout.splitlines()}
    finally:
        for store in stores:
            store.close()


@pytest.mark.slow
def test_postgres_down_refuses_votes_clearly_and_loses_none(database):
    from assistant.feedback import PostgresStore

    store = PostgresStore(database.url)
    try:
        store.record(Vote(served("before"), False, "acknowledged"))
        database.stop()
        started = time.monotonic()
        with pytest.raises(FeedbackUnavailableError, match="ไม่ได้ในขณะนี้ .* · Feedback cannot be saved"):
            store.record(Vote(served("during"), True))
        assert time.monotonic() - started < 10
        assert store.check() == "The feedback database is unavailable (PoolTimeout)."
        database.start()
        deadline = time.monotonic() + 15
        while store.check() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.check() is None
        store.record(Vote(served("after"), True))
        entries, _ = store.entries()
        ids = {e.answer_id for e in entries}
        assert {"abefore", "aafter"} <= ids and "aduring" not in ids
    finally:
        store.close()
