"""Condition-guided mixed precision beyond MLPs (issue 5's "then the same for a small CNN
and a transformer block"; the seed paper's future work), on scikit-learn's digits
upsampled to 28x28 (see examples/mixed_precision_digits.py for the MLP and the setup).

- CNN: conv 3x3/2 (1->8) ReLU, conv 3x3/2 (8->16) ReLU, dense 784->10. Inner products
  of length 9, 72 and 784; ``jaxerr.mixed_precision`` treats each convolution as a
  product of patches.
- Transformer block over 16 patches of 7x7: embedding 49->64 (+ position), one
  single-head attention (q, k, v, output projections; scores ``q k^T / 8`` -> softmax),
  residual, ReLU MLP 64->128->64, residual, mean over tokens, dense 64->10.
  Products feeding softmax are detected (``sub`` of the row maximum, then ``exp``) and
  use the criterion for ``exp``: the seed rule's ``|phi'/phi| = 1`` cannot
  discriminate (everything is recomputed when tol < 1, nothing otherwise); "condition"
  becomes ``S·gamma > tol``, an *absolute* error of the score (softmax is
  shift-invariant; the relative error of a probability is at most about twice the
  absolute error of the scores); "bound" certifies ``expm1(e) <= tol``. Products with
  no activation (q, k, v, p·v, projections) use the identity's criteria.

All weights are quantised to e4m3 with a per-layer power-of-two scale applied after the
product; low = e4m3 blocked:8 FMA saturating, high = fp16 recursive, as for the MLP.

Run: ``python examples/mixed_precision_cnn_transformer.py [--tiny]``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import runpy
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxerr

MLP = runpy.run_path(str(pathlib.Path(__file__).resolve().parent / "mixed_precision_digits.py"))
LOW, HIGH = MLP["LOW"], MLP["HIGH"]

SWEEPS = {
    "activation": (1.0, 0.3, 0.1),
    "condition": (1.0, 0.3, 0.1),
    "bound": (3.0, 1.0, 0.3),
}


def _dense(key, m, n):
    return {"w": jax.random.normal(key, (m, n)) * np.sqrt(2.0 / m), "b": jnp.zeros(n)}


def init_cnn(key):
    k = jax.random.split(key, 3)
    return {
        "c1": {"w": jax.random.normal(k[0], (8, 1, 3, 3)) * np.sqrt(2.0 / 9), "b": jnp.zeros(8)},
        "c2": {"w": jax.random.normal(k[1], (16, 8, 3, 3)) * np.sqrt(2.0 / 72), "b": jnp.zeros(16)},
        "fc": _dense(k[2], 784, 10),
    }


def _b(b, z):
    """``b`` broadcast explicitly to ``z``'s rank (leading axes)."""
    return b.reshape((1,) * (z.ndim - b.ndim) + b.shape)


def cnn(p, x, s=None):
    s = s or {k: 1.0 for k in p}
    h = x.reshape(-1, 1, 28, 28)
    for name in ("c1", "c2"):
        z = jax.lax.conv_general_dilated(h, p[name]["w"], (2, 2), "SAME") * s[name]
        h = jax.nn.relu(z + p[name]["b"].reshape(1, -1, 1, 1))
    z = (h.reshape(h.shape[0], -1) @ p["fc"]["w"]) * s["fc"]
    return z + _b(p["fc"]["b"], z)


def patches(x):
    """(B, 784) -> (B, 16, 49): 4x4 patches of 7x7 pixels."""
    return x.reshape(-1, 4, 7, 4, 7).transpose(0, 1, 3, 2, 4).reshape(-1, 16, 49)


def init_tf(key, d=64, hid=128):
    k = jax.random.split(key, 9)
    return {
        "emb": _dense(k[0], 49, d), "pos": {"b": jax.random.normal(k[1], (16, d)) * 0.1},
        "q": _dense(k[2], d, d), "k": _dense(k[3], d, d), "v": _dense(k[4], d, d), "o": _dense(k[5], d, d),
        "m1": _dense(k[6], d, hid), "m2": _dense(k[7], hid, d), "fc": _dense(k[8], d, 10),
    }


def transformer(p, x, s=None):
    s = s or {k: 1.0 for k in p}
    t = patches(x)
    def lin(h, name, bias="b"):
        z = (h @ p[name]["w"]) * s[name]
        return z if bias is None else z + _b(p[name]["b"] if bias == "b" else bias, z)

    e = lin(t, "emb", p["pos"]["b"])
    q, k, v = lin(e, "q", None), lin(e, "k", None), lin(e, "v", None)
    sc = jnp.einsum("bqd,bkd->bqk", q, k) / np.float32(8.0)
    a = jnp.einsum("bqk,bkd->bqd", jax.nn.softmax(sc, axis=-1), v)
    h = e + lin(a, "o")
    m = jax.nn.relu(lin(h, "m1"))
    h = h + lin(m, "m2")
    return lin(jnp.mean(h, axis=1), "fc")


