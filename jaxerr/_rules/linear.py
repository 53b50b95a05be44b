"""dot_general.

Exact range: midpoint-radius interval product (Rump):
``[ac ± ar]·[bc ± br] ⊆ ac·bc ± (|ac|·br + ar·(|bc| + br))``, with the float
evaluation of ``ac·bc`` covered by ``gamma_n(u_analysis) |ac|·|bc|``.

Error, with ``x^ = x + dx`` and ``w^ = w + dw`` (computed vs exact operands):
``|fl(x^·w^) - x·w| <= |x^|·|dw| + |dx|·|w| + a·S + b·Y + c`` where
``S = |x^|·|w^|`` bounds the sum of absolute products, ``Y`` the result, and
``(a, b, c)`` come from the accumulation model (``Accumulation.coefficients``).
Every matrix product of nonnegative arrays in the analysis is rounded upward.
"""

from __future__ import annotations

import math

import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.interval import Discrete, Real, mag
from . import register_rule
from ._common import (
    accumulation_coefficients,
    c,
    guard_partial_sums,
    nearest,
    partial_sums_overflow,
    partial_sums_overflow_err,
)

P = _compat.prim


class _Dots:
    def __init__(self, dimension_numbers, n: int, adt):
        self.dn = dimension_numbers
        self.n = n
        self.adt = adt
        u_an = float(np.finfo(adt).eps) / 2
        g = F.gamma(n + 1, u_an)
        self.g_an = g  # relative error of one analysis dot over nonnegative terms
        self.slack = 2 * n * float(np.finfo(adt).tiny)

    def dot(self, x, y, dn=None):
        return lax.dot_general(
            x, y, dn or self.dn, precision=lax.Precision.HIGHEST, preferred_element_type=self.adt
        )

    def _up(self, r):
        # sum of nonnegative terms: exact <= fl * (1 + 2 gamma) + underflow slack
        return F.add_up_nn(F.scale_up(r, 1 + 2 * self.g_an), c(self.slack, self.adt))

    def dot_up(self, x, y):
        """Upper bound of x·y for nonnegative x, y."""
        return self._up(self.dot(x, y))

    def dots_up(self, lhs_list, y):
        """Upper bounds of l·y for several nonnegative lhs sharing the rhs, one matmul
        each. Not stacked into one matmul: XLA:CPU fuses the elementwise chains that
        produce the lhs into the concatenation and re-evaluates them there (the zoo's
        Keras model, LayerNorm then Dense, took 17.7 s per call in first_order for a
        (2, 8) stack; 2.4 ms with separate matmuls, which cost the same on the MLPs of
        ``benchmarks/overhead.py``); materialising each lhs first with a sort instead
        made XLA keep every layer's ``|w|`` live at once
        (``test_edge_cases.py::test_weight_passes_are_not_hoisted``)."""
        return [self.dot_up(t, y) for t in lhs_list]


def _mid_rad(x: Real):
    if x.point:
        return x.lo, None
    mid = F.where(x.lo == x.hi, x.lo, x.lo / 2 + x.hi / 2)
    rad = jnp.maximum(F.sub_up(x.hi, mid), F.sub_up(mid, x.lo))
    return mid, rad


def value_is_analysis_product(ctx, a, b) -> bool:
    """Whether the centre value of a bilinear equation is the analysis' own product of
    ``a.value`` and the exact point ``b`` (a program as written in the analysis dtype
    with exact weights): then one matmul serves as both (see :func:`bilinear`)."""
    adt = np.dtype(ctx.adt)
    return (not ctx.override and isinstance(a, Real) and isinstance(b, Real) and b.point and b.exact
            and np.dtype(a.value.dtype) == adt and np.dtype(b.value.dtype) == adt
            and all(np.dtype(v.aval.dtype) == adt for v in ctx.eqn.outvars))


@register_rule(P("dot_general"))
def dot_general_rule(ctx, a, b, *, dimension_numbers, **_):
    if isinstance(a, Discrete) or isinstance(b, Discrete):
        return _int_dot(ctx, a, b, ctx.value(a.value, b.value))
    (lc, _rc), _ = dimension_numbers
    n = int(math.prod(a.shape[d] for d in lc))
    D = _Dots(dimension_numbers, n, ctx.adt)
    extra = _flushed_rhs_terms(ctx, a, D) if id(ctx.eqn.invars[1]) in ctx.config.unchecked else None
    if id(ctx.eqn.invars[1]) in ctx.config.lazy_round:
        # a weight stored in the override format: rounded here, when this layer runs
        from .._bound import _rounded_input

        w = late(b.lo, a.lo)
        b = _rounded_input(w, w, ctx.config, point=True)
    value = None if value_is_analysis_product(ctx, a, b) else ctx.value(a.value, b.value)
    return bilinear(ctx, a, b, D, value, extra)


