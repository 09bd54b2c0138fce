"""Flax (linen) modules: the attention layer, every model of the zoo, and the registry that builds them.

The contract all models follow is :mod:`attnjax.nn.contract`; ``build_model(name, output_size, config)``
builds any of :data:`MODELS` by name. The model classes and their configs live in their own modules
(:mod:`attnjax.nn.baselines`, :mod:`attnjax.nn.vit1d`, :mod:`attnjax.nn.transformer_lm`,
:mod:`attnjax.nn.mixer_lm`, ...).
"""

from attnjax.nn.attention import MultiHeadAttention
from attnjax.nn.execution import Execution
from attnjax.nn.flax_attention import flax_attention_fn
from attnjax.nn.inspect import apply_with_attention_weights, greedy_attention_weights, sown_attention_weights
from attnjax.nn.mixer_lm import BasedLM, BaseConvLM, HyenaLM
from attnjax.nn.nnx_attention import nnx_attention_fn
from attnjax.nn.models import MODELS, build_model, count_params, get_model_spec, model_config, model_kind
from attnjax.nn.positional import sinusoidal_table
from attnjax.nn.recurrent import Recurrent
from attnjax.nn.transformer import TRANSFORMER_PRESETS, TransformerConfig, TransformerEncoder, transformer_config

__all__ = [
    "BaseConvLM", "BasedLM", "Execution", "HyenaLM", "MODELS", "MultiHeadAttention", "Recurrent", "TRANSFORMER_PRESETS",
    "TransformerConfig", "TransformerEncoder", "apply_with_attention_weights",
    "build_model", "count_params", "flax_attention_fn", "get_model_spec", "greedy_attention_weights", "model_config",
    "model_kind", "nnx_attention_fn", "sinusoidal_table", "sown_attention_weights", "transformer_config",
]
