"""Metrics: bounded route labels, one registry per app, the served index's build."""

from assistant.metrics import Metrics, build_id, route


def test_routes_are_a_bounded_set():
    assert [route(p) for p in ("/api/ask", "/compact/", "/", "/compact/gradio_api/queue/join")] == [
        "/api/ask",
        "/compact/",
        "/",
        "/compact/gradio_api/queue",
    ]
    assert {route(f"/random-{n}") for n in range(50)} == {"other"}
    assert {route(f"/compact/x{n}") for n in range(50)} == {"/compact/other"}
    assert route("/gradio_api/info") == "/gradio_api/other" and route("/openapi.json") == "/docs"


def test_the_index_build_is_exported_and_each_app_counts_alone():
    manifest = {"built_at": "2026-01-01T00:00:00+00:00", "chunks": 38, "corpus_hash": "abc"}
    one, two = Metrics(lambda: manifest, {"model": 0.7}), Metrics(lambda: manifest)
    one.rate_limited.labels("ask").inc()
    text = one.render()[0].decode()
    assert f'assistant_index_info{{build_id="{build_id(manifest)}",built_at="2026-01-01T00:00:00+00:00"}} 1.0' in text
    assert "assistant_index_chunks 38.0" in text and 'assistant_load_seconds{part="model"} 0.7' in text
    assert 'assistant_rate_limited_total{limit="ask"} 1.0' in text
    assert 'assistant_rate_limited_total{limit="ask"}' not in two.render()[0].decode()
    assert build_id(manifest) != build_id({**manifest, "built_at": "2026-01-02T00:00:00+00:00"})
