"""Run every benchmark in ``benchmarks/`` (quick settings by default) and print all tables.

One command::

    python benchmarks/run_all.py            # every benchmark's quick mode, one after another
    python benchmarks/run_all.py --full     # their default (long) settings: hours on 2 cores
    python benchmarks/run_all.py --only scale,overhead
    python benchmarks/run_all.py --list     # the commands it would run

Each benchmark runs in its own process (its output streamed as it comes) with a time limit
(``--timeout``, default 600 s per benchmark; a benchmark stopped by it is reported as
such). A summary at the end gives each benchmark's exit code and wall time. A script in
``benchmarks/`` that is not in the list below is named in the summary so that it is not
forgotten. Exit code: 0 when every benchmark exited with 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (script, quick arguments, full arguments, extra environment for quick mode)
BENCHMARKS: dict[str, tuple[str, list[str], list[str], dict[str, str]]] = {
    "overhead": ("overhead.py", ["--quick"], [], {}),
    "scale": ("scale.py", ["--quick"], [], {}),
    "tightness": ("tightness.py", ["--quick"], [], {}),
    "tightness_interval": ("tightness_interval.py", ["--runs", "5", "--width", "64", "--depth", "2"], [], {}),
    "tightness_affine": ("tightness_affine.py", [], [], {"ACTS": "relu", "FMTS": "bf16", "KINDS": "point"}),
    "layers_lenet": ("layers_lenet.py", ["--runs", "5", "--box-points", "2"], [], {}),
    "control_flow": ("control_flow.py", ["--runs", "5"], [], {}),
    "mixed": ("mixed.py", ["--quick", "--reps", "1"], [], {}),
    "zoo": ("zoo.py", ["--models", "mlp", "--formats", "bfloat16", "--kinds", "point", "--domains",
                       "interval,affine", "--runs", "5", "--timeout", "300"], [], {}),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="each benchmark's default settings (long)")
    ap.add_argument("--only", type=str, default=None, help=f"comma-separated, from {','.join(BENCHMARKS)}")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per benchmark (default 600)")
    ap.add_argument("--list", action="store_true", help="print the commands and exit")
    a = ap.parse_args(argv)
    names = a.only.split(",") if a.only else list(BENCHMARKS)
    for n in names:
        if n not in BENCHMARKS:
            ap.error(f"unknown benchmark {n!r}; known: {', '.join(BENCHMARKS)}")
    known = {v[0] for v in BENCHMARKS.values()} | {"run_all.py"}
    unlisted = sorted(f for f in os.listdir(_HERE)
                      if f.endswith(".py") and not f.startswith("_") and f not in known)

    env0 = dict(os.environ)
    root = os.path.dirname(_HERE)
    env0["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env0.get("PYTHONPATH")] if p])
    env0.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    summary = []
    for n in names:
        script, quick, full, qenv = BENCHMARKS[n]
        cmd = [sys.executable, os.path.join(_HERE, script)] + (full if a.full else quick)
        env = dict(env0)
        if not a.full:
            env.update(qenv)
        shown = " ".join([f"{k}={v}" for k, v in ({} if a.full else qenv).items()]
                         + ["python", f"benchmarks/{script}"] + (full if a.full else quick))
        if a.list:
            print(shown)
            continue
        print(f"\n{'=' * 100}\n== {n}: {shown}\n{'=' * 100}", flush=True)
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, cwd=root)
        try:
            rc = p.wait(timeout=a.timeout)
            status = f"exit code {rc}"
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc, status = -1, f"STOPPED by the {a.timeout:.0f} s limit"
        summary.append((n, status, time.perf_counter() - t0, rc))
    if a.list:
        return 0
    print(f"\n{'=' * 100}\n== summary\n{'=' * 100}")
    for n, status, secs, _ in summary:
        print(f"  {n:20s} {status:32s} {secs:7.0f} s")
    if unlisted:
        print(f"  not run (not in run_all.py's list): {', '.join(unlisted)}")
    return 0 if all(rc == 0 for *_, rc in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
