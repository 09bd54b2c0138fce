"""Smoke test of the model benchmark: tiny sizes, equal parameter counts checked, files written."""

import json
import os

import pytest

from experiments.bench import models as bench_models
from experiments.bench import models_config as bench_config


@pytest.mark.slow
def test_benchmark_pairs_equal_networks_and_writes_files(tmp_path):
    c = bench_config.get_config()
    c.update(dict(study_settings="2x4", long_length=64, decode_setting="2x3x2", repeats=1, steps_per_round=1,
                  out=str(tmp_path)))
    c.transformer.update(dict(num_layers=1, d_model=8, num_heads=2, mlp_dim=16))
    c.hidden_size = 8
    results = bench_models.run(c)
    assert [r["model"] for r in results["study"]] == ["transformer", "lstm", "gru"]
    assert all(r["ratio"] > 0 and r["params"] > 0 for r in results["study"])
    assert {r["implementation"] for r in results["long"]} == {"blockwise", "dense"}
    assert [r["model"] for r in results["decode"]] == ["transformer_lm", "lstm"]
    assert all(r["cached_ms_per_token"] > 0 and r["uncached_ms_per_token"] > 0 for r in results["decode"])
    assert json.loads((tmp_path / "results.json").read_text())["study"] == json.loads(json.dumps(results["study"]))
    assert "| transformer | 2 x 4 |" in (tmp_path / "summary.md").read_text()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_plain_flax_transformer_has_attnjax_parameter_shapes():
    import jax
    import jax.numpy as jnp

    from attnjax.nn import build_model, count_params

    x = jnp.zeros((1, 4, 3))
    ours = build_model("transformer", 3, dict(num_layers=2, d_model=8, num_heads=2, mlp_dim=16))
    plain = bench_models.PlainFlaxTransformer(2, 8, 2, 16, 3)
    assert count_params(ours, x) == count_params(plain, x)
    shapes = lambda m: sorted(a.shape for a in jax.tree.leaves(jax.eval_shape(m.init, jax.random.key(0), x)))  # noqa: E731
    assert shapes(ours) == shapes(plain)


def test_bad_config_is_rejected_before_compiling():
    config = bench_config.get_config()
    config.study_settings = "32by40"
    with pytest.raises(ValueError, match="BATCHxLENGTH"):
        bench_models.check_config(config)
    config = bench_config.get_config()
    config.decode_setting = "32x40"
    with pytest.raises(ValueError, match="BATCHxPROMPTxTOKENS"):
        bench_models.check_config(config)
    config = bench_config.get_config()
    config.repeats = 0
    with pytest.raises(ValueError, match="config.repeats must be an int >= 1"):
        bench_models.check_config(config)
