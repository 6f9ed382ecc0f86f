"""Scripted LLM servers for tests: they speak the real OpenAI chat-completions and Ollama chat protocols
over HTTP on loopback, and answer what each test scripts."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Scripted(ThreadingHTTPServer):
    """`script` is a list of replies, used in order (the last one repeats):
    ("text", str) | ("status", int) | ("garbage",) | ("hang", seconds)."""

    daemon_threads = True

    def __init__(self, handler):
        super().__init__(("127.0.0.1", 0), handler)
        self.script: list[tuple] = [("text", "")]
        self.requests: list[dict] = []
        # shutdown() waits up to one poll interval: the default 0.5 s cost every test that closes a server.
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_reply(self) -> tuple:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def handle_error(self, request, client_address):
        pass  # a client that gave up (a timeout test) closes the socket mid-reply; that is expected

    def close(self):
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/api/show":  # Ollama's model description, not a scripted reply
            info = {
                "modelinfo": {"general.architecture": "llama", "llama.context_length": 8192},
                "details": {},
                "modelfile": "",
                "parameters": "",
                "template": "",
            }
            return self._send(200, json.dumps(info).encode(), "application/json")
        self.server.requests.append({"path": self.path, "body": body})
        reply = self.server.next_reply()
        kind = reply[0]
        if kind == "hang":
            time.sleep(reply[1])
            kind, reply = "text", ("text", "late [1]")
        if kind == "status":
            self._send(reply[1], b'{"error": {"message": "scripted failure"}}', "application/json")
        elif kind == "garbage":
            self._send(200, b"<html>definitely not the protocol</html>", "application/json")
        else:
            self.respond(body, reply[1])

    def _send(self, status: int, payload: bytes, content_type: str):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _stream(self, content_type: str, lines: list[bytes]):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.end_headers()
        for line in lines:
            self.wfile.write(line)
            self.wfile.flush()
            time.sleep(0.01)


def pieces(text: str, size: int = 12) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class OpenAIHandler(_Handler):
    """POST /v1/chat/completions, streaming (server-sent events) and not."""

    def respond(self, body: dict, text: str):
        base = {"id": "chatcmpl-1", "created": 0, "model": body.get("model", "m")}
        if not body.get("stream"):
            payload = {
                **base,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            return self._send(200, json.dumps(payload).encode(), "application/json")
        events = [
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}],
            }
            for piece in pieces(text)
        ]
        events.append(
            {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        )
        lines = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
        self._stream("text/event-stream", lines)


class OllamaHandler(_Handler):
    """POST /api/chat, streaming (JSON lines) and not."""

    def respond(self, body: dict, text: str):
        done = {
            "model": body.get("model", "m"),
            "created_at": "2026-01-01T00:00:00Z",
            "done": True,
            "done_reason": "stop",
            "total_duration": 1,
            "load_duration": 1,
            "prompt_eval_count": 1,
            "prompt_eval_duration": 1,
            "eval_count": 1,
            "eval_duration": 1,
        }
        if not body.get("stream", True):
            payload = {**done, "message": {"role": "assistant", "content": text}}
            return self._send(200, json.dumps(payload).encode(), "application/json")
        lines = [
            json.dumps(
                {
                    "model": body.get("model", "m"),
                    "created_at": "2026-01-01T00:00:00Z",
                    "message": {"role": "assistant", "content": p},
                    "done": False,
                }
            ).encode()
            + b"\n"
            for p in pieces(text)
        ]
        lines.append(json.dumps({**done, "message": {"role": "assistant", "content": ""}}).encode() + b"\n")
        self._stream("application/x-ndjson", lines)
