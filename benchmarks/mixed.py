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


def compaction(reps: int, fractions=(0.05, 0.2, 0.5), m=360, k=784, n=784, highs=("fp16", "native fp32")):
    """One 784-input layer (m x k @ k x n, identity activation, the seed rule on |v| so that
    a chosen fraction f of components is flagged), e4m3 low; masked vs compacted (one
    inner product per flagged component) vs columns (compaction by output component
    across the batch) vs uniform low / high, as ratios to uniform high in one run.

    Two flag patterns: "scattered" (the smallest |v| anywhere: flags spread over all
    components) and "clustered" (flags confined to a fraction f of the output components,
    which is what column compaction needs)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((m, k)) * (rng.random((m, k)) < 0.5), jnp.float32)
    w = EX["LOW"].round(jnp.asarray(rng.normal(size=(k, n)) * 2, jnp.float32))
    dn = (((1,), (0,)), ((), ()))
    y_low = np.asarray(emulated_dot_general(EX["LOW"].round(x), w, dn, EX["LOW"]))
    print(f"\ncompaction: one layer {m}x{k} @ {k}x{n}, low e4m3 blocked:8 FMA; wall time, ratio to uniform high")
    print(f"{'high':<12}{'pattern':<11}{'flagged':>8}{'masked':>9}{'compacted':>11}{'columns':>9}"
          f"{'unif low':>10}{'unif high':>11}{'high ms':>9}")
    for hname in highs:
        high = EX["HIGH"] if hname == "fp16" else None

        def mixed(mode, cap, high=high):
            return jax.jit(lambda x, tol, bias: jaxerr.mixed_dot_general(
                x, w, dn, low=EX["LOW"], high=high, tol=tol, bias=bias, criterion="activation",
                mode=mode, capacity=cap))

        if high is None:
            uh = jax.jit(lambda x: jax.lax.dot_general(x, w, dn, precision=jax.lax.Precision.HIGHEST))
        else:
            uh = jax.jit(lambda x: emulated_dot_general(EX["HIGH"].round(x), w, dn, EX["HIGH"]))
        ul = jax.jit(lambda x: emulated_dot_general(EX["LOW"].round(x), w, dn, EX["LOW"]))
        t_high = timed(uh, x, reps)
        t_low = timed(ul, x, reps)
        masked = mixed("masked", None)
        stats = jax.jit(lambda x, tol, bias: jaxerr.mixed_dot_general(
            x, w, dn, low=EX["LOW"], high=high, tol=tol, bias=bias, criterion="activation",
            return_stats=True)[1]["recomputed"])
        for pattern in ("scattered", "clustered"):
            for f in fractions:
                if pattern == "scattered":  # identity activation: flagged where |v| < 1/tol
                    thr = float(np.quantile(np.abs(y_low), f))
                    tol, bias = 1.0 / max(thr, 1e-30), np.zeros((1, n), np.float32)
                else:  # a huge bias switches off all but a fraction f of the columns
                    cols = rng.permutation(n)[: int(round(f * n))]
                    bias = np.full((1, n), 1e9, np.float32)
                    bias[0, cols] = 0.0
                    tol = 1e-6
                tol, bias = jnp.float32(tol), jnp.asarray(bias)
                args = (x, tol, bias)
                frac = float(stats(*args))
                ts = {"masked": timed(lambda a: masked(*a), args, reps)}
                for mode in ("compacted", "columns"):
                    g = mixed(mode, min(0.999, 1.15 * f + 0.01))
                    ts[mode] = timed(lambda a, g=g: g(*a), args, reps)
                print(f"{hname:<12}{pattern:<11}{frac:8.3f}{ts['masked'] / t_high:9.2f}"
                      f"{ts['compacted'] / t_high:11.2f}{ts['columns'] / t_high:9.2f}{t_low / t_high:10.2f}"
                      f"{1.0:11.2f}{t_high * 1e3:9.1f}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer training steps and thresholds")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compaction-only", action="store_true")
    args = ap.parse_args(argv)
    compaction(args.reps)
    if args.compaction_only:
        return
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
