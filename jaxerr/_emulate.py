"""Faithful low-precision emulation: run a JAX function with every floating operation
rounded to a :class:`~jaxerr.Format` and every sum accumulated as a chosen model says.

``jaxerr.emulate(f, precision="float8_e4m3fn", accumulation="blocked:8", fma=True,
overflow="saturate")`` returns a function that traces ``f`` to a jaxpr and re-evaluates
it with JAX operations on a float32 (or float64) *carrier* holding values of the format:

* inputs, constants and literals are rounded to the format on entry;
* ``add``, ``sub``, ``mul``, ``div``, ``sqrt``, ``square``, ``integer_pow`` (binary
  powering, every multiplication rounded) and conversions are **correctly rounded**,
  bit-exact (round to nearest, ties to even, gradual underflow or flush as the format
  says, overflow to infinity or saturation), see :mod:`jaxerr._exact`;
* transcendental functions (``exp``, ``tanh``, ``logistic``, ...) are evaluated in the
  carrier and rounded once to the format (faithful, not always correctly rounded: the
  same "evaluate wider, round once" model jaxerr's bounds budget for);
* comparisons, ``max``/``min``, selections and data movement are exact;
* ``dot_general``, ``conv_general_dilated`` (as a dot product of patches) and
  ``reduce_sum`` accumulate as the :class:`~jaxerr.Accumulation` model says:

  - ``"recursive"``: terms added one by one in increasing contraction index (several
    contracted axes flattened row-major), a rounding after every addition;
  - ``"blocked:B"``: consecutive blocks of ``B`` terms each summed recursively starting
    from zero, then the block sums added recursively in block order (the partial-sum
    structure of blocked GPU kernels);
  - ``"pairwise"``: the terms zero-padded to a power of two and summed as a balanced
    binary tree of adjacent pairs (for ``n`` a power of two this is recursive halving
    ``sum(a[:n/2]) + sum(a[n/2:])``);
  - ``"wide:F"``: products and sums in the wider format ``F`` and one final rounding;
    ``wide:float32`` uses XLA's float32 matrix product (its summation order is XLA's);
    other wide formats use the recursive order in ``F``.

  Products are rounded to the format (``fma=False``) or fused into the addition that
  consumes them (``fma=True``: ``s <- RN(s + x*w)`` with one rounding; under
  ``"blocked:B"`` each block starts from zero, so its first term is the rounded
  product; ``"pairwise"`` always rounds products).

The seed paper's fp8 kernels are modelled by ``precision="float8_e4m3fn",
accumulation="blocked:8", fma=True, overflow="saturate"``: eight fused multiply-adds
into an e4m3 block accumulator, block results added into an e4m3 running sum, every
result saturating at +-448.

The emulated function is ordinary JAX code: it composes with ``jax.jit`` and
``jax.vmap``. Floating outputs come back in the carrier dtype (float32 unless the
format needs float64), holding values of the format.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from . import _compat
from . import _exact as X
from . import _formats as F
from ._formats import Accumulation, Format, as_format

__all__ = ["Arithmetic", "emulate", "emulated_dot_general", "emulated_dot_general_with_bound", "emulated_gathered_dot",
           "emulated_sum",
           "round_exact"]

round_exact = X.round_exact
P = _compat.prim


@dataclasses.dataclass(frozen=True)
class Arithmetic:
    """A complete description of an emulated arithmetic.

    - `precision`: the :class:`~jaxerr.Format` every floating result is rounded to.
    - `accumulation`: the :class:`~jaxerr.Accumulation` of dot products and sums
      (``"auto"`` is resolved against the format).
    - `fma`: fuse products into the accumulation (one rounding per multiply-add).
    - `overflow`: ``"inf"`` or ``"saturate"`` (``+-max_finite``).
    """

    precision: Format
    accumulation: Accumulation
    fma: bool = False
    overflow: str = "inf"

    @classmethod
    def make(cls, precision: Any = "float32", accumulation: Any = "recursive", fma: bool = False,
             overflow: str = "inf") -> Arithmetic:
        if isinstance(precision, Arithmetic):
            return precision
        fmt = as_format(precision)
        acc = Accumulation.parse(accumulation).resolve(fmt)
        if overflow not in ("inf", "saturate"):
            raise ValueError(f"overflow must be 'inf' or 'saturate', got {overflow!r}")
        if fma and acc.kind == "wide":
            raise ValueError("fma=True has no meaning with 'wide:' accumulation (products are exact there)")
        return cls(fmt, acc, bool(fma), overflow)

    @property
    def carrier(self) -> np.dtype:
        return X.carrier_for(self.precision, _compat.x64_enabled())

    def round(self, x: Any) -> Any:
        return X.round_exact(x, self.precision, self.overflow)

    def __str__(self) -> str:
        extra = (", fma" if self.fma else "") + (", saturating" if self.overflow == "saturate" else "")
        return f"{self.precision.name}/{self.accumulation}{extra}"


# ---------------------------------------------------------------------------
# Accumulation
# ---------------------------------------------------------------------------


class _Terms:
    """The terms of a sum: ``x`` of shape (K, *out) for a plain sum, or ``x`` (K, B, M, 1)
    and ``w`` (K, B, 1, N) whose products are the terms of a dot."""

    def __init__(self, x: Any, w: Any = None, il: Any = None, ir: Any = None):
        self.x, self.w = x, w
        self.il, self.ir = il, ir  # gathered terms: x (K, P), w (K, Q), term j = x[:, il[j]] w[:, ir[j]]
        self.K = x.shape[0]

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.il is not None:
            return tuple(self.il.shape)
        if self.w is None:
            return tuple(self.x.shape[1:])
        return tuple(max(a, b) for a, b in zip(self.x.shape[1:], self.w.shape[1:]))

    def take(self, x: Any, w: Any) -> tuple[Any, Any]:
        """The terms of slices ``x``, ``w`` (gathered when the terms are indexed)."""
        if self.il is None:
            return x, w
        return (jnp.take(x, self.il, axis=-1, mode="clip"),
                None if w is None else jnp.take(w, self.ir, axis=-1, mode="clip"))

    def pad_to(self, K: int) -> _Terms:
        if K == self.K:
            return self

        def pad(a):
            cfg = [(0, K - self.K)] + [(0, 0)] * (a.ndim - 1)
            return jnp.pad(a, cfg)

        return _Terms(pad(self.x), None if self.w is None else pad(self.w), self.il, self.ir)

    def split(self, nb: int, bsz: int) -> _Terms:
        def rs(a):
            return a.reshape((nb, bsz) + a.shape[1:])

        return _Terms(rs(self.x), None if self.w is None else rs(self.w), self.il, self.ir)


def _step(ar: Arithmetic, s: Any, x: Any, w: Any) -> Any:
    """One accumulation step ``s <- s + term``."""
    fmt, ov = ar.precision, ar.overflow
    if w is None:
        return X.add(s, x, fmt, ov)
    if ar.fma:
        return X.fma(x, w, s, fmt, ov)
    return X.add(s, X.mul(x, w, fmt, ov), fmt, ov)


def _rerr(ar: Arithmetic, y: Any, exact: Any) -> Any:
    """Bound on one rounding that produced ``y`` (0 where ``exact`` says it was exact and
    ``y`` is finite: an infinite operand times zero is NaN, never certified)."""
    r = X.rounding_error_bound(y, ar.precision, ar.overflow)
    return jnp.where(exact & jnp.isfinite(y), jnp.zeros_like(r), r)


def _add_e(ar: Arithmetic, a: Any, b: Any) -> tuple[Any, Any]:
    """``RN(a + b)`` and the bound on its rounding (an addition of a zero is exact)."""
    s = X.add(a, b, ar.precision, ar.overflow)
    return s, _rerr(ar, s, (a == 0) | (b == 0))


def _step_e(ar: Arithmetic, s: Any, x: Any, w: Any) -> tuple[Any, Any]:
    """:func:`_step` and the bound on the roundings it made."""
    fmt, ov = ar.precision, ar.overflow
    if w is None:
        return _add_e(ar, s, x)
    zero = (x == 0) | (w == 0)  # the exact product is zero: exact term
    if ar.fma:
        r = X.fma(x, w, s, fmt, ov)
        return r, _rerr(ar, r, zero)
    p = X.mul(x, w, fmt, ov)
    r, e = _add_e(ar, s, p)
    return r, e + _rerr(ar, p, zero)


_GATHER_CHUNK = 32  # steps per gather in a gathered recursive sum
_COMPONENT_CHUNK = 8192  # components per pass in a gathered product (keeps a step's data in cache)


def _recursive(ar: Arithmetic, t: _Terms, init: Any, track: bool = False) -> Any:
    if t.il is not None and t.K > 1:
        # gathered terms: one gather per chunk of steps (zero-padded: adding an exact zero
        # term changes nothing), then a plain scan over the gathered chunk
        C = min(_GATHER_CHUNK, t.K)
        nc = -(-t.K // C)
        tc = t.pad_to(nc * C).split(nc, C)
        xs = (tc.x,) if tc.w is None else (tc.x, tc.w)

        def chunk(c, xw):
            x, w = t.take(xw[0], xw[1] if len(xw) > 1 else None)
            sub = _Terms(x, w)
            if track:
                s, e = _recursive(ar, sub, c[0], True)
                return (s, c[1] + e), None
            return _recursive(ar, sub, c, False), None

        c0 = (init, jnp.zeros_like(init)) if track else init
        c, _ = lax.scan(chunk, c0, xs)
        return c
    if t.w is None:
        xs = (t.x,)
    else:
        xs = (t.x, t.w)

    if track:
        def body_e(c, xw):
            s, e = c
            s, r = _step_e(ar, s, *t.take(xw[0], xw[1] if len(xw) > 1 else None))
            return (s, e + r), None

        c, _ = lax.scan(body_e, (init, jnp.zeros_like(init)), xs)
        return c

    def body(s, xw):
        return _step(ar, s, *t.take(xw[0], xw[1] if len(xw) > 1 else None)), None

    s, _ = lax.scan(body, init, xs)
    return s


def _blocked(ar: Arithmetic, t: _Terms, bsz: int, zeros: Any, track: bool = False) -> Any:
    bsz = min(bsz, t.K)
    nb = -(-t.K // bsz)
    tb = t.pad_to(nb * bsz).split(nb, bsz)
    fmt, ov = ar.precision, ar.overflow

    def block_sum(x, w):
        # a nested scan: unrolled steps let XLA fuse (and recompute) the whole chain
        return _recursive(ar, _Terms(x, w), zeros, track)

    xs = (tb.x,) if tb.w is None else (tb.x, tb.w)
    if track:
        def body_e(c, xw):
            total, e = c
            bs, be = block_sum(*t.take(xw[0], xw[1] if len(xw) > 1 else None))
            total, r = _add_e(ar, total, bs)
            return (total, e + (be + r)), None

        c, _ = lax.scan(body_e, (zeros, jnp.zeros_like(zeros)), xs)
        return c

    def body(total, xw):
        x, w = t.take(xw[0], xw[1] if len(xw) > 1 else None)
        return X.add(total, block_sum(x, w), fmt, ov), None

    total, _ = lax.scan(body, zeros, xs)
    return total


def _tree(ar: Arithmetic, v: Any, e: Any = None) -> Any:
    """Balanced pairwise sum over the leading axis (length a power of two); with ``e``
    (the leaves' error bounds) also the bound of the sum's error."""
    fmt, ov = ar.precision, ar.overflow
    while v.shape[0] > 1:
        h = v.reshape((v.shape[0] // 2, 2) + v.shape[1:])
        if e is None:
            v = X.add(h[:, 0], h[:, 1], fmt, ov)
        else:
            he = e.reshape(h.shape)
            v, r = _add_e(ar, h[:, 0], h[:, 1])
            e = he[:, 0] + he[:, 1] + r
    return v[0] if e is None else (v[0], e[0])


def _pairwise(ar: Arithmetic, t: _Terms, track: bool = False) -> Any:
    K2 = 1 << max(0, math.ceil(math.log2(max(t.K, 1))))
    t = t.pad_to(K2)
    fmt, ov = ar.precision, ar.overflow

    def leaves(x, w):
        if not track:
            return x if w is None else X.mul(x, w, fmt, ov)
        if w is None:
            return x, jnp.zeros_like(x)
        p = X.mul(x, w, fmt, ov)
        return p, _rerr(ar, p, (x == 0) | (w == 0))

    def tree(xw):
        lv = leaves(*t.take(xw[0], xw[1] if len(xw) > 1 else None))
        return _tree(ar, *lv) if track else _tree(ar, lv)

    out_size = math.prod(t.out_shape)
    # chunks of at most ~2**22 leaf elements evaluated at a time
    chunk = 1 << max(1, min(int(math.log2(K2)), int(math.log2(max(1, (1 << 22) // max(out_size, 1))))))
    chunk = min(chunk, K2)
    if chunk == K2:
        return tree((t.x,) if t.w is None else (t.x, t.w))
    nb = K2 // chunk
    tb = t.split(nb, chunk)
    xs = (tb.x,) if tb.w is None else (tb.x, tb.w)

    def body(_, xw):
        return None, tree(xw)

    _, sums = lax.scan(body, None, xs)
    return _tree(ar, *sums) if track else _tree(ar, sums)


def _accumulate(ar: Arithmetic, t: _Terms, dtype: Any, track: bool = False) -> Any:
    acc = ar.accumulation
    zeros = jnp.zeros(t.out_shape, dtype)
    if t.K == 0:
        return (zeros, zeros) if track else zeros
    if acc.kind == "recursive":
        return _recursive(ar, t, zeros, track)
    if acc.kind == "blocked":
        return _blocked(ar, t, acc.block, zeros, track)
    if acc.kind == "pairwise":
        return _pairwise(ar, t, track)
    if acc.kind == "wide":
        raise AssertionError("wide accumulation is handled by the callers")
    raise ValueError(f"unsupported accumulation {acc}")


def _wide_arith(ar: Arithmetic) -> Arithmetic:
    return Arithmetic(ar.accumulation.wide, Accumulation("recursive"), False, "inf")


def emulated_sum(x: Any, axes: tuple[int, ...], ar: Arithmetic) -> Any:
    """``reduce_sum`` of carrier values ``x`` over ``axes`` under ``ar``'s accumulation."""
    axes = tuple(sorted(int(a) for a in axes))
    if not axes:
        return x
    keep = [d for d in range(x.ndim) if d not in axes]
    K = math.prod(x.shape[a] for a in axes)
    xt = jnp.transpose(x, axes + tuple(keep)).reshape((K,) + tuple(x.shape[d] for d in keep))
    acc = ar.accumulation
    if acc.kind == "wide":
        w = acc.wide
        if X.is_native(w, x.dtype):
            return ar.round(jnp.sum(xt, axis=0))
        return ar.round(_accumulate(_wide_arith(ar), _Terms(xt), x.dtype))
    return _accumulate(ar, _Terms(xt), x.dtype)


def emulated_dot_general(lhs: Any, rhs: Any, dimension_numbers: Any, ar: Arithmetic) -> Any:
    """``lax.dot_general`` of carrier values under ``ar``'s accumulation model.

    ``lhs`` and ``rhs`` must already hold values of the format (see :meth:`Arithmetic.round`)."""
    (lc, rc), (lb, rb) = dimension_numbers
    lc, rc, lb, rb = (tuple(int(d) for d in t) for t in (lc, rc, lb, rb))
    lf = tuple(d for d in range(lhs.ndim) if d not in lc and d not in lb)
    rf = tuple(d for d in range(rhs.ndim) if d not in rc and d not in rb)
    acc = ar.accumulation
    dt = lhs.dtype
    if acc.kind == "wide" and X.is_native(acc.wide, dt):
        y = lax.dot_general(lhs, rhs, dimension_numbers, precision=lax.Precision.HIGHEST,
                            preferred_element_type=dt)
        return ar.round(y)
    bshape = tuple(lhs.shape[d] for d in lb)
    lfs = tuple(lhs.shape[d] for d in lf)
    rfs = tuple(rhs.shape[d] for d in rf)
    K = math.prod(lhs.shape[d] for d in lc)
    B, M, N = math.prod(bshape), math.prod(lfs), math.prod(rfs)
    lk = jnp.transpose(lhs, lc + lb + lf).reshape(K, B, M, 1)
    rk = jnp.transpose(rhs, rc + rb + rf).reshape(K, B, 1, N)
    terms = _Terms(lk, rk)
    if acc.kind == "wide":
        y = ar.round(_accumulate(_wide_arith(ar), terms, dt))
    else:
        y = _accumulate(ar, terms, dt)
    return y.reshape(bshape + lfs + rfs)


def emulated_gathered_dot(lt: Any, rt: Any, il: Any, ir: Any, ar: Arithmetic) -> Any:
    """``y[j] = sum_k lt[k, il[j]] * rt[k, ir[j]]`` under ``ar``'s accumulation, gathering
    each step's (or block's) terms from the tables instead of materialising the ``(K,
    len(il))`` operands: the same order and roundings as :func:`emulated_dot_general` on
    those rows and columns, at a cost proportional to ``len(il)``. ``lt``, ``rt`` hold
    values of the format; ``wide:`` accumulation is done by XLA on the gathered operands."""
    acc = ar.accumulation
    if acc.kind == "wide":
        xs, ws = jnp.take(lt, il, axis=1), jnp.take(rt, ir, axis=1)
        return emulated_dot_general(xs, ws, (((0,), (0,)), ((1,), (1,))), ar)
    n = il.shape[0]
    CH = _COMPONENT_CHUNK
    if n <= CH:
        return _accumulate(ar, _Terms(lt, rt, il, ir), lt.dtype)
    # components in cache-sized chunks, each accumulated over the whole contraction
    nch = -(-n // CH)
    pad = nch * CH - n
    il2 = jnp.pad(il, (0, pad)).reshape(nch, CH)
    ir2 = jnp.pad(ir, (0, pad)).reshape(nch, CH)
    ys = lax.map(lambda ij: _accumulate(ar, _Terms(lt, rt, ij[0], ij[1]), lt.dtype), (il2, ir2))
    return ys.reshape(-1)[:n]


def emulated_dot_general_with_bound(lhs: Any, rhs: Any, dimension_numbers: Any, ar: Arithmetic) -> tuple[Any, Any]:
    """:func:`emulated_dot_general` and an *a-posteriori* (running-error) bound on its
    rounding error, computed alongside it from the intermediate results.

    Returns ``(y, e)`` with, componentwise, ``|y - sum_k lhs_k rhs_k| <= e`` (the exact
    real inner product of the given format values), for the ``"recursive"``,
    ``"blocked:B"`` and ``"pairwise"`` models, with or without FMA, ``overflow`` either
    way.

    **Proof.** Every operation the model performs is ``c = RN(z)`` with ``z`` the exact
    result on the *computed* operands: ``z = a + b`` (addition), ``z = x w`` (a rounded
    product) or ``z = s + x w`` (FMA). Write ``c = z + d``. Unrolling the summation tree
    (each operand is a term, an exact product inside an FMA, or an earlier result),
    ``y = sum_k x_k w_k + sum_ops d_op`` exactly, because every operation is linear in its
    operands; so ``|y - sum_k x_k w_k| <= sum_ops |d_op|``. Each ``|d_op|`` is bounded
    from the computed ``c`` alone by :func:`jaxerr._exact.rounding_error_bound` (half an
    ulp of ``c``, the underflow quantum, ``2**emin`` for a flushed zero, ``inf`` for
    overflow or saturation), and ``d_op = 0`` when an operand of an addition is zero or
    the exact product is zero (the result is then a format value, returned exactly).
    This needs no ``n u < 1``: it sums the roundings that actually happened. The bounds
    are powers of two (at least the carrier's smallest normal, or 0 or inf) added in the
    carrier along a tree of depth at most ``m = 3K + 8``; every partial sum of
    nonnegative numbers rounded to nearest is at least ``(1 - u_c)^m`` times the exact
    one, so the exact sum is at most the computed one times ``1 + gamma_m(u_c)``, which
    is applied rounded up (``_formats.scale_up``).

    Cost: one extra carrier addition and exponent extraction per operation (no second
    pass over the data). ``"wide:"`` accumulations are not supported (their order is
    XLA's); use the a-priori bound there.
    """
    (lc, rc), (lb, rb) = dimension_numbers
    lc, rc, lb, rb = (tuple(int(d) for d in t) for t in (lc, rc, lb, rb))
    lf = tuple(d for d in range(lhs.ndim) if d not in lc and d not in lb)
    rf = tuple(d for d in range(rhs.ndim) if d not in rc and d not in rb)
    if ar.accumulation.kind == "wide":
        raise NotImplementedError("running-error bounds need an explicit order: not 'wide:' accumulation")
    dt = lhs.dtype
    bshape = tuple(lhs.shape[d] for d in lb)
    lfs = tuple(lhs.shape[d] for d in lf)
    rfs = tuple(rhs.shape[d] for d in rf)
    K = math.prod(lhs.shape[d] for d in lc)
    B, M, N = math.prod(bshape), math.prod(lfs), math.prod(rfs)
    lk = jnp.transpose(lhs, lc + lb + lf).reshape(K, B, M, 1)
    rk = jnp.transpose(rhs, rc + rb + rf).reshape(K, B, 1, N)
    y, e = _accumulate(ar, _Terms(lk, rk), dt, track=True)
    uc = 2.0 ** -X._carrier_of(dt).P
    e = F.scale_up(e, 1.0 + F.gamma(3 * K + 8, uc))
    shape = bshape + lfs + rfs
    return y.reshape(shape), e.reshape(shape)


def emulated_conv(lhs: Any, rhs: Any, params: dict, ar: Arithmetic) -> Any:
    """``conv_general_dilated`` as a dot product of exact patches (contraction order:
    input feature, then the filter's spatial dimensions row-major)."""
    if params.get("feature_group_count", 1) != 1 or params.get("batch_group_count", 1) != 1:
        raise NotImplementedError("jaxerr.emulate: grouped convolutions are not supported")
    dn = params["dimension_numbers"]
    rhs_spec, out_spec = dn.rhs_spec, dn.out_spec
    filt_spatial = tuple(rhs.shape[d] for d in rhs_spec[2:])
    patches = lax.conv_general_dilated_patches(
        lhs, filt_spatial, params["window_strides"], params["padding"],
        lhs_dilation=params["lhs_dilation"], rhs_dilation=params["rhs_dilation"],
        dimension_numbers=dn, precision=lax.Precision.HIGHEST, preferred_element_type=lhs.dtype,
    )
    # patches: out layout, feature dim of size C * prod(filter spatial), C-major
    w = jnp.transpose(rhs, (rhs_spec[0], rhs_spec[1]) + tuple(rhs_spec[2:]))
    w = w.reshape(w.shape[0], -1)  # (O, C*S)
    fdim = out_spec[1]
    y = emulated_dot_general(patches, w, (((fdim,), (1,)), ((), ())), ar)
    nd = patches.ndim
    rest = [d for d in range(nd) if d != fdim]
    perm = [nd - 1 if a == fdim else rest.index(a) for a in range(nd)]
    return jnp.transpose(y, perm)


# ---------------------------------------------------------------------------
# The interpreter
# ---------------------------------------------------------------------------


def _is_float(dtype: Any) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.floating))


