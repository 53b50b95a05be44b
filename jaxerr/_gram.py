"""The quadratic split of ``domain="first_order"``: second-order terms that cancel
across the elements of a refined value.

The worst-case reverse pass *splits* at a refined value ``x`` (``_first_order._reverse``):
it goes on upstream with a fixed cotangent and charges what the sensitivity to ``x``
varies along the segment. For ``y = h(x)`` elementwise and smooth, with a fixed
downstream cotangent ``g`` (``mid gm``, radius ``gr``), the part of the output's
deviation that passes through ``y`` is exactly::

    int g h'(x(t)) x'(t) dt = sum_j gm_j (h(x_j(1)) - h(x_j(0)))  +  int (g - gm) h'(x) x' dt
                            = sum_j gm_j h'(x_j(0)) D_j  +  1/2 sum_j gm_j h''(xi_j) D_j^2  +  ...

with ``D = x(1) - x(0)`` (Taylor with the Lagrange remainder, ``xi_j`` in the path
range). The pass goes on with the cotangent ``gm h'(x(0))`` enclosed at the *exact*
point (``_rules/sensitivity.py``'s rule over the interval domain's exact ranges), and
charges ``|g - gm| max|h'| B`` plus the quadratic term. With ``h''`` in ``[c - e, c + e]``::

    |1/2 sum_j gm_j h''(xi_j) D_j^2| <= 1/2 (|sum_j phi_j D_j^2| + sum_j |gm_j| e_j B_j^2),
    phi = gm c.

The elementwise bound of the first sum, ``sum |phi_j| B_j^2``, is what the plain split
charged (twice over: ``rad · B`` with ``rad ~ |gm h''| B``). But ``phi`` has mixed signs
and the ``D_j`` are linear combinations of the *same* rounding events, so the sum
cancels. The refinement pass of ``x`` records that structure (:class:`Gram`): ``D_j =
a_j · u + rho_j`` with ``|u_k| <= 1`` (``a_jk`` the midpoint of the sensitivity of
``x_j`` to event ``k`` times its bound ``E_k``) and ``|rho_j| <= R_j``. For weights
``s >= 0`` (the positive or the negative part of ``phi``), :func:`quad_sup` bounds
``sup_u sum_j s_j (a_j · u)^2``: for any ``omega > 0`` and any vector ``y``, Cauchy-Schwarz
gives ``(y · A u)^2 <= (sum_k omega_k) (sum_k (a_k · y)^2 / omega_k)``, so
``sum_j s_j (a_j · u)^2 = |S^(1/2) A u|^2 <= Omega · lambda_max(S^(1/2) C S^(1/2))`` with
``C = sum_k a_k a_k^T / omega_k``. With ``omega_k = sum_j s_j |a_jk| L_j``
(``L_j = sum_k |a_jk|``) a Schur test shows ``lambda_max <= 1``, i.e. never worse than
``sum s_j L_j^2``; it is far smaller where the rows ``a_j`` are spread over many events
with mixed signs. ``lambda_max`` is bounded by Gershgorin's row sums
(``max_i sum_j |C_ij| s_j``, a Collatz-Wielandt bound with the vector ``sqrt(s)``), and
every float operation on the way is rounded or bounded outward.

A product ``x * z`` of two refined values has the cross term ``sum_j gm_j D^x_j D^z_j``,
bounded by Cauchy-Schwarz per sign of ``gm``: ``sqrt(Q_x(gm+) Q_z(gm+)) +
sqrt(Q_x(gm-) Q_z(gm-))``.

Measured on the 4-layer 256-wide bfloat16 tanh MLP (``benchmarks/tightness.py``), the
quadratic split cuts the second-order charges, which were about twice the first-order
limit, to a few percent of it.
"""

from __future__ import annotations

from typing import Any

import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from . import _formats as F
from ._first_order import _sum_all

