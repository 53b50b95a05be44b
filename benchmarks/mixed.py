"""Mixed-precision inner products on digits (issue 5's Measure section).

Prints, for the ReLU and tanh MLPs of examples/mixed_precision_digits.py: accuracy,
agreement of predicted classes with fp32, median relative logit error vs fp32 and the
recomputed fraction of inner-product work, per criterion and threshold; then the wall
time (jit, CPU, min of repeats) of masked vs compacted mixed precision vs uniform low
(e4m3 blocked FMA) vs uniform high (fp16 recursive), as ratios measured in one run.

Run: ``python benchmarks/mixed.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import runpy
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np

import jaxerr
from jaxerr import emulated_dot_general

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


def timed_many(fns: dict, reps: int) -> dict:
    """CPU seconds (process time, XLA single-threaded) of each ``f(*args)``, the runs of
    the functions interleaved round by round, min over ``reps`` rounds: on a shared
    machine this is far steadier than wall time."""
    for f, a in fns.values():
        jax.block_until_ready(f(*a))
    best = {k: float("inf") for k in fns}
    for _ in range(reps):
        for k, (f, a) in fns.items():
            t = time.process_time()
            jax.block_until_ready(f(*a))
            best[k] = min(best[k], time.process_time() - t)
    return best


def compaction(reps: int, fractions=(0.05, 0.2, 0.5), highs=("fp16", "native fp32")):
    """One 784-input layer (360 x 784 @ 784 x 784), e4m3 low; masked vs compacted (one
    inner product per flagged component, terms gathered) vs columns (compaction by output
    component across the batch: a dense product on the columns with any flag) vs
    uniform low / high, as ratios to uniform high measured in one run (min of `reps`).

    Flag patterns: "scattered" (identity activation, the seed rule on |v|: a fraction f of
    components anywhere), "clustered" (flags confined to a fraction f of the output
    components) and "MLP L1" (the trained ReLU MLP's first layer on the 360 test digits
    with the seed rule, tau = 1 and 0.3: about 27 % of its units are never flagged)."""
    rng = np.random.default_rng(0)
    m, k, n = 360, 784, 784
    LOW = EX["LOW"]
    dn = (((1,), (0,)), ((), ()))
    xs = jnp.asarray(rng.random((m, k)) * (rng.random((m, k)) < 0.5), jnp.float32)
    ws = LOW.round(jnp.asarray(rng.normal(size=(k, n)) * 2, jnp.float32))
    y_low = np.asarray(emulated_dot_general(LOW.round(xs), ws, dn, LOW))
    cases = []
    for f in fractions:  # identity activation: flagged where |v| < 1/tol
        thr = float(np.quantile(np.abs(y_low), f))
        cases.append(("scattered", xs, ws, dict(tol=1.0 / max(thr, 1e-30), bias=np.zeros((1, n), np.float32),
                                                scale=np.float32(1.0), act=None)))
    for f in fractions:  # a huge bias switches off all but a fraction f of the columns
        cols = rng.permutation(n)[: int(round(f * n))]
        bias = np.full((1, n), 1e9, np.float32)
        bias[0, cols] = 0.0
        cases.append(("clustered", xs, ws, dict(tol=1e-6, bias=bias, scale=np.float32(1.0), act=None)))
    xtr, ytr, xte, yte = EX["load_digits_28"]()
    qp, scales = EX["quantise"](EX["train"]("relu", xtr, ytr, 600))
    for tau in (1.0, 0.3):
        cases.append((f"MLP L1 t={tau}", jnp.asarray(xte), qp[0]["w"],
                      dict(tol=tau, bias=np.asarray(qp[0]["b"])[None], scale=np.float32(scales[0]), act="relu")))
    print(f"\ncompaction: one layer 360x784 @ 784x784, low e4m3 blocked:8 FMA; CPU time (min of {reps} "
          "interleaved rounds), ratio to uniform high")
    print(f"{'high':<12}{'pattern':<16}{'flagged':>8}{'cols':>6}{'masked':>8}{'compacted':>11}{'columns':>9}"
          f"{'unif low':>10}{'high ms':>9}", flush=True)
    for hname in highs:
        high = EX["HIGH"] if hname == "fp16" else None
        fns = {}

        def mixed(mode, cap, act, high=high):
            key = (mode, cap, act)
            if key not in fns:
                fns[key] = jax.jit(lambda x, w, tol, bias, scale: jaxerr.mixed_dot_general(
                    x, w, dn, low=LOW, high=high, tol=tol, bias=bias, scale=scale, activation=act,
                    criterion="activation", mode=mode, capacity=cap, return_stats=True))
            return fns[key]

        if high is None:
            uh = jax.jit(lambda x, w: jax.lax.dot_general(x, w, dn, precision=jax.lax.Precision.HIGHEST))
        else:
            uh = jax.jit(lambda x, w: emulated_dot_general(EX["HIGH"].round(x), EX["HIGH"].round(w), dn, EX["HIGH"]))
        ul = jax.jit(lambda x, w: emulated_dot_general(LOW.round(x), LOW.round(w), dn, LOW))
        for label, x, w, kw in cases:
            args = (x, w, jnp.float32(kw["tol"]), jnp.asarray(kw["bias"]), jnp.float32(kw["scale"]))
            _, st = mixed("masked", None, kw["act"])(*args)
            frac, ncols = float(st["recomputed"]), float(st["columns"])
            # capacities just above what is needed, as a user who knows the flag rate would set them
            fns = {
                "high": (uh, (x, w)),
                "low": (ul, (x, w)),
                "masked": (mixed("masked", None, kw["act"]), args),
                "compacted": (mixed("compacted", min(0.999, frac * 1.1 + 0.005), kw["act"]), args),
                "columns": (mixed("columns", min(0.999, ncols * 1.1 + 0.005), kw["act"]), args),
            }
            ts = timed_many(fns, reps)
            th = ts["high"]
            print(f"{hname:<12}{label:<16}{frac:8.3f}{ncols:6.2f}{ts['masked'] / th:8.2f}"
                  f"{ts['compacted'] / th:11.2f}{ts['columns'] / th:9.2f}{ts['low'] / th:10.2f}"
                  f"{th * 1e3:9.1f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer training steps and thresholds")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compaction-only", action="store_true")
    ap.add_argument("--no-compaction", action="store_true", help="skip the one-layer compaction table")
    args = ap.parse_args(argv)
    if not args.no_compaction:
        compaction(args.reps)
    if args.compaction_only:
        return
    xtr, ytr, xte, yte = EX["load_digits_28"]()
    steps = 300 if args.quick else 600
    sweeps = {"activation": (1.0, 0.3), "condition": (1.0, 0.3)} if args.quick else EX["SWEEPS"]
    for act in ("relu", "tanh"):
        rows, (qp, scales, _) = EX["run_experiment"](act, xtr, ytr, xte, yte, steps, sweeps, log=lambda *a: None)
        EX["print_table"](act, rows)
        x = jnp.asarray(xte)
        mlp = EX["mlp"]
        tau = 0.3 if act == "relu" else 0.1

        def mixed(mode, cap=None, act=act):
            return jax.jit(jaxerr.mixed_precision(lambda x: mlp(qp, x, act, scales), low=EX["LOW"],
                                                  high=EX["HIGH"], tol=tau, criterion="activation",
                                                  mode=mode, capacity=cap))

        fns = {
            "uniform low (e4m3)": (jax.jit(uniform(EX["LOW"], qp, scales, act)), (x,)),
            "uniform high (fp16)": (jax.jit(uniform(EX["HIGH"], qp, scales, act)), (x,)),
            "masked": (mixed("masked"), (x,)),
            "compacted (cap 0.75)": (mixed("compacted", 0.75), (x,)),
            "columns (cap 0.9)": (mixed("columns", 0.9), (x,)),
            "native fp32": (jax.jit(lambda x, act=act: mlp(qp, x, act, scales)), (x,)),
        }
        times = timed_many(fns, args.reps)
        ref = times["uniform high (fp16)"]
        print(f"\nCPU time, {act} MLP, activation rule tau={tau}, {len(xte)} inputs (ratio to uniform high):")
        for k, t in times.items():
            print(f"  {k:<24}{t * 1e3:10.1f} ms {t / ref:8.2f}x")


if __name__ == "__main__":
    main()
