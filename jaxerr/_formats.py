"""Number formats, the rounding-error model, and the analysis' own outward rounding.

Three things live here and nothing else:

* :class:`Format`: a binary floating-point format (precision, exponent range,
  largest finite value, gradual or flushed underflow) with the constants of the
  standard model ``fl(x op y) = (x op y)(1 + d) + e, |d| <= u, |e| <= eta``.
* :class:`Accumulation`: how a sum of ``n`` terms (``reduce_sum``, the
  contraction of ``dot_general``) is evaluated, and the error bound that follows.
* Outward-rounding helpers (:func:`up`, :func:`down`, ...) used by every rule so
  that a bound computed in floats is still a true bound.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any

import jax.lax as lax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from . import _compat

__all__ = [
    "Format",
    "Accumulation",
    "FORMATS",
    "as_format",
    "format_of_dtype",
    "gamma",
]


# ---------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Format:
    """A binary floating-point format.

    **Arguments:**

    - `name`: display name.
    - `precision`: significand bits ``p`` including the implicit bit; the unit
      roundoff is ``u = 2**-p`` (round to nearest).
    - `emin`: exponent of the smallest normal number ``2**emin``.
    - `max_finite`: the largest finite value.
    - `subnormals`: True if results below ``2**emin`` are rounded gradually
      (absolute error at most half the subnormal spacing); False if they may be
      flushed to zero (absolute error below ``2**emin``). XLA on CPU and GPU
      flushes float32 (and so bfloat16 and float64) subnormals, so those presets
      say False.
    - `dtype`: the NumPy / ml_dtypes dtype that stores it, when there is one.

    The guarantee every rule relies on: for a real ``x`` with
    ``|x| <= max_finite``, ``|fl(x) - x| <= unit_roundoff * |x| + underflow``.
    """

    name: str
    precision: int
    emin: int
    max_finite: float
    subnormals: bool = True
    dtype: Any = None

    def __post_init__(self) -> None:
        if self.precision < 2:
            raise ValueError(f"Format {self.name!r}: precision must be >= 2 bits, got {self.precision}")
        if not (self.max_finite > 0 and math.isfinite(self.max_finite)):
            raise ValueError(f"Format {self.name!r}: max_finite must be a positive finite number")

    @classmethod
    def custom(
        cls,
        precision: int,
        emin: int,
        emax: int | None = None,
        *,
        max_finite: float | None = None,
        subnormals: bool = True,
        name: str | None = None,
    ) -> Format:
        """An IEEE-like format with ``precision`` significand bits and normal exponents
        ``emin..emax`` (``max_finite = (2 - 2**(1-p)) * 2**emax`` unless given)."""
        if max_finite is None:
            if emax is None:
                raise ValueError("Format.custom needs emax or max_finite")
            max_finite = (2.0 - 2.0 ** (1 - precision)) * 2.0**emax
        name = name or f"custom(p={precision},emin={emin},max={max_finite:g})"
        return cls(name, precision, emin, float(max_finite), subnormals, None)

    @property
    def unit_roundoff(self) -> float:
        return 2.0**-self.precision

    @property
    def smallest_normal(self) -> float:
        return 2.0**self.emin

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.precision + 1)

    @property
    def finite_below(self) -> float:
        """Round to nearest maps every real ``r`` with ``|r| < finite_below`` to a finite
        value of magnitude at most ``max_finite``: RN is monotone, ``max_finite`` is
        representable, and overflow starts only at ``max_finite`` plus half the spacing
        there. This threshold takes a quarter of that spacing, so it holds also after a
        first rounding to a format with at least two more significand bits (XLA's
        upcast-compute-round lowering of narrow formats); where ``max_finite`` is not a
        multiple of the spacing of its binade (an unusual custom format) it is
        ``max_finite`` itself. Below it, ``|fl(r) - r| <= unit_roundoff |r|`` still
        holds (the rounding error is at most half the spacing, ``<= u |r|``)."""
        e = math.floor(math.log2(self.max_finite))
        spacing = 2.0 ** (e - self.precision + 1)
        if math.fmod(self.max_finite, spacing) != 0:
            return self.max_finite
        return self.max_finite + spacing / 4

    @property
    def underflow(self) -> float:
        """Bound ``eta`` on the absolute error of one rounding in the underflow range."""
        return self.smallest_subnormal / 2 if self.subnormals else self.smallest_normal

    def __repr__(self) -> str:
        return f"Format({self.name})"


def _ieee(name: str, p: int, emin: int, emax: int, subnormals: bool, dtype: Any) -> Format:
    return Format(name, p, emin, (2.0 - 2.0 ** (1 - p)) * 2.0**emax, subnormals, np.dtype(dtype))


FORMATS: dict[str, Format] = {
    "float64": _ieee("float64", 53, -1022, 1023, False, np.float64),
    "float32": _ieee("float32", 24, -126, 127, False, np.float32),
    "bfloat16": _ieee("bfloat16", 8, -126, 127, False, ml_dtypes.bfloat16),
    "float16": _ieee("float16", 11, -14, 15, True, np.float16),
    "float8_e4m3fn": Format("float8_e4m3fn", 4, -6, 448.0, True, np.dtype(ml_dtypes.float8_e4m3fn)),
    "float8_e5m2": _ieee("float8_e5m2", 3, -14, 15, True, ml_dtypes.float8_e5m2),
}
_ALIASES = {"f64": "float64", "f32": "float32", "bf16": "bfloat16", "f16": "float16",
            "e4m3": "float8_e4m3fn", "fp8_e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2",
            "fp8_e5m2": "float8_e5m2", "half": "float16", "single": "float32", "double": "float64"}


#: A "format" without rounding (unit roundoff 0, no underflow, no overflow below
#: float32's largest value, so its bounds fit any analysis dtype). Used by the per-layer report to bound the error an
#: equation *inherits* from its operands (its rule evaluated as if the operation
#: were exact: no rounding is one of the roundings every format's model allows)
#: and by the per-layer search as "this layer in infinite precision".
EXACT = Format("exact", 1100, -1_000_000, float(np.finfo(np.float32).max), True, None)


def is_exact_format(fmt: Any) -> bool:
    return fmt is EXACT or (isinstance(fmt, Format) and fmt.name == "exact" and fmt.precision >= 1100)


def contains(wide: Format, narrow: Format) -> bool:
    """True if every value of ``narrow`` (subnormals included) is a value of ``wide``,
    so converting ``narrow -> wide`` is exact."""
    if is_exact_format(wide):
        return True
    if is_exact_format(narrow):
        return False
    if wide.precision < narrow.precision or wide.max_finite < narrow.max_finite:
        return False
    # the finest grid of `narrow` (its subnormal spacing, or 2**emin if it flushes)
    q_n = narrow.emin - narrow.precision + 1 if narrow.subnormals else narrow.emin
    if wide.subnormals:
        return wide.emin - wide.precision + 1 <= q_n and wide.emin <= narrow.emin
    return wide.emin <= q_n


def storage_bits(fmt: Format) -> int:
    """Bits a value of ``fmt`` occupies (the dtype's width, else sign + exponent +
    significand bits estimated from the format's range)."""
    if fmt.dtype is not None:
        return int(np.dtype(fmt.dtype).itemsize * 8)
    emax = math.floor(math.log2(fmt.max_finite))
    ebits = max(1, math.ceil(math.log2(emax - fmt.emin + 2)))
    return 1 + ebits + fmt.precision - 1


@dataclasses.dataclass(frozen=True)
class LayerPrecision:
    """A format per layer: ``precision=`` of :func:`jaxerr.bound` may be one.

    Equations are matched by their *name stack* (the Flax module path such as
    ``"MLP/Dense_0"``, or the names of ``jax.named_scope`` blocks): the longest key
    ``k`` with ``name == k`` or ``name.startswith(k + "/")`` wins; equations no key
    matches use ``default``. Inputs, parameters and constants are stored in
    ``default`` (their rounding into it counts as error). A value produced in one
    format and consumed by an equation whose format does not contain it is rounded
    into the consumer's format first, and that rounding counts as error.

    Build one with :meth:`of` from a mapping ``{name: format}`` (the key ``""``
    gives the default) or pass ``fn``: a callable ``name -> format or None``.
    """

    default: Format
    layers: tuple[tuple[str, Format], ...] = ()
    fn: Any = None

    @classmethod
    def of(cls, spec: Any, default: Any = None) -> LayerPrecision:
        if isinstance(spec, LayerPrecision):
            return spec
        if callable(spec) and not isinstance(spec, (str, Format)):
            d = spec("") if default is None else default
            if d is None:
                raise ValueError("a precision callable must return the default format for name ''")
            return cls(as_format(d), (), spec)
        if not isinstance(spec, dict):
            raise ValueError(f"cannot interpret {spec!r} as per-layer precision; use {{name: format}}")
        items = {str(k): as_format(v) for k, v in spec.items()}
        d = items.pop("", None)
        if default is not None:
            d = as_format(default)
        if d is None:
            if not items:
                raise ValueError("per-layer precision needs at least one format")
            d = max(items.values(), key=lambda f: f.precision)
        return cls(d, tuple(sorted(items.items())), None)

    def resolve(self, name: str) -> Format:
        """The format of an equation whose name stack is ``name``."""
        if self.fn is not None:
            f = self.fn(name)
            return self.default if f is None else as_format(f)
        best, best_len = self.default, -1
        for k, f in self.layers:
            if (name == k or name.startswith(k + "/")) and len(k) > best_len:
                best, best_len = f, len(k)
        return best

    def formats(self) -> list[Format]:
        """Every format named (the default first); callables report the default only."""
        return [self.default] + [f for _, f in self.layers]

    @property
    def max_precision(self) -> int:
        return max(f.precision for f in self.formats() if not is_exact_format(f))

    @property
    def name(self) -> str:
        if self.fn is not None:
            return f"per-layer({getattr(self.fn, '__name__', 'fn')}, default {self.default.name})"
        return "per-layer(" + ", ".join([f"{k}={f.name}" for k, f in self.layers] + [f"*={self.default.name}"]) + ")"


def storage_format(precision: Any) -> Format | None:
    """The format inputs and constants are stored in under ``precision``."""
    if isinstance(precision, LayerPrecision):
        return precision.default
    return precision


def as_precision(spec: Any) -> Format | LayerPrecision | None:
    """``None``, a single format, or per-layer formats (mapping / callable / LayerPrecision)."""
    if spec is None or isinstance(spec, (Format, LayerPrecision)):
        return spec
    if isinstance(spec, dict) or (callable(spec) and not isinstance(spec, (str, type, np.dtype))):
        return LayerPrecision.of(spec)
    return as_format(spec)


def format_of_dtype(dtype: Any) -> Format:
    """The preset :class:`Format` of a floating dtype."""
    name = np.dtype(dtype).name
    if name not in FORMATS:
        raise ValueError(f"jaxerr has no format for dtype {name!r}; pass precision=jaxerr.Format.custom(...)")
    return FORMATS[name]


def as_format(spec: Any) -> Format:
    """Accept a :class:`Format`, a preset name ('bfloat16', 'bf16', ...) or a dtype."""
    if isinstance(spec, Format):
        return spec
    if isinstance(spec, str):
        key = _ALIASES.get(spec.lower(), spec.lower())
        if key in FORMATS:
            return FORMATS[key]
        raise ValueError(f"unknown format {spec!r}; choose one of {sorted(FORMATS)} or build jaxerr.Format.custom(...)")
    try:
        return format_of_dtype(spec)
    except TypeError as e:
        raise ValueError(f"cannot interpret {spec!r} as a number format") from e


# ---------------------------------------------------------------------------
# Static (Python) constants, rounded up exactly with Fractions
# ---------------------------------------------------------------------------


def _float_up(x: Fraction | float) -> float:
    """The smallest float64 >= x."""
    if isinstance(x, float):
        return x
    f = float(x)
    if Fraction(f) < x:
        f = math.nextafter(f, math.inf)
    return f


def gamma(n: int, u: float) -> float:
    """``gamma_n = n u / (1 - n u)`` rounded up; ``inf`` when ``n u >= 1``.

    With bfloat16 (u = 2**-8) and n >= 256 the classical worst-case bound for
    recursive summation does not exist; callers report that instead of dividing
    by zero.
    """
    if n <= 0:
        return 0.0
    nu = Fraction(n) * Fraction(u)
    if nu >= 1:
        return math.inf
    return _float_up(nu / (1 - nu))


def const_dn(x: float, dtype: Any) -> np.ndarray:
    """The largest value of ``dtype`` that is <= the float64 ``x``."""
    d = np.dtype(dtype)
    if math.isinf(x) or math.isnan(x):
        return np.asarray(x, d)
    y = np.asarray(x, d)
    if float(y) > x:
        y = np.nextafter(y, np.asarray(-np.inf, d))
    return y


def const_up(x: float, dtype: Any) -> np.ndarray:
    """The smallest value of ``dtype`` that is >= the float64 ``x``."""
    d = np.dtype(dtype)
    if math.isinf(x) or math.isnan(x):
        return np.asarray(x, d)
    y = np.asarray(x, d)
    if float(y) < x:
        y = np.nextafter(y, np.asarray(np.inf, d))
    return y


# ---------------------------------------------------------------------------
# Transcendental error budgets (see docs/error-model.md)
# ---------------------------------------------------------------------------

_P = _compat.prim

#: Error budget of each transcendental primitive as XLA evaluates it in float32
#: (the compute format of every format up to float32), in units of
#: ``u_C = 2**-24``: ``|computed - f(x)| <= k_rel u_C |f(x)| + k_abs u_C + eta``.
#: Twice the largest error measured on this machine by
#: ``scripts/measure_transcendentals.py`` (>= 2**20 points per function, every
#: bfloat16/float16 value), checked by ``tests/test_error_model_backend.py``.
TRANSCENDENTAL_BUDGETS: dict[Any, tuple[float, float]] = {
    p: b
    for p, b in (
        (_P("exp"), (12.0, 0.0)),  # measured 5.52 (x -> 88.7)
        (_P("exp2"), (12.0, 0.0)),  # plus the |x|-proportional term, see exp2_extra_rel
        (_P("log"), (5.0, 0.0)),  # 2.02
        (_P("log1p"), (8.0, 0.0)),  # 3.32
        (_P("expm1"), (16.0, 0.0)),  # 6.13
        (_P("tanh"), (10.0, 0.0)),  # 4.84
        (_P("logistic"), (5.0, 0.0)),  # 2.42
        (_P("erf"), (16.0, 0.0)),  # 6.58 (x ~ 3.8)
        (_P("erfc"), (132.0, 0.0)),  # 65.0 (x ~ 8)
        (_P("sqrt"), (2.0, 0.0)),  # 1.00 (correctly rounded)
        (_P("rsqrt"), (6.0, 0.0)),  # 2.64
        (_P("pow"), (4.0, 0.0)),  # 1.96
        (_P("cbrt"), (4.0, 0.0)),  # 1.55
        (_P("sin"), (3.0, 0.0)),  # 1.06
        (_P("cos"), (3.0, 0.0)),  # 1.06
        (_P("erf_inv"), (256.0, 0.0)),  # 97.5 (|x| -> 1)
    )
    if p is not None
}

#: The same for float64 programs (compute format float64, ``u_C = 2**-53``).
TRANSCENDENTAL_BUDGETS_F64: dict[Any, tuple[float, float]] = {
    p: b
    for p, b in (
        (_P("exp"), (5.0, 0.0)),  # 2.09
        (_P("exp2"), (5.0, 0.0)),  # plus the |x|-proportional term
        (_P("log"), (3.0, 0.0)),  # 1.00
        (_P("log1p"), (512.0, 0.0)),  # 240 in a narrow band near x = -0.414
        (_P("expm1"), (10.0, 0.0)),  # 4.58
        (_P("tanh"), (16.0, 0.0)),  # 6.92
        (_P("logistic"), (6.0, 0.0)),  # 2.99
        (_P("erf"), (4.0, 0.0)),  # 1.55
        (_P("erfc"), (1024.0, 0.0)),  # 511 (x ~ 24)
        (_P("sqrt"), (2.0, 0.0)),  # 1.00
        (_P("rsqrt"), (3.0, 0.0)),  # 1.28
        (_P("pow"), (4.0, 0.0)),  # 1.94
        (_P("cbrt"), (12.0, 0.0)),  # 5.33
        (_P("sin"), (3.0, 0.0)),
        (_P("cos"), (3.0, 0.0)),
        (_P("erf_inv"), (2097152.0, 0.0)),  # 975586 (|x| = 1 - 7e-9)
    )
    if p is not None
}

#: Formats narrower than float32 where XLA does *not* evaluate as "upcast, evaluate
#: in float32, round once": JAX lowers logistic to 1/(1 + exp(-x)) and expm1 /
#: x**const to native operations in the narrow dtype (measured up to 2.2, 2.8 and
#: 1.6 units of the narrow format's roundoff). Extra relative budget in units of
#: the *output* format's unit roundoff (and the same multiple of its underflow
#: ``eta``: the native evaluation rounds several times), added to the upcast model.
NARROW_EXTRA_BUDGETS: dict[Any, float] = {
    p: b
    for p, b in ((_P("logistic"), 4.0), (_P("expm1"), 4.0), (_P("pow"), 3.0))
    if p is not None
}


def transcendental_budget(prim: Any, cf: Format) -> tuple[float, float]:
    table = TRANSCENDENTAL_BUDGETS_F64 if cf.precision > 24 else TRANSCENDENTAL_BUDGETS
    return table[prim]


def exp2_extra_rel(xmag: float | Any, fmt: Format) -> Any:
    """JAX evaluates exp2(x) as exp(x * ln2) with the product rounded in the operand's
    format, so the relative error grows like 2 ln2 |x| u (measured: 69 u at x = 127
    in float32, 726 u at x = 1024 in float64). Returned in absolute relative units."""
    return xmag * (2.0 * 0.6931471805599453 * 1.01 * fmt.unit_roundoff)


def analysis_budget(prim: Any, adt: Any) -> float:
    """Widening, in units of the analysis dtype's roundoff, for the analysis' own
    evaluation of ``prim`` (twice the backend budget, at least 16)."""
    cf = FORMATS["float64"] if np.dtype(adt).itemsize == 8 else FORMATS["float32"]
    try:
        k = transcendental_budget(prim, cf)[0]
    except KeyError:
        k = 64.0
    return max(16.0, 2.0 * k)


def compute_format(fmt: Format) -> Format:
    """The format XLA evaluates a transcendental in before rounding to ``fmt``."""
    return FORMATS["float64"] if fmt.precision > 24 else FORMATS["float32"]


# ---------------------------------------------------------------------------
# Accumulation models
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Accumulation:
    """How a sum of ``n`` terms is evaluated.

    - ``"recursive"``: any order, a rounding after every addition (and after
      every product, or fused): ``|err| <= gamma_{n} sum|x_i y_i|`` for a dot
      product, ``gamma_{n-1}`` for a plain sum.
    - ``"pairwise"``: a balanced binary tree: depth ``ceil(log2 n)``.
    - ``"blocked:B"``: consecutive blocks of ``B`` terms summed recursively, then
      the block sums recursively: depth ``(B - 1) + (ceil(n/B) - 1)``.
    - ``"wide:float32"``: products and sums in float32 (any order), then one
      rounding to the output format; this is what XLA does for bfloat16/float16
      matmuls on CPU and on GPU tensor cores. For a format at least as wide as the
      accumulator (float32, float64) it means ``"recursive"`` in that format.
    - ``"auto"`` (default): ``wide:float32`` for formats narrower than float32,
      ``recursive`` otherwise.
    """

    kind: str
    block: int = 0
    wide: Format | None = None

    @classmethod
    def parse(cls, spec: Any) -> Accumulation:
        if isinstance(spec, Accumulation):
            return spec
        if spec is None:
            return cls("auto")
        if not isinstance(spec, str):
            raise ValueError(f"accumulation must be a string such as 'recursive', got {spec!r}")
        s = spec.strip().lower()
        if s in ("auto", "recursive", "pairwise"):
            return cls(s)
        if s.startswith("blocked:"):
            try:
                b = int(s.split(":", 1)[1])
            except ValueError:
                b = 0
            if b < 1:
                raise ValueError(f"accumulation {spec!r}: block size must be a positive integer, e.g. 'blocked:8'")
            return cls("blocked", block=b)
        if s.startswith("wide:"):
            return cls("wide", wide=as_format(s.split(":", 1)[1]))
        raise ValueError(
            f"unknown accumulation {spec!r}; use 'auto', 'recursive', 'pairwise', 'blocked:B' or 'wide:float32'"
        )

    def resolve(self, fmt: Format) -> Accumulation:
        if self.kind == "wide" and (self.wide.precision <= fmt.precision or self.wide.max_finite < fmt.max_finite):
            # an accumulator that is not wider than the operands' format is not a wide
            # accumulator: such sums (float64 under 'wide:float32') are modelled as
            # recursive in the format itself (what XLA does), never as rounded to the
            # narrower accumulator, whose overflow the model would not cover
            return Accumulation("recursive")
        if self.kind != "auto":
            return self
        if fmt.precision < 24:
            return Accumulation("wide", wide=FORMATS["float32"])
        return Accumulation("recursive")

    def __str__(self) -> str:
        if self.kind == "blocked":
            return f"blocked:{self.block}"
        if self.kind == "wide":
            return f"wide:{self.wide.name}"
        return self.kind

    def accumulator(self, fmt: Format) -> Format:
        """The format the partial sums are held in (the wide format, or ``fmt``)."""
        acc = self.resolve(fmt)
        return acc.wide if acc.kind == "wide" else fmt

    def depth(self, n: int, products: bool) -> int:
        """Number of roundings any one term goes through (the gamma index)."""
        if n <= 1:
            return 1 if products else 0
        if self.kind == "recursive":
            d = n - 1
        elif self.kind == "pairwise":
            d = math.ceil(math.log2(n))
        elif self.kind == "blocked":
            b = min(self.block, n)
            d = (b - 1) + (math.ceil(n / b) - 1)
        else:  # wide: the inner sum is recursive in the wide format
            d = n - 1
        return d + (1 if products else 0)

    def coefficients(self, n: int, fmt: Format, products: bool) -> tuple[float, float, float]:
        """Static ``(a, b, c)`` with ``|computed - exact_sum| <= a*S + b*Y + c``.

        ``S`` bounds ``sum |terms|`` (terms formed from the computed inputs), ``Y``
        bounds ``|sum terms|``. The underflow term ``c`` covers one ``eta`` for every
        product and every addition.
        """
        acc = self.resolve(fmt)
        d = acc.depth(n, products)
        nops = max(n, 1) * (2 if products else 1)
        if acc.kind == "wide":
            w = acc.wide
            gw = gamma(d, w.unit_roundoff)
            u = fmt.unit_roundoff
            a = _float_up(Fraction(gw) * (1 + Fraction(u))) if math.isfinite(gw) else math.inf
            c = _float_up(Fraction(nops) * Fraction(w.underflow) * (1 + Fraction(u)) + Fraction(fmt.underflow))
            return a, u, c
        g = gamma(d, fmt.unit_roundoff)
        c = _float_up(Fraction(nops) * Fraction(fmt.underflow))
        return g, 0.0, c


# ---------------------------------------------------------------------------
# Outward rounding in the analysis dtype
# ---------------------------------------------------------------------------


def where(cond: Any, x: Any, y: Any) -> Any:
    """``jnp.where`` without the nested ``jit`` it adds to every call (this analysis
    calls it thousands of times; nested calls dominate XLA compile time)."""
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    dt = jnp.result_type(x, y)
    cond = jnp.asarray(cond)
    shape = jnp.broadcast_shapes(jnp.shape(cond), jnp.shape(x), jnp.shape(y))
    return lax.select(
        jnp.broadcast_to(cond.astype(bool), shape),
        jnp.broadcast_to(x.astype(dt), shape),
        jnp.broadcast_to(y.astype(dt), shape),
    )


def analysis_dtype() -> np.dtype:
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return np.dtype(np.float64) if _compat.x64_enabled() else np.dtype(np.float32)


def _consts(dtype: Any) -> tuple[Any, Any, Any]:
    fi = np.finfo(dtype)
    # eps = 2u: x + |x|*eps >= next float above x for every normal x; tiny covers
    # flush-to-zero of results and of |x|*eps.
    return jnp.asarray(fi.eps, dtype), jnp.asarray(fi.tiny, dtype), jnp.asarray(fi.max, dtype)


def up(x: Any) -> Any:
    """An upper bound of the exact value that the round-to-nearest result ``x`` approximates.

    Valid when ``x`` is the correctly rounded (or flushed) result of one
    operation: the exact value lies within half an ulp of ``x`` (or below the
    smallest normal when flushed), and ``x + (|x| eps + tiny)`` rounds to a float
    at least one ulp above ``x``. ``up(-inf)`` is NaN: every rule's results are
    sanitised (NaN -> the infinite bound on the safe side) by the interpreter.
    """
    eps, tiny, _ = _consts(x.dtype)
    return x + (jnp.abs(x) * eps + tiny)


def down(x: Any) -> Any:
    """A lower bound of the exact value that the round-to-nearest result ``x`` approximates."""
    eps, tiny, _ = _consts(x.dtype)
    return x - (jnp.abs(x) * eps + tiny)


def up_nn(x: Any) -> Any:
    """:func:`up` for a result known to be >= 0 (two operations instead of four)."""
    eps, tiny, _ = _consts(x.dtype)
    return x * (1 + eps) + tiny


def up_rel(x: Any, k: float) -> Any:
    """Upper bound when ``x`` is within ``k`` units of roundoff (relative) of the exact value."""
    eps, tiny, _ = _consts(x.dtype)
    return x + (jnp.abs(x) * (eps * (k + 2)) + tiny)


def down_rel(x: Any, k: float) -> Any:
    eps, tiny, _ = _consts(x.dtype)
    return x - (jnp.abs(x) * (eps * (k + 2)) + tiny)


def add_up(a: Any, b: Any) -> Any:
    return up(a + b)


def add_dn(a: Any, b: Any) -> Any:
    return down(a + b)


def sub_up(a: Any, b: Any) -> Any:
    return up(a - b)


def sub_dn(a: Any, b: Any) -> Any:
    return down(a - b)


def mul_up(a: Any, b: Any) -> Any:
    """Upper bound of ``a*b`` (``0 * inf`` is NaN and so becomes ``+inf``)."""
    return up(a * b)


def mul_dn(a: Any, b: Any) -> Any:
    return down(a * b)


def quot(a: Any, b: Any) -> Any:
    """``a / b`` correctly rounded, also under ``jit``: XLA's algebraic simplifier
    rewrites a division by a broadcast value into ``a * (1/b)`` (two roundings, and
    ``1/b`` flushed to 0 where it is subnormal: ``9.9 / 2.3e38`` came out 0 instead of
    4.2e-38, found by fuzzing, seed 28405), which the directed roundings below do not
    cover. The divisor is broadcast to the result's shape first and passed through an
    optimisation barrier, so that XLA sees no broadcast to rewrite."""
    dt = jnp.result_type(a, b)
    a, b = jnp.asarray(a, dt), jnp.asarray(b, dt)
    shape = jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b))
    return a / lax.optimization_barrier(jnp.broadcast_to(b, shape))


