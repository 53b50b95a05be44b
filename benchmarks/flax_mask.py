"""Flax's default attention mask (``finfo(float32).min``, -inf in bfloat16/float16)
against a finite -1e4 bias: bound / observed error and analysis time per domain.

    python benchmarks/flax_mask.py [--formats bfloat16] [--runs 10]

``nn.dot_product_attention`` on 4 tokens (``tests/test_flax_mask.py``) with a causal
mask and with a padding mask from an integer input, at a point. Columns: ``first [s]``
(trace + compile + run), ``call [ms]`` (median of 3 further calls), ``abs_err/obs``
(largest bound over the largest error of ``--runs`` simulated executions), and the
ratio of the Flax-mask row to the -1e4 row measured next to it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--formats", default="bfloat16")
    ap.add_argument("--domains", default="interval,first_order,affine")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()

    import jax
    import test_flax_mask as T
    from _soundness import tightness

    import jaxerr
    import jaxerr._bound as _B

    _B._AFFINE_CAP = False  # each domain on its own
    print("| mask | format | domain | variant | first [s] | call [ms] | abs_err/obs | flax / -1e4 |")
    print("|---|---|---|---|---|---|---|---|")
    for mask in ("causal", "padded"):
        fn, centres = T._case(mask)
        biased = T._bias_causal if mask == "causal" else T._bias_padded
        for fmt in args.formats.split(","):
            for dom in args.domains.split(","):
                rows = {}
                for name, f in (("-1e4", biased), ("flax", fn)):
                    g = jaxerr.bound(f, fmt, domain=dom, warn=False)
                    t0 = time.perf_counter()
                    jax.block_until_ready(g(*centres).abs_err)
                    first = time.perf_counter() - t0
                    calls = []
                    for _ in range(3):
                        t0 = time.perf_counter()
                        jax.block_until_ready(g(*centres).abs_err)
                        calls.append(time.perf_counter() - t0)
                    (ratio,) = tightness(f, centres, precision=fmt, n_runs=args.runs, domain=dom)
                    rows[name] = (first, statistics.median(calls), ratio)
                for name in ("-1e4", "flax"):
                    first, call, ratio = rows[name]
                    rel = "" if name == "-1e4" else f"{ratio / rows['-1e4'][2]:.2f}"
                    print(f"| {mask} | {fmt} | {dom} | {name} | {first:.1f} | {1e3 * call:.1f} | "
                          f"{ratio:.3g} | {rel} |", flush=True)


if __name__ == "__main__":
    main()
