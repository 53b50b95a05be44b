"""Stage-by-stage tightness of ``domain="first_order"`` on the transformer block of
``benchmarks/tightness.py`` (pre-LN, seq 8, hidden 32, 4 heads, GELU MLP 128).

For each stage (the block cut after LN1, the attention logits, the softmax, the
attention residual, LN2, the MLP, the output) prints ``first_order abs_err / L`` (median
and max over elements, and max(abs_err) / max(L)) with ``L`` the first-order limit
(``_first_order_limit.py``), the analysis' wall and CPU time, for the split modes of
``jaxerr/_first_order.py``:

* ``off``: the full output pass only (``FINAL_CHECKPOINTS = False``);
* ``final``: also the output pass that splits at refined values (the default);
* ``split``: the refinement passes split beyond ``REFINE_FULL_BUDGET`` too
  (``REFINE_SPLIT = True``). Since the budget is 4096 this block's passes all split
  already, so ``split`` equals ``final`` here (with the old 256 they did not: float16
  output 13.5x -> 1.19x the limit, median).

Usage: python benchmarks/transformer_stages.py [--format bfloat16|float16]
       [--stages ln1,logits,softmax,resid1,ln2,ff1,mlp,out] [--modes off,final,split] [--flax-ln]
Each (mode, stage) runs in its own process (compile caches would otherwise be shared).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)


def block(upto: str, flax_ln: bool = False, seq: int = 8, d: int = 32, heads: int = 4, ff: int = 128):
    """The tightness benchmark's transformer block, up to stage ``upto``."""
    from tightness import transformer

    return transformer(seq, d, heads, ff, upto=upto, flax_ln=flax_ln)


def _one(mode: str, stage: str, fmt: str, flax_ln: bool) -> None:
    import numpy as np
    from _first_order_limit import first_order_limit

    import jaxerr
    import jaxerr._first_order as FO

    FO.FINAL_CHECKPOINTS = mode != "off"
    FO.REFINE_SPLIT = mode == "split"
    f, x = block(stage, flax_ln)
    t, c = time.perf_counter(), time.process_time()
    ab = np.asarray(jaxerr.bound(f, fmt, warn=False, domain="first_order")(x).abs_err, np.float64)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    L = first_order_limit(f, [x], precision=fmt)[0]
    r = ab / L
    print(f"{mode:6s} {stage:8s} {np.median(r):10.3g} {r.max():10.3g} {ab.max() / L.max():12.3g} "
          f"{ab.max():10.3g} {dt:8.0f} {dc:8.0f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--format", default="bfloat16")
    ap.add_argument("--stages", default="ln1,logits,softmax,resid1,ln2,ff1,mlp,out")
    ap.add_argument("--modes", default="off,final,split")
    ap.add_argument("--flax-ln", action="store_true", help="LayerNorm with the fast variance (Flax's default)")
    ap.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._one:
        _one(a._one[0], a._one[1], a.format, a.flax_ln)
        return 0
    print(f"format {a.format}, LayerNorm {'fast variance' if a.flax_ln else 'two-pass'}; FO/L = "
          "first_order abs_err / first-order limit")
    print(f"{'mode':6s} {'stage':8s} {'FO/L med':>10s} {'FO/L max':>10s} {'maxFO/maxL':>12s} "
          f"{'max abs':>10s} {'wall s':>8s} {'cpu s':>8s}", flush=True)
    for mode in a.modes.split(","):
        for stage in a.stages.split(","):
            cmd = [sys.executable, __file__, "--format", a.format, "--_one", mode, stage]
            if a.flax_ln:
                cmd.append("--flax-ln")
            out = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith(mode)]
            print(lines[-1] if lines else f"{mode:6s} {stage:8s} failed: {out.stderr.strip()[-300:]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
