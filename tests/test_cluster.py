"""Several replicas behind nginx with Redis and PostgreSQL (Debian's packages), as deploy/nginx.conf and
docs/deployment.md describe them: shared limits, feedback from any replica, failures of each part."""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from helpers import Forked

pytestmark = pytest.mark.slow

METRICS_TOKEN = "scrape-me"
QUESTION = {"question": "บราซิลยุติการเจรจาอะไร"}


@pytest.fixture(scope="module")
def cluster(built_index, config, tmp_path_factory):
    from assistant import cluster as local

    missing = [
        name for name in ("redis-server", "nginx") if not shutil.which(name) and not shutil.which(f"/usr/sbin/{name}")
    ]
    if missing or not (local.PG_BIN / "initdb").exists():
        pytest.skip("Redis, PostgreSQL or nginx is not installed (make system)")
    folder = tmp_path_factory.mktemp("cluster")
    shutil.copytree(config.index_dir, folder / "index")  # the replicas' own: a test publishes a new one
    env = {
        "ASSISTANT_INDEX_DIR": str(folder / "index"),
        "ASSISTANT_CORPUS_DIR": str(config.corpus_dir),
        "ASSISTANT_RATE_LIMIT": "20/minute",
        "ASSISTANT_METRICS": METRICS_TOKEN,
        "ASSISTANT_RELOAD_INTERVAL_S": "1",
    }
    with local.cluster(folder / "run", env, launch=Forked) as running:
        yield running


def visitor() -> dict:
    """A visitor's address as nginx reports it (the tests' own address, loopback, is a trusted proxy)."""
    return {"X-Forwarded-For": f"198.51.{random.randrange(256)}.{random.randrange(1, 255)}"}


def metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    values = {}
    for line in text.splitlines():
        if line.startswith("assistant_") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def rows(cluster) -> list[tuple]:
    import psycopg

    with psycopg.connect(cluster.postgres.url) as conn:
        return conn.execute("SELECT answer_id, liked, comment, votes FROM assistant_feedback ORDER BY time").fetchall()


def test_answers_through_nginx_come_from_both_replicas(cluster):
    asked = 'assistant_requests_total{route="/api/ask",status="200"}'
    before = [metrics(s.url).get(asked, 0) for s in cluster.replicas]
    with httpx.Client(base_url=cluster.nginx.url, timeout=30) as http:
        answers = [http.post("/api/ask", json=QUESTION, headers=visitor()) for _ in range(6)]
        health = http.get("/api/health").json()
    assert [a.status_code for a in answers] == [200] * 6
    assert all("FTAA" in a.json()["answer"] or "อเมริกา" in a.json()["answer"] for a in answers)
    after = [metrics(s.url).get(asked, 0) for s in cluster.replicas]
    assert [a - b for a, b in zip(after, before)] == [3, 3]  # round robin
    assert health["status"] == "ok" and health["rate_limits"] == {"storage": "redis", "ok": True}
    builds = {httpx.get(s.url + "/api/health").json()["index"]["build_id"] for s in cluster.replicas}
    assert builds == {health["index"]["build_id"]}  # both serve the same build


def test_the_chat_page_and_its_queue_work_through_nginx(cluster):
    from gradio_client import Client

    client = Client(cluster.nginx.url + "/", verbose=False)
    answer = client.predict("ALBA ก่อตั้งขึ้นเมื่อใด", [], None, "auto", api_name="/ask")
    assert answer["citations"] and answer["feedback_token"].startswith("v1.")


def test_a_rate_limit_holds_across_replicas(cluster):
    who = visitor()
    a, b = (s.url for s in cluster.replicas)
    statuses = []
    for n in range(20):
        statuses.append(httpx.post((a, b)[n % 2] + "/api/ask", json=QUESTION, headers=who, timeout=30).status_code)
    assert statuses == [200] * 20
    refused = httpx.post(a + "/api/ask", json=QUESTION, headers=who, timeout=30)
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    again = httpx.post(cluster.nginx.url + "/api/ask", json=QUESTION, headers=who, timeout=30)
    assert again.status_code == 429  # through nginx, whichever replica it reaches
    assert httpx.post(b + "/api/ask", json=QUESTION, headers=visitor(), timeout=30).status_code == 200


