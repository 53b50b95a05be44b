"""domain="affine" against the independent simulator, and its correlation properties.

Every test here switches off the final intersection with the interval bounds
(``jaxerr._bound._AFFINE_CAP``) so that the affine domain is checked on its own: a
wrong affine rule must not hide behind a tighter interval result.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxerr
import jaxerr._bound as _B
from jaxerr._domains.affine import Affine, Form

try:
    from _soundness import check
    from test_soundness import OPS, _centres
except ImportError:  # pragma: no cover
    from tests._soundness import check
    from tests.test_soundness import OPS, _centres


@pytest.fixture(autouse=True)
def affine_alone(monkeypatch):
    monkeypatch.setattr(_B, "_AFFINE_CAP", False)


# one op per rule family in the default run; everything under -m slow
_FAST_OPS = {"tanh", "relu"}


def _op_params(formats, fast_formats):
    out = []
    for op in OPS:
        for f in formats:
            fast = op[0] in _FAST_OPS and f in fast_formats
            out.append(pytest.param(op, f, id=f"{op[0]}-{f}", marks=() if fast else (pytest.mark.slow,)))
    return out


@pytest.mark.parametrize("op,precision", _op_params([None, "bfloat16", "float16", "float8_e4m3fn"], {"bfloat16"}))
def test_affine_sound_at_point(op, precision):
    name, fn, gens, _ = op
    v = check(fn, _centres(gens, 1), precision=precision, n_samples=1, domain="affine")
    assert not v, "\n".join(v[:10])


@pytest.mark.parametrize("op,precision", _op_params([None, "bfloat16", "float16"], set()))
def test_affine_sound_over_box(op, precision):
    name, fn, gens, radius = op
    if radius == 0:
        pytest.skip("point-only op")
    v = check(fn, _centres(gens, 2), precision=precision, radius=radius, n_samples=4, domain="affine")
    assert not v, "\n".join(v[:10])


def test_x_minus_x_is_exactly_zero():
    x = jnp.linspace(-1.0, 1.0, 8)
    out = jaxerr.bound(lambda t: t - t, "bfloat16", domain="affine")(jaxerr.Interval(x - 0.5, x + 0.5))
    assert np.all(np.asarray(out.lo) == 0) and np.all(np.asarray(out.hi) == 0)
    # 0 up to the analysis' smallest normal: x^ - x^ is 0 only where x^ is finite, so the
    # error is a (zero) form that can carry inf, and its magnitude is rounded up
    assert np.all(np.asarray(out.abs_err) <= np.finfo(np.float32).tiny)
    # the interval domain cannot see it
    iv = jaxerr.bound(lambda t: t - t, "bfloat16")(jaxerr.Interval(x - 0.5, x + 0.5))
    assert np.all(np.asarray(iv.hi) >= 0.99)


def _mlp(depth=3, width=16, seed=0):
    rng = np.random.default_rng(seed)
    ws = [(rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32) for _ in range(depth)]

    def f(x):
        for i, w in enumerate(ws):
            x = x @ w
            if i < depth - 1:
                x = jnp.tanh(x)
        return x

    return f, rng.standard_normal((1, width)).astype(np.float32)


@pytest.mark.slow
def test_affine_much_tighter_than_interval_over_a_box():
    """Correlations: over an input box the exact range and the error bound of a 3-layer
    net shrink by a large factor (the interval domain widens by |W| at every layer)."""
    f, x = _mlp()
    box = jaxerr.Interval(x - 0.05, x + 0.05)
    iv = jaxerr.bound(f, "bfloat16")(box)
    af = jaxerr.bound(f, "bfloat16", domain="affine")(box)
    w_iv = np.median(np.asarray(iv.hi - iv.lo))
    w_af = np.median(np.asarray(af.hi - af.lo))
    assert w_af < w_iv / 2, (w_af, w_iv)
    assert np.median(np.asarray(af.abs_err)) < np.median(np.asarray(iv.abs_err)) / 1.5
    v = check(f, [x], precision="bfloat16", radius=0.05, n_samples=4, domain="affine")
    assert not v, "\n".join(v[:10])


@pytest.mark.slow
def test_tiny_symbol_budget_is_sound_and_recycles():
    """With 4 symbols for 16-wide layers nothing fits (no promotion) and with 20 the
    slots are reused round-robin: folding must keep every bound valid."""
    f, x = _mlp(depth=4, width=16, seed=1)
    for k in (4, 20):
        v = check(f, [x], precision="bfloat16", radius=0.01, n_samples=3, domain="affine", symbols=k)
        assert not v, "\n".join(v[:10])


@pytest.mark.slow
def test_first_order_limit_reached_on_a_small_net_in_float32():
    """At a point in float32 the affine bound of dot-tanh-dot is the first-order one:
    within a few percent of what a per-event sensitivity computation gives."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((32, 32)) / 6).astype(np.float32)
    w2 = (rng.standard_normal((32, 32)) / 6).astype(np.float32)
    x = rng.standard_normal((1, 32)).astype(np.float32)

    def f(t):
        return jnp.tanh(t @ w1) @ w2

    af = jaxerr.bound(f, None, accumulation="recursive", domain="affine")(jnp.asarray(x))
    iv = jaxerr.bound(f, None, accumulation="recursive")(jnp.asarray(x))
    # independent first-order estimate: gamma-weighted events, each with its exact sensitivity
    u = 2.0**-24
    h = np.asarray(x, np.float64) @ w1
    t = np.tanh(h)
    d = 1 - t**2
    g32 = 32 * u / (1 - 32 * u)
    E1 = g32 * (np.abs(x) @ np.abs(w1))  # dot 1
    E2 = 10 * u * np.abs(t) + u * np.abs(t)  # tanh budget (float32: 10 u_C, plus eta)
    E3 = g32 * (np.abs(t) @ np.abs(w2))  # dot 2
    L = (E1 * d) @ np.abs(w2) + E2 @ np.abs(w2) + E3
    ratio = np.asarray(af.abs_err, np.float64) / L
    assert np.max(ratio) < 1.1, ratio
    assert np.all(np.asarray(af.abs_err) <= np.asarray(iv.abs_err) * 1.0001)
    v = check(f, [x], precision=None, accumulation="recursive", n_samples=1, domain="affine")
    assert not v, "\n".join(v[:10])


