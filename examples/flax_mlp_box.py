"""Guaranteed error bounds for a Flax MLP over an input box, checked against simulation.

Run: python examples/flax_mlp_box.py

``jaxerr.bound(model.apply, precision=fmt, accumulation=acc)`` is evaluated with the
Flax variables as they are and an ``Interval`` input (every input within ``RADIUS`` of
``x``), for ``fmt`` in float16 / bfloat16 and two summation models of the matrix
products:

* ``"recursive"``: each product sum accumulated left to right in ``fmt`` itself;
* ``"wide:float32"``: accumulated in float32 and rounded to ``fmt`` once (how XLA on
  CPU and most accelerators evaluate low-precision matrix products; the default
  ``"auto"`` picks it for formats narrower than float32).

Under ``precision=fmt`` the *exact* result is real arithmetic on the original
float32 weights and input: rounding them into ``fmt`` counts as error. So each
simulated run casts the weights and a random input from the box to ``fmt``, runs the
model there, and is compared with a float64 NumPy evaluation of the same network on
the float32 weights and that input. The largest error seen must not exceed the bound.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxerr

FORMATS = {"float16": jnp.float16, "bfloat16": jnp.bfloat16}
ACCUMULATIONS = ("recursive", "wide:float32")
RADIUS = 1e-2
N_RUNS = 20


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32)(x))
        x = nn.gelu(nn.Dense(32)(x))  # tanh form (flax's default)
        return nn.Dense(4)(x)


def setup():
    """The model, its float32 variables (Flax's default init) and an input point."""
    model = MLP()
    x = jnp.sin(jnp.arange(16, dtype=jnp.float32) / 3.0)
    variables = model.init(jax.random.PRNGKey(0), x)
    return model, variables, x


def reference(variables, x) -> np.ndarray:
    """The network in float64 NumPy on the given (float32) weights: the 'exact' result.

    The gelu constants are taken as the float32 numbers that appear in the traced
    program, since those are the constants whose real-arithmetic result jaxerr bounds.
    """
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["params"])
    h = np.asarray(x, np.float64)
    h = np.maximum(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0.0)
    z = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    c3 = float(np.float32(0.044715))
    s = float(np.float32(np.sqrt(2 / np.pi)))
    h = z * (0.5 * (1.0 + np.tanh(s * (z + c3 * z**3))))
    return h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]


def simulate(model, variables, points, dtype) -> np.ndarray:
    """Run the model with weights and inputs cast to ``dtype`` at each point."""
    low = jax.tree_util.tree_map(lambda a: a.astype(dtype), variables)
    apply = jax.jit(jax.vmap(model.apply, in_axes=(None, 0)))
    return np.asarray(apply(low, jnp.asarray(points).astype(dtype)), np.float64)


def run(n_runs: int = N_RUNS, radius: float = RADIUS, seed: int = 0, jit: bool = False,
        verbose: bool = True) -> list[dict]:
    """Bound and simulate every (format, accumulation) pair; return one dict per pair.

    ``jit=False`` evaluates the analysis op by op: for a one-off analysis that starts
    much faster than compiling one XLA program per configuration (``jaxerr.bound``'s
    default ``jit=True`` pays off when the bound is called many times).

    Each dict holds ``format``, ``accumulation``, ``bound`` and ``observed`` (arrays of
    the output's shape: ``abs_err`` and the largest error seen), ``exact_inside``
    (every reference value lies in ``[lo, hi]``), ``ratio`` (max bound / max observed)
    and ``seconds`` (the analysis call, compilation included).
    """
    model, variables, x = setup()
    box = jaxerr.Interval.around(x, radius)
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(box.lo), np.asarray(box.hi)
    centre = np.asarray(x, np.float64)
    points = np.clip(centre + rng.uniform(-radius, radius, (n_runs, x.size)), lo, hi)
    points = points.astype(np.float32)
    exact = np.stack([reference(variables, p) for p in points])

    results = []
    for fmt, dtype in FORMATS.items():
        computed = simulate(model, variables, points, dtype)
        observed = np.max(np.abs(computed - exact), axis=0)
        for acc in ACCUMULATIONS:
            t0 = time.perf_counter()
            b = jaxerr.bound(model.apply, fmt, accumulation=acc, jit=jit)(variables, box)
            b = jax.block_until_ready(b)
            seconds = time.perf_counter() - t0
            bnd = np.asarray(b.abs_err, np.float64)
            inside = bool(np.all((np.asarray(b.lo) <= exact) & (exact <= np.asarray(b.hi))))
            results.append(dict(
                format=fmt, accumulation=acc, bound=bnd, observed=observed,
                exact_inside=inside, ratio=float(bnd.max() / observed.max()), seconds=seconds,
                lo=np.asarray(b.lo), hi=np.asarray(b.hi),
            ))
    if verbose:
        report(results, n_runs, radius)
    return results


def report(results: list[dict], n_runs: int, radius: float) -> None:
    print(f"Flax MLP 16->32->32->4 over the box x +- {radius:g}; {n_runs} simulated runs per format")
    print(f"{'format':<10}{'accumulation':<14}{'bound':>10}{'observed':>10}{'ratio':>8}"
          f"{'  ok':<6}{'analysis':>10}")
    for r in results:
        ok = bool(np.all(r["observed"] <= r["bound"])) and r["exact_inside"]
        print(f"{r['format']:<10}{r['accumulation']:<14}{r['bound'].max():>10.3e}"
              f"{r['observed'].max():>10.3e}{r['ratio']:>8.1f}{'  yes' if ok else '  NO':<6}"
              f"{r['seconds']:>9.2f}s")
    print("bound = max abs_err over the outputs; observed = largest |run - float64 reference|;")
    print("ok = observed <= abs_err and reference in [lo, hi] for every output and run")


def main() -> None:
    run()


if __name__ == "__main__":
    main()
