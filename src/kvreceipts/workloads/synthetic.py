"""Seeded synthetic workloads: ``chat``, ``agent``, ``burst`` and ``uniform``.

Each is a generator of :class:`Request` events, deterministic for a given seed. Block hashes
follow the token stream the way a prefix cache sees it: blocks wholly inside a shared prefix
(a system prompt, an agent's tools) share hashes across sessions; the rest are unique to the
conversation and stable across its turns.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvreceipts.workloads.request import Request

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["SYNTHETIC_WORKLOADS", "synthetic_workload"]

DEFAULT_REQUESTS = 2000
_CONVERSATION_SHIFT = 24  # conversation blocks hash to (conversation << 24) | block index
_PREFIX_BASE = 1 << 62  # shared-prefix blocks live far above conversation hashes


def _zipf_weights(n: int, s: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank**s) for rank in range(1, n + 1)))


def _lognormal_tokens(rng: random.Random, mean: float, sigma: float = 0.8) -> int:
    mu = math.log(mean) - sigma * sigma / 2
    return max(1, round(rng.lognormvariate(mu, sigma)))


@dataclass(slots=True)
class _Conversation:
    """A session's token stream: a shared prefix, then its own turns."""

    session_id: str
    uid: int
    context_length: int
    prefix_id: int
    prefix_tokens: int
    tokens: int = 0
    turns: int = 0

    def hashes(self, input_tokens: int, block_tokens: int) -> list[int]:
        """Hashes of the blocks covering ``input_tokens`` of this stream."""
        blocks = -(-input_tokens // block_tokens)
        shared = min(blocks, self.prefix_tokens // block_tokens)
        prefix = _PREFIX_BASE + (self.prefix_id << _CONVERSATION_SHIFT)
        own = self.uid << _CONVERSATION_SHIFT
        return [prefix + i for i in range(shared)] + [own + i for i in range(shared, blocks)]


class _Sessions:
    """Sessions picked by Zipf popularity; a session whose context fills up starts over as a
    new conversation (a new uid and ``#n`` suffix), as a chat client would.
    """

    def __init__(
        self,
        rng: random.Random,
        name: str,
        *,
        count: int,
        zipf_s: float,
        windows: tuple[int, ...],
        prefixes: list[int],
    ) -> None:
        self.rng = rng
        self.name = name
        self.windows = windows
        self.prefixes = prefixes
        self.cum_weights = _zipf_weights(count, zipf_s)
        self.population = range(count)
        self.live: dict[int, _Conversation] = {}
        self.uids = itertools.count(1)
        self.restarts: dict[int, int] = {}

    def pick(self) -> int:
        """A session index by popularity."""
        return self.rng.choices(self.population, cum_weights=self.cum_weights)[0]

    def conversation(self, index: int) -> _Conversation:
        """The session's live conversation, starting one if needed."""
        conv = self.live.get(index)
        if conv is None:
            restarts = self.restarts.get(index, 0)
            suffix = f"#{restarts}" if restarts else ""
            prefix_id = index % len(self.prefixes)
            conv = _Conversation(
                session_id=f"{self.name}-{index}{suffix}",
                uid=next(self.uids),
                context_length=self.rng.choice(self.windows),
                prefix_id=prefix_id,
                prefix_tokens=self.prefixes[prefix_id],
            )
            conv.tokens = conv.prefix_tokens
            self.live[index] = conv
        return conv

    def restart(self, index: int) -> None:
        """The conversation ran out of context: the next turn starts a fresh one."""
        del self.live[index]
        self.restarts[index] = self.restarts.get(index, 0) + 1


def _poisson(rng: random.Random, rate_per_s: float) -> Iterator[float]:
    now = 0.0
    while True:
        now += rng.expovariate(rate_per_s) * 1000.0
        yield now


def _bursts(rng: random.Random, size: int, every_ms: float, within_ms: float) -> Iterator[float]:
    for start in itertools.count(step=every_ms):
        yield from sorted(start + rng.uniform(0, within_ms) for _ in range(size))


def _turns(
    sessions: _Sessions,
    rng: random.Random,
    arrivals: Iterator[float],
    *,
    requests: int,
    block_tokens: int,
    user_tokens: float,
    output_tokens: float,
) -> Iterator[Request]:
    for number, now in zip(range(requests), arrivals, strict=False):
        index = sessions.pick()
        conv = sessions.conversation(index)
        user = _lognormal_tokens(rng, user_tokens)
        output = _lognormal_tokens(rng, output_tokens)
        if conv.tokens + user + output > conv.context_length and conv.turns:
            sessions.restart(index)
            conv = sessions.conversation(index)
        input_tokens = min(conv.tokens + user, conv.context_length - 1)
        output = max(1, min(output, conv.context_length - input_tokens))
        yield Request(
            request_id=f"req-{number}",
            session_id=conv.session_id,
            arrival_ms=round(now, 3),
            input_tokens=input_tokens,
            output_tokens=output,
            context_length=conv.context_length,
            block_hashes=conv.hashes(input_tokens, block_tokens),
        )
        conv.tokens = input_tokens + output
        conv.turns += 1


def chat(requests: int, seed: int, block_tokens: int) -> Iterator[Request]:
    """Multi-turn chat: ~requests/6 sessions with Zipf(1.1) popularity, a few shared system
    prompts, context growing turn by turn within a 4k-32k window, ~20 requests/s.
    """
    rng = random.Random(seed)
    prompts = [rng.randint(300, 1500) for _ in range(4)]
    sessions = _Sessions(
        rng,
        "chat",
        count=max(8, requests // 6),
        zipf_s=1.1,
        windows=(4096, 8192, 16384, 32768),
        prefixes=prompts,
    )
    return _turns(
        sessions,
        rng,
        _poisson(rng, 20.0),
        requests=requests,
        block_tokens=block_tokens,
        user_tokens=200,
        output_tokens=300,
    )


def agent(requests: int, seed: int, block_tokens: int) -> Iterator[Request]:
    """Agents: a handful of long tool-laden prefixes (8k-24k tokens) shared by many tasks;
    each step appends a large tool result and a short action.
    """
    rng = random.Random(seed)
    prefixes = [rng.randint(8000, 24000) for _ in range(6)]
    sessions = _Sessions(
        rng,
        "agent",
        count=max(8, requests // 10),
        zipf_s=0.9,
        windows=(65536, 131072),
        prefixes=prefixes,
    )
    return _turns(
        sessions,
        rng,
        _poisson(rng, 8.0),
        requests=requests,
        block_tokens=block_tokens,
        user_tokens=1200,
        output_tokens=120,
    )


def burst(requests: int, seed: int, block_tokens: int) -> Iterator[Request]:
    """Bursts: every 10 s a flood of mostly new, short conversations within 200 ms, so the
    cache churns and evicts in rounds.
    """
    rng = random.Random(seed)
    sessions = _Sessions(
        rng,
        "burst",
        count=max(8, requests // 2),
        zipf_s=0.6,
        windows=(4096, 8192),
        prefixes=[256],
    )
    size = max(1, min(200, requests // 10))
    return _turns(
        sessions,
        rng,
        _bursts(rng, size, 10_000.0, 200.0),
        requests=requests,
        block_tokens=block_tokens,
        user_tokens=400,
        output_tokens=150,
    )


def uniform(requests: int, seed: int, block_tokens: int) -> Iterator[Request]:
    """Uniform popularity over ~requests/4 sessions, Poisson arrivals at 10 requests/s."""
    rng = random.Random(seed)
    sessions = _Sessions(
        rng,
        "uniform",
        count=max(8, requests // 4),
        zipf_s=0.0,
        windows=(4096, 8192),
        prefixes=[512],
    )
    return _turns(
        sessions,
        rng,
        _poisson(rng, 10.0),
        requests=requests,
        block_tokens=block_tokens,
        user_tokens=300,
        output_tokens=200,
    )


SYNTHETIC_WORKLOADS: dict[str, Callable[[int, int, int], Iterator[Request]]] = {
    "chat": chat,
    "agent": agent,
    "burst": burst,
    "uniform": uniform,
}


def synthetic_workload(
    name: str, *, requests: int = 0, seed: int = 0, block_tokens: int = 512
) -> Iterator[Request]:
    """The named generator; ``requests=0`` means the default of 2,000."""
    return SYNTHETIC_WORKLOADS[name](requests or DEFAULT_REQUESTS, seed, block_tokens)
