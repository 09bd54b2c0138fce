"""One dict, name -> model constructor, so experiments select architectures from config strings."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn

from attnjax.nn.recurrent import LSTM, LSTMConfig
from attnjax.nn.transformer import TransformerConfig, TransformerEncoder


def _transformer(output_size: int, **kwargs: Any) -> nn.Module:
    return TransformerEncoder(TransformerConfig(**kwargs), output_size)


def _lstm(output_size: int, **kwargs: Any) -> nn.Module:
    return LSTM(LSTMConfig(**kwargs), output_size)


# name -> (output_size, **config fields) -> module mapping [B, L, V] to [B, L, output_size].
MODELS: dict[str, Callable[..., nn.Module]] = {
    "transformer": _transformer,
    "lstm": _lstm,
}


def build_model(name: str, output_size: int, config: Mapping[str, Any] | None = None) -> nn.Module:
    """Builds a model by name.

    Args:
        name: key of ``MODELS``.
        output_size: classes per position.
        config: fields of that model's config dataclass (unknown fields raise TypeError).

    Raises:
        ValueError: unknown name.
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](output_size, **dict(config or {}))
