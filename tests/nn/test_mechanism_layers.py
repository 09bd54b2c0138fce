"""FIRE, SSMax and forgetting attention as ``MultiHeadAttention(attention=...)``: their learned parameters live
in the layer (FoX's forget gates act on the layer's input through the spec's ``input_params`` hook) and get
gradients, on the blockwise kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn import MultiHeadAttention
from attnjax.ops import AttentionConfig

# (variant, the params entry that holds its parameters, the parameters that must get a non-zero gradient;
# FIRE's output bias and, under causal attention, its key-after-query weights have none by construction)
LEARNED = [("fire", "attention_params", ("fire_w_in", "fire_w_out", "fire_c", "fire_threshold_scale")),
           ("ssmax", "attention_params", ("ssmax_scale",)),
           ("forgetting", "attention_input_params", ("forget_kernel", "forget_bias"))]


@pytest.mark.parametrize("name, entry, learned", LEARNED)
def test_the_layer_holds_and_trains_the_mechanism_parameters(name, entry, learned):
    attention = AttentionConfig(name, implementation="blockwise", block_q=4, block_kv=4)
    layer = MultiHeadAttention(num_heads=4, num_kv_heads=2, head_dim=4, attention=attention)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 7, 8)), jnp.float32)
    params = layer.init(jax.random.key(0), x, is_causal=True)["params"]
    assert entry in params and set(learned) <= set(params[entry])

    @jax.jit
    def grads(params, x):
        return jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x, is_causal=True) ** 2))(params)

    g = grads(params, x)
    for param in learned:
        assert float(jnp.max(jnp.abs(g[entry][param]))) > 0, param
        assert np.all(np.isfinite(g[entry][param])), param


def test_forget_gates_of_one_make_the_layer_plain_attention():
    """The input hook's keywords reach the op: with every gate at 1 (log f = 0) the FoX layer equals the
    dot-product layer with the same projections, and with the initial gates (f ~ 1/2) it does not."""
    fox = MultiHeadAttention(num_heads=2, head_dim=4, attention="forgetting")
    plain = MultiHeadAttention(num_heads=2, head_dim=4)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 6, 8)), jnp.float32)
    params = fox.init(jax.random.key(0), x, is_causal=True)["params"]
    opened = {**params, "attention_input_params": {"forget_kernel": jnp.zeros((8, 2)),
                                                   "forget_bias": jnp.full((2,), 1e4)}}
    projections = {k: v for k, v in params.items() if k != "attention_input_params"}
    out_open, out_init, out_plain = jax.jit(lambda: (
        fox.apply({"params": opened}, x, is_causal=True), fox.apply({"params": params}, x, is_causal=True),
        plain.apply({"params": projections}, x, is_causal=True)))()
    np.testing.assert_allclose(out_open, out_plain, atol=1e-6)
    assert float(jnp.max(jnp.abs(out_init - out_plain))) > 1e-3


def test_attention_config_takes_the_mechanisms_options():
    config = AttentionConfig("fire", options={"fire_threshold_base": 64.0}, implementation="dense")
    assert config.keywords() == {"implementation": "dense", "fire_threshold_base": 64.0}
    assert AttentionConfig("ssmax", implementation="blockwise", block_q=8).block_sizes.block_q == 8
    for name in ("fire", "ssmax", "forgetting"):
        with pytest.raises(ValueError, match="options are"):
            AttentionConfig(name, options={"temperature": 2.0})
        with pytest.raises(ValueError, match="is not a path of attention"):
            AttentionConfig(name, implementation="cudnn")