@pytest.mark.slow
def test_jit_and_vmap_compose():
    f, x = _mlp(depth=2, width=8)
    g = jaxerr.bound(f, "bfloat16", domain="affine", warn=False)
    box = jaxerr.Interval(x - 0.01, x + 0.01)
    eager = g(box)
    jitted = jax.jit(g)(box)
    np.testing.assert_array_equal(np.asarray(eager.abs_err), np.asarray(jitted.abs_err))
    xs = np.stack([x, x + 0.5, x - 0.25])
    vm = jax.vmap(g)(jaxerr.Interval(jnp.asarray(xs) - 0.01, jnp.asarray(xs) + 0.01))
    np.testing.assert_allclose(np.asarray(vm.abs_err[0]), np.asarray(eager.abs_err), rtol=1e-6)
    one = g(jaxerr.Interval(xs[1] - 0.01, xs[1] + 0.01))
    np.testing.assert_allclose(np.asarray(vm.abs_err[1]), np.asarray(one.abs_err), rtol=1e-6)


def test_bad_symbols_argument():
    with pytest.raises(ValueError, match="symbols"):
        jaxerr.bound(jnp.sin, domain="affine", symbols=0)
    with pytest.raises(ValueError, match="domain='affine'"):
        jaxerr.bound(jnp.sin, symbols=16)
    with pytest.raises(ValueError, match="probabilistic"):
        jaxerr.bound(jnp.sin, domain="affine", probabilistic=1e-3)


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(24)(x))
        x = nn.tanh(nn.Dense(24)(x))
        return nn.Dense(5)(x)


@pytest.mark.parametrize("precision,radius", [
    pytest.param("bfloat16", 0.01, id="bf16-box", marks=pytest.mark.slow),
    pytest.param(None, 0.0, id="f32-point", marks=pytest.mark.slow),
    pytest.param("float16", 0.01, id="f16-box", marks=pytest.mark.slow),
    pytest.param("bfloat16", 0.0, id="bf16-point", marks=pytest.mark.slow),
])
def test_flax_mlp(precision, radius):
    m = _MLP()
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (1, 12)), np.float32)
    params = m.init(jax.random.PRNGKey(0), x)

    def f(t):
        return m.apply(params, t)

    v = check(f, [x], precision=precision, radius=radius, n_samples=4, domain="affine")
    assert not v, "\n".join(v[:10])


