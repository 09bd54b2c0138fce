"""What the attention variants built on the ``score_mod`` hook share (:mod:`attnjax.ops.fire`,
:mod:`attnjax.ops.scalable_softmax`, :mod:`attnjax.ops.forgetting`): the implementations they run on and
the checks of the parameters they are given.

Each of those variants is ``dot_product_attention(..., score_mod=<its module-level hook>,
score_mod_params=<its parameters>)``: one function object per variant, so jit caches hold, and the
parameters travel as ``score_mod_params`` so that gradients reach them on the dense and blockwise paths.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnjax.ops import checks
from attnjax.ops.dot_product import IMPLEMENTATION_ALIASES, TAKES_MODS

# ``implementation=`` values of a score_mod variant besides None: the paths that evaluate the hook, and
# jax.nn's alias of one of them ("xla" is "dense").
FLEX_IMPLEMENTATIONS = tuple(sorted({*TAKES_MODS, *(alias for alias, name in IMPLEMENTATION_ALIASES.items()
                                                    if name in TAKES_MODS)}))


def check_learned(fn_name: str, variant: str, params: dict[str, Any], shapes: dict[str, tuple[tuple, str]]) -> None:
    """Checks a variant's learned parameters: present, of the right shape, floating.

    Args:
        fn_name: the public function, for messages.
        variant: its registry name (the message says how to build the parameters).
        params: ``{keyword: value or None}``.
        shapes: ``{keyword: (shape, letters)}``; a ``None`` entry of ``shape`` takes any size.

    Raises:
        ValueError: a missing parameter (all of them are named, with their shapes and how to build them),
            or a wrong shape.
        TypeError: a non-floating parameter.
    """
    missing = [name for name, value in params.items() if value is None]
    if missing:
        listed = ", ".join(f"{name} {shapes[name][1]}" for name in missing)
        raise ValueError(f"{fn_name}() is missing its learned parameter{'s' if len(missing) > 1 else ''} {listed}; "
                         f"a pure function does not invent weights: build them with "
                         f"attnjax.ops.registry.init_attention_params({variant!r}, rng, head_dim=H, num_heads=N) "
                         f"and pass them as keywords")
    for name, value in params.items():
        shape, letters = shapes[name]
        actual = tuple(np.shape(value))
        if len(actual) != len(shape) or any(s is not None and s != a for s, a in zip(shape, actual)):
            want = tuple("?" if s is None else s for s in shape)
            raise ValueError(f"{name} must have shape {letters} = {want}, got {actual}")
        checks.check_floating(name, value)
