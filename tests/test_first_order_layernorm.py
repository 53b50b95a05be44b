"""domain="first_order" on normalisation layers and after attention.

* LayerNorm as Flax writes it (``use_fast_variance``: ``max(0, mean(x^2) - mean(x)^2)``),
  the two-pass LayerNorm (``mean((x - mean x)^2)``) and RMSNorm, in bfloat16 and float16,
  at points with random offsets and scales, near-constant rows included (variance ~ 0:
  the bound may be infinite or large, never below an observed error);
* the split output pass (``jaxerr/_first_order.py``, ``FINAL_CHECKPOINTS``): after
  attention a LayerNorm's sensitivities cancel (shift and scale invariance), which the
  full pass loses in the enclosures' widths; the pass that goes on with the midpoints
  at refined values and charges ``rad · B`` there keeps it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxerr

try:
    import _simulator as S
    from _soundness import check
except ImportError:  # pragma: no cover
    import tests._simulator as S
    from tests._soundness import check


def _layer_norm(x, g, b, fast=True, eps=1e-6):
    m = jnp.mean(x, -1, keepdims=True)
    if fast:  # flax.linen.LayerNorm (use_fast_variance=True, its default)
        v = jnp.maximum(0.0, jnp.mean(jnp.square(x), -1, keepdims=True) - jnp.square(m))
    else:
        v = jnp.mean(jnp.square(x - m), -1, keepdims=True)
    return (x - m) * (jax.lax.rsqrt(v + eps) * g[None, :]) + b[None, :]


def _rms_norm(x, g, eps=1e-6):
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), -1, keepdims=True) + eps) * g[None, :]


def _norms(n, seed=0):
    rng = np.random.default_rng(seed)
    g = (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    b = (0.05 * rng.standard_normal(n)).astype(np.float32)
    w = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)

    def f(x):
        h = x + jnp.tanh(x @ w)  # a computed input: its deviation reaches every norm
        return _layer_norm(h, g, b, True), _layer_norm(h, g, b, False), _rms_norm(h, g)

    return f


def _rows(rng, shape, offset, scale, flat_rows):
    x = offset + scale * rng.standard_normal(shape)
    for r in range(min(flat_rows, shape[0])):  # near-constant rows: variance ~ 0
        x[r] = offset + 1e-4 * scale * rng.standard_normal(shape[1])
    return x.astype(np.float32)


@pytest.mark.slow
def test_norm_layers_sound_bfloat16():
    """Flax's LayerNorm and RMSNorm at a point in bfloat16: a row with offset 8 and a
    near-constant row (variance ~ 0)."""
    rng = np.random.default_rng(3)
    x = _rows(rng, (2, 4), 2.0, 1.0, 1)
    x[0] += 6.0
    g = np.asarray([1.1, 0.9, 1.0, 1.2], np.float32)

    def f(x):
        return _layer_norm(x, g, 0.1 * g, True), _rms_norm(x, g)

    v = check(f, [x], precision="bfloat16", n_samples=2, domain="first_order")
    assert not v, "\n".join(v[:10])


class _Split:
    """The refinement passes split too (``REFINE_SPLIT``; the output pass always does)."""

    def __enter__(self):
        import jaxerr._first_order as FO

        self.FO, self.old = FO, FO.REFINE_SPLIT
        FO.REFINE_SPLIT = True

    def __exit__(self, *exc):
        self.FO.REFINE_SPLIT = self.old


@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(precision=st.sampled_from(["bfloat16", "float16"]), n=st.sampled_from([4, 8, 16]),
       offset=st.floats(-40, 40), log_scale=st.floats(-3, 1), flat_rows=st.integers(0, 2),
       split=st.booleans(), seed=st.integers(0, 2**16))
def test_property_norm_layers_sound(precision, n, offset, log_scale, flat_rows, split, seed):
    rng = np.random.default_rng(seed)
    x = _rows(rng, (3, n), offset, 10.0 ** log_scale, flat_rows)
    if split:
        with _Split():
            v = check(_norms(n, seed), [x], precision=precision, n_samples=2, domain="first_order")
    else:
        v = check(_norms(n, seed), [x], precision=precision, n_samples=2, domain="first_order")
    assert not v, "\n".join(v[:10])


def _attention_ln(seq=4, d=8, heads=2, fast=False):
    """x + attention(LN(x)), then LN again (the second LayerNorm of a pre-LN block)."""
    ks = jax.random.split(jax.random.PRNGKey(2), 6)
    wq, wk, wv, wo = (np.asarray(jax.random.normal(ks[i], (d, d)) / np.sqrt(d), np.float32) for i in range(4))
    g = np.asarray(1 + 0.1 * jax.random.normal(ks[4], (d,)), np.float32)
    dh = d // heads

    def heads_(t):
        return t.reshape(seq, heads, dh).transpose(1, 0, 2)

    def f(x):
        h = _layer_norm(x, g, 0.05 * g, fast)
        q, k, v = heads_(h @ wq), heads_(h @ wk), heads_(h @ wv)
        p = jax.nn.softmax(jnp.einsum("hqd,hkd->hqk", q, k) * (1 / np.sqrt(dh)), axis=-1)
        x = x + jnp.einsum("hqk,hkd->hqd", p, v).transpose(1, 0, 2).reshape(seq, d) @ wo
        return _layer_norm(x, g, -0.05 * g, fast)

    x = np.asarray(jax.random.normal(jax.random.PRNGKey(102), (seq, d)), np.float32)
    return f, x


def _observed(f, x, precision, runs=10):
    rng = np.random.default_rng(0)
    ex = S.exact(f, [x])[0]
    worst = 0.0
    for _ in range(runs):
        s = S.simulate(f, [x], fmt=precision, accumulation="wide:float32", order="random", rng=rng)[0]
        worst = np.maximum(worst, np.abs(np.asarray(s, np.float64) - ex))
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("fast", [False, True])
def test_split_pass_gain_layernorm_after_attention_float16(fast):
    """LayerNorm after attention in float16: the split passes are sound and tighter than
    the full pass alone (measured 2-pass LN, seq 8 hidden 32 block of
    benchmarks/tightness.py: 9.95x -> 1.18x the first-order limit, median)."""
    import jaxerr._first_order as FO

    f, x = _attention_ln(fast=fast)
    old = FO.FINAL_CHECKPOINTS
    try:
        FO.FINAL_CHECKPOINTS = False
        # a new function object per analysis: bound() caches the traced analysis per function
        off = np.asarray(jaxerr.bound(lambda x: f(x), "float16", warn=False, domain="first_order")(x).abs_err,
                         np.float64)
    finally:
        FO.FINAL_CHECKPOINTS = old
    with _Split():
        on = np.asarray(jaxerr.bound(lambda x: f(x), "float16", warn=False, domain="first_order")(x).abs_err,
                        np.float64)
        v = check(lambda x: f(x), [x], precision="float16", n_samples=2, domain="first_order")
    assert not v, "\n".join(v[:10])
    obs = _observed(f, x, "float16")
    assert np.all(np.isfinite(on)) and np.all(obs <= on) and np.all(obs <= off)
    assert np.median(off / on) > 1.5, np.median(off / on)