#: the Gram data of a refined value is recorded when it has at most this many elements
GRAM_MAX_N = 1024
#: ... and at least this many (below, the elementwise bound is as good and the rows
#: only cost compile time)
GRAM_MIN_N = 16
#: ... and when ``n^2 * K`` (``K`` events on its rows; the cost of one quadratic bound per
#: seed of a later pass) stays below this
GRAM_MAX_COST = 1 << 30  # (1 << 28 kept 4096 of ~7700 events on the rows of a 4x256
#                             GELU MLP's last layers: first_order / limit 2.13 -> 1.70
#                             with cross_aligned, call 1.2 -> 2.0 s)
#: ... and at most this many events per row
GRAM_MAX_ROW = 1 << 16
#: a reverse pass also uses the weights omega of each seed (``sum_j s_j |a_jk| L_j``:
#: tighter, ``n^2 K`` per seed and split value) besides the shared ones
#: (``sum_j |a_jk| L_j``: ``C`` once per refined value, ``n^2`` per seed) while
#: ``seeds x sum n^2 K`` stays below this (about 10 s of CPU; over it, the latest split
#: values that fit get them: ``per_seed_set``)
PER_SEED_BUDGET = 1 << 38


class Gram:
    """The linear part of a refined value's deviation: ``D_j = A[j] · u + d_j + rho_j``,
    ``|u| <= 1`` (the rounding events), ``d`` known (the known input shifts, summed),
    ``|rho_j| <= R[j]``, ``L[j] >= sum_k |A[j, k]|``, ``|D_j| <= B[j]`` (all flattened
    over the value's elements)."""

    __slots__ = ("A", "absA", "d", "L", "R", "B", "Om", "Cup", "cols")

    def __init__(self, A: Any, d: Any, L: Any, R: Any, B: Any, cols: list[Any] | None = None):
        self.A, self.d, self.L, self.R, self.B = A, d, L, R, B
        # static: ``(key, size)`` of the column blocks of A, in order (``key``: the
        # event's value and bound, ``_first_order._reverse``; None matches nothing)
        self.cols = cols
        self.absA = jnp.abs(A)
        self.Om, self.Cup = _shared(self.A, self.absA, L)


def _gamma(n: int, dt: Any) -> float:
    return F.gamma(n + 2, float(np.finfo(dt).eps) / 2)


def _weights(A: Any, absA: Any, v: Any) -> tuple[Any, Any, Any]:
    """For the weights ``omega_k = sum_j v_j |a_jk|`` (any positive values will do: the
    bounds hold for the float values used): ``(Omega, r, Ch)`` with ``Omega >= sum omega``,
    ``r >= 1 / omega`` and ``Ch`` the float ``A diag(r) A^T`` (a larger ``C``, still a
    bound), whose error is at most ``gamma_{K+1} sum_k |a_ik| |a_jk| r_k`` (the float
    error of ``a_ik r_k`` included) plus underflow."""
    dt = A.dtype
    tiny = jnp.asarray(np.finfo(dt).tiny, dt)
    w = jnp.dot(v, absA, precision=lax.Precision.HIGHEST) + tiny * 4
    w = F.where(jnp.isfinite(w), w, jnp.asarray(np.finfo(dt).max, dt))
    r = F.div_up(jnp.ones_like(w), w)
    return _sum_all(w), r, jnp.dot(A * r[None, :], A.T, precision=lax.Precision.HIGHEST)


def _matvec_up(M: Any, s: Any) -> Any:
    """Upper bound of ``M s`` for nonnegative ``M`` and ``s``."""
    dt = M.dtype
    n = int(jnp.shape(s)[0])
    row = jnp.dot(M, s, precision=lax.Precision.HIGHEST)
    return F.add_up_nn(F.scale_up(row, 1 + 2 * _gamma(n, dt)), jnp.asarray(np.finfo(dt).tiny, dt) * (2 * n + 2))


def _collatz(Om: Any, row: Any, s: Any) -> Any:
    """``Omega · lambda``, ``row >= sum_j |C_ij| s_j``: Collatz-Wielandt with the vector
    ``sqrt(s)``, so the max runs over the support of ``s`` only (where ``sqrt(s) > 0``)."""
    out = F.mul_up(Om, jnp.max(F.where(s > 0, row, 0.0)))
    return F.where(jnp.isnan(out), jnp.inf, out)


def _shared(A: Any, absA: Any, L: Any) -> tuple[Any, Any]:
    """``(Omega, Cup)`` for the weights ``omega_k = sum_j |a_jk| L_j`` (shared by every
    seed): ``Omega >= sum omega`` and ``Cup >= |C|`` elementwise, ``C = A diag(1/omega) A^T``."""
    dt = A.dtype
    K = int(jnp.shape(A)[1])
    Om, r, Ch = _weights(A, absA, L)
    g = _gamma(K + 1, dt)
    Cabs = jnp.dot(absA * r[None, :], absA.T, precision=lax.Precision.HIGHEST)
    err = F.add_up_nn(F.scale_up(Cabs, g * (1 + 2 * _gamma(K, dt))), F.static_up(4 * (K + 2) * float(np.finfo(dt).tiny), dt))
    Cup = F.add_up_nn(jnp.abs(Ch), err)
    bad = ~jnp.isfinite(Om) | jnp.any(jnp.isnan(Cup))
    return F.where(bad, jnp.inf, Om), F.where(jnp.isnan(Cup), jnp.inf, Cup)


