"""attnjax: how attention changes what deep-learning models generalize to.

Public API re-exports only; see README.md for a tour.
"""

from attnjax.ops import attention_weights, dot_product_attention

__version__ = "0.1.0"

__all__ = ["attention_weights", "dot_product_attention"]
