"""``CachingConfig`` (upstream's fields and defaults) and config files in TOML."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from kvreceipts.config import (
    MIB,
    CachingConfig,
    LoadedConfig,
    SimulationConfig,
    dump_toml,
    load_config,
)
from kvreceipts.errors import InputError

if TYPE_CHECKING:
    from pathlib import Path

UPSTREAM_DEFAULTS = {
    "model_cache_enabled": True,
    "model_cache_size": 3,
    "model_cache_ttl": 3600,
    "kv_cache_enabled": True,
    "kv_cache_size_mb": 512,
    "batching_enabled": True,
    "max_batch_size": 8,
    "batch_timeout_ms": 10,
    "connection_pool_size": 100,
    "auto_tuning_enabled": True,
    "tuning_interval_seconds": 300,
    "enable_receipts": False,
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kvreceipts.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> InputError:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(str(path))
    return caught.value


def test_caching_config_has_upstreams_fields_and_defaults() -> None:
    config = CachingConfig()
    assert [f.name for f in dataclasses.fields(config)] == list(UPSTREAM_DEFAULTS)
    assert config.to_dict() == UPSTREAM_DEFAULTS
    for name, value in UPSTREAM_DEFAULTS.items():
        assert type(getattr(config, name)) is type(value), name
    assert config.kv_cache_size_bytes == 512 * MIB


def test_caching_config_is_frozen() -> None:
    config = CachingConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.enable_receipts = True  # type: ignore[misc]
    assert dataclasses.replace(config, enable_receipts=True).enable_receipts


def test_toml_round_trip(tmp_path: Path) -> None:
    original = LoadedConfig(
        CachingConfig(
            model_cache_enabled=False,
            model_cache_size=5,
            model_cache_ttl=60,
            kv_cache_enabled=False,
            kv_cache_size_mb=1.5,
            batching_enabled=False,
            max_batch_size=16,
            batch_timeout_ms=25,
            connection_pool_size=7,
            auto_tuning_enabled=False,
            tuning_interval_seconds=30,
            enable_receipts=True,
        ),
        SimulationConfig(
            allocator="paged",
            policy="s3fifo",
            capacity_blocks=4096,
            block_tokens=256,
            model="llama-3-8b",
            workload="agent",
            requests=500,
            seed=7,
            prefill_ms_per_token=0.25,
            batch_receipts=True,
            snapshot_every=100,
            output="receipts.jsonl",
        ),
    )
    path = write(tmp_path, dump_toml(original))

    loaded = load_config(path)

    assert loaded.caching == original.caching
    assert loaded.simulation == original.simulation
    assert loaded.caching_keys == set(UPSTREAM_DEFAULTS)
    assert loaded.path == str(path)
    assert load_config(write(tmp_path, dump_toml(loaded))).to_dict() == original.to_dict()


def test_missing_keys_take_the_defaults(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, "[caching]\nkv_cache_size_mb = 64\n"))
    assert loaded.caching == CachingConfig(kv_cache_size_mb=64)
    assert loaded.caching.enable_receipts is False  # upstream: #[serde(default)]
    assert loaded.caching_keys == {"kv_cache_size_mb"}
    assert loaded.simulation == SimulationConfig()
    assert loaded.simulation_keys == frozenset()


def test_an_empty_file_is_all_defaults(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, "# nothing set\n"))
    assert (loaded.caching, loaded.simulation) == (CachingConfig(), SimulationConfig())


def test_an_explicit_false_is_remembered(tmp_path: Path) -> None:
    # simulate's --receipts default yields to a key the file sets, even to its default value.
    loaded = load_config(write(tmp_path, "[caching]\nenable_receipts = false\n"))
    assert loaded.caching_keys == {"enable_receipts"}


def test_ints_are_accepted_for_float_fields(tmp_path: Path) -> None:
    loaded = load_config(
        write(tmp_path, "[caching]\nkv_cache_size_mb = 2\n[simulation]\nprefill_ms_per_token = 1\n")
    )
    assert loaded.caching.kv_cache_size_bytes == 2 * MIB
    assert loaded.simulation.prefill_ms_per_token == 1


def test_an_unknown_key_names_file_line_table_and_a_close_match(tmp_path: Path) -> None:
    error = load_error(
        tmp_path, "# sizes\n[caching]\nenable_receipts = true\n\nkv_cache_size = 64\n"
    )
    assert error.line == 5
    message = str(error)
    assert message.startswith(f"{error.path}:5: ")
    assert "[caching]" in message
    assert "'kv_cache_size'" in message
    assert "did you mean 'kv_cache_size_mb'" in message


def test_an_unknown_simulation_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[caching]\n\n[simulation]\npolcy = "lru"\n')
    assert error.line == 4
    assert "[simulation] unknown key 'polcy' (did you mean 'policy'?)" in str(error)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('enable_receipts = "yes"', "enable_receipts must be a boolean, not string 'yes'"),
        ('kv_cache_size_mb = "big"', "kv_cache_size_mb must be a float, not string 'big'"),
        ("model_cache_size = 3.5", "model_cache_size must be an integer, not float 3.5"),
        ("model_cache_ttl = true", "model_cache_ttl must be an integer, not boolean True"),
        ("kv_cache_size_mb = false", "kv_cache_size_mb must be a float, not boolean False"),
    ],
)
def test_a_wrong_type_names_the_key_and_the_expected_type(
    tmp_path: Path, line: str, expected: str
) -> None:
    error = load_error(tmp_path, f"[caching]\n{line}\n")
    assert error.line == 2
    assert f"[caching] {expected}" in str(error)


def test_an_unknown_table(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[cache]\nkv_cache_size_mb = 1\n")
    assert "unknown table [cache] (did you mean [caching]?)" in str(error)


def test_a_table_that_is_not_a_table(tmp_path: Path) -> None:
    error = load_error(tmp_path, "caching = 3\n")
    assert "[caching] must be a table" in str(error)


def test_invalid_toml_gives_the_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[caching]\nkv_cache_size_mb = 4\nenable_receipts = = true\n")
    assert error.line == 3
    assert str(error).startswith(f"{error.path}:3: invalid TOML")


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="config file not found") as caught:
        load_config(tmp_path / "absent.toml")
    assert caught.value.path == str(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("[caching]\nkv_cache_size_mb = 0\n", 2, "kv_cache_size_mb must be greater than 0"),
        ("[caching]\nkv_cache_size_mb = -1.5\n", 2, "kv_cache_size_mb must be greater than 0"),
        ("[caching]\nmodel_cache_ttl = -1\n", 2, "model_cache_ttl must be at least 0"),
        (
            '[simulation]\nseed = 1\npolicy = "lruu"\n',
            3,
            "policy = 'lruu' is not one of: lru, fifo, lfu, s3fifo (did you mean 'lru'?)",
        ),
        (
            '[simulation]\ntrace = "t.jsonl"\ntrace_format = "mooncak"\n',
            3,
            "trace_format = 'mooncak' is not one of: auto, mooncake, azure",
        ),
        ('[simulation]\nallocator = "slab"\n', 2, "allocator = 'slab' is not one of"),
        ('[simulation]\nmodel = "gpt-5"\n', 2, "model = 'gpt-5' is not one of"),
        ("[simulation]\nblock_tokens = 0\n", 2, "block_tokens must be greater than 0"),
    ],
)
def test_bad_values_are_rejected_at_their_line(
    tmp_path: Path, text: str, line: int, expected: str
) -> None:
    error = load_error(tmp_path, text)
    assert expected in str(error)
    assert error.line == line
