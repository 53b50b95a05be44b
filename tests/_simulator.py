"""Independent reference simulator for jaxerr's soundness tests.

This module is deliberately independent of ``jaxerr``: it is the ground truth
against which jaxerr's error bounds are checked.  It provides

* :class:`SimFormat` and the presets in :data:`SIM_FORMATS` -- binary
  floating-point formats described by precision, minimum exponent and largest
  finite value;
* :func:`round_to` -- exact round-to-nearest-even of float64 values to such a
  format (gradual underflow or flush-to-zero, overflow to infinity or
  saturation), implemented with integer bit manipulation and
  ``np.frexp``/``np.ldexp``/``np.rint`` (ml_dtypes casts are never used for
  rounding here -- only for dtype metadata; the tests use them as a
  cross-check);
* :func:`simulate` -- a NumPy interpreter for the jaxpr of a JAX function in
  which every floating-point operation is rounded to a chosen format, with
  several models of summation order for ``reduce_sum`` and ``dot_general``;
* :func:`exact` -- the same interpreter without any rounding to a format
  (float64 with compensated sums, or mpmath at ``dps`` digits);
* :func:`sample_box` -- random points of a box, including its corners and
  centre.

Representation of values
------------------------
Inside the interpreter floating-point values are float64 NumPy arrays whose
entries are values of the format in effect (for :func:`simulate`), plain
float64 values (for :func:`exact`) or object arrays of ``mpmath.mpf`` (for
``exact(..., dps=...)``).  Integer and boolean values are NumPy arrays of the
dtype of the jaxpr variable (integer arithmetic wraps around like XLA's).

Exactness of the basic operations
---------------------------------
For ``add``/``sub``/``mul``/``div``/``sqrt`` the float64 result is rounded to
the format and then corrected with the sign of the exact residual (TwoSum,
Dekker's TwoProduct, division/sqrt remainders) whenever the float64 result is
exactly a midpoint of the format.  This gives the correctly rounded result
for every format with ``p <= 52`` (float64 results are already correctly
rounded by NumPy), provided intermediate products stay in float64's normal
range -- true for all the preset formats.  Transcendental functions are
evaluated in float64 and rounded once ("correctly rounded up to float64
double rounding"), which is what jaxerr's error model budgets for.

XLA on CPU flushes subnormals to zero; pass ``flush=True`` to model that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import mpmath
import numpy as np
from jax.extend import core as jcore

__all__ = [
    "SIM_FORMATS",
    "SimFormat",
    "as_format",
    "custom",
    "exact",
    "exact_jaxpr",
    "format_for_dtype",
    "random_perms",
    "round_to",
    "sample_box",
    "simulate",
    "simulate_jaxpr",
    "trace",
    "ulp",
    "unflatten",
]

_F64_MAX = float(np.finfo(np.float64).max)


# ---------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SimFormat:
    """A binary floating-point format.

    Attributes:
      name: label used in messages.
      p: precision in bits, including the implicit leading bit (float32: 24).
      emin: exponent of the smallest normal number (smallest normal is
        ``2**emin``; float32: -126).
      max_finite: largest finite value (must be representable with ``p`` bits).
      subnormals: gradual underflow (spacing ``2**(emin-p+1)`` below
        ``2**emin``).  If False, results whose rounded magnitude is below
        ``2**emin`` are flushed to a zero of the same sign.
      saturate: if True, overflow gives ``+-max_finite`` instead of ``+-inf``
        (infinite inputs stay infinite).

    A value overflows iff its magnitude, rounded to ``p`` bits with an
    unbounded exponent range, exceeds ``max_finite``.  For IEEE formats this is
    exactly IEEE round-to-nearest overflow; for float8_e4m3fn (which has no
    infinity: ml_dtypes gives NaN) the simulator returns +-inf, which is all
    the tests need to detect overflow.
    """

    name: str
    p: int
    emin: int
    max_finite: float
    subnormals: bool = True
    saturate: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.p <= 53:  # p=1 has no meaningful "ties to even"
            raise ValueError(f"{self.name}: precision must be in [2, 53], got {self.p}")
        if self.p == 53 and self.emin != -1022:
            raise ValueError(f"{self.name}: p=53 is only supported with emin=-1022 (float64)")
        if self.p < 53 and (self.emin < -1022 or self.emin - self.p < -1074):
            raise ValueError(f"{self.name}: emin={self.emin} too small to emulate in float64")
        mf = float(self.max_finite)
        if not (math.isfinite(mf) and mf >= 2.0**self.emin):
            raise ValueError(f"{self.name}: bad max_finite {self.max_finite!r}")
        m, _ = math.frexp(mf)
        if not math.ldexp(m, self.p).is_integer():
            raise ValueError(f"{self.name}: max_finite {mf!r} is not representable with p={self.p}")

    @property
    def unit_roundoff(self) -> float:
        """u = 2**-p (half the machine epsilon)."""
        return 2.0**-self.p

    @property
    def eps(self) -> float:
        """Machine epsilon 2**(1-p): the spacing just above 1."""
        return 2.0 ** (1 - self.p)

    @property
    def min_normal(self) -> float:
        return 2.0**self.emin

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value (the smallest normal if subnormals are off)."""
        return 2.0 ** (self.emin - self.p + 1) if self.subnormals else 2.0**self.emin

    @property
    def emax(self) -> int:
        """Exponent of the largest binade holding finite values."""
        return math.frexp(float(self.max_finite))[1] - 1

    @property
    def is_float64(self) -> bool:
        """True for IEEE binary64 itself (rounding is then the identity)."""
        return (
            self.p == 53
            and self.emin == -1022
            and float(self.max_finite) == _F64_MAX
            and self.subnormals
        )


def custom(
    p: int,
    emin: int,
    max_finite: float | None = None,
    *,
    name: str | None = None,
    subnormals: bool = True,
    saturate: bool = False,
) -> SimFormat:
    """A custom format.  ``max_finite=None`` gives the IEEE-style maximum
    ``(2 - 2**(1-p)) * 2**(1 - emin)`` (i.e. emax = 1 - emin)."""
    if max_finite is None:
        max_finite = (2.0 - 2.0 ** (1 - p)) * 2.0 ** (1 - emin)
    return SimFormat(
        name or f"custom(p={p},emin={emin})",
        p,
        emin,
        float(max_finite),
        subnormals,
        saturate,
    )


SIM_FORMATS: dict[str, SimFormat] = {
    "float64": SimFormat("float64", 53, -1022, _F64_MAX),
    "float32": SimFormat("float32", 24, -126, float(np.finfo(np.float32).max)),
    "bfloat16": SimFormat("bfloat16", 8, -126, (2.0 - 2.0**-7) * 2.0**127),
    "float16": SimFormat("float16", 11, -14, 65504.0),
    "float8_e4m3fn": SimFormat("float8_e4m3fn", 4, -6, 448.0),
    "float8_e5m2": SimFormat("float8_e5m2", 3, -14, 57344.0),
}


def format_for_dtype(dtype: Any) -> SimFormat:
    """The :class:`SimFormat` of a NumPy / ml_dtypes / JAX floating dtype.

    Dtypes not in :data:`SIM_FORMATS` are described from ``ml_dtypes.finfo``
    (metadata only)."""
    dt = np.dtype(dtype)
    if dt.name in SIM_FORMATS:
        return SIM_FORMATS[dt.name]
    fi = ml_dtypes.finfo(dt)
    subn = float(fi.smallest_subnormal) < float(fi.smallest_normal)
    return SimFormat(dt.name, int(fi.nmant) + 1, int(fi.minexp), float(fi.max), subn)


def as_format(fmt: Any) -> SimFormat:
    """Accept a SimFormat, a name in SIM_FORMATS, or a dtype."""
    if isinstance(fmt, SimFormat):
        return fmt
    if isinstance(fmt, str) and fmt in SIM_FORMATS:
        return SIM_FORMATS[fmt]
    return format_for_dtype(fmt)


# ---------------------------------------------------------------------------
# Rounding
# ---------------------------------------------------------------------------

_U64 = np.uint64
_ABS_MASK = _U64(0x7FFF_FFFF_FFFF_FFFF)
_ALL_ONES = 0xFFFF_FFFF_FFFF_FFFF


def _f64_bits(v: float) -> np.uint64:
    return np.array([v], dtype=np.float64).view(np.uint64)[0]


def _post(rv: np.ndarray, v: np.ndarray, fmt: SimFormat) -> np.ndarray:
    """Apply flush-to-zero and overflow to values rounded to p bits with an
    unbounded exponent range (``v`` gives the signs)."""
    if not fmt.subnormals:
        rv = np.where(np.abs(rv) < fmt.min_normal, np.copysign(0.0, v), rv)
    big = fmt.max_finite if fmt.saturate else np.inf
    return np.where(np.abs(rv) > fmt.max_finite, np.copysign(big, v), rv)


def _quantum_exp(v: np.ndarray, fmt: SimFormat) -> np.ndarray:
    """Exponent q of the spacing (ulp) of the format at finite nonzero v."""
    _, e = np.frexp(v)
    ee = e - 1  # v = 1.xxx * 2**ee
    if fmt.subnormals:
        ee = np.maximum(ee, fmt.emin)
    return (ee - (fmt.p - 1)).astype(np.int32)


def _round_slow(xs: np.ndarray, fmt: SimFormat) -> tuple[np.ndarray, np.ndarray]:
    """Reference rounding with frexp/ldexp/rint on a 1-D float64 array.

    Returns (rounded, tie) where tie marks finite nonzero inputs that lie
    exactly half-way between two consecutive values of the format."""
    r = xs.copy()
    tie = np.zeros(xs.shape, dtype=bool)
    fin = np.isfinite(xs) & (xs != 0)
    if fin.any():
        v = xs[fin]
        q = _quantum_exp(v, fmt)
        sc = np.ldexp(v, -q)  # exact: |sc| < 2**p
        n = np.rint(sc)  # ties to even
        tie[fin] = np.abs(sc - np.trunc(sc)) == 0.5
        with np.errstate(over="ignore"):  # carry past 2**1024: inf, an overflow anyway
            r[fin] = _post(np.ldexp(n, q), v, fmt)
    return r, tie


