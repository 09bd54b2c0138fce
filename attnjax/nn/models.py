"""The model zoo: one dict from name to model, one builder, parameter counts and capacity matching.

Every model follows :mod:`attnjax.nn.contract` (its kind says which signature) and is a Flax linen
module built as ``Module(config=Config(**fields), output_size=C)`` from a frozen config dataclass, so
an experiment config selects and configures any of them by name::

    model = build_model("gru", output_size=10, config={"hidden_size": 64, "pooling": "last"})
    model = build_model("transformer", 2, transformer_config("deletang2022").__dict__)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax

from attnjax.nn.baselines import CNN, MLP, CNNConfig, Logistic, LogisticConfig, MLPConfig
from attnjax.nn.contract import MODEL_KINDS
from attnjax.nn.execution import Execution
from attnjax.nn.mixer_lm import BaseConvConfig, BaseConvLM, BasedConfig, BasedLM, HyenaConfig, HyenaLM
from attnjax.nn.recurrent import Recurrent, RecurrentConfig
from attnjax.nn.rnn_seq2seq import RNNSeq2Seq, RNNSeq2SeqConfig
from attnjax.nn.transformer import TransformerConfig, TransformerEncoder
from attnjax.nn.transformer_lm import TransformerLM, TransformerLMConfig
from attnjax.nn.transformer_seq2seq import TransformerSeq2Seq, TransformerSeq2SeqConfig
from attnjax.nn.vit1d import ViT1D, ViT1DConfig


def _pooled_kind(config: Any) -> str:
    return "sequence" if getattr(config, "pooling", None) is None else "classifier"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build one named model and how to scale it.

    Attributes:
        name: key in :data:`MODELS`.
        module: the linen module class, built as ``module(config=..., output_size=C)``.
        config: its frozen config dataclass.
        kind: one of :data:`attnjax.nn.contract.MODEL_KINDS`, or ``config -> kind`` when a field
            (``pooling``) decides between per-position and pooled outputs.
        fixed: config fields the name itself sets (``"gru"`` sets ``cell="gru"``); a user config may not
            override them.
        width: the field :func:`match_capacity` scales (None: the model has no width).
        width_multiple: ``config -> m``: the width must be a multiple of ``m`` (heads divide ``d_model``).
        scaled_with: fields kept proportional to the width (a Transformer's ``mlp_dim``).
        attention: the model mixes tokens with attention (its config picks the attention and positional
            encoding), so a study gives it one cell per attention variant.
        description: one line for tables and listings (optional).
    """

    name: str
    module: type[nn.Module]
    config: type
    kind: str | Callable[[Any], str]
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    width: str | None = None
    width_multiple: Callable[[Any], int] = lambda config: 1
    scaled_with: tuple[str, ...] = ()
    attention: bool = False
    description: str = ""


def _heads_multiple(config: Any) -> int:
    # d_model = heads * head_dim with an even head dim (RoPE rotates feature pairs).
    return 2 * config.num_heads


