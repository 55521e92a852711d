"""docs/configuration.md lists every key with a working HEED_* variable, in step with the code."""

from __future__ import annotations

import pytest

from proxy.settings import load_settings
from proxy.settings_doc import DOC, keys, render, sample


def test_the_doc_is_in_step_with_the_settings() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text == render(text), "docs/configuration.md is stale: run python -m proxy.settings_doc"
    for name, env in keys():
        assert f"| `{name}` | `{env}` |" in text


@pytest.mark.parametrize(("name", "env"), keys())
def test_each_variable_sets_its_key(name: str, env: str) -> None:
    """The documented variable, given the shipped file's value, is taken as that key."""
    value = sample()[name][0]
    load_settings(None, env={env: value})  # an unknown or misnamed key would raise


def test_a_misspelt_variable_stops_heed_and_helper_variables_do_not() -> None:
    with pytest.raises(Exception, match="upstrem"):
        load_settings(None, env={"HEED_UPSTREM__HOST": "mta"})
    settings = load_settings(None, env={"HEED_REDIS_SERVER": "/usr/bin/redis-server",
                                        "HEED_CONFIG": "x.yaml", "HEED_UPSTREAM__PORT": "587"})
    assert settings.upstream.port == 587
