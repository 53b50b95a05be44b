"""Bit-exact rounding to a :class:`~jaxerr.Format` and correctly rounded basic operations.

Everything here is JAX code (jit-able, vmap-able) on a *carrier* dtype, float32 or
float64, whose values are the format's values:

* :func:`round_exact` rounds carrier values to the nearest value of the format, ties to
  even, with the format's gradual underflow (or flush to zero after rounding) and
  overflow to infinity or saturation at ``max_finite``. It works on the IEEE bit pattern
  with integer operations, so there is no double rounding: the result is the correct
  rounding of the carrier value itself (a float64 input is not first rounded to float32).
* :func:`add`, :func:`mul`, :func:`div`, :func:`sqrt`, :func:`fma` return the correctly
  rounded result of the exact operation on format values. They evaluate in the carrier,
  recover the carrier's rounding error exactly (TwoSum, Dekker's TwoProduct, division and
  square-root remainders) and turn the carrier result into its *round-to-odd* value
  before the final rounding; round-to-odd with at least two more bits than the format
  makes the second rounding exact (Boldo & Melquiond 2008). This needs the format's
  precision ``p <= P - 2`` (``P`` = 24 for float32, 53 for float64); a format with the
  carrier's own precision and range uses the carrier's native operations.

Limits, stated: the error-free transformations need the carrier to neither overflow nor
underflow in their intermediate steps. For formats whose whole range lies well inside
the carrier's (float16, the float8 formats with a float32 carrier) this always holds.
For bfloat16 in a float32 carrier, results near the bottom of the range (below
``2**-126``, where bfloat16 flushes anyway) follow the carrier's flush-to-zero.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from ._formats import FORMATS, Format

__all__ = ["round_exact", "carrier_for", "add", "sub", "mul", "div", "sqrt", "fma", "Overflow"]

Overflow = str  # "inf" | "saturate"


@dataclasses.dataclass(frozen=True)
class _Carrier:
    dtype: Any
    uint: Any
    P: int  # significand bits incl. the implicit one
    bias: int
    width: int


_C32 = _Carrier(np.dtype(np.float32), np.dtype(np.uint32), 24, 127, 32)
_C64 = _Carrier(np.dtype(np.float64), np.dtype(np.uint64), 53, 1023, 64)


def _carrier_of(dtype: Any) -> _Carrier:
    d = np.dtype(dtype)
    if d == np.float32:
        return _C32
    if d == np.float64:
        return _C64
    raise TypeError(f"jaxerr emulation carries values in float32 or float64, got {d}")


def _fits(fmt: Format, c: _Carrier) -> bool:
    """Every value of ``fmt`` is a normal-or-subnormal value of the carrier."""
    cmax = float(np.finfo(c.dtype).max)
    cmin_sub = 2.0 ** (1 - c.bias - (c.P - 1))
    return fmt.max_finite <= cmax and 2.0 ** (fmt.emin - fmt.precision + 1) >= cmin_sub


def is_native(fmt: Format, dtype: Any) -> bool:
    """``fmt`` is the carrier's own format (same precision, range): native operations are exact."""
    c = _carrier_of(dtype)
    return fmt.precision == c.P and fmt.emin == 1 - c.bias and fmt.max_finite == float(np.finfo(c.dtype).max)


def carrier_for(fmt: Format, x64: bool) -> np.dtype:
    """The carrier dtype in which ``fmt`` is emulated exactly: float32 when the format has
    at most 22 significand bits (or is float32 itself) and fits float32's range, else
    float64 (which needs ``jax_enable_x64``)."""
    if (fmt.precision <= _C32.P - 2 and _fits(fmt, _C32)) or is_native(fmt, np.float32):
        return _C32.dtype
    if (fmt.precision <= _C64.P - 2 and _fits(fmt, _C64)) or is_native(fmt, np.float64):
        if not x64:
            raise ValueError(
                f"emulating {fmt.name} needs a float64 carrier: enable it with "
                "jax.config.update('jax_enable_x64', True)"
            )
        return _C64.dtype
    raise ValueError(f"jaxerr cannot emulate {fmt.name} exactly (precision {fmt.precision} bits)")


