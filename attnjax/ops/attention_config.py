"""One attention as one value: a registered variant, its own options, and how it is computed.

:class:`AttentionConfig` is what a model config holds instead of five loose fields. It is checked once, when
it is built (the variant exists, it takes each option, the implementation and the block sizes), and it is
frozen and hashable, so a model config holding it stays a valid ``jax.jit`` static argument::

    attention = AttentionConfig("dot_product", implementation="blockwise", block_q=256, block_kv=256)
    out = attention(q, k, v, is_causal=True)  # = dot_product_attention(..., implementation=..., block_sizes=...)
    AttentionConfig("local", options={"local_window_size": 8})
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Mapping

import jax

from attnjax.ops.blockwise import BlockSizes
from attnjax.ops.dot_product import TAKES_BLOCK_SIZES
from attnjax.ops.registry import AttentionSpec, get_spec, init_option_names

# Keywords a caller passes on every call (the inputs, masks, dropout) or that other fields set, so they
# cannot be options.
CALL_KEYWORDS = frozenset({"query", "key", "value", "bias", "mask", "is_causal", "query_seq_lengths",
                           "key_value_seq_lengths", "query_segment_ids", "key_segment_ids", "dropout_rate",
                           "dropout_rng", "implementation", "block_sizes", "score_mod_params"})


def _normalize_options(options: Any) -> tuple[tuple[str, Any], ...]:
    """A dict, ConfigDict or sequence of pairs -> sorted hashable ``((name, value), ...)``."""
    pairs = options.items() if hasattr(options, "items") else options
    try:
        pairs = [(name, tuple(v) if isinstance(v, list) else v) for name, v in pairs]
    except (TypeError, ValueError):
        raise ValueError(f"attention options must be a dict or (name, value) pairs, got {options!r}") from None
    for name, value in pairs:
        if not isinstance(name, str):
            raise ValueError(f"attention option names must be str, got {name!r}")
        try:
            hash(value)
        except TypeError:
            raise ValueError(f"attention option {name!r} must be hashable (a model config is a jit static "
                             f"argument), got {type(value).__name__}: {value!r}") from None
    return tuple(sorted(pairs))


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    """A variant of :data:`attnjax.ops.registry.ATTENTION` with its options and execution path.

    Attributes:
        name: the variant (``"dot_product"``, ``"cosine"``, ``"local"``, ...).
        options: the variant's own keywords (``{"local_window_size": 8}``, ``{"temperature": 0.5}``) and those
            of its ``init_params`` (``{"npos_max": 32}`` for ``cope``'s table, see :meth:`init_options`); a
            dict is accepted and stored as sorted ``(name, value)`` pairs.
        implementation: ``implementation=`` of the variant (``"dense"``, ``"blockwise"``, ...; None: the op
            chooses); only for variants that take it (``spec.implementations``).
        block_q: query block of the blocked implementations (None: the :class:`BlockSizes` default).
        block_kv: key/value block of the blocked implementations (None: the :class:`BlockSizes` default).

    Raises:
        ValueError: an unknown variant, an option it does not take (the message lists those it takes), an
            implementation it does not have, or block sizes it cannot use.
    """

    name: str = "dot_product"
    options: Any = ()
    implementation: str | None = None
    block_q: int | None = None
    block_kv: int | None = None

    def __post_init__(self):
        spec = self.spec
        takes = inspect.signature(spec.fn).parameters
        init_takes = set(init_option_names(spec))
        object.__setattr__(self, "options", _normalize_options(self.options))
        for option, _ in self.options:
            if option in CALL_KEYWORDS or (option not in takes and option not in init_takes):
                valid = sorted((set(takes) | init_takes) - CALL_KEYWORDS)
                why = "is set per call or by another field" if option in CALL_KEYWORDS else "is not one of them"
                raise ValueError(f"attention {self.name!r} options are {valid}; got option {option!r}, which {why}")
        if self.implementation is not None and self.implementation not in spec.implementations:
            raise ValueError(f"implementation={self.implementation!r} is not a path of attention {self.name!r}; "
                             f"it has {list(spec.implementations) or 'none'} (or None)")
        if self.block_q is not None or self.block_kv is not None:
            if "block_sizes" not in takes or self.implementation not in (None, *sorted(TAKES_BLOCK_SIZES)):
                raise ValueError(f"block_q/block_kv are used by attention 'dot_product' with implementation in "
                                 f"{sorted(TAKES_BLOCK_SIZES)} (or None), got attention {self.name!r} with "
                                 f"implementation={self.implementation!r}")
            self.block_sizes  # noqa: B018 - BlockSizes validates the sizes now, not at the first call

    @classmethod
    def of(cls, value: AttentionConfig | str | Mapping[str, Any]) -> AttentionConfig:
        """``value`` as an :class:`AttentionConfig`: itself, a variant name, or a mapping of the fields."""
        if isinstance(value, AttentionConfig):
            return value
        if isinstance(value, str):
            return cls(value)
        if hasattr(value, "items"):
            fields = dict(value.items())
            valid = [f.name for f in dataclasses.fields(cls)]
            unknown = sorted(set(fields) - set(valid))
            if unknown:
                raise ValueError(f"unknown attention field(s) {unknown}; valid: {', '.join(valid)}")
            return cls(**fields)
        raise ValueError(f"attention must be an AttentionConfig, a variant name or a mapping of its fields, "
                         f"got {value!r}")

    @property
    def spec(self) -> AttentionSpec:
        return get_spec(self.name)

    @property
    def block_sizes(self) -> BlockSizes | None:
        """``BlockSizes(block_q, block_kv)`` (defaults for an unset one), or None if neither is set."""
        if self.block_q is None and self.block_kv is None:
            return None
        default = BlockSizes()
        return BlockSizes(block_q=default.block_q if self.block_q is None else self.block_q,
                          block_k=default.block_k if self.block_kv is None else self.block_kv)

    def keywords(self) -> dict[str, Any]:
        """The keywords every call of the variant gets: its options (those its function takes),
        ``implementation`` and ``block_sizes`` where set."""
        run = {"implementation": self.implementation, "block_sizes": self.block_sizes}
        takes = inspect.signature(self.spec.fn).parameters
        return {**{k: v for k, v in run.items() if v is not None},
                **{k: v for k, v in self.options if k in takes}}

    def init_options(self) -> dict[str, Any]:
        """The options that ``spec.init_params`` takes (:func:`attnjax.ops.registry.init_option_names`), for
        the layer that builds the variant's params."""
        names = init_option_names(self.spec)
        return {k: v for k, v in self.options if k in names}

    def __call__(self, query: jax.Array, key: jax.Array, value: jax.Array, bias: jax.Array | None = None,
                 mask: jax.Array | None = None, **kwargs: Any) -> jax.Array:
        """``spec.fn(query [B, T, N, H], key [B, S, K, H], value, bias, mask, **keywords(), **kwargs)``
        -> ``[B, T, N, H]`` (call-time ``kwargs`` win)."""
        return self.spec.fn(query, key, value, bias, mask, **{**self.keywords(), **kwargs})
