"""Random JAX programs and random input boxes for fuzzing jaxerr's soundness.

A *program* is a small random DAG over the primitives jaxerr supports
(``jaxerr.interval_rules``): elementwise arithmetic and transcendental functions,
comparisons and selects, reductions, ``dot_general``, structural operations,
conversions, ``dynamic_slice``/``gather``/``pad``/``concatenate``... over random
shapes that broadcast against each other. It is described by a JSON-able
:class:`Spec` (so a failing case can be written to a file and replayed) and turned
into a Python function with :func:`build`.

The generators take a *draw source* with ``integer(a, b)``, ``choice(seq)`` and
``uniform(a, b)``: :class:`NumpyDraw` (the campaign script, reproducible by seed) or
the hypothesis strategies :func:`specs` / :func:`cases` (shrinking for free).

:func:`run_case` analyses one program under one configuration (format,
accumulation, domain) over a *batch* of input sets with a single compilation
(``jax.jit(jax.vmap(bound(f)))``), simulates every batch element at several points
of its box with the independent simulator (``tests/_simulator.py``, rounding
every operation, under each summation order the accumulation model allows) and
returns every violation of

    |simulated - exact| <= abs_err,   lo <= exact <= hi,
    computed_lo <= simulated <= computed_hi.

A violation found against the float64 reference is re-checked with mpmath
(50 digits) before it is reported, so a reference rounding error is never
reported as a jaxerr bug.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import mpmath
import numpy as np

import jaxerr
from jaxerr._bound import INTERNAL

try:
    import _simulator as S
    from _soundness import sim_models
except ImportError:  # pragma: no cover
    from tests import _simulator as S
    from tests._soundness import sim_models

# ---------------------------------------------------------------------------
# Draw sources
# ---------------------------------------------------------------------------


class NumpyDraw:
    """Draw source backed by a NumPy generator (reproducible from its seed)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def integer(self, a: int, b: int) -> int:
        return int(self.rng.integers(a, b + 1))

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[int(self.rng.integers(0, len(seq)))]

    def uniform(self, a: float, b: float) -> float:
        return float(self.rng.uniform(a, b))


class HypothesisDraw:
    """Draw source over a hypothesis ``data.draw`` (shrinks towards small programs)."""

    def __init__(self, draw: Any):
        from hypothesis import strategies as st

        self.draw, self.st = draw, st

    def integer(self, a: int, b: int) -> int:
        return self.draw(self.st.integers(a, b))

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.draw(self.st.integers(0, len(seq) - 1))]

    def uniform(self, a: float, b: float) -> float:
        return self.draw(self.st.floats(a, b, allow_nan=False, allow_infinity=False))


# ---------------------------------------------------------------------------
# Programs
# ---------------------------------------------------------------------------

# constants a program may use: representable and not, tiny and huge
CONSTS = [0.5, 2.0, 3.0, -1.5, 0.1, 1.0 / 3.0, 1e-3, 1e3, 7.0, 1e-30, 1e30, 0.0]

# op name -> arity (operands are earlier nodes); params drawn in _draw_params
UNARY = [
    "neg", "abs", "square", "self_mul", "relu", "sign_mul", "floor", "ceil", "round",
    "tanh", "logistic", "erf", "erfc", "exp", "exp2", "expm1", "log", "log_safe", "log1p",
    "log1p_safe", "sqrt", "sqrt_safe", "rsqrt_safe", "ipow", "pow_const", "clip", "clamp",
    "stop_gradient", "astype", "mul_c", "add_c", "div_c", "c_div", "rev", "transpose",
    "sum", "mean", "max_r", "min_r", "argmax", "argmin", "softmax", "logsumexp",
    "normalize", "matmul_c", "concat_slice", "pad_slice", "reshape", "gather", "dyn_slice",
    "cumulative_sum", "where_pos", "is_finite", "gelu",
]
BINARY = [
    "add", "sub", "mul", "div", "div_safe", "max", "min", "select_gt", "select_le",
    "pow_safe", "cancel", "matmul", "dot_batch", "dyn_update", "hypot_like", "where_eq",
]
TERNARY = ["select3", "fma_like"]
OPS = UNARY + BINARY + TERNARY


