"""Model adapters (jaxerr.flax for linen and nnx, jaxerr.keras for Keras 3) and the
generated primitive table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxerr
import jaxerr.flax as jflax

try:
    from _soundness import check
except ImportError:  # pragma: no cover
    from tests._soundness import check

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("lo", "hi", "abs_err", "computed_lo", "computed_hi")


def _same(a, b):
    for k in FIELDS:
        np.testing.assert_allclose(np.asarray(getattr(a, k)), np.asarray(getattr(b, k)), rtol=1e-6, atol=0)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(8)(x))
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(3)(x)


def _linen():
    m = MLP()
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 5)), np.float32)
    v = m.init(jax.random.PRNGKey(1), x)
    return m, v, x


@pytest.mark.parametrize("box", [pytest.param(False, marks=pytest.mark.slow), True])
def test_linen_adapter_matches_bound_and_is_sound(box):
    m, v, x = _linen()
    arg = jaxerr.Interval(x - 0.01, x + 0.01) if box else x
    out = jflax.bound_linen(m, v, "bfloat16", warn=False)(arg)
    ref = jaxerr.bound(lambda x: m.apply(v, x), "bfloat16", warn=False)(arg)
    _same(out, ref)
    assert not check(lambda x: m.apply(v, x), [x], precision="bfloat16", radius=0.01 if box else 0.0,
                     n_samples=3)


@pytest.mark.slow
def test_linen_weights_exact_bounds_the_arithmetic_only():
    m, v, x = _linen()
    rounded = jflax.bound_linen(m, v, "bfloat16", warn=False)(x)
    exact = jflax.bound_linen(m, v, "bfloat16", weights="exact", warn=False)(x)
    # the reference is the model with bfloat16 weights
    v_bf = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16).astype(a.dtype), v)
    _same(exact, jaxerr.bound(lambda x: m.apply(v_bf, x), "bfloat16", warn=False)(x))
    assert np.all(np.asarray(exact.abs_err) <= np.asarray(rounded.abs_err))
    assert np.any(np.asarray(exact.abs_err) < np.asarray(rounded.abs_err))
    # as written both coincide
    _same(jflax.bound_linen(m, v, weights="exact", warn=False)(x), jflax.bound_linen(m, v, warn=False)(x))
    with pytest.raises(ValueError, match="weights"):
        jflax.bound_linen(m, v, "bfloat16", weights="bogus")


@pytest.mark.slow
def test_linen_adapter_under_vmap_and_apply_kwargs():
    m, v, x = _linen()
    g = jflax.bound_linen(m, v, "float16", warn=False)
    batched = jax.vmap(lambda t: g(t[None], train=False))(x)
    one = g(x[1:2], train=False)
    np.testing.assert_allclose(np.asarray(batched.abs_err)[1], np.asarray(one.abs_err), rtol=1e-6)


class NNXModel(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(5, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.l2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.drop(self.bn(nnx.gelu(self.l1(x)))))


@pytest.mark.parametrize("box", [pytest.param(False, marks=pytest.mark.slow), True])
def test_nnx_adapter_sound(box):
    mod = NNXModel(nnx.Rngs(0))
    mod.eval()
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (2, 5)), np.float32)
    arg = jaxerr.Interval(x - 0.01, x + 0.01) if box else x
    out = jflax.bound_nnx(mod, "bfloat16", warn=False)(arg)
    assert np.all(np.isfinite(np.asarray(out.abs_err)))
    _same(out, jflax.bound_model(mod, precision="bfloat16", warn=False)(arg))
    graphdef, state = nnx.split(mod)

    def f(x):
        return nnx.merge(graphdef, state)(x)

    _same(out, jaxerr.bound(f, "bfloat16", warn=False)(arg))
    if not box:
        assert not check(f, [x], precision="bfloat16", n_samples=3)


# ---------------------------------------------------------------------------
# Keras 3 (optional dependency: skipped without keras)
# ---------------------------------------------------------------------------


def _keras_model(keras):
    m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    m.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5 for w in m.get_weights()])
    return m


# keras' import and model building take ~15-40 s on 2 cores: under -m slow
@pytest.mark.slow
def test_keras_dense_relu_save_load_sound(tmp_path):
    jkeras = pytest.importorskip("jaxerr.keras")
    import keras

    with jax.numpy_rank_promotion("allow"):  # Keras' Dense adds a (n,) bias to (b, n)
        _keras_case(jkeras, keras, tmp_path)


def _keras_case(jkeras, keras, tmp_path):
    m = _keras_model(keras)
    path = tmp_path / "m.keras"
    m.save(path)
    loaded = keras.saving.load_model(path)  # from the file: no network
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (2, 5)), np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(m(x)), rtol=1e-6)
    tv = [v.value for v in loaded.trainable_variables]

    def f(x):
        return loaded.stateless_call(tv, [], x, training=False)[0]

    arg = jaxerr.Interval(x - 0.01, x + 0.01)
    out = jkeras.bound_keras(loaded, "bfloat16", warn=False)(arg)
    _same(out, jaxerr.bound(f, "bfloat16", warn=False)(arg))
    assert not check(f, [x], precision="bfloat16", radius=0.01, n_samples=3)
    # jit/vmap compose
    g = jkeras.bound_keras(loaded, "float16", warn=False)
    batched = jax.jit(jax.vmap(lambda t: g(t[None])))(x)
    np.testing.assert_allclose(np.asarray(batched.abs_err)[1], np.asarray(g(x[1:2]).abs_err), rtol=1e-6)


# ---------------------------------------------------------------------------
# the generated primitive table
# ---------------------------------------------------------------------------


def test_primitive_table_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_primitive_table", ROOT / "scripts" / "gen_primitive_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    expected = mod.render()
    current = (ROOT / "docs" / "primitives.md").read_text()
    assert current == expected, (
        "docs/primitives.md disagrees with the rule registries: run "
        "python scripts/gen_primitive_table.py and commit the result")
    for name in ("scan", "while", "cond", "dot_general"):
        assert f"| `{name}` |" in current


def test_flax_weights_from_a_file(tmp_path):
    """Weights saved to a file (``flax.serialization``, msgpack; no network) and loaded
    into a fresh template give the same bounds as the in-memory variables, for linen and
    for an nnx module rebuilt from its saved state."""
    from flax import serialization

    m, v, x = _linen()
    path = tmp_path / "mlp.msgpack"
    path.write_bytes(serialization.to_bytes(v))
    template = m.init(jax.random.PRNGKey(7), x)  # other values, same structure
    loaded = serialization.from_bytes(template, path.read_bytes())
    _same(jflax.bound_linen(m, loaded, "bfloat16", warn=False)(x),
          jflax.bound_linen(m, v, "bfloat16", warn=False)(x))

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(5, 4, rngs=rngs)
            self.b = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.b(jnp.tanh(self.a(x)))

    net = Net(nnx.Rngs(0))
    npath = tmp_path / "net.msgpack"
    npath.write_bytes(serialization.to_bytes(nnx.state(net).to_pure_dict()))
    fresh = Net(nnx.Rngs(1))
    state = nnx.state(fresh)
    state.replace_by_pure_dict(serialization.from_bytes(state.to_pure_dict(), npath.read_bytes()))
    nnx.update(fresh, state)
    _same(jflax.bound_nnx(fresh, "bfloat16", warn=False)(x), jflax.bound_nnx(net, "bfloat16", warn=False)(x))