def _attention_spec(name, module, config, kind, **kwargs) -> ModelSpec:
    return ModelSpec(name, module, config, kind, width="d_model", width_multiple=_heads_multiple,
                     scaled_with=("mlp_dim",), attention=True, **kwargs)


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("logistic", Logistic, LogisticConfig, "classifier"),
    ModelSpec("mlp", MLP, MLPConfig, "classifier", width="hidden_sizes"),
    ModelSpec("cnn", CNN, CNNConfig, _pooled_kind, width="channels"),
    *(ModelSpec(cell, Recurrent, RecurrentConfig, _pooled_kind, fixed={"cell": cell}, width="hidden_size")
      for cell in ("rnn", "lstm", "gru")),
    ModelSpec("rnn_seq2seq", RNNSeq2Seq, RNNSeq2SeqConfig, "seq2seq", width="hidden_size"),
    _attention_spec("transformer", TransformerEncoder, TransformerConfig, _pooled_kind),
    _attention_spec("transformer_lm", TransformerLM, TransformerLMConfig, "sequence"),
    _attention_spec("transformer_seq2seq", TransformerSeq2Seq, TransformerSeq2SeqConfig, "seq2seq"),
    _attention_spec("vit1d", ViT1D, ViT1DConfig, "classifier"),
    ModelSpec("base_conv", BaseConvLM, BaseConvConfig, "sequence", width="d_model",
              description="BaseConv LM: gated short and long (FFT) convolutions (Zoology)"),
    ModelSpec("hyena", HyenaLM, HyenaConfig, "sequence", width="d_model",
              description="Hyena LM: order-2 gated implicit long convolutions (Zoology)"),
    ModelSpec("based", BasedLM, BasedConfig, "sequence", width="d_model",
              width_multiple=lambda config: config.num_heads,
              description="Based LM: gated convolutions, Taylor linear and sliding-window attention"),
)}


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` named ``name``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name]


def model_config(name: str, config: Mapping[str, Any] | None = None) -> Any:
    """The validated config dataclass of model ``name`` from a mapping of its fields.

    Raises:
        ValueError: unknown model, a field the name fixes, or a value the config rejects.
        TypeError: an unknown field (the message lists the valid ones).
    """
    spec = get_model_spec(name)
    fields = dict(config or {})
    clash = {k: v for k, v in fields.items() if k in spec.fixed and v != spec.fixed[k]}
    if clash:
        raise ValueError(f"model {name!r} fixes {dict(spec.fixed)}; the config may not set {clash}")
    valid = [f.name for f in dataclasses.fields(spec.config)]
    unknown = sorted(set(fields) - set(valid))
    if unknown:
        raise TypeError(f"unknown config field(s) {unknown} for model {name!r}; valid fields: {', '.join(valid)}")
    return spec.config(**{**fields, **spec.fixed})


def takes_execution(name: str) -> bool:
    """Whether model ``name`` has an ``execution`` (:class:`~attnjax.nn.execution.Execution`) to set."""
    return "execution" in {f.name for f in dataclasses.fields(get_model_spec(name).module)}


def build_model(name: str, output_size: int, config: Mapping[str, Any] | None = None,
                execution: Execution | None = None) -> nn.Module:
    """Builds model ``name`` with ``output_size`` classes (``C``) from a mapping of its config fields.

    Args:
        name: a model of :data:`MODELS`.
        output_size: ``C``.
        config: its config fields (the dataclass defaults for the others).
        execution: how it runs (compute dtype, sown attention weights, sequence parallelism); None: the
            default. Only models that take one (:func:`takes_execution`).

    Raises:
        ValueError, TypeError: see :func:`model_config`; ``output_size < 1``; an execution for a model
            without one.
    """
    if not isinstance(output_size, int) or output_size < 1:
        raise ValueError(f"output_size must be an int >= 1, got {output_size!r}")
    module = get_model_spec(name).module
    if execution is None:
        return module(config=model_config(name, config), output_size=output_size)
    if not takes_execution(name):
        raise ValueError(f"model {name!r} has no execution settings; got execution={execution}")
    return module(config=model_config(name, config), output_size=output_size, execution=execution)


def model_kind(name: str, config: Mapping[str, Any] | None = None) -> str:
    """``"sequence"``, ``"classifier"`` or ``"seq2seq"``: which signature of the contract the model has."""
    spec = get_model_spec(name)
    kind = spec.kind(model_config(name, config)) if callable(spec.kind) else spec.kind
    assert kind in MODEL_KINDS, kind
    return kind


def count_params(tree_or_model: Any, *example_inputs: Any) -> int:
    """Number of parameter scalars.

    Args:
        tree_or_model: a parameter pytree, or a module (then ``example_inputs`` are needed: its
            parameters are shaped with ``jax.eval_shape``, nothing is allocated or computed).
        example_inputs: the module's call arguments (arrays or ``jax.ShapeDtypeStruct``).
    """
    if isinstance(tree_or_model, nn.Module):
        if not example_inputs:
            raise ValueError("count_params of a module needs its example inputs")
        shapes = jax.eval_shape(tree_or_model.init, jax.random.key(0), *example_inputs)
        tree = shapes["params"]
    else:
        tree = tree_or_model
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def _with_width(spec: ModelSpec, base: Any, width: int) -> dict[str, Any]:
    fields = dataclasses.asdict(base)
    old = fields[spec.width]
    if isinstance(old, (tuple, list)):  # e.g. MLP hidden sizes: scale every layer alike
        fields[spec.width] = tuple(max(1, round(v * width / old[0])) for v in old)
        reference = old[0]
    else:
        fields[spec.width] = width
        reference = old
    for name in spec.scaled_with:
        fields[name] = max(1, round(fields[name] * width / reference))
    return {k: v for k, v in fields.items() if k not in spec.fixed}


def match_capacity(name: str, target_params: int, *, output_size: int, example_inputs: tuple,
                   config: Mapping[str, Any] | None = None, tolerance: float = 0.1,
                   max_width: int = 8192) -> tuple[dict[str, Any], int]:
    """The width of model ``name`` whose parameter count is closest to ``target_params``.

    Only the spec's width field changes (and the fields kept proportional to it, such as a
    Transformer's ``mlp_dim``); every other field stays as ``config`` gives it.

    Args:
        name: a model in :data:`MODELS` with a width.
        target_params: the parameter count to match.
        output_size: ``C``.
        example_inputs: call arguments that shape the parameters (e.g. ``(x [1, L, V],)``).
        config: the other config fields.
        tolerance: the largest accepted ``|count - target| / target``.
        max_width: the search's upper bound.

    Returns:
        ``(config fields, parameter count)``.

    Raises:
        ValueError: a model without a width, or no width within ``tolerance`` of the target.
    """
    spec = get_model_spec(name)
    if spec.width is None:
        raise ValueError(f"model {name!r} has no width to scale; match_capacity needs one of "
                         f"{sorted(n for n, s in MODELS.items() if s.width)}")
    if not target_params > 0:
        raise ValueError(f"target_params must be > 0, got {target_params!r}")
    base = model_config(name, config)
    step = spec.width_multiple(base)

    def count(width: int) -> tuple[dict[str, Any], int]:
        fields = _with_width(spec, base, width)
        return fields, count_params(build_model(name, output_size, fields), *example_inputs)

    # Parameter counts grow monotonically with the width: bisect over multiples of `step`.
    lo, hi = 1, max(1, max_width // step)
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid * step)[1] < target_params:
            lo = mid + 1
        else:
            hi = mid
    candidates = [count(m * step) for m in {max(1, lo - 1), lo}]
    fields, n = min(candidates, key=lambda fc: abs(fc[1] - target_params))
    if abs(n - target_params) > tolerance * target_params:
        raise ValueError(f"no width of {name!r} (multiples of {step}) is within {tolerance:.0%} of "
                         f"{target_params} parameters; closest: {n} at {spec.width}={fields[spec.width]}")
    return fields, n


__all__ = ["MODELS", "ModelSpec", "build_model", "count_params", "get_model_spec", "match_capacity",
           "model_config", "model_kind"]
