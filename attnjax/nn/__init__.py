"""Flax (linen) modules: attention layer, Transformer encoder, recurrent baselines, model registry."""

from attnjax.nn.attention import MultiHeadAttention
from attnjax.nn.models import MODELS, build_model
from attnjax.nn.positional import POSITIONAL, get_positional, sinusoidal_table
from attnjax.nn.recurrent import LSTM, LSTMConfig
from attnjax.nn.transformer import ATTENTION, EncoderBlock, TransformerConfig, TransformerEncoder, get_attention

__all__ = [
    "ATTENTION", "EncoderBlock", "LSTM", "LSTMConfig", "MODELS", "MultiHeadAttention", "POSITIONAL",
    "TransformerConfig", "TransformerEncoder", "build_model", "get_attention", "get_positional",
    "sinusoidal_table",
]
