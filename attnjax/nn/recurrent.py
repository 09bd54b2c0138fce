"""Recurrent baselines (Elman RNN, LSTM, GRU): per-position sequence models and pooled classifiers.

With ``pooling=None`` the model follows :class:`attnjax.nn.contract.SequenceModel` (``[B, L, V]``, or
``[B, L]`` integer ids with ``vocab_size``, -> ``[B, L, C]``), as the RNN/LSTM baselines of Delétang et
al. (2022); otherwise it follows :class:`attnjax.nn.contract.Classifier` (``[B, L]`` or ``[B, L, F]`` ->
``[B, C]``), as MNIST-1D's GRU.
"""

from __future__ import annotations

import dataclasses
import flax.linen as nn
import jax.numpy as jnp

from attnjax.nn.baselines import as_features, valid_positions
from attnjax.nn.kv_cache import CACHE, has_cache
from attnjax.nn.tokens import embed_tokens, token_input_size

Array = jnp.ndarray

# cell name -> linen cell class, built as ``CELLS[name](features=hidden_size)``. Each cell's output
# equals its hidden state h.
CELLS: dict[str, type[nn.RNNCellBase]] = {
    "rnn": nn.SimpleCell,  # Elman: h' = tanh(W_i x + W_h h + b)
    "lstm": nn.OptimizedLSTMCell,
    "gru": nn.GRUCell,
}

RECURRENT_POOLING = (None, "last", "mean", "flatten")


def check_cell(cell: str) -> None:
    """Raises ValueError unless ``cell`` is a key of :data:`CELLS` (the message lists them)."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")


def cell_output(cell: str, carry) -> Array:
    """The hidden state ``h [..., hidden]`` inside a cell's carry (an LSTM carries ``(c, h)``)."""
    return carry[1] if cell == "lstm" else carry


