"""Greedy decoding of decoder-only models on the autoregressive layout, with a key/value cache, and its scores.

A batch of :mod:`attnjax.data.autoregressive` holds ``inputs [B, P, V]`` (position ``t`` reads token ``t``),
``targets [B, P]`` (token ``t + 1``), ``accuracy_mask``, ``loss_mask``, ``seq_lengths`` and ``prompt_lengths``:
row ``b``'s prompt is its first ``prompt_lengths[b]`` tokens (the input and the separator).
:func:`greedy_decode` reads the prompt and then writes ``num_steps`` tokens, each the argmax of the model's
logits given everything before it (no teacher forcing):

* **cached** (default): the prompt is read in one call (the prefill), then one token per call, each attending
  to the keys and values kept in the ``"cache"`` collection (:mod:`attnjax.nn.kv_cache`); a recurrent LM
  carries its state instead. Decoding a token costs one position of work.
* **uncached** (``cached=False``): every step runs the model over the whole sequence so far (a fixed buffer of
  the final length, whose unread tail causality hides), so a token costs a full forward pass: the reference
  the cache must equal, token for token.

Both run as one ``lax.fori_loop`` in one jitted program per batch shape (prompt lengths and ``num_steps`` are
static). Prompts of one batch may differ in length: the prefill reads the shortest, and a row whose prompt
is longer keeps reading its own prompt tokens (not its predictions) until its prompt ends, so every row is
decoded exactly as it would be alone. The scores (:func:`decoder_eval_step`) are per-token accuracy under
``accuracy_mask`` and whole-sequence exact match (every scored token of the row right), each teacher-forced (one
forward pass, argmax) and free-running (greedy decoding); ``END`` is trained but not scored, as in the layout.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from attnjax.nn.kv_cache import CACHE
from attnjax.nn.positional import MissingPositionsRngError
from attnjax.train.seq2seq_steps import SUM_KEYS, reduce_seq2seq_metrics
from attnjax.train.steps import Batch, Metrics, masked_loss_and_correct, missing_positions_rng


def check_decodes(model: nn.Module) -> None:
    """Raises ValueError unless ``model`` takes ``decode=True`` (TransformerLM, the recurrent LMs)."""
    if "decode" not in inspect.signature(type(model).__call__).parameters:
        raise ValueError(f"{type(model).__name__} has no decode mode (decode=True with a cache); greedy decoding "
                         f"with cached=True needs a TransformerLM or a recurrent LM; cached=False decodes any "
                         f"causal sequence model")


def _dummy(batch_size: int, length: int, input_size: int | None) -> jax.ShapeDtypeStruct:
    if input_size is None:
        return jax.ShapeDtypeStruct((batch_size, length), jnp.int32)
    return jax.ShapeDtypeStruct((batch_size, length, input_size), jnp.float32)


def init_cache(model: nn.Module, batch_size: int, max_length: int, input_size: int | None) -> Any:
    """The zero ``"cache"`` collection for decoding up to ``max_length`` tokens of ``batch_size`` rows.

    Its shapes are those ``model.init(rng, inputs [batch_size, max_length, input_size], decode=True)`` creates,
    found with :func:`jax.eval_shape` (nothing is computed); every entry starts at zero.

    Args:
        model: a module that takes ``decode=True``.
        batch_size: ``B``.
        max_length: ``L``, the most tokens one decode reads (prompt included).
        input_size: ``V`` of one-hot ``[B, L, V]`` inputs, or None for ``[B, L]`` integer ids.

    Raises:
        ValueError: a model without a decode mode, or sizes below 1.
    """
    check_decodes(model)
    for name, value in (("batch_size", batch_size), ("max_length", max_length)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    dummy = _dummy(int(batch_size), int(max_length), input_size)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, decode=True), dummy)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes.get(CACHE, {}))  # {}: a stateless model


def prompt_bounds(prompt_lengths: Any, width: int) -> tuple[int, int]:
    """``(shortest, longest)`` prompt of a batch, read on the host: the prefill length and the last prompt
    position are shapes of the compiled decoding loop.

    Raises:
        ValueError: traced ``prompt_lengths`` (call greedy decoding outside ``jit``; it jits itself), or lengths
            outside ``1 .. width``.
    """
    if isinstance(prompt_lengths, jax.core.Tracer):
        raise ValueError("prompt_lengths is traced: greedy decoding reads the prompt lengths on the host (the prefill "
                         "length is a shape of its compiled loop) and jits itself; call it outside jax.jit")
    lengths = np.asarray(prompt_lengths)
    if lengths.ndim != 1 or lengths.size == 0 or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"prompt_lengths must be a non-empty [B] integer array, got shape {lengths.shape}, dtype "
                         f"{lengths.dtype}")
    if lengths.min() < 1 or lengths.max() > width:
        raise ValueError(f"prompt_lengths must be in 1..{width} (the inputs' length), got {lengths.min()}.."
                         f"{lengths.max()}")
    return int(lengths.min()), int(lengths.max())


def _greedy(model: nn.Module, params: Any, inputs: jax.Array, prompt_lengths: jax.Array, rng: jax.Array | None, *,
            prefill: int, last_prompt: int, num_steps: int, cached: bool,
            return_logits: bool) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Module docstring; ``prefill``/``last_prompt``: shortest and longest prompt. Returns ``[B, num_steps]`` ids
    (and their ``[B, num_steps, C]`` logits)."""
    B, width = inputs.shape[:2]
    ids = inputs.ndim == 2
    rngs = None if rng is None else {"positions": rng}
    length = last_prompt + num_steps - 1  # positions read: 0 .. length - 1; predicted: prefill .. length

    def read(p, predicted):
        """The token read at position ``p``: the prompt's while it lasts, else the prediction."""
        prompt = lax.dynamic_index_in_dim(inputs, jnp.minimum(p, width - 1), axis=1, keepdims=False)
        own = predicted if ids else jax.nn.one_hot(predicted, inputs.shape[-1], dtype=inputs.dtype)
        in_prompt = (p < prompt_lengths).reshape((B,) + (1,) * (own.ndim - 1))
        return jnp.where(in_prompt, prompt, own)

    def record(p, logits, tokens, kept):
        tokens = tokens.at[:, p].set(jnp.argmax(logits, -1).astype(jnp.int32))
        return tokens, (kept.at[:, p].set(logits) if return_logits else kept)

    def apply(variables, x, **kwargs):
        return model.apply(variables, x, rngs=rngs, **kwargs)

    tokens = jnp.zeros((B, length + 1), jnp.int32)  # tokens[:, p]: the prediction for position p
    if cached:
        cache = init_cache(model, B, length, None if ids else inputs.shape[-1])
        logits, state = apply({"params": params, CACHE: cache}, inputs[:, :prefill], decode=True, mutable=[CACHE])
        kept = jnp.zeros((B, length + 1, logits.shape[-1]), jnp.float32) if return_logits else None
        tokens, kept = record(prefill, logits[:, -1], tokens, kept)

        def step(p, carry):  # read position p, predict p + 1
            cache, tokens, kept = carry
            logits, state = apply({"params": params, CACHE: cache}, read(p, tokens[:, p])[:, None], decode=True,
                                  mutable=[CACHE])
            return (state.get(CACHE, {}), *record(p + 1, logits[:, 0], tokens, kept))

        _, tokens, kept = lax.fori_loop(prefill, length, step, (state.get(CACHE, {}), tokens, kept))
    else:
        buffer = jnp.zeros((B, length) + inputs.shape[2:], inputs.dtype).at[:, :prefill].set(inputs[:, :prefill])
        classes = jax.eval_shape(lambda: apply({"params": params}, buffer)).shape[-1]
        kept = jnp.zeros((B, length + 1, classes), jnp.float32) if return_logits else None

        def step(p, carry):  # predict position p from the whole buffer, then read it
            buffer, tokens, kept = carry
            logits = lax.dynamic_index_in_dim(apply({"params": params}, buffer), p - 1, axis=1, keepdims=False)
            tokens, kept = record(p, logits, tokens, kept)
            return buffer.at[:, p].set(read(p, tokens[:, p]), mode="drop"), tokens, kept

        _, tokens, kept = lax.fori_loop(prefill, length + 1, step, (buffer, tokens, kept))
    at = prompt_lengths[:, None] + jnp.arange(num_steps, dtype=jnp.int32)[None, :]  # [B, num_steps]
    generated = jnp.take_along_axis(tokens, at, axis=1)
    if not return_logits:
        return generated
    return generated, jnp.take_along_axis(kept, at[..., None], axis=1)


