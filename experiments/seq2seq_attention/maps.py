"""Cross-attention maps of a trained seq2seq model: one example per length, on the model's own greedy output."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from attnjax.data.seq2seq import seq2seq_length_batch
from attnjax.nn import build_model


def attention_maps(model_name: str, fields: dict[str, Any], task: Any, alphabet_size: int, params: Any,
                   lengths: Sequence[int], rng: np.random.Generator) -> dict[str, Any]:
    """Cross-attention ``[P, n, n]`` of one example per length in ``lengths``: the decoder runs teacher-forced on
    its own greedy tokens (what ``generate`` does step by step) with its weights sown. Every length is padded to
    the longest, so each model compiles two programs in all.

    Returns:
        ``{str(n): {"weights": [P, n, n], "titles": [P], "source", "target", "prediction": [n]}}``, weights
        rounded to 4 decimals; P panels: the RNN decoder's one attention, or every Transformer decoder layer's
        cross-attention heads, layer-major.
    """
    a, pad = alphabet_size, max(lengths)
    model = build_model(model_name, a, fields)
    sowing = build_model(model_name, a, {**fields, "sow_attention_weights": True})  # same parameters
    generate = jax.jit(lambda p, s, n: model.apply({"params": p}, s, n, max_length=pad, method="generate"))
    sow = jax.jit(lambda p, s, i, n: sowing.apply({"params": p}, s, i, source_lengths=n,
                                                  mutable=["intermediates"])[1]["intermediates"])
    maps = {}
    for length in lengths:
        b = seq2seq_length_batch(task, rng, 1, length, pad, a)
        tokens = np.asarray(generate(params, b["source"], b["source_lengths"]))
        inputs = np.concatenate([np.full((1, 1), a, np.int32), tokens[:, :-1]], axis=1)
        sown = jax.device_get(sow(params, b["source"], inputs, b["source_lengths"]))
        if "attention_weights" in sown:  # the RNN decoder's one attention, [B, T, S]
            weights, titles = np.asarray(sown["attention_weights"][0][:1]), ["decoder attention"]
        else:  # decoder/block_i/cross_attention, [B, N, T, S] each
            blocks = [sown["decoder"][f"block_{i}"]["cross_attention"]["attention_weights"][0]
                      for i in range(len(sown["decoder"]))]
            weights = np.concatenate([np.asarray(w[0]) for w in blocks])
            titles = [f"layer {i} head {h}" for i, w in enumerate(blocks) for h in range(w.shape[1])]
        maps[str(length)] = {"weights": np.round(weights[:, :length, :length], 4).tolist(), "titles": titles,
                             "source": b["source"][0, :length].argmax(-1).tolist(),
                             "target": b["targets"][0, :length].tolist(), "prediction": tokens[0, :length].tolist()}
    return maps
