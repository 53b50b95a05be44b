"""A worked demonstration: guaranteed error bounds for a small Flax MLP.

Run it with ``python -m jaxerr.demo`` (``--help`` for the options). It builds a
64 -> 32 -> 32 -> 10 Flax ``linen`` MLP (relu, gelu, logits out) with deterministic
weights drawn from ``jax.random.PRNGKey(0)``, feeds it a smooth synthetic 8x8
"image", and prints

* for each output logit and each format: the value computed at the input, an
  enclosure ``[lo, hi]`` of the exact real result, ``abs_err``, ``rel_err`` and
  the number of correct bits;
* the same over an input box ``x +- RADIUS`` (default ``1e-3``) in bfloat16;
* one line per analysis with the largest ``abs_err`` and the analysis time.

By default the analysis runs op by op (``jit=False``): XLA compiles each small
operation once and the compilations are shared between formats, which starts far
faster than compiling one large program per format. ``--jit`` uses the compiled
analysis instead. The times printed exclude compilation (they are of a second,
warm call).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxerr

__all__ = ["MLP", "build", "analyse", "main"]

_DEFAULT_PRECISIONS = ("none", "bfloat16", "float16")


class MLP(nn.Module):
    """64 -> 32 -> 32 -> 10: Dense, relu, Dense, gelu (tanh form), Dense, optional softmax."""

    hidden: int = 32
    classes: int = 10
    softmax: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.gelu(nn.Dense(self.hidden)(x))
        x = nn.Dense(self.classes)(x)
        return jax.nn.softmax(x) if self.softmax else x


def _image() -> np.ndarray:
    """A smooth synthetic 8x8 'image' in [0, 1] (a blob on a gentle gradient), flattened."""
    i, j = np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij")
    blob = np.exp(-((i - 3.2) ** 2 + (j - 4.5) ** 2) / 6.0)
    img = 0.75 * blob + 0.25 * (i + j) / 14.0
    return img.reshape(-1).astype(np.float32)


def build(softmax: bool = False) -> tuple[MLP, Any, jax.Array]:
    """The demo model, its variables and its input point.

    Weights come from one ``jax.random.normal`` draw with ``PRNGKey(0)``: kernels
    with variance ``1/fan_in`` (LeCun), the last one 4x larger so that the logits
    spread over a few units as in a trained classifier, biases of size ~0.1.
    """
    model = MLP(softmax=softmax)
    x = jnp.asarray(_image())
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    sizes = [int(np.prod(s.shape)) for _, s in leaves]
    draws = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (sum(sizes),), jnp.float32))
    arrays = []
    for (path, s), start in zip(leaves, np.cumsum([0] + sizes[:-1])):
        z = draws[start : start + int(np.prod(s.shape))].reshape(s.shape)
        names = [str(getattr(p, "key", p)) for p in path]
        if names[-1] == "kernel":
            gain = 4.0 if names[-2] == "Dense_2" else 1.0
            z = z * (gain / np.sqrt(s.shape[0]))
        else:
            z = 0.1 * z
        arrays.append(jnp.asarray(z, s.dtype))
    return model, jax.tree_util.tree_unflatten(treedef, arrays), x


def _precision_arg(spec: str) -> str | None:
    s = spec.strip().lower()
    if s in ("none", "as-written", "as_written", "written"):
        return None
    if s not in jaxerr.FORMATS:
        raise argparse.ArgumentTypeError(
            f"unknown precision {spec!r}; choose 'none' (as written) or one of "
            + ", ".join(jaxerr.FORMATS)
        )
    return s


_SHORT = {"float64": "f64", "float32": "f32", "bfloat16": "bf16", "float16": "f16",
          "float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2"}


def _label(precision: str | None, dtype: Any = np.float32) -> str:
    """Short name of an analysis format; ``f32*`` marks 'as written' (float32 here)."""
    if precision is None:
        return _SHORT.get(np.dtype(dtype).name, np.dtype(dtype).name) + "*"
    return _SHORT.get(precision, precision)


def analyse(model, variables, arg, precision, accumulation="auto", jit=False):
    """Run ``jaxerr.bound(model.apply, ...)`` twice; return (Bound, first_s, warm_s)."""
    f = jaxerr.bound(model.apply, precision, accumulation=accumulation, jit=jit, warn=False)
    t0 = time.perf_counter()
    out = jax.block_until_ready(f(variables, arg))
    t1 = time.perf_counter()
    out = jax.block_until_ready(f(variables, arg))
    t2 = time.perf_counter()
    return out, t1 - t0, t2 - t1


# ---------------------------------------------------------------------------
# Output: rich tables when available, plain text otherwise
# ---------------------------------------------------------------------------


class _Printer:
    def __init__(self, plain: bool = False):
        self.console = None
        if not plain:
            try:
                from rich.console import Console
            except ImportError:  # pragma: no cover - rich comes with flax
                pass
            else:
                self.console = Console(highlight=False)

    def line(self, text: str = "") -> None:
        if self.console is not None:
            self.console.print(text, markup=False, soft_wrap=True)
        else:
            print(text)

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]],
              section_ends: Sequence[bool] = ()) -> None:
        ends = list(section_ends) + [False] * (len(rows) - len(section_ends))
        if self.console is not None:
            from rich import box
            from rich.markup import escape
            from rich.table import Table

            t = Table(title=escape(title), title_justify="left", box=box.SIMPLE_HEAD,
                      pad_edge=False, show_edge=False, title_style="bold")
            for k, h in enumerate(headers):
                t.add_column(escape(h), justify="left" if k == 0 else "right", no_wrap=True)
            for r, e in zip(rows, ends):
                t.add_row(*(escape(c) for c in r), end_section=e)
            self.console.print(t)
            return
        widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(headers)]

        def fmt(cells):
            return "  ".join(
                c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        print(title)
        print(fmt(headers))
        print("  ".join("-" * w for w in widths))
        for r, e in zip(rows, ends):
            print(fmt(r))
            if e:
                print("  ".join("-" * w for w in widths))


def _g(x: float, digits: int = 5) -> str:
    return f"{float(x):.{digits}g}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:7.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:7.1f} us"


def _e(x: float) -> str:
    x = float(x)
    return "inf" if not np.isfinite(x) else f"{x:.2e}"


def _bits(b: float) -> str:
    return f"{float(b):.1f}"


def _enclosure(lo: float, hi: float, digits: int = 5) -> str:
    return f"[{_g(lo, digits)}, {_g(hi, digits)}]"


def _fired(out) -> list[str]:
    leaves = jax.tree_util.tree_leaves(out, is_leaf=lambda b: isinstance(b, jaxerr.Bound))
    return leaves[0].diagnostics.fired() if leaves else []


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def _parser(prog: str = "python -m jaxerr.demo") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Guaranteed floating-point error bounds for a small Flax MLP.",
    )
    p.add_argument(
        "--precision", action="append", type=_precision_arg, metavar="FMT",
        help="format to analyse in (repeatable): 'none' = as written (float32), or one of "
        + ", ".join(jaxerr.FORMATS) + f". Default: {' '.join(_DEFAULT_PRECISIONS)}.",
    )
    p.add_argument("--box", type=float, default=1e-3, metavar="RADIUS",
                   help="radius of the input box x +- RADIUS (default 1e-3; 0 skips the box table)")
    p.add_argument("--box-precision", type=_precision_arg, default="bfloat16", metavar="FMT",
                   help="format of the box analysis (default bfloat16)")
    p.add_argument("--accumulation", default="auto",
                   help="summation model: auto, recursive, pairwise, blocked:B, wide:float32")
    p.add_argument("--softmax", action="store_true", help="end the MLP with a softmax")
    p.add_argument("--jit", action="store_true",
                   help="compile each analysis into one XLA program (slower start, faster calls)")
    p.add_argument("--plain", action="store_true", help="plain-text output even if rich is present")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m jaxerr.demo") -> int:
    """Entry point of ``python -m jaxerr.demo`` (and ``jaxerr demo``); returns the exit status."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    try:
        jaxerr.Accumulation.parse(args.accumulation)
    except Exception as exc:  # report a bad option as argparse does
        parser.error(f"--accumulation: {exc}")
    precisions = args.precision or [_precision_arg(s) for s in _DEFAULT_PRECISIONS]
    if "float64" in precisions + [args.box_precision] and not jax.config.read("jax_enable_x64"):
        parser.error("precision float64 needs JAX_ENABLE_X64=1 in the environment")
    out = _Printer(plain=args.plain)

    model, variables, x = build(softmax=args.softmax)
    n_params = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(variables))
    out.line(
        f"jaxerr {jaxerr.__version__} demo: Flax MLP 64->32->32->10 (relu, gelu"
        f"{', softmax' if args.softmax else ''}), {n_params} params, input x = 8x8 image"
    )
    out.line(
        "exact = real arithmetic on the float32 weights and x. f32* = as written; "
        "bf16, f16 = all in that format"
    )

    summary: list[str] = []

    def note(label: str, res, first: float, warm: float) -> None:
        worst = float(np.max(np.asarray(res.abs_err)))
        first_what = "compile" if args.jit else "first call"
        summary.append(
            f"{label:<14} max abs_err {_e(worst):>8}   analysis {_ms(warm)}"
            f"  ({first_what} {first:.1f} s)"
        )
        for msg in _fired(res):
            summary.append(f"{'':<14} diagnostic: {msg}")

    # ---- point input, one section per format ----
    rows, ends = [], []
    for precision in precisions:
        res, first, warm = analyse(model, variables, x, precision, args.accumulation, args.jit)
        label = _label(precision, x.dtype)
        note(f"{label} at x", res, first, warm)
        value, lo, hi = (np.asarray(a, np.float64) for a in (res.value, res.lo, res.hi))
        ae, re, bits = (np.asarray(a, np.float64) for a in (res.abs_err, res.rel_err, res.bits()))
        for i in range(value.shape[-1]):
            rows.append([label, str(i), _g(value[i]), _enclosure(lo[i], hi[i]),
                         _e(ae[i]), _e(re[i]), _bits(bits[i])])
            ends.append(False)
        ends[-1] = True
    ends[-1] = False
    out.line()
    out.table("Bounds at the input point x",
              ["fmt", "out", "value", "exact in [lo, hi]", "abs_err", "rel_err", "bits"],
              rows, ends)

    # ---- input box ----
    if args.box > 0:
        box = jaxerr.Interval.around(x, args.box)
        res, first, warm = analyse(model, variables, box, args.box_precision, args.accumulation,
                                   args.jit)
        label = _label(args.box_precision, x.dtype)
        note(f"{label} on box", res, first, warm)
        value, lo, hi, clo, chi = (
            np.asarray(a, np.float64)
            for a in (res.value, res.lo, res.hi, res.computed_lo, res.computed_hi)
        )
        ae, bits = np.asarray(res.abs_err, np.float64), np.asarray(res.bits(), np.float64)
        rows = [
            [str(i), _g(value[i], 4), _enclosure(lo[i], hi[i], 4), _enclosure(clo[i], chi[i], 4),
             _e(ae[i]), _bits(bits[i])]
            for i in range(value.shape[-1])
        ]
        out.line()
        out.table(f"Over the box x +- {args.box:g} in {label}: every input in the box",
                  ["out", "centre", "exact range [lo, hi]", "computed range", "abs_err", "bits"],
                  rows)

    out.line()
    out.line(f"accumulation={args.accumulation}; analysis "
             + ("compiled (jit)" if args.jit else "op by op (jit=False)")
             + "; times of a warm call, compilation excluded")
    for s in summary:
        out.line(s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
