"""Where a compiled analysis spends its time: the largest fused computations of the
compiled program and the slowest operations of one call (XLA's own trace).

    python benchmarks/hlo_profile.py MODEL [--format bfloat16] [--domain first_order]
                                           [--input point|box] [--top 12]

``MODEL`` is a zoo model (``tests/zoo.py``). Prints the lower / compile / call times of
``jax.jit(jaxerr.bound(f))``, the ``--top`` fused computations by instruction count (with
their output shape), and the ``--top`` operations by time in one traced call. A fusion of
thousands of instructions producing a small array is the signature of XLA:CPU
re-evaluating a long elementwise chain per use (see ``affine.per_element``); it makes
both the compile and the call slow.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def fusion_sizes(hlo: str) -> list[tuple[int, str, str]]:
    """(instructions, computation name, root shape) of each fused computation."""
    out = []
    for comp in hlo.split("\n\n"):
        head = comp.lstrip().split("\n", 1)[0]
        if not head.startswith("%fused") and "fused_computation" not in head:
            continue
        root = re.search(r"ROOT %\S+ = (\S+)", comp)
        out.append((comp.count("\n"), head.split(" ")[0], root.group(1) if root else "?"))
    return sorted(out, reverse=True)


def main() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import zoo

    import jaxerr

    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--format", default="bfloat16")
    ap.add_argument("--domain", default="first_order")
    ap.add_argument("--input", default="point", choices=("point", "box"))
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()

    fn, centres, radius = zoo.build(a.model).case(a.input)
    args = []
    for c in centres:
        if a.input == "box" and np.issubdtype(c.dtype, np.floating) and radius:
            lo = (c.astype(np.float64) - radius).astype(c.dtype)
            hi = (c.astype(np.float64) + radius).astype(c.dtype)
            args.append(jaxerr.Interval(jnp.asarray(lo), jnp.asarray(hi)))
        else:
            args.append(jnp.asarray(c))
    h = jaxerr.bound(fn, a.format, domain=a.domain, warn=False, jit=False)
    t = time.perf_counter()
    low = jax.jit(h).lower(*args)
    t_lower = time.perf_counter() - t
    t = time.perf_counter()
    comp = low.compile()
    t_compile = time.perf_counter() - t
    jax.block_until_ready(comp(*args))
    t = time.perf_counter()
    jax.block_until_ready(comp(*args))
    t_call = time.perf_counter() - t
    hlo = comp.as_text()
    print(f"{a.model} {a.format} {a.domain} {a.input}: lower {t_lower:.1f} s, compile "
          f"{t_compile:.1f} s, call {t_call * 1e3:.2f} ms, {len(hlo.splitlines())} HLO lines")
    print(f"\nlargest fused computations (of {hlo.count('fused_computation')} mentions):")
    for n, name, shape in fusion_sizes(hlo)[: a.top]:
        print(f"{n:8d}  {shape:24s} {name}")

    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            jax.block_until_ready(comp(*args))
        f = sorted(glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True))[-1]
        events = json.load(gzip.open(f))["traceEvents"]
    dur: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(("$", "ThunkExecutor", "Pjit")):
            dur[e["name"]] += e.get("dur", 0)
    print("\nslowest operations of one call:")
    for name, us in dur.most_common(a.top):
        print(f"{us / 1e3:10.2f} ms  {name}")


if __name__ == "__main__":
    main()
