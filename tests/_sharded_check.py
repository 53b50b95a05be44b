"""Run in a subprocess by tests/test_sharding.py with 8 host CPU devices: bound(f) under
jax.sharding (batch sharded over a Mesh; weights sharded on a feature axis) against the
same analysis on one device. Prints one line per check; exits 1 on a mismatch."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxerr

assert jax.device_count() == 8, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("batch",))
rng = np.random.default_rng(0)
W1 = (rng.standard_normal((16, 32)) / 4).astype(np.float32)
W2 = (rng.standard_normal((32, 8)) / 6).astype(np.float32)


def mlp(x, w1, w2):
    return jax.nn.softmax(jnp.tanh(x @ w1) @ w2, axis=-1)


x = rng.uniform(-1, 1, (64, 16)).astype(np.float32)
ok = True


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


for domain in ("interval", "first_order"):
    for kind in ("point", "box"):
        g = jaxerr.bound(mlp, "bfloat16", domain=domain, jit=False, warn=False)
        xin = jaxerr.Interval(x - 0.01, x + 0.01) if kind == "box" else jnp.asarray(x)
        one = jax.jit(g)(xin, W1, W2)  # one device (the default device)
        xs = jax.device_put(xin, NamedSharding(mesh, P("batch", None)))
        rep = NamedSharding(mesh, P())
        ws = [jax.device_put(w, rep) for w in (W1, W2)]
        out_s = NamedSharding(mesh, P("batch", None))
        gs = jax.jit(g, in_shardings=(NamedSharding(mesh, P("batch", None)), rep, rep), out_shardings=None)
        shard = gs(xs, *ws)
        nshards = len(shard.abs_err.sharding.device_set)
        bit, worst = same(one, shard)
        ok &= worst < 1e-5 and nshards == 8
        print(f"batch-sharded {domain:11s} {kind:5s}: devices {nshards}, bitwise identical to one "
              f"device: {bit}, max relative difference {worst:.2e}")

# weights sharded on the hidden (feature) axis: XLA partitions the contraction; the
# bounds stay sound (sums of nonnegative bounds rounded up in any order) and agree with
# one device to a few ulps
g = jaxerr.bound(mlp, "bfloat16", jit=False, warn=False)
one = jax.jit(g)(jnp.asarray(x), W1, W2)
w1s = jax.device_put(W1, NamedSharding(mesh, P(None, "batch")))
w2s = jax.device_put(W2, NamedSharding(mesh, P("batch", None)))
shard = jax.jit(g)(jnp.asarray(x), w1s, w2s)
rel = float(np.max(np.abs(np.asarray(shard.abs_err) - np.asarray(one.abs_err)) / np.asarray(one.abs_err)))
enc = bool(np.all(np.asarray(shard.lo) <= np.asarray(one.hi)) and np.all(np.asarray(one.lo) <= np.asarray(shard.hi)))
ok &= rel < 1e-5 and enc
print(f"feature-sharded interval point: max relative difference of abs_err {rel:.2e}, enclosures overlap: {enc}")
sys.exit(0 if ok else 1)
