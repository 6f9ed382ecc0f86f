"""Prometheus metrics for operators: requests, answer latency by stage and outcome, limits, votes, the index."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime

from assistant.types import Answer

# Routes by name; anything else is counted as "other", so a scanner's random paths cannot grow the series.
_ROUTES = ("/api/ask", "/api/feedback", "/api/health", "/metrics", "/embed", "/widget.js", "/gradio.js")
# Answer latency buckets (seconds): a warm extractive answer takes ~30 ms here, an LLM answer seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def build_id(manifest: dict) -> str:
    """A short id of one index build: the same for every replica that loaded the same folder."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()[:12]


def route(path: str) -> str:
    """A request path as a label of bounded cardinality."""
    if path in _ROUTES:
        return path
    if path.startswith("/compact"):
        path = path.removeprefix("/compact")
        prefix = "/compact"
    else:
        prefix = ""
    if "/gradio_api/queue/" in path or path.startswith("/gradio_api/queue"):
        return prefix + "/gradio_api/queue"
    if "gradio_api" in path:
        return prefix + "/gradio_api/other"
    if path in ("", "/"):
        return prefix + "/"
    if path in ("/docs", "/redoc", "/openapi.json") or path.startswith("/docs/"):
        return "/docs"
    return prefix + "/other" if prefix else "other"


class Metrics:
    """One registry per app (several apps in one process, as in the tests, keep their own counts)."""

    def __init__(self, index_manifest=None, load_seconds: dict[str, float] | None = None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.core import GaugeMetricFamily

        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "assistant_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "assistant_answer_seconds", "Time to answer, by stage.", ["stage"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.answers = Counter("assistant_answers", "Answers given, by outcome.", ["outcome"], registry=r)
        self.rate_limited = Counter(
            "assistant_rate_limited", "Requests refused by a rate limit (429).", ["limit"], registry=r
        )
        self.votes = Counter(
            "assistant_feedback_votes", "Ratings received, by vote and result.", ["vote", "result"], registry=r
        )
        loaded = Gauge("assistant_load_seconds", "Seconds this process took to load each part.", ["part"], registry=r)
        for part, seconds in (load_seconds or {}).items():
            loaded.labels(part).set(seconds)

        class IndexCollector:
            def collect(self):
                manifest = index_manifest() if index_manifest else None
                if not manifest:
                    return
                info = GaugeMetricFamily(
                    "assistant_index_info", "The served index build (1).", labels=["build_id", "built_at"]
                )
                info.add_metric([build_id(manifest), str(manifest.get("built_at", ""))], 1)
                yield info
                try:
                    built = datetime.fromisoformat(manifest["built_at"]).timestamp()
                except (KeyError, TypeError, ValueError):
                    return
                age = time.time() - built
                yield GaugeMetricFamily("assistant_index_age_seconds", "Age of the served index build.", age)
                yield GaugeMetricFamily(
                    "assistant_index_chunks", "Passages in the served index.", float(manifest.get("chunks", 0))
                )

        r.register(IndexCollector())

    def observe(self, answer: Answer) -> None:
        """One answer's stage timings and outcome (answered, uncertain or not_found)."""
        for stage, ms in answer.timings_ms.items():
            self.latency.labels(stage).observe(ms / 1000)
        self.answers.labels(answer.status).inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Metered:
    """ASGI middleware counting every response by route and status."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        label = route(scope["path"])

        async def sending(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(label, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, sending)
