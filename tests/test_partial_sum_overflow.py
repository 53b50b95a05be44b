"""A partial sum may overflow although the final sum is in range (fuzz seed 3000).

``-44372 + -25032 + 48280`` in float8_e5m2 (largest finite 57344): the exact sum is
-21124, but summed left to right the partial sum -69404 rounds to -inf. Every
summing rule (reduce_sum, dot_general, conv, windowed and cumulative sums,
scatter-add) in every domain must give an infinite bound there, and stay finite when
no partial sum can overflow.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from _soundness import check
from jax import lax

import jaxerr

BIG = np.array([-44372.0, -25032.0, 48280.0], np.float32)  # e5m2-representable-ish
SMALL = BIG / 8

DOMAINS = ["interval", "first_order", "affine"]


def _sum(x):
    return jnp.sum(x)


def _dot(x):
    return jnp.dot(x, jnp.ones(3, jnp.float32))


def _cumsum(x):
    return jnp.cumsum(x)[-1:]


def _window(x):
    return lax.reduce_window(x, 0.0, lax.add, (3,), (1,), "VALID")


def _scatter(x):
    return jnp.zeros(1, jnp.float32).at[jnp.zeros(3, jnp.int32)].add(x)


def _conv(x):
    return lax.conv_general_dilated(x[None, None, :], jnp.ones((1, 1, 3), jnp.float32), (1,), "VALID")[0, 0]


KERNELS = {"sum": _sum, "dot": _dot, "cumsum": _cumsum, "window": _window, "scatter": _scatter,
           "conv": _conv}


def _check_inf_then_finite(f, dom, acc):
    g = jaxerr.bound(f, "float8_e5m2", accumulation=acc, domain=dom, warn=False)
    out = g(BIG)
    assert np.all(np.isinf(np.asarray(out.abs_err))), (dom, acc, out)
    out = g(SMALL)
    assert np.all(np.isfinite(np.asarray(out.abs_err))), (dom, acc, out)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_partial_sum_overflow_is_inf(name):
    _check_inf_then_finite(KERNELS[name], "interval", "recursive")


@pytest.mark.parametrize("dom", ["first_order", "affine"])
def test_partial_sum_overflow_is_inf_other_domains(dom):
    _check_inf_then_finite(_dot, dom, "blocked:8")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sum", "dot"])
@pytest.mark.parametrize("dom", DOMAINS)
@pytest.mark.parametrize("acc", ["recursive", "blocked:8", "pairwise"])
def test_partial_sum_overflow_matrix(name, dom, acc):
    _check_inf_then_finite(KERNELS[name], dom, acc)


@pytest.mark.slow
@pytest.mark.parametrize("dom", DOMAINS)
def test_partial_sum_overflow_sound_against_simulator(dom):
    viol = check(_sum, [BIG], precision="float8_e5m2", accumulation="recursive", radius=64.0,
                 domain=dom, n_samples=4)
    assert not viol, viol


def test_wide_accumulator_does_not_overflow():
    # bf16 with float32 accumulation: the partial sums are float32, far from overflow
    x = np.array([3e30, -3e30, 1.0], np.float32)
    out = jaxerr.bound(_dot, "bfloat16", accumulation="wide:float32", warn=False)(x)
    assert np.isfinite(float(out.abs_err))
    # float16 with a propagated error much larger than the accumulation term: S is
    # formed exactly, so no false alarm
    x = np.array([30000.0, -30000.0, 1.0], np.float32)
    out = jaxerr.bound(lambda x: _dot(x * 1.001), "float16", accumulation="recursive", warn=False)(x)
    assert np.isfinite(float(out.abs_err))
