"""Per-layer precision (LayerPrecision), jaxerr.tune and its cost model; the chosen
mixed-format program is checked against the independent simulator."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxerr
from jaxerr._formats import LayerPrecision, as_format, contains

try:
    import _simulator as S
except ImportError:  # pragma: no cover
    from tests import _simulator as S


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(8)(x))
        x = nn.relu(nn.Dense(8)(x))
        return nn.Dense(3)(x)


@pytest.fixture(scope="module")
def net():
    m = _Net()
    v = m.init(jax.random.PRNGKey(1), jnp.ones(6))
    x = np.asarray(jnp.linspace(-1.0, 1.0, 6))
    return (lambda v, x: m.apply(v, x)), v, x


def test_layer_precision_resolution():
    lp = LayerPrecision.of({"": "float32", "Net/Dense_0": "bfloat16", "Net": "float16"})
    assert lp.resolve("Net/Dense_0").name == "bfloat16"
    assert lp.resolve("Net/Dense_0/inner").name == "bfloat16"
    assert lp.resolve("Net").name == "float16" and lp.resolve("Net/Dense_1").name == "float16"
    assert lp.resolve("Other").name == "float32" and lp.resolve("Net2").name == "float32"
    assert LayerPrecision.of(lambda n: "bfloat16" if n.endswith("_0") else "float32").resolve("a/D_0").name == "bfloat16"
    assert contains(as_format("float32"), as_format("bfloat16"))
    assert contains(as_format("float32"), as_format("float16"))
    assert not contains(as_format("float16"), as_format("bfloat16"))  # range
    assert not contains(as_format("bfloat16"), as_format("float16"))  # precision
    with pytest.raises(ValueError, match="interval"):
        jaxerr.bound(lambda x: x * 2, {"": "float32"}, domain="first_order")(jnp.ones(2))


@pytest.mark.slow
def test_uniform_mapping_equals_single_format(net):
    f, v, x = net
    a = jaxerr.bound(f, "bfloat16", jit=False)(v, x)
    b = jaxerr.bound(f, {"": "bfloat16"}, jit=False)(v, x)
    np.testing.assert_array_equal(np.asarray(a.abs_err), np.asarray(b.abs_err))


def _sim_check(f, v, x, spec, radius=0.0, n=3):
    """Violations of the per-layer bound against simulated mixed-format executions."""
    lp = LayerPrecision.of(spec)
    arg = x if not radius else jaxerr.Interval.around(x, radius)
    b = jaxerr.bound(f, spec, jit=False, warn=False)(v, arg)
    rng = np.random.default_rng(0)
    bad = []
    pts = [x] if not radius else [x + rng.uniform(-radius, radius, x.shape) * 0.999 for _ in range(n)]
    for pt in pts:
        ex = np.asarray(S.exact(f, [v, pt])[0], np.float64)
        assert np.all((np.asarray(b.lo) <= ex) & (ex <= np.asarray(b.hi)))
        for acc, order in (("wide:float32", "sequential"), ("wide:float32", "random")):
            for flush in (False, True):
                sim = np.asarray(S.simulate(f, [v, pt], fmt=lp.default.name, accumulation=acc, order=order,
                                            rng=rng, flush=flush,
                                            layer_fmt=lambda nm: lp.resolve(nm).name)[0], np.float64)
                if not np.all(np.abs(sim - ex) <= np.asarray(b.abs_err)):
                    bad.append((spec, acc, order, flush, np.abs(sim - ex), b.abs_err))
                if not np.all((np.asarray(b.computed_lo) <= sim) & (sim <= np.asarray(b.computed_hi))):
                    bad.append(("computed range", spec, sim))
    return bad


@pytest.mark.parametrize("spec", [
    {"": "float32", "_Net/Dense_1": "bfloat16", "_Net": "float16"},
    pytest.param({"": "bfloat16", "_Net/Dense_0": "float32", "_Net/Dense_2": "float8_e4m3fn"},
                 marks=pytest.mark.slow),
])
def test_mixed_formats_sound_against_simulator(net, spec):
    f, v, x = net
    assert _sim_check(f, v, x, spec) == []


def test_tune_meets_target_and_is_sound(net):
    f, v, x = net
    full = jaxerr.bound(f, "float32", jit=False)(v, x)
    bf = jaxerr.bound(f, "bfloat16", jit=False)(v, x)
    target = float(np.max(bf.abs_err)) / 4  # bfloat16 everywhere is not enough
    assert float(np.max(full.abs_err)) < target
    res = jaxerr.tune(f, (v, x), target=target, candidates=["float32", "bfloat16"])
    assert res.target.met(res.bounds) and res.achieved <= target
    assert set(res.assignment) == {"_Net/Dense_0", "_Net", "_Net/Dense_1", "_Net/Dense_2"}
    assert "bfloat16" in res.assignment.values() and "float32" in res.assignment.values()
    assert 0 < res.saving < 0.5
    # the cost model: bits x operations
    ops = res.operations
    assert ops["_Net/Dense_0"] == 2 * 6 * 8 + 8  # dot (multiply-add per term) + bias add
    cost = sum(ops[n] * (16 if res.assignment[n] == "bfloat16" else 32) for n in ops)
    assert res.cost == cost and res.baseline_cost == 32 * sum(ops.values())
    # the returned bounds are those of the chosen assignment
    again = jaxerr.bound(f, res.precision, jit=False)(v, x)
    np.testing.assert_array_equal(np.asarray(again.abs_err), np.asarray(res.bounds.abs_err))
    # and they hold for simulated executions of the mixed program
    assert _sim_check(f, v, x, res.precision) == []


@pytest.mark.slow
def test_tune_argmax_over_box(net):
    f, v, x = net
    box = jaxerr.Interval.around(x, 1e-3)
    res = jaxerr.tune(f, (v, box), target="argmax", candidates=["float32", "bfloat16", "float16"])
    assert res.achieved > 0
    from jaxerr.tune import certified_margin

    assert certified_margin(res.bounds) == res.achieved


@pytest.mark.slow
def test_tune_impossible_target(net):
    f, v, x = net
    with pytest.raises(ValueError, match="not met even with every layer"):
        jaxerr.tune(f, (v, x), target=1e-30, candidates=["float32", "bfloat16"])


def test_target_parsing():
    T = jaxerr.Target
    assert T.parse(1e-3) == T("abs", 1e-3) and T.parse("rel:0.01") == T("rel", 0.01)
    assert T.parse({"abs": 2}) == T("abs", 2.0) and T.parse("argmax").kind == "argmax"
    with pytest.raises(ValueError, match="target"):
        T.parse("nonsense")


def test_layer_operations_counts_convolution_terms():
    """A convolution costs a multiply-add per kernel term per output (not one op per output)."""
    from jaxerr.tune import layer_operations

    w = jnp.ones((3, 3, 8, 16))  # HWIO

    def f(x, w):
        with jax.named_scope("conv"):
            return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    ops = layer_operations(f, (jnp.ones((4, 4, 4, 8)), w))
    assert ops == {"conv": 2 * 72 * 4 * 4 * 4 * 16}
