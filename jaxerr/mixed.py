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
  the component is kept.
- ``"bound"``: recompute unless the certified bound on the error of the *activated*
  low-precision output is at most ``tol · |phi(v^)|``. The bound on ``|v^ - v|`` is
  rigorous: input rounding ``|x - x^|·|w|`` plus the accumulation model's
  ``a·|x^|·|w^| + b·|y^| + c`` (:meth:`jaxerr.Accumulation.coefficients`, products
  rounded) plus the bias addition, every term rounded upward; it is pushed through
  ``phi`` with its Lipschitz constant on ``[v^ - e, v^ + e]`` (ReLU: zero error where
  ``v^ + e <= 0``). A component whose low result may have overflowed is recomputed.
  For long float8 inner products the worst-case constant is infinite (``d u >= 1``)
  and the criterion then recomputes everything: rigorous, and honest about it.

Two implementations with identical results (tested):

- ``mode="masked"``: compute both results everywhere and select (the reference).
- ``mode="compacted"``: gather the flagged components (at most ``capacity``, static),
  recompute only their inner products, scatter them back; when more than ``capacity``
  components are flagged, fall back to the masked computation (``lax.cond``; under
  ``vmap`` both branches run).
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
from .emulate import Arithmetic, emulated_dot_general

__all__ = ["mixed_dot_general", "mixed_precision", "ACTIVATIONS"]

P = _compat.prim

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")
CRITERIA = ("activation", "condition", "bound", "never", "always")


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
    m = jnp.maximum(jnp.abs(v) - e, 0.0)
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


def _flags(criterion, tol, act, low, lhs, rhs, dn, K, y_low, bias, gamma, scale):
    sy = y_low if scale is None else y_low * scale
    v = sy if bias is None else sy + bias
    if criterion == "never":
        return jnp.zeros(v.shape, bool)
    if criterion == "always":
        return jnp.ones(v.shape, bool)
    if criterion == "activation":
        phi, dphi = _phi(act, v)
        # |phi'/phi| > tol  <=>  |phi'| > tol |phi|; phi = 0 with phi' = 0: keep
        return jnp.abs(dphi) > tol * jnp.abs(phi)
    S = _abs_dot_up(lhs, rhs, dn, K) if low is None else _abs_dot_up(
        low.round(lhs.astype(low.carrier)), low.round(rhs.astype(low.carrier)), dn, K)
    if scale is not None:
        S = F.mul_up(S, jnp.abs(scale))
    if bias is not None:
        S = F.add_up_nn(S, jnp.abs(bias))
    if criterion == "condition":
        g = _gamma_est(low, K, gamma) if low is not None else 2.0**-24
        phi, dphi = _phi(act, v)
        # kappa_v kappa_phi gamma = S |phi'| gamma / |phi|  > tol
        return (dphi != 0) & (S * jnp.abs(dphi) * g > tol * jnp.abs(phi))
    if criterion == "bound":
        return ~_certified(low, act, lhs, rhs, dn, K, y_low, v, S, scale, tol)
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")


