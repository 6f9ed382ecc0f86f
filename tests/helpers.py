"""What several test modules share (test modules never import each other)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from llama_index.core import MockEmbedding

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]

# What the sentence-transformers route loads; the default model, once materialised, needs none of it.
TORCH_STACK = {"torch", "transformers", "sentence_transformers", "tokenizers"}


class NetworkBlocked(RuntimeError):
    pass


class Interrupted(MockEmbedding):
    """A real llama-index embedding whose document embedding is cut off, like Ctrl-C mid-build."""

    def _get_text_embeddings(self, texts):
        raise KeyboardInterrupt


def imported_modules(stderr: str) -> set[str]:
    """Every module a process imported, from its PYTHONPROFILEIMPORTTIME report."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def cited(answer: str, quoted: str, n: int) -> bool:
    """Whether the answer text quotes this and marks it [n]: right after it, or at the end of its sentence
    with the markers of the sentence's other parts when the chunker cut the sentence ("… [1] [2]")."""
    at = answer.find(quoted)
    return at >= 0 and bool(re.match(rf"(?: [^\[]+)? (?:\[\d+\] )*\[{n}\]", answer[at + len(quoted) :]))


class Forked:
    """`assistant serve` in a process forked from a warm launcher that has already imported the web
    stack (Gradio, FastAPI, ONNX Runtime: about 7 of a server's 9 s to start): the same code in a
    process of its own, on its own port, with its own environment. A handle like `subprocess.Popen`'s.

    The launcher is multiprocessing's fork server, started once on first use from a clean interpreter
    (no test's monkeypatching in it); each server is a fresh fork of it, so nothing passes between
    servers. A test of what a server imports uses a new interpreter (`launch=None`)."""

    _context = None

    def __init__(self, arguments: list[str], env: dict, log, open_files: int | None):
        if Forked._context is None:
            import multiprocessing

            Forked._context = multiprocessing.get_context("forkserver")
            Forked._context.set_forkserver_preload(["assistant.cli", "assistant.web", "assistant.chat"])
        self._process = Forked._context.Process(target=_serve, args=(arguments, env, log.name, open_files))
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        import subprocess

        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired("assistant serve", timeout)
        return self._process.exitcode

    def terminate(self) -> None:
        self._process.terminate()

    def kill(self) -> None:
        self._process.kill()


def _serve(arguments: list[str], env: dict, log: str, open_files: int | None) -> None:
    """In the forked process: `env` as the whole environment, output to `log`, then `assistant serve`."""
    import os
    import sys

    os.environ.clear()
    os.environ.update(env)
    out = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    if open_files:
        from assistant.bench import limit_open_files

        limit_open_files(open_files)
    from assistant.cli import cli

    sys.exit(cli.main(arguments, prog_name="assistant", standalone_mode=True))


class Server:
    """A real `assistant serve` (the benchmark's `served`), stopped by `stop()`; forked from the warm
    launcher unless `fresh`."""

    def __init__(self, env: dict, log: Path, fresh: bool = False, **served_args):
        from contextlib import ExitStack

        from assistant.bench import served

        self._stack = ExitStack()
        launch = None if fresh else Forked
        running = self._stack.enter_context(served(env, log, launch=launch, **served_args))
        self.url, self.port, self.process = running.url, running.port, running.process

    def stop(self):
        self._stack.close()


class Alongside:
    """A second pytest process running the tests `nodeids` (see conftest), its verdicts read from its
    JUnit report once it has finished."""

    CHILD = "ASSISTANT_TESTS_ALONGSIDE"  # set in the second process: it runs its tests itself

    def __init__(self, nodeids: list[str], root: Path):
        import os
        import subprocess
        import sys
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="pytest-alongside-"))
        self.report, self.log = folder / "report.xml", folder / "pytest.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5"]
                + [f"--basetemp={folder / 'tmp'}", f"--junitxml={self.report}", *nodeids],
                cwd=root,
                env={**os.environ, self.CHILD: "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: `stop` reaches the servers it started
            )
        self._verdicts: dict[tuple[str, str], tuple[str, str]] | None = None

    def verdict(self, nodeid: str) -> None:
        """Passes, fails or skips as the test did in the second process."""
        import pytest

        if self._verdicts is None:
            self.process.wait()
            self._verdicts = self._read() if self.report.is_file() else {}
        kind, text = self._verdicts.get(self._key(nodeid), ("failed", "the second pytest process gave no verdict"))
        if kind == "failed":
            tail = self.log.read_text(encoding="utf-8", errors="replace")[-3000:]
            pytest.fail(f"{text}\n--- the second pytest process ({self.log}) ---\n{tail}", pytrace=False)
        if kind == "skipped":
            pytest.skip(text)

    def _read(self) -> dict[tuple[str, str], tuple[str, str]]:
        import xml.etree.ElementTree as ET

        verdicts = {}
        for case in ET.parse(self.report).iter("testcase"):
            key = (case.get("classname", ""), case.get("name", ""))
            outcome = next((e for e in case if e.tag in {"failure", "error", "skipped"}), None)
            if outcome is None:
                verdicts[key] = ("passed", "")
            elif outcome.tag == "skipped":
                verdicts[key] = ("skipped", outcome.get("message", ""))
            else:
                verdicts[key] = ("failed", f"{outcome.get('message') or ''}\n{outcome.text or ''}")
        return verdicts

    @staticmethod
    def _key(nodeid: str) -> tuple[str, str]:
        """A test's name in a JUnit report: tests/test_x.py::test_y[1] -> ("tests.test_x", "test_y[1]")."""
        path, *names = nodeid.split("::")
        return ".".join([path.removesuffix(".py").replace("/", "."), *names[:-1]]), names[-1]

    def stop(self) -> None:
        """Ends the second process if the session ends first (-x, Ctrl-C): an interrupt, so that its
        tests' teardowns stop the servers they started, then anything left in its process group.
        (Terminated outright, it left a first-start server converting the model for 40 minutes.)"""
        import os
        import signal
        import subprocess

        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is empty: everything in it has ended
            pass
        self.process.wait()
