"""jaxerr: guaranteed floating-point error bounds for JAX programs.

``jaxerr.bound(f)`` traces ``f`` to a jaxpr and evaluates every equation over
intervals carrying rounding-error bounds, so that each output comes back with an
enclosure of the exact real result and a rigorous bound on the error of running
``f`` in a chosen floating-point format.
"""

from . import testing  # noqa: E402
from ._bound import Bound, Diagnostics, Interval, JaxerrWarning, bound
from ._domains.interval import Discrete, Real
from ._emulate import Arithmetic, emulate, emulated_dot_general, emulated_dot_general_with_bound
from ._formats import FORMATS, Accumulation, Format, LayerPrecision, as_format, gamma
from ._interpreter import UnsupportedPrimitiveError
from ._rules import interval_rules, register_rule
from .mixed import mixed_dot_general, mixed_precision
from .report import Report, report
from .tune import Target, TuneResult, tune

__all__ = [
    "Accumulation",
    "Arithmetic",
    "Bound",
    "Diagnostics",
    "Discrete",
    "FORMATS",
    "Format",
    "Interval",
    "JaxerrWarning",
    "LayerPrecision",
    "Real",
    "Report",
    "Target",
    "TuneResult",
    "UnsupportedPrimitiveError",
    "as_format",
    "bound",
    "emulate",
    "emulated_dot_general",
    "emulated_dot_general_with_bound",
    "gamma",
    "interval_rules",
    "mixed_dot_general",
    "mixed_precision",
    "register_rule",
    "report",
    "testing",
    "tune",
]

__version__ = "0.1.0"

# Compatibility: the emulation module was ``jaxerr/emulate.py``, whose name the function
# ``jaxerr.emulate`` shadowed (``import jaxerr.emulate as m`` gave the function). It is now
# ``jaxerr._emulate``; ``from jaxerr.emulate import Arithmetic`` keeps working through this alias.
import sys as _sys  # noqa: E402

_sys.modules.setdefault(__name__ + ".emulate", _sys.modules[__name__ + "._emulate"])
del _sys
