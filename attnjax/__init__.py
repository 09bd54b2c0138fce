"""attnjax: how attention changes what deep-learning models generalize to.

Public API re-exports only; see README.md for a tour.
"""

from attnjax.ops import attention_weights, dot_product_attention

__version__ = "0.1.0"

__all__ = ["attention_weights", "dot_product_attention"]

# Attention variants and their registry (issue 3); the conformance kit is `attnjax.testing`.
from attnjax.ops import ATTENTION, get_attention  # noqa: E402

__all__ += ["ATTENTION", "get_attention"]

# Flax modules and training (issue 2). Resolved on first access, so `import attnjax` and the pure
# ops never import Flax or optax.
_LAZY = {
    **dict.fromkeys(["LSTM", "LSTMConfig", "MODELS", "MultiHeadAttention", "TransformerConfig",
                     "TransformerEncoder", "build_model"], "attnjax.nn"),
    **dict.fromkeys(["TrainState", "create_train_state", "eval_step", "evaluate", "fit", "make_optimizer",
                     "train_step"], "attnjax.train"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attnjax' has no attribute {name!r}")


__all__ += sorted(_LAZY)
