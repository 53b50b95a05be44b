"""The affine domain's own conv_general_dilated and reduce_window_sum / max / min rules
(jaxerr/_rules/affine_conv.py, affine_windows.py) against the independent simulator, at
points and over boxes, and their use: they replace the interval fallback and tighten
a LeNet-style CNN.

As in ``test_affine.py``, the final intersection with the interval bounds
(``jaxerr._bound._AFFINE_CAP``) is switched off: a wrong affine rule must not hide
behind a tighter interval result."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from jax import lax

import jaxerr
import jaxerr._bound as _B
from jaxerr import _compat

try:
    import test_layers as TL
    from _soundness import check
except ImportError:  # pragma: no cover
    from tests import test_layers as TL
    from tests._soundness import check

P = _compat.prim


@pytest.fixture(autouse=True)
def affine_alone(monkeypatch):
    monkeypatch.setattr(_B, "_AFFINE_CAP", False)


def test_rules_are_the_affine_ones_not_the_fallback():
    from jaxerr._affine import _load_rules
    from jaxerr._rules import affine_conv, affine_windows

    rules = _load_rules()
    assert rules[P("conv_general_dilated")] is affine_conv.conv_general_dilated_rule
    assert rules[P("reduce_window_sum")] is affine_windows.reduce_window_sum_rule
    assert rules[P("reduce_window_max")] is affine_windows.reduce_window_max_rule
    assert rules[P("reduce_window_min")] is affine_windows.reduce_window_min_rule


@pytest.mark.parametrize("shape,wp", [
    ((5, 6), dict(window_dimensions=(2, 3), window_strides=(1, 2), padding=((1, 0), (0, 2)),
                  base_dilation=(1, 2), window_dilation=(2, 1))),
    ((1, 6, 6, 2), dict(window_dimensions=(1, 3, 3, 1), window_strides=(1, 2, 2, 1),
                        padding=((0, 0), (1, 1), (0, 1), (0, 0)), base_dilation=(1, 1, 1, 1),
                        window_dilation=(1, 1, 1, 1))),
])
def test_patches_read_what_reduce_window_reads(shape, wp):
    """The static window index arrays: summing the cells they name (distinct powers of
    two, so every cell shows) is XLA's windowed sum."""
    from jaxerr._rules.affine_windows import _patches

    idx, valid = _patches(shape, wp)
    n = int(np.prod(shape))
    x = (2.0 ** np.arange(n) % 1021).reshape(shape).astype(np.float64)
    want = np.asarray(P("reduce_window_sum").bind(jnp.asarray(x, jnp.float32), **wp), np.float64)
    got = np.where(valid, x.reshape(-1)[idx], 0.0).sum(-1)
    np.testing.assert_array_equal(got, want)


# the default run: one max pool over a box, bfloat16 (a convolution under -m slow)
@pytest.mark.parametrize("name", [pytest.param("conv_strided_padded_dilated", marks=pytest.mark.slow), "max_pool"])
def test_affine_layer_sound_quick(name):
    fn, xs = TL._inputs(name)
    v = check(fn, xs, precision="bfloat16", domain="affine", radius=0.02, n_samples=2)
    assert not v, v[:3]


_LAYERS = [p[0] for p in TL.PRIMS if p[0].startswith("conv") or "pool" in p[0] or "window" in p[0]]


@pytest.mark.slow
@pytest.mark.parametrize("name", _LAYERS)
@pytest.mark.parametrize("fmt", ["bfloat16", "float16", "float32"])
def test_affine_layer_sound(name, fmt):
    fn, xs = TL._inputs(name)
    for radius in (0.0, 0.02):
        v = check(fn, xs, precision=fmt, domain="affine", radius=radius, n_samples=3)
        assert not v, (radius, v[:3])


@pytest.mark.slow
@settings(max_examples=30, **TL._HSET)
@given(TL.conv_cases())
def test_affine_conv_hypothesis(c):
    TL._check_conv_case({**c, "domain": "affine"})


@pytest.mark.slow
@settings(max_examples=40, **TL._HSET)
@given(TL.window_cases())
def test_affine_reduce_window_hypothesis(c):
    TL._check_window_case({**c, "domain": "affine"})


def _overlapping_max(x):
    # overlapping windows (stride 1), with ties and padding
    return lax.reduce_window(x, -jnp.inf, lax.max, (2, 2), (1, 1), "SAME")


@pytest.mark.slow
@pytest.mark.parametrize("radius", [0.0, 0.3])
def test_affine_max_pool_ties_and_overlaps(radius):
    x = np.array([[1.0, 1.0, -2.0], [0.5, 3.0, 3.0], [-1.0, 0.25, 2.9]], np.float32)
    v = check(lambda t: _overlapping_max(t @ np.eye(3, dtype=np.float32) * 1.1), [x], precision="bfloat16",
              domain="affine", radius=radius, n_samples=4)
    assert not v, v[:3]
    v = check(lambda t: -_overlapping_max(-t), [x], precision="float16", domain="affine", radius=radius,
              n_samples=4)
    assert not v, v[:3]


@pytest.mark.slow
def test_affine_lenet_tighter_than_interval():
    """With its own conv / pooling rules the affine domain keeps the rounding errors'
    signs through the convolutions: tighter than the interval domain (which it used to
    equal, through the fallback)."""
    import zoo

    m = zoo.build("lenet")
    fn, xs, r = m.case("box")
    box = jaxerr.Interval(jnp.asarray(xs[0] - r), jnp.asarray(xs[0] + r))
    iv = jaxerr.bound(fn, "bfloat16", warn=False)(box)
    af = jaxerr.bound(fn, "bfloat16", domain="affine", warn=False)(box)
    assert np.all(np.asarray(af.abs_err) <= np.asarray(iv.abs_err))
    assert np.max(np.asarray(af.abs_err)) < 0.8 * np.max(np.asarray(iv.abs_err))
    assert not check(fn, xs, precision="bfloat16", domain="affine", radius=r, n_samples=3, jit=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["conv", "window"])
def test_affine_partial_sum_overflow_is_inf(name):
    """A partial sum that overflows although the result is in range (float8_e5m2, fuzz
    seed 3000) is unbounded in the affine conv / window-sum rules too."""
    try:
        import test_partial_sum_overflow as T
    except ImportError:  # pragma: no cover
        from tests import test_partial_sum_overflow as T
    T._check_inf_then_finite(T.KERNELS[name], "affine", "recursive")