def _round_core(
    flat: np.ndarray, fmt: SimFormat, want_tie: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Round a contiguous 1-D float64 array.

    Fast path: for inputs whose magnitude lies in [min_normal, max_finite]
    round-to-nearest-even to p bits is done on the IEEE bit pattern (adding
    ``0111..1 + lsb`` below the kept bits and masking; a carry into the
    exponent field is the correct binade change).  All other inputs (zero
    excluded) -- subnormal range, possible overflow, inf, NaN -- go through
    :func:`_round_slow`.  With ``want_tie`` also returns the midpoint mask.
    """
    if fmt.p == 53:
        if fmt.is_float64:
            return flat.copy(), (np.zeros(flat.shape, bool) if want_tie else None)
        r, tie = _round_slow(flat, fmt)
        return r, (np.zeros(flat.shape, bool) if want_tie else None)
    sh = 53 - fmt.p
    b = flat.view(np.uint64)
    half_m1 = _U64((1 << (sh - 1)) - 1)
    keep = _U64(_ALL_ONES ^ ((1 << sh) - 1))
    rb = (b + (((b >> _U64(sh)) & _U64(1)) + half_m1)) & keep
    r = rb.view(np.float64)
    a = b & _ABS_MASK
    lo = _f64_bits(fmt.min_normal)
    hi = _f64_bits(float(fmt.max_finite))
    special = ((a - lo) > (hi - lo)) & (a != _U64(0))
    tie = None
    if want_tie:
        tie = (b & _U64((1 << sh) - 1)) == _U64(1 << (sh - 1))
    if special.any():
        idx = np.flatnonzero(special)
        rs, ts = _round_slow(flat[idx], fmt)
        r[idx] = rs
        if want_tie:
            tie[idx] = ts
    return r, tie


def round_to(x: Any, fmt: Any) -> np.ndarray:
    """Round float64 values to the nearest value of ``fmt`` (ties to even).

    ``x`` is converted to a float64 array; the result is a new float64 array of
    the same shape (0-d for scalars) holding values of the format.  Gradual
    underflow or flush-to-zero (after rounding) and overflow follow
    :class:`SimFormat`.  NaN stays NaN, infinities stay infinite, zeros keep
    their sign.  For float64 this is the identity (a copy).
    """
    fmt = as_format(fmt)
    x = np.asarray(x, dtype=np.float64)
    flat = np.ascontiguousarray(x).reshape(-1)
    r, _ = _round_core(flat, fmt)
    return r.reshape(x.shape)


def _round_directed_tie(v: np.ndarray, s: np.ndarray, fmt: SimFormat) -> np.ndarray:
    """Round midpoints ``v`` (finite, nonzero) to the neighbour on the side
    given by the sign ``s`` (+1: up, -1: down)."""
    q = _quantum_exp(v, fmt)
    sc = np.ldexp(v, -q)
    n = np.where(s > 0, np.ceil(sc), np.floor(sc))
    with np.errstate(over="ignore"):
        return _post(np.ldexp(n, q), v, fmt)


def _round_resid(
    hi: Any, fmt: SimFormat, resid_sign: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Correctly round the exact value ``hi + delta`` where hi = fl64(exact),
    |delta| <= ulp64(hi)/2 and ``resid_sign(flat_idx)`` returns sign(delta)
    at the given flat indices.

    Since every midpoint of the format is a float64 number (p <= 52), no
    midpoint lies strictly between hi and the exact value, so rounding hi is
    correct unless hi itself is a midpoint and delta != 0."""
    hi = np.asarray(hi, dtype=np.float64)
    shape = hi.shape
    flat = np.ascontiguousarray(hi).reshape(-1)
    r, tie = _round_core(flat, fmt, want_tie=True)
    if tie is not None and tie.any():
        idx = np.flatnonzero(tie & np.isfinite(flat))
        if idx.size:
            s = np.sign(np.asarray(resid_sign(idx), dtype=np.float64))
            nz = s != 0
            if nz.any():
                j = idx[nz]
                r[j] = _round_directed_tie(flat[j], s[nz], fmt)
    return r.reshape(shape)


def ulp(x: Any, fmt: Any) -> np.ndarray:
    """Spacing of ``fmt`` at |x|: ``2**(max(e, emin) - p + 1)`` where
    ``2**e <= |x| < 2**(e+1)`` (the subnormal spacing for x = 0)."""
    fmt = as_format(fmt)
    x = np.abs(np.asarray(x, dtype=np.float64))
    _, e = np.frexp(np.where(x == 0, fmt.min_normal, x))
    return np.ldexp(1.0, (np.maximum(e - 1, fmt.emin) - fmt.p + 1).astype(np.int32))


# Error-free transformations (float64).


def _two_sum(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


_SPLITTER = 134217729.0  # 2**27 + 1


def _split(a: Any) -> tuple[Any, Any]:
    c = _SPLITTER * a
    h = c - (c - a)
    return h, a - h


def _two_prod(a: Any, b: Any) -> tuple[Any, Any]:
    """Dekker's TwoProduct: a*b = p + e exactly (barring over/underflow)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def _pick(a: Any, shape: tuple[int, ...], idx: np.ndarray) -> np.ndarray:
    """Elements of ``a`` broadcast to ``shape`` at flat indices ``idx``."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape == shape:
        return a.reshape(-1)[idx]
    return np.broadcast_to(a, shape)[np.unravel_index(idx, shape)]


def _rn_eft(op: Any, eft: Any, a: Any, b: Any, fmt: SimFormat) -> np.ndarray:
    """Round ``op(a, b)`` to ``fmt`` correctly: the float64 result, corrected at exact
    midpoints by the sign of the error-free residual ``eft(a, b)[1]``."""
    with np.errstate(all="ignore"):
        hi = op(a, b, dtype=np.float64)
    if fmt.p == 53:
        return round_to(hi, fmt)
    shape = np.shape(hi)

    def rs(idx: np.ndarray) -> np.ndarray:
        return eft(_pick(a, shape, idx), _pick(b, shape, idx))[1]

    return _round_resid(hi, fmt, rs)


def _rn_add(a: Any, b: Any, fmt: SimFormat) -> np.ndarray:
    return _rn_eft(np.add, _two_sum, a, b, fmt)


def _rn_mul(a: Any, b: Any, fmt: SimFormat) -> np.ndarray:
    return _rn_eft(np.multiply, _two_prod, a, b, fmt)


def _rn_div(a: Any, b: Any, fmt: SimFormat) -> np.ndarray:
    with np.errstate(all="ignore"):
        hi = np.divide(a, b, dtype=np.float64)
    if fmt.p == 53:
        return round_to(hi, fmt)
    shape = np.shape(hi)

    def rs(idx: np.ndarray) -> np.ndarray:
        q = np.asarray(hi, dtype=np.float64).reshape(-1)[idx]
        aa, bb = _pick(a, shape, idx), _pick(b, shape, idx)
        ph, pl = _two_prod(q, bb)
        rem = (aa - ph) - pl  # a - q*b, sign exact (Sterbenz)
        return np.sign(rem) * np.sign(bb)

    return _round_resid(hi, fmt, rs)


def _rn_sqrt(a: Any, fmt: SimFormat) -> np.ndarray:
    with np.errstate(all="ignore"):
        hi = np.sqrt(np.asarray(a, dtype=np.float64))
    if fmt.p == 53:
        return round_to(hi, fmt)
    shape = np.shape(hi)

    def rs(idx: np.ndarray) -> np.ndarray:
        q = np.asarray(hi).reshape(-1)[idx]
        ph, pl = _two_prod(q, q)
        return (_pick(a, shape, idx) - ph) - pl

    return _round_resid(hi, fmt, rs)


def _rn_from_int(x: np.ndarray, fmt: SimFormat) -> np.ndarray:
    """Correctly round integers (any NumPy int dtype) to ``fmt``."""
    x = np.asarray(x)
    hi = x.astype(np.float64)
    if fmt.p == 53 and fmt.is_float64:
        return hi

    def rs(idx: np.ndarray) -> np.ndarray:
        xi = x.reshape(-1)[idx]
        hv = hi.reshape(-1)[idx]
        return np.array([np.sign(int(i) - int(h)) for i, h in zip(xi, hv)], dtype=np.float64)

    if fmt.p == 53:
        return round_to(hi, fmt)
    return _round_resid(hi, fmt, rs)


# ---------------------------------------------------------------------------
# Elementwise functions
# ---------------------------------------------------------------------------


def _vec(f: Callable[[float], float]) -> Callable[[np.ndarray], np.ndarray]:
    uf = np.frompyfunc(f, 1, 1)

    def g(x: np.ndarray) -> np.ndarray:
        return np.asarray(uf(np.asarray(x, dtype=np.float64)), dtype=np.float64)

    return g


def _logistic64(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _rsqrt64(x: np.ndarray) -> np.ndarray:
    return 1.0 / np.sqrt(x)


_F64_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exp": np.exp,
    "exp2": np.exp2,
    "log": np.log,
    "log1p": np.log1p,
    "expm1": np.expm1,
    "tanh": np.tanh,
    "logistic": _logistic64,
    "erf": _vec(math.erf),
    "erfc": _vec(math.erfc),
    "rsqrt": _rsqrt64,
    "cbrt": np.cbrt,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "asinh": np.arcsinh,
    "acosh": np.arccosh,
    "atanh": np.arctanh,
}


def _mp_nan() -> Any:
    return mpmath.mpf("nan")


def _mp_real(f: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an mpmath function: complex or undefined results become NaN."""

    def g(*args: Any) -> Any:
        try:
            y = f(*args)
        except (ValueError, ZeroDivisionError):
            return _mp_nan()
        if isinstance(y, mpmath.mpc):
            return y.real if y.imag == 0 else _mp_nan()
        return y

    return g


def _mp_div(a: Any, b: Any) -> Any:
    if b == 0:
        if a == 0 or mpmath.isnan(a):
            return _mp_nan()
        return mpmath.inf if a > 0 else -mpmath.inf
    return a / b


def _mp_rsqrt(x: Any) -> Any:
    if x == 0:
        return mpmath.inf
    return _mp_real(lambda t: 1 / mpmath.sqrt(t))(x)


def _mp_cbrt(x: Any) -> Any:
    if mpmath.isnan(x):
        return x
    return mpmath.sign(x) * mpmath.cbrt(abs(x))


def _mp_pow(x: Any, y: Any) -> Any:
    if x == 0 and y < 0:
        return mpmath.inf
    return _mp_real(mpmath.power)(x, y)


def _mp_fmod(x: Any, y: Any) -> Any:
    """C fmod (result has the sign of x), unlike mpmath.fmod."""
    if y == 0 or not mpmath.isfinite(x) or mpmath.isnan(y):
        return _mp_nan()
    if mpmath.isinf(y):
        return x
    r = mpmath.fmod(abs(x), abs(y))
    return -r if x < 0 else r


def _mp_logistic(x: Any) -> Any:
    return 1 / (1 + mpmath.exp(-x))


def _mp_erfc(x: Any) -> Any:
    """erfc, also of huge arguments: mpmath 1.3's ``erfc_check_series`` converts
    ``int(x)**2 * 1.44`` to a float, an OverflowError past x ~ 1.3e154 (fuzz seed
    22011: erfc(ceil(exp(709)))). There the asymptotic series erfc(x) =
    exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + ...) is used: alternating, so its first
    term is off by at most the relative 1/(2x^2) < 1e-200, far below any working
    precision here."""
    if mpmath.isfinite(x) and x > 1e100:
        return mpmath.exp(-x * x) / (x * mpmath.sqrt(mpmath.pi))
    return mpmath.erfc(x)


def _mp_huge_arg(f: Callable[[Any], Any], at_pos_inf: Any, at_neg_inf: Any) -> Callable[[Any], Any]:
    """``f`` of an exponential kind, with its limits for arguments beyond +-1e5 (far
    past float64's range either way; mpmath's power of 2 raises OverflowError on
    2**(2**1e30))."""

    def g(x: Any) -> Any:
        if mpmath.isnan(x):
            return x
        if x > 1e5:
            return mpmath.mpf(at_pos_inf)
        if x < -1e5:
            return mpmath.mpf(at_neg_inf)
        return f(x)

    return g


_MP_UNARY: dict[str, Callable[[Any], Any]] = {
    "exp": _mp_huge_arg(mpmath.exp, "inf", 0),
    "exp2": _mp_huge_arg(lambda x: mpmath.power(2, x), "inf", 0),
    "log": _mp_real(mpmath.log),
    "log1p": _mp_real(mpmath.log1p),
    "expm1": _mp_huge_arg(mpmath.expm1, "inf", -1),
    "tanh": mpmath.tanh,
    "logistic": _mp_logistic,
    "erf": mpmath.erf,
    "erfc": _mp_erfc,
    "rsqrt": _mp_rsqrt,
    "cbrt": _mp_cbrt,
    "sin": mpmath.sin,
    "cos": mpmath.cos,
    "tan": mpmath.tan,
    "asin": _mp_real(mpmath.asin),
    "acos": _mp_real(mpmath.acos),
    "atan": mpmath.atan,
    "sinh": mpmath.sinh,
    "cosh": mpmath.cosh,
    "asinh": mpmath.asinh,
    "acosh": _mp_real(mpmath.acosh),
    "atanh": _mp_real(mpmath.atanh),
    "sqrt": _mp_real(mpmath.sqrt),
}


def _mpmap(f: Callable[..., Any], *xs: Any) -> np.ndarray:
    out = np.frompyfunc(f, len(xs), 1)(*xs)
    return np.asarray(out, dtype=object)


def _to_mp(x: np.ndarray) -> np.ndarray:
    return _mpmap(mpmath.mpf, np.asarray(x, dtype=np.float64))


def _from_mp(x: Any) -> np.ndarray:
    return np.asarray(np.frompyfunc(float, 1, 1)(np.asarray(x, dtype=object)), dtype=np.float64)


def _is_float(dtype: Any) -> bool:
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise NotImplementedError("simulator: complex dtypes are not supported")
    return bool(jnp.issubdtype(dtype, jnp.floating))


# ---------------------------------------------------------------------------
# Summation
# ---------------------------------------------------------------------------

_ORDERS = ("sequential", "reverse", "random", "pairwise")


@dataclass(frozen=True)
class _Accum:
    scheme: str  # "recursive" | "blocked" | "fma"
    order: str
    block: int = 0
    wide: SimFormat | None = None


def _parse_accumulation(accumulation: str, order: str) -> _Accum:
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
    if accumulation == "recursive":
        return _Accum("recursive", order)
    if accumulation == "pairwise":
        return _Accum("recursive", "pairwise")
    if accumulation == "fma":
        if order == "pairwise":
            raise ValueError("accumulation='fma' needs a sequential/reverse/random order")
        return _Accum("fma", order)
    if accumulation.startswith("fma_blocked:"):
        block = int(accumulation.split(":", 1)[1])
        if block < 1 or order == "pairwise":
            raise ValueError("fma_blocked:B needs B >= 1 and a sequential/reverse/random order")
        return _Accum("fma_blocked", order, block=block)
    if accumulation.startswith("blocked:"):
        block = int(accumulation.split(":", 1)[1])
        if block < 1:
            raise ValueError("block size must be >= 1")
        if order == "pairwise":
            raise ValueError("blocked accumulation needs a sequential/reverse/random order")
        return _Accum("blocked", order, block=block)
    if accumulation.startswith("wide:"):
        return _Accum("recursive", order, wide=as_format(accumulation.split(":", 1)[1]))
    raise ValueError(f"unknown accumulation {accumulation!r}")


def random_perms(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """``m`` independent random permutations of ``range(k)``, shape (m, k).

    This is exactly how the simulator draws the per-output-element orders for
    ``order="random"`` (outputs in row-major order, in chunks)."""
    return rng.permuted(np.tile(np.arange(k, dtype=np.intp), (m, 1)), axis=1)


class _SumSource:
    """Terms of a reduce_sum: XK has shape (K, *out_shape)."""

    def __init__(self, xk: np.ndarray):
        self.xk = xk
        self.K = xk.shape[0]
        self.out_shape = xk.shape[1:]
        self._flat: np.ndarray | None = None

    def at(self, k: int) -> tuple[np.ndarray, None]:
        return self.xk[k], None

    def gather(self, start: int, stop: int, kk: np.ndarray) -> tuple[np.ndarray, None]:
        if self._flat is None:
            self._flat = self.xk.reshape(self.K, -1)
        return self._flat[kk, np.arange(start, stop)], None


class _DotSource:
    """Terms of a canonical dot: LK (K, B, M), RK (K, B, N); out (B, M, N)."""

    def __init__(self, lk: np.ndarray, rk: np.ndarray):
        self.lk, self.rk = lk, rk
        self.K, b, m = lk.shape
        n = rk.shape[2]
        self.out_shape = (b, m, n)

    def at(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.lk[k][:, :, None], self.rk[k][:, None, :]

    def gather(self, start: int, stop: int, kk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bi, mi, ni = np.unravel_index(np.arange(start, stop), self.out_shape)
        return self.lk[kk, bi, mi], self.rk[kk, bi, ni]


# ---------------------------------------------------------------------------
# The interpreter
# ---------------------------------------------------------------------------

_Rule = Callable[..., Any]
_RULES: dict[str, _Rule] = {}


def _rule(*names: str) -> Callable[[_Rule], _Rule]:
    def deco(fn: _Rule) -> _Rule:
        for n in names:
            _RULES[n] = fn
        return fn

    return deco


_CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
_CALL_PRIMS = {
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "remat",
    "remat2",
    "checkpoint",
}


def _live(jaxpr: Any) -> list[Any]:
    """The equations whose results are used (dead code, e.g. a PRNG key that
    ``flax.linen.RNN`` splits and never uses, is skipped), in order."""
    used = {v for v in jaxpr.outvars if not isinstance(v, jcore.Literal)}
    keep = []
    for eqn in reversed(jaxpr.eqns):
        if getattr(eqn, "effects", None) or any(v in used for v in eqn.outvars):
            keep.append(eqn)
            used.update(v for v in eqn.invars if not isinstance(v, jcore.Literal))
    return keep[::-1]


class _Interp:
    """Evaluates jaxprs.  mode: "sim" (round to formats), "exact" (float64,
    no format rounding, compensated sums) or "mp" (mpmath objects)."""

    def __init__(
        self,
        mode: str,
        fmt: Any = None,
        accumulation: str = "recursive",
        order: str = "sequential",
        rng: np.random.Generator | None = None,
        flush: bool = False,
        check: bool = False,
        round_inputs: bool = True,
        layer_fmt: Callable[[str], Any] | None = None,
    ):
        self.mode = mode
        self.flush = flush
        self.fmt = None if fmt is None else self._flushed(as_format(fmt))
        # per-layer formats: layer_fmt(name_stack) -> format of that equation; its
        # floating operands are rounded into it first (values of a narrower format
        # are unchanged by that). Inputs and constants are stored in ``fmt``.
        self.layer_fmt = layer_fmt if mode == "sim" else None
        self.storage_fmt = self.fmt
        self.scope = ""  # name stack of the enclosing call equations
        self.acc = _parse_accumulation(accumulation, order)
        if self.acc.wide is not None:
            self.acc = replace(self.acc, wide=self._flushed(self.acc.wide))
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.check = check
        self.round_inputs = round_inputs
        self._consts: dict[int, tuple[Any, list[Any]]] = {}

    # -- formats and conversions -------------------------------------------

    def _flushed(self, fmt: SimFormat) -> SimFormat:
        if self.flush and fmt.subnormals:
            return replace(fmt, subnormals=False)
        return fmt

    def fmt_for(self, aval: Any) -> SimFormat | None:
        """The rounding format of a floating variable (None: no rounding)."""
        if self.mode != "sim" or not _is_float(aval.dtype):
            return None
        if self.fmt is not None:
            return self.fmt
        return self._flushed(format_for_dtype(aval.dtype))

    def ofmt(self, eqn: Any, i: int = 0) -> SimFormat | None:
        return self.fmt_for(eqn.outvars[i].aval)

    def rnd(self, x: Any, fmt: SimFormat | None) -> Any:
        return x if fmt is None else round_to(x, fmt)

    def convert_in(self, value: Any, aval: Any, is_input: bool = False) -> np.ndarray:
        """Convert an argument / constant / literal to the internal form."""
        arr = np.asarray(value)
        if _is_float(aval.dtype):
            arr = np.asarray(arr, dtype=np.float64)
            if not is_input:
                # a literal / constant is the value of its dtype (a Python 0.4 in a
                # float32 jaxpr is 0.4000000059604645), exact and simulated alike
                arr = round_to(arr, format_for_dtype(aval.dtype))
            if self.mode == "sim":
                arr = round_to(arr, self.fmt_for(aval))
            elif is_input and self.round_inputs:
                arr = round_to(arr, self._flushed(format_for_dtype(aval.dtype)))
            if self.mode == "mp":
                arr = _to_mp(arr)
            return arr
        return np.asarray(arr, dtype=aval.dtype)

    def from_int(self, x: np.ndarray, fmt: SimFormat | None) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype == bool:
            x = x.astype(np.int32)
        if self.mode == "mp":
            return _mpmap(lambda i: mpmath.mpf(int(i)), x)
        if fmt is None:
            return x.astype(np.float64)
        return _rn_from_int(x, fmt)

    def zeros(self, shape: Sequence[int]) -> np.ndarray:
        if self.mode == "mp":
            return np.full(tuple(shape), mpmath.mpf(0), dtype=object)
        return np.zeros(tuple(shape))

    def one(self) -> Any:
        return mpmath.mpf(1) if self.mode == "mp" else np.float64(1.0)

    # -- correctly rounded arithmetic ------------------------------------------

    def add(self, a: Any, b: Any, fmt: SimFormat | None) -> Any:
        if fmt is None:
            return np.add(a, b)
        return _rn_add(a, b, fmt)

    def sub(self, a: Any, b: Any, fmt: SimFormat | None) -> Any:
        return self.add(a, np.negative(b), fmt)

    def mul(self, a: Any, b: Any, fmt: SimFormat | None) -> Any:
        if fmt is None:
            return np.multiply(a, b)
        return _rn_mul(a, b, fmt)

    def div(self, a: Any, b: Any, fmt: SimFormat | None) -> Any:
        if self.mode == "mp":
            return _mpmap(_mp_div, a, b)
        if fmt is None:
            return np.divide(a, b)
        return _rn_div(a, b, fmt)

    def sqrt(self, a: Any, fmt: SimFormat | None) -> Any:
        if self.mode == "mp":
            return _mpmap(_MP_UNARY["sqrt"], a)
        if fmt is None:
            return np.sqrt(a)
        return _rn_sqrt(a, fmt)

    def unary(self, name: str, x: Any, fmt: SimFormat | None) -> Any:
        if self.mode == "mp":
            return _mpmap(_MP_UNARY[name], x)
        return self.rnd(_F64_UNARY[name](np.asarray(x, dtype=np.float64)), fmt)

    # -- summation -------------------------------------------------------------

    def reduce(self, src: Any, fmt: SimFormat | None, prod_exact: bool = True) -> np.ndarray:
        """Sum the terms of ``src`` (products for a dot) per output element."""
        out_shape = tuple(src.out_shape)
        K = src.K
        if K == 0:
            return self.zeros(out_shape)
        if self.mode == "mp":
            acc = None
            for k in range(K):
                x, w = src.at(k)
                t = x if w is None else x * w
                acc = t if acc is None else acc + t
            return np.broadcast_to(acc, out_shape)
        if fmt is None:
            return self._compensated(src, out_shape)
        acc = self.acc
        if acc.scheme in ("fma", "fma_blocked") and not prod_exact:
            raise NotImplementedError(
                "simulator: accumulation='fma' needs products exact in float64 "
                "(operand precisions summing to <= 53 bits)"
            )
        if acc.order == "random" and K > 1:
            n_out = math.prod(out_shape)
            out = np.empty(n_out)
            chunk = max(1, (1 << 21) // K)
            for start in range(0, n_out, chunk):
                stop = min(start + chunk, n_out)
                perms = random_perms(self.rng, stop - start, K)

                def get(pos: int, start: int = start, stop: int = stop, perms: Any = perms) -> Any:
                    return src.gather(start, stop, perms[:, pos])

                out[start:stop] = np.broadcast_to(self._combine(get, K, fmt), (stop - start,))
            return out.reshape(out_shape)
        if acc.order == "reverse":

            def get(pos: int) -> Any:
                return src.at(K - 1 - pos)

        else:

            def get(pos: int) -> Any:
                return src.at(pos)

        return np.broadcast_to(self._combine(get, K, fmt), out_shape)

    def _combine(self, get: Callable[[int], Any], K: int, fmt: SimFormat) -> np.ndarray:
        acc = self.acc
        afmt = acc.wide if acc.wide is not None else fmt

        def term(pos: int) -> np.ndarray:
            x, w = get(pos)
            return x if w is None else _rn_mul(x, w, afmt)

        def seq(lo: int, hi: int) -> np.ndarray:
            s = term(lo)
            for pos in range(lo + 1, hi):
                s = _rn_add(s, term(pos), afmt)
            return s

        def pairwise(lo: int, hi: int) -> np.ndarray:
            if hi - lo == 1:
                return term(lo)
            mid = lo + (hi - lo) // 2
            return _rn_add(pairwise(lo, mid), pairwise(mid, hi), afmt)

        if acc.scheme == "fma":
            s = term(0)
            for pos in range(1, K):
                x, w = get(pos)
                prod = x if w is None else np.multiply(x, w)  # exact in float64
                s = _rn_add(s, prod, fmt)
            return np.asarray(s)
        if acc.scheme == "fma_blocked":
            total = None
            for lo in range(0, K, acc.block):
                s = term(lo)
                for pos in range(lo + 1, min(lo + acc.block, K)):
                    x, w = get(pos)
                    prod = x if w is None else np.multiply(x, w)  # exact in float64
                    s = _rn_add(s, prod, fmt)
                total = s if total is None else _rn_add(total, s, fmt)
            return np.asarray(total)
        if acc.scheme == "blocked":
            total = None
            for lo in range(0, K, acc.block):
                bs = seq(lo, min(lo + acc.block, K))
                total = bs if total is None else _rn_add(total, bs, afmt)
            res = total
        elif acc.order == "pairwise":
            res = pairwise(0, K)
        else:
            res = seq(0, K)
        if acc.wide is not None:
            res = round_to(res, fmt)
        return np.asarray(res)

    def _compensated(self, src: Any, out_shape: tuple[int, ...]) -> np.ndarray:
        """Float64 sum with TwoSum/TwoProduct compensation (Ogita-Rump-Oishi
        Sum2/Dot2): about as accurate as double-double accumulation."""
        with np.errstate(all="ignore"):
            hi = lo = plain = None
            for k in range(src.K):
                x, w = src.at(k)
                if w is None:
                    p, pe = x, np.zeros(np.shape(x))
                else:
                    p, pe = _two_prod(x, w)
                if hi is None:  # start from the first term (keeps the sign of a zero)
                    hi, lo, plain = p, pe, p
                    continue
                plain = plain + p
                hi, e = _two_sum(hi, p)
                lo = lo + (e + pe)
            res = hi + lo
            res = np.where(lo == 0, hi, res)
        return np.broadcast_to(np.where(np.isfinite(res), res, plain), out_shape)

    # -- jaxpr evaluation ------------------------------------------------------

    def call(self, j: Any, args: Sequence[Any]) -> list[Any]:
        if isinstance(j, jcore.ClosedJaxpr):
            key = id(j)
            if key not in self._consts:
                cur, self.fmt = self.fmt, self.storage_fmt
                consts = [
                    self.convert_in(c, v.aval) for c, v in zip(j.consts, j.jaxpr.constvars)
                ]
                self.fmt = cur
                self._consts[key] = (j, consts)
            return self.eval(j.jaxpr, self._consts[key][1], args)
        if j.constvars:
            raise NotImplementedError("simulator: open jaxpr with constvars")
        return self.eval(j, [], args)

    def eval(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
        env: dict[Any, Any] = {}

        def read(a: Any) -> Any:
            if isinstance(a, jcore.Literal):
                return self.convert_in(a.val, a.aval)
            return env[a]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = c
        if len(args) != len(jaxpr.invars):
            raise ValueError(f"expected {len(jaxpr.invars)} arguments, got {len(args)}")
        for v, x in zip(jaxpr.invars, args):
            env[v] = x
        for eqn in _live(jaxpr):
            saved_scope = self.scope
            if self.layer_fmt is not None:
                own = str(eqn.source_info.name_stack)
                self.scope = f"{saved_scope}/{own}" if (saved_scope and own) else (saved_scope or own)
                self.fmt = self._flushed(as_format(self.layer_fmt(self.scope)))
            invals = [read(a) for a in eqn.invars]
            if self.layer_fmt is not None and not _has_subjaxpr(eqn):
                invals = [round_to(x, self.fmt) if _is_float(a.aval.dtype) else x
                          for x, a in zip(invals, eqn.invars)]
            name = eqn.primitive.name
            rule = _RULES.get(name)
            if rule is None:
                raise NotImplementedError(f"simulator: primitive {name!r} is not supported")
            with np.errstate(all="ignore"):
                outs = rule(self, eqn, *invals)
            self.scope = saved_scope
            if not eqn.primitive.multiple_results:
                outs = [outs]
            for v, o in zip(eqn.outvars, outs):
                if not isinstance(v, jcore.DropVar):
                    env[v] = self.finalize(o, v.aval, name)
        return [read(a) for a in jaxpr.outvars]

    def finalize(self, val: Any, aval: Any, prim: str) -> np.ndarray:
        if _is_float(aval.dtype):
            val = np.asarray(val, dtype=object if self.mode == "mp" else np.float64)
        else:
            val = np.asarray(val)
            if val.dtype == object:
                val = np.asarray(val.tolist())
            val = val.astype(aval.dtype, copy=False)
        shape = tuple(aval.shape)
        if val.shape != shape:
            val = np.broadcast_to(val, shape)
        if self.check and self.mode == "sim" and _is_float(aval.dtype):
            fmt = self.fmt_for(aval)
            if not np.array_equal(round_to(val, fmt), val, equal_nan=True):
                raise AssertionError(f"simulator: {prim} produced values outside {fmt.name}")
        return val


# ---------------------------------------------------------------------------
# Primitive rules.  Each takes (interp, eqn, *invals).
# ---------------------------------------------------------------------------


def _has_subjaxpr(eqn: Any) -> bool:
    """True for call / control-flow equations (operands pass to a body unchanged)."""
    def sub(v: Any) -> bool:
        if isinstance(v, (jcore.Jaxpr, jcore.ClosedJaxpr)):
            return True
        return isinstance(v, (tuple, list)) and any(sub(x) for x in v)

    return any(sub(v) for v in eqn.params.values())


def _isf(eqn: Any) -> bool:
    return _is_float(eqn.outvars[0].aval.dtype)


def _in_isf(eqn: Any, i: int = 0) -> bool:
    a = eqn.invars[i]
    return _is_float(a.aval.dtype)


@_rule("add")
def _r_add(I: _Interp, eqn: Any, a: Any, b: Any) -> Any:
    return I.add(a, b, I.ofmt(eqn)) if _isf(eqn) else np.add(a, b)


@_rule("sub")
def _r_sub(I: _Interp, eqn: Any, a: Any, b: Any) -> Any:
    return I.sub(a, b, I.ofmt(eqn)) if _isf(eqn) else np.subtract(a, b)


@_rule("mul")
def _r_mul(I: _Interp, eqn: Any, a: Any, b: Any) -> Any:
    if not _isf(eqn):
        return np.logical_and(a, b) if np.asarray(a).dtype == bool else np.multiply(a, b)
    return I.mul(a, b, I.ofmt(eqn))


@_rule("div")
def _r_div(I: _Interp, eqn: Any, a: Any, b: Any) -> Any:
    if _isf(eqn):
        return I.div(a, b, I.ofmt(eqn))
    a, b = np.asarray(a), np.asarray(b)
    safe_b = np.where(b == 0, 1, b)
    q = np.floor_divide(a, safe_b)
    fix = (np.remainder(a, safe_b) != 0) & ((a < 0) != (safe_b < 0))
    q = np.where(fix, q + 1, q)  # round toward zero like C / XLA
    return np.where(b == 0, -1, q)


@_rule("rem")
def _r_rem(I: _Interp, eqn: Any, a: Any, b: Any) -> Any:
    if I.mode == "mp" and _isf(eqn):
        return _mpmap(_mp_real(_mp_fmod), a, b)
    if not _isf(eqn):
        b = np.asarray(b)
        return np.where(b == 0, a, np.fmod(a, np.where(b == 0, 1, b)))
    return np.fmod(a, b)  # exact for floating point


@_rule("neg")
def _r_neg(I: _Interp, eqn: Any, x: Any) -> Any:
    return np.negative(x)


@_rule("abs")
def _r_abs(I: _Interp, eqn: Any, x: Any) -> Any:
    return np.abs(x)


@_rule("sign")
def _r_sign(I: _Interp, eqn: Any, x: Any) -> Any:
    if I.mode == "mp" and _isf(eqn):
        return _mpmap(lambda v: v if mpmath.isnan(v) else mpmath.mpf(mpmath.sign(v)), x)
    return np.sign(x)


@_rule("max")
def _r_max(I: _Interp, eqn: Any, a: Any, b: Any) -> Any:
    return np.maximum(a, b)


@_rule("min")
def _r_min(I: _Interp, eqn: Any, a: Any, b: Any) -> Any:
    return np.minimum(a, b)


def _mp_or_np(np_fn: Callable[[Any], Any], mp_fn: Callable[[Any], Any]) -> _Rule:
    def rule(I: _Interp, eqn: Any, x: Any) -> Any:
        if I.mode == "mp" and _in_isf(eqn):
            return _mpmap(mp_fn, x)
        return np_fn(x)

    return rule


_RULES["floor"] = _mp_or_np(np.floor, mpmath.floor)
_RULES["ceil"] = _mp_or_np(np.ceil, mpmath.ceil)
_RULES["is_finite"] = _mp_or_np(np.isfinite, mpmath.isfinite)


def _round_away64(x: np.ndarray) -> np.ndarray:
    t = np.trunc(x)
    frac = x - t  # exact
    return t + np.where(np.abs(frac) >= 0.5, np.sign(x), 0.0)


def _mp_round_away(v: Any) -> Any:
    if not mpmath.isfinite(v):
        return v
    t = mpmath.mpf(int(v))
    if abs(v - t) >= mpmath.mpf(0.5):
        t += mpmath.sign(v)
    return t


def _mp_round_even(v: Any) -> Any:
    if not mpmath.isfinite(v):
        return v
    f = mpmath.floor(v)
    d = v - f
    if d > 0.5 or (d == 0.5 and int(f) % 2 == 1):
        f += 1
    return f


@_rule("round")
def _r_round(I: _Interp, eqn: Any, x: Any) -> Any:
    method = int(eqn.params.get("rounding_method", 0))  # 0: away from zero, 1: to even
    if I.mode == "mp":
        return _mpmap(_mp_round_even if method == 1 else _mp_round_away, x)
    return np.rint(x) if method == 1 else _round_away64(np.asarray(x, dtype=np.float64))


def _unary_rule(name: str) -> _Rule:
    def rule(I: _Interp, eqn: Any, x: Any) -> Any:
        return I.unary(name, x, I.ofmt(eqn))

    return rule


for _n in _F64_UNARY:
    _RULES[_n] = _unary_rule(_n)


@_rule("sqrt")
def _r_sqrt(I: _Interp, eqn: Any, x: Any) -> Any:
    return I.sqrt(x, I.ofmt(eqn))


@_rule("pow")
def _r_pow(I: _Interp, eqn: Any, x: Any, y: Any) -> Any:
    if not _in_isf(eqn, 1):
        y = I.from_int(y, None) if I.mode == "mp" else np.asarray(y, dtype=np.float64)
    if I.mode == "mp":
        return _mpmap(_mp_pow, x, y)
    return I.rnd(np.power(np.asarray(x, dtype=np.float64), y), I.ofmt(eqn))


@_rule("atan2")
def _r_atan2(I: _Interp, eqn: Any, x: Any, y: Any) -> Any:
    if I.mode == "mp":
        return _mpmap(mpmath.atan2, x, y)
    return I.rnd(np.arctan2(x, y), I.ofmt(eqn))


@_rule("integer_pow")
def _r_integer_pow(I: _Interp, eqn: Any, x: Any) -> Any:
    y = int(eqn.params["y"])
    if not _isf(eqn):
        return np.power(x, y)
    fmt = I.ofmt(eqn)
    if y == 0:
        return np.full(np.shape(x), I.one(), dtype=object if I.mode == "mp" else np.float64)
    # Same multiplication sequence as jax._src.lax.lax._integer_pow.
    n = abs(y)
    acc = None
    base = x
    while n > 0:
        if n & 1:
            acc = base if acc is None else I.mul(acc, base, fmt)
        n >>= 1
        if n > 0:
            base = I.mul(base, base, fmt)
    if y < 0:
        acc = I.div(I.one(), acc, fmt)
    return acc


@_rule("square")
def _r_square(I: _Interp, eqn: Any, x: Any) -> Any:
    return I.mul(x, x, I.ofmt(eqn)) if _isf(eqn) else np.multiply(x, x)


def _cmp_rule(fn: Callable[[Any, Any], Any]) -> _Rule:
    def rule(I: _Interp, eqn: Any, a: Any, b: Any) -> Any:
        return np.asarray(fn(a, b)).astype(bool)

    return rule


_RULES["eq"] = _cmp_rule(np.equal)
_RULES["ne"] = _cmp_rule(np.not_equal)
_RULES["lt"] = _cmp_rule(np.less)
_RULES["le"] = _cmp_rule(np.less_equal)
_RULES["gt"] = _cmp_rule(np.greater)
_RULES["ge"] = _cmp_rule(np.greater_equal)


@_rule("and")
def _r_and(I: _Interp, eqn: Any, a: Any, b: Any) -> Any:
    return np.bitwise_and(a, b)


@_rule("or")
def _r_or(I: _Interp, eqn: Any, a: Any, b: Any) -> Any:
    return np.bitwise_or(a, b)


@_rule("xor")
def _r_xor(I: _Interp, eqn: Any, a: Any, b: Any) -> Any:
    return np.bitwise_xor(a, b)


@_rule("not")
def _r_not(I: _Interp, eqn: Any, a: Any) -> Any:
    return np.invert(a)


@_rule("stop_gradient", "copy", "copy_p", "reduce_precision_identity")
def _r_identity(I: _Interp, eqn: Any, x: Any) -> Any:
    return x


@_rule("optimization_barrier")
def _r_barrier(I: _Interp, eqn: Any, *xs: Any) -> Any:
    return list(xs)


@_rule("select_n")
def _r_select_n(I: _Interp, eqn: Any, pred: Any, *cases: Any) -> Any:
    pred = np.asarray(pred)
    if len(cases) == 1:
        return cases[0]
    if pred.dtype == bool:
        return np.where(pred, cases[1], cases[0])
    out = cases[0]
    for i in range(1, len(cases)):
        out = np.where(pred == i, cases[i], out)
    return out


@_rule("clamp")
def _r_clamp(I: _Interp, eqn: Any, lo: Any, x: Any, hi: Any) -> Any:
    return np.minimum(np.maximum(x, lo), hi)


def _float_to_int(x: np.ndarray, dtype: Any, mp: bool) -> np.ndarray:
    """Truncate toward zero like XLA: NaN -> 0, out of range -> saturate."""
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    if mp:

        def conv(v: Any) -> int:
            if mpmath.isnan(v):
                return 0
            if v >= info.max:
                return int(info.max)
            if v <= info.min:
                return int(info.min)
            return int(v)

        return np.asarray(np.frompyfunc(conv, 1, 1)(x).tolist(), dtype=dtype).reshape(
            np.shape(x)
        )
    x = np.asarray(x, dtype=np.float64)
    t = np.trunc(x)
    lo, hi = float(info.min), float(info.max)
    nan, big, small = np.isnan(t), t >= hi, t <= lo
    mid = ~(nan | big | small)
    out = np.zeros(x.shape, dtype=dtype)
    out[mid] = t[mid].astype(dtype)
    out[big] = info.max
    out[small] = info.min
    return out


@_rule("convert_element_type")
def _r_convert(I: _Interp, eqn: Any, x: Any) -> Any:
    new = np.dtype(eqn.params["new_dtype"])
    src_f = _in_isf(eqn)
    dst_f = _is_float(new)
    fmt = I.ofmt(eqn)
    if src_f and dst_f:
        return I.rnd(x, fmt)  # exact / mp modes: identity
    if src_f:
        if new.kind == "b":
            return np.asarray(np.not_equal(x, 0)).astype(bool)
        return _float_to_int(x, new, I.mode == "mp")
    if dst_f:
        return I.from_int(x, fmt)
    return np.asarray(x).astype(new)


@_rule("reduce_precision")
def _r_reduce_precision(I: _Interp, eqn: Any, x: Any) -> Any:
    if I.mode != "sim":
        return x  # the exact real result ignores the program's roundings
    e, m = int(eqn.params["exponent_bits"]), int(eqn.params["mantissa_bits"])
    rp = I._flushed(custom(m + 1, 2 - 2 ** (e - 1), name=f"reduce_precision(e{e}m{m})"))
    return I.rnd(round_to(x, rp), I.ofmt(eqn))


@_rule("iota")
def _r_iota(I: _Interp, eqn: Any) -> Any:
    shape = tuple(eqn.params["shape"])
    dim = int(eqn.params["dimension"])
    a = np.arange(shape[dim]).reshape([-1 if d == dim else 1 for d in range(len(shape))])
    a = np.broadcast_to(a, shape)
    if _isf(eqn):
        return I.from_int(a, I.ofmt(eqn))
    return a.astype(eqn.params["dtype"])


@_rule("broadcast_in_dim")
def _r_broadcast_in_dim(I: _Interp, eqn: Any, x: Any, *dyn: Any) -> Any:
    shape = tuple(eqn.params["shape"])
    bdims = tuple(eqn.params["broadcast_dimensions"])
    x = np.asarray(x)
    new = [1] * len(shape)
    for i, d in enumerate(bdims):
        new[d] = x.shape[i]
    return np.broadcast_to(x.reshape(new), shape)


@_rule("reshape")
def _r_reshape(I: _Interp, eqn: Any, x: Any, *dyn: Any) -> Any:
    dims = eqn.params.get("dimensions")
    if dims is not None:
        x = np.transpose(x, dims)
    return np.reshape(x, tuple(eqn.params["new_sizes"]))


@_rule("transpose")
def _r_transpose(I: _Interp, eqn: Any, x: Any) -> Any:
    return np.transpose(x, tuple(eqn.params["permutation"]))


@_rule("squeeze")
def _r_squeeze(I: _Interp, eqn: Any, x: Any) -> Any:
    return np.squeeze(x, axis=tuple(eqn.params["dimensions"]))


@_rule("expand_dims")
def _r_expand_dims(I: _Interp, eqn: Any, x: Any) -> Any:
    return np.expand_dims(x, tuple(eqn.params["dimensions"]))


@_rule("concatenate")
def _r_concatenate(I: _Interp, eqn: Any, *xs: Any) -> Any:
    return np.concatenate([np.asarray(x) for x in xs], axis=int(eqn.params["dimension"]))


@_rule("stack")
def _r_stack(I: _Interp, eqn: Any, *xs: Any) -> Any:
    return np.stack([np.asarray(x) for x in xs], axis=int(eqn.params["axis"]))


@_rule("split")
def _r_split(I: _Interp, eqn: Any, x: Any) -> Any:
    sizes = [int(s) for s in eqn.params["sizes"]]
    return np.split(x, np.cumsum(sizes)[:-1], axis=int(eqn.params["axis"]))


@_rule("slice")
def _r_slice(I: _Interp, eqn: Any, x: Any) -> Any:
    start = eqn.params["start_indices"]
    limit = eqn.params["limit_indices"]
    strides = eqn.params.get("strides") or (1,) * len(start)
    idx = tuple(slice(int(s), int(l), int(st)) for s, l, st in zip(start, limit, strides))
    return np.asarray(x)[idx]


@_rule("rev")
def _r_rev(I: _Interp, eqn: Any, x: Any) -> Any:
    return np.flip(x, axis=tuple(eqn.params["dimensions"]))


@_rule("pad")
def _r_pad(I: _Interp, eqn: Any, x: Any, pv: Any) -> Any:
    x = np.asarray(x)
    v = np.asarray(pv)[()]
    for axis, (lo, hi, interior) in enumerate(eqn.params["padding_config"]):
        lo, hi, interior = int(lo), int(hi), int(interior)
        n = x.shape[axis]
        if interior > 0 and n > 1:
            shape = list(x.shape)
            shape[axis] = n + (n - 1) * interior
            y = np.full(shape, v, dtype=x.dtype)
            sl = [slice(None)] * x.ndim
            sl[axis] = slice(None, None, interior + 1)
            y[tuple(sl)] = x
            x = y
        for amount, at_end in ((lo, False), (hi, True)):
            if amount > 0:
                shape = list(x.shape)
                shape[axis] = amount
                block = np.full(shape, v, dtype=x.dtype)
                x = np.concatenate([x, block] if at_end else [block, x], axis=axis)
            elif amount < 0:
                sl = [slice(None)] * x.ndim
                sl[axis] = slice(None, amount) if at_end else slice(-amount, None)
                x = x[tuple(sl)]
    return x


def _clamped_starts(starts: Sequence[Any], shape: Sequence[int], sizes: Sequence[int]) -> list[int]:
    return [
        int(min(max(int(np.asarray(s)), 0), d - z)) for s, d, z in zip(starts, shape, sizes)
    ]


@_rule("dynamic_slice")
def _r_dynamic_slice(I: _Interp, eqn: Any, x: Any, *starts: Any) -> Any:
    x = np.asarray(x)
    sizes = [int(s) for s in eqn.params["slice_sizes"]]
    st = _clamped_starts(starts[: x.ndim], x.shape, sizes)
    return x[tuple(slice(s, s + z) for s, z in zip(st, sizes))]


@_rule("gather")
def _r_gather(I: _Interp, eqn: Any, x: Any, idx: Any) -> Any:
    """Gather moves data: find which flat position each output element reads by
    gathering an array of positions (int32, exact), then index the values with it.
    Out-of-bounds elements in mode 'fill' read the fill value."""
    import jax

    x = np.asarray(x, dtype=object) if I.mode == "mp" else np.asarray(x)
    pos = np.arange(x.size, dtype=np.int32).reshape(x.shape)
    params = dict(eqn.params)
    params["fill_value"] = -1
    got = np.asarray(jax.lax.gather_p.bind(jax.numpy.asarray(pos), jax.numpy.asarray(np.asarray(idx)), **params))
    flat = x.reshape(-1)
    out = flat[np.clip(got, 0, max(x.size - 1, 0))]
    if (got < 0).any():
        fill = eqn.params.get("fill_value")
        out = np.where(got < 0, np.nan if fill is None else fill, out)
    return out


@_rule("scatter")
def _r_scatter(I: _Interp, eqn: Any, x: Any, idx: Any, upd: Any) -> Any:
    """Scatter (replace; what ``vmap`` makes of ``dynamic_update_slice``) moves data:
    find which update element lands on each output position by scattering an array
    of update positions (int32, exact) into -1s, then select. Needs unique indices
    (XLA leaves the winner of a collision unspecified)."""
    import jax

    x = np.asarray(x, dtype=object) if I.mode == "mp" else np.asarray(x)
    upd = np.asarray(upd, dtype=x.dtype)
    pos = np.arange(upd.size, dtype=np.int32).reshape(upd.shape)
    params = {k: v for k, v in eqn.params.items() if k not in ("update_jaxpr", "update_consts")}
    got = np.asarray(jax.lax.scatter_p.bind(
        jax.numpy.full(x.shape, -1, np.int32), jax.numpy.asarray(np.asarray(idx)), jax.numpy.asarray(pos),
        update_jaxpr=eqn.params.get("update_jaxpr"), update_consts=eqn.params.get("update_consts", ()),
        **params))
    flat = upd.reshape(-1)
    return np.where(got >= 0, flat[np.clip(got, 0, max(upd.size - 1, 0))], x)


@_rule("dynamic_update_slice")
def _r_dynamic_update_slice(I: _Interp, eqn: Any, x: Any, upd: Any, *starts: Any) -> Any:
    x = np.array(x, copy=True)
    upd = np.asarray(upd)
    st = _clamped_starts(starts, x.shape, upd.shape)
    x[tuple(slice(s, s + z) for s, z in zip(st, upd.shape))] = upd
    return x


def _move_reduced(x: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Transpose/reshape to (K, *kept_shape), reduced axes flattened row-major."""
    axes = sorted(int(a) for a in axes)
    keep = [d for d in range(x.ndim) if d not in axes]
    k = math.prod(x.shape[a] for a in axes)
    xt = np.transpose(x, axes + keep)
    return np.ascontiguousarray(xt).reshape((k,) + tuple(x.shape[d] for d in keep))


@_rule("reduce_sum")
def _r_reduce_sum(I: _Interp, eqn: Any, x: Any) -> Any:
    axes = tuple(eqn.params["axes"])
    x = np.asarray(x)
    if not axes:
        return x
    if not _isf(eqn):
        return np.sum(x, axis=axes)
    return I.reduce(_SumSource(_move_reduced(x, axes)), I.ofmt(eqn))


@_rule("reduce_prod")
def _r_reduce_prod(I: _Interp, eqn: Any, x: Any) -> Any:
    axes = tuple(eqn.params["axes"])
    x = np.asarray(x)
    if not axes:
        return x
    if not _isf(eqn):
        return np.prod(x, axis=axes)
    xk = _move_reduced(x, axes)
    if xk.shape[0] == 0:
        return np.full(xk.shape[1:], I.one(), dtype=object if I.mode == "mp" else np.float64)
    fmt = I.ofmt(eqn)
    acc = xk[0]
    for k in range(1, xk.shape[0]):  # sequential order
        acc = I.mul(acc, xk[k], fmt)
    return acc


@_rule("reduce_max")
def _r_reduce_max(I: _Interp, eqn: Any, x: Any) -> Any:
    axes = tuple(eqn.params["axes"])
    return np.max(x, axis=axes) if axes else x


@_rule("reduce_min")
def _r_reduce_min(I: _Interp, eqn: Any, x: Any) -> Any:
    axes = tuple(eqn.params["axes"])
    return np.min(x, axis=axes) if axes else x


@_rule("reduce_and")
def _r_reduce_and(I: _Interp, eqn: Any, x: Any) -> Any:
    return np.all(x, axis=tuple(eqn.params["axes"]))


@_rule("reduce_or")
def _r_reduce_or(I: _Interp, eqn: Any, x: Any) -> Any:
    return np.any(x, axis=tuple(eqn.params["axes"]))


@_rule("argmax")
def _r_argmax(I: _Interp, eqn: Any, x: Any) -> Any:
    (axis,) = eqn.params["axes"]
    return np.argmax(x, axis=int(axis)).astype(eqn.params["index_dtype"])


@_rule("argmin")
def _r_argmin(I: _Interp, eqn: Any, x: Any) -> Any:
    (axis,) = eqn.params["axes"]
    return np.argmin(x, axis=int(axis)).astype(eqn.params["index_dtype"])


def _cumulative(kind: str) -> _Rule:
    def rule(I: _Interp, eqn: Any, x: Any) -> Any:
        axis = int(eqn.params["axis"])
        reverse = bool(eqn.params.get("reverse", False))
        x = np.asarray(x)
        if x.shape[axis] == 0:
            return x
        xm = np.moveaxis(x, axis, 0)
        if reverse:
            xm = xm[::-1]
        if kind == "max":
            res = np.maximum.accumulate(xm, axis=0)
        elif kind == "min":
            res = np.minimum.accumulate(xm, axis=0)
        elif not _isf(eqn):
            res = np.cumsum(xm, axis=0) if kind == "sum" else np.cumprod(xm, axis=0)
        elif I.mode == "exact" and kind == "sum":
            hi = np.zeros(xm.shape[1:])
            lo = np.zeros(xm.shape[1:])
            outs = []
            for i in range(xm.shape[0]):  # compensated prefix sums
                hi, e = _two_sum(hi, xm[i])
                lo = lo + e
                s = hi + lo
                outs.append(np.where(np.isfinite(s), s, hi))
            res = np.stack(outs)
        else:
            fmt = I.ofmt(eqn)
            op = I.add if kind == "sum" else I.mul
            outs = [xm[0]]
            for i in range(1, xm.shape[0]):  # sequential prefix, rounded each step
                outs.append(op(outs[-1], xm[i], fmt))
            res = np.stack([np.asarray(o) for o in outs])
        if reverse:
            res = res[::-1]
        return np.moveaxis(res, 0, axis)

    return rule


def _r_cumlogsumexp(I: _Interp, eqn: Any, x: Any) -> Any:
    """XLA's chain of logaddexp(s, t) = max(s, t) + log1p(exp(-|s - t|)), every
    operation rounded to the format; exactly: log of the prefix sums of exp."""
    axis = int(eqn.params["axis"])
    reverse = bool(eqn.params.get("reverse", False))
    obj = I.mode == "mp"
    xm = np.moveaxis(np.asarray(x, dtype=object if obj else np.float64), axis, 0)
    if reverse:
        xm = xm[::-1]
    outs = []
    if I.mode == "sim":
        fmt = I.ofmt(eqn)
        acc = xm[0]
        outs.append(acc)
        for i in range(1, xm.shape[0]):
            t = xm[i]
            d = I.sub(acc, t, fmt)
            e = I.unary("exp", -np.abs(d), fmt)
            lg = I.unary("log1p", e, fmt)
            new = I.add(np.maximum(acc, t), lg, fmt)
            acc = np.where(np.isnan(d), I.add(acc, t, fmt), new)
            outs.append(acc)
    elif obj:
        acc = None
        for i in range(xm.shape[0]):
            e = _mpmap(mpmath.exp, xm[i])
            acc = e if acc is None else acc + e
            outs.append(_mpmap(mpmath.log, acc))
    else:
        with np.errstate(all="ignore"):
            m = np.max(xm, axis=0)
            m = np.where(np.isfinite(m), m, 0.0)
            s = np.cumsum(np.exp(xm - m), axis=0)
            outs = list(np.log(s) + m)
    res = np.stack([np.asarray(o) for o in outs])
    if reverse:
        res = res[::-1]
    return np.moveaxis(res, 0, axis)


_RULES["cumlogsumexp"] = _r_cumlogsumexp
_RULES["cumsum"] = _cumulative("sum")
_RULES["cumprod"] = _cumulative("prod")
_RULES["cummax"] = _cumulative("max")
_RULES["cummin"] = _cumulative("min")


@_rule("sort")
def _r_sort(I: _Interp, eqn: Any, *ops: Any) -> Any:
    nk = int(eqn.params.get("num_keys", 1))
    dim = int(eqn.params["dimension"])
    if nk == 1:
        perm = np.argsort(ops[0], axis=dim, kind="stable")  # NaNs last, like lax.sort
    else:  # lexicographic on the first num_keys operands, stable
        keys = [np.moveaxis(np.asarray(o), dim, -1) for o in ops[:nk]]
        flat = [k.reshape(-1, k.shape[-1]) for k in keys]
        rows = [np.lexsort([f[r] for f in reversed(flat)]) for r in range(flat[0].shape[0])]
        perm = np.moveaxis(np.stack(rows).reshape(keys[0].shape), -1, dim)
    return [np.take_along_axis(np.asarray(o), perm, axis=dim) for o in ops]


@_rule("dot_general")
def _r_dot_general(I: _Interp, eqn: Any, lhs: Any, rhs: Any) -> Any:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lc, rc, lb, rb = ([int(d) for d in t] for t in (lc, rc, lb, rb))
    lhs, rhs = np.asarray(lhs), np.asarray(rhs)
    out_f = _isf(eqn)
    fmt = I.ofmt(eqn)
    if out_f:
        if not _in_isf(eqn, 0):
            lhs = I.from_int(lhs, fmt)
        if not _in_isf(eqn, 1):
            rhs = I.from_int(rhs, fmt)
    lf = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rf = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    bshape = [lhs.shape[d] for d in lb]
    lfs = [lhs.shape[d] for d in lf]
    rfs = [rhs.shape[d] for d in rf]
    K = math.prod(lhs.shape[d] for d in lc)
    B, M, N = math.prod(bshape), math.prod(lfs), math.prod(rfs)
    lk = np.ascontiguousarray(np.transpose(lhs, lc + lb + lf)).reshape(K, B, M)
    rk = np.ascontiguousarray(np.transpose(rhs, rc + rb + rf)).reshape(K, B, N)
    out_shape = tuple(bshape + lfs + rfs)
    if not out_f:
        res = np.einsum("kbm,kbn->bmn", lk.astype(np.int64), rk.astype(np.int64))
        return res.reshape(out_shape)

    def prec(i: int) -> int:
        f = I.fmt_for(eqn.invars[i].aval) if _in_isf(eqn, i) else None
        return f.p if f is not None else 53

    prod_exact = prec(0) + prec(1) <= 53
    return np.reshape(I.reduce(_DotSource(lk, rk), fmt, prod_exact), out_shape)


# -- layers: convolution, windows, sort/top_k, scatter, split ------------------


class _TermSource:
    """Terms of a generic sum of products: XK, WK of shape (K, *out_shape) (WK may
    be None for plain sums)."""

    def __init__(self, xk: np.ndarray, wk: np.ndarray | None):
        self.xk, self.wk = xk, wk
        self.K = xk.shape[0]
        self.out_shape = xk.shape[1:]
        self._fx: np.ndarray | None = None
        self._fw: np.ndarray | None = None

    def at(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.xk[k], (None if self.wk is None else self.wk[k])

    def gather(self, start: int, stop: int, kk: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self._fx is None:
            self._fx = self.xk.reshape(self.K, -1)
            self._fw = None if self.wk is None else self.wk.reshape(self.K, -1)
        cols = np.arange(start, stop)
        return self._fx[kk, cols], (None if self._fw is None else self._fw[kk, cols])


def _dilate_pad(x: np.ndarray, axes: Sequence[int], dil: Sequence[int], pad: Sequence[Any], fill: Any) -> np.ndarray:
    """Insert ``dil-1`` fill values between elements along each axis, then pad
    (lo, hi) with fill (negative amounts crop)."""
    for a, d, (lo, hi) in zip(axes, dil, pad):
        d, lo, hi = int(d), int(lo), int(hi)
        n = x.shape[a]
        if d > 1 and n > 1:
            shape = list(x.shape)
            shape[a] = n + (n - 1) * (d - 1)
            y = np.full(shape, fill, dtype=x.dtype)
            sl = [slice(None)] * x.ndim
            sl[a] = slice(None, None, d)
            y[tuple(sl)] = x
            x = y
        for amount, at_end in ((lo, False), (hi, True)):
            if amount > 0:
                shape = list(x.shape)
                shape[a] = amount
                block = np.full(shape, fill, dtype=x.dtype)
                x = np.concatenate([x, block] if at_end else [block, x], axis=a)
            elif amount < 0:
                sl = [slice(None)] * x.ndim
                sl[a] = slice(None, amount) if at_end else slice(-amount, None)
                x = x[tuple(sl)]
    return x


def _window_patches(x: np.ndarray, wd: Sequence[int], ws: Sequence[int], pad: Sequence[Any],
                    bd: Sequence[int], wdl: Sequence[int], fill: Any) -> np.ndarray:
    """(W, *out): the elements of every window, window positions in row-major order."""
    axes = list(range(x.ndim))
    xp = _dilate_pad(x, axes, bd, pad, fill)
    out = [(xp.shape[i] - (int(wd[i]) - 1) * int(wdl[i]) - 1) // int(ws[i]) + 1 for i in axes]
    out = [max(o, 0) for o in out]
    rows = []
    for off in np.ndindex(*[int(w) for w in wd]):
        sl = tuple(slice(o * int(d), o * int(d) + (n - 1) * int(s) + 1, int(s)) if n > 0 else slice(0, 0)
                   for o, d, n, s in zip(off, wdl, out, ws))
        rows.append(xp[sl])
    return np.stack(rows) if rows else np.zeros((0, *out), dtype=x.dtype)


def _fill(I: _Interp, v: float) -> Any:
    return mpmath.mpf(v) if I.mode == "mp" else v


def _in_format_reduce(I: _Interp, src: Any, fmt: SimFormat | None) -> np.ndarray:
    """A sum with every addition rounded to ``fmt`` (what XLA does for windowed and
    cumulative sums and scatter-add): the configured order, no wide accumulator."""
    saved = I.acc
    if saved.wide is not None:
        I.acc = replace(saved, wide=None)
    try:
        return I.reduce(src, fmt)
    finally:
        I.acc = saved


@_rule("conv_general_dilated")
def _r_conv(I: _Interp, eqn: Any, lhs: Any, rhs: Any) -> Any:
    p = eqn.params
    dn = p["dimension_numbers"]
    lspec, rspec, ospec = (tuple(int(d) for d in s) for s in (dn.lhs_spec, dn.rhs_spec, dn.out_spec))
    obj = I.mode == "mp"
    lhs = np.asarray(lhs, dtype=object) if obj else np.asarray(lhs)
    rhs = np.asarray(rhs, dtype=object) if obj else np.asarray(rhs)
    out_f = _isf(eqn)
    fmt = I.ofmt(eqn)
    if out_f and not obj:
        lhs, rhs = lhs.astype(np.float64), rhs.astype(np.float64)
    x = np.transpose(lhs, lspec)  # (N, C, *S)
    w = np.transpose(rhs, rspec)  # (O, I, *K)
    nsp = x.ndim - 2
    zero = _fill(I, 0.0) if out_f else 0
    xp = _dilate_pad(x, range(2, 2 + nsp), p["lhs_dilation"], p["padding"], zero)
    N, Cn = x.shape[:2]
    O, Ic = w.shape[:2]
    ksz = w.shape[2:]
    rd = [int(d) for d in p["rhs_dilation"]]
    st = [int(s) for s in p["window_strides"]]
    G, BG = int(p["feature_group_count"]), int(p["batch_group_count"])
    osp = [(xp.shape[2 + i] - (ksz[i] - 1) * rd[i] - 1) // st[i] + 1 for i in range(nsp)]
    Nout = N // BG
    og, obg = O // G, O // BG
    K = Ic * math.prod(ksz)
    xk = np.zeros((K, Nout, O, *osp), dtype=object if obj else xp.dtype)
    wk = np.zeros((K, Nout, O, *osp), dtype=object if obj else w.dtype)
    k = 0
    for i in range(Ic):
        for kpos in np.ndindex(*ksz):
            sl = tuple(slice(kpos[d] * rd[d], kpos[d] * rd[d] + (osp[d] - 1) * st[d] + 1, st[d]) for d in range(nsp))
            for o in range(O):
                c = (o // og) * Ic + i  # input channel of this term
                b0 = (o // obg) * Nout  # first lhs batch of this output's batch group
                xk[k, :, o] = xp[(slice(b0, b0 + Nout), c) + sl]
                wk[k, :, o] = w[(o, i) + tuple(kpos)]
            k += 1
    if not out_f:
        res = np.sum(xk.astype(np.int64) * wk.astype(np.int64), axis=0)
    else:
        def prec(j: int) -> int:
            f = I.fmt_for(eqn.invars[j].aval)
            return f.p if f is not None else 53

        res = I.reduce(_TermSource(xk, wk), fmt, prec(0) + prec(1) <= 53)
    inv = np.argsort(ospec)
    return np.transpose(np.asarray(res), inv)


def _window_params(p: Any) -> tuple[Any, ...]:
    return (p["window_dimensions"], p["window_strides"], p["padding"], p["base_dilation"], p["window_dilation"])


@_rule("reduce_window_sum")
def _r_reduce_window_sum(I: _Interp, eqn: Any, x: Any) -> Any:
    obj = I.mode == "mp"
    x = np.asarray(x, dtype=object) if obj else np.asarray(x)
    zero = _fill(I, 0.0) if _isf(eqn) else 0
    pt = _window_patches(x, *_window_params(eqn.params), zero)
    if not _isf(eqn):
        return np.sum(pt, axis=0)
    return _in_format_reduce(I, _TermSource(pt, None), I.ofmt(eqn))


def _window_extreme(kind: str) -> _Rule:
    def rule(I: _Interp, eqn: Any, x: Any) -> Any:
        obj = I.mode == "mp"
        x = np.asarray(x, dtype=object) if obj else np.asarray(x)
        if _isf(eqn):
            fill = _fill(I, -math.inf if kind == "max" else math.inf)
        else:
            info = np.iinfo(x.dtype) if x.dtype != bool else None
            fill = (info.min if kind == "max" else info.max) if info else (kind != "max")
        pt = _window_patches(x, *_window_params(eqn.params), fill)
        return np.max(pt, axis=0) if kind == "max" else np.min(pt, axis=0)

    return rule


_RULES["reduce_window_max"] = _window_extreme("max")
_RULES["reduce_window_min"] = _window_extreme("min")


@_rule("reduce_window")
def _r_reduce_window(I: _Interp, eqn: Any, x: Any, init: Any) -> Any:
    body = eqn.params["jaxpr"]
    jx = getattr(body, "jaxpr", body)
    if len(jx.eqns) != 1 or jx.eqns[0].primitive.name not in ("add", "max", "min"):
        raise NotImplementedError("simulator: reduce_window with a body other than add/max/min")
    kind = jx.eqns[0].primitive.name
    obj = I.mode == "mp"
    x = np.asarray(x, dtype=object) if obj else np.asarray(x)
    v = np.asarray(init).reshape(())[()]
    # padding cells are skipped (XLA on CPU): pad with the operation's identity
    ident = {"add": 0.0, "max": -math.inf, "min": math.inf}[kind]
    if _isf(eqn):
        ident = _fill(I, ident)
    else:
        info = np.iinfo(x.dtype)
        ident = {"add": 0, "max": info.min, "min": info.max}[kind]
    pt = _window_patches(x, *_window_params(eqn.params), ident)
    if kind == "max":
        return [np.maximum(np.max(pt, axis=0), v)]
    if kind == "min":
        return [np.minimum(np.min(pt, axis=0), v)]
    terms = np.concatenate([np.full((1, *pt.shape[1:]), v, dtype=pt.dtype), pt])  # init first
    if not _isf(eqn):
        return [np.sum(terms, axis=0)]
    return [_in_format_reduce(I, _TermSource(terms, None), I.ofmt(eqn))]


@_rule("top_k")
def _r_top_k(I: _Interp, eqn: Any, x: Any) -> Any:
    k = int(eqn.params["k"])
    x = np.asarray(x)
    axis = int(eqn.params.get("axis", -1)) % x.ndim
    xm = np.moveaxis(x, axis, -1)
    # descending, ties: the lower index first (a stable sort of the negated keys)
    order = np.argsort(-xm, axis=-1, kind="stable")[..., :k]
    vals = np.take_along_axis(xm, order, axis=-1)
    return [np.moveaxis(vals, -1, axis), np.moveaxis(order, -1, axis).astype(eqn.outvars[1].aval.dtype)]


@_rule("split")
def _r_split(I: _Interp, eqn: Any, x: Any) -> Any:
    sizes = [int(s) for s in eqn.params["sizes"]]
    cuts = np.cumsum(sizes)[:-1]
    return list(np.split(np.asarray(x), cuts, axis=int(eqn.params["axis"])))


def _scatter_targets(eqn: Any, operand: np.ndarray, idx: Any, upd_shape: tuple[int, ...]) -> np.ndarray:
    """For every update element (row-major), the flat operand position it goes to, or
    -1 when dropped: JAX's own transpose of scatter-add (a gather) applied to positions."""
    import jax

    p = eqn.params
    pos = jax.numpy.arange(1, operand.size + 1, dtype=jax.numpy.float32).reshape(operand.shape)

    def scat(u: Any) -> Any:
        return jax.lax.scatter_add(jax.numpy.zeros(operand.shape, jax.numpy.float32), jax.numpy.asarray(np.asarray(idx)),
                                   u, p["dimension_numbers"], mode=p.get("mode"))

    (t,) = jax.linear_transpose(scat, jax.ShapeDtypeStruct(upd_shape, jax.numpy.float32))(pos)
    return np.asarray(t, dtype=np.int64).reshape(-1) - 1


@_rule("scatter-add", "scatter_add", "scatter", "scatter-min", "scatter_min", "scatter-max", "scatter_max")
def _r_scatter(I: _Interp, eqn: Any, operand: Any, idx: Any, upd: Any) -> Any:
    name = eqn.primitive.name.replace("_", "-")
    add = name == "scatter-add"
    obj = I.mode == "mp"
    out = np.array(operand, dtype=object if obj else None, copy=True)
    upd = np.asarray(upd, dtype=object) if obj else np.asarray(upd)
    shape = out.shape
    flat = out.reshape(-1)
    targets = _scatter_targets(eqn, out, idx, upd.shape)
    fmt = I.ofmt(eqn) if _isf(eqn) else None
    comp = np.zeros(flat.shape) if (I.mode == "exact" and add and _isf(eqn)) else None
    for t, u in zip(targets, upd.reshape(-1)):  # one update after the other
        if t < 0:
            continue
        if name == "scatter-min":
            flat[t] = min(flat[t], u)
        elif name == "scatter-max":
            flat[t] = max(flat[t], u)
        elif not add:
            flat[t] = u
        elif not _isf(eqn):
            flat[t] = flat[t] + u
        elif comp is not None:  # exact: compensated float64
            s, e = _two_sum(flat[t], u)
            flat[t], comp[t] = s, comp[t] + e
        else:
            flat[t] = I.add(flat[t], u, fmt)
    if comp is not None:
        flat = flat + comp
    return flat.reshape(shape)


# -- control flow and calls ---------------------------------------------------


def _call_rule(I: _Interp, eqn: Any, *args: Any) -> Any:
    for p in _CALL_PARAMS:
        if p in eqn.params:
            return I.call(eqn.params[p], args)
    raise NotImplementedError(f"simulator: {eqn.primitive.name} without a jaxpr param")


for _n in _CALL_PRIMS:
    _RULES[_n] = _call_rule


@_rule("cond")
def _r_cond(I: _Interp, eqn: Any, index: Any, *ops: Any) -> Any:
    branches = eqn.params["branches"]
    i = int(np.asarray(index))
    i = min(max(i, 0), len(branches) - 1)
    return I.call(branches[i], ops)


@_rule("while")
def _r_while(I: _Interp, eqn: Any, *ops: Any) -> Any:
    cn, bn = int(eqn.params["cond_nconsts"]), int(eqn.params["body_nconsts"])
    cconsts, bconsts, carry = list(ops[:cn]), list(ops[cn : cn + bn]), list(ops[cn + bn :])
    cvars = eqn.params["body_jaxpr"].jaxpr.outvars
    while bool(np.asarray(I.call(eqn.params["cond_jaxpr"], cconsts + carry)[0])):
        outs = I.call(eqn.params["body_jaxpr"], bconsts + carry)
        carry = [I.finalize(o, v.aval, "while") for o, v in zip(outs, cvars)]
    return carry


@_rule("scan")
def _r_scan(I: _Interp, eqn: Any, *ops: Any) -> Any:
    nc, ncarry = int(eqn.params["num_consts"]), int(eqn.params["num_carry"])
    length = int(eqn.params["length"])
    body = eqn.params["jaxpr"]
    consts, carry, xs = list(ops[:nc]), list(ops[nc : nc + ncarry]), list(ops[nc + ncarry :])
    order = range(length - 1, -1, -1) if eqn.params.get("reverse", False) else range(length)
    ys: dict[int, list[Any]] = {}
    bvars = body.jaxpr.outvars
    for i in order:
        outs = I.call(body, consts + carry + [np.asarray(x)[i] for x in xs])
        outs = [I.finalize(o, v.aval, "scan") for o, v in zip(outs, bvars)]
        carry, ys[i] = outs[:ncarry], outs[ncarry:]
    stacked = []
    for j, v in enumerate(eqn.outvars[ncarry:]):
        if length == 0:
            stacked.append(I.zeros(v.aval.shape) if _is_float(v.aval.dtype) else
                           np.zeros(v.aval.shape, v.aval.dtype))
        else:
            stacked.append(np.stack([ys[i][j] for i in range(length)]))
    return carry + stacked


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def _positional(args: Any) -> tuple[Any, ...]:
    return tuple(args) if isinstance(args, (tuple, list)) else (args,)


def trace(f: Callable[..., Any], args: Any) -> tuple[Any, Any]:
    """``(closed_jaxpr, out_treedef)`` of ``f(*args)`` via ``jax.make_jaxpr``.

    ``args`` is the tuple (or list) of positional arguments, each a pytree of
    arrays/scalars; a non-sequence is taken as the single argument."""
    args = _positional(args)
    closed, shapes = jax.make_jaxpr(f, return_shape=True)(*args)
    return closed, jax.tree_util.tree_structure(shapes)


def unflatten(treedef: Any, flat: Sequence[Any]) -> Any:
    """Rebuild f's output pytree from a flat list of outputs."""
    return jax.tree_util.tree_unflatten(treedef, list(flat))


def simulate_jaxpr(
    closed: Any,
    flat_args: Sequence[Any],
    fmt: Any = None,
    accumulation: str = "recursive",
    order: str = "sequential",
    rng: np.random.Generator | None = None,
    flush: bool = False,
    *,
    check: bool = False,
    layer_fmt: Callable[[str], Any] | None = None,
) -> list[np.ndarray]:
    """:func:`simulate` for an already traced ClosedJaxpr and flat arguments."""
    I = _Interp("sim", fmt, accumulation, order, rng, flush, check, layer_fmt=layer_fmt)
    jaxpr = closed.jaxpr
    args = [I.convert_in(a, v.aval, is_input=True) for a, v in zip(flat_args, jaxpr.invars)]
    with np.errstate(all="ignore"):
        outs = I.call(closed, args)
    return [np.array(o) for o in outs]


def simulate(
    f: Callable[..., Any],
    args: Any,
    fmt: Any = None,
    accumulation: str = "recursive",
    order: str = "sequential",
    rng: np.random.Generator | None = None,
    flush: bool = False,
    *,
    as_tree: bool = False,
    check: bool = False,
    layer_fmt: Callable[[str], Any] | None = None,
) -> Any:
    """Evaluate ``f(*args)`` with every floating-point operation rounded.

    Args:
      f: a JAX-traceable function.
      args: tuple/list of positional arguments (pytrees of NumPy/JAX arrays or
        scalars); a non-sequence is the single argument.
      fmt: None -- "as written": every floating equation is rounded to the
        format of its own output dtype (inputs to their dtype, so float64
        NumPy inputs to a float32 trace are rounded like JAX does).  A
        SimFormat, a name in SIM_FORMATS or a dtype -- every floating input,
        constant, literal and result is rounded to that one format (and
        conversions between floating dtypes become the identity).
      accumulation: model of the summation in reduce_sum / dot_general:
        "recursive" (terms -- products rounded to the format for a dot -- added
        one by one, rounding after every addition, in the order ``order``);
        "pairwise" (recursive halving ``sum(a[:n//2]) + sum(a[n//2:])``,
        whatever ``order`` is); "blocked:B" (consecutive blocks of B terms in
        the order ``order`` are summed recursively, then the block sums are
        added left to right); "wide:FMT" (e.g. "wide:float32": products and all
        additions rounded to FMT, the final sum rounded once to the equation's
        format); "fma" (``acc = round(acc + x_k*w_k)`` with a single rounding
        per step; requires products exact in float64, i.e. operand precisions
        adding to <= 53 bits); "fma_blocked:B" (consecutive blocks of B terms, each
        accumulated with single-rounding FMA from its rounded first product, the block
        sums then added left to right with a rounding each).
      order: "sequential" (increasing contraction index; several reduced axes
        are flattened row-major), "reverse", "random" (an independent random
        permutation per output element drawn from ``rng`` with
        :func:`random_perms`), or "pairwise".
      rng: numpy Generator for order="random" (default: default_rng(0)).
      flush: flush subnormal results to zero (after rounding) in every format,
        as XLA on CPU does.
      as_tree: return f's output pytree instead of a flat list.
      check: assert after every equation that floating results are values of
        their format (self-test of the simulator).
      layer_fmt: per-layer formats: a callable from an equation's name stack
        (e.g. "MLP/Dense_0") to its format. Each equation rounds its floating
        operands into its format, then computes in it; inputs and constants are
        stored in ``fmt`` (required with layer_fmt).

    Returns:
      A flat list (``jax.tree_util.tree_leaves`` order) of NumPy arrays:
      float64 arrays holding values of the format for floating outputs, arrays
      of the output dtype for integer/boolean outputs.  See :func:`unflatten`.

    Other primitives are modelled as follows: cumsum/cumprod are sequential
    prefix operations rounded at every step; reduce_prod multiplies
    sequentially; integer_pow uses JAX's binary-powering multiplication
    sequence (and a rounded reciprocal for negative powers); transcendental
    functions are evaluated in float64 and rounded once.
    """
    closed, treedef = trace(f, args)
    flat = jax.tree_util.tree_leaves(_positional(args))
    outs = simulate_jaxpr(closed, flat, fmt, accumulation, order, rng, flush, check=check,
                          layer_fmt=layer_fmt)
    return unflatten(treedef, outs) if as_tree else outs


def exact_jaxpr(
    closed: Any,
    flat_args: Sequence[Any],
    dps: int | None = None,
    *,
    round_inputs: bool = False,
    return_mp: bool = False,
) -> list[np.ndarray]:
    """:func:`exact` for an already traced ClosedJaxpr and flat arguments."""
    mode = "exact" if dps is None else "mp"
    I = _Interp(mode, round_inputs=round_inputs)
    jaxpr = closed.jaxpr
    if dps is None:
        args = [I.convert_in(a, v.aval, is_input=True) for a, v in zip(flat_args, jaxpr.invars)]
        with np.errstate(all="ignore"):
            return [np.array(o) for o in I.call(closed, args)]
    with mpmath.workdps(int(dps)):
        args = [I.convert_in(a, v.aval, is_input=True) for a, v in zip(flat_args, jaxpr.invars)]
        outs = I.call(closed, args)
    res = []
    for o, v in zip(outs, jaxpr.outvars):
        if _is_float(v.aval.dtype):
            res.append(np.asarray(o, dtype=object) if return_mp else _from_mp(o))
        else:
            res.append(np.array(o))
    return res


def exact(
    f: Callable[..., Any],
    args: Any,
    dps: int | None = None,
    *,
    round_inputs: bool = False,
    as_tree: bool = False,
    return_mp: bool = False,
) -> Any:
    """The exact real result of ``f(*args)`` (the program's own roundings
    removed).

    With ``dps=None`` the jaxpr is evaluated in float64 without rounding to
    any narrower format: conversions between floating dtypes (and
    reduce_precision) are the identity, reduce_sum/dot_general/cumsum use
    compensated float64 summation (TwoSum/TwoProduct, accurate to about
    float64 roundoff of the result plus n*2**-106 of the sum of magnitudes),
    elementwise functions are NumPy float64 ones.  With ``dps=50`` (say) every
    floating value is an mpmath number at ``dps`` decimal digits (slow:
    elementwise Python; for small, cancellation-heavy problems; signed zeros
    are not modelled and min/max do not propagate NaN in that mode).
    Conversions from floats to integers still truncate toward zero.

    Floating inputs are taken as given (float64 values, not rounded to the
    dtype JAX traced them with) unless ``round_inputs=True``; literals and
    constants of the program are taken with their stored values.

    Returns a flat list of float64 arrays (object arrays of mpmath numbers if
    ``return_mp``), or f's output pytree with ``as_tree``.
    """
    closed, treedef = trace(f, args)
    flat = jax.tree_util.tree_leaves(_positional(args))
    outs = exact_jaxpr(closed, flat, dps, round_inputs=round_inputs, return_mp=return_mp)
    return unflatten(treedef, outs) if as_tree else outs


def sample_box(
    lo: Any,
    hi: Any,
    n: int,
    rng: np.random.Generator,
    fmt: Any = None,
) -> np.ndarray:
    """``n`` points of the box ``[lo, hi]`` (elementwise, lo/hi broadcast
    together), shape ``(n, *shape)``, float64.

    The first three points are the corners ``lo`` and ``hi`` and the centre
    (all-low, all-high, midpoint); the rest are uniform.  Points are exact
    reals (float64).  If ``fmt`` is given they are additionally rounded to
    the nearest value of that format and clipped back into the box (so they
    are representable whenever lo and hi are)."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    lo, hi = np.broadcast_arrays(lo, hi)
    if np.any(lo > hi):
        raise ValueError("sample_box: lo > hi")
    fixed = [lo, hi, lo + (hi - lo) / 2]
    pts = fixed[: min(n, 3)]
    if n > 3:
        u = rng.random((n - 3,) + lo.shape)
        pts.extend(list(np.clip(lo + u * (hi - lo), lo, hi)))
    out = np.stack(pts) if pts else np.zeros((0,) + lo.shape)
    if fmt is not None:
        out = np.clip(round_to(out, fmt), lo, hi)
    return out
