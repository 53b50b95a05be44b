"""domain="first_order" where the interval pass fears a NaN or an overflow.

The first_order path pass encloses every state between the exact and the computed
execution; where its output range is finite, the computed output is a finite number
in it, so the interval pass' "may be NaN" (from its much wider ranges) no longer
discards the first_order bound (``_bound._cap``). Where a NaN or an overflow is real,
the path ranges are infinite too and the bound stays inf."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxerr

try:
    from _soundness import check
except ImportError:  # pragma: no cover
    from tests._soundness import check


def _overflow_feared(n: int = 256, depth: int = 2, target: float = 10.5):
    """``exp(s) - exp(s) / 2`` in float16 with ``s`` after ``depth`` tanh layers,
    scaled so that exact ``s = target``: ``exp(s)`` is 36316 < 65504, but the interval
    pass bounds the error of ``s`` by ~0.85 (|W| at every layer), past ln(65504) = 11.09,
    so it fears an overflow and then ``inf - inf``; first_order's refined path range of
    ``s`` is within 0.05 of it."""
    rng = np.random.default_rng(0)
    ws = [jnp.asarray(rng.standard_normal((n, n)) / np.sqrt(n) * 1.5, jnp.float32) for _ in range(depth)]
    x = rng.standard_normal(n).astype(np.float32)

    def pre(x):
        h = x
        for w in ws:
            h = jnp.tanh(w @ h)
        return jnp.sum(h * h)

    k = target / float(pre(x))

    def f(x):
        z = jnp.exp(pre(x) * k)
        return z - 0.5 * z

    return f, x


@pytest.mark.slow  # 40 s (None), longer with probabilistic
@pytest.mark.parametrize("probabilistic", [None, 1e-6])
def test_finite_path_range_overrules_the_interval_nan_fear(probabilistic):
    f, x = _overflow_feared()
    iv = jaxerr.bound(f, "float16", domain="interval", warn=False)(x)
    assert np.isinf(iv.abs_err)  # the interval pass fears inf - inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fo = jaxerr.bound(f, "float16", domain="first_order", probabilistic=probabilistic)(x)
    err = float(fo.abs_err)
    assert np.isfinite(err) and err < 0.1 * float(fo.lo), err  # was inf before
    # the computed range is narrowed to the path range (within [lo - err, hi + err])
    assert float(fo.computed_hi) - float(fo.computed_lo) <= 2 * err + float(fo.hi - fo.lo) + 1e-3 * err
    if probabilistic is None:
        assert check(f, [x], precision="float16", n_samples=1, domain="first_order", out=fo) == []


_I = jaxerr.Interval


def _box(a, b):
    return _I(jnp.float32(a), jnp.float32(b))


# each may compute NaN (or inf - inf) somewhere in its input set: no finite claim
_NAN_CASES = {
    "zero_times_reciprocal_box": (lambda x: 0.0 * (1.0 / x), lambda: _box(-1, 1)),
    "exp_overflow_minus_itself": (lambda x: jnp.exp(x) - jnp.exp(x), lambda: jnp.float32(12)),
    "exp_overflow_times_zero": (lambda x: jnp.exp(x) * 0.0, lambda: jnp.float32(12)),
    "where_reciprocal_box": (lambda x: jnp.where(x > 0, 1 / x, 0.0), lambda: _box(-1, 1)),
    "zero_times_sqrt_negative": (lambda x: 0.0 * jnp.sqrt(x), lambda: _box(-1e-3, 1)),
    "zero_times_log_zero": (lambda x: 0.0 * jnp.log(x), lambda: _box(0, 1)),
    "x_over_x_box": (lambda x: x / x, lambda: _box(-1, 1)),
    "sum_zero_times_reciprocal": (lambda x: jnp.sum(0.0 * (1.0 / x)),
                                  lambda: _I(jnp.array([-1.0, 1.0], jnp.float32), jnp.array([1.0, 2.0], jnp.float32))),
    "dot_zero_reciprocal": (lambda x: jnp.zeros(2, jnp.float32) @ (1.0 / x),
                            lambda: _I(jnp.array([-1.0, 1.0], jnp.float32), jnp.array([1.0, 2.0], jnp.float32))),
    "exp_times_exp_minus": (lambda x: jnp.exp(x) * jnp.exp(-x), lambda: _box(0, 20)),
    # a NaN state squashed by a bounded primitive: the path range is finite, the computed
    # value NaN (fuzz seeds 32034, 32035)
    "logistic_of_log_negative": (lambda x: jax.nn.sigmoid(jnp.log(x)), lambda: jnp.float32(-1.5)),
    "clip_of_zero_times_overflowed_constant": (lambda x: jnp.clip(x * jnp.float32(1e30), -3.0, 3.0),
                                               lambda: jnp.float32(0.0)),
}


_NAN_FAST = {"zero_times_reciprocal_box", "exp_overflow_minus_itself", "zero_times_sqrt_negative",
             "x_over_x_box", "dot_zero_reciprocal", "logistic_of_log_negative",
             "clip_of_zero_times_overflowed_constant"}


@pytest.mark.parametrize("probabilistic", [None, pytest.param(1e-6, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in _NAN_FAST else (pytest.mark.slow,))
                                  for n in _NAN_CASES])
def test_possible_nan_stays_inf(name, probabilistic):
    f, x = _NAN_CASES[name]
    b = jaxerr.bound(f, "float16", domain="first_order", probabilistic=probabilistic, warn=False)(x())
    assert np.all(np.isinf(np.asarray(b.abs_err)))
    assert np.all(np.isneginf(np.asarray(b.computed_lo))) and np.all(np.isposinf(np.asarray(b.computed_hi)))


@pytest.mark.slow
def test_float16_transformer_stage_is_finite_and_sound():
    """The tightness benchmark's encoder block up to its GELU MLP, float16 at a point:
    every output was inf (the interval pass feared an overflow of the dot after the
    second LayerNorm) and is finite now."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import tightness as T

    f, x = T.transformer(upto="mlp")
    with jax.numpy_rank_promotion("allow"):  # (the benchmark broadcasts LayerNorm's scale)
        b = jaxerr.bound(f, "float16", domain="first_order", warn=False)(x)
        assert np.all(np.isfinite(np.asarray(b.abs_err)))
        assert check(f, [x], precision="float16", n_samples=1, domain="first_order", out=b) == []