def quad_gram(gd: Gram, s: Any, per_seed: bool = False) -> Any:
    """Upper bound of ``sup_{|u| <= 1} sum_j s_j (A[j] · u)^2`` for ``s >= 0`` (flat):
    with the shared weights, and (``per_seed``) the smaller of that and the bound with
    the weights of ``s``."""
    shared = _collatz(gd.Om, _matvec_up(gd.Cup, s), s)
    if not per_seed:
        return shared
    return jnp.minimum(shared, _quad_gram_seed(gd, s))


def _quad_gram_seed(gd: Gram, s: Any) -> Any:
    A, absA = gd.A, gd.absA
    dt = A.dtype
    n, K = jnp.shape(A)
    Om, r, Ch = _weights(A, absA, s * gd.L)
    # sum_j |C_ij| s_j <= sum_j |Ch_ij| s_j + g (|A| (r * (|A|^T s)))_i, plus underflow
    # (at most 2 tiny per product flushed to 0)
    g = _gamma(K + 1, dt)
    ut = F.static_up(2 * (K + 2) * float(np.finfo(dt).tiny), dt)
    ats = F.scale_up(jnp.dot(s, absA, precision=lax.Precision.HIGHEST), 1 + 2 * _gamma(n, dt))
    err = jnp.dot(absA, F.mul_up(r, ats), precision=lax.Precision.HIGHEST)
    row = F.add_up_nn(_matvec_up(jnp.abs(Ch), s), F.scale_up(err, g * (1 + 2 * _gamma(K, dt))))
    return _collatz(Om, F.add_up_nn(row, F.mul_up(ut, _sum_all(s))), s)


def quad_sup(gd: Gram | None, B: Any, s: Any, per_seed: bool = False) -> Any:
    """Upper bound of ``sup sum_j s_j D_j^2`` over every admissible deviation ``D``
    (``s >= 0``, flat; ``B``: the refined bounds, flat)."""
    plain = _sum_all(F.where(s == 0, 0.0, F.mul_up(s, F.mul_up(B, B))))
    if gd is None:
        return plain
    L, R, d, A = gd.L, gd.R, gd.d, gd.A
    dt = A.dtype
    # D = v + d + rho, v = A u:  sum s D^2 = sum s v^2 + 2 sum s v d + sum s (2 v rho + (d + rho)^2)
    #   <= Q + 2 min(|A^T (s d)|_1, sqrt(Q sum s d^2)) + sum s (2 L R + (|d| + R)^2)
    q = quad_gram(gd, s, per_seed)
    ad = jnp.abs(d)
    dR = F.add_up_nn(ad, R)
    rest = _sum_all(F.where(s == 0, 0.0, F.mul_up(s, F.add_up_nn(F.mul_up(F.scale_up(L, 2.0), R), F.mul_up(dR, dR)))))
    sd = s * d  # |sd - s d| <= u |sd| (+ underflow)
    K = int(jnp.shape(A)[1])
    t = jnp.dot(sd, A, precision=lax.Precision.HIGHEST)
    g = _gamma(K + 1, dt)
    terr = F.add_up_nn(F.scale_up(jnp.dot(jnp.abs(sd), gd.absA, precision=lax.Precision.HIGHEST), g),
                       F.static_up(2 * (K + 2) * float(np.finfo(dt).tiny), dt))
    c1 = _sum_all(F.add_up_nn(jnp.abs(t), terr))
    c2 = F.up_nn(jnp.sqrt(F.mul_up(q, _sum_all(F.mul_up(s, F.mul_up(ad, ad))))))
    cross = F.scale_up(jnp.minimum(c1, c2), 2.0)
    tot = F.add_up_nn(F.add_up_nn(q, cross), rest)
    return jnp.minimum(plain, F.where(jnp.isnan(tot), jnp.inf, tot))


