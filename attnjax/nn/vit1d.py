"""A Vision-Transformer-style classifier for 1-D signals (MNIST-1D): patches, the shared blocks, pooling."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from attnjax.nn.blocks import Embedding, TransformerStack, classifier_inputs, pool, readout
from attnjax.nn.execution import Execution
from attnjax.nn.transformer_config import TransformerConfig


@dataclasses.dataclass(frozen=True)
class ViT1DConfig(TransformerConfig):
    """:class:`TransformerConfig` plus the patching.

    Attributes:
        patch_size: ``P`` consecutive positions per token; the input length must be divisible by it.
        pooling: ``"cls"`` (default) or ``"mean"``; None is rejected (ViT1D is a Classifier).
    """

    patch_size: int = 4
    pooling: str | None = "cls"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.patch_size, int) or isinstance(self.patch_size, bool) or self.patch_size < 1:
            raise ValueError(f"patch_size must be an int >= 1, got {self.patch_size!r}")
        if self.pooling is None:
            raise ValueError("ViT1D is a classifier: pooling must be 'cls' or 'mean', got None")


class ViT1D(nn.Module):
    """Cuts ``[B, L, F]`` into ``L / P`` patches of ``P * F`` values, embeds each linearly, runs the shared
    blocks (bidirectional unless ``config.causal``) and classifies the CLS token or the mean.

    A Classifier (:mod:`attnjax.nn.contract`).

    Attributes:
        config: :class:`ViT1DConfig`.
        output_size: ``C`` classes.
        execution: :class:`~attnjax.nn.execution.Execution`: compute dtype, sown weights, sequence
            parallelism (parameters do not depend on it).
    """

    config: ViT1DConfig
    output_size: int
    execution: Execution = Execution()

    @nn.compact
    def __call__(self, inputs: jnp.ndarray, seq_lengths: jnp.ndarray | None = None, train: bool = False) -> jnp.ndarray:
        """Class logits.

        Args:
            inputs: ``[B, L]`` (one value per position, e.g. MNIST-1D) or ``[B, L, F]``.
            seq_lengths: ``[B]`` real lengths in positions; a patch is real if it holds any real position,
                and padded values inside it are zeroed, so padding never changes the logits.
            train: dropout (``'dropout'`` rng) and randomized positions (``'positions'`` rng).

        Returns:
            ``[B, C]`` float32.

        Raises:
            ValueError: wrong rank, ``L`` not divisible by ``patch_size``, or ``pooling=None``.
        """
        cfg = self.config
        patch = getattr(cfg, "patch_size", None)
        if patch is None or cfg.pooling is None:
            raise ValueError(f"ViT1D needs a ViT1DConfig with pooling 'cls' or 'mean', got {type(cfg).__name__} "
                             f"with pooling={cfg.pooling!r}")
        x = classifier_inputs(inputs)
        B, L, F = x.shape
        if L % patch:
            raise ValueError(f"input length L={L} must be divisible by patch_size={patch}")
        patch_lengths = None
        if seq_lengths is not None:
            x = jnp.where((jnp.arange(L)[None, :] < seq_lengths[:, None])[..., None], x, 0)
            patch_lengths = (seq_lengths + patch - 1) // patch
        patches = x.reshape(B, L // patch, patch * F)
        run = self.execution
        h = TransformerStack(cfg, causal=cfg.causal, execution=run, name="encoder")(
            Embedding(cfg, execution=run, name="patch_embed")(patches), patch_lengths, train)
        return readout(cfg, run, self.output_size, pool(h, patch_lengths, cfg.pooling))


__all__ = ["ViT1D", "ViT1DConfig"]