@pytest.mark.slow
@settings(max_examples=20)
@given(
    width=st.integers(1, 12),
    depth=st.integers(1, 3),
    act=st.sampled_from(["tanh", "relu", "logistic", "erf", "exp"]),
    precision=st.sampled_from([None, "bfloat16", "float16", "float8_e4m3fn"]),
    radius=st.sampled_from([0.0, 1e-4, 1e-2, 0.3]),
    symbols=st.sampled_from([3, 16, 1024]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_random_nets(width, depth, act, precision, radius, symbols, seed):
    rng = np.random.default_rng(seed)
    fn = {"tanh": jnp.tanh, "relu": jax.nn.relu, "logistic": jax.nn.sigmoid,
          "erf": jax.scipy.special.erf, "exp": lambda t: jnp.exp(-jnp.abs(t))}[act]
    ws = [(rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32) for _ in range(depth)]
    bs = [(0.1 * rng.standard_normal(width)).astype(np.float32) for _ in range(depth)]

    def f(x):
        for w, b in zip(ws, bs):
            x = fn(x @ w + b[None, :]) * x - x
        return x

    x = rng.standard_normal((2, width)).astype(np.float32)
    v = check(f, [x], precision=precision, radius=radius, n_samples=3, seed=seed, domain="affine",
              symbols=symbols)
    assert not v, "\n".join(v[:5])


@pytest.mark.slow
@settings(max_examples=12)
@given(
    name=st.sampled_from(["add", "sub", "mul", "div", "max", "cancel"]),
    precision=st.sampled_from([None, "bfloat16", "float16"]),
    shape=st.sampled_from([(1,), (3,), (2, 3)]),
    scale=st.sampled_from([1e-3, 1.0, 100.0]),
    seed=st.integers(0, 2**31 - 1),
    radius=st.sampled_from([0.0, 1e-4, 1e-2]),
)
def test_property_binary(name, precision, shape, scale, seed, radius):
    fns = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "div": lambda a, b: a / (jnp.abs(b) + 0.5), "max": jnp.maximum,
           "cancel": lambda a, b: (a + b) - a}
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(shape) * scale).astype(np.float32)
    b = (rng.standard_normal(shape) * scale).astype(np.float32)
    v = check(fns[name], [a, b], precision=precision, radius=radius * scale, n_samples=3, seed=seed,
              domain="affine")
    assert not v, "\n".join(v[:5])


@pytest.mark.slow
def test_small_net_over_a_box():
    """Default-run smoke test: a net over a box, sound; two evaluation orders of the same
    linear map cancel in the affine domain (the interval domain sees |w1||w2| |x|)."""
    rng = np.random.default_rng(5)
    w1 = (rng.standard_normal((6, 6)) / 2.5).astype(np.float32)
    w2 = (rng.standard_normal((6, 3)) / 2.5).astype(np.float32)
    w12 = (w1.astype(np.float64) @ w2).astype(np.float32)
    x = rng.standard_normal((1, 6)).astype(np.float32)

    def f(t):
        return jnp.tanh((t @ w1) @ w2 - t @ w12)

    v = check(f, [x], precision="bfloat16", radius=0.05, n_samples=3, domain="affine", symbols=64)
    assert not v, "\n".join(v[:10])
    box = jaxerr.Interval(x - 0.05, x + 0.05)
    af = jaxerr.bound(f, None, domain="affine", symbols=64, jit=False)(box)
    iv = jaxerr.bound(f, None, jit=False)(box)
    assert np.max(np.asarray(af.hi - af.lo)) < 1e-3 * np.min(np.asarray(iv.hi - iv.lo))


def test_division_by_a_constant_as_xla_computes_it():
    """Fuzz finding (seed 2049): XLA computes x / c as x * (1/c), up to 1 ulp; the affine
    division bounded half an ulp. Checked against the real float32 execution."""
    x = np.asarray([300.0104, 1.0, -7.25], np.float32)
    v = check(lambda x: x / 0.3333333333333333, [x], precision=None, radius=0.01, n_samples=4, seed=2049,
              domain="affine")
    assert not v, "\n".join(v[:5])


def test_self_difference_of_possibly_nonfinite_value_is_unbounded():
    """``v - v`` is 0 only where ``v`` is finite: 1000 overflows float8_e4m3fn to NaN,
    and NaN - NaN is NaN (fuzz seed 5042: the affine domain answered 0 +- 0)."""

    def g(x):
        v = jnp.where(x >= 0, x * jnp.float32(0.5), jnp.float32(0.0))
        return v - v

    out = jaxerr.bound(g, "float8_e4m3fn", domain="affine", warn=False)(jnp.array([1.0, 1000.0], jnp.float32))
    err = np.asarray(out.abs_err)
    assert np.isfinite(err[0]) and np.isinf(err[1])


@pytest.mark.parametrize("domain", ["affine", "interval", pytest.param("first_order", marks=pytest.mark.slow)])
def test_sqrt_at_zero_is_a_bound(domain):
    """sqrt's derivative has no finite upper bound on a range reaching 0 (fuzz seed
    8002: the affine linearisation took -0.5/tiny as that bound and answered
    lo = 0.5 > hi = -0.5, abs_err = -1.5 at the point 0)."""

    def g(x):
        return x + jnp.sqrt(x)

    x = jnp.array([0.0, 1e-3, 2.0], jnp.float32)
    out = jaxerr.bound(g, "float16", domain=domain, warn=False)(x)
    assert not out.diagnostics.fired()
    err, lo, hi = (np.asarray(a, np.float64) for a in (out.abs_err, out.lo, out.hi))
    exact = np.asarray(x, np.float64) + np.sqrt(np.asarray(x, np.float64))
    assert np.all(err >= 0) and np.all(np.isfinite(err))
    assert np.all(lo <= exact) and np.all(exact <= hi)
    box = jaxerr.bound(g, "float16", domain=domain, warn=False)(jaxerr.Interval(jnp.zeros(3), x))
    assert np.all(np.asarray(box.abs_err) >= 0) and np.all(np.asarray(box.lo) <= np.asarray(box.hi))


