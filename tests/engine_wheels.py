"""The engines' own event publishers, loaded from their released wheels with the smallest stubs.

``pip download --no-deps`` fetches a wheel once into ``~/.cache/kvreceipts-tests/wheels`` (or
``$KVRECEIPTS_WHEEL_CACHE``); only the event module is read out of it
(``vllm/distributed/kv_events.py``, ``sglang/srt/disaggregation/kv_events.py``) and executed
with stub modules for the engine's own imports (its logger, config class, hash type alias and
network helpers), written here: nothing of the engines is committed into this project.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("KVRECEIPTS_WHEEL_CACHE",
                            Path.home() / ".cache" / "kvreceipts-tests" / "wheels"))  # fmt: skip
MODULES = {"vllm": "vllm/distributed/kv_events.py",
           "sglang": "sglang/srt/disaggregation/kv_events.py"}  # fmt: skip


class WheelUnavailableError(RuntimeError):
    """A wheel that could not be had: the message says which and why."""


def wheel(project: str, version: str) -> Path:
    """The cached wheel of ``project==version``, downloaded once (``--no-deps``)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(CACHE.glob(f"{project}-{version}-*.whl"))
    if found:
        return found[0]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--quiet", f"{project}=={version}", "-d", str(CACHE)],
        capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    found = sorted(CACHE.glob(f"{project}-{version}-*.whl"))
    if done.returncode != 0 or not found:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel written"]
        raise WheelUnavailableError(f"{project}=={version}: pip download failed: {why[0]}")
    return found[0]


def source(project: str, version: str) -> str:
    """The event module's source, read from the wheel."""
    with zipfile.ZipFile(wheel(project, version)) as archive:
        return archive.read(MODULES[project]).decode()


@dataclasses.dataclass
class _KVEventsConfig:
    """Stands for ``vllm.config.kv_events.KVEventsConfig`` (only constructed by 0.34)."""

    enable_kv_cache_events: bool = False
    publisher: str = "null"
    endpoint: str = "tcp://*:5557"
    replay_endpoint: str | None = None
    buffer_steps: int = 10_000
    hwm: int = 100_000
    max_queue_size: int = 100_000
    topic: str = ""


class _NetworkAddress:
    """Stands for SGLang's ``NetworkAddress`` (used only to describe sockets, never here)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.is_ipv6 = host, port, ":" in host

    @classmethod
    def parse(cls, text: str) -> _NetworkAddress:
        host, _, port = text.rpartition(":")
        return cls(host.strip("[]"), int(port))

    def to_tcp(self) -> str:
        return f"tcp://{self.host}:{self.port}"


def _stubs(project: str) -> dict[str, types.ModuleType]:
    def module(name: str, **attrs: Any) -> types.ModuleType:
        made = types.ModuleType(name)
        made.__dict__.update(attrs)
        return made

    if project == "vllm":
        return {
            "vllm": module("vllm"),
            "vllm.config": module("vllm.config"),
            "vllm.config.kv_events": module("vllm.config.kv_events",
                                            KVEventsConfig=_KVEventsConfig),
            "vllm.logger": module("vllm.logger", init_logger=logging.getLogger),
            "vllm.v1": module("vllm.v1"),
            "vllm.v1.core": module("vllm.v1.core"),
            "vllm.v1.core.kv_cache_utils": module("vllm.v1.core.kv_cache_utils",
                                                  ExternalBlockHash=bytes | int),
            "vllm.utils": module("vllm.utils"),
            "vllm.utils.network_utils": module(
                "vllm.utils.network_utils", get_ip=lambda: "127.0.0.1",
                get_tcp_uri=lambda ip, port: f"tcp://{ip}:{port}",
                is_valid_ipv6_address=lambda _ip: False,
                split_zmq_path=lambda path: ("tcp", *path[6:].rsplit(":", 1)),
            ),
        }  # fmt: skip
    return {
        "sglang": module("sglang"),
        "sglang.srt": module("sglang.srt"),
        "sglang.srt.runtime_context": module("sglang.srt.runtime_context",
                                             get_parallel=lambda: None),
        "sglang.srt.utils": module("sglang.srt.utils"),
        "sglang.srt.utils.network": module("sglang.srt.utils.network",
                                           NetworkAddress=_NetworkAddress),
    }  # fmt: skip


def load(project: str, version: str) -> types.ModuleType:
    """The engine's event module, executed with the stubs in place (and taken out after)."""
    text = source(project, version)
    name = f"_engine_{project}_{version.replace('.', '_')}"
    stubs = _stubs(project)
    saved = {key: sys.modules.get(key) for key in stubs}
    sys.modules.update(stubs)
    try:
        module = types.ModuleType(name)
        module.__file__ = f"{project}=={version}:{MODULES[project]}"
        sys.modules[name] = module  # msgspec and dataclasses look the module up
        exec(compile(text, module.__file__, "exec"), module.__dict__)
    finally:
        for key, old in saved.items():
            if old is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = old
    return module
