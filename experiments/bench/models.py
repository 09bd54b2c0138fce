"""Model train-step throughput side by side: ``python -m experiments.bench.models``.

Each pair runs the same jitted optax step (cross-entropy at every position, Adam, state donated) on the same
batch: attnjax's ``TransformerEncoder`` against the same network in plain ``flax.linen``, and attnjax's
``lstm``/``gru`` against ``nn.RNN`` over linen's cells, at the study sizes (``config.study_settings``,
``BATCHxLENGTH``); then blockwise against dense attention at one long sequence (``config.long_length``,
batch 1) with each step's compiled temporary memory; and greedy decoding with against without the key/value
cache (``config.decode_setting``, ``BATCHxPROMPTxTOKENS``: the cost per generated token, the Transformer LM and
the LSTM). Parameter counts of a pair are checked equal first.
Timed round-robin over the pair (one untimed step, then ``config.steps_per_round`` timed ones per round);
the median round is reported. Writes ``summary.md`` and ``results.json`` to ``config.out``.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from attnjax import sweep
from attnjax.nn import build_model, count_params, sinusoidal_table
from attnjax.sweep import bench
from attnjax.sweep.report import markdown_table
from attnjax.train.decode import greedy_decode

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "models_config.py")


class PlainFlaxTransformer(nn.Module):
    """The default attnjax ``TransformerEncoder`` written with stock linen layers only."""

    num_layers: int
    d_model: int
    num_heads: int
    mlp_dim: int
    output_size: int

    @nn.compact
    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        x = nn.Dense(self.d_model)(inputs) + sinusoidal_table(inputs.shape[1], self.d_model)
        for _ in range(self.num_layers):
            h = nn.LayerNorm(epsilon=1e-6)(x)
            x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, qkv_features=self.d_model)(h, h)
            h = nn.LayerNorm(epsilon=1e-6)(x)
            x = x + nn.Dense(self.d_model)(nn.gelu(nn.Dense(self.mlp_dim)(h)))
        return nn.Dense(self.output_size)(nn.LayerNorm(epsilon=1e-6)(x))


class PlainFlaxRNN(nn.Module):
    """``nn.RNN`` over a linen cell, then a linear read-out."""

    cell: str
    hidden_size: int
    output_size: int

    @nn.compact
    def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
        cell = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}[self.cell](self.hidden_size)
        return nn.Dense(self.output_size)(nn.RNN(cell)(inputs))


def _compile(model: nn.Module, batch: int, length: int, vocab: int, lr: float) -> dict[str, Any]:
    """Initializes ``model`` and compiles its train step on a ``[batch, length, vocab]`` batch."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, (batch, length))
    inputs = jax.nn.one_hot(tokens, vocab)
    targets = jnp.asarray(np.roll(tokens, 1, axis=1), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), inputs)["params"]
    tx = optax.adam(lr)
    state = [params, tx.init(params)]
    compiled, facts = bench.compile_within(bench.train_step(model.apply, tx), [*state, inputs, targets])
    if compiled is None:
        raise RuntimeError(f"{type(model).__name__}: {facts['status']}")
    return {"step": bench.carried(compiled, state, (inputs, targets)), "params": count_params(params), **facts}


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first bad field (before anything is compiled)."""
    _settings(config)
    sweep.check_ints(config, vocab=1, hidden_size=1, repeats=1, steps_per_round=1)


def _settings(config: ml_collections.ConfigDict) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """``(batch, length)`` of every study setting and ``(batch, prompt, tokens)`` of every decoding setting."""
    return (sweep.int_tuples(config.study_settings, "study_settings", "BATCHxLENGTH", "x"),
            sweep.int_tuples(config.decode_setting, "decode_setting", "BATCHxPROMPTxTOKENS", "x", size=3))


def decode_rows(config: ml_collections.ConfigDict, settings: Sequence[tuple[int, ...]]) -> list[dict[str, Any]]:
    """Seconds per generated token of greedy decoding with the key/value cache and without it (every step a
    forward pass over the whole sequence), for the study Transformer as an LM and the LSTM, timed round-robin, at
    every ``(batch, prompt, tokens)`` of ``settings``."""
    vocab, rows = config.vocab, []
    models = {"transformer_lm": build_model("transformer_lm", vocab, config.transformer.to_dict()),
              "lstm": build_model("lstm", vocab, dict(hidden_size=config.hidden_size))}
    for (batch, prompt, tokens), (name, model) in itertools.product(settings, models.items()):
        inputs = jax.nn.one_hot(np.random.default_rng(0).integers(0, vocab, (batch, prompt + tokens - 1)), vocab)
        data = {"inputs": inputs, "prompt_lengths": np.full((batch,), prompt, np.int32)}
        params = jax.jit(model.init)(jax.random.key(0), inputs)["params"]
        calls = [(lambda cached=cached: greedy_decode(model, params, data, tokens, cached=cached), ())
                 for cached in (True, False)]
        cached_s, uncached_s = bench.medians(calls, config.repeats)
        rows.append({"model": name, "batch": batch, "prompt": prompt, "tokens": tokens,
                     "cached_ms_per_token": 1e3 * cached_s / tokens, "uncached_ms_per_token": 1e3 * uncached_s / tokens,
                     "speedup": uncached_s / cached_s})
    return rows


def run(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Times every pair at every setting; writes results.json and summary.md to ``config.out``."""
    (study, decoding), rows, vocab = _settings(config), [], config.vocab
    t, hidden = config.transformer.to_dict(), config.hidden_size  # per network: attnjax's and the same in plain flax
    pairs = {"transformer": (build_model("transformer", vocab, t), PlainFlaxTransformer(**t, output_size=vocab)),
             **{cell: (build_model(cell, vocab, dict(hidden_size=hidden)), PlainFlaxRNN(cell, hidden, vocab))
                for cell in ("lstm", "gru")}}
    for batch, length in study:
        for name, (ours, plain) in pairs.items():
            runs = [_compile(m, batch, length, vocab, config.learning_rate) for m in (ours, plain)]
            if runs[0]["params"] != runs[1]["params"]:
                raise AssertionError(f"{name}: attnjax has {runs[0]['params']} parameters, plain flax "
                                     f"{runs[1]['params']}: not the same network")
            ours_s, plain_s = bench.medians([(r["step"], ()) for r in runs], config.repeats, config.steps_per_round)
            rows.append({"model": name, "batch": batch, "length": length, "params": runs[0]["params"],
                         "attnjax_examples_per_s": batch / ours_s, "plain_examples_per_s": batch / plain_s,
                         "attnjax_tokens_per_s": batch * length / ours_s, "ratio": plain_s / ours_s})
            print("| " + " | ".join(_study_row(rows[-1])) + " |", flush=True)
    long_rows = []
    if config.long_length > 0:
        runs = {implementation: _compile(build_model("transformer", vocab, {
            **config.transformer.to_dict(), "attention": dict(implementation=implementation)}), 1, config.long_length,
            vocab, config.learning_rate) for implementation in ("blockwise", "dense")}
        seconds = dict(zip(runs, bench.medians([(r["step"], ()) for r in runs.values()], config.repeats)))
        for implementation, r in runs.items():
            long_rows.append({"implementation": implementation, "length": config.long_length,
                              "seconds_per_step": seconds[implementation], "temp_bytes": r["temp_bytes"],
                              "speedup_vs_dense": seconds["dense"] / seconds[implementation],
                              "memory_vs_dense": r["temp_bytes"] / runs["dense"]["temp_bytes"]})
    decode = decode_rows(config, decoding)
    table = markdown(rows, long_rows, config, decode)
    results = {"config": config.to_dict(), "study": rows, "long": long_rows, "decode": decode}
    bench.write_benchmark(config.out, "Model benchmark", results, table)
    return results


