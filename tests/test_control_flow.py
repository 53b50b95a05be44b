"""Control flow (scan, fori_loop, while_loop, cond, switch, nn.RNN) against the
independent simulator, in the interval and first_order domains, at points and over boxes."""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import lax
from jax.extend.core import jaxpr_as_fun

import jaxerr
from jaxerr._rules.control_flow import unroll_scans

try:
    from _soundness import check
except ImportError:  # pragma: no cover
    from tests._soundness import check

W = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (4, 4)) / 2, np.float32)


def cumsum_scan(x):
    c, ys = lax.scan(lambda c, t: (c + t, c + t), jnp.zeros((), x.dtype), x)
    return c, ys


def tanh_rnn(x):
    def body(h, xt):
        h = jnp.tanh(h @ W + xt)
        return h, h * 0.5

    h, ys = lax.scan(body, jnp.zeros(4, x.dtype), x)
    return h, ys


def reverse_scan_with_consts(x):
    b = jnp.float32(0.3)

    def body(c, xt):
        i, s = c
        return (i + 1, s * 0.9 + xt * b), jnp.exp(-s)

    (i, s), ys = lax.scan(body, (0, jnp.float32(0.0)), x, reverse=True, unroll=2)
    return s, ys, i


def scan_calls_and_length(x):
    @jax.jit
    def inner(c):
        return jax.nn.sigmoid(c) * 2.0 - 0.5

    c, _ = lax.scan(lambda c, _: (inner(c), None), x, None, length=3)
    return c


def fori(x):
    return lax.fori_loop(0, 4, lambda i, c: jnp.tanh(c * 1.3 + 0.1 * i), x)


def while_static(x):
    return lax.while_loop(lambda s: s[0] < 5, lambda s: (s[0] + 1, s[1] * 0.7 + 0.2), (0, x))[1]


def cond_fn(x):
    return lax.cond(x[0] > 0, lambda t: jnp.exp(t), lambda t: t * 2.0 - 1.0, x)


def switch_fn(x, i):
    return lax.switch(i, [lambda t: t, lambda t: jnp.tanh(t), lambda t: -t * 3.0], x)


# x in [0.9, 1.3]: after 5 steps s = 7.59 x + 1.32 is 8.15 at 0.9 and 11.2 at 1.3, so the
# trip count genuinely differs across the box (not only through loose bounds)
def while_uncertain(x):
    return lax.while_loop(lambda s: s[1] < 10.0, lambda s: (s[0] + 1, s[1] * 1.5 + 0.1), (0, x))


def _x(shape, seed=0, scale=1.0):
    return np.asarray(jax.random.normal(jax.random.PRNGKey(seed), shape) * scale, np.float32)


PROGRAMS = [
    ("cumsum_scan", cumsum_scan, lambda: [_x((6,))], 0.01),
    ("tanh_rnn", tanh_rnn, lambda: [_x((5, 4))], 0.01),
    ("reverse_scan", reverse_scan_with_consts, lambda: [_x((4,))], 0.01),
    ("scan_calls_length", scan_calls_and_length, lambda: [_x((3,))], 0.01),
    ("fori", fori, lambda: [_x((5,))], 0.01),
    ("while_static", while_static, lambda: [_x((5,))], 0.01),
    ("cond_pos", cond_fn, lambda: [np.abs(_x((4,))) + 0.2], 0.01),
    ("cond_neg", cond_fn, lambda: [-np.abs(_x((4,))) - 0.2], 0.01),
    ("cond_uncertain", cond_fn, lambda: [np.array([0.0, 0.5, -0.5], np.float32)], 0.1),
    ("switch1", switch_fn, lambda: [_x((4,)), np.int32(1)], 0.01),
    ("switch_clamped", switch_fn, lambda: [_x((4,)), np.int32(7)], 0.01),
]
IDS = [p[0] for p in PROGRAMS]
# the default run: a few cases in bfloat16 covering scan (unrolled in first_order), fori,
# while (cut in first_order) and cond/switch; every other combination under -m slow
DEFAULT = {("tanh_rnn", "interval", False), ("fori", "interval", True), ("while_static", "interval", False),
           ("while_static", "first_order", False), ("cond_uncertain", "interval", True),
           ("switch_clamped", "interval", False), ("reverse_scan", "interval", True)}


