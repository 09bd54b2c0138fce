"""Axis letters used in every einsum string, docstring and comment of attnjax.

The layout is the one of ``jax.nn.dot_product_attention`` so that the two can be swapped:

========  ==========================================================
``B``     batch
``T``     query (target) length
``S``     key/value (source) length
``N``     query heads
``K``     key/value heads (``N % K == 0``; ``K < N`` is grouped-query attention)
``G``     query heads per key/value head, ``N // K``
``H``     head dimension
``D``     model dimension
========  ==========================================================

queries are ``[B, T, N, H]``, keys and values ``[B, S, K, H]``, logits and weights ``[B, N, T, S]``.
"""

QUERY = "BTNH"
KEY_VALUE = "BSKH"
LOGITS = "BNTS"
