#!/usr/bin/env python3
"""Measure the accuracy of XLA's transcendental primitives on this backend.

For every primitive ``f`` (``jax.lax.exp``, ``log``, ..., ``pow``) this script
evaluates ``jax.jit(f)`` on large input sweeps and compares the results with
exact values, in the terms of jaxerr's error model::

    |computed - f(x)| <= k_rel*u_C*|f(x)| + k_abs*u_C + eta_F                (F == C)
    |computed - f(x)| <= u_F*|f(x)|*(1 + k_rel*u_C) + k_rel*u_C*|f(x)|
                         + k_abs*u_C + eta_F                                 (F narrower)

``C`` is the compute format (float32 for float32/bfloat16/float16 inputs,
float64 with ``--x64``), ``u`` a unit roundoff (2**-p) and ``eta_F`` the
underflow term (smallest normal of F where the backend flushes subnormal
results to zero, half the smallest subnormal where it keeps them).

Reported per primitive and dtype:

* ``k_rel``   smallest k_rel that works with k_abs = 0 (units of u_C);
* ``ulp``     max |err| in ulps of the output format, over the points with
              |f| >= smallest normal and |err| > eta_F;
* ``e/uF``    max |err| / (u_F |f|) (narrow formats; ~1 means correctly rounded
              from an accurate float32 value);
* ``k_abs@4`` smallest k_abs that makes k_rel = 4 work (only where k_rel > 4);
* non-finite results where the exact value is finite (and finite results where
  it overflows), and flush-to-zero of outputs that should be subnormal.

References are exact to far below the tolerances that matter:

* float32 run: x86 ``long double`` (64-bit significand, |rel err| ~ 2**-63, i.e.
  ~1e-11 u_32) through numpy's ``expl``/``logl``/... for the elementary functions,
  re-checked with mpmath (``mp.dps = 40``) on a random subsample, on the worst
  points and on every point near a non-trivial zero of ``f`` (log near 1, sin
  near k*pi, ...), where the mpmath value then replaces the long double one;
  mpmath (dps 40) on *every* point for ``pow`` (x**y), ``erf`` and ``erf_inv``
  (for erf_inv: float64 Newton iterations on erf/erfc, then one Newton step in
  mpmath, cross-checked against ``mpmath.erfinv`` on a subsample);
* float64 run (``--x64``, every primitive, 2**18 points each): long double (its
  2**-64 relative error is ~5e-4 u_64) re-checked by mpmath as above, and
  mpmath on every point for ``erf`` and ``erf_inv``.

Every float16 and bfloat16 value is also run through each primitive in that
dtype, and compared both with the exact value and with round_F(float32 result)
(column ``!=up``: number of results that differ from upcast-evaluate-round).
Inputs that are subnormal in the compute format (bfloat16 has the same exponent
range as float32) are left out of the table and reported in a separate section:
XLA:CPU treats them as zero (denormals-are-zero).

Usage::

    python3 scripts/measure_transcendentals.py            # float32 / bf16 / f16
    python3 scripts/measure_transcendentals.py --x64      # float64
    python3 scripts/measure_transcendentals.py --quick    # smaller sweeps
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import mpmath
import numpy as np

LD = np.longdouble
HAVE_EXTENDED_LD = np.finfo(LD).nmant >= 63

# ---------------------------------------------------------------------------
# mpmath references (run in worker processes)
# ---------------------------------------------------------------------------


def _mp_pow(x, y):
    mp = mpmath.mp
    if x == 0:
        if y > 0:
            return mp.mpf(0)
        if y == 0:
            return mp.mpf(1)
        return mp.inf
    if x < 0:
        if y != int(y):
            return mp.nan
        v = (-x) ** y
        return -v if int(y) % 2 else v
    return x**y


def _mp_rsqrt(x):
    return mpmath.mp.inf if x == 0 else 1 / mpmath.sqrt(x)


def _mp_cbrt(x):
    return -mpmath.cbrt(-x) if x < 0 else mpmath.cbrt(x)


def _mp_logistic(x):
    return 1 / (1 + mpmath.exp(-x))


def _mp_erfinv_newton(x, y0):
    """One Newton step from an accurate float64 start (|rel err| < 1e-14)."""
    mp = mpmath.mp
    if abs(x) >= 1:
        return mp.inf if x == 1 else (-mp.inf if x == -1 else mp.nan)
    s = -1 if x < 0 else 1
    ax, y = abs(x), abs(mp.mpf(y0))
    d = 2 / mp.sqrt(mp.pi) * mp.exp(-y * y)
    if ax > 0.5:  # solve erfc(y) = 1 - ax: accurate residual close to 1
        y = y + (mpmath.erfc(y) - (1 - ax)) / d
    else:
        y = y - (mpmath.erf(y) - ax) / d
    return s * y


_MP_FUNCS: dict[str, Callable] = {
    "exp": lambda x: mpmath.exp(x),
    "exp2": lambda x: mpmath.mpf(2) ** x,
    "log": lambda x: mpmath.log(x) if x > 0 else (-mpmath.mp.inf if x == 0 else mpmath.mp.nan),
    "log1p": lambda x: mpmath.log1p(x) if x > -1 else (-mpmath.mp.inf if x == -1 else mpmath.mp.nan),
    "expm1": lambda x: mpmath.expm1(x),
    "tanh": lambda x: mpmath.tanh(x),
    "logistic": _mp_logistic,
    "erf": lambda x: mpmath.erf(x),
    "sqrt": lambda x: mpmath.sqrt(x) if x >= 0 else mpmath.mp.nan,
    "rsqrt": lambda x: _mp_rsqrt(x) if x >= 0 else mpmath.mp.nan,
    "cbrt": _mp_cbrt,
    "sin": lambda x: mpmath.sin(x),
    "cos": lambda x: mpmath.cos(x),
    "erf_inv": lambda x: mpmath.erfinv(x) if abs(x) < 1 else (mpmath.mp.inf * x if abs(x) == 1 else mpmath.mp.nan),
    "pow": _mp_pow,
    "pow_0.5": lambda x: _mp_pow(x, mpmath.mpf(0.5)),
    "pow_3": lambda x: _mp_pow(x, mpmath.mpf(3)),
    "pow_-1.5": lambda x: _mp_pow(x, mpmath.mpf(-1.5)),
    "erf_inv_newton": _mp_erfinv_newton,
}


def _mp_chunk(task):
    """Evaluate one mpmath function on a chunk.

    Returns (hi, lo, e) with value = (hi + lo) * 2**e, so that values outside the
    float64 range convert to long double without loss."""
    name, cols = task
    mpmath.mp.dps = 40
    fn = _MP_FUNCS[name]
    n = len(cols[0])
    hi = np.empty(n)
    lo = np.zeros(n)
    ex = np.zeros(n, dtype=np.int64)
    for i in range(n):
        args = [mpmath.mpf(float(c[i])) for c in cols]
        try:
            v = fn(*args)
        except (ZeroDivisionError, ValueError, OverflowError):
            v = mpmath.mp.nan
        if isinstance(v, mpmath.mpc):
            v = mpmath.mp.nan
        if mpmath.isfinite(v) and v != 0:
            m, e = mpmath.frexp(v)
            h = float(m)
            if e > 20000:  # beyond long double: overflow / underflow
                hi[i] = math.copysign(math.inf, h)
            elif e < -20000:
                hi[i] = math.copysign(0.0, h)
            else:
                hi[i], lo[i], ex[i] = h, float(m - h), e
        else:
            hi[i] = float(v)
    return hi, lo, ex


class MPPool:
    """A spawn-based process pool for mpmath references (fork after JAX is unsafe)."""

    def __init__(self, nproc: int):
        self.pool = multiprocessing.get_context("spawn").Pool(nproc) if nproc > 1 else None
        self.nproc = nproc

    def __call__(self, name: str, *cols: np.ndarray) -> np.ndarray:
        cols = tuple(np.asarray(c, dtype=np.float64) for c in cols)
        n = len(cols[0])
        if n == 0:
            return np.zeros(0, dtype=LD)
        step = max(256, min(8192, n // (4 * self.nproc) + 1))
        tasks = [(name, tuple(c[i : i + step] for c in cols)) for i in range(0, n, step)]
        res = self.pool.map(_mp_chunk, tasks) if self.pool else [_mp_chunk(t) for t in tasks]
        hi = np.concatenate([r[0] for r in res])
        lo = np.concatenate([r[1] for r in res])
        ex = np.concatenate([r[2] for r in res])
        with np.errstate(all="ignore"):
            return np.ldexp(hi.astype(LD) + lo.astype(LD), ex)

    def close(self):
        if self.pool:
            self.pool.close()
            self.pool.join()


# ---------------------------------------------------------------------------
# long double / float64 references (vectorised)
# ---------------------------------------------------------------------------


def _erfinv_f64(x: np.ndarray, start: np.ndarray) -> np.ndarray:
    """erfinv in float64 by Newton iterations on erf / erfc (a few ulps accurate)."""
    erf = np.frompyfunc(math.erf, 1, 1)
    erfc = np.frompyfunc(math.erfc, 1, 1)
    x = np.asarray(x, np.float64)
    ax = np.abs(x)
    y = np.abs(np.where(np.isfinite(start), start, 0.0).astype(np.float64))
    big = ax > 0.5
    c = 2 / math.sqrt(math.pi)
    with np.errstate(all="ignore"):
        for _ in range(5):
            d = c * np.exp(-y * y)
            r_small = erf(y).astype(np.float64) - ax
            r_big = (1 - ax) - erfc(y).astype(np.float64)
            y = y - np.where(big, r_big, r_small) / d
            y = np.where(np.isfinite(y), y, 0.0)
    y = np.where(ax >= 1, np.inf, y)
    return np.copysign(y, x)


def _fast_ref(name: str, args: list[np.ndarray]) -> np.ndarray | None:
    """Reference in long double, or None where only mpmath will do."""
    xs = [np.asarray(a, np.float64).astype(LD) for a in args]
    x = xs[0]
    with np.errstate(all="ignore"):
        if name == "exp":
            return np.exp(x)
        if name == "exp2":
            return np.exp2(x)
        if name == "log":
            return np.log(x)
        if name == "log1p":
            return np.log1p(x)
        if name == "expm1":
            return np.expm1(x)
        if name == "tanh":
            return np.tanh(x)
        if name == "logistic":
            return 1 / (1 + np.exp(-x))
        if name == "sqrt":
            return np.sqrt(x)
        if name == "rsqrt":
            return 1 / np.sqrt(x)
        if name == "cbrt":
            return np.cbrt(x)
        if name == "sin":
            return np.sin(x)
        if name == "cos":
            return np.cos(x)
        if name == "pow":
            return np.power(x, xs[1])
        if name == "pow_0.5":
            return np.sqrt(x)
        if name == "pow_3":
            return x * x * x
        if name == "pow_-1.5":
            return 1 / (x * np.sqrt(x))
    return None


# ---------------------------------------------------------------------------
# input sweeps
# ---------------------------------------------------------------------------

F32_TINY = float(np.finfo(np.float32).tiny)
F32_MAX = float(np.finfo(np.float32).max)


def lu(rng, lo, hi, n):
    """log-uniform magnitudes in [lo, hi]."""
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def slu(rng, lo, hi, n):
    return lu(rng, lo, hi, n) * rng.choice([-1.0, 1.0], n)


def uni(rng, lo, hi, n):
    return rng.uniform(lo, hi, n)


def near(rng, c, lo, hi, n):
    return c + slu(rng, lo, hi, n)


def mix(rng, n, parts, specials=()):
    """Concatenate generators in the given fractions, total exactly n."""
    specials = np.asarray(specials, dtype=np.float64)
    n_rest = n - len(specials)
    w = np.array([p[0] for p in parts], dtype=float)
    counts = np.floor(w / w.sum() * n_rest).astype(int)
    counts[0] += n_rest - counts.sum()
    chunks = [specials] + [gen(int(k)) for (_, gen), k in zip(parts, counts, strict=True)]
    return np.concatenate(chunks)


def near_multiples(rng, n, period, offset, kmax, dt):
    """Neighbours (0..3 ulps away) in dt of offset + k*period, k log-uniform in [1, kmax]."""
    k = np.floor(lu(rng, 1, kmax, n))
    mpmath.mp.dps = 40
    P, O = mpmath.mpf(period), mpmath.mpf(offset)
    base = np.array([float(O + int(kk) * P) for kk in k]).astype(dt)
    steps = rng.integers(-3, 4, n)
    for j in range(3):
        base = np.where(steps > j, np.nextafter(base, dt(np.inf)), base)
        base = np.where(steps < -j, np.nextafter(base, dt(-np.inf)), base)
    return base.astype(np.float64)


def sweep(name: str, n: int, rng, dt, pi_zeros=None) -> list[np.ndarray]:
    """Input arrays for one function, as float64 arrays of values exact in dt."""
    big = 3.4e38 if dt == np.float32 else 1.7e308
    tiny = F32_TINY if dt == np.float32 else 2.3e-308
    x64 = dt == np.float64
    expmax = 88.72 if not x64 else 709.78
    expmin = -104.0 if not x64 else -745.2
    ftzmin = -87.34 if not x64 else -708.4
    R = rng
    if name in ("exp", "expm1"):
        parts = [
            (0.45, lambda k: uni(R, expmin, expmax + 0.3, k)),
            (0.25, lambda k: slu(R, 1e-30 if not x64 else 1e-300, -expmin, k)),
            (0.05, lambda k: near(R, expmax, 1e-7, 0.1, k)),
            (0.05, lambda k: near(R, ftzmin, 1e-7, 0.5, k)),
            (0.05, lambda k: near(R, expmin + 0.7, 1e-7, 1.0, k)),
            (0.15, lambda k: uni(R, -20, 20, k)),
        ]
        specials = [0.0, 1.0, -1.0, expmax, -87.33654, -87.3365, -103.97, 88.72283, 88.7229]
        if name == "expm1":
            parts[1] = (0.25, lambda k: slu(R, 1e-37 if not x64 else 1e-307, 1e-3, k))
            parts.append((0.1, lambda k: slu(R, 1e-3, 30, k)))
        x = mix(R, n, parts, specials)
    elif name == "exp2":
        lo, hi = (-150.0, 128.5) if not x64 else (-1075.0, 1024.5)
        parts = [
            (0.5, lambda k: uni(R, lo, hi, k)),
            (0.3, lambda k: slu(R, 1e-30, -lo, k)),
            (0.1, lambda k: near(R, hi - 0.5, 1e-7, 0.5, k)),
            (0.1, lambda k: near(R, -126.0 if not x64 else -1022.0, 1e-7, 1.0, k)),
        ]
        x = mix(R, n, parts, np.arange(-150, 129, dtype=float))
    elif name == "log":
        parts = [
            (0.6, lambda k: lu(R, tiny, big, k)),
            (0.25, lambda k: near(R, 1.0, 1e-8 if not x64 else 1e-17, 1e-3, k)),
            (0.15, lambda k: lu(R, 0.5, 2.0, k)),
        ]
        eps = float(np.finfo(dt).eps)
        specials = [1.0, 1 + eps, 1 - eps / 2, 2.0, 0.5, math.e, tiny, big]
        x = mix(R, n, parts, specials)
    elif name == "log1p":
        parts = [
            (0.3, lambda k: lu(R, 1e-37 if not x64 else 1e-307, big, k)),
            (0.2, lambda k: slu(R, 1e-30, 1e-3, k)),
            (0.2, lambda k: -lu(R, 1e-37 if not x64 else 1e-307, 0.999, k)),
            (0.15, lambda k: -1 + lu(R, 6e-8 if not x64 else 1.2e-16, 1e-2, k)),
            (0.15, lambda k: uni(R, -1, 1, k)),
        ]
        x = mix(R, n, parts, [0.0, -0.5, 1.0, -1 + 2**-24, big])
    elif name == "tanh":
        parts = [
            (0.35, lambda k: uni(R, -20, 20, k)),
            (0.25, lambda k: slu(R, 1e-30, 1e-3, k)),
            (0.3, lambda k: slu(R, 1e-3, 20, k)),
            (0.05, lambda k: slu(R, 20, big, k)),
            (0.05, lambda k: slu(R, 1e-37, 1e-30, k)),
        ]
        x = mix(R, n, parts, [0.0, 0.0004, -0.0004, 0.625, 9.0, -9.0, 7.90531110763549805, 0.55])
    elif name == "logistic":
        L = 100.0 if not x64 else 750.0
        parts = [
            (0.5, lambda k: uni(R, -L, L, k)),
            (0.4, lambda k: slu(R, 1e-30, L, k)),
            (0.1, lambda k: uni(R, -20, 20, k)),
        ]
        x = mix(R, n, parts, [0.0, 88.7, -88.7, -87.33, 17.0, -17.0])
    elif name == "erf":
        parts = [
            (0.4, lambda k: uni(R, -10, 10, k)),
            (0.2, lambda k: slu(R, 1e-37 if not x64 else 1e-300, 1e-3, k)),
            (0.3, lambda k: slu(R, 1e-3, 10, k)),
            (0.1, lambda k: uni(R, -4.5, 4.5, k)),
        ]
        x = mix(R, n, parts, [0.0, 1.0, -1.0, 3.832506856900711, 4.0, 0.5])
    elif name in ("sqrt", "rsqrt", "pow_0.5", "pow_-1.5"):
        parts = [(0.8, lambda k: lu(R, tiny, big, k)), (0.2, lambda k: lu(R, 0.25, 4, k))]
        x = mix(R, n, parts, [1.0, 2.0, 4.0, 0.25, tiny, big, 1.5])
    elif name == "cbrt":
        parts = [(0.8, lambda k: slu(R, tiny, big, k)), (0.2, lambda k: slu(R, 0.1, 10, k))]
        x = mix(R, n, parts, [0.0, 1.0, -1.0, 8.0, -27.0, 2.0, tiny, big])
    elif name == "pow_3":
        parts = [
            (0.8, lambda k: slu(R, 1e-13, 6.9e12, k)),
            (0.2, lambda k: slu(R, tiny, big, k)),
        ]
        x = mix(R, n, parts, [0.0, 1.0, -1.0, 2.0, 3.0])
    elif name in ("sin", "cos"):
        parts = [
            (0.3, lambda k: slu(R, 1e-30, big, k)),
            (0.25, lambda k: uni(R, -10 * math.pi, 10 * math.pi, k)),
            (0.15, lambda k: slu(R, 1e-3, 1e5, k)),
            (0.1, lambda k: uni(R, -1e4, 1e4, k)),
            (0.1, lambda k: pi_zeros[0][: k]),
            (0.1, lambda k: pi_zeros[1][: k]),
        ]
        x = mix(R, n, parts, [0.0, 1.0, math.pi, math.pi / 2, 1e4, 1e8, big])
    elif name == "erf_inv":
        one_m = 6e-8 if not x64 else 1.2e-16
        parts = [
            (0.4, lambda k: uni(R, -1, 1, k)),
            (0.15, lambda k: slu(R, 1e-37, 1e-3, k)),
            (0.2, lambda k: slu(R, 1e-3, 1, k)),
            (0.25, lambda k: (1 - lu(R, one_m, 1e-2, k)) * R.choice([-1.0, 1.0], k)),
        ]
        x = mix(R, n, parts, [0.0, 0.5, -0.5, 0.9, 0.99999994, -0.99999994])
    elif name == "pow":
        return _pow_sweep(n, R, dt)
    else:
        raise ValueError(name)
    with np.errstate(over="ignore"):
        x = x.astype(dt).astype(np.float64)
    # domain clean-up (values outside the real domain are dropped by the caller)
    return [x]


def _pow_sweep(n, R, dt):
    x64 = dt == np.float64
    tiny = F32_TINY if not x64 else 2.3e-308
    big = 3.4e38 if not x64 else 1.7e308
    emax = 128.0 if not x64 else 1024.0
    counts = (np.array([0.4, 0.15, 0.15, 0.1, 0.1, 0.1]) * n).astype(int)
    counts[0] += n - counts.sum()
    xs, ys = [], []
    # A: generic, results spread over the whole range (a few overflow/underflow)
    k = counts[0]
    x = lu(R, tiny, big, k)
    t = np.abs(np.log2(x))
    y = R.uniform(-1.05, 1.05, k) * np.minimum(emax / np.maximum(t, 1e-30), 1e4)
    xs.append(x), ys.append(y)
    # B: moderate
    k = counts[1]
    xs.append(lu(R, 0.1, 10, k)), ys.append(uni(R, -30, 30, k))
    # C: x near 1, large y
    k = counts[2]
    x = 1 + slu(R, 6e-8 if not x64 else 1.2e-16, 1e-3, k)
    y = slu(R, 1, 1e7 if not x64 else 1e15, k)
    y = np.clip(y, -80 / np.abs(np.log(x)), 80 / np.abs(np.log(x)))
    xs.append(x), ys.append(y)
    # D: negative base, integer exponent
    k = counts[3]
    xs.append(-lu(R, 1e-3, 1e3, k)), ys.append(R.integers(-12, 13, k).astype(float))
    # E: tiny exponent
    k = counts[4]
    xs.append(lu(R, 1e-37, big, k)), ys.append(slu(R, 1e-30, 1e-3, k))
    # F: common exponents over the whole range
    k = counts[5]
    xs.append(lu(R, tiny, big, k))
    ys.append(R.choice([0.5, -0.5, 1.5, -1.5, 2.0, -1.0, 3.0, -2.0, 1 / 3], k))
    x = np.concatenate(xs).astype(dt).astype(np.float64)
    y = np.concatenate(ys).astype(dt).astype(np.float64)
    return [x, y]


# ---------------------------------------------------------------------------
# formats and error analysis
# ---------------------------------------------------------------------------


@dataclass
class Fmt:
    name: str
    dtype: object
    p: int  # significand bits incl. implicit
    tiny: float  # smallest normal
    max: float
    eta: float = 0.0

    @property
    def u(self):
        return 2.0 ** (-self.p)


def make_formats():
    import ml_dtypes

    bf = ml_dtypes.finfo(ml_dtypes.bfloat16)
    return {
        "float32": Fmt("float32", np.float32, 24, F32_TINY, F32_MAX),
        "float64": Fmt("float64", np.float64, 53, float(np.finfo(np.float64).tiny),
                       float(np.finfo(np.float64).max)),
        "bfloat16": Fmt("bfloat16", ml_dtypes.bfloat16, 8, float(bf.tiny), float(bf.max)),
        "float16": Fmt("float16", np.float16, 11, 2.0**-14, 65504.0),
    }


@dataclass
class Result:
    label: str
    prim: str
    fmt: str
    n: int = 0
    k_rel: float = 0.0
    worst: str = ""
    ulp: float = 0.0
    e_uf: float = float("nan")
    k_abs4: float = 0.0
    worst_abs: str = ""
    worst_ulp: str = ""
    upcast_mismatch: int = -1
    nonfinite_bad: int = 0
    nonfinite_ex: str = ""
    ovf_bad: int = 0
    ftz_flushed: int = 0
    ftz_kept: int = 0
    ftz_expected: int = 0
    refchk: float = float("nan")
    n_domain: int = 0
    n_zero_exact: int = 0
    secs: float = 0.0
    notes: list = field(default_factory=list)


def fmt_num(v):
    """Shortest round-trip repr: as float32 where the value is a float32, else float64."""
    v = float(v)
    if math.isfinite(v) and abs(v) < 3.4e38 and float(np.float32(v)) == v:
        return np.format_float_scientific(np.float32(v), unique=True)
    return repr(v)


def describe(args, i, y, f):
    a = ",".join(fmt_num(c[i]) for c in args)
    return f"x={a} got={fmt_num(y[i])} exact={np.format_float_scientific(LD(f[i]), precision=19)}"


def analyse(res: Result, args, y, f, F: Fmt, C: Fmt):
    """Fill res with the error statistics of computed y against exact f (long double)."""
    yl = np.asarray(y).astype(np.float64).astype(LD)
    f = np.asarray(f, dtype=LD)
    with np.errstate(all="ignore"):
        f64 = f.astype(np.float64)
        fF = f64.astype(F.dtype).astype(np.float64)
        dom = np.isnan(f)
        res.n_domain = int(dom.sum())
        inf_exp = ~dom & np.isinf(fF)
        ok_inf = inf_exp & (yl == fF)
        bad_ovf = inf_exp & ~ok_inf
        res.ovf_bad = int(bad_ovf.sum())
        if res.ovf_bad:
            i = int(np.flatnonzero(bad_ovf)[0])
            res.notes.append(f"{res.ovf_bad} results where the exact value overflows are not inf, e.g. {describe(args, i, y, f)}")
        fin = ~dom & ~inf_exp
        res.n = int(fin.sum())
        bad_nf = fin & ~np.isfinite(yl)
        res.nonfinite_bad = int(bad_nf.sum())
        if res.nonfinite_bad:
            idx = np.flatnonzero(bad_nf)
            af = np.abs(f64[idx])
            j = idx[int(np.argmin(af))]
            res.nonfinite_ex = describe(args, j, y, f)
            res.notes.append(f"{res.nonfinite_bad} NaN/inf results where the exact value is finite (closest to 0: {res.nonfinite_ex}; largest |f|: {describe(args, idx[int(np.argmax(af))], y, f)})")
        m = fin & np.isfinite(yl)
        err = np.abs(yl - f)
        af = np.abs(f)
        uC, uF, eta = LD(C.u), LD(F.u), LD(F.eta)
        narrow = F.p < C.p
        rnd = uF * af if narrow else LD(0)
        scale = uC * af * (1 + uF) if narrow else uC * af
        excess = err - rnd - eta
        need = np.where(excess <= 0, LD(0), excess / np.where(af > 0, scale, LD(1)))
        need = np.where((af == 0) & (excess > 0), LD(np.inf), need)
        need = np.where(m, need, LD(0))
        res.n_zero_exact = int((m & (af == 0)).sum())
        i = int(np.argmax(need))
        res.k_rel = float(need[i])
        res.worst = describe(args, i, y, f)
        nrm = m & (af >= F.tiny) & (err > eta)
        ulp = np.ldexp(1.0, np.frexp(np.where(nrm, f64, 1.0))[1] - F.p)
        ulps = np.where(nrm, err / ulp.astype(LD), LD(0))
        if ulps.size:
            j = int(np.argmax(ulps))
            res.ulp = float(ulps[j])
            res.worst_ulp = describe(args, j, y, f)
        if narrow:
            euf = np.where(nrm, err / (uF * np.where(af > 0, af, 1)), LD(0))
            res.e_uf = float(euf.max())
        if res.k_rel > 4:
            kabs = np.where(m, (excess - 4 * scale) / uC, LD(0))
            j = int(np.argmax(kabs))
            res.k_abs4 = max(float(kabs[j]), 0.0)
            res.worst_abs = describe(args, j, y, f)
        sub = fin & (af < F.tiny) & (fF != 0)
        res.ftz_expected = int(sub.sum())
        res.ftz_flushed = int((sub & (yl == 0)).sum())
        res.ftz_kept = int((sub & (yl != 0)).sum())
    return need, err


# ---------------------------------------------------------------------------
# the measurement driver
# ---------------------------------------------------------------------------


def build_ops():
    import jax
    import jax.numpy as jnp
    from jax import lax

    ops = {
        "exp": ("exp", 1, lax.exp),
        "exp2": ("exp2", 1, lax.exp2),
        "log": ("log", 1, lax.log),
        "log1p": ("log1p", 1, lax.log1p),
        "expm1": ("expm1", 1, lax.expm1),
        "tanh": ("tanh", 1, lax.tanh),
        "logistic": ("logistic", 1, lax.logistic),
        "erf": ("erf", 1, lax.erf),
        "sqrt": ("sqrt", 1, lax.sqrt),
        "rsqrt": ("rsqrt", 1, lax.rsqrt),
        "pow": ("pow", 2, lax.pow),
        "cbrt": ("cbrt", 1, lax.cbrt),
        "sin": ("sin", 1, lax.sin),
        "cos": ("cos", 1, lax.cos),
        "erf_inv": ("erf_inv", 1, lax.erf_inv),
        "pow_0.5": ("pow", 1, lambda x: jnp.power(x, 0.5)),
        "pow_3": ("pow", 1, lambda x: jnp.power(x, 3.0)),
        "pow_-1.5": ("pow", 1, lambda x: jnp.power(x, -1.5)),
    }
    return {k: (prim, nargs, jax.jit(fn)) for k, (prim, nargs, fn) in ops.items()}


MP_FULL = {"erf", "pow", "erf_inv"}  # mpmath on every point (float32 / narrow runs)
MP_FULL_X64 = {"erf", "erf_inv"}


def reference(name, args, pool, full_mp, computed=None):
    """Return (exact values as long double, mp-check info)."""
    if name == "erf_inv":
        start = np.asarray(computed, np.float64) if computed is not None else np.zeros_like(args[0])
        y0 = _erfinv_f64(args[0], start)
        if full_mp:
            return pool("erf_inv_newton", args[0], y0), y0.astype(LD)
        return y0.astype(LD), None
    fast = _fast_ref(name, args)
    if full_mp or fast is None:
        return pool(name, *args), fast
    return fast, fast


def refine_with_mp(name, args, f, need, pool, rng, n_rand, C):
    """Replace f by mpmath values on random / worst / near-zero points.

    Returns the max discrepancy |f_fast - f_mp| / (u_C |f_mp|) seen."""
    n = len(f)
    idx = [rng.choice(n, min(n, n_rand), replace=False)]
    idx.append(np.argsort(need)[-256:])
    with np.errstate(all="ignore"):
        af = np.abs(f.astype(np.float64))
    nz = np.flatnonzero((af < 1e-3) & (np.abs(args[0]) > 0.5) & np.isfinite(af))
    if nz.size > 8192:
        nz = nz[np.argsort(af[nz])[:8192]]
    idx.append(nz)
    idx = np.unique(np.concatenate(idx))
    mpname = "erf_inv" if name == "erf_inv" else name
    fm = pool(mpname, *[a[idx] for a in args])
    with np.errstate(all="ignore"):
        ok = (np.abs(fm) >= C.tiny) & (np.abs(fm) <= C.max) & np.isfinite(f[idx])
        d = np.abs(f[idx] - fm) / (LD(C.u) * np.abs(fm))
        chk = float(np.max(np.where(ok, d, LD(0)))) if idx.size else 0.0
        fi = f[idx]
        differ = ~np.isfinite(fm) & ~((fm == fi) | (np.isnan(fm) & np.isnan(fi)))
        if differ.any():
            chk = max(chk, float("inf"))
    f = f.copy()
    f[idx] = np.where(np.isnan(fm) & ~np.isnan(f[idx]), f[idx], fm)
    return f, chk


def run_case(label, ops, pool, args, F, C, full_mp, rng, n_check):
    import jax.numpy as jnp

    prim, _, fn = ops[label]
    res = Result(label, prim, F.name)
    t0 = time.perf_counter()
    args = [np.asarray(a).astype(F.dtype).astype(np.float64) for a in args]
    if F.p < C.p:
        # inputs that are subnormal in the compute format are flushed by the backend
        # (denormals-are-zero); they are reported by subnormal_probe, not here
        keep = np.ones(len(args[0]), bool)
        for a in args:
            keep &= (a == 0) | ~(np.abs(a) < C.tiny)
        args = [a[keep] for a in args]
    dev_args = [jnp.asarray(a.astype(F.dtype)) for a in args]
    y = np.asarray(fn(*dev_args)).astype(np.float64)
    if F.p < C.p:
        # does the backend follow "upcast to C, evaluate, round once to F"?
        with np.errstate(all="ignore"):
            yc = np.asarray(fn(*[jnp.asarray(a.astype(C.dtype)) for a in args]))
            yc = yc.astype(F.dtype).astype(np.float64)
        mism = ~((y == yc) | (np.isnan(y) & np.isnan(yc)))
        res.upcast_mismatch = int(mism.sum())
        if res.upcast_mismatch:
            i = int(np.flatnonzero(mism)[0])
            res.notes.append(
                f"{res.upcast_mismatch} results differ from round_{F.name}({C.name} result), e.g. "
                f"x={','.join(fmt_num(a[i]) for a in args)}: got {fmt_num(y[i])}, rounded {C.name} "
                f"result {fmt_num(yc[i])}: this primitive is NOT evaluated as upcast-evaluate-round")
    f, fast = reference(label, args, pool, full_mp, computed=y)
    need, _ = analyse(Result(label, prim, F.name), args, y, f, F, C)
    if label == "erf_inv" and full_mp:
        # cross-check the Newton reference against mpmath.erfinv itself
        sub = rng.choice(len(f), min(len(f), 1024), replace=False)
        sub = np.unique(np.concatenate([sub, np.argsort(need)[-64:]]))
        fm = pool("erf_inv", args[0][sub])
        with np.errstate(all="ignore"):
            ok = np.isfinite(fm) & (fm != 0)
            res.refchk = float(np.max(np.where(ok, np.abs(f[sub] - fm) / (LD(C.u) * np.abs(fm)), 0)))
    elif not full_mp:
        f, res.refchk = refine_with_mp(label, args, f, need, pool, rng, n_check, C)
    else:
        res.refchk = -1.0  # mpmath on every point
    analyse(res, args, y, f, F, C)
    res.secs = time.perf_counter() - t0
    return res


def exhaustive_inputs(F: Fmt, label, rng):
    bits = np.arange(65536, dtype=np.uint16)
    with np.errstate(invalid="ignore"):
        vals = bits.view(F.dtype).astype(np.float64)
    vals = vals[np.isfinite(vals)]
    if label != "pow":
        return [vals]
    nice = np.array([0.5, 2.0, 3.0, -1.0, -0.5, 1.5, -2.0])
    xs, ys = [], []
    for r in range(4):
        x = vals
        if r == 0:
            y = rng.choice(nice, x.size)
        else:
            y = slu(rng, 1e-3, 16.0, x.size)
        y = np.where(x < 0, np.round(y), y)
        xs.append(x), ys.append(y)
    x = np.concatenate(xs)
    y = np.concatenate(ys).astype(F.dtype).astype(np.float64)
    return [x, y]


def subnormal_probe(ops, F: Fmt, C: Fmt, pool):
    """What do the primitives do with subnormal inputs (denormals-are-zero?)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    if F.name == "float64":
        mag = lu(rng, 5e-324, 2.2e-308, 4096)
    else:
        mag = lu(rng, 1.5e-45, 1.17e-38, 4096)
    x = np.concatenate([mag, -mag]).astype(F.dtype).astype(np.float64)
    x = x[x != 0]
    lines = []
    for label, (_prim, nargs, fn) in ops.items():
        if nargs != 1:
            continue
        y = np.asarray(fn(jnp.asarray(x.astype(F.dtype)))).astype(np.float64)
        y0 = np.asarray(fn(jnp.asarray(np.array([0.0, -0.0]).astype(F.dtype)))).astype(np.float64)
        f = reference(label, [x], pool, label in MP_FULL, computed=y)[0]
        r = Result(label, label, F.name)
        with np.errstate(all="ignore"):
            _need, _ = analyse(r, [x], y, f, F, C)
            dom = ~np.isnan(f.astype(np.float64))
            like0 = dom & ((y == np.where(x > 0, y0[0], y0[1])) | (np.isnan(y) & np.isnan(np.where(x > 0, y0[0], y0[1]))))
            nd = int(dom.sum())
        if nd == 0:
            continue
        lines.append(
            f"  {label:9s} n={nd:5d}  result==f(+-0): {int(like0.sum()):5d}  non-finite: {r.nonfinite_bad:5d}"
            f"  k_rel needed: {r.k_rel:.3g}  worst: {r.worst}"
        )
    return lines


