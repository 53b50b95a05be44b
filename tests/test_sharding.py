"""bound(f) under jax.sharding with 8 CPU devices, in a subprocess (the device count is
fixed when JAX initialises, so the rest of the suite keeps its settings); and the
symbol_sharding= argument of domain="affine" on this process' devices."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import jaxerr


@pytest.mark.slow
def test_sharded_analysis_matches_one_device():
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_cpu_multi_thread_eigen=false"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(here), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, os.path.join(here, "_sharded_check.py")], env=env,
                       capture_output=True, text=True, timeout=5400)
    print(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert p.stdout.count("batch-sharded") == 6
    assert p.stdout.count("symbol-sharded affine      ") == 2
    assert "ALL OK" in p.stdout


def _f(x, w):
    return jnp.tanh(x @ w)


def test_symbol_sharding_arguments_are_checked():
    mesh = Mesh(np.array(jax.devices()[:1]), ("sym",))
    with pytest.raises(ValueError, match="domain='affine'"):
        jaxerr.bound(_f, symbol_sharding=(mesh, "sym"))
    with pytest.raises(ValueError, match="axis names"):
        jaxerr.bound(_f, domain="affine", symbol_sharding=(mesh, "model"))
    with pytest.raises(ValueError, match="mesh, axis_name"):
        jaxerr.bound(_f, domain="affine", symbol_sharding="sym")


def test_symbol_sharding_on_one_device_changes_nothing():
    """A one-device mesh: the constraint places every generator array on that device;
    the bounds are the ones without it, bit for bit."""
    mesh = Mesh(np.array(jax.devices()[:1]), ("sym",))
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (1, 4)).astype(np.float32)
    w = (rng.standard_normal((4, 2)) / 2).astype(np.float32)
    box = jaxerr.Interval(x - 0.01, x + 0.01)
    a = jaxerr.bound(_f, "bfloat16", domain="affine", symbols=16, warn=False)(box, w)
    b = jaxerr.bound(_f, "bfloat16", domain="affine", symbols=16, warn=False,
                     symbol_sharding=(mesh, "sym"))(box, w)
    for k in ("lo", "hi", "abs_err", "computed_lo", "computed_hi"):
        np.testing.assert_array_equal(np.asarray(getattr(a, k)), np.asarray(getattr(b, k)))
    assert np.all(np.isfinite(np.asarray(b.abs_err))) and np.all(np.asarray(b.abs_err) > 0)


def test_staged_analysis_of_a_composition_is_sound():
    """docs/scaling.md, "split the model into stages": bound g2 over the box holding both
    the exact and the computed output of g1; then [lo, hi] encloses the exact result of
    g2(g1(x)) and abs_err + (hi - lo) bounds its error (checked against the simulator)."""
    import _simulator as S

    rng = np.random.default_rng(3)
    w1 = (rng.standard_normal((6, 5)) / 2).astype(np.float32)
    w2 = (rng.standard_normal((5, 3)) / 2).astype(np.float32)

    def g1(x):
        return jnp.tanh(x @ w1)

    def g2(h):
        return jax.nn.softmax(h @ w2, axis=-1)

    x = rng.uniform(-1, 1, (4, 6)).astype(np.float32)
    b1 = jaxerr.bound(g1, "bfloat16", warn=False)(x)
    box = jaxerr.Interval(jnp.minimum(b1.lo, b1.computed_lo), jnp.maximum(b1.hi, b1.computed_hi))
    b2 = jaxerr.bound(g2, "bfloat16", warn=False)(box)
    lo, hi = np.asarray(b2.lo, np.float64), np.asarray(b2.hi, np.float64)
    err = np.asarray(b2.abs_err, np.float64) + (hi - lo)
    assert np.all(np.isfinite(err))

    def f(x):
        return g2(g1(x))

    (exact,) = S.exact(f, [x])
    exact = np.asarray(exact, np.float64)
    assert np.all((lo <= exact) & (exact <= hi))
    for order in ("sequential", "reverse", "random"):
        (sim,) = S.simulate(f, [x], fmt="bfloat16", accumulation="wide:float32", order=order, rng=rng)
        assert np.all(np.abs(np.asarray(sim, np.float64) - exact) <= err)
