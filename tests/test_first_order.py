"""domain="first_order" (and probabilistic bounds) against the independent simulator,
on the same op table as the interval domain, plus the tightness it is for."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxerr

try:
    from _soundness import check
    from test_soundness import MLP, OPS, OP_IDS, REDUCING, _centres, _fmt_params
except ImportError:  # pragma: no cover
    from tests._soundness import check
    from tests.test_soundness import MLP, OPS, OP_IDS, REDUCING, _centres, _fmt_params


@pytest.mark.parametrize("precision", _fmt_params([None, "float32", "bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"]))
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_first_order_sound_at_point(op, precision):
    name, fn, gens, _ = op
    v = check(fn, _centres(gens, 1), precision=precision, n_samples=1, domain="first_order")
    assert not v, "\n".join(v[:10])


@pytest.mark.parametrize("precision", _fmt_params([None, "bfloat16", "float16", "float8_e4m3fn"], {None, "float16"}))
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_first_order_sound_over_box(op, precision):
    name, fn, gens, radius = op
    if radius == 0:
        pytest.skip("point-only op")
    v = check(fn, _centres(gens, 2), precision=precision, radius=radius, n_samples=4, domain="first_order")
    assert not v, "\n".join(v[:10])


@pytest.mark.parametrize("accumulation", ["recursive", "pairwise", "blocked:8", "blocked:4", "wide:float32"])
@pytest.mark.parametrize("precision", _fmt_params([None, "bfloat16", "float16", "float8_e5m2"], {"bfloat16", "float8_e5m2"}))
@pytest.mark.parametrize("op", REDUCING, ids=[o[0] for o in REDUCING])
def test_first_order_accumulation_models_sound(op, precision, accumulation):
    name, fn, gens, radius = op
    v = check(fn, _centres(gens, 3), precision=precision, accumulation=accumulation, n_samples=2,
              domain="first_order")
    assert not v, "\n".join(v[:10])
