"""Watching a real serving engine: its KV-cache event stream turned into sealed receipts.

``wire`` decodes the engine's ZMQ frames, ``state`` keeps what each engine holds, ``core``
turns batches into receipts, ``live`` subscribes and asks the replay socket, ``recording``
keeps raw frames for offline replays, ``metrics`` serves Prometheus figures and ``figures``
summarizes engine receipts for ``kvreceipts stats``. A live watch needs the ``watch`` extra
(pyzmq, prometheus-client); :func:`require` checks for it. Replays need only msgspec, which
kvreceipts always installs.
"""

from __future__ import annotations

__all__ = ["EXTRA_HINT", "require"]

EXTRA_HINT = "pip install 'kvreceipts[watch]'"

_DISTRIBUTIONS = {"zmq": "pyzmq", "prometheus_client": "prometheus-client"}


def require(*modules: str) -> None:
    """Fail with one line naming the extra when a module the watch needs is missing."""
    from importlib.util import find_spec  # here: schema imports this package at start-up

    from kvreceipts.errors import UsageError

    missing = [_DISTRIBUTIONS.get(m, m) for m in modules if find_spec(m) is None]
    if missing:
        raise UsageError(
            f"watch needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed: {EXTRA_HINT}"
        )