_STATIC = ("model", "prefill", "last_prompt", "num_steps", "cached", "return_logits")
# Module level: one compiled program per model, batch shape, prompt lengths and number of steps.
greedy_jit = jax.jit(_greedy, static_argnames=_STATIC)


def _plan(model: nn.Module, batch: Mapping[str, Any], num_steps: int | None, cached: bool) -> dict[str, Any]:
    """The static arguments of one batch's decoding (checked)."""
    inputs = batch["inputs"]
    if np.ndim(inputs) not in (2, 3):
        raise ValueError(f"batch['inputs'] must be [B, P, V] one-hot tokens or [B, P] ids, got shape "
                         f"{tuple(np.shape(inputs))}")
    width = np.shape(inputs)[1]
    prefill, last_prompt = prompt_bounds(batch["prompt_lengths"], width)
    if num_steps is None:
        num_steps = width - prefill + 1  # every target position after the shortest prompt
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    if cached:
        check_decodes(model)
    return dict(prefill=prefill, last_prompt=last_prompt, num_steps=int(num_steps), cached=bool(cached))


def greedy_decode(model: nn.Module, params: Any, batch: Mapping[str, Any], num_steps: int | None = None, *,
                  rng: jax.Array | None = None, cached: bool = True,
                  return_logits: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Greedy continuation of each row's prompt (module docstring), jitted once per shape.

    Args:
        model: a causal sequence model (``decode=True`` for ``cached``: TransformerLM, ``lstm``/``gru``/``rnn``).
        params: its parameters (those of a normal call).
        batch: ``inputs [B, P, V]`` (or ``[B, P]`` ids) and ``prompt_lengths [B]`` (host values).
        num_steps: tokens to write per row; default ``P - min(prompt_lengths) + 1``, so that generated token
            ``i`` of row ``b`` lines up with ``targets[b, prompt_lengths[b] - 1 + i]`` over the whole answer.
        rng: the ``'positions'`` key of a model with randomized positions at evaluation (the same key at every
            step: one random subset for the decoded sequence); None otherwise.
        cached: decode from the key/value cache (else recompute the whole sequence at every step).
        return_logits: also return the logits each token was chosen from.

    Returns:
        ``[B, num_steps]`` int32 token ids (and ``[B, num_steps, C]`` float32 logits).

    Raises:
        ValueError: malformed inputs or prompt lengths, traced prompt lengths, a model without a decode mode
            (``cached``), ``rng=None`` for a model that draws positions at evaluation.
    """
    plan = _plan(model, batch, num_steps, cached)
    try:
        return greedy_jit(model, params, jnp.asarray(batch["inputs"]), jnp.asarray(batch["prompt_lengths"], jnp.int32),
                          rng, return_logits=return_logits, **plan)
    except MissingPositionsRngError as error:
        if rng is not None:
            raise
        raise missing_positions_rng("greedy_decode") from error


def _row_all(correct: jax.Array, mask: jax.Array) -> jax.Array:
    """``[B]`` 1.0 where every scored position of the row is correct (rows without one count as 0)."""
    scored = mask > 0
    return (jnp.all(correct | ~scored, axis=1) & jnp.any(scored, axis=1)).astype(jnp.float32)


def _eval_rows(model: nn.Module, params: Any, batch: Batch, rng: jax.Array | None, **plan: Any) -> Metrics:
    """:data:`SUM_KEYS` per row (``[B]`` each): one teacher-forced pass and one greedy decode of the batch."""
    inputs, targets, scored = batch["inputs"], batch["targets"], batch["accuracy_mask"]
    rngs = None if rng is None else {"positions": rng}
    logits = model.apply({"params": params}, inputs, seq_lengths=batch["seq_lengths"], rngs=rngs)
    rows = jax.vmap(masked_loss_and_correct)(logits[:, None], targets[:, None], batch["loss_mask"][:, None],
                                             scored[:, None])  # the one loss/accuracy rule, row by row
    prompts = batch["prompt_lengths"].astype(jnp.int32)
    generated = _greedy(model, params, inputs, prompts, rng, return_logits=False, **plan)  # [B, m]
    # Free-running predictions in the targets' layout: position t predicts token t + 1.
    offset = jnp.arange(targets.shape[1], dtype=jnp.int32)[None, :] - (prompts[:, None] - 1)
    free = jnp.take_along_axis(generated, jnp.clip(offset, 0, generated.shape[1] - 1), axis=1)
    free = jnp.where((offset >= 0) & (offset < generated.shape[1]), free, -1)
    free_hit = free == targets
    return {**dict(zip(("loss_sum", "loss_count", "correct", "count"), rows)),
            "greedy_correct": jnp.sum(free_hit * scored, axis=1),
            "sequences": jnp.any(scored > 0, axis=1).astype(jnp.float32),
            "sequences_correct": _row_all(jnp.argmax(logits, -1) == targets, scored),
            "greedy_sequences_correct": _row_all(free_hit, scored)}


def _eval(model: nn.Module, params: Any, batch: Batch, rng: jax.Array | None, **plan: Any) -> Metrics:
    return {k: jnp.sum(v) for k, v in _eval_rows(model, params, batch, rng, **plan).items()}


eval_jit = jax.jit(_eval, static_argnames=_STATIC[:-1])
eval_rows_jit = jax.jit(_eval_rows, static_argnames=_STATIC[:-1])


def _run_eval(step: Any, caller: str, model: nn.Module, params: Any, batch: Mapping[str, Any],
              rng: jax.Array | None, cached: bool) -> Metrics:
    """``step`` (:data:`eval_jit` or :data:`eval_rows_jit`) on one batch, checked; ``caller`` names the public
    function in the error of a missing positions key."""
    plan = _plan(model, batch, None, cached)
    arrays = {k: jnp.asarray(batch[k]) for k in ("inputs", "targets", "loss_mask", "accuracy_mask", "seq_lengths",
                                                 "prompt_lengths")}
    try:
        return step(model, params, arrays, rng, **plan)
    except MissingPositionsRngError as error:
        if rng is not None:
            raise
        raise missing_positions_rng(caller) from error


def decoder_eval_step(model: nn.Module, params: Any, batch: Mapping[str, Any], rng: jax.Array | None = None, *,
                      cached: bool = True) -> Metrics:
    """Teacher-forced and free-running scores of one autoregressive batch, as sums (one jitted program per shape).

    Args:
        model, params: the decoder-only model and its parameters.
        batch: :func:`attnjax.data.autoregressive.make_batch`'s layout (``prompt_lengths`` on the host).
        rng: key for randomized positions at evaluation (teacher-forced pass and decoding share it); None otherwise.
        cached: decode with the cache (False: recompute, for models without a decode mode).

    Returns:
        float32 scalars of :data:`attnjax.train.seq2seq_steps.SUM_KEYS`: ``loss_sum``/``loss_count``
        (teacher-forced cross-entropy over ``loss_mask``: answer and END), ``correct``/``count`` (teacher-forced
        argmax right under ``accuracy_mask`` / scored tokens), ``greedy_correct`` (free-running tokens right under
        ``accuracy_mask``), ``sequences`` (rows with a scored token), ``sequences_correct`` and
        ``greedy_sequences_correct`` (rows whose every scored token is right: exact match, teacher-forced and
        free-running). :func:`attnjax.train.seq2seq_steps.reduce_seq2seq_metrics` turns sums into scores.
    """
    return _run_eval(eval_jit, "decoder_eval_step", model, params, batch, rng, cached)


def decoder_eval_rows(model: nn.Module, params: Any, batch: Mapping[str, Any], rng: jax.Array | None = None, *,
                      cached: bool = True) -> Metrics:
    """:func:`decoder_eval_step`'s sums per row, ``[B]`` each (their sums over rows are its scalars): a batch
    holding several input lengths is scored once and its rows grouped by length afterwards, so test lengths can
    share a few compiled programs."""
    return _run_eval(eval_rows_jit, "decoder_eval_rows", model, params, batch, rng, cached)


def evaluate_decoder(model: nn.Module, params: Any, batches: Iterable[Mapping[str, Any]], *,
                     rng: jax.Array | None = None, cached: bool = True) -> dict[str, float]:
    """:func:`decoder_eval_step` over ``batches`` (batch ``i`` gets ``fold_in(rng, i)``), reduced to
    ``loss``, ``token_accuracy``, ``sequence_accuracy`` (teacher-forced), ``greedy_token_accuracy``,
    ``greedy_sequence_accuracy`` (free-running), ``count`` and ``sequences``."""
    sums = [decoder_eval_step(model, params, b, None if rng is None else jax.random.fold_in(rng, i), cached=cached)
            for i, b in enumerate(batches)]
    return reduce_seq2seq_metrics(jax.device_get(sums))


__all__ = ["SUM_KEYS", "check_decodes", "decoder_eval_rows", "decoder_eval_step", "evaluate_decoder", "greedy_decode",
           "greedy_jit", "init_cache", "prompt_bounds"]