def _flushed_rhs_terms(ctx, a: Real, D: _Dots):
    """``(range widening, error widening)``, broadcastable to the output, for an rhs that
    is an argument whose subnormals were not scanned for (see ``_bound._dot_rhs_only``).
    XLA flushes subnormals to 0 in the program and in this analysis alike, so every rhs
    entry, and its rounding error, may be off by less than ``t`` (float32's smallest
    normal, or the analysis dtype's if larger) from what the rule used. That changes
    each output by less than ``t * sum_k M_k`` per term that involves ``|w|``, with
    ``M_k >= max(|x_k|, |x^_k|)`` over the lhs's exact and computed ranges (exact and
    computed products, ``|dx| |w| <= 2 M |w|``, ``ca |x^| |w^|``, the radius term
    ``|x - c| |w|``): the range is widened by ``4 t sum M`` and the error by
    ``(4 + ca) t sum M``, plus ``t`` each for the products' own underflow. Costs one
    row reduction of the lhs; the widening is folded into the rule's own additions."""
    (lc, _), (lb, _) = D.dn
    adt = ctx.adt
    t = max(float(np.finfo(np.float32).tiny), float(np.finfo(adt).tiny))
    M = jnp.maximum(mag(a.lo, a.hi), mag(a.clo, a.chi))
    S = D._up(jnp.sum(M, axis=tuple(lc)))
    rem = [d for d in range(M.ndim) if d not in lc]
    order = [rem.index(d) for d in lb] + [i for i, d in enumerate(rem) if d not in lb]
    S = jnp.transpose(S, order)
    ca, _, _ = accumulation_coefficients(ctx, D.n, products=True)
    tt = c(t, adt)
    w = F.add_up_nn(F.scale_up(S, 4 * t), tt)
    we = F.add_up_nn(F.scale_up(S, (4 + ca) * t), tt)
    return w, we


def _trail(x, ndim: int):
    """``x`` (leading output dims) with trailing unit axes up to ``ndim``."""
    return jnp.reshape(x, jnp.shape(x) + (1,) * (ndim - jnp.ndim(x)))


def late(w, dep):
    """``w``, computed after ``dep`` exists: ``w + min(|d|, 0)`` with ``d`` one element
    of ``dep`` is exactly ``w`` (``min(|d|, 0) = 0`` for every non-NaN ``d``; a NaN
    makes the bound NaN, hence infinite, never smaller). XLA does not see that, so it
    cannot hoist passes over ``w`` before the layer that produces ``dep``: otherwise
    every layer's ``|w|`` (or rounded ``w``) is computed up front and all stay alive,
    a temp buffer the size of all weights that the allocator maps and page-faults
    afresh on every call (measured: 3.3x the program's own time for 8 layers of
    1024x1024)."""
    d = jnp.reshape(dep, (-1,))[:1] if jnp.size(dep) else jnp.zeros((1,), w.dtype)
    z = jnp.minimum(jnp.abs(d.astype(w.dtype)), 0.0)
    return w + jnp.reshape(z, (1,) * jnp.ndim(w))


def _value_rad(x: Real):
    """``(centre, radius)`` with the computed centre value as the centre: the exact
    range lies within ``value ± radius`` (``radius`` None for an exact point)."""
    if x.point and x.exact:
        return x.lo, None
    v = x.value
    return v, jnp.maximum(F.sub_up(x.hi, v), F.sub_up(v, x.lo))


