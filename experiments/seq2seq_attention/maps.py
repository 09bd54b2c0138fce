"""Cross-attention maps of a trained seq2seq model: one example per length, on the model's own greedy output."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from attnjax.data.seq2seq import seq2seq_length_batch
from attnjax.nn import build_model, greedy_attention_weights


def attention_maps(model_name: str, fields: dict[str, Any], task: Any, alphabet_size: int, params: Any,
                   lengths: Sequence[int], rng: np.random.Generator) -> dict[str, Any]:
    """Cross-attention ``[P, n, n]`` of one example per length in ``lengths``, on the model's own greedy tokens
    (:func:`attnjax.nn.greedy_attention_weights`). Every length is padded to the longest, so each model compiles
    one program.

    Returns:
        ``{str(n): {"weights": [P, n, n], "titles": [P], "source", "target", "prediction": [n]}}``, weights
        rounded to 4 decimals; P panels: the RNN decoder's one attention, or every Transformer decoder layer's
        cross-attention heads, layer-major.
    """
    a, pad = alphabet_size, max(lengths)
    model = build_model(model_name, a, fields)
    # The RNN decoder's one attention; the Transformer decoder's cross-attention, not its self-attention.
    module = None if model_name == "rnn_seq2seq" else "cross_attention"
    decode = jax.jit(lambda p, s, n: greedy_attention_weights(model, p, s, n, pad, module))
    maps = {}
    for length in lengths:
        b = seq2seq_length_batch(task, rng, 1, length, pad, a)
        tokens, layers = jax.device_get(decode(params, b["source"], b["source_lengths"]))
        layers = [w[0] for w in layers]
        if module is None:  # [T, S]
            weights, titles = layers[0][None], ["decoder attention"]
        else:  # [N, T, S] per decoder layer
            weights = np.concatenate(layers)
            titles = [f"layer {i} head {h}" for i, w in enumerate(layers) for h in range(len(w))]
        maps[str(length)] = {"weights": np.round(weights[:, :length, :length], 4).tolist(), "titles": titles,
                             "source": b["source"][0, :length].argmax(-1).tolist(),
                             "target": b["targets"][0, :length].tolist(), "prediction": tokens[0, :length].tolist()}
    return maps
