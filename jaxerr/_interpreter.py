"""The equation loop: evaluate a jaxpr over abstract values, one rule per primitive.

The interpreter knows nothing about intervals: it reads values from an
environment, asks the domain's rule registry (keyed by Primitive objects) for
each equation, recurses into call-like sub-jaxprs, and hands every result to the
domain's ``finalize`` hook (overflow checks, NaN sanitising).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _compat
from ._formats import EXACT, Accumulation, Format, LayerPrecision, format_of_dtype, is_exact_format


class UnsupportedPrimitiveError(NotImplementedError):
    """Raised before any computation when a jaxpr uses primitives without a rule."""


def is_float_dtype(dtype: Any) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)


# ---------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------


class DiagnosticCollector:
    """Collects (message, flag) pairs while interpreting; flags may be traced."""

    def __init__(self, track_origins: bool = False) -> None:
        # track_origins=False: rule diagnostics only (the fast pass).
        # track_origins=True: only the per-equation "an infinite bound starts here"
        # flags, one reduction per equation; run only when some output is infinite.
        self.track_origins = track_origins
        self.messages: list[str] = []
        self.flags: list[Any] = []
        # id(value) -> (value, scalar flag "some error bound of this value is infinite"),
        # so that a diagnostic names the equation where an infinity starts without
        # re-reducing every input (each reduction is an XLA kernel to compile)
        self._inf: dict[int, tuple[Any, Any]] = {}

    def add(self, message: str, flag: Any = True) -> None:
        self.messages.append(message)
        self.flags.append(jnp.any(jnp.asarray(flag, dtype=bool)))

    def add_scalar(self, message: str, flag: Any) -> None:
        """Like :meth:`add` for a flag that is already a boolean scalar."""
        self.messages.append(message)
        self.flags.append(flag)

    def set_inf(self, value: Any, flag: Any) -> None:
        self._inf[id(value)] = (value, flag)

    def inf_of(self, value: Any) -> Any:
        entry = self._inf.get(id(value))
        return False if entry is None else entry[1]


# ---------------------------------------------------------------------------
# Per-equation context handed to rules
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Config:
    precision: Format | LayerPrecision | None  # None: as written; LayerPrecision: per layer
    accumulation: Accumulation
    adt: np.dtype  # analysis dtype
    state: Any = None  # per-analysis state of a domain (the affine domain's symbol pool)
    # ids of top-level jaxpr input variables whose subnormal/NaN checks were skipped
    # because their only uses are as dot_general rhs operands: that rule widens its
    # result by what XLA flushing their subnormals can change (see linear.py)
    unchecked: frozenset = frozenset()
    # ids of those that enter as exact points although a precision override rounds them
    # into its format: the dot_general rule rounds them itself, when the layer runs
    lazy_round: frozenset = frozenset()


@dataclasses.dataclass
class Ctx:
    """What a rule may know about its equation."""

    config: Config
    eqn: Any
    path: str
    diag: DiagnosticCollector
    # the domain interpreting this equation (control-flow rules evaluate their bodies
    # with ``domain.inner``)
    domain: Domain | None = None
    # True: evaluate the rule as if the operation were exact (format EXACT, no rounding);
    # the per-layer report uses it to bound the error an equation inherits
    exact_ops: bool = False
    # name stack of the call equations this equation is nested in ("" at top level)
    scope: str = ""
    # (lo, hi) known to enclose the equation's exact result over its operands' ranges
    # (a domain that knows more than interval arithmetic sets it before the rule:
    # first_order's pre-rounding refinement); a rule may intersect its range with it
    range_hint: Any = None

    @property
    def name(self) -> str:
        """The equation's full name stack (Flax module path, named scopes)."""
        own = _compat.name_stack(self.eqn)
        if not self.scope:
            return own
        return f"{self.scope}/{own}" if own else self.scope

    @property
    def adt(self) -> np.dtype:
        return self.config.adt

    @property
    def override(self) -> bool:
        return self.config.precision is not None

    @property
    def fmt(self) -> Format:
        """The format this equation's floating result is rounded to."""
        if self.exact_ops:
            return EXACT
        prec = self.config.precision
        if isinstance(prec, LayerPrecision):
            return prec.resolve(self.name)
        if prec is not None:
            return prec
        for v in list(self.eqn.outvars) + list(self.eqn.invars):
            dt = getattr(getattr(v, "aval", None), "dtype", None)
            if dt is not None and is_float_dtype(dt):
                return format_of_dtype(dt)
        return format_of_dtype(self.adt)

    @property
    def acc(self) -> Accumulation:
        if self.exact_ops:
            return Accumulation("recursive")
        return self.config.accumulation.resolve(self.fmt)

    def describe(self) -> str:
        src = _compat.source_summary(self.eqn)
        where = f" at {src}" if src else ""
        return f"equation {self.path} `{self.eqn.primitive.name}`{where}"

    def flag(self, cond: Any, what: str) -> None:
        """Record a diagnostic that fires when any element of ``cond`` is true."""
        if not self.diag.track_origins:
            self.diag.add(f"{self.describe()}: {what}", cond)

    def value(self, *vals: Any, **params: Any) -> Any:
        """Evaluate this equation's primitive on the values at the centre."""
        prim = self.eqn.primitive
        p = dict(self.eqn.params)
        p.update(params)
        if self.override:
            p = _carrier_params(p, self.carrier)
        out = prim.bind(*vals, **p)
        if self.override:
            from ._formats import round_to

            fmt = self.fmt
            if is_exact_format(fmt):
                return out

            def rnd(o):
                return round_to(o, fmt) if is_float_dtype(o.dtype) else o

            out = [rnd(o) for o in out] if prim.multiple_results else rnd(out)
        return out

    @property
    def carrier(self) -> np.dtype:
        """The dtype that holds computed values under a precision override."""
        return carrier_dtype(self.config)


