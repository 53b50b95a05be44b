"""Condition-guided mixed-precision inner products (after El Arar, Filip, Mary & Riccietti 2025).

Every output component of a ``dot_general`` is first computed in a *low* emulated
arithmetic (e.g. float8 e4m3 with blocked FMA accumulation); a criterion evaluated on that
low-precision result flags the components whose error is likely (or not certified) to
be too large after the following activation, and only those are recomputed in a *high*
arithmetic (e.g. float16, or native float32).

Criteria (``v^ = y_low + b`` is the low-precision pre-activation, ``phi`` the
activation, ``S = |x^|·|w^| + |b|``):

- ``"activation"``: the published rule of the seed paper's code: recompute where
  ``|phi'(v^) / phi(v^)| > tol`` (ReLU: recompute where ``0 < v^ < 1/tol``, keep where
  ``v^ <= 0``; no activation: ``phi(v) = v``).
- ``"condition"``: recompute where ``kappa_v · kappa_phi · gamma > tol`` with
  ``kappa_v = S / |v^|`` (condition of the inner product), ``kappa_phi = |v^ phi'(v^) /
  phi(v^)|`` (condition of the activation), and ``gamma`` the low accumulation's error
  constant for its depth ``d``: ``sqrt(d)·u`` (``gamma="sqrt"``, default: the
  probabilistic rule of thumb of Higham & Mary), ``d·u`` (``"linear"``) or the
  worst-case ``gamma_d = d u / (1 - d u)`` (``"worst"``; infinite when ``d u >= 1``).
  Where ``phi' = 0`` (ReLU, ``v^ < 0``) the output does not depend on ``v`` locally and
  the component is kept, unless ``sign_guard > 0`` and ``sign_guard · gamma · S > |v^|``
  (the sign itself is in doubt).
- ``"bound"``: recompute unless a *certified* bound on the error of the activated
  low-precision output is at most ``tol · |phi(v^)|``. With ``bound="running"``
  (default, for the ``recursive`` / ``blocked`` / ``pairwise`` low models) the bound is
  a-posteriori: the low product is computed together with its running-error bound
  (:func:`jaxerr._emulate.emulated_dot_general_with_bound`: the sum over the operations
  actually performed of half an ulp of each computed intermediate, zero for exact
  steps, infinite if any intermediate overflowed or saturated), which needs no
  ``n u < 1``. With ``bound="apriori"`` (and always for native float32 or ``wide:``
  low arithmetics) it is the worst-case ``a·|x^|·|w^| + c`` of
  :meth:`jaxerr.Accumulation.coefficients`, infinite when ``d u >= 1`` (long float8
  sums: then everything is recomputed). Either way the input rounding
  ``|x - x^|·|w| + |x^|·|w - w^|`` is added, then ``|scale|`` times it plus the float32
  roundings of ``y^·scale`` and ``+ bias`` (every term rounded upward), giving
  ``|v^ - v| <= e`` for the exact ``v = scale·(x·w) + bias`` of the float32 operands;
  ``e`` is pushed through ``phi`` with its Lipschitz constant on ``[v^ - e, v^ + e]``
  (ReLU: zero error where ``v^ + e <= 0``, as both outputs are then 0). ``phi``
  itself is taken as exact (its float32 evaluation is common to both precisions).

Three implementations with identical results (tested; with a native float32 ``high``
they agree up to float32 summation order):

- ``mode="masked"``: compute both results everywhere and select (the reference).
- ``mode="compacted"``: recompute only the flagged components (at most ``capacity``,
  static), one inner product each, and scatter them back. For an emulated ``high`` the
  terms are gathered from the operand tables a chunk of steps at a time, components
  processed in cache-sized chunks (:func:`jaxerr._emulate.emulated_gathered_dot`); for a
  native one XLA contracts gathered rows and columns. A gather costs about as much as
  an emulated multiply-add on CPU, so this pays off when few components are flagged.
- ``mode="columns"``: compaction by output component across the batch: the output
  columns with any flagged example (at most ``capacity`` of them) are recomputed for the
  whole batch as one dense product, keeping the matrix product's data reuse; pays off
  when flags concentrate on some components (e.g. ReLU units that are never in
  ``(0, 1/tau)`` are never flagged).

In both compacted modes more than ``capacity`` flagged units fall back to the masked
computation (``lax.cond``; under ``vmap`` both branches run). ``benchmarks/mixed.py``
measures where each wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from . import _compat
from . import _formats as F
from ._emulate import (
    Arithmetic,
    emulated_dot_general,
    emulated_dot_general_with_bound,
    emulated_gathered_dot,
)

__all__ = ["mixed_dot_general", "mixed_precision", "ACTIVATIONS"]

P = _compat.prim

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity", "exp")
CRITERIA = ("activation", "condition", "bound", "never", "always")
MODES = ("masked", "compacted", "columns")


def _arith(spec: Any, default_acc: str) -> Arithmetic | None:
    """None (native float32), an Arithmetic, a format name, or (format, accumulation[, fma[, overflow]])."""
    if spec is None or isinstance(spec, Arithmetic):
        return spec
    if isinstance(spec, (tuple, list)):
        return Arithmetic.make(*spec)
    return Arithmetic.make(spec, default_acc)


def _canon(lhs, rhs, dimension_numbers):
    (lc, rc), (lb, rb) = dimension_numbers
    lc, rc, lb, rb = (tuple(int(d) for d in t) for t in (lc, rc, lb, rb))
    lf = tuple(d for d in range(lhs.ndim) if d not in lc and d not in lb)
    rf = tuple(d for d in range(rhs.ndim) if d not in rc and d not in rb)
    K = math.prod(lhs.shape[d] for d in lc)
    bshape = tuple(lhs.shape[d] for d in lb)
    lfs = tuple(lhs.shape[d] for d in lf)
    rfs = tuple(rhs.shape[d] for d in rf)
    B, M, N = math.prod(bshape), math.prod(lfs), math.prod(rfs)
    l3 = jnp.transpose(lhs, lb + lf + lc).reshape(B, M, K)
    r3 = jnp.transpose(rhs, rb + rc + rf).reshape(B, K, N)
    return l3, r3, K, bshape + lfs + rfs


def _dot(ar: Arithmetic | None, lhs, rhs, dn):
    """The dot product in arithmetic ``ar`` (inputs rounded to its format first)."""
    if ar is None:
        return lax.dot_general(lhs, rhs, dn, precision=lax.Precision.HIGHEST,
                               preferred_element_type=jnp.float32)
    dt = ar.carrier
    return emulated_dot_general(ar.round(lhs.astype(dt)), ar.round(rhs.astype(dt)), dn, ar)


def _abs_dot_up(a, b, dn, n: int):
    """Upper bound of ``|a|·|b|`` (float32 product of nonnegatives, rounded up)."""
    r = lax.dot_general(jnp.abs(a), jnp.abs(b), dn, precision=lax.Precision.HIGHEST,
                        preferred_element_type=jnp.float32)
    g = F.gamma(n + 1, 2.0**-24)
    return F.add_up_nn(F.scale_up(r, 1 + 2 * g), F.static_up(2 * n * float(np.finfo(np.float32).tiny), r.dtype))


def _phi(act: str, v):
    if act == "exp":
        e = jnp.exp(v)
        return e, e
    if act == "relu":
        return jnp.maximum(v, 0.0), jnp.where(v > 0, 1.0, 0.0).astype(v.dtype)
    if act == "tanh":
        t = jnp.tanh(v)
        return t, 1.0 - t * t
    if act == "sigmoid":
        s = jax.nn.sigmoid(v)
        return s, s * (1.0 - s)
    return v, jnp.ones_like(v)


def _lipschitz(act: str, v, e):
    """Upper bound of |phi'| on [v - e, v + e] (a small relative safety margin added)."""
    m = jnp.maximum(F.sub_dn(jnp.abs(v), e), 0.0)  # a lower bound of |v| on the interval
    if act == "tanh":
        t = jnp.tanh(m)
        return jnp.minimum((1.0 - t * t) * (1 + 2.0**-18) + 2.0**-20, 1.0)
    if act == "sigmoid":
        s = jax.nn.sigmoid(m)
        return jnp.minimum(s * (1.0 - s) * (1 + 2.0**-18) + 2.0**-20, 0.25)
    return jnp.ones_like(v)