def test_feedback_on_one_replica_for_anothers_answer_is_stored_once(cluster):
    a, b = (s.url for s in cluster.replicas)
    token = httpx.post(b + "/api/ask", json=QUESTION, headers=visitor(), timeout=30).json()["feedback_token"]
    saved = httpx.post(a + "/api/feedback", json={"token": token, "liked": True, "comment": "ชัดเจน"}, headers=visitor())
    assert saved.status_code == 200, saved.text
    answer_id = saved.json()["answer_id"]
    # The same token again, through nginx (either replica): a changed mind replaces the vote.
    replayed = httpx.post(cluster.nginx.url + "/api/feedback", json={"token": token, "liked": True}, headers=visitor())
    changed = httpx.post(cluster.nginx.url + "/api/feedback", json={"token": token, "liked": False}, headers=visitor())
    assert replayed.status_code == changed.status_code == 200
    mine = [r for r in rows(cluster) if r[0] == answer_id]
    assert mine == [(answer_id, False, "ชัดเจน", 3)]  # one row, the latest vote, the comment kept
    # Forged: another key, or this answer's signature on another body.
    from assistant.feedback import Signer

    other = Signer("not the cluster's key").sign({"question": "x", "answer": "y", "citations": []})
    version, body, mac = token.split(".")
    for forged in (other, f"{version}.{other.split('.')[1]}.{mac}"):
        refused = httpx.post(a + "/api/feedback", json={"token": forged, "liked": False}, headers=visitor())
        assert refused.status_code == 403 and "forged, damaged or expired" in refused.json()["detail"]
    assert len([r for r in rows(cluster) if r[0] == answer_id]) == 1


def test_the_chat_in_chromium_through_nginx_keeps_to_one_replica_and_rates_into_postgres(cluster, browser):
    queue = 'assistant_requests_total{route="/compact/gradio_api/queue",status="200"}'
    before = [metrics(s.url).get(queue, 0) for s in cluster.replicas]
    known = {r[0] for r in rows(cluster)}
    page = browser.new_page()
    page.goto(cluster.nginx.url + "/compact/?lang=en", wait_until="load")
    for n, question in enumerate(("ALBA ก่อตั้งขึ้นเมื่อใด", "How far is Bogotá from Santiago?")):
        messages = page.locator("#chat .message")
        count = messages.count()
        page.locator("#question textarea").fill(question)
        page.locator("#ask").click()
        messages.nth(count + 1).wait_for(timeout=60_000)
        page.locator("#chat .answer").nth(n).wait_for(timeout=60_000)  # with its own sources
    page.locator("#chat button[aria-label='Dislike']").last.click()
    comment = page.locator("#comment textarea")
    comment.wait_for(timeout=20_000)
    comment.fill("give kilometres")
    comment.press("Enter")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not [r for r in rows(cluster) if r[0] not in known and r[2]]:
        time.sleep(0.2)
    page.close()
    (row,) = [r for r in rows(cluster) if r[0] not in known]
    assert row[1:] == (False, "give kilometres", 2)  # the thumb, then the comment on the same answer
    after = [metrics(s.url).get(queue, 0) for s in cluster.replicas]
    grew = [a - b for a, b in zip(after, before)]
    assert sorted(grew)[0] == 0 and sorted(grew)[1] >= 4  # the whole conversation on one replica


def test_metrics_count_what_happened_and_need_the_token(cluster):
    a = cluster.replicas[0].url
    assert httpx.get(a + "/metrics").status_code == 401
    assert httpx.get(a + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(cluster.nginx.url + "/metrics").status_code == 404  # never through the public address
    browser = httpx.get(
        a + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}", "Origin": "https://x.example"}
    )
    assert browser.status_code == 403
    seen = [metrics(s.url) for s in cluster.replicas]
    total = lambda name: sum(m.get(name, 0) for m in seen)  # noqa: E731
    assert total('assistant_rate_limited_total{limit="ask"}') >= 2  # the test above
    assert total('assistant_feedback_votes_total{result="saved",vote="up"}') >= 2
    assert total('assistant_feedback_votes_total{result="forged",vote="down"}') >= 2
    assert seen[0]['assistant_feedback_votes_total{result="forged",vote="down"}'] >= 2  # refused on replica A
    assert total('assistant_answer_seconds_count{stage="total"}') >= 25
    assert total('assistant_answers_total{outcome="answered"}') >= 25
    assert all(m['assistant_load_seconds{part="model"}'] > 0 and m["assistant_index_age_seconds"] > 0 for m in seen)