def carrier_dtype(config: Config) -> np.dtype:
    prec = config.precision
    if isinstance(prec, LayerPrecision):
        return np.dtype(np.float64) if prec.max_precision > 24 else np.dtype(np.float32)
    if prec is not None and prec.precision > 24:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _carrier_params(params: dict[str, Any], carrier: np.dtype) -> dict[str, Any]:
    out = dict(params)
    if "precision" in out:
        # the format's products are modelled exactly (then rounded by the format): no
        # backend's reduced-precision default (TF32, bfloat16 passes) may enter the value
        out["precision"] = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    for key in ("preferred_element_type", "new_dtype", "dtype", "out_dtype"):
        dt = out.get(key)
        if dt is not None:
            try:
                if is_float_dtype(dt):
                    out[key] = carrier
            except TypeError:
                pass
    return out


# ---------------------------------------------------------------------------
# Pre-flight scan
# ---------------------------------------------------------------------------


def live_eqns(jaxpr: Any) -> list[bool]:
    """For each equation: whether it is needed (some result is used, directly or through
    later equations, by the outputs, or it has side effects). Dead equations (e.g. the
    PRNG key that ``flax.linen.RNN`` splits and never uses) are neither analysed nor
    required to have a rule."""
    used = {v for v in jaxpr.outvars if not isinstance(v, _compat.Literal)}
    live = [False] * len(jaxpr.eqns)
    for i in range(len(jaxpr.eqns) - 1, -1, -1):
        eqn = jaxpr.eqns[i]
        if getattr(eqn, "effects", None) or any(v in used for v in eqn.outvars):
            live[i] = True
            used.update(v for v in eqn.invars if not isinstance(v, _compat.Literal))
    return live


def _walk(jaxpr: Any, path: str):
    for i, (eqn, alive) in enumerate(zip(jaxpr.eqns, live_eqns(jaxpr))):
        if not alive:
            continue
        yield f"{path}{i}", eqn
        for j, sub in enumerate(_compat.subjaxprs(eqn)):
            yield from _walk(sub, f"{path}{i}.{eqn.primitive.name}[{j}]/")


def check_supported(jaxpr: Any, rules: dict[Any, Callable]) -> None:
    """Raise one error listing every primitive in ``jaxpr`` (nested included) without a rule."""
    missing: dict[Any, list[tuple[str, Any]]] = {}
    for path, eqn in _walk(jaxpr, ""):
        p = eqn.primitive
        if p in _compat.CALL_PRIMITIVES or p in rules:
            continue
        missing.setdefault(p, []).append((path, eqn))
    if not missing:
        return
    lines = [
        f"jaxerr cannot analyse this function: {len(missing)} primitive(s) have no rule "
        "in the interval domain.",
    ]
    for p, uses in missing.items():
        path, eqn = uses[0]
        params = ", ".join(f"{k}={_short(v)}" for k, v in eqn.params.items())
        src = _compat.source_summary(eqn)
        lines.append(
            f"  - `{p.name}` used {len(uses)} time(s), first at equation {path}"
            + (f" ({src})" if src else "")
            + (f" with params {{{params}}}" if params else "")
        )
    lines.append(
        "To add one, write a rule and register it:\n"
        "    from jaxerr import register_rule\n"
        "    @register_rule(<the primitive object, e.g. jax.lax.sin_p>)\n"
        "    def my_rule(ctx, *operands, **params): ...  # returns a Real/Discrete\n"
        "or rewrite the function to avoid the primitive. If you think jaxerr should "
        "support it, please report it."
    )
    raise UnsupportedPrimitiveError("\n".join(lines))


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Domain:
    """What the interpreter needs from a domain."""

    rules: dict[Any, Callable]
    constant: Callable[[Any, Any, Config], Any]  # (numpy/jax value, aval, config) -> domain value
    finalize: Callable[[Ctx, Any, Any, list[Any]], Any]  # (ctx, outvar aval, out value, invals)
    # optional: called once per (non-call) equation after finalize, with
    # (ctx, invals, outs); analyses that need a tape (first-order sensitivities) use
    # it. A returned list replaces the equation's outputs.
    record: Callable[[Ctx, list[Any], list[Any]], list[Any] | None] | None = None
    # the domain that control-flow rules (scan, while, cond) evaluate their bodies
    # with: their bodies are traced inside ``lax.scan``/``lax.while_loop``, so its
    # hooks must not keep references to values (no tape). None: this domain itself
    # with ``record`` dropped.
    inner: Domain | None = None

    def body_domain(self) -> Domain:
        if self.inner is not None:
            return self.inner
        if self.record is None:
            return self
        return dataclasses.replace(self, record=None)

    # optional: called before the rule of every (non-call) equation with (ctx, invals);
    # returns the operands the rule sees (per-layer precision rounds a value produced
    # in a wider format into the equation's format here). ``record`` still gets the
    # operands as they were produced.
    convert: Callable[[Ctx, list[Any]], list[Any]] | None = None


