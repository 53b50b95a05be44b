"""The ``jaxerr`` command line: analyse, report on and tune a function in a Python file.

Run ``jaxerr --help`` or ``jaxerr COMMAND --help``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

_EPILOG = """\
the target function
  FILE.py:FN names a function in a Python file (or a module path, pkg.mod:FN).
  Its arguments come from --input (one per positional argument, in order), or,
  without --input, from a function FN_inputs() (or inputs()) in the same file
  that returns a tuple of arguments (use it for model parameters:
  `def predict(params, x)` with `def predict_inputs(): return (params, x)`).

input specs (--input, repeat once per argument)
  normal:8x64            standard normal values, shape (8, 64), seed 0
  normal:8x64:seed=3     another seed
  uniform:64             uniform in [-1, 1)
  zeros:4x4 / ones:16    constants
  x.npy                  an array saved with numpy.save
  --radius R             analyse the last argument (the data; its floating arrays)
                         over the box [x - R, x + R] instead of at the point x;
                         the other arguments (parameters) stay points

examples
  jaxerr demo
  jaxerr analyze examples/cli_target.py:f --input uniform:64 --precision bfloat16
  jaxerr analyze model.py:predict --precision float16 --radius 1e-3 --json
  jaxerr report examples/report_digits.py:predict --precision bfloat16 --plot digits.png
  jaxerr report model.py:predict --precision float32 --target 1e-3   # bits per layer
  jaxerr tune examples/report_digits.py:predict --target argmax --candidates float32,bfloat16,float16
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("function", metavar="FILE.py:FN", help="the function to analyse (see below)")
    p.add_argument("--input", action="append", default=[], metavar="SPEC",
                   help="one argument of FN (repeat in order); see 'input specs' below")
    p.add_argument("--radius", type=float, default=0.0,
                   help="analyse the last argument (the data) over the box x +- RADIUS; other "
                        "arguments stay points (default: at the point)")
    p.add_argument("--accumulation", default="auto",
                   help="summation model: auto, recursive, pairwise, blocked:B, wide:float32")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="write the result as JSON to PATH (or stdout without PATH)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="jaxerr",
        description="Guaranteed floating-point error bounds for JAX programs: bound the "
                    "error of a function run in a low-precision format, see where each "
                    "layer creates and amplifies it, pick formats per layer, check "
                    "implementations against a certified tolerance.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    a = sub.add_parser("analyze", aliases=["analyse"], help="certified bounds of every output",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(a)
    a.add_argument("--precision", default=None,
                   help="format to analyse FN in (bfloat16, float16, float32, float8_e4m3fn, ...); "
                        "default: as written")
    a.add_argument("--domain", default="interval", choices=["interval", "first_order"])
    a.add_argument("--refine-budget", type=int, default=None, metavar="N",
                   help="first_order only: tape entries the refinement passes may walk while "
                        "splitting (default 4096; smaller compiles faster, looser on transformers)")
    a.add_argument("--analysis-dtype", default=None, choices=["float32", "float64"],
                   help="dtype of the analysis' own arithmetic (default: float64 with "
                        "JAX_ENABLE_X64, else float32); float64 is tighter, ~2x slower")

    r = sub.add_parser("report", help="per-layer table: error created vs inherited, condition numbers",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(r)
    r.add_argument("--precision", default="bfloat16", help="format (default bfloat16)")
    r.add_argument("--target", dest="target_", default=None,
                   help="accuracy target (1e-3 = max abs_err, rel:1e-2, argmax): adds bits needed per layer")
    r.add_argument("--equations", action="store_true", help="also print one row per equation")
    r.add_argument("--plot", default=None, metavar="PNG", help="save the error-per-layer plot")

    t = sub.add_parser("tune", help="choose a format per layer meeting a target at the lowest cost",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(t)
    t.add_argument("--target", dest="target_", required=True, help="1e-3 (max abs_err), rel:1e-2, or argmax")
    t.add_argument("--candidates", default="float32,bfloat16,float16",
                   help="comma-separated formats to choose from (default float32,bfloat16,float16)")

    sub.add_parser("demo", help="the built-in demo (a Flax MLP in three formats)", add_help=False)
    return ap


# ---------------------------------------------------------------------------
# Loading the function and its inputs
# ---------------------------------------------------------------------------


def load_target(spec: str) -> tuple[Any, Any]:
    """``FILE.py:FN`` or ``pkg.mod:FN`` -> (function, module)."""
    if ":" not in spec:
        raise SystemExit(f"jaxerr: expected FILE.py:FN or module:FN, got {spec!r}")
    path, fn = spec.rsplit(":", 1)
    if path.endswith(".py") or os.path.sep in path:
        if not os.path.exists(path):
            raise SystemExit(f"jaxerr: no such file {path!r}")
        name = "_jaxerr_target_" + os.path.splitext(os.path.basename(path))[0]
        spec_ = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec_)
        sys.modules[name] = mod
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        spec_.loader.exec_module(mod)
    else:
        mod = importlib.import_module(path)
    if not hasattr(mod, fn):
        raise SystemExit(f"jaxerr: {path} has no attribute {fn!r}")
    return getattr(mod, fn), mod


def parse_input(spec: str) -> np.ndarray:
    """One input spec (see ``jaxerr --help``) -> a float32 array."""
    if spec.endswith(".npy"):
        return np.load(spec)
    parts = spec.split(":")
    kind = parts[0].lower()
    if kind not in ("normal", "uniform", "zeros", "ones") or len(parts) < 2:
        raise SystemExit(f"jaxerr: cannot read input spec {spec!r}; use e.g. normal:8x64, "
                         "uniform:64:seed=1, zeros:4x4 or a file.npy")
    try:
        shape = tuple(int(d) for d in parts[1].lower().split("x") if d)
    except ValueError:
        raise SystemExit(f"jaxerr: bad shape {parts[1]!r} in {spec!r}; write it as 8x64") from None
    seed = 0
    for extra in parts[2:]:
        if extra.startswith("seed="):
            seed = int(extra[5:])
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.standard_normal(shape).astype(np.float32)
    if kind == "uniform":
        return rng.uniform(-1, 1, shape).astype(np.float32)
    return (np.zeros if kind == "zeros" else np.ones)(shape, np.float32)


def make_args(fn_name: str, mod: Any, inputs: Sequence[str], radius: float) -> tuple:
    import jax

    import jaxerr

    if inputs:
        args = tuple(parse_input(s) for s in inputs)
    else:
        maker = getattr(mod, f"{fn_name}_inputs", None) or getattr(mod, "inputs", None)
        if maker is None:
            raise SystemExit(f"jaxerr: give the arguments with --input (one per argument), or define "
                             f"{fn_name}_inputs() returning them in the file")
        args = tuple(maker())
    if radius:
        def box(x):
            a = np.asarray(x)
            if a.dtype.kind == "f":
                return jaxerr.Interval.around(a, radius)
            return x

        # only the last positional argument (the data) gets the box: parameters stay points
        args = args[:-1] + (jax.tree_util.tree_map(box, args[-1]),)
    return args


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _console():
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=max(c.width, 200))  # a pipe or file: no wrapping


