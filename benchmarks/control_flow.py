"""Embedding + LSTM classifier (issue 4): analysis time and tightness, interval vs first_order.

    python benchmarks/control_flow.py [--seq 8] [--hidden 16] [--vocab 32] [--runs 20]

Prints, per domain, the time of the first call (trace + compile + run) and of a second
call (run only), the largest abs_err, the largest error observed over ``--runs``
simulated bfloat16 executions (tests/_simulator.py, random summation orders), and their
ratio, and checks that no simulated error exceeds the bound.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "tests"))

import _simulator as S  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxerr  # noqa: E402


class Classifier(nn.Module):
    vocab: int
    hidden: int

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocab, 8)(tokens)
        h = nn.RNN(nn.LSTMCell(features=self.hidden))(x)
        return nn.Dense(2)(h[:, -1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--precision", default="bfloat16")
    ap.add_argument("--domains", default="interval,first_order")
    args = ap.parse_args()

    m = Classifier(args.vocab, args.hidden)
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(0), (1, args.seq), 0, args.vocab), np.int32)
    v = m.init(jax.random.PRNGKey(1), tokens)

    def f(t):
        return m.apply(v, t)

    fmt = args.precision
    acc = "wide:float32" if jaxerr.as_format(fmt).precision < 24 else "recursive"
    ex = np.asarray(S.exact(f, [tokens])[0], np.float64)
    rng = np.random.default_rng(0)
    worst = np.zeros_like(ex)
    for _ in range(args.runs):
        sim = np.asarray(S.simulate(f, [tokens], fmt=fmt, accumulation=acc, order="random", rng=rng)[0], np.float64)
        worst = np.maximum(worst, np.abs(sim - ex))
    print(f"embedding({args.vocab}, 8) + LSTM({args.hidden}) + Dense(2), seq {args.seq}, {fmt}, "
          f"one point, {args.runs} simulated runs; jax {jax.__version__}")
    print("| domain | first call (s) | second call (s) | max abs_err | max observed | bound / observed | sound |")
    print("|---|---|---|---|---|---|---|")
    for dom in args.domains.split(","):
        g = jaxerr.bound(f, fmt, domain=dom, warn=False)
        t0 = time.perf_counter()
        b = jax.block_until_ready(g(tokens))
        t1 = time.perf_counter()
        b = jax.block_until_ready(g(tokens))
        t2 = time.perf_counter()
        err = np.asarray(b.abs_err, np.float64)
        sound = bool(np.all(worst <= err)) and bool(np.all((np.asarray(b.lo) <= ex) & (ex <= np.asarray(b.hi))))
        obs = float(worst.max())
        print(f"| {dom} | {t1 - t0:.1f} | {t2 - t1:.3f} | {err.max():.3g} | {obs:.3g} | "
              f"{err.max() / obs if obs else float('inf'):.0f} | {sound} |", flush=True)


if __name__ == "__main__":
    main()
