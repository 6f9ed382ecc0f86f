"""Settings: defaults, ASSISTANT_* variables, and what each one means."""

from pathlib import Path

import pytest

from assistant.config import LLM_BASE_URLS, Config
from assistant.errors import AssistantError


def test_cache_dir_dot_is_honoured():
    """`.` is a folder like any other, not "unset"."""
    assert Config.from_env({"ASSISTANT_CACHE_DIR": "."}).cache_dir == Path(".")
    assert Config.from_env({}).cache_dir.name == "assistant"  # unset: the user's cache folder


def test_llm_servers_default_address_is_a_setting():
    openai = Config.from_env({"ASSISTANT_LLM": "openai", "ASSISTANT_LLM_MODEL": "m"})
    assert openai.llm_base_url == LLM_BASE_URLS["openai"]
    ollama = Config.from_env(
        {"ASSISTANT_LLM": "ollama", "ASSISTANT_LLM_MODEL": "m", "ASSISTANT_LLM_BASE_URL": "http://127.0.0.1:9"}
    )
    assert ollama.llm_base_url == "http://127.0.0.1:9"


def test_hnsw_parameters_are_settings():
    assert (Config().hnsw_m, Config().hnsw_ef_construction, Config().hnsw_ef_search) == (32, 80, 64)
    config = Config.from_env(
        {
            "ASSISTANT_VECTOR_INDEX": "hnsw",
            "ASSISTANT_HNSW_M": "16",
            "ASSISTANT_HNSW_EF_CONSTRUCTION": "40",
            "ASSISTANT_HNSW_EF_SEARCH": "128",
        }
    )
    assert (config.vector_index, config.hnsw_m, config.hnsw_ef_construction, config.hnsw_ef_search) == (
        "hnsw",
        16,
        40,
        128,
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"ASSISTANT_RATE_LIMIT": "lots"}, "ASSISTANT_RATE_LIMIT"),
        ({"ASSISTANT_HNSW_M": "0"}, "must be positive"),
        ({"ASSISTANT_HNSW_EF_SEARCH": "wide"}, "ASSISTANT_HNSW_EF_SEARCH='wide' is not a valid int"),
        ({"ASSISTANT_TOP_K": "many"}, "not a valid int"),
        ({"ASSISTANT_CHAT_CONCURRENCY": "0"}, "must be positive"),
    ],
)
def test_bad_settings_are_clear_errors(env, message):
    with pytest.raises(AssistantError, match=message):
        Config.from_env(env)


def test_every_setting_is_described_for_users():
    from dataclasses import fields

    from assistant.config import COMMON_SETTINGS, SETTINGS

    assert set(SETTINGS) == {f.name for f in fields(Config)}  # a new setting needs its line in SETTINGS
    assert set(COMMON_SETTINGS) <= set(SETTINGS) and len(COMMON_SETTINGS) == 10


def test_configuration_docs_are_generated_from_the_settings():
    from click.testing import CliRunner
    from helpers import ROOT

    from assistant.cli import cli

    page = CliRunner().invoke(cli, ["config-table"])
    assert page.exit_code == 0, page.output
    # regenerate with `assistant config-table > docs/configuration.md`
    assert page.stdout == (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert "| `ASSISTANT_TOP_K` | `5` | passages retrieved per question (`--top-k`) |" in page.stdout
    assert "| `ASSISTANT_LLM_API_KEY` | – |" in page.stdout  # a secret has no default to show
    common = CliRunner().invoke(cli, ["config-table", "--common"])
    assert common.stdout.strip() in (ROOT / "README.md").read_text(encoding="utf-8")  # `--common`
    assert common.stdout.count("\n| `ASSISTANT_") == 10


def test_log_level_is_a_checked_setting():
    assert Config().log_level == "info" and Config.from_env({"ASSISTANT_LOG_LEVEL": "debug"}).log_level == "debug"
    with pytest.raises(AssistantError, match="ASSISTANT_LOG_LEVEL='loud': use one of debug, info, warning, error"):
        Config.from_env({"ASSISTANT_LOG_LEVEL": "loud"})