def _gamma_est(ar: Arithmetic, n: int, kind: str) -> float:
    u = ar.precision.unit_roundoff
    d = ar.accumulation.depth(n, products=True) if ar.accumulation.kind != "wide" else 1
    if kind == "sqrt":
        return math.sqrt(d) * u
    if kind == "linear":
        return d * u
    if kind == "worst":
        return F.gamma(d, u)
    raise ValueError(f"gamma must be 'sqrt', 'linear' or 'worst', got {kind!r}")


def _flags(criterion, tol, act, low, lhs, rhs, dn, K, y_low, bias, gamma, scale, acc_err=None, divide=False,
           sign_guard=0.0):
    sy = y_low if scale is None else (y_low / scale if divide else y_low * scale)
    v = sy if bias is None else sy + bias
    if criterion == "never":
        return jnp.zeros(v.shape, bool)
    if criterion == "always":
        return jnp.ones(v.shape, bool)
    if criterion == "activation":
        if act == "exp":  # |phi'/phi| = 1 everywhere: the seed rule cannot discriminate
            return jnp.broadcast_to(tol < 1.0, v.shape)
        phi, dphi = _phi(act, v)
        # |phi'/phi| > tol  <=>  |phi'| > tol |phi|; phi = 0 with phi' = 0: keep
        return jnp.abs(dphi) > tol * jnp.abs(phi)
    if criterion == "bound" and acc_err is not None:
        return ~_certified_running(low, act, lhs, rhs, dn, K, y_low, sy, v, scale, bias is not None, acc_err, tol,
                                   divide)
    S0 = _abs_dot_up(lhs, rhs, dn, K) if low is None else _abs_dot_up(
        low.round(lhs.astype(low.carrier)), low.round(rhs.astype(low.carrier)), dn, K)
    S = S0
    if scale is not None:
        S = F.div_up(S, jnp.abs(scale)) if divide else F.mul_up(S, jnp.abs(scale))
    if bias is not None:
        S = F.add_up_nn(S, jnp.abs(bias))
    if criterion == "condition":
        g = _gamma_est(low, K, gamma) if low is not None else 2.0**-24
        if act == "exp":  # kappa_v kappa_exp = (S / |v|) |v| = S: an absolute error of the score
            return S * g > tol
        phi, dphi = _phi(act, v)
        # kappa_v kappa_phi gamma = S |phi'| gamma / |phi|  > tol
        flags = (dphi != 0) & (S * jnp.abs(dphi) * g > tol * jnp.abs(phi))
        if act == "relu" and not (isinstance(sign_guard, (int, float)) and sign_guard == 0):
            # v^ <= 0 whose sign the estimate cannot trust
            flags = flags | ((v <= 0) & (S * g * sign_guard > jnp.abs(v)))
        return flags
    if criterion == "bound":
        return ~_certified(low, act, lhs, rhs, dn, K, y_low, sy, v, S0, scale, bias is not None, tol, divide)
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")