def _u(c: _Carrier, v: int) -> Any:
    return np.asarray(v, c.uint)


def round_exact(x: Any, fmt: Format, overflow: Overflow = "inf") -> Any:
    """Round ``x`` (float32 or float64) to the nearest value of ``fmt``, ties to even.

    Rounding is to ``fmt.precision`` bits with gradual underflow below ``2**fmt.emin``
    (quantum ``2**(emin - p + 1)``); if ``fmt.subnormals`` is False, rounding is to
    ``p`` bits with an unbounded exponent range and results whose rounded magnitude is
    below ``2**emin`` are then flushed to a zero of the same sign.
    A finite ``x`` whose rounding exceeds ``max_finite`` (with an unbounded exponent
    range) becomes ``+-inf`` (``overflow="inf"``) or ``+-max_finite``
    (``overflow="saturate"``). Infinities stay infinite and NaN stays NaN. The result
    has ``x``'s dtype and is exact: no intermediate rounding to another format.
    """
    x = jnp.asarray(x)
    c = _carrier_of(x.dtype)
    p = fmt.precision
    if p > c.P:
        raise ValueError(f"cannot round {x.dtype} values to the wider format {fmt.name}")
    U = c.uint.type
    b = lax.bitcast_convert_type(x, c.uint)
    sign_bit = _u(c, 1 << (c.width - 1))
    sign = b & sign_bit
    a = b ^ sign
    mbits = c.P - 1
    E = (a >> _u(c, mbits)).astype(np.int32)  # biased exponent field
    mant = a & _u(c, (1 << mbits) - 1)
    normal = E > 0
    Eeff = jnp.maximum(E, 1)
    e = Eeff - c.bias  # unbiased exponent of the leading bit position of a normal
    if fmt.subnormals:
        sh = (c.P - p) + jnp.maximum(fmt.emin - e, 0)
    else:  # p bits at any exponent, then flush (a result below 2**emin is zero)
        sh = jnp.full_like(e, c.P - p)
    sh = jnp.clip(sh, 0, c.P + 1)
    sig = mant | jnp.where(normal, _u(c, 1 << mbits), _u(c, 0))
    shc = jnp.maximum(sh, 1).astype(c.uint)
    one = U(1)
    half = lax.shift_left(jnp.full_like(sig, one), shc - one)
    mask = lax.shift_left(jnp.full_like(sig, one), shc) - one
    rem = sig & mask
    base = sig - rem
    lsb = lax.shift_right_logical(sig, shc) & one
    up = (rem > half) | ((rem == half) & (lsb == one))
    rsig = base + jnp.where(up, lax.shift_left(jnp.full_like(sig, one), shc), U(0))
    rsig = jnp.where(sh == 0, sig, rsig)
    ra = jnp.where(rsig == U(0), U(0), lax.shift_left((Eeff - 1).astype(c.uint), _u(c, mbits)) + rsig)
    special = E == (1 << (c.width - c.P)) - 1  # inf / nan
    ra = jnp.where(special, a, ra)
    r = lax.bitcast_convert_type(ra | sign, c.dtype)
    ar = jnp.abs(r)
    if not fmt.subnormals:
        zero = lax.bitcast_convert_type(sign, c.dtype)
        r = jnp.where(ar < fmt.smallest_normal, zero, r)
        # carrier subnormals (below every normal of the format): p-bit rounding reaches
        # 2**emin only from 2**emin (1 - 2**-(p+1)) up; compared as integers (no DAZ)
        thr = np.asarray(fmt.smallest_normal * (1 - 2.0 ** -(p + 1)), c.dtype).view(c.uint)
        tiny = jnp.where(sign == U(0), 1.0, -1.0).astype(c.dtype) * fmt.smallest_normal
        r = jnp.where(E == 0, jnp.where(a >= thr, tiny, zero), r)
    if fmt.max_finite < float(np.finfo(c.dtype).max) or overflow == "saturate":
        big = jnp.asarray(fmt.max_finite if overflow == "saturate" else np.inf, c.dtype)
        r = jnp.where((ar > fmt.max_finite) & ~special, jnp.where(sign == U(0), big, -big), r)
    return r


# ---------------------------------------------------------------------------
# Correctly rounded operations on format values held in the carrier
# ---------------------------------------------------------------------------


