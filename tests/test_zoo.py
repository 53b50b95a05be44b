"""The model zoo (tests/zoo.py: MLP, LeNet with BatchNorm and pooling, ResNet basic
block, pre-LN transformer encoder block with a causal and with a padding mask,
embedding + LSTM classifier, an nnx model, a Keras 3 model) against the independent
simulator: bfloat16 and float16, at a point and over a box, in every domain, with the
analysis jit-compiled; and under ``jax.jit(jax.vmap(...))`` (and through the nnx / Keras
adapters) the same bounds as one call at a time.

The default run checks a few cheap representative cases; the full matrix runs under
``-m slow`` (``benchmarks/zoo.py`` prints its timings and tightness).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxerr
import jaxerr._bound as _B

try:
    import zoo
    from _soundness import check
except ImportError:  # pragma: no cover
    from tests import zoo
    from tests._soundness import check

DOMAINS = ("interval", "first_order", "affine")
FORMATS = ("bfloat16", "float16")
KINDS = ("point", "box")
FIELDS = ("lo", "hi", "abs_err", "computed_lo", "computed_hi")

# the default run (<= 30 s on 2 cores): the MLP over a box, the token model (gather,
# scan) at a point, both in the interval domain; everything else under -m slow
DEFAULT = {("mlp", "bfloat16", "box", "interval"), ("lstm", "float16", "point", "interval")}


def _cases():
    out = []
    for name in zoo.NAMES:
        for fmt in FORMATS:
            for kind in KINDS:
                for dom in DOMAINS:
                    fast = (name, fmt, kind, dom) in DEFAULT
                    out.append(pytest.param(name, fmt, kind, dom, id=f"{name}-{fmt}-{kind}-{dom}",
                                            marks=() if fast else (pytest.mark.slow,)))
    return out


def _build(name):
    if name == "keras":
        # through jaxerr.keras, which selects the JAX backend before Keras is imported
        # (a bare importorskip("keras") picked TensorFlow and skipped every Keras case)
        pytest.importorskip("jaxerr.keras")
    return zoo.build(name)


@pytest.mark.parametrize("name,fmt,kind,domain", _cases())
def test_zoo_sound(name, fmt, kind, domain, monkeypatch):
    # the affine domain on its own (no final intersection with the interval bounds), so
    # that a wrong affine rule cannot hide behind the interval result
    monkeypatch.setattr(_B, "_AFFINE_CAP", False)
    m = _build(name)
    fn, centres, radius = m.case(kind)
    v = check(fn, centres, precision=fmt, domain=domain, radius=radius, n_samples=2, jit=True)
    assert not v, "\n".join(v[:5])


def _args(centres, radius, shift):
    out = []
    for c in centres:
        if np.issubdtype(c.dtype, np.floating):
            c = c + np.float32(shift)
            out.append(jaxerr.Interval(jnp.asarray(c - radius), jnp.asarray(c + radius)) if radius else jnp.asarray(c))
        else:
            out.append(jnp.asarray(c))
    return out


def _stack(a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.stack([x, y]), a, b)


def _same(a, b, index=None):
    for x, y in zip(jax.tree_util.tree_leaves(a, is_leaf=lambda t: isinstance(t, jaxerr.Bound)),
                    jax.tree_util.tree_leaves(b, is_leaf=lambda t: isinstance(t, jaxerr.Bound))):
        for k in FIELDS:
            p = np.asarray(getattr(x, k))
            if index is not None:
                p = p[index]
            q = np.asarray(getattr(y, k))
            # batched and single analyses may sum in different orders (each is rounded
            # outward, so each is sound): equal up to float32 noise at the array's scale
            fin = np.isfinite(q)
            scale = float(np.max(np.abs(q[fin]), initial=0.0))
            np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-5 * scale)


def _jit_vmap_cases():
    out = []
    for name in zoo.NAMES:
        for dom in DOMAINS:
            fast = (name, dom) == ("mlp", "interval")
            out.append(pytest.param(name, dom, id=f"{name}-{dom}", marks=() if fast else (pytest.mark.slow,)))
    return out


@pytest.mark.parametrize("name,domain", _jit_vmap_cases())
def test_zoo_jit_vmap_and_adapters(name, domain):
    """``jax.jit(jax.vmap(g))`` over two input boxes equals ``g`` on each; the nnx / Keras
    adapters give the bound of the plain function."""
    m = _build(name)
    fn, centres, radius = m.case("box")
    kw = dict(domain=domain, warn=False)
    g = jaxerr.bound(fn, "bfloat16", **kw) if m.adapter is None else m.adapter("bfloat16", **kw)
    a0, a1 = _args(centres, radius, 0.0), _args(centres, radius, 0.05)
    batched = jax.jit(jax.vmap(g))(*_stack(a0, a1))
    one = g(*a1)
    _same(batched, one, index=1)
    if m.adapter is not None:
        _same(one, jaxerr.bound(fn, "bfloat16", **kw)(*a1))


def test_mask_from_integer_input_is_certain():
    """A padding mask computed from an integer input (``float(valid) != 0``, as
    ``nn.make_attention_mask`` builds it) is certain: converting a small integer is exact,
    so its computed range must not be widened around 0 (it made every masked logit the
    join of 0 and the mask bias, and the transformer's bound infinite)."""
    valid = np.array([[1, 1, 1, 0, 0]], np.int32)
    b = jaxerr.bound(lambda v: jnp.where(v.astype(jnp.float32) != 0, 0.0, -1e4), "bfloat16", jit=False,
                     warn=False)(valid)
    np.testing.assert_array_equal(np.asarray(b.lo), [[0, 0, 0, -1e4, -1e4]])
    np.testing.assert_array_equal(np.asarray(b.hi), [[0, 0, 0, -1e4, -1e4]])
    err = np.asarray(b.abs_err)[0]
    # only the bias' own rounding: -1e4 is -9984 in bfloat16
    assert np.all(err[:3] == 0) and np.all(err[3:] <= 16.01)

