"""Tightness and cost of jaxerr on a small LeNet-style CNN (Flax linen):
conv(3x3, 4) - relu - max_pool 2x2 - conv(3x3, 8, VALID) - relu - avg_pool 2x2 - dense(10),
input 1x12x12x1, bfloat16, at a point and over a box ``x ± 1e-3``.

Columns: ``median / max`` of ``abs_err / observed`` (observed: per-element max of
``|simulated - exact|`` over simulated executions of ``tests/_simulator.py`` with
random summation orders; for the box, at the centre, the corners-like samples of
``sample_box``), the bound's width ``hi - lo``, the time of the first call of
``bound(f)`` (trace + compile + run) and of a second call, for the interval,
first_order and affine domains.

    python benchmarks/layers_lenet.py [--runs 20] [--box-points 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import flax.linen as nn
import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import _simulator as S  # noqa: E402

import jaxerr  # noqa: E402


class LeNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(8, (3, 3), padding="VALID")(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def observed(f, points, runs, rng):
    worst = None
    for pt in points:
        ex = np.asarray(S.exact(f, [pt])[0], np.float64)
        for _ in range(runs):
            sim = np.asarray(S.simulate(f, [pt], fmt="bfloat16", accumulation="wide:float32", order="random",
                                        rng=rng)[0], np.float64)
            e = np.abs(sim - ex)
            worst = e if worst is None else np.maximum(worst, e)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--box-points", type=int, default=4)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    m = LeNet()
    x = rng.uniform(0, 1, (1, 12, 12, 1)).astype(np.float32)
    v = m.init(jax.random.PRNGKey(0), x)

    def f(x):
        return m.apply(v, x)

    r = 1e-3
    box_pts = list(S.sample_box(x.astype(np.float64) - r, x.astype(np.float64) + r, args.box_points, rng))
    obs = {"point": observed(f, [x], args.runs, rng),
           "box": observed(f, box_pts, max(1, args.runs // args.box_points), rng)}
    print(f"LeNet (bfloat16, accumulation auto = wide:float32), jax {jax.__version__}, "
          f"{args.runs} simulated runs per input kind")
    print(f"{'input':6} {'domain':12} {'median ratio':>12} {'max ratio':>10} {'max abs_err':>12} "
          f"{'max obs':>10} {'width':>9} {'1st call [s]':>12} {'jit call [s]':>12}")
    for kind in ("point", "box"):
        arg = x if kind == "point" else jaxerr.Interval(x - r, x + r)
        for domain in ("interval", "first_order", "affine"):
            g = jaxerr.bound(f, "bfloat16", domain=domain, warn=False)
            t0 = time.perf_counter()
            b = g(arg)
            jax.block_until_ready(b.abs_err)
            t1 = time.perf_counter()
            b = g(arg)
            jax.block_until_ready(b.abs_err)
            t2 = time.perf_counter()
            err = np.asarray(b.abs_err, np.float64)
            o = obs[kind]
            pos = o > 0
            ratios = err[pos] / o[pos]
            if np.any(o > err):
                print("VIOLATION: observed error above abs_err", file=sys.stderr)
                sys.exit(1)
            width = float(np.max(np.asarray(b.hi) - np.asarray(b.lo)))
            print(f"{kind:6} {domain:12} {np.median(ratios):12.1f} {err.max() / o.max():10.1f} {err.max():12.3g} "
                  f"{o.max():10.3g} {width:9.3g} {t1 - t0:12.2f} {t2 - t1:12.3f}")


if __name__ == "__main__":
    main()
