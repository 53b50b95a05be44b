"""bound(f) under jax.sharding with 8 CPU devices, in a subprocess (the device count is
fixed when JAX initialises, so the rest of the suite keeps its settings)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_sharded_analysis_matches_one_device():
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    env["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 --xla_cpu_multi_thread_eigen=false "
                        "intra_op_parallelism_threads=1")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(here), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, os.path.join(here, "_sharded_check.py")], env=env,
                       capture_output=True, text=True, timeout=1200)
    print(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert p.stdout.count("batch-sharded") == 4