@dataclasses.dataclass
class Spec:
    """A random program: input shapes, nodes ``(op, operand indices, params)`` and
    output node indices. Node ``i < len(inputs)`` is input ``i``."""

    inputs: list[list[int]]
    nodes: list[tuple[str, list[int], dict[str, Any]]]
    outputs: list[int]

    def to_json(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "nodes": [list(n) for n in self.nodes], "outputs": self.outputs}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Spec:
        return cls([list(s) for s in d["inputs"]], [(n[0], list(n[1]), dict(n[2])) for n in d["nodes"]],
                   list(d["outputs"]))

    def __str__(self) -> str:
        k = len(self.inputs)
        lines = [f"inputs: {self.inputs}"]
        for i, (op, args, params) in enumerate(self.nodes):
            lines.append(f"  v{k + i} = {op}({', '.join('v' + str(a) for a in args)}{', ' if params else ''}"
                         f"{', '.join(f'{p}={v!r}' for p, v in params.items())})")
        lines.append(f"outputs: {['v' + str(o) for o in self.outputs]}")
        return "\n".join(lines)


def _bshape(*shapes: Sequence[int]) -> list[int]:
    return list(np.broadcast_shapes(*[tuple(s) for s in shapes]))


def _draw_params(d: Any, op: str, shapes: list[list[int]]) -> dict[str, Any] | None:
    """Parameters of ``op`` for operands of these shapes; None if the op does not apply."""
    s0 = shapes[0]
    r = len(s0)
    if op in ("ipow",):
        return {"n": d.choice([-3, -2, -1, 2, 3, 4, 5])}
    if op == "pow_const":
        return {"p": d.choice([0.5, 0.7, 1.5, 2.5, -0.5, 3.0])}
    if op in ("clip", "clamp"):
        a = d.choice([-2.0, -0.5, 0.0, 0.1])
        return {"lo": a, "hi": a + d.choice([0.3, 1.0, 4.0])}
    if op == "astype":
        return {"dtype": d.choice(["bfloat16", "float16"])}
    if op in ("mul_c", "add_c", "div_c", "c_div", "fma_like"):
        return {"c": d.choice(CONSTS)}
    if op in ("rev", "concat_slice", "pad_slice", "cumulative_sum", "sum", "mean", "max_r", "min_r",
              "argmax", "argmin", "softmax", "logsumexp", "normalize", "gather", "dyn_slice"):
        if r == 0:
            return None
        ax = d.integer(0, r - 1)
        p: dict[str, Any] = {"axis": ax}
        if op == "gather":
            p["seed"] = d.integer(0, 10**6)
        if op == "pad_slice":
            p["lo"], p["hi"], p["c"] = d.integer(0, 2), d.integer(0, 2), d.choice([0.0, 0.5, -3.0])
        if op == "cumulative_sum":
            return None  # cumsum has no jaxerr rule: exercised only as an unsupported primitive
        return p
    if op == "transpose":
        return {} if (r == 2 and s0[0] == s0[1]) or r < 2 else None
    if op == "matmul_c":
        if r == 0:
            return None
        return {"seed": d.integer(0, 10**6), "scale": d.choice([0.3, 1.0, 3.0])}
    if op == "reshape":
        return {} if r >= 1 else None
    if op == "matmul":
        # x @ y with y square over x's last axis: shapes (.., n) and (n, n)
        if r == 0 or len(shapes[1]) != 2 or shapes[1][0] != shapes[1][1] or shapes[1][0] != s0[-1]:
            return None
        return {}
    if op == "dot_batch":
        # contract the last axis of two same-shape operands (a batched dot)
        if r == 0 or list(shapes[0]) != list(shapes[1]):
            return None
        return {}
    if op == "dyn_update":
        if r == 0 or list(shapes[0]) != list(shapes[1]) or s0[0] < 2:
            return None
        return {"axis": 0}
    if op == "select3":
        return {}
    return {}


def _node_shape(op: str, shapes: list[list[int]], params: dict[str, Any]) -> list[int]:
    s0 = list(shapes[0])
    if op in BINARY + TERNARY and op not in ("matmul", "dot_batch", "dyn_update"):
        return _bshape(*shapes)
    if op == "transpose":
        return s0[::-1]
    if op == "dot_batch":
        return s0[:-1] + [1]
    if op in ("sum", "mean", "max_r", "min_r", "argmax", "argmin", "logsumexp"):
        out = list(s0)
        out[params["axis"]] = 1
        return out
    return s0


