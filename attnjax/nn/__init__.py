"""Flax (linen) modules: attention layer, Transformer encoder, recurrent baselines, model registry."""

from attnjax.nn.attention import MultiHeadAttention
from attnjax.nn.models import MODELS, build_model
from attnjax.nn.positional import PositionalEncoding, PositionalInputs, sinusoidal_table
from attnjax.nn.recurrent import LSTM, LSTMConfig
from attnjax.nn.transformer import EncoderBlock, TransformerConfig, TransformerEncoder

__all__ = [
    "EncoderBlock", "LSTM", "LSTMConfig", "MODELS", "MultiHeadAttention", "PositionalEncoding", "PositionalInputs",
    "TransformerConfig", "TransformerEncoder", "build_model", "sinusoidal_table",
]
