"""jaxerr's programs are portable XLA: they lower for GPU and TPU without a device.

No GPU is needed: ``jax.export`` lowers a jitted function for another platform on this
machine. Checked here, for the analyses (every domain), the emulator and the
mixed-precision rule in every recomputation mode:

- lowering for CUDA, ROCm and TPU succeeds;
- the module has no ``custom_call`` (no host callback, no CPU-only library kernel);
- every ``dot_general`` and ``convolution`` asks for ``precision = HIGHEST``: with JAX's
  default precision XLA computes float32 products in TF32 on NVIDIA Ampere and newer
  (bfloat16 passes on TPU), which would break the outward rounding of the analysis and
  the bit-exactness of the emulation there.

And the diagnostic for programs whose own float32 products run at the default precision
on such a backend (the bound models IEEE float32 products).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import jaxerr
from jaxerr import _compat

PLATFORMS = ("cuda", "rocm", "tpu")
DN = (((1,), (0,)), ((), ()))

rng = np.random.default_rng(0)
X = jnp.asarray(rng.normal(size=(3, 16)), jnp.float32)
W = jnp.asarray(rng.normal(size=(16, 8)) / 4, jnp.float32)
IMG = jnp.asarray(rng.normal(size=(1, 6, 6, 1)), jnp.float32)
K = jnp.asarray(rng.normal(size=(3, 3, 1, 2)) / 3, jnp.float32)


def mlp(x, w):
    return jnp.tanh(x @ w)


def conv(img, k):
    y = jax.lax.conv_general_dilated(img, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y)


def _lower(f, *args, platform="cuda") -> str:
    return export.export(jax.jit(f), platforms=[platform])(*args).mlir_module()


def _check_module(txt: str) -> int:
    assert "custom_call" not in txt, [ln.strip()[:160] for ln in txt.splitlines() if "custom_call" in ln][:3]
    products = [ln for ln in txt.splitlines() if re.search(r"stablehlo\.(dot_general|convolution)\b", ln)]
    loose = [ln.strip()[:200] for ln in products if "HIGHEST" not in ln]
    assert not loose, loose[:3]
    return len(products)


def _fields(b):
    return b.lo, b.hi, b.abs_err, b.rel_err, b.value, b.computed_lo, b.computed_hi


ANALYSES = {
    "interval": {},
    "first_order": {"domain": "first_order"},
    "affine": {"domain": "affine"},
    "probabilistic": {"domain": "first_order", "probabilistic": 1e-6},
}


P16 = jaxerr.Format.custom(16, -14, 15, name="p16")  # exact in float32, not in TF32
_SLOW = pytest.mark.slow


@pytest.mark.parametrize("name,precision", [
    ("interval", None), ("interval", "bfloat16"), ("interval", P16),
    ("first_order", None), ("first_order", "bfloat16"), pytest.param("first_order", P16, marks=_SLOW),
    ("affine", "bfloat16"), pytest.param("affine", None, marks=_SLOW), pytest.param("affine", P16, marks=_SLOW),
    pytest.param("probabilistic", None, marks=_SLOW), pytest.param("probabilistic", "bfloat16", marks=_SLOW),
    pytest.param("probabilistic", P16, marks=_SLOW),
])
def test_bound_lowers_for_accelerators_with_full_precision_products(name, precision):
    kw = ANALYSES[name]
    # a point input and a box; a dense layer and a convolution
    cases = [
        (mlp, (X, W)),
        (mlp, (jaxerr.Interval(X - 0.01, X + 0.01), W)),
        (conv, (IMG, K)),
    ]
    for f, args in cases:
        g = jaxerr.bound(f, precision, warn=False, **kw)
        n = _check_module(_lower(lambda *a: _fields(g(*a)), *args))
        assert n >= 1  # the analysis does compute products


@pytest.mark.parametrize("platform", PLATFORMS[1:])  # cuda: above
def test_every_platform_lowers_the_first_order_analysis(platform):
    g = jaxerr.bound(mlp, "float16", domain="first_order", warn=False)
    _check_module(_lower(lambda x, w: _fields(g(x, w)), X, W, platform=platform))


@pytest.mark.parametrize("precision,acc", [("float8_e4m3fn", "blocked:4"), ("bfloat16", "wide:float32"),
                                           ("float32", "pairwise"), ("float16", "recursive")])
def test_emulate_lowers_for_accelerators(acc, precision):
    for f, args in ((mlp, (X, W)), (conv, (IMG, K))):
        _check_module(_lower(jaxerr.emulate(f, precision=precision, accumulation=acc), *args))


@pytest.mark.parametrize("mode,criterion", [
    ("masked", "bound"), ("compacted", "bound"), ("columns", "bound"), ("compacted", "activation"),
    pytest.param("masked", "activation", marks=_SLOW), pytest.param("columns", "activation", marks=_SLOW),
    pytest.param("masked", "condition", marks=_SLOW), pytest.param("compacted", "condition", marks=_SLOW),
    pytest.param("columns", "condition", marks=_SLOW),
])
def test_mixed_precision_lowers_for_accelerators(mode, criterion):
    def rule(x, w):
        return jaxerr.mixed_dot_general(x, w, DN, tol=0.3, activation="relu", criterion=criterion,
                                        mode=mode, return_stats=True)

    for platform in PLATFORMS:
        _check_module(_lower(rule, X, W, platform=platform))
    net = jaxerr.mixed_precision(lambda img, k: conv(img, k).sum(axis=(1, 2)), tol=0.3, criterion=criterion,
                                 mode=mode)
    _check_module(_lower(net, IMG, K))


# --- the diagnostic for the program's own float32 products ---------------------------


def _fired(out):
    return [m for m in out.diagnostics.fired() if "float32 products" in m]


@pytest.fixture
def accelerator(monkeypatch):
    """Pretend the default backend is a GPU (the check asks _compat)."""
    monkeypatch.setattr(_compat, "reduced_precision_matmul_backend", lambda: "gpu")


@pytest.mark.parametrize("domain", ["interval", "first_order"])
def test_default_precision_float32_product_is_diagnosed_on_an_accelerator(accelerator, domain):
    f = lambda x, w: jnp.tanh(x @ w)  # noqa: E731 - a fresh function: no cached trace
    with pytest.warns(jaxerr.JaxerrWarning, match="TF32"):
        out = jaxerr.bound(f, domain=domain)(X, W)
    msgs = _fired(out)
    assert len(msgs) == 1 and "dot_general" in msgs[0] and "default_matmul_precision" in msgs[0]


def test_convolution_is_diagnosed_too(accelerator):
    out = jaxerr.bound(lambda i, k: conv(i, k) * 1.0, warn=False)(IMG, K)
    assert any("conv_general_dilated" in m for m in _fired(out))


def test_full_precision_or_an_override_is_not_diagnosed(accelerator):
    g = lambda x, w: jnp.tanh(jnp.dot(x, w, precision=jax.lax.Precision.HIGHEST))  # noqa: E731
    assert not _fired(jaxerr.bound(g, warn=False)(X, W))
    h = lambda x, w: jnp.tanh(x @ w)  # noqa: E731
    with jax.default_matmul_precision("highest"):
        assert not _fired(jaxerr.bound(h, warn=False)(X, W))
    k = lambda x, w: jnp.tanh(jnp.dot(x, w, precision=jax.lax.DotAlgorithmPreset.F32_F32_F32))  # noqa: E731
    assert not _fired(jaxerr.bound(k, warn=False)(X, W))
    # an override analyses another program (every product in that format)
    assert not _fired(jaxerr.bound(lambda x, w: jnp.tanh(x @ w), "bfloat16", warn=False)(X, W))
    # bfloat16 operands as written: not float32 products
    xb, wb = X.astype(jnp.bfloat16), W.astype(jnp.bfloat16)
    assert not _fired(jaxerr.bound(lambda x, w: x @ w, warn=False)(xb, wb))
    # precision=HIGH is a reduced-precision request (bfloat16_3x / TF32): diagnosed
    hi = lambda x, w: jnp.dot(x, w, precision=jax.lax.Precision.HIGH)  # noqa: E731
    assert _fired(jaxerr.bound(hi, warn=False)(X, W))


def test_cpu_is_not_diagnosed():
    assert _compat.reduced_precision_matmul_backend() is None or jax.default_backend() != "cpu"
    if jax.default_backend() == "cpu":
        out = jaxerr.bound(lambda x, w: jnp.tanh(x @ w), warn=False)(X, W)
        assert not _fired(out)