# Primitives whose floating results are values of their operands (or exact functions of
# them that stay in the format): evaluated as they are.
_STRUCTURAL_NAMES = (
    "neg abs sign max min select_n clamp eq ne lt le gt ge reshape broadcast_in_dim transpose "
    "squeeze expand_dims concatenate slice dynamic_slice dynamic_update_slice gather rev pad "
    "reduce_max reduce_min argmax argmin sort floor ceil round is_finite stop_gradient copy copy_p "
    "and or not xor shift_left shift_right_logical shift_right_arithmetic rem sign "
    "reduce_and reduce_or population_count clz split optimization_barrier nextafter "
    "scatter scatter-add select_and_gather_add"
).split()
_STRUCTURAL = frozenset(p for p in (P(n) for n in _STRUCTURAL_NAMES) if p is not None)

# Functions evaluated in the carrier and rounded once to the format.
_ONCE_NAMES = (
    "exp exp2 log log1p expm1 tanh logistic erf erfc erf_inv sin cos tan asin acos atan sinh cosh "
    "asinh acosh atanh atan2 pow rsqrt cbrt lgamma digamma igamma igammac"
).split()
_ONCE = frozenset(p for p in (P(n) for n in _ONCE_NAMES) if p is not None)


class _Emu:
    def __init__(self, ar: Arithmetic):
        self.ar = ar
        self.fmt = ar.precision
        self.dt = ar.carrier

    # values ---------------------------------------------------------------
    def enter(self, v: Any, aval: Any) -> Any:
        """An input / constant / literal: floats go to the carrier, rounded to the format."""
        v = jnp.asarray(v)
        if _is_float(aval.dtype):
            return self.ar.round(v.astype(self.dt)) if v.dtype != self.dt else self.ar.round(v)
        return v

    def rnd(self, v: Any) -> Any:
        return self.ar.round(v)

    # evaluation -------------------------------------------------------------
    def run(self, jaxpr: Any, consts: list, args: list) -> list:
        env: dict = {}

        def read(a):
            if isinstance(a, _compat.Literal):
                return self.enter(a.val, a.aval)
            return env[a]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = c
        for v, a in zip(jaxpr.invars, args):
            env[v] = a
        for eqn in jaxpr.eqns:
            ins = [read(a) for a in eqn.invars]
            outs = self.eqn(eqn, ins)
            if not eqn.primitive.multiple_results:
                outs = [outs]
            for v, o in zip(eqn.outvars, outs):
                if _compat.DropVar is None or not isinstance(v, _compat.DropVar):
                    env[v] = o
        return [read(a) for a in jaxpr.outvars]

    def closed(self, cj: Any) -> Callable[..., list]:
        consts = [self.enter(c, v.aval) for c, v in zip(cj.consts, cj.jaxpr.constvars)]
        return lambda *a: self.run(cj.jaxpr, consts, list(a))

    def eqn(self, eqn: Any, ins: list) -> Any:
        prim = eqn.primitive
        params = dict(eqn.params)
        out_avals = [v.aval for v in eqn.outvars]
        float_out = any(_is_float(a.dtype) for a in out_avals)
        sub = _compat.call_subjaxpr(eqn)
        if sub is not None:
            jx, consts = sub
            consts = [self.enter(c, v.aval) for c, v in zip(consts, jx.constvars)]
            return self.run(jx, consts, ins)
        rule = _RULES.get(prim)
        if rule is not None:
            return rule(self, eqn, params, *ins)
        if not float_out or prim in _STRUCTURAL:
            return self.bind(prim, ins, params, eqn)
        if prim in _ONCE:
            out = self.bind(prim, ins, params, eqn)
            return self.rnd(out)
        raise NotImplementedError(
            f"jaxerr.emulate: primitive '{prim.name}' is not supported "
            f"({_compat.source_summary(eqn) or 'no source info'})"
        )

    def bind(self, prim: Any, ins: list, params: dict, eqn: Any) -> Any:
        for k in ("preferred_element_type",):
            if params.get(k) is not None and _is_float(params[k]):
                params[k] = self.dt
        out = prim.bind(*ins, **params)
        if prim.multiple_results:
            return [self._fix(o, v.aval) for o, v in zip(out, eqn.outvars)]
        return self._fix(out, eqn.outvars[0].aval)

    def _fix(self, o: Any, aval: Any) -> Any:
        if _is_float(aval.dtype) and o.dtype != self.dt:
            return self.rnd(o.astype(self.dt))
        return o


