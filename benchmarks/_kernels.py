"""FPBench / FPTaylor scalar kernels in float64: definitions, boxes, published bounds,
the jaxerr analysis over a box (optionally split into sub-boxes) and the observed error
of the compiled float64 program against mpmath. Shared by ``benchmarks/kernels.py``
(the table) and ``tests/test_kernels.py`` (soundness); importing it changes no global
JAX setting: callers enable x64 (``precision="float64"`` needs it).
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import mpmath
import numpy as np

import jaxerr

# ---------------------------------------------------------------------------
# kernels: ``m`` provides sqrt/exp/log (jax.numpy for the analysis and the float64
# run, mpmath for the exact value)
# ---------------------------------------------------------------------------


class _MP:
    sqrt = staticmethod(mpmath.sqrt)
    exp = staticmethod(mpmath.exp)
    log = staticmethod(mpmath.log)


def carbon_gas(V, p, a, b, N, T, m=jnp):
    # FPTaylor toplas carbonGas.txt: p, a, b, N, T are degenerate inputs (so that
    # N * b and k * N * T are float64 operations, as in the source)
    k = 1.3806503e-23
    return (p + a * (N / V) * (N / V)) * (V - N * b) - k * N * T


def doppler(u, v, T, m=jnp):
    t1 = 331.4 + 0.6 * T
    return (-t1 * v) / ((t1 + u) * (t1 + u))


def rigid_body1(x1, x2, x3, m=jnp):
    return -(x1 * x2) - 2 * x2 * x3 - x1 - x3


def rigid_body2(x1, x2, x3, m=jnp):
    return 2 * x1 * x2 * x3 + 3 * x3 * x3 - x2 * x1 * x2 * x3 + 3 * x3 * x3 - x2


def turbine1(v, w, r, m=jnp):
    return 3 + 2 / (r * r) - 0.125 * (3 - 2 * v) * (w * w * r * r) / (1 - v) - 4.5


def turbine2(v, w, r, m=jnp):
    return 6 * v - 0.5 * v * (w * w * r * r) / (1 - v) - 2.5


def turbine3(v, w, r, m=jnp):
    return 3 - 2 / (r * r) - 0.125 * (1 + 2 * v) * (w * w * r * r) / (1 - v) - 0.5


def jet_engine(x1, x2, m=jnp):
    # FPBench rosa.fpcore "JetEngine" (the let-bound t, t*, d, s, s* are shared)
    t = 3 * x1 * x1 + 2 * x2 - x1
    ts = 3 * x1 * x1 - 2 * x2 - x1
    d = x1 * x1 + 1
    s = t / d
    ss = ts / d
    return x1 + ((((2 * x1 * s * (s - 3) + x1 * x1 * (4 * s - 6)) * d + 3 * x1 * x1 * s)
                  + x1 * x1 * x1) + x1 + 3 * ss)


def verhulst(x, m=jnp):
    return (4 * x) / (1 + x / 1.11)


def predator_prey(x, m=jnp):
    return (4 * x * x) / (1 + (x / 1.11) * (x / 1.11))


def sine(x, m=jnp):
    return x - (x * x * x) / 6.0 + (x * x * x * x * x) / 120.0 - (x * x * x * x * x * x * x) / 5040.0


def sine_order3(x, m=jnp):
    return 0.954929658551372 * x - 0.12900613773279798 * (x * x * x)


def sqroot(y, m=jnp):
    return 1.0 + 0.5 * y - 0.125 * y * y + 0.0625 * y * y * y - 0.0390625 * y * y * y * y


def t_div_t1(t, m=jnp):
    return t / (t + 1)


def nonlin2(x, y, m=jnp):
    t = x * y
    return (t - 1) / (t * t - 1)


def nonlin1_r4(x, m=jnp):
    return (x - 1) / (x * x - 1)


def kepler0(x1, x2, x3, x4, x5, x6, m=jnp):
    return x2 * x5 + x3 * x6 - x2 * x3 - x5 * x6 + x1 * (-x1 + x2 + x3 - x4 + x5 + x6)


def kepler1(x1, x2, x3, x4, m=jnp):
    return (x1 * x4 * (-x1 + x2 + x3 - x4) + x2 * (x1 - x2 + x3 + x4) + x3 * (x1 + x2 - x3 + x4)
            - x2 * x3 * x4 - x1 * x3 - x1 * x2 - x4)


def kepler2(x1, x2, x3, x4, x5, x6, m=jnp):
    return (x1 * x4 * (-x1 + x2 + x3 - x4 + x5 + x6) + x2 * x5 * (x1 - x2 + x3 + x4 - x5 + x6)
            + x3 * x6 * (x1 + x2 - x3 + x4 + x5 - x6) - x2 * x3 * x4 - x1 * x3 * x5 - x1 * x2 * x6
            - x4 * x5 * x6)


def himmilbeau(x1, x2, m=jnp):
    a = x1 * x1 + x2 - 11
    b = x1 + x2 * x2 - 7
    return a * a + b * b


def sum3(x0, x1, x2, m=jnp):
    p0 = x0 + x1 - x2
    p1 = x1 + x2 - x0
    p2 = x2 + x0 - x1
    return p0 + p1 + p2


def sqrt_add(x, m=jnp):
    return 1 / (m.sqrt(x + 1) + m.sqrt(x))


def hypot(x1, x2, m=jnp):
    return m.sqrt(x1 * x1 + x2 * x2)


def logexp(x, m=jnp):
    return m.log(1 + m.exp(x))


@dataclasses.dataclass
class Kernel:
    name: str
    fn: Callable[..., Any]
    box: list[tuple[float, float]]
    source: str
    consts: tuple[float, ...] = ()  # degenerate inputs (points) after the box inputs
    kind: str = "polynomial"


_R2F = "FPBench fptaylor-real2float.fpcore"
KERNELS: list[Kernel] = [
    Kernel("carbonGas", carbon_gas, [(0.1, 0.5)], "FPTaylor toplas carbonGas.txt",
           consts=(3.5e7, 0.401, 42.7e-6, 1000.0, 300.0), kind="rational"),
    Kernel("doppler1", doppler, [(-100, 100), (20, 20000), (-30, 50)], _R2F, kind="rational"),
    Kernel("doppler2", doppler, [(-125, 125), (15, 25000), (-40, 60)], _R2F, kind="rational"),
    Kernel("doppler3", doppler, [(-30, 120), (320, 20300), (-50, 30)], _R2F, kind="rational"),
    Kernel("rigidBody1", rigid_body1, [(-15, 15)] * 3, _R2F),
    Kernel("rigidBody2", rigid_body2, [(-15, 15)] * 3, _R2F),
    Kernel("turbine1", turbine1, [(-4.5, -0.3), (0.4, 0.9), (3.8, 7.8)], "FPBench rosa.fpcore / FPTaylor toplas",
           kind="rational"),
    Kernel("turbine2", turbine2, [(-4.5, -0.3), (0.4, 0.9), (3.8, 7.8)], "FPTaylor toplas turbine2.txt",
           kind="rational"),
    Kernel("turbine3", turbine3, [(-4.5, -0.3), (0.4, 0.9), (3.8, 7.8)], "FPTaylor toplas turbine3.txt",
           kind="rational"),
    Kernel("jetEngine", jet_engine, [(-5, 5), (-20, 5)], "FPBench rosa.fpcore", kind="rational"),
    Kernel("verhulst", verhulst, [(0.1, 0.3)], _R2F, kind="rational"),
    Kernel("predatorPrey", predator_prey, [(0.1, 0.3)], _R2F, kind="rational"),
    Kernel("sine", sine, [(-1.57079632679, 1.57079632679)], _R2F),
    Kernel("sineOrder3", sine_order3, [(-2, 2)], _R2F),
    Kernel("sqroot", sqroot, [(0, 1)], _R2F),
    Kernel("t_div_t1", t_div_t1, [(0, 999)], "FPTaylor toplas t_div_t1.txt", kind="cancellation"),
    Kernel("nonlin2", nonlin2, [(1.001, 2), (1.001, 2)], "FPBench fptaylor-extra.fpcore", kind="cancellation"),
    Kernel("nonlin1_r4", nonlin1_r4, [(1.00001, 2)], "FPBench fptaylor-tests.fpcore", kind="cancellation"),
    Kernel("kepler0", kepler0, [(4, 6.36)] * 6, _R2F),
    Kernel("kepler1", kepler1, [(4, 6.36)] * 4, _R2F),
    Kernel("kepler2", kepler2, [(4, 6.36)] * 6, _R2F),
    Kernel("himmilbeau", himmilbeau, [(-5, 5)] * 2, "FPBench fptaylor-extra.fpcore"),
    Kernel("sum3", sum3, [(1, 2)] * 3, "FPBench fptaylor-extra.fpcore", kind="cancellation"),
    Kernel("sqrt_add", sqrt_add, [(1, 1000)], "FPBench fptaylor-extra.fpcore", kind="sqrt"),
    Kernel("hypot", hypot, [(1, 100)] * 2, "FPBench fptaylor-extra.fpcore", kind="sqrt"),
    Kernel("logexp", logexp, [(-8, 8)], "FPBench fptaylor-extra.fpcore", kind="transcendental"),
]

# tool -> (bound, source key); only numbers found with a source (module docstring)
PUBLISHED: dict[str, dict[str, tuple[float, str]]] = {
    "doppler1": {"Daisy": (4.1911988101104756e-13, "daisy-readme")},
}
# the third-party CI comparison (secondary; see the module docstring)
THIRD_PARTY: dict[str, dict[str, float]] = {
    "verhulst": {"FPTaylor": 2.275e-16, "Daisy": 3.719e-16},
    "predatorPrey": {"FPTaylor": 1.530e-16, "Daisy": 1.749e-16},
    "sine": {"FPTaylor": 3.864e-16, "Daisy": 1.130e-15},
    "sqroot": {"FPTaylor": 4.875e-16, "Daisy": 5.707e-16},
    "rigidBody1": {"FPTaylor": 2.949e-13, "Daisy": 2.949e-13},
    "rigidBody2": {"FPTaylor": 3.544e-11, "Daisy": 3.553e-11},
    "turbine1": {"FPTaylor": 1.639e-14, "Daisy": 8.648e-14},
    "turbine2": {"FPTaylor": 1.928e-14, "Daisy": 1.307e-13},
    "turbine3": {"FPTaylor": 9.111e-15, "Daisy": 6.231e-14},
    "carbonGas": {"FPTaylor": 6.606e-09, "Daisy": 1.652e-07},
}


def published(name: str) -> dict[str, float]:
    out = {f"{t} (3rd-party CI)": v for t, v in THIRD_PARTY.get(name, {}).items()}
    out.update({t: v for t, (v, _src) in PUBLISHED.get(name, {}).items()})
    return out


# ---------------------------------------------------------------------------
# analysis
# ---------------------------------------------------------------------------


def args_of(k: Kernel) -> list[Any]:
    boxes = [jaxerr.Interval(jnp.asarray(lo, jnp.float64), jnp.asarray(hi, jnp.float64)) for lo, hi in k.box]
    return boxes + [jnp.asarray(c, jnp.float64) for c in k.consts]


def analyse(k: Kernel, domain: str, symbols: int | None = None, cap: bool = True, pieces: int = 1,
            jit: bool = False, inputs: str = "real") -> float:
    """jaxerr's abs_err bound of ``k`` over its box (``cap=False``: the affine domain
    alone, without the intersection with the interval result). ``pieces > 1``: the box
    is cut into ``P^d <= pieces`` equal sub-boxes (``P`` per input), the analysis is
    ``jax.vmap``-ed over them and the largest bound is taken (sound: every input lies in
    some sub-box). ``jit=False`` (default) runs the analysis eagerly: for a scalar
    kernel, dispatching its operations one by one (each compiled once and cached) is
    much faster than compiling the whole analysis as one program. ``inputs="real"``:
    the box holds real numbers, rounded to float64 on input (``precision="float64"``,
    FPTaylor's ``real x`` with ``rnd64``); ``"float"``: the box's float64 numbers, used
    as they are (``precision=None``, FPBench's ``:precision binary64`` variables)."""
    import jaxerr._bound as B

    kw = {"symbols": symbols} if (domain == "affine" and symbols) else {}
    consts = [jnp.asarray(c, jnp.float64) for c in k.consts]
    d = len(k.box)
    P = max(1, int(pieces ** (1.0 / d) + 1e-9))
    old = B._AFFINE_CAP
    B._AFFINE_CAP = cap
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prec = "float64" if inputs == "real" else None
            g = jaxerr.bound(lambda *xs: k.fn(*xs, *consts), precision=prec, domain=domain, jit=jit, **kw)
            if P == 1:
                return float(g(*args_of(k)[:d]).abs_err)
            edges = [np.linspace(lo, hi, P + 1) for lo, hi in k.box]
            idx = np.array(list(itertools.product(range(P), repeat=d)))
            boxes = [jaxerr.Interval(jnp.asarray(edges[j][idx[:, j]]), jnp.asarray(edges[j][idx[:, j] + 1]))
                     for j in range(d)]
            return float(jnp.max(jax.vmap(g)(*boxes).abs_err))
    finally:
        B._AFFINE_CAP = old


# ---------------------------------------------------------------------------
# observation: compiled float64 run vs mpmath on real inputs
# ---------------------------------------------------------------------------

_PREC = 300


def sample_inputs(k: Kernel, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random points plus the box's corners: float64 inputs ``xf`` (columns) and
    real offsets ``d`` in units of half an ulp (|d| < 1, kept inside the box), so the
    real input is ``xf + d * ulp(xf) / 2`` and rounds to ``xf``."""
    rng = np.random.default_rng(seed)
    lo = np.array([b[0] for b in k.box], np.float64)
    hi = np.array([b[1] for b in k.box], np.float64)
    corners = np.array(list(itertools.product(*[(a, b) for a, b in k.box])), np.float64)
    u = rng.random((n, len(k.box)))
    # per coordinate: uniform (half of the points), or at a distance 10^-U(0, 8) of
    # the box's width from one end (cancellation near an end: (x - 1) / (x^2 - 1))
    mode = rng.integers(0, 4, (n, len(k.box)))
    near = 10.0 ** -rng.uniform(0, 8, (n, len(k.box)))
    u = np.where(mode == 2, near, np.where(mode == 3, 1 - near, u))
    pts = np.clip(lo + (hi - lo) * u, lo, hi)
    xf = np.concatenate([corners, pts], axis=0)
    d = rng.uniform(-0.999, 0.999, xf.shape)
    d = np.where(xf <= lo, np.abs(d), d)
    d = np.where(xf >= hi, -np.abs(d), d)
    d = np.where(lo == hi, 0.0, d)
    return xf, d


def computed_values(k: Kernel, xf: np.ndarray) -> np.ndarray:
    consts = [jnp.asarray(c, jnp.float64) for c in k.consts]
    g = jax.jit(jax.vmap(lambda *xs: k.fn(*xs, *consts)))
    return np.asarray(g(*[jnp.asarray(xf[:, i]) for i in range(xf.shape[1])]))


def exact_values(k: Kernel, xf: np.ndarray, d: np.ndarray) -> list[Any]:
    out = []
    with mpmath.workprec(_PREC):
        consts = [mpmath.mpf(float(c)) for c in k.consts]
        for row, drow in zip(xf, d):
            xs = []
            for x, dx in zip(row, drow):
                x = float(x)
                ulp = np.spacing(abs(x)) if x != 0 else np.spacing(0.0)
                xs.append(mpmath.mpf(x) + mpmath.mpf(float(dx)) * mpmath.mpf(float(ulp)) / 2)
            out.append(k.fn(*xs, *consts, m=_MP))
    return out


def observed_error(k: Kernel, n: int, seed: int = 0, inputs: str = "real") -> float:
    """Largest |float64 run - exact| over the samples (``inputs="float"``: the float64
    points themselves, no sub-ulp offsets)."""
    xf, d = sample_inputs(k, n, seed)
    if inputs != "real":
        d = np.zeros_like(d)
    comp = computed_values(k, xf)
    ex = exact_values(k, xf, d)
    with mpmath.workprec(_PREC):
        errs = [abs(mpmath.mpf(float(c)) - e) for c, e in zip(comp, ex)]
        return float(max(errs))