_U32 = 2.0**-24
_TINY32 = float(np.finfo(np.float32).tiny)


def _input_rounding(low, lhs, rhs, dn, K):
    """Upper bound of ``|x·w - x^·w^|`` (``x^, w^`` the operands rounded to ``low``'s
    format): ``|x - x^|·|w| + |x^|·|w - w^|`` (the differences are exact in float32)."""
    xr = low.round(lhs.astype(low.carrier))
    wr = low.round(rhs.astype(low.carrier))
    return F.add_up_nn(_abs_dot_up(lhs - xr, rhs, dn, K), _abs_dot_up(xr, rhs - wr, dn, K))


def _pre_activation_error(e, sy, v, scale, has_bias, divide=False):
    """Push a bound ``e`` on the product's error through ``v^ = fl(fl(y^ s) + b)``:
    ``|v^ - (s·y + b)| <= |s| e + |fl(y^ s) - y^ s| + |v^ - (fl(y^ s) + b)|``, each float32
    rounding bounded by ``2**-24`` times its result plus the smallest normal (flush); with
    ``divide``, ``y^ / s`` and ``e / |s|`` instead."""
    if scale is not None:
        es = F.div_up(e, jnp.abs(scale)) if divide else F.mul_up(e, jnp.abs(scale))
        e = F.add_up_nn(es,
                        F.add_up_nn(F.scale_up(jnp.abs(sy), _U32), F.static_up(_TINY32, sy.dtype)))
    if has_bias:
        e = F.add_up_nn(e, F.add_up_nn(F.scale_up(jnp.abs(v), _U32), F.static_up(_TINY32, v.dtype)))
    return e


def _activated_ok(act, v, e, tol):
    """True where ``|phi(v^) - phi(v)| <= tol |phi(v^)|`` for every ``v`` with ``|v - v^| <= e``
    (``phi`` evaluated exactly): the Lipschitz constant of ``phi`` on ``[v^ - e, v^ + e]``
    times ``e``; for ReLU the error is zero where ``v^ + e <= 0`` (both outputs are 0)."""
    if act == "exp":  # |exp(v) - exp(v^)| <= exp(v^) expm1(e): relative, independent of v^
        return jnp.isfinite(e) & (jnp.expm1(e) * (1 + 2.0**-20) <= tol)
    phi, _ = _phi(act, v)
    L = _lipschitz(act, v, e)
    eo = F.mul_up(L, e)
    if act == "relu":
        eo = jnp.where(F.add_up(v, e) <= 0, 0.0, eo)
    return jnp.isfinite(e) & (eo <= tol * jnp.abs(phi))