_RULES: dict[Any, Callable[..., Any]] = {}


def _rule(*names: str):
    def deco(fn):
        for n in names:
            p = P(n)
            if p is not None:
                _RULES[p] = fn
        return fn

    return deco


def _float_eqn(eqn: Any) -> bool:
    return _is_float(eqn.outvars[0].aval.dtype)


def _bin(op):
    def rule(E: _Emu, eqn, params, a, b):
        if not _float_eqn(eqn):
            return eqn.primitive.bind(a, b, **params)
        a, b = jnp.broadcast_arrays(a, b)
        return op(a, b, E.fmt, E.ar.overflow)

    return rule


_rule("add", "add_any")(_bin(X.add))
_rule("sub")(_bin(X.sub))
_rule("mul")(_bin(X.mul))
_rule("div")(_bin(X.div))


@_rule("sqrt")
def _sqrt(E: _Emu, eqn, params, x):
    return X.sqrt(x, E.fmt, E.ar.overflow)


@_rule("square")
def _square(E: _Emu, eqn, params, x):
    if not _float_eqn(eqn):
        return eqn.primitive.bind(x, **params)
    return X.mul(x, x, E.fmt, E.ar.overflow)


@_rule("integer_pow")
def _integer_pow(E: _Emu, eqn, params, x):
    if not _float_eqn(eqn):
        return eqn.primitive.bind(x, **params)
    y = int(params["y"])
    fmt, ov = E.fmt, E.ar.overflow
    n = abs(y)
    acc = None
    base = x
    while n > 0:  # JAX's binary powering
        if n & 1:
            acc = base if acc is None else X.mul(acc, base, fmt, ov)
        n >>= 1
        if n > 0:
            base = X.mul(base, base, fmt, ov)
    if acc is None:
        acc = jnp.ones_like(x)
    if y < 0:
        acc = X.div(jnp.ones_like(acc), acc, fmt, ov)
    return acc