def check_int(name: str, value, minimum: int = 1) -> None:
    """Raises ValueError naming ``name`` unless ``value`` is an int ``>= minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class RecurrentConfig:
    """Attributes:
        cell: ``"rnn"`` (Elman, ``nn.SimpleCell`` with tanh), ``"lstm"`` (``nn.OptimizedLSTMCell``)
            or ``"gru"`` (``nn.GRUCell``).
        hidden_size: state size of every layer (Delétang et al.: 256).
        num_layers: stacked layers.
        bidirectional: each layer also reads the sequence right to left (a second RNN of its own, over
            the real positions only) and outputs both directions concatenated, ``[B, L, 2 * hidden]``,
            as PyTorch's ``GRU(bidirectional=True)``. A bidirectional sequence model sees later
            positions: it is not causal.
        readout_relu: a ReLU on the last layer's output before the linear read-out. Delétang et al.'s
            reference code (``models/rnn.py``: ``output = jnn.relu(output)``, then ``hk.Linear``)
            always has it; set True to reproduce their RNN/LSTM.
        pooling: None: one logit vector per position (sequence model); ``"last"``: classify from the
            last layer's state at position ``seq_lengths - 1`` (bidirectional: with the backward state
            at position 0, both having read every real position); ``"mean"``: from the mean of its
            outputs over the real positions; ``"flatten"``: from every position's output, padding
            zeroed, flattened to ``[B, L * hidden * directions]`` (``L`` fixed at init).
        vocab_size: None (default): the input vectors go to the first layer as they are. ``V``: tokens
            are first embedded by a learned ``[V, hidden_size]`` table (``pooling=None`` only), read as
            integer ids ``[B, L]`` (a row lookup) or as float ``[B, L, V]`` vectors (their product with
            the same table): the two give equal outputs and gradients.
    """

    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    readout_relu: bool = False
    pooling: str | None = None
    vocab_size: int | None = None

    def __post_init__(self):
        check_cell(self.cell)
        check_int("hidden_size", self.hidden_size)
        check_int("num_layers", self.num_layers)
        for name in ("bidirectional", "readout_relu"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.pooling not in RECURRENT_POOLING:
            raise ValueError(f"pooling must be one of {RECURRENT_POOLING}, got {self.pooling!r}")
        if self.vocab_size is not None:
            check_int("vocab_size", self.vocab_size)
            if self.pooling is not None:
                raise ValueError(f"vocab_size (a token embedding) is for the sequence model: pooling must be None, "
                                 f"got pooling={self.pooling!r} (a classifier reads [B, L] as one feature per "
                                 "position)")


class Recurrent(nn.Module):
    """Stack of ``nn.RNN`` layers (left to right, or both ways), then an optional ReLU and a linear read-out.

    It reads the raw input vectors (one-hot tokens, as in Delétang et al., or MNIST-1D scalars), or,
    with ``config.vocab_size``, tokens embedded by a learned table (ids or one-hot, see the config).
    Left to right, a real position never sees a later one, so trailing padding cannot change real
    outputs; the right-to-left direction gets ``seq_lengths`` and reverses only the real positions, so
    it starts at the last real one. Pooled classifiers read only real positions (``"last"`` uses
    ``nn.RNN``'s ``seq_lengths``, which returns the carry of the last real step).

    Attributes:
        config: :class:`RecurrentConfig`.
        output_size: ``C``.
    """

    config: RecurrentConfig
    output_size: int

    @nn.compact
    def __call__(self, inputs: Array, seq_lengths: Array | None = None, train: bool = False,
                 decode: bool = False) -> Array:
        """Per-position logits, or one logit vector per example when pooled.

        Args:
            inputs: ``[B, L, V]`` (``pooling=None``; or ``[B, L]`` integer ids with ``config.vocab_size``),
                or ``[B, L]`` / ``[B, L, F]`` (pooled).
            seq_lengths: ``[B]`` real lengths ``>= 1``, or None (all real). Unused by a left-to-right
                sequence model, whose real outputs cannot depend on later positions.
            train: unused (no dropout).
            decode: the sequence model reads ``inputs`` as the next tokens after those it has read, carrying
                each layer's state between calls in the ``"cache"`` collection (``carry_<i>``, zeros at the
                start, as a normal call starts; :mod:`attnjax.nn.kv_cache`). Needs ``mutable=["cache"]``, a
                left-to-right model with ``pooling=None`` and no ``seq_lengths``.

        Returns:
            ``[B, L, C]`` float32 (``pooling=None``) or ``[B, C]`` float32.

        Raises:
            ValueError: inputs of the wrong rank, malformed ``seq_lengths``; ``decode`` without a cache or for a
                bidirectional or pooled model, or with ``seq_lengths``.
        """
        del train
        cfg = self.config
        if decode and (cfg.bidirectional or cfg.pooling is not None or seq_lengths is not None):
            raise ValueError(f"decode=True carries a left-to-right sequence model's state over the next tokens: it "
                             f"needs bidirectional=False, pooling=None and seq_lengths=None, got "
                             f"bidirectional={cfg.bidirectional}, pooling={cfg.pooling!r}, seq_lengths "
                             f"{'given' if seq_lengths is not None else 'None'}")
        if cfg.vocab_size is not None:
            token_input_size(inputs, cfg.vocab_size)
            # Unit-variance rows: the first cell's lecun-normal input kernel then sees unit-scale inputs.
            table = self.param("embed", nn.initializers.normal(1.0), (cfg.vocab_size, cfg.hidden_size))
            x = embed_tokens(inputs, table)
        elif cfg.pooling is None:
            if inputs.ndim != 3:
                ids = jnp.issubdtype(inputs.dtype, jnp.integer)
                hint = " (integer token ids need config vocab_size)" if ids else ""
                raise ValueError(f"inputs must have rank 3 [B, L, V] with pooling=None, got shape {inputs.shape}{hint}")
            x = inputs
        else:
            x = as_features(inputs)
        B, L = x.shape[:2]
        valid = valid_positions(seq_lengths, B, L)  # also validates seq_lengths
        lengths = None if seq_lengths is None else jnp.asarray(seq_lengths)
        carry = None
        for i in range(cfg.num_layers):
            rnn = nn.RNN(CELLS[cfg.cell](features=cfg.hidden_size, parent=None), name=f"{cfg.cell}_{i}")
            if decode:
                out = self._decode_layer(rnn, i, x)
            elif cfg.pooling == "last" and i == cfg.num_layers - 1:
                carry, out = rnn(x, seq_lengths=lengths, return_carry=True)
                carry = [cell_output(cfg.cell, carry)]
            else:
                out = rnn(x)
            if cfg.bidirectional:
                back = nn.RNN(CELLS[cfg.cell](features=cfg.hidden_size, parent=None), reverse=True, keep_order=True,
                              name=f"{cfg.cell}_{i}_backward")
                back_carry, back_out = back(x, seq_lengths=lengths, return_carry=True)
                out = jnp.concatenate([out, back_out], axis=-1)
                if carry is not None:  # "last": the backward state at position 0 joins the forward one
                    carry.append(cell_output(cfg.cell, back_carry))
            x = out
        if cfg.pooling == "last":
            x = jnp.concatenate(carry, axis=-1)
        elif cfg.pooling == "flatten":
            x = jnp.where(valid[..., None], x, 0.0).reshape(B, -1)
        elif cfg.pooling == "mean":
            counts = jnp.sum(valid, axis=1, keepdims=True).astype(x.dtype)
            x = jnp.sum(jnp.where(valid[..., None], x, 0.0), axis=1) / jnp.maximum(counts, 1.0)
        if cfg.readout_relu:
            x = nn.relu(x)
        return nn.Dense(self.output_size, name="logits")(x).astype(jnp.float32)

    def _decode_layer(self, rnn: nn.RNN, i: int, x: Array) -> Array:
        """Layer ``i`` over the next tokens ``x [B, T, F]``, from and to its state in the cache."""
        name, hidden = f"carry_{i}", self.config.hidden_size
        exists = has_cache(self, name)
        zeros = lambda: jnp.zeros((x.shape[0], hidden), jnp.float32)  # noqa: E731 - nn.RNN's initial state
        state = self.variable(CACHE, name, lambda: (zeros(), zeros()) if self.config.cell == "lstm" else zeros())
        if not exists:  # init: the state was just created
            return rnn(x)
        if cell_output(self.config.cell, state.value).shape != (x.shape[0], hidden):
            raise ValueError(f"the cache holds a [B, hidden] state of shape "
                             f"{cell_output(self.config.cell, state.value).shape}, the next tokens have batch "
                             f"{x.shape[0]}: build the cache for this batch size")
        state.value, out = rnn(x, initial_carry=state.value, return_carry=True)
        return out
