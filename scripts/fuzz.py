"""Fuzz jaxerr's soundness: random programs x formats x accumulation models x domains.

    python scripts/fuzz.py --cases 100000 [--seed 0] [--domains interval first_order]
                           [--batch 256] [--out fuzz_failures.jsonl] [--minimise]
    python scripts/fuzz.py --replay fuzz_failures.jsonl

Each *program* (a random DAG over jaxerr's supported primitives, tests/_fuzz.py) is
analysed under one random configuration (format, accumulation, domain, points or
boxes) over a batch of ``--batch`` random input sets with one compilation
(``jax.jit(jax.vmap(bound(f)))``); every input set is a *case*, checked at several
points of its box against the independent simulator (tests/_simulator.py) under
each summation order its accumulation model allows. One case in ten is a single
concrete input set with float32 subnormals (the eager path). Prints
programs / cases / violations / time and appends every failing case (program,
configuration, the failing input set) as one JSON line to ``--out``; ``--replay``
re-runs such a file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")  # XLA has no intra-op thread flag
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import _fuzz as Z  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


def replay(path: str) -> int:
    bad = 0
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            spec, config, inputs = Z.case_from_json(rec)
            print(config.label())
            print(spec)
            r = Z.run_case(spec, config, inputs, batched=True)
            print("  violations:", len(r.violations))
            for v in r.violations[:5]:
                print("   ", v)
            bad += bool(r.violations)
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=1000, help="input sets to check (stop after)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=256, help="input sets per compiled program")
    ap.add_argument("--max-nodes", type=int, default=8)
    ap.add_argument("--domains", nargs="+", default=None, help=f"default: all of {Z.domains()}")
    ap.add_argument("--precisions", nargs="+", default=None,
                    help="subset of formats ('None' = as written); default: all")
    ap.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--out", default="fuzz_failures.jsonl")
    ap.add_argument("--minimise", action="store_true", help="minimise each failing case (slow)")
    ap.add_argument("--replay", default=None)
    args = ap.parse_args(argv)
    if args.replay:
        return 1 if replay(args.replay) else 0

    precs = None
    if args.precisions:
        precs = [None if p == "None" else p for p in args.precisions]
    t0 = time.time()
    programs = cases = nviol = inf_cases = errors = 0
    seed = args.seed
    per_cfg: dict[str, int] = {}
    while cases < args.cases and (args.time_limit is None or time.time() - t0 < args.time_limit):
        d = Z.NumpyDraw(seed)
        prec = d.choice(precs) if precs else "draw"
        spec, config, inputs, batched = Z.random_case(d, batch=args.batch, max_nodes=args.max_nodes,
                                                      precision=prec, domains_allowed=args.domains)
        tc = time.time()
        try:
            r = Z.run_case(spec, config, inputs, batched=batched, seed=seed)
        except Exception as e:  # a crash of the analysis is a finding too
            errors += 1
            msg = f"{type(e).__name__}: {str(e)[:500]}"
            print(f"seed {seed} {config.label()}: ERROR {msg}\n{spec}", flush=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps({**Z.case_to_json(spec, config, inputs, 0), "seed": seed, "error": msg}, default=str) + "\n")
            seed += 1
            continue
        programs += 1
        cases += r.cases
        inf_cases += r.stats.get("inf", 0)
        per_cfg[config.domain] = per_cfg.get(config.domain, 0) + r.cases
        if r.violations:
            nviol += len(r.bad_elements)
            print(f"seed {seed} {config.label()}: {len(r.bad_elements)} VIOLATING case(s)\n{spec}", flush=True)
            for v in r.violations[:5]:
                print("   ", v, flush=True)
            for e in r.bad_elements[:3]:
                rec = {**Z.case_to_json(spec, config, inputs, e), "seed": seed, "element": e,
                       "violations": r.violations[:5]}
                if args.minimise:
                    ms, mi = Z.minimise(spec, config, inputs, e)
                    rec["minimised"] = Z.case_to_json(ms, config, mi)
                    print("  minimised:\n" + str(ms), flush=True)
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(rec, default=str) + "\n")
        el = time.time() - t0
        print(f"[{el:7.0f}s] seed {seed} {config.label():40s} nodes {len(spec.nodes)} "
              f"batch {r.cases:4d} ({time.time() - tc:5.1f}s) | programs {programs} cases {cases} "
              f"violations {nviol} errors {errors} ({cases / el:.1f} cases/s)", flush=True)
        seed += 1
    el = time.time() - t0
    print(f"\nDONE programs {programs} cases {cases} violations {nviol} errors {errors} "
          f"all-inf cases {inf_cases} time {el:.0f}s ({cases / max(el, 1e-9):.1f} cases/s) "
          f"seeds {args.seed}..{seed - 1} by domain {per_cfg}")
    return 1 if (nviol or errors) else 0


if __name__ == "__main__":
    sys.exit(main())
