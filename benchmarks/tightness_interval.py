"""Tightness of the interval domain: bound / observed error.

For small MLPs at a point input, in several formats, prints

    max abs_err (jaxerr) / max |simulated - exact| over N simulated executions

where the simulations (tests/_simulator.py) round every operation to the format
and sum in random orders under the same accumulation model. A ratio >= 1 is
required (soundness); smaller is tighter.

    python benchmarks/tightness_interval.py [--runs 20] [--width 128]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import _simulator as S  # noqa: E402

import jaxerr  # noqa: E402

ACT = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu}


def mlp(depth, width, act, key):
    ks = jax.random.split(key, depth + 1)
    ws = [np.asarray(jax.random.normal(k, (width, width)) / np.sqrt(width), np.float32) for k in ks[:depth]]
    bs = [np.asarray(0.1 * jax.random.normal(k, (width,)), np.float32) for k in jax.random.split(ks[-1], depth)]

    def f(x):
        for i, (w, b) in enumerate(zip(ws, bs)):
            x = x @ w + b[None, :]
            if i < depth - 1:
                x = ACT[act](x)
        return x

    return f


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__}; MLP depth {a.depth}, width {a.width}, batch {a.batch}; {a.runs} simulated runs")
    print(f"{'act':6} {'format':10} {'accumulation':14} {'bound':>10} {'observed':>10} {'ratio':>8} {'time':>7}")
    for act in ("relu", "tanh", "gelu"):
        f = mlp(a.depth, a.width, act, jax.random.PRNGKey(0))
        x = rng.standard_normal((a.batch, a.width)).astype(np.float32)
        ex = S.exact(f, [x])[0]
        for fmt, acc, sim_acc in (
            ("bfloat16", "auto", "wide:float32"),
            ("float16", "auto", "wide:float32"),
            ("float16", "recursive", "recursive"),
            ("float32", "recursive", "recursive"),
        ):
            t = time.perf_counter()
            b = jaxerr.bound(f, fmt, accumulation=acc, warn=False)(jnp.asarray(x))
            dt = time.perf_counter() - t
            worst = 0.0
            for _ in range(a.runs):
                s = S.simulate(f, [x], fmt=fmt, accumulation=sim_acc, order="random", rng=rng)[0]
                worst = max(worst, float(np.max(np.abs(s - ex))))
            bnd = float(jnp.max(b.abs_err))
            ratio = bnd / worst if worst > 0 else float("inf")
            print(f"{act:6} {fmt:10} {acc:14} {bnd:10.3e} {worst:10.3e} {ratio:8.1f} {dt:6.1f}s")


if __name__ == "__main__":
    main()