def div_up(a: Any, b: Any) -> Any:
    return up(quot(a, b))


def div_dn(a: Any, b: Any) -> Any:
    return down(quot(a, b))


def scale_up(x: Any, c: float) -> Any:
    """Upper bound of ``c * x`` for a static ``c >= 0`` and ``x >= 0`` (``c`` rounded up)."""
    if c == 0:
        return jnp.zeros_like(x)
    if math.isinf(c):
        return where(x == 0, jnp.zeros_like(x), jnp.full_like(x, jnp.inf))
    return up_nn(x * jnp.asarray(const_up(c, x.dtype)))


def add_up_nn(a: Any, b: Any) -> Any:
    """Upper bound of ``a + b`` for ``a, b >= 0``."""
    return up_nn(a + b)


def static_up(c: float, dtype: Any) -> Any:
    return jnp.asarray(const_up(c, dtype))


def pow2_floor(x: Any) -> Any:
    """``2^floor(log2 x)`` for positive normal finite ``x`` (the exponent bits alone,
    exact; an integer mask instead of ``frexp``/``ldexp``, which XLA lowers through
    ``pow``). Meaningless elsewhere: callers select it only where ``x`` is normal."""
    x = jnp.asarray(x)
    if np.dtype(x.dtype) == np.float64:
        it, mask = jnp.int64, 0x7FF << 52
    elif np.dtype(x.dtype) == np.float32:
        it, mask = jnp.int32, 0xFF << 23
    else:
        raise TypeError(f"pow2_floor: float32 or float64 expected, got {x.dtype}")
    return lax.bitcast_convert_type(lax.bitcast_convert_type(x, it) & mask, x.dtype)


