"""Flax's default attention mask under a precision override (issue 4).

``nn.dot_product_attention`` masks logits with ``finfo(float32).min``; analysed "as if"
in bfloat16 or float16 that constant overflows to ``-inf``. The program still computes
well (the row maximum is finite, ``-inf - max = -inf``, ``exp(-inf) = 0``), and the
analysis must say so: finite, sound bounds in every domain, at a point and over a box,
for a causal mask and for a padding mask from an integer input. Where the program
really computes NaN (a row with every key masked: ``-inf - (-inf)``; ``inf - inf``;
``0 * inf``) the bound stays infinite, with a diagnostic.

Each bound is checked against the independent simulator (``tests/_simulator.py``),
which rounds the float32 literal into the format (``-inf``) and evaluates ``exp(-inf)``
as XLA does (``0``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxerr
import jaxerr._bound as _B

try:
    import _simulator as S
    from _soundness import check, tightness
except ImportError:  # pragma: no cover
    from tests import _simulator as S
    from tests._soundness import check, tightness

BIG_NEG = float(jnp.finfo(jnp.float32).min)


def _qkv(seed: int, length: int = 4, heads: int = 1, dim: int = 2):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(1, length, heads, dim)).astype(np.float32) for _ in range(3)]


def causal_attention(q, k, v):
    """Flax's attention with its default (``finfo(float32).min``) causal mask."""
    mask = nn.make_causal_mask(jnp.ones(q.shape[:2], jnp.int32))
    return nn.dot_product_attention(q, k, v, mask=mask)


def padded_attention(q, k, v, valid):
    """Flax's attention with a padding mask on the keys from an integer input."""
    mask = nn.make_attention_mask(jnp.ones_like(valid), valid > 0)
    return nn.dot_product_attention(q, k, v, mask=mask)


VALID = np.array([[1, 1, 0, 0]], np.int32)


def _case(mask: str):
    if mask == "causal":
        return causal_attention, _qkv(0)
    return padded_attention, [*_qkv(1), VALID]


def test_simulator_overflows_the_mask_literal():
    """The reference executes the mask as XLA would under the format: the float32
    literal rounds to ``-inf``, and ``exp(-inf - max)`` is exactly 0."""
    def f(x):
        m = jnp.where(x > 0, x, BIG_NEG)
        return m, jnp.exp(m - jnp.max(m))

    x = np.array([0.5, -1.0, 2.0], np.float32)
    for fmt in ("bfloat16", "float16"):
        m, e = S.simulate(f, [x], fmt=fmt, accumulation="recursive", order="sequential",
                          rng=np.random.default_rng(0))
        assert np.isneginf(m[1]) and e[1] == 0.0 and e[2] == 1.0


# the default run: one case per domain (<= 30 s with the rest of this file); the full
# matrix under -m slow
_DEFAULT = {("causal", "bfloat16", "point", "interval"), ("padded", "float16", "box", "first_order"),
            ("causal", "bfloat16", "box", "affine")}


def _cases():
    out = []
    for mask in ("causal", "padded"):
        for fmt in ("bfloat16", "float16"):
            for kind in ("point", "box"):
                for dom in ("interval", "first_order", "affine"):
                    fast = (mask, fmt, kind, dom) in _DEFAULT
                    out.append(pytest.param(mask, fmt, kind, dom, id=f"{mask}-{fmt}-{kind}-{dom}",
                                            marks=() if fast else (pytest.mark.slow,)))
    return out


@pytest.mark.parametrize("mask,fmt,kind,domain", _cases())
def test_flax_mask_sound_and_finite(mask, fmt, kind, domain, monkeypatch):
    # the affine domain on its own (no intersection with the interval result)
    monkeypatch.setattr(_B, "_AFFINE_CAP", False)
    fn, centres = _case(mask)
    radius = 0.01 if kind == "box" else 0.0
    args = [jaxerr.Interval(c - radius, c + radius) if (radius and c.dtype.kind == "f") else c for c in centres]
    b = jaxerr.bound(fn, fmt, domain=domain, warn=False)(*args)
    assert np.all(np.isfinite(np.asarray(b.abs_err))), b.diagnostics
    assert float(np.max(b.abs_err)) < 0.5
    v = check(fn, centres, precision=fmt, domain=domain, radius=radius, n_samples=3, jit=True)
    assert not v, "\n".join(v[:5])


@pytest.mark.parametrize("mask", ["causal", "padded"])
def test_flax_mask_bound_is_tight(mask):
    """Regression: the bound with Flax's mask is within a small factor of the observed
    error (before, it was inf), and no looser than with a finite -1e4 bias."""
    fn, centres = _case(mask)
    (ratio,) = tightness(fn, centres, precision="bfloat16", n_runs=10)
    assert 1.0 <= ratio < 30.0, ratio


def _all_masked(x, valid):
    logits = jnp.where(valid > 0, x, BIG_NEG)
    e = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _nan_chains(x):
    a = jnp.where(x > 100, x, BIG_NEG)  # -inf in the format
    b = jnp.where(x > 100, x, -BIG_NEG)  # +inf
    return a - a, a + b, jnp.exp(a - a), a * 0.0, jnp.maximum(a - a, 1.0), jnp.max(a - a)


@pytest.mark.parametrize("fmt", ["bfloat16", "float16"])
def test_nan_chains_stay_infinite(fmt):
    """``-inf - (-inf)``, ``-inf + inf``, ``0 * -inf`` are NaN in the format; so is a
    softmax row whose keys are all masked. Their bounds must stay infinite (the
    simulator computes NaN), with a diagnostic naming where the infinity starts."""
    x = np.array([[0.3, -1.2, 2.0, 0.5]], np.float32)
    outs = jaxerr.bound(_nan_chains, fmt, warn=False, jit=False)(x)
    sims = S.simulate(_nan_chains, [x], fmt=fmt, accumulation="recursive", order="sequential",
                      rng=np.random.default_rng(0))
    for b, s in zip(outs, sims):
        assert np.all(np.isnan(s))
        assert np.all(np.isinf(np.asarray(b.abs_err)))
        assert b.diagnostics.fired()
    valid = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], np.int32)
    xx = np.concatenate([x, x])
    b = jaxerr.bound(_all_masked, fmt, warn=False, jit=False)(xx, valid)
    err = np.asarray(b.abs_err)
    assert np.all(np.isfinite(err[0])) and np.all(np.isinf(err[1]))
    assert any("overflow" in m for m in b.diagnostics.fired())
