"""Fuzz jaxerr's soundness: random programs x formats x accumulation models x domains.

    python scripts/fuzz.py --cases 100000 [--seed 0] [--domains interval first_order]
                           [--batch 256] [--out fuzz_failures.jsonl] [--minimise]
    python scripts/fuzz.py --replay fuzz_failures.jsonl
    python scripts/fuzz.py --seed 22011 --programs 1 --batch 1024 [--domains ...]   # one program

A program is drawn from its seed, ``--batch``, ``--max-nodes``, ``--domains`` and
``--precisions``: re-running a seed needs the same values of these as the campaign.

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
import traceback

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
            r = Z.run_case(spec, config, inputs, batched=rec.get("batched", True), seed=rec.get("seed", 0))
            print("  violations:", len(r.violations))
            for v in r.violations[:5]:
                print("   ", v)
            bad += bool(r.violations)
    return bad


def one_program(seed: int, args: argparse.Namespace, precs) -> dict:
    """Draw, analyse and check the program of ``seed``; append failures to ``args.out``."""
    d = Z.NumpyDraw(seed)
    prec = d.choice(precs) if precs else "draw"
    spec, config, inputs, batched = Z.random_case(d, batch=args.batch, max_nodes=args.max_nodes,
                                                  precision=prec, domains_allowed=args.domains)
    rec = {"seed": seed, "label": config.label(), "domain": config.domain, "nodes": len(spec.nodes),
           "spec": str(spec), "cases": 0, "inf": 0, "bad": 0, "violations": [], "error": None}
    try:
        r = Z.run_case(spec, config, inputs, batched=batched, seed=seed)
    except Exception as e:  # a crash of the analysis (or of the reference) is a finding too
        rec["error"] = f"{type(e).__name__}: {str(e)[:500]}"
        # the traceback says whether jaxerr or the test-side reference crashed; the
        # failing input set is not known, so the record keeps the whole batch (its
        # --replay re-runs the same batch and raises the same error)
        tb = traceback.format_exc()
        rec["traceback"] = "".join(tb.splitlines(keepends=True)[-40:])
        with open(args.out, "a") as fh:
            fh.write(json.dumps({**Z.case_to_json(spec, config, inputs), "seed": seed,
                                 "batched": batched, "error": rec["error"], "traceback": tb},
                                default=str) + "\n")
        return rec
    rec.update(cases=r.cases, inf=r.stats.get("inf", 0), bad=len(r.bad_elements),
               violations=r.violations[:5])
    for e in r.bad_elements[:3]:
        out = {**Z.case_to_json(spec, config, inputs, e), "seed": seed, "element": e,
               "violations": r.violations[:5]}
        if args.minimise:
            ms, mi = Z.minimise(spec, config, inputs, e)
            out["minimised"] = Z.case_to_json(ms, config, mi)
            rec["violations"].append("minimised:\n" + str(ms))
        with open(args.out, "a") as fh:
            fh.write(json.dumps(out, default=str) + "\n")
    return rec


def _worker(first_seed: int, args: argparse.Namespace, precs, q) -> None:
    """Child process: programs ``first_seed, first_seed + 1, ...``, one message before
    and one after each, until the parent stops it."""
    seed = first_seed
    while True:
        q.put(("start", seed, time.time()))
        q.put(("done", seed, one_program(seed, args, precs)))
        seed += 1


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
    ap.add_argument("--programs", type=int, default=None,
                    help="stop after this many programs (checked, errors and timeouts); "
                         "--seed S --programs 1 re-runs the program of seed S")
    ap.add_argument("--program-timeout", type=float, default=300.0,
                    help="seconds one program (compile, analysis and checks) may take; a program "
                         "past it is stopped, listed as TIMEOUT (unchecked, not a violation) and "
                         "the campaign goes on with the next seed in a fresh process")
    ap.add_argument("--out", default="fuzz_failures.jsonl")
    ap.add_argument("--minimise", action="store_true", help="minimise each failing case (slow)")
    ap.add_argument("--replay", default=None)
    args = ap.parse_args(argv)
    if args.replay:
        return 1 if replay(args.replay) else 0

    import multiprocessing as mp
    import queue

    precs = None
    if args.precisions:
        precs = [None if p == "None" else p for p in args.precisions]
    import signal

    # a terminated campaign (kill, pkill) must not leave its worker running: SIGTERM
    # unwinds through the ``finally`` below, which kills the worker
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = mp.get_context("spawn")  # a fresh interpreter: no JAX state shared with the parent
    t0 = time.time()
    programs = cases = nviol = inf_cases = errors = 0
    timeouts: list[int] = []
    per_cfg: dict[str, int] = {}
    seed = args.seed
    proc = None
    try:
        while (cases < args.cases and (args.time_limit is None or time.time() - t0 < args.time_limit)
               and (args.programs is None or programs + errors + len(timeouts) < args.programs)):
            if proc is None:
                q = ctx.Queue()
                proc = ctx.Process(target=_worker, args=(seed, args, precs, q), daemon=True)
                proc.start()
                started = None
            try:
                msg = q.get(timeout=min(5.0, max(0.2, args.program_timeout / 10)))
            except queue.Empty:
                msg = None
            if msg is None:
                if not proc.is_alive():  # died without a message (e.g. killed for memory)
                    errors += 1
                    print(f"seed {seed}: ERROR worker died (exit code {proc.exitcode})", flush=True)
                    proc, seed = None, seed + 1
                elif started is not None and time.time() - started > args.program_timeout:
                    proc.kill()
                    proc.join()
                    timeouts.append(seed)
                    print(f"seed {seed}: TIMEOUT after {args.program_timeout:.0f}s (unchecked)", flush=True)
                    proc, seed = None, seed + 1
                continue
            if msg[0] == "start":
                seed, started = msg[1], time.time()
                continue
            rec = msg[2]
            if rec["error"]:
                errors += 1
                print(f"seed {seed} {rec['label']}: ERROR {rec['error']}\n{rec['spec']}\n"
                      f"{rec.get('traceback', '')}", flush=True)
                seed += 1
                continue
            programs += 1
            cases += rec["cases"]
            inf_cases += rec["inf"]
            per_cfg[rec["domain"]] = per_cfg.get(rec["domain"], 0) + rec["cases"]
            if rec["bad"]:
                nviol += rec["bad"]
                print(f"seed {seed} {rec['label']}: {rec['bad']} VIOLATING case(s)\n{rec['spec']}", flush=True)
                for v in rec["violations"]:
                    print("   ", v, flush=True)
            el = time.time() - t0
            print(f"[{el:7.0f}s] seed {seed} {rec['label']:40s} nodes {rec['nodes']} "
                  f"batch {rec['cases']:4d} ({time.time() - started:5.1f}s) | programs {programs} "
                  f"cases {cases} violations {nviol} errors {errors} timeouts {len(timeouts)} "
                  f"({cases / el:.1f} cases/s)", flush=True)
            seed += 1
    finally:
        if proc is not None:
            proc.kill()
            proc.join()
    el = time.time() - t0
    print(f"\nDONE programs {programs} cases {cases} violations {nviol} errors {errors} "
          f"timeouts {len(timeouts)} {timeouts} all-inf cases {inf_cases} time {el:.0f}s "
          f"({cases / max(el, 1e-9):.1f} cases/s) seeds {args.seed}..{seed - 1} by domain {per_cfg}")
    return 1 if (nviol or errors) else 0


if __name__ == "__main__":
    sys.exit(main())
