"""Runtime overhead of ``jax.jit(jaxerr.bound(f))`` over ``jax.jit(f)`` for Flax MLPs.

For Flax linen MLPs (``depth`` Dense layers: ``depth - 1`` of ``Dense(width)`` +
relu, then a final ``Dense(width)``; input dimension ``width``, batch 32, float32
parameters) this prints, side by side in one run:

* ``f``: ``jax.jit(f)(params, x)``;
* ``point``: ``jax.jit(jaxerr.bound(f))(params, x)``;
* ``box``: ``jax.jit(jaxerr.bound(f))(params, Interval(x - 0.01, x + 0.01))``;
* ``bf16``: ``jax.jit(jaxerr.bound(f, "bfloat16"))(params, x)``;

each as time per call [µs] and as a ratio to ``f``, plus the compile time of the
three ``bound`` programs (trace + lower + XLA compile; excluded from the timings).

Method (the machines are shared and noisy): every program is compiled and warmed
up first; then each timing is a statistic (``--stat``, default min) over
``--blocks`` blocks (default 9) of back-to-back calls, each block long enough to
last ``--block-ms`` (default 50 ms), every call followed by
``jax.block_until_ready``. The blocks of the four programs are interleaved
(f, point, box, bf16, f, point, ... with a rotating start) so that slow phases
of the machine hit all of them alike; the ratios come from the same run.

Usage::

    python benchmarks/overhead.py             # full table (a few minutes on 2 cores)
    python benchmarks/overhead.py --quick     # smoke test: depth 2 and 4, width 256
    python benchmarks/overhead.py --markdown  # markdown table
    python benchmarks/overhead.py --hlo       # also dots, flops, temp buffer, page faults
    python benchmarks/overhead.py --closed-params  # params captured as constants of f
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

try:
    import flax.linen as nn
except ImportError:  # pragma: no cover
    sys.exit("this benchmark needs flax: pip install flax")

import jaxerr

BATCH = 32
RADIUS = 0.01


class MLP(nn.Module):
    depth: int
    width: int

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth - 1):
            x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(self.width)(x)


def _block(out):
    return jax.block_until_ready(out)


def _setup(depth: int, width: int, closed: bool = False):
    """The four programs and their arguments. ``closed``: the parameters are captured
    constants of ``f`` (``f(x)``) instead of arguments (``f(params, x)``), so that XLA
    may constant-fold work that depends on the weights only."""
    model = MLP(depth, width)
    key_p, key_x = jax.random.split(jax.random.PRNGKey(depth * 10_000 + width))
    x = jax.random.normal(key_x, (BATCH, width), jnp.float32)
    params = model.init(key_p, x)
    box = jaxerr.Interval(x - RADIUS, x + RADIUS)

    if closed:

        def f(x):
            return model.apply(params, x)

        pre = ()
    else:

        def f(params, x):
            return model.apply(params, x)

        pre = (params,)
    variants = {
        "f": (jax.jit(f), (*pre, x)),
        "point": (jax.jit(jaxerr.bound(f)), (*pre, x)),
        "box": (jax.jit(jaxerr.bound(f)), (*pre, box)),
        "bf16": (jax.jit(jaxerr.bound(f, "bfloat16")), (*pre, x)),
    }
    return variants


def _compile(variants):
    """Compile every program (jit reuses the executable afterwards); seconds each."""
    times = {}
    compiled = {}
    for name, (fn, args) in variants.items():
        t0 = time.perf_counter()
        compiled[name] = fn.lower(*args).compile()
        times[name] = time.perf_counter() - t0
        _block(fn(*args))  # warm up the dispatch path (must not recompile)
        _block(fn(*args))
    return times, compiled


def _calls_per_block(fn, args, block_s: float) -> int:
    n, elapsed = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            _block(fn(*args))
        elapsed = time.perf_counter() - t0
        if elapsed >= block_s / 4:
            break
        n *= 2
    return max(1, math.ceil(n * block_s / elapsed))


def _time(variants, blocks: int, block_s: float):
    names = list(variants)
    reps = {nm: _calls_per_block(*variants[nm], block_s) for nm in names}
    per_call = {nm: [] for nm in names}
    faults = {nm: 0 for nm in names}
    for b in range(blocks):
        order = names[b % len(names) :] + names[: b % len(names)]
        for nm in order:
            fn, args = variants[nm]
            n = reps[nm]
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            for _ in range(n):
                _block(fn(*args))
            per_call[nm].append((time.perf_counter() - t0) / n)
            faults[nm] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    faults = {nm: faults[nm] / (blocks * reps[nm]) for nm in names}
    return per_call, reps, faults


def _hlo_stats(compiled) -> dict:
    txt = compiled.as_text()
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    ca = ca or {}
    try:
        temp = float(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # pragma: no cover
        temp = float("nan")
    return {
        "dots": len(re.findall(r"\bdot\(", txt)),
        "flops": float(ca.get("flops", float("nan"))),
        "bytes": float(ca.get("bytes accessed", float("nan"))),
        "fusions": len(re.findall(r"\bfusion\(", txt)),
        "temp": temp,
    }


def _git_state() -> str:
    """Where jaxerr was imported from: the commit of its checkout and a hash of
    uncommitted changes to jaxerr/ (best effort)."""
    pkg = os.path.dirname(os.path.abspath(jaxerr.__file__))

    def run(*cmd: str) -> str:
        return subprocess.run(cmd, cwd=pkg, capture_output=True, text=True, timeout=10).stdout

    try:
        head = run("git", "rev-parse", "--short", "HEAD").strip()
        if not head:
            return f"from {pkg}, not a git checkout"
        diff = run("git", "diff", "HEAD", "--", ".")
        if not diff:
            return head
        digest = hashlib.sha1(diff.encode()).hexdigest()[:10]
        return f"{head} + uncommitted jaxerr/ changes (diff sha1 {digest})"
    except Exception:  # pragma: no cover
        return "unknown"


def _fmt_us(t: float) -> str:
    us = t * 1e6
    return f"{us:.0f}" if us >= 100 else f"{us:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke test: depth 2 and 4, width 256, fewer blocks"
    )
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument(
        "--stat",
        choices=("min", "median"),
        default="min",
        help="statistic over blocks (default min)",
    )
    ap.add_argument(
        "--blocks", type=int, default=None, help="blocks per program (default 9, quick 3)"
    )
    ap.add_argument(
        "--block-ms",
        type=float,
        default=None,
        help="target block length [ms] (default 50, quick 20)",
    )
    ap.add_argument(
        "--depths", type=str, default=None, help="comma-separated depths (default 2,4,8)"
    )
    ap.add_argument(
        "--widths", type=str, default=None, help="comma-separated widths (default 256,1024)"
    )
    ap.add_argument(
        "--hlo",
        action="store_true",
        help="also print dot counts, flops, bytes, XLA temp buffer size and page faults per call",
    )
    ap.add_argument(
        "--closed-params",
        action="store_true",
        help="capture the parameters as constants of f (f(x)) instead of passing them (f(params, x))",
    )
    a = ap.parse_args(argv)

    if a.quick:
        configs = [(2, 256), (4, 256)]
        blocks = a.blocks or 3
        block_s = (a.block_ms or 20.0) / 1e3
    else:
        depths = [int(s) for s in (a.depths or "2,4,8").split(",")]
        widths = [int(s) for s in (a.widths or "256,1024").split(",")]
        configs = [(d, w) for w in widths for d in depths]
        blocks = a.blocks or 9
        block_s = (a.block_ms or 50.0) / 1e3
    stat = min if a.stat == "min" else statistics.median

    try:
        ncpu_aff = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        ncpu_aff = os.cpu_count()
    print(
        f"jax {jax.__version__} (jaxlib {getattr(jax.lib, '__version__', '?')}), jaxerr {jaxerr.__version__} "
        f"[{_git_state()}], python {platform.python_version()}"
    )
    print(
        f"backend: {jax.default_backend()} {jax.devices()}; CPUs: os.cpu_count()={os.cpu_count()}, "
        f"usable={ncpu_aff}"
    )
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(
        f"MLP: Dense+relu x (depth-1), final Dense; in=out=width; batch {BATCH}; float32 params "
        f"{'captured as constants' if a.closed_params else 'passed as arguments'}; box = x ± {RADIUS}"
    )
    print(
        f"timing: {a.stat} over {blocks} interleaved blocks of >= {block_s * 1e3:.0f} ms per program, "
        f"block_until_ready after every call; compile excluded"
    )
    print(flush=True)

    rows = []
    hlo_rows = []
    t_start = time.perf_counter()
    for depth, width in configs:
        variants = _setup(depth, width, a.closed_params)
        ctimes, compiled = _compile(variants)
        per_call, reps, faults = _time(variants, blocks, block_s)
        t = {nm: stat(v) for nm, v in per_call.items()}
        rows.append(
            {
                "depth": depth,
                "width": width,
                "t": t,
                "compile": (ctimes["point"], ctimes["box"], ctimes["bf16"]),
                "spread": {nm: (max(v) / min(v) - 1) for nm, v in per_call.items()},
            }
        )
        if a.hlo:
            st = {nm: _hlo_stats(c) for nm, c in compiled.items()}
            for nm in st:
                st[nm]["faults"] = faults[nm]
            hlo_rows.append((depth, width, st))
        print(
            f"  done depth={depth} width={width} (calls/block {reps}) "
            f"[{time.perf_counter() - t_start:.0f} s]",
            file=sys.stderr,
            flush=True,
        )

    header = [
        "depth",
        "width",
        "jit(f) [µs]",
        "bound point [µs]",
        "ratio",
        "bound box [µs]",
        "ratio",
        "bound bf16 [µs]",
        "ratio",
        "compile pt/box/bf16 [s]",
    ]
    table = []
    for r in rows:
        t = r["t"]
        table.append(
            [
                str(r["depth"]),
                str(r["width"]),
                _fmt_us(t["f"]),
                _fmt_us(t["point"]),
                f"{t['point'] / t['f']:.2f}",
                _fmt_us(t["box"]),
                f"{t['box'] / t['f']:.2f}",
                _fmt_us(t["bf16"]),
                f"{t['bf16'] / t['f']:.2f}",
                "/".join(f"{c:.2f}" for c in r["compile"]),
            ]
        )
    _print_table(header, table, a.markdown)
    print()
    spreads = max(max(r["spread"].values()) for r in rows)
    print(f"largest (max/min - 1) spread over blocks of any program: {spreads * 100:.0f}%")
    print(f"total wall time: {time.perf_counter() - t_start:.0f} s")

    if a.hlo:
        print()
        header = [
            "depth",
            "width",
            "program",
            "dots",
            "GFLOP",
            "x f",
            "MB accessed",
            "x f",
            "fusions",
            "XLA temp [MB]",
            "page faults/call",
        ]
        tab = []
        for depth, width, st in hlo_rows:
            base = st["f"]
            for nm, s in st.items():
                tab.append(
                    [
                        str(depth),
                        str(width),
                        nm,
                        str(s["dots"]),
                        f"{s['flops'] / 1e9:.3f}",
                        f"{s['flops'] / base['flops']:.2f}",
                        f"{s['bytes'] / 1e6:.1f}",
                        f"{s['bytes'] / base['bytes']:.2f}",
                        str(s["fusions"]),
                        f"{s['temp'] / 1e6:.1f}",
                        f"{s['faults']:.0f}",
                    ]
                )
        _print_table(header, tab, a.markdown)
    return 0


def _print_table(header, table, markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---:" for _ in header) + "|")
        for row in table:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    raise SystemExit(main())