def _wait_status(urls, status: str, timeout: float = 8) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        seen = [httpx.get(u + "/api/health").json()["status"] for u in urls]
        if all(s == status for s in seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def test_redis_stopped_answers_continue_and_health_says_degraded(cluster):
    urls = [s.url for s in cluster.replicas]
    cluster.redis.stop()
    try:
        started = time.monotonic()
        statuses = [
            httpx.post(cluster.nginx.url + "/api/ask", json=QUESTION, headers=visitor(), timeout=30).status_code
            for _ in range(6)
        ]
        assert statuses == [200] * 6 and time.monotonic() - started < 10
        assert _wait_status(urls, "degraded") == ["degraded", "degraded"]
        health = httpx.get(urls[0] + "/api/health").json()
        assert health["rate_limits"]["ok"] is False and "not enforced" in " ".join(health["problems"])
    finally:
        cluster.redis.start()
    assert _wait_status(urls, "ok") == ["ok", "ok"]


def test_postgres_stopped_answers_continue_and_feedback_errors_clearly(cluster):
    a, b = (s.url for s in cluster.replicas)
    token = httpx.post(a + "/api/ask", json=QUESTION, headers=visitor(), timeout=30).json()["feedback_token"]
    kept = httpx.post(b + "/api/feedback", json={"token": token, "liked": False}, headers=visitor()).json()["answer_id"]
    cluster.postgres.stop()
    try:
        asked = httpx.post(cluster.nginx.url + "/api/ask", json=QUESTION, headers=visitor(), timeout=30)
        assert asked.status_code == 200
        refused = httpx.post(
            a + "/api/feedback", json={"token": asked.json()["feedback_token"], "liked": True}, timeout=30
        )
        assert refused.status_code == 503
        assert refused.json()["detail"].startswith("บันทึกความคิดเห็นไม่ได้ในขณะนี้")
        assert "Feedback cannot be saved right now; nothing was recorded" in refused.json()["detail"]
        assert _wait_status([a, b], "degraded") == ["degraded", "degraded"]
    finally:
        cluster.postgres.start()
    assert _wait_status([a, b], "ok", timeout=15) == ["ok", "ok"]
    assert any(r[0] == kept and r[1] is False for r in rows(cluster))  # acknowledged before: still there
    again = httpx.post(a + "/api/feedback", json={"token": token, "liked": True}, headers=visitor())
    assert again.status_code == 200


class Load:
    """`clients` threads asking through nginx until stopped; every outcome recorded."""

    def __init__(self, url: str, clients: int):
        self.results: list[int | str] = []
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(clients)
        for _ in range(clients):
            self.pool.submit(self._client, url)

    def _client(self, url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not self.stop.is_set():
                try:
                    self.results.append(http.post("/api/ask", json=QUESTION, headers=visitor()).status_code)
                except httpx.HTTPError as error:
                    self.results.append(type(error).__name__)

    def finish(self) -> list:
        self.stop.set()
        self.pool.shutdown()
        return [r for r in self.results if r != 200]


def test_a_published_index_reaches_both_replicas_without_a_failed_request(cluster):
    """A build copied whole next to the live folder and renamed into place (docs/deployment.md)."""
    live = Path(cluster.env["ASSISTANT_INDEX_DIR"])
    urls = [s.url for s in cluster.replicas]
    before = {httpx.get(u + "/api/health").json()["index"]["build_id"] for u in urls}
    new = live.with_name("index.new")
    shutil.copytree(live, new)
    manifest = json.loads((new / "manifest.json").read_text(encoding="utf-8"))
    manifest["built_at"] = "2030-01-01T00:00:00+00:00"  # another build of the same corpus
    (new / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    load = Load(cluster.nginx.url, 2)
    time.sleep(1)
    live.rename(live.with_name("index.old"))
    new.rename(live)
    published = time.monotonic()
    while time.monotonic() - published < 15:
        seen = [httpx.get(u + "/api/health").json()["index"] for u in urls]
        if all(i["built_at"] == "2030-01-01T00:00:00+00:00" for i in seen):
            break
        time.sleep(0.1)
    switched = time.monotonic() - published
    time.sleep(1)
    failed = load.finish()
    print(f"new index served by both replicas {switched:.1f} s after publishing, {len(load.results)} questions")
    assert switched < 5 and len({i["build_id"] for i in seen}) == 1 and seen[0]["build_id"] not in before
    assert len(load.results) > 4 and not failed, failed[:5]


def test_a_replica_killed_under_load_fails_no_question(cluster):
    """8 clients ask through nginx for 15 s; one replica is killed (SIGKILL) after 5 s: nginx retries
    the questions it had in flight on the other, and every answer arrives."""
    load = Load(cluster.nginx.url, 8)
    time.sleep(5)
    before = len(load.results)
    cluster.replicas[1].process.kill()
    time.sleep(10)
    failed = load.finish()
    print(f"load through nginx: {len(load.results)} questions in 15 s, {before} before the kill, {len(failed)} failed")
    assert before > 8 and len(load.results) > before + 8 and not failed, (len(load.results), failed[:5])
    assert httpx.get(cluster.nginx.url + "/api/health").json()["status"] == "ok"
