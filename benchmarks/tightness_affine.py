"""Tightness and cost of domain="affine" beside the interval domain on the 4-layer 256-wide
MLPs of ``benchmarks/tightness.py`` (same models, simulator and first-order limit).

Prints one line per (activation, format, input kind): for each domain
``abs_err / observed`` as median / max (``tightness._ratios``), violations (must be 0),
the time of one call of the compiled analysis, its compile time and the median width
``hi - lo`` of the exact range; at points also ``affine abs_err / first-order limit``
(median / max, min). The affine column is the affine domain *alone* (the intersection
with the interval result that ``bound`` returns is switched off).

Environment: ``K`` (symbol budget, default 1024), ``ACTS`` (relu,tanh), ``FMTS``
(bf16,f32), ``KINDS`` (point,box).
"""

from __future__ import annotations

import os
import sys
import time
import warnings

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(_HERE, "..", "tests"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tightness as T  # noqa: E402
from _first_order_limit import first_order_limit  # noqa: E402

import jaxerr  # noqa: E402
import jaxerr._bound as B  # noqa: E402


def _run(g, arg):
    t0 = time.perf_counter()
    c = g.lower(arg).compile()
    tc = time.perf_counter() - t0
    out = c(arg)
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    for _ in range(3):
        jax.block_until_ready(c(arg))
    return out, tc, (time.perf_counter() - t0) / 3


def main() -> None:
    warnings.simplefilter("ignore")
    K = int(os.environ.get("K", "1024"))
    kinds = os.environ.get("KINDS", "point,box").split(",")
    print(f"symbols={K}; t = one call of the compiled analysis", flush=True)
    for act in os.environ.get("ACTS", "relu,tanh").split(","):
        f, x = T.mlp(act)
        for fkey in os.environ.get("FMTS", "bf16,f32").split(","):
            prec, acc, sf, sa = T.FORMAT_SPECS[fkey]
            for kind in kinds:
                rng = np.random.default_rng(0)
                if kind == "point":
                    arg = jnp.asarray(x)
                    pts = [x]
                    runs = 1 if sa == "pairwise" else 10
                else:
                    arg = jaxerr.Interval.around(x, T.RADIUS)
                    pts = T.S.sample_box(np.asarray(arg.lo), np.asarray(arg.hi), 3, rng, fmt="float32")
                    pts = [p.astype(np.float32) for p in pts]
                    runs = 1 if sa == "pairwise" else 4
                obs, _ = T._observe(f, pts, sf, sa, runs, rng)
                res = {}
                for name, kw, cap in [("iv", dict(domain="interval"), True),
                                      ("aff", dict(domain="affine", symbols=K), False)]:
                    B._AFFINE_CAP = cap
                    g = jax.jit(jaxerr.bound(f, prec, accumulation=acc, warn=False, **kw))
                    out, tc, tr = _run(g, arg)
                    width = np.asarray(out.hi, np.float64) - np.asarray(out.lo, np.float64)
                    res[name] = (np.asarray(out.abs_err, np.float64), tc, tr, width)
                B._AFFINE_CAP = True
                line = f"{act} {fkey} {kind}: "
                for name, (b, tc, tr, w) in res.items():
                    med, mx = T._ratios(b, obs)
                    line += (f"{name}: obs {med:.3g}/{mx:.3g} viol {int(np.sum(obs > b))} t {tr * 1e3:.1f}ms "
                             f"comp {tc:.1f}s width {np.median(w):.3g}; ")
                if kind == "point":
                    (L,) = first_order_limit(f, (x,), prec, acc)
                    m = L > 0
                    r = res["aff"][0][m] / L[m]
                    line += f"aff/limit {np.median(r):.3g}/{np.max(r):.3g} (min {np.min(r):.3g})"
                print(line, flush=True)


if __name__ == "__main__":
    main()
