"""attnjax: how attention changes what deep-learning models generalize to.

Public API re-exports only; see README.md for a tour. The conformance kit is :mod:`attnjax.testing`.
"""

from attnjax.ops import ATTENTION, attention_weights, dot_product_attention, get_attention

__version__ = "0.1.0"

# Flax modules and training are resolved on first access, so `import attnjax` and the pure ops
# never import Flax or optax.
_LAZY = {
    **dict.fromkeys(["MODELS", "MultiHeadAttention", "TransformerConfig",
                     "TransformerEncoder", "build_model"], "attnjax.nn"),
    **dict.fromkeys(["TrainState", "create_train_state", "eval_step", "evaluate", "fit", "make_optimizer",
                     "train_step"], "attnjax.train"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attnjax' has no attribute {name!r}")


__all__ = ["ATTENTION", "attention_weights", "dot_product_attention", "get_attention", *sorted(_LAZY)]