def _to_odd(s: Any, err: Any) -> Any:
    """Round-to-odd value of ``s + err`` where ``s = RN(s + err)`` in the carrier: ``s``
    itself when exact, else the neighbour of ``s`` on ``err``'s side when ``s`` is even.
    Only the sign of ``err`` matters."""
    c = _carrier_of(s.dtype)
    U = c.uint.type
    b = lax.bitcast_convert_type(s, c.uint)
    sign_bit = _u(c, 1 << (c.width - 1))
    same = ((b & sign_bit) == U(0)) == (err > 0)
    fix = (err != 0) & ((b & U(1)) == U(0)) & jnp.isfinite(s) & (s != 0)
    nb = jnp.where(fix, jnp.where(same, b + U(1), b - U(1)), b)
    return lax.bitcast_convert_type(nb, c.dtype)


def _two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _split(a: Any) -> tuple[Any, Any]:
    c = _carrier_of(a.dtype)
    k = (c.P + 1) // 2
    t = a * jnp.asarray(2.0**k + 1, a.dtype)
    h = t - (t - a)
    return h, a - h


def _two_prod(a: Any, b: Any) -> tuple[Any, Any]:
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def _exact_products(fmt: Format, dtype: Any) -> bool:
    return 2 * fmt.precision <= _carrier_of(dtype).P


def add(a: Any, b: Any, fmt: Format, overflow: Overflow = "inf") -> Any:
    """Correctly rounded ``a + b`` (``a``, ``b`` values of ``fmt`` in the same carrier)."""
    if is_native(fmt, a.dtype):
        return round_exact(a + b, fmt, overflow) if overflow == "saturate" else a + b
    s, e = _two_sum(a, b)
    return round_exact(_to_odd(s, e), fmt, overflow)


def sub(a: Any, b: Any, fmt: Format, overflow: Overflow = "inf") -> Any:
    return add(a, -b, fmt, overflow)


def mul(a: Any, b: Any, fmt: Format, overflow: Overflow = "inf") -> Any:
    """Correctly rounded ``a * b``."""
    if is_native(fmt, a.dtype):
        return round_exact(a * b, fmt, overflow) if overflow == "saturate" else a * b
    if _exact_products(fmt, a.dtype):
        return round_exact(a * b, fmt, overflow)
    p, e = _two_prod(a, b)
    return round_exact(_to_odd(p, e), fmt, overflow)


def fma(a: Any, b: Any, c: Any, fmt: Format, overflow: Overflow = "inf") -> Any:
    """Correctly rounded ``a * b + c`` with a single rounding (needs ``2p <= P`` so that the
    product is exact in the carrier)."""
    if not _exact_products(fmt, a.dtype):
        raise ValueError(f"fused multiply-add emulation of {fmt.name} needs a carrier with >= {2 * fmt.precision} bits")
    s, e = _two_sum(c, a * b)
    return round_exact(_to_odd(s, e), fmt, overflow)


def div(a: Any, b: Any, fmt: Format, overflow: Overflow = "inf") -> Any:
    """Correctly rounded ``a / b``."""
    if is_native(fmt, a.dtype):
        return round_exact(a / b, fmt, overflow) if overflow == "saturate" else a / b
    q = a / b
    ph, pl = _two_prod(q, b)
    rem = (a - ph) - pl  # a - q*b: the exact quotient is q + rem / b
    d = jnp.sign(rem) * jnp.sign(b)
    d = jnp.where(jnp.isfinite(d), d, jnp.zeros_like(d))
    return round_exact(_to_odd(q, d), fmt, overflow)


def sqrt(a: Any, fmt: Format, overflow: Overflow = "inf") -> Any:
    """Correctly rounded square root."""
    if is_native(fmt, a.dtype):
        return jnp.sqrt(a)
    q = jnp.sqrt(a)
    ph, pl = _two_prod(q, q)
    rem = (a - ph) - pl
    rem = jnp.where(jnp.isfinite(rem), rem, jnp.zeros_like(rem))
    return round_exact(_to_odd(q, rem), fmt, overflow)


def float32_format() -> Format:
    return FORMATS["float32"]
