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
    env["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 --xla_cpu_multi_thread_eigen=false "
                        "intra_op_parallelism_threads=1")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(here), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, os.path.join(here, "_sharded_check.py")], env=env,
                       capture_output=True, text=True, timeout=3000)
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
