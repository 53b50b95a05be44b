"""The model zoo (tests/zoo.py) in every format, input kind and domain: analysis time
and tightness.

    python benchmarks/zoo.py [--models mlp,lenet,...] [--formats bfloat16,float16]
                             [--domains interval,first_order,affine] [--runs 20]
                             [--timeout 900] [--jobs 1] [--resume rows.jsonl]

One row per model x format x input kind (a point, or a box ``centre ± radius`` over the
floating inputs; token inputs stay exact, the box of the LSTM classifier is over its
embeddings) x domain, each computed in its own subprocess with a timeout, so that one
slow compile cannot stall the table. Columns:

* ``compile [s]``: first call of ``jaxerr.bound(f)`` (trace + compile + run) minus one
  call; ``call [s]``: the median of three further calls (the compiled analysis);
* ``median`` / ``max``: ``abs_err / observed`` over the output elements with
  ``observed > 0``, where ``observed`` is the element's largest ``|simulated - exact|``
  over ``--runs`` simulated executions (``tests/_simulator.py``, random summation
  orders; over a box: ``--runs`` executions spread over 4 points of the box, each
  compared with its own exact result);
* ``inf``: output elements whose bound is infinite (sound, with a diagnostic);
* ``viol``: observed errors above ``abs_err``, exact results outside ``[lo, hi]`` or
  simulated ones outside ``[computed_lo, computed_hi]`` (must be 0).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "tests"))

DOMAINS = ("interval", "first_order", "affine")
FORMATS = ("bfloat16", "float16")
KINDS = ("point", "box")


def _row(name: str, fmt: str, kind: str, domain: str, runs: int, box_points: int) -> dict:
    import _simulator as S
    import jax
    import jax.numpy as jnp
    import numpy as np
    import zoo

    import jaxerr

    m = zoo.build(name)
    fn, centres, radius = m.case(kind)
    args, los, his = [], [], []
    for c in centres:
        if np.issubdtype(c.dtype, np.floating) and radius:
            lo = (c.astype(np.float64) - radius).astype(c.dtype)
            hi = (c.astype(np.float64) + radius).astype(c.dtype)
            args.append(jaxerr.Interval(jnp.asarray(lo), jnp.asarray(hi)))
        else:
            lo = hi = c
            args.append(jnp.asarray(c))
        los.append(lo)
        his.append(hi)
    g = jaxerr.bound(fn, fmt, domain=domain, warn=False)

    def call():
        t = time.perf_counter()
        out = jax.block_until_ready(g(*args))
        return out, time.perf_counter() - t

    out, t_first = call()
    times = [call()[1] for _ in range(3)]
    t_call = float(np.median(times))
    (b,) = jax.tree_util.tree_leaves(out, is_leaf=lambda x: isinstance(x, jaxerr.Bound))
    err = np.asarray(b.abs_err, np.float64)
    lo_b, hi_b = np.asarray(b.lo, np.float64), np.asarray(b.hi, np.float64)
    clo, chi = np.asarray(b.computed_lo, np.float64), np.asarray(b.computed_hi, np.float64)

    rng = np.random.default_rng(0)
    if kind == "point" or not radius:
        points = [(list(centres), runs)]
    else:
        per = max(1, -(-runs // box_points))
        pts = [[S.sample_box(lo.astype(np.float64), hi.astype(np.float64), box_points, rng)
                if np.issubdtype(c.dtype, np.floating) else None for c, lo, hi in zip(centres, los, his)]]
        points = [([c if s is None else s[k] for c, s in zip(centres, pts[0])], per) for k in range(box_points)]
    acc = "wide:float32"  # accumulation "auto" for formats narrower than float32
    worst = np.zeros_like(err)
    viol = 0
    n_sim = 0
    for pt, n in points:
        (ex,) = S.exact(fn, pt)
        ex = np.asarray(ex, np.float64)
        viol += int(np.sum(~((lo_b <= ex) & (ex <= hi_b))))
        for _ in range(n):
            (sim,) = S.simulate(fn, pt, fmt=fmt, accumulation=acc, order="random", rng=rng)
            sim = np.asarray(sim, np.float64)
            n_sim += 1
            e = np.abs(sim - ex)
            finite = np.isfinite(err)
            viol += int(np.sum(finite & ~(e <= err)))
            viol += int(np.sum(finite & ~((clo <= sim) & (sim <= chi))))
            worst = np.maximum(worst, np.where(np.isnan(e), np.inf, e))
    pos = (worst > 0) & np.isfinite(err)
    ratios = err[pos] / worst[pos]
    return {
        "model": name, "format": fmt, "kind": kind, "domain": domain,
        "compile_s": max(t_first - t_call, 0.0), "call_s": t_call,
        "median": float(np.median(ratios)) if ratios.size else float("nan"),
        "max": float(np.max(ratios)) if ratios.size else float("nan"),
        "inf": int(np.sum(np.isinf(err))), "n": int(err.size), "viol": viol, "sims": n_sim,
        "max_abs_err": float(np.max(err)), "max_observed": float(np.max(worst)),
        "diagnostics": sorted(set(b.diagnostics.fired()))[:3],
    }


def _run_row(name, fmt, kind, domain, runs, box_points, timeout) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--row", name, fmt, kind, domain,
           "--runs", str(runs), "--box-points", str(box_points)]
    t = time.perf_counter()
    base = {"model": name, "format": fmt, "kind": kind, "domain": domain}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "status": f"timeout ({timeout} s)"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            r = json.loads(line)
            r["status"] = "ok"
            r["wall_s"] = time.perf_counter() - t
            return r
    tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"]
    return {**base, "status": f"failed: {tail[0][:120]}"}


def _fmt_row(r: dict) -> str:
    head = f"| {r['model']} | {r['format']} | {r['kind']} | {r['domain']} |"
    if r.get("status") != "ok":
        return head + f" {r.get('status')} | | | | | |"
    inf = f"{r['inf']}/{r['n']}"
    return head + (f" {r['compile_s']:.1f} | {r['call_s'] * 1e3:.1f} | {r['median']:.3g} | {r['max']:.3g} | "
                   f"{inf} | {r['viol']} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--row", nargs=4, metavar=("MODEL", "FORMAT", "KIND", "DOMAIN"))
    ap.add_argument("--models", default=None)
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--domains", default=",".join(DOMAINS))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--box-points", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--jobs", type=int, default=1, help="rows computed at a time (one subprocess each)")
    ap.add_argument("--resume", default=None,
                    help="JSON-lines file: rows found there are not recomputed, new rows are appended")
    args = ap.parse_args()
    if args.row:
        print(json.dumps(_row(*args.row, args.runs, args.box_points)), flush=True)
        return
    import zoo

    models = args.models.split(",") if args.models else list(zoo.NAMES)
    rows = [(name, fmt, kind, dom) for fmt in args.formats.split(",") for name in models
            for kind in args.kinds.split(",") for dom in args.domains.split(",")]
    done = {}
    if args.resume and os.path.exists(args.resume):
        with open(args.resume) as fh:
            for line in fh:
                r = json.loads(line)
                done[(r["model"], r["format"], r["kind"], r["domain"])] = r
    print(f"model zoo (tests/zoo.py): {args.runs} simulated executions per row, accumulation auto "
          f"(wide:float32), timeout {args.timeout:.0f} s per row, {args.jobs} row(s) at a time")
    header = ("| model | format | input | domain | compile [s] | call [ms] | median abs_err/obs | "
              "max abs_err/obs | inf | viol |\n|---|---|---|---|---|---|---|---|---|---|")
    print(header, flush=True)
    todo = [k for k in rows if k not in done]

    def work(key):
        return _run_row(*key, args.runs, args.box_points, args.timeout)

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as ex:
        for r in ex.map(work, todo):
            done[(r["model"], r["format"], r["kind"], r["domain"])] = r
            print(_fmt_row(r), flush=True)
            if args.resume:
                with open(args.resume, "a") as fh:
                    fh.write(json.dumps(r) + "\n")
    print("\nall rows, in order:\n" + header)
    for k in rows:
        print(_fmt_row(done[k]))


if __name__ == "__main__":
    main()