@_rule("convert_element_type")
def _convert(E: _Emu, eqn, params, x):
    new = params["new_dtype"]
    if _is_float(new):
        if _is_float(x.dtype):
            return x  # already a value of the format
        return E.rnd(x.astype(E.dt))
    return eqn.primitive.bind(x, **params) if not _is_float(x.dtype) else x.astype(new)


@_rule("reduce_precision")
def _reduce_precision(E: _Emu, eqn, params, x):
    return E.rnd(eqn.primitive.bind(x, **params))


@_rule("iota", "full", "broadcast")
def _creating(E: _Emu, eqn, params, *ins):
    if _float_eqn(eqn):
        params = dict(params)
        if "dtype" in params:
            params["dtype"] = E.dt
    return E.bind(eqn.primitive, list(ins), params, eqn) if not _float_eqn(eqn) else E.rnd(
        eqn.primitive.bind(*ins, **params).astype(E.dt))


@_rule("reduce_sum")
def _reduce_sum(E: _Emu, eqn, params, x):
    if not _float_eqn(eqn):
        return eqn.primitive.bind(x, **params)
    return emulated_sum(x, tuple(params["axes"]), E.ar)


@_rule("dot_general")
def _dot(E: _Emu, eqn, params, a, b):
    if not _float_eqn(eqn):
        return eqn.primitive.bind(a, b, **params)
    a = a if _is_float(a.dtype) else E.rnd(a.astype(E.dt))
    b = b if _is_float(b.dtype) else E.rnd(b.astype(E.dt))
    return emulated_dot_general(a, b, params["dimension_numbers"], E.ar)


