"""Non-attention control models: logistic regression, MLP and 1-D CNN (MNIST-1D's reference baselines).

Every model follows :class:`attnjax.nn.contract.Classifier` (``[B, L]`` or ``[B, L, F]`` -> ``[B, C]``
float32 logits); the CNN with ``pooling=None`` follows :class:`attnjax.nn.contract.SequenceModel`
instead (``[B, L, V]`` -> ``[B, L, C]``). Each module is built as ``Module(config=Config(...),
output_size=C)``.

Padding: whenever ``seq_lengths`` is given, positions ``>= seq_lengths`` are set to zero before they
reach a weight, so their content never changes the logits. For the flattening models (logistic, MLP,
CNN ``"flatten"``) the input length ``L`` is fixed at ``init`` and the lengths are only this mask.

The two helpers :func:`as_features` and :func:`valid_positions` are shared with
:mod:`attnjax.nn.recurrent` and :mod:`attnjax.nn.rnn_seq2seq`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from attnjax.ops import checks

Array = jnp.ndarray

CNN_POOLING = ("flatten", "mean", "max", None)


# --------------------------------------------------------------------------- shared input handling

def as_features(inputs: Array, name: str = "inputs") -> Array:
    """``[B, L]`` (one scalar per position, e.g. MNIST-1D) or ``[B, L, F]`` -> ``[B, L, F]``.

    Raises:
        ValueError: any other rank (the message names ``name`` and the shape).
    """
    if inputs.ndim == 2:
        return inputs[..., None]
    if inputs.ndim == 3:
        return inputs
    raise ValueError(f"{name} must have rank 2 [B, L] or rank 3 [B, L, F], got shape {inputs.shape}")


def valid_positions(seq_lengths: Array | None, batch: int, length: int, name: str = "seq_lengths") -> Array:
    """``[B, L]`` boolean, True at real positions ``< seq_lengths`` (all True when it is None).

    Raises:
        ValueError: ``seq_lengths`` is not ``[B]``.
        TypeError: ``seq_lengths`` is not integer.
    """
    if seq_lengths is None:
        return jnp.ones((batch, length), bool)
    checks.check_seq_lengths(name, seq_lengths, batch)
    return jnp.arange(length)[None, :] < jnp.asarray(seq_lengths)[:, None]


def _zero_padding(x: Array, seq_lengths: Array | None) -> Array:
    """``x [B, L, F]`` with positions ``>= seq_lengths`` set to 0 (``x`` itself when lengths are None)."""
    if seq_lengths is None:
        return x
    return jnp.where(valid_positions(seq_lengths, x.shape[0], x.shape[1])[..., None], x, 0.0)


def _check_positive_ints(name: str, values, allow_empty: bool = False) -> None:
    if not isinstance(values, tuple) or (not values and not allow_empty) or any(
            not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(f"{name} must be a {'' if allow_empty else 'non-empty '}tuple of ints >= 1, got {values!r}")


def _check_rate(name: str, rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {rate!r}")


# --------------------------------------------------------------------------- logistic regression

@dataclasses.dataclass(frozen=True)
class LogisticConfig:
    """Logistic regression has no hyper-parameters; the config exists so every model is built alike."""


class Logistic(nn.Module):
    """Multinomial logistic regression: flatten ``[B, L, F]`` -> ``Dense(C)`` (MNIST-1D ``LinearBase``).

    Attributes:
        config: :class:`LogisticConfig`.
        output_size: ``C``.
    """

    config: LogisticConfig
    output_size: int

    @nn.compact
    def __call__(self, inputs: Array, seq_lengths: Array | None = None, train: bool = False) -> Array:
        """Args: ``inputs [B, L]`` or ``[B, L, F]`` (``L`` fixed at init), ``seq_lengths [B]`` or None
        (padding is zeroed), ``train`` unused. Returns ``[B, C]`` float32.

        Raises:
            ValueError: inputs of another rank, malformed ``seq_lengths``.
        """
        del train
        x = _zero_padding(as_features(inputs), seq_lengths)
        return nn.Dense(self.output_size, name="logits")(x.reshape(x.shape[0], -1)).astype(jnp.float32)


# --------------------------------------------------------------------------- MLP

@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """Attributes:
        hidden_sizes: width of each ReLU hidden layer (MNIST-1D ``MLPBase``: two of 100).
        dropout_rate: dropout after each hidden layer when ``train``.
        residual: a hidden layer whose input has its own width adds its input back,
            ``h <- h + relu(W h + b)``, as ``MLPBase``'s second layer does; layers that change the
            width are plain ``relu(W h + b)``.
    """

    hidden_sizes: tuple[int, ...] = (100, 100)
    dropout_rate: float = 0.0
    residual: bool = True

    def __post_init__(self):
        _check_positive_ints("hidden_sizes", self.hidden_sizes, allow_empty=True)
        _check_rate("dropout_rate", self.dropout_rate)


class MLP(nn.Module):
    """Flatten, ReLU hidden layers, linear read-out (MNIST-1D ``MLPBase``).

    Attributes:
        config: :class:`MLPConfig`.
        output_size: ``C``.
    """

    config: MLPConfig
    output_size: int

    @nn.compact
    def __call__(self, inputs: Array, seq_lengths: Array | None = None, train: bool = False) -> Array:
        """Args: ``inputs [B, L]`` or ``[B, L, F]`` (``L`` fixed at init), ``seq_lengths [B]`` or None
        (padding is zeroed), ``train`` enables dropout (rng ``'dropout'``). Returns ``[B, C]`` float32.

        Raises:
            ValueError: inputs of another rank, malformed ``seq_lengths``.
        """
        x = _zero_padding(as_features(inputs), seq_lengths)
        h = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.config.hidden_sizes):
            out = nn.relu(nn.Dense(width, name=f"hidden_{i}")(h))
            h = h + out if self.config.residual and h.shape[-1] == width else out
            h = nn.Dropout(self.config.dropout_rate, deterministic=not train)(h)
        return nn.Dense(self.output_size, name="logits")(h).astype(jnp.float32)


# --------------------------------------------------------------------------- CNN

@dataclasses.dataclass(frozen=True)
class CNNConfig:
    """1-D convolutions over positions, with the inputs' features as channels.

    The defaults are MNIST-1D's ``ConvBase`` (greydanus/mnist1d ``notebooks/models.py``): three
    ``Conv1d`` of 25 channels, kernels 5, 3, 3, stride 2, zero padding 1 on each side, ReLU after each,
    then one linear layer on the flattened features (length 40 -> 19 -> 10 -> 5, so 25 * 5 = 125
    inputs to the linear layer).

    Attributes:
        channels: output channels of each convolution.
        kernel_sizes: kernel width of each convolution (same length as ``channels``).
        strides: stride of each convolution; None: the reference ``2`` with pooling, ``1`` without
            (``pooling=None`` needs stride 1: one output per input position).
        padding: zeros added on each side of every convolution when pooled; ``pooling=None`` always
            uses ``SAME`` padding, which keeps the length.
        pooling: how the last feature map ``[B, L', channels]`` becomes one vector per example:
            ``"flatten"`` (the reference; ``L`` fixed at init), ``"mean"`` or ``"max"`` over the
            positions computed from real inputs only (any ``L``), or None for a per-position sequence
            model ``[B, L, V] -> [B, L, C]``.
    """

    channels: tuple[int, ...] = (25, 25, 25)
    kernel_sizes: tuple[int, ...] = (5, 3, 3)
    strides: tuple[int, ...] | None = None
    padding: int = 1
    pooling: str | None = "flatten"

    def __post_init__(self):
        _check_positive_ints("channels", self.channels)
        _check_positive_ints("kernel_sizes", self.kernel_sizes)
        if len(self.kernel_sizes) != len(self.channels):
            raise ValueError(f"kernel_sizes must have one entry per layer of channels ({len(self.channels)}), "
                             f"got {self.kernel_sizes!r}")
        if self.strides is not None:
            _check_positive_ints("strides", self.strides)
            if len(self.strides) != len(self.channels):
                raise ValueError(f"strides must have one entry per layer of channels ({len(self.channels)}), "
                                 f"got {self.strides!r}")
        if not isinstance(self.padding, int) or isinstance(self.padding, bool) or self.padding < 0:
            raise ValueError(f"padding must be an int >= 0, got {self.padding!r}")
        if self.pooling not in CNN_POOLING:
            raise ValueError(f"pooling must be one of {CNN_POOLING}, got {self.pooling!r}")
        if self.pooling is None and any(s != 1 for s in self.layer_strides):
            raise ValueError(f"strides must all be 1 with pooling=None (one output per position), "
                             f"got {self.strides!r}")

    @property
    def layer_strides(self) -> tuple[int, ...]:
        """The stride of each layer after resolving the None default."""
        if self.strides is not None:
            return self.strides
        return (1 if self.pooling is None else 2,) * len(self.channels)


class CNN(nn.Module):
    """Stack of 1-D convolutions + ReLU, then pooling and a linear read-out (MNIST-1D ``ConvBase``).

    A convolution is not causal: an output position sees its neighbours on both sides, so padded
    positions would leak into real ones through the kernel. Before every convolution the positions
    that are padding *at that layer* are therefore set to zero, the same zeros the convolution pads
    with. The real length after a layer is ``(n + 2 * padding - kernel) // stride + 1`` (``n`` with
    ``SAME``), which makes every real output of a padded batch equal to the output for the unpadded
    sequence alone; ``"mean"``/``"max"`` pool over exactly those real outputs (an example too short to
    produce any gets zero features).

    The flatten order is ``[L', channels]`` (PyTorch's is ``[channels, L']``): a fixed permutation of
    the linear layer's weights, the same model.

    Attributes:
        config: :class:`CNNConfig`.
        output_size: ``C``.
    """

    config: CNNConfig
    output_size: int

    @nn.compact
    def __call__(self, inputs: Array, seq_lengths: Array | None = None, train: bool = False) -> Array:
        """Classifies ``inputs``, or labels each position when ``pooling`` is None.

        Args:
            inputs: ``[B, L]`` or ``[B, L, F]`` (``[B, L, V]`` for ``pooling=None``).
            seq_lengths: ``[B]`` real lengths (``>= 1``), or None (all real).
            train: unused (no dropout).

        Returns:
            ``[B, C]`` float32, or ``[B, L, C]`` with ``pooling=None``.

        Raises:
            ValueError: inputs of another rank (rank 3 for ``pooling=None``), malformed ``seq_lengths``.
        """
        del train
        cfg = self.config
        if cfg.pooling is None and inputs.ndim != 3:
            raise ValueError(f"inputs must have rank 3 [B, L, V] with pooling=None, got shape {inputs.shape}")
        x = as_features(inputs)
        B, L = x.shape[:2]
        lengths = jnp.full((B,), L, jnp.int32) if seq_lengths is None else jnp.asarray(seq_lengths)
        valid = valid_positions(lengths, B, L)
        for i, (width, kernel, stride) in enumerate(zip(cfg.channels, cfg.kernel_sizes, cfg.layer_strides)):
            x = jnp.where(valid[..., None], x, 0.0)
            if cfg.pooling is None:
                x = nn.Conv(width, (kernel,), padding="SAME", name=f"conv_{i}")(x)
            else:
                pad = cfg.padding
                x = nn.Conv(width, (kernel,), strides=(stride,), padding=[(pad, pad)], name=f"conv_{i}")(x)
                lengths = jnp.maximum((lengths + 2 * pad - kernel) // stride + 1, 0)
            x = nn.relu(x)
            valid = valid_positions(lengths, B, x.shape[1])
        readout = nn.Dense(self.output_size, name="logits")
        if cfg.pooling is None:
            return readout(x).astype(jnp.float32)
        if cfg.pooling == "flatten":
            x = jnp.where(valid[..., None], x, 0.0)
            return readout(x.reshape(B, -1)).astype(jnp.float32)
        has_any = (lengths > 0)[:, None]
        if cfg.pooling == "mean":
            total = jnp.sum(jnp.where(valid[..., None], x, 0.0), axis=1)
            pooled = total / jnp.maximum(lengths, 1)[:, None].astype(x.dtype)
        else:
            # After the ReLU every feature is >= 0, so 0 is a neutral fill value for padding.
            pooled = jnp.max(jnp.where(valid[..., None], x, 0.0), axis=1)
        return readout(jnp.where(has_any, pooled, 0.0)).astype(jnp.float32)
