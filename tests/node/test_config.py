"""config.toml: sections and keys checked by type and range, round trip through TOML."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, NodeConfig, config_from_dict, load_config, save_config


def test_defaults_round_trip_through_toml(tmp_path: Path) -> None:
    cfg = NodeConfig(moniker="n0")
    cfg.verifier.threads, cfg.trainer.threads = 1, 2
    save_config(cfg, tmp_path / "config.toml")
    back = load_config(tmp_path / "config.toml")
    assert back == cfg and back.verifier.threads == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"verifier": {"threads": -1}}, r"verifier\.threads must be >= 0"),
        ({"trainer": {"threads": -2}}, r"trainer\.threads must be >= 0"),
        ({"verifier": {"thread": 1}}, r"verifier: unknown key\(s\) thread"),
        ({"verifier": 1}, r"verifier: expected a \[section\]"),
        ({"log_format": "xml"}, "log_format must be"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, "config.toml")
