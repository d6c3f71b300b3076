"""The configuration: TOML validated by pydantic, with errors that name the key and what to do."""
from __future__ import annotations

import pytest

from lossforge.config import ConfigError, load_config


def test_defaults_need_no_file() -> None:
    config = load_config()
    assert config.search.generations == 20 and config.proposer.kind == "evolution"
    assert config.proxy.screen.beta == 0.05  # the DiscoPOP paper's beta


def test_a_file_and_overrides_combine(tmp_path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[search]\ngenerations = 7\nseed = 3\n[proxy.screen]\nbeta = 0.2\n")
    config = load_config(path, {"search.generations": 9, "search.seed": None})
    assert config.search.generations == 9  # the override wins
    assert config.search.seed == 3  # None means "not given"
    assert config.proxy.screen.beta == 0.2


def test_unknown_keys_and_wrong_types_are_all_listed(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[search]\ngeneratoins = 7\nseed = 'three'\n[proxy.screen]\nbeta = -1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "unknown key 'search.generatoins'" in message
    assert "search.seed" in message and "proxy.screen.beta" in message


def test_missing_file_and_bad_toml_are_clear(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[search\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_unknown_proposer_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="proposer.kind"):
        load_config(overrides={"proposer.kind": "oracle"})


def test_fitness_variants_read_from_toml(tmp_path) -> None:
    path = tmp_path / "robust.toml"
    path.write_text("[proxy.screen]\nbeta = 0.1\n[proxy.fitness]\nvariants = [{beta = 0.2}]\naggregate = 'min'\nlazy_top_k = 4\n")
    config = load_config(path)
    settings = config.proxy.fitness.settings(config.proxy.screen)
    assert [s.beta for s in settings] == [0.1, 0.2]
    assert settings[1].steps == config.proxy.screen.steps  # a variant changes only what it names
    assert config.proxy.fitness.combine([0.9, 0.4]) == 0.4


@pytest.mark.parametrize(
    "variants, message",
    [
        ("[{bta = 0.2}]", "unknown [proxy.screen] fields ['bta']"),
        ("[{beta = -0.2}]", "variant 1 {'beta': -0.2} is not a valid screen: beta"),
        ("[{}]", "variant 1 is empty"),
    ],
)
def test_bad_fitness_variants_say_which_and_why(tmp_path, variants: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f"[proxy.fitness]\nvariants = {variants}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)
