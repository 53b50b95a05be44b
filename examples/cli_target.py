"""A small function for the command line examples (docs/cli.md).

    jaxerr analyze examples/cli_target.py:f --input uniform:64 --precision bfloat16
"""

import jax
import jax.numpy as jnp

W = jax.random.normal(jax.random.PRNGKey(0), (64, 10)) / 8


def f(x):
    return jnp.tanh(x @ W)