def _emit_json(obj: Any, dest: str | None) -> None:
    if dest is None:
        return
    s = json.dumps(obj, indent=2)
    if dest == "-":
        print(s)
    else:
        with open(dest, "w") as fh:
            fh.write(s + "\n")


def _status(console: Any, what: str):
    return console.status(what, spinner="dots")


def cmd_analyze(ns: argparse.Namespace) -> int:
    import jax

    import jaxerr
    from jaxerr.report import _f, _g

    fn, mod = load_target(ns.function)
    args = make_args(ns.function.rsplit(":", 1)[1], mod, ns.input, ns.radius)
    console = _console()
    with _status(console, "analysing (tracing and compiling the analysis)..."):
        extra = {} if ns.refine_budget is None else {"refine_budget": ns.refine_budget}
        if ns.analysis_dtype is not None:
            extra["analysis_dtype"] = ns.analysis_dtype
        try:
            g = jaxerr.bound(fn, ns.precision, accumulation=ns.accumulation, domain=ns.domain,
                             warn=False, **extra)
        except ValueError as e:
            raise SystemExit(f"jaxerr analyze: {e}") from None
        out = g(*args)
    leaves = jax.tree_util.tree_leaves(out, is_leaf=lambda x: isinstance(x, jaxerr.Bound))
    rows = []
    for k, b in enumerate(leaves):
        rows.append({
            "output": k, "shape": list(np.shape(b.value)),
            "abs_err": _f(np.max(np.asarray(b.abs_err, np.float64))),
            "rel_err": _f(np.max(np.asarray(b.rel_err, np.float64))),
            "lo": _f(np.min(np.asarray(b.lo, np.float64))),
            "hi": _f(np.max(np.asarray(b.hi, np.float64))),
            "bits": _f(np.min(np.asarray(b.bits(), np.float64))),
            "diagnostics": b.diagnostics.fired(),
        })
    if ns.json == "-":
        _emit_json({"precision": ns.precision or "as written", "outputs": rows}, "-")
        return 0
    from rich.table import Table

    title = (f"jaxerr analyze {ns.function}: precision={ns.precision or 'as written'}, "
             f"accumulation={ns.accumulation}, domain={ns.domain}"
             + (f", box radius {ns.radius:g}" if ns.radius else ""))
    t = Table(title=title, min_width=len(title))  # the title on one line
    for col in ("output", "shape", "exact range", "max abs_err", "max rel_err", "min correct bits"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["output"]), str(tuple(r["shape"])),
                  f"[{_g(_num(r['lo']))}, {_g(_num(r['hi']))}]", _g(_num(r["abs_err"])),
                  _g(_num(r["rel_err"])), _g(_num(r["bits"])))
    console.print(t)
    for r in rows:
        for m in r["diagnostics"]:
            console.print(f"[yellow]output {r['output']}:[/yellow] {m}", markup=True)
    _emit_json({"precision": ns.precision or "as written", "outputs": rows}, ns.json)
    return 0


