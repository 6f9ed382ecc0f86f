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