def _cases():
    out = []
    for prog in PROGRAMS:
        for dom in ("interval", "first_order", "affine"):
            for prec in (None, "bfloat16", "float16", "float32"):
                for r in (False, True):
                    fast = prec == "bfloat16" and (prog[0], dom, r) in DEFAULT
                    out.append(pytest.param(prog, dom, prec, r,
                                            id=f"{prog[0]}-{dom}-{prec}-{'box' if r else 'point'}",
                                            marks=() if fast else (pytest.mark.slow,)))
    return out


@pytest.mark.parametrize("prog,domain,precision,box", _cases())
def test_control_flow_sound(prog, domain, precision, box):
    name, fn, centres, radius = prog
    if name == "cond_uncertain" and not box:
        radius = 0.0
    v = check(fn, centres(), precision=precision, domain=domain, radius=radius if box else 0.0, n_samples=3)
    assert not v, "\n".join(v[:10])


def test_uncertain_index_joins_branches():
    """Over a box straddling the predicate, both branches are enclosed, the index output
    is flagged, and exact/computed may come from different branches."""
    xs = np.array([0.0, 0.5, -0.5], np.float32)
    b = jaxerr.bound(cond_fn, "bfloat16", warn=False)(jaxerr.Interval(xs - 0.1, xs + 0.1))
    lo, hi = np.asarray(b.lo), np.asarray(b.hi)
    # element 1 in [0.4, 0.6]: exp gives [1.49, 1.83], 2t-1 gives [-0.2, 0.2]
    assert lo[1] <= -0.2 + 1e-6 and hi[1] >= np.exp(0.6) - 1e-3
    assert any("branch index depends on uncertain values" in m for m in b.diagnostics.fired())
    # a certain index selects exactly its branch: no join, no message
    c = jaxerr.bound(cond_fn, "bfloat16", warn=False)(jaxerr.Interval(xs + 0.9, xs + 1.1))
    assert np.all(np.asarray(c.lo) >= np.exp(xs + 0.9) - 1e-3)
    assert not c.diagnostics.fired()


def test_while_uncertain_condition_is_inf_with_diagnostic():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        i, s = jaxerr.bound(while_uncertain, "bfloat16")(jaxerr.Interval(np.float32(0.9), np.float32(1.3)))
    assert np.isinf(np.asarray(s.abs_err)) and np.isinf(np.asarray(s.hi))
    assert np.asarray(i.lo) < np.asarray(i.hi)
    msgs = [str(m.message) for m in w]
    assert any("loop condition depends on uncertain values" in m and "fori_loop" in m for m in msgs), msgs
    # the same loop at a point: the condition stays certain, so the bound is finite
    i, s = jaxerr.bound(while_uncertain, "bfloat16", warn=False)(np.float32(1.0))
    assert np.isfinite(np.asarray(s.abs_err)) and int(i.lo) == int(i.hi) == 6


def test_uncertain_while_under_jit_and_vmap():
    g = jax.jit(jax.vmap(jaxerr.bound(while_uncertain, "bfloat16", warn=False)))
    lo = np.array([1.0, 0.9], np.float32)
    hi = np.array([1.0, 1.3], np.float32)
    i, s = g(jaxerr.Interval(lo, hi))
    err = np.asarray(s.abs_err)
    assert np.isfinite(err[0]) and np.isinf(err[1])


@pytest.mark.parametrize("domain", ["interval", pytest.param("first_order", marks=pytest.mark.slow),
                                    pytest.param("affine", marks=pytest.mark.slow)])
def test_compose_jit_vmap(domain):
    xs = _x((3, 5), seed=3)
    g = jaxerr.bound(cumsum_scan, "bfloat16", domain=domain, warn=False)
    batched = jax.jit(jax.vmap(g))(xs)
    one = g(xs[1])
    for a, b in zip(batched, one):
        for k in ("lo", "hi", "abs_err", "computed_lo", "computed_hi"):
            np.testing.assert_allclose(np.asarray(getattr(a, k))[1], np.asarray(getattr(b, k)), rtol=1e-6)
    # bound(vmap(f)) and bound(jit(f)) analyse the same program
    h = jaxerr.bound(jax.jit(jax.vmap(cumsum_scan)), "bfloat16", domain=domain, warn=False)(xs)
    np.testing.assert_allclose(np.asarray(h[0].abs_err)[1], np.asarray(one[0].abs_err), rtol=1e-6)