def _certified_running(low, act, lhs, rhs, dn, K, y_low, sy, v, scale, has_bias, acc_err, tol, divide=False):
    """The a-posteriori certificate: ``acc_err`` is the running-error bound of the low
    accumulation (:func:`jaxerr._emulate.emulated_dot_general_with_bound`), which is
    infinite wherever an intermediate overflowed or saturated."""
    e = F.add_up_nn(_input_rounding(low, lhs, rhs, dn, K), acc_err)
    e = _pre_activation_error(e, sy, v, scale, has_bias, divide)
    return jnp.isfinite(y_low) & _activated_ok(act, v, e, tol)


def _certified(low, act, lhs, rhs, dn, K, y_low, sy, v, S, scale, has_bias, tol, divide=False):
    """True where the low-precision activated output is certified within tol·|phi(v^)|
    by the a-priori (worst-case ``gamma``) bound."""
    if low is None:
        a = 0.0
        fmt_max = float(np.finfo(np.float32).max)
        e = F.add_up_nn(F.scale_up(S, F.gamma(K + 1, _U32)), F.static_up(2 * (K + 1) * _TINY32, S.dtype))
    else:
        fmt = low.precision
        a, b, c = low.accumulation.coefficients(K, fmt, products=True)
        fmt_max = fmt.max_finite
        e = _input_rounding(low, lhs, rhs, dn, K)
        if math.isinf(a):
            e = jnp.full_like(S, jnp.inf)
        else:
            e = F.add_up_nn(e, F.scale_up(S, a))
            if b:
                e = F.add_up_nn(e, F.scale_up(jnp.abs(y_low), b))
            e = F.add_up_nn(e, F.static_up(c, S.dtype))
    e = _pre_activation_error(e, sy, v, scale, has_bias, divide)
    ok = (F.scale_up(S, 1.0 + (0.0 if math.isinf(a) else a)) < fmt_max) & jnp.isfinite(y_low)
    return ok & _activated_ok(act, v, e, tol)


def _compacted(high, l3, r3, flags, y_low, cap):
    """Recompute the first ``cap`` flagged components (row-major), one inner product each.

    Emulated ``high``: :func:`jaxerr._emulate.emulated_gathered_dot` gathers each step's
    terms from the (rounded) operand tables, so the cost is ``cap·K`` emulated
    multiply-adds and no ``(cap, K)`` operand copy. Native float32 ``high``: the rows and
    columns are gathered and contracted by XLA (a batch of ``cap`` vector products)."""
    total = flags.size
    Bd, Md, K = l3.shape
    Nd = r3.shape[2]
    (idx,) = jnp.nonzero(flags.reshape(-1), size=cap, fill_value=total)
    safe = jnp.minimum(idx, total - 1)
    b, rest = jnp.divmod(safe, Md * Nd)
    m, n = jnp.divmod(rest, Nd)
    if high is None:
        xs = l3[b, m, :]
        ws = r3[b, :, n]
        vals = lax.dot_general(xs, ws, (((1,), (1,)), ((0,), (0,))), precision=lax.Precision.HIGHEST,
                               preferred_element_type=jnp.float32)
    else:
        dt = high.carrier
        lt = high.round(jnp.transpose(l3, (2, 0, 1)).reshape(K, Bd * Md).astype(dt))
        rt = high.round(jnp.transpose(r3, (1, 0, 2)).reshape(K, Bd * Nd).astype(dt))
        vals = emulated_gathered_dot(lt, rt, b * Md + m, b * Nd + n, high).astype(jnp.float32)
    return y_low.reshape(-1).at[idx].set(vals, mode="drop").reshape(y_low.shape)