@_rule("conv_general_dilated")
def _conv(E: _Emu, eqn, params, a, b):
    return emulated_conv(a, b, params, E.ar)


@_rule("cond")
def _cond(E: _Emu, eqn, params, index, *ops):
    branches = [E.closed(br) for br in params["branches"]]
    return lax.switch(index, [lambda *a, f=f: f(*a) for f in branches], *ops)


@_rule("while")
def _while(E: _Emu, eqn, params, *ops):
    cn, bn = params["cond_nconsts"], params["body_nconsts"]
    cconsts, bconsts, init = ops[:cn], ops[cn:cn + bn], ops[cn + bn:]
    cf, bf = E.closed(params["cond_jaxpr"]), E.closed(params["body_jaxpr"])
    out = lax.while_loop(lambda c: cf(*cconsts, *c)[0], lambda c: tuple(bf(*bconsts, *c)), tuple(init))
    return list(out)


@_rule("scan")
def _scan(E: _Emu, eqn, params, *ops):
    nc, ncarry = params["num_consts"], params["num_carry"]
    consts, init, xs = ops[:nc], ops[nc:nc + ncarry], ops[nc + ncarry:]
    f = E.closed(params["jaxpr"])

    def body(c, x):
        out = f(*consts, *c, *x)
        return tuple(out[:ncarry]), tuple(out[ncarry:])

    carry, ys = lax.scan(body, tuple(init), tuple(xs), length=params["length"],
                         reverse=params["reverse"], unroll=params.get("unroll", 1))
    return list(carry) + list(ys)


