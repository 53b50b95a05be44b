"""FPBench / FPTaylor scalar kernels in float64 over input boxes (``benchmarks/_kernels.py``):
every bound must hold for sampled executions of the compiled float64 program, against
the exact value computed by mpmath on *real* inputs of the box (a float64 point plus a
sub-half-ulp offset, so the input rounding is part of the error). Also the affine
domain's reduced product with the interval domain and its fan-out promotion, on small
programs where the unimproved domain measurably fails.

The default run checks a few kernels (interval and affine); ``-m slow`` all of them in
interval, affine and first_order, whole and split into sub-boxes."""

from __future__ import annotations

import contextlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxerr
import jaxerr._bound as B

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import _kernels as K  # noqa: E402


@contextlib.contextmanager
def x64():
    prev = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", prev)


@contextlib.contextmanager
def affine_alone():
    """The affine domain without the final intersection with the interval result."""
    prev = B._AFFINE_CAP
    B._AFFINE_CAP = False
    try:
        yield
    finally:
        B._AFFINE_CAP = prev


def _kernel(name):
    return next(k for k in K.KERNELS if k.name == name)


def _check(name, domain, samples, pieces=1, jit=False):
    k = _kernel(name)
    with x64(), affine_alone():
        bound = K.analyse(k, domain, symbols=64 if domain == "affine" else None, cap=False, pieces=pieces, jit=jit)
        obs = K.observed_error(k, samples, seed=1)
    assert np.isfinite(bound), f"{name} {domain}: bound is not finite"
    assert obs <= bound, f"{name} {domain} pieces={pieces}: observed error {obs:.3e} > bound {bound:.3e}"
    return bound, obs


FAST = [("t_div_t1", "interval"), ("verhulst", "affine")]


@pytest.mark.parametrize("name,domain", FAST, ids=[f"{n}-{d}" for n, d in FAST])
def test_kernel_bound_holds(name, domain):
    _check(name, domain, samples=200)


@pytest.mark.slow
@pytest.mark.parametrize("domain", ["interval", "affine", "first_order"])
@pytest.mark.parametrize("name", [k.name for k in K.KERNELS])
def test_every_kernel_bound_holds(name, domain):
    _check(name, domain, samples=400)


@pytest.mark.slow
@pytest.mark.parametrize("domain", ["interval", "affine"])
@pytest.mark.parametrize("name", [k.name for k in K.KERNELS])
def test_every_kernel_split_bound_holds(name, domain):
    whole, _ = _check(name, domain, samples=100)
    split, _ = _check(name, domain, samples=100, pieces=64)
    # a sub-box's bound can exceed the whole box's only by the analysis' own rounding
    assert split <= whole * (1 + 1e-9)


def test_split_box_removes_the_dependency_blowup():
    """t / (t + 1) over [0, 999]: the input's rounding error (u * 999 at most) divided by
    (t + 1)^2 at its largest (t near 0) makes the whole-box bound ~2e-10, 10^6 x the
    real error. Cutting the box (jax.vmap over 64 sub-boxes) pairs each error size with
    its own divisor: >1000 x tighter, and still above the observed error."""
    whole, obs = _check("t_div_t1", "interval", samples=100)
    split, _ = _check("t_div_t1", "interval", samples=100, pieces=64, jit=True)
    assert split < whole / 1000


def test_affine_range_never_wider_than_interval():
    """1 / (x * x) over x in [1, 3]: the affine square 4 + 4 (x - 2) +- remainder has a
    range reaching below 0, so without the interval claim riding along (reduced
    product) the divisor's range contained 0 and the bound was inf (doppler1 was inf
    the same way). Now finite, and no looser than the interval domain."""
    with x64(), affine_alone():
        box = jaxerr.Interval(jnp.float64(1.0), jnp.float64(3.0))
        f = lambda x: 1.0 / (x * x)  # noqa: E731
        a = jaxerr.bound(f, precision="float64", domain="affine", symbols=8, jit=False)(box)
        i = jaxerr.bound(f, precision="float64", jit=False)(box)
    assert np.isfinite(float(a.abs_err))
    assert float(a.lo) >= 1 / 9 * (1 - 1e-12) and float(a.hi) <= 1 * (1 + 1e-12)
    assert float(a.abs_err) <= float(i.abs_err) * (1 + 1e-12)


def test_fanout_promotion_cancels_a_shared_rounding():
    """(3x + 1) - 3x over x in [1000, 1001]: y = 3x is read twice, so its rounding (an
    independent term) becomes a shared symbol and cancels in the difference, as does
    the input's rounding. What is left is the rounding of y + 1 and of the difference:
    about u |y| + u. Without the promotion y's rounding counts twice (3 u |y| in all);
    the interval domain has 5 u |y|."""
    with x64(), affine_alone():
        box = jaxerr.Interval(jnp.float64(1000.0), jnp.float64(1001.0))
        def f(x):
            y = x * 3.0
            return (y + 1.0) - y

        a = jaxerr.bound(f, precision="float64", domain="affine", symbols=8, jit=False)(box)
        i = jaxerr.bound(f, precision="float64", jit=False)(box)
    u = 2.0 ** -53
    assert float(a.abs_err) <= 1.05 * u * (3003 + 1)
    assert float(a.abs_err) < 0.3 * float(i.abs_err)
    assert float(a.lo) <= 1.0 <= float(a.hi)
