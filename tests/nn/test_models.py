"""The model registry: every name builds from config, follows its contract kind, is counted and capacity-matched."""

import functools

import jax
import jax.numpy as jnp
import pytest

from attnjax import nn as ann
from attnjax.nn.contract import Classifier, Seq2SeqModel, SequenceModel
from attnjax.nn.models import match_capacity

B, L, V, C = 2, 8, 3, 4
TINY = {
    "logistic": {},
    "mlp": dict(hidden_sizes=(8,)),
    "cnn": dict(channels=(4, 4, 4), pooling="mean"),
    "rnn": dict(hidden_size=8),
    "lstm": dict(hidden_size=8),
    "gru": dict(hidden_size=8),
    "rnn_seq2seq": dict(hidden_size=8, embed_dim=4, attention="additive"),
    "transformer": dict(num_layers=1, d_model=8, num_heads=2, mlp_dim=16),
    "transformer_lm": dict(num_layers=1, d_model=8, num_heads=2, mlp_dim=16),
    "transformer_seq2seq": dict(num_layers=1, d_model=8, num_heads=2, mlp_dim=16),
    "vit1d": dict(num_layers=1, d_model=8, num_heads=2, mlp_dim=16, patch_size=4),
    "base_conv": dict(d_model=8, max_len=8),
    "hyena": dict(d_model=8, max_len=8, filter_order=4),
    "based": dict(d_model=8, max_len=8, feature_dim=2, window_size=2),
}


def _inputs(kind):
    tokens = jax.nn.one_hot(jax.random.randint(jax.random.key(0), (B, L), 0, V), V)
    if kind == "classifier":
        return (jax.random.normal(jax.random.key(1), (B, L)),)
    if kind == "seq2seq":
        return tokens, jnp.zeros((B, 5), jnp.int32)
    return (tokens,)


@functools.lru_cache(maxsize=None)
def _built(name):
    model = ann.build_model(name, C if name != "transformer_lm" else V, TINY[name])
    kind = ann.model_kind(name, TINY[name])
    inputs = _inputs(kind)
    params = jax.jit(model.init)(jax.random.key(0), *inputs)
    return model, kind, inputs, params


def test_every_name_has_a_tiny_config():
    assert set(TINY) == set(ann.MODELS)
    assert {"logistic", "mlp", "cnn", "rnn", "lstm", "gru", "transformer", "transformer_lm", "transformer_seq2seq",
            "vit1d", "rnn_seq2seq", "base_conv", "hyena", "based"} <= set(ann.MODELS)


@pytest.mark.parametrize("name", sorted(TINY))
def test_builds_by_name_and_follows_its_contract(name):
    model, kind, inputs, params = _built(name)
    out = jax.jit(model.apply)(params, *inputs)
    classes = V if name == "transformer_lm" else C
    expected = {"sequence": (B, L, classes), "classifier": (B, classes), "seq2seq": (B, 5, classes)}[kind]
    assert out.shape == expected and out.dtype == jnp.float32
    protocol = {"sequence": SequenceModel, "classifier": Classifier, "seq2seq": Seq2SeqModel}[kind]
    assert isinstance(model, protocol)
    assert ann.count_params(model, *inputs) == ann.count_params(params["params"]) > 0


def test_pooling_decides_the_kind():
    assert ann.model_kind("gru") == "sequence" and ann.model_kind("gru", dict(pooling="last")) == "classifier"
    assert ann.model_kind("transformer", dict(pooling="cls")) == "classifier"
    assert ann.model_kind("cnn", dict(pooling=None)) == "sequence"


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="model must be one of"):
        ann.build_model("gpt", 2)
    with pytest.raises(TypeError, match=r"unknown config field\(s\) \['hidden'\] for model 'lstm'; valid fields: .*hidden_size"):
        ann.build_model("lstm", 2, dict(hidden=3))
    with pytest.raises(ValueError, match="model 'gru' fixes"):
        ann.build_model("gru", 2, dict(cell="lstm"))
    with pytest.raises(ValueError, match="output_size"):
        ann.build_model("gru", 0)
    with pytest.raises(ValueError, match="unknown attention 'nope'; valid names: .*cosine"):
        ann.build_model("transformer", 2, dict(attention="nope"))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ann.build_model("transformer", 2, dict(d_model=10, num_heads=4))


@pytest.mark.parametrize("name, config", [
    ("transformer", dict(num_layers=2, num_heads=4, d_model=32, mlp_dim=64)),
    ("gru", {}),
    ("mlp", dict(hidden_sizes=(32, 16))),
])
def test_match_capacity_hits_its_tolerance(name, config):
    example = (jnp.zeros((1, 20, 5)),) if name != "mlp" else (jnp.zeros((1, 20)),)
    target = ann.count_params(ann.build_model("lstm", 5, dict(hidden_size=64)), jnp.zeros((1, 20, 5)))
    fields, n = match_capacity(name, target, output_size=5, example_inputs=example, config=config)
    assert abs(n - target) <= 0.1 * target
    assert n == ann.count_params(ann.build_model(name, 5, fields), *example)
    if name == "transformer":  # heads still divide the width; mlp_dim kept at twice d_model
        assert fields["d_model"] % 8 == 0 and fields["mlp_dim"] == 2 * fields["d_model"]
        assert fields["num_layers"] == 2
    if name == "mlp":
        assert abs(fields["hidden_sizes"][0] - 2 * fields["hidden_sizes"][1]) <= 1  # proportional, rounded


def test_match_capacity_errors():
    with pytest.raises(ValueError, match="'logistic' has no width"):
        match_capacity("logistic", 100, output_size=2, example_inputs=(jnp.zeros((1, 4)),))
    with pytest.raises(ValueError, match="within 10%"):  # 3 parameters are below any GRU
        match_capacity("gru", 3, output_size=2, example_inputs=(jnp.zeros((1, 4, 2)),))


def test_sown_attention_weights_in_layer_order():
    model = ann.build_model("transformer", C, dict(num_layers=11, d_model=8, num_heads=2, mlp_dim=8),
                            ann.Execution(sow_attention_weights=True))
    x = _inputs("sequence")[0]
    params = model.init(jax.random.key(0), x)
    _, sown = model.apply(params, x, mutable=["intermediates"])
    weights = ann.sown_attention_weights(sown["intermediates"])
    assert len(weights) == 11 and all(w.shape == (B, 2, L, L) for w in weights)
    block10 = sown["intermediates"]["encoder"]["block_10"]["attention"]["attention_weights"][0]
    assert weights[-1] is block10  # block_10 sorts after block_2