def quad_signed(gd: Gram | None, B: Any, phi: Any, per_seed: bool = False) -> Any:
    """Upper bound of ``sup |sum_j phi_j D_j^2|`` (flat): the larger of the bounds for
    the positive and the negative part of ``phi`` (both sums are nonnegative)."""
    pos = quad_sup(gd, B, jnp.maximum(phi, 0.0), per_seed)
    neg = quad_sup(gd, B, jnp.maximum(-phi, 0.0), per_seed)
    return jnp.maximum(pos, neg)


def cross_signed(gx: Gram | None, Bx: Any, gz: Gram | None, Bz: Any, phi: Any, per_seed: bool = False) -> Any:
    """Upper bound of ``sup |sum_j phi_j D^x_j D^z_j|`` (flat)."""
    plain = _sum_all(F.where(phi == 0, 0.0, F.mul_up(jnp.abs(phi), F.mul_up(Bx, Bz))))
    if gx is None and gz is None:
        return plain
    out = jnp.zeros((), Bx.dtype)
    for s in (jnp.maximum(phi, 0.0), jnp.maximum(-phi, 0.0)):
        out = F.add_up_nn(out, F.up_nn(jnp.sqrt(F.mul_up(quad_sup(gx, Bx, s, per_seed), quad_sup(gz, Bz, s, per_seed)))))
    return jnp.minimum(plain, out)


def per_seed_set(seeds: int, grams: list[tuple[int, Gram]]) -> frozenset[int]:
    """The keys of the split values (``(key, Gram)`` in program order) whose quadratic
    bounds in a pass of ``seeds`` seeds use the per-seed weights: the latest first, while
    ``seeds x sum n^2 K`` stays within :data:`PER_SEED_BUDGET` (all of them where they fit)."""
    out, total = set(), 0
    for key, g in reversed(grams):
        cost = seeds * int(jnp.shape(g.A)[0]) ** 2 * int(jnp.shape(g.A)[1])
        if total + cost <= PER_SEED_BUDGET:
            out.add(key)
            total += cost
    return frozenset(out)


def row_budget(n: int) -> int:
    """How many events the rows of an ``n``-element refined value record (0: none);
    the events beyond go into ``R`` whole (the pass walks back from the value, so the
    recorded ones are the latest)."""
    if n > GRAM_MAX_N or n < GRAM_MIN_N:
        return 0
    return int(min(GRAM_MAX_COST // (n * n), GRAM_MAX_ROW))


def _matched(gx: Gram, gz: Gram) -> tuple[np.ndarray, np.ndarray]:
    """Static column indices ``(ix, iz)`` of the events that both records share (the
    same value and the very same bound array: the same ``u_k``)."""
    if gx.cols is None or gz.cols is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    def blocks(cols):
        out: dict[Any, Any] = {}
        off = 0
        for key, n in cols:
            if key is not None:  # (a value twice in one record: matched nowhere)
                out[key[0]] = None if key[0] in out else (off, n, key[1])
            off += n
        return out

    where_x, where_z = blocks(gx.cols), blocks(gz.cols)
    ix, iz = [], []
    off = 0
    for key, n in gz.cols:
        hit = where_x.get(key[0]) if key is not None and where_z.get(key[0]) is not None else None
        if hit is not None and hit[1] == n and hit[2] is key[1]:
            ix.append(np.arange(hit[0], hit[0] + n))
            iz.append(np.arange(off, off + n))
        off += n
    if not ix:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ix), np.concatenate(iz)


def aligned_rest(gx: Gram, Bx: Any, gz: Gram, Bz: Any, ix: np.ndarray, iz: np.ndarray) -> tuple[Any, Any]:
    """``(lam, B^T)`` for records ``x`` (the base) and ``z`` sharing the columns ``ix`` /
    ``iz``: ``lam_j`` the least-squares fit of ``z``'s shared coefficients on ``x``'s, and
    ``B^T_j >= sup |D^z_j - lam_j D^x_j|`` over the event box (both residuals at either
    sign): the L1 norm of the row difference on the union of the columns (the float error
    of ``lam a^x`` bounded; ``x``'s columns outside the shared ones count ``|lam|`` times
    theirs, ``z``'s own count once) plus ``|d^z - lam d^x| + R^z + |lam| R^x``, or
    ``B^z + |lam| B^x`` where that is smaller."""
    Ax, Az = gx.A, gz.A
    dt = Ax.dtype
    u = float(np.finfo(dt).eps) / 2
    tiny = float(np.finfo(dt).tiny)
    Kx, Kz = int(jnp.shape(Ax)[1]), int(jnp.shape(Az)[1])
    ax, az = Ax[:, ix], Az[:, iz]
    num = jnp.sum(az * ax, axis=1)
    den = jnp.sum(ax * ax, axis=1)
    lam = F.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)  # (any value is valid)
    lam = F.where(jnp.isfinite(lam), lam, 0.0)
    alam = jnp.abs(lam)
    p = lam[:, None] * ax
    diff = az - p
    # |(a^z - lam a^x) exact| <= |fl diff| (1 + 2u) + 2u |fl p| per shared column
    g = _gamma(Kz + Kx, dt)
    s1 = F.scale_up(jnp.sum(jnp.abs(diff), axis=1), (1 + 2 * u) * (1 + 2 * g))
    s2 = F.scale_up(jnp.sum(jnp.abs(p), axis=1), 2.02 * u * (1 + 2 * g))
    mz = np.ones(Kz, bool)
    mz[iz] = False
    mx = np.ones(Kx, bool)
    mx[ix] = False
    rest_z = F.scale_up(jnp.sum(F.where(jnp.asarray(mz)[None, :], jnp.abs(Az), 0.0), axis=1), 1 + 2 * g)
    rest_x = F.scale_up(jnp.sum(F.where(jnp.asarray(mx)[None, :], jnp.abs(Ax), 0.0), axis=1), 1 + 2 * g)
    under = F.static_up(8 * (Kx + Kz + 2) * tiny, dt)
    L_T = F.add_up_nn(F.add_up_nn(F.add_up_nn(s1, s2), F.add_up_nn(rest_z, F.mul_up(alam, rest_x))), under)
    pd = lam * gx.d
    dT = F.add_up_nn(F.scale_up(jnp.abs(gz.d - pd), 1 + 2 * u), F.scale_up(jnp.abs(pd), 2.02 * u))
    R_T = F.add_up_nn(gz.R, F.mul_up(alam, gx.R))
    B_T = F.add_up_nn(F.add_up_nn(L_T, dT), R_T)
    return lam, jnp.minimum(B_T, F.add_up_nn(Bz, F.mul_up(alam, Bx)))


