"""``lax.cond`` / ``lax.switch`` in the affine domain (``jaxerr/_rules/affine_control.py``):
the taken branch's affine forms where the index is certain, the interval join where it
is not; against the independent simulator."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import jaxerr

try:
    from _soundness import check
except ImportError:  # pragma: no cover
    from tests._soundness import check

W = np.asarray(np.random.default_rng(0).normal(size=(4, 4)) * 0.5, np.float32)
X4 = np.linspace(-1, 1, 4).astype(np.float32)
X54 = np.asarray(np.random.default_rng(1).normal(size=(5, 4)), np.float32)


def branches(w):
    """Three branches, two of which mix (matmuls: their rounding errors and the input box
    become shared symbols inside the branch)."""
    return [lambda t: t * 0.5,
            lambda t: jnp.tanh(w @ t) * 2.0 + t,
            lambda t: -(w.T @ jnp.exp(t * 0.3)) + t]


def switch_minus(x, k, w):
    """``switch(k, ...)(x) - x``: over a box the input's symbol cancels in every branch
    when the index is certain."""
    return lax.switch(k, branches(w), x) - x


def cond_on_box(x, w):
    """A predicate that is certainly true over the box (``sum(x^2) + 1 > 0``)."""
    return lax.cond(jnp.sum(x * x) + 1.0 > 0.0, lambda t: w @ t, lambda t: t, x) - w @ x


def cond_uncertain(x, w):
    """The predicate straddles 0 over the box (both branches are possible)."""
    return lax.cond(x[0] > 0.0, lambda t: w @ t, lambda t: t * 2.0, x)


def cond_in_scan(x, w):
    """A branch inside a loop body (the body and the branch both run in the affine
    domain), on a counter the loop knows exactly."""

    def body(c, xt):
        i, h = c
        h = lax.cond(i % 2 == 0, lambda t: jnp.tanh(w @ t + xt), lambda t: t * 0.9 + xt * 0.1, h)
        return (i + 1, h), h - xt

    return lax.scan(body, (0, jnp.zeros(4, x.dtype)), x)


def nested_switch(x, k, w):
    inner = lambda t: lax.switch(k + 1, branches(w), t)  # noqa: E731
    return lax.cond(k >= 0, inner, lambda t: t * 3.0, x) - x * 0.5


def _box(x, r):
    return jaxerr.Interval(x - r, x + r)


def linear_switch(x, k, w):
    return lax.switch(k, [lambda t: t * 0.5, lambda t: w @ t + t, lambda t: t * 3.0], x) - x


def test_certain_branch_keeps_input_symbols():
    """Over a box with a certain index, ``switch(k)(x) - x`` cancels the input's symbol
    as straight-line code does: the affine enclosure is the exact range of the linear
    branch taken, far narrower than the interval domain's (which the affine domain used
    to return: the branches were evaluated on interval hulls). One compiled analysis
    per domain serves every index (it is a run-time value)."""
    box = _box(X4, 0.01)
    g_iv = jax.jit(lambda b, k: jaxerr.bound(linear_switch, "bfloat16", warn=False)(b, k, W))
    g_af = jax.jit(lambda b, k: jaxerr.bound(linear_switch, "bfloat16", domain="affine", warn=False)(b, k, W))
    # the exact range's width of -0.5 x, w x and 2 x over the box (2 r times |row sums|)
    exact = [np.full(4, 0.01), 0.02 * np.abs(W).sum(1), np.full(4, 0.04)]
    for k in range(3):
        iv, af = g_iv(box, np.int32(k)), g_af(box, np.int32(k))
        w_iv = np.asarray(iv.hi) - np.asarray(iv.lo)
        w_af = np.asarray(af.hi) - np.asarray(af.lo)
        assert np.all(w_af <= w_iv)
        assert np.all(w_af <= exact[k] * 1.03), (k, w_af, exact[k])
        assert np.max(w_iv) > 1.4 * np.max(exact[k]), (k, w_iv, exact[k])


def test_certain_predicate_over_a_box():
    box = _box(X4, 0.01)
    iv = jaxerr.bound(cond_on_box, "float16", warn=False)(box, W)
    af = jaxerr.bound(cond_on_box, "float16", domain="affine", warn=False)(box, W)
    assert float(jnp.max(iv.hi)) > 0.01
    assert float(jnp.max(jnp.abs(af.hi))) < 1e-3 and float(jnp.max(jnp.abs(af.lo))) < 1e-3


def test_uncertain_index_is_the_join_with_diagnostic():
    """Where both branches are possible the affine output is the interval join (it
    encloses both branches' values) and the diagnostic names the index."""
    box = _box(np.array([0.0, 0.5, -0.5, 1.0], np.float32), 0.1)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        af = jaxerr.bound(cond_uncertain, "bfloat16", domain="affine")(box, W)
    iv = jaxerr.bound(cond_uncertain, "bfloat16", warn=False)(box, W)
    assert any("branch index depends on uncertain values" in str(m.message) for m in w)
    np.testing.assert_array_equal(np.asarray(af.lo), np.asarray(iv.lo))
    np.testing.assert_array_equal(np.asarray(af.hi), np.asarray(iv.hi))
    for xs in (np.array([0.05, 0.5, -0.5, 1.0], np.float32), np.array([-0.05, 0.5, -0.5, 1.0], np.float32)):
        y = np.asarray(cond_uncertain(jnp.asarray(xs), W))
        assert np.all(np.asarray(af.lo) <= y) and np.all(y <= np.asarray(af.hi))


@pytest.mark.parametrize(
    "fn,args,prec,radius,symbols",
    [
        pytest.param(switch_minus, [X4, np.int32(1), W], "bfloat16", 0.01, 3, id="switch1-bf16-box-K3"),
        pytest.param(cond_in_scan, [X54, W], "float16", 0.01, None, id="cond_in_scan-f16-box",
                     marks=pytest.mark.slow),
        pytest.param(cond_uncertain, [np.array([0.0, 0.5, -0.5, 1.0], np.float32), W], "bfloat16", 0.1,
                     None, id="uncertain-bf16-box"),
        pytest.param(switch_minus, [X4, np.int32(2), W], "float16", 0.0, None, id="switch2-f16-point",
                     marks=pytest.mark.slow),
        pytest.param(switch_minus, [X4, np.int32(9), W], "bfloat16", 0.02, None, id="switch_clamped-bf16-box",
                     marks=pytest.mark.slow),
        pytest.param(switch_minus, [X4, np.int32(2), W], "float8_e4m3fn", 0.01, 4, id="switch2-e4m3-box-K4",
                     marks=pytest.mark.slow),
        pytest.param(cond_on_box, [X4, W], "bfloat16", 0.01, 5, id="cond_on_box-bf16-box-K5",
                     marks=pytest.mark.slow),
        pytest.param(cond_in_scan, [X54, W], "bfloat16", 0.0, 6, id="cond_in_scan-bf16-point-K6",
                     marks=pytest.mark.slow),
        pytest.param(nested_switch, [X4, np.int32(0), W], "bfloat16", 0.01, None, id="nested-bf16-box",
                     marks=pytest.mark.slow),
        pytest.param(nested_switch, [X4, np.int32(-1), W], "float16", 0.01, 3, id="nested_neg-f16-box-K3",
                     marks=pytest.mark.slow),
        pytest.param(cond_uncertain, [np.array([0.0, 0.5, -0.5, 1.0], np.float32), W], "float32", 0.1,
                     4, id="uncertain-f32-box-K4", marks=pytest.mark.slow),
    ],
)
def test_affine_cond_sound(fn, args, prec, radius, symbols):
    """Sound at every budget, including budgets smaller than one branch's promotions
    (slots of one branch reused by the next before the outputs are selected)."""
    v = check(fn, args, precision=prec, radius=radius, domain="affine", symbols=symbols, n_samples=4)
    assert not v, "\n".join(v[:10])


_OPS = {
    "tanh": lambda w, t: jnp.tanh(w @ t),
    "linear": lambda w, t: w @ t - t * 0.5,
    "square": lambda w, t: (w @ t) * t,
    "exp": lambda w, t: jnp.exp(t * 0.5) * 0.3 + w.T @ t,
    "scale": lambda w, t: t * 1.5,
}


def _branchy(n: int, nb: int, ops: list[str], index: str, seed: int):
    """A random ``switch`` of ``nb`` branches (from ``_OPS``) whose index is an integer
    input, a predicate on the floating input, or absent (``lax.cond`` on ``x[0] > 0``),
    followed by arithmetic that mixes the branch output with the input."""
    rng = np.random.default_rng(seed)
    w = np.asarray(rng.normal(size=(n, n)) / np.sqrt(n), np.float32)
    brs = [(lambda t, o=_OPS[o]: o(w, t)) for o in ops[:nb]]

    def f(x, k):
        if index == "int":
            y = lax.switch(k, brs, x)
        elif index == "pred":
            y = lax.cond(x[0] > 0.0, brs[0], brs[-1], x)
        else:  # a certain index computed from the box: sum(x^2) >= 0
            y = lax.switch(jnp.where(jnp.sum(x * x) >= 0.0, k, 0), brs, x)
        return y - x * 0.75, jnp.tanh(y) * x

    return f


@pytest.mark.slow
@given(
    n=st.integers(1, 4), nb=st.integers(1, 3),
    ops=st.lists(st.sampled_from(sorted(_OPS)), min_size=3, max_size=3),
    index=st.sampled_from(["int", "pred", "computed"]), k=st.integers(-1, 3),
    prec=st.sampled_from(["bfloat16", "float16", "float8_e4m3fn", "float32"]),
    radius=st.sampled_from([0.0, 0.01, 0.1]), symbols=st.sampled_from([None, 3, 32]),
    seed=st.integers(0, 1000),
)
@settings(max_examples=25, deadline=None)
def test_property_affine_cond_sound(n, nb, ops, index, k, prec, radius, symbols, seed):
    """Random branches (sizes, operations, certain and uncertain indices, clamped
    indices, formats, boxes, symbol budgets) in the affine domain against the simulator."""
    f = _branchy(n, nb, ops, index, seed)
    x = np.asarray(np.random.default_rng(seed + 1).normal(size=(n,)), np.float32)
    v = check(f, [x, np.int32(k)], precision=prec, domain="affine", radius=radius, n_samples=3,
              symbols=symbols)
    assert not v, "\n".join(v[:10])
