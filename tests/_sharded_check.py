"""Run in a subprocess by tests/test_sharding.py with 8 host CPU devices: bound(f) under
jax.sharding against the same analysis on one device.

* batch sharded over a Mesh of 8 devices: interval, first_order and affine, at a point
  and over a box;
* domain="affine" with the symbol axis of every affine form sharded over 8 devices
  (``bound(..., symbol_sharding=(mesh, axis))``);
* weights sharded on the hidden (feature) axis.

For each: bitwise identical to one device or not, the largest relative difference of the
bound fields (asserted tiny), and, where not bitwise identical, both results (one device
and sharded) checked against the independent simulator (tests/_soundness.check): both must
be valid bounds. Prints one line per check with its compile time; exits 1 on a failure.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_sharded_check.py [quick]
[only=DOMAIN] ("quick" skips the first_order rows; "only=first_order" runs only the
batch-sharded rows of that domain).
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _soundness import check  # noqa: E402

import jaxerr  # noqa: E402

assert jax.device_count() == 8, jax.devices()
QUICK = "quick" in sys.argv[1:]
ONLY = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("only=")), None)
PREC = "bfloat16"
RADIUS = 0.01
TOL = 1e-5  # largest relative difference accepted between sharded and one-device bounds
mesh = Mesh(np.array(jax.devices()), ("batch",))
rng = np.random.default_rng(0)
W1 = (rng.standard_normal((16, 32)) / 4).astype(np.float32)
W2 = (rng.standard_normal((32, 8)) / 6).astype(np.float32)


def mlp(x, w1, w2):
    return jax.nn.softmax(jnp.tanh(x @ w1) @ w2, axis=-1)


def box(x):
    """The box tests/_soundness.check samples: ends rounded from float64."""
    lo = (x.astype(np.float64) - RADIUS).astype(np.float32)
    hi = (x.astype(np.float64) + RADIUS).astype(np.float32)
    return jaxerr.Interval(jnp.asarray(lo), jnp.asarray(hi))


def same(a, b):
    """(bitwise identical, max relative difference over the bound fields)."""
    worst, bit = 0.0, True
    for k in ("lo", "hi", "abs_err", "computed_lo", "computed_hi"):
        p, q = np.asarray(getattr(a, k), np.float64), np.asarray(getattr(b, k), np.float64)
        bit &= bool(np.array_equal(p, q))
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(p == q, 0.0, np.abs(p - q) / np.maximum(np.abs(p), np.abs(q)))
        worst = max(worst, float(np.max(d)))
    return bit, worst


def compiled(fn, *args):
    t0 = time.perf_counter()
    c = jax.jit(fn).lower(*args).compile() if not hasattr(fn, "lower") else fn.lower(*args).compile()
    return c, time.perf_counter() - t0


def sound(x, kind, res):
    """Violations of ``res`` (a bound of mlp(x, W1, W2) at x or over box(x)) against the
    simulator."""
    return check(lambda x: mlp(x, W1, W2), [x], precision=PREC, radius=RADIUS if kind == "box" else 0.0,
                 n_samples=3, out=res)


ok = True


def report(label, one, shard, nshards, secs, x, kind):
    global ok
    bit, worst = same(one, shard)
    line = (f"{label}: devices {nshards}, bitwise identical to one device: {bit}, max relative "
            f"difference {worst:.2e}, compile one/sharded {secs[0]:.0f}/{secs[1]:.0f} s")
    good = worst < TOL and nshards == 8
    if not bit:
        v1, v8 = sound(x, kind, one), sound(x, kind, shard)
        line += f", simulator violations one/sharded {len(v1)}/{len(v8)}"
        good &= not v1 and not v8
        for v in (v1 + v8)[:3]:
            print("   ", v)
    ok &= good
    print(line + ("" if good else "  FAILED"), flush=True)


x = rng.uniform(-1, 1, (64, 16)).astype(np.float32)
rep = NamedSharding(mesh, P())
rows = NamedSharding(mesh, P("batch", None))
for domain in ("interval", "affine", "first_order"):
    if (QUICK and domain == "first_order") or (ONLY and domain != ONLY):
        continue
    for kind in ("point", "box"):
        kw = {"symbols": 64} if domain == "affine" else {}
        g = jaxerr.bound(mlp, PREC, domain=domain, jit=False, warn=False, **kw)
        xin = box(x) if kind == "box" else jnp.asarray(x)
        c1, t1 = compiled(g, xin, W1, W2)
        one = c1(xin, W1, W2)  # one device (the default device)
        xs = jax.device_put(xin, rows)
        ws = [jax.device_put(w, rep) for w in (W1, W2)]
        gs = jax.jit(g, in_shardings=(rows, rep, rep))
        c8, t8 = compiled(gs, xs, *ws)
        shard = c8(xs, *ws)
        report(f"batch-sharded {domain:11s} {kind:5s}", one, shard, len(shard.abs_err.sharding.device_set),
               (t1, t8), x, kind)

# the symbol axis of the affine forms sharded over 8 devices: a box of 4 x 16 inputs
# (64 symbols) and a hidden layer of 4 x 32 values (promoted to 128 symbols) fit K = 256
smesh = Mesh(np.array(jax.devices()), ("sym",))
xa = x[:4]
for kind in ("box", "point") if not ONLY else ():
    xin = box(xa) if kind == "box" else jnp.asarray(xa)
    g1 = jaxerr.bound(mlp, PREC, domain="affine", symbols=256, jit=False, warn=False)
    g8 = jaxerr.bound(mlp, PREC, domain="affine", symbols=256, jit=False, warn=False,
                      symbol_sharding=(smesh, "sym"))
    c1, t1 = compiled(g1, xin, W1, W2)
    one = c1(xin, W1, W2)
    c8, t8 = compiled(g8, xin, W1, W2)
    shard = c8(xin, W1, W2)
    hlo = c8.as_text()
    n_ar = hlo.count("all-reduce(")
    # the sharded program holds K/8 symbols per device: its per-device temporaries shrink
    m1 = c1.memory_analysis().temp_size_in_bytes
    m8 = c8.memory_analysis().temp_size_in_bytes
    print(f"symbol-sharded affine {kind}: all-reduce ops in the partitioned program {n_ar}, XLA temp "
          f"bytes per device one/sharded {m1}/{m8}", flush=True)
    ok &= n_ar > 0
    # the results live on the 8 devices, replicated: compare as one device's copy
    report(f"symbol-sharded affine      {kind:5s}", one, shard, len(smesh.devices.flat), (t1, t8), xa, kind)

# weights sharded on the hidden (feature) axis: XLA partitions the contraction
if ONLY:
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)
g = jaxerr.bound(mlp, PREC, jit=False, warn=False)
c1, t1 = compiled(g, jnp.asarray(x), W1, W2)
one = c1(jnp.asarray(x), W1, W2)
w1s = jax.device_put(W1, NamedSharding(mesh, P(None, "batch")))
w2s = jax.device_put(W2, NamedSharding(mesh, P("batch", None)))
c8, t8 = compiled(g, jnp.asarray(x), w1s, w2s)
shard = c8(jnp.asarray(x), w1s, w2s)
report("feature-sharded interval    point", one, shard, len(w1s.sharding.device_set), (t1, t8), x, "point")
print("ALL OK" if ok else "SOME CHECKS FAILED")
sys.exit(0 if ok else 1)
