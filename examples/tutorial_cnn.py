"""The CNN tutorial (docs/tutorials/cnn.md): certified bfloat16 error bounds for a small
Flax CNN trained on scikit-learn's 8x8 digits.

Run: python examples/tutorial_cnn.py [--quick] [--out DIR]
     (needs scikit-learn, matplotlib and optax: pip install -e ".[examples]"; 90 s of CPU
     on a 2-core CPU, most of it compiling the first_order analysis; --quick, the smoke
     test: 5 training steps and every section but first_order)

Every code block of the tutorial is a section of this file (between the
``# --8<-- [start:NAME]`` / ``[end:NAME]`` markers) and the numbers quoted there are
its output.
"""

from __future__ import annotations

import argparse
import os
import time

# --8<-- [start:model]
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxerr
import jaxerr.flax


class CNN(nn.Module):
    """conv 3x3 (8) -> BatchNorm -> ReLU -> 2x2 average pool -> conv 3x3 (16) -> tanh
    -> dense (10 logits), on 8x8x1 images."""

    train: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not self.train)(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.tanh(nn.Conv(16, (3, 3))(x))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(10)(x)


model = CNN()  # inference mode: BatchNorm uses the running statistics
# --8<-- [end:model]


# --8<-- [start:train]
def load_digits():
    """scikit-learn's 8x8 digits (shipped with the package), pixels in [0, 1]."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = (d.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], d.target[perm]
    n = int(0.8 * len(x))
    return (x[:n], y[:n]), (x[n:], y[n:])


def train(steps=200):
    (xtr, ytr), (xte, yte) = load_digits()
    variables = CNN(train=True).init(jax.random.PRNGKey(0), xtr[:1])
    params, stats = variables["params"], variables["batch_stats"]
    opt = optax.adam(1e-2)
    state = opt.init(params)

    def loss(params, stats):
        logits, upd = CNN(train=True).apply({"params": params, "batch_stats": stats}, xtr,
                                            mutable=["batch_stats"])
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(logp[jnp.arange(len(ytr)), ytr]), upd["batch_stats"]

    @jax.jit
    def step(params, stats, state):
        (_, stats), g = jax.value_and_grad(loss, has_aux=True)(params, stats)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), stats, state

    for _ in range(steps):
        params, stats, state = step(params, stats, state)
    variables = {"params": params, "batch_stats": stats}
    acc = float(jnp.mean(jnp.argmax(model.apply(variables, xte), -1) == yte))
    return variables, acc, (xte, yte)
# --8<-- [end:train]


def predict(variables, x):
    """The classifier as a function of its variables and images (for report/tune/CLI)."""
    return model.apply(variables, x)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 5 training steps, no first_order analysis (it compiles for ~30 s)")
    ap.add_argument("--out", default=".", help="directory for cnn_report.png")
    ns = ap.parse_args(argv)
    os.makedirs(ns.out, exist_ok=True)
    t0 = time.perf_counter()
    variables, acc, (xte, yte) = train(steps=5 if ns.quick else 200)
    print(f"trained CNN: test accuracy {acc:.3f} ({time.perf_counter() - t0:.1f} s)")
    out: dict = {"accuracy": acc}

    # --8<-- [start:point]
    x = xte[:4]  # four test digits
    # jit=False: analyse op by op. For a one-off analysis of a small model that starts much
    # faster than compiling one XLA program per analysis, and the analyses below share the
    # per-operation compilations (jit=True, the default, pays off for repeated calls)
    bounded = jaxerr.flax.bound_linen(model, variables, "bfloat16", jit=False)
    b = bounded(x)  # the logits at this point, if the whole CNN runs in bfloat16
    print(f"bfloat16 at x: max abs_err {float(b.abs_err.max()):.3g}, "
          f"median rel_err {float(jnp.median(b.rel_err)):.3g}")

    # a real bfloat16 run of the model lies within the bound of the exact result
    low = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), variables)
    actual = np.asarray(model.apply(low, jnp.asarray(x, jnp.bfloat16)), np.float64)
    inside = (b.lo - b.abs_err <= actual) & (actual <= b.hi + b.abs_err)
    print(f"real bfloat16 run inside [lo - abs_err, hi + abs_err]: {bool(np.all(inside))}")
    # --8<-- [end:point]
    out["point_abs_err"] = float(b.abs_err.max())

    # --8<-- [start:box]
    box = jaxerr.Interval.around(x, 1 / 64)  # every image within 1/64 per pixel
    bb = jaxerr.flax.bound_linen(model, variables, "bfloat16", jit=False)(box)
    print(f"box x +- 1/64: median width of the exact logits {float(jnp.median(bb.hi - bb.lo)):.3g}, "
          f"max abs_err {float(bb.abs_err.max()):.3g}, "
          f"argmax certified for {int(certified_argmax(bb).sum())} of {len(x)} digits")
    # --8<-- [end:box]
    out["box_abs_err"] = float(bb.abs_err.max())

    if not ns.quick:  # the first_order analysis compiles for a while: skipped by --quick
        # --8<-- [start:first_order]
        x1 = x[:1]  # first_order costs a reverse pass per output element: one digit
        ref = np.asarray(model.apply(variables, x1), np.float64)  # float32: ~1e-6, "exact" at this scale
        observed = np.abs(np.asarray(model.apply(low, jnp.asarray(x1, jnp.bfloat16)), np.float64) - ref).max()
        t = time.perf_counter()
        b1 = jaxerr.flax.bound_linen(model, variables, "bfloat16", domain="first_order")(x1)
        dt = time.perf_counter() - t
        # interval: this digit's row of the point analysis above (the abs_err of analysing it alone)
        for domain, err in (("interval", float(b.abs_err[0].max())), ("first_order", float(b1.abs_err.max()))):
            print(f"{domain:<11} max abs_err {err:.3g} = {err / observed:.0f} x the observed error {observed:.3g}")
            out[f"{domain}_abs_err"] = err
        print(f"(first_order analysis of one digit: {dt:.0f} s, mostly compiling)")
        # --8<-- [end:first_order]

    # --8<-- [start:report]
    rep = jaxerr.report(predict, "bfloat16", jit=False)(variables, x)
    rep.print()
    rep.plot(os.path.join(ns.out, "cnn_report.png"))
    # --8<-- [end:report]
    out["report"] = rep
    out["plot"] = os.path.join(ns.out, "cnn_report.png")

    # --8<-- [start:tune]
    res = jaxerr.tune(predict, (variables, x), target="argmax",
                      candidates=["float32", "bfloat16", "float16"])
    res.print()
    # --8<-- [end:tune]
    out["saving"] = res.saving

    # --8<-- [start:certified]
    from jaxerr.testing import assert_allclose_certified

    actual = model.apply(low, jnp.asarray(x, jnp.bfloat16))  # the bfloat16 implementation under test
    assert_allclose_certified(actual, predict, variables, x, precision="bfloat16", jit=False)
    # --8<-- [end:certified]
    print("assert_allclose_certified: passed")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return out


def certified_argmax(b) -> np.ndarray:
    """Per row of logits: is the predicted class the same for every input in the box and
    every bfloat16 execution? (the lower end of the top logit, minus its error, beats the
    upper end of every other logit, plus its error)"""
    lo, hi = np.asarray(b.lo - b.abs_err), np.asarray(b.hi + b.abs_err)
    top = np.argmax(np.asarray(b.value), -1)
    rows = np.arange(len(top))
    others = hi.copy()
    others[rows, top] = -np.inf
    return lo[rows, top] > others.max(-1)


if __name__ == "__main__":
    main()
