"""Classic scalar kernels in float64 over input boxes, compared with published bounds.

The kernels are the FPBench / FPTaylor / Rosa / Daisy benchmarks (polynomials,
rational functions, expressions with cancellation), written with the operation order
of their sources (``FPBench/FPBench`` ``benchmarks/fptaylor-real2float.fpcore``,
``rosa.fpcore``, ``fptaylor-extra.fpcore``, ``fptaylor-tests.fpcore`` and
``soarlab/FPTaylor`` ``benchmarks/toplas/FPTaylor/*.txt``): Python's left-associative
operators give the same tree as those files.

Every kernel is analysed by ``jaxerr.bound(f, precision=..., domain=...)`` over its
box (``jaxerr.Interval``) with x64 enabled, in two input semantics (``--inputs``):

* ``float`` (default): the box holds float64 numbers, used as they are
  (``precision=None``: the program as written, every operation rounds to float64).
  FPBench's ``:precision binary64`` variables; the third-party FPTaylor/Daisy numbers
  below appear to use it (rigidBody1's 2.949e-13 is below the 2745 u = 3.05e-13 that
  the roundings of its operations alone reach at the worst corner plus the input
  roundings' 1380 u).
* ``real``: the box holds real numbers, rounded to float64 on input
  (``precision="float64"``; FPTaylor's ``real x in [lo, hi]`` with ``rnd64``).

Two modelling differences with the published tools remain: jaxerr takes a float64
constant such as ``331.4`` to be the float64 number written (FPTaylor also rounds the
decimal constant), and it charges ``2u`` for every division (XLA may compute
``x / y`` as ``x * (1/y)``; the others charge ``u``).

Split columns: the box cut into equal sub-boxes, the analysis ``jax.vmap``-ed over them
and the largest bound taken (sound; see docs/domains.md, "Wide boxes: split them").

Observed error: ``--samples`` random inputs in the box plus its corners (with
``--inputs real`` each is a float64 point plus a random real offset below half an ulp,
so that the input rounding is part of the error), each evaluated by the compiled float64 program (``jax.jit``; the XLA execution the
bound is about) and exactly with mpmath at 300 bits on the real input; plus the box's
corners. ``observed <= bound`` is the soundness check, ``bound / observed`` the
tightness.

Published bounds (only numbers found with a source; see ``PUBLISHED``):

* ``daisy-readme``: malyzajko/daisy ``README.md`` (Daisy's default run on
  ``testcases/rosa/Doppler.scala``, the doppler1 box): 4.1911988101104756e-13
  (the README does not say whether inputs are rounded).
* ``third-party CI``: a comparison document in a public repository (found through the
  code index; the index did not give its repository name, so treat these as
  secondary): FPTaylor built from the js_of_ocaml release and Daisy built from
  source, run by that project's CI on the FPBench forms of ten kernels.

Run: ``python benchmarks/kernels.py [--samples N] [--kernels a,b] [--markdown]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from _kernels import KERNELS, analyse, observed_error, published  # noqa: E402

# ---------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if x == float("inf"):
        return "inf"
    return f"{x:.2e}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--kernels", default="")
    ap.add_argument("--symbols", type=int, default=32)
    ap.add_argument("--pieces", type=int, default=4096, help="sub-boxes of the split columns")
    ap.add_argument("--inputs", choices=["real", "float"], default="float",
                    help="real: the box's reals, rounded on input (FPTaylor's real x, rnd64); "
                         "float: its float64 numbers (FPBench's binary64 variables)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--no-first-order", action="store_true")
    a = ap.parse_args(argv)
    want = set(a.kernels.split(",")) if a.kernels else None
    cols = [("interval", "interval", 1), ("affine", "affine", 1)]
    if not a.no_first_order:
        cols.append(("first_order", "first_order", 1))
    cols += [("interval split", "interval", a.pieces), ("affine split", "affine", a.pieces)]
    print(f"# jax {jax.__version__}, float64 kernels, inputs={a.inputs}, affine symbols={a.symbols}, split into "
          f"<= {a.pieces} sub-boxes, {a.samples} random inputs + corners")
    head = (["kernel", "observed"] + [c[0] for c in cols]
            + ["best / observed", "published", "best / best published"])
    rows = []
    bad = []
    for k in KERNELS:
        if want and k.name not in want:
            continue
        t0 = time.time()
        res = {}
        for label, dom, pieces in cols:
            res[label] = analyse(k, dom, a.symbols if dom == "affine" else None, cap=False, pieces=pieces,
                                 inputs=a.inputs)
        obs = observed_error(k, a.samples, inputs=a.inputs)
        pub = published(k.name)
        best = min(res.values())
        for label, v in res.items():
            if not v >= obs:
                bad.append(f"{k.name} {label}: bound {v:.3e} < observed {obs:.3e}")
        pub_s = "; ".join(f"{t} {_fmt(v)}" for t, v in pub.items()) or "none found"
        ratio = f"{best / min(pub.values()):.2f}" if pub else "—"
        rows.append([k.name, _fmt(obs)] + [_fmt(res[c[0]]) for c in cols]
                    + [f"{best / obs:.1f}" if obs > 0 else "—", pub_s, ratio])
        print("  " + " | ".join(rows[-1]) + f"   ({time.time() - t0:.0f} s)", flush=True)
    print()
    if a.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    print(f"\nviolations (bound < observed): {len(bad)}")
    for b in bad:
        print("  " + b)


if __name__ == "__main__":
    main()