NICE = [1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 192, 256, 384, 512]


def nice_up(v):
    if v <= 0:
        return 0
    for m in NICE:
        if m >= v:
            return m
    e = 2 ** math.ceil(math.log2(v))
    return e if e >= v else 2 * e


def print_table(results, title):
    print(f"\n== {title} ==")
    hdr = (f"{'case':9s} {'prim':8s} {'dtype':8s} {'n':>8s} {'k_rel':>9s} {'ulp':>7s} {'e/uF':>6s}"
           f" {'k_abs@4':>9s} {'nonfin':>6s} {'ovfbad':>6s} {'subnormal-expected: flushed/kept':>33s}"
           f" {'refchk':>8s} {'!=up':>6s} {'t[s]':>6s}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        e_uf = "" if math.isnan(r.e_uf) else f"{r.e_uf:.3f}"
        kabs = f"{r.k_abs4:.4g}" if r.k_rel > 4 else "-"
        sub = f"{r.ftz_expected}: {r.ftz_flushed}/{r.ftz_kept}"
        print(f"{r.label:9s} {r.prim:8s} {r.fmt:8s} {r.n:8d} {r.k_rel:9.3f} {r.ulp:7.3f} {e_uf:>6s}"
              f" {kabs:>9s} {r.nonfinite_bad:6d} {r.ovf_bad:6d} {sub:>33s}"
              f" {'mp-all' if r.refchk < 0 else f'{r.refchk:.1e}':>8s}"
              f" {'-' if r.upcast_mismatch < 0 else r.upcast_mismatch:>6} {r.secs:6.1f}")
    print("\nworst inputs:")
    for r in results:
        print(f"  {r.label:9s} {r.fmt:8s} k_rel: {r.worst}")
        if r.worst_ulp and r.worst_ulp != r.worst:
            print(f"  {'':9s} {'':8s} ulp:   {r.worst_ulp}")
        if r.k_rel > 4:
            print(f"  {'':9s} {'':8s} k_abs: {r.worst_abs}")
        for note in r.notes:
            print(f"  {'':9s} {'':8s} NOTE: {note}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--x64", action="store_true", help="measure float64 (jax_enable_x64)")
    ap.add_argument("--quick", action="store_true", help="2**16 points per sweep, no exhaustive runs")
    ap.add_argument("--n", type=int, default=None, help="points per sweep")
    ap.add_argument("--only", default=None, help="comma-separated case labels")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="mpmath worker processes")
    ap.add_argument("--no-exhaustive", action="store_true")
    a = ap.parse_args(argv)

    if not HAVE_EXTENDED_LD:
        print("WARNING: numpy long double is not x87 extended precision here; references are float64-accurate only")

    t_start = time.perf_counter()
    pool = MPPool(a.procs)
    import jax

    if a.x64:
        jax.config.update("jax_enable_x64", True)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}, "
          f"cpu count {os.cpu_count()}, mpmath workers {a.procs}, python {sys.version.split()[0]}")
    fmts = make_formats()
    C = fmts["float64"] if a.x64 else fmts["float32"]
    ops = build_ops()
    if a.x64:
        labels = list(ops)
        n = a.n or (2**14 if a.quick else 2**18)
    else:
        labels = list(ops)
        n = a.n or (2**16 if a.quick else 2**20)
    if a.only:
        labels = [s for s in labels if s in a.only.split(",")]
    full_mp_set = MP_FULL_X64 if a.x64 else MP_FULL
    rng = np.random.default_rng(20240917)

    # eta: does the backend flush subnormal results of the compute format?
    import jax.numpy as jnp

    probe = np.asarray(jax.jit(lambda v: v * 0.5)(jnp.asarray(np.array([C.tiny], C.dtype))))
    c_flush = bool(probe[0] == 0)
    C.eta = C.tiny if c_flush else C.tiny * 2.0 ** (1 - C.p) / 2
    print(f"compute format {C.name}: u_C = 2**-{C.p}; backend flushes subnormal results of x*0.5: {c_flush}; eta = {C.eta:.4g}")
    narrow = []
    if not a.x64 and not a.quick and not a.no_exhaustive:
        for nm in ("bfloat16", "float16"):
            Fn = fmts[nm]
            pr = np.asarray(jax.jit(lambda v: v * 0.5)(jnp.asarray(np.array([Fn.tiny]).astype(Fn.dtype))))
            fl = bool(pr[0] == 0)
            Fn.eta = Fn.tiny if (fl or nm == "bfloat16") else Fn.tiny * 2.0 ** (1 - Fn.p) / 2
            print(f"narrow format {nm}: u_F = 2**-{Fn.p}; x*0.5 on the smallest normal flushes: {fl}; eta = {Fn.eta:.4g}")
            narrow.append(Fn)

    # zeros of sin and cos, for the sin/cos sweeps
    pi_zeros = None
    if any(lb in ("sin", "cos") for lb in labels):
        pi_zeros = [near_multiples(rng, n // 10 + 1, mpmath.pi, off, 1e5, C.dtype)
                    for off in (0, mpmath.pi / 2)]

    results = []
    for lb in labels:
        args = sweep(lb, n, rng, C.dtype, pi_zeros)
        r = run_case(lb, ops, pool, args, C, C, lb in full_mp_set, rng, 2048)
        results.append(r)
        print(f"  [{time.perf_counter() - t_start:6.1f}s] {lb} {C.name} k_rel={r.k_rel:.3f}", flush=True)
    for Fn in narrow:
        for lb in labels:
            args = exhaustive_inputs(Fn, lb, rng)
            r = run_case(lb, ops, pool, args, Fn, C, lb in full_mp_set, rng, 2048)
            results.append(r)
            print(f"  [{time.perf_counter() - t_start:6.1f}s] {lb} {Fn.name} k_rel={r.k_rel:.3f}", flush=True)

    results.sort(key=lambda r: (list(ops).index(r.label), r.fmt))
    print_table(results, f"accuracy of XLA:{jax.default_backend()} primitives, compute format {C.name}"
                + (", narrow formats exhaustive" if narrow else ""))

    print("\n== subnormal inputs (not part of the table above) ==")
    for F in [C] + [fm for fm in narrow if fm.name == "bfloat16"]:
        print(f" {F.name}:")
        for line in subnormal_probe({k: v for k, v in ops.items() if k in labels}, F, C, pool):
            print(line)

    print("\n== per-primitive summary (units of u_C) ==")
    print("narrow rows count only where the backend follows upcast-evaluate-round (!=up == 0)")
    by = {}
    for r in results:
        d = by.setdefault(r.prim, {"k_rel": 0.0, "k_abs4": 0.0, "viol": []})
        if r.upcast_mismatch > 0:
            d["viol"].append(f"{r.label}/{r.fmt} (max err {r.e_uf:.2f} u_F)")
            continue
        d["k_rel"] = max(d["k_rel"], r.k_rel)
        d["k_abs4"] = max(d["k_abs4"], r.k_abs4)
    print(f"{'prim':9s} {'max k_rel (k_abs=0)':>20s} {'max k_abs@k_rel=4':>18s}   suggested (2x, nice)")
    for p, d in by.items():
        if d["k_rel"] <= 8 or d["k_abs4"] > 1e4:
            sug = f"({nice_up(2 * d['k_rel'])}, 0)"
        else:
            sug = f"({nice_up(2 * d['k_rel'])}, 0)  or  (8, {nice_up(2 * d['k_abs4'])})"
        print(f"{p:9s} {d['k_rel']:20.3f} {d['k_abs4']:18.4g}   {sug}")
        if d["viol"]:
            print(f"{'':9s} not upcast-evaluate-round: {', '.join(d['viol'])}")
    pool.close()
    print(f"\ntotal wall time: {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