def test_consistency_guard_turns_a_non_bound_into_inf(monkeypatch):
    """The last line of defence: an output whose rule produced abs_err < 0 (a bug)
    comes back inf, with a diagnostic, never as a wrong finite number."""
    from jaxerr._rules import affine_elementwise as AE

    orig = AE.smooth

    def broken(ctx, a, **kw):
        out = orig(ctx, a, **kw)
        bad_e = Form(out.e.c, out.e.G, -jnp.ones_like(out.e.c))  # abs_err < 0: not a bound
        return Affine(out.x, bad_e, out.value, out.stamp, out.boxed)

    monkeypatch.setattr(AE, "smooth", broken)

    def g(x):  # a fresh function: no compiled analysis of it is cached
        return jnp.exp(x)

    out = jaxerr.bound(g, "float16", domain="affine", warn=False)(jnp.array([0.5, 1.0], jnp.float32))
    assert np.all(np.isinf(np.asarray(out.abs_err)))
    assert any("internal inconsistency" in m for m in out.diagnostics.fired())


@pytest.mark.parametrize("domain", ["affine", "interval", pytest.param("first_order", marks=pytest.mark.slow)])
def test_infinite_constant_operand(domain):
    """An infinite point (jax.nn.softmax's max(-inf, reduce_max(x))) is no affine form:
    the affine domain turned the constant -inf into exactly 0 and max(-inf, x) into an
    inverted range (fuzz seed 9018: softmax over a length-1 axis in float16 answered
    lo > hi; the consistency guard caught it). max(-inf, x) is x exactly."""
    x = jnp.array([-0.0001949814468389377, 2.0], jnp.float32)
    out = jaxerr.bound(lambda x: jnp.maximum(-jnp.inf, x), "float16", domain=domain, warn=False)(x)
    assert not out.diagnostics.fired()
    assert np.all(np.isfinite(np.asarray(out.abs_err)))
    assert np.all(np.asarray(out.lo) <= np.asarray(x)) and np.all(np.asarray(x) <= np.asarray(out.hi))
    sm = jaxerr.bound(lambda x: jax.nn.softmax(x, axis=0), "float16", accumulation="recursive",
                      domain=domain, warn=False)(x[:1])
    assert not sm.diagnostics.fired()
    assert float(sm.lo[0]) <= 1.0 <= float(sm.hi[0]) and 0 < float(sm.abs_err[0]) < 0.01
    big = jaxerr.bound(lambda x: jnp.maximum(jnp.inf, x), "float16", domain=domain, warn=False)(x)
    assert not np.any(np.isnan(np.asarray(big.rel_err)))


@pytest.mark.parametrize("shape", [(2, 16), (2, 1), ()])
def test_per_element_values_are_not_recomputed_per_symbol(shape):
    """A per-element coefficient broadcast over the symbol axis is materialised first
    (``affine.per_element``): XLA:CPU otherwise fuses the whole elementwise chain that
    produced it into the ``(K, ...)`` loop, once per symbol (the zoo's 16-wide MLP took
    1.8 s per call in three such fusions; 1.8 ms with it). Checks that the value is
    unchanged and that no fused computation of the compiled program both produces a
    ``(K, ...)`` array and contains the chain. A last axis of length 1 and scalars too
    (a sort along a length-1 axis is removed by XLA: a 1-wide recurrent cell's affine
    analysis did not compile in 10 minutes)."""
    from jaxerr._domains.affine import per_element

    def chain(a):
        for _ in range(100):
            a = jnp.where(a > 0.5, a * 1.0001 + 0.1, a * 0.999 - 0.01)
        return a

    a = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    np.testing.assert_array_equal(np.asarray(per_element(chain(a))), np.asarray(chain(a)))
    G = jnp.ones((64, *shape), jnp.float32)
    hlo = jax.jit(lambda a, G: per_element(chain(a))[None] * G).lower(a, G).compile().as_text()
    comps = hlo.split("\n\n")
    gshape = "f32[" + ",".join(str(d) for d in (64, *shape)) + "]"
    big = [c for c in comps if gshape in c and c.count("\n") > 50]
    assert not big, big[0][:500]

