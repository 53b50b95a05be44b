"""Per-layer error report, precision tuning and a certified test for a digits classifier.

Run: python examples/report_digits.py [--out DIR] [--quick]
     (needs scikit-learn, matplotlib and optax: pip install -e ".[examples]"; about a
     minute on 2 cores; --quick: 100 training steps, 2 candidate formats)

1. trains a small Flax MLP (64 -> 32 tanh -> 32 sigmoid -> 10 logits) on
   scikit-learn's 8x8 digits (a few seconds on a CPU); it outputs logits;
2. ``jaxerr.report`` in bfloat16 on a batch of test digits: a table of every layer
   (range, abs_err, rel_err, error created there vs inherited, condition numbers),
   a JSON export and a PNG plot. Look for the pre-activations of the dense layers:
   cancellation in the inner products (condition number >> 1) makes the relative
   error jump; tanh and sigmoid damp it again (condition number < 1);
3. ``jaxerr.tune`` picks a format per layer such that the predicted class is
   certified for every input within ``RADIUS`` of each test digit, at the lowest
   bits x operations cost, and prints the saving over all-float32;
4. ``jaxerr.testing.assert_allclose_certified`` checks a real bfloat16 execution
   of the model against the certified bound.

The same model is exposed to the command line:

    jaxerr report examples/report_digits.py:predict --precision bfloat16 --plot digits.png
    jaxerr tune examples/report_digits.py:predict --target argmax --radius 0.0078125
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxerr

RADIUS = 1.0 / 128  # input box for the certified argmax: x +- RADIUS (pixels in [0, 1])


class DigitsMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(32)(x))
        x = nn.sigmoid(nn.Dense(32)(x))
        return nn.Dense(10)(x)  # logits: the class is their argmax


MODEL = DigitsMLP()


def load_digits():
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    x, y = x[perm], y[perm]
    n = int(0.8 * len(x))
    return (x[:n], y[:n]), (x[n:], y[n:])


OPT = optax.adam(1e-2)


@jax.jit
def _step(v, s, x, y):
    """One full-batch Adam step (module level: every train() call shares its compilation)."""

    def loss(v):
        logp = jax.nn.log_softmax(MODEL.apply(v, x))
        return -jnp.mean(logp[jnp.arange(len(y)), y])

    g = jax.grad(loss)(v)
    upd, s = OPT.update(g, s, v)
    return optax.apply_updates(v, upd), s


def train(steps: int = 300, seed: int = 0):
    """Full-batch Adam on the training split; returns (variables, test accuracy, test data)."""
    (xtr, ytr), (xte, yte) = load_digits()
    variables = MODEL.init(jax.random.PRNGKey(seed), xtr[:1])
    state = OPT.init(variables)
    for _ in range(steps):
        variables, state = _step(variables, state, xtr, ytr)
    acc = float(jnp.mean(jnp.argmax(MODEL.apply(variables, xte), -1) == yte))
    return variables, acc, (xte, yte)


def predict(variables, x):
    """The classifier: class logits of the digits ``x`` (shape (batch, 64))."""
    return MODEL.apply(variables, x)


@functools.lru_cache(maxsize=1)
def _trained():
    # JAXERR_DIGITS_STEPS: fewer training steps for the smoke tests (tests/test_examples.py)
    return train(steps=int(os.environ.get("JAXERR_DIGITS_STEPS", "300")))


def predict_inputs():
    """Arguments for the command line (``jaxerr report examples/report_digits.py:predict``):
    the trained variables and 4 test digits."""
    variables, _, (xte, _) = _trained()
    return variables, xte[:4]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=".", help="directory for digits_report.png / .json")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 100 training steps, tune over float32/bfloat16 only")
    ap.add_argument("--no-tune", action="store_true", help="skip the tuning search (the slowest part)")
    ns = ap.parse_args(argv)
    os.makedirs(ns.out, exist_ok=True)
    t0 = time.perf_counter()
    variables, acc, (xte, yte) = train(steps=100 if ns.quick else 300)
    batch = xte[:4]
    print(f"trained DigitsMLP: test accuracy {acc:.3f} ({time.perf_counter() - t0:.1f} s)")

    # -- 2. per-layer report in bfloat16 ------------------------------------------
    rep = jaxerr.report(predict, "bfloat16")(variables, batch)
    rep.print()
    png = rep.plot(os.path.join(ns.out, "digits_report.png"))
    rep.to_json(os.path.join(ns.out, "digits_report.json"))
    print(f"plot: {png}")

    # -- 3. tune: certified argmax over the box x +- RADIUS -------------------------
    res = None
    if not ns.no_tune:
        box = jaxerr.Interval.around(batch, RADIUS)
        candidates = ["float32", "bfloat16", "float16", "float8_e4m3fn"]
        res = jaxerr.tune(predict, (variables, box), target="argmax",
                          candidates=candidates[:2] if ns.quick else candidates)
        res.print()
        print(f"tune: {100 * res.saving:.1f}% fewer bits x operations than all-float32, "
              f"argmax certified over x +- {RADIUS:g} (margin {res.achieved:.3g}, {res.analyses} analyses)")

    # -- 4. a certified tolerance for a real bfloat16 execution ---------------------
    low = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), variables)
    actual = predict(low, jnp.asarray(batch, jnp.bfloat16))
    jaxerr.testing.assert_allclose_certified(actual, predict, variables, batch, precision="bfloat16")
    print("assert_allclose_certified: the real bfloat16 run lies within the certified bound")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return {"accuracy": acc, "saving": None if res is None else res.saving,
            "assignment": None if res is None else res.assignment, "plot": png}


if __name__ == "__main__":
    main()