def cross_aligned(gx: Gram | None, Bx: Any, gz: Gram | None, Bz: Any, phi: Any, per_seed: bool = False) -> Any | None:
    """Upper bound of ``sup |sum_j phi_j D^x_j D^z_j|`` (flat) where ``z`` shares events
    with ``x`` (``z = h(x)`` and the like). The record with fewer columns (the larger
    share of them in common) is the base ``x``: with ``D^z = lam D^x + T`` (any ``lam_j``:
    the least-squares fit of the shared columns, so ``T`` is the rest of ``z``'s row),

        sum_j phi_j D^x_j D^z_j = sum_j (phi_j lam_j) (D^x_j)^2 + sum_j phi_j D^x_j T_j,

    the first a *signed* quadratic form (:func:`quad_signed`: the larger of its positive
    and negative parts, where :func:`cross_signed` adds two Cauchy-Schwarz bounds) and
    the second at most ``sum |phi| B^x B^T``. ``T_j = (a^z_j - lam_j a^x_j) · u + (d^z_j -
    lam_j d^x_j) + (rho^z_j - lam_j rho^x_j)`` on the union of the columns. None where the
    records share no event."""
    if gx is None or gz is None:
        return None
    if int(jnp.shape(gz.A)[1]) < int(jnp.shape(gx.A)[1]):  # (the product is symmetric)
        gx, Bx, gz, Bz = gz, Bz, gx, Bx
    ix, iz = _matched(gx, gz)
    if ix.size == 0:
        return None
    lam, B_T = aligned_rest(gx, Bx, gz, Bz, ix, iz)
    dt = gx.A.dtype
    u = float(np.finfo(dt).eps) / 2
    w = phi * lam  # |w - phi lam| <= u |w| / (1 - u)
    q = quad_signed(gx, Bx, w, per_seed)
    werr = _sum_all(F.where(w == 0, 0.0, F.mul_up(F.scale_up(jnp.abs(w), 1.01 * u), F.mul_up(Bx, Bx))))
    cross = _sum_all(F.where(phi == 0, 0.0, F.mul_up(jnp.abs(phi), F.mul_up(Bx, B_T))))
    out = F.add_up_nn(F.add_up_nn(q, werr), cross)
    return F.where(jnp.isnan(out), jnp.inf, out)


