"""The one exception type vbayes raises for bad input (the CLI prints its message without a traceback), and the
argument rules every public function checks at its boundary with it."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


class VBayesError(ValueError):
    """Bad input or an inference run that cannot continue; the message names the cause."""


def is_count(value: Any, minimum: int = 1) -> bool:
    """An integer (not a bool) ≥ ``minimum``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


MAX_SEED = 2**32 - 1
"""Seeds are integers in [0, MAX_SEED]: NumPy's and scikit-learn's range; a larger one would wrap around (JAX
without x64) onto a smaller one's key."""


def is_seed(value: Any) -> bool:
    """An integer seed in [0, :data:`MAX_SEED`]."""
    return is_count(value, 0) and value <= MAX_SEED


def is_real(value: Any) -> bool:
    """A finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_positive(value: Any) -> bool:
    """A finite real number > 0."""
    return is_real(value) and value > 0


def is_fraction(value: Any) -> bool:
    """A real number strictly between 0 and 1 (a probability that may be neither certain nor impossible)."""
    return is_real(value) and 0 < value < 1


def require(rules: Iterable[tuple[str, Any, bool, str]], owner: str = "") -> None:
    """Raise a :class:`VBayesError` for the first rule ``(name, value, ok, requirement)`` with ``ok`` false:
    "``owner``: ``name`` must be ``requirement``, got ``value``"."""
    for name, value, ok, requirement in rules:
        if not ok:
            where = f"{owner}: " if owner else ""
            raise VBayesError(f"{where}{name} must be {requirement}, got {value!r}")
