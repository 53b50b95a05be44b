"""Condition-guided mixed-precision inference on scikit-learn's digits (El Arar et al. 2025).

Digits (8x8, shipped with scikit-learn) are upsampled to 28x28 so that the first layer's
inner products have length 784, a 784-784-128-10 MLP (ReLU, and a tanh variant) is
trained in float32 with optax, its weights are quantised to float8 e4m3 (per layer,
with a power-of-two scale applied after the product), and the test set is evaluated:

- uniform fp8: every product in e4m3 with 8-term blocked FMA accumulation, saturating
  (the seed paper's kernel model, emulated bit-exactly by ``jaxerr.emulate``);
- uniform fp16: recursive float16 accumulation; fp32: native;
- mixed: fp8 first, the components flagged by each criterion recomputed in fp16, for a
  sweep of thresholds.

Printed per configuration: accuracy, agreement of predicted classes with fp32, median
relative logit error ``||z - z32|| / ||z32||``, and the fraction of inner-product work
recomputed (weighted by inner-product length). The accuracy-cost curves go to a PNG.

Run: ``python examples/mixed_precision_digits.py [--tiny] [--out mixed_digits.png]``
(``--tiny`` or ``JAXERR_EXAMPLE_TINY=1``: a few seconds, for the smoke test).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxerr
from jaxerr import Arithmetic

LOW = Arithmetic.make("float8_e4m3fn", "blocked:8", fma=True, overflow="saturate")
HIGH = Arithmetic.make("float16", "recursive")
E4M3 = jaxerr.FORMATS["float8_e4m3fn"]

TAUS = (1.0, 0.5, 0.3, 0.1)
SWEEPS = {
    "activation": TAUS,
    "condition": (3.0, 1.0, 0.3, 0.1, 0.03),
    "condition+sign": (1.0, 0.3),
    "bound": (3.0, 1.0, 0.3),
}
#: ``"condition+sign"``: the condition criterion with ``sign_guard=SIGN_GUARD`` (ReLU
#: pre-activations ``v^ <= 0`` recomputed where ``SIGN_GUARD · gamma · S > |v^|``).
SIGN_GUARD = 0.02


def criterion_kw(name: str) -> dict:
    if name == "condition+sign":
        return {"criterion": "condition", "sign_guard": SIGN_GUARD}
    return {"criterion": name}


def load_digits_28(seed: int = 0, n_test: int | None = None):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0
    x = np.asarray(jax.image.resize(jnp.asarray(x), (x.shape[0], 28, 28), "linear"))
    x = np.clip(x, 0.0, 1.0).reshape(len(x), 784)
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=seed, stratify=d.target)
    if n_test is not None:
        xte, yte = xte[:n_test], yte[:n_test]
    return xtr, ytr, xte, yte


def init_mlp(key, sizes):
    params = []
    for k, (m, n) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        params.append({"w": jax.random.normal(k, (m, n)) * np.sqrt(2.0 / m), "b": jnp.zeros(n)})
    return params


def mlp(params, x, act="relu", scales=None):
    """The network as written: ``act((x @ w) * scale + b)`` per hidden layer."""
    phi = jax.nn.relu if act == "relu" else jnp.tanh
    h = x
    for i, p in enumerate(params):
        z = h @ p["w"]
        if scales is not None:
            z = z * scales[i]
        z = z + p["b"].reshape((1,) * (z.ndim - 1) + (-1,))
        h = phi(z) if i < len(params) - 1 else z
    return h


def train(act: str, xtr, ytr, steps: int, seed: int = 0, sizes=(784, 784, 128, 10)):
    import optax

    params = init_mlp(jax.random.PRNGKey(seed), sizes)
    opt = optax.adam(1e-3)
    state = opt.init(params)

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(mlp(p, x, act), y).mean()

    @jax.jit
    def step(p, s, x, y):
        g = jax.grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(xtr), 128, replace=False)
        params, state = step(params, state, jnp.asarray(xtr[idx]), jnp.asarray(ytr[idx]))
    return params


def quantise(params):
    """Weights to e4m3 with a per-layer power-of-two scale: ``w ~= wq * scale`` where
    ``wq`` holds e4m3 values whose largest magnitude is in [8, 16)."""
    qs, scales = [], []
    for p in params:
        m = float(jnp.max(jnp.abs(p["w"])))
        k = int(np.floor(np.log2(8.0 / m)))
        wq = jnp.asarray(np.asarray(LOW.round(jnp.asarray(p["w"] * 2.0**k, jnp.float32))))
        qs.append({"w": wq, "b": p["b"].astype(jnp.float32)})
        scales.append(2.0**-k)
    return qs, scales


def metrics(z, z32, y):
    z, z32 = np.asarray(z, np.float64), np.asarray(z32, np.float64)
    acc = float(np.mean(np.argmax(z, 1) == y))
    agree = float(np.mean(np.argmax(z, 1) == np.argmax(z32, 1)))
    rel = np.linalg.norm(z - z32, axis=1) / np.linalg.norm(z32, axis=1)
    return acc, agree, float(np.median(rel))


def work_fraction(stats) -> float:
    """Recomputed inner products weighted by their length (the fraction of MAC work)."""
    num = sum(float(s["count"]) * float(s["length"]) for s in stats.values())
    den = sum(float(s["total"]) * float(s["length"]) for s in stats.values())
    return num / den


def run_experiment(act: str, xtr, ytr, xte, yte, steps: int, sweeps=SWEEPS, mode="masked", log=print,
                   sizes=(784, 784, 128, 10)):
    params = train(act, xtr, ytr, steps, sizes=sizes)
    qp, scales = quantise(params)
    net = jax.jit(lambda x: mlp(qp, x, act, scales))
    x = jnp.asarray(xte)
    z32 = net(x)
    rows = []
    acc, agree, rel = metrics(z32, z32, yte)
    rows.append(("fp32", "-", acc, agree, rel, 1.0, None))

    for name, crit in (("uniform fp8", "never"), ("uniform fp16", "always")):
        t = time.time()
        f = jax.jit(_with_tol(qp, scales, act, crit, mode))
        z, st = f(x, jnp.float32(0))
        rows.append((name, "-", *metrics(z, z32, yte), work_fraction(st), st))
        log(f"  {act} {name}: {time.time() - t:.1f}s")
    for crit, taus in sweeps.items():
        f = jax.jit(_with_tol(qp, scales, act, crit, mode))
        for tau in taus:
            t = time.time()
            z, st = f(x, jnp.float32(tau))
            rows.append((crit, tau, *metrics(z, z32, yte), work_fraction(st), st))
            log(f"  {act} {crit} tol={tau}: {time.time() - t:.1f}s")
    return rows, (qp, scales)


def _with_tol(qp, scales, act, criterion, mode):
    def f(x, tol):
        g = jaxerr.mixed_precision(lambda x: mlp(qp, x, act, scales), low=LOW, high=HIGH, tol=tol,
                                   mode=mode, return_stats=True, **criterion_kw(criterion))
        return g(x)

    return f


def print_table(act, rows):
    print(f"\n{act} MLP, weights e4m3, low = {LOW}, high = {HIGH}")
    print(f"{'config':<14}{'tol':>6}{'acc':>8}{'agree':>8}{'med rel err':>13}{'recomputed':>12}  per layer")
    for name, tau, acc, agree, rel, frac, st in rows:
        per = "" if st is None else " ".join(f"{float(s['recomputed']):.3f}" for s in st.values())
        print(f"{name:<14}{tau!s:>6}{acc:8.4f}{agree:8.4f}{rel:13.4g}{frac:12.3f}  {per}")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax_i, (act, rows) in enumerate(results.items()):
        ax = axes[ax_i]
        for crit, marker in (("activation", "o-"), ("condition", "s-"), ("condition+sign", "d-"), ("bound", "^-")):
            pts = sorted((r[5], r[4]) for r in rows if r[0] == crit)
            if pts:
                ax.plot([p[0] for p in pts], [max(p[1], 1e-6) for p in pts], marker, label=crit)
        for name, m in (("uniform fp8", "kx"), ("uniform fp16", "k+")):
            for r in rows:
                if r[0] == name:
                    ax.plot([r[5]], [max(r[4], 1e-6)], m, markersize=10, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("fraction of inner-product work recomputed in fp16")
        ax.set_ylabel("median relative logit error vs fp32")
        ax.set_title(f"digits 28x28, {act} MLP")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a few seconds: small test set, few steps")
    ap.add_argument("--out", default="mixed_digits.png")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--mode", default="masked", choices=("masked", "compacted"))
    args = ap.parse_args(argv)
    tiny = args.tiny or os.environ.get("JAXERR_EXAMPLE_TINY") == "1"
    steps = 20 if tiny else args.steps
    xtr, ytr, xte, yte = load_digits_28(n_test=16 if tiny else None)
    sweeps = {"activation": (0.5,)} if tiny else SWEEPS
    sizes = (784, 16, 8, 10) if tiny else (784, 784, 128, 10)
    results = {}
    for act in ("relu",) if tiny else ("relu", "tanh"):
        t = time.time()
        rows, _ = run_experiment(act, xtr, ytr, xte, yte, steps, sweeps, args.mode,
                                 log=(lambda *a: None) if tiny else print, sizes=sizes)
        results[act] = rows
        print_table(act, rows)
        print(f"({act}: {time.time() - t:.1f}s)")
    if args.out:
        plot(results, args.out)
        print(f"saved {args.out}")
    return results


if __name__ == "__main__":
    main()