@pytest.mark.slow
def test_vmapped_cond_and_while_in_program():
    """vmap of the user function turns cond into select_n and batches the while."""
    xs = np.array([[0.5, 1.0], [-0.5, 2.0]], np.float32)
    assert not check(jax.vmap(cond_fn), [xs], precision="bfloat16", n_samples=2)
    assert not check(jax.vmap(while_static), [xs], precision="bfloat16", n_samples=2)


def test_unroll_scans_is_the_same_program():
    x = _x((5, 4))
    closed = jax.make_jaxpr(tanh_rnn)(x)
    un = unroll_scans(closed)
    assert not any(e.primitive.name == "scan" for e in un.jaxpr.eqns)
    a = jaxpr_as_fun(closed)(x)
    b = jaxpr_as_fun(un)(x)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
    # over the budget: the scan stays
    assert any(e.primitive.name == "scan" for e in unroll_scans(closed, max_eqns=3).jaxpr.eqns)


@pytest.mark.slow
def test_first_order_tighter_than_interval_through_unrolled_scan():
    x = _x((6, 4), seed=1)
    a = jaxerr.bound(tanh_rnn, "bfloat16", warn=False)(x)
    b = jaxerr.bound(tanh_rnn, "bfloat16", domain="first_order", warn=False)(x)
    ea, eb = np.asarray(a[0].abs_err), np.asarray(b[0].abs_err)
    assert np.all(eb <= ea) and np.max(eb) < 0.9 * np.max(ea)


def test_check_supported_walks_bodies():
    def f(x):
        return lax.scan(lambda c, t: (c + jnp.sin(t), None), 0.0, x)[0]

    with pytest.raises(jaxerr.UnsupportedPrimitiveError, match="sin"):
        jaxerr.bound(f)(np.ones(3, np.float32))


def test_dead_code_needs_no_rule():
    def f(x):
        jax.random.split(jax.random.key(0))  # dead: no rule needed
        return x * 2.0

    b = jaxerr.bound(f, "bfloat16")(np.ones(2, np.float32))
    assert np.all(np.asarray(b.abs_err) < 1e-30)  # exact but for underflow


@pytest.mark.slow
@given(n=st.integers(1, 6), seed=st.integers(0, 2**16), reverse=st.booleans(),
       radius=st.sampled_from([0.0, 0.05]))
def test_property_scan_recurrence(n, seed, reverse, radius):
    a = float(np.random.default_rng(seed).uniform(-1.2, 1.2))

    def f(x):
        return lax.scan(lambda c, t: (jnp.tanh(a * c + t), c * t), jnp.float32(0.1), x, reverse=reverse)

    v = check(f, [_x((n,), seed=seed)], precision="bfloat16", radius=radius, n_samples=2, real_backend=False)
    assert not v, "\n".join(v[:10])


# ---------------------------------------------------------------------------
# Flax recurrent layers
# ---------------------------------------------------------------------------


class _RNNModel(nn.Module):
    cell: str = "lstm"
    features: int = 4

    @nn.compact
    def __call__(self, x):
        cell = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "olstm": nn.OptimizedLSTMCell}[self.cell]
        h = nn.RNN(cell(features=self.features))(x)
        return nn.Dense(2)(h[:, -1])


class _ScanMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        class Block(nn.Module):
            @nn.compact
            def __call__(self, c, _):
                return nn.tanh(nn.Dense(3)(c)), None

        Scanned = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
        c, _ = Scanned()(x, None)
        return c


def _model(kind):
    x = _x((1, 4, 3), seed=2)
    if kind == "nn_scan":
        m, x = _ScanMLP(), _x((2, 3), seed=2)
    else:
        m = _RNNModel(kind)
    v = m.init(jax.random.PRNGKey(1), x)
    return (lambda x: m.apply(v, x)), x


@pytest.mark.parametrize("domain", ["interval", pytest.param("first_order", marks=pytest.mark.slow)])
@pytest.mark.parametrize("precision", ["bfloat16", pytest.param("float16", marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", [pytest.param("lstm", marks=pytest.mark.slow), pytest.param("gru", marks=pytest.mark.slow),
                                  pytest.param("olstm", marks=pytest.mark.slow),
                                  pytest.param("nn_scan", marks=pytest.mark.slow)])
@pytest.mark.parametrize("box", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_flax_recurrent_sound(kind, precision, domain, box):
    f, x = _model(kind)
    v = check(f, [x], precision=precision, domain=domain, radius=0.01 if box else 0.0, n_samples=2)
    assert not v, "\n".join(v[:10])