def draw_spec(d: Any, max_nodes: int = 8) -> Spec:
    """A random program (see :class:`Spec`)."""
    rank = d.choice([0, 1, 1, 2, 2, 2])
    base = [d.choice([1, 2, 3, 4, 5, 8]) for _ in range(rank)]
    if rank == 2 and d.integer(0, 2) == 0:
        base[1] = base[0]  # square: transposes and matmuls by a node
    n_in = d.integer(1, 3)
    inputs = []
    for _ in range(n_in):
        # broadcasting: some axes of an input may be 1
        inputs.append([1 if (n > 1 and d.integer(0, 4) == 0) else n for n in base])
    if rank == 2 and d.integer(0, 3) == 0:
        n = base[1]
        inputs.append([n, n])  # a weight-like square matrix
    shapes = [list(s) for s in inputs]
    nodes: list[tuple[str, list[int], dict[str, Any]]] = []
    n_nodes = d.integer(1, max_nodes)
    tries = 0
    while len(nodes) < n_nodes and tries < 20 * max_nodes:
        tries += 1
        op = d.choice(OPS)
        arity = 1 if op in UNARY else 2 if op in BINARY else 3
        k = len(shapes)
        # prefer recent nodes: deeper chains
        args = [max(0, k - 1 - d.integer(0, min(k - 1, 3))) if d.integer(0, 2) else d.integer(0, k - 1)
                for _ in range(arity)]
        ash = [shapes[a] for a in args]
        try:
            if arity > 1 and op not in ("matmul",):
                _bshape(*ash)
        except ValueError:
            continue
        params = _draw_params(d, op, ash)
        if params is None:
            continue
        nodes.append((op, args, params))
        shapes.append(_node_shape(op, ash, params))
    total = len(shapes)
    outputs = [total - 1]
    if total > n_in + 1 and d.integer(0, 2) == 0:
        o = d.integer(n_in, total - 2)
        if o not in outputs:
            outputs.append(o)
    return Spec(inputs, nodes, outputs)


def _const_matrix(seed: int, n: int, scale: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, n)) * scale / math.sqrt(n)).astype(np.float32)