def _columns(high, l3, r3, flags, colflags, y_low, cap):
    """Compaction by output component across the batch: the columns ``(b, n)`` with any
    flagged example (at most ``cap``) are recomputed for the whole batch ``m`` as one
    product ``l3[b] @ r3[b][:, cols]`` (a dense matrix product, keeping its data reuse);
    only the flagged entries are taken from it."""
    Bd, Md, K = l3.shape
    Nd = r3.shape[2]
    (cols,) = jnp.nonzero(colflags, size=cap, fill_value=Bd * Nd)
    safe = jnp.minimum(cols, Bd * Nd - 1)
    b, n = jnp.divmod(safe, Nd)
    ws = r3[b, :, n]  # (cap, K)
    if Bd == 1:
        vals = _dot(high, l3[0], ws, (((1,), (1,)), ((), ())))  # (M, cap)
        vals = vals.astype(jnp.float32)[None]  # (1, M, cap)
        bsel = jnp.zeros_like(b)
    else:
        xs = l3[b]  # (cap, M, K)
        vals = _dot(high, xs, ws, (((2,), (1,)), ((0,), (0,)))).astype(jnp.float32)  # (cap, M)
        vals = jnp.transpose(vals, (1, 0))[None]
        bsel = b
    y3 = y_low.reshape(Bd, Md, Nd)
    f3 = flags.reshape(Bd, Md, Nd)
    # the recomputed columns, scattered back where flagged
    mi = jnp.arange(Md)
    real = cols < Bd * Nd
    nd = jnp.where(real, n, Nd)  # padding entries point out of range: dropped by the scatter
    if Bd == 1:
        upd = jnp.where(f3[0][:, n], vals[0], y3[0][:, n])
        return y3[0].at[:, nd].set(upd, mode="drop").reshape(y_low.shape)
    cur = y3[bsel[None, :], mi[:, None], n[None, :]]  # (M, cap)
    fl = f3[bsel[None, :], mi[:, None], n[None, :]]
    upd = jnp.where(fl, vals[0], cur)
    y3 = y3.at[bsel[None, :], mi[:, None], nd[None, :]].set(upd, mode="drop")
    return y3.reshape(y_low.shape)


