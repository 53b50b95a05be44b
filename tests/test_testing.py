"""jaxerr.testing.assert_allclose_certified: passes for real low-precision executions,
fails with a readable message otherwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxerr.testing import assert_allclose_certified, certified_interval

W = jax.random.normal(jax.random.PRNGKey(0), (16, 4)) / 4
B = jnp.linspace(-0.5, 0.5, 4)


def f(x, w, b):
    return jnp.tanh(x @ w + b)


X = jnp.sin(jnp.arange(16, dtype=jnp.float32))


def _bf16_run():
    return f(X.astype(jnp.bfloat16), W.astype(jnp.bfloat16), B.astype(jnp.bfloat16))


def test_passes_for_real_bf16_execution():
    actual = _bf16_run()
    assert actual.dtype == jnp.bfloat16
    assert_allclose_certified(actual, f, X, W, B, precision="bfloat16", jit=False)
    # float32 reference run against its own (as written) bound
    assert_allclose_certified(f(X, W, B), f, X, W, B, precision=None, jit=False)


def test_fails_with_readable_message():
    actual = np.asarray(_bf16_run(), np.float64)
    (lower, upper, b), = certified_interval(f, X, W, B, precision="bfloat16", jit=False)
    bad = actual.copy()
    bad[2] = upper[2] + 3 * float(b.abs_err[2])  # three abs_err beyond the bound
    with pytest.raises(AssertionError) as e:
        assert_allclose_certified(bad, f, X, W, B, precision="bfloat16", jit=False)
    msg = str(e.value)
    assert "1 of 4 element(s) outside the certified bound for precision=bfloat16" in msg
    assert "at (2,)" in msg and "x abs_err" in msg and "outside by" in msg
    assert "(0,)" not in msg  # only the failing element is listed
    # a wrong shape and NaN are named too
    with pytest.raises(AssertionError, match="shape"):
        assert_allclose_certified(actual[:2], f, X, W, B, precision="bfloat16", jit=False)
    nan = actual.copy()
    nan[0] = np.nan
    with pytest.raises(AssertionError, match="at \\(0,\\)"):
        assert_allclose_certified(nan, f, X, W, B, precision="bfloat16", jit=False)


def test_checks_lo_minus_err_to_hi_plus_err():
    (lower, upper, b), = certified_interval(f, X, W, B, precision="bfloat16", jit=False)
    assert np.all(lower <= np.asarray(b.lo, np.float64) - np.asarray(b.abs_err, np.float64))
    assert np.all(upper >= np.asarray(b.hi, np.float64) + np.asarray(b.abs_err, np.float64))
    assert_allclose_certified(upper, f, X, W, B, precision="bfloat16", jit=False)
    with pytest.raises(AssertionError):
        assert_allclose_certified(np.nextafter(upper, np.inf), f, X, W, B, precision="bfloat16", jit=False)
