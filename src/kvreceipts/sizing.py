"""How many bytes of KV cache a token takes: the upstream "bitnet" rule, model presets, or an
explicit number.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvreceipts.arena import align_up
from kvreceipts.errors import UsageError

__all__ = ["BITNET_BYTES_PER_TOKEN", "MODEL_PRESETS", "ModelShape", "Sizing", "resolve_sizing"]

BITNET_BYTES_PER_TOKEN = 2 * 64 * 4
"""Upstream sizes the key and the value region at ``context_length x 64 x 4`` bytes each."""


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The attention shape that fixes KV bytes per token: layers x KV heads x head dim x
    2 (key and value) x bytes per element.
    """

    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2
    source: str = ""

    @property
    def bytes_per_token(self) -> int:
        """KV cache bytes one token takes across all layers."""
        return self.layers * self.kv_heads * self.head_dim * 2 * self.dtype_bytes


# Shapes from each model's published Hugging Face config.json (bf16/fp16 KV cache):
# head_dim = hidden_size / num_attention_heads where the config gives no head_dim.
MODEL_PRESETS: dict[str, ModelShape] = {
    "llama-3-8b": ModelShape(
        32,
        8,
        128,
        source="meta-llama/Meta-Llama-3-8B config.json: "
        "32 layers, 32 heads, 8 KV heads, hidden 4096",
    ),
    "llama-3-70b": ModelShape(
        80,
        8,
        128,
        source="meta-llama/Meta-Llama-3-70B config.json: "
        "80 layers, 64 heads, 8 KV heads, hidden 8192",
    ),
    "qwen2.5-7b": ModelShape(
        28,
        4,
        128,
        source="Qwen/Qwen2.5-7B config.json: 28 layers, "
        "28 heads, 4 KV heads, hidden 3584 (k_proj 3584->512)",
    ),
    "bitnet-b1.58-2b4t": ModelShape(
        30,
        5,
        128,
        source="microsoft/bitnet-b1.58-2B-4T "
        "config.json: 30 layers, 20 heads, 5 KV heads, hidden 2560, "
        "bf16 KV",
    ),
    "llama-2-7b": ModelShape(
        32,
        32,
        128,
        source="meta-llama/Llama-2-7b-hf config.json: "
        "32 layers, 32 heads, 32 KV heads (no GQA), hidden 4096",
    ),
}


@dataclass(frozen=True, slots=True)
class Sizing:
    """Turns token counts into KV bytes. ``name`` says where the number came from."""

    bytes_per_token: int
    name: str = "bitnet"

    def entry_bytes(self, context_length: int) -> int:
        """Bytes of an arena entry: a key and a value region, each aligned up to 64 bytes."""
        return 2 * self.region_bytes(context_length)

    def region_bytes(self, context_length: int) -> int:
        """Bytes of the key region (and equally the value region) of an entry."""
        return align_up(-(-context_length * self.bytes_per_token // 2))

    def block_bytes(self, block_tokens: int) -> int:
        """Bytes of one paged block of ``block_tokens`` tokens."""
        return block_tokens * self.bytes_per_token


def resolve_sizing(model: str = "", bytes_per_token: int = 0) -> Sizing:
    """An explicit byte count wins, then a model preset, then the upstream bitnet rule."""
    if bytes_per_token < 0:
        raise UsageError("--bytes-per-token must be positive")
    if bytes_per_token and model:
        raise UsageError("give either --model or --bytes-per-token, not both")
    if bytes_per_token:
        return Sizing(bytes_per_token, f"{bytes_per_token} bytes/token")
    if model:
        key = model.lower()
        if key not in MODEL_PRESETS:
            raise UsageError(f"unknown model {model!r} (choose from: {', '.join(MODEL_PRESETS)})")
        return Sizing(MODEL_PRESETS[key].bytes_per_token, key)
    return Sizing(BITNET_BYTES_PER_TOKEN, "bitnet")