def _apply(op: str, xs: list[Any], p: dict[str, Any]) -> Any:
    x = xs[0]
    f32 = jnp.float32
    if op == "id":
        return x
    if op == "neg":
        return -x
    if op == "abs":
        return jnp.abs(x)
    if op == "square":
        return jnp.square(x)
    if op == "self_mul":
        return x * x
    if op == "relu":
        return jax.nn.relu(x)
    if op == "sign_mul":
        return jnp.sign(x) * x
    if op in ("floor", "ceil", "round"):
        return getattr(jnp, op)(x)
    if op == "tanh":
        return jnp.tanh(x)
    if op == "logistic":
        return jax.nn.sigmoid(x)
    if op == "erf":
        return jax.scipy.special.erf(x)
    if op == "erfc":
        return jax.scipy.special.erfc(x)
    if op in ("exp", "exp2", "expm1", "log", "log1p", "sqrt"):
        return getattr(jnp, op)(x)
    if op == "log_safe":
        return jnp.log(jnp.abs(x) + f32(0.5))
    if op == "log1p_safe":
        return jnp.log1p(jnp.abs(x))
    if op == "sqrt_safe":
        return jnp.sqrt(jnp.abs(x))
    if op == "rsqrt_safe":
        return jax.lax.rsqrt(jnp.abs(x) + f32(0.25))
    if op == "ipow":
        return jax.lax.integer_pow(x, p["n"])
    if op == "pow_const":
        return jnp.power(jnp.abs(x) + f32(0.125), f32(p["p"]))
    if op == "clip":
        return jnp.clip(x, f32(p["lo"]), f32(p["hi"]))
    if op == "clamp":
        return jax.lax.clamp(f32(p["lo"]), x, f32(p["hi"]))
    if op == "stop_gradient":
        return jax.lax.stop_gradient(x)
    if op == "astype":
        return x.astype(jnp.dtype(p["dtype"])).astype(f32)
    if op == "mul_c":
        return x * f32(p["c"])
    if op == "add_c":
        return x + f32(p["c"])
    if op == "div_c":
        return x / f32(p["c"] if p["c"] != 0 else 3.0)
    if op == "c_div":
        return f32(p["c"]) / (jnp.abs(x) + f32(0.5))
    if op == "rev":
        return jnp.flip(x, p["axis"])
    if op == "transpose":
        return x.T
    if op == "sum":
        return jnp.sum(x, axis=p["axis"], keepdims=True)
    if op == "mean":
        return jnp.mean(x, axis=p["axis"], keepdims=True)
    if op == "max_r":
        return jnp.max(x, axis=p["axis"], keepdims=True)
    if op == "min_r":
        return jnp.min(x, axis=p["axis"], keepdims=True)
    if op in ("argmax", "argmin"):
        return getattr(jnp, op)(x, axis=p["axis"], keepdims=True).astype(f32)
    if op == "softmax":
        return jax.nn.softmax(x, axis=p["axis"])
    if op == "logsumexp":
        m = jax.lax.stop_gradient(jnp.max(x, axis=p["axis"], keepdims=True))
        return jnp.log(jnp.sum(jnp.exp(x - m), axis=p["axis"], keepdims=True)) + m
    if op == "normalize":
        mu = jnp.mean(x, axis=p["axis"], keepdims=True)
        var = jnp.mean(jnp.square(x - mu), axis=p["axis"], keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + f32(1e-5))
    if op == "matmul_c":
        n = x.shape[-1]
        return x @ jnp.asarray(_const_matrix(p["seed"], n, p["scale"]))
    if op == "concat_slice":
        ax = p["axis"]
        n = x.shape[ax]
        y = jnp.concatenate([x, x * f32(2.0)], axis=ax)
        return jax.lax.slice_in_dim(y, n // 2, n // 2 + n, axis=ax)
    if op == "pad_slice":
        ax = p["axis"]
        cfg = [(0, 0, 0)] * x.ndim
        cfg[ax] = (p["lo"], p["hi"], 0)
        y = jax.lax.pad(x, f32(p["c"]), cfg) * f32(1.5)
        return jax.lax.slice_in_dim(y, p["lo"], p["lo"] + x.shape[ax], axis=ax) + \
            jnp.sum(y, axis=ax, keepdims=True)
    if op == "reshape":
        return jnp.reshape(jnp.reshape(x, (-1,)) * f32(0.75), x.shape)
    if op == "gather":
        ax = p["axis"]
        n = x.shape[ax]
        idx = np.random.default_rng(p["seed"]).integers(0, n, size=n)
        return jnp.take(x, jnp.asarray(idx), axis=ax)
    if op == "dyn_slice":
        ax = p["axis"]
        n = x.shape[ax]
        i = jnp.argmax(jnp.sum(x, axis=tuple(a for a in range(x.ndim) if a != ax)))
        y = jax.lax.dynamic_slice_in_dim(x, i - 1, max(1, n // 2), axis=ax)
        return jnp.sum(y, axis=ax, keepdims=True) + x
    if op == "where_pos":
        return jnp.where(x >= 0, x * f32(0.5), jnp.exp(jnp.minimum(x, f32(0.0))) - f32(1.0))
    if op == "is_finite":
        return jnp.where(jnp.isfinite(x), x, f32(0.0))
    if op == "gelu":
        return jax.nn.gelu(x, approximate=True)
    # binary
    y = xs[1] if len(xs) > 1 else None
    if op == "add":
        return x + y
    if op == "sub":
        return x - y
    if op == "mul":
        return x * y
    if op == "div":
        return x / y
    if op == "div_safe":
        return x / (jnp.abs(y) + f32(0.5))
    if op == "max":
        return jnp.maximum(x, y)
    if op == "min":
        return jnp.minimum(x, y)
    if op == "select_gt":
        return jnp.where(x > y, x, y * f32(2.0))
    if op == "select_le":
        return jnp.where(x <= y, jnp.tanh(x), y)
    if op == "where_eq":
        return jnp.where((x == y) | (x != x), x, x - y)
    if op == "pow_safe":
        return jnp.power(jnp.abs(x) + f32(0.5), jnp.clip(y, f32(-3.0), f32(3.0)))
    if op == "cancel":
        return (x + y) - x
    if op == "hypot_like":
        return jnp.sqrt(x * x + y * y)
    if op == "matmul":
        return x @ y
    if op == "dot_batch":
        return jnp.sum(x * y, axis=-1, keepdims=True) + jnp.einsum("...i,...i->...", x, y)[..., None]
    if op == "dyn_update":
        i = jnp.argmin(jnp.sum(y, axis=tuple(range(1, y.ndim))))
        return jax.lax.dynamic_update_slice_in_dim(x, y[:1] * f32(3.0), i, axis=0)
    z = xs[2] if len(xs) > 2 else None
    if op == "select3":
        return jnp.where(x > f32(0.0), y, z)
    if op == "fma_like":
        return x * y + z * f32(p["c"])
    raise ValueError(f"unknown op {op!r}")


def build(spec: Spec):
    """The Python function of a program: ``f(*inputs) -> tuple of outputs``."""

    def f(*args):
        vals = list(args)
        for op, a, params in spec.nodes:
            vals.append(_apply(op, [vals[i] for i in a], params))
        return tuple(vals[o] for o in spec.outputs)

    return f


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

#: kinds of input set: the centres' magnitude and the box radius
KINDS = ["unit", "pos", "tiny", "huge", "fmt_subnormal", "cancel", "mixed", "zeros", "near_overflow"]


def _fmt_of(precision: Any) -> Any:
    return jaxerr.as_format(precision) if precision is not None else jaxerr.FORMATS["float32"]


def _centres(kind: str, full: tuple, fmt: Any, rng: np.random.Generator) -> np.ndarray:
    big = min(float(fmt.max_finite), 3e38)
    tiny = 2.0**fmt.emin
    sign = np.where(rng.random(full) < 0.5, -1.0, 1.0)
    if kind == "unit":
        return rng.uniform(-2, 2, full)
    if kind == "pos":
        return rng.uniform(0.05, 4, full)
    if kind == "tiny":
        return sign * 10.0 ** rng.uniform(-20, -4, full)
    if kind == "huge":
        return sign * 10.0 ** rng.uniform(2, math.log10(big), full)
    if kind == "near_overflow":
        return sign * big * rng.uniform(0.05, 1.0, full)
    if kind == "fmt_subnormal":
        # the format's subnormal range; for formats sharing float32's exponent range
        # (whose subnormals XLA flushes and a traced input cannot show) just above it
        lo_e = -fmt.precision if fmt.emin > -126 else 0
        return sign * tiny * 2.0 ** rng.uniform(lo_e, 4, full)
    if kind == "cancel":
        base = rng.choice([1.0, -7.0, 100.0, 3.0])
        return base + rng.uniform(-1, 1, full) * 2.0 ** -rng.integers(6, 24, full).astype(float)
    if kind == "zeros":
        return np.where(rng.random(full) < 0.5, 0.0, rng.uniform(-1, 1, full))
    return sign * 10.0 ** rng.uniform(-8, 8, full)  # mixed scales and signs


def draw_inputs(d: Any, shapes: list[list[int]], batch: int, boxes: bool, precision: Any,
                f32_subnormals: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """``batch`` input sets per input: a list of (lo, hi) float32 arrays of shape
    ``(batch, *shape)``. Each batch element draws its own kind of centres (unit, tiny,
    huge, the format's subnormals, cancellation-prone, zeros, mixed scales, near
    overflow) and of radius; ``boxes=False`` gives points (lo == hi)."""
    fmt = _fmt_of(precision)
    out = []
    rng = np.random.default_rng(d.integer(0, 2**31 - 1))
    for shp in shapes:
        c = np.empty((batch, *shp))
        r = np.zeros((batch, *shp))
        for b in range(batch):
            kind = KINDS[rng.integers(len(KINDS))] if batch > 1 else d.choice(KINDS)
            cb = _centres(kind, tuple(shp), fmt, rng)
            if f32_subnormals and rng.random() < 0.5:
                m = rng.random(cb.shape) < 0.3
                cb = np.where(m, np.sign(cb + 0.5) * 10.0 ** rng.uniform(-44, -38, cb.shape), cb)
            cb = cb.astype(np.float32).astype(np.float64)
            c[b] = cb
            if boxes:
                rk = rng.integers(5)
                if rk == 0:  # relative
                    r[b] = np.abs(cb) * 2.0 ** -rng.uniform(1, 24, cb.shape)
                elif rk == 1:  # absolute
                    r[b] = 10.0 ** rng.uniform(-7, 0)
                elif rk == 2:  # crossing zero
                    r[b] = np.abs(cb) * rng.uniform(1.0, 2.0, cb.shape) + 1e-30
                elif rk == 3:  # some points, some boxes
                    r[b] = np.where(rng.random(cb.shape) < 0.5, 0.0, np.abs(cb) * 1e-3)
                else:  # one end exactly 0 (where sqrt, log, division change behaviour)
                    r[b] = np.abs(cb)
        with np.errstate(over="ignore", invalid="ignore"):
            lo = np.maximum(c - r, -3.4e38).astype(np.float32)
            hi = np.minimum(c + r, 3.4e38).astype(np.float32)
        lo = np.minimum(lo, hi)
        out.append((lo, hi))
    return out


# ---------------------------------------------------------------------------
# One case: one compile, a batch of input sets
# ---------------------------------------------------------------------------

ACCUMULATIONS = ["recursive", "pairwise", "blocked:8", "wide:float32", "auto"]


def domains() -> list[str]:
    from jaxerr import _bound

    return list(_bound.DOMAINS)


def precisions() -> list[Any]:
    """``None`` (as written, float32) and every format of ``jaxerr.FORMATS``."""
    return [None, *jaxerr.FORMATS]


@dataclasses.dataclass
class Config:
    precision: Any
    accumulation: str
    domain: str
    boxes: bool

    def label(self) -> str:
        return f"{self.precision}/{self.accumulation}/{self.domain}/{'box' if self.boxes else 'point'}"


def needs_x64(precision: Any) -> bool:
    return precision is not None and _fmt_of(precision).precision > 24


@contextlib.contextmanager
def _x64(on: bool):
    if not on:
        yield
        return
    prev = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", prev)


def _analyse(f, config: Config, inputs: list[tuple[np.ndarray, np.ndarray]], batched: bool):
    kw = dict(accumulation=config.accumulation, domain=config.domain, warn=False)
    if config.boxes:
        args = [jaxerr.Interval(jnp.asarray(lo), jnp.asarray(hi)) for lo, hi in inputs]
    else:
        args = [jnp.asarray(lo) for lo, _ in inputs]
    if batched:
        g = jax.jit(jax.vmap(jaxerr.bound(f, config.precision, jit=False, **kw)))
        out = g(*args)
    else:
        # concrete, one input set: bound() compiles itself and sees subnormals
        out = jaxerr.bound(f, config.precision, **kw)(*[jax.tree_util.tree_map(lambda a: a[0], x)
                                                        for x in args])
        out = jax.tree_util.tree_map(lambda a: a[None], out)
    leaves = jax.tree_util.tree_leaves(out, is_leaf=lambda x: isinstance(x, jaxerr.Bound))
    res = []
    for b in leaves:
        r = {k: np.asarray(getattr(b, k), dtype=np.float64)
             for k in ("lo", "hi", "abs_err", "computed_lo", "computed_hi")}
        # jaxerr's own consistency guard (abs_err < 0, lo > hi) fired: an analysis bug
        d = b.diagnostics
        flags = np.asarray(d.flags).reshape(r["lo"].shape[0], len(d.messages))
        internal = [i for i, m in enumerate(d.messages) if INTERNAL in m]
        r["internal"] = flags[:, internal].any(axis=1) if internal else np.zeros(r["lo"].shape[0], bool)
        res.append(r)
    return res


def _samples(inputs, n_samples: int, precision: Any, rng) -> list[np.ndarray]:
    """Points of every box, stacked: (batch * n_samples, *shape) per input; corners and
    centre first, then uniform."""
    pts = []
    for lo, hi in inputs:
        lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)
        s = S.sample_box(lo64, hi64, n_samples, rng)  # (n, batch, ...)
        if precision is None:
            s = np.clip(s.astype(np.float32), lo, hi).astype(np.float64)
        s = np.swapaxes(s, 0, 1).reshape((-1,) + lo.shape[1:])
        pts.append(s)
    return pts


def _finite_mp(m: Any) -> bool:
    return isinstance(m, mpmath.mpf) and bool(mpmath.isfinite(m))


def _mp_confirm(bad: np.ndarray, mp: np.ndarray | None, check) -> np.ndarray:
    """Keep only the flagged elements that ``check(mp_exact, i)`` confirms against the
    unrounded reference ``mp`` (object array of mpmath numbers); without ``mp``, all.

    The float64 copy of the exact result carries its own rounding (up to half an ulp):
    in a float64 program that is the size of the bound itself, so |sim - float(exact)|
    may exceed abs_err while |sim - exact| does not."""
    if mp is None or not bad.any():
        return bad
    out = np.zeros_like(bad)
    with mpmath.workdps(60):  # far finer than a float64 ulp
        for i in map(tuple, np.argwhere(bad)):
            out[i] = bool(check(mp[i], i))
    return out


def _compare(B, ex, runs, n_samples: int, tag: str, ex_mp=None) -> list[tuple[str, int]]:
    """Violations as (message, batch element); ``ex_mp`` (object arrays of mpmath
    numbers, optional) confirms each candidate against the unrounded exact result."""
    out = []
    for j, b in enumerate(B):
        mp = None if ex_mp is None else ex_mp[j]
        for el in np.flatnonzero(b["internal"])[:1]:
            out.append((f"{tag}output {j}: jaxerr's consistency guard fired (abs_err < 0 or lo > hi "
                        "before the guard)", int(el)))
        rep = {k: np.repeat(v, n_samples, axis=0) for k, v in b.items() if k != "internal"}
        e = np.asarray(ex[j], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            # a NaN exact result (the real function is undefined there, e.g. log of a
            # negative): only an infinite abs_err (no claim) is right
            bad = ~((rep["lo"] <= e) & (e <= rep["hi"])) & ~(np.isnan(e) & np.isinf(rep["abs_err"]))
        bad = _mp_confirm(bad, mp, lambda m, i: not _finite_mp(m) or not (
            mpmath.mpf(float(rep["lo"][i])) <= m <= mpmath.mpf(float(rep["hi"][i]))))
        if bad.any():
            i = tuple(np.argwhere(bad)[0])
            out.append((f"{tag}output {j}: exact {e[i]!r} outside [{rep['lo'][i]!r}, {rep['hi'][i]!r}] "
                        f"at {i}", i[0] // n_samples))
        for name, sim in runs:
            s = np.asarray(sim[j], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                err = np.abs(s - e)
                inf = np.isinf(rep["abs_err"])
                bad = ~(err <= rep["abs_err"]) & ~inf
                bad_c = ~((rep["computed_lo"] <= s) & (s <= rep["computed_hi"])) & ~inf
            bad = _mp_confirm(bad, mp, lambda m, i: not _finite_mp(m) or not np.isfinite(s[i]) or (
                abs(mpmath.mpf(float(s[i])) - m) > mpmath.mpf(float(rep["abs_err"][i]))))
            if bad.any():
                i = tuple(np.argwhere(bad)[0])
                out.append((f"{tag}output {j} {name}: |sim-exact| = {err[i]!r} > abs_err "
                            f"{rep['abs_err'][i]!r} at {i} (sim={s[i]!r}, exact={e[i]!r})", i[0] // n_samples))
            if bad_c.any():
                i = tuple(np.argwhere(bad_c)[0])
                out.append((f"{tag}output {j} {name}: computed {s[i]!r} outside "
                            f"[{rep['computed_lo'][i]!r}, {rep['computed_hi'][i]!r}] at {i}", i[0] // n_samples))
    return out


@dataclasses.dataclass
class Result:
    cases: int  # input sets analysed and checked
    violations: list[str]
    bad_elements: list[int]  # batch elements with a violation
    stats: dict[str, int] = dataclasses.field(default_factory=dict)


def run_case(spec: Spec, config: Config, inputs: list[tuple[np.ndarray, np.ndarray]], *,
             n_samples: int = 3, seed: int = 0, batched: bool | None = None,
             real_backend: bool = True) -> Result:
    """Analyse ``spec`` under ``config`` over a batch of input sets (one compile) and
    check every element against the simulator. See the module docstring."""
    f = build(spec)
    fb = jax.vmap(f)
    batch = inputs[0][0].shape[0]
    if batched is None:
        batched = batch > 1
    rng = np.random.default_rng(seed)
    x64 = needs_x64(config.precision)
    stats = {"inf": 0}
    with _x64(x64):
        B = _analyse(f, config, inputs, batched)
        if x64:
            n_samples = min(n_samples, 2)
        pts = _samples(inputs, n_samples if config.boxes else 1, config.precision, rng)
        ns = n_samples if config.boxes else 1
        closed, _ = S.trace(fb, [p.astype(np.float32) for p in pts])
        ex_mp = S.exact_jaxpr(closed, pts, dps=40, return_mp=True) if x64 else None
        ex = ([S._from_mp(e) if e.dtype == object else e for e in ex_mp] if x64
              else S.exact_jaxpr(closed, pts))
        runs = []
        for acc, order in sim_models(config.precision, config.accumulation):
            # XLA flushes subnormals: as written (float32) and for formats modelled
            # without subnormals; a format with subnormals keeps them
            flushable = config.precision is None or not _fmt_of(config.precision).subnormals
            for flush in ((False, True) if flushable else (False,)):
                try:
                    sim = S.simulate_jaxpr(closed, pts, fmt=config.precision, accumulation=acc,
                                           order=order, rng=rng, flush=flush)
                except NotImplementedError:
                    continue
                runs.append((f"sim[{acc},{order},flush={flush}]", sim))
        if real_backend and config.precision is None:
            real = jax.jit(fb)(*[jnp.asarray(p, jnp.float32) for p in pts])
            runs.append(("xla", [np.asarray(r, dtype=np.float64) for r in jax.tree_util.tree_leaves(real)]))
        for b in B:
            stats["inf"] += int(np.isinf(b["abs_err"]).reshape(batch, -1).all(axis=1).sum())
        viol = _compare(B, ex, runs, ns, "", ex_mp)
        if viol and not x64:
            # confirm against a 50-digit reference (the float64 one may be off by its own
            # rounding), on the failing batch elements only
            elems = sorted({e for _, e in viol})[:8]
            rows = np.concatenate([np.arange(e * ns, (e + 1) * ns) for e in elems])
            sub_pts = [p[rows] for p in pts]
            closed_s, _ = S.trace(fb, [p.astype(np.float32) for p in sub_pts])
            mp_s = S.exact_jaxpr(closed_s, sub_pts, dps=50, return_mp=True)
            ex_s = [S._from_mp(e) if e.dtype == object else e for e in mp_s]
            B_s = [{k: v[elems] for k, v in b.items()} for b in B]
            runs_s = [(n, [r[rows] for r in rr]) for n, rr in runs]
            viol = [(m, elems[e]) for m, e in _compare(B_s, ex_s, runs_s, ns, "", mp_s)]
    return Result(batch, [m for m, _ in viol], sorted({int(e) for _, e in viol}), stats)


def random_case(d: Any, *, batch: int = 16, max_nodes: int = 8, precision: Any = "draw",
                accumulation: str | None = None, domain: str | None = None,
                domains_allowed: Sequence[str] | None = None):
    """Draw a (spec, config, inputs, batched) case."""
    spec = draw_spec(d, max_nodes)
    prec = d.choice(precisions()) if precision == "draw" else precision
    acc = accumulation or d.choice(ACCUMULATIONS)
    if acc == "wide:float32" and needs_x64(prec):
        # a float32 accumulator for a float64 format: jaxerr does not check the
        # accumulator's own overflow there (reported; see the fuzzing notes)
        acc = "recursive"
    dom = domain or d.choice(list(domains_allowed or domains()))
    boxes = bool(d.integer(0, 1))
    # some cases: one concrete input set with float32 subnormals (eager path)
    unbatched = d.integer(0, 9) == 0
    if needs_x64(prec):
        batch = max(1, batch // 4)
    inputs = draw_inputs(d, spec.inputs, 1 if unbatched else batch, boxes, prec,
                         f32_subnormals=unbatched)
    return spec, Config(prec, acc, dom, boxes), inputs, not unbatched


def case_to_json(spec: Spec, config: Config, inputs, element: int | None = None) -> dict[str, Any]:
    """A reproducible record of a case (the inputs of one batch element, or all)."""
    sel = (lambda a: a[element:element + 1]) if element is not None else (lambda a: a)
    return {
        "spec": spec.to_json(),
        "config": dataclasses.asdict(config),
        "inputs": [[sel(lo).tolist(), sel(hi).tolist()] for lo, hi in inputs],
        "program": str(spec),
    }


def case_from_json(d: dict[str, Any]):
    spec = Spec.from_json(d["spec"])
    config = Config(**d["config"])
    inputs = [(np.asarray(lo, np.float32), np.asarray(hi, np.float32)) for lo, hi in d["inputs"]]
    return spec, config, inputs


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1)


# ---------------------------------------------------------------------------
# Hypothesis strategies
# ---------------------------------------------------------------------------


def specs(max_nodes: int = 8):
    """Hypothesis strategy of random programs."""
    from hypothesis import strategies as st

    @st.composite
    def strat(draw):
        return draw_spec(HypothesisDraw(draw), max_nodes)

    return strat()


def cases(batch: int = 8, max_nodes: int = 6, **kw):
    """Hypothesis strategy of (spec, config, inputs, batched) cases."""
    from hypothesis import strategies as st

    @st.composite
    def strat(draw):
        return random_case(HypothesisDraw(draw), batch=batch, max_nodes=max_nodes, **kw)

    return strat()


# ---------------------------------------------------------------------------
# Minimising a failing case
# ---------------------------------------------------------------------------


def _dce(spec: Spec) -> Spec:
    """Drop nodes no output depends on (inputs stay)."""
    k = len(spec.inputs)
    live = set(spec.outputs)
    for i in range(len(spec.nodes) - 1, -1, -1):
        if k + i in live:
            live.update(spec.nodes[i][1])
    keep = [i for i in range(len(spec.nodes)) if k + i in live]
    remap = {j: j for j in range(k)}
    for new, old in enumerate(keep):
        remap[k + old] = k + new
    nodes = [(op, [remap[a] for a in args], p) for op, args, p in (spec.nodes[i] for i in keep)]
    return Spec(spec.inputs, nodes, [remap[o] for o in spec.outputs])


def minimise(spec: Spec, config: Config, inputs, element: int, *, budget: int = 30, log=print):
    """Greedy reduction of a failing case: one batch element, one output, dead code
    removed, nodes replaced by their first operand while it still fails."""
    inputs = [(lo[element:element + 1], hi[element:element + 1]) for lo, hi in inputs]

    def fails(sp: Spec) -> bool:
        try:
            return bool(run_case(sp, config, inputs, batched=True).violations)
        except Exception:  # an invalid candidate (shape mismatch) does not reproduce
            return False

    tries = 0
    if not fails(spec):
        log("  (does not reproduce on its own)")
        return spec, inputs
    if len(spec.outputs) > 1:
        for o in spec.outputs:
            cand = _dce(Spec(spec.inputs, spec.nodes, [o]))
            tries += 1
            if fails(cand):
                spec = cand
                break
    spec = _dce(spec)
    changed = True
    while changed and tries < budget:
        changed = False
        for i in range(len(spec.nodes) - 1, -1, -1):
            op, args, _ = spec.nodes[i]
            if op == "id" or tries >= budget:
                continue
            for a in dict.fromkeys(args):
                nodes = list(spec.nodes)
                nodes[i] = ("id", [a], {})
                cand = _dce(Spec(spec.inputs, nodes, spec.outputs))
                tries += 1
                if fails(cand):
                    log(f"  removed node v{len(spec.inputs) + i} ({op})")
                    spec, changed = cand, True
                    break
            if changed:
                break
    # fold remaining identities away
    return spec, inputs
