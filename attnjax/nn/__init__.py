"""Flax (linen) modules: the attention layer, every model of the zoo, and the registry that builds them.

The contract all models follow is :mod:`attnjax.nn.contract`; ``build_model(name, output_size, config)``
builds any of :data:`MODELS` by name.
"""

from attnjax.nn.attention import MultiHeadAttention
from attnjax.nn.baselines import CNN, MLP, CNNConfig, Logistic, LogisticConfig, MLPConfig
from attnjax.nn.contract import MODEL_KINDS, Classifier, Seq2SeqModel, SequenceModel, begin_token
from attnjax.nn.flax_attention import flax_attention_fn
from attnjax.nn.inspect import sown_attention_weights
from attnjax.nn.models import (MODELS, ModelSpec, build_model, count_params, get_model_spec, match_capacity,
                               model_config, model_kind)
from attnjax.nn.positional import PositionalEncoding, PositionalInputs, sinusoidal_table
from attnjax.nn.recurrent import Recurrent, RecurrentConfig
from attnjax.nn.rnn_seq2seq import RNNSeq2Seq, RNNSeq2SeqConfig
from attnjax.nn.transformer import (TRANSFORMER_PRESETS, EncoderBlock, TransformerConfig, TransformerEncoder,
                                    transformer_config)
from attnjax.nn.transformer_lm import TransformerLM, TransformerLMConfig
from attnjax.nn.transformer_seq2seq import TransformerSeq2Seq, TransformerSeq2SeqConfig
from attnjax.nn.vit1d import ViT1D, ViT1DConfig

__all__ = [
    "CNN", "CNNConfig", "Classifier", "EncoderBlock", "Logistic", "LogisticConfig", "MLP", "MLPConfig",
    "MODELS", "MODEL_KINDS", "ModelSpec", "MultiHeadAttention", "PositionalEncoding", "PositionalInputs",
    "RNNSeq2Seq", "RNNSeq2SeqConfig", "Recurrent", "RecurrentConfig", "Seq2SeqModel", "SequenceModel",
    "TRANSFORMER_PRESETS", "TransformerConfig", "TransformerEncoder", "TransformerLM", "TransformerLMConfig",
    "TransformerSeq2Seq", "TransformerSeq2SeqConfig", "ViT1D", "ViT1DConfig", "begin_token", "build_model",
    "count_params", "flax_attention_fn", "get_model_spec", "match_capacity", "model_config", "model_kind",
    "sinusoidal_table", "sown_attention_weights", "transformer_config",
]