def _study_row(r: dict[str, Any]) -> list[str]:
    return [r["model"], f"{r['batch']} x {r['length']}", f"{r['params']:,}", f"{r['attnjax_examples_per_s']:,.0f}",
            f"{r['plain_examples_per_s']:,.0f}", f"{r['attnjax_tokens_per_s']:,.0f}", f"{r['ratio']:.2f}x"]


def markdown(rows: list[dict[str, Any]], long_rows: list[dict[str, Any]], config: ml_collections.ConfigDict,
             decode: list[dict[str, Any]] = ()) -> str:
    text = markdown_table(["model", "batch x length", "params", "attnjax ex/s", "plain flax ex/s", "attnjax tokens/s",
                           "attnjax / plain"], [_study_row(r) for r in rows], "llrrrrr")
    if long_rows:
        text += f"\n\nTransformer train step at T = {config.long_length}, batch 1:\n\n" + markdown_table(
            ["implementation", "s / step", "temp MiB", "speed vs dense", "memory vs dense"],
            [[r["implementation"], f"{r['seconds_per_step']:.3f}", f"{r['temp_bytes'] / 2**20:,.1f}",
              f"{r['speedup_vs_dense']:.2f}x", f"{r['memory_vs_dense']:.3f}"] for r in long_rows], "lrrrr")
    if decode:
        text += "\n\nGreedy decoding, ms per generated token (one step of the whole batch):\n\n" + markdown_table(
            ["model", "batch x prompt + tokens", "cached", "uncached", "cache speed-up"],
            [[r["model"], f"{r['batch']} x {r['prompt']} + {r['tokens']}", f"{r['cached_ms_per_token']:.3f}",
              f"{r['uncached_ms_per_token']:.3f}", f"{r['speedup']:.2f}x"] for r in decode], "llrrr")
    return text + "\n"


if __name__ == "__main__":
    sweep.config_cli(CONFIG_FILE, check_config, run)
