"""Recipe: the default is make_optimizer's object, schedules follow their formula, bad fields are named."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from attnjax import train
from attnjax.train import Recipe, make_recipe_optimizer


def _params():
    return {"w": jnp.arange(1.0, 7.0).reshape(2, 3), "b": jnp.array([0.5, -2.0])}


def _grads(scale=1.0):
    return {"w": scale * jnp.array([[0.1, -0.2, 0.3], [0.4, -0.5, 0.6]]), "b": scale * jnp.array([1.0, -1.0])}


def _run(tx, steps=3):
    params = _params()
    state = tx.init(params)
    for i in range(steps):
        updates, state = tx.update(_grads(1.0 + i), state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_default_recipe_is_make_optimizer_object_and_updates_identically():
    recipe = Recipe()
    tx = make_recipe_optimizer(recipe)
    # The same cached object however make_optimizer is called (experiments pass two arguments).
    assert tx is train.make_optimizer(recipe.learning_rate, recipe.max_grad_norm, recipe.b1, recipe.b2)
    assert tx is train.make_optimizer(1e-3, 1.0) is train.make_optimizer(1e-3)
    assert tx is make_recipe_optimizer(Recipe(), num_steps=100)  # a constant rate ignores num_steps
    # Any Adam + constant recipe goes through make_optimizer, clipping off included.
    r = Recipe(learning_rate=3e-4, max_grad_norm=None, b2=0.98)
    assert make_recipe_optimizer(r) is train.make_optimizer(3e-4, None, 0.9, 0.98)
    fresh = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    chex.assert_trees_all_equal(_run(tx), _run(fresh))


def test_equal_recipes_share_one_cached_optimizer():
    a = Recipe(optimizer="adamw", weight_decay=0.1, schedule="warmup_cosine", warmup_steps=2)
    b = Recipe.from_mapping(a.to_dict())
    assert a == b and hash(a) == hash(b)
    assert make_recipe_optimizer(a, 10) is make_recipe_optimizer(b, 10)
    assert make_recipe_optimizer(a, 10) is not make_recipe_optimizer(a, 11)
    c = Recipe(optimizer="adamw", weight_decay=0.1)
    assert make_recipe_optimizer(c, 10) is make_recipe_optimizer(c, 20) is make_recipe_optimizer(c)


def test_warmup_cosine_schedule_follows_the_formula():
    lr, warmup, n, frac = 2e-3, 10, 110, 0.1
    recipe = Recipe(learning_rate=lr, schedule="warmup_cosine", warmup_steps=warmup, final_fraction=frac)
    fn = recipe.schedule_fn(n)
    end = frac * lr

    def expected(step):
        if step < warmup:
            return lr * step / warmup
        t = min(step - warmup, n - warmup) / (n - warmup)
        return end + (lr - end) * 0.5 * (1 + math.cos(math.pi * t))

    for step in (0, 5, warmup, 35, 60, n - 1, n, n + 50):
        np.testing.assert_allclose(float(fn(step)), expected(step), rtol=1e-5, atol=1e-9, err_msg=f"step {step}")
    assert float(fn(0)) == 0.0
    np.testing.assert_allclose(float(fn(warmup)), lr, rtol=1e-6)
    np.testing.assert_allclose(float(fn(n)), end, rtol=1e-6)
    # No warmup: starts at the peak; final_fraction 0 decays to 0.
    fn0 = Recipe(learning_rate=lr, schedule="warmup_cosine").schedule_fn(4)
    np.testing.assert_allclose([float(fn0(s)) for s in (0, 2, 4)], [lr, lr / 2, 0.0], rtol=1e-6, atol=1e-12)
    assert float(Recipe(learning_rate=lr).schedule_fn()(123)) == lr


def test_optimizer_uses_the_schedule():
    # Adam's first update is about -rate * sign(g): a warmup's first update is zero, the next is not.
    recipe = Recipe(schedule="warmup_cosine", warmup_steps=4, max_grad_norm=None)
    tx = make_recipe_optimizer(recipe, num_steps=20)
    params, grads = _params(), _grads()
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))
    updates, state = tx.update(grads, state, params)
    rate = float(recipe.schedule_fn(20)(1))  # 1e-3 / 4
    chex.assert_trees_all_close(updates, jax.tree.map(lambda g: -rate * jnp.sign(g), grads), rtol=1e-4)


def test_adamw_zero_gradient_update_decays_weights():
    lr, wd = 0.1, 0.01
    tx = make_recipe_optimizer(Recipe(optimizer="adamw", learning_rate=lr, weight_decay=wd))
    params = _params()
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    new = optax.apply_updates(params, updates)
    chex.assert_trees_all_close(new, jax.tree.map(lambda p: p * (1 - lr * wd), params), rtol=1e-6)


def test_to_dict_is_plain_json_and_round_trips():
    recipe = Recipe(optimizer="adamw", learning_rate=np.float32(0.5), schedule="warmup_cosine",
                    warmup_steps=np.int64(3), final_fraction=0.1, weight_decay=1, max_grad_norm=None)
    d = recipe.to_dict()
    assert list(d) == list(Recipe.field_names())
    assert type(d["learning_rate"]) is float and type(d["weight_decay"]) is float and type(d["warmup_steps"]) is int
    assert Recipe.from_mapping(json.loads(json.dumps(d))) == recipe


def test_from_mapping_parses_strings_and_accepts_config_dicts():
    cfg = ml_collections.ConfigDict(dict(optimizer="adamw", learning_rate="3e-4", weight_decay="0.05",
                                         schedule="warmup_cosine", warmup_steps="100", max_grad_norm="none"))
    recipe = Recipe.from_mapping(cfg)
    assert recipe == Recipe(optimizer="adamw", learning_rate=3e-4, weight_decay=0.05, schedule="warmup_cosine",
                            warmup_steps=100, max_grad_norm=None)
    assert Recipe.from_mapping({}) == Recipe()
    assert Recipe.from_mapping({"learning_rate": " 1e-2 "}).learning_rate == 0.01
    assert Recipe.from_mapping(recipe) is recipe


@pytest.mark.parametrize("mapping, match", [
    ({"lr": 1e-3}, r"unknown key\(s\) \['lr'\]; valid keys: \('optimizer', 'learning_rate', 'schedule'"),
    ({"learning_rate": "fast"}, r"Recipe\.learning_rate: cannot parse 'fast' as a number"),
    ({"warmup_steps": "1.5"}, r"Recipe\.warmup_steps: cannot parse '1\.5' as an int"),
    ({"max_grad_norm": "off"}, r"Recipe\.max_grad_norm: cannot parse 'off' as a number or 'none'"),
    ({"learning_rate": "-3e-4"}, r"Recipe\.learning_rate must be > 0, got -0\.0003"),
])
def test_from_mapping_errors(mapping, match):
    with pytest.raises(ValueError, match=match):
        Recipe.from_mapping(mapping)


def test_from_mapping_rejects_non_mappings():
    with pytest.raises(TypeError, match="mapping must be a mapping"):
        Recipe.from_mapping([("optimizer", "adam")])


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="sgd"), r"Recipe\.optimizer must be one of \('adam', 'adamw'\), got 'sgd'"),
    (dict(schedule="cosine"), r"Recipe\.schedule must be one of \('constant', 'warmup_cosine'\), got 'cosine'"),
    (dict(learning_rate=0.0), r"Recipe\.learning_rate must be > 0, got 0\.0"),
    (dict(learning_rate=-1e-3), r"Recipe\.learning_rate must be > 0, got -0\.001"),
    (dict(learning_rate=float("nan")), r"Recipe\.learning_rate must be finite, got nan"),
    (dict(schedule="warmup_cosine", warmup_steps=-1), r"Recipe\.warmup_steps must be >= 0, got -1"),
    (dict(schedule="warmup_cosine", final_fraction=1.5), r"Recipe\.final_fraction must be in \[0, 1\], got 1\.5"),
    (dict(schedule="warmup_cosine", final_fraction=-0.1), r"Recipe\.final_fraction must be in \[0, 1\], got -0\.1"),
    (dict(optimizer="adamw", weight_decay=-0.1), r"Recipe\.weight_decay must be >= 0, got -0\.1"),
    (dict(max_grad_norm=0.0), r"Recipe\.max_grad_norm must be > 0 or None, got 0\.0"),
    (dict(b1=1.0), r"Recipe\.b1 must be in \[0, 1\), got 1\.0"),
    (dict(b2=-0.5), r"Recipe\.b2 must be in \[0, 1\), got -0\.5"),
    (dict(weight_decay=0.1), r"Recipe\.weight_decay=0\.1 needs optimizer='adamw', got optimizer='adam'"),
    (dict(warmup_steps=5), r"Recipe\.warmup_steps=5 needs schedule='warmup_cosine', got schedule='constant'"),
    (dict(final_fraction=0.1), r"Recipe\.final_fraction=0\.1 needs schedule='warmup_cosine', got schedule='constant'"),
])
def test_bad_fields_raise_value_error_naming_field_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Recipe(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(learning_rate="3e-4"), r"Recipe\.learning_rate must be a real number, got '3e-4' \(str\); parse strings"),
    (dict(learning_rate=True), r"Recipe\.learning_rate must be a real number, got True \(bool\)"),
    (dict(max_grad_norm="1.0"), r"Recipe\.max_grad_norm must be a real number or None, got '1\.0'"),
    (dict(warmup_steps=2.0), r"Recipe\.warmup_steps must be an int, got 2\.0 \(float\)"),
    (dict(optimizer=None), r"Recipe\.optimizer must be a str, got None"),
])
def test_wrong_types_raise_type_error(kwargs, match):
    with pytest.raises(TypeError, match=match):
        Recipe(**kwargs)


def test_num_steps_checks():
    cosine = Recipe(schedule="warmup_cosine", warmup_steps=10)
    with pytest.raises(ValueError, match=r"num_steps is required for schedule='warmup_cosine'"):
        make_recipe_optimizer(cosine)
    with pytest.raises(ValueError, match=r"Recipe\.warmup_steps=10 must be < num_steps=10"):
        make_recipe_optimizer(cosine, 10)
    with pytest.raises(ValueError, match=r"num_steps must be >= 1, got 0"):
        cosine.schedule_fn(0)
    with pytest.raises(TypeError, match=r"num_steps must be an int or None, got 100\.0"):
        make_recipe_optimizer(Recipe(), 100.0)
    with pytest.raises(TypeError, match=r"recipe must be a Recipe .*got dict"):
        make_recipe_optimizer({"optimizer": "adam"})
