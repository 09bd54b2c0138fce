"""attnjax: how attention changes what deep-learning models generalize to.

Public API re-exports only; see README.md for a tour.
"""

from attnjax.ops import attention_weights, dot_product_attention

__version__ = "0.1.0"

__all__ = ["attention_weights", "dot_product_attention"]

# Attention variants and their registry (issue 3); the conformance kit is `attnjax.testing`.
from attnjax.ops import ATTENTION, get_attention  # noqa: E402

__all__ += ["ATTENTION", "get_attention"]
