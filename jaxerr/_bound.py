"""The public transformation :func:`bound`, its argument type :class:`Interval` and
its result type :class:`Bound`."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _compat
from . import _formats as F
from ._domains import interval as I
from ._domains.interval import Discrete, Real
from ._interpreter import (
    Config,
    Ctx,
    DiagnosticCollector,
    Domain,
    carrier_dtype,
    check_supported,
    interpret,
    is_float_dtype,
)
from ._rules import interval_rules
from ._rules.control_flow import CONTROL_FLOW, unroll_scans
from ._rules.structural import STRUCTURAL


class JaxerrWarning(UserWarning):
    """A bound came back infinite or an output is uncertain; the message says where and why."""


# ---------------------------------------------------------------------------
# Interval (argument type)
# ---------------------------------------------------------------------------


@jax.tree_util.register_pytree_node_class
class Interval:
    """Every value in the box ``[lo, hi]`` (elementwise), as an argument of ``bound(f)``.

    ``lo`` and ``hi`` broadcast to a common shape; the dtype is the one ``f`` sees.
    Raises ``ValueError`` for NaN ends or ``lo > hi`` when they are concrete.
    """

    def __init__(self, lo: Any, hi: Any, dtype: Any = None):
        lo = jnp.asarray(lo, dtype=dtype)
        hi = jnp.asarray(hi, dtype=dtype if dtype is not None else lo.dtype)
        if dtype is None and lo.dtype != hi.dtype:
            dt = jnp.result_type(lo, hi)
            lo, hi = lo.astype(dt), hi.astype(dt)
        shape = jnp.broadcast_shapes(lo.shape, hi.shape)
        self.lo = jnp.broadcast_to(lo, shape)
        self.hi = jnp.broadcast_to(hi, shape)
        _validate_interval(self, "Interval")

    @classmethod
    def around(cls, center: Any, radius: Any, dtype: Any = None) -> Interval:
        """The box ``[center - radius, center + radius]`` (ends computed in float64 and
        rounded outward into the dtype, so the box contains the intended real box)."""
        c = np.asarray(center, dtype=np.float64)
        r = np.asarray(radius, dtype=np.float64)
        dt = np.dtype(dtype) if dtype is not None else np.asarray(center).dtype
        if not np.issubdtype(dt, np.floating):
            dt = np.dtype(np.float32)
        lo = (c - r).astype(dt)
        hi = (c + r).astype(dt)
        lo = np.where(lo.astype(np.float64) > c - r, np.nextafter(lo, np.asarray(-np.inf, dt)), lo)
        hi = np.where(hi.astype(np.float64) < c + r, np.nextafter(hi, np.asarray(np.inf, dt)), hi)
        return cls(lo, hi)

    @property
    def shape(self):
        return self.lo.shape

    @property
    def dtype(self):
        return self.lo.dtype

    def tree_flatten(self):
        return (self.lo, self.hi), None

    @classmethod
    def tree_unflatten(cls, _, children):
        obj = object.__new__(cls)
        obj.lo, obj.hi = children
        return obj

    def __repr__(self) -> str:
        return f"Interval(lo={self.lo}, hi={self.hi})"


def _concrete(x: Any) -> bool:
    return not _compat.is_tracer(x)


def _validate_interval(iv: Interval, where: str) -> None:
    if not (_concrete(iv.lo) and _concrete(iv.hi)):
        return
    lo = np.asarray(iv.lo)
    hi = np.asarray(iv.hi)
    if lo.dtype.kind == "f" or str(lo.dtype) == "bfloat16":
        lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)
        if np.isnan(lo64).any() or np.isnan(hi64).any():
            raise ValueError(
                f"{where}: NaN in an interval end (at {_first(np.isnan(lo64) | np.isnan(hi64))}). "
                "An interval must contain real numbers; replace NaN with finite ends."
            )
        bad = lo64 > hi64
    else:
        bad = lo > hi
    if bad.any():
        raise ValueError(
            f"{where}: lo > hi at {bad.sum()} element(s), first at index {_first(bad)} "
            f"(lo={lo[np.nonzero(bad)][0]}, hi={hi[np.nonzero(bad)][0]}). Swap the ends or use "
            "jaxerr.Interval(jnp.minimum(a, b), jnp.maximum(a, b))."
        )


def _first(mask: np.ndarray) -> tuple:
    idx = np.argwhere(mask)
    return tuple(int(i) for i in idx[0]) if idx.size else ()


# ---------------------------------------------------------------------------
# Bound (result type) and diagnostics
# ---------------------------------------------------------------------------


@jax.tree_util.register_pytree_node_class
class Diagnostics:
    """Messages the analysis may raise, each with a flag saying whether it fired.

    ``messages`` is static; ``flags`` is a boolean array (batched under ``vmap``).
    """

    def __init__(self, messages: tuple[str, ...], flags: Any):
        self.messages = messages
        self.flags = flags

    def tree_flatten(self):
        return (self.flags,), self.messages

    @classmethod
    def tree_unflatten(cls, messages, children):
        return cls(messages, children[0])

    def fired(self) -> list[str]:
        """The messages whose flag is set (for any batch element). Needs concrete flags."""
        if not self.messages:
            return []
        f = np.asarray(self.flags).reshape(-1, len(self.messages)).any(axis=0)
        return [m for m, b in zip(self.messages, f) if b]

    def __repr__(self) -> str:
        try:
            fired = self.fired()
        except Exception:
            return f"Diagnostics({len(self.messages)} checks, traced)"
        return "Diagnostics(" + ("none" if not fired else "; ".join(fired)) + ")"


@jax.tree_util.register_pytree_node_class
class Bound:
    """Guaranteed bounds for one output of ``f``.

    - ``lo``, ``hi``: the exact real result (real arithmetic on the exact inputs)
      lies in ``[lo, hi]`` for every input in the input set.
    - ``abs_err``: ``|computed - exact| <= abs_err`` elementwise, for every input in
      the set and every rounding the error model allows.
    - ``rel_err``: ``|computed - exact| <= rel_err * |exact|`` (inf where ``[lo, hi]``
      touches 0).
    - ``value``: the result computed at the centre of the input set.
    - ``computed_lo``, ``computed_hi``: an enclosure of the computed result.
    - ``diagnostics``: why a bound is infinite or an integer output uncertain.
    - ``confidence``: ``None`` for guaranteed bounds. With ``probabilistic=delta``
      it is ``1 - delta``: ``abs_err`` and ``rel_err`` then hold with at least that
      probability (for each element) under the model of independent mean-zero
      rounding errors, and only the enclosures ``lo``/``hi`` are guaranteed.
    """

    def __init__(self, lo, hi, abs_err, rel_err, value, computed_lo, computed_hi, diagnostics,
                 confidence: float | None = None):
        self.lo, self.hi = lo, hi
        self.abs_err, self.rel_err = abs_err, rel_err
        self.value = value
        self.computed_lo, self.computed_hi = computed_lo, computed_hi
        self.diagnostics = diagnostics
        self.confidence = confidence

    @property
    def probabilistic(self) -> bool:
        """True when ``abs_err``/``rel_err`` hold with probability ``confidence`` only."""
        return self.confidence is not None

    def tree_flatten(self):
        return (
            self.lo, self.hi, self.abs_err, self.rel_err, self.value,
            self.computed_lo, self.computed_hi, self.diagnostics,
        ), self.confidence

    @classmethod
    def tree_unflatten(cls, confidence, children):
        return cls(*children, confidence=confidence)

    @property
    def shape(self):
        return jnp.shape(self.value)

    def bits(self) -> Any:
        """Correct bits of the computed result: ``-log2(rel_err)`` (0 where rel_err >= 1)."""
        return jnp.maximum(0.0, -jnp.log2(self.rel_err))

    def __repr__(self) -> str:
        def s(x):
            try:
                a = np.asarray(x)
                return np.array2string(a, precision=4, threshold=8) if a.ndim else f"{a:.4g}"
            except Exception:
                return "<traced>"

        prob = "" if self.confidence is None else (
            f", PROBABILISTIC: errors hold with probability >= {self.confidence:.10g}")
        return (
            f"Bound(lo={s(self.lo)}, hi={s(self.hi)}, abs_err={s(self.abs_err)}, "
            f"rel_err={s(self.rel_err)}, value={s(self.value)}{prob})"
        )


# ---------------------------------------------------------------------------
# The interval domain's hooks
# ---------------------------------------------------------------------------


def _constant(val: Any, aval: Any, config: Config) -> Any:
    """A literal or captured constant: exact in its dtype (as written), or rounded
    into the override format (that rounding counts as error)."""
    arr = jnp.asarray(val)
    dtype = getattr(aval, "dtype", arr.dtype)
    if not is_float_dtype(dtype):
        arr = arr.astype(dtype)
        return Discrete(arr, arr, arr)
    if config.precision is None:
        r = I.point(arr, arr.astype(dtype), config.adt)
    elif _representable(val, config):
        # a constant the format holds exactly (0, 1, 2.0, -inf, ...): no rounding event
        car = carrier_dtype(config)
        r = I.point(arr, F.round_to(arr.astype(car), F.storage_format(config.precision)), config.adt)
    else:
        r = _rounded_input(arr, arr, config, point=True)
    if _has_subnormals(arr):
        r = _daz(r, config.adt)
    return r


def _representable(val: Any, config: Config) -> bool:
    """True if the concrete constant ``val`` is exactly a value of the override format
    (decided in Python; False for traced values)."""
    if _compat.is_tracer(val):
        return False
    try:
        a = np.asarray(val, dtype=np.float64)
    except Exception:
        return False
    if a.size > 4096:
        return False
    dt = F.storage_format(config.precision).dtype
    if dt is None:
        return False
    with np.errstate(all="ignore"):
        r = a.astype(np.dtype(dt)).astype(np.float64)
        same = (r == a) | (np.isnan(r) & np.isnan(a))
    return bool(np.all(same)) and not _has_subnormals(a)


def _rounded_input(lo: Any, hi: Any, config: Config, point: bool) -> Real:
    """The input set [lo, hi] whose values are rounded into the override format."""
    fmt = F.storage_format(config.precision)
    adt = config.adt
    car = carrier_dtype(config)
    lo_a = jnp.asarray(lo).astype(adt)
    hi_a = jnp.asarray(hi).astype(adt)
    rlo = F.round_to(_to_carrier(lo, car), fmt).astype(adt)
    rhi = F.round_to(_to_carrier(hi, car), fmt).astype(adt)
    if point:
        err = F.up(jnp.abs(rlo - lo_a))
    else:
        m = jnp.maximum(jnp.abs(lo_a), jnp.abs(hi_a))
        err = F.add_up(F.scale_up(m, fmt.unit_roundoff), F.static_up(fmt.underflow, adt))
        err = F.where(lo_a == hi_a, F.up(jnp.abs(rlo - lo_a)), err)
    # a value beyond the format's largest finite value rounds to inf (overflow): the
    # computed input is inf, so no finite error bound holds (found by fuzzing: an
    # input returned as an output kept a finite abs_err)
    ovf = jnp.isinf(rlo) | jnp.isinf(rhi)
    err = F.where(ovf, jnp.inf, err)
    centre = _centre(_to_carrier(lo, car), _to_carrier(hi, car))
    value = F.round_to(centre, fmt).astype(car)
    exact = False
    return Real(lo_a, hi_a, rlo, rhi, err, value, exact=exact, point=point)


def _to_carrier(x: Any, car: Any) -> Any:
    """``x`` for rounding into a format held in ``car``: a wider (float64) value stays
    float64, so that it is rounded once, not first to float32."""
    x = jnp.asarray(x)
    return x if np.dtype(x.dtype).itemsize > np.dtype(car).itemsize else x.astype(car)


def _centre(lo: Any, hi: Any) -> Any:
    c = F.where(lo == hi, lo, lo / 2 + hi / 2)
    return c.astype(lo.dtype)


#: equations whose operands are not elementwise partners of the result, so the
#: finalize check "an operand element may be inf/NaN" does not apply by shape. (A dot
#: or conv with an infinite operand error has an infinite or NaN error of its own: the
#: rule multiplies it by |w|. Checking it elementwise where the shapes happen to agree,
#: as in square layers, also chained every layer's elementwise work to the previous
#: one's, so that XLA recomputed all earlier layers inside each layer's fusions.)
_NOT_ELEMENTWISE = STRUCTURAL | CONTROL_FLOW | frozenset(
    p for p in (_compat.prim("dot_general"), _compat.prim("conv_general_dilated")) if p is not None)


#: equations whose rules give a sound computed range ``[clo, chi]`` also for operands
#: whose computed value is ``±inf`` (not NaN) and whose error is infinite, and whose
#: results may therefore be ``±inf`` without being possibly NaN (see
#: ``interval.nan_possible``). Elsewhere an infinite error makes the result possibly
#: NaN. (Flax masks attention logits with ``finfo(float32).min``, which overflows to
#: ``-inf`` in bfloat16/float16; ``max``, ``x - max``, ``exp`` then give an exact 0.)
_INF_SAFE = frozenset(p for p in (
    _compat.prim("add"), _compat.prim("sub"), _compat.prim("neg"), _compat.prim("max"), _compat.prim("min"),
    _compat.prim("exp"), _compat.prim("select_n"), _compat.prim("reduce_max"), _compat.prim("reduce_min"),
    _compat.prim("broadcast_in_dim"), _compat.prim("reshape"), _compat.prim("transpose"),
    _compat.prim("squeeze"), _compat.prim("expand_dims"), _compat.prim("copy"), _compat.prim("copy_p"),
    _compat.prim("stop_gradient"), _compat.prim("optimization_barrier"), _compat.prim("convert_element_type"),
) if p is not None)

#: select_n's rule joins only the cases its predicate may pick (NaN included), so an
#: infinite error of a case the predicate never picks must not spill over
_SELECTS_OWN = frozenset(p for p in (_compat.prim("select_n"),) if p is not None)


def _finalize(ctx: Ctx, aval: Any, out: Any, invals: list[Any]) -> Any:
    if not isinstance(out, Real):
        return out
    if out.exact:
        # an exact copy (reshape, broadcast, slice, ...) of exact operands makes no new
        # NaN; a NaN point input stays NaN until a rule that computes on it (or the
        # output stage) sanitises it
        if ctx.eqn.primitive in STRUCTURAL and all(not isinstance(v, Real) or v.exact for v in invals):
            return out
        return I.sanitize(out)
    fmt = ctx.fmt
    big = fmt.max_finite
    # One select per field: NaN from the analysis' own inf arithmetic becomes the safe
    # infinite bound; a computed range beyond the format's largest finite value means
    # overflow (err inf); and elementwise operands whose computed value may be inf/NaN
    # (infinite err) make the result possibly NaN too, whatever the rule's ranges say.
    # (negated comparisons are true for NaN: one operation each instead of three)
    #
    # Where err ends up infinite, the computed value may also be NaN unless the rule is
    # one of _INF_SAFE and no operand may be NaN; "may be NaN" is the computed range
    # [-inf, inf] (interval.nan_possible). Elsewhere [clo, chi] still encloses the
    # computed value (possibly ±inf), and the distance between the ranges bounds err.
    prim = ctx.eqn.primitive
    low = ~(out.clo >= -big)
    high = ~(out.chi <= big)
    bad = low | high | ~(out.err >= 0)
    safe = prim in _INF_SAFE
    # NaN from the rule's own arithmetic on the computed range (inf - inf); a NaN err
    # (inf * 0 in an error term) says nothing about the computed value
    nan = (jnp.isnan(out.clo) | jnp.isnan(out.chi)) if safe else None
    if prim not in _NOT_ELEMENTWISE and prim not in _SELECTS_OWN:
        for v in invals:
            if isinstance(v, Real) and not v.exact and (jnp.shape(v.err) == jnp.shape(out.err) or jnp.ndim(v.err) == 0):
                bad = bad | ~(v.err < jnp.inf)  # err >= 0: inf or NaN
                if safe:
                    nan = nan | I.nan_possible(v)
    nan = bad if not safe else (bad & nan)
    err = F.where(bad, jnp.inf, out.err)
    clo = F.where(low | nan, -jnp.inf, out.clo)
    chi = F.where(high | nan, jnp.inf, out.chi)
    lo = F.where(jnp.isnan(out.lo), -jnp.inf, out.lo)
    hi = F.where(jnp.isnan(out.hi), jnp.inf, out.hi)
    if safe:
        # the error-from-hull cap where err is infinite but the computed value a number
        spread = jnp.maximum(F.sub_up(chi, lo), F.sub_up(hi, clo))
        err = F.where(bad, jnp.minimum(err, F.where(jnp.isnan(spread), jnp.inf, spread)), err)
    out = Real(lo, hi, clo, chi, err, out.value, point=out.point)
    if not ctx.diag.track_origins:
        return out
    # One reduction per equation (each is an XLA fusion that recomputes its producers,
    # which is why this runs in a second pass, only when some output is infinite):
    # "some error bound became infinite here", reported where it starts.
    inf_any = jnp.any(jnp.isinf(err))
    inherited = jnp.asarray(False)
    for v in invals:
        inherited = inherited | ctx.diag.inf_of(v)
    ctx.diag.add_scalar(
        f"{ctx.describe()}: abs_err becomes inf here: the result may exceed {fmt.name}'s "
        f"largest finite value {big:g} (overflow), or the rule cannot bound it (see any other "
        "message for this equation)",
        inf_any & ~inherited,
    )
    ctx.diag.set_inf(out, inf_any | inherited)
    return out


DOMAIN = Domain(rules=interval_rules, constant=_constant, finalize=_finalize)
DOMAINS = ("interval", "first_order", "affine")


# ---------------------------------------------------------------------------
# Per-layer precision: format conversions between layers
# ---------------------------------------------------------------------------


class _LayerFormats:
    """Which format each value was produced in (by object id; the objects are kept
    alive so ids are not recycled). Values of unknown origin count as produced in
    a format that no narrower format contains, so a narrower consumer rounds them."""

    def __init__(self, precision: F.LayerPrecision):
        self.precision = precision
        self.fmt_of: dict[int, F.Format] = {}
        self.keep: list[Any] = []

    def set(self, v: Any, fmt: F.Format) -> None:
        self.keep.append(v)
        self.fmt_of[id(v)] = fmt

    def get(self, v: Any) -> F.Format:
        return self.fmt_of.get(id(v), F.EXACT)


def make_domain(config: Config, record: Callable | None = None) -> Domain:
    """The interval domain for ``config`` (with the per-layer conversion hooks when
    ``config.precision`` is a :class:`LayerPrecision`), optionally with a ``record`` hook."""
    if not isinstance(config.precision, F.LayerPrecision):
        if record is None:
            return DOMAIN
        return Domain(rules=interval_rules, constant=_constant, finalize=_finalize, record=record)
    lf = _LayerFormats(config.precision)
    storage = config.precision.default

    def constant(val, aval, cfg):
        out = _constant(val, aval, cfg)
        lf.set(out, storage)
        return out

    def finalize(ctx, aval, out, invals):
        out = _finalize(ctx, aval, out, invals)
        lf.set(out, ctx.fmt)
        return out

    def convert(ctx, invals):
        return [convert_operand(ctx, v, lf.get(v), var) for v, var in zip(invals, ctx.eqn.invars)]

    dom = Domain(rules=interval_rules, constant=constant, finalize=finalize, record=record,
                 convert=convert)
    dom.layer_formats = lf  # type: ignore[attr-defined]
    return dom


def _register_storage(dom: Domain, v: Any, config: Config) -> None:
    lf = getattr(dom, "layer_formats", None)
    if lf is not None:
        lf.set(v, config.precision.default)


def convert_operand(ctx: Ctx, v: Any, src: F.Format, var: Any = None) -> Any:
    """``v`` (produced in ``src``) as the operand of an equation in ``ctx.fmt``: rounded
    into ``ctx.fmt`` unless that format contains ``src``; the rounding counts as error."""
    dst = ctx.fmt
    if not isinstance(v, Real) or F.contains(dst, src):
        return v
    if isinstance(var, _compat.Literal) and _representable(var.val, Config(dst, ctx.config.accumulation, ctx.adt)):
        return v
    return round_into(ctx, v, dst)


def round_into(ctx: Ctx, v: Real, dst: F.Format) -> Real:
    """The value ``v`` rounded (to nearest) into ``dst``. Round to nearest is monotone,
    so the computed range becomes ``[fl(clo), fl(chi)]``; the error grows by
    ``u |c| + eta`` (by ``|fl(c) - c| + eta`` at a single point)."""
    adt = ctx.adt
    car = ctx.carrier
    rlo = F.round_to(_to_carrier(v.clo, car), dst).astype(adt)
    rhi = F.round_to(_to_carrier(v.chi, car), dst).astype(adt)
    eta = F.static_up(dst.underflow, adt)
    if v.point:
        rho = F.add_up_nn(F.up(jnp.abs(rlo - v.clo)), eta)
    else:
        M = I.mag(v.clo, v.chi)
        rho = F.add_up_nn(F.scale_up(M, dst.unit_roundoff), eta)
    bad = jnp.isinf(rlo) | jnp.isinf(rhi) | jnp.isnan(rlo) | jnp.isnan(rhi)
    err = F.where(bad, jnp.inf, F.add_up(v.err, rho))
    clo = F.where(bad, -jnp.inf, rlo)
    chi = F.where(bad, jnp.inf, rhi)
    value = v.value
    if is_float_dtype(jnp.asarray(value).dtype):
        value = F.round_to(jnp.asarray(value).astype(car), dst).astype(jnp.asarray(value).dtype)
    return Real(v.lo, v.hi, clo, chi, err, value, point=v.point)


# ---------------------------------------------------------------------------
# bound(f)
# ---------------------------------------------------------------------------


def _is_dynamic(x: Any) -> bool:
    if isinstance(x, (Interval, jax.Array, np.ndarray, np.generic)):
        return True
    if isinstance(x, bool):
        return False
    return isinstance(x, (int, float, complex))


def bound(
    f: Callable[..., Any],
    precision: Any = None,
    *,
    accumulation: Any = "auto",
    domain: str = "interval",
    probabilistic: float | None = None,
    symbols: int | None = None,
    refine_budget: int | None = None,
    analysis_dtype: Any = None,
    jit: bool = True,
    warn: bool = True,
    symbol_sharding: tuple[Any, str] | None = None,
) -> Callable[..., Any]:
    """Transform ``f`` into a function that returns guaranteed error bounds.

    **Arguments:**

    - `f`: a JAX-traceable function of arrays and pytrees.
    - `precision`: ``None`` analyses ``f`` as written (each primitive rounds to its
      own output dtype); a format (``"bfloat16"``, ``"float16"``,
      ``"float8_e4m3fn"``, a :class:`Format`, ...) analyses ``f`` as if every
      floating input, parameter, constant and operation were in that format
      (rounding the inputs counts as error).
    - `accumulation`: summation model of ``dot_general`` and ``reduce_sum``:
      ``"auto"`` (``"wide:float32"`` for formats narrower than float32, else
      ``"recursive"``), ``"recursive"``, ``"pairwise"``, ``"blocked:B"``,
      ``"wide:float32"``.
    - `domain`: ``"interval"`` (default; ranges and error bounds propagated
      operation by operation: cheap, loose on deep programs) or ``"first_order"``
      (each rounding error's bound times a guaranteed enclosure of the output's
      sensitivity to it, from a reverse pass vmapped over output elements: close
      to the best worst-case bound of the standard model at point inputs; costs
      about one backward pass per output element). Every result is also capped by
      the interval bound.
    - `probabilistic`: ``None`` (guaranteed bounds) or ``delta`` in (0, 1): with
      ``domain="first_order"``, ``abs_err`` holds with probability ``>= 1 - delta``
      per element when rounding errors are independent mean-zero random variables
      (Higham & Mary 2019); the :class:`Bound` says so (``confidence = 1 - delta``).
      A per-element guarantee (for all ``M`` outputs jointly use ``delta / M``),
      capped by the guaranteed first_order bound; it costs about twice the
      first_order analysis. Not trustworthy where rounding errors are systematic
      (long sums of same-sign terms in a narrow format); see docs/domains.md.
    - `refine_budget`: ``domain="first_order"`` only: how many equations (tape entries)
      the reverse passes that refine intermediate ranges may walk in all while they
      go back to the inputs (``None``: 4096). Beyond it each pass stops at the values
      refined before: a smaller program that compiles faster, with looser bounds
      where cancellations cross those values (attention, LayerNorm). Measured on a
      float16 transformer block (seq 8, width 32): 4096 gives 1.2x the first-order
      limit, 256 gives 13.5x at about half the compile time (docs/domains.md). Any
      value is sound.
    - `analysis_dtype`: the dtype jaxerr's own (outward-rounded) arithmetic runs in:
      ``None`` (float64 when ``jax_enable_x64`` is on, else float32) or ``"float64"``
      (float64 either way: without x64, JAX's 64-bit types are switched on for the
      analysis only, ``f`` is traced as configured, and the results come back as
      float32 rounded outward). float64 gives tighter bounds wherever the analysis'
      own roundings are not small against the errors bounded: float32 programs, and
      wide bfloat16/float16 networks with ``domain="first_order"`` (4x256 bfloat16
      GELU MLP: 1.49x the first-order limit against 1.68x), at about twice the time
      per call on CPU (docs/domains.md). It also allows formats wider than float32
      (``precision="float64"``) without x64.
    - `jit`: compile the analysis with ``jax.jit`` (one XLA program).
    - `symbol_sharding`: ``domain="affine"`` only: ``(mesh, axis_name)`` splits the
      symbol axis of every affine form over that axis of a ``jax.sharding.Mesh``
      (docs/scaling.md); the bounds stay valid, and agree with one device up to the
      rounding of sums over the symbol axis.
    - `warn`: emit a :class:`JaxerrWarning` for each fired diagnostic (eager calls).

    **Returns:** a function with the signature of ``f`` whose arguments may contain
    :class:`Interval` leaves, returning a pytree shaped like ``f``'s output whose
    leaves are :class:`Bound` objects.

    **Guarantee:** for every input in the input set and every rounding allowed by the
    error model (docs/error-model.md), the exact real result of ``f`` lies in
    ``[lo, hi]`` and the computed result is within ``abs_err`` of it.
    """
    fmt = F.as_precision(precision)
    acc = F.Accumulation.parse(accumulation)
    want64 = _analysis_dtype_arg(analysis_dtype)
    if isinstance(fmt, F.LayerPrecision) and domain != "interval":
        raise ValueError(
            "per-layer precision (a mapping or callable precision=) is supported by "
            "domain='interval' only; analyse with domain='interval'"
        )
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; use one of {', '.join(map(repr, DOMAINS))}")
    if probabilistic is not None:
        if not (isinstance(probabilistic, (int, float)) and 0 < probabilistic < 1):
            raise ValueError(f"probabilistic must be a probability delta in (0, 1), got {probabilistic!r}")
        if domain != "first_order":
            raise ValueError(
                "probabilistic bounds need the sensitivities of domain='first_order'; "
                "use bound(f, ..., domain='first_order', probabilistic=delta)"
            )
        probabilistic = float(probabilistic)
    if symbols is not None:
        if domain != "affine":
            raise ValueError("symbols= is the symbol budget of domain='affine'; pass domain='affine' too")
        if not (isinstance(symbols, int) and not isinstance(symbols, bool) and symbols >= 1):
            raise ValueError(f"symbols must be a positive integer (the number of shared noise symbols), got {symbols!r}")
    if symbol_sharding is not None:
        if domain != "affine":
            raise ValueError("symbol_sharding= shards the symbols of domain='affine'; pass domain='affine' too")
        if not (isinstance(symbol_sharding, tuple) and len(symbol_sharding) == 2
                and isinstance(symbol_sharding[0], jax.sharding.Mesh) and isinstance(symbol_sharding[1], str)
                and symbol_sharding[1] in symbol_sharding[0].axis_names):
            raise ValueError("symbol_sharding must be (mesh, axis_name) with a jax.sharding.Mesh and one "
                             f"of its axis names, got {symbol_sharding!r}")
    if refine_budget is not None:
        if domain != "first_order":
            raise ValueError("refine_budget= bounds the refinement passes of domain='first_order'; "
                             "pass domain='first_order' too")
        if not (isinstance(refine_budget, int) and not isinstance(refine_budget, bool) and refine_budget >= 0):
            raise ValueError(f"refine_budget must be a non-negative integer (tape entries), got {refine_budget!r}")
    if domain == "affine" and symbols is None:
        from ._affine import DEFAULT_SYMBOLS

        symbols = DEFAULT_SYMBOLS
    if fmt is not None and carrier_dtype(Config(fmt, acc, np.dtype(np.float32))) == np.float64 \
            and not want64 and not _compat.x64_enabled():
        raise ValueError(
            f"precision={fmt.name} needs float64 analysis: pass analysis_dtype='float64' "
            "or enable it globally with jax.config.update('jax_enable_x64', True)"
        )

    @functools.wraps(f)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        leaves, treedef = jax.tree_util.tree_flatten(
            (args, kwargs), is_leaf=lambda x: isinstance(x, Interval)
        )
        dyn_idx = tuple(i for i, x in enumerate(leaves) if _is_dynamic(x))
        static = tuple((i, x) for i, x in enumerate(leaves) if i not in dyn_idx)
        dyn = [leaves[i] for i in dyn_idx]
        for k, x in enumerate(dyn):
            dt = x.lo.dtype if isinstance(x, Interval) else (x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)
            if jnp.issubdtype(dt, jnp.complexfloating):
                raise TypeError(
                    f"argument leaf {dyn_idx[k]} is complex ({dt}); jaxerr bounds real "
                    "floating-point programs. Pass the real and imaginary parts as separate "
                    "real arrays and write f in real arithmetic."
                )
            if isinstance(x, Interval):
                _validate_interval(x, f"argument leaf {dyn_idx[k]}")
            elif _concrete(x):
                a = np.asarray(x)
                if a.dtype.kind == "f" or str(a.dtype) == "bfloat16":
                    if np.isnan(a.astype(np.float64)).any():
                        raise ValueError(
                            f"argument leaf {dyn_idx[k]}: NaN in a point input at index "
                            f"{_first(np.isnan(a.astype(np.float64)))}; NaN has no exact value, "
                            "so no error bound exists. Remove it or bound a finite Interval."
                        )
        is_iv = tuple(isinstance(x, Interval) for x in dyn)
        # float64 analysis without jax_enable_x64: JAX's 64-bit types on for the analysis only
        analysis64 = want64 and not _compat.x64_enabled()
        with _compat.x64_scope(True) if analysis64 else contextlib.nullcontext():
            subn = tuple(_has_subnormals(x) for x in dyn)
        key = _Static(f, fmt, acc, treedef, dyn_idx, static, is_iv, subn,
                      domain=domain, probabilistic=probabilistic,
                      options=(symbols, _AFFINE_CAP, symbol_sharding) if domain == "affine" else refine_budget,
                      analysis64=analysis64)
        try:
            hash(key)
            hashable = True
        except TypeError:
            hashable = False
        concrete = all(s is not None for s in subn)
        run = _analyse_jit if (jit and hashable) else _analyse
        if analysis64:
            # leaves as the caller's JAX sees them (float64 NumPy inputs are float32 here)
            dyn = [x if isinstance(x, Interval) or _compat.is_tracer(x) else jnp.asarray(x) for x in dyn]
            run = _in_x64(run)
        if concrete:
            # eager call: the fast program, then (only if some bound is infinite) the
            # program that names the equation where the infinity starts
            out = run(key.with_mode("fast"), dyn)
            if _any_infinite(out):
                out = run(key.with_mode("origins"), dyn)
        else:
            out = run(key, dyn)
        if warn:
            _emit_warnings(out)
        return out

    return wrapped


class _Static:
    """Hashable static part of a call (the function, settings, tree structure)."""

    def __init__(self, f, fmt, acc, treedef, dyn_idx, static, is_iv, subn, mode="cond",
                 domain="interval", probabilistic=None, options=None, analysis64=False):
        self.f, self.fmt, self.acc, self.treedef = f, fmt, acc, treedef
        self.dyn_idx, self.static, self.is_iv, self.subn = dyn_idx, static, is_iv, subn
        self.mode = mode
        # options: the domain's own settings (affine: (symbols, cap, sharding);
        # first_order: refine_budget)
        self.domain, self.probabilistic, self.options = domain, probabilistic, options
        # analysis64: run the analysis with JAX's 64-bit types on (f is traced as the caller has it)
        self.analysis64 = analysis64
        self._key = (f, fmt, acc, treedef, dyn_idx, static, is_iv, subn, mode, domain, probabilistic,
                     options, analysis64)

    def with_mode(self, mode: str) -> _Static:
        return _Static(self.f, self.fmt, self.acc, self.treedef, self.dyn_idx, self.static,
                       self.is_iv, self.subn, mode, self.domain, self.probabilistic, self.options,
                       self.analysis64)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key


def _analyse(key: _Static, dyn: list[Any]) -> Any:
    n = len(key.dyn_idx) + len(key.static)

    def rebuild(arrs):
        leaves = [None] * n
        for i, a in zip(key.dyn_idx, arrs):
            leaves[i] = a
        for i, x in key.static:
            leaves[i] = x
        return jax.tree_util.tree_unflatten(key.treedef, leaves)

    program_args = [x.lo if isinstance(x, Interval) else jnp.asarray(x) for x in dyn]

    def flat_f(*arrs):
        args, kwargs = rebuild(arrs)
        return key.f(*args, **kwargs)

    specs = [jax.ShapeDtypeStruct(jnp.shape(a), a.dtype) for a in program_args]
    # f is traced as the caller has JAX configured (analysis64: the analysis runs with
    # 64-bit types on, the caller's f without them)
    with _compat.x64_scope(False) if key.analysis64 else contextlib.nullcontext():
        closed, out_shape = jax.make_jaxpr(flat_f, return_shape=True)(*specs)
    check_supported(closed.jaxpr, interval_rules)
    out = _analyse_traced(key, dyn, closed, out_shape)
    if key.analysis64:
        # back to float32, outward: JAX without x64 cannot compute on float64 arrays
        out = jax.tree_util.tree_map(lambda b: _narrow_bound(b) if isinstance(b, Bound) else b, out,
                                     is_leaf=lambda b: isinstance(b, Bound))
    return out


def _analysis_dtype_arg(spec: Any) -> bool:
    """Whether ``analysis_dtype=spec`` asks for a float64 analysis (``ValueError`` if
    ``spec`` is not ``None``, float32 or float64)."""
    if spec is None:
        return False
    try:
        dt = np.dtype(spec)
    except TypeError:
        dt = None
    if dt == np.float64:
        return True
    if dt == np.float32:
        if _compat.x64_enabled():
            raise ValueError("analysis_dtype='float32' with jax_enable_x64 on is not supported: the "
                             "analysis runs in float64 then; leave analysis_dtype=None")
        return False
    raise ValueError(f"analysis_dtype must be None, 'float32' or 'float64', got {spec!r}")


def _in_x64(run: Callable[..., Any]) -> Callable[..., Any]:
    """``run`` with JAX's 64-bit types on, for the whole call: tracing, and the
    transformations (vmap, jit) JAX applies to the analysis program afterwards."""
    def call(key: _Static, dyn: list[Any]) -> Any:
        with _compat.x64_scope(True):
            return run(key, dyn)

    return call


def _narrow(x: Any, side: int) -> Any:
    """``x`` (float64) as a float32 bound on the side ``side`` (+1: ``>= x``, -1: ``<= x``);
    NaN stays NaN. Exact where ``x`` is a float32."""
    x = jnp.asarray(x)
    if x.dtype != np.float64:
        return x

    def short(y):  # y on the wrong side of x (compared, not subtracted: no flushed difference)
        return y.astype(np.float64) < x if side > 0 else y.astype(np.float64) > x

    y = x.astype(np.float32)
    y = jnp.where(short(y), jnp.nextafter(y, jnp.asarray(side * np.inf, np.float32)), y)
    # a flushed subnormal result: the smallest normal float32 on that side
    return jnp.where(short(y), jnp.asarray(side * float(np.finfo(np.float32).tiny), np.float32), y)


def _narrow_bound(b: Bound) -> Bound:
    return Bound(_narrow(b.lo, -1), _narrow(b.hi, 1), _narrow(b.abs_err, 1), _narrow(b.rel_err, 1),
                 _narrow(b.value, 1), _narrow(b.computed_lo, -1), _narrow(b.computed_hi, 1),
                 b.diagnostics, confidence=b.confidence)


def _analyse_traced(key: _Static, dyn: list[Any], closed: Any, out_shape: Any) -> Any:
    config = Config(key.fmt, key.acc, F.analysis_dtype())
    if carrier_dtype(config) == np.float64 and config.adt != np.float64:
        raise ValueError("float64 analysis needs jax_enable_x64")

    diag = DiagnosticCollector()
    skip = _dot_rhs_only(closed.jaxpr, dyn, key) if key.domain == "interval" else set()
    if skip:
        config.unchecked = frozenset(id(closed.jaxpr.invars[k]) for k in skip)
        if config.precision is not None:
            config.lazy_round = config.unchecked
    dom_main = make_domain(config)
    values = []
    traced_sub = jnp.asarray(False)
    for k, x in enumerate(dyn):
        if k in skip:
            values.append(_checked_free_point(x, config))
            _register_storage(dom_main, values[-1], config)
            continue
        v, ts = _input_value(x, config, diag, f"argument leaf {key.dyn_idx[k]}", key.subn[k])
        values.append(v)
        _register_storage(dom_main, v, config)
        traced_sub = traced_sub | ts
    diag.add_scalar(
        "an argument contains subnormal numbers that XLA flushes to zero (traced under "
        "jit/vmap, or float32 subnormals converted to the float64 analysis dtype); the "
        "analysis cannot account for that, so every abs_err is inf. Call bound(f) on "
        "concrete arrays (it compiles itself), in the arguments' own dtype, for such inputs.",
        traced_sub,
    )
    if key.domain == "first_order":
        # short scans become straight-line code, so the tape sees through them
        closed = unroll_scans(closed)
    consts = list(closed.consts)
    if key.domain == "first_order":
        by_path: dict[str, list[Any]] = {}
        dom = Domain(rules=interval_rules, constant=_constant, finalize=_finalize,
                     record=lambda ctx, ins, outs: by_path.__setitem__(ctx.path, outs))
        outs = interpret(dom, closed.jaxpr, consts, values, config, diag)
        from ._first_order import first_order_errors

        wc, pr, paths = first_order_errors(closed.jaxpr, consts, values, by_path, outs, DOMAIN, config,
                                           key.probabilistic, refine_budget=key.options)
        outs = [_cap(o, e if key.probabilistic is None else p, q)
                for o, e, p, q in zip(outs, wc, pr, paths)]
    elif key.domain == "affine":
        from ._affine import affine_outputs

        n_symbols, cap, symbol_sharding = key.options
        af = affine_outputs(closed.jaxpr, consts, values, config, diag, n_symbols, symbol_sharding)
        if cap:
            # the interval pass (its diagnostics are the affine pass' business) caps it
            iv = interpret(DOMAIN, closed.jaxpr, consts, values, config, DiagnosticCollector())
            af = [_meet(a, i) for a, i in zip(af, iv)]
        outs = af
    else:
        outs = interpret(dom_main, closed.jaxpr, consts, values, config, diag)
    outs = [_consistent(o, k, diag, traced_sub) for k, o in enumerate(outs)]

    # Where an output bound is infinite, name the equation where it started: a second
    # interpretation with one flag per equation, run (lax.cond) only in that case.
    any_inf = jnp.asarray(False)
    for o in outs:
        if isinstance(o, Real):
            any_inf = any_inf | jnp.any(jnp.isinf(o.err))
    origin_msgs: list[str] = []

    def origins(vals):
        d2 = DiagnosticCollector(track_origins=True)
        for k in sorted(skip):
            # the NaN check skipped in the main pass (a NaN weight makes its dot's bounds
            # infinite, which is what brings this pass to run)
            d2.add_scalar(f"argument leaf {key.dyn_idx[k]}: NaN in a point input; bounds are meaningless",
                          jnp.any(jnp.isnan(jnp.asarray(dyn[k]))))
            if config.precision is not None:
                arr = jnp.asarray(dyn[k])
                _flag_input_overflow(d2, f"argument leaf {key.dyn_idx[k]}",
                                     _rounded_input(arr, arr, config, point=True), config)
        dom2 = make_domain(config)
        for v in vals:
            _register_storage(dom2, v, config)
        interpret(dom2, closed.jaxpr, consts, vals, config, d2)
        origin_msgs[:] = d2.messages
        return jnp.stack(d2.flags) if d2.flags else jnp.zeros((0,), bool)

    if key.mode == "origins":
        origin_flags = origins(values)
    elif key.mode == "cond":
        shape = jax.eval_shape(origins, values)
        origin_flags = jax.lax.cond(any_inf, origins, lambda vals: jnp.zeros(shape.shape, bool), values)
    else:  # "fast": the caller re-runs in "origins" mode if an output is infinite
        origin_flags = []
    for m, fl in zip(list(origin_msgs), list(origin_flags)):
        diag.add_scalar(m, fl)

    out_leaves, out_tree = jax.tree_util.tree_flatten(out_shape)
    results = []
    for k, o in enumerate(outs):
        results.append(_to_bound_parts(o, k, out_leaves[k], diag, config))
    flags = jnp.stack(diag.flags) if diag.flags else jnp.zeros((0,), bool)
    d = Diagnostics(tuple(diag.messages), flags)
    conf = None if key.probabilistic is None else 1.0 - key.probabilistic
    bounds = [Bound(*parts, d, confidence=conf if not isinstance(o, Discrete) else None)
              for parts, o in zip(results, outs)]
    return jax.tree_util.tree_unflatten(out_tree, bounds)


_analyse_jit = jax.jit(_analyse, static_argnums=0)


def _has_subnormals(x: Any) -> bool | None:
    """True/False for a concrete floating leaf (nonzero values below the analysis
    dtype's smallest normal, which XLA flushes to zero), None when traced."""
    arrs = (x.lo, x.hi) if isinstance(x, Interval) else (x,)
    if not all(_concrete(a) for a in arrs):
        return None
    tiny = float(np.finfo(F.analysis_dtype()).tiny)
    for a in arrs:
        a = np.asarray(a)
        if a.dtype.kind != "f" and str(a.dtype) != "bfloat16":
            continue
        v = np.abs(a.astype(np.float64))
        if ((v > 0) & (v < tiny)).any():
            return True
    return False


def _daz(r: Real, adt: Any) -> Real:
    """Account for XLA flushing subnormal inputs to zero (and the analysis' own
    arithmetic doing the same): the exact range is widened to normal numbers on the
    outside, the computed value may be 0, and the error is below the smallest normal."""
    tiny = jnp.asarray(np.finfo(adt).tiny, adt)
    # decided on the bits: XLA's own comparisons flush subnormals to 0 (x != 0 is False
    # for x = -7.6e-40, found by fuzzing), so neither "is subnormal" nor the sign can be
    # computed with float operations
    nbits = np.dtype(adt).itemsize * 8
    it = jnp.int64 if nbits == 64 else jnp.int32
    expo = (1 << 11) - 1 << 52 if nbits == 64 else 0xFF << 23
    mant = (1 << 52) - 1 if nbits == 64 else (1 << 23) - 1

    def sub_neg(x):
        b = jax.lax.bitcast_convert_type(x, it)
        return ((b & expo) == 0) & ((b & mant) != 0), b < 0

    (slo, nlo), (shi, nhi) = sub_neg(r.lo), sub_neg(r.hi)
    lo = F.where(slo & nlo, -tiny, F.where(slo, 0.0, r.lo))
    hi = F.where(shi & ~nhi, tiny, F.where(shi, 0.0, r.hi))
    (sclo, nclo), (schi, nchi) = sub_neg(r.clo), sub_neg(r.chi)
    clo = F.where(sclo & nclo, -tiny, F.where(sclo, 0.0, r.clo))
    chi = F.where(schi & ~nchi, tiny, F.where(schi, 0.0, r.chi))
    clo = jnp.minimum(clo, F.where(slo, 0.0, clo))
    chi = jnp.maximum(chi, F.where(shi, 0.0, chi))
    err = F.where(slo | shi | sclo | schi, jnp.maximum(r.err, tiny), r.err)
    return Real(lo, hi, clo, chi, err, r.value)


def _cap(o: Any, err: Any, path: Any = None) -> Any:
    """Replace the error bound by the smaller of it and ``err`` (another valid bound).

    ``path``: ``(lo, hi)`` enclosing the computed value (first_order's path pass at
    ``t = 1``; infinite where it knows nothing). It narrows the computed range, and
    where it is finite the computed value is a finite number, so the interval pass'
    "may be NaN" (err inf, computed range [-inf, inf]) no longer discards ``err``."""
    if not isinstance(o, Real) or err is None or o.exact:
        return o
    clo, chi, nan = o.clo, o.chi, I.nan_possible(o)
    if path is not None:
        plo, phi = (p.astype(o.clo.dtype) for p in path)
        fin = jnp.isfinite(plo) & jnp.isfinite(phi)
        clo = F.where(fin, jnp.maximum(clo, plo), clo)
        chi = F.where(fin, jnp.minimum(chi, phi), chi)
        nan = nan & ~fin
    # no finite error where the computed value may be NaN, whatever ``err`` says
    e = F.where(nan, jnp.inf, jnp.minimum(o.err, err.astype(o.err.dtype)))
    return I.tighten(Real(o.lo, o.hi, clo, chi, e, o.value, point=o.point))


#: domain="affine" returns the intersection with the interval domain's bounds (both are
#: guarantees). Benchmarks switch it off to measure the affine domain alone.
_AFFINE_CAP = True


def _meet(a: Any, b: Any) -> Any:
    """The intersection of two valid interval results for the same output."""
    if not (isinstance(a, Real) and isinstance(b, Real)):
        return a
    # possibly NaN if either says so (a computed range is no claim there)
    nan = I.nan_possible(a) | I.nan_possible(b)
    return I.tighten(Real(jnp.maximum(a.lo, b.lo), jnp.minimum(a.hi, b.hi),
                          F.where(nan, -jnp.inf, jnp.maximum(a.clo, b.clo)),
                          F.where(nan, jnp.inf, jnp.minimum(a.chi, b.chi)),
                          F.where(nan, jnp.inf, jnp.minimum(a.err, b.err)), b.value))


def _poison(o: Any, flag: Any) -> Any:
    """No claim where ``flag``: the exact enclosure too may be wrong (a flushed input)."""
    if isinstance(o, Real):
        return Real(F.where(flag, -jnp.inf, o.lo), F.where(flag, jnp.inf, o.hi),
                    F.where(flag, -jnp.inf, o.clo), F.where(flag, jnp.inf, o.chi),
                    F.where(flag, jnp.inf, o.err), o.value)
    return o


def _dot_rhs_only(jaxpr: Any, dyn: list[Any], key: _Static) -> set[int]:
    """Positions of traced floating point-input leaves (weights, typically) whose every
    use is as the rhs of a top-level dot_general. Their per-call scans for NaN and
    subnormals (each costs about one matmul of a batch-32 layer) are skipped: the
    dot_general rule widens its result by ``tiny * sum|x|`` instead, which covers XLA
    flushing their subnormals, and a NaN makes the bounds infinite by itself."""
    uses: dict[int, list[tuple[Any, int]]] = {id(v): [] for v in jaxpr.invars}
    for eqn in jaxpr.eqns:
        for pos, v in enumerate(eqn.invars):
            if id(v) in uses:
                uses[id(v)].append((eqn.primitive, pos))
    outs = {id(v) for v in jaxpr.outvars}
    dot = _compat.prim("dot_general")
    skip = set()
    for k, (v, x) in enumerate(zip(jaxpr.invars, dyn)):
        if key.subn[k] is not None or isinstance(x, Interval) or id(v) in outs:
            continue
        dt = np.dtype(jnp.asarray(x).dtype) if not hasattr(x, "dtype") else np.dtype(x.dtype)
        if not is_float_dtype(dt) or dt.itemsize > 4:
            continue
        u = uses[id(v)]
        if u and all(p is dot and pos == 1 for p, pos in u):
            skip.add(k)
    return skip


def _checked_free_point(x: Any, config: Config) -> Real:
    """The domain value of a point leaf whose NaN/subnormal scans are skipped (see
    :func:`_dot_rhs_only`): the exact point. Under a precision override the dot_general
    rule rounds it into the format itself (``Config.lazy_round``), when its layer runs,
    so that the rounded copies of all weights are not computed up front and kept alive
    together."""
    arr = jnp.asarray(x)
    return I.point(arr, arr, config.adt)


INTERNAL = "internal inconsistency in jaxerr's analysis"


def _consistent(o: Any, k: int, diag: DiagnosticCollector, flag: Any) -> Any:
    """No claim where ``flag`` (see :func:`_poison`), and, in defence in depth, where an
    output's bound is not a bound (abs_err negative or NaN, lo > hi, computed_lo >
    computed_hi): inf with a diagnostic instead of a wrong finite number. Any such
    diagnostic is a jaxerr bug (the fuzzer counts it as a violation)."""
    if not isinstance(o, Real):
        return o
    if o.exact:
        return _poison(I.sanitize(o), flag)
    bad = ~(o.err >= 0) | ~(o.lo <= o.hi) | ~(o.clo <= o.chi)
    diag.add_scalar(f"output {k}: {INTERNAL} (abs_err < 0 or lo > hi); the bound there is "
                    "replaced by inf. This is a bug in jaxerr: please report the program.",
                    jnp.any(bad))
    return _poison(o, bad | flag)


def _input_value(x: Any, config: Config, diag: DiagnosticCollector, where: str, subn: bool | None):
    """The domain value of one argument leaf, and a traced flag 'has subnormals' (see
    :func:`_input_value_in`). A leaf whose dtype is narrower than the analysis dtype
    (float32 under x64) is converted by XLA, which flushes that dtype's subnormals to
    zero on the way, so its exact value would be lost: such a leaf sets the flag too
    (every abs_err inf, with the diagnostic; fuzz seed 5063)."""
    r, flag = _input_value_in(x, config, diag, where, subn)
    arrs = (x.lo, x.hi) if isinstance(x, Interval) else (x,)
    dt = np.dtype(jnp.asarray(arrs[0]).dtype)
    if is_float_dtype(dt) and dt.itemsize < np.dtype(config.adt).itemsize and dt.itemsize >= 4:
        flag = flag | _any_subnormal(tuple(jnp.asarray(a) for a in arrs), dt)
    return r, flag


def _input_value_in(x: Any, config: Config, diag: DiagnosticCollector, where: str, subn: bool | None):
    """The domain value of one argument leaf, and a traced flag 'has subnormals' (only
    when that could not be decided before tracing)."""
    adt = config.adt
    no = jnp.asarray(False)
    if isinstance(x, Interval):
        lo, hi = x.lo, x.hi
        if not is_float_dtype(lo.dtype):
            return Discrete(lo, hi, _centre_int(lo, hi)), no
        bad = jnp.isnan(lo.astype(adt)) | jnp.isnan(hi.astype(adt)) | (lo > hi)
        diag.add(f"{where}: interval with NaN ends or lo > hi; bounds are meaningless", jnp.any(bad))
        if config.precision is None:
            lo_a, hi_a = lo.astype(adt), hi.astype(adt)
            r = Real(lo_a, hi_a, lo_a, hi_a, jnp.zeros_like(lo_a), _centre(lo, hi))
        else:
            r = _rounded_input(lo, hi, config, point=False)
            _flag_input_overflow(diag, where, r, config)
        # not marked exact: under jit a bad box can only be flagged, and its error is inf
        r = Real(
            F.where(bad, -jnp.inf, r.lo), F.where(bad, jnp.inf, r.hi),
            F.where(bad, -jnp.inf, r.clo), F.where(bad, jnp.inf, r.chi),
            F.where(bad, jnp.inf, r.err), r.value,
        )
        if subn is False:
            return r, no
        if subn is True:
            return _daz(r, adt), no
        return r, _any_subnormal((lo, hi), adt)
    arr = jnp.asarray(x)
    if not is_float_dtype(arr.dtype):
        return Discrete(arr, arr, arr), no
    # isnan(sum|x|) shares |x| with the analysis and avoids a boolean temporary
    diag.add_scalar(f"{where}: NaN in a point input; bounds are meaningless",
                    jnp.isnan(jnp.sum(jnp.abs(arr.astype(adt)))))
    if config.precision is None:
        r = I.point(arr, arr, adt)
    else:
        r = _rounded_input(arr, arr, config, point=True)
        _flag_input_overflow(diag, where, r, config)
    if subn is False:
        return r, no
    if subn is True:
        return _daz(r, adt), no
    # traced: a subnormal input makes every output inf (see _analyse), so the values
    # need no flushed copy, only the flag
    return r, _any_subnormal((arr,), adt)


def _flag_input_overflow(diag: DiagnosticCollector, where: str, r: Real, config: Config) -> None:
    fmt = F.storage_format(config.precision)
    diag.add(
        f"{where}: input values beyond {fmt.name}'s largest finite value {fmt.max_finite:g} "
        f"round to inf (overflow), so abs_err is inf; scale the input into {fmt.name}'s range "
        "or analyse in a wider format",
        jnp.isinf(r.clo) | jnp.isinf(r.chi),
    )


def _any_subnormal(arrs, adt):
    """Some nonzero |x| below the analysis dtype's smallest normal. Decided on the bits
    (zero exponent field, nonzero significand): XLA's float comparisons flush subnormals
    to 0, so ``0 < |x| < tiny`` is never true (found by fuzzing)."""
    nbits = np.dtype(adt).itemsize * 8
    it = jnp.int64 if nbits == 64 else jnp.int32
    expo = (1 << 11) - 1 << 52 if nbits == 64 else 0xFF << 23
    mant = (1 << 52) - 1 if nbits == 64 else (1 << 23) - 1
    flag = jnp.asarray(False)
    for a in arrs:
        b = jax.lax.bitcast_convert_type(a.astype(adt), it)
        flag = flag | jnp.any(((b & expo) == 0) & ((b & mant) != 0))
    return flag


def _centre_int(lo, hi):
    return lo + (hi - lo) // 2


def _to_bound_parts(o: Any, k: int, shape: Any, diag: DiagnosticCollector, config: Config):
    adt = config.adt
    if isinstance(o, Discrete):
        uncertain = o.lo != o.hi
        diag.add(
            f"output {k} ({o.value.dtype}{list(o.value.shape)}) depends on uncertain values: "
            "its exact and computed values may differ within [lo, hi]",
            jnp.any(uncertain),
        )
        spread = (o.hi.astype(adt) - o.lo.astype(adt)) if o.value.dtype != jnp.bool_ else uncertain.astype(adt)
        rel = F.where(spread == 0, jnp.zeros_like(spread), jnp.inf)
        return (o.lo, o.hi, spread, rel, o.value, o.lo, o.hi)
    m = I.mig(o.lo, o.hi)
    # (~(q >= 0): inf/inf and other NaN quotients claim nothing)
    q = F.div_up(o.err, m)
    rel = F.where(o.err == 0, 0.0, F.where((m > 0) & (q >= 0), q, jnp.inf)).astype(adt)
    return (o.lo, o.hi, o.err, rel, o.value, o.clo, o.chi)


def _any_infinite(out: Any) -> bool:
    leaves = jax.tree_util.tree_leaves(out, is_leaf=lambda x: isinstance(x, Bound))
    return any(bool(jnp.any(jnp.isinf(b.abs_err))) for b in leaves if isinstance(b, Bound))


def _emit_warnings(out: Any) -> None:
    leaves = jax.tree_util.tree_leaves(out, is_leaf=lambda x: isinstance(x, Bound))
    if not leaves or not isinstance(leaves[0], Bound):
        return
    d = leaves[0].diagnostics
    if _compat.is_tracer(d.flags):
        return
    for msg in d.fired():
        warnings.warn(msg, JaxerrWarning, stacklevel=3)
