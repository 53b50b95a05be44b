"""The first-order limit: the best worst-case error bound of the standard model.

Write every rounding event ``k`` of a program as an absolute error ``e_k`` added to
the exact result of equation ``k`` (and, under a ``precision`` override, to every
floating input, captured constant and literal that is rounded into the format).
The computed output is ``y(e)`` and the exact one ``y(0)``. To first order in the
``e_k``,

    |y_i(e) - y_i(0)|  <~  L_i = sum_{k op} |dy_i/de_k (0)| * E_k
                                 + |sum_{k input} dy_i/de_k (0) * r_k|

where ``E_k`` is the bound jaxerr's error model (docs/error-model.md) puts on
``|e_k|`` for an operation, evaluated at the *exact* values, and ``r_k =
round(x_k) - x_k`` is the rounding of an input, constant or literal of a point
into the format: it is known, so its first-order effect is one signed sum (with
``inputs="abs"`` each counts as a worst-case event ``|dy/de_k| |r_k|`` instead,
which is larger). ``L_i`` is what a sound worst-case analysis tends to at a point
input: it only drops the second-order terms (relative size a few ``u``). jaxerr's ``domain="first_order"``
targets it (its sensitivity enclosures contain ``dy/de(0)`` and its local bounds
are evaluated on ranges that contain the exact values), so its ``abs_err`` should
be a little above ``L``, and ``abs_err / L`` measures how much of jaxerr's
first-order result is overhead (outward rounding, enclosure widths, cuts).

This module computes ``L`` independently of jaxerr's own first-order machinery:

* ``f`` is traced with ``jax.make_jaxpr``; the jaxpr is evaluated by a small
  interpreter here, in float32 at the exact input point (no rounding to the
  analysed format; under ``precision=None`` the program's own dtypes), with call
  primitives (``pjit``/``jit``, ``closed_call``, ``custom_jvp_call``,
  ``custom_vjp_call``, ``remat``) inlined and ``stop_gradient`` evaluated as the
  identity (rounding errors *do* flow through it; custom derivative rules are
  ignored, the primal bodies are differentiated).
* A zero perturbation array is added to the output of every equation that rounds
  and, under ``precision``, to every floating input, constant and literal use.
  ``jax.vjp`` with respect to the perturbations, vmapped (in chunks) over one-hot
  output cotangents, gives ``dy_i/de_k``; the sum ``sum_k |.| * E_k`` is taken
  inside the same program.
* ``E_k`` per primitive, with ``fmt`` the analysed format (``precision``, or the
  format of the equation's output dtype under ``precision=None``), ``u`` its unit
  roundoff and ``eta`` its underflow bound, and ``|.|`` exact values:

  - ``add``/``sub``/``mul``/``div``/``sqrt``/``square``: ``u|y| + eta``; a
    multiplication or division by a power-of-two literal: ``eta`` (the model says
    such scalings are exact except for underflow);
  - ``integer_pow(n)``: ``gamma_m |y| + m eta max(1, |x|)^|n|`` with ``m = |n| - 1``
    (the roundings of the expanded product tree of binary powering), plus ``u|y| + eta``
    for ``n < 0``;
  - transcendentals (``exp``, ``log``, ``tanh``, ``logistic``, ``erf``,
    ``rsqrt``, ...): the budgets of ``jaxerr._formats`` with the semantics of
    ``jaxerr._rules._common.transcendental_rounding`` (``k_rel u_C |y| + k_abs u_C
    + eta_C`` in the compute format, the exp2 and narrow-format extras, one more
    rounding to a narrower output format);
  - ``dot_general``: ``a (|lhs|.|rhs|) + b |y| + c`` and ``reduce_sum``:
    ``a sum|x| + b |y| + c`` (``c`` only for ``n > 1``), with ``(a, b, c) =
    Accumulation.parse(accumulation).coefficients(n, fmt, products)``;
  - ``convert_element_type`` to a narrower float (``precision=None`` only):
    ``u_dst |y| + eta_dst``; integer to float: ``u|y| + eta`` above ``2^p``;
  - rounded inputs, constants and literals: the signed ``round_fmt(x) - x``
    (float64, ml_dtypes), see above;
  - ``max``/``min``/``abs``/``neg``/``select_n``/comparisons/``reduce_max``/
    ``argmax`` and data movement: no event.

  A primitive with no entry raises ``NotImplementedError`` rather than guessing.

``L`` is a **reference value, not a guarantee**: it is computed in float32 (the
derivatives and ``E_k`` are themselves rounded, to about 1e-6 relative), it
neglects second-order terms (a rule may bound a rounding by ``u`` times the
*computed* operand, which differs from the exact one by ``O(u)``), and at a
non-differentiable point (``max(x, 0)`` at ``x = 0``) it uses the derivative JAX
picks (1/2 for ``max``). A sound bound may therefore be below ``L`` by a few
``u`` relative (about 1% in bfloat16); it should not be far below.

Self-test: ``python benchmarks/_first_order_limit.py`` checks ``L = gamma_n |x||w|``
(+ underflow terms) for ``x @ w`` in float32 with recursive summation and that
jaxerr's ``domain="first_order"`` is above ``L`` and within 1% of it, and in
bfloat16 that it is above ``L`` up to second-order terms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from jaxerr import _formats as F

__all__ = ["first_order_limit", "selftest"]

_P = F._compat.prim

# call-like primitives whose primal body is inlined, and the parameter holding it
_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
_CALL_PRIMS = {
    "jit", "pjit", "closed_call", "core_call", "call", "custom_jvp_call", "custom_vjp_call",
    "custom_vjp_call_jaxpr", "remat", "remat2", "checkpoint",
}
_IDENTITY = {"stop_gradient", "copy", "copy_p", "optimization_barrier", "sharding_constraint",
             "device_put", "name", "reduce_precision_identity"}
# exact operations (no rounding event): selections, data movement, comparisons, ...
_EXACT = {
    "max", "min", "abs", "neg", "sign", "select_n", "clamp", "floor", "ceil", "round",
    "broadcast_in_dim", "reshape", "transpose", "squeeze", "expand_dims", "concatenate",
    "slice", "rev", "pad", "gather", "dynamic_slice", "dynamic_update_slice", "iota", "split",
    "reduce_max", "reduce_min", "argmax", "argmin", "reduce_and", "reduce_or",
    "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "xor", "is_finite",
}
_BASIC = {"add", "add_any", "sub", "mul", "div", "sqrt", "square"}


def _is_float(dtype: Any) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.floating))


def _fmt_of(precision: F.Format | None, dtype: Any) -> F.Format:
    return precision if precision is not None else F.format_of_dtype(dtype)


def _pow2_literal(v: Any) -> bool:
    if not isinstance(v, jcore.Literal):
        return False
    a = np.asarray(v.val, dtype=np.float64)
    if a.size != 1:
        return False
    x = abs(float(a.reshape(())))
    if x == 0 or not math.isfinite(x):
        return x == 0
    return math.frexp(x)[0] == 0.5


def _round_err(x: np.ndarray, fmt: F.Format) -> np.ndarray:
    """The signed rounding error round_fmt(x) - x in float64 (0 where x is not finite)."""
    x64 = np.asarray(x, dtype=np.float64)
    if fmt.dtype is None:
        raise NotImplementedError(f"first_order_limit: no dtype to round into {fmt.name}")
    with np.errstate(all="ignore"):
        r = np.asarray(x64.astype(fmt.dtype).astype(np.float64))
        e = r - x64
    return np.where(np.isfinite(x64), e, 0.0)


def _ipow_roundings(n: int) -> int:
    """Roundings in the error of x**n by any multiplication chain: the expanded product
    tree has n - 1 nodes (a rounded square used twice counts twice)."""
    return max(0, n - 1)


def _transcendental(M: np.ndarray, prim: Any, fmt: F.Format, xmag: np.ndarray) -> np.ndarray:
    """The bound of ``jaxerr._rules._common.transcendental_rounding`` for ``|f(x)| = M``."""
    cf = F.compute_format(fmt)
    k_rel, k_abs = F.transcendental_budget(prim, cf)
    uc = cf.unit_roundoff
    r = k_rel * uc * M + (k_abs * uc + cf.underflow)
    if prim is _P("exp2"):
        r = r + M * xmag * F.exp2_extra_rel(1.0, fmt)
    narrow = fmt.precision < cf.precision
    if narrow and prim in F.NARROW_EXTRA_BUDGETS:
        k_n = F.NARROW_EXTRA_BUDGETS[prim]
        r = r + k_n * fmt.unit_roundoff * M + k_n * fmt.underflow
        if prim is _P("logistic"):
            r = r + 1.0 / fmt.max_finite
    if narrow:
        r = r + fmt.unit_roundoff * (M + r) + fmt.underflow
    else:
        r = r + fmt.underflow
    return r


def _local_bound(eqn: Any, ins: list[Any], y: Any, precision: F.Format | None,
                 acc: F.Accumulation) -> np.ndarray | None:
    """E_k (float64, shaped like ``y``) of the rounding of ``eqn``'s result ``y``, or
    None if the equation does not round. ``ins`` and ``y`` are exact values."""
    name = eqn.primitive.name
    prim = eqn.primitive
    odt = eqn.outvars[0].aval.dtype
    if not _is_float(odt) or name in _EXACT or name in _IDENTITY:
        return None
    fmt = _fmt_of(precision, odt)
    u, eta = fmt.unit_roundoff, fmt.underflow
    Y = np.abs(np.asarray(y, dtype=np.float64))
    if name in _BASIC:
        if name == "mul" and any(_pow2_literal(v) for v in eqn.invars):
            return np.full(Y.shape, eta)
        if name == "div" and _pow2_literal(eqn.invars[1]):
            return np.full(Y.shape, eta)
        return u * Y + eta
    if name == "integer_pow":
        n = int(eqn.params["y"])
        if n in (0, 1):
            return None
        k = abs(n)
        m = _ipow_roundings(k)
        X = np.abs(np.asarray(ins[0], dtype=np.float64))
        E = F.gamma(m, u) * Y + m * eta * np.maximum(1.0, X) ** k
        if n < 0:
            E = E + u * Y + eta
        return E
    if prim in F.TRANSCENDENTAL_BUDGETS:
        xmag = np.abs(np.asarray(ins[0], dtype=np.float64))
        return _transcendental(Y, prim, fmt, xmag)
    if name == "convert_element_type":
        src = eqn.invars[0].aval.dtype
        if _is_float(src):
            if precision is not None:
                return None
            s, d = F.format_of_dtype(src), F.format_of_dtype(odt)
            if d.precision >= s.precision and d.emin <= s.emin and d.max_finite >= s.max_finite:
                return None
            return d.unit_roundoff * Y + d.underflow
        return np.where(Y <= 2.0**fmt.precision, 0.0, u * Y + eta)
    if name == "dot_general":
        (lc, _), _ = eqn.params["dimension_numbers"]
        lhs, rhs = ins
        n = int(math.prod(np.shape(lhs)[d] for d in lc))
        a, b, c = acc.coefficients(n, fmt, products=True)
        S = lax.dot_general(jnp.abs(jnp.asarray(lhs, jnp.float32)), jnp.abs(jnp.asarray(rhs, jnp.float32)),
                            eqn.params["dimension_numbers"], precision=lax.Precision.HIGHEST,
                            preferred_element_type=jnp.float32)
        S = np.asarray(S, dtype=np.float64)
        return (a * S if a else 0.0 * S) + b * Y + c
    if name == "reduce_sum":
        axes = tuple(eqn.params["axes"])
        x = np.asarray(ins[0], dtype=np.float64)
        n = int(math.prod(x.shape[d] for d in axes)) if axes else 1
        a, b, c = acc.coefficients(n, fmt, products=False)
        S = np.sum(np.abs(x), axis=axes)
        return (a * S if a else 0.0 * S) + b * Y + (c if n > 1 else 0.0)
    raise NotImplementedError(f"first_order_limit: no local error model for primitive {name!r}")


def _f32_params(params: dict[str, Any]) -> dict[str, Any]:
    """Evaluate in float32: floating dtypes in parameters become float32."""
    out = dict(params)
    for key in ("preferred_element_type", "new_dtype", "dtype", "out_dtype"):
        dt = out.get(key)
        if dt is not None:
            try:
                if _is_float(dt):
                    out[key] = jnp.float32
            except TypeError:
                pass
    return out


def _as_f32(x: Any, aval: Any) -> Any:
    return jnp.asarray(x, jnp.float32) if _is_float(aval.dtype) else jnp.asarray(x, aval.dtype)


class _Events:
    """The rounding events of one evaluation, in evaluation order (deterministic).

    Recording pass (``perts is None``): every candidate event is offered with a thunk
    for its bound E_k at the exact values; those with some ``E_k > 0`` are kept (by
    their static location ``key``). Perturbed pass: ``perts[k]`` is added to the k-th
    kept event, so both passes agree on the order."""

    def __init__(self, perts: Sequence[Any] | None = None, kept: set[str] | None = None):
        self.record = perts is None
        self.perts = perts
        self.kept: set[str] = set() if kept is None else kept
        self.i = 0
        self.E: list[np.ndarray] = []
        self.R: list[np.ndarray | None] = []  # signed shift of a rounded input, else None
        self.keys: list[str] = []

    def add(self, key: str, y: Any, bound: Callable[[], np.ndarray | None],
            signed: bool = False) -> Any:
        """``bound()`` gives E_k; with ``signed`` it gives the signed, known shift
        ``round(x) - x`` of a rounded input (E_k is its magnitude)."""
        if self.record:
            E = bound()
            if E is None:
                return y
            E = np.broadcast_to(np.asarray(E, np.float64), np.shape(y)).copy()
            if not np.any(E != 0):
                return y  # e.g. a constant that is exactly representable
            self.kept.add(key)
            self.R.append(E if signed else None)
            self.E.append(np.abs(E))
            self.keys.append(key)
            return y
        if key not in self.kept:
            return y
        p = self.perts[self.i]
        self.i += 1
        return y + p


def _eval(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any], ev: _Events,
          precision: F.Format | None, acc: F.Accumulation, path: str = "") -> list[Any]:
    env: dict[Any, Any] = {}

    def const_value(val: Any, aval: Any, key: str) -> Any:
        x = _as_f32(val, aval)
        if precision is None or not _is_float(aval.dtype):
            return x
        return ev.add(key, x, lambda: _round_err(np.asarray(val), precision), signed=True)

    def read(v: Any, key: str) -> Any:
        if isinstance(v, jcore.Literal):
            return const_value(v.val, v.aval, key)
        return env[v]

    for j, (v, c) in enumerate(zip(jaxpr.constvars, consts)):
        env[v] = const_value(c, v.aval, f"{path}const{j}")
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for i, eqn in enumerate(jaxpr.eqns):
        here = f"{path}{i}"
        ins = [read(v, f"{here}.lit{j}") for j, v in enumerate(eqn.invars)]
        name = eqn.primitive.name
        if name in _CALL_PRIMS:
            body = next((eqn.params[p] for p in _CALL_PARAMS if p in eqn.params), None)
            if body is None:
                raise NotImplementedError(f"first_order_limit: {name} without a body")
            if isinstance(body, jcore.ClosedJaxpr):
                bj, bc = body.jaxpr, list(body.consts)
            else:
                bj, bc = body, []
            outs = _eval(bj, bc, ins, ev, precision, acc, f"{here}.{name}/")
        else:
            if name in _IDENTITY:
                outs = list(ins)
            elif (name == "convert_element_type" and _is_float(eqn.params["new_dtype"])
                  and _is_float(eqn.invars[0].aval.dtype)):
                outs = [jnp.asarray(ins[0], jnp.float32)]
            else:
                res = eqn.primitive.bind(*ins, **_f32_params(eqn.params))
                outs = list(res) if eqn.primitive.multiple_results else [res]
            if len(outs) == 1:
                y = outs[0]
                outs = [ev.add(here, y, lambda eqn=eqn, ins=ins, y=y:
                               _local_bound(eqn, ins, y, precision, acc))]
            elif any(_is_float(v.aval.dtype) for v in eqn.outvars) and name not in _IDENTITY:
                raise NotImplementedError(f"first_order_limit: multiple-result primitive {name!r}")
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [read(v, f"{path}out{j}") for j, v in enumerate(jaxpr.outvars)]


def _setup(f: Callable[..., Any], args: Sequence[Any], precision: Any, accumulation: Any):
    """Trace ``f``, record the events at the exact point; return the recording, the
    perturbed evaluation ``g(perts)`` (floating outputs) and the output shapes."""
    fmt = None if precision is None else F.as_format(precision)
    acc = F.Accumulation.parse(accumulation)
    args = tuple(args)
    flat, tree = jax.tree_util.tree_flatten(args)
    closed = jax.make_jaxpr(lambda *a: f(*jax.tree_util.tree_unflatten(tree, a)))(*flat)
    jaxpr = closed.jaxpr
    x_vals = [_as_f32(a, v.aval) for a, v in zip(flat, jaxpr.invars)]

    def evaluate(ev: _Events) -> list[Any]:
        xs = list(x_vals)
        if fmt is not None:
            for j, (x, v) in enumerate(zip(x_vals, jaxpr.invars)):
                if _is_float(v.aval.dtype):
                    xs[j] = ev.add(f"in{j}", x, lambda a=flat[j]: _round_err(np.asarray(a), fmt),
                                   signed=True)
        return _eval(jaxpr, closed.consts, xs, ev, fmt, acc)

    rec = _Events()
    outs0 = evaluate(rec)  # exact values; E_k of every event
    float_out = [k for k, v in enumerate(jaxpr.outvars) if _is_float(v.aval.dtype)]
    out_shapes = [tuple(np.shape(outs0[k])) for k in float_out]

    def g(perts: list[Any]) -> list[Any]:
        ev = _Events(perts, rec.kept)
        outs = evaluate(ev)
        assert ev.i == len(perts), (ev.i, len(perts))
        return [outs[k] for k in float_out]

    return rec, g, out_shapes


def first_order_limit(f: Callable[..., Any], args: Sequence[Any], precision: Any = None,
                      accumulation: Any = "auto", chunk: int = 64,
                      inputs: str = "signed") -> list[np.ndarray]:
    """``L_i = sum_k |dy_i/de_k(0)| E_k`` for every element of every floating output
    of ``f(*args)``: a list of float64 arrays shaped like those outputs.

    ``args``: the tuple of positional arguments, exact inputs (arrays or pytrees of
    arrays; no ``Interval``). ``precision``/``accumulation``: as in
    ``jaxerr.bound``. ``chunk``: output components per vmapped batch of the
    reverse pass. ``inputs`` (only matters under ``precision``): ``"signed"``
    (default) counts the rounding of the point's inputs, constants and literals
    into the format as the known shift it is, ``|sum_k dy_i/de_k r_k|`` with
    ``r_k = round(x_k) - x_k``; ``"abs"`` counts each as a worst-case event,
    ``sum_k |dy_i/de_k| |r_k|`` (the bound for any inputs within rounding
    distance; larger)."""
    if inputs not in ("signed", "abs"):
        raise ValueError(f"inputs must be 'signed' or 'abs', got {inputs!r}")
    rec, g, out_shapes = _setup(f, args, precision, accumulation)
    if not rec.E:
        return [np.zeros(s) for s in out_shapes]
    shapes = [e.shape for e in rec.E]

    sizes = [max(1, int(np.prod(s))) for s in out_shapes]
    M = int(sum(sizes))
    offs = [int(o) for o in np.cumsum([0] + sizes[:-1])]

    signed = [r is not None and inputs == "signed" for r in rec.R]

    @jax.jit
    def run(E_dev: list[Any], R_dev: list[Any]) -> Any:
        zeros = [jnp.zeros(s, jnp.float32) for s in shapes]
        _, vjp = jax.vjp(g, zeros)

        def one(i: Any) -> Any:
            cts = [(jnp.arange(sz) + off == i).astype(jnp.float32).reshape(sh)
                   for sz, off, sh in zip(sizes, offs, out_shapes)]
            (dp,) = vjp(cts)
            worst = jnp.zeros((), jnp.float32)  # unknown roundings: sum |d| E
            shift = jnp.zeros((), jnp.float32)  # known input roundings: sum d r
            for d, E, R, sg in zip(dp, E_dev, R_dev, signed):
                if sg:
                    shift = shift + jnp.sum(d * R)
                else:
                    worst = worst + jnp.sum(jnp.where(d == 0, 0.0, jnp.abs(d) * E))
            return worst + jnp.abs(shift)

        return lax.map(one, jnp.arange(M), batch_size=min(chunk, M))

    L = np.asarray(run([jnp.asarray(e, jnp.float32) for e in rec.E],
                       [jnp.asarray(r if r is not None else 0.0, jnp.float32) for r in rec.R]),
                   dtype=np.float64)
    return [L[o:o + s].reshape(sh) for o, s, sh in zip(offs, sizes, out_shapes)]


def adversarial_errors(f: Callable[..., Any], args: Sequence[Any], precision: Any = None,
                       accumulation: Any = "auto", outputs: int = 16,
                       steps: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A *lower* bound on the standard model's worst case, to put ``L`` in context:
    for up to ``outputs`` elements ``i`` of the first floating output (evenly spaced),
    choose every operation's event ``e_k = s_k E_k`` (``|s_k| = 1``; rounded inputs
    keep their known shift ``r_k``) by sign ascent on ``+-y_i`` (start at the signs of
    ``dy_i/de_k(0)``, then ``steps`` times the signs of the gradient at the current
    events), evaluate the perturbed program, and keep ``max |y_i(e) - y_i(0)|`` over
    both directions and all iterates. Returns (flat indices, those deviations).

    Every ``e`` tried is allowed by the standard model (``|e_k| <= u|y_k|``), so a
    bound of that model must be at least the deviation found (up to float32 evaluation
    noise and ``E_k`` being taken at the exact values). Round to nearest errs by at
    most ``u 2^floor(log2|y_k|)``, which jaxerr uses: its bounds may be below the
    deviation found (by up to 2x per event) and still hold for every execution. ``deviation / L`` near 1 says the worst case *is* first-order
    there (a bound far above ``L`` is loose); above 1, second-order effects are
    real."""
    rec, g, out_shapes = _setup(f, args, precision, accumulation)
    size = max(1, int(np.prod(out_shapes[0])))
    idx = np.unique(np.linspace(0, size - 1, min(outputs, size)).round().astype(int))
    if not rec.E:
        return idx, np.zeros(len(idx))
    E = [jnp.asarray(e, jnp.float32) for e in rec.E]
    R = [None if r is None else jnp.asarray(r, jnp.float32) for r in rec.R]

    def perts(signs: list[Any]) -> list[Any]:
        return [e * s if r is None else r for e, s, r in zip(E, signs, R)]

    def y(ps: list[Any], i: Any) -> Any:
        return g(ps)[0].reshape(-1)[i]

    @jax.jit
    def one(i: Any) -> Any:
        y0 = y([jnp.zeros_like(e) for e in E], i)
        best = jnp.zeros((), jnp.float32)
        for direction in (1.0, -1.0):
            signs = [jnp.full_like(e, direction) for e in E]
            grad = jax.grad(lambda ps: direction * y(ps, i))
            signs = [jnp.where(d >= 0, 1.0, -1.0) for d in grad([jnp.zeros_like(e) for e in E])]
            for _ in range(steps + 1):
                ps = perts(signs)
                best = jnp.maximum(best, jnp.abs(y(ps, i) - y0))
                signs = [jnp.where(d >= 0, 1.0, -1.0) for d in grad(ps)]
        return best

    return idx, np.asarray([float(one(int(i))) for i in idx], np.float64)