# ---------------------------------------------------------------------------
# Rounding to a format (the computed value at the centre; not used for bounds)
# ---------------------------------------------------------------------------


def round_to(x: Any, fmt: Format) -> Any:
    """Round ``x`` (a float32/float64 array) to the nearest value of ``fmt``, ties to even.

    Uses the native dtype when ``fmt`` has one, else significand rounding with
    ``frexp``/``ldexp``. Overflow gives +-inf.
    """
    carrier = x.dtype
    if np.dtype(carrier).itemsize * 8 >= 64 and fmt.precision == 53:
        return x
    if np.dtype(carrier) == np.float64:
        # XLA converts float64 to a narrow dtype through float32 (double rounding)
        from ._exact import round_exact

        return round_exact(x, fmt)
    if fmt.dtype is not None and fmt.name != "float8_e4m3fn":
        return x.astype(fmt.dtype).astype(carrier)
    m, e = jnp.frexp(x)
    p = fmt.precision
    normal = jnp.ldexp(jnp.round(jnp.ldexp(m, p)), e - p)
    q = fmt.emin - p + 1
    sub = jnp.ldexp(jnp.round(jnp.ldexp(x, -q)), jnp.full_like(e, q))
    if not fmt.subnormals:
        sub = where(jnp.abs(sub) < fmt.smallest_normal, jnp.zeros_like(sub), sub)
    r = where(jnp.abs(x) < fmt.smallest_normal, sub, normal)
    big = jnp.abs(r) > fmt.max_finite
    return where(big, jnp.sign(x) * jnp.inf, r).astype(carrier)