def train(net, params, xtr, ytr, steps, seed=0, lr=1e-3):
    import optax

    opt = optax.adam(lr)
    state = opt.init(params)

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(net(p, x), y).mean()

    @jax.jit
    def step(p, st, x, y):
        g = jax.grad(loss)(p, x, y)
        u, st = opt.update(g, st, p)
        return optax.apply_updates(p, u), st

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(xtr), 128, replace=False)
        params, state = step(params, state, jnp.asarray(xtr[idx]), jnp.asarray(ytr[idx]))
    return params


def quantise(params):
    """Every "w" to e4m3 with a power-of-two scale (largest magnitude in [8, 16))."""
    qp, scales, ks = {}, {}, {}
    for name, p in params.items():
        if "w" not in p:
            qp[name], scales[name] = {k: v.astype(jnp.float32) for k, v in p.items()}, 1.0
            continue
        ks[name] = int(np.floor(np.log2(8.0 / float(jnp.max(jnp.abs(p["w"]))))))
    wqs = MLP["round_low"]([params[n]["w"] * 2.0**k for n, k in ks.items()])  # one compiled rounding
    for (name, k), wq in zip(ks.items(), wqs):
        qp[name] = {"w": wq, "b": params[name]["b"].astype(jnp.float32)}
        scales[name] = 2.0**-k
    return qp, scales


def run_net(name, net, qp, scales, xte, yte, sweeps=SWEEPS, mode="masked", log=print):
    f32 = jax.jit(lambda x: net(qp, x, scales))
    x = jnp.asarray(xte)
    z32 = f32(x)
    rows = [("fp32", "-", *MLP["metrics"](z32, z32, yte), 1.0, None)]

    def mixed(crit):
        # the weights are arguments (no constant folding of them at compile time), and the
        # program is vmapped over tol: a sweep is one call, the products that do not depend
        # on tol (the first layer's, low and high) computed once
        def f(qp, x, tol):
            return jaxerr.mixed_precision(lambda x: net(qp, x, scales), low=LOW, high=HIGH, tol=tol, mode=mode,
                                          return_stats=True, **MLP["criterion_kw"](crit))(x)

        return jax.jit(jax.vmap(f, in_axes=(None, None, 0)))

    def add(label, crit, taus, shown):
        t = time.time()
        z, st = mixed(crit)(qp, x, jnp.asarray(taus, jnp.float32))
        for i, tau in enumerate(shown):
            sti = jax.tree_util.tree_map(lambda a, i=i: a[i], st)
            rows.append((label, tau, *MLP["metrics"](z[i], z32, yte), MLP["work_fraction"](sti), sti))
        log(f"  {name} {label} tol={','.join(map(str, shown))}: {time.time() - t:.1f}s")

    for label, crit in (("uniform fp8", "never"), ("uniform fp16", "always")):
        add(label, crit, (0.0,), ("-",))
    for crit, taus in sweeps.items():
        add(crit, crit, taus, taus)
    return rows


def print_table(name, rows):
    print(f"\n{name}, weights e4m3, low = {LOW}, high = {HIGH}")
    print(f"{'config':<14}{'tol':>6}{'acc':>8}{'agree':>8}{'med rel err':>13}{'recomputed':>12}  per product")
    for label, tau, acc, agree, rel, frac, st in rows:
        per = "" if st is None else " ".join(f"{float(s['recomputed']):.2f}" for s in st.values())
        print(f"{label:<14}{tau!s:>6}{acc:8.4f}{agree:8.4f}{rel:13.4g}{frac:12.3f}  {per}")
    if rows[-1][-1] is not None:
        print("  products: " + ", ".join(k.split(": ")[1] for k in rows[-1][-1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--nets", default="cnn,transformer")
    args = ap.parse_args(argv)
    tiny = args.tiny or os.environ.get("JAXERR_EXAMPLE_TINY") == "1"
    xtr, ytr, xte, yte = MLP["load_digits_28"](n_test=16 if tiny else None)
    steps = 10 if tiny else args.steps
    sweeps = {"condition": (0.3,), "bound": (1.0,)} if tiny else SWEEPS
    nets = {"cnn": (cnn, init_cnn), "transformer": (transformer, init_tf)}
    results = {}
    for name in args.nets.split(","):
        t = time.time()
        net, init = nets[name]
        params = train(net, init(jax.random.PRNGKey(0)), xtr, ytr, steps)
        qp, scales = quantise(params)
        rows = run_net(name, net, qp, scales, xte, yte, sweeps, log=(lambda *a: None) if tiny else print)
        results[name] = rows
        print_table(name, rows)
        print(f"({name}: {time.time() - t:.1f}s)")
    return results


if __name__ == "__main__":
    main()