def _certified(low, act, lhs, rhs, dn, K, y_low, v, S, scale, tol):
    """True where the low-precision activated output is certified within tol·|phi(v^)|."""
    if low is None:
        a, b, c = 0.0, 0.0, 0.0
        fmt_max = float(np.finfo(np.float32).max)
        e = F.scale_up(S, F.gamma(K + 1, 2.0**-24))
        xr = lhs
    else:
        fmt = low.precision
        a, b, c = low.accumulation.coefficients(K, fmt, products=True)
        fmt_max = fmt.max_finite
        xr = low.round(lhs.astype(low.carrier))
        wr = low.round(rhs.astype(low.carrier))
        # input rounding |x - x^|·|w| + |x^|·|w - w^|
        e = F.add_up_nn(_abs_dot_up(lhs - xr, rhs, dn, K), _abs_dot_up(xr, rhs - wr, dn, K))
        if math.isinf(a):
            e = jnp.full_like(S, jnp.inf)
        else:
            e = F.add_up_nn(e, F.scale_up(S, a))
            if b:
                e = F.add_up_nn(e, F.scale_up(jnp.abs(y_low), b))
            e = F.add_up_nn(e, F.static_up(c, S.dtype))
    if scale is not None:
        # S already includes |scale|; the dot's own error terms scale too
        e = F.add_up_nn(F.mul_up(e, jnp.abs(scale)), F.scale_up(jnp.abs(v), 2.0**-24))
    # the bias addition in float32
    e = F.add_up_nn(e, F.add_up_nn(F.scale_up(jnp.abs(v), 2.0**-24), F.static_up(float(np.finfo(np.float32).tiny), S.dtype)))
    ok = jnp.isfinite(e) & (F.scale_up(S, 1.0 + (0.0 if math.isinf(a) else a)) < fmt_max) & jnp.isfinite(y_low)
    phi, _ = _phi(act, v)
    L = _lipschitz(act, v, e)
    eo = F.mul_up(L, e)
    if act == "relu":
        eo = jnp.where(F.add_up(v, e) <= 0, 0.0, eo)
    return ok & (eo <= tol * jnp.abs(phi))


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
    return_stats: bool = False,
) -> Any:
    """``lax.dot_general(lhs, rhs, dimension_numbers)`` computed in ``low`` precision, with
    the components flagged by ``criterion`` recomputed in ``high`` precision.

    **Arguments:**

    - `low`, `high`: the two arithmetics: an :class:`~jaxerr.emulate.Arithmetic`, a
      format name (recursive accumulation), a tuple ``(format, accumulation[, fma[,
      overflow]])``, or None for native float32. Operands are rounded to each format.
    - `tol`: the criterion's threshold (``tau`` of the seed rule; a relative error target
      for ``"condition"`` and ``"bound"``).
    - `activation`: ``"relu"``, ``"tanh"``, ``"sigmoid"`` or None (identity) applied to
      ``y + bias`` after the product.
    - `criterion`: ``"activation"``, ``"condition"`` or ``"bound"`` (module docstring).
    - `bias`, `scale`: the pre-activation is ``scale * y + bias`` (both broadcastable to
      the result, used by the criteria only: neither is applied to the returned ``y``).
    - `criterion` may also be ``"never"`` / ``"always"`` (uniform low / high baselines).
    - `mode`: ``"masked"`` or ``"compacted"``; `capacity`: static number (or fraction of
      the output size when < 1) of components the compacted mode recomputes before it
      falls back to the masked computation (default: a quarter).
    - `return_stats`: also return ``{"recomputed": fraction, "count": n, "fallback": bool}``.

    **Guarantee:** a recomputed component equals the ``high`` result bit for bit; a kept
    one equals the ``low`` result. With ``criterion="bound"``, every kept component's
    activated error is certified ``<= tol·|phi(y^ + b)|`` (under the error model of
    ``low``'s accumulation, products rounded).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    act = activation or "identity"
    if act not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS} or None, got {activation!r}")
    if mode not in ("masked", "compacted"):
        raise ValueError(f"mode must be 'masked' or 'compacted', got {mode!r}")
    low_a = _arith(low, "blocked:8")
    high_a = _arith(high, "recursive")
    lhs = jnp.asarray(lhs, jnp.float32)
    rhs = jnp.asarray(rhs, jnp.float32)
    dn = dimension_numbers
    l3, r3, K, out_shape = _canon(lhs, rhs, dn)
    y_low = _dot(low_a, lhs, rhs, dn).astype(jnp.float32)
    if bias is not None:
        bias = jnp.broadcast_to(jnp.asarray(bias, jnp.float32), y_low.shape)
    if scale is not None:
        scale = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), y_low.shape)
    tol = jnp.asarray(tol, jnp.float32)
    flags = _flags(criterion, tol, act, low_a, lhs, rhs, dn, K, y_low, bias, gamma, scale)
    total = flags.size
    count = jnp.sum(flags.astype(jnp.int32))

    def masked():
        y_high = _dot(high_a, lhs, rhs, dn).astype(jnp.float32)
        return jnp.where(flags, y_high, y_low)

    fallback = jnp.asarray(False)
    if mode == "masked":
        y = masked()
    else:
        cap = capacity if capacity is not None else 0.25
        cap = int(math.ceil(cap * total)) if isinstance(cap, float) and cap < 1 else int(cap)
        cap = max(1, min(cap, total))

        def compacted():
            flat = flags.reshape(-1)
            (idx,) = jnp.nonzero(flat, size=cap, fill_value=total)
            safe = jnp.minimum(idx, total - 1)
            b, rest = jnp.divmod(safe, l3.shape[1] * r3.shape[2])
            m, n = jnp.divmod(rest, r3.shape[2])
            xs = l3[b, m, :]  # (cap, K)
            ws = r3[b, :, n]  # (cap, K)
            vals = _dot(high_a, xs, ws, (((1,), (1,)), ((0,), (0,)))).astype(jnp.float32)
            return y_low.reshape(-1).at[idx].set(vals, mode="drop").reshape(y_low.shape)

        fallback = count > cap
        y = lax.cond(fallback, masked, compacted)
    y = y.reshape(out_shape)
    if return_stats:
        return y, {"recomputed": count / total, "count": count, "total": jnp.asarray(total),
                   "length": jnp.asarray(K), "fallback": fallback}
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
        for prim, kind in ((P("mul"), "scale"), (P("add"), "bias")):
            hit = single_use(cur, prim)
            if hit is not None:
                chain.append((hit[0], hit[1], kind))
                cur = jaxpr.eqns[hit[0]].outvars[0]
        act = None
        u = uses.get(cur, [])
        if len(u) == 1 and u[0] >= 0:
            act = _activation_of(jaxpr.eqns[u[0]])
        out[i] = (chain, act)
    return out


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
                deqn = jaxpr.eqns[d]
                y = self.product(deqn, [read(a) for a in deqn.invars], extra.get("bias"),
                                 extra.get("scale"), act)
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

    def product(self, eqn, ins, bias, scale, act):
        k = len(self.stats)
        if self.activation is not None:
            a = self.activation
            act = a[k] if isinstance(a, (list, tuple)) else a
        act = None if act == "identity" else act
        lhs, rhs = ins
        odt = eqn.outvars[0].aval.dtype
        if eqn.primitive is P("dot_general"):
            y, st = mixed_dot_general(lhs, rhs, eqn.params["dimension_numbers"], bias=bias, scale=scale,
                                      activation=act, return_stats=True, **self.kw)
        else:
            y, st = _mixed_conv(lhs, rhs, eqn.params, bias, scale, act, self.kw)
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
    kw = dict(low=low, high=high, tol=tol, criterion=criterion, mode=mode, capacity=capacity, gamma=gamma)

    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(f, return_shape=True)(*args)
        M = _Mixed(kw, activation)
        outs = M.run(closed.jaxpr, list(closed.consts), jax.tree_util.tree_leaves(args))
        out = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)
        if return_stats:
            return out, dict(M.stats)
        return out

    return wrapped