def selftest(verbose: bool = True) -> None:
    """``x @ w`` in float32, recursive summation, exact inputs: ``L = gamma_n |x||w| + 2n eta``;
    jaxerr's first-order bound must be >= L (up to float32 noise) and close to it."""
    import jaxerr

    rng = np.random.default_rng(0)
    n = 64
    x = rng.standard_normal((3, n)).astype(np.float32)
    w = rng.standard_normal((n, 5)).astype(np.float32)

    def f(x, w):
        return x @ w

    (L,) = first_order_limit(f, (x, w), None, "recursive")
    fmt = F.FORMATS["float32"]
    S = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64))
    want = F.gamma(n, fmt.unit_roundoff) * S + 2 * n * fmt.underflow
    rel = np.max(np.abs(L - want) / want)
    assert rel < 1e-5, f"first-order limit of x @ w: relative deviation {rel:.2e} from gamma_n |x||w|"
    b = jaxerr.bound(f, accumulation="recursive", domain="first_order", warn=False)(x, w)
    fo = np.asarray(b.abs_err, np.float64)
    ratio = fo / L
    assert np.all(ratio >= 1 - 1e-5), f"first_order abs_err below the limit: min ratio {ratio.min()}"
    assert np.all(ratio < 1.01), f"first_order abs_err far above the limit: max ratio {ratio.max()}"
    # a bf16 override adds the input roundings (a known shift): jaxerr must stay above L
    # up to second-order terms, and the worst-case-inputs variant must be larger
    (Lb,) = first_order_limit(f, (x, w), "bfloat16", "auto")
    (La,) = first_order_limit(f, (x, w), "bfloat16", "auto", inputs="abs")
    assert np.all(La >= Lb * (1 - 1e-6)), "inputs='abs' must not be below inputs='signed'"
    bb = jaxerr.bound(f, "bfloat16", domain="first_order", warn=False)(x, w)
    rb = np.asarray(bb.abs_err, np.float64) / Lb
    u = F.FORMATS["bfloat16"].unit_roundoff
    assert np.all(rb >= 1 - 8 * u), f"bf16: first_order abs_err below the limit: min ratio {rb.min()}"
    if verbose:
        print(f"selftest x@w (n={n}, float32, recursive): max |L/(gamma_n|x||w|) - 1| = {rel:.1e}; "
              f"first_order / L in [{ratio.min():.6f}, {ratio.max():.6f}]; "
              f"bfloat16: first_order / L in [{rb.min():.4f}, {rb.max():.4f}], "
              f"L(inputs='abs') / L in [{np.min(La / Lb):.2f}, {np.max(La / Lb):.2f}]")


if __name__ == "__main__":
    selftest()