def _num(x: Any) -> float:
    return float(x)


def cmd_report(ns: argparse.Namespace) -> int:
    import jaxerr

    fn, mod = load_target(ns.function)
    args = make_args(ns.function.rsplit(":", 1)[1], mod, ns.input, ns.radius)
    console = _console()
    with _status(console, "analysing every equation (created / inherited error)..."):
        rep = jaxerr.report(fn, ns.precision, accumulation=ns.accumulation)(*args)
    if ns.target_ is not None:
        from jaxerr.tune import Target, bits_needed

        tgt = Target.parse(ns.target_)
        names = list(dict.fromkeys(s.name for s in rep.stages))
        bits = bits_needed(fn, args, {}, ns.precision, names, tgt, accumulation=ns.accumulation,
                           progress=True)
        rep.target = tgt.describe()
        for s in rep.stages:
            s.bits = bits.get(s.name)
    if ns.json != "-":
        rep.print(console=console)
        if ns.equations:
            rep.print("equations", console=console)
    if ns.plot:
        rep.plot(ns.plot)
        if ns.json != "-":
            console.print(f"plot saved to {ns.plot}")
    _emit_json(rep.to_dict(), ns.json)
    return 0


def cmd_tune(ns: argparse.Namespace) -> int:
    import jaxerr

    fn, mod = load_target(ns.function)
    args = make_args(ns.function.rsplit(":", 1)[1], mod, ns.input, ns.radius)
    console = _console()
    res = jaxerr.tune(fn, args, target=ns.target_, candidates=ns.candidates.split(","),
                      accumulation=ns.accumulation, progress=ns.json != "-")
    if ns.json != "-":
        res.print(console=console)
        console.print(f"saving: {100 * res.saving:.1f}% of the bits x operations of all-{res.baseline}; "
                      f"verified by a final analysis ({res.analyses} analyses in all)")
    _emit_json(res.to_dict(), ns.json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxerr`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        from jaxerr import demo

        return demo.main(argv[1:], prog="jaxerr demo")
    ap = build_parser()
    ns = ap.parse_args(argv)
    if ns.command is None:
        ap.print_help()
        return 0
    if ns.command in ("analyze", "analyse"):
        return cmd_analyze(ns)
    if ns.command == "report":
        return cmd_report(ns)
    if ns.command == "tune":
        return cmd_tune(ns)
    ap.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