_PRODUCTS = frozenset(p for p in (_compat.prim("dot_general"), _compat.prim("conv_general_dilated")) if p)


def _check_product_precision(ctx: Ctx) -> None:
    """Diagnose a float32 product that the default backend may compute in fewer bits.

    The bound models IEEE float32 products (the format as written). With JAX's default
    ``precision`` XLA uses TF32 on NVIDIA Ampere and newer GPUs and bfloat16 passes on
    TPUs: the run's error is then not the one bounded. A format override
    (``precision=``) analyses another program, so it is not flagged."""
    if ctx.config.precision is not None or ctx.diag.track_origins:
        return
    if _compat.full_precision_products(ctx.eqn.params):
        return
    dts = [getattr(getattr(v, "aval", None), "dtype", None) for v in ctx.eqn.invars]
    if not any(dt is not None and np.dtype(dt) == np.float32 for dt in dts):
        return
    backend = _compat.reduced_precision_matmul_backend()
    if backend is None:
        return
    p = ctx.eqn.params.get("precision")
    ctx.flag(True, (
        f"float32 products with precision={p} on the {backend} backend: XLA may compute them "
        "in fewer bits (TF32 on NVIDIA Ampere and newer, bfloat16 passes on TPU), which this "
        "bound (IEEE float32 products) does not cover. Run f under "
        "jax.default_matmul_precision('highest') (or pass precision=lax.Precision.HIGHEST) "
        "so that the bound describes the run."))


def interpret(
    domain: Domain,
    jaxpr: Any,
    consts: list[Any],
    args: list[Any],
    config: Config,
    diag: DiagnosticCollector,
    path: str = "",
    scope: str = "",
) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        if isinstance(v, _compat.Literal):
            return domain.constant(v.val, v.aval, config)
        return env[v]

    def write(v: Any, val: Any) -> None:
        if _compat.DropVar is not None and isinstance(v, _compat.DropVar):
            return
        env[v] = val

    for v, c in zip(jaxpr.constvars, consts):
        write(v, domain.constant(c, v.aval, config))
    for v, a in zip(jaxpr.invars, args):
        write(v, a)

    for i, (eqn, alive) in enumerate(zip(jaxpr.eqns, live_eqns(jaxpr))):
        if not alive:
            continue
        invals = [read(v) for v in eqn.invars]
        sub = _compat.call_subjaxpr(eqn)
        if sub is not None:
            body, body_consts = sub
            name = eqn.params.get("name", eqn.primitive.name)
            own = _compat.name_stack(eqn)
            outs = interpret(
                domain, body, body_consts, invals, config, diag, path=f"{path}{i}.{name}/",
                scope=f"{scope}/{own}" if (scope and own) else (scope or own),
            )
        else:
            ctx = Ctx(config, eqn, f"{path}{i}", diag, domain=domain, scope=scope)
            if eqn.primitive in _PRODUCTS:
                _check_product_precision(ctx)
            rule = domain.rules[eqn.primitive]
            ins = invals if domain.convert is None else domain.convert(ctx, invals)
            outs = rule(ctx, *ins, **eqn.params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
            outs = [domain.finalize(ctx, v.aval, o, ins) for v, o in zip(eqn.outvars, outs)]
            if domain.record is not None:
                outs = domain.record(ctx, invals, outs) or outs
        for v, o in zip(eqn.outvars, outs):
            write(v, o)
    return [read(v) for v in jaxpr.outvars]