def mixed_dot_general(
    lhs: Any,
    rhs: Any,
    dimension_numbers: Any,
    *,
    low: Any = ("float8_e4m3fn", "blocked:8", True, "saturate"),
    high: Any = ("float16", "recursive"),
    tol: float,
    activation: str | None = None,
    criterion: str = "activation",
    bias: Any = None,
    scale: Any = None,
    mode: str = "masked",
    capacity: int | float | None = None,
    gamma: str = "sqrt",
    bound: str = "running",
    sign_guard: float = 0.0,
    divide: bool = False,
    return_stats: bool = False,
) -> Any:
    """``lax.dot_general(lhs, rhs, dimension_numbers)`` computed in ``low`` precision, with
    the components flagged by ``criterion`` recomputed in ``high`` precision.

    **Arguments:**

    - `low`, `high`: the two arithmetics: an :class:`~jaxerr.Arithmetic`, a
      format name (recursive accumulation), a tuple ``(format, accumulation[, fma[,
      overflow]])``, or None for native float32. Operands are rounded to each format.
    - `tol`: the criterion's threshold (``tau`` of the seed rule; a relative error target
      for ``"condition"`` and ``"bound"``).
    - `activation`: ``"relu"``, ``"tanh"``, ``"sigmoid"`` or None (identity) applied to
      ``y + bias`` after the product.
    - `criterion`: ``"activation"``, ``"condition"`` or ``"bound"`` (module docstring).
    - `bias`, `scale`: the pre-activation is ``scale * y + bias`` (``y / scale + bias``
      with ``divide=True``; both broadcastable to the result, used by the criteria only:
      neither is applied to the returned ``y``).
    - `criterion` may also be ``"never"`` / ``"always"`` (uniform low / high baselines).
    - `mode`: ``"masked"``, ``"compacted"`` or ``"columns"``; `capacity`: static number
      (or fraction when < 1) of components (``"compacted"``) or output columns
      (``"columns"``) recomputed before falling back to the masked computation
      (default: a quarter).
    - `bound`: ``"running"`` (a-posteriori running-error bound, default) or ``"apriori"``
      (worst-case constants) for ``criterion="bound"``.
    - `sign_guard`: with ``criterion="condition"`` and ReLU, also recompute ``v^ <= 0``
      where ``sign_guard · gamma · S > |v^|`` (the estimated error could flip the sign,
      which ``kappa_phi = 0`` ignores); 0 (default) keeps every ``v^ <= 0`` like the seed.
    - `return_stats`: also return ``{"recomputed": fraction, "count": n, "fallback": bool,
      "columns": fraction of output components (batch included) with a flagged example}``.

    **Guarantee:** a recomputed component equals the ``high`` result bit for bit; a kept
    one equals the ``low`` result. With ``criterion="bound"``, every kept component's
    activated error is certified ``<= tol·|phi(scale·y^ + b)|`` against the exact
    ``phi(scale·(lhs·rhs) + b)`` of the given float32 operands (``low``'s accumulation
    performed exactly as :func:`jaxerr.emulate` models it; ``phi`` evaluated exactly).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    act = activation or "identity"
    act = "exp" if act == "softmax" else act
    if act not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS} or None, got {activation!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    low_a = _arith(low, "blocked:8")
    high_a = _arith(high, "recursive")
    lhs = jnp.asarray(lhs, jnp.float32)
    rhs = jnp.asarray(rhs, jnp.float32)
    dn = dimension_numbers
    l3, r3, K, out_shape = _canon(lhs, rhs, dn)
    if bound not in ("running", "apriori"):
        raise ValueError(f"bound must be 'running' or 'apriori', got {bound!r}")
    acc_err = None
    if (criterion == "bound" and bound == "running" and low_a is not None
            and low_a.accumulation.kind != "wide"):
        dt = low_a.carrier
        y_low, acc_err = emulated_dot_general_with_bound(
            low_a.round(lhs.astype(dt)), low_a.round(rhs.astype(dt)), dn, low_a)
        if acc_err.dtype != jnp.float32:  # a float64 carrier: convert upward
            acc_err = F.up_nn(acc_err.astype(jnp.float32))
        y_low = y_low.astype(jnp.float32)
    else:
        y_low = _dot(low_a, lhs, rhs, dn).astype(jnp.float32)
    if bias is not None:
        bias = jnp.broadcast_to(jnp.asarray(bias, jnp.float32), y_low.shape)
    if scale is not None:
        scale = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), y_low.shape)
    tol = jnp.asarray(tol, jnp.float32)
    flags = _flags(criterion, tol, act, low_a, lhs, rhs, dn, K, y_low, bias, gamma, scale, acc_err, divide,
                   sign_guard)
    total = flags.size
    count = jnp.sum(flags.astype(jnp.int32))

    def masked():
        y_high = _dot(high_a, lhs, rhs, dn).astype(jnp.float32)
        return jnp.where(flags, y_high, y_low)

    fallback = jnp.asarray(False)
    if mode == "masked":
        y = masked()
    else:
        Bd, Md, Nd = l3.shape[0], l3.shape[1], r3.shape[2]
        units = total if mode == "compacted" else Bd * Nd
        cap = capacity if capacity is not None else 0.25
        cap = int(math.ceil(cap * units)) if isinstance(cap, float) and cap < 1 else int(cap)
        cap = max(1, min(cap, units))
        if mode == "compacted":
            def compacted():
                return _compacted(high_a, l3, r3, flags, y_low, cap)

            fallback = count > cap
        else:
            colflags = jnp.any(flags.reshape(Bd, Md, Nd), axis=1).reshape(-1)  # (B*N,)

            def compacted():
                return _columns(high_a, l3, r3, flags, colflags, y_low, cap)

            fallback = jnp.sum(colflags.astype(jnp.int32)) > cap
        y = lax.cond(fallback, masked, compacted)
    y = y.reshape(out_shape)
    if return_stats:
        Bd, Md, Nd = l3.shape[0], l3.shape[1], r3.shape[2]
        cols = jnp.mean(jnp.any(flags.reshape(Bd, Md, Nd), axis=1).astype(jnp.float32))
        return y, {"recomputed": count / total, "count": count, "total": jnp.asarray(total),
                   "length": jnp.asarray(K), "fallback": fallback, "columns": cols}
    return y


# ---------------------------------------------------------------------------
# The transformation
# ---------------------------------------------------------------------------


def _is_zero_literal(v) -> bool:
    if not isinstance(v, _compat.Literal):
        return False
    try:
        return float(np.asarray(v.val)) == 0.0
    except Exception:
        return False


def _activation_of(eqn) -> str | None:
    """The activation an equation applies to its first operand, if recognisable."""
    p = eqn.primitive
    if p is P("tanh"):
        return "tanh"
    if p is P("exp"):
        return "exp"
    if p is P("logistic"):
        return "sigmoid"
    if p is P("max") and (_is_zero_literal(eqn.invars[1]) or _is_zero_literal(eqn.invars[0])):
        return "relu"
    sub = _compat.call_subjaxpr(eqn)
    if sub is not None:
        jx, _ = sub
        if len(jx.eqns) == 1 and len(jx.invars) == 1:
            return _activation_of(jx.eqns[0])
    return None


def _uses(jaxpr):
    uses: dict = {}
    for i, e in enumerate(jaxpr.eqns):
        for v in e.invars:
            if not isinstance(v, _compat.Literal):
                uses.setdefault(v, []).append(i)
    for v in jaxpr.outvars:
        if not isinstance(v, _compat.Literal):
            uses.setdefault(v, []).append(-1)
    return uses


def _patterns(jaxpr):
    """For each float dot/conv equation index: ``(chain, act)`` where ``chain`` lists the
    equations ``(index, operand position, "scale"|"bias")`` that follow the product
    (an optional ``mul`` by an operand independent of it, then an optional ``add``), and
    ``act`` the activation applied to the result, if recognisable."""
    uses = _uses(jaxpr)
    out = {}
    dots = (P("dot_general"), P("conv_general_dilated"))

    def single_use(v, prim):
        u = uses.get(v, [])
        if len(u) == 1 and u[0] >= 0 and jaxpr.eqns[u[0]].primitive is prim:
            e = jaxpr.eqns[u[0]]
            if e.outvars[0].aval.shape == v.aval.shape and e.invars[0] is not e.invars[1]:
                return u[0], (1 if e.invars[0] is v else 0)
        return None

    for i, e in enumerate(jaxpr.eqns):
        if e.primitive not in dots or not jnp.issubdtype(e.outvars[0].aval.dtype, jnp.floating):
            continue
        cur = e.outvars[0]
        chain = []
        for prims, kind in (((P("mul"), P("div")), "scale"), ((P("add"),), "bias")):
            for prim in prims:
                hit = single_use(cur, prim)
                if hit is not None and prim is P("div") and hit[1] != 1:
                    hit = None  # c / y is not a scaling of y
                if hit is not None:
                    chain.append((hit[0], hit[1], "divide" if prim is P("div") else kind))
                    cur = jaxpr.eqns[hit[0]].outvars[0]
                    break
        act = None
        u = uses.get(cur, [])
        if len(u) == 1 and u[0] >= 0:
            act = _activation_of(jaxpr.eqns[u[0]])
        if act is None and _feeds_softmax(jaxpr, uses, cur):
            act = "exp"
        out[i] = (chain, act)
    return out


def _feeds_softmax(jaxpr, uses, v) -> bool:
    """``v`` is used by ``sub`` (of its running maximum) whose only use is ``exp``: the
    max-shifted softmax ``jax.nn.softmax`` writes (the shift is exact enough and common
    to all components, so the criterion treats the product as feeding ``exp``)."""
    u = [j for j in uses.get(v, []) if j >= 0]
    subs = [j for j in u if jaxpr.eqns[j].primitive is P("sub") and jaxpr.eqns[j].invars[0] is v]
    if not subs or not any(jaxpr.eqns[j].primitive is P("reduce_max") for j in u):
        return False
    for j in subs:
        w = jaxpr.eqns[j].outvars[0]
        wu = uses.get(w, [])
        if len(wu) == 1 and wu[0] >= 0 and jaxpr.eqns[wu[0]].primitive is P("exp"):
            return True
    return False


class _Mixed:
    def __init__(self, kw: dict, activation: Any):
        self.kw = kw
        self.activation = activation
        self.stats: list = []

    def run(self, jaxpr, consts, args):
        env: dict = {}

        def read(a):
            if isinstance(a, _compat.Literal):
                return a.val
            return env[a]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = c
        for v, a in zip(jaxpr.invars, args):
            env[v] = a
        pats = _patterns(jaxpr)
        skip = set()
        at_last: dict = {}  # eqn index where the product is computed -> dot index
        for dot_i, (chain, _) in pats.items():
            if chain:
                skip.add(dot_i)
                skip.update(j for j, _, _ in chain[:-1])
                at_last[chain[-1][0]] = dot_i
        for i, eqn in enumerate(jaxpr.eqns):
            if i in skip:
                continue  # computed at the end of its chain, where scale and bias are known
            if i in at_last:
                d = at_last[i]
                chain, act = pats[d]
                extra = {kind: jnp.asarray(read(jaxpr.eqns[j].invars[pos])) for j, pos, kind in chain}
                divide = "divide" in extra
                deqn = jaxpr.eqns[d]
                y = self.product(deqn, [read(a) for a in deqn.invars], extra.get("bias"),
                                 extra.get("divide", extra.get("scale")), act, divide)
                for j, pos, _ in chain:  # apply the chain as written
                    ce = jaxpr.eqns[j]
                    other = read(ce.invars[pos])
                    y = ce.primitive.bind(*([y, other] if pos == 1 else [other, y]), **ce.params)
                env[eqn.outvars[0]] = y
                continue
            ins = [read(a) for a in eqn.invars]
            if i in pats:
                outs = [self.product(eqn, ins, None, None, pats[i][1])]
            else:
                sub = _compat.call_subjaxpr(eqn)
                if sub is not None:
                    jx, cs = sub
                    outs = self.run(jx, cs, ins)
                else:
                    outs = eqn.primitive.bind(*ins, **eqn.params)
                    if not eqn.primitive.multiple_results:
                        outs = [outs]
            for v, o in zip(eqn.outvars, outs):
                if _compat.DropVar is None or not isinstance(v, _compat.DropVar):
                    env[v] = o
        return [read(a) for a in jaxpr.outvars]

    def product(self, eqn, ins, bias, scale, act, divide=False):
        k = len(self.stats)
        if self.activation is not None:
            a = self.activation
            act = a[k] if isinstance(a, (list, tuple)) else a
        act = None if act == "identity" else act
        lhs, rhs = ins
        odt = eqn.outvars[0].aval.dtype
        if eqn.primitive is P("dot_general"):
            y, st = mixed_dot_general(lhs, rhs, eqn.params["dimension_numbers"], bias=bias, scale=scale,
                                      activation=act, divide=divide, return_stats=True, **self.kw)
        else:
            y, st = _mixed_conv(lhs, rhs, eqn.params, bias, scale, act, dict(self.kw, divide=divide))
        self.stats.append((f"{k}: {eqn.primitive.name} -> {act or 'identity'}", st))
        return y.astype(odt)


def _mixed_conv(lhs, rhs, params, bias, scale, act, kw):
    if params.get("feature_group_count", 1) != 1 or params.get("batch_group_count", 1) != 1:
        raise NotImplementedError("mixed_precision: grouped convolutions are not supported")
    dn = params["dimension_numbers"]
    rhs_spec, out_spec = dn.rhs_spec, dn.out_spec
    filt = tuple(rhs.shape[d] for d in rhs_spec[2:])
    patches = lax.conv_general_dilated_patches(
        lhs.astype(jnp.float32), filt, params["window_strides"], params["padding"],
        lhs_dilation=params["lhs_dilation"], rhs_dilation=params["rhs_dilation"],
        dimension_numbers=dn, precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32)
    w = jnp.transpose(rhs, (rhs_spec[0], rhs_spec[1]) + tuple(rhs_spec[2:])).reshape(rhs.shape[rhs_spec[0]], -1)
    fdim = out_spec[1]
    nd = patches.ndim
    rest = [d for d in range(nd) if d != fdim]
    perm = [nd - 1 if a == fdim else rest.index(a) for a in range(nd)]
    inv = [0] * nd
    for a, j in enumerate(perm):
        inv[j] = a
    out_shape = tuple(patches.shape[d] if d != fdim else w.shape[0] for d in range(nd))

    def to_dot(t):
        return None if t is None else jnp.transpose(jnp.broadcast_to(t, out_shape), inv)

    y, st = mixed_dot_general(patches, w, (((fdim,), (1,)), ((), ())), bias=to_dot(bias),
                              scale=to_dot(scale), activation=act, return_stats=True, **kw)
    return jnp.transpose(y, perm), st


def mixed_precision(
    f: Callable[..., Any],
    *,
    low: Any = ("float8_e4m3fn", "blocked:8", True, "saturate"),
    high: Any = ("float16", "recursive"),
    tol: float,
    criterion: str = "activation",
    activation: Any = None,
    mode: str = "masked",
    capacity: int | float | None = None,
    gamma: str = "sqrt",
    bound: str = "running",
    sign_guard: float = 0.0,
    return_stats: bool = False,
) -> Callable[..., Any]:
    """Transform ``f`` so that every floating ``dot_general`` and ``conv_general_dilated``
    is a :func:`mixed_dot_general`; everything else runs as written.

    The bias addition and activation following each product are found in ``f``'s jaxpr
    (``add`` of a same-shaped operand, then ``max(., 0)`` / ``jax.nn.relu``, ``tanh`` or
    ``logistic``); ``activation`` overrides that (one name, or one per product in program
    order). With ``return_stats=True`` the function returns ``(out, stats)``, ``stats`` a
    dict with one entry per product, keyed ``"<k>: <primitive> -> <activation>"`` in
    program order: ``{"recomputed": fraction, "count": n, "fallback": bool}``. Composes
    with ``jax.jit`` and ``jax.vmap``.
    """
    kw = dict(low=low, high=high, tol=tol, criterion=criterion, mode=mode, capacity=capacity, gamma=gamma,
              bound=bound, sign_guard=sign_guard)

    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(f, return_shape=True)(*args)
        M = _Mixed(kw, activation)
        outs = M.run(closed.jaxpr, list(closed.consts), jax.tree_util.tree_leaves(args))
        out = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)
        if return_stats:
            return out, dict(M.stats)
        return out

    return wrapped