def bilinear(ctx, a, b, D, value, extra=None):
    """The rule of a bilinear primitive whose every output is a sum of ``D.n`` products
    (dot_general, conv_general_dilated). ``D`` supplies ``dot(x, y)`` (the primitive in
    the analysis dtype), ``dot_up`` / ``dots_up`` (upper bounds for nonnegative
    operands), ``g_an`` and ``slack`` (the analysis' own rounding of one product).

    ``value=None`` (only when :func:`value_is_analysis_product`): the exact range is
    formed around ``a.value`` instead of the midpoint of ``a``'s range (the radius
    covers the whole range either way), so the analysis' product of the centres is
    the equation's centre value too, and the program's own matmul is not repeated.

    ``extra``: ``(range widening, error widening)`` arrays over the output's leading
    (batch and lhs-free) axes, added to the radius and the error (see
    :func:`_flushed_rhs_terms`)."""
    adt = ctx.adt
    n = D.n
    ca, cb, cc = accumulation_coefficients(ctx, n, products=True)

    # ---- exact range (midpoint-radius) ----
    ac, ar = _mid_rad(a) if value is not None else _value_rad(a)
    bc, br = _mid_rad(b)
    g = D.g_an
    ymid = D.dot(ac, bc)
    if value is None:
        value = ymid
    if br is None and not (a.point and a.exact):
        # |w| of a point weight depends only on an argument, so XLA would compute every
        # layer's |w| up front and keep them all alive (a temp buffer the size of all
        # weights, page-faulted on every call); tying it to this layer's input makes it
        # computed when needed, and its buffer reused by the next layer's
        abs_ac, abs_bc = jnp.abs(ac), jnp.abs(late(bc, a.lo))
    else:
        abs_ac, abs_bc = jnp.abs(ac), jnp.abs(bc)
    rb = abs_bc if br is None else F.add_up(abs_bc, br)  # >= max |w| over the exact range

    mag_ac = mag(a.clo, a.chi)  # >= |x^|
    rad_terms = []
    err_terms = []
    if a.point and a.exact and b.exact and br is None:
        # a single exact point times a single point (first layer, weights): radius
        # and error are both multiples of |x|·|w|, one matmul
        P = D.dot_up(abs_ac, rb)
        rad_terms.append(F.scale_up(P, g))
        if ca != 0:
            err_terms.append(F.scale_up(P, ca))
    else:
        # Group the nonnegative products by their rhs so each rhs costs one matmul.
        group: list[tuple[str, object]] = []
        if br is None:
            t = F.scale_up(abs_ac, g)
            group.append(("rad", t if ar is None else F.add_up_nn(t, ar)))
        else:
            rad_terms.append(D.dot_up(abs_ac, F.add_up_nn(br, F.scale_up(abs_bc, g))))
            if ar is not None:
                group.append(("rad", ar))
        err_lhs_rb = []
        if not a.exact:
            err_lhs_rb.append(a.err)  # |dx|·|w|
        if b.exact:
            # |w^| = |w| <= rb: S folds into the same product
            if ca != 0:
                err_lhs_rb.append(F.scale_up(mag_ac, ca))
        else:
            # |x^|·|dw| + ca |x^|·|w^| = |x^|·(|dw| + ca |w^|): one matmul
            rhs = b.err if ca == 0 else F.add_up_nn(b.err, F.scale_up(mag(b.clo, b.chi), ca))
            err_terms.append(D.dot_up(mag_ac, rhs))
        if err_lhs_rb:
            e = err_lhs_rb[0]
            for t in err_lhs_rb[1:]:
                e = F.add_up_nn(e, t)
            group.append(("err", e))
        outs = D.dots_up([t for _, t in group], rb) if group else []
        for (name, _), o in zip(group, outs):
            (rad_terms if name == "rad" else err_terms).append(o)

    rad = rad_terms[0] if rad_terms else jnp.zeros_like(ymid)
    for t in rad_terms[1:]:
        rad = F.add_up(rad, t)
    slack = c(D.slack, adt)
    if extra is not None:
        slack = _trail(F.add_up_nn(extra[0], slack), ymid.ndim)
    rad = F.add_up(rad, slack)
    lo = F.sub_dn(ymid, rad)
    hi = F.add_up(ymid, rad)
    if ctx.range_hint is not None:
        # a tighter enclosure of the exact result, known from elsewhere (first_order's
        # pre-rounding refinement): the wide accumulator's final rounding below is
        # bounded over it (the interval product loses the cancellations in x·w)
        lo, hi = jnp.maximum(lo, ctx.range_hint[0]), jnp.minimum(hi, ctx.range_hint[1])

    err = err_terms[0] if err_terms else jnp.zeros_like(ymid)
    for t in err_terms[1:]:
        err = F.add_up(err, t)
    if ctx.acc.accumulator(ctx.fmt).max_finite < 1e37:
        # a narrow accumulator (float16, float8): S itself, one more matmul
        ovf = partial_sums_overflow(ctx, D.dot_up(mag_ac, mag(b.clo, b.chi)), ca, cb, cc)
    else:
        # err >= ca S: no extra matmul (a false alarm needs an error near ca * 3e38)
        ovf = partial_sums_overflow_err(ctx, err, ca, cb, cc)
    if cb != 0:
        # wide accumulation: one final rounding of a result with |y^| <= |y| + err
        ymag = F.add_up(mag(lo, hi), err)
        err = F.add_up(err, nearest(ymag, cb))
    cc_t = c(cc, adt)
    if extra is not None:
        cc_t = _trail(F.add_up_nn(extra[1], cc_t), ymid.ndim)
    err = F.add_up(err, cc_t)
    clo = F.sub_dn(lo, err)
    chi = F.add_up(hi, err)
    return guard_partial_sums(Real(lo, hi, clo, chi, err, value), ovf)


def _int_dot(ctx, a, b, value):
    certain = jnp.all(a.lo == a.hi) & jnp.all(b.lo == b.hi)
    info = jnp.iinfo(value.dtype)
    lo = F.where(certain, value, jnp.full_like(value, info.min))
    hi = F.where(certain, value, jnp.full_like(value, info.max))
    return Discrete(lo, hi, value)
