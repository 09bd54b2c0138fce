"""ALiBi and T5 reach the models' attention as a score_mod (never an ``[N, L, L]`` array on the blockwise path)
with the parameters of the materialized bias, and the same outputs and gradients to float32 tolerance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn import blocks
from attnjax.nn.execution import Execution
from attnjax.nn.transformer import TransformerEncoder
from attnjax.nn.transformer_config import TransformerConfig
from attnjax.nn.transformer_lm import TransformerLM
from attnjax.ops import AttentionConfig

B, L, V = 2, 12, 5
LENGTHS = jnp.array([L, 9], jnp.int32)
SMALL = dict(num_layers=1, d_model=16, num_heads=4, num_kv_heads=2, mlp_dim=16, max_len=64)
BLOCKWISE = AttentionConfig("dot_product", implementation="blockwise", block_q=4, block_kv=4)


def _square_shapes(jaxpr, length):
    """Every array shape in ``jaxpr`` and its sub-jaxprs (loop bodies, branches, custom derivatives) that ends
    in ``[.., length, length]``."""
    found = []
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            shape = getattr(var.aval, "shape", ())
            if len(shape) >= 2 and shape[-2:] == (length, length):
                found.append(shape)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _square_shapes(inner, length)
    return found


@pytest.mark.parametrize("model_name, positional, randomized", [("lm", "alibi", False), ("encoder", "t5", True)])
def test_bias_encodings_run_as_score_mods_with_the_same_params_and_results(model_name, positional, randomized,
                                                                           monkeypatch):
    """Causal ALiBi in the LM and bidirectional randomized T5 in the encoder (grouped-query heads, padded
    rows): the hook form on the blockwise path equals the materialized bias on the dense reference path, outputs
    and parameter gradients (the T5 table's included), from identical parameters; only the materialized form
    builds an ``[.., L, L]`` array on the blockwise path."""
    def model(attention):
        config = TransformerConfig(**SMALL, attention=attention, positional=positional, randomized_positions=randomized)
        return (TransformerLM if model_name == "lm" else TransformerEncoder)(config=config, output_size=V)

    x = jax.nn.one_hot(jax.random.randint(jax.random.key(0), (B, L), 0, V), V)
    cot = jax.random.normal(jax.random.key(1), (B, L, V))
    rngs = {"positions": jax.random.key(2)} if randomized else None
    params = model(BLOCKWISE).init(jax.random.key(0), x)["params"]

    def loss(attention):
        return jax.value_and_grad(lambda p: jnp.sum(model(attention).apply({"params": p}, x, LENGTHS, rngs=rngs) * cot))

    hooked = jax.make_jaxpr(loss(BLOCKWISE))(params)
    got = jax.jit(loss(BLOCKWISE))(params)
    monkeypatch.setattr(blocks, "bias_as_score_mod", lambda *args, **kwargs: False)
    assert jax.tree.map(jnp.shape, model(BLOCKWISE).init(jax.random.key(0), x)["params"]) == jax.tree.map(
        jnp.shape, params)
    materialized = jax.make_jaxpr(loss(BLOCKWISE))(params)
    want = jax.jit(loss(AttentionConfig("dot_product", implementation="dense")))(params)

    assert _square_shapes(materialized.jaxpr, L), "control: the materialized bias is an [.., L, L] array"
    assert not _square_shapes(hooked.jaxpr, L), _square_shapes(hooked.jaxpr, L)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4), got[1], want[1])
    if positional == "t5":
        assert float(jnp.max(jnp.abs(want[1]["encoder"]["positional"]["t5_table"]))) > 1e-3


def test_the_hook_is_used_where_the_path_evaluates_it():
    """The hook goes to dot-product attention on the paths that evaluate it (and to nothing else): explicit
    dense/blockwise, and implementation=None where the call would take one of them; a variant without the
    hook (cosine) and the cuDNN kernel keep the materialized bias."""
    def uses(attention, positional="alibi", **fields):
        config = TransformerConfig(**SMALL, attention=attention, positional=positional, **fields)
        return blocks.bias_as_score_mod(config, Execution(), batch=B, length=L, causal=False, has_lengths=False,
                                        train=False)

    assert uses(BLOCKWISE) and uses("dot_product") and uses(AttentionConfig("dot_product", implementation="xla"))
    assert uses(AttentionConfig("dot_product", implementation="dense"), "t5")
    assert not uses(AttentionConfig("dot_product", implementation="cudnn"))
    assert not uses("cosine") and not uses(BLOCKWISE, "rope")
