"""The public API: argument handling, result structure, jit/vmap composition,
diagnostics, unsupported primitives and bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxerr

try:
    import _soundness
except ImportError:  # pragma: no cover
    from tests import _soundness


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.gelu(nn.Dense(16)(x))
        return jax.nn.softmax(nn.Dense(3)(x))


@pytest.fixture(scope="module")
def mlp():
    m = MLP()
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
    v = m.init(jax.random.PRNGKey(0), x)
    return m, v, x


def _assert_bounds_equal(a, b, rtol=0.0):
    for f in ("lo", "hi", "abs_err", "rel_err", "value"):
        np.testing.assert_allclose(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), rtol=rtol, atol=0)


def test_result_is_bound_pytree_shaped_like_output(mlp):
    m, v, x = mlp
    out = jaxerr.bound(m.apply)(v, x)
    assert isinstance(out, jaxerr.Bound)
    assert out.lo.shape == out.hi.shape == out.abs_err.shape == (4, 3)
    assert np.all(np.asarray(out.lo) <= np.asarray(out.hi))
    assert np.all(np.asarray(out.abs_err) >= 0)
    # value is the program's own output at the point
    np.testing.assert_allclose(out.value, m.apply(v, x), rtol=1e-6)


def test_pytree_outputs_and_kwargs():
    def f(x, *, scale):
        return {"a": x * scale, "b": (jnp.sum(x), jnp.argmax(x))}

    x = jnp.arange(5.0)
    out = jaxerr.bound(f)(x, scale=jnp.float32(3.0))
    assert set(out) == {"a", "b"}
    assert isinstance(out["b"][1], jaxerr.Bound)
    assert int(out["b"][1].value) == 4
    assert int(out["b"][1].lo) == int(out["b"][1].hi) == 4  # certain at a point


def test_point_and_interval_in_same_pytree(mlp):
    m, v, x = mlp
    box = jaxerr.Interval(x - 0.01, x + 0.01)
    pt = jaxerr.bound(m.apply, "bfloat16")(v, x)
    bx = jaxerr.bound(m.apply, "bfloat16")(v, box)
    # the box result encloses the point result
    assert np.all(np.asarray(bx.lo) <= np.asarray(pt.lo))
    assert np.all(np.asarray(bx.hi) >= np.asarray(pt.hi))


class Small(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jnp.tanh(nn.Dense(3)(nn.relu(nn.Dense(8)(x))))


@pytest.mark.parametrize(
    "precision", [pytest.param(None, marks=pytest.mark.slow), "bfloat16", pytest.param("float16", marks=pytest.mark.slow)]
)
def test_jit_vmap_compose_and_agree(precision):
    m = Small()
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
    v = m.init(jax.random.PRNGKey(0), x)
    g = jaxerr.bound(m.apply, precision)
    eager = g(v, x)
    _assert_bounds_equal(jax.jit(g)(v, x), eager)
    _assert_bounds_equal(jaxerr.bound(jax.jit(m.apply), precision)(v, x), eager)
    xs = jnp.stack([x, x * 0.5, -x])
    vm = jax.vmap(g, in_axes=(None, 0))(v, xs)
    jvm = jax.jit(jax.vmap(g, in_axes=(None, 0)))(v, xs)
    for i, xi in enumerate([x, x * 0.5, -x]):
        one = g(v, xi)
        _assert_bounds_equal(jax.tree_util.tree_map(lambda t: t[i], vm), one, rtol=1e-6)
        _assert_bounds_equal(jax.tree_util.tree_map(lambda t: t[i], jvm), one, rtol=1e-6)


def test_vmap_over_interval_boxes():
    f = lambda x: jnp.exp(x) * 2.0 - x  # noqa: E731
    lo = jnp.array([[0.0, 1.0], [-1.0, 0.5]])
    g = jaxerr.bound(f, "bfloat16")
    out = jax.vmap(g)(jaxerr.Interval(lo, lo + 0.1))
    for i in range(2):
        one = g(jaxerr.Interval(lo[i], lo[i] + 0.1))
        np.testing.assert_allclose(out.abs_err[i], one.abs_err, rtol=1e-6)


def test_no_jit_path_matches():
    f = lambda x: jnp.tanh(x) * x  # noqa: E731
    x = jnp.linspace(-2, 2, 7)
    _assert_bounds_equal(jaxerr.bound(f, jit=False)(x), jaxerr.bound(f)(x), rtol=1e-6)


def test_unsupported_primitives_listed_at_once():
    def f(x):
        return jnp.sin(x) + jnp.cos(x) + jnp.sin(x * 2) + jnp.arctan2(x, x)

    with pytest.raises(jaxerr.UnsupportedPrimitiveError) as e:
        jaxerr.bound(f)(jnp.ones(3))
    msg = str(e.value)
    assert "`sin` used 2 time(s)" in msg
    assert "`cos`" in msg and "`atan2`" in msg
    assert "register_rule" in msg


def test_unsupported_inside_jit_is_found():
    @jax.jit
    def inner(x):
        return jnp.sin(x)

    with pytest.raises(jaxerr.UnsupportedPrimitiveError, match="sin"):
        jaxerr.bound(lambda x: inner(x) * 2)(jnp.ones(3))


def test_bad_interval_raises_value_error():
    with pytest.raises(ValueError, match="lo > hi"):
        jaxerr.Interval(jnp.array([1.0, 2.0]), jnp.array([0.0, 3.0]))
    with pytest.raises(ValueError, match="NaN"):
        jaxerr.Interval(jnp.array([jnp.nan]), jnp.array([1.0]))


def test_nan_point_raises_value_error():
    with pytest.raises(ValueError, match="NaN"):
        jaxerr.bound(jnp.exp)(jnp.array([1.0, jnp.nan]))


def test_bad_interval_under_jit_gives_inf_and_diagnostic():
    g = jax.jit(jaxerr.bound(lambda x: x * 2.0))
    iv = jaxerr.Interval.__new__(jaxerr.Interval)
    iv.lo, iv.hi = jnp.array([2.0]), jnp.array([1.0])
    out = g(iv)
    assert np.isinf(np.asarray(out.abs_err)).all()
    assert any("lo > hi" in m for m in out.diagnostics.fired())


def test_unknown_format_and_accumulation_errors():
    with pytest.raises(ValueError, match="unknown format"):
        jaxerr.bound(jnp.exp, "float7")
    with pytest.raises(ValueError, match="accumulation"):
        jaxerr.bound(jnp.exp, accumulation="sideways")
    with pytest.raises(ValueError, match="block size"):
        jaxerr.bound(jnp.exp, accumulation="blocked:0")


def test_overflow_gives_inf_and_names_equation():
    f = lambda x: jnp.exp(x) * 3.0  # noqa: E731
    with pytest.warns(jaxerr.JaxerrWarning, match="exp.*float16's largest finite"):
        out = jaxerr.bound(f, "float16")(jnp.array([1.0, 12.0]))
    assert np.isfinite(out.abs_err[0]) and np.isinf(out.abs_err[1])


def test_infinite_gamma_is_reported_not_divided():
    w = jnp.ones((512, 4), jnp.float32) * 0.01
    x = jnp.ones((2, 512), jnp.float32)
    with pytest.warns(jaxerr.JaxerrWarning, match="gamma_512.*infinite"):
        out = jaxerr.bound(lambda x, w: x @ w, "bfloat16", accumulation="recursive")(x, w)
    assert np.isinf(np.asarray(out.abs_err)).all()
    ok = jaxerr.bound(lambda x, w: x @ w, "bfloat16", accumulation="pairwise")(x, w)
    assert np.isfinite(np.asarray(ok.abs_err)).all()


def test_uncertain_integer_output_has_diagnostic():
    f = lambda x: jnp.argmax(x)  # noqa: E731
    with pytest.warns(jaxerr.JaxerrWarning, match="uncertain"):
        out = jaxerr.bound(f)(jaxerr.Interval(jnp.array([0.0, 0.0]), jnp.array([1.0, 1.0])))
    assert int(out.lo) == 0 and int(out.hi) == 1
    sure = jaxerr.bound(f)(jaxerr.Interval(jnp.array([0.0, 2.0]), jnp.array([1.0, 3.0])))
    assert int(sure.lo) == int(sure.hi) == 1


def test_division_by_range_containing_zero():
    with pytest.warns(jaxerr.JaxerrWarning, match="divisor"):
        out = jaxerr.bound(lambda x: 1.0 / x)(jaxerr.Interval(jnp.array([-1.0]), jnp.array([1.0])))
    assert np.isinf(out.abs_err).all()


def test_log_of_negative_range():
    with pytest.warns(jaxerr.JaxerrWarning, match="log"):
        out = jaxerr.bound(jnp.log)(jaxerr.Interval(jnp.array([-1.0]), jnp.array([1.0])))
    assert np.isinf(out.abs_err).all()


def test_register_rule_extends_the_registry():
    p = jax.lax.sin_p
    assert p not in jaxerr.interval_rules

    def sin_rule(ctx, a, **params):
        # |sin'| <= 1; exact range [-1, 1]; crude but sound
        import jaxerr._formats as F

        one = jnp.ones_like(a.lo)
        rho = F.add_up(F.scale_up(one, 16 * 2.0**-24), 1e-30)
        err = F.add_up(a.err, rho)
        return jaxerr.Real(-one, one, -one - rho, one + rho, err, ctx.value(a.value))

    jaxerr.register_rule(p)(sin_rule)
    try:
        out = jaxerr.bound(jnp.sin)(jnp.array([0.5]))
        assert float(out.abs_err[0]) > 0
    finally:
        del jaxerr.interval_rules[p]


def test_formats_presets_match_ml_dtypes():
    import ml_dtypes

    for name, dt in [
        ("float32", np.float32), ("float16", np.float16), ("bfloat16", ml_dtypes.bfloat16),
        ("float8_e4m3fn", ml_dtypes.float8_e4m3fn), ("float8_e5m2", ml_dtypes.float8_e5m2),
        ("float64", np.float64),
    ]:
        fmt = jaxerr.FORMATS[name]
        fi = ml_dtypes.finfo(dt)
        assert fmt.max_finite == float(fi.max), name
        assert fmt.smallest_normal == float(fi.smallest_normal), name
        assert fmt.smallest_subnormal == float(fi.smallest_subnormal), name
        assert fmt.unit_roundoff == float(fi.eps) / 2, name


def test_custom_format_and_gamma():
    f = jaxerr.Format.custom(precision=5, emin=-6, emax=7)
    assert f.unit_roundoff == 2.0**-5
    assert f.max_finite == (2 - 2.0**-4) * 2.0**7
    assert jaxerr.gamma(256, 2.0**-8) == float("inf")
    assert jaxerr.gamma(10, 2.0**-24) >= 10 * 2.0**-24 / (1 - 10 * 2.0**-24)
    out = jaxerr.bound(lambda x: x * 3.0 + 1.0, f)(jnp.array([1.3]))
    assert np.isfinite(out.abs_err).all() and float(out.abs_err[0]) > 0


def test_interval_around_contains_the_real_box():
    iv = jaxerr.Interval.around(np.array([0.1, 1.0 / 3.0]), 1e-3, dtype=np.float32)
    lo, hi = np.asarray(iv.lo, np.float64), np.asarray(iv.hi, np.float64)
    assert np.all(lo <= np.array([0.1, 1 / 3]) - 1e-3)
    assert np.all(hi >= np.array([0.1, 1 / 3]) + 1e-3)
    assert iv.dtype == np.float32


def test_rel_err_semantics():
    # exact result bounded away from 0: rel_err = abs_err / min|exact|
    out = jaxerr.bound(lambda x: x * 3.0 + 1.0, "bfloat16")(jnp.array([2.0]))
    assert float(out.rel_err[0]) >= float(out.abs_err[0]) / float(out.hi[0]) > 0
    # an enclosure that touches 0 has no finite relative bound
    out = jaxerr.bound(lambda x: x * 3.0, "bfloat16")(jaxerr.Interval(jnp.array([-1.0]), jnp.array([1.0])))
    assert np.isinf(out.rel_err).all()
    # an exactly computed result has zero error
    out = jaxerr.bound(lambda x: -x)(jnp.array([0.0, 2.0]))
    assert np.all(np.asarray(out.abs_err) == 0) and np.all(np.asarray(out.rel_err) == 0)


def test_float64_inputs_are_rounded_once_not_through_float32(x64):
    """1 + 2^-8 + 2^-40 rounds to 1 + 2^-7 in bfloat16; through float32 it would tie to 1."""
    x = np.array([1 + 2**-8 + 2**-40, -(1 + 2**-8 + 2**-40)], np.float64)
    b = jaxerr.bound(lambda x: x * 1.0, precision="bfloat16", warn=False)(x)
    np.testing.assert_array_equal(np.asarray(b.value, np.float64), [1 + 2**-7, -(1 + 2**-7)])
    assert np.all(np.asarray(b.abs_err) >= 2**-8 - 2**-40)
    for dom in ("interval", "first_order"):
        v = _soundness.check(lambda x: x * 1.0, [x], precision="bfloat16", n_samples=1, domain=dom)
        assert not v, v
