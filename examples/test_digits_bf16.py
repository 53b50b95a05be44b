"""The test file of docs/getting-started.md ("Certified tolerances in your tests").

Run from the repository root: python -m pytest -q examples/test_digits_bf16.py
"""

# --8<-- [start:test]
# test_digits_bf16.py: run from the repository root with  python -m pytest -q test_digits_bf16.py
import runpy

import jax
import jax.numpy as jnp

from jaxerr.testing import assert_allclose_certified

digits = runpy.run_path("examples/report_digits.py")
predict = digits["predict"]
variables, x = digits["predict_inputs"]()  # trains the classifier (seconds), 4 test digits


def test_bf16_classifier():
    low = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), variables)
    actual = predict(low, x.astype(jnp.bfloat16))  # the implementation under test
    assert_allclose_certified(actual, predict, variables, x, precision="bfloat16")
# --8<-- [end:test]