def _group_sum_up(v: Any, group: np.ndarray, nz: int, m: int) -> Any:
    """Upper bound of the sums of a nonnegative ``v`` (flat, or ``(n, K)``) over the
    groups ``group`` (``nz`` of them, at most ``m`` elements each), summed in any order:
    ``(1 + 2 gamma_m)`` times the float sum, plus underflow."""
    dt = v.dtype
    s = jnp.zeros((nz,) + jnp.shape(v)[1:], dt).at[group].add(v)
    return F.add_up_nn(F.scale_up(s, 1 + 2 * _gamma(m, dt)), F.static_up(2 * (m + 2) * float(np.finfo(dt).tiny), dt))


def _rows_up(x: Any) -> Any:
    """Upper bound of the row sums of a nonnegative ``(nz, K)`` array."""
    K = int(jnp.shape(x)[1])
    dt = x.dtype
    return F.add_up_nn(F.scale_up(jnp.sum(x, axis=1), 1 + 2 * _gamma(K, dt)),
                       F.static_up(2 * (K + 2) * float(np.finfo(dt).tiny), dt))


def cross_grouped(gx: Gram | None, Bx: Any, Bz: Any, group: np.ndarray, phi: Any) -> Any:
    """Upper bound of ``sup |sum_j phi_j D^x_j D^z_{group[j]}|`` where ``z`` is
    broadcast against ``x`` (LayerNorm's ``(x - m) * rsqrt(var + eps)``: one ``z``
    element per row of ``x``); ``phi``, ``Bx``, ``group`` flat over ``x``'s elements,
    ``Bz`` flat over ``z``'s.

    Grouping the sum by the element ``g`` of ``z``: ``sum_g D^z_g S_g`` with
    ``S_g = sum_{j in g} phi_j D^x_j``, a *signed* linear functional of ``x``'s
    deviation, so ``|S_g| <= sum_{j in g} |phi_j| B^x_j`` and, with ``x``'s record
    ``D^x_j = a_j · u + d_j + rho_j``, ``|S_g| <= |sum_{j in g} phi_j a_j|_1 +
    |sum_{j in g} phi_j d_j| + sum_{j in g} |phi_j| R_j``, where the first sum cancels
    across the row (the deviations share their rounding events). The bound is
    ``sum_g B^z_g min(both)``; every float operation is bounded outward
    (``|fl(sum phi a) - sum phi a| <= gamma_{m+1} sum |phi| |a|`` for ``m`` terms)."""
    group = np.asarray(group)
    nz = int(jnp.shape(Bz)[0])
    m = int(np.bincount(group, minlength=nz).max()) if group.size else 1
    aphi = jnp.abs(phi)
    S = _group_sum_up(F.where(phi == 0, 0.0, F.mul_up(aphi, Bx)), group, nz, m)
    if gx is not None:
        A, d, R = gx.A, gx.d, gx.R
        dt = A.dtype
        g = _gamma(m + 1, dt)
        # (per seed: an (nz, n) weight matrix times the shared rows, never phi * A)
        n = int(jnp.shape(A)[0])
        onehot = jnp.arange(nz)[:, None] == jnp.asarray(group)[None, :]  # (no (nz, n) constant)
        P = F.where(onehot, phi[None, :], 0.0)  # exact
        t = jnp.dot(P, A, precision=lax.Precision.HIGHEST)
        terr = F.scale_up(_matvec_up(jnp.abs(P), gx.absA), _gamma(n + 1, dt))
        lin = _rows_up(F.add_up_nn(jnp.abs(t), terr))
        sd = jnp.zeros((nz,), dt).at[group].add(phi * d)
        sderr = F.scale_up(_group_sum_up(F.mul_up(aphi, jnp.abs(d)), group, nz, m), g)
        rest = _group_sum_up(F.mul_up(aphi, R), group, nz, m)
        gram = F.add_up_nn(F.add_up_nn(lin, F.add_up_nn(jnp.abs(sd), sderr)), rest)
        S = jnp.minimum(S, F.where(jnp.isnan(gram), jnp.inf, gram))
    out = _sum_all(F.where(S == 0, 0.0, F.mul_up(Bz, S)))
    return F.where(jnp.isnan(out), jnp.inf, out)