@_rule("cumsum")
def _cumsum(E: _Emu, eqn, params, x):
    if not _float_eqn(eqn):
        return eqn.primitive.bind(x, **params)
    axis, rev = int(params["axis"]), bool(params.get("reverse", False))
    xt = jnp.moveaxis(x, axis, 0)

    def body(s, t):
        s = X.add(s, t, E.fmt, E.ar.overflow)
        return s, s

    _, ys = lax.scan(body, jnp.zeros_like(xt[0]), xt, reverse=rev)
    return jnp.moveaxis(ys, 0, axis)


def emulate(
    f: Callable[..., Any],
    precision: Any = "bfloat16",
    accumulation: Any = "recursive",
    *,
    fma: bool = False,
    overflow: str = "inf",
) -> Callable[..., Any]:
    """Return a function that evaluates ``f`` with every floating operation emulated in
    ``precision`` (a :class:`~jaxerr.Format`, a preset name or a dtype).

    **Guarantee:** basic arithmetic (``+ - * /``, ``sqrt``, conversions, rounding of
    inputs and constants) is bit-exact round-to-nearest-even in the format, and sums in
    ``dot_general`` / ``conv_general_dilated`` / ``reduce_sum`` follow the accumulation
    order documented in this module exactly, so the result equals a scalar
    reference implementation of the same model bit for bit. Transcendentals are rounded
    once from the carrier's value.

    **Arguments:**

    - `precision`: the number format.
    - `accumulation`: ``"recursive"``, ``"blocked:B"``, ``"pairwise"``, ``"wide:float32"``
      or ``"auto"`` (as in :func:`jaxerr.bound`).
    - `fma`: fuse each product into its accumulation step.
    - `overflow`: ``"inf"`` or ``"saturate"``.

    The returned function takes ``f``'s arguments and returns ``f``'s output pytree with
    floating leaves in the carrier dtype. It can be wrapped in ``jax.jit`` / ``jax.vmap``.
    """
    ar = Arithmetic.make(precision, accumulation, fma, overflow)

    @functools.wraps(f)
    def wrapped(*args: Any) -> Any:
        closed, out_shape = jax.make_jaxpr(f, return_shape=True)(*args)
        flat = jax.tree_util.tree_leaves(args)
        E = _Emu(ar)
        ins = [E.enter(a, v.aval) for a, v in zip(flat, closed.jaxpr.invars)]
        outs = E.closed(closed)(*ins)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

    return wrapped
