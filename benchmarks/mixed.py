"""Mixed-precision inner products on digits (issue 5's Measure section).

Prints, for the ReLU and tanh MLPs of examples/mixed_precision_digits.py: accuracy,
agreement of predicted classes with fp32, median relative logit error vs fp32 and the
recomputed fraction of inner-product work, per criterion and threshold; then the wall
time (jit, CPU, median of repeats) of masked vs compacted mixed precision vs uniform low
(e4m3 blocked FMA) vs uniform high (fp16 recursive), as ratios measured in one run.

Run: ``python benchmarks/mixed.py [--quick]``.
"""

from __future__ import annotations

import argparse
import pathlib
import runpy
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxerr
from jaxerr.emulate import emulated_dot_general

EX = runpy.run_path(str(pathlib.Path(__file__).resolve().parent.parent / "examples" / "mixed_precision_digits.py"))


def uniform(ar, qp, scales, act):
    phi = jax.nn.relu if act == "relu" else jnp.tanh

    def f(x):
        h = x
        for i, p in enumerate(qp):
            z = emulated_dot_general(ar.round(h), ar.round(p["w"]), (((1,), (0,)), ((), ())), ar)
            z = z * scales[i] + p["b"][None, :]
            h = phi(z) if i < len(qp) - 1 else z
        return h

    return f


def timed(f, x, reps):
    jax.block_until_ready(f(x))
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(x))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer training steps and thresholds")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    xtr, ytr, xte, yte = EX["load_digits_28"]()
    steps = 300 if args.quick else 600
    sweeps = {"activation": (1.0, 0.3), "condition": (1.0, 0.3)} if args.quick else EX["SWEEPS"]
    for act in ("relu", "tanh"):
        rows, (qp, scales) = EX["run_experiment"](act, xtr, ytr, xte, yte, steps, sweeps, log=lambda *a: None)
        EX["print_table"](act, rows)
        x = jnp.asarray(xte)
        mlp = EX["mlp"]
        tau = 0.3 if act == "relu" else 0.1

        def mixed(mode, cap=None, act=act):
            return jax.jit(jaxerr.mixed_precision(lambda x: mlp(qp, x, act, scales), low=EX["LOW"],
                                                  high=EX["HIGH"], tol=tau, criterion="activation",
                                                  mode=mode, capacity=cap))

        fns = {
            "uniform low (e4m3)": jax.jit(uniform(EX["LOW"], qp, scales, act)),
            "uniform high (fp16)": jax.jit(uniform(EX["HIGH"], qp, scales, act)),
            "masked": mixed("masked"),
            "compacted (cap 0.75)": mixed("compacted", 0.75),
            "native fp32": jax.jit(lambda x, act=act: mlp(qp, x, act, scales)),
        }
        times = {k: timed(f, x, args.reps) for k, f in fns.items()}
        ref = times["uniform high (fp16)"]
        print(f"\nwall time, {act}, activation rule tau={tau}, {len(xte)} inputs (ratio to uniform high):")
        for k, t in times.items():
            print(f"  {k:<24}{t * 1e3:10.1f} ms {t / ref:8.2f}x")


if __name__ == "__main__":
    main()
