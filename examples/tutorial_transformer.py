"""The transformer tutorial (docs/tutorials/transformer.md): certified error bounds for a
small Flax transformer encoder block (LayerNorm, self-attention with softmax, MLP,
residuals) that classifies scikit-learn's 8x8 digits, each image read as a sequence of
8 rows.

Run: python examples/tutorial_transformer.py [--quick] [--out DIR]
     (needs scikit-learn and matplotlib: pip install -e ".[examples]")

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


class EncoderBlock(nn.Module):
    """Pre-LayerNorm encoder block: x + attention(LN(x)), then x + MLP(LN(x))."""

    heads: int = 2
    ff: int = 32

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h)
        h = nn.LayerNorm()(x)
        h = nn.Dense(x.shape[-1])(nn.relu(nn.Dense(self.ff)(h)))
        return x + h


class Classifier(nn.Module):
    """8 tokens (the image rows) -> embedding (16) -> encoder block -> mean -> 10 logits."""

    @nn.compact
    def __call__(self, x):  # x: (batch, 8, 8)
        x = nn.Dense(16)(x) + self.param("pos", nn.initializers.normal(0.1), (1, 8, 16))
        x = EncoderBlock()(x)
        return nn.Dense(10)(x.mean(axis=1))


model = Classifier()
# --8<-- [end:model]


def load_digits():
    """scikit-learn's 8x8 digits, pixels in [0, 1], as sequences of 8 rows of 8."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = (d.images / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], d.target[perm]
    n = int(0.8 * len(x))
    return (x[:n], y[:n]), (x[n:], y[n:])


def train(steps=150):
    (xtr, ytr), (xte, yte) = load_digits()
    variables = model.init(jax.random.PRNGKey(0), xtr[:1])
    opt = optax.adam(1e-2)
    state = opt.init(variables)

    def loss(v):
        logp = jax.nn.log_softmax(model.apply(v, xtr))
        return -jnp.mean(logp[jnp.arange(len(ytr)), ytr])

    @jax.jit
    def step(v, s):
        g = jax.grad(loss)(v)
        upd, s = opt.update(g, s, v)
        return optax.apply_updates(v, upd), s

    for _ in range(steps):
        variables, state = step(variables, state)
    acc = float(jnp.mean(jnp.argmax(model.apply(variables, xte), -1) == yte))
    return variables, acc, (xte, yte)


def predict(variables, x):
    """Class logits of the digits ``x`` (shape (batch, 8, 8))."""
    return model.apply(variables, x)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short training, fewer analyses (smoke test)")
    ap.add_argument("--out", default=".", help="directory for transformer_report.png")
    ns = ap.parse_args(argv)
    os.makedirs(ns.out, exist_ok=True)
    t0 = time.perf_counter()
    variables, acc, (xte, yte) = train(steps=20 if ns.quick else 150)
    print(f"trained transformer: test accuracy {acc:.3f} ({time.perf_counter() - t0:.1f} s)")
    out: dict = {"accuracy": acc}
    x = xte[:2]

    # --8<-- [start:point]
    b = jaxerr.flax.bound_linen(model, variables, "bfloat16", jit=False)(x)
    print(f"all bfloat16: max abs_err of the logits {float(b.abs_err.max()):.3g}")
    print(b.diagnostics)
    # --8<-- [end:point]
    out["all_bf16_abs_err"] = float(b.abs_err.max())

    # --8<-- [start:report]
    rep = jaxerr.report(predict, "bfloat16", jit=False)(variables, x)
    rep.print()
    rep.plot(os.path.join(ns.out, "transformer_report.png"))
    # --8<-- [end:report]
    out["report"] = rep

    # --8<-- [start:layer_precision]
    prec = {"": "float32",  # embedding, attention, LayerNorms and the residual stream
            "Classifier/EncoderBlock_0/Dense_0": "bfloat16",  # MLP
            "Classifier/EncoderBlock_0/Dense_1": "bfloat16",
            "Classifier/Dense_1": "bfloat16"}  # classifier head
    b2 = jaxerr.flax.bound_linen(model, variables, prec, jit=False)(x)
    print(f"bfloat16 MLP and head, the rest float32: max abs_err {float(b2.abs_err.max()):.3g}, "
          f"median rel_err {float(jnp.median(b2.rel_err)):.3g}")
    low = model.apply(jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16).astype(jnp.float32), variables),
                      x)  # float32 run with bfloat16-rounded weights, for scale
    print(f"(for scale: the logits change by {float(jnp.abs(low - predict(variables, x)).max()):.3g} "
          f"when only the weights are rounded to bfloat16)")
    # --8<-- [end:layer_precision]
    out["mixed_abs_err"] = float(b2.abs_err.max())
    print(f"total {time.perf_counter() - t0:.1f} s")
    return out


if __name__ == "__main__":
    main()
