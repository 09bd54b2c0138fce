"""RNN encoder-decoder with and without attention: Cho et al. / Bahdanau et al.'s RNNencdec and RNNsearch.

The model follows :class:`attnjax.nn.contract.Seq2SeqModel`. The one switch ``attention`` changes only
how the decoder gets its view of the source, everything else (encoder, decoder cell, initial state,
read-out) staying equal, which is the comparison of Bahdanau et al. (2014):

* ``"none"`` (RNNencdec): a fixed-size context vector, the encoder summary at the real end of the
  source (bidirectional: forward state at ``source_lengths - 1`` joined with the backward state at
  position 0), is fed at every decoder step.
* ``"additive"`` (RNNsearch, Bahdanau): at step ``t`` the *previous* decoder state ``s_{t-1}`` queries
  the encoder annotations; the context ``c_t`` enters the cell with the previous token and the read-out.
* ``"multiplicative"`` (Luong et al. 2015, "general" score with input feeding): the *current* decoder
  state ``h_t`` queries the annotations after the cell step; ``c_t`` enters the read-out, and the
  read-out vector is fed into the next step's cell.

The attention formulas are not re-implemented here: the context is
``attnjax.ops.registry.get_spec(name).fn`` with one head, the (projected) decoder state as query,
projected annotations as keys, the annotations themselves as values and
``key_value_seq_lengths=source_lengths``, so padded source positions are never attended to.

Every decoder step, the initial state and the read-out are shared by the three kinds::

    s_0      = tanh(W_init summary)                        (per layer; an LSTM's cell state starts at 0)
    s_t      = cell(s_{t-1}, [embed(y_{t-1}); extra_t])    extra_t = c (none), c_t (additive), r_{t-1} (mult.)
    r_t      = tanh(W_r [top(s_t); c_t])                   (dropout on r_t when training)
    logits_t = W_o r_t
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from attnjax.nn.baselines import valid_positions
from attnjax.nn.contract import begin_token
from attnjax.nn.execution import Execution
from attnjax.nn.recurrent import CELLS, cell_output, check_cell, check_int
from attnjax.ops.registry import get_spec

Array = jnp.ndarray

SEQ2SEQ_ATTENTION = ("none", "additive", "multiplicative")


@dataclasses.dataclass(frozen=True)
class RNNSeq2SeqConfig:
    """Attributes:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"`` (Bahdanau et al. use gated units, the GRU), for the
            encoder and the decoder.
        hidden_size: state size of every encoder direction and every decoder layer.
        embed_dim: size of the source projection (a learned embedding for one-hot sources) and of the
            decoder's token embedding.
        attention: ``"none"``, ``"additive"`` or ``"multiplicative"`` (see the module docstring).
        bidirectional_encoder: a backward encoder too; annotations are ``[forward; backward]``.
        num_layers: stacked layers in the encoder (each direction) and in the decoder.
        attention_dim: common head dim ``H`` that the decoder state (query) and the annotations (keys)
            are projected to.
        dropout_rate: dropout on the read-out vector ``r_t`` when ``train``.
    """

    cell: str = "gru"
    hidden_size: int = 64
    embed_dim: int = 32
    attention: str = "none"
    bidirectional_encoder: bool = True
    num_layers: int = 1
    attention_dim: int = 64
    dropout_rate: float = 0.0

    def __post_init__(self):
        check_cell(self.cell)
        for name in ("hidden_size", "embed_dim", "num_layers", "attention_dim"):
            check_int(name, getattr(self, name))
        if self.attention not in SEQ2SEQ_ATTENTION:
            raise ValueError(f"attention must be one of {SEQ2SEQ_ATTENTION}, got {self.attention!r}")
        if not isinstance(self.bidirectional_encoder, bool):
            raise ValueError(f"bidirectional_encoder must be a bool, got {self.bidirectional_encoder!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate!r}")


class _DecoderCell(nn.Module):
    """One decoder step; scanned over target positions by :class:`RNNSeq2Seq`.

    Attributes:
        config: :class:`RNNSeq2SeqConfig`.
        output_size: ``C``; the embedding has ``C + 1`` rows, the last being the begin token.
        sow_weights: return each step's attention weights (else None).
    """

    config: RNNSeq2SeqConfig
    output_size: int
    sow_weights: bool = False

    @nn.compact
    def __call__(self, carry: tuple[tuple[Any, ...], Array], token: Array, memory: dict[str, Array],
                 train: bool) -> tuple[tuple[tuple[Any, ...], Array], tuple[Array, Array | None]]:
        """Reads token ``y_{t-1}``, returns the logits of step ``t`` and the carry for step ``t + 1``.

        Args:
            carry: (per-layer cell carries, previous read-out ``r_{t-1} [B, hidden]``).
            token: ``[B]`` int decoder input ``y_{t-1}`` in ``0..C``.
            memory: ``values [B, S, 1, A]`` annotations (zero on padding), ``keys [B, S, 1, H]``,
                ``lengths [B]``, ``context [B, A]`` (the fixed summary).
            train: dropout on.

        Returns:
            ``(new carry, (logits [B, C] float32, weights [B, S] float32 or None))``.
        """
        cfg = self.config
        states, feed = carry
        emb = nn.Embed(self.output_size + 1, cfg.embed_dim, name="embed")(token)

        def attend(state: Array) -> tuple[Array, Array | None]:
            spec = get_spec(cfg.attention)
            params = self.param("attention_params", lambda rng: spec.init_params(
                rng, head_dim=cfg.attention_dim, num_heads=1))
            query = nn.Dense(cfg.attention_dim, name="query")(state)[:, None, None, :]  # [B, T=1, N=1, H]
            kwargs = dict(key_value_seq_lengths=memory["lengths"], **params)
            context = spec.fn(query, memory["keys"], memory["values"], **kwargs)[:, 0, 0]  # [B, A]
            weights = None
            if self.sow_weights:
                weights = spec.weights_fn(query, memory["keys"], **kwargs)[:, 0, 0]  # [B, N=1, T=1, S] -> [B, S]
            return context, weights

        weights = None
        if cfg.attention == "none":
            context = memory["context"]
            x = jnp.concatenate([emb, context], axis=-1)
        elif cfg.attention == "additive":
            # Bahdanau: the query is the previous state s_{t-1}, before this step's cell update.
            context, weights = attend(cell_output(cfg.cell, states[-1]))
            x = jnp.concatenate([emb, context], axis=-1)
        else:
            # Luong input feeding: the previous read-out carries the previous context into this step.
            x = jnp.concatenate([emb, feed], axis=-1)
        new_states = []
        for i, state in enumerate(states):
            state, x = CELLS[cfg.cell](features=cfg.hidden_size, name=f"{cfg.cell}_{i}")(state, x)
            new_states.append(state)
        if cfg.attention == "multiplicative":
            # Luong: the query is the current state h_t, after this step's cell update.
            context, weights = attend(x)
        readout = jnp.tanh(nn.Dense(cfg.hidden_size, name="readout")(jnp.concatenate([x, context], axis=-1)))
        readout = nn.Dropout(cfg.dropout_rate, deterministic=not train)(readout)
        logits = nn.Dense(self.output_size, name="logits")(readout).astype(jnp.float32)
        return (tuple(new_states), readout), (logits, weights)


def _check_source(source: Array) -> None:
    """Raises ValueError/TypeError unless ``source`` is a rank-3 floating array ``[B, S, V]``."""
    if source.ndim != 3:
        raise ValueError(f"source must have rank 3 [B, S, V], got shape {source.shape}")
    if not jnp.issubdtype(source.dtype, jnp.floating):
        raise TypeError(f"source must be floating (one-hot or soft tokens), got dtype {source.dtype}")


def _scan(body, *, in_axes, length: int | None = None):
    """``nn.scan`` over decoder steps: parameters shared by every step, a fresh dropout mask per step."""
    return nn.scan(body, variable_broadcast="params", split_rngs={"params": False, "dropout": True},
                   in_axes=in_axes, out_axes=0, length=length)


class RNNSeq2Seq(nn.Module):
    """RNN encoder-decoder, with (RNNsearch) or without (RNNencdec) attention; see the module docstring.

    The encoder reads ``source`` through ``nn.RNN`` with ``seq_lengths=source_lengths``: the forward
    direction's summary is its state at the last real position, the backward direction starts at the
    real end (``reverse=True, keep_order=True``), and annotations at padded positions are set to zero;
    so no output depends on padded source content. Decoding is a scan over target positions, so
    logits at ``t`` depend on ``target_inputs[:, :t+1]`` only; ``generate`` runs the same step on its
    own greedy predictions.

    Attributes:
        config: :class:`RNNSeq2SeqConfig`.
        output_size: ``C`` output classes; decoder input ids are ``0..C-1`` and the begin token ``C``.
        execution: :class:`~attnjax.nn.execution.Execution`; only ``sow_attention_weights`` applies: the
            ``[B, T, S]`` attention weights of every decoder step go to the ``"intermediates"`` collection as
            ``attention_weights`` (needs an attention kind).
    """

    config: RNNSeq2SeqConfig
    output_size: int
    execution: Execution = Execution()

    def setup(self):
        cfg, run = self.config, self.execution
        if run != Execution(sow_attention_weights=run.sow_attention_weights):
            raise ValueError(f"RNNSeq2Seq runs in float32 on one device: its execution may set only "
                             f"sow_attention_weights, got {run}")
        if run.sow_attention_weights and cfg.attention == "none":
            raise ValueError("sow_attention_weights=True needs attention 'additive' or 'multiplicative', "
                             "got attention='none' (it has no attention weights)")
        cell = CELLS[cfg.cell]
        self.source_embed = nn.Dense(cfg.embed_dim)
        self.forward_layers = [nn.RNN(cell(features=cfg.hidden_size)) for _ in range(cfg.num_layers)]
        if cfg.bidirectional_encoder:
            self.backward_layers = [nn.RNN(cell(features=cfg.hidden_size), reverse=True, keep_order=True)
                                    for _ in range(cfg.num_layers)]
        if cfg.attention != "none":
            self.key_projection = nn.Dense(cfg.attention_dim)
        self.initial_state = [nn.Dense(cfg.hidden_size) for _ in range(cfg.num_layers)]
        self.decoder = _DecoderCell(cfg, self.output_size, run.sow_attention_weights)

    def _encode(self, source: Array, source_lengths: Array | None):
        """Encoder pass and the decoder's initial carry.

        Returns:
            ``(memory, carry)``: see :meth:`_DecoderCell.__call__`.
        """
        cfg = self.config
        _check_source(source)
        B, S = source.shape[:2]
        valid = valid_positions(source_lengths, B, S, name="source_lengths")
        lengths = jnp.full((B,), S, jnp.int32) if source_lengths is None else jnp.asarray(source_lengths)
        x = self.source_embed(source)
        for i in range(cfg.num_layers):
            # seq_lengths makes the returned carry the state at the last real position (forward) and
            # makes the backward direction start at the real end, not in the padding.
            fwd_carry, fwd = self.forward_layers[i](x, seq_lengths=lengths, return_carry=True)
            summary = [cell_output(cfg.cell, fwd_carry)]
            outputs = [fwd]
            if cfg.bidirectional_encoder:
                bwd_carry, bwd = self.backward_layers[i](x, seq_lengths=lengths, return_carry=True)
                summary.append(cell_output(cfg.cell, bwd_carry))  # backward state at position 0
                outputs.append(bwd)
            x = jnp.concatenate(outputs, axis=-1)
        # Outputs at padded positions were computed from padding; zeroing them makes that explicit
        # even for the fixed-context model, whose decoder never attends.
        annotations = jnp.where(valid[..., None], x, 0.0)  # [B, S, A]
        summary = jnp.concatenate(summary, axis=-1)  # [B, A]
        memory = {"values": annotations[:, :, None, :], "lengths": lengths, "context": summary,
                  "keys": None if cfg.attention == "none" else self.key_projection(annotations)[:, :, None, :]}
        states = []
        for layer in self.initial_state:
            h = jnp.tanh(layer(summary))
            states.append((jnp.zeros_like(h), h) if cfg.cell == "lstm" else h)
        return memory, (tuple(states), jnp.zeros((B, cfg.hidden_size), h.dtype))

    def _sow(self, weights: Array | None) -> None:
        if weights is not None:
            self.sow("intermediates", "attention_weights", jnp.swapaxes(weights, 0, 1))  # [B, T, S]

    def __call__(self, source: Array, target_inputs: Array, source_lengths: Array | None = None,
                 train: bool = False) -> Array:
        """Teacher-forced logits.

        Args:
            source: ``[B, S, V]`` float.
            target_inputs: ``[B, T]`` int in ``0..C`` (``C`` = :func:`~attnjax.nn.contract.begin_token`):
                the begin token, then the targets shifted right.
            source_lengths: ``[B]`` real source lengths ``>= 1``, or None (all real).
            train: dropout on (rng stream ``'dropout'``).

        Returns:
            ``[B, T, C]`` float32; position ``t`` depends on ``target_inputs[:, :t+1]`` only.

        Raises:
            ValueError: wrong ranks, batch sizes that differ, malformed ``source_lengths``.
            TypeError: non-floating ``source`` or non-integer ``target_inputs``.
        """
        if target_inputs.ndim != 2:
            raise ValueError(f"target_inputs must have rank 2 [B, T], got shape {target_inputs.shape}")
        if not jnp.issubdtype(target_inputs.dtype, jnp.integer):
            raise TypeError(f"target_inputs must be integer token ids, got dtype {target_inputs.dtype}")
        _check_source(source)
        if target_inputs.shape[0] != source.shape[0]:
            raise ValueError(f"source and target_inputs must share the batch size: source {source.shape}, "
                             f"target_inputs {target_inputs.shape}")
        memory, carry = self._encode(source, source_lengths)

        def step(cell, carry, token, memory):
            return cell(carry, token, memory, train)

        _, (logits, weights) = _scan(step, in_axes=(0, nn.broadcast))(
            self.decoder, carry, jnp.swapaxes(target_inputs, 0, 1), memory)
        self._sow(weights)
        return jnp.swapaxes(logits, 0, 1)

    def generate(self, source: Array, source_lengths: Array | None = None, *, max_length: int) -> Array:
        """Greedy decoding from the begin token, ``max_length`` steps, under one scan.

        Args:
            source: ``[B, S, V]`` float.
            source_lengths: ``[B]`` real source lengths ``>= 1``, or None.
            max_length: number of tokens to produce (a Python int: static under jit).

        Returns:
            ``[B, max_length]`` int32 tokens in ``0..C-1``; token ``t`` is the argmax of the logits that
            :meth:`__call__` gives at ``t`` for the target inputs ``[begin, tokens[:t]]``.

        Raises:
            ValueError: ``max_length`` not an int >= 1, and as :meth:`__call__`.
        """
        check_int("max_length", max_length)
        memory, carry = self._encode(source, source_lengths)
        start = jnp.full((source.shape[0],), begin_token(self.output_size), jnp.int32)

        def step(cell, carry, memory):
            state, token = carry
            state, (logits, weights) = cell(state, token, memory, False)
            token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            return (state, token), (token, weights)

        _, (tokens, weights) = _scan(step, in_axes=nn.broadcast, length=max_length)(
            self.decoder, (carry, start), memory)
        self._sow(weights)
        return jnp.swapaxes(tokens, 0, 1)


def shift_right(targets: Array, output_size: int) -> Array:
    """Teacher-forcing decoder inputs: ``[begin, targets[:, :-1]]``, ``[B, T]`` int32.

    Args:
        targets: ``[B, T]`` int in ``0..C-1``.
        output_size: ``C`` (the begin token's id).
    """
    start = jnp.full((targets.shape[0], 1), begin_token(output_size), jnp.int32)
    return jnp.concatenate([start, targets[:, :-1].astype(jnp.int32)], axis=1)

